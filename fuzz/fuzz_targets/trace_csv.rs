//! Fuzz target: the CSV trace reader behind `ballast simulate` and `ballast forecast` (NAB,
//! Google and Azure layouts, request logs binned into rates), with any options. Any text is a
//! trace or an error naming the input; a trace's values are finite and its median interval is
//! computable.

#![no_main]

use std::time::Duration;

use arbitrary::Arbitrary;
use ballast_lab::trace::{TraceOptions, parse_csv};
use libfuzzer_sys::fuzz_target;

#[derive(Debug, Arbitrary)]
struct Input<'a> {
    column: Option<&'a str>,
    interval_ms: Option<u32>,
    bin_ms: Option<u32>,
    text: &'a str,
}

fuzz_target!(|input: Input<'_>| {
    let options = TraceOptions {
        column: input.column.map(str::to_owned),
        interval: input.interval_ms.map(|ms| Duration::from_millis(ms.into())),
        bin: input.bin_ms.map(|ms| Duration::from_millis(ms.into())),
        format: None,
    };
    if let Ok(trace) = parse_csv("fuzz.csv", input.text, &options) {
        assert!(trace.points.iter().all(|p| p.value.is_finite()));
        let _ = trace.median_interval();
    }
});
