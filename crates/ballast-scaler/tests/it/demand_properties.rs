//! Property tests of the demand half: a wake never takes down a plugin of equal or higher
//! priority, an essential or a pinned one; it takes no more than needed; and an idle unload
//! never happens with a call in flight.

use std::time::Duration;

use ballast_core::decision::{Action, DecisionKind, Rule};
use ballast_core::{
    LevelHints, PluginEvent, PluginEventKind, PluginSpec, PluginState, PluginStats, Resource,
    ResourceHints, StartMode, Timestamp,
};
use ballast_scaler::{MachineTotals, PinTarget, Scaler, ScalerConfig};
use proptest::prelude::*;

use crate::support::*;

const GIB: u64 = 1 << 30;
const GPU_TOTAL: u64 = 80 * GIB;
const SHED: f64 = 0.8;

/// One plugin of a scenario: priority, GPU GiB per level (fullest first), essential, pinned
/// on, calls in flight.
#[derive(Clone, Debug)]
struct Plugin {
    priority: i32,
    gib: Vec<u64>,
    essential: bool,
    pinned: bool,
    in_flight: u32,
}

fn plugin() -> impl Strategy<Value = Plugin> {
    (
        0..6i32,
        prop::collection::vec(0..30u64, 1..=3),
        prop::bool::weighted(0.15),
        prop::bool::weighted(0.15),
        prop_oneof![Just(0u32), 1..3u32],
    )
        .prop_map(|(priority, mut gib, essential, pinned, in_flight)| {
            // Cheaper levels need no more than fuller ones.
            gib.sort_unstable_by(|a, b| b.cmp(a));
            Plugin {
                priority,
                gib,
                essential,
                pinned,
                in_flight,
            }
        })
}

fn spec_of(name: &str, p: &Plugin) -> PluginSpec {
    PluginSpec {
        name: name.to_owned(),
        priority: p.priority,
        essential: p.essential,
        hints: ResourceHints {
            levels: p
                .gib
                .iter()
                .map(|g| LevelHints {
                    gpu_memory_bytes: g * GIB,
                    ..LevelHints::default()
                })
                .collect(),
            cpu_share: 0.0,
            needs_gpu: true,
        },
        ..PluginSpec::default()
    }
}

fn config() -> ScalerConfig {
    let mut config = ScalerConfig {
        machine: MachineTotals {
            memory_bytes: Some(64 * GIB),
            cpu_cores: Some(16.0),
            gpu_memory_bytes: Some(GPU_TOTAL),
        },
        ..ScalerConfig::default()
    };
    config.concurrency.enabled = false;
    config
}

fn event(secs: u64, plugin: &str, kind: PluginEventKind) -> PluginEvent {
    PluginEvent {
        at: Timestamp::from_secs(secs),
        plugin: plugin.to_owned(),
        kind,
    }
}

fn fraction(gib: u64) -> f64 {
    (gib * GIB) as f64 / GPU_TOTAL as f64
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Whatever the plugins and the pressure, a wake takes down only plugins of lower priority
    /// that are neither essential nor pinned; when it wakes the plugin it fits afterwards, and
    /// no plugin's last step could have been spared.
    #[test]
    fn a_wake_takes_down_only_lower_priority_plugins_and_no_more_than_needed(
        waker in plugin(),
        others in prop::collection::vec(plugin(), 0..6),
        // Under the shed threshold: no pressure step comes before the wake.
        pressure in 0.0..0.79f64,
    ) {
        let mut specs = vec![PluginSpec { start: StartMode::OnDemand, ..spec_of("w", &waker) }];
        for (i, p) in others.iter().enumerate() {
            specs.push(spec_of(&format!("p{i}"), p));
        }
        let mut h = Harness::new(Scaler::new(config(), specs).unwrap());
        for (i, p) in others.iter().enumerate() {
            let name = format!("p{i}");
            h.scaler.handle_plugin_event(Timestamp::ZERO, &event(0, &name, PluginEventKind::StateChanged {
                from: PluginState::Loaded,
                to: PluginState::Enabled { level: level(0) },
                reason: "start".into(),
                by_host: false,
            }));
            h.scaler.handle_plugin_event(Timestamp::ZERO, &event(0, &name, PluginEventKind::Stats(PluginStats {
                in_flight: p.in_flight,
                ..PluginStats::default()
            })));
            if p.pinned {
                h.scaler.pin(Timestamp::ZERO, &name, PinTarget::On { level: level(0) }, None).unwrap();
            }
        }
        h.drain();
        h.feed(&assessment(1, &[(Resource::GpuMemory, pressure), (Resource::Memory, 0.1)]));
        let before = h.decisions.len();
        let result = h.scaler.wake(Timestamp::from_secs(2), "w");
        h.drain();
        let made: Vec<_> = h.decisions[before..]
            .iter()
            .filter(|d| d.rule == Rule::MakeRoom)
            .collect();
        for d in &made {
            let name = d.plugin.as_deref().unwrap();
            let i: usize = name[1..].parse().unwrap();
            let p = &others[i];
            prop_assert!(p.priority < waker.priority, "{name} (priority {}) taken down for priority {}", p.priority, waker.priority);
            prop_assert!(!p.essential, "essential {name} taken down");
            prop_assert!(!p.pinned, "pinned {name} taken down");
        }
        match result {
            Ok(grant) if !grant.already_on => {
                // What each plugin taken down frees, by its last placement.
                let mut last: std::collections::BTreeMap<usize, Option<usize>> = Default::default();
                for d in &made {
                    let i: usize = d.plugin.as_deref().unwrap()[1..].parse().unwrap();
                    let level = match d.action {
                        Action::SetLevel { to, .. } => Some(to.0 as usize),
                        Action::Disable => None,
                        ref other => return Err(TestCaseError::fail(format!("unexpected {other:?}"))),
                    };
                    last.insert(i, level);
                }
                let freed_by = |i: usize, to: Option<usize>| {
                    let p = &others[i];
                    fraction(p.gib[0]) - to.map_or(0.0, |l| fraction(p.gib[l]))
                };
                let need = fraction(waker.gib[grant.level.0 as usize]);
                let freed: f64 = last.iter().map(|(&i, &to)| freed_by(i, to)).sum();
                prop_assert!(pressure + need - freed < SHED + 1e-9, "does not fit after its room: {} + {need} - {freed}", pressure);
                // Minimal: without any plugin's last step it would not fit. A plugin not
                // serving goes off in one step; one serving, a level at a time.
                let previous = |i: usize, to: Option<usize>| -> Option<usize> {
                    let p = &others[i];
                    match to {
                        None if p.in_flight == 0 => Some(0),
                        None => Some(p.gib.len() - 1),
                        Some(l) => Some(l.saturating_sub(1)),
                    }
                };
                for (&i, &to) in &last {
                    let spared: f64 = last
                        .iter()
                        .map(|(&j, &t)| if j == i { freed_by(i, previous(i, to)) } else { freed_by(j, t) })
                        .sum();
                    prop_assert!(
                        pressure + need - spared >= SHED - 1e-9,
                        "p{i}'s last step was not needed: {pressure} + {need} - {spared}"
                    );
                }
            }
            Ok(_) => {}
            Err(_) => prop_assert!(made.is_empty(), "room made for a wake that failed"),
        }
    }

    /// An idle unload never comes while the plugin has a call in flight, and never before its
    /// keep-alive has passed since the end of its last call.
    #[test]
    fn an_idle_unload_never_happens_with_calls_in_flight(
        steps in prop::collection::vec((1..120u64, prop_oneof![Just(0u32), 1..3u32], any::<bool>()), 1..60),
        keep in 10..300u64,
    ) {
        let mut h = Harness::new(scaler(vec![PluginSpec {
            keep_alive: Some(Duration::from_secs(keep)),
            ..spec("v", 10, 1)
        }]));
        h.scaler.handle_plugin_event(Timestamp::ZERO, &event(0, "v", PluginEventKind::StateChanged {
            from: PluginState::Loaded,
            to: PluginState::Enabled { level: level(0) },
            reason: "start".into(),
            by_host: false,
        }));
        let mut now = 0;
        let mut in_flight = 0;
        let mut last_end: u64 = 0;
        let mut unloaded = false;
        for (dt, calls, report) in steps {
            // Time passes with the scaler's timers firing on the way, then maybe new figures.
            let before = h.decisions.len();
            h.memory(now, now + dt, dt, 0.3);
            now += dt;
            for d in &h.decisions[before..] {
                if d.kind == DecisionKind::Unload {
                    prop_assert_eq!(in_flight, 0, "unloaded with a call in flight at {}", d.at);
                    prop_assert!(d.at.as_millis() >= (last_end + keep) * 1000, "unloaded at {} before {}s + {}s", d.at, last_end, keep);
                    unloaded = true;
                }
            }
            if unloaded {
                break;
            }
            if report {
                if in_flight > 0 && calls == 0 {
                    last_end = now;
                }
                in_flight = calls;
                h.scaler.handle_plugin_event(Timestamp::from_secs(now), &event(now, "v", PluginEventKind::Stats(PluginStats {
                    in_flight,
                    last_call_end: (last_end > 0).then(|| Timestamp::from_secs(last_end)),
                    ..PluginStats::default()
                })));
                h.drain();
            }
        }
    }
}
