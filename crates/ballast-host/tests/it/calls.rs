//! Calls: timeouts, the concurrency limit and queue, panics, and draining with calls in flight.

use std::sync::mpsc;
use std::time::Duration;

use ballast_core::Level;
use ballast_host::CallError;

use crate::support::{faulty, host};

#[test]
fn a_slow_call_times_out_and_is_counted() {
    let (host, _) = host();
    let mut config = faulty(serde_json::json!({ "call_sleep_ms": 300 }));
    config.call_timeout = Duration::from_millis(20);
    host.load(config).unwrap();
    host.enable("faulty", Level::FULL, "test").unwrap();
    let error = host.call("faulty", b"slow").unwrap_err();
    assert_eq!(
        error,
        CallError::Timeout {
            plugin: "faulty".into(),
            timeout_ms: 20
        }
    );
    let stats = host.refresh_stats("faulty").unwrap();
    assert_eq!(stats.timeouts, 1);
    assert_eq!(stats.errors, 1);
}

#[test]
fn past_the_limit_and_the_queue_calls_are_refused_as_busy() {
    let (host, _) = host();
    let mut config = faulty(serde_json::json!({ "call_sleep_ms": 200 }));
    config.max_concurrent_calls = 1;
    config.queue = 1;
    host.load(config).unwrap();
    host.enable("faulty", Level::FULL, "test").unwrap();
    let (tx, rx) = mpsc::channel();
    for _ in 0..2 {
        let tx = tx.clone();
        host.submit(
            "faulty",
            b"work".to_vec(),
            Box::new(move |r| tx.send(r).unwrap()),
        )
        .unwrap();
    }
    let refused = host.submit("faulty", b"one too many".to_vec(), Box::new(|_| {}));
    assert_eq!(
        refused,
        Err(CallError::Busy {
            plugin: "faulty".into(),
            limit: 1,
            queue: 1
        })
    );
    for _ in 0..2 {
        assert!(rx.recv().unwrap().is_ok());
    }
    // Adaptive concurrency: the scaler may lower the limit; None restores the configured one.
    assert_eq!(host.set_concurrency("faulty", Some(0)).unwrap(), 1);
    assert_eq!(host.set_concurrency("faulty", None).unwrap(), 1);
}

#[test]
fn a_panicking_call_fails_the_plugin_not_the_host_and_it_can_come_back() {
    let (host, _) = host();
    host.load(faulty(serde_json::json!({}))).unwrap();
    host.enable("faulty", Level::FULL, "test").unwrap();
    assert_eq!(
        host.call("faulty", b"fail").unwrap_err(),
        CallError::Failed {
            plugin: "faulty".into(),
            message: "error: faulty: failure requested by the caller".into()
        }
    );
    let error = host.call("faulty", b"panic").unwrap_err();
    assert!(
        matches!(&error, CallError::Panicked { message, .. } if message.contains("panic requested by the caller")),
        "{error:?}"
    );
    let status = host.status("faulty").unwrap();
    assert_eq!(status.state.name(), "failed");
    assert!(
        matches!(host.call("faulty", b"x"), Err(CallError::Degraded { ref state, .. }) if state == "failed")
    );
    // The operator (or the scaler) can bring it back: a fresh instance from the checkpoint-less create.
    host.enable("faulty", Level::FULL, "retry").unwrap();
    assert_eq!(host.call("faulty", b"x").unwrap(), b"generation 1");
}

#[test]
fn panics_in_every_entry_point_are_contained() {
    for function in ["start", "set_level", "drain", "stop", "checkpoint"] {
        let (host, _) = host();
        host.load(faulty(serde_json::json!({ "panic_in": function })))
            .unwrap();
        let enabled = host.enable("faulty", Level::FULL, "test");
        if function == "start" {
            assert!(
                enabled
                    .unwrap_err()
                    .to_string()
                    .contains("configured to panic in start")
            );
            continue;
        }
        enabled.unwrap();
        if function == "set_level" {
            let error = host
                .set_level("faulty", Level(1), "test")
                .unwrap_err()
                .to_string();
            assert!(
                error.contains("configured to panic in set_level"),
                "{error}"
            );
            assert_eq!(host.status("faulty").unwrap().state.name(), "failed");
            continue;
        }
        // drain, stop and checkpoint failures are logged; the plugin is still disabled.
        host.disable("faulty", "test").unwrap();
        assert_eq!(
            host.status("faulty").unwrap().state.name(),
            "disabled",
            "{function}"
        );
    }
}

#[test]
fn disable_waits_for_calls_in_flight_within_the_drain_deadline() {
    let (host, _) = host();
    host.load(faulty(serde_json::json!({ "call_sleep_ms": 100 })))
        .unwrap();
    host.enable("faulty", Level::FULL, "test").unwrap();
    let (tx, rx) = mpsc::channel();
    host.submit(
        "faulty",
        b"in flight".to_vec(),
        Box::new(move |r| tx.send(r).unwrap()),
    )
    .unwrap();
    host.disable("faulty", "shed").unwrap();
    // The call admitted before the disable was answered, not cut off.
    assert_eq!(rx.recv().unwrap().unwrap(), b"generation 1");
    // The checkpoint went to the next instance.
    host.enable("faulty", Level::FULL, "restore").unwrap();
    assert_eq!(host.call("faulty", b"x").unwrap(), b"generation 2");
}

#[test]
fn an_unhealthy_plugin_is_marked_failed_by_the_health_check() {
    let (host, _) = host();
    host.load(faulty(serde_json::json!({ "unhealthy": true })))
        .unwrap();
    host.enable("faulty", Level::FULL, "test").unwrap();
    let error = host.check_health("faulty").unwrap_err().to_string();
    assert!(error.contains("configured to be unhealthy"), "{error}");
    assert_eq!(host.status("faulty").unwrap().state.name(), "failed");
}
