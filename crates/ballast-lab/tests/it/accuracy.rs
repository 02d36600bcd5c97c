//! Forecast accuracy on the real traces in `../shared/traces` (relative to the workspace root):
//! prints the per-series table and asserts the goals, a mean MAE ratio to persistence of at most
//! 0.85 with no series above 1.0, at a horizon of 10 steps of each trace's own interval.
//!
//! Run `cargo test -p ballast-predict --test it accuracy -- --nocapture` to see the table. Where
//! the traces are absent the test says so and passes.

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

#[test]
fn forecast_beats_persistence_on_the_shared_traces() {
    let dir = traces_dir();
    if !dir.is_dir() {
        println!("skipped: no traces at {}", dir.display());
        return;
    }
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
        let evaluation = evaluate(&trace.values(), &config);
        let ratio = evaluation.ratio.expect("persistence is not exact");
        let name = format!(
            "{}:{}",
            file.rsplit('/').next().unwrap_or(file),
            trace.column
        );
        println!(
            "{name:<50} {:>14.6} {:>14.6} {ratio:>7.3}",
            evaluation.mae, evaluation.mae_persistence
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
