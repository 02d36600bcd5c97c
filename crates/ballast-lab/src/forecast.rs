//! `ballast forecast`: offline tools for the forecaster. `evaluate` measures its accuracy on a
//! recorded trace against the persistence forecast ("next = last"); `report` reads the daemon's
//! telemetry and decision logs and reports on demand (`report.rs`), or asks a Prometheus server
//! that scrapes a fleet (`prometheus.rs`).

pub mod prometheus;
pub mod report;

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use crate::trace::{Spacing, Trace, TraceOptions, read_trace};
use anyhow::Context as _;
use ballast_core::Timestamp;
use ballast_predict::forecast::{Evaluation, ForecastConfig, Model, evaluate};

/// Arguments of `ballast forecast`.
#[derive(Debug, clap::Args)]
pub struct ForecastArgs {
    #[command(subcommand)]
    command: ForecastCommand,
}

/// The subcommands of `ballast forecast`.
#[derive(Debug, clap::Subcommand)]
enum ForecastCommand {
    /// Walk the forecaster over a trace (no look-ahead) and compare its error with persistence.
    Evaluate(EvaluateArgs),
    /// Compare recent demand with its baseline in the daemon's telemetry and decision logs, and
    /// recommend what to do.
    Report(ReportArgs),
}

/// Arguments of `ballast forecast report`.
#[derive(Debug, clap::Args)]
struct ReportArgs {
    /// The daemon's telemetry and decision logs (`telemetry-*.jsonl`, `decisions-*.jsonl`,
    /// rotated segments in any order), or data directories whose `*.jsonl` files are read.
    #[arg(long, value_name = "FILE", num_args = 1.., required_unless_present = "prometheus", conflicts_with = "prometheus")]
    history: Vec<PathBuf>,
    /// Report on a fleet instead, from range queries to the Prometheus server that scrapes its
    /// nodes (`http://host:9090`): per node (`instance`) and in total.
    #[arg(long, value_name = "URL")]
    prometheus: Option<String>,
    /// With --prometheus: label matchers that pick the nodes' series.
    #[arg(
        long,
        value_name = "MATCHERS",
        default_value = r#"job="ballast""#,
        requires = "prometheus"
    )]
    selector: String,
    /// With --prometheus: the end of the range (RFC 3339, e.g. 2026-12-06T03:00:00Z, or seconds
    /// since the epoch) [default: now].
    #[arg(long, value_name = "TIME", requires = "prometheus")]
    end: Option<String>,
    /// With --prometheus: how far back from --end to ask (the recent window and its baseline).
    #[arg(long, value_name = "DURATION", default_value = "1d", value_parser = humantime::parse_duration, requires = "prometheus")]
    range: Duration,
    /// With --prometheus: the queries' resolution.
    #[arg(long, value_name = "DURATION", default_value = "1m", value_parser = humantime::parse_duration, requires = "prometheus")]
    step: Duration,
    /// With --prometheus: Prometheus's HTTP client config (the YAML `promtool --http.config.file`
    /// reads): basic_auth, authorization or bearer_token(_file), tls_config (ca_file, cert_file,
    /// key_file, insecure_skip_verify).
    #[arg(long, value_name = "FILE", requires = "prometheus")]
    http_config: Option<PathBuf>,
    /// With --prometheus: how long each query may take.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = humantime::parse_duration, requires = "prometheus")]
    timeout: Duration,
    /// The recent window: the last this much of the history, compared with everything before.
    #[arg(long, value_name = "DURATION", default_value = "6h", value_parser = humantime::parse_duration)]
    horizon: Duration,
    /// Print one JSON document instead of Markdown.
    #[arg(long)]
    json: bool,
}

/// Arguments of `ballast forecast evaluate`.
#[derive(Debug, clap::Args)]
struct EvaluateArgs {
    /// The trace: CSV (`timestamp,value`, NAB, Google 2019, Azure) or telemetry JSON lines.
    #[arg(long, value_name = "FILE")]
    trace: PathBuf,
    /// The value column (CSV) or resource (telemetry); default: `value`, else the first
    /// non-timestamp column (telemetry: `cpu`).
    #[arg(long, value_name = "NAME")]
    column: Option<String>,
    /// Forecast this many steps of the trace's own sampling interval ahead.
    #[arg(long, value_name = "N", default_value_t = 10)]
    horizon: usize,
    /// The spacing of rows in a CSV without a timestamp column [default: 300].
    #[arg(long, value_name = "SECONDS")]
    interval: Option<f64>,
    /// Bin an event log (e.g. request arrivals) into a rate series with bins this wide; logs
    /// whose median gap is under a second are binned at 10 s without it.
    #[arg(long, value_name = "SECONDS")]
    bin: Option<f64>,
    /// The seasonal period the forecaster may use; 0 disables the seasonal model.
    #[arg(long, value_name = "SECONDS", default_value_t = 86_400.0)]
    season: f64,
    /// Print one JSON document instead of text.
    #[arg(long)]
    json: bool,
}

/// Runs `ballast forecast`.
pub fn run(args: ForecastArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        ForecastCommand::Evaluate(args) => run_evaluate(&args),
        ForecastCommand::Report(args) => run_report(&args),
    }
}

/// The files `--history` names: files as given, directories as their `*.jsonl` files.
fn history_files(paths: &[PathBuf]) -> anyhow::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for path in paths {
        if path.is_dir() {
            let mut inside: Vec<PathBuf> = std::fs::read_dir(path)
                .with_context(|| format!("cannot list {}", path.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.is_file() && p.extension().is_some_and(|e| e == "jsonl"))
                .collect();
            if inside.is_empty() {
                anyhow::bail!(
                    "{}: no *.jsonl files in this directory (expected the daemon's \
                     telemetry-*.jsonl and decisions-*.jsonl)",
                    path.display()
                );
            }
            inside.sort();
            files.extend(inside);
        } else {
            files.push(path.clone());
        }
    }
    Ok(files)
}

/// `--end`: seconds since the epoch, or a UTC date and time (`2026-12-06T03:00:00Z`).
/// Numbers of 1e11 and more (milliseconds, most likely) are refused.
fn parse_end(text: &str) -> anyhow::Result<Timestamp> {
    let in_range = text
        .trim()
        .parse::<f64>()
        .map_or(true, |secs| (0.0..1e11).contains(&secs));
    match crate::trace::parse_timestamp(text) {
        Some(end) if in_range => Ok(end),
        _ => anyhow::bail!(
            "--end must be a time: seconds since the epoch or a UTC date and time \
             (2026-12-06T03:00:00Z), got `{text}`"
        ),
    }
}

fn run_fleet_report(args: &ReportArgs, url: &str) -> anyhow::Result<ExitCode> {
    use prometheus::{Prometheus, Queries, Range, Source};
    if args.step.is_zero() {
        anyhow::bail!("--step must be longer than zero");
    }
    if args.timeout.is_zero() {
        anyhow::bail!("--timeout must be longer than zero");
    }
    if args.range <= args.horizon {
        anyhow::bail!(
            "--range ({}) must be longer than --horizon ({}): the time before the recent window \
             is its baseline",
            humantime::format_duration(args.range),
            humantime::format_duration(args.horizon)
        );
    }
    let points = args.range.as_secs_f64() / args.step.as_secs_f64();
    if points > prometheus::MAX_POINTS as f64 {
        anyhow::bail!(
            "--range {} at --step {} is {points:.0} points per series; Prometheus answers at most \
             {}: pass a --step of at least {}",
            humantime::format_duration(args.range),
            humantime::format_duration(args.step),
            prometheus::MAX_POINTS,
            humantime::format_duration(Duration::from_secs(
                (args.range.as_secs() / prometheus::MAX_POINTS).max(1) + 1
            ))
        );
    }
    let end = match &args.end {
        Some(text) => parse_end(text)?,
        None => Timestamp::from_system_time(std::time::SystemTime::now()),
    };
    let range = Range {
        start: end.saturating_sub(args.range),
        end,
        step: args.step,
    };
    let http = match &args.http_config {
        Some(path) => prometheus::HttpConfig::load(path)?,
        None => prometheus::HttpConfig::plain(),
    };
    let client = Prometheus::new(url, args.timeout, &http)?;
    let queries = Queries::new(&args.selector);
    let answers = prometheus::fetch(&client, &queries, range)?;
    let source = Source {
        prometheus: url.trim_end_matches('/').to_owned(),
        start: range.start,
        end: range.end,
        step_seconds: args.step.as_secs_f64(),
        queries,
    };
    let report = prometheus::fleet_report(&answers, source, args.horizon).with_context(|| {
        format!("cannot make a demand report from the series of Prometheus at {url}")
    })?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", prometheus::fleet_markdown(&report));
    }
    Ok(ExitCode::SUCCESS)
}

fn run_report(args: &ReportArgs) -> anyhow::Result<ExitCode> {
    if let Some(url) = &args.prometheus {
        return run_fleet_report(args, url);
    }
    let mut history = report::History::default();
    for file in history_files(&args.history)? {
        let name = file.display().to_string();
        let bytes = std::fs::read(&file).with_context(|| format!("cannot read history {name}"))?;
        history.add_text(&name, &bytes);
    }
    if !history.bad_lines.is_empty() {
        eprintln!(
            "warning: skipped {} unreadable line{}: {}",
            history.bad_lines.len(),
            if history.bad_lines.len() == 1 {
                ""
            } else {
                "s"
            },
            report::bad_lines_text(&history.bad_lines, 5)
        );
    }
    let report = report::demand_report(&history, args.horizon).with_context(|| {
        format!(
            "cannot make a demand report from {}",
            history.files.join(", ")
        )
    })?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report::to_markdown(&report, &history));
    }
    Ok(ExitCode::SUCCESS)
}

fn seconds(flag: &str, value: Option<f64>) -> anyhow::Result<Option<Duration>> {
    match value {
        None => Ok(None),
        Some(v) if v.is_finite() && v > 0.0 && v < 1e12 => Ok(Some(Duration::from_secs_f64(v))),
        Some(v) => anyhow::bail!("{flag} must be a positive number of seconds, got {v}"),
    }
}

fn run_evaluate(args: &EvaluateArgs) -> anyhow::Result<ExitCode> {
    if args.horizon == 0 {
        anyhow::bail!("--horizon must be at least 1 step");
    }
    if !(args.season.is_finite() && args.season >= 0.0) {
        anyhow::bail!(
            "--season must be a number of seconds (0 disables it), got {}",
            args.season
        );
    }
    let options = TraceOptions {
        column: args.column.clone(),
        interval: seconds("--interval", args.interval)?,
        bin: seconds("--bin", args.bin)?,
        format: None,
    };
    let name = args.trace.display().to_string();
    let file =
        std::fs::File::open(&args.trace).with_context(|| format!("cannot open trace {name}"))?;
    let trace = read_trace(&name, std::io::BufReader::new(file), &options)?;
    let values = trace.values();
    if values.len() <= args.horizon {
        anyhow::bail!(
            "{name}: column `{}` has {} readings; evaluating a forecast {} steps ahead needs more \
             than {}",
            trace.column,
            values.len(),
            args.horizon,
            args.horizon
        );
    }
    let interval = trace.median_interval().filter(|i| !i.is_zero());
    let season = match interval {
        Some(interval) if args.season > 0.0 => {
            let steps = (args.season / interval.as_secs_f64()).round();
            (2.0..1e7).contains(&steps).then_some(steps as usize)
        }
        _ => None,
    };
    let config = ForecastConfig {
        horizon: args.horizon,
        season,
        ..ForecastConfig::default()
    };
    let evaluation = evaluate(&values, &config);
    if args.json {
        println!("{}", to_json(&trace, interval, &config, &evaluation));
    } else {
        print!("{}", to_text(&trace, interval, &config, &evaluation));
    }
    Ok(ExitCode::SUCCESS)
}

fn spacing_text(spacing: Spacing) -> String {
    match spacing {
        Spacing::FromFile => "timestamps from the file".to_owned(),
        Spacing::Fixed(d) => format!("no timestamps, rows {} s apart", d.as_secs_f64()),
        Spacing::Binned(d) => format!("events binned into {} s rates", d.as_secs_f64()),
    }
}

fn to_json(
    trace: &Trace,
    interval: Option<Duration>,
    config: &ForecastConfig,
    evaluation: &Evaluation,
) -> serde_json::Value {
    let models: serde_json::Map<String, serde_json::Value> = Model::ALL
        .iter()
        .zip(evaluation.mae_by_model)
        .filter(|(m, _)| **m != Model::Seasonal || config.season.is_some())
        .map(|(m, mae)| (m.name().to_owned(), serde_json::json!(mae)))
        .collect();
    serde_json::json!({
        "trace": trace.source,
        "column": trace.column,
        "points": trace.points.len(),
        "skipped": trace.skipped,
        "interval_seconds": interval.map(|i| i.as_secs_f64()),
        "horizon": config.horizon,
        "season_steps": config.season,
        "n": evaluation.n,
        "mae": evaluation.mae,
        "mae_persistence": evaluation.mae_persistence,
        "ratio": evaluation.ratio,
        "mae_by_model": models,
    })
}

fn to_text(
    trace: &Trace,
    interval: Option<Duration>,
    config: &ForecastConfig,
    evaluation: &Evaluation,
) -> String {
    let mut out = String::new();
    let interval_text = interval.map_or_else(
        || "unknown interval".to_owned(),
        |i| format!("median interval {} s", i.as_secs_f64()),
    );
    let _ = writeln!(out, "trace        {}", trace.source);
    let _ = writeln!(
        out,
        "series       {}: {} points, {interval_text} ({})",
        trace.column,
        trace.points.len(),
        spacing_text(trace.spacing)
    );
    let ahead = interval.map_or_else(String::new, |i| {
        format!(" ({} s)", i.as_secs_f64() * config.horizon as f64)
    });
    let _ = writeln!(out, "horizon      {} steps{ahead}", config.horizon);
    let season = match config.season {
        None => "off".to_owned(),
        Some(s) if s >= trace.points.len() => format!("{s} steps (longer than the trace: unused)"),
        Some(s) => format!("{s} steps"),
    };
    let _ = writeln!(out, "season       {season}");
    let _ = writeln!(out, "scored       {} forecasts", evaluation.n);
    let _ = writeln!(out, "mae          {:.6}", evaluation.mae);
    let _ = writeln!(out, "persistence  {:.6}", evaluation.mae_persistence);
    match evaluation.ratio {
        Some(ratio) => {
            let verdict = if ratio <= 1.0 {
                format!("{:.1}% lower error than persistence", (1.0 - ratio) * 100.0)
            } else {
                format!(
                    "{:.1}% higher error than persistence",
                    (ratio - 1.0) * 100.0
                )
            };
            let _ = writeln!(out, "ratio        {ratio:.3} ({verdict})");
        }
        None => {
            let _ = writeln!(
                out,
                "ratio        n/a (persistence is exact on this series)"
            );
        }
    }
    let mut models: Vec<(Model, f64)> = Model::ALL
        .iter()
        .copied()
        .zip(evaluation.mae_by_model)
        .filter(|(m, _)| *m != Model::Seasonal || config.season.is_some())
        .collect();
    models.sort_by(|a, b| a.1.total_cmp(&b.1));
    let _ = writeln!(out, "models alone (mae, best first):");
    for (model, mae) in models {
        let _ = writeln!(out, "  {:<18} {mae:.6}", model.name());
    }
    out
}

#[cfg(test)]
mod tests {
    use crate::trace::parse_trace;

    use super::*;

    fn sample_trace() -> Trace {
        let mut text = String::from("timestamp,value\n");
        for i in 0..200_u32 {
            let minutes = i * 5;
            let value = if i % 2 == 0 { 0.4 } else { 0.6 };
            let _ = writeln!(
                text,
                "2014-02-14 {:02}:{:02}:00,{value}",
                minutes / 60 % 24,
                minutes % 60
            );
        }
        parse_trace("cpu.csv", &text, &TraceOptions::default()).expect("the trace parses")
    }

    #[test]
    fn end_is_seconds_or_a_utc_date_and_time() {
        let end = Timestamp::from_millis(1_796_526_000_000);
        assert_eq!(parse_end("2026-12-06T03:00:00Z").unwrap(), end);
        assert_eq!(parse_end("2026-12-06 03:00:00").unwrap(), end);
        assert_eq!(parse_end("1796526000").unwrap(), end);
        for bad in ["1796526000000", "-5", "yesterday"] {
            let message = parse_end(bad).unwrap_err().to_string();
            assert!(message.starts_with("--end must be a time"), "{message}");
        }
    }

    #[test]
    fn json_has_the_documented_fields() {
        let trace = sample_trace();
        let config = ForecastConfig {
            horizon: 3,
            ..ForecastConfig::default()
        };
        let evaluation = evaluate(&trace.values(), &config);
        let json = to_json(&trace, trace.median_interval(), &config, &evaluation);
        for key in ["mae", "mae_persistence", "ratio", "n", "horizon", "column"] {
            assert!(json.get(key).is_some(), "{key} missing from {json}");
        }
        assert_eq!(json["horizon"], 3);
        assert_eq!(json["n"], 197);
        // Persistence worked out here, not taken from `evaluate`: three steps ahead of 0.4 comes
        // 0.6 and the other way round, so "the value then is the value now" misses by 0.2 at
        // each of the 197 steps.
        let values = trace.values();
        let misses: Vec<f64> = values
            .iter()
            .zip(values.iter().skip(3))
            .map(|(now, later)| (later - now).abs())
            .collect();
        assert_eq!(misses.len(), 197);
        let persistence = misses.iter().sum::<f64>() / misses.len() as f64;
        assert!((persistence - 0.2).abs() < 1e-12, "{persistence}");
        let reported = json["mae_persistence"].as_f64().expect("a number");
        assert!((reported - persistence).abs() < 1e-12, "{json}");
        let mae = json["mae"].as_f64().expect("a number");
        assert!(mae < persistence, "{json}");
        let ratio = json["ratio"].as_f64().expect("a number");
        assert!((ratio - mae / persistence).abs() < 1e-9, "{json}");
        assert!(json["mae_by_model"].get("seasonal").is_none());
    }

    #[test]
    fn text_names_the_trace_and_the_verdict() {
        let trace = sample_trace();
        let config = ForecastConfig {
            horizon: 3,
            ..ForecastConfig::default()
        };
        let evaluation = evaluate(&trace.values(), &config);
        let text = to_text(&trace, trace.median_interval(), &config, &evaluation);
        assert!(text.starts_with("trace        cpu.csv\n"), "{text}");
        assert!(text.contains("horizon      3 steps (900 s)"), "{text}");
        assert!(text.contains("lower error than persistence"), "{text}");
    }
}
