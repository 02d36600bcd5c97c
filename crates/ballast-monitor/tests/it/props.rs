//! Property tests: no parser panics, whatever text it is given.

use ballast_monitor::parse::{
    parse_cfs_quota, parse_cgroup_limit, parse_cgroup_u64, parse_cpu_max, parse_loadavg,
    parse_meminfo, parse_memory_stat_key, parse_proc_cgroup, parse_proc_stat, parse_psi,
    parse_self_stat, parse_stat_ids,
};
use proptest::prelude::*;

/// Arbitrary text, and text close to the real formats (the interesting malformed cases).
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "((some|full|cpu|cpu0|MemTotal:|[0-9]+:[a-z,]*:)( [a-z0-9=.:/()-]{0,14}){0,12}\n?){0,4}",
        "[0-9 ()a-z.\n/:-]{0,80}",
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn no_parser_panics(text in text()) {
        let _ = parse_psi("f", &text);
        let _ = parse_meminfo("f", &text);
        let _ = parse_proc_stat("f", &text);
        let _ = parse_loadavg("f", &text);
        let _ = parse_self_stat("f", &text);
        let _ = parse_stat_ids("f", &text);
        let _ = parse_proc_cgroup("f", &text);
        let _ = parse_cgroup_limit("f", &text);
        let _ = parse_cgroup_u64("f", &text);
        let _ = parse_cpu_max("f", &text);
        let _ = parse_cfs_quota("f", &text, "g", &text);
        let _ = parse_memory_stat_key("f", &text, "inactive_file");
    }

    #[test]
    fn psi_round_trips_what_the_kernel_writes(
        avg in proptest::array::uniform3(0u32..10_000),
        total in any::<u64>(),
    ) {
        let text = format!(
            "some avg10={}.{:02} avg60={}.{:02} avg300={}.{:02} total={total}\n",
            avg[0] / 100, avg[0] % 100, avg[1] / 100, avg[1] % 100, avg[2] / 100, avg[2] % 100
        );
        let reading = parse_psi("f", &text).unwrap();
        prop_assert_eq!(reading.some.total_us, total);
        prop_assert!((reading.some.avg10 - f64::from(avg[0]) / 100.0).abs() < 1e-9);
        prop_assert!(reading.full.is_none());
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Whatever the readings (times and totals that jump, go back, overflow) or the file's text,
    /// the stall detector never panics; with time and totals that only grow, it fires at most
    /// once per window.
    #[test]
    fn the_stall_detector_never_panics_and_fires_at_most_once_per_window(
        steps in proptest::collection::vec(
            (prop_oneof![0u64..300_000, any::<u64>()], prop_oneof![0u64..400_000, any::<u64>()], text()),
            0..80,
        ),
        stall_us in prop_oneof![0u64..300_000, any::<u64>()],
        window_us in prop_oneof![0u64..3_000_000, any::<u64>()],
    ) {
        let mut wild = ballast_monitor::StallDetector::new(stall_us, window_us);
        let mut steady = ballast_monitor::StallDetector::new(stall_us, window_us);
        let (mut now, mut total) = (0u64, 0u64);
        let mut fired: Vec<u64> = Vec::new();
        for (dt, grow, text) in &steps {
            let _ = wild.observe(*dt, *grow);
            if let Ok(reading) = ballast_monitor::parse::parse_psi("f", text) {
                let _ = wild.observe(*dt, reading.some.total_us);
            }
            now = now.saturating_add(*dt);
            total = total.saturating_add(*grow);
            if steady.observe(now, total) {
                fired.push(now);
            }
        }
        for pair in fired.windows(2) {
            prop_assert!(pair[1] - pair[0] >= window_us.max(1), "{fired:?}");
        }
    }
}
