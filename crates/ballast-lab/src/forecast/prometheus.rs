//! `ballast forecast report --prometheus URL`: the demand report of a fleet, made from range
//! queries to the Prometheus server that scrapes its nodes, per node (by the `instance` label)
//! and in total.
//!
//! What the report needs, and where it comes from:
//!
//! * calls, failures and refusals: `ballast_plugin_call_duration_seconds_count{plugin,outcome}`
//!   (the calls the API routed, by outcome: the same calls as the logs' `calls` tallies). The
//!   counters' values are differenced here, step by step (a value that falls is a restart:
//!   counting starts again from zero), so that the counts are exact, without the extrapolation
//!   of PromQL's `increase`;
//! * outages: `ballast_plugin_state{plugin,state}`, read at each step (an outage shorter than
//!   the step can fall between two steps; the reason of a state change is only in the node's
//!   logs);
//! * sheds: the times `ballast_plugin_shed` went from 0 to 1 (held off for pressure; a lowered
//!   level is not counted);
//! * resources: `ballast_resource_utilization_ratio{resource}`;
//! * top callers: `ballast_caller_calls_total{caller,outcome}`, differenced the same way. The
//!   daemon gives the first 32 callers series of their own and counts the rest as `other`;
//!   nodes that do not serve it leave the top callers out, with a note.
//!
//! The answers' parsing and their translation into [`Inputs`] are pure functions; [`Prometheus`]
//! is the HTTP shell. Every failure names the server's URL and the query: one that cannot be
//! reached, does not answer within the timeout, answers an HTTP error or `"status": "error"`, or
//! has no series for the calls. A report is never made of zeros that were not measured.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::time::Duration;

use ballast_core::telemetry::CallSummary;
use ballast_core::{Resource, Timestamp};
use serde::Serialize;

use super::report::{
    DemandReport, Inputs, OutOfService, ReportError, ServiceChange, markdown, rate_text,
    report_from,
};

/// The most points a range query may return per series (Prometheus refuses more than 11,000).
pub const MAX_POINTS: u64 = 11_000;

/// The label that names a node.
const NODE_LABEL: &str = "instance";

/// One series of a range query's answer.
#[derive(Clone, Debug, PartialEq)]
pub struct Series {
    /// Its labels.
    pub labels: BTreeMap<String, String>,
    /// Its points, in time order; values that are not finite are left out.
    pub points: Vec<(Timestamp, f64)>,
}

impl Series {
    fn label(&self, name: &str) -> &str {
        self.labels.get(name).map_or("", String::as_str)
    }
}

/// Why a query got no usable answer. Each names the server and the query.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// No connection could be made.
    #[error("cannot reach Prometheus at {url} ({reason}) for the query `{query}`")]
    Unreachable {
        /// The server.
        url: String,
        /// The query.
        query: String,
        /// Why.
        reason: String,
    },
    /// No answer within the timeout.
    #[error(
        "Prometheus at {url} did not answer the query `{query}` within {timeout} (--timeout); \
         is it overloaded, or is the range too long for the step?"
    )]
    Timeout {
        /// The server.
        url: String,
        /// The query.
        query: String,
        /// The timeout.
        timeout: String,
    },
    /// An HTTP error status without Prometheus's error body.
    #[error("Prometheus at {url} answered the query `{query}` with HTTP {status}: {body}")]
    Http {
        /// The server.
        url: String,
        /// The query.
        query: String,
        /// The status.
        status: u16,
        /// The start of the body.
        body: String,
    },
    /// Prometheus's `"status": "error"`.
    #[error("Prometheus at {url} refused the query `{query}` ({kind}): {message}")]
    Refused {
        /// The server.
        url: String,
        /// The query.
        query: String,
        /// Its `errorType`.
        kind: String,
        /// Its `error`.
        message: String,
    },
    /// An answer that is not a range query's.
    #[error("Prometheus at {url} answered the query `{query}` with {what}")]
    Malformed {
        /// The server.
        url: String,
        /// The query.
        query: String,
        /// What was wrong with the answer.
        what: String,
    },
    /// No series at all where the report needs some.
    #[error(
        "Prometheus at {url} has no series for the query `{query}` from {from} to {to}: {hint}"
    )]
    Empty {
        /// The server.
        url: String,
        /// The query.
        query: String,
        /// The range's start.
        from: Timestamp,
        /// The range's end.
        to: Timestamp,
        /// What to check.
        hint: String,
    },
}

/// What is wrong with a range query's answer (its body), if anything: its series otherwise.
/// `Err` holds Prometheus's own `(errorType, error)` when it says `"status": "error"`, else
/// `("", what is wrong)`.
pub fn parse_matrix(body: &str) -> Result<Vec<Series>, (String, String)> {
    let malformed = |what: String| (String::new(), what);
    let value: serde_json::Value = serde_json::from_str(body).map_err(|e| {
        malformed(format!(
            "a body that is not JSON ({e}): {}",
            excerpt(body, 200)
        ))
    })?;
    match value["status"].as_str() {
        Some("success") => {}
        Some("error") => {
            return Err((
                value["errorType"].as_str().unwrap_or("unknown").to_owned(),
                value["error"].as_str().unwrap_or("no message").to_owned(),
            ));
        }
        _ => {
            return Err(malformed(format!(
                "JSON without `\"status\": \"success\"`: {}",
                excerpt(body, 200)
            )));
        }
    }
    let data = &value["data"];
    if data["resultType"] != "matrix" {
        return Err(malformed(format!(
            "a result of type {} where a range query gives a matrix",
            data["resultType"]
        )));
    }
    let Some(result) = data["result"].as_array() else {
        return Err(malformed("a matrix without a `result` array".to_owned()));
    };
    let mut all = Vec::with_capacity(result.len());
    for (i, series) in result.iter().enumerate() {
        let labels = series["metric"]
            .as_object()
            .map(|m| {
                m.iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
                    .collect()
            })
            .unwrap_or_default();
        let Some(values) = series["values"].as_array() else {
            return Err(malformed(format!("series {i} without `values`")));
        };
        let mut points = Vec::with_capacity(values.len());
        for point in values {
            let (Some(at), Some(v)) = (point[0].as_f64(), point[1].as_str()) else {
                return Err(malformed(format!(
                    "series {i} has a point that is not [time, \"value\"]: {point}"
                )));
            };
            let v: f64 = v.parse().map_err(|_| {
                malformed(format!(
                    "series {i} has a value that is not a number: {v:?}"
                ))
            })?;
            if v.is_finite() && at.is_finite() && at >= 0.0 {
                points.push((Timestamp::from_millis((at * 1000.0).round() as u64), v));
            }
        }
        points.sort_by_key(|p| p.0);
        all.push(Series { labels, points });
    }
    Ok(all)
}

fn excerpt(text: &str, n: usize) -> String {
    let text = text.trim();
    match text.char_indices().nth(n) {
        Some((cut, _)) => format!("{}...", &text[..cut]),
        None => text.to_owned(),
    }
}

/// The range the queries cover.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Range {
    /// The first step.
    pub start: Timestamp,
    /// The last.
    pub end: Timestamp,
    /// Between steps.
    pub step: Duration,
}

/// A Prometheus server's HTTP API, for range queries.
pub struct Prometheus {
    url: String,
    timeout: Duration,
    agent: ureq::Agent,
    authorization: Option<String>,
}

impl Prometheus {
    /// A client of the server at `url` (`http://host:port` or `https://...`, with a path prefix
    /// if it has one), each query given at most `timeout`, made as `http` says (authorization,
    /// TLS, redirects).
    pub fn new(url: &str, timeout: Duration, http: &HttpConfig) -> anyhow::Result<Prometheus> {
        let url = url.trim_end_matches('/').to_owned();
        if !url.starts_with("http://") && !url.starts_with("https://") {
            anyhow::bail!(
                "--prometheus must be an http:// or https:// URL like http://localhost:9090, got `{url}`"
            );
        }
        let mut config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(timeout));
        if let Some(tls) = http.tls() {
            config = config.tls_config(tls.clone());
        }
        if !http.follow_redirects() {
            config = config.max_redirects(0).max_redirects_will_error(false);
        }
        Ok(Prometheus {
            url,
            timeout,
            agent: config.build().into(),
            authorization: http.authorization().map(str::to_owned),
        })
    }

    /// The series `query` gives over `range`.
    pub fn query_range(&self, query: &str, range: Range) -> Result<Vec<Series>, QueryError> {
        let endpoint = format!("{}/api/v1/query_range", self.url);
        let form = [
            ("query", query.to_owned()),
            ("start", format!("{:.3}", range.start.as_secs_f64())),
            ("end", format!("{:.3}", range.end.as_secs_f64())),
            ("step", format!("{}", range.step.as_secs_f64())),
        ];
        let url = self.url.clone();
        let query_text = query.to_owned();
        let mut request = self.agent.post(&endpoint);
        if let Some(authorization) = &self.authorization {
            request = request.header("Authorization", authorization);
        }
        let response = request.send_form(form);
        let mut response = match response {
            Ok(response) => response,
            Err(error) => return Err(self.failed(query, &error)),
        };
        let status = response.status().as_u16();
        let body = match response
            .body_mut()
            .with_config()
            .limit(512 << 20)
            .read_to_string()
        {
            Ok(body) => body,
            Err(error) => return Err(self.failed(query, &error)),
        };
        match parse_matrix(&body) {
            Ok(series) if (200..300).contains(&status) => Ok(series),
            Ok(_) => Err(QueryError::Http {
                url,
                query: query_text,
                status,
                body: excerpt(&body, 300),
            }),
            Err((kind, message)) if !kind.is_empty() => Err(QueryError::Refused {
                url,
                query: query_text,
                kind,
                message,
            }),
            Err(_) if !(200..300).contains(&status) => Err(QueryError::Http {
                url,
                query: query_text,
                status,
                body: match status {
                    401 | 403 => format!(
                        "{} (credentials go in --http-config: basic_auth, authorization or bearer_token_file)",
                        excerpt(&body, 300)
                    ),
                    _ => excerpt(&body, 300),
                },
            }),
            Err((_, what)) => Err(QueryError::Malformed {
                url,
                query: query_text,
                what,
            }),
        }
    }

    fn failed(&self, query: &str, error: &ureq::Error) -> QueryError {
        let timed_out = match error {
            ureq::Error::Timeout(_) => true,
            ureq::Error::Io(e) => matches!(
                e.kind(),
                std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock
            ),
            _ => false,
        };
        if timed_out {
            return QueryError::Timeout {
                url: self.url.clone(),
                query: query.to_owned(),
                timeout: humantime::format_duration(self.timeout).to_string(),
            };
        }
        let reason = match error {
            ureq::Error::Io(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                "connection refused".to_owned()
            }
            ureq::Error::ConnectionFailed => "connection failed".to_owned(),
            ureq::Error::HostNotFound => "host not found".to_owned(),
            other if other.to_string().contains("certificate") => format!(
                "{other}; trust the CA that signed the server's certificate with --http-config's tls_config.ca_file"
            ),
            other => other.to_string(),
        };
        QueryError::Unreachable {
            url: self.url.clone(),
            query: query.to_owned(),
            reason,
        }
    }
}

/// The queries, for the nodes `selector` picks (label matchers, e.g. `job="ballast"`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Queries {
    /// Calls by node, plugin and outcome.
    pub calls: String,
    /// Plugin states by node.
    pub states: String,
    /// Whether each plugin is shed, by node.
    pub shed: String,
    /// Utilization by node and resource.
    pub utilization: String,
    /// Calls by node, caller and outcome.
    pub callers: String,
}

impl Queries {
    /// The queries for `selector`.
    pub fn new(selector: &str) -> Queries {
        Queries {
            calls: format!(
                "sum by ({NODE_LABEL}, plugin, outcome) \
                 (ballast_plugin_call_duration_seconds_count{{{selector}}})"
            ),
            states: format!(
                "max by ({NODE_LABEL}, plugin, state) (ballast_plugin_state{{{selector}}}) == 1"
            ),
            shed: format!("max by ({NODE_LABEL}, plugin) (ballast_plugin_shed{{{selector}}})"),
            utilization: format!(
                "avg by ({NODE_LABEL}, resource) \
                 (ballast_resource_utilization_ratio{{{selector}}})"
            ),
            callers: format!(
                "sum by ({NODE_LABEL}, caller, outcome) (ballast_caller_calls_total{{{selector}}})"
            ),
        }
    }
}

/// The answers to [`Queries`].
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Answers {
    /// To [`Queries::calls`].
    pub calls: Vec<Series>,
    /// To [`Queries::states`].
    pub states: Vec<Series>,
    /// To [`Queries::shed`].
    pub shed: Vec<Series>,
    /// To [`Queries::utilization`].
    pub utilization: Vec<Series>,
    /// To [`Queries::callers`].
    pub callers: Vec<Series>,
}

/// Asks `prometheus` every query over `range`. No series for the calls is an error (the report
/// would be zeros); no series for the others leaves those figures out, with a note.
pub fn fetch(
    prometheus: &Prometheus,
    queries: &Queries,
    range: Range,
) -> Result<Answers, QueryError> {
    let calls = prometheus.query_range(&queries.calls, range)?;
    if calls.iter().all(|s| s.points.is_empty()) {
        return Err(QueryError::Empty {
            url: prometheus.url.clone(),
            query: queries.calls.clone(),
            from: range.start,
            to: range.end,
            hint: "does it scrape the nodes' /metrics with these labels (--selector), did the \
                   nodes take calls through their API, and is the range (--end, --range) when \
                   they ran?"
                .to_owned(),
        });
    }
    Ok(Answers {
        calls,
        states: prometheus.query_range(&queries.states, range)?,
        shed: prometheus.query_range(&queries.shed, range)?,
        utilization: prometheus.query_range(&queries.utilization, range)?,
        callers: prometheus.query_range(&queries.callers, range)?,
    })
}

/// A node's share of the answers.
#[derive(Default)]
struct NodeSeries<'a> {
    calls: Vec<&'a Series>,
    states: Vec<&'a Series>,
    shed: Vec<&'a Series>,
    utilization: Vec<&'a Series>,
    callers: Vec<&'a Series>,
}

/// The increases of every outcome's counter in `series`, tallied per `key` (plugin and caller)
/// and step: every outcome but `ok` is a failure, and a refusal (`degraded`, `shed`, `refused`)
/// counts as degraded too.
fn tally(
    series: &[&Series],
    node_start: Timestamp,
    key: impl Fn(&Series) -> (String, String),
) -> Vec<CallSummary> {
    let mut tallies: BTreeMap<(String, String, Timestamp, Timestamp), CallSummary> =
        BTreeMap::new();
    for s in series {
        let (plugin, caller) = key(s);
        let outcome = s.label("outcome");
        for (a, b, increase) in increases(&s.points, node_start) {
            let n = increase.round() as u64;
            let tally = tallies
                .entry((plugin.clone(), caller.clone(), a, b))
                .or_insert_with(|| CallSummary {
                    from: a,
                    to: b,
                    plugin: plugin.clone(),
                    caller: caller.clone(),
                    calls: 0,
                    failures: 0,
                    degraded: 0,
                    latency_total_us: 0,
                    latency_max_us: 0,
                });
            tally.calls += n;
            if outcome != "ok" {
                tally.failures += n;
            }
            if matches!(outcome, "degraded" | "shed" | "refused") {
                tally.degraded += n;
            }
        }
    }
    tallies.into_values().collect()
}

/// The calls a counter's points count in each step: `(from, to, increase)`. A value that falls
/// is a restart (the counter counted from zero since); a series that first shows after
/// `node_start` was created then, so its first value counts too.
fn increases(
    points: &[(Timestamp, f64)],
    node_start: Timestamp,
) -> Vec<(Timestamp, Timestamp, f64)> {
    let mut out = Vec::new();
    if let (Some(&(first, value)), Some(&(second, _))) = (points.first(), points.get(1))
        && first > node_start
        && value > 0.0
    {
        // The step before the first point: as wide as the one after it.
        let width = second - first;
        out.push((first - width, first, value));
    }
    for pair in points.windows(2) {
        let ((a, before), (b, after)) = (pair[0], pair[1]);
        let increase = if after >= before {
            after - before
        } else {
            after
        };
        if increase > 0.0 {
            out.push((a, b, increase));
        }
    }
    out
}

fn node_inputs(series: &NodeSeries<'_>) -> Inputs {
    let mut inputs = Inputs::default();
    let all_points = series
        .calls
        .iter()
        .chain(&series.states)
        .chain(&series.shed)
        .chain(&series.utilization)
        .chain(&series.callers)
        .flat_map(|s| s.points.iter().map(|p| p.0));
    let (from, to) = all_points.fold(
        (None, None),
        |(lo, hi): (Option<Timestamp>, Option<Timestamp>), t| {
            (
                Some(lo.map_or(t, |l| l.min(t))),
                Some(hi.map_or(t, |h| h.max(t))),
            )
        },
    );
    inputs.from = from;
    inputs.to = to;
    inputs.records = [
        &series.calls,
        &series.states,
        &series.shed,
        &series.utilization,
        &series.callers,
    ]
    .iter()
    .flat_map(|v| v.iter())
    .map(|s| s.points.len())
    .sum();

    // Calls: the increases of every outcome's counter, tallied per plugin and step.
    let node_start = series
        .calls
        .iter()
        .filter_map(|s| s.points.first().map(|p| p.0))
        .min()
        .unwrap_or_default();
    inputs.calls = tally(&series.calls, node_start, |s| {
        (s.label("plugin").to_owned(), "-".to_owned())
    });
    // Callers: the same, per caller (`ok`, `refused`, `failed`).
    inputs.caller_calls = tally(&series.callers, node_start, |s| {
        (String::new(), s.label("caller").to_owned())
    });

    // States: what each plugin was in at each step, and where that changed.
    let mut timelines: BTreeMap<String, BTreeMap<Timestamp, &str>> = BTreeMap::new();
    for s in &series.states {
        let timeline = timelines.entry(s.label("plugin").to_owned()).or_default();
        for (at, _) in &s.points {
            timeline.insert(*at, s.label("state"));
        }
    }
    for (plugin, timeline) in &timelines {
        let mut previous: Option<(&str, Option<OutOfService>)> = None;
        for (at, state) in timeline {
            let kind = OutOfService::of_name(state);
            let changed = previous.is_none_or(|(p, _)| p != *state);
            if changed {
                inputs.service_changes.push(ServiceChange {
                    at: *at,
                    plugin: plugin.clone(),
                    // The first step: the state it was already in.
                    before: previous.map_or(kind, |(_, k)| k),
                    after: kind,
                    reason: format!(
                        "`{state}` in ballast_plugin_state (the reason is in the node's logs)"
                    ),
                });
            }
            previous = Some((state, kind));
        }
    }

    // Sheds: ballast_plugin_shed going from 0 to 1.
    for s in &series.shed {
        let plugin = s.label("plugin");
        for pair in s.points.windows(2) {
            if pair[0].1 < 0.5 && pair[1].1 >= 0.5 {
                inputs.sheds.push((pair[1].0, plugin.to_owned()));
            }
        }
    }

    for s in &series.utilization {
        if let Ok(resource) = s.label("resource").parse::<Resource>() {
            inputs
                .samples
                .entry(resource)
                .or_default()
                .extend(s.points.iter().copied());
        }
    }
    inputs
}

/// The inputs of the fleet and of each node (by its `instance`), from the answers.
pub fn fleet_inputs(answers: &Answers) -> (Inputs, BTreeMap<String, Inputs>) {
    let mut nodes: BTreeMap<&str, NodeSeries<'_>> = BTreeMap::new();
    for s in &answers.calls {
        nodes.entry(s.label(NODE_LABEL)).or_default().calls.push(s);
    }
    for s in &answers.states {
        nodes.entry(s.label(NODE_LABEL)).or_default().states.push(s);
    }
    for s in &answers.shed {
        nodes.entry(s.label(NODE_LABEL)).or_default().shed.push(s);
    }
    for s in &answers.utilization {
        nodes
            .entry(s.label(NODE_LABEL))
            .or_default()
            .utilization
            .push(s);
    }
    for s in &answers.callers {
        nodes
            .entry(s.label(NODE_LABEL))
            .or_default()
            .callers
            .push(s);
    }
    let mut fleet = Inputs::default();
    let mut per_node = BTreeMap::new();
    for (node, series) in &nodes {
        let own = node_inputs(series);
        fleet.from = [fleet.from, own.from].into_iter().flatten().min();
        fleet.to = [fleet.to, own.to].into_iter().flatten().max();
        fleet.calls.extend(own.calls.iter().cloned());
        fleet.caller_calls.extend(own.caller_calls.iter().cloned());
        for (resource, points) in &own.samples {
            fleet
                .samples
                .entry(*resource)
                .or_default()
                .extend(points.iter().copied());
        }
        // In the fleet's total, a plugin's calls add up over the nodes; its outages and sheds are
        // one node's each, so they are named with the node.
        let on_node = |plugin: &str| format!("{plugin} on {node}");
        // Only the plugins that were out of service somewhere, so that the fleet's plugin table
        // does not list every plugin again for every node.
        let out: BTreeSet<&str> = own
            .service_changes
            .iter()
            .filter(|c| c.before.is_some() || c.after.is_some())
            .map(|c| c.plugin.as_str())
            .collect();
        fleet.service_changes.extend(
            own.service_changes
                .iter()
                .filter(|c| out.contains(c.plugin.as_str()))
                .map(|c| ServiceChange {
                    plugin: on_node(&c.plugin),
                    ..c.clone()
                }),
        );
        fleet
            .sheds
            .extend(own.sheds.iter().map(|(at, plugin)| (*at, on_node(plugin))));
        fleet.records += own.records;
        per_node.insert((*node).to_owned(), own);
    }
    let mut missing = Vec::new();
    if answers.callers.is_empty() {
        missing.push(
            "no ballast_caller_calls_total series: top callers are unknown (the nodes' daemons \
             may predate the metric; a node's own logs have them, --history)",
        );
    }
    if answers.states.is_empty() {
        missing.push("no ballast_plugin_state series: outages are unknown");
    }
    if answers.shed.is_empty() {
        missing.push("no ballast_plugin_shed series: shed counts are unknown");
    }
    if answers.utilization.is_empty() {
        missing
            .push("no ballast_resource_utilization_ratio series: resource utilization is unknown");
    }
    for inputs in std::iter::once(&mut fleet).chain(per_node.values_mut()) {
        inputs.notes.extend(missing.iter().map(|m| (*m).to_owned()));
    }
    (fleet, per_node)
}

/// Where a fleet report's figures came from.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Source {
    /// The server.
    pub prometheus: String,
    /// The queries' range.
    pub start: Timestamp,
    /// Its end.
    pub end: Timestamp,
    /// Seconds between the steps.
    pub step_seconds: f64,
    /// The queries asked.
    pub queries: Queries,
}

/// One node's report.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct NodeReport {
    /// The node's `instance` label.
    pub instance: String,
    /// Its report.
    #[serde(flatten)]
    pub report: DemandReport,
}

/// The report of a fleet: the total's fields as a node's report has them, where they came
/// from, and each node's report.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct FleetReport {
    /// The fleet in total.
    #[serde(flatten)]
    pub total: DemandReport,
    /// Where the figures came from.
    pub source: Source,
    /// Each node's.
    pub nodes: Vec<NodeReport>,
}

/// The fleet's report and each node's, with the recent window the last `horizon`.
pub fn fleet_report(
    answers: &Answers,
    source: Source,
    horizon: Duration,
) -> Result<FleetReport, ReportError> {
    let (fleet, nodes) = fleet_inputs(answers);
    let total = report_from(&fleet, horizon)?;
    let mut reports = Vec::with_capacity(nodes.len());
    for (instance, inputs) in nodes {
        // A node whose series cover no more than the horizon still has a report over the
        // fleet's range: the time before it showed had no calls there.
        let mut inputs = inputs;
        inputs.from = fleet.from;
        inputs.to = fleet.to;
        reports.push(NodeReport {
            instance,
            report: report_from(&inputs, horizon)?,
        });
    }
    Ok(FleetReport {
        total,
        source,
        nodes: reports,
    })
}

/// The fleet report as Markdown: the total as a node's report reads, then a table of the nodes.
pub fn fleet_markdown(report: &FleetReport) -> String {
    let r = &report.total;
    let s = &report.source;
    let nodes: BTreeSet<&str> = report.nodes.iter().map(|n| n.instance.as_str()).collect();
    let source = format!(
        "Prometheus at {}: {} to {} ({}), {} node{}, {} points at {} steps.",
        s.prometheus,
        r.from,
        r.to,
        humantime::format_duration(Duration::from_secs((r.to - r.from).as_secs())),
        nodes.len(),
        if nodes.len() == 1 { "" } else { "s" },
        r.records,
        humantime::format_duration(Duration::from_secs_f64(s.step_seconds)),
    );
    let mut out = markdown(r, &source, &[]);
    let _ = writeln!(out, "\n## Nodes\n");
    let _ = writeln!(
        out,
        "| node | baseline calls/h | recent calls/h | predicted calls/h | surge factor | demand level | dispatch posture | outages |\n|---|---:|---:|---:|---:|---|---|---:|"
    );
    for n in &report.nodes {
        let nr = &n.report;
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} | {} |",
            n.instance,
            rate_text(nr.baseline_request_rate),
            rate_text(nr.recent_request_rate),
            rate_text(nr.predicted_request_rate),
            nr.surge_factor
                .map_or_else(|| "unbounded".to_owned(), |f| format!("{f:.2}")),
            nr.demand_level.as_str(),
            nr.dispatch_posture.as_str(),
            nr.plugin_outages.len()
        );
    }
    out
}

pub mod http_config;

pub use http_config::HttpConfig;

#[cfg(test)]
mod tests;
