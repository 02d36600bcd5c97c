//! Every trace in `../shared/traces` parses, with the layout the trace README describes.

use std::path::PathBuf;
use std::time::Duration;

use ballast_lab::trace::{Spacing, TraceOptions, read_trace};

fn read(file: &str, column: Option<&str>) -> Option<ballast_lab::trace::Trace> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/traces")
        .join(file);
    if !path.is_file() {
        println!("skipped: no trace at {}", path.display());
        return None;
    }
    let options = TraceOptions {
        column: column.map(str::to_owned),
        ..TraceOptions::default()
    };
    let reader = std::fs::File::open(&path).expect("the trace opens");
    Some(read_trace(file, reader, &options).expect("the trace parses"))
}

#[test]
fn shared_traces_parse_with_their_documented_layout() {
    // (file, column, points, spacing, median interval in seconds)
    let cases = [
        (
            "nab/realAWSCloudwatch/ec2_cpu_utilization_24ae8d.csv",
            None,
            4032,
            Spacing::FromFile,
            300,
        ),
        (
            "nab/realAWSCloudwatch/iio_us-east-1_i-a2eb1cd9_NetworkIn.csv",
            None,
            1243,
            Spacing::FromFile,
            300,
        ),
        (
            "google2019/instance_usage_grouped_300_seconds_month.csv",
            Some("avg_mem"),
            8064,
            Spacing::Fixed(Duration::from_secs(300)),
            300,
        ),
        (
            "azure_v2/vm_cpu_readings_month_aggregated_cpu_mem.csv",
            Some("cpu_usage"),
            8640,
            Spacing::FromFile,
            300,
        ),
        (
            "azure_llm_2023/AzureLLMInferenceTrace_code.csv",
            None,
            344,
            Spacing::Binned(Duration::from_secs(10)),
            10,
        ),
    ];
    for (file, column, points, spacing, interval) in cases {
        let Some(trace) = read(file, column) else {
            return;
        };
        assert_eq!(trace.points.len(), points, "{file}");
        assert_eq!(trace.spacing, spacing, "{file}");
        assert_eq!(
            trace.median_interval(),
            Some(Duration::from_secs(interval)),
            "{file}"
        );
        assert!(trace.points.iter().all(|p| p.value.is_finite()), "{file}");
    }
}

#[test]
fn nab_gaps_are_kept_not_filled() {
    let Some(trace) = read(
        "nab/realAWSCloudwatch/ec2_disk_write_bytes_1ef3de.csv",
        None,
    ) else {
        return;
    };
    let largest_gap = trace
        .points
        .windows(2)
        .map(|w| w[1].at - w[0].at)
        .max()
        .expect("more than one point");
    assert!(largest_gap > Duration::from_secs(300), "{largest_gap:?}");
}
