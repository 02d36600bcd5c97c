//! Every endpoint of the control API and every CLI client command, against the real daemon, and
//! the systemd readiness and watchdog notifications.

use std::io::{BufRead as _, BufReader};
use std::os::unix::net::UnixDatagram;
use std::time::Duration;

use ballast_testkit::now_ms;

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
    // `resources` is a list with one entry per measured resource; memory is measured on every
    // Linux machine, so it is there with a utilization between 0 and 1.
    let resources = status["resources"]
        .as_array()
        .unwrap_or_else(|| panic!("`resources` is not a list: {status}"));
    let memory = resources
        .iter()
        .find(|r| r["resource"] == "memory")
        .unwrap_or_else(|| panic!("no memory in `resources`: {status}"));
    assert!(
        memory["value"]
            .as_f64()
            .is_some_and(|v| v > 0.0 && v <= 1.0),
        "{status}"
    );
    assert_eq!(status["mode"], "enforce", "{status}");
    let summary: Vec<(&str, &str)> = status["plugins"]
        .as_array()
        .unwrap_or_else(|| panic!("`plugins` is not a list: {status}"))
        .iter()
        .map(|p| {
            (
                p["name"].as_str().unwrap_or_default(),
                p["state"].as_str().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [("android", "enabled"), ("stubs", "enabled")],
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

    // The event stream delivers events as they happen: a sample taken after the client
    // started arrives as one line of JSON, whole.
    let connected_at = now_ms();
    let mut events = ballast()
        .args(["events", "--json", "--api", &daemon.url])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = events.stdout.take().unwrap();
    let (lines_tx, lines) = std::sync::mpsc::channel::<String>();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut seen = Vec::new();
    let waited = daemon.try_wait_until(Duration::from_secs(30), "a sample event", |_| {
        seen.extend(lines.try_iter());
        seen.iter().any(|line| is_sample_event(line, connected_at))
    });
    let _ = events.kill();
    let _ = events.wait();
    let _ = reader.join();
    if let Err(error) = waited {
        panic!("{error:#}\nevents seen:\n{}", seen.join("\n"));
    }

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

    // Every client command: what it prints, and what it did to the daemon.
    assert!(cli(&daemon, &["status"]).contains("mode enforce"));
    assert!(cli(&daemon, &["plugins"]).contains("android"));
    let out = cli(
        &daemon,
        &["plugin", "android", "level", "1", "--for", "10m"],
    );
    assert_eq!(
        first_line(&out),
        "pinned `android` on at level 1 for 10m",
        "{out}"
    );
    daemon.wait_until(Duration::from_secs(20), "android at level 1", |d| {
        d.json("/plugins/android")["level"] == 1
    });
    let pin = &daemon.json("/plugins/android")["scaler"]["pin"];
    assert_eq!(pin["target"], "on", "{pin}");
    assert_eq!(pin["level"], 1, "{pin}");
    assert!(pin["until"].is_u64(), "a pin for 10m runs out: {pin}");

    let out = cli(&daemon, &["plugin", "android", "suspend"]);
    assert_eq!(
        first_line(&out),
        "suspended `android`: its calls answer 503 until it is resumed",
        "{out}"
    );
    assert!(table_row(&out, "android").contains("suspended"), "{out}");
    assert_eq!(state(&daemon, "android"), "suspended");
    assert_eq!(daemon.post("/plugins/android/call", "x").unwrap().0, 503);

    let out = cli(&daemon, &["plugin", "android", "resume"]);
    assert_eq!(first_line(&out), "resumed `android`", "{out}");
    assert!(table_row(&out, "android").contains("enabled"), "{out}");
    assert_eq!(state(&daemon, "android"), "enabled");
    assert_eq!(
        daemon.json("/plugins/android")["level"],
        1,
        "the level pin still holds"
    );
    assert_eq!(daemon.post("/plugins/android/call", "x").unwrap().0, 200);

    let out = cli(&daemon, &["plugin", "android", "disable"]);
    assert_eq!(
        first_line(&out),
        "pinned `android` off until released",
        "{out}"
    );
    daemon.wait_until(Duration::from_secs(20), "android disabled", |d| {
        state(d, "android") == "disabled"
    });
    let pin = &daemon.json("/plugins/android")["scaler"]["pin"];
    assert_eq!(pin["target"], "off", "{pin}");
    assert!(pin["until"].is_null(), "a pin without `--for` holds: {pin}");
    assert_eq!(daemon.post("/plugins/android/call", "x").unwrap().0, 503);

    let out = cli(&daemon, &["plugin", "android", "release"]);
    assert_eq!(
        first_line(&out),
        "released `android`: the scaler manages it again",
        "{out}"
    );
    let plugin = daemon.json("/plugins/android");
    assert!(plugin["scaler"]["pin"].is_null(), "{plugin}");
    assert!(
        !cli(&daemon, &["decisions", "--tail", "5"])
            .trim()
            .is_empty()
    );
    let json: serde_json::Value =
        serde_json::from_str(&cli(&daemon, &["plugins", "--json"])).unwrap();
    let names: Vec<&str> = json
        .as_array()
        .unwrap_or_else(|| panic!("`plugins --json` is not a list: {json}"))
        .iter()
        .map(|p| p["name"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(names, ["android", "stubs"], "{json}");
}

#[test]
fn systemd_hears_ready_once_the_api_answers_then_watchdog_pings() {
    let dir = tempfile::tempdir().unwrap();
    let socket_path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let config = dir.path().join("ballast.toml");
    std::fs::write(&config, CONFIG).unwrap();
    let port = free_port();
    let child = ballast()
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
    /// Kills the daemon when the test fails before it is stopped.
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut child = Kill(child);
    let receive = |seen: &[String]| -> String {
        let mut buf = [0u8; 256];
        match socket.recv(&mut buf) {
            Ok(n) => String::from_utf8_lossy(&buf[..n]).into_owned(),
            Err(e) => panic!("no notification within 60 s ({e}); got {seen:?}"),
        }
    };
    // READY=1 comes first, and only once the API answers: at the moment it arrives (before
    // anything else is awaited) /healthz already answers 200.
    let mut seen = Vec::new();
    while !seen.iter().any(|m: &String| m.contains("READY=1")) {
        let message = receive(&seen);
        seen.push(message);
    }
    let health = ballast_testkit::http::get(&format!("http://127.0.0.1:{port}/healthz"));
    assert!(
        matches!(health, Ok((200, _))),
        "READY=1 came before the API answered: /healthz got {health:?}; notifications {seen:?}"
    );
    assert!(
        !seen.iter().any(|m| m.contains("WATCHDOG=1")),
        "a watchdog ping came before READY=1: {seen:?}"
    );
    // Then the watchdog is fed, again and again (every 100 ms for a 200 ms watchdog).
    let mut pings = 0;
    while pings < 3 {
        let message = receive(&seen);
        if message.contains("WATCHDOG=1") {
            pings += 1;
        }
        seen.push(message);
    }
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(child.0.id() as i32, libc::SIGTERM) };
    assert_eq!(child.0.wait().unwrap().code(), Some(0));
}

/// The first line of a command's output.
fn first_line(out: &str) -> &str {
    out.lines().next().unwrap_or_default()
}

/// The row of `plugin` in a plugins table a command printed.
fn table_row<'a>(out: &'a str, plugin: &str) -> &'a str {
    out.lines()
        .find(|l| l.split_whitespace().next() == Some(plugin))
        .unwrap_or_default()
}

/// Whether `line` is a sample event as `ballast events --json` prints it: the sample as one JSON
/// object tagged `"type": "sample"`, taken at or after `after` (ms), with its memory reading.
fn is_sample_event(line: &str, after: u64) -> bool {
    let Ok(event) = serde_json::from_str::<serde_json::Value>(line) else {
        return false;
    };
    let memory = &event["memory"];
    event["type"] == "sample"
        && event["at"].as_u64().is_some_and(|at| at >= after)
        && memory["status"] == "available"
        && memory["value"]["total_bytes"]
            .as_u64()
            .is_some_and(|total| total > 0)
        && memory["value"]["used_bytes"].is_u64()
        && event["cpu"]["status"].is_string()
        && event["plugins"].is_array()
}
