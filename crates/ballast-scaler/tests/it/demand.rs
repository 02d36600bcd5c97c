//! The demand half of the policy on virtual time: idle unloads after `keep_alive`, wakes by a
//! call, room made by priority, the answer when there is none, and the pre-flight question.

use std::time::Duration;

use ballast_core::decision::{Action, DecisionKind, Rule};
use ballast_core::{
    Assessment, LevelHints, PluginEvent, PluginEventKind, PluginSpec, PluginState, PluginStats,
    Resource, ResourceHints, StartMode, Timestamp,
};
use ballast_scaler::{MachineTotals, Placement, Scaler, ScalerConfig, WakeError};
use expect_test::expect;

use crate::support::*;

const GIB: u64 = 1 << 30;

/// A GPU plugin with the given GPU memory per level, in GiB.
fn gpu(name: &str, priority: i32, gib: &[u64]) -> PluginSpec {
    PluginSpec {
        name: name.to_owned(),
        priority,
        hints: ResourceHints {
            levels: gib
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

fn on_demand(mut spec: PluginSpec) -> PluginSpec {
    spec.start = StartMode::OnDemand;
    spec
}

fn with_keep_alive(mut spec: PluginSpec, keep_alive: Duration) -> PluginSpec {
    spec.keep_alive = Some(keep_alive);
    spec
}

/// A machine with 80 GiB of GPU memory and 64 GiB of memory; no concurrency steps in the soft
/// zone, so the timelines show only what the demand half does.
fn machine() -> ScalerConfig {
    let mut config = ScalerConfig {
        machine: MachineTotals {
            memory_bytes: Some(64 * GIB),
            cpu_cores: Some(16.0),
            gpu_memory_bytes: Some(80 * GIB),
        },
        ..ScalerConfig::default()
    };
    config.concurrency.enabled = false;
    config
}

/// GPU memory at `value` (and memory calm) at `secs`.
fn gpu_at(secs: u64, value: f64) -> Assessment {
    assessment(
        secs,
        &[(Resource::GpuMemory, value), (Resource::Memory, 0.2)],
    )
}

fn event(secs: u64, plugin: &str, kind: PluginEventKind) -> PluginEvent {
    PluginEvent {
        at: Timestamp::from_secs(secs),
        plugin: plugin.to_owned(),
        kind,
    }
}

fn state(h: &mut Harness, secs: u64, plugin: &str, from: PluginState, to: PluginState) {
    h.scaler.handle_plugin_event(
        Timestamp::from_secs(secs),
        &event(
            secs,
            plugin,
            PluginEventKind::StateChanged {
                from,
                to,
                reason: "test".into(),
                by_host: false,
            },
        ),
    );
    h.drain();
}

fn enabled(h: &mut Harness, secs: u64, plugin: &str) {
    state(
        h,
        secs,
        plugin,
        PluginState::Loaded,
        PluginState::Enabled { level: level(0) },
    );
}

/// The host's figures for `plugin`: calls in flight and the end of its last call.
fn activity(h: &mut Harness, secs: u64, plugin: &str, in_flight: u32, last_end: Option<u64>) {
    let stats = PluginStats {
        in_flight,
        last_call_end: last_end.map(Timestamp::from_secs),
        ..PluginStats::default()
    };
    h.scaler.handle_plugin_event(
        Timestamp::from_secs(secs),
        &event(secs, plugin, PluginEventKind::Stats(stats)),
    );
    h.drain();
}

fn wake(h: &mut Harness, secs: u64, plugin: &str) -> Result<ballast_scaler::WakeGrant, WakeError> {
    let result = h.scaler.wake(Timestamp::from_secs(secs), plugin);
    h.drain();
    result
}

fn placement(h: &Harness, plugin: &str) -> Placement {
    h.scaler.placement(plugin).unwrap()
}

#[test]
fn an_idle_plugin_is_unloaded_after_its_keep_alive_from_the_end_of_its_last_call() {
    let keep = Duration::from_secs(600);
    let mut h = Harness::new(scaler(vec![
        with_keep_alive(spec("voice", 20, 2), keep),
        spec("android", 10, 1),
    ]));
    enabled(&mut h, 0, "voice");
    // A call from 100 s to 250 s: the keep-alive counts from its end, not its start.
    activity(&mut h, 100, "voice", 1, None);
    activity(&mut h, 250, "voice", 0, Some(250));
    for secs in (0..900).step_by(10) {
        h.feed(&assessment(secs, &[(Resource::Memory, 0.3)]));
    }
    expect![[r#"
        850s unload voice (unload) [keep_alive]
    "#]]
    .assert_eq(&h.timeline());
    assert_eq!(h.decisions[0].reason, "idle for 10m (keep_alive 10m)");
    assert_eq!(
        h.decisions[0].action,
        Action::Unload {
            idle_since: Timestamp::from_secs(250)
        }
    );
    expect![[r#"
        unload voice
    "#]]
    .assert_eq(&h.command_lines());
    // Asked once, not at every evaluation after.
    h.feed(&assessment(900, &[(Resource::Memory, 0.3)]));
    assert_eq!(h.decisions.len(), 1);
    // The host unloads it: idle, not shed, and the restore path leaves it so.
    state(
        &mut h,
        901,
        "voice",
        PluginState::Draining,
        PluginState::Idle,
    );
    assert!(matches!(placement(&h, "voice"), Placement::Off { .. }));
    let voice = h
        .scaler
        .plugins()
        .into_iter()
        .find(|p| p.name == "voice")
        .unwrap();
    assert!(voice.idle);
    for secs in (910..3000).step_by(10) {
        h.feed(&assessment(secs, &[(Resource::Memory, 0.3)]));
    }
    assert_eq!(h.decisions.len(), 1, "{}", h.timeline());
}

#[test]
fn a_plugin_with_a_call_in_flight_is_never_unloaded_for_idleness() {
    let keep = Duration::from_secs(60);
    let mut h = Harness::new(scaler(vec![with_keep_alive(spec("voice", 20, 1), keep)]));
    enabled(&mut h, 0, "voice");
    // A long call: in flight from 10 s on, far past the keep-alive.
    activity(&mut h, 10, "voice", 1, None);
    for secs in (0..600).step_by(5) {
        h.feed(&assessment(secs, &[(Resource::Memory, 0.3)]));
    }
    assert_eq!(h.timeline(), "");
    // It ends at 600 s: unloaded a keep-alive later.
    activity(&mut h, 600, "voice", 0, Some(600));
    for secs in (600..700).step_by(5) {
        h.feed(&assessment(secs, &[(Resource::Memory, 0.3)]));
    }
    expect![[r#"
        660s unload voice (unload) [keep_alive]
    "#]]
    .assert_eq(&h.timeline());
}

#[test]
fn a_call_wakes_an_idle_plugin_at_its_fullest_level_when_it_fits() {
    let mut h = Harness::new(
        Scaler::new(
            machine(),
            vec![
                on_demand(gpu("voice", 30, &[24, 4])),
                gpu("vision", 20, &[16]),
            ],
        )
        .unwrap(),
    );
    h.feed(&gpu_at(0, 0.3));
    assert!(matches!(placement(&h, "voice"), Placement::Off { .. }));
    let grant = wake(&mut h, 1, "voice").unwrap();
    assert_eq!(grant.level, level(0));
    assert!(grant.made_room.is_empty());
    expect![[r#"
        1s wake voice (enable at level 0) [on_demand]
    "#]]
    .assert_eq(&h.timeline());
    assert_eq!(
        h.decisions[0].reason,
        "a call woke it: needs 24 GiB of GPU memory at level 0"
    );
    expect![[r#"
        enable voice 0
    "#]]
    .assert_eq(&h.command_lines());
    // A second call while it comes up: nothing more to do.
    let again = wake(&mut h, 2, "voice").unwrap();
    assert!(again.already_on);
    assert_eq!(h.decisions.len(), 1);
}

#[test]
fn room_is_made_by_priority_idle_ones_first_then_a_level_at_a_time_exactly_far_enough() {
    let mut h = Harness::new(
        Scaler::new(
            machine(),
            vec![
                on_demand(gpu("voice", 30, &[24, 4])),
                gpu("vision", 20, &[16]),
                gpu("llm", 10, &[20, 8]),
                gpu("tts", 5, &[2, 1]),
            ],
        )
        .unwrap(),
    );
    for plugin in ["vision", "llm", "tts"] {
        enabled(&mut h, 0, plugin);
    }
    // llm and tts are serving calls, vision is not.
    activity(&mut h, 0, "llm", 2, None);
    activity(&mut h, 0, "tts", 1, None);
    activity(&mut h, 0, "vision", 0, None);
    // 57.6 of 80 GiB in use: 6.4 GiB free under the shed threshold 0.80, voice needs 24.
    h.feed(&gpu_at(1, 0.72));
    let grant = wake(&mut h, 2, "voice").unwrap();
    assert_eq!(grant.level, level(0));
    assert_eq!(grant.made_room, ["vision", "tts"]);
    // vision (idle) off at once frees 16 GiB: 0.72 + 0.30 - 0.20 = 0.82 is still over 0.80.
    // Then those serving, lowest priority first, a level at a time: tts 2 -> 1 GiB leaves it
    // 0.0075 over, tts off fits. llm (priority 10) is left alone: nothing more is taken.
    expect![[r#"
        1s warn [soft_limit]
        2s shed vision (disable) [make_room]
        2s shed tts (level 0 -> 1) [make_room]
        2s shed tts (disable) [make_room]
        2s wake voice (enable at level 0) [on_demand]
    "#]]
    .assert_eq(&h.timeline());
    let reason = |rule: Rule| {
        h.decisions
            .iter()
            .find(|d| d.rule == rule)
            .map(|d| d.reason.clone())
            .unwrap()
    };
    assert_eq!(
        reason(Rule::MakeRoom),
        "to make room for voice (needs 24 GiB of GPU memory at level 0)"
    );
    assert_eq!(
        reason(Rule::OnDemand),
        "a call woke it: needs 24 GiB of GPU memory at level 0, room made by taking down vision, tts"
    );
    expect![[r#"
        disable vision
        set_level tts 1
        disable tts
        enable voice 0
    "#]]
    .assert_eq(&h.command_lines());
    assert!(
        h.decisions
            .iter()
            .filter(|d| d.kind != DecisionKind::Warn)
            .all(|d| d.applied)
    );
}

#[test]
fn without_room_a_smaller_level_is_tried_then_the_answer_says_what_was_needed() {
    // 60.8 of 80 GiB in use: 3.2 GiB free; the lower-priority plugins hold 4 + 2 GiB.
    let plugins = |voice_small: u64| {
        vec![
            on_demand(gpu("voice", 30, &[24, voice_small])),
            gpu("vision", 20, &[4]),
            gpu("tts", 10, &[2]),
        ]
    };
    let start = |voice_small: u64| {
        let mut h = Harness::new(Scaler::new(machine(), plugins(voice_small)).unwrap());
        for plugin in ["vision", "tts"] {
            enabled(&mut h, 0, plugin);
            activity(&mut h, 0, plugin, 0, None);
        }
        h.feed(&gpu_at(1, 0.76));
        h
    };

    // Its small model (4 GiB) fits once one idle plugin is off: tts, the lowest priority.
    let mut h = start(4);
    let grant = wake(&mut h, 2, "voice").unwrap();
    assert_eq!(grant.level, level(1));
    expect![[r#"
        1s warn [soft_limit]
        2s shed tts (disable) [make_room]
        2s wake voice (enable at level 1) [on_demand]
    "#]]
    .assert_eq(&h.timeline());

    // Even its small model (12 GiB) does not fit with everything lower taken down.
    let mut h = start(12);
    let Err(WakeError::NoRoom(no_room)) = wake(&mut h, 2, "voice") else {
        panic!("voice woke: {}", h.timeline());
    };
    assert_eq!(
        no_room.to_string(),
        "voice needs 24 GiB of GPU memory at level 0; 3.2 GiB is free and lower-priority plugins hold 6 GiB"
    );
    // Nothing was taken down for nothing; the refusal is in the log.
    expect![[r#"
        1s warn [soft_limit]
        2s warn voice [no_room]
    "#]]
    .assert_eq(&h.timeline());
    assert_eq!(h.command_lines(), "");
    assert!(matches!(placement(&h, "vision"), Placement::On { .. }));
    assert!(matches!(placement(&h, "tts"), Placement::On { .. }));
}

#[test]
fn room_is_never_made_from_equal_or_higher_priority_essential_or_pinned_plugins() {
    let mut essential_tts = gpu("tts", 5, &[10]);
    essential_tts.essential = true;
    let mut h = Harness::new(
        Scaler::new(
            machine(),
            vec![
                on_demand(gpu("voice", 30, &[24])),
                gpu("llm", 30, &[20]),
                gpu("vision", 40, &[16]),
                essential_tts,
                gpu("ocr", 10, &[8]),
            ],
        )
        .unwrap(),
    );
    for plugin in ["llm", "vision", "tts", "ocr"] {
        enabled(&mut h, 0, plugin);
        activity(&mut h, 0, plugin, 0, None);
    }
    h.scaler
        .pin(
            Timestamp::from_secs(0),
            "ocr",
            ballast_scaler::PinTarget::On { level: level(0) },
            None,
        )
        .unwrap();
    h.drain();
    h.feed(&gpu_at(1, 0.75));
    let decisions_before = h.decisions.len();
    let Err(WakeError::NoRoom(no_room)) = wake(&mut h, 2, "voice") else {
        panic!("voice woke: {}", h.timeline());
    };
    // Nothing below voice may be taken down: not llm (equal), vision (higher), tts
    // (essential) or ocr (pinned).
    assert_eq!(no_room.held_below, 0.0);
    assert_eq!(h.decisions.len(), decisions_before + 1);
    assert_eq!(h.decisions.last().unwrap().rule, Rule::NoRoom);
}

#[test]
fn a_plugin_shed_for_pressure_is_not_woken_by_a_call() {
    let mut h = Harness::new(scaler(plugins()));
    h.memory(0, 10, 1, 0.5);
    h.memory(10, 20, 1, 0.9);
    assert!(matches!(placement(&h, "discord"), Placement::Off { .. }));
    let error = wake(&mut h, 21, "discord").unwrap_err();
    assert_eq!(
        error.to_string(),
        "plugin `discord` is not idle: it is shed for pressure"
    );
}

#[test]
fn plugins_taken_down_for_room_come_back_by_the_ordinary_restore_once_it_fits() {
    let mut h = Harness::new(
        Scaler::new(
            machine(),
            vec![
                with_keep_alive(on_demand(gpu("voice", 30, &[24])), Duration::from_secs(60)),
                gpu("vision", 20, &[16]),
            ],
        )
        .unwrap(),
    );
    enabled(&mut h, 0, "vision");
    activity(&mut h, 0, "vision", 0, None);
    // Calm (under the restore threshold), but 16 GiB short of room for voice's 24.
    h.feed(&gpu_at(1, 0.62));
    wake(&mut h, 2, "voice").unwrap();
    enabled(&mut h, 3, "voice");
    // voice serves a call, then nothing: a minute later it is unloaded, GPU memory falls.
    activity(&mut h, 10, "voice", 0, Some(10));
    for secs in (10..80).step_by(5) {
        h.feed(&gpu_at(secs, 0.60));
    }
    state(
        &mut h,
        80,
        "voice",
        PluginState::Draining,
        PluginState::Idle,
    );
    for secs in (80..1200).step_by(10) {
        h.feed(&gpu_at(secs, 0.35));
    }
    let kinds: Vec<(DecisionKind, Option<String>)> = h
        .decisions
        .iter()
        .map(|d| (d.kind, d.plugin.clone()))
        .collect();
    assert_eq!(
        kinds,
        [
            (DecisionKind::Shed, Some("vision".into())),
            (DecisionKind::Wake, Some("voice".into())),
            (DecisionKind::Unload, Some("voice".into())),
            (DecisionKind::Restore, Some("vision".into())),
        ],
        "{}",
        h.timeline()
    );
    assert_eq!(h.decisions[3].rule, Rule::Stabilized);
    assert!(matches!(placement(&h, "vision"), Placement::On { .. }));
    assert!(matches!(placement(&h, "voice"), Placement::Off { .. }));
}

#[test]
fn measured_gpu_memory_counts_when_more_than_declared() {
    let mut h = Harness::new(
        Scaler::new(
            machine(),
            vec![
                gpu("voice", 30, &[8, 4]),
                on_demand(gpu("vision", 20, &[16])),
            ],
        )
        .unwrap(),
    );
    enabled(&mut h, 0, "voice");
    // voice declares 8 GiB but holds 40.
    h.scaler
        .handle_gpu_usage(Timestamp::from_secs(1), &[("voice".into(), 40 * GIB)]);
    let preflight = h.scaler.preflight("voice", Some(level(0))).unwrap();
    assert!(preflight.resources.is_empty(), "no assessment yet");
    h.feed(&gpu_at(2, 0.6));
    // Its pre-flight at level 0 counts the 40 GiB measured there (0.5), not the 8 declared.
    let voice = h.scaler.preflight("voice", Some(level(0))).unwrap();
    let gpu_need = voice
        .resources
        .iter()
        .find(|r| r.resource == Resource::GpuMemory)
        .unwrap();
    assert_eq!(
        gpu_need.need, 0.0,
        "it runs there already: nothing is added"
    );
    assert_eq!(gpu_need.declared, Some((8 * GIB) as f64));
    assert_eq!(gpu_need.measured, Some((40 * GIB) as f64));
    // Taken down a level and back: the way up needs what it was seen holding.
    h.scaler
        .pin(
            Timestamp::from_secs(3),
            "voice",
            ballast_scaler::PinTarget::On { level: level(1) },
            None,
        )
        .unwrap();
    h.drain();
    let up = h.scaler.preflight("voice", Some(level(0))).unwrap();
    let gpu_need = up
        .resources
        .iter()
        .find(|r| r.resource == Resource::GpuMemory)
        .unwrap();
    assert!((gpu_need.need - (40.0 - 4.0) / 80.0).abs() < 1e-9, "{up:?}");
    assert!(!up.fits, "0.6 + 0.45 is over the shed threshold");
}

#[test]
fn preflight_says_what_a_wake_would_take_down_and_changes_nothing() {
    let mut h = Harness::new(
        Scaler::new(
            machine(),
            vec![on_demand(gpu("voice", 30, &[24])), gpu("vision", 20, &[16])],
        )
        .unwrap(),
    );
    enabled(&mut h, 0, "vision");
    activity(&mut h, 0, "vision", 0, None);
    h.feed(&gpu_at(1, 0.70));
    let before = h.decisions.len();
    let preflight = h.scaler.preflight("voice", None).unwrap();
    assert_eq!(preflight.level, level(0));
    assert!(!preflight.fits);
    assert!(preflight.fits_with_room);
    assert_eq!(preflight.would_take_down.len(), 1);
    assert_eq!(preflight.would_take_down[0].plugin, "vision");
    assert_eq!(preflight.would_take_down[0].action, Action::Disable);
    let gpu_need = preflight
        .resources
        .iter()
        .find(|r| r.resource == Resource::GpuMemory)
        .unwrap();
    assert!((gpu_need.need - 0.3).abs() < 1e-9);
    assert!((gpu_need.headroom - 0.1).abs() < 1e-9);
    h.drain();
    assert_eq!(h.decisions.len(), before, "a pre-flight decides nothing");
    assert!(matches!(placement(&h, "vision"), Placement::On { .. }));
}

#[test]
fn wake_check_answers_what_a_call_would_meet_and_changes_nothing() {
    // Fits at once: voice would be woken at its fullest level.
    let mut h = Harness::new(
        Scaler::new(
            machine(),
            vec![
                on_demand(gpu("voice", 30, &[24, 12])),
                gpu("vision", 20, &[4]),
                gpu("tts", 10, &[2]),
            ],
        )
        .unwrap(),
    );
    for plugin in ["vision", "tts"] {
        enabled(&mut h, 0, plugin);
        activity(&mut h, 0, plugin, 0, None);
    }
    h.feed(&gpu_at(1, 0.3));
    assert_eq!(h.scaler.wake_check("voice"), Ok(level(0)));
    // A running plugin is served at its level.
    assert_eq!(h.scaler.wake_check("vision"), Ok(level(0)));
    assert!(matches!(
        h.scaler.wake_check("nobody"),
        Err(WakeError::UnknownPlugin(_))
    ));

    // 3.2 GiB free and 6 GiB below it: not even its small model fits, and the check says so
    // without recording a refusal or taking anything down.
    h.feed(&gpu_at(2, 0.76));
    let decisions_before = h.decisions.len();
    let Err(WakeError::NoRoom(no_room)) = h.scaler.wake_check("voice") else {
        panic!("voice would wake: {}", h.timeline());
    };
    assert_eq!(no_room.plugin, "voice");
    assert_eq!(h.decisions.len(), decisions_before);
    assert_eq!(h.command_lines(), "");
    assert!(matches!(placement(&h, "voice"), Placement::Off { .. }));
    // The wake itself gives the same answer, and records it.
    assert_eq!(
        wake(&mut h, 3, "voice"),
        Err(WakeError::NoRoom(no_room.clone()))
    );
    assert_eq!(h.decisions.last().unwrap().rule, Rule::NoRoom);
}

#[test]
fn a_plugin_shed_for_pressure_is_shed_and_not_ready_an_idle_one_is_neither() {
    let mut h = Harness::new(scaler(vec![
        on_demand(spec("clock", 40, 1)),
        spec("discord", 10, 1),
        essential("stubs", 100),
    ]));
    assert_eq!(h.scaler.assessed_at(), None);
    h.memory(0, 10, 1, 0.5);
    assert_eq!(h.scaler.assessed_at(), Some(Timestamp::from_secs(9)));
    h.memory(10, 20, 1, 0.9);
    let status = |h: &Harness, name: &str| {
        h.scaler
            .plugins()
            .into_iter()
            .find(|p| p.name == name)
            .unwrap()
    };
    assert!(status(&h, "discord").shed);
    assert!(matches!(
        h.scaler.wake_check("discord"),
        Err(WakeError::NotIdle { .. })
    ));
    // Idle is not shed, and a call would wake it if it fits (it declares nothing).
    assert!(!status(&h, "clock").shed);
    assert!(status(&h, "clock").idle);
    assert_eq!(h.scaler.wake_check("clock"), Ok(level(0)));
    assert!(!status(&h, "stubs").shed);
    // Pinned off by the operator: off, but not shed.
    h.scaler
        .pin(
            Timestamp::from_secs(21),
            "stubs",
            ballast_scaler::PinTarget::Off,
            None,
        )
        .unwrap();
    h.drain();
    assert!(!status(&h, "stubs").shed);
    let thresholds = h.scaler.thresholds();
    let memory = thresholds
        .iter()
        .find(|(r, _)| *r == Resource::Memory)
        .unwrap();
    assert_eq!(memory.1.shed, 0.80);
}
