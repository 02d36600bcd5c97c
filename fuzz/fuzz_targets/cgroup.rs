//! Fuzz target: the cgroup parsers (`/proc/self/cgroup`, `memory.max` and the v1 limit,
//! `cpu.max`, `cpu.cfs_quota_us` with `cpu.cfs_period_us`, single numbers and `memory.stat`).
//! Any text is a value or an error naming the file; a CPU limit is a positive, finite core count.

#![no_main]

use ballast_monitor::parse::{
    parse_cfs_quota, parse_cgroup_limit, parse_cgroup_u64, parse_cpu_max, parse_memory_stat_key,
    parse_proc_cgroup,
};
use libfuzzer_sys::fuzz_target;

fn check_cores(cores: Option<f64>) {
    if let Some(cores) = cores {
        assert!(cores.is_finite() && cores > 0.0, "{cores}");
    }
}

fuzz_target!(|text: &str| {
    let _ = parse_proc_cgroup("/proc/self/cgroup", text);
    let _ = parse_cgroup_limit("memory.max", text);
    let _ = parse_cgroup_u64("memory.current", text);
    let _ = parse_memory_stat_key("memory.stat", text, "inactive_file");
    if let Ok(cores) = parse_cpu_max("cpu.max", text) {
        check_cores(cores);
    }
    // The quota and the period from one input: split at the first newline.
    let (quota, period) = text.split_once('\n').unwrap_or((text, "100000"));
    if let Ok(cores) = parse_cfs_quota("cpu.cfs_quota_us", quota, "cpu.cfs_period_us", period) {
        check_cores(cores);
    }
});
