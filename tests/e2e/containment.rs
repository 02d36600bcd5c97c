//! Panic containment on the real daemon: one plugin panics in every entry point, a thousand
//! times in all, driven through the control API as an operator would, and the daemon neither
//! dies nor stops serving its other plugin.

use std::time::{Duration, Instant};

use crate::support;
use crate::support::Daemon;

const CONFIG: &str = r#"
[default]
use_tier_thresholds = false

[default.monitor]
interval = "1s"
resources = ["memory"]

[default.scaler.thresholds.memory]
shed = 0.99
restore = 0.98
emergency = 0.995

[[default.plugins]]
name = "faulty"
path = "libfaulty.so"
priority = 10

[[default.plugins]]
name = "stubs"
path = "libstubs.so"
priority = 100
essential = true
config = { workload = { working_set_mb = [1], cpu_duty = 0.0 } }
"#;

/// Panics per entry point: 8 x 125 = 1000. Health is left to the host's own test: the daemon
/// checks it on a 5 s period.
const ROUNDS: usize = 125;

/// The plugin's state and level, from the API.
fn state(daemon: &Daemon) -> (String, Option<u64>) {
    let plugin = daemon.json("/plugins/faulty");
    (
        plugin["state"].as_str().unwrap_or_default().to_owned(),
        plugin["level"].as_u64(),
    )
}

/// Polls the plugin's state every few milliseconds until it is `wanted`. A failure counts once
/// the scaler has heard of it too: a pin that reaches the scaler before the failure does changes
/// nothing.
fn wait_for(daemon: &Daemon, wanted: &str, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let plugin = daemon.json("/plugins/faulty");
        let now = plugin["state"].as_str().unwrap_or_default().to_owned();
        let scaler_agrees = wanted != "failed" || plugin["scaler"]["failed"] == true;
        if now == wanted && scaler_agrees {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: faulty stayed {now}, expected {wanted}; log:\n{}",
            daemon.log()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn post(daemon: &Daemon, path: &str, body: &str) -> (u16, String) {
    daemon
        .post(path, body)
        .unwrap_or_else(|e| panic!("POST {path}: the daemon did not answer: {e}"))
}

fn enable(daemon: &Daemon, after: &str) {
    assert_eq!(post(daemon, "/plugins/faulty/enable", "").0, 200);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let now = state(daemon);
        if now == ("enabled".to_owned(), Some(0)) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "faulty did not come back after a panic in {after}: {now:?}; {}; log tail:\n{}",
            daemon.json("/plugins/faulty"),
            daemon
                .log()
                .lines()
                .rev()
                .take(30)
                .collect::<Vec<_>>()
                .join("\n")
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn a_plugin_panicking_in_every_entry_point_a_thousand_times_never_takes_the_daemon_down() {
    let dir = tempfile::tempdir().unwrap();
    let mut daemon = support::start(dir.path(), CONFIG);
    daemon.wait_until(Duration::from_secs(30), "faulty enabled", |d| {
        state(d).0 == "enabled"
    });
    let started = Instant::now();
    for function in [
        "create",
        "start",
        "set_level",
        "drain",
        "checkpoint",
        "stop",
        "destroy",
        "call",
    ] {
        for _ in 0..ROUNDS {
            let (status, body) = post(&daemon, "/plugins/faulty/call", &format!("arm {function}"));
            assert_eq!(
                (status, body.as_str()),
                (200, &*format!("armed {function}"))
            );
            match function {
                "create" | "start" => {
                    assert_eq!(post(&daemon, "/plugins/faulty/disable", "").0, 200);
                    wait_for(&daemon, "disabled", function);
                    assert_eq!(post(&daemon, "/plugins/faulty/enable", "").0, 200);
                    wait_for(&daemon, "failed", function);
                }
                "set_level" => {
                    assert_eq!(
                        post(&daemon, "/plugins/faulty/level", r#"{"level": 1}"#).0,
                        200
                    );
                    wait_for(&daemon, "failed", function);
                }
                "call" => {
                    let (status, body) = post(&daemon, "/plugins/faulty/call", "x");
                    assert_eq!(status, 502, "{body}");
                    assert!(body.contains("armed to panic once in call"), "{body}");
                    wait_for(&daemon, "failed", function);
                }
                _ => {
                    // drain, checkpoint, stop, destroy: the fault is logged, the plugin
                    // disabled all the same.
                    assert_eq!(post(&daemon, "/plugins/faulty/disable", "").0, 200);
                    wait_for(&daemon, "disabled", function);
                }
            }
            enable(&daemon, function);
            // The other plugin answers throughout.
            assert_eq!(post(&daemon, "/plugins/stubs/call", "ping").0, 200);
        }
    }
    let elapsed = started.elapsed();
    // The plugin counted its own panics: every one of them fired, in this daemon.
    let (status, fired) = post(&daemon, "/plugins/faulty/call", "fired");
    assert_eq!((status, fired.as_str()), (200, "1000"));
    assert_eq!(daemon.get("/healthz").unwrap().0, 200);
    assert_eq!(
        daemon.wait_exit(Duration::from_millis(10)),
        None,
        "the daemon exited"
    );
    let log = daemon.log();
    for function in ["drain", "checkpoint", "stop", "destroy"] {
        let contained = log
            .matches(&format!(
                "plugin panicked: faulty: armed to panic once in {function}"
            ))
            .count();
        assert!(
            contained >= ROUNDS,
            "{contained} contained panics in {function} logged, expected {ROUNDS}"
        );
    }
    println!("1000 panics in 8 entry points through the API in {elapsed:.1?}");
}
