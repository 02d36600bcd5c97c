//! `ballast forecast report --prometheus` against a real Prometheus server whose storage was
//! backfilled with `promtool tsdb create-blocks-from openmetrics` from real arrivals: the Azure
//! LLM traces in `../shared/traces/azure_llm_2023` (the test fails, naming the folder, where
//! they are missing), split across three nodes, as the counters a node's `/metrics` serves,
//! shifted to end two hours ago; the `code` trace's calls come from the caller `coder`, the
//! `conv` trace's from `chat`. On node 3 the `conv` plugin is shed for five minutes, and the
//! calls that reach it meanwhile are refused. The expected figures are counted here from the
//! trace's arrivals, not by the report's rules. Where `prometheus` or `promtool` is not
//! installed (the Debian package `prometheus`), the test prints `SKIPPED: ...` and passes.

use std::fmt::Write as _;
use std::path::Path;

use serde_json::Value;

use crate::engines::{Prometheus, on_path, skipped};
use crate::support::ballast;

/// The nodes' scrape interval here, and the report's step.
const STEP_MS: u64 = 10_000;
/// Which node each arrival goes to, by its index in its trace modulo 6: half to node1, a third
/// to node2, a sixth to node3.
const SPLIT: [usize; 6] = [0, 0, 0, 1, 1, 2];
const NODES: [&str; 3] = ["node1", "node2", "node3"];
const PLUGINS: [(&str, &str); 2] = [
    ("code", "AzureLLMInferenceTrace_code.csv"),
    ("conv", "AzureLLMInferenceTrace_conv.csv"),
];
/// Every state `ballast_plugin_state` has a series for.
const STATES: [&str; 8] = ballast_core::PluginState::NAMES;
/// The recent window, in minutes.
const HORIZON_MIN: u64 = 20;

/// Arrival times (ms since the epoch) of one trace.
fn arrivals(path: &Path) -> Vec<u64> {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    ballast_lab::trace::parse_arrivals(&path.display().to_string(), &text)
        .unwrap_or_else(|e| panic!("{e}"))
        .into_iter()
        .map(|at| at.as_millis())
        .collect()
}

/// One arrival, shifted: when, on which node, to which plugin.
struct Arrival {
    at: u64,
    node: usize,
    plugin: &'static str,
}

/// The world the metrics describe, on the grid of `STEP_MS` from `first` to `last`.
struct Fleet {
    arrivals: Vec<Arrival>,
    first: u64,
    last: u64,
    /// conv is shed on node3 from `outage.0` to `outage.1` (grid times): the calls that reach
    /// it in `(outage.0, outage.1]` are refused.
    outage: (u64, u64),
}

impl Fleet {
    fn refused(&self, a: &Arrival) -> bool {
        a.node == 2 && a.plugin == "conv" && a.at > self.outage.0 && a.at <= self.outage.1
    }

    /// Calls in `(from, to]`, of one node or all.
    fn calls(&self, node: Option<usize>, from: u64, to: u64) -> usize {
        self.arrivals
            .iter()
            .filter(|a| node.is_none_or(|n| a.node == n) && a.at > from && a.at <= to)
            .count()
    }

    /// A counter of one node's calls to `plugin`, refused or not, at each point of `grid`: the
    /// calls up to and including it. A refusals' counter starts at its first refusal, as the
    /// daemon makes an outcome's series at its first call.
    fn counts(&self, node: usize, plugin: &str, refused: bool, grid: &[u64]) -> Vec<(u64, usize)> {
        let mut times: Vec<u64> = self
            .arrivals
            .iter()
            .filter(|a| a.node == node && a.plugin == plugin && refused == self.refused(a))
            .map(|a| a.at)
            .collect();
        times.sort_unstable();
        grid.iter()
            .map(|&g| (g, times.partition_point(|&t| t <= g)))
            .filter(|&(_, n)| !refused || n > 0)
            .collect()
    }

    /// The nodes' series as OpenMetrics text: each series' samples together, in time order.
    fn openmetrics(&self) -> String {
        let mut out = String::new();
        let grid: Vec<u64> = (self.first..=self.last).step_by(STEP_MS as usize).collect();
        let labels = |node: usize, plugin: &str| {
            format!(
                r#"job="ballast",instance="{}",plugin="{plugin}""#,
                NODES[node]
            )
        };
        out.push_str("# TYPE ballast_plugin_call_duration_seconds histogram\n");
        for node in 0..NODES.len() {
            for (plugin, _) in PLUGINS {
                for outcome in ["ok", "degraded"] {
                    let counts = self.counts(node, plugin, outcome == "degraded", &grid);
                    for (g, n) in counts {
                        let _ = writeln!(
                            out,
                            "ballast_plugin_call_duration_seconds_count{{{},outcome=\"{outcome}\"}} {n} {}",
                            labels(node, plugin),
                            g as f64 / 1000.0
                        );
                    }
                }
            }
        }
        // By caller: each trace is one application's calls.
        out.push_str("# TYPE ballast_caller_calls counter\n");
        for (node, instance) in NODES.iter().enumerate() {
            for (plugin, _) in PLUGINS {
                for outcome in ["ok", "refused"] {
                    let counts = self.counts(node, plugin, outcome == "refused", &grid);
                    for (g, n) in counts {
                        let _ = writeln!(
                            out,
                            "ballast_caller_calls_total{{job=\"ballast\",instance=\"{}\",caller=\"{}\",outcome=\"{outcome}\"}} {n} {}",
                            instance,
                            caller(plugin),
                            g as f64 / 1000.0
                        );
                    }
                }
            }
        }
        let shed = |node: usize, plugin: &str, g: u64| {
            node == 2 && plugin == "conv" && g >= self.outage.0 && g < self.outage.1
        };
        out.push_str("# TYPE ballast_plugin_state gauge\n");
        for node in 0..NODES.len() {
            for (plugin, _) in PLUGINS {
                for state in STATES {
                    for g in &grid {
                        let now = if shed(node, plugin, *g) {
                            "disabled"
                        } else {
                            "enabled"
                        };
                        let _ = writeln!(
                            out,
                            "ballast_plugin_state{{{},state=\"{state}\"}} {} {}",
                            labels(node, plugin),
                            u8::from(now == state),
                            *g as f64 / 1000.0
                        );
                    }
                }
            }
        }
        out.push_str("# TYPE ballast_plugin_shed gauge\n");
        for node in 0..NODES.len() {
            for (plugin, _) in PLUGINS {
                for g in &grid {
                    let _ = writeln!(
                        out,
                        "ballast_plugin_shed{{{}}} {} {}",
                        labels(node, plugin),
                        u8::from(shed(node, plugin, *g)),
                        *g as f64 / 1000.0
                    );
                }
            }
        }
        out.push_str("# EOF\n");
        out
    }
}

/// The application each trace's calls come from.
fn caller(plugin: &str) -> &'static str {
    if plugin == "code" { "coder" } else { "chat" }
}

/// The traces split across the nodes and shifted so that the last grid time is two hours ago.
fn fleet(root: &Path) -> Fleet {
    let mut raw = Vec::new();
    for (plugin, file) in PLUGINS {
        for (i, at) in arrivals(&root.join(file)).into_iter().enumerate() {
            raw.push((at, SPLIT[i % SPLIT.len()], plugin));
        }
    }
    let first = raw.iter().map(|a| a.0).min().unwrap() / STEP_MS * STEP_MS;
    let last = raw.iter().map(|a| a.0).max().unwrap().div_ceil(STEP_MS) * STEP_MS;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let end = (now - 2 * 3_600_000) / STEP_MS * STEP_MS;
    let shift = end - last;
    // Fifteen to ten minutes before the end: inside the recent window.
    let outage = (end - 15 * 60_000, end - 10 * 60_000);
    Fleet {
        arrivals: raw
            .into_iter()
            .map(|(at, node, plugin)| Arrival {
                at: at + shift,
                node,
                plugin,
            })
            .collect(),
        first: first + shift,
        last: end,
        outage,
    }
}

fn assert_close(what: &str, got: &Value, expected: f64) {
    let got = got
        .as_f64()
        .unwrap_or_else(|| panic!("{what}: {got} is not a number"));
    assert!(
        (got - expected).abs() <= 1e-9 * expected.abs().max(1.0),
        "{what}: the report says {got}, the trace {expected}"
    );
}

/// The rates and surge factor of `(from, to]` split at `to - HORIZON_MIN`.
fn expected_rates(fleet: &Fleet, node: Option<usize>) -> (f64, f64, f64) {
    let recent_from = fleet.last - HORIZON_MIN * 60_000;
    let recent = fleet.calls(node, recent_from, fleet.last) as f64;
    let baseline = fleet.calls(node, fleet.first, recent_from) as f64;
    let recent_rate = recent / (HORIZON_MIN as f64 / 60.0);
    let baseline_rate = baseline / ((recent_from - fleet.first) as f64 / 3_600_000.0);
    (recent_rate, baseline_rate, recent_rate / baseline_rate)
}

fn report(url: &str, fleet: &Fleet, extra: &[&str]) -> std::process::Output {
    let end = format!("{}", fleet.last / 1000);
    let horizon = format!("{HORIZON_MIN}m");
    let mut args = vec![
        "forecast",
        "report",
        "--prometheus",
        url,
        "--end",
        &end,
        "--range",
        "2h",
        "--step",
        "10s",
        "--horizon",
        &horizon,
    ];
    args.extend_from_slice(extra);
    ballast().args(&args).output().expect("ballast runs")
}

#[test]
fn the_fleet_report_from_a_backfilled_prometheus_matches_the_trace() {
    let test = "the_fleet_report_from_a_backfilled_prometheus_matches_the_trace";
    for program in ["prometheus", "promtool"] {
        if !on_path(program) {
            skipped(
                test,
                &format!("`{program}` is not installed (the Debian package `prometheus`)"),
            );
            return;
        }
    }
    let root = ballast_testkit::plugins::workspace_root().join("../shared/traces/azure_llm_2023");
    assert!(
        root.is_dir(),
        "{} is missing: this test needs the Azure LLM traces there (see ../shared/traces/README.md)",
        root.display()
    );
    let fleet = fleet(&root);
    assert_eq!(fleet.arrivals.len(), 8819 + 19366);

    let dir = tempfile::tempdir().unwrap();
    let metrics = dir.path().join("fleet.om");
    std::fs::write(&metrics, fleet.openmetrics()).unwrap();
    let output = std::process::Command::new("promtool")
        .args(["tsdb", "create-blocks-from", "openmetrics"])
        .arg(&metrics)
        .arg(dir.path().join("data"))
        .output()
        .expect("promtool runs");
    assert!(
        output.status.success(),
        "promtool tsdb create-blocks-from openmetrics failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    // No scrape targets: the backfilled blocks are all it has.
    let prometheus = Prometheus::start(dir.path(), "global:\n  scrape_interval: 1m\n");

    let markdown = report(&prometheus.url, &fleet, &[]);
    let text = String::from_utf8_lossy(&markdown.stdout);
    assert!(
        markdown.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&markdown.stderr)
    );
    println!("{text}");
    assert!(text.contains("## Nodes"), "{text}");
    assert!(
        text.contains("- `conv on node3` shed 1 time, 5m in all"),
        "{text}"
    );

    let output = report(&prometheus.url, &fleet, &["--json"]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let json: Value = serde_json::from_slice(&output.stdout).expect("--json prints JSON");

    // The fleet in total, and each node.
    assert_eq!(json["from"], fleet.first, "{json}");
    assert_eq!(json["to"], fleet.last, "{json}");
    let (recent, baseline, surge) = expected_rates(&fleet, None);
    assert_close("fleet recent rate", &json["recent_request_rate"], recent);
    assert_close(
        "fleet baseline rate",
        &json["baseline_request_rate"],
        baseline,
    );
    assert_close("fleet surge factor", &json["surge_factor"], surge);
    let nodes = json["nodes"].as_array().expect("a list of nodes");
    assert_eq!(nodes.len(), 3, "{json}");
    let mut node_total = 0.0;
    for (i, node) in nodes.iter().enumerate() {
        assert_eq!(node["instance"], NODES[i]);
        let (recent, baseline, surge) = expected_rates(&fleet, Some(i));
        assert_close(
            &format!("{} recent rate", NODES[i]),
            &node["recent_request_rate"],
            recent,
        );
        assert_close(
            &format!("{} baseline rate", NODES[i]),
            &node["baseline_request_rate"],
            baseline,
        );
        assert_close(
            &format!("{} surge factor", NODES[i]),
            &node["surge_factor"],
            surge,
        );
        node_total += node["recent_request_rate"].as_f64().unwrap();
    }
    assert_close(
        "the nodes' recent rates added",
        &Value::from(node_total),
        recent,
    );

    // node3's outage: shed for 5 minutes in the recent window, its calls meanwhile refused.
    let refused = fleet.arrivals.iter().filter(|a| fleet.refused(a)).count() as f64;
    assert!(refused > 10.0, "{refused} calls in the outage");
    let node3 = &nodes[2];
    let outages = node3["plugin_outages"].as_array().unwrap();
    assert_eq!(outages.len(), 1, "{node3}");
    assert_eq!(outages[0]["plugin"], "conv");
    assert_eq!(outages[0]["state"], "shed");
    assert_eq!(outages[0]["episodes"], 1);
    assert_close("node3 conv time shed", &outages[0]["seconds"], 300.0);
    assert_eq!(outages[0]["ongoing"], false);
    let failures = node3["plugin_failures"].as_array().unwrap();
    assert_eq!(failures.len(), 1, "{node3}");
    assert_close("node3 conv refused", &failures[0]["refused_calls"], refused);
    assert_close("node3 conv failed", &failures[0]["failed_calls"], refused);
    let conv = node3["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["plugin"] == "conv")
        .expect("conv in node3's plugins");
    assert_eq!(conv["sheds"], 1, "{conv}");
    for node in &nodes[..2] {
        assert_eq!(node["plugin_outages"], Value::Array(vec![]), "{node}");
    }
    assert_eq!(
        json["plugin_outages"][0]["plugin"], "conv on node3",
        "{json}"
    );
    // The callers, over the fleet: chat's refused calls are its failures.
    let recent_from = fleet.last - HORIZON_MIN * 60_000;
    let recent_calls = |plugin: &str| {
        fleet
            .arrivals
            .iter()
            .filter(|a| a.plugin == plugin && a.at > recent_from && a.at <= fleet.last)
            .count() as f64
    };
    let callers = json["top_callers"].as_array().unwrap();
    assert_eq!(callers.len(), 2, "{json}");
    assert_eq!(callers[0]["caller"], "chat");
    assert_close(
        "chat's recent calls",
        &callers[0]["calls"],
        recent_calls("conv"),
    );
    assert_close(
        "chat's failure rate",
        &callers[0]["failure_rate"],
        refused / recent_calls("conv"),
    );
    assert_eq!(callers[1]["caller"], "coder");
    assert_close(
        "coder's recent calls",
        &callers[1]["calls"],
        recent_calls("code"),
    );
    assert_eq!(
        json["notes"],
        Value::Array(vec![Value::from(
            "no ballast_resource_utilization_ratio series: resource utilization is unknown"
        ),])
    );

    // A selector no series has: an error naming the URL and the query, no report.
    let empty = report(
        &prometheus.url,
        &fleet,
        &["--selector", r#"job="elsewhere""#],
    );
    let stderr = String::from_utf8_lossy(&empty.stderr);
    assert!(!empty.status.success(), "{stderr}");
    assert!(
        empty.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&empty.stdout)
    );
    assert!(stderr.contains(&prometheus.url), "{stderr}");
    assert!(
        stderr.contains(r#"ballast_plugin_call_duration_seconds_count{job="elsewhere"}"#),
        "{stderr}"
    );
    assert!(stderr.contains("has no series"), "{stderr}");

    // The same server behind TLS and basic auth, as Prometheus's web config sets them up: with
    // `--http-config` naming the CA that signed its certificate, a user and a password file,
    // the report is the same.
    drop(prometheus);
    let tls = Tls::new(dir.path());
    let secure = Prometheus::start_with(
        dir.path(),
        "global:\n  scrape_interval: 1m\n",
        Some(&tls.web_config),
        |url| tls.ready(url),
    );
    assert!(secure.url.starts_with("https://"), "{}", secure.url);
    let http_config = tls.http_config(dir.path(), "http.yml", USER_PASSWORD);
    let output = report(
        &secure.url,
        &fleet,
        &["--json", "--http-config", &http_config],
    );
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let mut over_tls: Value = serde_json::from_slice(&output.stdout).expect("--json prints JSON");
    let mut plain = json.clone();
    for report in [&mut over_tls, &mut plain] {
        report["source"] = Value::Null;
    }
    assert_eq!(over_tls, plain, "the same report over HTTPS");

    // Without the CA the certificate is not trusted; with a wrong password the server says
    // 401. Each is an error naming the URL, and no report.
    let wrong = tls.http_config(dir.path(), "wrong.yml", "not-the-password");
    for (extra, expected) in [
        (vec![], "certificate"),
        (vec!["--http-config", wrong.as_str()], "HTTP 401"),
    ] {
        let failed = report(&secure.url, &fleet, &extra);
        let stderr = String::from_utf8_lossy(&failed.stderr);
        assert!(!failed.status.success(), "{stderr}");
        assert!(failed.stdout.is_empty(), "{stderr}");
        assert!(stderr.contains(&secure.url), "{stderr}");
        assert!(stderr.contains(expected), "{expected}: {stderr}");
    }
}

/// The password of the user the HTTPS server lets in, and its bcrypt hash (cost 4, made once
/// with Python's `crypt.crypt(password, crypt.mksalt(crypt.METHOD_BLOWFISH, rounds=16))`), as
/// Prometheus's web config wants it.
const USER_PASSWORD: &str = "fleet-pass";
const USER_HASH: &str = "$2b$04$uhhmp1Bhno4QG9ngFNmIzOC05HagnWsUCnYw8AJbhLKsm6i0Itz32";

/// A CA made for the test, the server's certificate for 127.0.0.1 signed by it, and
/// Prometheus's web config serving them with the user `fleet`.
struct Tls {
    ca_pem: String,
    web_config: std::path::PathBuf,
}

impl Tls {
    fn new(dir: &Path) -> Tls {
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "ballast test CA");
        let ca =
            rcgen::CertifiedIssuer::self_signed(ca_params, rcgen::KeyPair::generate().unwrap())
                .unwrap();
        let server_key = rcgen::KeyPair::generate().unwrap();
        let server = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()])
            .unwrap()
            .signed_by(&server_key, &ca)
            .unwrap();
        std::fs::write(dir.join("server.pem"), server.pem()).unwrap();
        std::fs::write(dir.join("server-key.pem"), server_key.serialize_pem()).unwrap();
        let web_config = dir.join("web.yml");
        std::fs::write(
            &web_config,
            format!(
                "tls_server_config:\n  cert_file: server.pem\n  key_file: server-key.pem\nbasic_auth_users:\n  fleet: {USER_HASH}\n"
            ),
        )
        .unwrap();
        Tls {
            ca_pem: ca.pem(),
            web_config,
        }
    }

    /// Writes `name`, an HTTP client config trusting the CA (its file beside it) with the user
    /// `fleet` and `password` (in a file too); its path.
    fn http_config(&self, dir: &Path, name: &str, password: &str) -> String {
        std::fs::write(dir.join("ca.pem"), &self.ca_pem).unwrap();
        let password_file = format!("{name}.password");
        std::fs::write(dir.join(&password_file), format!("{password}\n")).unwrap();
        let path = dir.join(name);
        std::fs::write(
            &path,
            format!(
                "basic_auth:\n  username: fleet\n  password_file: {password_file}\ntls_config:\n  ca_file: ca.pem\n"
            ),
        )
        .unwrap();
        path.display().to_string()
    }

    /// Whether GET `url` over TLS, trusting the CA, as `fleet`, answers 200.
    fn ready(&self, url: &str) -> bool {
        let ca = ureq::tls::Certificate::from_pem(self.ca_pem.as_bytes()).unwrap();
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .tls_config(
                ureq::tls::TlsConfig::builder()
                    .root_certs(ureq::tls::RootCerts::new_with_certs(&[ca]))
                    .build(),
            )
            .timeout_global(Some(std::time::Duration::from_secs(2)))
            .build()
            .into();
        use base64::Engine as _;
        let auth =
            base64::engine::general_purpose::STANDARD.encode(format!("fleet:{USER_PASSWORD}"));
        agent
            .get(url)
            .header("Authorization", &format!("Basic {auth}"))
            .call()
            .is_ok_and(|r| r.status() == 200)
    }
}
