//! `ballast plugin`: tools for plugin authors (`new` writes a plugin project, `inspect` loads a
//! file and prints its descriptor, `check` runs a plugin through its contract) and the
//! operator's actions on a running daemon's plugin (`ballast plugin NAME
//! enable|disable|release|suspend|resume|level N|show|logs`), which are clients of the control
//! API.

use std::io::{self, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use ballast_host::{PluginInfo, PluginLibrary, sha256_file};
use clap::Parser as _;

use crate::cmd::client::{ApiArgs, Client, plugins_table};
use ballast_api::views::{ActionView, PluginView, PreflightView};
use ballast_core::format::bytes;

const ACTIONS_HELP: &str = "\
Act on a running daemon's plugin (through its control API):
  ballast plugin NAME show                      the plugin in detail
  ballast plugin NAME disable [--for DURATION]  pin it off (drained first), e.g. --for 10m
  ballast plugin NAME enable [--for DURATION]   pin it on at full level
  ballast plugin NAME level N [--for DURATION]  pin it on at level N (0 is full)
  ballast plugin NAME release                   hand it back to the scaler
  ballast plugin NAME suspend                   pause it (calls answer 503 until resumed;
                                                a process is stopped with SIGSTOP)
  ballast plugin NAME resume                    resume it
  ballast plugin NAME logs [--tail N] [--follow]
                                                a process plugin's log (stdout, stderr, events)
  ballast plugin NAME preflight [--level N]     would it fit now, and what would make room;
                                                changes nothing, exits 0 only if it fits
  ballast plugin NAME call [DATA | -] [--stream] [--timeout D] [--caller NAME]
                                                call it; the answer goes to stdout (as it
                                                streams with --stream; - reads stdin)
Pins hold until released or until DURATION passes; only an emergency overrides them.
Each takes --api URL (env BALLAST_API, default http://127.0.0.1:7878),
--token-file PATH (env BALLAST_TOKEN_FILE) and --json.
See `ballast plugin NAME --help`.";

/// Arguments of `ballast plugin`.
#[derive(Debug, clap::Args)]
#[command(after_help = ACTIONS_HELP, subcommand_value_name = "NAME|COMMAND")]
pub struct PluginArgs {
    #[command(subcommand)]
    command: PluginCommand,
}

#[derive(Debug, clap::Subcommand)]
enum PluginCommand {
    /// Write a new plugin project (Rust, C or Python) that builds, tests and runs as written,
    /// in a directory of its own, anywhere.
    New(crate::cmd::new::NewArgs),
    /// Load a plugin file, validate it and print its descriptor; exits 0 only if it is loadable.
    Inspect {
        /// The plugin's shared library, e.g. target/debug/libvoice.so.
        file: PathBuf,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
        /// Also require this sha256 (as a config pin would).
        #[arg(long)]
        sha256: Option<String>,
    },
    /// Run a plugin through its whole contract as the daemon would (load, create, levels,
    /// calls, streaming, drain, checkpoint, memory, and for a process the protocol itself) and
    /// report each step with its timing; exits 0 only if everything holds.
    Check(crate::cmd::check::CheckArgs),
    /// A plugin's name followed by an action (see below).
    #[command(external_subcommand)]
    Action(Vec<String>),
}

impl PluginArgs {
    /// Whether this is `ballast plugin check`.
    pub fn is_check(&self) -> bool {
        matches!(self.command, PluginCommand::Check(_))
    }
}

/// `ballast plugin NAME ACTION`, parsed from what follows `ballast plugin`.
#[derive(Debug, clap::Parser)]
#[command(
    name = "ballast plugin",
    about = "Act on a running daemon's plugin through its control API",
    after_help = ACTIONS_HELP
)]
struct ActionCli {
    /// The plugin's name, as the daemon's config names it.
    name: String,
    #[command(subcommand)]
    action: PluginAction,
    #[command(flatten)]
    api: ApiArgs,
    /// Print the API's JSON instead of text.
    #[arg(long, global = true)]
    json: bool,
}

#[derive(Debug, clap::Subcommand)]
enum PluginAction {
    /// Show the plugin in detail: state, level, stats, latency percentiles, the scaler's view.
    Show,
    /// Pin the plugin on at full level.
    Enable {
        /// Hold the pin this long (e.g. 90s, 10m, 2h), then hand the plugin back.
        #[arg(long = "for", value_name = "DURATION", value_parser = parse_duration)]
        duration: Option<String>,
    },
    /// Pin the plugin off: drain it and disable it.
    Disable {
        /// Hold the pin this long (e.g. 90s, 10m, 2h), then hand the plugin back.
        #[arg(long = "for", value_name = "DURATION", value_parser = parse_duration)]
        duration: Option<String>,
    },
    /// Pin the plugin on at level N (0 is full; higher levels are cheaper).
    Level {
        /// The level.
        level: u32,
        /// Hold the pin this long (e.g. 90s, 10m, 2h), then hand the plugin back.
        #[arg(long = "for", value_name = "DURATION", value_parser = parse_duration)]
        duration: Option<String>,
    },
    /// Release the operator's pin: the scaler manages the plugin again.
    Release,
    /// Suspend the plugin (calls answer 503 until it is resumed).
    Suspend,
    /// Resume a suspended plugin.
    Resume,
    /// Would the plugin fit at a level now? Its need per resource (declared and measured), the
    /// headroom under each shed threshold, and which plugins a wake would take down to make
    /// room. Changes nothing; exits 0 if it fits as things are, 1 if not.
    Preflight {
        /// The level to ask about (its fullest allowed level when left out).
        #[arg(long)]
        level: Option<u32>,
    },
    /// Call the plugin: the answer goes to standard output, whole or, with --stream, chunk by
    /// chunk as the plugin sends it. Exits 0 when the call succeeded, 124 when its deadline
    /// passed, 1 otherwise (with why on standard error).
    Call(crate::cmd::call::CallArgs),
    /// Print the log of a plugin that runs in a process: its stdout and stderr, its log
    /// messages, and the host's notes (started, signalled, exited, alerts).
    Logs {
        /// How many of the last lines.
        #[arg(long, default_value_t = 100, value_name = "N")]
        tail: usize,
        /// Keep printing lines as they are written (until interrupted).
        #[arg(long, short)]
        follow: bool,
    },
}

/// Checks a duration as people write it and keeps the text for the API.
fn parse_duration(text: &str) -> Result<String, String> {
    match humantime::parse_duration(text) {
        Ok(d) if d.is_zero() => Err("the duration must be longer than zero".to_owned()),
        Ok(_) => Ok(text.to_owned()),
        Err(e) => Err(format!("{e}; write it like 90s, 10m or 2h")),
    }
}

/// Runs `ballast plugin`.
pub fn run(args: PluginArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        PluginCommand::New(args) => crate::cmd::new::run(args, &mut io::stdout().lock()),
        PluginCommand::Inspect { file, json, sha256 } => {
            let library = PluginLibrary::load(&file, sha256.as_deref())
                .with_context(|| format!("{} is not a loadable ballast plugin", file.display()))?;
            let mut info = library.info().clone();
            if info.sha256.is_none() {
                info.sha256 = Some(
                    sha256_file(&file)
                        .with_context(|| format!("cannot hash {}", file.display()))?,
                );
            }
            let info = &info;
            if json {
                println!("{}", serde_json::to_string_pretty(info)?);
            } else {
                print!("{}", render(info));
            }
            Ok(ExitCode::SUCCESS)
        }
        PluginCommand::Check(args) => crate::cmd::check::run(args, &mut io::stdout().lock()),
        PluginCommand::Action(args) => match run_action(args, &mut io::stdout().lock()) {
            Ok(code) => Ok(code),
            Err(error) => match error.downcast::<clap::Error>() {
                // Help and usage errors print themselves and exit as clap does.
                Ok(clap_error) => clap_error.exit(),
                Err(error) => Err(error),
            },
        },
    }
}

/// `ballast plugin NAME ACTION [OPTIONS]` with `args` = `NAME ACTION [OPTIONS]`, printing to
/// `out`. A usage error is returned as a `clap::Error`.
pub fn run_action(args: Vec<String>, out: &mut dyn Write) -> anyhow::Result<ExitCode> {
    let cli = ActionCli::try_parse_from(std::iter::once("ballast plugin".to_owned()).chain(args))?;
    let cli = &cli;
    let client = Client::new(&cli.api)?;
    let name = &cli.name;
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        anyhow::bail!("`{name}` is not a plugin name (letters, digits, `-` and `_`)");
    }
    let (action, body) = match &cli.action {
        PluginAction::Show => {
            let view: serde_json::Value = client.get(&format!("/plugins/{name}"))?;
            if cli.json {
                writeln!(out, "{}", serde_json::to_string_pretty(&view)?)?;
            } else {
                let plugin: PluginView = serde_json::from_value(view)
                    .context("the daemon's answer is not what this ballast expects")?;
                write!(out, "{}", show(&plugin))?;
            }
            return Ok(ExitCode::SUCCESS);
        }
        PluginAction::Enable { duration } => ("enable", serde_json::json!({ "for": duration })),
        PluginAction::Disable { duration } => ("disable", serde_json::json!({ "for": duration })),
        PluginAction::Level { level, duration } => (
            "level",
            serde_json::json!({ "level": level, "for": duration }),
        ),
        PluginAction::Logs { tail, follow } => {
            let mut path = format!("/plugins/{name}/logs?tail={tail}");
            if *follow {
                path.push_str("&follow=true");
            }
            client.copy_text(&path, *follow, out)?;
            return Ok(ExitCode::SUCCESS);
        }
        PluginAction::Preflight { level } => {
            let path = match level {
                Some(level) => format!("/plugins/{name}/preflight?level={level}"),
                None => format!("/plugins/{name}/preflight"),
            };
            let view: serde_json::Value = client.get(&path)?;
            let answer: PreflightView = serde_json::from_value(view.clone())
                .context("the daemon's answer is not what this ballast expects")?;
            if cli.json {
                writeln!(out, "{}", serde_json::to_string_pretty(&view)?)?;
            } else {
                write!(out, "{}", preflight_text(&answer))?;
            }
            return Ok(if answer.fits {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            });
        }
        PluginAction::Call(args) => {
            return crate::cmd::call::run(
                &client,
                name,
                args,
                cli.json,
                &mut io::stdin().lock(),
                out,
                &mut io::stderr().lock(),
            );
        }
        PluginAction::Release => ("release", serde_json::json!({})),
        PluginAction::Suspend => ("suspend", serde_json::json!({})),
        PluginAction::Resume => ("resume", serde_json::json!({})),
    };
    // A missing duration is left out rather than sent as null.
    let body = match body {
        serde_json::Value::Object(map) => {
            serde_json::Value::Object(map.into_iter().filter(|(_, v)| !v.is_null()).collect())
        }
        other => other,
    };
    let answer: serde_json::Value = client.post(&format!("/plugins/{name}/{action}"), &body)?;
    if cli.json {
        writeln!(out, "{}", serde_json::to_string_pretty(&answer)?)?;
    } else {
        let answer: ActionView = serde_json::from_value(answer)
            .context("the daemon's answer is not what this ballast expects")?;
        writeln!(out, "{}", answer.message)?;
        write!(
            out,
            "{}",
            plugins_table(&[answer.plugin_view], crate::cmd::client::now_ms())
        )?;
    }
    Ok(ExitCode::SUCCESS)
}

/// `ballast plugin NAME preflight` for people.
fn preflight_text(p: &PreflightView) -> String {
    use ballast_core::Resource;
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = writeln!(out, "plugin     {} at level {}", p.plugin, p.level);
    let verdict = if p.fits {
        "yes".to_owned()
    } else if p.fits_with_room {
        let steps: Vec<String> = p
            .would_take_down
            .iter()
            .map(|s| format!("{} ({})", s.plugin, s.action))
            .collect();
        format!(
            "not now; it would once ballast takes down {}",
            steps.join(", ")
        )
    } else {
        format!(
            "no: {}",
            p.no_room.as_deref().unwrap_or("not even with room made")
        )
    };
    let _ = writeln!(out, "fits       {verdict}");
    let _ = writeln!(out);
    let amount = |resource: Resource, value: Option<f64>| match (resource, value) {
        (_, None) => "-".to_owned(),
        (Resource::Memory | Resource::GpuMemory, Some(bytes)) => {
            ballast_core::format::bytes(bytes.max(0.0) as u64)
        }
        (Resource::Cpu, Some(cores)) => format!("{cores:.2} cores"),
        (_, Some(v)) => format!("{v:.2}"),
    };
    let mut table = ballast_core::format::Table::with_header(&[
        "RESOURCE", "NEED", "DECLARED", "MEASURED", "PRESSURE", "SHED", "HEADROOM", "",
    ]);
    for r in &p.resources {
        table.row([
            r.resource.to_string(),
            format!("{:.2}", r.need),
            amount(r.resource, r.declared),
            amount(r.resource, r.measured),
            format!("{:.2}", r.pressure),
            format!("{:.2}", r.shed),
            format!("{:.2}", r.headroom),
            if r.fits { "" } else { "does not fit" }.to_owned(),
        ]);
    }
    out.push_str(&table.render());
    out
}

/// `ballast plugin NAME show` for people.
fn show(p: &PluginView) -> String {
    use crate::cmd::client::format::ago;
    use ballast_core::format::latency_us as latency;
    use std::fmt::Write as _;
    let now = crate::cmd::client::now_ms();
    let mut out = String::new();
    let level = p
        .level
        .map(|l| format!(" at level {l}"))
        .unwrap_or_default();
    let _ = writeln!(out, "plugin       {}", p.name);
    let _ = writeln!(
        out,
        "state        {}{level} since {}: {}",
        p.state,
        ago(p.since, now),
        p.failure.as_deref().unwrap_or(&p.reason)
    );
    let _ = writeln!(
        out,
        "priority     {}{}",
        p.priority,
        if p.essential { " (essential)" } else { "" }
    );
    let s = &p.stats;
    let _ = writeln!(
        out,
        "memory       {} live, {} peak",
        bytes(s.live_bytes),
        bytes(s.peak_bytes)
    );
    let _ = writeln!(
        out,
        "calls        {} answered, {} errors, {} timeouts, {} in flight (limit {})",
        s.calls, s.errors, s.timeouts, s.in_flight, p.concurrency_limit
    );
    if s.calls > 0 {
        let _ = writeln!(
            out,
            "latency      p50 {}, p95 {}, p99 {}",
            latency(s.latency_p50_us),
            latency(s.latency_p95_us),
            latency(s.latency_p99_us)
        );
    }
    if let Some(error) = &p.last_error {
        let _ = writeln!(out, "last error   {error}");
    }
    let _ = writeln!(
        out,
        "checkpoint   {}",
        s.last_checkpoint.map_or_else(
            || "none yet".to_owned(),
            |at| format!("latest taken {}", ago(at, now))
        )
    );
    if let Some(usage) = &s.process {
        let _ = writeln!(
            out,
            "process      pid {} ({} {}), rss {}, vsz {}, cpu {:.2} cores ({:.1}s in all), {} fds, {} threads, io {} read {} written",
            usage.pid,
            usage.processes,
            if usage.processes == 1 {
                "process"
            } else {
                "processes"
            },
            bytes(usage.rss_bytes),
            bytes(usage.vsz_bytes),
            usage.cpu_cores,
            usage.cpu_seconds,
            usage.open_fds,
            usage.threads,
            bytes(usage.read_bytes),
            bytes(usage.write_bytes)
        );
    }
    if let Some(process) = &p.process {
        let _ = writeln!(
            out,
            "command      {} (protocol {})",
            process.command, process.protocol
        );
        let mut supervision = format!("{} restarts", process.restarts);
        if let Some(exit) = &process.last_exit {
            let _ = write!(supervision, ", last {exit}");
        }
        if process.stopped {
            supervision.push_str(", stopped (SIGSTOP)");
        }
        let _ = writeln!(out, "supervision  {supervision}");
        if let Some(cgroup) = &process.cgroup {
            let _ = writeln!(out, "cgroup       {}", cgroup_line(cgroup));
            let _ = writeln!(out, "kernel       {}", kernel_line(cgroup));
        } else if let Some(why) = &process.cgroup_unavailable {
            let _ = writeln!(
                out,
                "cgroup       none (memory limits polled, no CPU quota): {why}"
            );
        }
        if !process.conditions.is_empty() {
            let conditions: Vec<&str> = process.conditions.iter().map(|c| c.as_str()).collect();
            let _ = writeln!(out, "conditions   {}", conditions.join(", "));
        }
        if let Some(progress) = &process.progress {
            let _ = writeln!(
                out,
                "progress     {}{} since {}",
                progress.phase.as_deref().unwrap_or("-"),
                progress
                    .percent
                    .map(|p| format!(" {p:.0}%"))
                    .unwrap_or_default(),
                ago(progress.since, now)
            );
        }
        if let Some(log) = &process.log_file {
            let _ = writeln!(
                out,
                "log          {} (ballast plugin {} logs)",
                log.display(),
                p.name
            );
        }
    }
    if let Some(scaler) = &p.scaler {
        let pin = match &scaler.pin {
            None => "not pinned".to_owned(),
            Some(pin) => {
                let what = match pin.level {
                    Some(level) => format!("pinned {} at level {level}", pin.target),
                    None => format!("pinned {}", pin.target),
                };
                match pin.until {
                    Some(until) => format!(
                        "{what} until {}",
                        crate::cmd::client::format::clock(until.as_millis())
                    ),
                    None => format!("{what} until released"),
                }
            }
        };
        let _ = writeln!(
            out,
            "scaler       {} (level {}), {pin}{}, {} flaps, next restore after {} calm",
            scaler.placement,
            scaler.placement_level,
            if scaler.throttled { ", throttled" } else { "" },
            scaler.flaps,
            humantime::format_duration(std::time::Duration::from_millis(scaler.stabilization_ms))
        );
        if let (Some(memory), Some(cpu)) = (scaler.measured_memory_bytes, scaler.measured_cpu_cores)
        {
            let _ = writeln!(
                out,
                "             counts {} and {cpu:.2} cores as measured when it restores it",
                bytes(memory)
            );
        }
        if let Some(gpu) = scaler.measured_gpu_memory_bytes {
            let _ = writeln!(
                out,
                "             counts {} of GPU memory as measured when it restores or wakes it",
                bytes(gpu)
            );
        }
        if let Some(since) = scaler.idle_since {
            let _ = writeln!(out, "             no call since {}", ago(since, now));
        }
    }
    out
}

fn render(info: &PluginInfo) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = writeln!(out, "plugin       {} {}", info.name, info.version);
    let _ = writeln!(
        out,
        "abi          {} (built with {})",
        info.abi, info.sdk_version
    );
    let _ = writeln!(
        out,
        "file         {} ({})",
        info.file.display(),
        bytes(info.size_bytes)
    );
    if let Some(sha256) = &info.sha256 {
        let _ = writeln!(out, "sha256       {sha256}");
    }
    let caps = if info.capabilities.is_empty() {
        "none".to_owned()
    } else {
        info.capabilities.join(", ")
    };
    let _ = writeln!(out, "capabilities {caps}");
    let _ = writeln!(out, "cpu share    {:.2} core", info.cpu_share);
    let _ = writeln!(
        out,
        "gpu          {}",
        if info.needs_gpu { "yes" } else { "no" }
    );
    let _ = writeln!(out, "levels       {}", info.levels.len());
    let width = info.levels.iter().map(|l| l.name.len()).max().unwrap_or(0);
    for l in &info.levels {
        let mut line = format!(
            "  {} {:<width$}  memory {}",
            l.level,
            l.name,
            bytes(l.memory_min_bytes)
        );
        if l.memory_preferred_bytes != l.memory_min_bytes {
            let _ = write!(line, " (prefers {})", bytes(l.memory_preferred_bytes));
        }
        if l.gpu_memory_bytes > 0 {
            let _ = write!(line, ", gpu memory {}", bytes(l.gpu_memory_bytes));
        }
        let _ = writeln!(out, "{line}");
    }
    out
}

/// A plugin's cgroup and the limits the kernel enforces on it, on one line.
fn cgroup_line(cgroup: &ballast_core::CgroupStatus) -> String {
    let mut line = format!("{} {}", cgroup.version, cgroup.path.display());
    if !cgroup.live {
        line.push_str(" (removed)");
    }
    let mut limits = Vec::new();
    if let Some(max) = cgroup.memory_max_bytes {
        limits.push(format!("memory limit {}", bytes(max)));
    }
    if let Some(high) = cgroup.memory_high_bytes {
        let what = if cgroup.version == "v1" {
            "reclaimed first above"
        } else {
            "throttled above"
        };
        limits.push(format!("{what} {}", bytes(high)));
    }
    if let Some(cores) = cgroup.cpu_quota_cores {
        limits.push(format!("cpu quota {cores:.2} cores"));
    }
    if limits.is_empty() {
        limits.push("no limits".to_owned());
    }
    format!("{line}: {}", limits.join(", "))
}

/// What the kernel reports of a plugin's cgroup, on one line.
fn kernel_line(cgroup: &ballast_core::CgroupStatus) -> String {
    let mut parts = Vec::new();
    if let Some(peak) = cgroup.memory_peak_bytes {
        parts.push(format!("memory peak {}", bytes(peak)));
    }
    if let Some(now) = cgroup.memory_current_bytes.filter(|_| cgroup.live) {
        parts.push(format!("now {}", bytes(now)));
    }
    if let Some(cpu) = cgroup.cpu_seconds {
        parts.push(format!("cpu {cpu:.1}s"));
    }
    if let Some(throttled) = cgroup.cpu_throttled_seconds.filter(|t| *t > 0.0) {
        parts.push(format!("throttled {throttled:.1}s"));
    }
    if let Some(psi) = cgroup.memory_pressure.filter(|_| cgroup.live) {
        let full = psi
            .full
            .map(|f| format!(", full {:.2}%", f.avg10))
            .unwrap_or_default();
        parts.push(format!(
            "memory pressure some {:.2}%{full} (10 s)",
            psi.some.avg10
        ));
    }
    let e = &cgroup.events;
    parts.push(format!(
        "events: {} high, {} at the limit, {} oom, {} oom kills",
        e.high, e.max, e.oom, e.oom_kill
    ));
    parts.join(", ")
}
