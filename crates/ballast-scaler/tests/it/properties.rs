//! Property tests of the policy's invariants, on random plugins and random inputs.

use std::time::Duration;

use ballast_core::decision::{Decision, DecisionKind, Mode, Rule};
use ballast_core::{Assessment, Command, Level, PluginSpec, Resource, Timestamp};
use ballast_scaler::{PinTarget, Placement, PluginStatus, Scaler, ScalerConfig};
use proptest::prelude::*;

use crate::support::*;

const STABILIZATION: Duration = Duration::from_secs(300);
const MIN_CONFIDENCE: f64 = 0.6;

#[derive(Clone, Debug)]
enum Input {
    Assess {
        dt: u64,
        memory: f64,
        cpu: f64,
        forecast: Option<(f64, f64)>,
    },
    Pin {
        plugin: usize,
        off: bool,
        duration: Option<u64>,
    },
    Release {
        plugin: usize,
    },
}

/// What one call into the scaler did.
#[derive(Debug)]
struct Record {
    at: Timestamp,
    /// The pressures handed in, when the call was an assessment: the smoothed values with a
    /// confident forecast counted.
    pressures: Option<Vec<f64>>,
    /// The pressures now, without the forecast: what the calm before a restore is judged on.
    present: Option<Vec<f64>>,
    /// Whether the call was one in which the scaler decides (an assessment or a timeout).
    evaluates: bool,
    before: Vec<PluginStatus>,
    after: Vec<PluginStatus>,
    decisions: Vec<Decision>,
    commands: Vec<Command>,
}

fn value() -> impl Strategy<Value = f64> {
    prop_oneof![
        0.0..1.0f64,
        prop::sample::select(vec![
            0.3, 0.6, 0.64, 0.66, 0.75, 0.79, 0.8, 0.85, 0.94, 0.95, 0.99
        ]),
    ]
}

fn input(n_plugins: usize) -> impl Strategy<Value = Input> {
    prop_oneof![
        20 => (
            prop_oneof![1..10u64, 10..120u64, Just(300u64)],
            value(),
            value(),
            prop::option::weighted(0.3, (value(), 0.0..1.0f64)),
        )
            .prop_map(|(dt, memory, cpu, forecast)| Input::Assess { dt, memory, cpu, forecast }),
        1 => (0..n_plugins, any::<bool>(), prop::option::of(10..600u64))
            .prop_map(|(plugin, off, duration)| Input::Pin { plugin, off, duration }),
        1 => (0..n_plugins).prop_map(|plugin| Input::Release { plugin }),
    ]
}

fn plugin_specs() -> impl Strategy<Value = Vec<PluginSpec>> {
    prop::collection::vec((0..5i32, 1..=3usize, prop::bool::weighted(0.2)), 1..6).prop_map(|v| {
        v.into_iter()
            .enumerate()
            .map(|(i, (priority, levels, essential))| PluginSpec {
                essential,
                ..spec(&format!("p{i}"), priority, levels)
            })
            .collect()
    })
}

fn scenario() -> impl Strategy<Value = (Vec<PluginSpec>, Vec<Input>)> {
    plugin_specs().prop_flat_map(|specs| {
        let n = specs.len();
        (Just(specs), prop::collection::vec(input(n), 1..120))
    })
}

fn status(statuses: &[PluginStatus], name: &str) -> PluginStatus {
    statuses.iter().find(|s| s.name == name).cloned().unwrap()
}

fn run(specs: &[PluginSpec], inputs: &[Input], mode: Mode) -> Vec<Record> {
    let config = ScalerConfig {
        mode,
        min_confidence: MIN_CONFIDENCE,
        stabilization: STABILIZATION,
        ..ScalerConfig::default()
    };
    let mut scaler = Scaler::new(config, specs.to_vec()).unwrap();
    let mut records = Vec::new();
    let mut now = Timestamp::from_secs(1);
    let mut call = |scaler: &mut Scaler,
                    at: Timestamp,
                    pressures: Option<(Vec<f64>, Vec<f64>)>,
                    evaluates: bool,
                    f: &mut dyn FnMut(&mut Scaler)| {
        let before = scaler.plugins();
        f(scaler);
        let mut decisions = Vec::new();
        while let Some(d) = scaler.poll_decision() {
            decisions.push(d);
        }
        let mut commands = Vec::new();
        while let Some(c) = scaler.poll_command() {
            commands.push(c);
        }
        while scaler.poll_warning().is_some() {}
        let (pressures, present) = pressures.unzip();
        records.push(Record {
            at,
            pressures,
            present,
            evaluates,
            before,
            after: scaler.plugins(),
            decisions,
            commands,
        });
    };
    for input in inputs {
        match input {
            Input::Assess {
                dt,
                memory,
                cpu,
                forecast,
            } => {
                let next = now + Duration::from_secs(*dt);
                while let Some(t) = scaler.poll_timeout().filter(|t| *t < next) {
                    call(&mut scaler, t, None, true, &mut |s| s.handle_timeout(t));
                }
                now = next;
                let mut a: Assessment =
                    assessment(0, &[(Resource::Memory, *memory), (Resource::Cpu, *cpu)]);
                a.at = now;
                let present = vec![*memory, *cpu];
                let mut pressures = present.clone();
                if let Some((f, c)) = forecast {
                    a.resources[0].forecast = Some(ballast_core::Forecast {
                        value: *f,
                        horizon: Duration::from_secs(300),
                        confidence: *c,
                        model: "test".into(),
                        error: None,
                    });
                    if *c >= MIN_CONFIDENCE {
                        pressures[0] = pressures[0].max(*f);
                    }
                }
                call(
                    &mut scaler,
                    now,
                    Some((pressures, present)),
                    true,
                    &mut |s| s.handle_assessment(now, &a),
                );
            }
            Input::Pin {
                plugin,
                off,
                duration,
            } => {
                let name = specs[*plugin].name.clone();
                let target = if *off {
                    PinTarget::Off
                } else {
                    PinTarget::On { level: Level(0) }
                };
                let until = duration.map(|d| now + Duration::from_secs(d));
                call(&mut scaler, now, None, false, &mut |s| {
                    s.pin(now, &name, target, until).unwrap()
                });
            }
            Input::Release { plugin } => {
                let name = specs[*plugin].name.clone();
                call(&mut scaler, now, None, false, &mut |s| {
                    s.release(now, &name).unwrap()
                });
            }
        }
    }
    records
}

fn spec_of<'a>(specs: &'a [PluginSpec], d: &Decision) -> Option<&'a PluginSpec> {
    d.plugin
        .as_ref()
        .and_then(|p| specs.iter().find(|s| &s.name == p))
}

fn is_step(d: &Decision) -> bool {
    matches!(
        d.kind,
        DecisionKind::Shed
            | DecisionKind::Restore
            | DecisionKind::Throttle
            | DecisionKind::Unthrottle
    )
}

/// Where a plugin stands for a restore, seen from outside.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Waiting {
    /// At its target (or pinned off, or failed): nothing to restore.
    No,
    /// Below its target, and its own back-off (its stabilization, doubled per flap, counted from
    /// the start of the calm or its own last step, whichever is later) still runs.
    BackedOff,
    /// Below its target, and its own back-off is over.
    Ready,
}

/// The restore state before call `i` of a run, worked out from the calls alone: whether the
/// machine as a whole has been calm (the pressures now, without the forecast) for the
/// stabilization period since the calm began or the last step, whichever is later, with the
/// pressures in force (a confident forecast included) under the restore threshold, and where
/// each plugin of `specs` stands.
fn restore_view(specs: &[PluginSpec], records: &[Record], i: usize) -> (bool, Vec<Waiting>) {
    let r = &records[i];
    let mut calm_since = None;
    for earlier in records[..=i].iter().rev() {
        let Some(p) = &earlier.present else {
            continue;
        };
        if p.iter().all(|v| *v < 0.65) {
            calm_since = Some(earlier.at);
        } else {
            break;
        }
    }
    let Some(calm_since) = calm_since else {
        return (false, vec![Waiting::No; specs.len()]);
    };
    let last_step = |plugin: Option<&str>| {
        records[..i]
            .iter()
            .flat_map(|e| e.decisions.iter())
            .filter(|d| is_step(d) && plugin.is_none_or(|p| d.plugin.as_deref() == Some(p)))
            .map(|d| d.at)
            .max()
            .map_or(calm_since, |t| t.max(calm_since))
    };
    // The step itself wants the pressure in force, a confident forecast included, under the
    // restore threshold too; the latest assessment's figures are the ones in force.
    let held = records[..=i]
        .iter()
        .rev()
        .find_map(|e| e.pressures.as_ref())
        .is_some_and(|p| p.iter().any(|v| *v >= 0.65));
    let calm = !held && last_step(None) + STABILIZATION <= r.at;
    let waiting = specs
        .iter()
        .map(|spec| {
            let s = status(&r.before, &spec.name);
            let target = match s.pin {
                Some((PinTarget::Off, _)) => return Waiting::No,
                Some((PinTarget::On { level }, _)) => level,
                None => Level(0),
            };
            let below = match s.placement {
                Placement::Off { .. } => true,
                Placement::On { level } => level > target,
            };
            if !below || s.failed {
                Waiting::No
            } else if last_step(Some(&spec.name)) + s.stabilization > r.at {
                Waiting::BackedOff
            } else {
                Waiting::Ready
            }
        })
        .collect();
    (calm, waiting)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// A plugin still in its own back-off after flapping never holds the restore of a plugin
    /// behind it in priority: once the machine has been calm for the stabilization, any plugin
    /// whose own back-off is over comes back. And restores still go in priority order past
    /// every plugin that is not in its back-off.
    #[test]
    fn a_backed_off_plugin_never_delays_a_lower_priority_restore((specs, inputs) in scenario()) {
        let records = run(&specs, &inputs, Mode::Enforce);
        for (i, r) in records.iter().enumerate().filter(|(_, r)| r.evaluates) {
            let (calm, waiting) = restore_view(&specs, &records, i);
            let restored: Vec<&Decision> =
                r.decisions.iter().filter(|d| d.kind == DecisionKind::Restore).collect();
            if calm && waiting.contains(&Waiting::Ready) {
                prop_assert!(!restored.is_empty(),
                    "no restore at {} although {:?} are ready ({:?})", r.at,
                    specs.iter().zip(&waiting).filter(|(_, w)| **w == Waiting::Ready)
                        .map(|(s, _)| &s.name).collect::<Vec<_>>(),
                    specs.iter().zip(&waiting).map(|(s, w)| (&s.name, s.priority, *w)).collect::<Vec<_>>());
            }
            for d in restored {
                let back = spec_of(&specs, d).unwrap();
                for (other, w) in specs.iter().zip(&waiting) {
                    prop_assert!(other.priority <= back.priority || *w != Waiting::Ready,
                        "{} (priority {}) restored before {} (priority {}), which was ready",
                        back.name, back.priority, other.name, other.priority);
                }
            }
        }
    }

    #[test]
    fn shed_order_follows_priority((specs, inputs) in scenario()) {
        for r in run(&specs, &inputs, Mode::Enforce) {
            for d in r.decisions.iter().filter(|d| d.kind == DecisionKind::Shed && d.rule == Rule::HighPressure) {
                let shed = spec_of(&specs, d).unwrap();
                for other in &specs {
                    let s = status(&r.before, &other.name);
                    let touchable = !other.essential && s.pin.is_none() && !s.failed
                        && matches!(s.placement, Placement::On { .. });
                    prop_assert!(!touchable || other.priority >= shed.priority,
                        "{} (priority {}) shed while {} (priority {}) was still on", shed.name, shed.priority, other.name, other.priority);
                }
            }
        }
    }

    #[test]
    fn an_essential_plugin_is_never_shed((specs, inputs) in scenario()) {
        for r in run(&specs, &inputs, Mode::Enforce) {
            for d in &r.decisions {
                if spec_of(&specs, d).is_some_and(|s| s.essential) {
                    prop_assert!(d.kind != DecisionKind::Shed && d.kind != DecisionKind::Throttle, "{d}");
                }
            }
        }
    }

    #[test]
    fn no_restore_before_stabilization((specs, inputs) in scenario()) {
        let records = run(&specs, &inputs, Mode::Enforce);
        for (i, r) in records.iter().enumerate() {
            for d in r.decisions.iter().filter(|d| d.kind == DecisionKind::Restore) {
                // Every assessment in the stabilization window was calm ...
                let window_start = d.at - STABILIZATION;
                let mut first_calm = None;
                for earlier in records[..=i].iter().rev() {
                    let Some(p) = &earlier.present else { continue };
                    if p.iter().all(|v| *v < 0.65) {
                        first_calm = Some(earlier.at);
                    } else {
                        break;
                    }
                }
                let first_calm = first_calm.expect("a restore without any calm assessment");
                prop_assert!(first_calm <= window_start, "restore at {} but calm only since {}", d.at, first_calm);
                // ... and no other step was taken in it.
                for earlier in &records[..i] {
                    for e in earlier.decisions.iter().filter(|e| is_step(e)) {
                        prop_assert!(e.at <= window_start, "{} within the stabilization before {}", e, d);
                    }
                }
            }
        }
    }

    #[test]
    fn emergency_sheds_every_non_essential_plugin_in_one_tick((specs, inputs) in scenario()) {
        for r in run(&specs, &inputs, Mode::Enforce) {
            let emergency = r.pressures.as_ref().is_some_and(|p| p[0] >= 0.95);
            if emergency {
                for s in &specs {
                    let after = status(&r.after, &s.name);
                    prop_assert!(s.essential || matches!(after.placement, Placement::Off { .. }),
                        "{} still on after an emergency", s.name);
                }
            }
            for d in r.decisions.iter().filter(|d| d.rule == Rule::Emergency) {
                prop_assert_eq!(d.at, r.at);
            }
        }
    }

    #[test]
    fn pinned_plugins_are_untouched_outside_an_emergency((specs, inputs) in scenario()) {
        for r in run(&specs, &inputs, Mode::Enforce) {
            for (k, d) in r.decisions.iter().enumerate() {
                let Some(name) = &d.plugin else { continue };
                let before = status(&r.before, name);
                // A pin that ran out or was released earlier in the same call no longer holds.
                let unpinned = r.decisions[..=k].iter().any(|e| {
                    e.plugin.as_ref() == Some(name) && matches!(e.rule, Rule::PinExpired | Rule::Released)
                });
                if before.pin.is_some() && !unpinned {
                    let allowed = d.kind == DecisionKind::Override
                        || d.rule == Rule::Emergency
                        // Back toward the pin after an emergency took it down.
                        || (d.kind == DecisionKind::Restore && matches!(before.pin, Some((PinTarget::On { .. }, _))));
                    prop_assert!(allowed, "pinned {} touched: {}", name, d);
                }
            }
        }
    }

    #[test]
    fn observe_mode_decides_the_same_but_applies_nothing((specs, inputs) in scenario()) {
        let enforce = run(&specs, &inputs, Mode::Enforce);
        let observe = run(&specs, &inputs, Mode::Observe);
        let strip = |records: &[Record]| records.iter().flat_map(|r| r.decisions.iter().map(|d| {
            (d.at, d.kind, d.action.clone(), d.plugin.clone(), d.rule, d.reason.clone())
        })).collect::<Vec<_>>();
        prop_assert_eq!(strip(&enforce), strip(&observe));
        for r in &observe {
            prop_assert!(r.commands.is_empty());
            prop_assert!(r.decisions.iter().all(|d| !d.applied));
        }
        for r in &enforce {
            let applied = r.decisions.iter().filter(|d| d.applied).count();
            prop_assert_eq!(applied, r.commands.len());
        }
    }

    #[test]
    fn no_flap_within_the_stabilization_period((specs, inputs) in scenario()) {
        let records = run(&specs, &inputs, Mode::Enforce);
        for s in &specs {
            let steps: Vec<&Decision> = records.iter().flat_map(|r| r.decisions.iter())
                .filter(|d| d.plugin.as_deref() == Some(&s.name) && matches!(d.kind, DecisionKind::Shed | DecisionKind::Restore))
                .collect();
            let mut required = STABILIZATION;
            for pair in steps.windows(2) {
                let (a, b) = (pair[0], pair[1]);
                let gap = b.at - a.at;
                match (a.kind, b.kind) {
                    // A restore never follows a shed sooner than the plugin's stabilization.
                    (DecisionKind::Shed, DecisionKind::Restore) => {
                        prop_assert!(gap >= required, "{} then {} ({:?} < {:?})", a, b, gap, required);
                    }
                    // A shed soon after a restore is a flap, only on real pressure, and it
                    // doubles the wait before the next restore.
                    (DecisionKind::Restore, DecisionKind::Shed) => {
                        if gap < required {
                            prop_assert!(matches!(b.rule, Rule::HighPressure | Rule::Emergency), "{}", b);
                            required = (required * 2).min(Duration::from_secs(3600));
                        } else {
                            required = STABILIZATION;
                        }
                    }
                    _ => {}
                }
            }
        }
    }
}

fn suspendable_specs() -> impl Strategy<Value = Vec<PluginSpec>> {
    prop::collection::vec((0..5i32, 1..=3usize, any::<bool>()), 1..6).prop_map(|v| {
        v.into_iter()
            .enumerate()
            .map(|(i, (priority, levels, can_suspend))| PluginSpec {
                can_suspend,
                ..spec(&format!("p{i}"), priority, levels)
            })
            .collect()
    })
}

/// Every decision of a scaler over `steps` of one resource, one assessment a step.
fn decisions_under(
    specs: Vec<PluginSpec>,
    resource: Resource,
    steps: &[(u64, f64)],
) -> Vec<Decision> {
    let mut h = Harness::new(Scaler::new(ScalerConfig::default(), specs).unwrap());
    let mut t = 0;
    for (dt, v) in steps {
        t += dt;
        h.feed(&assessment(t, &[(resource, *v)]));
    }
    h.decisions
}

proptest! {
    /// A stopped process keeps its memory: memory pressure never suspends anything.
    #[test]
    fn memory_pressure_never_suspends(
        specs in suspendable_specs(),
        steps in prop::collection::vec((1..120u64, value()), 1..80),
    ) {
        for d in decisions_under(specs, Resource::Memory, &steps) {
            prop_assert_ne!(&d.action, &ballast_core::decision::Action::Suspend, "{}", line(&d));
        }
    }

    /// CPU pressure takes a plugin that can be suspended off by suspending it, never by
    /// disabling it; a plugin that cannot is disabled.
    #[test]
    fn cpu_pressure_suspends_what_can_be_suspended(
        specs in suspendable_specs(),
        steps in prop::collection::vec((1..120u64, value()), 1..80),
    ) {
        let can: Vec<bool> = specs.iter().map(|s| s.can_suspend).collect();
        for d in decisions_under(specs, Resource::Cpu, &steps) {
            let Some(plugin) = &d.plugin else { continue };
            let index: usize = plugin[1..].parse().unwrap();
            match d.action {
                ballast_core::decision::Action::Disable => prop_assert!(!can[index], "{}", line(&d)),
                ballast_core::decision::Action::Suspend => prop_assert!(can[index], "{}", line(&d)),
                _ => {}
            }
        }
    }
}
