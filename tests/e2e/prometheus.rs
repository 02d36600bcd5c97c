//! Prometheus for real: the recording and alert rules of `deploy/prometheus/` pass `promtool
//! check rules` and their own `promtool test rules` unit tests; a real Prometheus server scrapes
//! three real nodes with those rules loaded, and a fleet query answers with all three; and every
//! metric name the rules, the Grafana dashboard (`deploy/grafana/ballast.json`) and
//! `ballast forecast report --prometheus` read is one that `/metrics` serves, every recorded name
//! one the rules define.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use crate::engines::{Prometheus, start_nodes};
use crate::fleet::NODE_CONFIG;

fn deploy() -> PathBuf {
    ballast_testkit::plugins::workspace_root().join("deploy")
}

/// The files in `dir` whose names end with `suffix`, sorted.
fn files(dir: &Path, suffix: &str) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
        .flatten()
        .map(|entry| entry.path())
        .filter(|path| {
            path.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.ends_with(suffix))
        })
        .collect();
    found.sort();
    found
}

fn promtool(args: &[&str], files: &[PathBuf]) -> String {
    let output = Command::new("promtool")
        .args(args)
        .args(files)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run promtool (Debian package prometheus; `cargo xtask ci` installs it): {e}"
            )
        });
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.status.success(),
        "promtool {} failed:\n{text}",
        args.join(" ")
    );
    text
}

/// The values of `key: VALUE` lines in a YAML file of ours (rule and test files keep each such
/// key on a line of its own).
fn yaml_values(text: &str, key: &str) -> BTreeSet<String> {
    text.lines()
        .filter_map(|line| {
            line.trim()
                .trim_start_matches("- ")
                .strip_prefix(key)?
                .strip_prefix(':')
                .map(|v| v.trim().trim_matches('"').to_owned())
        })
        .collect()
}

#[test]
fn rules_pass_promtool_and_every_alert_has_a_unit_test() {
    let dir = deploy().join("prometheus");
    let rules = files(&dir, ".rules.yml");
    let tests = files(&dir.join("tests"), ".test.yml");
    assert!(rules.len() >= 2, "rule files: {rules:?}");
    assert!(!tests.is_empty(), "no promtool tests in {}", dir.display());
    let checked = promtool(&["check", "rules"], &rules);
    assert!(checked.contains("SUCCESS"), "{checked}");
    let tested = promtool(&["test", "rules"], &tests);
    assert!(!tested.contains("FAILED"), "{tested}");

    let test_text: String = tests
        .iter()
        .map(|t| std::fs::read_to_string(t).unwrap())
        .collect();
    for rule_file in &rules {
        let name = rule_file.file_name().unwrap().to_str().unwrap();
        assert!(
            test_text.contains(&format!("../{name}")),
            "no promtool test loads {name}"
        );
        let text = std::fs::read_to_string(rule_file).unwrap();
        for alert in yaml_values(&text, "alert") {
            assert!(
                test_text.contains(&format!("alertname: {alert}\n")),
                "alert {alert} of {name} has no promtool test"
            );
        }
        for record in yaml_values(&text, "record") {
            assert!(
                test_text.contains(&format!("expr: {record}")),
                "recording rule {record} of {name} has no promtool test"
            );
        }
    }
}

/// What a PromQL expression (or a Grafana query) reads: the names of series it selects, metric
/// names (`ballast_...`, `up`) and recorded names (`level:metric:operations`), leaving out
/// strings, label matchers, ranges, Grafana's `$variables` and the language's own words.
fn names_in(expr: &str) -> BTreeSet<String> {
    const WORDS: [&str; 23] = [
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
        "and",
        "or",
        "unless",
        "bool",
        "offset",
        "sum",
        "avg",
        "min",
        "max",
        "count",
        "group",
        "stddev",
        "stdvar",
        "topk",
        "bottomk",
        "quantile",
        "count_values",
    ];
    let mut names = BTreeSet::new();
    let chars: Vec<char> = expr.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        match c {
            '"' | '\'' | '`' => {
                i += 1;
                while i < chars.len() && chars[i] != c {
                    i += if chars[i] == '\\' { 2 } else { 1 };
                }
                i += 1;
            }
            '{' | '[' => {
                let close = if c == '{' { '}' } else { ']' };
                while i < chars.len() && chars[i] != close {
                    i += 1;
                }
                i += 1;
            }
            '$' => {
                i += 1;
                while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                    i += 1;
                }
            }
            c if c.is_ascii_alphabetic() || c == '_' || c == ':' => {
                let start = i;
                while i < chars.len()
                    && (chars[i].is_ascii_alphanumeric() || chars[i] == '_' || chars[i] == ':')
                {
                    i += 1;
                }
                let word: String = chars[start..i].iter().collect();
                // A function call or a grouping's label list follows a name with `(`.
                let rest = chars[i..].iter().find(|c| !c.is_whitespace());
                let called = rest == Some(&'(');
                let grouping = names_before_paren(&chars[..start]);
                if !called && !grouping && !WORDS.contains(&word.as_str()) {
                    names.insert(word);
                }
            }
            c if c.is_ascii_digit() || c == '.' => {
                // A number, perhaps with a unit (5m) or an exponent: not a name.
                while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.') {
                    i += 1;
                }
            }
            _ => i += 1,
        }
    }
    names
}

/// Whether the text before a word ends inside a grouping's label list: `by (`, `on (a, `.
fn names_before_paren(before: &[char]) -> bool {
    let text: String = before.iter().collect();
    let Some(open) = text.rfind('(') else {
        return false;
    };
    if text[open..].contains(')') {
        return false;
    }
    let head = text[..open].trim_end();
    [
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
    ]
    .iter()
    .any(|w| head.ends_with(w))
}

/// Every series name a scrape of `/metrics` (OpenMetrics) serves: each declared family's sample
/// names by its type.
fn served_names(openmetrics: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in openmetrics.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split_whitespace();
            let (Some(name), Some(kind)) = (parts.next(), parts.next()) else {
                continue;
            };
            let suffixes: &[&str] = match kind {
                "counter" => &["_total", "_created"],
                "histogram" => &["_bucket", "_sum", "_count", "_created"],
                "summary" => &["", "_sum", "_count", "_created"],
                _ => &[""],
            };
            for suffix in suffixes {
                names.insert(format!("{name}{suffix}"));
            }
        } else if !line.starts_with('#')
            && let Some(name) = line.split(['{', ' ']).next().filter(|n| !n.is_empty())
        {
            names.insert(name.to_owned());
        }
    }
    names
}

/// Every `expr` of the Grafana dashboard's panels and every query of its variables.
fn dashboard_queries(dashboard: &Value) -> Vec<String> {
    let mut queries = Vec::new();
    fn walk(value: &Value, queries: &mut Vec<String>) {
        match value {
            Value::Object(map) => {
                for (key, v) in map {
                    match (key.as_str(), v) {
                        ("expr", Value::String(expr)) => queries.push(expr.clone()),
                        ("definition", Value::String(query)) => queries.push(
                            query
                                .trim_start_matches("label_values(")
                                .trim_end_matches(')')
                                .split(',')
                                .next()
                                .unwrap_or_default()
                                .to_owned(),
                        ),
                        _ => walk(v, queries),
                    }
                }
            }
            Value::Array(items) => items.iter().for_each(|v| walk(v, queries)),
            _ => {}
        }
    }
    walk(dashboard, &mut queries);
    queries
}

#[test]
fn query_names_leave_out_strings_matchers_ranges_variables_and_functions() {
    let names = names_in(
        r#"sum by (job, plugin) (rate(ballast_decisions_total{rule="emergency", job="$job"}[$__rate_interval])) > 0
           or ballast_x unless on (instance) job_plugin:ballast_plugin_shed:ratio offset 5m
           and histogram_quantile(0.95, sum by (le) (rate(ballast_y_bucket[5m]))) >= bool 1e3"#,
    );
    assert_eq!(
        names.into_iter().collect::<Vec<_>>(),
        [
            "ballast_decisions_total",
            "ballast_x",
            "ballast_y_bucket",
            "job_plugin:ballast_plugin_shed:ratio"
        ]
    );
    let served = served_names(
        "# TYPE ballast_a counter\n# TYPE ballast_b histogram\n# TYPE ballast_c gauge\nballast_c 1\n# EOF\n",
    );
    for name in [
        "ballast_a_total",
        "ballast_b_bucket",
        "ballast_b_count",
        "ballast_c",
    ] {
        assert!(served.contains(name), "{name} in {served:?}");
    }
    assert!(!served.contains("ballast_a"));
}

#[test]
fn prometheus_scrapes_the_fleet_and_the_rules_and_dashboard_read_only_served_metrics() {
    let mut nodes = start_nodes(3, NODE_CONFIG, false);
    // voice off on node 2 (an operator pin), so the fleet figures are not all alike.
    let (status, body) = nodes[1].daemon.post("/plugins/voice/disable", "").unwrap();
    assert_eq!(status, 200, "{body}");
    nodes[1]
        .daemon
        .wait_until(Duration::from_secs(30), "voice off on node 2", |d| {
            d.get("/plugins/voice/ready")
                .is_ok_and(|(status, _)| status == 503)
        });

    let dir = tempfile::tempdir().unwrap();
    let rules = files(&deploy().join("prometheus"), ".rules.yml");
    let targets: Vec<String> = nodes
        .iter()
        .map(|n| format!("\"127.0.0.1:{}\"", n.daemon.port))
        .collect();
    let config = format!(
        "global:\n  scrape_interval: 500ms\n  scrape_timeout: 400ms\n  evaluation_interval: 500ms\n\
         rule_files:\n{}\
         scrape_configs:\n  - job_name: ballast\n    static_configs:\n      - targets: [{}]\n",
        rules
            .iter()
            .map(|r| format!("  - \"{}\"\n", r.display()))
            .collect::<String>(),
        targets.join(", ")
    );
    let mut prometheus = Prometheus::start(dir.path(), &config);

    // The fleet queries answer with all three nodes.
    let waited = ballast_testkit::wait_for(
        "the fleet's recording rules over three nodes",
        Duration::from_secs(90),
        Duration::from_millis(200),
        || {
            let ready = prometheus.query("job:ballast_ready:sum");
            let voice =
                prometheus.query(r#"job_plugin:ballast_plugin_ready:ratio{plugin="voice"}"#);
            ready.first().is_some_and(|(_, v)| *v == 3.0)
                && voice
                    .first()
                    .is_some_and(|(_, v)| (*v - 2.0 / 3.0).abs() < 1e-9)
        },
    );
    if let Err(error) = waited {
        panic!(
            "{error}: job:ballast_ready:sum = {:?}, voice ready ratio = {:?}",
            prometheus.query("job:ballast_ready:sum"),
            prometheus.query("job_plugin:ballast_plugin_ready:ratio")
        );
    }
    let per_node = prometheus.query(r#"ballast_plugin_ready{plugin="voice"}"#);
    let instances: BTreeSet<String> = per_node
        .iter()
        .map(|(labels, _)| labels["instance"].clone())
        .collect();
    assert_eq!(instances.len(), 3, "{per_node:?}");
    let shed = prometheus.query(r#"job_plugin:ballast_plugin_shed:ratio{plugin="voice"}"#);
    // Pinned off is not shed: the share of nodes with voice shed stays 0.
    assert_eq!(shed.first().map(|(_, v)| *v), Some(0.0), "{shed:?}");

    // Every rule loaded and evaluated without an error.
    let groups = prometheus.api("rules");
    let mut queries = Vec::new();
    let mut recorded = BTreeSet::new();
    for group in groups["groups"].as_array().unwrap() {
        for rule in group["rules"].as_array().unwrap() {
            assert_eq!(rule["health"], "ok", "{rule}");
            queries.push(rule["query"].as_str().unwrap().to_owned());
            if rule["type"] == "recording" {
                recorded.insert(rule["name"].as_str().unwrap().to_owned());
            }
        }
    }
    assert!(queries.len() >= 17, "{groups}");

    // The names they read are served by /metrics (or recorded by the rules). A family shows
    // once it has a series: a call on each node (refused on node 2) and node 2's pin (a
    // decision) give the call and decision families theirs.
    let mut served = BTreeSet::new();
    for node in &nodes {
        let _ = node.daemon.post("/plugins/voice/call", "hello");
        let (status, metrics) = ballast_testkit::http::request(
            "GET",
            &format!("{}/metrics", node.daemon.url),
            b"",
            &[("Accept", "application/openmetrics-text")],
        )
        .unwrap();
        assert_eq!(status, 200);
        served.extend(served_names(&metrics));
    }

    let dashboard_path = deploy().join("grafana/ballast.json");
    let dashboard: Value = serde_json::from_str(&std::fs::read_to_string(&dashboard_path).unwrap())
        .unwrap_or_else(|e| panic!("{} is not JSON: {e}", dashboard_path.display()));
    let dashboard = dashboard_queries(&dashboard);
    assert!(dashboard.len() >= 15, "{dashboard:?}");
    // And those of `ballast forecast report --prometheus`.
    let report = ballast_lab::forecast::prometheus::Queries::new(r#"job="ballast""#);
    let report = [report.calls, report.states, report.shed, report.utilization];
    let mut unknown = Vec::new();
    for (source, query) in queries
        .iter()
        .map(|q| ("rules", q))
        .chain(dashboard.iter().map(|q| ("dashboard", q)))
        .chain(report.iter().map(|q| ("forecast report --prometheus", q)))
    {
        for name in names_in(query) {
            let known = if name.contains(':') {
                recorded.contains(&name)
            } else {
                served.contains(&name) || name == "up"
            };
            if !known {
                unknown.push(format!("{source}: `{name}` in {query}"));
            }
        }
    }
    assert!(
        unknown.is_empty(),
        "names that /metrics does not serve and no rule records:\n{}",
        unknown.join("\n")
    );
    drop(prometheus);
    drop(nodes);
}
