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

/// Calls each (plugin, caller) made, summed over the call tallies in the telemetry logs.
fn tallied_calls(daemon: &Daemon, plugin: &str, caller: &str) -> u64 {
    daemon
        .log_records("telemetry-")
        .iter()
        .filter(|r| r["type"] == "calls" && r["plugin"] == plugin && r["caller"] == caller)
        .filter_map(|r| r["calls"].as_u64())
        .sum()
}

/// The first and last moment of the daemon's logs (a call tally spans `from` to `to`), in ms.
fn history_span(daemon: &Daemon) -> (u64, u64) {
    let records = daemon.log_records("");
    let start = |r: &serde_json::Value| r["from"].as_u64().or_else(|| r["at"].as_u64());
    let end = |r: &serde_json::Value| r["to"].as_u64().or_else(|| r["at"].as_u64());
    (
        records.iter().filter_map(start).min().unwrap(),
        records.iter().filter_map(end).max().unwrap(),
    )
}

/// The demand level for a surge factor, as the report documents it: above 3 critical, above
/// 1.5 elevated, above 1 normal, else low.
fn documented_level(surge: f64) -> &'static str {
    if surge > 3.0 {
        "critical"
    } else if surge > 1.5 {
        "elevated"
    } else if surge > 1.0 {
        "normal"
    } else {
        "low"
    }
}

fn assert_close(json: &serde_json::Value, what: &str, got: &serde_json::Value, expected: f64) {
    let got = got
        .as_f64()
        .unwrap_or_else(|| panic!("{what} is not a number: {json:#}"));
    assert!(
        (got - expected).abs() <= 1e-9 * expected.abs().max(1.0),
        "{what}: {got}, expected {expected}; {json:#}"
    );
}

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
    // A calm start: the baseline's 10 calls.
    for _ in 0..5 {
        assert_eq!(call(&daemon, "voice", "assistant", "hi"), 200);
        assert_eq!(call(&daemon, "stubs", "assistant", "hi"), 200);
    }
    // The daemon writes call tallies every 10 s: once these are written, the calls that follow
    // go into tallies of their own, so each window's calls are whole records on either side of
    // `recent_from`.
    daemon.wait_until(
        Duration::from_secs(30),
        "the baseline's call tallies in the telemetry log",
        |d| {
            tallied_calls(d, "voice", "assistant") == 5
                && tallied_calls(d, "stubs", "assistant") == 5
        },
    );
    // The recent window starts here: the operator takes voice off and the callers keep
    // calling, 80 calls of which 20 refused (voice) and 20 failed (faulty).
    let recent_from = ballast_testkit::now_ms();
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
    // A sample taken after the calls is in the recent window too.
    let calls_done = ballast_testkit::now_ms();
    daemon.wait_until(
        Duration::from_secs(30),
        "a sample after the calls in the telemetry log",
        |d| {
            d.log_records("telemetry-").iter().any(|r| {
                r["type"] == "sample" && r["at"].as_u64().is_some_and(|at| at > calls_done)
            })
        },
    );
    // A clean stop writes the last call tallies.
    daemon.signal(libc::SIGTERM);
    assert_eq!(daemon.wait_exit(Duration::from_secs(30)), Some(0));

    // The history runs from the daemon's first record to its last; the recent window is set to
    // start exactly where the operator stepped in.
    let (from, to) = history_span(&daemon);
    assert!(
        from < recent_from && recent_from < to,
        "{from} {recent_from} {to}"
    );
    let horizon = format!("{}ms", to - recent_from);
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
    assert_eq!(json["from"], from, "{json:#}");
    assert_eq!(json["to"], to, "{json:#}");
    assert_eq!(json["recent_from"], recent_from, "{json:#}");

    // The rates, the surge factor and the level, from the calls sent: 80 in the recent window,
    // 10 before it.
    let recent_hours = (to - recent_from) as f64 / 3_600_000.0;
    let baseline_hours = (recent_from - from) as f64 / 3_600_000.0;
    let recent_rate = 80.0 / recent_hours;
    let baseline_rate = 10.0 / baseline_hours;
    let surge = recent_rate / baseline_rate;
    println!(
        "report: {:.1} s of baseline with 10 calls, {:.1} s recent with 80: {recent_rate:.0} calls/h against {baseline_rate:.0}, surge {surge:.2}, {}",
        baseline_hours * 3600.0,
        recent_hours * 3600.0,
        documented_level(surge)
    );
    assert_close(
        &json,
        "recent_request_rate",
        &json["recent_request_rate"],
        recent_rate,
    );
    assert_close(
        &json,
        "baseline_request_rate",
        &json["baseline_request_rate"],
        baseline_rate,
    );
    assert_close(&json, "surge_factor", &json["surge_factor"], surge);
    assert_eq!(
        json["demand_level"],
        documented_level(surge),
        "surge {surge}: {json:#}"
    );
    let mode = if surge > 1.5 { "surge" } else { "steady" };
    assert_eq!(json["resource_mode"], mode, "surge {surge}: {json:#}");

    // faulty failed exactly the 20 calls asked to fail, of its 40, none of them a refusal;
    // voice refused all of its 20 recent calls.
    let failures = json["plugin_failures"].as_array().unwrap();
    let failures_of = |plugin: &str| {
        failures
            .iter()
            .find(|f| f["plugin"] == plugin)
            .unwrap_or_else(|| panic!("no failures of {plugin} in {json:#}"))
    };
    let faulty = failures_of("faulty");
    assert_eq!(faulty["failed_calls"], 20.0, "{json:#}");
    assert_eq!(faulty["refused_calls"], 0.0, "{json:#}");
    assert_eq!(faulty["calls"], 40.0, "{json:#}");
    assert_eq!(faulty["failure_rate"], 0.5, "{json:#}");
    let voice = failures_of("voice");
    assert_eq!(voice["failed_calls"], 20.0, "{json:#}");
    assert_eq!(voice["refused_calls"], 20.0, "{json:#}");
    assert_eq!(voice["calls"], 20.0, "{json:#}");
    assert_eq!(failures.len(), 2, "stubs failed nothing: {json:#}");

    // faulty failed calls with errors: the posture is degraded and it is named.
    assert_eq!(json["dispatch_posture"], "degraded", "{json:#}");
    // The recommendations, each with the plugin it names: faulty is failing (20 errors of 40
    // calls); faulty (50% failed) and voice (100% refused) are to be throttled, and so is a
    // plugin whose recent rate is more than 3x its baseline (voice and stubs: 20 recent calls
    // against 5); a surge above 1.5 asks for pre-warming.
    let own_surge = (20.0 / recent_hours) / (5.0 / baseline_hours);
    let mut expected = vec![
        ("plugin_failing", "faulty"),
        ("throttle", "faulty"),
        ("throttle", "voice"),
    ];
    if own_surge > 3.0 {
        expected.push(("throttle", "stubs"));
    }
    if surge > 1.5 {
        expected.push(("surge", ""));
    }
    expected.sort_unstable();
    let mut got: Vec<(&str, &str)> = json["recommended_actions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            let action = a["action"].as_str().unwrap_or_default();
            let named = action.split('`').nth(1).unwrap_or_default();
            (a["signal"].as_str().unwrap_or_default(), named)
        })
        .collect();
    got.sort_unstable();
    assert_eq!(
        got, expected,
        "surge {surge}, own surge {own_surge}: {json:#}"
    );
    assert!(
        json["recommended_actions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["action"]
                .as_str()
                .unwrap_or_default()
                .contains("Investigate `faulty`: 20 of its 40 recent calls failed")),
        "{json:#}"
    );

    // voice was out of service at the end: an ongoing shed outage with the operator's reason;
    // the plugins the daemon disabled as it stopped were not shed.
    let outages = json["plugin_outages"].as_array().unwrap();
    assert_eq!(outages.len(), 1, "{json:#}");
    let outage = &outages[0];
    assert_eq!(outage["plugin"], "voice", "{json:#}");
    assert_eq!(outage["state"], "shed", "{json:#}");
    assert_eq!(outage["ongoing"], true, "{json:#}");
    assert!(
        outage["reason"].as_str().unwrap().contains("operator"),
        "{json:#}"
    );
    // The callers of the recent window, busiest first: tester's 40 calls, then assistant's
    // and batch's 20 each (ties by name).
    let callers: Vec<(&str, f64)> = json["top_callers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["caller"].as_str().unwrap(), c["calls"].as_f64().unwrap()))
        .collect();
    assert_eq!(
        callers,
        [("tester", 40.0), ("assistant", 20.0), ("batch", 20.0)],
        "{json:#}"
    );
    // The memory samples are there, in both windows.
    assert!(
        json["resources"].as_array().unwrap().iter().any(|r| {
            r["resource"] == "memory"
                && r["recent_utilization"].is_number()
                && r["baseline_utilization"].is_number()
        }),
        "{json:#}"
    );

    let output = ballast()
        .args(["forecast", "report", "--horizon", &horizon, "--history"])
        .arg(&daemon.data_dir)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(text.contains("| dispatch posture | degraded |"), "{text}");
    assert!(
        text.contains(&format!(
            "| demand level | **{}** ",
            documented_level(surge)
        )),
        "{text}"
    );
    assert!(text.contains("Investigate `faulty`"), "{text}");
}
