//! Forecast accuracy on the real traces in `../shared/traces` (relative to the workspace root):
//! prints the per-series table and asserts the goals at a horizon of 10 steps of each trace's own
//! interval: the published forecast is never worse than persistence on any series (an MAE ratio
//! of at most 1.0 on each) and the mean ratio is at most 0.80. The series are every CSV under the
//! directory, every value column of each (a request log also as its arrival rate), found by
//! listing it, so a trace added there is held to the same goals. The persistence baseline is
//! worked out here, independently of `evaluate`, so that a wrong baseline cannot make the
//! forecaster look good.
//!
//! Run `cargo test -p ballast-lab --test it accuracy -- --nocapture` to see the table. The traces
//! must be present: a missing directory or known file fails the test, naming every missing path.

use std::path::{Path, PathBuf};

use ballast_lab::trace::{Trace, TraceOptions, read_trace};
use ballast_predict::forecast::{ForecastConfig, evaluate};

/// Files the goal was set on: the test fails, naming them, if any is missing, so that an empty
/// or partial directory cannot pass it.
const KNOWN: [&str; 5] = [
    "nab/realAWSCloudwatch/ec2_cpu_utilization_77c1ca.csv",
    "nab/realAWSCloudwatch/iio_us-east-1_i-a2eb1cd9_NetworkIn.csv",
    "google2019/instance_usage_grouped_300_seconds_month.csv",
    "azure_v2/vm_cpu_readings_month_aggregated_cpu_mem.csv",
    "azure_llm_2023/AzureLLMInferenceTrace_code.csv",
];

/// How many series the directory held when the goal was set (21 files).
const KNOWN_SERIES: usize = 29;

/// The seasonal period given to the forecaster, as `ballast forecast evaluate` does by default.
const SEASON_SECONDS: f64 = 86_400.0;

/// The goals.
const MAX_RATIO: f64 = 1.0;
const MAX_MEAN_RATIO: f64 = 0.80;

fn traces_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/traces")
}

/// Every `*.csv` under `dir`, sorted.
fn csv_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let entries = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()));
        for entry in entries {
            let path = entry.expect("a directory entry").path();
            if path.is_dir() {
                pending.push(path);
            } else if path.extension().is_some_and(|e| e == "csv") {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

fn read(path: &Path, column: Option<&str>) -> Trace {
    let options = TraceOptions {
        column: column.map(str::to_owned),
        ..TraceOptions::default()
    };
    let reader =
        std::fs::File::open(path).unwrap_or_else(|e| panic!("cannot open {}: {e}", path.display()));
    read_trace(&path.display().to_string(), reader, &options)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every series of one file: each value column (the header's, less the timestamp), and for a
/// request log its arrival rate too (what reading it without a column gives).
fn series_of(path: &Path) -> Vec<Trace> {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let header = text.lines().next().unwrap_or_default();
    let mut traces = vec![read(path, None)];
    for column in header.split(',').map(str::trim) {
        if column.eq_ignore_ascii_case("timestamp") || column.eq_ignore_ascii_case("time") {
            continue;
        }
        let trace = read(path, Some(column));
        if !traces.iter().any(|t| t.column == trace.column) {
            traces.push(trace);
        }
    }
    traces
}

/// The persistence forecast's mean absolute error, "the value `horizon` steps ahead is the value
/// now", over every step where both values are finite, and the number of steps scored.
fn persistence_mae(values: &[f64], horizon: usize) -> (f64, usize) {
    let pairs: Vec<f64> = values
        .iter()
        .zip(values.iter().skip(horizon))
        .filter(|(now, later)| now.is_finite() && later.is_finite())
        .map(|(now, later)| (later - now).abs())
        .collect();
    (pairs.iter().sum::<f64>() / pairs.len() as f64, pairs.len())
}

#[test]
fn the_persistence_baseline_is_the_error_of_repeating_the_value_now() {
    // Horizon 2 over 1, 2, 4, NaN, 3, 3: the pairs (1, 4) and (NaN, 3) -> 3 and not scored,
    // (2, NaN) not scored, (4, 3) -> 1; MAE 2 over 2 steps.
    let values = [1.0, 2.0, 4.0, f64::NAN, 3.0, 3.0];
    assert_eq!(persistence_mae(&values, 2), (2.0, 2));
}

#[test]
fn forecast_never_loses_to_persistence_on_the_shared_traces() {
    let dir = traces_dir();
    let missing: Vec<String> = KNOWN
        .iter()
        .map(|file| dir.join(file))
        .filter(|path| !path.is_file())
        .map(|path| path.display().to_string())
        .collect();
    assert!(
        missing.is_empty(),
        "the shared traces are missing, no file at:\n{}",
        missing.join("\n")
    );
    let mut rows = Vec::new();
    println!(
        "{:<66} {:>14} {:>14} {:>7}",
        "series (horizon 10)", "mae", "mae_persistence", "ratio"
    );
    for path in csv_files(&dir) {
        let file = path
            .strip_prefix(&dir)
            .unwrap_or(&path)
            .display()
            .to_string();
        for trace in series_of(&path) {
            let interval = trace.median_interval().expect("the trace has an interval");
            let config = ForecastConfig {
                horizon: 10,
                season: Some((SEASON_SECONDS / interval.as_secs_f64()).round() as usize),
                ..ForecastConfig::default()
            };
            let values = trace.values();
            let evaluation = evaluate(&values, &config);
            let name = format!("{file}:{}", trace.column);
            // The baseline `evaluate` reports must be persistence's own, over the same steps.
            let (baseline, steps) = persistence_mae(&values, config.horizon);
            assert_eq!(evaluation.n, steps, "{name}: steps scored");
            assert!(
                (evaluation.mae_persistence - baseline).abs() <= 1e-9 * baseline,
                "{name}: evaluate reports a persistence MAE of {}, persistence has {baseline}",
                evaluation.mae_persistence
            );
            assert!(baseline > 0.0, "{name}: persistence is exact");
            let ratio = evaluation.mae / baseline;
            assert!(
                evaluation.ratio.is_some_and(|r| (r - ratio).abs() <= 1e-9),
                "{name}: evaluate reports a ratio of {:?}, the figures give {ratio}",
                evaluation.ratio
            );
            println!(
                "{name:<66} {:>14.6} {baseline:>14.6} {ratio:>7.3}",
                evaluation.mae
            );
            rows.push((name, ratio));
        }
    }
    assert!(
        rows.len() >= KNOWN_SERIES,
        "{} series found under {}, {KNOWN_SERIES} expected",
        rows.len(),
        dir.display()
    );
    let mean = rows.iter().map(|(_, r)| r).sum::<f64>() / rows.len() as f64;
    let (worst_name, worst) = rows
        .iter()
        .max_by(|a, b| a.1.total_cmp(&b.1))
        .expect("some series");
    println!("{:<66} {:>14} {:>14} {mean:>7.3}", "mean", "", "");
    println!("worst: {worst_name} at {worst:.3}");
    let losing: Vec<String> = rows
        .iter()
        .filter(|(_, ratio)| *ratio > MAX_RATIO)
        .map(|(name, ratio)| format!("{name}: {ratio:.3}"))
        .collect();
    assert!(
        losing.is_empty(),
        "worse than persistence on:\n{}",
        losing.join("\n")
    );
    assert!(
        mean <= MAX_MEAN_RATIO,
        "mean ratio {mean:.3} above the {MAX_MEAN_RATIO} goal"
    );
}
