//! How the forecast changes what the scaler does, on virtual time: restores held while the
//! confident forecast with the plugin's need reaches the shed threshold, restores at the
//! stabilization floor while it stays well under the restore threshold, several shed steps at once
//! while it says one is not enough, and nothing at all from a forecast under `min_confidence`.

use std::collections::BTreeMap;
use std::time::Duration;

use ballast_core::decision::{Action, Decision, DecisionKind, Rule};
use ballast_core::{Assessment, Forecast, PluginSpec, Resource, Timestamp};
use ballast_scaler::{PluginPolicy, Scaler, ScalerConfig};
use expect_test::expect;
use proptest::prelude::*;

use crate::support::*;

const STABILIZATION: Duration = Duration::from_secs(300);
const FLOOR: Duration = Duration::from_secs(60);
const MIN_CONFIDENCE: f64 = 0.6;
const SHED: f64 = 0.80;
const RESTORE: f64 = 0.65;

/// Memory at `smoothed` (the reading too) with a forecast `value` at `confidence`, recent
/// error `error`, five minutes ahead.
fn forecast_at(secs: u64, smoothed: f64, value: f64, confidence: f64, error: f64) -> Assessment {
    let mut a = assessment(secs, &[(Resource::Memory, smoothed)]);
    a.resources[0].forecast = Some(Forecast {
        value,
        horizon: Duration::from_secs(300),
        confidence,
        model: "test".into(),
        error: Some(error),
    });
    a
}

/// A scaler whose plugins declare their memory per level, as utilizations: `costs[i]` for
/// `specs[i]`. Cool-down 30 s, stabilization 5 min, floor 1 min, no throttling.
fn scaler_with_costs(specs: Vec<PluginSpec>, costs: &[Vec<f64>]) -> Scaler {
    let mut config = ScalerConfig {
        min_confidence: MIN_CONFIDENCE,
        stabilization: STABILIZATION,
        stabilization_floor: Some(FLOOR),
        ..ScalerConfig::default()
    };
    config.concurrency.enabled = false;
    for (spec, cost) in specs.iter().zip(costs) {
        config.plugins.insert(
            spec.name.clone(),
            PluginPolicy {
                cost: BTreeMap::from([(Resource::Memory, cost.clone())]),
                ..PluginPolicy::default()
            },
        );
    }
    Scaler::new(config, specs).unwrap()
}

/// Feeds `make(t)` every `step` seconds over `[from, to)`.
fn feed_each(h: &mut Harness, from: u64, to: u64, step: u64, make: impl Fn(u64) -> Assessment) {
    let mut t = from;
    while t < to {
        h.feed(&make(t));
        t += step;
    }
}

#[test]
fn a_restore_is_held_while_the_confident_forecast_with_its_need_reaches_shed() {
    let mut h = Harness::new(scaler_with_costs(vec![spec("voice", 20, 1)], &[vec![0.2]]));
    h.memory(0, 1, 1, 0.9);
    // Calm (0.4, the forecast 0.62 under restore), but 0.62 + 0.2 reaches the shed threshold:
    // held, and said once.
    feed_each(&mut h, 10, 1000, 10, |t| {
        forecast_at(t, 0.4, 0.62, 0.81, 0.05)
    });
    // The forecast falls: the restore comes, the calm time already counted.
    feed_each(&mut h, 1000, 1100, 10, |t| {
        forecast_at(t, 0.4, 0.5, 0.81, 0.05)
    });
    expect![[r#"
        0s shed voice (disable) [high_pressure]
        310s warn voice [preflight_failed]
        1000s restore voice (enable at level 0) [stabilized]
    "#]]
    .assert_eq(&h.timeline());
    expect![
        "restore held: memory forecast 0.82 at confidence 0.81 within 5m with voice restored (enable at level 0: 0.62 + its 0.20), not under shed 0.80"
    ]
    .assert_eq(&h.decisions[1].reason);
}

#[test]
fn a_confident_calm_forecast_restores_at_the_floor_a_doubtful_one_after_the_whole_period() {
    let plugins = || vec![spec("voice", 20, 2), spec("discord", 10, 1)];
    let costs = [vec![0.15, 0.05], vec![0.08]];
    let run = |confidence: f64| {
        let mut h = Harness::new(scaler_with_costs(plugins(), &costs));
        // The forecast says 0.93: one step is not enough, both go at once (below).
        h.feed(&forecast_at(0, 0.85, 0.93, 0.9, 0.02));
        feed_each(&mut h, 10, 1500, 10, |t| {
            forecast_at(t, 0.3, 0.3, confidence, 0.02)
        });
        h
    };
    let confident = run(0.9);
    // Calm from 10 s: each restore one floor after the step before, 0.3 + its need + the error
    // 0.02 staying under 0.65 every time.
    expect![[r#"
        0s shed discord (disable) [high_pressure]
        0s shed voice (level 0 -> 1) [high_pressure]
        70s restore voice (level 1 -> 0) [stabilized]
        130s restore discord (enable at level 0) [stabilized]
    "#]]
    .assert_eq(&confident.timeline());
    expect![
        "every resource below its restore threshold for 1m, 1m since the last step: past the stabilization floor 1m (instead of 5m) as the confident forecast stays calm, memory forecast 0.30 ± 0.02 at confidence 0.90 within 5m, 0.42 with the step, under restore 0.65; memory 0.30 -> 0.40 after it"
    ]
    .assert_eq(&confident.decisions[2].reason);
    expect![
        "memory forecast 0.93 at confidence 0.90, less 0.08 freed by the step before, still reaches shed 0.80"
    ]
    .assert_eq(&confident.decisions[1].reason);
    // Under min_confidence the forecast is not counted: the whole stabilization period before
    // each restore, as without a forecast.
    let doubtful = run(0.5);
    expect![[r#"
        0s shed discord (disable) [high_pressure]
        0s shed voice (level 0 -> 1) [high_pressure]
        310s restore voice (level 1 -> 0) [stabilized]
        610s restore discord (enable at level 0) [stabilized]
    "#]]
    .assert_eq(&doubtful.timeline());
}

#[test]
fn a_restore_near_the_restore_threshold_waits_the_whole_period() {
    // 0.5 + 0.08 + an error of 0.1 is not well under 0.65: the plain rule applies.
    let mut h = Harness::new(scaler_with_costs(
        vec![spec("discord", 10, 1)],
        &[vec![0.08]],
    ));
    h.memory(0, 1, 1, 0.9);
    feed_each(&mut h, 10, 400, 10, |t| forecast_at(t, 0.5, 0.5, 0.9, 0.1));
    expect![[r#"
        0s shed discord (disable) [high_pressure]
        310s restore discord (enable at level 0) [stabilized]
    "#]]
    .assert_eq(&h.timeline());
}

#[test]
fn the_stabilization_floor_is_a_tenth_by_default_and_never_longer_than_the_period() {
    let config = ScalerConfig::default();
    assert_eq!(
        config.floor_of(Duration::from_secs(300)),
        Duration::from_secs(30)
    );
    let config = ScalerConfig {
        stabilization_floor: Some(Duration::from_secs(120)),
        ..ScalerConfig::default()
    };
    assert_eq!(
        config.floor_of(Duration::from_secs(60)),
        Duration::from_secs(60)
    );
    let config = ScalerConfig {
        stabilization_floor: Some(Duration::from_secs(600)),
        ..ScalerConfig::default()
    };
    let problems = config.problems();
    assert!(
        problems
            .iter()
            .any(|p| p.starts_with("stabilization_floor (10m) must not be longer")),
        "{problems:?}"
    );
}

#[test]
fn the_preflight_counts_the_confident_forecast() {
    let mut h = Harness::new(scaler_with_costs(vec![spec("voice", 20, 1)], &[vec![0.2]]));
    h.memory(0, 1, 1, 0.9);
    h.feed(&forecast_at(10, 0.4, 0.62, 0.81, 0.05));
    let p = h.scaler.preflight("voice", None).unwrap();
    assert!(!p.fits, "{p:?}");
    assert_eq!(p.resources[0].forecast, Some(0.62));
    h.feed(&forecast_at(20, 0.4, 0.5, 0.81, 0.05));
    assert!(h.scaler.preflight("voice", None).unwrap().fits);
    // An unconfident forecast is not counted.
    h.feed(&forecast_at(30, 0.4, 0.7, 0.5, 0.05));
    let p = h.scaler.preflight("voice", None).unwrap();
    assert!(p.fits && p.resources[0].forecast.is_none(), "{p:?}");
}

// Properties on random plugins with declared memory, random readings and random forecasts.

#[derive(Clone, Debug)]
struct Step {
    dt: u64,
    smoothed: f64,
    forecast: f64,
    confidence: f64,
    error: f64,
}

fn step() -> impl Strategy<Value = Step> {
    let level = prop_oneof![
        0.0..1.0f64,
        prop::sample::select(vec![0.1, 0.3, 0.5, 0.6, 0.64, 0.66, 0.75, 0.79, 0.8, 0.9]),
    ];
    let forecast = prop_oneof![
        0.0..1.0f64,
        prop::sample::select(vec![0.1, 0.3, 0.5, 0.6, 0.64, 0.66, 0.75, 0.79, 0.8, 0.9]),
    ];
    (
        prop_oneof![1..30u64, 30..120u64, Just(300u64)],
        level,
        forecast,
        prop_oneof![0.0..1.0f64, Just(0.59), Just(0.6), Just(0.95)],
        prop_oneof![Just(0.0), 0.0..0.2f64],
    )
        .prop_map(|(dt, smoothed, forecast, confidence, error)| Step {
            dt,
            smoothed,
            forecast,
            confidence,
            error,
        })
}

/// Plugins with one to three levels and a declared memory per level, cheaper levels cheaper.
fn plugins_with_costs() -> impl Strategy<Value = (Vec<PluginSpec>, Vec<Vec<f64>>)> {
    prop::collection::vec((0..5i32, prop::collection::vec(0.01..0.3f64, 1..=3)), 1..5).prop_map(
        |v| {
            let mut specs = Vec::new();
            let mut costs = Vec::new();
            for (i, (priority, mut cost)) in v.into_iter().enumerate() {
                cost.sort_by(|a, b| b.total_cmp(a));
                specs.push(spec(&format!("p{i}"), priority, cost.len()));
                costs.push(cost);
            }
            (specs, costs)
        },
    )
}

/// One call into the scaler: the assessment handed in (none for a timeout) and what it decided.
struct Call {
    at: Timestamp,
    step: Option<Step>,
    decisions: Vec<Decision>,
}

fn replay(specs: &[PluginSpec], costs: &[Vec<f64>], steps: &[Step], forecasts: bool) -> Vec<Call> {
    let mut scaler = scaler_with_costs(specs.to_vec(), costs);
    let mut calls = Vec::new();
    let mut now = Timestamp::from_secs(1);
    let drain = |scaler: &mut Scaler| {
        let mut decisions = Vec::new();
        while let Some(d) = scaler.poll_decision() {
            decisions.push(d);
        }
        while scaler.poll_command().is_some() {}
        while scaler.poll_warning().is_some() {}
        decisions
    };
    for s in steps {
        let next = now + Duration::from_secs(s.dt);
        while let Some(t) = scaler.poll_timeout().filter(|t| *t < next) {
            scaler.handle_timeout(t);
            calls.push(Call {
                at: t,
                step: None,
                decisions: drain(&mut scaler),
            });
        }
        now = next;
        let mut a = if forecasts {
            forecast_at(0, s.smoothed, s.forecast, s.confidence, s.error)
        } else {
            assessment(0, &[(Resource::Memory, s.smoothed)])
        };
        a.at = now;
        scaler.handle_assessment(now, &a);
        calls.push(Call {
            at: now,
            step: Some(s.clone()),
            decisions: drain(&mut scaler),
        });
    }
    calls
}

/// What the step of `d` adds to the plugin's declared memory.
fn added(specs: &[PluginSpec], costs: &[Vec<f64>], d: &Decision) -> f64 {
    let i = specs
        .iter()
        .position(|s| Some(&s.name) == d.plugin.as_ref())
        .unwrap();
    let cost = |level: u32| costs[i][level as usize];
    match &d.action {
        Action::Enable { level } => cost(level.0),
        Action::SetLevel { from, to } => cost(to.0) - cost(from.0),
        _ => 0.0,
    }
}

fn key(d: &Decision) -> (Timestamp, DecisionKind, Option<String>, Action, Rule) {
    (d.at, d.kind, d.plugin.clone(), d.action.clone(), d.rule)
}

/// A scenario: plugins with costs and steps whose forecasts are all under `min_confidence`.
fn doubtful() -> impl Strategy<Value = (Vec<PluginSpec>, Vec<Vec<f64>>, Vec<Step>)> {
    (
        plugins_with_costs(),
        prop::collection::vec(step(), 1..120).prop_map(|steps| {
            steps
                .into_iter()
                .map(|s| Step {
                    confidence: s.confidence * (MIN_CONFIDENCE - 1e-9),
                    ..s
                })
                .collect::<Vec<_>>()
        }),
    )
        .prop_map(|((specs, costs), steps)| (specs, costs, steps))
}

fn scenario() -> impl Strategy<Value = (Vec<PluginSpec>, Vec<Vec<f64>>, Vec<Step>)> {
    (plugins_with_costs(), prop::collection::vec(step(), 1..120))
        .prop_map(|((specs, costs), steps)| (specs, costs, steps))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Low confidence changes nothing: forecasts under `min_confidence` give the very decisions
    /// that no forecast gives.
    #[test]
    fn a_forecast_under_min_confidence_changes_nothing((specs, costs, steps) in doubtful()) {
        let with: Vec<_> = replay(&specs, &costs, &steps, true).iter()
            .flat_map(|c| c.decisions.iter().map(key)).collect();
        let without: Vec<_> = replay(&specs, &costs, &steps, false).iter()
            .flat_map(|c| c.decisions.iter().map(key)).collect();
        prop_assert_eq!(with, without);
    }

    /// No restore while the confident forecast, with the plugin's need added, reaches the shed
    /// threshold.
    #[test]
    fn no_restore_into_a_confident_forecast_over_shed((specs, costs, steps) in scenario()) {
        let calls = replay(&specs, &costs, &steps, true);
        let mut latest: Option<Step> = None;
        for c in &calls {
            if let Some(s) = &c.step {
                latest = Some(s.clone());
            }
            let Some(s) = &latest else { continue };
            for d in c.decisions.iter().filter(|d| d.kind == DecisionKind::Restore) {
                if s.confidence >= MIN_CONFIDENCE {
                    let need = added(&specs, &costs, d);
                    prop_assert!(s.forecast + need < SHED,
                        "{} with the forecast {} + {need} at confidence {}", line(d), s.forecast, s.confidence);
                }
            }
        }
    }

    /// A restore comes only after every resource was calm (the smoothed value under the restore
    /// threshold, whatever the forecast) for the stabilization period since
    /// the calm began or the last step, whichever is later; or, while the confident forecast
    /// with the step's need and its own recent error stays under the restore threshold, after
    /// the floor. Never sooner.
    #[test]
    fn restores_wait_the_period_or_the_floor_on_a_confident_calm_forecast(
        (specs, costs, steps) in scenario()
    ) {
        let calls = replay(&specs, &costs, &steps, true);
        let mut latest: Option<Step> = None;
        let mut calm_since: Option<Timestamp> = None;
        let mut last_step: Option<Timestamp> = None;
        for c in &calls {
            if let Some(s) = &c.step {
                // The calm is judged on the pressure now, without the forecast.
                if s.smoothed < RESTORE {
                    calm_since.get_or_insert(c.at);
                } else {
                    calm_since = None;
                }
                latest = Some(s.clone());
            }
            for d in &c.decisions {
                if d.kind == DecisionKind::Restore {
                    let calm = calm_since.expect("a restore without calm");
                    let start = last_step.map_or(calm, |t| t.max(calm));
                    let waited = d.at - start;
                    prop_assert!(waited >= FLOOR, "{} only {waited:?} after {start}", line(d));
                    if waited < STABILIZATION {
                        let s = latest.as_ref().expect("an assessment");
                        let need = added(&specs, &costs, d);
                        prop_assert!(s.confidence >= MIN_CONFIDENCE, "{} early on confidence {}", line(d), s.confidence);
                        prop_assert!(s.smoothed.max(s.forecast) + need + s.error < RESTORE,
                            "{} early with {} + {need} + {}", line(d), s.smoothed.max(s.forecast), s.error);
                    }
                }
                if matches!(d.kind, DecisionKind::Shed | DecisionKind::Restore | DecisionKind::Throttle | DecisionKind::Unthrottle) {
                    last_step = Some(d.at);
                }
            }
        }
    }

    /// Several shed steps in one evaluation only while the confident forecast, less what the
    /// steps before freed, still reached the shed threshold.
    #[test]
    fn sheds_go_several_at_once_only_on_a_confident_forecast((specs, costs, steps) in scenario()) {
        for c in replay(&specs, &costs, &steps, true) {
            let Some(s) = &c.step else { continue };
            let sheds: Vec<&Decision> = c.decisions.iter()
                .filter(|d| d.kind == DecisionKind::Shed && d.rule == Rule::HighPressure).collect();
            let mut freed = 0.0;
            for (k, d) in sheds.iter().enumerate() {
                if k > 0 {
                    prop_assert!(s.confidence >= MIN_CONFIDENCE, "{} on confidence {}", line(d), s.confidence);
                    prop_assert!(s.forecast - freed >= SHED,
                        "{} with {} - {freed} under shed", line(d), s.forecast);
                }
                freed += freed_by(&specs, &costs, d);
            }
        }
    }
}

/// What the shed step `d` frees of the plugin's declared memory.
fn freed_by(specs: &[PluginSpec], costs: &[Vec<f64>], d: &Decision) -> f64 {
    let i = specs
        .iter()
        .position(|s| Some(&s.name) == d.plugin.as_ref())
        .unwrap();
    match &d.action {
        Action::SetLevel { from, to } => costs[i][from.0 as usize] - costs[i][to.0 as usize],
        // A disable is a plugin's last step: it was at its cheapest level, or its only one.
        Action::Disable => costs[i].last().copied().unwrap_or(0.0),
        _ => 0.0,
    }
}
