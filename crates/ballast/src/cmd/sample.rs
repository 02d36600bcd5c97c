//! `ballast sample`: one sample of the machine as the monitor sees it (or one every interval),
//! for a person (aligned like `free` and `nvidia-smi`) or as JSON for scripts.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use ballast_core::format::{Table, bytes, percent, time as format_time};
use ballast_core::{Metric, PsiReading, Sample, Timestamp};
use ballast_monitor::{Monitor, MonitorConfig, NvmlSource};

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
        }
    }
}

/// How long to wait between the baseline reading and the first printed sample, so that CPU
/// figures (which compare two readings) are available.
const WARM_UP: Duration = Duration::from_millis(250);

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
        let sample = monitor.sample(now());
        let text = if args.json {
            let mut line =
                serde_json::to_string(&sample).context("cannot write the sample as JSON")?;
            line.push('\n');
            line
        } else {
            let mut text = render(&sample);
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
pub fn render(sample: &Sample) -> String {
    let mut out = format!("sampled at {}\n\n", format_time(sample.at));

    let mut memory = Table::new().right_aligned(&[false, true, true, true, true, false]);
    memory.row(["", "total", "used", "available", "use", "scope"]);
    match &sample.memory {
        Metric::Available { value: m } => {
            let scope = match &m.scope {
                ballast_core::MemoryScope::Host => "host".to_owned(),
                ballast_core::MemoryScope::CgroupV1 { path } => format!("cgroup v1 {path}"),
                ballast_core::MemoryScope::CgroupV2 { path } => format!("cgroup v2 {path}"),
            };
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

    let mut cpu = Table::new().right_aligned(&[false, true, true, true, true, true]);
    cpu.row(["", "cores", "busy", "load 1m", "5m", "15m"]);
    match &sample.cpu {
        Metric::Available { value: c } => cpu.row([
            "cpu".to_owned(),
            c.cores.to_string(),
            percent(c.utilization),
            format!("{:.2}", c.load_average[0]),
            format!("{:.2}", c.load_average[1]),
            format!("{:.2}", c.load_average[2]),
        ]),
        Metric::Unavailable { reason } => cpu.row(["cpu".to_owned(), unavailable(reason)]),
    }
    out.push_str(&cpu.render());
    out.push('\n');

    let mut psi = Table::new().right_aligned(&[false, true, true, true, true, true, true]);
    psi.row([
        "pressure",
        "some avg10",
        "avg60",
        "avg300",
        "full avg10",
        "avg60",
        "avg300",
    ]);
    for (name, metric) in [
        ("cpu", &sample.psi.cpu),
        ("memory", &sample.psi.memory),
        ("io", &sample.psi.io),
    ] {
        psi.row(psi_row(name, metric));
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
        out.push_str(&format!(
            "plugin {}  live {}, peak {}\n",
            plugin.plugin,
            bytes(plugin.live_bytes),
            bytes(plugin.peak_bytes)
        ));
    }
    out
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
    use ballast_core::{MemoryReading, MemoryScope};

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
        let text = render(&sample);
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

    #[test]
    fn times_past_the_year_9999_do_not_panic() {
        assert_eq!(
            format_time(Timestamp::from_secs(86_400)),
            "1970-01-02T00:00:00Z"
        );
        assert!(format_time(Timestamp::from_millis(u64::MAX)).ends_with("after the epoch"));
    }
}
