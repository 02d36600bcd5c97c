//! How the CLI clients print the API's answers for people: aligned tables and one line per
//! decision or event. Pure functions of the answer and "now", so tests can pin the output.

use std::fmt::Write as _;

use serde_json::Value;

use ballast_api::views::{PluginView, StatusView};
use ballast_core::Timestamp;
use ballast_core::format::{bytes, latency_us, table};

/// How long before `now_ms` a moment was, as `format::ago` says it.
pub fn ago(at: Timestamp, now_ms: u64) -> String {
    ballast_core::format::ago(at, Timestamp::from_millis(now_ms))
}

/// A moment in milliseconds since the epoch as RFC 3339.
pub fn clock(at_ms: u64) -> String {
    ballast_core::format::time(Timestamp::from_millis(at_ms))
}

fn ratio(value: Option<f64>) -> String {
    value.map_or_else(|| "-".to_owned(), |v| format!("{v:.2}"))
}

/// `ballast status` for people.
pub fn status_text(status: &StatusView, now_ms: u64) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "daemon   ballast {}, up {}, mode {}",
        status.version,
        ago(status.started_at, now_ms).trim_end_matches(" ago"),
        status.mode
    );
    match &status.tier {
        Some(tier) => {
            let _ = writeln!(
                out,
                "tier     {} (rank {}): {}",
                tier.name, tier.rank, tier.rule
            );
        }
        None => {
            let _ = writeln!(out, "tier     not detected yet");
        }
    }
    match status.sample_at {
        Some(at) => {
            let _ = writeln!(out, "sample   {}", ago(at, now_ms));
        }
        None => {
            let _ = writeln!(out, "sample   none yet");
        }
    }
    if let Some(memory) = status.sample.as_ref().and_then(|s| s.memory.value()) {
        let _ = writeln!(
            out,
            "memory   {} used of {}",
            bytes(memory.used_bytes),
            bytes(memory.total_bytes)
        );
    }
    let _ = writeln!(out);
    if status.resources.is_empty() {
        let _ = writeln!(out, "no resource measured yet");
    } else {
        let rows: Vec<Vec<String>> = status
            .resources
            .iter()
            .map(|r| {
                vec![
                    r.resource.to_string(),
                    ratio(r.value),
                    ratio(r.smoothed),
                    ratio(r.forecast),
                    ratio(r.confidence),
                    if r.anomaly { "anomaly" } else { "" }.to_owned(),
                ]
            })
            .collect();
        out.push_str(&table(
            &[
                "RESOURCE",
                "VALUE",
                "SMOOTHED",
                "FORECAST",
                "CONFIDENCE",
                "",
            ],
            &rows,
        ));
    }
    let _ = writeln!(out);
    let mut by_state: Vec<(String, Vec<String>)> = Vec::new();
    for p in &status.plugins {
        let name = match p.level {
            Some(level) if level > 0 => format!("{} (level {level})", p.name),
            _ => p.name.clone(),
        };
        match by_state.iter_mut().find(|(s, _)| *s == p.state) {
            Some((_, names)) => names.push(name),
            None => by_state.push((p.state.clone(), vec![name])),
        }
    }
    let summary: Vec<String> = by_state
        .iter()
        .map(|(state, names)| format!("{} {state} ({})", names.len(), names.join(", ")))
        .collect();
    let _ = writeln!(
        out,
        "plugins  {}",
        if summary.is_empty() {
            "none".to_owned()
        } else {
            summary.join("; ")
        }
    );
    out
}

/// `ballast plugins` for people.
pub fn plugins_table(plugins: &[PluginView], now_ms: u64) -> String {
    let rows: Vec<Vec<String>> = plugins
        .iter()
        .map(|p| {
            let mut state = p.state.clone();
            if let Some(pin) = p.scaler.as_ref().and_then(|s| s.pin.as_ref()) {
                state.push_str(if pin.target == "on" {
                    " (pinned on)"
                } else {
                    " (pinned off)"
                });
            }
            vec![
                p.name.clone(),
                state,
                p.level.map_or_else(|| "-".to_owned(), |l| l.to_string()),
                p.priority.to_string(),
                if p.essential { "yes" } else { "no" }.to_owned(),
                ago(p.since, now_ms),
                p.failure.clone().unwrap_or_else(|| p.reason.clone()),
                p.stats.calls.to_string(),
                p.stats.errors.to_string(),
                if p.stats.calls == 0 {
                    "-".to_owned()
                } else {
                    latency_us(p.stats.latency_p95_us)
                },
            ]
        })
        .collect();
    table(
        &[
            "NAME",
            "STATE",
            "LEVEL",
            "PRIORITY",
            "ESSENTIAL",
            "SINCE",
            "REASON",
            "CALLS",
            "ERRORS",
            "P95",
        ],
        &rows,
    )
}

/// One decision (as the API's JSON) on one line: time, kind, plugin, action, rule, reason.
pub fn format_decision(decision: &Value) -> String {
    let at = decision["at"]
        .as_u64()
        .map_or_else(|| "-".to_owned(), clock);
    let kind = decision["kind"].as_str().unwrap_or("?");
    let plugin = decision["plugin"].as_str().unwrap_or("-");
    let action = action_text(&decision["action"]);
    let rule = decision["rule"].as_str().unwrap_or("?");
    let applied = if decision["applied"].as_bool() == Some(false) && action != "none" {
        format!(
            " (not applied: {} mode)",
            decision["mode"].as_str().unwrap_or("?")
        )
    } else {
        String::new()
    };
    let reason = decision["reason"].as_str().unwrap_or("");
    format!("{at}  {kind:<10} {plugin:<10} {action:<14} [{rule}] {reason}{applied}")
}

fn action_text(action: &Value) -> String {
    match action["kind"].as_str() {
        Some("set_level") => format!("level {} -> {}", action["from"], action["to"]),
        Some("enable") => format!("enable at {}", action["level"]),
        Some("set_concurrency") => match action["limit"].as_u64() {
            Some(n) => format!("concurrency {n}"),
            None => "concurrency default".to_owned(),
        },
        Some(other) => other.to_owned(),
        None => "?".to_owned(),
    }
}

/// One event of the stream (its type and its JSON) on one line for people.
pub fn format_event(kind: &str, event: &Value) -> String {
    let at = event["at"]
        .as_u64()
        .or_else(|| event["detected_at"].as_u64())
        .map_or_else(|| "-".to_owned(), clock);
    let text = match kind {
        "decision" | "warning" => return format!("{kind:<10} {}", format_decision(event)),
        "sample" => {
            let mut parts = Vec::new();
            if let Some(m) = event["memory"].get("value") {
                let total = m["total_bytes"].as_f64().unwrap_or(0.0);
                let available = m["available_bytes"].as_f64().unwrap_or(0.0);
                if total > 0.0 {
                    parts.push(format!("memory {:.2}", 1.0 - available / total));
                }
            }
            if let Some(u) = event["cpu"]
                .get("value")
                .and_then(|c| c["utilization"].as_f64())
            {
                parts.push(format!("cpu {u:.2}"));
            }
            for resource in ["memory", "cpu", "io"] {
                if let Some(v) = event["psi"][resource]
                    .get("value")
                    .and_then(|p| p["some"]["avg10"].as_f64())
                {
                    parts.push(format!("psi.{resource} {v:.1}%"));
                }
            }
            parts.join("  ")
        }
        "assessment" => event["resources"]
            .as_array()
            .map(|rs| {
                rs.iter()
                    .map(|r| {
                        let mut text = format!(
                            "{} {:.2}",
                            r["resource"].as_str().unwrap_or("?"),
                            r["smoothed"].as_f64().unwrap_or(f64::NAN)
                        );
                        if let Some(f) = r["forecast"].as_object() {
                            let _ = write!(
                                text,
                                " -> {:.2} ({:.0}%)",
                                f.get("value").and_then(Value::as_f64).unwrap_or(f64::NAN),
                                100.0 * f.get("confidence").and_then(Value::as_f64).unwrap_or(0.0)
                            );
                        }
                        text
                    })
                    .collect::<Vec<_>>()
                    .join("  ")
            })
            .unwrap_or_default(),
        "plugin" => {
            let plugin = event["plugin"].as_str().unwrap_or("?");
            match event["kind"]["event"].as_str() {
                Some("state_changed") => format!(
                    "{plugin}: {} -> {}: {}",
                    state_text(&event["kind"]["from"]),
                    state_text(&event["kind"]["to"]),
                    event["kind"]["reason"].as_str().unwrap_or("")
                ),
                Some("reported") => format!(
                    "{plugin}: reports {}: {}",
                    if event["kind"]["healthy"].as_bool() == Some(true) {
                        "healthy"
                    } else {
                        "unhealthy"
                    },
                    event["kind"]["message"].as_str().unwrap_or("")
                ),
                Some("alert") => format!(
                    "{plugin}: {}: {}",
                    event["kind"]["alert"].as_str().unwrap_or("?"),
                    event["kind"]["message"].as_str().unwrap_or("")
                ),
                Some("stats") => format!(
                    "{plugin}: {} calls, {} errors, {} live",
                    event["kind"]["calls"],
                    event["kind"]["errors"],
                    bytes(event["kind"]["live_bytes"].as_u64().unwrap_or(0))
                ),
                _ => format!("{plugin}: {}", event["kind"]),
            }
        }
        "tier" => format!(
            "tier {} (rank {}): {}",
            event["name"].as_str().unwrap_or("?"),
            event["rank"],
            event["rule"].as_str().unwrap_or("")
        ),
        other => format!("{other}: {event}"),
    };
    format!("{kind:<10} {at}  {text}")
}

fn state_text(state: &Value) -> String {
    match state["state"].as_str() {
        Some("enabled") => format!("enabled (level {})", state["level"]),
        Some(other) => other.to_owned(),
        None => "?".to_owned(),
    }
}
