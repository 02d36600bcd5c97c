//! Invariants of the detectors on virtual time, driven the way the host drives them: events at
//! arbitrary times, `tick` whenever `poll_timeout` comes due.

use std::time::Duration;

use ballast_core::{PluginAlert, Timestamp};
use ballast_process::{DetectorConfig, Detectors};
use proptest::prelude::*;

fn drive_until(d: &mut Detectors, until: Timestamp, alerts: &mut Vec<PluginAlert>) {
    while let Some(t) = d.poll_timeout().filter(|t| *t <= until) {
        d.tick(t);
        alerts.extend(std::iter::from_fn(|| d.poll_alert()).map(|(a, _)| a));
    }
}

proptest! {
    /// Each silence of at least the threshold is one stall, ended by one `active`; shorter
    /// silences raise nothing.
    #[test]
    fn one_stall_per_long_silence(gaps in proptest::collection::vec(1u64..120, 1..40)) {
        let threshold = Duration::from_secs(30);
        let t0 = Timestamp::from_secs(1_000);
        let mut d = Detectors::new(
            DetectorConfig { stall_threshold: Some(threshold), stuck_threshold: None, ..DetectorConfig::default() },
            t0,
        );
        let mut alerts = Vec::new();
        let mut now = t0;
        for gap in &gaps {
            now = now + Duration::from_secs(*gap);
            drive_until(&mut d, now, &mut alerts);
            d.heartbeat(now);
            alerts.extend(std::iter::from_fn(|| d.poll_alert()).map(|(a, _)| a));
        }
        let long = gaps.iter().filter(|g| **g >= 30).count();
        let stalls = alerts.iter().filter(|a| **a == PluginAlert::Stalled).count();
        let actives = alerts.iter().filter(|a| **a == PluginAlert::Active).count();
        prop_assert_eq!(stalls, long);
        prop_assert_eq!(actives, long);
        // They alternate: stalled, active, stalled, active, ...
        for pair in alerts.chunks(2) {
            prop_assert_eq!(pair, &[PluginAlert::Stalled, PluginAlert::Active][..pair.len()]);
        }
    }

    /// While suspended nothing is raised, however long the suspension.
    #[test]
    fn nothing_fires_while_suspended(pause in 1u64..100_000, before in 0u64..29) {
        let t0 = Timestamp::from_secs(0);
        let mut d = Detectors::new(DetectorConfig::default(), t0);
        d.suspend(t0 + Duration::from_secs(before));
        let mut alerts = Vec::new();
        drive_until(&mut d, t0 + Duration::from_secs(before + pause), &mut alerts);
        d.usage(t0 + Duration::from_secs(before + pause), 1 << 20, Some(4.0));
        prop_assert!(alerts.is_empty() && d.poll_alert().is_none());
    }
}
