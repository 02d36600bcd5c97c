//! Every endpoint of the control API and every CLI client command, against the real daemon, and
//! the systemd readiness and watchdog notifications.

use std::os::unix::net::UnixDatagram;
use std::time::Duration;

use crate::support;
use crate::support::{Daemon, ballast, free_port, plugin_dir};

const CONFIG: &str = r#"
[default]
use_tier_thresholds = false

[default.monitor]
interval = "200ms"
resources = ["memory"]

[default.scaler.thresholds.memory]
shed = 0.99
restore = 0.98
emergency = 0.995

[[default.plugins]]
name = "android"
path = "libandroid.so"
priority = 20
config = { workload = { working_set_mb = [4, 1], cpu_duty = 0.0 } }

[[default.plugins]]
name = "stubs"
path = "libstubs.so"
priority = 100
essential = true
config = { workload = { working_set_mb = [1], cpu_duty = 0.0 } }
"#;

fn cli(daemon: &Daemon, args: &[&str]) -> String {
    let out = ballast()
        .args(args)
        .args(["--api", &daemon.url])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "ballast {args:?}: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

fn state(daemon: &Daemon, plugin: &str) -> String {
    daemon.json(&format!("/plugins/{plugin}"))["state"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

#[test]
fn every_endpoint_and_client_command_answers_on_the_real_daemon() {
    let dir = tempfile::tempdir().unwrap();
    let mut daemon = support::start(dir.path(), CONFIG);
    daemon.wait_until(Duration::from_secs(30), "android enabled", |d| {
        state(d, "android") == "enabled"
    });

    assert_eq!(daemon.get("/healthz").unwrap().0, 200);
    let status = daemon.json("/status");
    assert!(
        status["resources"].is_array() || status["resources"].is_object(),
        "{status}"
    );
    assert!(
        daemon
            .json("/plugins")
            .as_array()
            .is_some_and(|p| p.len() == 2)
    );
    assert_eq!(daemon.get("/plugins/nobody").unwrap().0, 404);
    assert_eq!(
        daemon
            .post("/plugins/android/call?caller=test", "hi")
            .unwrap()
            .0,
        200
    );

    // Levels, suspend and resume, as an operator would use them.
    let (code, body) = daemon
        .post("/plugins/android/level", r#"{"level": 1, "for": "1h"}"#)
        .unwrap();
    assert_eq!(code, 200, "{body}");
    daemon.wait_until(Duration::from_secs(20), "android at level 1", |d| {
        d.json("/plugins/android")["level"] == 1
    });
    assert_eq!(
        daemon
            .post("/plugins/android/level", r#"{"level": "high"}"#)
            .unwrap()
            .0,
        400
    );
    assert_eq!(daemon.post("/plugins/android/suspend", "").unwrap().0, 200);
    assert_eq!(daemon.post("/plugins/android/call", "x").unwrap().0, 503);
    assert_eq!(daemon.post("/plugins/android/resume", "").unwrap().0, 200);
    assert_eq!(daemon.post("/plugins/android/call", "x").unwrap().0, 200);
    assert_eq!(daemon.post("/plugins/android/release", "").unwrap().0, 200);
    assert_eq!(daemon.post("/plugins/android/enable", "{}").unwrap().0, 200);

    // The event stream delivers events as they happen.
    let events = ballast()
        .args(["events", "--json", "--api", &daemon.url])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    let mut events = events;
    let _ = events.kill();
    let out = events.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.lines()
            .any(|l| l.contains("\"type\":\"sample\"") || l.contains("sample")),
        "no event arrived: {text}"
    );

    let (code, metrics) = daemon.get("/metrics").unwrap();
    assert_eq!(code, 200);
    assert!(metrics.contains("ballast_plugin_calls_total"), "{metrics}");
    assert!(
        !daemon
            .json("/decisions?tail=5")
            .as_array()
            .unwrap()
            .is_empty()
    );

    // Every client command.
    assert!(cli(&daemon, &["status"]).contains("mode"));
    assert!(cli(&daemon, &["plugins"]).contains("android"));
    assert!(
        cli(
            &daemon,
            &["plugin", "android", "level", "1", "--for", "10m"]
        )
        .contains("android")
    );
    cli(&daemon, &["plugin", "android", "suspend"]);
    cli(&daemon, &["plugin", "android", "resume"]);
    cli(&daemon, &["plugin", "android", "disable"]);
    cli(&daemon, &["plugin", "android", "release"]);
    assert!(
        !cli(&daemon, &["decisions", "--tail", "5"])
            .trim()
            .is_empty()
    );
    let json: serde_json::Value =
        serde_json::from_str(&cli(&daemon, &["plugins", "--json"])).unwrap();
    assert!(json.is_array());
}

#[test]
fn systemd_hears_ready_and_watchdog_pings() {
    let dir = tempfile::tempdir().unwrap();
    let socket_path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let config = dir.path().join("ballast.toml");
    std::fs::write(&config, CONFIG).unwrap();
    let port = free_port();
    let mut child = ballast()
        .args(["run", "--config"])
        .arg(&config)
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .env("BALLAST_PLUGIN_DIR", plugin_dir())
        .env("NOTIFY_SOCKET", &socket_path)
        .env("WATCHDOG_USEC", "200000")
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut seen = Vec::new();
    let mut buf = [0u8; 256];
    while !(seen.iter().any(|m: &String| m.contains("READY=1"))
        && seen.iter().any(|m| m.contains("WATCHDOG=1")))
    {
        match socket.recv(&mut buf) {
            Ok(n) => seen.push(String::from_utf8_lossy(&buf[..n]).into_owned()),
            Err(e) => {
                let _ = child.kill();
                panic!("no notification within 60 s ({e}); got {seen:?}");
            }
        }
    }
    let ready = seen.iter().position(|m| m.contains("READY=1")).unwrap();
    // The API answers once READY=1 is sent: start-up is complete.
    let health = std::net::TcpStream::connect(("127.0.0.1", port));
    assert!(
        health.is_ok(),
        "READY=1 came before the API was listening ({ready})"
    );
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    assert_eq!(child.wait().unwrap().code(), Some(0));
}
