//! Fuzz target: the /proc parsers (`meminfo`, `stat`, `loadavg`, `self/stat`). Any text is a
//! value or an error naming the file.

#![no_main]

use ballast_monitor::parse::{parse_loadavg, parse_meminfo, parse_proc_stat, parse_self_stat};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    if let Ok(meminfo) = parse_meminfo("/proc/meminfo", text) {
        let _ = format!("{meminfo:?}");
    }
    let _ = parse_proc_stat("/proc/stat", text);
    if let Ok(load) = parse_loadavg("/proc/loadavg", text) {
        assert!(load.iter().all(|l| l.is_finite() && *l >= 0.0), "{load:?}");
    }
    let _ = parse_self_stat("/proc/self/stat", text);
});
