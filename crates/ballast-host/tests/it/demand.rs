//! On-demand plugins and idle unloads in the host: an on-demand plugin starts idle, calls wait in
//! its wake queue until it is enabled, an unload leaves it idle, and an unload is refused when a
//! call came after the idleness it was asked for.

use std::sync::mpsc;
use std::time::Duration;

use ballast_core::plugin::PluginState;
use ballast_core::{Level, StartMode, Timestamp};
use ballast_host::{CallError, HostError};

use crate::support::{faulty, host, rust_plugin};

type Answer = Result<Vec<u8>, CallError>;

fn reply_channel() -> (mpsc::Sender<Answer>, mpsc::Receiver<Answer>) {
    mpsc::channel()
}

#[test]
fn an_on_demand_plugin_starts_idle_and_calls_wait_for_it_until_it_is_enabled() {
    let (host, _) = host();
    let mut config = rust_plugin("voice");
    config.start = StartMode::OnDemand;
    config.wake_queue = 2;
    host.load(config).unwrap();
    let status = host.status("voice").unwrap();
    assert_eq!(status.state, PluginState::Idle);
    assert_eq!(status.reason, "on-demand: it loads on its first call");
    // A plain call is refused as idle (the daemon then asks for a wake), not as degraded.
    assert!(matches!(
        host.call("voice", b"x"),
        Err(CallError::Idle { ref reason, .. }) if reason.contains("on-demand")
    ));
    // Calls that may wait are queued, up to the wake queue.
    let (tx, rx) = reply_channel();
    for request in [b"first".as_slice(), b"second"] {
        let tx = tx.clone();
        let id = host
            .submit_when_ready(
                "voice",
                request.to_vec(),
                Box::new(move |r| tx.send(r).unwrap()),
            )
            .unwrap();
        assert!(id.is_some(), "it waits");
    }
    assert_eq!(
        host.submit_when_ready("voice", b"third".to_vec(), Box::new(|_| {})),
        Err(CallError::WakeQueueFull {
            plugin: "voice".into(),
            queue: 2
        })
    );
    assert!(rx.try_recv().is_err(), "nothing answered before it is up");
    // The wake: enabled, and every waiting call is answered. They are handed over in order, but
    // voice takes calls concurrently, so the answers may come back in either order.
    host.enable("voice", Level::FULL, "a call woke it").unwrap();
    let mut answered: Vec<String> = (0..2)
        .map(|_| {
            let answer = rx.recv_timeout(Duration::from_secs(10)).unwrap().unwrap();
            let answer: serde_json::Value = serde_json::from_slice(&answer).unwrap();
            answer["echo"].as_str().unwrap_or_default().to_owned()
        })
        .collect();
    answered.sort();
    assert_eq!(answered, ["first", "second"]);
    // Once up, a call that may wait goes straight through.
    let (tx, rx) = reply_channel();
    let id = host
        .submit_when_ready(
            "voice",
            b"now".to_vec(),
            Box::new(move |r| tx.send(r).unwrap()),
        )
        .unwrap();
    assert_eq!(id, None);
    assert!(rx.recv_timeout(Duration::from_secs(10)).unwrap().is_ok());
}

#[test]
fn waiting_calls_learn_why_when_the_plugin_fails_to_come_up_and_can_be_cancelled() {
    let (host, _) = host();
    let mut config = faulty(serde_json::json!({ "fail_in": "create" }));
    config.start = StartMode::OnDemand;
    host.load(config).unwrap();
    let (tx, rx) = reply_channel();
    let kept = host
        .submit_when_ready(
            "faulty",
            b"a".to_vec(),
            Box::new(move |r| tx.send(r).unwrap()),
        )
        .unwrap()
        .unwrap();
    let cancelled = host
        .submit_when_ready("faulty", b"b".to_vec(), Box::new(|_| panic!("cancelled")))
        .unwrap()
        .unwrap();
    assert!(host.cancel_waiting("faulty", cancelled));
    assert!(!host.cancel_waiting("faulty", cancelled), "cancelled once");
    assert!(
        host.enable("faulty", Level::FULL, "a call woke it")
            .is_err()
    );
    let answer = rx.recv_timeout(Duration::from_secs(10)).unwrap();
    assert!(
        matches!(&answer, Err(CallError::Degraded { state, .. }) if state == "failed"),
        "{answer:?}"
    );
    assert!(!host.cancel_waiting("faulty", kept), "it was answered");
}

#[test]
fn an_unload_leaves_the_plugin_idle_and_is_refused_after_a_newer_call() {
    let (host, events) = host();
    let mut config = rust_plugin("voice");
    config.keep_alive = Some(Duration::from_secs(60));
    host.load(config).unwrap();
    host.enable("voice", Level::FULL, "start").unwrap();
    host.call("voice", b"x").unwrap();
    let stats = host.refresh_stats("voice").unwrap();
    let ended = stats.last_call_end.expect("the end of the call is tracked");
    // The scaler asks for an unload from an idleness that began before this call: refused.
    let refused = host.unload("voice", "idle for 1m (keep_alive 1m)", Timestamp::ZERO);
    assert!(
        matches!(&refused, Err(HostError::Active { why, .. }) if why.contains("after the idleness")),
        "{refused:?}"
    );
    assert!(matches!(
        host.status("voice").unwrap().state,
        PluginState::Enabled { .. }
    ));
    // From the end of that call: it goes, and stays idle.
    host.unload("voice", "idle for 1m (keep_alive 1m)", ended)
        .unwrap();
    let status = host.status("voice").unwrap();
    assert_eq!(status.state, PluginState::Idle);
    assert_eq!(status.reason, "idle for 1m (keep_alive 1m)");
    assert!(matches!(
        host.call("voice", b"y"),
        Err(CallError::Idle { .. })
    ));
    let states: Vec<String> = events
        .lock()
        .unwrap()
        .iter()
        .filter_map(|e| match &e.kind {
            ballast_core::PluginEventKind::StateChanged { to, .. } => Some(to.name().to_owned()),
            _ => None,
        })
        .collect();
    assert_eq!(states, ["enabled", "draining", "idle"]);
    // Woken again, it gets its checkpoint back like any re-enable.
    host.enable("voice", Level::FULL, "a call woke it").unwrap();
    let again: serde_json::Value =
        serde_json::from_slice(&host.call("voice", b"z").unwrap()).unwrap();
    assert_eq!(
        again["calls_served"], 2,
        "the count went on from the checkpoint: {again}"
    );
}

#[test]
fn an_unload_with_a_call_in_flight_is_refused() {
    let (host, _) = host();
    let mut config = faulty(serde_json::json!({ "call_sleep_ms": 300 }));
    config.keep_alive = Some(Duration::from_secs(60));
    host.load(config).unwrap();
    host.enable("faulty", Level::FULL, "start").unwrap();
    let (tx, rx) = reply_channel();
    host.submit(
        "faulty",
        b"slow".to_vec(),
        Box::new(move |r| tx.send(r).unwrap()),
    )
    .unwrap();
    let refused = host.unload("faulty", "idle", Timestamp::from_millis(u64::MAX));
    assert!(
        matches!(&refused, Err(HostError::Active { why, .. }) if why.contains("in flight")),
        "{refused:?}"
    );
    assert!(rx.recv_timeout(Duration::from_secs(10)).unwrap().is_ok());
}
