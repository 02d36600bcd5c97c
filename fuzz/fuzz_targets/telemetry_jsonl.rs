//! Fuzz target: the daemon's telemetry JSONL as its readers see it: the trace reader
//! (`ballast simulate` / `forecast` on `telemetry-*.jsonl`), each line as a `TelemetryRecord`,
//! and the torn-tail repair the log runs when it opens a segment after a crash, which must cut
//! at most the last line and leave only whole lines.

#![no_main]

use ballast_daemon::store::torn_tail;
use ballast_core::telemetry::TelemetryRecord;
use ballast_lab::trace::{TraceFormat, TraceOptions, parse_telemetry_jsonl};
use libfuzzer_sys::fuzz_target;

const RESOURCES: [Option<&str>; 4] = [None, Some("memory"), Some("psi_memory"), Some("gpu0")];

fuzz_target!(|data: &[u8]| {
    // The repair works on bytes: a crash can leave anything at the end.
    if let Some(start) = torn_tail(data) {
        assert!(start <= data.len());
        let kept = &data[..start];
        assert!(
            kept.is_empty() || kept.ends_with(b"\n"),
            "kept a partial line"
        );
        let cut = &data[start..];
        let cut_body = cut.strip_suffix(b"\n").unwrap_or(cut);
        assert!(!cut_body.contains(&b'\n'), "cut more than the last line");
    } else if !data.is_empty() {
        assert!(
            data.ends_with(b"\n"),
            "left a last line without its newline"
        );
    }
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    for line in text.lines() {
        let _ = serde_json::from_str::<TelemetryRecord>(line);
    }
    let options = TraceOptions {
        column: RESOURCES[data.len() % RESOURCES.len()].map(str::to_owned),
        format: Some(TraceFormat::TelemetryJsonl),
        ..TraceOptions::default()
    };
    if let Ok(trace) = parse_telemetry_jsonl("fuzz.jsonl", text, &options) {
        assert!(trace.points.iter().all(|p| p.value.is_finite()));
    }
});
