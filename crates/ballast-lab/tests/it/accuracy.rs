//! Forecast accuracy on the real traces in `../shared/traces` (relative to the workspace root):
//! prints the per-series table and asserts the goals, a mean MAE ratio to persistence of at most
//! 0.85 with no series above 1.0, at a horizon of 10 steps of each trace's own interval. The
//! persistence baseline is worked out here, independently of `evaluate`, so that a wrong baseline
//! cannot make the forecaster look good.
//!
//! Run `cargo test -p ballast-lab --test it accuracy -- --nocapture` to see the table. The traces
//! must be present: a missing file fails the test, naming every missing path.

use std::collections::BTreeSet;
use std::path::PathBuf;

use ballast_lab::trace::{TraceOptions, read_trace};
use ballast_predict::forecast::{ForecastConfig, evaluate};

/// The series of the accuracy goal: file (relative to the traces directory) and column.
const SERIES: [(&str, Option<&str>); 13] = [
    ("nab/realAWSCloudwatch/ec2_cpu_utilization_24ae8d.csv", None),
    ("nab/realAWSCloudwatch/ec2_cpu_utilization_53ea38.csv", None),
    ("nab/realAWSCloudwatch/ec2_cpu_utilization_5f5533.csv", None),
    ("nab/realAWSCloudwatch/ec2_cpu_utilization_77c1ca.csv", None),
    ("nab/realAWSCloudwatch/ec2_cpu_utilization_825cc2.csv", None),
    ("nab/realAWSCloudwatch/ec2_cpu_utilization_ac20cd.csv", None),
    ("nab/realAWSCloudwatch/ec2_cpu_utilization_c6585a.csv", None),
    ("nab/realAWSCloudwatch/ec2_cpu_utilization_fe7f93.csv", None),
    ("nab/realAWSCloudwatch/rds_cpu_utilization_cc0c53.csv", None),
    ("nab/realAWSCloudwatch/rds_cpu_utilization_e47b3b.csv", None),
    (
        "google2019/instance_usage_grouped_300_seconds_month.csv",
        Some("avg_cpu"),
    ),
    (
        "google2019/instance_usage_grouped_300_seconds_month.csv",
        Some("avg_mem"),
    ),
    (
        "azure_v2/vm_cpu_readings_month_aggregated_cpu_mem.csv",
        Some("cpu_usage"),
    ),
];

/// The seasonal period given to the forecaster, as `ballast forecast evaluate` does by default.
const SEASON_SECONDS: f64 = 86_400.0;

fn traces_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/traces")
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
fn forecast_beats_persistence_on_the_shared_traces() {
    let dir = traces_dir();
    // A file read for two columns is named once.
    let missing: BTreeSet<String> = SERIES
        .iter()
        .map(|(file, _)| dir.join(file))
        .filter(|path| !path.is_file())
        .map(|path| path.display().to_string())
        .collect();
    assert!(
        missing.is_empty(),
        "the shared traces are missing, no file at:\n{}",
        Vec::from_iter(missing).join("\n")
    );
    let mut rows = Vec::new();
    println!(
        "{:<50} {:>14} {:>14} {:>7}",
        "series", "mae", "mae_persistence", "ratio"
    );
    for (file, column) in SERIES {
        let options = TraceOptions {
            column: column.map(str::to_owned),
            ..TraceOptions::default()
        };
        let reader = std::fs::File::open(dir.join(file)).expect("the trace opens");
        let trace = read_trace(file, reader, &options).expect("the trace parses");
        let interval = trace.median_interval().expect("the trace has an interval");
        let config = ForecastConfig {
            horizon: 10,
            season: Some((SEASON_SECONDS / interval.as_secs_f64()).round() as usize),
            ..ForecastConfig::default()
        };
        let values = trace.values();
        let evaluation = evaluate(&values, &config);
        let name = format!(
            "{}:{}",
            file.rsplit('/').next().unwrap_or(file),
            trace.column
        );
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
            "{name:<50} {:>14.6} {baseline:>14.6} {ratio:>7.3}",
            evaluation.mae
        );
        rows.push((name, ratio));
    }
    let mean = rows.iter().map(|(_, r)| r).sum::<f64>() / rows.len() as f64;
    println!("{:<50} {:>14} {:>14} {mean:>7.3}", "mean", "", "");
    assert!(mean <= 0.85, "mean ratio {mean:.3} above the 0.85 goal");
    for (name, ratio) in &rows {
        assert!(
            *ratio <= 1.0,
            "{name}: ratio {ratio:.3} is worse than persistence"
        );
    }
}
