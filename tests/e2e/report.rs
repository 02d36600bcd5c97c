//! `ballast forecast report` on telemetry the real daemon wrote: calls from named callers, a
//! plugin that fails calls, a plugin an operator took out of service; then the report on the
//! data directory, as an operator would run it after the fact.

use std::time::Duration;

use crate::support;
use crate::support::{Daemon, ballast};

const CONFIG: &str = r#"
[default]
use_tier_thresholds = false
shutdown_timeout = "20s"

[default.monitor]
interval = "200ms"
resources = ["memory"]

[default.scaler.thresholds.default]
shed = 0.99
restore = 0.98

[default.scaler.thresholds.memory]
shed = 0.99
restore = 0.98
emergency = 0.995

[[default.plugins]]
name = "voice"
path = "libvoice.so"
priority = 10
config = { workload = { working_set_mb = [4, 1], cpu_duty = 0.0 } }

[[default.plugins]]
name = "faulty"
path = "libfaulty.so"
priority = 20

[[default.plugins]]
name = "stubs"
path = "libstubs.so"
priority = 100
essential = true
config = { workload = { working_set_mb = [2], cpu_duty = 0.0 } }
"#;

#[test]
fn the_report_reads_what_the_daemon_wrote() {
    let dir = tempfile::tempdir().unwrap();
    let mut daemon = support::start(dir.path(), CONFIG);
    let call = |daemon: &Daemon, plugin: &str, caller: &str, body: &str| {
        daemon
            .post(&format!("/plugins/{plugin}/call?caller={caller}"), body)
            .unwrap()
            .0
    };
    // A calm start, then the operator takes voice off and the callers keep calling.
    for _ in 0..5 {
        assert_eq!(call(&daemon, "voice", "assistant", "hi"), 200);
        assert_eq!(call(&daemon, "stubs", "assistant", "hi"), 200);
    }
    // The baseline window: everything before the recent one, which starts here.
    std::thread::sleep(Duration::from_secs(3));
    let recent_started = std::time::Instant::now();
    let (status, body) = daemon
        .post("/plugins/voice/disable", r#"{"for": "10m"}"#)
        .unwrap();
    assert_eq!(status, 200, "{body}");
    daemon.wait_until(Duration::from_secs(30), "voice is disabled", |d| {
        d.json("/plugins/voice")["state"] == "disabled"
    });
    for _ in 0..20 {
        assert_eq!(call(&daemon, "voice", "assistant", "hi"), 503);
        assert_eq!(call(&daemon, "faulty", "tester", "fail"), 502);
        assert_eq!(call(&daemon, "faulty", "tester", "ok"), 200);
        assert_eq!(call(&daemon, "stubs", "batch", "hi"), 200);
    }
    // A clean stop writes the last call tallies.
    daemon.signal(libc::SIGTERM);
    assert_eq!(daemon.wait_exit(Duration::from_secs(30)), Some(0));

    // The recent window reaches back to just before the operator's action.
    let horizon = format!("{}ms", recent_started.elapsed().as_millis() + 200);
    let output = ballast()
        .args([
            "forecast",
            "report",
            "--json",
            "--horizon",
            &horizon,
            "--history",
        ])
        .arg(&daemon.data_dir)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(stderr.is_empty(), "{stderr}");
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(json["skipped_lines"], 0);
    // faulty failed calls with errors: the posture is degraded and it is named.
    assert_eq!(json["dispatch_posture"], "degraded", "{json:#}");
    let actions = json["recommended_actions"].as_array().unwrap();
    assert!(
        actions.iter().any(|a| a["signal"] == "plugin_failing"
            && a["action"]
                .as_str()
                .unwrap()
                .contains("Investigate `faulty`")),
        "{json:#}"
    );
    let failures = json["plugin_failures"].as_array().unwrap();
    let faulty = failures.iter().find(|f| f["plugin"] == "faulty").unwrap();
    assert!(faulty["failed_calls"].as_f64().unwrap() > 0.0, "{json:#}");
    let voice = failures.iter().find(|f| f["plugin"] == "voice").unwrap();
    assert_eq!(voice["failed_calls"], voice["refused_calls"], "{json:#}");
    // voice was out of service at the end: an ongoing shed outage with the operator's reason;
    // the plugins the daemon disabled as it stopped were not shed.
    let outage = json["plugin_outages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["plugin"] == "voice")
        .unwrap_or_else(|| panic!("no voice outage in {json:#}"));
    assert_eq!(outage["state"], "shed");
    assert!(
        outage["reason"].as_str().unwrap().contains("operator"),
        "{json:#}"
    );
    assert_eq!(
        json["plugin_outages"].as_array().unwrap().len(),
        1,
        "{json:#}"
    );
    let callers: Vec<&str> = json["top_callers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["caller"].as_str().unwrap())
        .collect();
    for caller in ["assistant", "tester", "batch"] {
        assert!(callers.contains(&caller), "{callers:?}");
    }
    // The memory samples are there.
    assert!(
        json["resources"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["resource"] == "memory" && r["recent_utilization"].is_number()),
        "{json:#}"
    );
    // The demand level is the one the surge factor implies.
    let level = match json["surge_factor"].as_f64() {
        Some(f) if f > 3.0 => "critical",
        Some(f) if f > 1.5 => "elevated",
        Some(f) if f > 1.0 => "normal",
        Some(_) => "low",
        None => "critical",
    };
    assert_eq!(json["demand_level"], level, "{json:#}");

    let output = ballast()
        .args(["forecast", "report", "--horizon", &horizon, "--history"])
        .arg(&daemon.data_dir)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(text.contains("| dispatch posture | degraded |"), "{text}");
    assert!(text.contains("Investigate `faulty`"), "{text}");
}
