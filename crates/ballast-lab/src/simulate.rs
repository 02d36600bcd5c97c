//! `ballast simulate`: replays a recorded trace through the real predictor and scaler on a
//! virtual clock, counterfactually (a shed plugin's cost leaves the replayed utilization), and
//! prints the decision timeline and a summary; `--plot` draws it (`plot.rs`), `--compare` runs
//! the same traces through several configs side by side, and `--reference` puts reference
//! policies built from the config next to it (`compare.rs`, `reference.rs`). `--calls PLUGIN=LOG`
//! replays a request log's arrivals as calls to a plugin (see [`engine`] for how the host is
//! modelled), and the summary says what the callers saw: cold starts, waits, refusals, and what
//! the plugin held. Without `--trace`, the calls are replayed on their own time span with the
//! resource calm (a reading of 0 every 10 s), to study the keep-alive trade alone.

#[cfg(test)]
mod calls_tests;
mod compare;
pub mod engine;
mod plot;
pub mod reference;
#[cfg(test)]
mod tests;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use crate::trace::{Spacing, Trace, TraceOptions, TracePoint, read_arrivals, read_trace};
use anyhow::Context as _;
use ballast_core::decision::{Action, Decision};
use ballast_core::format::trace_time;
use ballast_core::{Resource, Timestamp};

use ballast_core::StartMode;
use engine::{CallSummary, Report, Sim, SimConfig};

/// The exit code for a configuration with problems (sysexits' EX_CONFIG).
pub(crate) const EX_CONFIG: u8 = 78;

/// Arguments of `ballast simulate`.
#[derive(Debug, clap::Args)]
pub struct SimulateArgs {
    /// The simulation config (TOML): scaler and predictor settings and the plugins with their
    /// declared cost; see config/simulate-example.toml.
    #[arg(long, value_name = "FILE", required_unless_present = "compare")]
    config: Option<PathBuf>,
    /// Replay the traces through each of these configs and print their summaries side by side.
    #[arg(long, value_name = "FILE", num_args = 2.., conflicts_with_all = ["config", "plot"])]
    compare: Vec<PathBuf>,
    /// Replay reference policies built from the config (the first of --compare) next to it,
    /// all of them (naive, seed, no-forecast) or those named, and print the summaries side by
    /// side: `naive` (one threshold, no smoothing, no forecast, no waiting), `seed` (EMA 0.7, a
    /// least-squares line 10 buckets ahead, no stabilization), `no-forecast` (the design's
    /// defaults without a forecast).
    #[arg(
        long,
        value_name = "POLICY",
        num_args = 0..,
        value_delimiter = ',',
        conflicts_with = "plot"
    )]
    reference: Option<Vec<reference::Reference>>,
    /// Draw the replay into this file (.svg or .png, 1200x600): utilization, smoothed value,
    /// forecast, thresholds, and one band per plugin with its level and the decisions.
    #[arg(long, value_name = "FILE.svg|FILE.png")]
    plot: Option<PathBuf>,
    /// The trace: CSV (`timestamp,value`, NAB, Google 2019, Azure, request logs) or the
    /// daemon's telemetry JSON lines. Without it (and with --calls), the resource is calm over
    /// the calls' time span. With --compare or --reference, several traces may be given: each
    /// is replayed and the summaries are added up.
    #[arg(long, value_name = "FILE", num_args = 1.., required_unless_present = "calls")]
    trace: Vec<PathBuf>,
    /// Replay the request arrivals of LOG (a CSV with one row per request and a `timestamp`
    /// column, e.g. the Azure LLM traces) as calls to PLUGIN; repeatable. Calls that do not
    /// overlap the trace's time span are moved to start with its first reading.
    #[arg(long = "calls", value_name = "PLUGIN=LOG", value_parser = calls_arg)]
    calls: Vec<CallsArg>,
    /// The value column (CSV) or resource (telemetry); default: `value`, else the first
    /// non-timestamp column.
    #[arg(long, value_name = "NAME")]
    column: Option<String>,
    /// The resource the trace stands for (memory, cpu, gpu, gpu_memory, disk, memory_pressure,
    /// cpu_pressure, io_pressure); default: the column when it names a resource (telemetry),
    /// else the config's `resource`, else guessed from the column name (mem -> memory,
    /// gpu -> gpu, else cpu).
    #[arg(long, value_name = "RESOURCE")]
    resource: Option<Resource>,
    /// The spacing of rows in a CSV without a timestamp column [default: 300].
    #[arg(long, value_name = "SECONDS")]
    interval: Option<f64>,
    /// Bin an event log (request arrivals) into a rate series with bins this wide.
    #[arg(long, value_name = "SECONDS")]
    bin: Option<f64>,
    /// How to turn readings into a utilization in 0..1: `auto` (request rates binned from an
    /// event log and values over 100 are divided by the trace's peak, values up to 1 are taken
    /// as they are, values up to 100 as percentages), `percent`, `peak`, or a factor such as
    /// 0.01.
    #[arg(long, value_name = "auto|percent|peak|FACTOR", default_value = "auto")]
    scale: String,
    /// Replay the trace this many times back to back (for throughput measurements).
    #[arg(long, value_name = "N", default_value_t = 1, conflicts_with = "calls")]
    repeat: u32,
    /// Print one JSON document (`decisions` and `summary`) instead of text.
    #[arg(long)]
    json: bool,
}

/// One `--calls PLUGIN=LOG`.
#[derive(Clone, Debug, PartialEq)]
pub struct CallsArg {
    /// The plugin called.
    pub plugin: String,
    /// The request log.
    pub log: PathBuf,
}

fn calls_arg(text: &str) -> Result<CallsArg, String> {
    match text.split_once('=') {
        Some((plugin, log)) if !plugin.trim().is_empty() && !log.is_empty() => Ok(CallsArg {
            plugin: plugin.trim().to_owned(),
            log: PathBuf::from(log),
        }),
        _ => Err(format!(
            "expected PLUGIN=LOG (a plugin of the config and a request log), got `{text}`"
        )),
    }
}

/// The spacing of the calm readings replayed when calls come without a trace.
pub(crate) const CALM_STEP: Duration = Duration::from_secs(10);

/// The calls of one `--calls`, read.
#[derive(Clone, Debug)]
pub(crate) struct Calls {
    pub(crate) plugin: String,
    pub(crate) log: String,
    pub(crate) arrivals: Vec<Timestamp>,
}

/// What a replay reads: the resource trace (or the calm stand-in) and the calls.
#[derive(Debug)]
pub(crate) struct Inputs {
    pub(crate) trace: Trace,
    /// The trace's name for people: its path, or `calm`.
    pub(crate) name: String,
    /// Whether the trace is the calm stand-in for a missing `--trace`.
    pub(crate) calm: bool,
    pub(crate) calls: Vec<Calls>,
    /// Milliseconds added to every call's time to start them with the trace, when they did not
    /// overlap it.
    pub(crate) shift_ms: i64,
}

impl Inputs {
    /// Reads the one trace (or none) and the calls `args` name.
    fn load(args: &SimulateArgs) -> anyhow::Result<Inputs> {
        match args.trace.as_slice() {
            [] => Inputs::load_one(args, None),
            [path] => Inputs::load_one(args, Some(path)),
            _ => anyhow::bail!(
                "--trace takes one file here; several are replayed only with --compare or \
                 --reference"
            ),
        }
    }

    /// Reads every trace `args` name (or the calm stand-in for none), each with the calls.
    pub(crate) fn load_all(args: &SimulateArgs) -> anyhow::Result<Vec<Inputs>> {
        if args.trace.len() > 1 && !args.calls.is_empty() {
            anyhow::bail!("--calls is replayed against one --trace at a time");
        }
        if args.trace.is_empty() {
            return Ok(vec![Inputs::load_one(args, None)?]);
        }
        args.trace
            .iter()
            .map(|path| Inputs::load_one(args, Some(path)))
            .collect()
    }

    fn load_one(args: &SimulateArgs, trace: Option<&PathBuf>) -> anyhow::Result<Inputs> {
        let mut calls = Vec::new();
        for arg in &args.calls {
            let log = arg.log.display().to_string();
            let file = std::fs::File::open(&arg.log)
                .with_context(|| format!("cannot open calls {log}"))?;
            let arrivals = read_arrivals(&log, std::io::BufReader::new(file))?;
            calls.push(Calls {
                plugin: arg.plugin.clone(),
                log,
                arrivals,
            });
        }
        match trace {
            Some(path) => {
                let trace = load_trace(args, path)?;
                let name = path.display().to_string();
                if trace.points.is_empty() {
                    anyhow::bail!(
                        "{name}: column `{}` has no readings to replay",
                        trace.column
                    );
                }
                Ok(Inputs::with_trace(trace, name, calls))
            }
            None => Ok(Inputs::calm(calls)),
        }
    }

    /// The trace and the calls, the calls moved to start with the trace when their time spans
    /// do not overlap.
    pub(crate) fn with_trace(trace: Trace, name: String, mut calls: Vec<Calls>) -> Inputs {
        let span = |times: &mut dyn Iterator<Item = Timestamp>| {
            times.fold(None, |span: Option<(Timestamp, Timestamp)>, t| {
                Some(span.map_or((t, t), |(a, b)| (a.min(t), b.max(t))))
            })
        };
        let trace_span = span(&mut trace.points.iter().map(|p| p.at));
        let calls_span = span(&mut calls.iter().flat_map(|c| c.arrivals.iter().copied()));
        let mut shift_ms = 0;
        if let (Some((t0, t1)), Some((c0, c1))) = (trace_span, calls_span)
            && (c1 < t0 || c0 > t1)
        {
            shift_ms = t0.as_millis() as i64 - c0.as_millis() as i64;
            for call in &mut calls {
                for at in &mut call.arrivals {
                    *at = Timestamp::from_millis(
                        at.as_millis().checked_add_signed(shift_ms).unwrap_or(0),
                    );
                }
            }
        }
        Inputs {
            trace,
            name,
            calm: false,
            calls,
            shift_ms,
        }
    }

    /// The calls alone: the resource calm, a reading of 0 every [`CALM_STEP`] from the first
    /// call to the last.
    pub(crate) fn calm(calls: Vec<Calls>) -> Inputs {
        let all = || calls.iter().flat_map(|c| c.arrivals.iter().copied());
        let first = all().min().unwrap_or(Timestamp::ZERO);
        let last = all().max().unwrap_or(first);
        let step = CALM_STEP.as_millis() as u64;
        let points = (0..=(last.as_millis() - first.as_millis()) / step)
            .map(|k| TracePoint {
                at: Timestamp::from_millis(first.as_millis() + k * step),
                value: 0.0,
            })
            .collect();
        Inputs {
            trace: Trace {
                source: "calm".to_owned(),
                column: "calm".to_owned(),
                spacing: Spacing::Fixed(CALM_STEP),
                points,
                skipped: 0,
            },
            name: "calm".to_owned(),
            calm: true,
            calls,
            shift_ms: 0,
        }
    }

    /// The resource replayed: `--resource`, else the trace's column when it names one (the
    /// daemon's telemetry), else the config's, else guessed from the column (GPU memory for the
    /// calm stand-in).
    pub(crate) fn resource(&self, flag: Option<Resource>, config: &SimConfig) -> Resource {
        flag.or_else(|| self.trace.column.parse::<Resource>().ok())
            .or(config.resource)
            .unwrap_or_else(|| {
                if self.calm {
                    Resource::GpuMemory
                } else {
                    guess_resource(&self.trace.column)
                }
            })
    }

    /// How the readings are scaled: as `--scale` says, or not at all for the calm stand-in.
    fn scale(&self, flag: &str) -> anyhow::Result<Scale> {
        if self.calm {
            return Ok(Scale {
                factor: 1.0,
                why: "calm".to_owned(),
            });
        }
        Scale::choose(flag, &self.trace)
    }

    /// A simulation of `resource` under `config` with the calls added.
    pub(crate) fn sim(&self, config: &SimConfig, resource: Resource) -> Result<Sim, Vec<String>> {
        let mut sim = Sim::new(config, resource)?;
        let mut problems = Vec::new();
        for calls in &self.calls {
            if let Err(problem) = sim.add_calls(&calls.plugin, &calls.arrivals) {
                problems.push(format!("--calls {}={}: {problem}", calls.plugin, calls.log));
            }
        }
        if problems.is_empty() {
            Ok(sim)
        } else {
            Err(problems)
        }
    }

    /// The calls as the JSON output lists them.
    fn calls_json(&self) -> serde_json::Value {
        self.calls
            .iter()
            .map(|c| serde_json::json!({"plugin": c.plugin, "log": c.log, "arrivals": c.arrivals.len()}))
            .collect()
    }

    /// Lines that say what the calls are, for the text output.
    fn calls_text(&self) -> String {
        let mut out = String::new();
        for c in &self.calls {
            let (first, last) = (c.arrivals.first(), c.arrivals.last());
            let _ = write!(
                out,
                "calls: {} from {} ({} calls",
                c.plugin,
                c.log,
                c.arrivals.len()
            );
            if let (Some(first), Some(last)) = (first, last) {
                let _ = write!(out, ", {} to {}", trace_time(*first), trace_time(*last));
            }
            let _ = writeln!(out, ")");
        }
        if self.shift_ms != 0 {
            let by = Duration::from_millis(self.shift_ms.unsigned_abs());
            let _ = writeln!(
                out,
                "the calls do not overlap the trace: moved {} {} to start with its first reading",
                humantime::format_duration(by),
                if self.shift_ms < 0 {
                    "earlier"
                } else {
                    "later"
                }
            );
        }
        out
    }
}

/// Runs `ballast simulate`.
pub fn run(args: SimulateArgs) -> anyhow::Result<ExitCode> {
    let Some(config_path) = args.config.clone().filter(|_| args.reference.is_none()) else {
        return compare::run(&args);
    };
    let config_name = config_path.display().to_string();
    let config = match load_config(&config_path)? {
        Ok(config) => config,
        Err(problems) => {
            for problem in problems {
                eprintln!("error: {config_name}: {problem}");
            }
            return Ok(ExitCode::from(EX_CONFIG));
        }
    };
    let inputs = Inputs::load(&args)?;
    let trace = &inputs.trace;
    let name = inputs.name.clone();
    let resource = inputs.resource(args.resource, &config);
    let scale = inputs.scale(&args.scale)?;
    let mut sim = match inputs.sim(&config, resource) {
        Ok(sim) => sim,
        Err(problems) => {
            for problem in problems {
                eprintln!("error: {config_name}: {problem}");
            }
            return Ok(ExitCode::from(EX_CONFIG));
        }
    };
    if args.plot.is_some() {
        sim.record();
    }
    let thresholds = sim.thresholds();
    let started = Instant::now();
    let progress = progress_bar(trace.points.len() as u64 * u64::from(args.repeat.max(1)));
    replay_with_progress(
        &mut sim,
        trace,
        scale.factor,
        args.repeat.max(1),
        progress.as_ref(),
    );
    if let Some(bar) = &progress {
        bar.finish_and_clear();
    }
    let elapsed = started.elapsed();
    let (report, recording) = sim.finish_recorded();
    if let (Some(path), Some(recording)) = (&args.plot, &recording) {
        let horizon = config.predictor.bucket * config.predictor.horizon_buckets as u32;
        plot::plot_to_file(
            path,
            &plot::PlotInput {
                trace_name: args.trace.first().map_or("calm", |t| trace_file_name(t)),
                resource,
                thresholds,
                horizon,
                report: &report,
                recording,
            },
        )?;
        eprintln!("plot written to {}", path.display());
    }
    if args.json {
        let mut json = serde_json::json!({
            "trace": name,
            "column": trace.column,
            "resource": resource,
            "scale": scale.factor,
            "decisions": report.decisions,
            "summary": report.summary,
        });
        if !inputs.calls.is_empty() {
            json["calls"] = inputs.calls_json();
            json["calls_shift_seconds"] = serde_json::json!(inputs.shift_ms as f64 / 1000.0);
        }
        println!("{}", serde_json::to_string_pretty(&json)?);
    } else {
        print!(
            "{}",
            to_text(&inputs, &config, &scale, &report, args.repeat.max(1))
        );
    }
    let samples = report.summary.samples;
    let rate = samples as f64 / elapsed.as_secs_f64().max(1e-9);
    eprintln!(
        "replayed {samples} readings in {:.1} ms ({:.2} M readings/s)",
        elapsed.as_secs_f64() * 1000.0,
        rate / 1e6
    );
    Ok(ExitCode::SUCCESS)
}

/// Reads and checks the configuration: `Err` for IO and syntax, `Ok(Err(problems))` for values.
pub(crate) fn load_config(path: &Path) -> anyhow::Result<Result<SimConfig, Vec<String>>> {
    let name = path.display();
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read config {name}"))?;
    let config: SimConfig =
        toml::from_str(&text).with_context(|| format!("{name}: invalid simulate config"))?;
    let problems = config.problems();
    Ok(if problems.is_empty() {
        Ok(config)
    } else {
        Err(problems)
    })
}

fn seconds(flag: &str, value: Option<f64>) -> anyhow::Result<Option<Duration>> {
    match value {
        None => Ok(None),
        Some(v) if v.is_finite() && v > 0.0 && v < 1e12 => Ok(Some(Duration::from_secs_f64(v))),
        Some(v) => anyhow::bail!("{flag} must be a positive number of seconds, got {v}"),
    }
}

fn load_trace(args: &SimulateArgs, path: &Path) -> anyhow::Result<Trace> {
    let options = TraceOptions {
        column: args.column.clone(),
        interval: seconds("--interval", args.interval)?,
        bin: seconds("--bin", args.bin)?,
        format: None,
    };
    let name = path.display().to_string();
    let file = std::fs::File::open(path).with_context(|| format!("cannot open trace {name}"))?;
    Ok(read_trace(&name, std::io::BufReader::new(file), &options)?)
}

/// The resource a column most likely measures.
pub(crate) fn guess_resource(column: &str) -> Resource {
    let column = column.to_ascii_lowercase();
    if column.contains("gpu") && column.contains("mem") {
        Resource::GpuMemory
    } else if column.contains("gpu") {
        Resource::Gpu
    } else if column.contains("mem") {
        Resource::Memory
    } else {
        Resource::Cpu
    }
}

/// The factor that turns readings into utilizations, and why it was chosen.
#[derive(Debug)]
pub(crate) struct Scale {
    pub(crate) factor: f64,
    pub(crate) why: String,
}

impl Scale {
    pub(crate) fn choose(flag: &str, trace: &Trace) -> anyhow::Result<Scale> {
        let peak = trace.points.iter().map(|p| p.value).fold(0.0, f64::max);
        let by_peak = || Scale {
            factor: if peak > 0.0 { 1.0 / peak } else { 1.0 },
            why: format!("divided by the trace's peak {peak}"),
        };
        // An event log binned into a rate is never a percentage: scale it by its peak.
        let binned = matches!(trace.spacing, Spacing::Binned(_));
        Ok(match flag {
            "auto" if binned => by_peak(),
            "auto" if peak <= 1.0 => Scale {
                factor: 1.0,
                why: "values are already fractions".to_owned(),
            },
            "auto" if peak <= 100.0 => Scale {
                factor: 0.01,
                why: "values look like percentages".to_owned(),
            },
            "auto" | "peak" => by_peak(),
            "percent" => Scale {
                factor: 0.01,
                why: "percentages".to_owned(),
            },
            other => match other.parse::<f64>() {
                Ok(f) if f.is_finite() && f > 0.0 => Scale {
                    factor: f,
                    why: "given with --scale".to_owned(),
                },
                _ => anyhow::bail!(
                    "--scale must be auto, percent, peak or a positive factor, got `{other}`"
                ),
            },
        })
    }
}

/// The trace's file name without its folders, for titles.
fn trace_file_name(path: &Path) -> &str {
    path.file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("the trace")
}

/// Replays of at least this many readings show a progress bar (when stderr is a terminal).
const PROGRESS_MIN_READINGS: u64 = 1_000_000;

/// A progress bar on stderr for a long replay, or `None` when stderr is not a terminal or the
/// replay is short.
fn progress_bar(readings: u64) -> Option<indicatif::ProgressBar> {
    if readings < PROGRESS_MIN_READINGS || !std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        return None;
    }
    let bar = indicatif::ProgressBar::new(readings);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "replaying {bar:40} {human_pos}/{human_len} readings, {eta} left",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    Some(bar)
}

/// Feeds the trace `repeat` times, each pass starting one interval after the previous ended.
pub(crate) fn replay(sim: &mut Sim, trace: &Trace, factor: f64, repeat: u32) {
    replay_with_progress(sim, trace, factor, repeat, None);
}

/// [`replay`], advancing `progress` every 64 Ki readings.
fn replay_with_progress(
    sim: &mut Sim,
    trace: &Trace,
    factor: f64,
    repeat: u32,
    progress: Option<&indicatif::ProgressBar>,
) {
    let first = trace.points.first().map_or(Timestamp::ZERO, |p| p.at);
    let last = trace.points.iter().map(|p| p.at).max().unwrap_or(first);
    let step = trace
        .median_interval()
        .filter(|d| !d.is_zero())
        .unwrap_or(Duration::from_secs(1));
    let span = (last - first) + step;
    let mut done: u64 = 0;
    for pass in 0..repeat {
        let offset = span.saturating_mul(pass);
        for point in &trace.points {
            sim.step(point.at + offset, point.value * factor);
            done += 1;
            if let Some(bar) = progress
                && done.is_multiple_of(65_536)
            {
                bar.inc(65_536);
            }
        }
    }
}

/// One line of the timeline.
fn decision_line(d: &Decision) -> String {
    let action = if d.action == Action::None {
        String::new()
    } else {
        d.action.to_string()
    };
    let mut line = format!(
        "{}  {:<10} {:<10} {:<20} [{}] {}",
        trace_time(d.at),
        d.kind.as_str(),
        d.plugin.as_deref().unwrap_or("-"),
        action,
        d.rule,
        d.reason
    );
    if !d.applied && d.action != Action::None {
        let _ = write!(line, " (not applied: {} mode)", d.mode);
    }
    line
}

fn seconds_text(s: f64) -> String {
    let rounded = Duration::from_secs(s.round() as u64);
    format!("{s:.0} ({})", humantime::format_duration(rounded))
}

fn to_text(
    inputs: &Inputs,
    config: &SimConfig,
    scale: &Scale,
    report: &Report,
    repeat: u32,
) -> String {
    let s = &report.summary;
    let (name, trace) = (&inputs.name, &inputs.trace);
    let mut out = String::new();
    let spacing = match trace.spacing {
        Spacing::FromFile => "timestamps from the file".to_owned(),
        Spacing::Fixed(d) => format!("every {}", humantime::format_duration(d)),
        Spacing::Binned(d) => format!("binned every {}", humantime::format_duration(d)),
    };
    if inputs.calm {
        let _ = writeln!(
            out,
            "simulating {} calm over the calls' time span (no --trace: a reading of 0 {spacing}, \
             {} readings)",
            s.resource,
            trace.points.len(),
        );
    } else {
        let _ = writeln!(
            out,
            "simulating {} from {name} (column `{}`, {} readings, {spacing}, scale {}: {})",
            s.resource,
            trace.column,
            trace.points.len(),
            scale.factor,
            scale.why
        );
    }
    out.push_str(&inputs.calls_text());
    if repeat > 1 {
        let _ = writeln!(out, "replayed {repeat} times back to back");
    }
    let plugins: Vec<String> = config
        .plugins
        .iter()
        .map(|p| {
            let levels: Vec<String> = p.levels.iter().map(|c| format!("{c}")).collect();
            let essential = if p.essential { ", essential" } else { "" };
            let demand = if p.start == StartMode::OnDemand
                || p.keep_alive.is_some()
                || s.calls.contains_key(&p.name)
            {
                demand_text(p)
            } else {
                String::new()
            };
            format!(
                "{} (priority {}, cost {}{essential}{demand})",
                p.name,
                p.priority,
                levels.join("/")
            )
        })
        .collect();
    let _ = writeln!(out, "plugins: {}", plugins.join(", "));
    let _ = writeln!(out);
    for d in &report.decisions {
        let _ = writeln!(out, "{}", decision_line(d));
    }
    if report.decisions.is_empty() {
        let _ = writeln!(out, "(no decisions)");
    }
    let _ = writeln!(out);
    let _ = writeln!(out, "summary");
    let _ = writeln!(out, "  sheds                 {}", s.sheds);
    let _ = writeln!(out, "  restores              {}", s.restores);
    let _ = writeln!(out, "  flaps                 {}", s.flaps);
    let _ = writeln!(out, "  throttles             {}", s.throttles);
    let _ = writeln!(out, "  warnings              {}", s.warnings);
    let _ = writeln!(
        out,
        "  seconds_over_high     {}",
        seconds_text(s.seconds_over_high)
    );
    let _ = writeln!(
        out,
        "  seconds_in_emergency  {}",
        seconds_text(s.seconds_in_emergency)
    );
    let _ = writeln!(out, "  seconds_shed");
    for (plugin, secs) in &s.seconds_shed {
        let _ = writeln!(out, "    {plugin:<20}{}", seconds_text(*secs));
    }
    let _ = writeln!(
        out,
        "  peak                  trace {:.3}, replayed {:.3}, over {}",
        s.peak_trace,
        s.peak_replayed,
        humantime::format_duration(Duration::from_secs(s.duration_seconds.round() as u64))
    );
    for (plugin, c) in &s.calls {
        let _ = writeln!(out, "  calls to {plugin}");
        let _ = writeln!(out, "    calls               {}", c.calls);
        let _ = writeln!(out, "    cold starts         {}", c.cold_starts);
        let _ = writeln!(out, "    waited              {}", waits_text(c));
        let _ = writeln!(out, "    refused             {}", c.refused);
        let _ = writeln!(out, "    unloads             {}", c.unloads);
        let _ = writeln!(out, "    loaded              {}", loaded_text(c));
    }
    out
}

/// A plugin's demand settings, for the plugins line: `, on-demand, keep_alive 5m, load 20s,
/// call 1s, 24 GB`.
fn demand_text(p: &engine::SimPlugin) -> String {
    let keep_alive = p.keep_alive.map_or_else(
        || "never".to_owned(),
        |k| humantime::format_duration(k).to_string(),
    );
    let mut text = format!(
        ", {}, keep_alive {keep_alive}, load {}, call {}",
        p.start.as_str(),
        humantime::format_duration(p.load_time),
        humantime::format_duration(p.call_time)
    );
    if let Some(gb) = p.gpu_memory_gb {
        let _ = write!(text, ", {gb} GB");
    }
    text
}

/// `12 (mean 9.6s, p95 20.0s, max 20.0s)`, or `0`.
pub(crate) fn waits_text(c: &CallSummary) -> String {
    if c.waited == 0 {
        return "0".to_owned();
    }
    format!(
        "{} (mean {:.1}s, p95 {:.1}s, max {:.1}s)",
        c.waited, c.wait_mean_seconds, c.wait_p95_seconds, c.wait_max_seconds
    )
}

/// `52m 3s, 20.82 GB-hours of GPU memory`.
pub(crate) fn loaded_text(c: &CallSummary) -> String {
    let held = humantime::format_duration(Duration::from_secs(c.seconds_loaded.round() as u64));
    match c.gpu_memory_gb_hours {
        Some(hours) => format!("{held}, {hours:.2} GB-hours of GPU memory"),
        None => held.to_string(),
    }
}
