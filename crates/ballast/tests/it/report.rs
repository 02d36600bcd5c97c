//! `ballast forecast report` on a history built from the Azure LLM request-arrival traces in
//! `../shared/traces/azure_llm_2023` (skipped where that folder is missing): the conversation
//! trace's requests are calls to a `chat` plugin, the code trace's to a `coder` plugin, tallied
//! in 10 s intervals as the daemon tallies calls. The expected rates, demand level and signals
//! are worked out here from the arrivals themselves, by the rules the report documents.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;

use ballast_core::Timestamp;
use ballast_core::telemetry::{CallSummary, TelemetryRecord};
use ballast_lab::trace::parse_timestamp;

const BIN_MS: u64 = 10_000;

/// Arrival times (ms) of one trace.
fn arrivals(path: &Path) -> Vec<u64> {
    let text = std::fs::read_to_string(path).unwrap();
    text.lines()
        .skip(1)
        .filter_map(|line| line.split(',').next())
        .map(|cell| {
            parse_timestamp(cell)
                .unwrap_or_else(|| panic!("{}: bad timestamp {cell}", path.display()))
                .as_millis()
        })
        .collect()
}

/// One `calls` record per plugin and 10 s bin with arrivals.
fn tallies(plugin: &str, caller: &str, times: &[u64]) -> Vec<TelemetryRecord> {
    let mut bins: BTreeMap<u64, u64> = BTreeMap::new();
    for t in times {
        *bins.entry(t - t % BIN_MS).or_default() += 1;
    }
    bins.into_iter()
        .map(|(start, n)| {
            TelemetryRecord::Calls(CallSummary {
                from: Timestamp::from_millis(start),
                to: Timestamp::from_millis(start + BIN_MS),
                plugin: plugin.to_owned(),
                caller: caller.to_owned(),
                calls: n,
                failures: 0,
                degraded: 0,
                latency_total_us: 0,
                latency_max_us: 0,
            })
        })
        .collect()
}

fn level(surge: f64) -> &'static str {
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

#[test]
fn the_report_on_azure_llm_arrivals_follows_the_rules() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/traces/azure_llm_2023");
    if !root.is_dir() {
        eprintln!("skipped: {} is missing", root.display());
        return;
    }
    let plugins = [
        (
            "chat",
            "conversation",
            arrivals(&root.join("AzureLLMInferenceTrace_conv.csv")),
        ),
        (
            "coder",
            "code",
            arrivals(&root.join("AzureLLMInferenceTrace_code.csv")),
        ),
    ];
    let mut jsonl = String::new();
    // Interleaved and out of order across plugins, as several segments would be.
    for (plugin, caller, times) in plugins.iter().rev() {
        for record in tallies(plugin, caller, times) {
            let _ = writeln!(jsonl, "{}", serde_json::to_string(&record).unwrap());
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("telemetry-000001.jsonl");
    std::fs::write(&file, jsonl).unwrap();

    let all: Vec<u64> = plugins.iter().flat_map(|p| p.2.iter().copied()).collect();
    let start = all.iter().map(|t| t - t % BIN_MS).min().unwrap();
    let end = all.iter().map(|t| t - t % BIN_MS + BIN_MS).max().unwrap();
    for minutes in [10_u64, 15, 20, 30] {
        let horizon = minutes * 60_000;
        let recent_from = end - horizon;
        let recent_hours = horizon as f64 / 3_600_000.0;
        let baseline_hours = (recent_from - start) as f64 / 3_600_000.0;
        let in_recent = |t: &u64| t - t % BIN_MS >= recent_from;
        let recent: Vec<f64> = plugins
            .iter()
            .map(|p| p.2.iter().filter(|t| in_recent(t)).count() as f64)
            .collect();
        let baseline: Vec<f64> = plugins
            .iter()
            .map(|p| p.2.iter().filter(|t| !in_recent(t)).count() as f64)
            .collect();
        let recent_rate = recent.iter().sum::<f64>() / recent_hours;
        let baseline_rate = baseline.iter().sum::<f64>() / baseline_hours;
        let surge = recent_rate / baseline_rate;
        // The signals the rules imply: surge above 1.5; throttle for a plugin with half the
        // calls (two plugins take calls) at more than 1.5x its own baseline, or at more than 3x
        // its own baseline; nothing fails.
        let mut signals = BTreeSet::new();
        if surge > 1.5 {
            signals.insert("surge");
        }
        let total: f64 = recent.iter().sum();
        for i in 0..plugins.len() {
            let own = (recent[i] / recent_hours) / (baseline[i] / baseline_hours);
            if (recent[i] / total >= 0.5 && own > 1.5) || own > 3.0 {
                signals.insert("throttle");
            }
        }
        if signals.is_empty() {
            signals.insert("none");
        }

        let output = Command::new(env!("CARGO_BIN_EXE_ballast"))
            .args([
                "forecast",
                "report",
                "--json",
                "--horizon",
                &format!("{minutes}m"),
            ])
            .arg("--history")
            .arg(&file)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success(), "{stderr}");
        let json: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
        let close = |key: &str, expected: f64| {
            let got = json[key].as_f64().unwrap();
            assert!(
                (got - expected).abs() <= 1e-6 * expected.abs().max(1.0),
                "{minutes}m {key}: {got} != {expected}"
            );
        };
        close("recent_request_rate", recent_rate);
        close("baseline_request_rate", baseline_rate);
        close("surge_factor", surge);
        assert_eq!(
            json["demand_level"],
            level(surge),
            "{minutes}m, surge {surge}"
        );
        let mode = if surge > 1.5 { "surge" } else { "steady" };
        assert_eq!(json["resource_mode"], mode, "{minutes}m");
        assert_eq!(json["dispatch_posture"], "normal", "{minutes}m");
        let got: BTreeSet<&str> = json["recommended_actions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["signal"].as_str().unwrap())
            .collect();
        assert_eq!(got, signals, "{minutes}m");
        assert_eq!(json["top_callers"][0]["caller"], "conversation");
        assert!(json["predicted_request_rate"].as_f64().unwrap() > 0.0);
        assert!(stderr.is_empty(), "{stderr}");
    }

    // The Markdown report names the level and the recommendations for people.
    let output = Command::new(env!("CARGO_BIN_EXE_ballast"))
        .args(["forecast", "report", "--horizon", "15m", "--history"])
        .arg(&file)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(text.starts_with("# Demand forecast report\n"), "{text}");
    assert!(text.contains("| demand level | **"), "{text}");
    assert!(text.contains("## Recommended actions"), "{text}");
}

#[test]
fn bad_history_gets_a_clear_message_and_no_panic() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty.jsonl");
    std::fs::write(&empty, "").unwrap();
    let garbage = dir.path().join("garbage.jsonl");
    std::fs::write(&garbage, "{\"type\":\"calls\"\nhello\n\u{0}\u{1}\n").unwrap();
    let run = |args: &[&Path], horizon: &str| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_ballast"));
        command.args(["forecast", "report", "--horizon", horizon, "--history"]);
        command.args(args);
        command.output().unwrap()
    };
    let output = run(&[&empty, &garbage], "6h");
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    let name = garbage.display().to_string();
    assert!(
        stderr.contains(&format!("warning: skipped 3 unreadable lines: {name}:1: ")),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("{name}:2: expected value")),
        "{stderr}"
    );
    assert!(
        stderr.contains("error: cannot make a demand report from ")
            && stderr.contains("no telemetry records (3 unreadable lines skipped)"),
        "{stderr}"
    );
    let missing = dir.path().join("missing.jsonl");
    let output = run(&[&missing], "6h");
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("cannot read history"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    // A directory without logs says what it expected.
    let output = run(&[dir.path().join("nothing").as_path()], "6h");
    assert_eq!(output.status.code(), Some(1));
    let bad_horizon = run(&[&empty], "soon");
    assert_eq!(bad_horizon.status.code(), Some(2));
}
