//! Tests of the metrics registry: what events count, and the classic text conversion.
//! (`promtool check metrics` runs on a real daemon's metrics in the API's tests.)

use ballast_core::Timestamp;
use ballast_core::decision::{Action, Decision, DecisionKind, Mode, Rule};
use ballast_core::plugin::{PluginEvent, PluginEventKind, PluginState};

use super::{MAX_CALLER_SERIES, Metrics, OTHER_CALLERS, openmetrics_to_prometheus_text};
use crate::live::{DaemonEvent, LiveView};

fn decision(rule: Rule, applied: bool) -> Decision {
    Decision {
        at: Timestamp::from_secs(10),
        kind: DecisionKind::Shed,
        action: Action::Disable,
        plugin: Some("voice".into()),
        rule,
        resource: None,
        performance: None,
        applied,
        mode: Mode::Enforce,
        reason: "test".into(),
    }
}

#[test]
fn events_count_decisions_warnings_and_transitions() {
    let metrics = Metrics::new();
    metrics.observe(&DaemonEvent::Decision(decision(Rule::HighPressure, true)));
    metrics.observe(&DaemonEvent::Decision(decision(Rule::HighPressure, true)));
    metrics.observe(&DaemonEvent::Warning(decision(Rule::SoftLimit, false)));
    metrics.observe(&DaemonEvent::Plugin(PluginEvent {
        at: Timestamp::from_secs(11),
        plugin: "voice".into(),
        kind: PluginEventKind::StateChanged {
            from: PluginState::Draining,
            to: PluginState::Disabled,
            reason: "shed".into(),
            by_host: false,
        },
    }));
    let live = LiveView::new(Timestamp::from_secs(1), Mode::Observe);
    let text = metrics.render(&live, &[], &super::ScalerFigures::default());
    for expected in [
        r#"ballast_decisions_total{kind="shed",action="disable",rule="high_pressure",applied="true"} 2"#,
        r#"ballast_warnings_total{rule="soft_limit"} 1"#,
        r#"ballast_plugin_transitions_total{plugin="voice",state="disabled"} 1"#,
        r#"ballast_events_total{type="decision"} 2"#,
        r#"ballast_scaler_mode{mode="observe"} 1"#,
        r#"ballast_scaler_mode{mode="enforce"} 0"#,
        "ballast_start_time_seconds 1.0",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in\n{text}");
    }
    // Nothing sampled yet: no resource figures, rather than zeros.
    assert!(!text.contains("ballast_resource_utilization_ratio{"));
    assert!(text.ends_with("# EOF\n"));
}

#[test]
fn the_classic_format_names_counters_by_their_samples_and_drops_openmetrics_lines() {
    let openmetrics = "\
# HELP ballast_calls Calls.
# TYPE ballast_calls counter
ballast_calls_total{plugin=\"voice\"} 3
# HELP ballast_call_duration_seconds Latency.
# TYPE ballast_call_duration_seconds histogram
# UNIT ballast_call_duration_seconds seconds
ballast_call_duration_seconds_count 1
# HELP ballast_ratio A ratio.
# TYPE ballast_ratio gauge
ballast_ratio 0.5
# EOF
";
    let expected = "\
# HELP ballast_calls_total Calls.
# TYPE ballast_calls_total counter
ballast_calls_total{plugin=\"voice\"} 3
# HELP ballast_call_duration_seconds Latency.
# TYPE ballast_call_duration_seconds histogram
ballast_call_duration_seconds_count 1
# HELP ballast_ratio A ratio.
# TYPE ballast_ratio gauge
ballast_ratio 0.5
";
    assert_eq!(openmetrics_to_prometheus_text(openmetrics), expected);
}

#[test]
fn calls_are_counted_per_caller_with_a_bound_on_the_callers() {
    let metrics = Metrics::new();
    let d = std::time::Duration::from_millis(3);
    metrics.observe_call("voice", "app", "ok", d);
    metrics.observe_call("voice", "app", "degraded", d);
    metrics.observe_call("android", "app", "timeout", d);
    metrics.observe_call("voice", "-", "ok", d);
    // Past the bound, callers count as `other` (and so does a caller named `other`).
    for i in 0..MAX_CALLER_SERIES + 5 {
        metrics.observe_call("voice", &format!("c{i}"), "ok", d);
    }
    metrics.observe_call("voice", OTHER_CALLERS, "shed", d);
    let live = LiveView::new(Timestamp::from_secs(1), Mode::Observe);
    let text = metrics.render(&live, &[], &super::ScalerFigures::default());
    for expected in [
        r#"ballast_caller_calls_total{caller="app",outcome="ok"} 1"#,
        r#"ballast_caller_calls_total{caller="app",outcome="refused"} 1"#,
        r#"ballast_caller_calls_total{caller="app",outcome="failed"} 1"#,
        r#"ballast_caller_calls_total{caller="-",outcome="ok"} 1"#,
        r#"ballast_caller_calls_total{caller="other",outcome="ok"} 7"#,
        r#"ballast_caller_calls_total{caller="other",outcome="refused"} 1"#,
    ] {
        assert!(text.contains(expected), "missing {expected:?} in\n{text}");
    }
    let callers: std::collections::BTreeSet<&str> = text
        .lines()
        .filter(|l| l.starts_with("ballast_caller_calls_total{"))
        .filter_map(|l| l.split('"').nth(1))
        .collect();
    assert_eq!(callers.len(), MAX_CALLER_SERIES + 1, "{callers:?}");
}
