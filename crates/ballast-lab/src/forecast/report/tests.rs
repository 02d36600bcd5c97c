//! The demand report on hand-made histories whose figures are worked out here.

use std::time::Duration;

use ballast_core::decision::{Action, Decision, DecisionKind, Mode, Rule};
use ballast_core::telemetry::{CallSummary, TelemetryRecord};
use ballast_core::{
    CpuReading, Level, Metric, PluginEvent, PluginEventKind, PluginState, Sample, Timestamp,
};
use expect_test::expect;

use super::*;

const HOUR: u64 = 3600;

fn calls(plugin: &str, caller: &str, from: u64, to: u64, n: u64, failures: u64) -> TelemetryRecord {
    TelemetryRecord::Calls(CallSummary {
        from: Timestamp::from_secs(from),
        to: Timestamp::from_secs(to),
        plugin: plugin.to_owned(),
        caller: caller.to_owned(),
        calls: n,
        failures,
        degraded: 0,
        latency_total_us: n * 1000,
        latency_max_us: 2000,
    })
}

/// Calls at `per_hour` from `from` to `to`, tallied every half hour.
fn steady(
    records: &mut Vec<TelemetryRecord>,
    plugin: &str,
    caller: &str,
    (from, to): (u64, u64),
    per_hour: u64,
    failed_per_hour: u64,
) {
    let mut t = from;
    while t < to {
        let end = (t + 1800).min(to);
        let share = |rate: u64| rate * (end - t) / HOUR;
        records.push(calls(
            plugin,
            caller,
            t,
            end,
            share(per_hour),
            share(failed_per_hour),
        ));
        t = end;
    }
}

fn state(
    plugin: &str,
    at: u64,
    from: PluginState,
    to: PluginState,
    reason: &str,
) -> TelemetryRecord {
    TelemetryRecord::Plugin(PluginEvent {
        at: Timestamp::from_secs(at),
        plugin: plugin.to_owned(),
        kind: PluginEventKind::StateChanged {
            from,
            to,
            reason: reason.to_owned(),
            by_host: false,
        },
    })
}

fn shed(plugin: &str, at: u64) -> TelemetryRecord {
    TelemetryRecord::Decision(Decision {
        at: Timestamp::from_secs(at),
        kind: DecisionKind::Shed,
        action: Action::Disable,
        plugin: Some(plugin.to_owned()),
        rule: Rule::HighPressure,
        resource: None,
        performance: None,
        applied: true,
        mode: Mode::Enforce,
        reason: "memory pressure 0.86 reached shed 0.80".to_owned(),
    })
}

fn cpu(at: u64, utilization: f64) -> TelemetryRecord {
    let mut sample = Sample::unavailable(Timestamp::from_secs(at), "test");
    sample.cpu = Metric::available(CpuReading {
        utilization,
        load_average: [0.0; 3],
        cores: 2,
        quota: None,
    });
    TelemetryRecord::Sample(Box::new(sample))
}

fn enabled() -> PluginState {
    PluginState::Enabled { level: Level(0) }
}

fn history(records: Vec<TelemetryRecord>) -> History {
    History {
        files: vec!["telemetry-000001.jsonl".to_owned()],
        records,
        bad_lines: Vec::new(),
    }
}

/// Eighteen hours of calm (voice 300/h, android 100/h), then six hours of surge (voice 1200/h
/// from two callers, android 200/h), voice shed twice in the surge and the faulty plugin failed.
fn surge_history() -> History {
    let mut records = Vec::new();
    let (calm, surge) = ((0, 18 * HOUR), (18 * HOUR, 24 * HOUR));
    steady(&mut records, "voice", "assistant", calm, 300, 0);
    steady(&mut records, "android", "phone", calm, 100, 0);
    steady(&mut records, "voice", "assistant", surge, 900, 0);
    steady(&mut records, "voice", "batch", surge, 300, 60);
    steady(&mut records, "android", "phone", surge, 200, 0);
    for hour in 0..24 {
        let load = if hour < 18 {
            0.40
        } else {
            0.70 + 0.02 * (hour - 18) as f64
        };
        records.push(cpu(hour * HOUR, load));
    }
    records.push(shed("voice", 19 * HOUR));
    records.push(state(
        "voice",
        19 * HOUR,
        enabled(),
        PluginState::Draining,
        "shed: cpu pressure 0.86",
    ));
    records.push(state(
        "voice",
        19 * HOUR + 5,
        PluginState::Draining,
        PluginState::Disabled,
        "drained",
    ));
    records.push(state(
        "voice",
        20 * HOUR,
        PluginState::Disabled,
        enabled(),
        "stabilized",
    ));
    records.push(shed("voice", 22 * HOUR));
    records.push(state(
        "voice",
        22 * HOUR,
        enabled(),
        PluginState::Disabled,
        "shed: cpu pressure 0.88",
    ));
    records.push(state(
        "faulty",
        23 * HOUR,
        enabled(),
        PluginState::Failed {
            reason: "health check failed".to_owned(),
        },
        "health check failed 3 times",
    ));
    history(records)
}

#[test]
fn a_surge_with_failures_and_repeated_sheds() {
    let h = surge_history();
    let report = demand_report(&h, Duration::from_secs(6 * HOUR)).unwrap();
    // Recent: (1200 + 200) calls per hour; baseline: 400 per hour; 3.5 is above 3.0.
    assert_eq!(report.recent_request_rate, 1400.0);
    assert_eq!(report.baseline_request_rate, 400.0);
    assert_eq!(report.surge_factor, Some(3.5));
    assert_eq!(report.demand_level, DemandLevel::Critical);
    assert_eq!(report.resource_mode, ResourceMode::Surge);
    assert_eq!(report.dispatch_posture, DispatchPosture::Degraded);
    expect![[r#"
        # Demand forecast report

        History: 1970-01-01T00:00:00Z to 1970-01-02T00:00:00Z (1day), 139 records from 1 file.
        Recent window: the last 6h (from 1970-01-01T18:00:00Z); baseline: the 18h before it.

        | | |
        |---|---|
        | demand level | **critical** (surge factor 3.50) |
        | resource mode | surge |
        | dispatch posture | degraded |
        | requests per hour | recent 1,400, baseline 400, predicted 1,400 |

        ## Recommended actions

        1. **surge**: Pre-warm capacity: requests run at 3.50x the baseline (surge factor above 1.5); plan for about 1,400 calls/hour over the next 6h, bring shed plugins back to full level before the peak and keep headroom under the shed threshold.
        2. **plugin_failing**: Investigate `faulty`: it was failed for 1h; read its log lines and `ballast plugins`, and fix or disable it before it takes more calls.
        3. **plugin_failing**: Investigate `voice`: 360 of its 7,200 recent calls failed with an error or timeout; read its log lines and `ballast plugins`, and fix or disable it before it takes more calls.
        4. **throttle**: Throttle calls to `voice` (1,200 calls/hour): it takes 86% of all calls and its call rate is 4.0x its baseline; lower its max_concurrent_calls or rate-limit its heaviest callers.
        5. **repeated_sheds**: Add capacity for `voice`: it was shed 2 times in the last 6h; give the machine more headroom, run it at a cheaper level by default, or raise its priority above the plugins that stay.

        ## Resources

        | resource | baseline | recent | predicted |
        |---|---:|---:|---:|
        | cpu | 41.6% | 76.0% | 80.0% |

        ## Plugins

        | plugin | baseline calls/h | recent calls/h | failure rate | time shed | time failed | sheds |
        |---|---:|---:|---:|---:|---:|---:|
        | android | 100 | 200 | 0.0% | 0s | 0s | 0 |
        | faulty | 0.0 | 0.0 | 0.0% | 0s | 1h | 0 |
        | voice | 300 | 1,200 | 5.0% | 3h | 0s | 2 |

        ## Outages in the recent window

        - `faulty` failed 1 time, 1h in all (still now); latest reason: health check failed 3 times
        - `voice` shed 2 times, 3h in all (still now); latest reason: shed: cpu pressure 0.88

        ## Failed calls in the recent window

        - `voice`: 360 of 7,200 calls failed (5.0%), 0 of them refused while it was out of service

        ## Top callers in the recent window

        | caller | calls | calls/h | failure rate |
        |---|---:|---:|---:|
        | assistant | 5,400 | 900 | 0.0% |
        | batch | 1,800 | 300 | 20.0% |
        | phone | 1,200 | 200 | 0.0% |
    "#]]
    .assert_eq(&to_markdown(&report, &h));
}

#[test]
fn a_calm_history_keeps_the_current_allocation() {
    let mut records = Vec::new();
    steady(&mut records, "voice", "assistant", (0, 12 * HOUR), 300, 0);
    for hour in 0..12 {
        records.push(cpu(hour * HOUR, 0.30));
    }
    records.push(shed("voice", 2 * HOUR));
    let h = history(records);
    let report = demand_report(&h, Duration::from_secs(3 * HOUR)).unwrap();
    assert_eq!(report.surge_factor, Some(1.0));
    assert_eq!(report.demand_level, DemandLevel::Low);
    assert_eq!(report.resource_mode, ResourceMode::Steady);
    assert_eq!(report.dispatch_posture, DispatchPosture::Normal);
    assert_eq!(report.predicted_request_rate.round(), 300.0);
    expect![[r#"
        [
            Recommendation {
                signal: "none",
                action: "Maintain current allocation: demand is low and no plugin is failing, throttled or shed repeatedly.",
            },
        ]
    "#]]
    .assert_debug_eq(&report.recommended_actions);
    assert!(report.notes.is_empty(), "{:?}", report.notes);
}

#[test]
fn demand_levels_follow_the_surge_factor() {
    let level = |f: f64| DemandLevel::from_surge(Some(f), 1.0);
    assert_eq!(level(3.01), DemandLevel::Critical);
    assert_eq!(level(3.0), DemandLevel::Elevated);
    assert_eq!(level(1.51), DemandLevel::Elevated);
    assert_eq!(level(1.5), DemandLevel::Normal);
    assert_eq!(level(1.01), DemandLevel::Normal);
    assert_eq!(level(1.0), DemandLevel::Low);
    assert_eq!(level(0.2), DemandLevel::Low);
    assert_eq!(DemandLevel::from_surge(None, 5.0), DemandLevel::Critical);
    assert_eq!(DemandLevel::from_surge(None, 0.0), DemandLevel::Low);
}

#[test]
fn calls_are_split_between_the_windows_by_their_interval() {
    // One tally of 100 calls over two hours, half of it in the one-hour recent window.
    let h = history(vec![
        calls("voice", "a", 0, 2 * HOUR, 100, 0),
        calls("voice", "a", 2 * HOUR, 3 * HOUR, 0, 0),
    ]);
    let report = demand_report(&h, Duration::from_secs(2 * HOUR)).unwrap();
    // Recent (1h..3h): 50 calls in 2 h; baseline (0..1h): 50 calls in 1 h.
    assert_eq!(report.recent_request_rate, 25.0);
    assert_eq!(report.baseline_request_rate, 50.0);
    assert_eq!(report.surge_factor, Some(0.5));
}

#[test]
fn bad_lines_are_skipped_and_named_by_line() {
    let mut h = History::default();
    let good = serde_json::to_string(&calls("voice", "a", 0, 600, 10, 0)).unwrap();
    let later = serde_json::to_string(&calls("voice", "a", 7200, 7800, 30, 0)).unwrap();
    let mut text = format!("{good}\n\n{{\"type\":\"calls\",\"from\":1\n{later}\n").into_bytes();
    text.extend_from_slice(b"\xff\xfe\n{\"type\":\"weather\",\"at\":5}\n[1,2]\n");
    h.add_text("t.jsonl", &text);
    assert_eq!(h.records.len(), 2);
    expect![[r#"
        t.jsonl:3: EOF while parsing an object (column 24); t.jsonl:5: not UTF-8 text; t.jsonl:6: unknown variant `weather`, expected one of `sample`, `assessment`, `decision`, `plugin`, `calls` (column 17); and 1 more
    "#]]
    .assert_eq(&format!("{}\n", bad_lines_text(&h.bad_lines, 3)));
    let report = demand_report(&h, Duration::from_secs(HOUR)).unwrap();
    assert_eq!(report.skipped_lines, 4);
    assert!(to_markdown(&report, &h).contains("- 4 unreadable lines skipped: t.jsonl:3:"));
}

#[test]
fn empty_or_short_histories_say_what_is_missing() {
    let mut h = History::default();
    h.add_text("empty.jsonl", b"\n\nnot json\n");
    expect![[r#"
        "no telemetry records (1 unreadable lines skipped)"
    "#]]
    .assert_debug_eq(
        &demand_report(&h, Duration::from_secs(HOUR))
            .unwrap_err()
            .to_string(),
    );
    let short = history(vec![cpu(0, 0.5), cpu(1800, 0.5)]);
    expect![[r#"
        "the history covers 30m (from 1970-01-01T00:00:00Z to 1970-01-01T00:30:00Z), not more than the recent window of 6h: there is no baseline to compare against; pass a shorter --horizon (at most half the history, e.g. --horizon 15m) or more history (with --prometheus, a longer --range that the server has data for)"
    "#]]
    .assert_debug_eq(&demand_report(&short, Duration::from_secs(6 * HOUR)).unwrap_err().to_string());
    // Samples alone: a report with zero rates that says why.
    let samples = history((0..10).map(|i| cpu(i * 600, 0.5)).collect());
    let report = demand_report(&samples, Duration::from_secs(1800)).unwrap();
    assert_eq!(report.demand_level, DemandLevel::Low);
    assert!(
        report.notes[0].starts_with("no call tallies"),
        "{:?}",
        report.notes
    );
    assert!(
        report.notes[1].starts_with("no decision records"),
        "{:?}",
        report.notes
    );
}

#[test]
fn json_uses_the_agreed_field_names() {
    let report = demand_report(&surge_history(), Duration::from_secs(6 * HOUR)).unwrap();
    let json = serde_json::to_value(&report).unwrap();
    for key in [
        "resource_mode",
        "dispatch_posture",
        "horizon_hours",
        "recent_request_rate",
        "baseline_request_rate",
        "predicted_request_rate",
        "surge_factor",
        "resources",
        "plugins",
        "plugin_outages",
        "plugin_failures",
        "top_callers",
        "demand_level",
        "recommended_actions",
    ] {
        assert!(json.get(key).is_some(), "{key} missing");
    }
    assert_eq!(json["resource_mode"], "surge");
    assert_eq!(json["dispatch_posture"], "degraded");
    assert_eq!(json["demand_level"], "critical");
    assert_eq!(json["horizon_hours"], 6.0);
    assert_eq!(json["resources"][0]["resource"], "cpu");
    assert!(json["resources"][0]["recent_utilization"].is_number());
    assert!(json["plugins"][0]["recent_call_rate"].is_number());
    assert_eq!(json["top_callers"][0]["caller"], "assistant");
    assert_eq!(json["recommended_actions"][0]["signal"], "surge");
}
