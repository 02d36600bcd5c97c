//! Loaded -> Enabled(level) -> Draining -> Disabled, idempotence, levels, checkpoints.

use ballast_core::Level;
use ballast_core::plugin::{PluginEventKind, PluginState};
use ballast_host::{CallError, PluginConfig};

use crate::support::{clock_plugin, host, rust_plugin};

fn answer(bytes: &[u8]) -> serde_json::Value {
    serde_json::from_slice(bytes).expect("plugins answer JSON")
}

#[test]
fn enable_call_lower_level_disable_and_restore_keeps_state() {
    let (host, events) = host();
    let info = host.load(rust_plugin("voice")).unwrap();
    assert_eq!(info.levels.len(), 2);
    assert_eq!(host.status("voice").unwrap().state, PluginState::Loaded);

    host.enable("voice", Level::FULL, "start").unwrap();
    host.enable("voice", Level::FULL, "again").unwrap(); // idempotent
    let a = answer(&host.call("voice", b"hello").unwrap());
    assert_eq!(a["plugin"], "voice");
    assert_eq!(a["level"], 0);
    assert_eq!(a["model"], "large");
    assert_eq!(a["echo"], "hello");
    assert_eq!(a["working_set_bytes"], 8 << 20);
    let full = host.refresh_stats("voice").unwrap();
    assert!(full.live_bytes >= 8 << 20, "{full:?}");

    host.set_level("voice", Level(1), "memory pressure")
        .unwrap();
    let a = answer(&host.call("voice", b"again").unwrap());
    assert_eq!(a["level"], 1);
    assert_eq!(a["model"], "small");
    let reduced = host.refresh_stats("voice").unwrap();
    assert!(
        reduced.live_bytes < full.live_bytes - (6 << 20),
        "{reduced:?} vs {full:?}"
    );

    host.disable("voice", "shed for memory 0.91 over 0.80")
        .unwrap();
    host.disable("voice", "again").unwrap(); // idempotent
    match host.call("voice", b"anyone?") {
        Err(CallError::Degraded {
            plugin,
            state,
            reason,
            since,
        }) => {
            assert_eq!(plugin, "voice");
            assert_eq!(state, "disabled");
            assert_eq!(reason, "shed for memory 0.91 over 0.80");
            assert_eq!(since.as_millis(), 1_700_000_000_000);
        }
        other => panic!("expected a degraded answer, got {other:?}"),
    }
    assert_eq!(host.refresh_stats("voice").unwrap().live_bytes, 0);

    // Re-enabling creates a new instance on the still-mapped library, from the checkpoint.
    host.enable("voice", Level::FULL, "restored").unwrap();
    let a = answer(&host.call("voice", b"back").unwrap());
    assert_eq!(
        a["calls_served"], 3,
        "the checkpoint carries the count over: {a}"
    );

    let transitions: Vec<(String, String)> = events
        .lock()
        .unwrap()
        .iter()
        .filter_map(|e| match &e.kind {
            PluginEventKind::StateChanged { from, to, .. } => {
                Some((from.name().to_owned(), to.name().to_owned()))
            }
            _ => None,
        })
        .collect();
    let expected = [
        ("loaded", "enabled"),
        ("enabled", "enabled"),
        ("enabled", "draining"),
        ("draining", "disabled"),
        ("disabled", "enabled"),
    ];
    let expected: Vec<(String, String)> = expected
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
    assert_eq!(transitions, expected);
}

#[test]
fn an_unknown_level_is_refused_without_touching_the_plugin() {
    let (host, _) = host();
    host.load(rust_plugin("stubs")).unwrap();
    host.enable("stubs", Level::FULL, "start").unwrap();
    let error = host
        .set_level("stubs", Level(1), "test")
        .unwrap_err()
        .to_string();
    assert_eq!(
        error,
        "plugin `stubs` has levels 0..=0; level 1 does not exist"
    );
    assert!(host.call("stubs", b"still here").is_ok());
}

#[test]
fn suspend_refuses_calls_and_resume_brings_the_same_instance_back() {
    let (host, _) = host();
    host.load(rust_plugin("stubs")).unwrap();
    host.enable("stubs", Level::FULL, "start").unwrap();
    host.call("stubs", b"one").unwrap();
    host.suspend("stubs", "operator").unwrap();
    assert!(
        matches!(host.call("stubs", b"two"), Err(CallError::Degraded { ref state, .. }) if state == "suspended")
    );
    host.resume("stubs", "operator").unwrap();
    let a = answer(&host.call("stubs", b"three").unwrap());
    assert_eq!(a["calls_served"], 2, "same instance, no re-create: {a}");
}

#[test]
fn a_c_plugin_built_on_the_header_alone_loads_enables_answers_drains_and_disables() {
    let (host, _) = host();
    let mut config = PluginConfig::new("clock", clock_plugin());
    config.config = serde_json::json!({ "working_set_mb": [4, 1] });
    host.load(config).unwrap();
    host.enable("clock", Level::FULL, "start").unwrap();
    let a = answer(&host.call("clock", b"what \"time\" is it?").unwrap());
    assert_eq!(a["plugin"], "clock");
    assert_eq!(
        a["now_ms"], 1_700_000_000_000u64,
        "the plugin used the host clock"
    );
    assert_eq!(a["echo"], "what \"time\" is it?");
    assert_eq!(host.refresh_stats("clock").unwrap().live_bytes, 4 << 20);
    host.set_level("clock", Level(1), "test").unwrap();
    assert_eq!(host.refresh_stats("clock").unwrap().live_bytes, 1 << 20);
    assert_eq!(answer(&host.call("clock", b"").unwrap())["level"], 1);
    host.disable("clock", "test").unwrap();
    assert_eq!(host.status("clock").unwrap().state, PluginState::Disabled);
    host.enable("clock", Level::FULL, "again").unwrap();
    assert!(host.call("clock", b"x").is_ok());
}
