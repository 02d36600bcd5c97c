//! Fuzz target: the PSI parser (`/proc/pressure/*`). Any text is a reading or an error naming the
//! file; a reading's averages are finite shares of time.

#![no_main]

use ballast_monitor::parse::parse_psi;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    if let Ok(reading) = parse_psi("/proc/pressure/memory", text) {
        let text = format!("{reading:?}");
        assert!(!text.contains("NaN") && !text.contains("inf"), "{text}");
    }
});
