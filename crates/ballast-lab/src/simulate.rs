//! `ballast simulate`: replays a recorded trace through the real predictor and scaler on a
//! virtual clock, counterfactually (a shed plugin's cost leaves the replayed utilization), and
//! prints the decision timeline and a summary; `--plot` draws it (`plot.rs`), `--compare` runs
//! the same trace through several configs side by side (`compare.rs`).

mod compare;
pub mod engine;
mod plot;
#[cfg(test)]
mod tests;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use crate::trace::{Spacing, Trace, TraceOptions, read_trace};
use anyhow::Context as _;
use ballast_core::decision::{Action, Decision};
use ballast_core::{Resource, Timestamp};

use engine::{Report, Sim, SimConfig};

/// The exit code for a configuration with problems (sysexits' EX_CONFIG).
pub(crate) const EX_CONFIG: u8 = 78;

/// Arguments of `ballast simulate`.
#[derive(Debug, clap::Args)]
pub struct SimulateArgs {
    /// The simulation config (TOML): scaler and predictor settings and the plugins with their
    /// declared cost; see config/simulate-example.toml.
    #[arg(long, value_name = "FILE", required_unless_present = "compare")]
    config: Option<PathBuf>,
    /// Replay the trace through each of these configs and print their summaries side by side.
    #[arg(long, value_name = "FILE", num_args = 2.., conflicts_with_all = ["config", "plot"])]
    compare: Vec<PathBuf>,
    /// Draw the replay into this file (.svg or .png, 1200x600): utilization, smoothed value,
    /// forecast, thresholds, and one band per plugin with its level and the decisions.
    #[arg(long, value_name = "FILE.svg|FILE.png")]
    plot: Option<PathBuf>,
    /// The trace: CSV (`timestamp,value`, NAB, Google 2019, Azure, request logs) or the
    /// daemon's telemetry JSON lines.
    #[arg(long, value_name = "FILE")]
    trace: PathBuf,
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
    #[arg(long, value_name = "N", default_value_t = 1)]
    repeat: u32,
    /// Print one JSON document (`decisions` and `summary`) instead of text.
    #[arg(long)]
    json: bool,
}

/// Runs `ballast simulate`.
pub fn run(args: SimulateArgs) -> anyhow::Result<ExitCode> {
    let Some(config_path) = args.config.clone() else {
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
    let trace = load_trace(&args)?;
    let name = args.trace.display().to_string();
    if trace.points.is_empty() {
        anyhow::bail!(
            "{name}: column `{}` has no readings to replay",
            trace.column
        );
    }
    // A column that names a resource (the daemon's telemetry) says what it measures.
    let resource = args
        .resource
        .or_else(|| trace.column.parse::<Resource>().ok())
        .or(config.resource)
        .unwrap_or_else(|| guess_resource(&trace.column));
    let scale = Scale::choose(&args.scale, &trace)?;
    let mut sim = match Sim::new(&config, resource) {
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
        &trace,
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
                trace_name: trace_file_name(&args.trace),
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
        let json = serde_json::json!({
            "trace": name,
            "column": trace.column,
            "resource": resource,
            "scale": scale.factor,
            "decisions": report.decisions,
            "summary": report.summary,
        });
        println!("{}", serde_json::to_string_pretty(&json)?);
    } else {
        print!(
            "{}",
            to_text(&name, &trace, &config, &scale, &report, args.repeat.max(1))
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

fn load_trace(args: &SimulateArgs) -> anyhow::Result<Trace> {
    let options = TraceOptions {
        column: args.column.clone(),
        interval: seconds("--interval", args.interval)?,
        bin: seconds("--bin", args.bin)?,
        format: None,
    };
    let name = args.trace.display().to_string();
    let file =
        std::fs::File::open(&args.trace).with_context(|| format!("cannot open trace {name}"))?;
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

/// A timestamp as a UTC date and time when it looks like one, else as an offset from zero.
fn format_time(t: Timestamp) -> String {
    let secs = t.as_millis() / 1000;
    // 2000-01-01: earlier values are offsets of traces without timestamps.
    if secs < 946_684_800 {
        let days = secs / 86_400;
        let rest = secs % 86_400;
        return format!(
            "+{days}d {:02}:{:02}:{:02}",
            rest / 3600,
            rest / 60 % 60,
            rest % 60
        );
    }
    let c = t.civil();
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02}",
        c.year, c.month, c.day, c.hour, c.minute, c.second
    )
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
        format_time(d.at),
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
    name: &str,
    trace: &Trace,
    config: &SimConfig,
    scale: &Scale,
    report: &Report,
    repeat: u32,
) -> String {
    let s = &report.summary;
    let mut out = String::new();
    let spacing = match trace.spacing {
        Spacing::FromFile => "timestamps from the file".to_owned(),
        Spacing::Fixed(d) => format!("every {}", humantime::format_duration(d)),
        Spacing::Binned(d) => format!("binned every {}", humantime::format_duration(d)),
    };
    let _ = writeln!(
        out,
        "simulating {} from {name} (column `{}`, {} readings, {spacing}, scale {}: {})",
        s.resource,
        trace.column,
        trace.points.len(),
        scale.factor,
        scale.why
    );
    if repeat > 1 {
        let _ = writeln!(out, "replayed {repeat} times back to back");
    }
    let plugins: Vec<String> = config
        .plugins
        .iter()
        .map(|p| {
            let levels: Vec<String> = p.levels.iter().map(|c| format!("{c}")).collect();
            let essential = if p.essential { ", essential" } else { "" };
            format!(
                "{} (priority {}, cost {}{essential})",
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
    out
}
