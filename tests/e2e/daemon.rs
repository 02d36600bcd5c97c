//! The daemon as an operator meets it: start-up, calls, operator pins, the degraded answer,
//! crash and restart, clean shutdown, and config errors.

use std::time::Duration;

use crate::support;
use crate::support::{Daemon, ballast};

/// The plugins of these tests, after `support::quiet_machine`: only the operator's actions change
/// their states, with timings fast enough for restores to happen within the test.
const PLUGINS: &str = r#"
[[default.plugins]]
name = "voice"
path = "libvoice.so"
priority = 10
config = { workload = { working_set_mb = [16, 4], cpu_duty = 0.0 } }

[[default.plugins]]
name = "android"
path = "libandroid.so"
priority = 20
config = { workload = { working_set_mb = [8, 2], cpu_duty = 0.0 } }

[[default.plugins]]
name = "discord"
path = "libdiscord.so"
priority = 30
config = { workload = { working_set_mb = [8], cpu_duty = 0.0 } }

[[default.plugins]]
name = "clock"
path = "libclock.so"
priority = 40
config = { working_set_mb = [4, 1] }

[[default.plugins]]
name = "stubs"
path = "libstubs.so"
priority = 100
essential = true
config = { workload = { working_set_mb = [2], cpu_duty = 0.0 } }
"#;

/// The state name of `plugin` as `GET /plugins/{name}` reports it.
fn state(daemon: &Daemon, plugin: &str) -> String {
    let status = daemon.json(&format!("/plugins/{plugin}"));
    let state = &status["state"];
    state["state"]
        .as_str()
        .or_else(|| state.as_str())
        .unwrap_or_default()
        .to_owned()
}

fn wait_state(daemon: &mut Daemon, plugin: &str, wanted: &str) {
    daemon.wait_until(
        Duration::from_secs(30),
        &format!("{plugin} to be {wanted}"),
        |d| state(d, plugin) == wanted,
    );
}

#[test]
fn the_daemon_serves_sheds_on_command_survives_a_crash_and_stops_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let mut daemon = support::start(dir.path(), &(support::quiet_machine("1s") + PLUGINS));
    for plugin in ["voice", "android", "discord", "clock", "stubs"] {
        wait_state(&mut daemon, plugin, "enabled");
    }

    // A call answers with the plugin's own bytes.
    let (status, body) = daemon.post("/plugins/voice/call", "hello").unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains("\"plugin\":\"voice\"") && body.contains("\"echo\":\"hello\""),
        "{body}"
    );

    // The operator sheds voice; calls get the degraded answer with the reason, at once.
    let (status, body) = daemon.post("/plugins/voice/disable", "{}").unwrap();
    assert!(status < 300, "disable: {status} {body}");
    wait_state(&mut daemon, "voice", "disabled");
    let (status, body) = daemon.post("/plugins/voice/call", "hello?").unwrap();
    assert_eq!(status, 503, "{body}");
    let degraded: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(degraded["plugin"], "voice");
    assert_eq!(degraded["state"], "disabled");
    assert!(
        degraded["reason"].as_str().is_some_and(|r| !r.is_empty()),
        "{body}"
    );
    assert!(degraded["since"].is_number(), "{body}");

    // The CLI sees the same.
    let out = ballast()
        .args(["plugins", "--api", &daemon.url])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.lines()
            .any(|l| l.contains("voice") && l.contains("disabled")),
        "{text}"
    );
    let out = ballast()
        .args(["status", "--json", "--api", &daemon.url])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(status["mode"], "enforce", "{status:#}");
    let mut states: Vec<(&str, &str)> = status["plugins"]
        .as_array()
        .unwrap_or_else(|| panic!("no plugin list: {status:#}"))
        .iter()
        .map(|p| {
            (
                p["name"].as_str().unwrap_or_default(),
                p["state"].as_str().unwrap_or_default(),
            )
        })
        .collect();
    states.sort_unstable();
    assert_eq!(
        states,
        [
            ("android", "enabled"),
            ("clock", "enabled"),
            ("discord", "enabled"),
            ("stubs", "enabled"),
            ("voice", "disabled"),
        ],
        "{status:#}"
    );
    assert!(
        status["resources"].as_array().is_some_and(|r| r
            .iter()
            .any(|r| r["resource"] == "memory" && r["value"].is_f64())),
        "{status:#}"
    );
    // The operator's disable is the latest decision about voice: an applied override.
    let decisions = daemon.json("/decisions?tail=50");
    let disable = decisions
        .as_array()
        .unwrap()
        .iter()
        .rev()
        .find(|d| d["plugin"] == "voice")
        .unwrap_or_else(|| panic!("no decision about voice: {decisions:#}"));
    assert_eq!(disable["kind"], "override", "{disable:#}");
    assert_eq!(disable["applied"], true, "{disable:#}");
    assert!(
        disable["reason"]
            .as_str()
            .is_some_and(|r| r.contains("operator")),
        "{disable:#}"
    );
    // The metrics say the same: voice is disabled and the others are enabled, the one call it
    // answered is counted, and the scaler enforces.
    let (status, metrics) = daemon.get("/metrics").unwrap();
    assert_eq!(status, 200);
    for line in [
        r#"ballast_plugin_state{plugin="voice",state="disabled"} 1"#,
        r#"ballast_plugin_state{plugin="voice",state="enabled"} 0"#,
        r#"ballast_plugin_state{plugin="android",state="enabled"} 1"#,
        r#"ballast_plugin_state{plugin="stubs",state="enabled"} 1"#,
        r#"ballast_plugin_calls_total{plugin="voice"} 1"#,
        r#"ballast_plugin_calls_total{plugin="android"} 0"#,
        r#"ballast_scaler_mode{mode="enforce"} 1"#,
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "no `{line}` in the metrics:\n{metrics}"
        );
    }

    // A crash (SIGKILL) and a restart keep the pin and the history.
    // The pin writer stores them on the disk arbiter, after the override is applied.
    let pins = daemon.data_dir.join("pins.json");
    daemon.wait_until(Duration::from_secs(30), "the pins stored", |_| {
        std::fs::read_to_string(&pins).is_ok_and(|text| text.contains("voice"))
    });
    daemon.restart();
    wait_state(&mut daemon, "android", "enabled");
    assert_eq!(
        state(&daemon, "voice"),
        "disabled",
        "the pin survived the crash"
    );
    let decisions = std::fs::read_dir(&daemon.data_dir)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("decisions-"))
        .count();
    assert!(decisions >= 1, "the decision log is on disk");

    // Released, voice comes back once the machine has been calm for the stabilization period,
    // and its state (calls served) carried over through the checkpoint.
    let out = ballast()
        .args(["plugin", "voice", "release", "--api", &daemon.url])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_state(&mut daemon, "voice", "enabled");
    let (_, body) = daemon.post("/plugins/voice/call", "back").unwrap();
    let answer: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        answer["calls_served"], 2,
        "the first call's count came back from the checkpoint: {body}"
    );

    // SIGTERM drains everything and exits 0.
    daemon.signal(libc::SIGTERM);
    assert_eq!(
        daemon.wait_exit(Duration::from_secs(30)),
        Some(0),
        "log:\n{}",
        daemon.log()
    );
    assert!(daemon.log().contains("ballast stopped"), "{}", daemon.log());
}

#[test]
fn every_kind_of_bad_config_exits_78_naming_what_is_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            "[balanced.monitor]\ninterval = \"soon\"\n",
            "monitor.interval",
        ),
        (
            "[balanced.predictor]\nema_weight = 7.0\n",
            "predictor.ema_weight",
        ),
        ("[balanced.api]\nlisten = \"0.0.0.0:7878\"\n", "api.listen"),
        ("[balancd]\nx = 1\n", "unknown top-level table `[balancd]`"),
        (
            "[balanced.scaler.thresholds.default]\nshed = 0.5\nrestore = 0.7\n",
            "restore",
        ),
        (
            "[[balanced.plugins]]\nname = \"voice\"\npath = \"x.so\"\nmax_concurrent_calls = 0\n",
            "plugin `voice`: max_concurrent_calls",
        ),
    ];
    for (i, (text, expected)) in cases.iter().enumerate() {
        let file = dir.path().join(format!("bad-{i}.toml"));
        std::fs::write(&file, text).unwrap();
        for command in [&["config", "check"][..], &["run"][..]] {
            let out = ballast()
                .args(command)
                .arg("--config")
                .arg(&file)
                .output()
                .unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(78), "{command:?} {text}: {stderr}");
            assert!(
                stderr.contains(expected),
                "{command:?} {text}: expected `{expected}` in: {stderr}"
            );
        }
    }
    let out = ballast()
        .args(["run", "--config", "/nonexistent/ballast.toml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(78));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("/nonexistent/ballast.toml does not exist")
    );
    let out = ballast()
        .args(["config", "check", "--profile", "turbo"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(78));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown profile `turbo`"));
}

#[test]
fn config_show_says_where_each_value_came_from() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("ballast.toml");
    std::fs::write(&file, "[dev.monitor]\ninterval = \"750ms\"\n").unwrap();
    let out = ballast()
        .args(["config", "show", "--profile", "dev", "--config"])
        .arg(&file)
        .env("BALLAST_TELEMETRY__SEGMENTS", "3")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = |key: &str| {
        text.lines()
            .find(|l| l.starts_with(&format!("{key} ")))
            .unwrap_or_default()
            .to_owned()
    };
    assert!(line("monitor.interval").contains("ballast.toml"), "{text}");
    assert!(
        line("telemetry.segments").contains("BALLAST_TELEMETRY__SEGMENTS"),
        "{text}"
    );
    assert!(line("api.listen").contains("default"), "{text}");
}

#[test]
fn the_shipped_config_is_valid_in_every_profile() {
    let file = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/ballast.toml");
    for profile in ["dev", "balanced", "production"] {
        let out = ballast()
            .args(["config", "check", "--profile", profile, "--config"])
            .arg(&file)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{profile}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn the_systemd_units_verify() {
    // CI installs systemd-analyze (cargo xtask ci); elsewhere the check needs it on PATH. The
    // unit for an install by hand and the Debian package's.
    for (file, binary) in [
        ("config/ballast.service", "/usr/local/bin/ballast"),
        ("deploy/debian/ballast.service", "/usr/bin/ballast"),
    ] {
        verify_unit(file, binary);
    }
}

fn verify_unit(file: &str, binary: &str) {
    let unit = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../..")
            .join(file),
    )
    .unwrap();
    assert!(
        unit.contains("Type=notify"),
        "{file}: the daemon notifies systemd when it is ready"
    );
    assert!(unit.contains(&format!("ExecStart={binary} run ")), "{file}");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ballast.service");
    // Point ExecStart at the binary under test so that verify can check it exists.
    let unit = unit.replace(binary, env!("CARGO_BIN_EXE_ballast"));
    std::fs::write(&path, unit).unwrap();
    let out = match std::process::Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&path)
        .output()
    {
        Ok(out) => out,
        Err(e) => panic!(
            "cannot run systemd-analyze ({e}): install it (package systemd; `cargo xtask ci` \
             installs it)"
        ),
    };
    let stderr = String::from_utf8_lossy(&out.stderr);
    // It must have run and found nothing wrong: a failed run (the tool cannot start, the unit
    // does not load) is a failure, and so is a warning about the unit, which verify prints but
    // does not fail on.
    assert!(
        out.status.success(),
        "{file}: systemd-analyze verify failed ({}):\n{stderr}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout)
    );
    let problems: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("ballast.service") && !l.contains("Failed to prepare filename"))
        .collect();
    assert!(
        problems.is_empty(),
        "{file}: systemd-analyze verify:\n{stderr}"
    );
}
