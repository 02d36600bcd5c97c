//! Scenario tests of the policy: decision timelines on hand-written assessments.

use std::time::Duration;

use ballast_core::decision::{Action, Mode};
use ballast_core::{
    LevelHints, PluginEvent, PluginEventKind, PluginState, PluginStats, Resource, ThresholdProfile,
    Timestamp,
};
use ballast_scaler::{PinTarget, PluginPolicy, Scaler, ScalerConfig, ScalerError};
use expect_test::expect;

use crate::support::*;

#[test]
fn sheds_lowest_priority_first_one_step_per_cooldown_levels_before_disable() {
    let mut h = Harness::new(scaler(plugins()));
    h.memory(0, 10, 1, 0.5);
    h.memory(10, 200, 5, 0.9);
    expect![[r#"
        10s shed discord (disable) [high_pressure]
        40s shed voice (level 0 -> 1) [high_pressure]
        70s shed voice (disable) [high_pressure]
        100s shed android (disable) [high_pressure]
        130s warn [nothing_to_shed]
    "#]]
    .assert_eq(&h.timeline());
    expect![[r#"
        disable discord
        set_level voice 1
        disable voice
        disable android
    "#]]
    .assert_eq(&h.command_lines());
}

#[test]
fn emergency_sheds_every_non_essential_plugin_in_one_tick() {
    let mut h = Harness::new(scaler(plugins()));
    h.memory(0, 5, 1, 0.5);
    h.memory(5, 6, 1, 0.97);
    expect![[r#"
            5s shed discord (disable) [emergency]
            5s shed voice (disable) [emergency]
            5s shed android (disable) [emergency]
    "#]]
    .assert_eq(&h.timeline());
    assert!(h.decisions.iter().all(|d| d.at == Timestamp::from_secs(5)));
}

#[test]
fn restores_highest_priority_first_after_stabilization_one_step_each() {
    let mut h = Harness::new(scaler(plugins()));
    h.memory(0, 1, 1, 0.97);
    h.memory(1, 30, 1, 0.7);
    h.memory(30, 3000, 10, 0.3);
    expect![[r#"
        0s shed discord (disable) [emergency]
        0s shed voice (disable) [emergency]
        0s shed android (disable) [emergency]
        1s warn [soft_limit]
        330s restore android (enable at level 0) [stabilized]
        630s restore voice (enable at level 1) [stabilized]
        930s restore voice (level 1 -> 0) [stabilized]
        1230s restore discord (enable at level 0) [stabilized]
    "#]]
    .assert_eq(&h.timeline());
}

#[test]
fn restores_stop_at_the_fullest_level_the_tier_allows() {
    let mut h = Harness::new(scaler(plugins()));
    // The tier allows voice only its cheaper level, and android not at all.
    h.scaler.set_allowance("voice", Some(level(1))).unwrap();
    h.scaler.set_allowance("android", None).unwrap();
    assert!(h.scaler.set_allowance("nobody", None).is_err());
    h.memory(0, 1, 1, 0.97);
    h.memory(1, 3000, 10, 0.3);
    expect![[r#"
        0s shed discord (disable) [emergency]
        0s shed voice (disable) [emergency]
        0s shed android (disable) [emergency]
        301s restore voice (enable at level 1) [stabilized]
        601s restore discord (enable at level 0) [stabilized]
    "#]]
    .assert_eq(&h.timeline());
}

#[test]
fn a_tier_that_allows_only_levels_cheaper_than_the_plugins_keeps_it_off() {
    let mut h = Harness::new(scaler(plugins()));
    // The tier's rules want more of this machine for both of voice's levels: it allows only a
    // level 2, which voice does not have.
    h.scaler.set_allowance("voice", Some(level(2))).unwrap();
    h.memory(0, 1, 1, 0.97);
    h.memory(1, 3000, 10, 0.3);
    expect![[r#"
        0s shed discord (disable) [emergency]
        0s shed voice (disable) [emergency]
        0s shed android (disable) [emergency]
        301s restore android (enable at level 0) [stabilized]
        601s restore discord (enable at level 0) [stabilized]
    "#]]
    .assert_eq(&h.timeline());
}

#[test]
fn restore_waits_on_a_timer_not_on_the_next_assessment() {
    let mut h = Harness::new(scaler(vec![spec("discord", 10, 1)]));
    h.memory(0, 1, 1, 0.9);
    h.memory(1, 2, 1, 0.3);
    assert_eq!(h.scaler.poll_timeout(), Some(Timestamp::from_secs(301)));
    h.run_timers_until(Timestamp::from_secs(1000));
    expect![[r#"
        0s shed discord (disable) [high_pressure]
        301s restore discord (enable at level 0) [stabilized]
    "#]]
    .assert_eq(&h.timeline());
}

#[test]
fn preflight_blocks_a_restore_whose_declared_needs_would_not_fit() {
    let mut config = ScalerConfig::default();
    config.machine.memory_bytes = Some(1000);
    let mut voice = spec("voice", 20, 1);
    voice.hints.levels = vec![LevelHints {
        memory_min_bytes: 300,
        memory_preferred_bytes: 400,
        gpu_memory_bytes: 0,
    }];
    let mut h = Harness::new(Scaler::new(config, vec![voice]).unwrap());
    h.memory(0, 1, 1, 0.9);
    // 0.5 + 0.4 would reach the shed threshold: the restore is held, once warned.
    h.memory(1, 1000, 10, 0.5);
    // At 0.3 it fits (0.7 < 0.8), and the calm time already counts.
    h.memory(1000, 1400, 10, 0.3);
    expect![[r#"
        0s shed voice (disable) [high_pressure]
        301s warn voice [preflight_failed]
        1000s restore voice (enable at level 0) [stabilized]
    "#]]
    .assert_eq(&h.timeline());
}

#[test]
fn a_plugin_that_flaps_waits_exponentially_longer() {
    let mut h = Harness::new(scaler(vec![spec("discord", 10, 1)]));
    // The longest calm a restore may need: the back-off cap (1 h) and a step of slack.
    const LIMIT_SECS: u64 = 3600 + 10;
    let mut t = 0;
    for _ in 0..3 {
        // High until shed, then calm until restored (for at most the limit: a restore that never
        // comes fails here instead of hanging the test), then high again at once.
        h.memory(t, t + 1, 1, 0.9);
        t += 1;
        let calm_from = t;
        while h.scaler.placement("discord")
            != Some(ballast_scaler::Placement::On { level: level(0) })
        {
            assert!(
                t - calm_from < LIMIT_SECS,
                "discord not restored after {} s of calm from {calm_from} s:\n{}",
                t - calm_from,
                h.timeline()
            );
            h.memory(t, t + 10, 10, 0.3);
            t += 10;
        }
    }
    h.memory(t, t + 1, 1, 0.9);
    expect![[r#"
        0s shed discord (disable) [high_pressure]
        301s restore discord (enable at level 0) [stabilized]
        311s shed discord (disable) [high_pressure]
        912s restore discord (enable at level 0) [stabilized]
        922s shed discord (disable) [high_pressure]
        2123s restore discord (enable at level 0) [stabilized]
        2133s shed discord (disable) [high_pressure]
    "#]]
    .assert_eq(&h.timeline());
}

#[test]
fn pinned_plugins_are_left_alone_until_an_emergency_and_time_boxed_pins_run_out() {
    let mut h = Harness::new(scaler(plugins()));
    h.scaler
        .pin(
            Timestamp::from_secs(0),
            "discord",
            PinTarget::On { level: level(0) },
            None,
        )
        .unwrap();
    h.scaler
        .pin(
            Timestamp::from_secs(0),
            "android",
            PinTarget::On { level: level(0) },
            Some(Timestamp::from_secs(100)),
        )
        .unwrap();
    h.memory(1, 150, 10, 0.85);
    h.memory(150, 151, 1, 0.96);
    h.scaler
        .release(Timestamp::from_secs(152), "discord")
        .unwrap();
    expect![[r#"
        0s override discord [pinned]
        0s override android [pinned]
        1s shed voice (level 0 -> 1) [high_pressure]
        31s shed voice (disable) [high_pressure]
        61s warn [nothing_to_shed]
        100s override android [pin_expired]
        100s shed android (disable) [high_pressure]
        150s shed discord (disable) [emergency]
    "#]]
    .assert_eq(&h.timeline());
    expect![[r#"
        set_level voice 1
        disable voice
        disable android
        disable discord
    "#]]
    .assert_eq(&h.command_lines());
    assert_eq!(
        h.scaler
            .pin(Timestamp::from_secs(200), "nope", PinTarget::Off, None),
        Err(ScalerError::UnknownPlugin("nope".into()))
    );
    assert!(matches!(
        h.scaler.pin(
            Timestamp::from_secs(200),
            "voice",
            PinTarget::On { level: level(5) },
            None
        ),
        Err(ScalerError::InvalidLevel { .. })
    ));
}

#[test]
fn observe_mode_decides_the_same_and_sends_nothing_advise_mode_warns() {
    let run = |mode: Mode| {
        let config = ScalerConfig {
            mode,
            ..ScalerConfig::default()
        };
        let mut h = Harness::new(Scaler::new(config, plugins()).unwrap());
        h.memory(0, 100, 5, 0.9);
        h.memory(100, 1000, 10, 0.3);
        h
    };
    let enforce = run(Mode::Enforce);
    let observe = run(Mode::Observe);
    let advise = run(Mode::Advise);
    assert!(observe.commands.is_empty() && advise.commands.is_empty());
    assert!(observe.warnings.is_empty());
    assert_eq!(advise.warnings.len(), advise.decisions.len());
    assert!(!enforce.commands.is_empty());
    let strip = |h: &Harness| {
        h.decisions
            .iter()
            .map(|d| (d.at, d.kind, d.action.clone(), d.plugin.clone(), d.rule))
            .collect::<Vec<_>>()
    };
    assert_eq!(strip(&enforce), strip(&observe));
    assert!(
        observe
            .decisions
            .iter()
            .all(|d| !d.applied && d.mode == Mode::Observe)
    );
    expect![[r#"
        0s shed discord (disable) [high_pressure] not applied
        30s shed voice (level 0 -> 1) [high_pressure] not applied
        60s shed voice (disable) [high_pressure] not applied
        90s shed android (disable) [high_pressure] not applied
        400s restore android (enable at level 0) [stabilized] not applied
        700s restore voice (enable at level 1) [stabilized] not applied
    "#]]
    .assert_eq(&observe.timeline());
}

#[test]
fn gpu_pressure_sheds_gpu_users_first_and_others_only_when_none_is_left() {
    let mut gpu_user = spec("voice", 20, 1);
    gpu_user.hints.needs_gpu = true;
    let mut h = Harness::new(scaler(vec![spec("discord", 10, 1), gpu_user]));
    let mut t = 0;
    while t < 100 {
        h.feed(&assessment(
            t,
            &[(Resource::Memory, 0.3), (Resource::GpuMemory, 0.9)],
        ));
        t += 10;
    }
    expect![[r#"
        0s shed voice (disable) [high_pressure]
        30s shed discord (disable) [high_pressure]
        60s warn [nothing_to_shed]
    "#]]
    .assert_eq(&h.timeline());
}

#[test]
fn soft_limit_warns_once_and_throttles_before_shedding() {
    let mut config = ScalerConfig::default();
    config.plugins.insert(
        "voice".into(),
        PluginPolicy {
            max_concurrency: Some(6),
            ..PluginPolicy::default()
        },
    );
    let mut h = Harness::new(Scaler::new(config, plugins()).unwrap());
    h.memory(0, 100, 10, 0.75);
    h.memory(100, 200, 10, 0.5);
    h.memory(200, 800, 10, 0.3);
    expect![[r#"
        0s warn [soft_limit]
        0s throttle discord (concurrency 4) [soft_limit]
        30s throttle voice (concurrency 3) [soft_limit]
        60s throttle android (concurrency 4) [soft_limit]
        400s unthrottle android (concurrency default) [stabilized]
        700s unthrottle voice (concurrency default) [stabilized]
    "#]]
    .assert_eq(&h.timeline());
    expect![[r#"
        set_concurrency discord Some(4)
        set_concurrency voice Some(3)
        set_concurrency android Some(4)
        set_concurrency android None
        set_concurrency voice None
    "#]]
    .assert_eq(&h.command_lines());
    assert_eq!(
        h.warnings.len(),
        1,
        "only the soft limit warns in enforce mode"
    );
}

#[test]
fn a_confident_forecast_counts_an_unconfident_one_does_not() {
    let mut h = Harness::new(scaler(vec![spec("discord", 10, 1)]));
    h.feed(&with_forecast(0, 0.6, 0.9, 0.3));
    assert!(h.decisions.is_empty());
    h.feed(&with_forecast(1, 0.6, 0.9, 0.8));
    expect![[r#"
            1s shed discord (disable) [high_pressure]
    "#]]
    .assert_eq(&h.timeline());
    insta_reason(&h);
}

fn insta_reason(h: &Harness) {
    expect![
        "memory pressure 0.90 reached shed 0.80 (forecast 0.90 at confidence 0.80, smoothed 0.60)"
    ]
    .assert_eq(&h.decisions[0].reason);
}

#[test]
fn performance_signals_degrade_a_plugin_with_that_reason() {
    let mut config = ScalerConfig::default();
    config.plugins.insert(
        "voice".into(),
        PluginPolicy {
            latency_p95_objective: Some(Duration::from_millis(500)),
            max_failure_rate: Some(0.1),
            ..PluginPolicy::default()
        },
    );
    let mut h = Harness::new(Scaler::new(config, plugins()).unwrap());
    let stats = |secs: u64, calls: u64, errors: u64, p95_ms: u64| PluginEvent {
        at: Timestamp::from_secs(secs),
        plugin: "voice".into(),
        kind: PluginEventKind::Stats(PluginStats {
            calls,
            errors,
            latency_p95_us: p95_ms * 1000,
            ..PluginStats::default()
        }),
    };
    for event in [
        stats(0, 10, 0, 100),
        stats(10, 100, 1, 900),
        stats(20, 200, 2, 900),
        stats(60, 300, 60, 100),
    ] {
        h.scaler.handle_plugin_event(event.at, &event);
    }
    h.feed(&assessment(61, &[(Resource::Memory, 0.3)]));
    expect![[r#"
           10s shed voice (level 0 -> 1) [latency_objective]
           60s shed voice (disable) [failure_rate]
    "#]]
    .assert_eq(&h.timeline());
    let reasons: Vec<_> = h.decisions.iter().map(|d| d.reason.clone()).collect();
    expect![[r#"
        [
            "p95 latency 900.0 ms over its objective 500.0 ms",
            "failure rate 0.58 over its limit 0.10 (58 of 100 calls)",
        ]
    "#]]
    .assert_debug_eq(&reasons);
}

#[test]
fn a_failed_plugin_is_neither_shed_nor_restored() {
    let mut h = Harness::new(scaler(plugins()));
    let failed = PluginEvent {
        at: Timestamp::from_secs(0),
        plugin: "discord".into(),
        kind: PluginEventKind::StateChanged {
            from: PluginState::Enabled { level: level(0) },
            to: PluginState::Failed {
                reason: "crashed".into(),
            },
            reason: "crashed".into(),
            by_host: false,
        },
    };
    h.scaler.handle_plugin_event(failed.at, &failed);
    h.memory(1, 2, 1, 0.9);
    assert_eq!(h.decisions[0].plugin.as_deref(), Some("voice"));
}

#[test]
fn pinning_a_failed_plugin_on_enables_a_fresh_instance() {
    // The plugin was placed on when it failed; a pin on at the same level used to change
    // nothing, so the operator's `enable` answered 200 and the plugin stayed failed.
    let mut h = Harness::new(scaler(plugins()));
    let failed = PluginEvent {
        at: Timestamp::from_secs(0),
        plugin: "discord".into(),
        kind: PluginEventKind::StateChanged {
            from: PluginState::Enabled { level: level(0) },
            to: PluginState::Failed {
                reason: "crashed".into(),
            },
            reason: "crashed".into(),
            by_host: false,
        },
    };
    h.scaler.handle_plugin_event(failed.at, &failed);
    for secs in [1, 2] {
        h.scaler
            .pin(
                Timestamp::from_secs(secs),
                "discord",
                PinTarget::On { level: level(0) },
                None,
            )
            .unwrap();
        h.drain();
    }
    expect![[r#"
        enable discord 0
        enable discord 0
    "#]]
    .assert_eq(&h.command_lines());
    // Once it runs again, the same pin changes nothing.
    let enabled = PluginEvent {
        at: Timestamp::from_secs(3),
        plugin: "discord".into(),
        kind: PluginEventKind::StateChanged {
            from: PluginState::Failed {
                reason: "crashed".into(),
            },
            to: PluginState::Enabled { level: level(0) },
            reason: "operator pinned it on at level 0".into(),
            by_host: false,
        },
    };
    h.scaler.handle_plugin_event(enabled.at, &enabled);
    h.scaler
        .pin(
            Timestamp::from_secs(4),
            "discord",
            PinTarget::On { level: level(0) },
            None,
        )
        .unwrap();
    h.drain();
    assert_eq!(h.command_lines().lines().count(), 2);
}

#[test]
fn a_tier_change_swaps_thresholds_and_bad_profiles_are_refused() {
    let mut h = Harness::new(scaler(plugins()));
    h.memory(0, 1, 1, 0.75);
    let shed_count = |h: &Harness| {
        h.decisions
            .iter()
            .filter(|d| d.kind == ballast_core::decision::DecisionKind::Shed)
            .count()
    };
    assert_eq!(shed_count(&h), 0);
    let mut profile = ThresholdProfile::default();
    profile.default.shed = 0.7;
    profile.default.restore = 0.5;
    profile.resources.clear();
    h.scaler.set_profile(profile.clone()).unwrap();
    h.memory(40, 41, 1, 0.75);
    assert_eq!(shed_count(&h), 1);
    profile.default.restore = 0.9;
    assert!(matches!(
        h.scaler.set_profile(profile),
        Err(ScalerError::Config(_))
    ));
}

#[test]
fn going_from_observe_to_enforce_starts_from_the_reported_states() {
    let config = ScalerConfig {
        mode: Mode::Observe,
        ..ScalerConfig::default()
    };
    let mut h = Harness::new(Scaler::new(config, plugins()).unwrap());
    h.memory(0, 100, 10, 0.9);
    assert!(h.commands.is_empty());
    h.scaler.set_mode(Mode::Enforce);
    assert!(
        h.scaler
            .plugins()
            .iter()
            .all(|p| p.placement == ballast_scaler::Placement::On { level: level(0) })
    );
    h.memory(100, 101, 1, 0.9);
    expect![[r#"
        disable discord
    "#]]
    .assert_eq(&h.command_lines());
}

#[test]
fn a_restore_counts_the_memory_a_plugin_was_seen_to_use_not_only_what_it_declared() {
    let mut config = ScalerConfig::default();
    config.machine.memory_bytes = Some(1000);
    // voice declares 10 bytes at level 0 and 5 at level 1, but uses 300 at level 0.
    let mut voice = spec("voice", 20, 2);
    voice.hints.levels = vec![
        LevelHints {
            memory_min_bytes: 10,
            memory_preferred_bytes: 10,
            gpu_memory_bytes: 0,
        },
        LevelHints {
            memory_min_bytes: 5,
            memory_preferred_bytes: 5,
            gpu_memory_bytes: 0,
        },
    ];
    let mut h = Harness::new(Scaler::new(config, vec![voice]).unwrap());
    let event = |secs: u64, kind: PluginEventKind| PluginEvent {
        at: Timestamp::from_secs(secs),
        plugin: "voice".into(),
        kind,
    };
    let enabled = |secs: u64, n: u32| {
        event(
            secs,
            PluginEventKind::StateChanged {
                from: PluginState::Loaded,
                to: PluginState::Enabled { level: level(n) },
                reason: "test".into(),
                by_host: false,
            },
        )
    };
    let uses = |secs: u64, bytes: u64| {
        event(
            secs,
            PluginEventKind::Stats(PluginStats {
                live_bytes: bytes,
                ..PluginStats::default()
            }),
        )
    };
    for e in [enabled(0, 0), uses(0, 280), uses(1, 300), uses(2, 290)] {
        h.scaler.handle_plugin_event(e.at, &e);
    }
    // Its own 0.30 pushes memory over shed: it goes down to level 1 and memory falls to 0.55.
    h.memory(3, 4, 1, 0.85);
    for e in [enabled(4, 1), uses(5, 20)] {
        h.scaler.handle_plugin_event(e.at, &e);
    }
    // At 0.55, bringing back 0.30 - 0.02 would reach 0.83: held, although it declared 0.01.
    h.memory(5, 1000, 10, 0.55);
    // At 0.45 the observed 0.28 fits (0.73 < 0.80): restored.
    h.memory(1000, 1400, 10, 0.45);
    expect![[r#"
        3s shed voice (level 0 -> 1) [high_pressure]
        305s warn voice [preflight_failed]
        1000s restore voice (level 1 -> 0) [stabilized]
    "#]]
    .assert_eq(&h.timeline());
}

#[test]
fn a_soft_limit_from_the_margin_never_falls_under_restore_and_holds_restores() {
    // shed 0.20 - margin 0.10 would put the soft limit at 0.10, under restore 0.15: pressure at
    // 0.12 would then count as soft, never calm, and nothing would ever be restored.
    let mut config = ScalerConfig::default();
    config.thresholds.resources.insert(
        Resource::Memory,
        ballast_core::policy::Thresholds {
            shed: 0.20,
            restore: 0.15,
            emergency: None,
        },
    );
    config.concurrency.enabled = false;
    let mut h = Harness::new(Scaler::new(config, vec![spec("discord", 10, 1)]).unwrap());
    h.memory(0, 1, 1, 0.25);
    h.memory(1, 400, 10, 0.12);
    expect![[r#"
        0s shed discord (disable) [high_pressure]
        301s restore discord (enable at level 0) [stabilized]
    "#]]
    .assert_eq(&h.timeline());
}

/// A plugin whose process can be stopped (a process plugin with `can_suspend`).
fn suspendable(name: &str, priority: i32) -> ballast_core::PluginSpec {
    let mut s = spec(name, priority, 1);
    s.can_suspend = true;
    s
}

#[test]
fn cpu_pressure_suspends_a_suspendable_plugin_and_memory_pressure_disables_it() {
    let mut h = Harness::new(scaler(vec![
        suspendable("indexer", 10),
        spec("voice", 20, 1),
    ]));
    for t in 0..40 {
        h.feed(&assessment(
            t,
            &[(Resource::Cpu, 0.9), (Resource::Memory, 0.5)],
        ));
    }
    // CPU: a stopped process uses none, and comes back at once with its state.
    expect![[r#"
        0s shed indexer (suspend) [high_pressure]
        30s shed voice (disable) [high_pressure]
    "#]]
    .assert_eq(&h.timeline());

    let mut h = Harness::new(scaler(vec![
        suspendable("indexer", 10),
        spec("voice", 20, 1),
    ]));
    h.memory(0, 40, 1, 0.9);
    // Memory: a stopped process keeps all of it, so only disabling helps.
    expect![[r#"
        0s shed indexer (disable) [high_pressure]
        30s shed voice (disable) [high_pressure]
    "#]]
    .assert_eq(&h.timeline());
}

#[test]
fn a_suspended_plugin_is_disabled_first_when_memory_runs_hot() {
    let mut h = Harness::new(scaler(vec![
        spec("discord", 5, 1),
        suspendable("indexer", 10),
        spec("voice", 20, 1),
    ]));
    h.feed(&assessment(0, &[(Resource::Cpu, 0.5)]));
    h.scaler
        .pin(
            Timestamp::from_secs(0),
            "discord",
            PinTarget::On { level: level(0) },
            None,
        )
        .unwrap();
    for t in 1..40 {
        h.feed(&assessment(
            t,
            &[(Resource::Cpu, 0.9), (Resource::Memory, 0.5)],
        ));
    }
    // Then memory: the suspended indexer serves nobody but holds its memory; it goes before
    // voice, which still serves.
    for t in 40..80 {
        h.feed(&assessment(
            t,
            &[(Resource::Cpu, 0.5), (Resource::Memory, 0.9)],
        ));
    }
    expect![[r#"
        0s override discord [pinned]
        1s shed indexer (suspend) [high_pressure]
        31s shed voice (disable) [high_pressure]
        61s shed indexer (disable) [high_pressure]
    "#]]
    .assert_eq(&h.timeline());
    let reason = &h.decisions[3].reason;
    assert!(
        reason.ends_with("it was suspended, which keeps its memory"),
        "{reason}"
    );
}

#[test]
fn a_memory_emergency_disables_suspended_plugins_too() {
    let mut h = Harness::new(scaler(vec![
        suspendable("indexer", 10),
        spec("voice", 20, 1),
    ]));
    for t in 0..5 {
        h.feed(&assessment(
            t,
            &[(Resource::Cpu, 0.9), (Resource::Memory, 0.5)],
        ));
    }
    h.feed(&assessment(
        5,
        &[(Resource::Cpu, 0.5), (Resource::Memory, 0.97)],
    ));
    expect![[r#"
        0s shed indexer (suspend) [high_pressure]
        5s shed indexer (disable) [emergency]
        5s shed voice (disable) [emergency]
    "#]]
    .assert_eq(&h.timeline());
}

#[test]
fn resuming_counts_only_cpu_because_a_suspended_plugin_still_holds_its_memory() {
    let mut config = ScalerConfig::default();
    config.machine.memory_bytes = Some(1000);
    config.machine.cpu_cores = Some(4.0);
    let mut indexer = suspendable("indexer", 10);
    indexer.hints.levels = vec![LevelHints {
        memory_min_bytes: 300,
        memory_preferred_bytes: 300,
        gpu_memory_bytes: 0,
    }];
    indexer.hints.cpu_share = 0.4;
    let mut h = Harness::new(Scaler::new(config, vec![indexer]).unwrap());
    h.feed(&assessment(
        0,
        &[(Resource::Cpu, 0.9), (Resource::Memory, 0.6)],
    ));
    // Calm, with memory at 0.6: enabling would add 0.3 (0.9, over shed), resuming adds none.
    for t in (1..400).step_by(10) {
        h.feed(&assessment(
            t,
            &[(Resource::Cpu, 0.3), (Resource::Memory, 0.6)],
        ));
    }
    expect![[r#"
        0s shed indexer (suspend) [high_pressure]
        301s restore indexer (resume) [stabilized]
    "#]]
    .assert_eq(&h.timeline());
    let reason = &h.decisions[1].reason;
    // Memory is the resource closest to its restore threshold, and resuming adds none.
    assert!(reason.ends_with("memory 0.60 -> 0.60 after it"), "{reason}");
}

/// The host's report that it disabled `plugin` on its own, at its hard memory limit.
fn shed_by_host(h: &mut Harness, plugin: &str, secs: u64) {
    h.scaler.handle_plugin_event(
        Timestamp::from_secs(secs),
        &PluginEvent {
            at: Timestamp::from_secs(secs),
            plugin: plugin.into(),
            kind: PluginEventKind::StateChanged {
                from: PluginState::Draining,
                to: PluginState::Disabled,
                reason: "memory 600.0 MiB reached its hard limit 512.0 MiB: shed by the host"
                    .into(),
                by_host: true,
            },
        },
    );
}

#[test]
fn a_plugin_the_host_shed_on_its_own_is_restored_like_one_the_scaler_shed() {
    let mut h = Harness::new(scaler(vec![spec("indexer", 10, 1), spec("voice", 20, 1)]));
    h.memory(0, 10, 1, 0.3);
    // The host shed it (a hard memory limit): the scaler sees it off ...
    shed_by_host(&mut h, "indexer", 10);
    assert_eq!(
        h.scaler.placement("indexer"),
        Some(ballast_scaler::Placement::Off {
            suspended: false,
            level: level(0)
        })
    );
    // ... and brings it back a stabilization period after that, as any shed plugin.
    h.memory(10, 400, 10, 0.3);
    expect![[r#"
        310s restore indexer (enable at level 0) [stabilized]
    "#]]
    .assert_eq(&h.timeline());
}

#[test]
fn a_plugin_the_host_keeps_shedding_waits_longer_each_time() {
    let mut h = Harness::new(scaler(vec![spec("indexer", 10, 1), spec("voice", 20, 1)]));
    h.memory(0, 10, 1, 0.3);
    let host_shed = |h: &mut Harness, secs| shed_by_host(h, "indexer", secs);
    // It leaks to its hard limit ten minutes after each restore, long after the 5 min
    // stabilization: each breach still doubles the wait before the next restore.
    host_shed(&mut h, 10);
    h.memory(10, 910, 10, 0.3);
    host_shed(&mut h, 910);
    h.memory(910, 2110, 10, 0.3);
    host_shed(&mut h, 2110);
    h.memory(2110, 3900, 10, 0.3);
    expect![[r#"
        310s restore indexer (enable at level 0) [stabilized]
        1510s restore indexer (enable at level 0) [stabilized]
        3310s restore indexer (enable at level 0) [stabilized]
    "#]]
    .assert_eq(&h.timeline());
    assert_eq!(h.scaler.plugins()[0].flaps, 2);
    // A restore that then holds for longer than the backoff cap (1 h) clears the count.
    h.memory(3900, 7000, 10, 0.3);
    host_shed(&mut h, 7000);
    assert_eq!(h.scaler.plugins()[0].flaps, 0);
}

#[test]
fn the_late_result_of_its_own_disable_does_not_undo_a_newer_enable() {
    let mut h = Harness::new(scaler(vec![spec("faulty", 10, 1)]));
    h.memory(0, 10, 1, 0.3);
    let pin = |h: &mut Harness, secs, target| {
        h.scaler
            .pin(Timestamp::from_secs(secs), "faulty", target, None)
            .unwrap();
        h.drain();
        h.decisions.last().map(|d| d.action.clone())
    };
    // The operator disables it, then enables it before the host's report of the disable
    // reaches the scaler.
    assert_eq!(pin(&mut h, 10, PinTarget::Off), Some(Action::Disable));
    assert_eq!(
        pin(&mut h, 11, PinTarget::On { level: level(0) }),
        Some(Action::Enable { level: level(0) })
    );
    let disabled = PluginEvent {
        at: Timestamp::from_secs(10),
        plugin: "faulty".into(),
        kind: PluginEventKind::StateChanged {
            from: PluginState::Draining,
            to: PluginState::Disabled,
            reason: "operator pinned it off".into(),
            by_host: false,
        },
    };
    h.scaler
        .handle_plugin_event(Timestamp::from_secs(12), &disabled);
    assert_eq!(
        h.scaler.placement("faulty"),
        Some(ballast_scaler::Placement::On { level: level(0) })
    );
    // So the next disable is one.
    assert_eq!(pin(&mut h, 13, PinTarget::Off), Some(Action::Disable));
}

#[test]
fn the_preflight_counts_what_a_process_was_measured_using_when_it_exceeds_the_declaration() {
    let mut config = ScalerConfig::default();
    config.machine.memory_bytes = Some(1000);
    // Declares 10 bytes; its process was measured at 400.
    let mut bot = spec("bot", 10, 1);
    bot.hints.levels = vec![LevelHints {
        memory_min_bytes: 10,
        memory_preferred_bytes: 10,
        gpu_memory_bytes: 0,
    }];
    let mut h = Harness::new(Scaler::new(config, vec![bot]).unwrap());
    h.memory(0, 1, 1, 0.3);
    h.scaler.handle_plugin_event(
        Timestamp::from_secs(1),
        &PluginEvent {
            at: Timestamp::from_secs(1),
            plugin: "bot".into(),
            kind: PluginEventKind::Stats(PluginStats {
                process: Some(ballast_core::ProcessUsage {
                    rss_bytes: 400,
                    cpu_cores: 0.25,
                    ..Default::default()
                }),
                ..PluginStats::default()
            }),
        },
    );
    assert_eq!(h.scaler.plugins()[0].measured, Some((400, 0.25)));
    h.memory(1, 2, 1, 0.9);
    // 0.5 + 0.4 measured would reach the shed threshold; 0.5 + 0.01 declared would not.
    h.memory(2, 1000, 10, 0.5);
    h.memory(1000, 1400, 10, 0.3);
    expect![[r#"
        1s shed bot (disable) [high_pressure]
        302s warn bot [preflight_failed]
        1000s restore bot (enable at level 0) [stabilized]
    "#]]
    .assert_eq(&h.timeline());
}

#[test]
fn a_reading_over_shed_counts_at_once_when_the_smoothed_value_confirms_the_rise() {
    let reading = |secs, value: f64, smoothed: f64| {
        let mut a = assessment(secs, &[(Resource::Memory, smoothed)]);
        a.resources[0].value = value;
        a
    };
    let mut h = Harness::new(scaler(vec![spec("discord", 10, 1), spec("voice", 20, 1)]));
    h.memory(0, 10, 1, 0.3);
    // A lone spike over shed from a calm level: the smoothed value (0.3 + 0.7 x 0.52 = 0.66
    // with the default weight) stays under the soft limit (0.70), so the reading alone moves
    // nothing.
    h.feed(&reading(10, 0.82, 0.66));
    h.memory(11, 20, 1, 0.3);
    assert!(h.decisions.is_empty(), "{}", h.timeline());
    // A climb under way: the smoothed value (0.75) is past the soft limit but not yet at shed
    // (0.80); the reading (0.86) is, and the shed comes on this tick, not the next.
    h.feed(&reading(20, 0.72, 0.60));
    h.feed(&reading(21, 0.86, 0.75));
    expect![[r#"
        21s shed discord (disable) [high_pressure]
    "#]]
    .assert_eq(&h.timeline());
    expect![[r#"memory pressure 0.86 reached shed 0.80 (the reading itself: smoothed 0.75 confirms the rise past the soft limit 0.70)"#]]
    .assert_eq(&h.decisions[0].reason);
}

#[test]
fn a_plugin_in_its_flap_back_off_does_not_hold_the_restores_behind_it() {
    // a (priority 30) is shed while b (priority 20) is pinned on, and restored at 310 s.
    let mut h = Harness::new(scaler(vec![spec("b", 20, 1), spec("a", 30, 1)]));
    h.scaler
        .pin(
            Timestamp::from_secs(0),
            "b",
            PinTarget::On { level: level(0) },
            None,
        )
        .unwrap();
    h.memory(0, 10, 5, 0.9);
    h.memory(10, 320, 10, 0.3);
    // Then one pressure sheds b and, 40 s after its restore, a again: a flap, so a waits 10 min
    // of calm before its next restore.
    h.scaler.release(Timestamp::from_secs(320), "b").unwrap();
    h.memory(320, 360, 10, 0.9);
    // Calm from 360 s: after the 5 min stabilization b comes back although a, ahead of it in
    // priority, still waits out its back-off; a comes back when that ends, 10 min after 360 s.
    h.memory(360, 670, 10, 0.3);
    assert_eq!(
        h.scaler.poll_timeout(),
        Some(Timestamp::from_secs(960)),
        "a's own timer: {}",
        h.timeline()
    );
    h.memory(670, 1000, 10, 0.3);
    expect![[r#"
        0s override b [pinned]
        0s shed a (disable) [high_pressure]
        310s restore a (enable at level 0) [stabilized]
        320s override b [released]
        320s shed b (disable) [high_pressure]
        350s shed a (disable) [high_pressure]
        660s restore b (enable at level 0) [stabilized]
        960s restore a (enable at level 0) [stabilized]
    "#]]
    .assert_eq(&h.timeline());
    // The decision says who went later and why.
    expect!["every resource below its restore threshold for 5m (needs 5m); memory 0.30 -> 0.30 after it; a goes later: still in its back-off after 1 flap (5m left of 10m)"]
        .assert_eq(&h.decisions[6].reason);
}

#[test]
fn resources_it_does_not_act_on_are_watched_not_shed_for() {
    let over = |h: &mut Harness| {
        for secs in 0..60 {
            h.feed(&assessment(
                secs,
                &[(Resource::Disk, 0.99), (Resource::Memory, 0.3)],
            ));
        }
    };
    let config = ScalerConfig {
        acted_on: Some(vec![Resource::Memory, Resource::Cpu]),
        ..ScalerConfig::default()
    };
    let mut h = Harness::new(Scaler::new(config, plugins()).unwrap());
    over(&mut h);
    assert_eq!(h.timeline(), "", "a full disk is not shed for");

    // The same assessments shed when every resource is acted on.
    let mut h = Harness::new(scaler(plugins()));
    over(&mut h);
    assert!(
        h.timeline()
            .starts_with("0s shed discord (disable) [high_pressure]"),
        "{}",
        h.timeline()
    );
}
