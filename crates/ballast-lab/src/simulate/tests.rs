//! The simulator on hand-made traces whose expected decision timelines are written out here, and
//! on the real traces in `../shared/traces` (which must be present: their absence is a failure).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::trace::{Trace, TraceOptions, parse_trace};
use ballast_core::Resource;
use ballast_core::decision::{Action, Decision, DecisionKind, Mode};
use expect_test::{Expect, expect};

use super::engine::{Recording, Report, Sim, SimConfig};
use super::{Scale, replay};
use ballast_core::format::trace_time;

/// The test plugins: discord (10, 0.10), voice (20, 0.15 then 0.05), android (30, 0.10) and an
/// essential core (100, 0.05). Forecasts count only at full confidence, so the timelines follow
/// the smoothed value and do not move when the forecaster improves.
const CONFIG: &str = r#"
[scaler]
min_confidence = 1.0
cooldown = "30s"
stabilization = "5m"

[scaler.concurrency]
enabled = false

[[plugins]]
name = "discord"
priority = 10
levels = [0.10]

[[plugins]]
name = "voice"
priority = 20
levels = [0.15, 0.05]

[[plugins]]
name = "android"
priority = 30
levels = [0.10]

[[plugins]]
name = "core"
priority = 100
essential = true
levels = [0.05]
"#;

fn config() -> SimConfig {
    toml::from_str(CONFIG).unwrap()
}

/// A `timestamp,value` CSV with timestamps in seconds.
fn csv(points: &[(u64, f64)]) -> String {
    let mut text = String::from("timestamp,value\n");
    for (t, v) in points {
        let _ = writeln!(text, "{t},{v}");
    }
    text
}

/// Readings every 10 s from `from` to `to` (exclusive) following `f(seconds since from)`.
fn segment(points: &mut Vec<(u64, f64)>, from: u64, to: u64, f: impl Fn(u64) -> f64) {
    let mut t = from;
    while t < to {
        points.push((t, (f(t - from) * 1000.0).round() / 1000.0));
        t += 10;
    }
}

fn simulate(config: &SimConfig, resource: Resource, text: &str) -> Report {
    let trace = parse_trace("test.csv", text, &TraceOptions::default()).unwrap();
    let mut sim = Sim::new(config, resource).unwrap();
    replay(&mut sim, &trace, 1.0, 1);
    sim.finish()
}

/// [`simulate`] of a CPU trace, keeping every replayed reading.
fn simulate_recorded(config: &SimConfig, text: &str) -> (Report, Recording) {
    let trace = parse_trace("test.csv", text, &TraceOptions::default()).unwrap();
    let mut sim = Sim::new(config, Resource::Cpu).unwrap();
    sim.record();
    replay(&mut sim, &trace, 1.0, 1);
    let (report, recording) = sim.finish_recorded();
    (report, recording.expect("the replay was recorded"))
}

/// The decision timeline (time, kind, plugin, action, rule, pressure), one line each.
fn timeline(report: &Report) -> String {
    let mut out = String::new();
    for d in &report.decisions {
        let action = if d.action == Action::None {
            String::new()
        } else {
            format!(" ({})", d.action)
        };
        let pressure = d
            .resource
            .as_ref()
            .map(|r| format!(" {} {:.2}", r.resource, r.pressure))
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "{} {} {}{action} [{}]{pressure}",
            trace_time(d.at),
            d.kind,
            d.plugin.as_deref().unwrap_or("-"),
            d.rule
        );
    }
    out
}

/// The timeline and the summary, compactly.
fn render(report: &Report) -> String {
    let mut out = timeline(report);
    let s = &report.summary;
    let _ = writeln!(
        out,
        "sheds {} restores {} flaps {} over_high {}s emergency {}s shed {:?}",
        s.sheds, s.restores, s.flaps, s.seconds_over_high, s.seconds_in_emergency, s.seconds_shed
    );
    out
}

fn check(resource: Resource, points: &[(u64, f64)], expect: Expect) {
    let report = simulate(&config(), resource, &csv(points));
    expect.assert_eq(&render(&report));
}

#[test]
fn gradual_rise() {
    // From 0.50 to 0.95 over an hour, an hour at the top, back down to 0.30 over half an hour.
    let mut points = Vec::new();
    segment(&mut points, 0, 3600, |t| 0.50 + 0.45 * t as f64 / 3600.0);
    segment(&mut points, 3600, 7200, |_| 0.95);
    segment(&mut points, 7200, 9000, |t| 0.95 - 0.65 * t as f64 / 1800.0);
    segment(&mut points, 9000, 12600, |_| 0.30);
    check(
        Resource::Cpu,
        &points,
        expect![[r#"
            +0d 00:26:50 warn - [soft_limit] cpu 0.70
            +0d 00:40:00 shed discord (disable) [high_pressure] cpu 0.80
            +0d 00:53:20 shed voice (level 0 -> 1) [high_pressure] cpu 0.80
            +0d 02:09:50 restore voice (level 1 -> 0) [stabilized] cpu 0.54
            +0d 02:14:50 restore discord (enable at level 0) [stabilized] cpu 0.53
            sheds 2 restores 2 flaps 0 over_high 0s emergency 0s shed {"android": 0.0, "core": 0.0, "discord": 5690.0, "voice": 4590.0}
        "#]],
    );
}

#[test]
fn sudden_spike() {
    // Memory at 0.50, one minute at 0.99, then 0.50 again. The emergency check looks at the raw
    // reading as well as the smoothed one (0.84 here), so the jump to 0.99 sheds every
    // non-essential plugin at once; they come back one at a time after the stabilization.
    let mut points = Vec::new();
    segment(&mut points, 0, 600, |_| 0.50);
    segment(&mut points, 600, 660, |_| 0.99);
    segment(&mut points, 660, 4800, |_| 0.50);
    check(
        Resource::Memory,
        &points,
        expect![[r#"
            +0d 00:10:00 shed discord (disable) [emergency] memory 0.99
            +0d 00:10:00 shed voice (disable) [emergency] memory 0.99
            +0d 00:10:00 shed android (disable) [emergency] memory 0.99
            +0d 00:10:10 warn - [soft_limit] memory 0.70
            +0d 00:15:30 restore android (enable at level 0) [stabilized] memory 0.15
            +0d 00:20:30 restore voice (enable at level 1) [stabilized] memory 0.25
            +0d 00:25:30 restore voice (level 1 -> 0) [stabilized] memory 0.30
            +0d 00:30:30 restore discord (enable at level 0) [stabilized] memory 0.40
            sheds 3 restores 4 flaps 0 over_high 0s emergency 0s shed {"android": 330.0, "core": 0.0, "discord": 1230.0, "voice": 930.0}
        "#]],
    );
}

#[test]
fn sudden_spike_seen_unsmoothed_is_an_emergency() {
    // The same spike with an EMA weight of 1 (no smoothing): 0.99 is at the memory emergency
    // threshold, so every non-essential plugin goes in one tick, with no cool-down.
    let mut points = Vec::new();
    segment(&mut points, 0, 600, |_| 0.50);
    segment(&mut points, 600, 660, |_| 0.99);
    segment(&mut points, 660, 3000, |_| 0.50);
    let mut config = config();
    config.predictor.ema_weight = 1.0;
    let report = simulate(&config, Resource::Memory, &csv(&points));
    expect![[r#"
        +0d 00:10:00 shed discord (disable) [emergency] memory 0.99
        +0d 00:10:00 shed voice (disable) [emergency] memory 0.99
        +0d 00:10:00 shed android (disable) [emergency] memory 0.99
        +0d 00:15:10 restore android (enable at level 0) [stabilized] memory 0.15
        +0d 00:20:10 restore voice (enable at level 1) [stabilized] memory 0.25
        +0d 00:25:10 restore voice (level 1 -> 0) [stabilized] memory 0.30
        +0d 00:30:10 restore discord (enable at level 0) [stabilized] memory 0.40
        sheds 3 restores 4 flaps 0 over_high 0s emergency 0s shed {"android": 310.0, "core": 0.0, "discord": 1210.0, "voice": 910.0}
    "#]]
    .assert_eq(&render(&report));
}

#[test]
fn sudden_drop() {
    // CPU at 0.92 for ten minutes, then 0.20.
    let mut points = Vec::new();
    segment(&mut points, 0, 600, |_| 0.92);
    segment(&mut points, 600, 4800, |_| 0.20);
    check(
        Resource::Cpu,
        &points,
        expect![[r#"
        +0d 00:00:00 shed discord (disable) [high_pressure] cpu 0.92
        +0d 00:00:30 shed voice (level 0 -> 1) [high_pressure] cpu 0.82
        +0d 00:00:40 warn - [soft_limit] cpu 0.75
        +0d 00:15:00 restore voice (level 1 -> 0) [stabilized] cpu 0.00
        +0d 00:20:00 restore discord (enable at level 0) [stabilized] cpu 0.10
        sheds 2 restores 2 flaps 0 over_high 30s emergency 0s shed {"android": 0.0, "core": 0.0, "discord": 1200.0, "voice": 870.0}
    "#]],
    );
}

#[test]
fn stable_but_noisy_around_the_threshold() {
    // 0.80 give or take 0.06, deterministic noise, for two hours.
    let mut points = Vec::new();
    let mut state: u64 = 0x2545_f491_4f6c_dd1d;
    let mut noise = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state % 1000) as f64 / 1000.0 * 0.12 - 0.06
    };
    let values: Vec<f64> = (0..720).map(|_| 0.80 + noise()).collect();
    segment(&mut points, 0, 7200, |t| values[(t / 10) as usize]);
    let report = simulate(&config(), Resource::Cpu, &csv(&points));
    assert_eq!(report.summary.flaps, 0, "{}", render(&report));
    expect![[r#"
        +0d 00:00:00 shed discord (disable) [high_pressure] cpu 0.85
        +0d 00:00:10 warn - [soft_limit] cpu 0.74
        +0d 00:23:20 warn - [soft_limit] cpu 0.72
        +0d 01:09:20 warn - [soft_limit] cpu 0.72
        +0d 01:54:20 warn - [soft_limit] cpu 0.72
        sheds 1 restores 0 flaps 0 over_high 0s emergency 0s shed {"android": 0.0, "core": 0.0, "discord": 7190.0, "voice": 0.0}
    "#]]
    .assert_eq(&render(&report));
}

#[test]
fn mixed_workload() {
    // Calm; a climb through the soft zone (throttles) past the shed threshold (sheds) to a
    // one-minute peak at 0.97; a noisy plateau below the restore threshold (restores, then
    // the concurrency limits handed back); a second climb into the soft zone only (throttles
    // again, nothing shed, no flap); calm again.
    let mut points = Vec::new();
    segment(&mut points, 0, 900, |_| 0.40);
    segment(&mut points, 900, 1800, |t| 0.40 + 0.45 * t as f64 / 900.0);
    segment(&mut points, 1800, 1860, |_| 0.97);
    segment(&mut points, 1860, 3600, |t| {
        0.55 + 0.05 * ((t / 10) % 3) as f64
    });
    segment(&mut points, 3600, 5400, |t| 0.50 + 0.28 * t as f64 / 1800.0);
    segment(&mut points, 5400, 9000, |_| 0.35);
    let mut config = config();
    config.scaler.concurrency.enabled = true;
    let report = simulate(&config, Resource::Memory, &csv(&points));
    expect![[r#"
        +0d 00:25:10 warn - [soft_limit] memory 0.70
        +0d 00:25:10 throttle discord (concurrency 4) [soft_limit] memory 0.70
        +0d 00:25:40 throttle voice (concurrency 4) [soft_limit] memory 0.72
        +0d 00:26:10 throttle android (concurrency 4) [soft_limit] memory 0.73
        +0d 00:28:20 shed discord (disable) [high_pressure] memory 0.80
        +0d 00:30:00 shed voice (level 0 -> 1) [high_pressure] memory 0.87
        +0d 00:36:00 restore voice (level 1 -> 0) [stabilized] memory 0.37
        +0d 00:41:00 restore discord (enable at level 0) [stabilized] memory 0.47
        +0d 00:46:00 unthrottle android (concurrency default) [stabilized] memory 0.57
        +0d 00:51:00 unthrottle voice (concurrency default) [stabilized] memory 0.57
        +0d 00:56:00 unthrottle discord (concurrency default) [stabilized] memory 0.57
        +0d 01:21:30 warn - [soft_limit] memory 0.70
        +0d 01:21:30 throttle discord (concurrency 4) [soft_limit] memory 0.70
        +0d 01:22:00 throttle voice (concurrency 4) [soft_limit] memory 0.70
        +0d 01:22:30 throttle android (concurrency 4) [soft_limit] memory 0.71
        +0d 01:35:00 unthrottle android (concurrency default) [stabilized] memory 0.35
        +0d 01:40:00 unthrottle voice (concurrency default) [stabilized] memory 0.35
        +0d 01:45:00 unthrottle discord (concurrency default) [stabilized] memory 0.35
        sheds 2 restores 2 flaps 0 over_high 0s emergency 0s shed {"android": 0.0, "core": 0.0, "discord": 760.0, "voice": 360.0}
    "#]]
    .assert_eq(&render(&report));
}

#[test]
fn observe_mode_decides_as_enforce_mode_but_replays_the_trace_unchanged() {
    // Ten minutes over the shed threshold, then calm long enough for every restore.
    let mut points = Vec::new();
    segment(&mut points, 0, 600, |_| 0.92);
    segment(&mut points, 600, 3600, |_| 0.20);
    let text = csv(&points);
    let in_mode = |config: &SimConfig, mode: Mode| {
        let mut config = config.clone();
        config.scaler.mode = mode;
        config
    };

    // With plugins that cost nothing, enforce mode's steps leave the replay as it is, so both
    // modes see the same readings and must take the same decisions at the same times; only
    // whether a command was sent, and the mode, differ.
    let mut free = config();
    for plugin in &mut free.plugins {
        plugin.levels.iter_mut().for_each(|cost| *cost = 0.0);
    }
    let enforced = simulate(&in_mode(&free, Mode::Enforce), Resource::Cpu, &text);
    let observed = simulate(&in_mode(&free, Mode::Observe), Resource::Cpu, &text);
    assert!(
        enforced
            .decisions
            .iter()
            .all(|d| d.mode == Mode::Enforce && d.applied == (d.action != Action::None)),
        "{enforced:#?}"
    );
    assert!(
        observed
            .decisions
            .iter()
            .all(|d| d.mode == Mode::Observe && !d.applied),
        "{observed:#?}"
    );
    assert_eq!(timeline(&observed), timeline(&enforced));
    let as_enforced: Vec<Decision> = observed
        .decisions
        .iter()
        .map(|d| Decision {
            mode: Mode::Enforce,
            applied: d.action != Action::None,
            ..d.clone()
        })
        .collect();
    assert_eq!(as_enforced, enforced.decisions);
    expect![[r#"
        +0d 00:00:00 shed discord (disable) [high_pressure] cpu 0.92
        +0d 00:00:30 shed voice (level 0 -> 1) [high_pressure] cpu 0.92
        +0d 00:01:00 shed voice (disable) [high_pressure] cpu 0.92
        +0d 00:01:30 shed android (disable) [high_pressure] cpu 0.92
        +0d 00:02:00 warn - [nothing_to_shed] cpu 0.92
        +0d 00:15:00 restore android (enable at level 0) [stabilized] cpu 0.20
        +0d 00:20:00 restore voice (enable at level 1) [stabilized] cpu 0.20
        +0d 00:25:00 restore voice (level 1 -> 0) [stabilized] cpu 0.20
        +0d 00:30:00 restore discord (enable at level 0) [stabilized] cpu 0.20
        sheds 4 restores 4 flaps 0 over_high 600s emergency 0s shed {"android": 0.0, "core": 0.0, "discord": 0.0, "voice": 0.0}
    "#]]
    .assert_eq(&render(&observed));

    // With the plugins' real costs, observe mode takes the same steps (it applies none of
    // them), and the replayed utilization is the trace's at every reading.
    let (report, recording) = simulate_recorded(&in_mode(&config(), Mode::Observe), &text);
    assert_eq!(timeline(&report), timeline(&observed));
    assert!(
        recording.points.iter().all(|p| p.replayed == p.trace),
        "{recording:#?}"
    );
    assert_eq!(report.summary.peak_replayed, report.summary.peak_trace);
    assert_eq!(report.summary.seconds_over_high, 600.0);
    assert!(
        report.summary.seconds_shed.values().all(|s| *s == 0.0),
        "{:?}",
        report.summary.seconds_shed
    );
    // Enforce mode's sheds do lower the replay, which is what the checks above rule out.
    let (report, recording) = simulate_recorded(&config(), &text);
    assert!(recording.points.iter().any(|p| p.replayed < p.trace));
    assert!(
        report.summary.seconds_over_high < 600.0,
        "{}",
        render(&report)
    );
}

#[test]
fn a_confident_forecast_sheds_earlier_than_the_smoothed_value_alone() {
    // A steady climb from 0.40 to 0.90 over an hour: the forecast sees the shed threshold
    // coming before the smoothed value reaches it.
    let mut points = Vec::new();
    segment(&mut points, 0, 3600, |t| 0.40 + 0.50 * t as f64 / 3600.0);
    let text = csv(&points);
    let first_shed = |report: &Report| {
        report
            .decisions
            .iter()
            .find(|d| d.kind == DecisionKind::Shed)
            .cloned()
            .unwrap_or_else(|| panic!("no shed in\n{}", render(report)))
    };
    // At full confidence only, no forecast counts: the smoothed value alone decides.
    let smoothed_only = simulate(&config(), Resource::Cpu, &text);
    assert!(
        smoothed_only
            .decisions
            .iter()
            .filter_map(|d| d.resource.as_ref())
            .all(|r| !r.forecast_used),
        "{}",
        render(&smoothed_only)
    );
    let mut with_forecast = config();
    with_forecast.scaler.min_confidence = 0.0;
    let with_forecast = simulate(&with_forecast, Resource::Cpu, &text);
    let (early, late) = (first_shed(&with_forecast), first_shed(&smoothed_only));
    assert!(
        early.at < late.at,
        "the forecast did not shed earlier:\n{}\nthan the smoothed value alone:\n{}",
        render(&with_forecast),
        render(&smoothed_only)
    );
    // The earlier shed is the forecast's doing: the smoothed value was still below the shed
    // threshold, the forecast at or above it.
    let figures = early
        .resource
        .expect("a shed for pressure names its resource");
    assert!(figures.forecast_used, "{figures:?}");
    assert!(figures.smoothed < figures.thresholds.shed, "{figures:?}");
    assert!(
        figures
            .forecast
            .is_some_and(|f| f >= figures.thresholds.shed),
        "{figures:?}"
    );
}

#[test]
fn the_json_report_uses_the_agreed_names() {
    let mut points = Vec::new();
    segment(&mut points, 0, 600, |_| 0.92);
    let report = simulate(&config(), Resource::Cpu, &csv(&points));
    let json = serde_json::to_value(&report).unwrap();
    assert!(json["decisions"].is_array());
    for key in [
        "sheds",
        "restores",
        "flaps",
        "seconds_over_high",
        "seconds_in_emergency",
        "seconds_shed",
    ] {
        assert!(json["summary"].get(key).is_some(), "summary.{key} missing");
    }
    assert!(json["summary"]["seconds_shed"]["discord"].is_number());
}

#[test]
fn config_problems_are_all_named() {
    let text = r#"
[predictor]
ema_weight = 2.0
[scaler]
min_confidence = 3.0
[[plugins]]
name = "a"
priority = 1
levels = []
[[plugins]]
name = "a"
priority = 2
levels = [1.5]
"#;
    let config: SimConfig = toml::from_str(text).unwrap();
    expect![[r#"
        [
            "predictor.ema_weight must be in (0, 1], got 2",
            "scaler.min_confidence must be between 0 and 1, got 3",
            "plugin `a`: levels must list the cost of at least one level",
            "plugin `a`: listed twice",
            "plugin `a`: levels[0] must be a utilization between 0 and 1, got 1.5",
        ]
    "#]]
    .assert_debug_eq(&config.problems());
    assert!(
        toml::from_str::<SimConfig>(
            "[[plugins]]\nname = \"a\"\npriority = 1\nlevels = [0.1]\ncolour = 1\n"
        )
        .is_err()
    );
}

#[test]
fn scale_is_detected_from_the_values() {
    let trace = |values: &[f64]| {
        let points: Vec<(u64, f64)> = values
            .iter()
            .enumerate()
            .map(|(i, v)| (i as u64 * 60, *v))
            .collect();
        parse_trace("t.csv", &csv(&points), &TraceOptions::default()).unwrap()
    };
    assert_eq!(
        Scale::choose("auto", &trace(&[0.2, 0.9])).unwrap().factor,
        1.0
    );
    assert_eq!(
        Scale::choose("auto", &trace(&[20.0, 90.0])).unwrap().factor,
        0.01
    );
    assert_eq!(
        Scale::choose("auto", &trace(&[200.0, 400.0]))
            .unwrap()
            .factor,
        1.0 / 400.0
    );
    assert_eq!(Scale::choose("0.5", &trace(&[1.0])).unwrap().factor, 0.5);
    assert!(Scale::choose("lots", &trace(&[1.0])).is_err());
    // Request arrivals binned into a rate: divided by the peak rate, not taken as percentages.
    let log = "TIMESTAMP,tokens\n2023-11-16 18:00:00.10,1\n2023-11-16 18:00:00.20,1\n2023-11-16 18:00:00.30,1\n2023-11-16 18:00:12.00,1\n";
    let rate = parse_trace("log.csv", log, &TraceOptions::default()).unwrap();
    let scale = Scale::choose("auto", &rate).unwrap();
    assert!(scale.why.contains("peak"), "{scale:?}");
}

/// The shared traces; the tests that read them fail, naming the path, when they are missing.
pub(super) fn shared_traces() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/traces");
    assert!(
        root.is_dir(),
        "the shared traces are missing: no folder at {}",
        root.display()
    );
    root
}

/// The example config of `ballast simulate`, as shipped.
fn example_config() -> SimConfig {
    toml::from_str(include_str!("../../../../config/simulate-example.toml")).unwrap()
}

/// Replays a CSV trace, scaled with `--scale auto`, as `ballast simulate` does.
fn replay_file(config: &SimConfig, path: &Path) -> (Trace, Report) {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("cannot read trace {}: {e}", path.display()));
    let trace = parse_trace(&path.display().to_string(), &text, &TraceOptions::default())
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let scale = Scale::choose("auto", &trace).unwrap();
    let mut sim = Sim::new(config, Resource::Cpu).unwrap();
    replay(&mut sim, &trace, scale.factor, 1);
    (trace, sim.finish())
}

/// Every restore (and every concurrency limit handed back) comes at least `stabilization`
/// after the step before it, whatever that step was, or at least `floor` after it when it says
/// that the confident forecast stays calm; the problems, one line each.
fn restores_too_early(report: &Report, stabilization: Duration, floor: Duration) -> Vec<String> {
    let mut problems = Vec::new();
    let mut last_step: Option<&Decision> = None;
    for d in &report.decisions {
        let is_restore = matches!(d.kind, DecisionKind::Restore | DecisionKind::Unthrottle);
        let early = d.reason.contains("past the stabilization floor");
        let wait = if early { floor } else { stabilization };
        if is_restore
            && let Some(step) = last_step
            && d.at - step.at < wait
        {
            problems.push(format!(
                "{} {} {} only {:?} after {} {} {}",
                trace_time(d.at),
                d.kind,
                d.plugin.as_deref().unwrap_or("-"),
                d.at - step.at,
                trace_time(step.at),
                step.kind,
                step.plugin.as_deref().unwrap_or("-")
            ));
        }
        if is_restore || matches!(d.kind, DecisionKind::Shed | DecisionKind::Throttle) {
            last_step = Some(d);
        }
    }
    problems
}

#[test]
fn the_stabilization_check_sees_an_early_restore() {
    let mut points = Vec::new();
    segment(&mut points, 0, 600, |_| 0.92);
    segment(&mut points, 600, 4800, |_| 0.20);
    let mut report = simulate(&config(), Resource::Cpu, &csv(&points));
    let stabilization = Duration::from_secs(300);
    let floor = Duration::from_secs(60);
    assert_eq!(
        restores_too_early(&report, stabilization, floor),
        Vec::<String>::new()
    );
    let restore = report
        .decisions
        .iter_mut()
        .find(|d| d.kind == DecisionKind::Restore)
        .expect("a restore");
    restore.at = restore.at - Duration::from_secs(600);
    assert_eq!(restores_too_early(&report, stabilization, floor).len(), 1);
}

/// Every CSV in `../shared/traces` replays through the example config: every reading once, the
/// replay never above the trace, no plugin shed longer than the trace lasts, and no restore
/// before the stabilization (or its floor, for a restore the confident forecast let come early).
#[test]
fn every_shared_trace_replays() {
    let root = shared_traces();
    let config = example_config();
    let stabilization = config.scaler.stabilization;
    let floor = config.scaler.floor_of(stabilization);
    let mut stack = vec![root];
    let mut n = 0;
    let mut sheds = 0;
    while let Some(path) = stack.pop() {
        if path.is_dir() {
            let entries = std::fs::read_dir(&path)
                .unwrap_or_else(|e| panic!("cannot list {}: {e}", path.display()));
            stack.extend(entries.flatten().map(|e| e.path()));
            continue;
        }
        if path.extension().is_none_or(|e| e != "csv") {
            continue;
        }
        let (trace, report) = replay_file(&config, &path);
        let s = &report.summary;
        let name = path.display();
        assert_eq!(s.samples as usize, trace.points.len(), "{name}");
        assert!(s.peak_replayed <= s.peak_trace, "{name}: {s:?}");
        assert!(
            s.seconds_shed.values().all(|t| *t <= s.duration_seconds),
            "{name}: {s:?}"
        );
        assert!(s.flaps <= s.restores, "{name}: {s:?}");
        let early = restores_too_early(&report, stabilization, floor);
        assert!(early.is_empty(), "{name}:\n{}", early.join("\n"));
        sheds += s.sheds;
        n += 1;
    }
    assert!(n >= 17, "only {n} traces found");
    // The checks above are about steps, so some trace must have taken some.
    assert!(sheds > 0, "no trace shed anything");
}

/// The example config on the trace its header names: the whole timeline and the summary.
#[test]
fn the_example_config_on_an_ec2_cpu_trace() {
    let path = shared_traces().join("nab/realAWSCloudwatch/ec2_cpu_utilization_825cc2.csv");
    let (trace, report) = replay_file(&example_config(), &path);
    assert_eq!(report.summary.samples, 4032);
    assert_eq!(trace.points.len(), 4032);
    expect![[r#"
        2014-04-10 00:04:00 shed discord (disable) [high_pressure] cpu 0.92
        2014-04-10 00:09:00 shed voice (level 0 -> 1) [high_pressure] cpu 0.88
        2014-04-10 00:14:00 warn - [soft_limit] cpu 0.78
        2014-04-10 00:14:00 throttle voice (concurrency 4) [soft_limit] cpu 0.78
        2014-04-10 00:19:00 throttle android (concurrency 4) [soft_limit] cpu 0.77
        2014-04-10 18:09:00 shed voice (disable) [high_pressure] cpu 0.80
        2014-04-15 16:04:00 restore voice (enable at level 1) [stabilized] cpu 0.64
        2014-04-15 16:14:00 warn - [soft_limit] cpu 0.71
        2014-04-15 16:59:00 restore voice (level 1 -> 0) [stabilized] cpu 0.54
        2014-04-15 16:59:30 restore discord (enable at level 0) [stabilized] cpu 0.54
        2014-04-15 17:00:00 unthrottle android (concurrency default) [stabilized] cpu 0.54
        2014-04-15 17:00:30 unthrottle voice (concurrency default) [stabilized] cpu 0.54
        2014-04-15 17:04:00 shed discord (disable) [high_pressure] cpu 0.90
        2014-04-15 17:09:00 shed voice (level 0 -> 1) [high_pressure] cpu 0.85
        2014-04-15 17:14:00 warn - [soft_limit] cpu 0.74
        2014-04-15 17:14:00 throttle voice (concurrency 4) [soft_limit] cpu 0.74
        2014-04-15 17:19:00 throttle android (concurrency 4) [soft_limit] cpu 0.71
        2014-04-16 03:09:00 shed voice (disable) [high_pressure] cpu 0.80
        2014-04-16 03:29:30 restore voice (enable at level 1) [stabilized] cpu 0.55
        2014-04-16 03:34:00 restore voice (level 1 -> 0) [stabilized] cpu 0.33
        2014-04-16 03:34:30 unthrottle android (concurrency default) [stabilized] cpu 0.33
        2014-04-16 03:35:00 unthrottle voice (concurrency default) [stabilized] cpu 0.33
        2014-04-16 03:40:00 restore discord (enable at level 0) [stabilized] cpu 0.17
        2014-04-16 14:24:00 shed discord (disable) [high_pressure] cpu 0.95
        2014-04-16 14:24:00 shed voice (level 0 -> 1) [high_pressure] cpu 0.95
        2014-04-16 14:29:00 warn - [soft_limit] cpu 0.78
        2014-04-16 14:29:00 throttle voice (concurrency 4) [soft_limit] cpu 0.78
        2014-04-16 14:34:00 throttle android (concurrency 4) [soft_limit] cpu 0.77
        2014-04-22 03:29:00 warn - [soft_limit] cpu 0.72
        2014-04-23 23:09:00 shed voice (disable) [high_pressure] cpu 0.81
        sheds 9 restores 6 flaps 1 over_high 900s emergency 0s shed {"android": 0.0, "core": 0.0, "discord": 1170990.0, "voice": 1170000.0}
    "#]].assert_eq(&render(&report));
    expect!["peak 0.991 replayed 0.948 over 1209900s"].assert_eq(&format!(
        "peak {:.3} replayed {:.3} over {}s",
        report.summary.peak_trace, report.summary.peak_replayed, report.summary.duration_seconds
    ));
}

/// The busiest of the traces: the example config takes hundreds of steps on it, none too early.
#[test]
fn the_example_config_on_a_busy_ec2_cpu_trace() {
    let path = shared_traces().join("nab/realAWSCloudwatch/ec2_cpu_utilization_77c1ca.csv");
    let config = example_config();
    let (_, report) = replay_file(&config, &path);
    let s = &report.summary;
    expect![[r#"
        samples 4032 over 1209300s
        sheds 213 restores 213 flaps 5 throttles 105 warnings 89
        over_high 4200s emergency 0s peak 0.999 replayed 0.995
        shed {"android": 0.0, "core": 0.0, "discord": 127230.0, "voice": 109770.0}
    "#]]
    .assert_eq(&format!(
        "samples {} over {}s\nsheds {} restores {} flaps {} throttles {} warnings {}\n\
         over_high {}s emergency {}s peak {:.3} replayed {:.3}\nshed {:?}\n",
        s.samples,
        s.duration_seconds,
        s.sheds,
        s.restores,
        s.flaps,
        s.throttles,
        s.warnings,
        s.seconds_over_high,
        s.seconds_in_emergency,
        s.peak_trace,
        s.peak_replayed,
        s.seconds_shed
    ));
    let stabilization = config.scaler.stabilization;
    let early = restores_too_early(
        &report,
        stabilization,
        config.scaler.floor_of(stabilization),
    );
    assert!(early.is_empty(), "{}", early.join("\n"));
}

/// Every CSV under `../shared/traces`, sorted, as `ballast simulate` reads it with no options.
fn every_shared_trace() -> Vec<super::Inputs> {
    let mut files = Vec::new();
    let mut stack = vec![shared_traces()];
    while let Some(path) = stack.pop() {
        if path.is_dir() {
            let entries = std::fs::read_dir(&path)
                .unwrap_or_else(|e| panic!("cannot list {}: {e}", path.display()));
            stack.extend(entries.flatten().map(|e| e.path()));
        } else if path.extension().is_some_and(|e| e == "csv") {
            files.push(path);
        }
    }
    files.sort();
    assert!(files.len() >= 21, "only {} traces found", files.len());
    files
        .iter()
        .map(|path| {
            let name = path.display().to_string();
            let text = std::fs::read_to_string(path)
                .unwrap_or_else(|e| panic!("cannot read trace {name}: {e}"));
            let trace = parse_trace(&name, &text, &TraceOptions::default())
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            super::Inputs::with_trace(trace, name, Vec::new())
        })
        .collect()
}

/// The example config and the reference policies replayed on every shared trace, as
/// `ballast simulate --config config/simulate-example.toml --reference --trace ...` does it: the
/// config beats the design's defaults without a forecast on all three counts at once (fewer
/// flaps, at most half its time over the shed threshold, no more plugin time shed), and the
/// table of the README is printed (`-- --nocapture`).
#[test]
fn the_example_config_beats_the_design_default_without_a_forecast() {
    use super::compare::{replay_one, total};
    use super::reference::Reference;
    let inputs = every_shared_trace();
    let base = example_config();
    let window = Some(base.scaler.stabilization);
    let mut columns = vec![("simulate-example.toml", base.clone(), None)];
    for r in Reference::ALL {
        columns.push((r.name(), r.config(&base), window));
    }
    let totals: Vec<(&str, super::engine::Summary)> = columns
        .iter()
        .map(|(name, config, window)| {
            let summaries: Vec<_> = inputs
                .iter()
                .map(|input| {
                    let factor = Scale::choose("auto", &input.trace).unwrap().factor;
                    replay_one(config, *window, input, factor, None, 1).unwrap()
                })
                .collect();
            (*name, total(&summaries))
        })
        .collect();
    let shed = |s: &super::engine::Summary| s.seconds_shed.values().sum::<f64>();
    let hours = |seconds: f64| seconds / 3600.0;
    println!(
        "| policy | sheds | restores | flaps | over shed threshold | in emergency | plugin time shed |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for (name, s) in &totals {
        println!(
            "| {name} | {} | {} | {} | {:.0} min | {:.0} min | {:.1} h |",
            s.sheds,
            s.restores,
            s.flaps,
            s.seconds_over_high / 60.0,
            s.seconds_in_emergency / 60.0,
            hours(shed(s))
        );
    }
    let ballast = &totals[0].1;
    let design = &totals
        .iter()
        .find(|(name, _)| *name == Reference::NoForecast.name())
        .expect("the no-forecast reference")
        .1;
    assert!(
        ballast.flaps < design.flaps,
        "flaps: {} against {}",
        ballast.flaps,
        design.flaps
    );
    assert!(
        ballast.seconds_over_high * 2.0 <= design.seconds_over_high,
        "over the shed threshold: {} s against {} s",
        ballast.seconds_over_high,
        design.seconds_over_high
    );
    assert!(
        shed(ballast) <= shed(design),
        "plugin time shed: {:.1} h against {:.1} h",
        hours(shed(ballast)),
        hours(shed(design))
    );
}
