//! Every trace in `../shared/traces` parses, with the layout the trace README describes. The
//! traces must be present: a missing file fails the test, naming every missing path at once.

use std::path::PathBuf;
use std::time::Duration;

use ballast_lab::trace::{Spacing, Trace, TraceOptions, read_trace};

fn path_of(file: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/traces")
        .join(file)
}

/// Fails naming every one of `files` that is not there, before any is read.
fn require(files: &[&str]) {
    let missing: Vec<String> = files
        .iter()
        .map(|file| path_of(file))
        .filter(|path| !path.is_file())
        .map(|path| path.display().to_string())
        .collect();
    assert!(
        missing.is_empty(),
        "the shared traces are missing, no file at:\n{}",
        missing.join("\n")
    );
}

fn read(file: &str, column: Option<&str>) -> Trace {
    let path = path_of(file);
    let options = TraceOptions {
        column: column.map(str::to_owned),
        ..TraceOptions::default()
    };
    let reader = std::fs::File::open(&path)
        .unwrap_or_else(|e| panic!("cannot open {}: {e}", path.display()));
    read_trace(file, reader, &options).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
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
    require(&cases.map(|(file, ..)| file));
    for (file, column, points, spacing, interval) in cases {
        let trace = read(file, column);
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
    let file = "nab/realAWSCloudwatch/ec2_disk_write_bytes_1ef3de.csv";
    require(&[file]);
    let trace = read(file, None);
    let largest_gap = trace
        .points
        .windows(2)
        .map(|w| w[1].at - w[0].at)
        .max()
        .expect("more than one point");
    assert!(largest_gap > Duration::from_secs(300), "{largest_gap:?}");
}
