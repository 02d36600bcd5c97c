//! `ballast sample`: one sample of the machine as the monitor sees it (or one every interval),
//! for a person (aligned like `free` and `nvidia-smi`) or as JSON for scripts.
//!
//! Under the GPUs it lists the processes holding GPU memory, like `nvidia-smi`, with the plugin
//! each is charged to. This command does not load plugins, so it asks the running daemon for
//! them (`GET /status`, with a short timeout): their pids, and the daemon's own pid, found in its
//! latest sample. Without an answer the plugin column shows `-` and says why.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use ballast_api::views::StatusView;
use ballast_core::format::{Table, bytes, percent, time as format_time};
use ballast_core::{GpuMemoryHolder, Metric, PluginUsage, PsiReading, Sample, Timestamp};
use ballast_monitor::{Monitor, MonitorConfig, NvmlSource, process_name};

use crate::cmd::client::{ApiArgs, DEFAULT_API};

/// Arguments of `ballast sample`.
#[derive(Debug, clap::Args)]
pub struct SampleArgs {
    /// Print the sample as JSON (one object per line with --watch).
    #[arg(long)]
    pub json: bool,
    /// Keep printing a sample every --interval until interrupted (Ctrl-C).
    #[arg(long)]
    pub watch: bool,
    /// Time between samples with --watch, e.g. `1s` or `500ms`.
    #[arg(long, value_name = "DUR", default_value = "1s", value_parser = humantime::parse_duration)]
    pub interval: Duration,
    /// A path whose file system's space to report; repeat for several (default: the current
    /// directory).
    #[arg(long = "disk", value_name = "PATH")]
    pub disks: Vec<PathBuf>,
    #[command(flatten)]
    pub source: SourceArgs,
    /// The running daemon, asked which plugins hold the GPU processes.
    #[command(flatten)]
    pub api: ApiArgs,
}

/// Where the machine's figures are read from; shared with `ballast tier`.
#[derive(Debug, clap::Args)]
pub struct SourceArgs {
    /// Load NVML from this library instead of the system's libnvidia-ml.so.1.
    #[arg(long, value_name = "FILE", env = "BALLAST_NVML_LIBRARY")]
    pub nvml_library: Option<PathBuf>,
    /// Do not look for GPUs.
    #[arg(long, conflicts_with = "nvml_library")]
    pub no_gpu: bool,
    /// Read the proc file system from this directory (containers, tests).
    #[arg(long, value_name = "DIR", default_value = "/proc", hide = true)]
    pub proc_root: PathBuf,
    /// Read the sys file system from this directory (containers, tests).
    #[arg(long, value_name = "DIR", default_value = "/sys", hide = true)]
    pub sys_root: PathBuf,
}

impl SourceArgs {
    /// The monitor configuration these arguments describe, watching `disk_paths`.
    pub fn monitor_config(&self, disk_paths: Vec<PathBuf>) -> MonitorConfig {
        let nvml = match (&self.nvml_library, self.no_gpu) {
            (_, true) => NvmlSource::Disabled,
            (Some(path), false) => NvmlSource::Path(path.clone()),
            (None, false) => NvmlSource::System,
        };
        MonitorConfig {
            proc_root: self.proc_root.clone(),
            sys_root: self.sys_root.clone(),
            disk_paths,
            nvml,
            cgroup_v2_path: None,
        }
    }
}

/// How long to wait between the baseline reading and the first printed sample, so that CPU
/// figures (which compare two readings) are available.
const WARM_UP: Duration = Duration::from_millis(250);

/// How long the daemon has to answer which plugins it runs.
const DAEMON_TIMEOUT: Duration = Duration::from_secs(1);

/// What the running daemon said about its plugins, or why it said nothing.
#[derive(Clone, Debug, PartialEq)]
pub enum DaemonPlugins {
    /// The plugins of the daemon's latest sample, and the daemon's pid where that sample shows
    /// it (only when the daemon's own process holds GPU memory, which is when it matters).
    Answered {
        /// Each plugin's usage, with its pid and whether it runs inside the daemon with a GPU.
        plugins: Vec<PluginUsage>,
        /// The daemon's process id.
        daemon_pid: Option<u32>,
    },
    /// No answer to use, and why.
    Unknown(String),
}

impl DaemonPlugins {
    /// The daemon's plugins from its `/status` answer.
    pub fn from_status(status: &StatusView, api: &str) -> DaemonPlugins {
        let Some(sample) = &status.sample else {
            return DaemonPlugins::Unknown(format!("the daemon at {api} has taken no sample yet"));
        };
        DaemonPlugins::Answered {
            plugins: sample.plugins.clone(),
            daemon_pid: daemon_pid(sample),
        }
    }
}

/// The daemon's own pid as its sample shows it: the GPU process its monitor charged to the
/// daemon itself (unattributed, or to a plugin that runs inside it).
fn daemon_pid(sample: &Sample) -> Option<u32> {
    let in_process = |name: &str| {
        sample
            .plugins
            .iter()
            .any(|p| p.plugin == name && p.pid.is_none())
    };
    sample
        .gpus
        .value()?
        .iter()
        .filter_map(|g| g.processes.value())
        .flatten()
        .find(|p| match &p.holder {
            Some(GpuMemoryHolder::InProcessUnattributed) => true,
            Some(GpuMemoryHolder::Plugin { plugin }) => in_process(plugin),
            _ => false,
        })
        .map(|p| p.pid)
}

/// Asks the daemon at `api` for its plugins. A daemon that does not answer, or answers with an
/// error, is [`DaemonPlugins::Unknown`]; a bad `--api` or `--token-file` is an error.
pub fn ask_daemon(api: &ApiArgs) -> anyhow::Result<DaemonPlugins> {
    let base = api.api.trim_end_matches('/');
    if !base.starts_with("http://") {
        anyhow::bail!(
            "--api must be an http:// URL like {DEFAULT_API}, got `{}`",
            api.api
        );
    }
    let token = match &api.token_file {
        Some(path) => Some(ballast_api::load_token(path)?),
        None => None,
    };
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(DAEMON_TIMEOUT))
        .build()
        .into();
    let mut request = agent.get(format!("{base}/status"));
    if let Some(token) = token {
        request = request.header("Authorization", format!("Bearer {token}"));
    }
    let unknown = |reason: String| Ok(DaemonPlugins::Unknown(reason));
    let response = match request.call() {
        Ok(response) => response,
        Err(ureq::Error::Io(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
            return unknown(format!("no ballast daemon at {base} (connection refused)"));
        }
        Err(ureq::Error::Timeout(_)) => {
            return unknown(format!(
                "the ballast daemon at {base} did not answer within {DAEMON_TIMEOUT:?}"
            ));
        }
        Err(e) => return unknown(format!("cannot reach the ballast daemon at {base}: {e}")),
    };
    let status = response.status();
    if !status.is_success() {
        let hint = if status.as_u16() == 401 {
            " (pass --token-file)"
        } else {
            ""
        };
        return unknown(format!(
            "the ballast daemon at {base} answered GET /status with {}{hint}",
            status.as_u16()
        ));
    }
    match response.into_body().read_json::<StatusView>() {
        Ok(view) => Ok(DaemonPlugins::from_status(&view, base)),
        Err(e) => unknown(format!(
            "the answer of the ballast daemon at {base} is not what this ballast expects: {e}"
        )),
    }
}

/// Takes one sample with GPU memory charged to the daemon's plugins: `monitor` is told the
/// plugins and the daemon's pid first. Without them no process is charged to anyone, and the
/// sample says why.
pub fn sample_with_plugins(
    monitor: &mut Monitor,
    daemon: &DaemonPlugins,
    now: Timestamp,
) -> Sample {
    monitor.forget_plugin_usage();
    if let DaemonPlugins::Answered {
        plugins,
        daemon_pid,
    } = daemon
    {
        for plugin in plugins {
            monitor.report_plugin_usage(PluginUsage {
                gpu_memory_bytes: None,
                ..plugin.clone()
            });
        }
        if let Some(pid) = daemon_pid {
            monitor.set_daemon_pid(*pid);
        }
    }
    let mut sample = monitor.sample(now);
    if let DaemonPlugins::Unknown(reason) = daemon {
        for reading in sample.gpus.value_mut().into_iter().flatten() {
            for process in reading.processes.value_mut().into_iter().flatten() {
                process.holder = None;
            }
        }
        sample.gpu_memory_unattributed =
            Metric::unavailable(format!("which plugin holds what is not known: {reason}"));
    }
    sample
}

/// The command names of the processes on the GPUs, from `<proc_root>/PID/comm`.
fn process_names(sample: &Sample, proc_root: &Path) -> BTreeMap<u32, String> {
    sample
        .gpus
        .value()
        .into_iter()
        .flatten()
        .filter_map(|g| g.processes.value())
        .flatten()
        .filter_map(|p| process_name(proc_root, p.pid).map(|name| (p.pid, name)))
        .collect()
}

/// What the text shows beside the sample itself.
#[derive(Clone, Debug, Default)]
pub struct Annotations {
    /// The GPU processes' command names by pid.
    pub process_names: BTreeMap<u32, String>,
    /// Why plugin names are not known, when they are not.
    pub plugins_unknown: Option<String>,
}

/// Runs `ballast sample`.
pub fn run(args: SampleArgs) -> anyhow::Result<ExitCode> {
    let disks = if args.disks.is_empty() {
        vec![
            std::env::current_dir()
                .context("cannot find the current directory to report its disk")?,
        ]
    } else {
        args.disks.clone()
    };
    let mut monitor = Monitor::new(args.source.monitor_config(disks));
    let _baseline = monitor.sample(now());
    std::thread::sleep(WARM_UP);
    let mut stdout = std::io::stdout().lock();
    loop {
        let daemon = ask_daemon(&args.api)?;
        let sample = sample_with_plugins(&mut monitor, &daemon, now());
        let text = if args.json {
            let mut line =
                serde_json::to_string(&sample).context("cannot write the sample as JSON")?;
            line.push('\n');
            line
        } else {
            let annotations = Annotations {
                process_names: process_names(&sample, &args.source.proc_root),
                plugins_unknown: match daemon {
                    DaemonPlugins::Unknown(reason) => Some(reason),
                    DaemonPlugins::Answered { .. } => None,
                },
            };
            let mut text = render(&sample, &annotations);
            if args.watch {
                text.push('\n');
            }
            text
        };
        match stdout
            .write_all(text.as_bytes())
            .and_then(|()| stdout.flush())
        {
            Ok(()) => {}
            // The reader went away (`ballast sample --watch | head`): that is the end.
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => return Ok(ExitCode::SUCCESS),
            Err(e) => return Err(e).context("cannot write to standard output"),
        }
        if !args.watch {
            return Ok(ExitCode::SUCCESS);
        }
        std::thread::sleep(args.interval);
    }
}

/// The system clock as a [`Timestamp`].
pub fn now() -> Timestamp {
    Timestamp::from_system_time(SystemTime::now())
}

fn unavailable(reason: &str) -> String {
    format!("unavailable: {reason}")
}

/// The sample as a person reads it.
pub fn render(sample: &Sample, annotations: &Annotations) -> String {
    let mut out = format!("sampled at {}\n\n", format_time(sample.at));

    let mut memory = Table::new().right_aligned(&[false, true, true, true, true, false]);
    memory.row(["", "total", "used", "available", "use", "scope"]);
    match &sample.memory {
        Metric::Available { value: m } => {
            let scope = scope_text(&m.scope);
            memory.row([
                "memory".to_owned(),
                bytes(m.total_bytes),
                bytes(m.used_bytes),
                bytes(m.available_bytes),
                percent(m.utilization()),
                scope,
            ]);
            let swap_use = if m.swap_total_bytes == 0 {
                "-".to_owned()
            } else {
                percent(m.swap_used_bytes as f64 / m.swap_total_bytes as f64)
            };
            memory.row([
                "swap".to_owned(),
                bytes(m.swap_total_bytes),
                bytes(m.swap_used_bytes),
                bytes(m.swap_total_bytes.saturating_sub(m.swap_used_bytes)),
                swap_use,
            ]);
        }
        Metric::Unavailable { reason } => memory.row(["memory".to_owned(), unavailable(reason)]),
    }
    out.push_str(&memory.render());
    out.push('\n');

    let mut cpu = Table::new().right_aligned(&[false, true, true, true, true, true, false]);
    cpu.row(["", "cores", "busy", "load 1m", "5m", "15m", "scope"]);
    match &sample.cpu {
        Metric::Available { value: c } => cpu.row([
            "cpu".to_owned(),
            c.cores.to_string(),
            percent(c.utilization),
            format!("{:.2}", c.load_average[0]),
            format!("{:.2}", c.load_average[1]),
            format!("{:.2}", c.load_average[2]),
            c.quota.as_ref().map_or_else(
                || "host".to_owned(),
                |q| format!("of a {:.2}-core quota, {}", q.cores, scope_text(&q.scope)),
            ),
        ]),
        Metric::Unavailable { reason } => cpu.row(["cpu".to_owned(), unavailable(reason)]),
    }
    out.push_str(&cpu.render());
    out.push('\n');

    let mut psi = Table::new().right_aligned(&[false, true, true, true, true, true, true, false]);
    psi.row([
        "pressure",
        "some avg10",
        "avg60",
        "avg300",
        "full avg10",
        "avg60",
        "avg300",
        "scope",
    ]);
    for (name, metric) in [
        ("cpu", &sample.psi.cpu),
        ("memory", &sample.psi.memory),
        ("io", &sample.psi.io),
    ] {
        let mut row = psi_row(name, metric);
        if metric.value().is_some() {
            row.push(scope_text(&sample.psi.scope));
        }
        psi.row(row);
    }
    out.push_str(&psi.render());
    out.push('\n');

    let mut disks = Table::new().right_aligned(&[false, true, true, true]);
    disks.row(["disk", "total", "used", "use"]);
    for metric in &sample.disks {
        match metric {
            Metric::Available { value: d } => disks.row([
                d.path.clone(),
                bytes(d.total_bytes),
                bytes(d.used_bytes),
                percent(d.utilization()),
            ]),
            Metric::Unavailable { reason } => disks.row(["?".to_owned(), unavailable(reason)]),
        }
    }
    out.push_str(&disks.render());
    out.push('\n');

    match &sample.gpus {
        Metric::Available { value } if value.is_empty() => {
            out.push_str("gpu  none (NVML sees no device)\n");
        }
        Metric::Available { value } => {
            let mut gpus = Table::new().right_aligned(&[true, false, true, true, true, true, true]);
            gpus.row([
                "gpu",
                "name",
                "memory used",
                "total",
                "util",
                "temp",
                "power",
            ]);
            for g in value {
                gpus.row([
                    g.index.to_string(),
                    g.name.clone(),
                    bytes(g.memory_used_bytes),
                    bytes(g.memory_total_bytes),
                    percent(g.utilization),
                    g.temperature_celsius
                        .map_or("-".to_owned(), |t| format!("{t:.0} C")),
                    g.power_watts
                        .map_or("-".to_owned(), |w| format!("{w:.1} W")),
                ]);
            }
            out.push_str(&gpus.render());
            out.push('\n');
            out.push_str(&render_gpu_processes(value, annotations));
        }
        Metric::Unavailable { reason } => {
            out.push_str(&format!("gpu  {}\n", unavailable(reason)));
        }
    }
    out.push('\n');

    match &sample.daemon {
        Metric::Available { value: p } => out.push_str(&format!(
            "daemon  rss {}, cpu {} of one core\n",
            bytes(p.rss_bytes),
            percent(p.cpu_cores)
        )),
        Metric::Unavailable { reason } => {
            out.push_str(&format!("daemon  {}\n", unavailable(reason)));
        }
    }
    for plugin in &sample.plugins {
        let gpu = match plugin.gpu_memory_bytes {
            Some(b) => format!(", gpu {}", bytes(b)),
            None => String::new(),
        };
        out.push_str(&format!(
            "plugin {}  live {}, peak {}{gpu}\n",
            plugin.plugin,
            bytes(plugin.live_bytes),
            bytes(plugin.peak_bytes)
        ));
    }
    if let Metric::Available { value } = &sample.gpu_memory_unattributed {
        let figure = |b: Option<u64>| b.map_or_else(|| "unknown".to_owned(), bytes);
        out.push_str(&format!(
            "gpu memory of no plugin  daemon {}, other programs {}\n",
            figure(value.in_process_bytes),
            figure(value.other_bytes)
        ));
    }
    out
}

/// The processes on every GPU, like `nvidia-smi`'s table, with the plugin each is charged to.
fn render_gpu_processes(gpus: &[ballast_core::GpuReading], annotations: &Annotations) -> String {
    let mut table = Table::new().right_aligned(&[true, true, false, true, false]);
    table.row(["gpu", "pid", "process", "gpu memory", "plugin"]);
    let mut listed = 0;
    for gpu in gpus {
        match &gpu.processes {
            Metric::Available { value } => {
                for process in value {
                    listed += 1;
                    let plugin = match &process.holder {
                        Some(GpuMemoryHolder::Plugin { plugin }) => plugin.clone(),
                        Some(GpuMemoryHolder::InProcessUnattributed) => {
                            "(daemon, unattributed)".to_owned()
                        }
                        Some(GpuMemoryHolder::Other) | None => "-".to_owned(),
                    };
                    table.row([
                        gpu.index.to_string(),
                        process.pid.to_string(),
                        annotations
                            .process_names
                            .get(&process.pid)
                            .cloned()
                            .unwrap_or_else(|| "?".to_owned()),
                        process.used_bytes.map_or_else(|| "n/a".to_owned(), bytes),
                        plugin,
                    ]);
                }
            }
            Metric::Unavailable { reason } => {
                listed += 1;
                table.row([
                    gpu.index.to_string(),
                    format!("processes {}", unavailable(reason)),
                ]);
            }
        }
    }
    let mut out = if listed == 0 {
        "gpu processes  none\n".to_owned()
    } else {
        table.render()
    };
    if let Some(reason) = &annotations.plugins_unknown {
        out.push_str(&format!("plugins  - ({reason})\n"));
    }
    out
}

/// Whose figures they are: `host`, `cgroup v1 /path` or `cgroup v2 /path`.
fn scope_text(scope: &ballast_core::MemoryScope) -> String {
    match scope {
        ballast_core::MemoryScope::Host => "host".to_owned(),
        ballast_core::MemoryScope::CgroupV1 { path } => format!("cgroup v1 {path}"),
        ballast_core::MemoryScope::CgroupV2 { path } => format!("cgroup v2 {path}"),
    }
}

fn psi_row(name: &str, metric: &Metric<PsiReading>) -> Vec<String> {
    match metric {
        Metric::Available { value } => {
            let mut row = vec![
                name.to_owned(),
                format!("{:.2}", value.some.avg10),
                format!("{:.2}", value.some.avg60),
                format!("{:.2}", value.some.avg300),
            ];
            match &value.full {
                Some(full) => row.extend([
                    format!("{:.2}", full.avg10),
                    format!("{:.2}", full.avg60),
                    format!("{:.2}", full.avg300),
                ]),
                None => row.extend(["-".to_owned(), "-".to_owned(), "-".to_owned()]),
            }
            row
        }
        Metric::Unavailable { reason } => vec![name.to_owned(), unavailable(reason)],
    }
}

#[cfg(test)]
mod tests {
    use ballast_core::{GpuProcess, GpuReading, MemoryReading, MemoryScope};

    use super::*;

    #[test]
    fn unavailable_metrics_are_shown_with_their_reason() {
        let mut sample = Sample::unavailable(Timestamp::from_secs(0), "no /proc here");
        sample.memory = Metric::available(MemoryReading {
            total_bytes: 8 << 30,
            used_bytes: 6 << 30,
            available_bytes: 2 << 30,
            swap_total_bytes: 0,
            swap_used_bytes: 0,
            scope: MemoryScope::Host,
        });
        let text = render(&sample, &Annotations::default());
        assert!(
            text.starts_with("sampled at 1970-01-01T00:00:00Z\n"),
            "{text}"
        );
        assert!(
            text.contains("memory  8 GiB  6 GiB      2 GiB  75.0%  host"),
            "{text}"
        );
        assert!(text.contains("cpu  unavailable: no /proc here"), "{text}");
        assert!(text.contains("gpu  unavailable: no /proc here"), "{text}");
    }

    fn gpu(index: u32, processes: Metric<Vec<GpuProcess>>) -> GpuReading {
        GpuReading {
            index,
            name: format!("GPU {index}"),
            memory_used_bytes: 0,
            memory_total_bytes: 1 << 30,
            utilization: 0.0,
            temperature_celsius: None,
            power_watts: None,
            processes,
        }
    }

    fn process(pid: u32, holder: GpuMemoryHolder) -> GpuProcess {
        GpuProcess {
            pid,
            used_bytes: Some(1 << 20),
            holder: Some(holder),
        }
    }

    #[test]
    fn the_daemons_pid_is_the_process_its_monitor_charged_to_the_daemon() {
        let plugin = |name: &str| GpuMemoryHolder::Plugin {
            plugin: name.into(),
        };
        let mut sample = Sample::unavailable(Timestamp::from_secs(0), "test");
        sample.plugins = vec![
            PluginUsage {
                plugin: "indexer".into(),
                pid: Some(2),
                ..PluginUsage::default()
            },
            PluginUsage {
                plugin: "vision".into(),
                in_process_gpu: true,
                ..PluginUsage::default()
            },
        ];
        sample.gpus = Metric::available(vec![
            gpu(0, Metric::unavailable("not supported")),
            gpu(
                1,
                Metric::available(vec![
                    process(1, GpuMemoryHolder::Other),
                    process(2, plugin("indexer")),
                    process(3, plugin("vision")),
                ]),
            ),
        ]);
        assert_eq!(daemon_pid(&sample), Some(3));
        sample.gpus = Metric::available(vec![gpu(
            0,
            Metric::available(vec![
                process(2, plugin("indexer")),
                process(4, GpuMemoryHolder::InProcessUnattributed),
            ]),
        )]);
        assert_eq!(daemon_pid(&sample), Some(4));
        sample.gpus = Metric::available(vec![gpu(
            0,
            Metric::available(vec![process(2, plugin("indexer"))]),
        )]);
        assert_eq!(daemon_pid(&sample), None);
    }

    #[test]
    fn process_lists_that_are_empty_or_unavailable_say_so() {
        let mut sample = Sample::unavailable(Timestamp::from_secs(0), "test");
        sample.gpus = Metric::available(vec![gpu(0, Metric::available(Vec::new()))]);
        let text = render(&sample, &Annotations::default());
        assert!(text.contains("\ngpu processes  none\n"), "{text}");
        sample.gpus = Metric::available(vec![
            gpu(0, Metric::unavailable("NVML: GPU 0: not supported")),
            gpu(
                1,
                Metric::available(vec![process(9, GpuMemoryHolder::InProcessUnattributed)]),
            ),
        ]);
        let text = render(&sample, &Annotations::default());
        assert!(
            text.contains(
                "gpu  pid  process  gpu memory  plugin\n  \
                   0  processes unavailable: NVML: GPU 0: not supported\n  \
                   1    9  ?             1 MiB  (daemon, unattributed)\n"
            ),
            "{text}"
        );
    }

    #[test]
    fn times_past_the_year_9999_do_not_panic() {
        assert_eq!(
            format_time(Timestamp::from_secs(86_400)),
            "1970-01-02T00:00:00Z"
        );
        assert!(format_time(Timestamp::from_millis(u64::MAX)).ends_with("after the epoch"));
    }
}
