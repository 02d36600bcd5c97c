//! The demand forecast report: a pure function from [`Inputs`] (call tallies, utilization
//! readings, plugin state changes and sheds, read from the daemon's telemetry and decision logs
//! or from a fleet's Prometheus series) to what demand looks like now against its baseline,
//! where it is heading, what is failing or shed, and what to do about it.
//! `ballast forecast report` is its shell.
//!
//! The inputs end at their latest record (or point). The recent window is the last `horizon` of
//! them, the baseline everything before. Call tallies are split between the windows in
//! proportion to how much of their interval falls in each; samples count where they were taken;
//! plugin state changes are replayed to know how long each plugin was out of service. Nothing
//! here reads a clock or a file.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::time::Duration;

use ballast_core::decision::DecisionKind;
use ballast_core::telemetry::{CallSummary, TelemetryRecord};
use ballast_core::{PluginEventKind, PluginState, Resource, Timestamp};
use ballast_predict::forecast::{ForecastConfig, SeriesPredictor};
use serde::Serialize;

/// A surge factor above this is `critical` demand.
pub const CRITICAL_SURGE: f64 = 3.0;
/// A surge factor above this is `elevated` demand, puts resources in `surge` mode and asks for
/// pre-warming.
pub const ELEVATED_SURGE: f64 = 1.5;
/// A plugin whose recent calls failed at this rate or more (with at least
/// [`MIN_CALLS_FOR_RATE`] calls) gets a throttle recommendation.
pub const HIGH_FAILURE_RATE: f64 = 0.10;
/// Fewer calls than this say nothing about a failure rate.
pub const MIN_CALLS_FOR_RATE: f64 = 10.0;
/// A plugin taking at least this share of all recent calls (when two or more plugins take calls)
/// while its own rate is above [`ELEVATED_SURGE`] times its baseline has heavy call volume: the
/// main plugin taking most calls is normal, the main plugin surging is not.
pub const HEAVY_SHARE: f64 = 0.5;
/// A plugin whose own recent call rate is more than this many times its baseline has heavy call
/// volume too.
pub const HEAVY_PLUGIN_SURGE: f64 = 3.0;
/// This many shed decisions of one plugin in the recent window ask for capacity.
pub const REPEATED_SHEDS: usize = 2;
/// How many callers `top_callers` lists.
pub const TOP_CALLERS: usize = 10;

/// A line of input that could not be read, skipped.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct BadLine {
    /// The file it is in.
    pub file: String,
    /// Its line number, 1-based.
    pub line: u64,
    /// What is wrong with it.
    pub message: String,
}

/// The parsed history: every record of every file, and the lines that could not be read.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct History {
    /// The files read, in the order given.
    pub files: Vec<String>,
    /// The records, in file order (the report sorts what it needs).
    pub records: Vec<TelemetryRecord>,
    /// Lines skipped because they are not telemetry records.
    pub bad_lines: Vec<BadLine>,
}

impl History {
    /// Adds the records of one JSONL file's text. Blank lines are ignored; a line that is not a
    /// telemetry record is skipped and remembered with its line number and what is wrong.
    pub fn add_text(&mut self, file: &str, text: &[u8]) {
        self.files.push(file.to_owned());
        for (index, line) in text.split(|b| *b == b'\n').enumerate() {
            let line_number = index as u64 + 1;
            let bad = |message: String| BadLine {
                file: file.to_owned(),
                line: line_number,
                message,
            };
            let Ok(line) = std::str::from_utf8(line) else {
                self.bad_lines.push(bad("not UTF-8 text".to_owned()));
                continue;
            };
            let line = line.trim();
            if line.is_empty() {
                continue;
            }
            match serde_json::from_str::<TelemetryRecord>(line) {
                Ok(record) => self.records.push(record),
                Err(error) => self.bad_lines.push(bad(json_message(&error))),
            }
        }
    }
}

/// serde_json's message without its "at line 1 column 5" suffix (the line is ours), with the
/// column kept.
fn json_message(error: &serde_json::Error) -> String {
    let text = error.to_string();
    let text = match text.rfind(" at line ") {
        Some(cut) => text[..cut].to_owned(),
        None => text,
    };
    if error.column() > 0 {
        format!("{text} (column {})", error.column())
    } else {
        text
    }
}

/// Why no report could be made.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum ReportError {
    /// There is nothing to report on.
    #[error("no telemetry records{}", skipped_text(*.skipped))]
    NoRecords {
        /// Lines skipped as unreadable.
        skipped: usize,
    },
    /// The history is not longer than the recent window, so there is no baseline.
    #[error(
        "the history covers {covered} (from {from} to {to}), not more than the recent window of \
         {horizon}: there is no baseline to compare against; pass a shorter --horizon (at most \
         half the history, e.g. --horizon {suggested}) or more history (with --prometheus, a \
         longer --range that the server has data for)"
    )]
    NoBaseline {
        /// How long the history is.
        covered: String,
        /// The first record.
        from: Timestamp,
        /// The last record.
        to: Timestamp,
        /// The recent window asked for.
        horizon: String,
        /// A horizon that would work.
        suggested: String,
    },
    /// A zero horizon.
    #[error("the horizon must be longer than zero")]
    ZeroHorizon,
}

fn skipped_text(skipped: usize) -> String {
    if skipped == 0 {
        String::new()
    } else {
        format!(" ({skipped} unreadable lines skipped)")
    }
}

/// Whether resources are under a demand surge.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ResourceMode {
    /// Demand is within 1.5 times its baseline.
    Steady,
    /// Demand is more than 1.5 times its baseline.
    Surge,
}

/// Whether calls are being dispatched normally.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DispatchPosture {
    /// No plugin is failing.
    Normal,
    /// At least one plugin failed, reported itself unhealthy or failed calls.
    Degraded,
}

impl DispatchPosture {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            DispatchPosture::Normal => "normal",
            DispatchPosture::Degraded => "degraded",
        }
    }
}

/// How demand compares with its baseline.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DemandLevel {
    /// Surge factor above 3.0 (or calls where the baseline had none).
    Critical,
    /// Surge factor above 1.5.
    Elevated,
    /// Surge factor above 1.0.
    Normal,
    /// Surge factor at most 1.0 (or no calls at all).
    Low,
}

impl DemandLevel {
    /// The level a surge factor implies (`None`: no baseline calls; `recent` says whether there
    /// are recent ones).
    pub fn from_surge(surge_factor: Option<f64>, recent: f64) -> DemandLevel {
        match surge_factor {
            Some(f) if f > CRITICAL_SURGE => DemandLevel::Critical,
            Some(f) if f > ELEVATED_SURGE => DemandLevel::Elevated,
            Some(f) if f > 1.0 => DemandLevel::Normal,
            Some(_) => DemandLevel::Low,
            None if recent > 0.0 => DemandLevel::Critical,
            None => DemandLevel::Low,
        }
    }

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            DemandLevel::Critical => "critical",
            DemandLevel::Elevated => "elevated",
            DemandLevel::Normal => "normal",
            DemandLevel::Low => "low",
        }
    }
}

/// One resource's utilization, recent against baseline, and where it is heading.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ResourceDemand {
    /// Which resource.
    pub resource: Resource,
    /// Mean utilization over the recent window (`None`: not measured there).
    pub recent_utilization: Option<f64>,
    /// Mean utilization over the baseline window.
    pub baseline_utilization: Option<f64>,
    /// The forecaster's mean utilization over the next horizon.
    pub predicted_utilization: Option<f64>,
}

/// One plugin's calls and service, recent against baseline.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PluginDemand {
    /// The plugin.
    pub plugin: String,
    /// Calls per hour over the recent window.
    pub recent_call_rate: f64,
    /// Calls per hour over the baseline window.
    pub baseline_call_rate: f64,
    /// Failed calls (errors, timeouts, refusals while shed) over calls, recent window.
    pub failure_rate: f64,
    /// Seconds of the recent window the plugin was shed: disabled, suspended or draining.
    pub seconds_shed: f64,
    /// Seconds of the recent window the plugin was failed.
    pub seconds_failed: f64,
    /// Shed decisions (lower level, disable, suspend) in the recent window.
    pub sheds: usize,
}

/// A plugin that was out of service in the recent window.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PluginOutage {
    /// The plugin.
    pub plugin: String,
    /// `shed` (disabled, suspended, draining) or `failed`.
    pub state: String,
    /// How many times it went into that state (or was already in it when the window began).
    pub episodes: usize,
    /// Seconds of the recent window spent in it.
    pub seconds: f64,
    /// Whether it is still in it at the end of the history.
    pub ongoing: bool,
    /// The reason given for the latest episode.
    pub reason: String,
}

/// A plugin whose calls failed in the recent window.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PluginFailures {
    /// The plugin.
    pub plugin: String,
    /// Calls that failed, refusals included.
    pub failed_calls: f64,
    /// Of those, calls refused because the plugin was shed, suspended or failed.
    pub refused_calls: f64,
    /// Calls made.
    pub calls: f64,
    /// `failed_calls / calls`.
    pub failure_rate: f64,
}

/// A caller, by call volume in the recent window.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CallerDemand {
    /// The caller's name (`-` for calls that named none).
    pub caller: String,
    /// Calls in the recent window.
    pub calls: f64,
    /// Calls per hour in the recent window.
    pub call_rate: f64,
    /// Failed calls over calls.
    pub failure_rate: f64,
}

/// A recommendation and the signal that produced it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Recommendation {
    /// The signal: `surge`, `plugin_failing`, `throttle`, `repeated_sheds` or `none`.
    pub signal: String,
    /// What to do, as a sentence that names the evidence.
    pub action: String,
}

/// The demand forecast report.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct DemandReport {
    /// The first record of the history.
    pub from: Timestamp,
    /// The last record: the end of the recent window.
    pub to: Timestamp,
    /// The start of the recent window (`to - horizon`).
    pub recent_from: Timestamp,
    /// The recent window's length, in hours.
    pub horizon_hours: f64,
    /// `surge` when the surge factor is above 1.5, else `steady`.
    pub resource_mode: ResourceMode,
    /// `degraded` when any plugin is failing, else `normal`.
    pub dispatch_posture: DispatchPosture,
    /// Critical, elevated, normal or low, from the surge factor.
    pub demand_level: DemandLevel,
    /// Calls per hour over all plugins, recent window.
    pub recent_request_rate: f64,
    /// Calls per hour over all plugins, baseline window.
    pub baseline_request_rate: f64,
    /// The forecaster's calls per hour over the next horizon.
    pub predicted_request_rate: f64,
    /// `recent / baseline`; `None` when the baseline had no calls.
    pub surge_factor: Option<f64>,
    /// Per resource, from the samples.
    pub resources: Vec<ResourceDemand>,
    /// Per plugin, from calls, state changes and decisions.
    pub plugins: Vec<PluginDemand>,
    /// Plugins failed or shed in the recent window.
    pub plugin_outages: Vec<PluginOutage>,
    /// Plugins whose calls failed in the recent window.
    pub plugin_failures: Vec<PluginFailures>,
    /// Callers by call volume in the recent window, with their failure rates.
    pub top_callers: Vec<CallerDemand>,
    /// What to do, each tied to its signal.
    pub recommended_actions: Vec<Recommendation>,
    /// What the history lacks or what was assumed.
    pub notes: Vec<String>,
    /// Records read.
    pub records: usize,
    /// Lines skipped as unreadable.
    pub skipped_lines: usize,
}

/// Calls, failures and refusals.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
struct Tally {
    calls: f64,
    failures: f64,
    degraded: f64,
}

impl Tally {
    fn add(&mut self, c: &CallSummary, share: f64) {
        self.calls += c.calls as f64 * share;
        self.failures += c.failures as f64 * share;
        self.degraded += c.degraded as f64 * share;
    }

    fn failure_rate(&self) -> f64 {
        if self.calls > 0.0 {
            (self.failures / self.calls).clamp(0.0, 1.0)
        } else {
            0.0
        }
    }
}

/// A half-open span of time in milliseconds.
#[derive(Clone, Copy, Debug)]
struct Span {
    from: f64,
    to: f64,
}

impl Span {
    fn hours(self) -> f64 {
        (self.to - self.from) / 3_600_000.0
    }

    /// The share of `[from, to]` inside this span (an instant counts whole where it falls).
    fn share(self, from: f64, to: f64) -> f64 {
        if to <= from {
            return if from > self.from && from <= self.to {
                1.0
            } else {
                0.0
            };
        }
        let overlap = to.min(self.to) - from.max(self.from);
        (overlap / (to - from)).clamp(0.0, 1.0)
    }

    fn contains(self, at: f64) -> bool {
        at > self.from && at <= self.to
    }
}

fn ms(t: Timestamp) -> f64 {
    t.as_millis() as f64
}

/// Whether a plugin is out of service in a state, and how.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum OutOfService {
    /// Failed, or restarting after its process exited.
    Failed,
    /// Disabled, suspended or draining.
    Shed,
}

impl OutOfService {
    /// What a state means for service: `None` while the plugin takes calls (idle included: the
    /// next call wakes it).
    pub fn of(state: &PluginState) -> Option<OutOfService> {
        OutOfService::of_name(state.name())
    }

    /// The same for a state's name ([`PluginState::name`], a metric's `state` label); `None`
    /// for a name that is no state.
    pub fn of_name(state: &str) -> Option<OutOfService> {
        match state {
            "disabled" | "suspended" | "draining" => Some(OutOfService::Shed),
            // A process that crashed and waits for its restart is out as surely as a failed one.
            "failed" | "restarting" => Some(OutOfService::Failed),
            _ => None,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            OutOfService::Shed => "shed",
            OutOfService::Failed => "failed",
        }
    }
}

/// A plugin's move from one state to another, as far as service goes.
#[derive(Clone, Debug, PartialEq)]
pub struct ServiceChange {
    /// When.
    pub at: Timestamp,
    /// Which plugin.
    pub plugin: String,
    /// Out of service before, and how (`None`: in service).
    pub before: Option<OutOfService>,
    /// Out of service after, and how.
    pub after: Option<OutOfService>,
    /// Why, as the source gives it.
    pub reason: String,
}

/// What a report is made from, whatever the source: the daemon's logs ([`Inputs::from_history`])
/// or a Prometheus server's series (`prometheus.rs`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Inputs {
    /// The start of what the source covers (`None`: nothing).
    pub from: Option<Timestamp>,
    /// Its end: the end of the recent window.
    pub to: Option<Timestamp>,
    /// Call tallies, each over its interval.
    pub calls: Vec<CallSummary>,
    /// Whether the tallies in `calls` name their callers.
    pub callers_known: bool,
    /// Tallies per caller kept apart from `calls` (their plugin is not read): where the source
    /// counts calls by plugin and by caller separately.
    pub caller_calls: Vec<CallSummary>,
    /// Utilization readings per resource, `(at, value)`.
    pub samples: BTreeMap<Resource, Vec<(Timestamp, f64)>>,
    /// Plugin state changes.
    pub service_changes: Vec<ServiceChange>,
    /// Plugins that reported themselves unhealthy: when, which, the message.
    pub unhealthy: Vec<(Timestamp, String, String)>,
    /// Shed decisions: when, which plugin.
    pub sheds: Vec<(Timestamp, String)>,
    /// Records (or points) read.
    pub records: usize,
    /// Lines skipped as unreadable.
    pub skipped_lines: usize,
    /// What the source lacks, in the report's notes.
    pub notes: Vec<String>,
}

impl Inputs {
    /// The inputs in the daemon's telemetry and decision records.
    pub fn from_history(history: &History) -> Inputs {
        let records = &history.records;
        let starts = records.iter().map(|r| match r {
            TelemetryRecord::Calls(c) => c.from.min(c.to),
            other => other.at(),
        });
        let mut inputs = Inputs {
            from: starts.min(),
            to: records.iter().map(TelemetryRecord::at).max(),
            callers_known: true,
            records: records.len(),
            skipped_lines: history.bad_lines.len(),
            ..Inputs::default()
        };
        let mut any_decision = false;
        for record in records {
            match record {
                TelemetryRecord::Calls(c) => inputs.calls.push(c.clone()),
                TelemetryRecord::Sample(sample) => {
                    for resource in Resource::ALL {
                        if let Some(v) = sample.utilization(resource).filter(|v| v.is_finite()) {
                            inputs
                                .samples
                                .entry(resource)
                                .or_default()
                                .push((sample.at, v));
                        }
                    }
                }
                TelemetryRecord::Plugin(e) => match &e.kind {
                    PluginEventKind::StateChanged {
                        from: before,
                        to: after,
                        reason,
                        ..
                    } => inputs.service_changes.push(ServiceChange {
                        at: e.at,
                        plugin: e.plugin.clone(),
                        before: OutOfService::of(before),
                        after: OutOfService::of(after),
                        reason: reason.clone(),
                    }),
                    PluginEventKind::Reported {
                        healthy: false,
                        message,
                    } => inputs
                        .unhealthy
                        .push((e.at, e.plugin.clone(), message.clone())),
                    _ => {}
                },
                TelemetryRecord::Decision(d) => {
                    any_decision = true;
                    if d.kind == DecisionKind::Shed
                        && let Some(plugin) = &d.plugin
                    {
                        inputs.sheds.push((d.at, plugin.clone()));
                    }
                }
                _ => {}
            }
        }
        if inputs.calls.is_empty() {
            inputs.notes.push(
                "no call tallies (`calls` records) in the history: request rates are zero; the \
                 daemon writes them to telemetry-*.jsonl every 10 s while plugins take calls"
                    .to_owned(),
            );
        }
        if inputs.samples.is_empty() {
            inputs
                .notes
                .push("no samples in the history: resource utilization is unknown".to_owned());
        }
        if !any_decision {
            inputs.notes.push(
                "no decision records in the history: shed counts are zero; pass the daemon's \
                 decisions-*.jsonl files too"
                    .to_owned(),
            );
        }
        inputs
    }
}

/// Makes the report from `history`, with the recent window the last `horizon` of it.
pub fn demand_report(history: &History, horizon: Duration) -> Result<DemandReport, ReportError> {
    report_from(&Inputs::from_history(history), horizon)
}

/// Makes the report from `inputs`, with the recent window the last `horizon` of them.
pub fn report_from(inputs: &Inputs, horizon: Duration) -> Result<DemandReport, ReportError> {
    if horizon.is_zero() {
        return Err(ReportError::ZeroHorizon);
    }
    let (Some(from), Some(to)) = (inputs.from, inputs.to) else {
        return Err(ReportError::NoRecords {
            skipped: inputs.skipped_lines,
        });
    };
    let covered = to - from;
    if covered <= horizon {
        let suggested = Duration::from_secs((covered.as_secs() / 2).max(1));
        return Err(ReportError::NoBaseline {
            covered: humantime::format_duration(round_secs(covered)).to_string(),
            from,
            to,
            horizon: humantime::format_duration(horizon).to_string(),
            suggested: humantime::format_duration(round_minutes(suggested)).to_string(),
        });
    }
    let recent_from = to - horizon;
    let recent = Span {
        from: ms(recent_from),
        to: ms(to),
    };
    let baseline = Span {
        from: ms(from),
        to: ms(recent_from),
    };
    let mut notes = inputs.notes.clone();

    // Calls per plugin and caller in each window.
    let calls: Vec<&CallSummary> = inputs.calls.iter().collect();
    let mut recent_by_plugin: BTreeMap<&str, Tally> = BTreeMap::new();
    let mut baseline_by_plugin: BTreeMap<&str, Tally> = BTreeMap::new();
    let mut recent_by_caller: BTreeMap<&str, Tally> = BTreeMap::new();
    let (mut recent_total, mut baseline_total) = (Tally::default(), Tally::default());
    for c in &calls {
        let (a, b) = (ms(c.from.min(c.to)), ms(c.to));
        let r = recent.share(a, b);
        // What is not recent is baseline: the history starts at the earliest `from`.
        let base = if b <= a {
            1.0 - r
        } else {
            baseline.share(a, b)
        };
        recent_by_plugin.entry(&c.plugin).or_default().add(c, r);
        baseline_by_plugin
            .entry(&c.plugin)
            .or_default()
            .add(c, base);
        recent_total.add(c, r);
        baseline_total.add(c, base);
        if r > 0.0 && inputs.callers_known {
            recent_by_caller.entry(&c.caller).or_default().add(c, r);
        }
    }
    for c in &inputs.caller_calls {
        let r = recent.share(ms(c.from.min(c.to)), ms(c.to));
        if r > 0.0 {
            recent_by_caller.entry(&c.caller).or_default().add(c, r);
        }
    }
    let recent_request_rate = recent_total.calls / recent.hours();
    let baseline_request_rate = baseline_total.calls / baseline.hours();
    let surge_factor =
        (baseline_request_rate > 0.0).then(|| recent_request_rate / baseline_request_rate);
    if surge_factor.is_none() && recent_request_rate > 0.0 {
        notes.push(
            "the baseline window has no calls, so the surge factor is unbounded: demand is \
             rated critical"
                .to_owned(),
        );
    }
    let demand_level = DemandLevel::from_surge(surge_factor, recent_request_rate);
    let predicted_request_rate = predict_rate(&calls, ms(from), ms(to), horizon)
        .unwrap_or(recent_request_rate)
        .max(0.0);

    // Resources from the samples.
    let series: BTreeMap<Resource, Vec<(f64, f64)>> = inputs
        .samples
        .iter()
        .map(|(resource, points)| {
            (
                *resource,
                points.iter().map(|(at, v)| (ms(*at), *v)).collect(),
            )
        })
        .collect();
    let resources = series
        .into_iter()
        .map(|(resource, mut points)| {
            points.sort_by(|a, b| a.0.total_cmp(&b.0));
            let mean = |span: Span, first: bool| {
                let values: Vec<f64> = points
                    .iter()
                    .filter(|(at, _)| span.contains(*at) || (first && *at == span.from))
                    .map(|(_, v)| *v)
                    .collect();
                (!values.is_empty()).then(|| values.iter().sum::<f64>() / values.len() as f64)
            };
            ResourceDemand {
                resource,
                recent_utilization: mean(recent, false),
                baseline_utilization: mean(baseline, true),
                predicted_utilization: predict_level(&points, ms(from), ms(to), horizon)
                    .map(|v| v.clamp(0.0, 1.0)),
            }
        })
        .collect();

    // Plugin states, replayed per plugin.
    let mut events: Vec<&ServiceChange> = inputs.service_changes.iter().collect();
    let mut unhealthy: BTreeMap<&str, &str> = BTreeMap::new();
    for (at, plugin, message) in &inputs.unhealthy {
        if recent.contains(ms(*at)) {
            unhealthy.insert(plugin, message);
        }
    }
    events.sort_by_key(|e| e.at);
    let mut outages: BTreeMap<(&str, OutOfService), PluginOutage> = BTreeMap::new();
    let mut out_of_service: BTreeMap<&str, (f64, f64)> = BTreeMap::new();
    let plugins_with_events: BTreeSet<&str> = events.iter().map(|e| e.plugin.as_str()).collect();
    for plugin in &plugins_with_events {
        let plugin: &str = plugin;
        let mine: Vec<&ServiceChange> = events
            .iter()
            .copied()
            .filter(|e| e.plugin == plugin)
            .collect();
        // The state before the first event is that event's `from`. Intervals of one state:
        // (outage kind, start, end, the reason given for entering it).
        let mut intervals: Vec<(Option<OutOfService>, f64, f64, &str)> = Vec::new();
        let (mut state, mut since, mut reason) = (mine[0].before, ms(from), "");
        for change in &mine {
            intervals.push((state, since, ms(change.at), reason));
            (state, since, reason) = (change.after, ms(change.at), change.reason.as_str());
        }
        intervals.push((state, since, ms(to), reason));
        // Draining then disabled is one episode: merge neighbours of the same kind, keeping the
        // reason of the first (the cause).
        let mut merged: Vec<(Option<OutOfService>, f64, f64, &str)> = Vec::new();
        for interval in intervals {
            match merged.last_mut() {
                Some(last) if last.0 == interval.0 => last.2 = interval.2,
                _ => merged.push(interval),
            }
        }
        let last_index = merged.len() - 1;
        for (i, (kind, start, end, why)) in merged.into_iter().enumerate() {
            // Plugins disabled because the daemon stopped were not shed.
            let Some(kind) = kind.filter(|_| why != ballast_core::plugin::SHUTDOWN_REASON) else {
                continue;
            };
            let overlap = end.min(recent.to) - start.max(recent.from);
            if overlap <= 0.0 && !(start == end && recent.contains(start)) {
                continue;
            }
            let seconds = overlap.max(0.0) / 1000.0;
            let slot = out_of_service.entry(plugin).or_default();
            if kind == OutOfService::Failed {
                slot.1 += seconds;
            } else {
                slot.0 += seconds;
            }
            let outage = outages
                .entry((plugin, kind))
                .or_insert_with(|| PluginOutage {
                    plugin: plugin.to_owned(),
                    state: kind.as_str().to_owned(),
                    episodes: 0,
                    seconds: 0.0,
                    ongoing: false,
                    reason: String::new(),
                });
            outage.episodes += 1;
            outage.seconds += seconds;
            outage.ongoing = i == last_index;
            outage.reason = why.to_owned();
        }
    }

    // Shed decisions per plugin in the recent window.
    let mut sheds: BTreeMap<&str, usize> = BTreeMap::new();
    for (at, plugin) in &inputs.sheds {
        if recent.contains(ms(*at)) {
            *sheds.entry(plugin).or_default() += 1;
        }
    }

    let names: BTreeSet<&str> = recent_by_plugin
        .keys()
        .chain(baseline_by_plugin.keys())
        .copied()
        .chain(plugins_with_events.iter().copied())
        .chain(sheds.keys().copied())
        .collect();
    let plugins: Vec<PluginDemand> = names
        .iter()
        .map(|name| {
            let r = recent_by_plugin.get(name).copied().unwrap_or_default();
            let b = baseline_by_plugin.get(name).copied().unwrap_or_default();
            let (seconds_shed, seconds_failed) =
                out_of_service.get(name).copied().unwrap_or_default();
            PluginDemand {
                plugin: (*name).to_owned(),
                recent_call_rate: r.calls / recent.hours(),
                baseline_call_rate: b.calls / baseline.hours(),
                failure_rate: r.failure_rate(),
                seconds_shed,
                seconds_failed,
                sheds: sheds.get(name).copied().unwrap_or(0),
            }
        })
        .collect();
    let plugin_failures: Vec<PluginFailures> = recent_by_plugin
        .iter()
        .filter(|(_, t)| t.failures > 0.0)
        .map(|(name, t)| PluginFailures {
            plugin: (*name).to_owned(),
            failed_calls: t.failures,
            refused_calls: t.degraded,
            calls: t.calls,
            failure_rate: t.failure_rate(),
        })
        .collect();
    let mut top_callers: Vec<CallerDemand> = recent_by_caller
        .iter()
        .filter(|(_, t)| t.calls > 0.0)
        .map(|(caller, t)| CallerDemand {
            caller: (*caller).to_owned(),
            calls: t.calls,
            call_rate: t.calls / recent.hours(),
            failure_rate: t.failure_rate(),
        })
        .collect();
    top_callers.sort_by(|a, b| b.calls.total_cmp(&a.calls).then(a.caller.cmp(&b.caller)));
    top_callers.truncate(TOP_CALLERS);
    let plugin_outages: Vec<PluginOutage> = outages.into_values().collect();

    // Signals and what they ask for.
    let horizon_text = humantime::format_duration(horizon).to_string();
    let mut actions = Vec::new();
    let resource_mode =
        if surge_factor.is_none_or(|f| f > ELEVATED_SURGE) && recent_request_rate > 0.0 {
            ResourceMode::Surge
        } else {
            ResourceMode::Steady
        };
    if resource_mode == ResourceMode::Surge {
        let factor = surge_factor.map_or_else(
            || "calls arrived where the baseline had none".to_owned(),
            |f| {
                format!(
                    "requests run at {f:.2}x the baseline (surge factor above {ELEVATED_SURGE})"
                )
            },
        );
        actions.push(Recommendation {
            signal: "surge".to_owned(),
            action: format!(
                "Pre-warm capacity: {factor}; plan for about {} calls/hour over the next \
                 {horizon_text}, bring shed plugins back to full level before the peak and keep \
                 headroom under the shed threshold.",
                rate_text(predicted_request_rate)
            ),
        });
    }
    // Failing: failed state, unhealthy report or calls that failed for other reasons than a shed.
    let mut failing: BTreeMap<&str, String> = BTreeMap::new();
    for outage in &plugin_outages {
        if outage.state == "failed" {
            failing.insert(
                &outage.plugin,
                format!("it was failed for {}", seconds_text(outage.seconds)),
            );
        }
    }
    for (plugin, message) in &unhealthy {
        failing
            .entry(plugin)
            .or_insert_with(|| format!("it reported itself unhealthy: {message}"));
    }
    for f in &plugin_failures {
        let errors = f.failed_calls - f.refused_calls;
        if errors >= 0.5 {
            failing.entry(&f.plugin).or_insert_with(|| {
                format!(
                    "{} of its {} recent calls failed with an error or timeout",
                    count_text(errors),
                    count_text(f.calls)
                )
            });
        }
    }
    let dispatch_posture = if failing.is_empty() {
        DispatchPosture::Normal
    } else {
        DispatchPosture::Degraded
    };
    for (plugin, why) in &failing {
        actions.push(Recommendation {
            signal: "plugin_failing".to_owned(),
            action: format!(
                "Investigate `{plugin}`: {why}; read its log lines and `ballast plugins`, and \
                 fix or disable it before it takes more calls."
            ),
        });
    }
    let plugins_with_calls = recent_by_plugin.values().filter(|t| t.calls > 0.0).count();
    for p in &plugins {
        let r = recent_by_plugin
            .get(p.plugin.as_str())
            .copied()
            .unwrap_or_default();
        let mut why = Vec::new();
        if r.calls >= MIN_CALLS_FOR_RATE && p.failure_rate >= HIGH_FAILURE_RATE {
            why.push(format!(
                "{:.0}% of its calls failed (limit {:.0}%)",
                p.failure_rate * 100.0,
                HIGH_FAILURE_RATE * 100.0
            ));
        }
        let share = if recent_total.calls > 0.0 {
            r.calls / recent_total.calls
        } else {
            0.0
        };
        let own_surge = if p.baseline_call_rate > 0.0 {
            p.recent_call_rate / p.baseline_call_rate
        } else {
            0.0
        };
        if plugins_with_calls >= 2 && share >= HEAVY_SHARE && own_surge > ELEVATED_SURGE {
            why.push(format!("it takes {:.0}% of all calls", share * 100.0));
        }
        if own_surge > HEAVY_PLUGIN_SURGE {
            why.push(format!("its call rate is {own_surge:.1}x its baseline"));
        }
        if !why.is_empty() {
            actions.push(Recommendation {
                signal: "throttle".to_owned(),
                action: format!(
                    "Throttle calls to `{}` ({} calls/hour): {}; lower its \
                     max_concurrent_calls or rate-limit its heaviest callers.",
                    p.plugin,
                    rate_text(p.recent_call_rate),
                    why.join(" and ")
                ),
            });
        }
    }
    for (plugin, n) in &sheds {
        if *n >= REPEATED_SHEDS {
            actions.push(Recommendation {
                signal: "repeated_sheds".to_owned(),
                action: format!(
                    "Add capacity for `{plugin}`: it was shed {n} times in the last \
                     {horizon_text}; give the machine more headroom, run it at a cheaper level \
                     by default, or raise its priority above the plugins that stay."
                ),
            });
        }
    }
    if actions.is_empty() {
        actions.push(Recommendation {
            signal: "none".to_owned(),
            action: format!(
                "Maintain current allocation: demand is {} and no plugin is failing, \
                 throttled or shed repeatedly.",
                demand_level.as_str()
            ),
        });
    }
    Ok(DemandReport {
        from,
        to,
        recent_from,
        horizon_hours: horizon.as_secs_f64() / 3600.0,
        resource_mode,
        dispatch_posture,
        demand_level,
        recent_request_rate,
        baseline_request_rate,
        predicted_request_rate,
        surge_factor,
        resources,
        plugins,
        plugin_outages,
        plugin_failures,
        top_callers,
        recommended_actions: actions,
        notes,
        records: inputs.records,
        skipped_lines: inputs.skipped_lines,
    })
}

/// How many buckets one horizon is split into for the forecasts.
const BUCKETS_PER_HORIZON: usize = 4;

/// The forecaster's mean over the next horizon of a series of buckets, `horizon /
/// BUCKETS_PER_HORIZON` wide and aligned to end at `to`: the mean of its forecasts one, two,
/// three and four buckets ahead. `values` gives each bucket's value (`None`: missing).
fn forecast_buckets(values: &[Option<f64>]) -> Option<f64> {
    if values.iter().flatten().count() < 2 {
        return None;
    }
    let mut total = 0.0;
    for ahead in 1..=BUCKETS_PER_HORIZON {
        let mut predictor = SeriesPredictor::new(ForecastConfig {
            horizon: ahead,
            ..ForecastConfig::default()
        });
        let mut last = None;
        for (step, value) in values.iter().enumerate() {
            if let Some(v) = value
                && let Some(f) = predictor.push_at(step as u64, *v)
            {
                last = Some(f.value);
            }
        }
        total += last?;
    }
    Some(total / BUCKETS_PER_HORIZON as f64)
}

/// Bucket `i` (of `n`) spans `[to - (n - i) * width, to - (n - i - 1) * width]`.
fn bucket_layout(from: f64, to: f64, horizon: Duration) -> (usize, f64) {
    let width = (horizon.as_millis() as f64 / BUCKETS_PER_HORIZON as f64).max(1.0);
    let n = ((to - from) / width).floor() as usize;
    (n.min(100_000), width)
}

/// The predicted request rate (calls per hour) over the next horizon.
fn predict_rate(calls: &[&CallSummary], from: f64, to: f64, horizon: Duration) -> Option<f64> {
    let (n, width) = bucket_layout(from, to, horizon);
    let start = to - n as f64 * width;
    let mut sums = vec![0.0; n];
    for c in calls {
        let (a, b) = (ms(c.from.min(c.to)), ms(c.to));
        if b <= a {
            let i = ((a - start) / width).ceil() as i64 - 1;
            if let Some(slot) = usize::try_from(i).ok().and_then(|i| sums.get_mut(i)) {
                *slot += c.calls as f64;
            }
            continue;
        }
        let first = (((a - start) / width).floor().max(0.0)) as usize;
        let last = (((b - start) / width).ceil().max(0.0)) as usize;
        for (i, slot) in sums.iter_mut().enumerate().take(last.min(n)).skip(first) {
            let span = Span {
                from: start + i as f64 * width,
                to: start + (i + 1) as f64 * width,
            };
            *slot += c.calls as f64 * span.share(a, b);
        }
    }
    let hours = width / 3_600_000.0;
    let rates: Vec<Option<f64>> = sums.iter().map(|s| Some(s / hours)).collect();
    forecast_buckets(&rates)
}

/// The predicted mean utilization over the next horizon from `(at, value)` points sorted by time.
fn predict_level(points: &[(f64, f64)], from: f64, to: f64, horizon: Duration) -> Option<f64> {
    let (n, width) = bucket_layout(from, to, horizon);
    let start = to - n as f64 * width;
    let mut sums = vec![(0.0, 0_u32); n];
    for (at, v) in points {
        let i = ((at - start) / width).ceil() as i64 - 1;
        let i = if *at == start { 0 } else { i };
        if let Some(slot) = usize::try_from(i).ok().and_then(|i| sums.get_mut(i)) {
            slot.0 += v;
            slot.1 += 1;
        }
    }
    let means: Vec<Option<f64>> = sums
        .iter()
        .map(|(s, k)| (*k > 0).then(|| s / f64::from(*k)))
        .collect();
    forecast_buckets(&means)
}

fn round_secs(d: Duration) -> Duration {
    Duration::from_secs(d.as_secs())
}

fn round_minutes(d: Duration) -> Duration {
    if d.as_secs() >= 120 {
        Duration::from_secs(d.as_secs() / 60 * 60)
    } else {
        round_secs(d)
    }
}

/// A rate or count for people: `1,234` above 100, `12.5` below.
pub(crate) fn rate_text(rate: f64) -> String {
    if rate >= 100.0 {
        let whole = rate.round() as u64;
        let digits = whole.to_string();
        let mut out = String::new();
        for (i, c) in digits.chars().enumerate() {
            if i > 0 && (digits.len() - i).is_multiple_of(3) {
                out.push(',');
            }
            out.push(c);
        }
        out
    } else if rate >= 10.0 {
        format!("{rate:.0}")
    } else {
        format!("{rate:.1}")
    }
}

fn count_text(n: f64) -> String {
    let n = n.round();
    if n >= 100.0 {
        rate_text(n)
    } else {
        format!("{n:.0}")
    }
}

fn seconds_text(seconds: f64) -> String {
    humantime::format_duration(Duration::from_secs(seconds.round().max(0.0) as u64)).to_string()
}

fn percent(v: Option<f64>) -> String {
    v.map_or_else(|| "-".to_owned(), |v| format!("{:.1}%", v * 100.0))
}

/// The report as Markdown, for people.
pub fn to_markdown(report: &DemandReport, history: &History) -> String {
    let covered = report.to - report.from;
    let source = format!(
        "History: {} to {} ({}), {} records from {} file{}.",
        report.from,
        report.to,
        humantime::format_duration(round_secs(covered)),
        report.records,
        history.files.len(),
        if history.files.len() == 1 { "" } else { "s" }
    );
    markdown(report, &source, &history.bad_lines)
}

/// The report as Markdown, with `source` (a sentence saying what it was made from) under the
/// title and `bad_lines` named in the notes.
pub fn markdown(report: &DemandReport, source: &str, bad_lines: &[BadLine]) -> String {
    let mut out = String::new();
    let r = report;
    let _ = writeln!(out, "# Demand forecast report\n");
    let _ = writeln!(out, "{source}");
    let horizon = Duration::from_secs_f64(r.horizon_hours * 3600.0);
    let _ = writeln!(
        out,
        "Recent window: the last {} (from {}); baseline: the {} before it.\n",
        humantime::format_duration(round_secs(horizon)),
        r.recent_from,
        humantime::format_duration(round_secs(r.recent_from - r.from)),
    );
    let surge = r
        .surge_factor
        .map_or_else(|| "unbounded".to_owned(), |f| format!("{f:.2}"));
    let _ = writeln!(out, "| | |\n|---|---|");
    let _ = writeln!(
        out,
        "| demand level | **{}** (surge factor {surge}) |",
        r.demand_level.as_str()
    );
    let _ = writeln!(
        out,
        "| resource mode | {} |",
        match r.resource_mode {
            ResourceMode::Steady => "steady",
            ResourceMode::Surge => "surge",
        }
    );
    let _ = writeln!(
        out,
        "| dispatch posture | {} |",
        r.dispatch_posture.as_str()
    );
    let _ = writeln!(
        out,
        "| requests per hour | recent {}, baseline {}, predicted {} |\n",
        rate_text(r.recent_request_rate),
        rate_text(r.baseline_request_rate),
        rate_text(r.predicted_request_rate)
    );
    let _ = writeln!(out, "## Recommended actions\n");
    for (i, a) in r.recommended_actions.iter().enumerate() {
        let _ = writeln!(out, "{}. **{}**: {}", i + 1, a.signal, a.action);
    }
    if !r.resources.is_empty() {
        let _ = writeln!(out, "\n## Resources\n");
        let _ = writeln!(
            out,
            "| resource | baseline | recent | predicted |\n|---|---:|---:|---:|"
        );
        for res in &r.resources {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} |",
                res.resource,
                percent(res.baseline_utilization),
                percent(res.recent_utilization),
                percent(res.predicted_utilization)
            );
        }
    }
    if !r.plugins.is_empty() {
        let _ = writeln!(out, "\n## Plugins\n");
        let _ = writeln!(
            out,
            "| plugin | baseline calls/h | recent calls/h | failure rate | time shed | time failed | sheds |\n|---|---:|---:|---:|---:|---:|---:|"
        );
        for p in &r.plugins {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {:.1}% | {} | {} | {} |",
                p.plugin,
                rate_text(p.baseline_call_rate),
                rate_text(p.recent_call_rate),
                p.failure_rate * 100.0,
                seconds_text(p.seconds_shed),
                seconds_text(p.seconds_failed),
                p.sheds
            );
        }
    }
    let _ = writeln!(out, "\n## Outages in the recent window\n");
    if r.plugin_outages.is_empty() {
        let _ = writeln!(out, "None: every plugin stayed in service.");
    } else {
        for o in &r.plugin_outages {
            let _ = writeln!(
                out,
                "- `{}` {} {} time{}, {} in all{}; latest reason: {}",
                o.plugin,
                o.state,
                o.episodes,
                if o.episodes == 1 { "" } else { "s" },
                seconds_text(o.seconds),
                if o.ongoing { " (still now)" } else { "" },
                o.reason
            );
        }
    }
    let _ = writeln!(out, "\n## Failed calls in the recent window\n");
    if r.plugin_failures.is_empty() {
        let _ = writeln!(out, "None.");
    } else {
        for f in &r.plugin_failures {
            let _ = writeln!(
                out,
                "- `{}`: {} of {} calls failed ({:.1}%), {} of them refused while it was out of service",
                f.plugin,
                count_text(f.failed_calls),
                count_text(f.calls),
                f.failure_rate * 100.0,
                count_text(f.refused_calls)
            );
        }
    }
    if !r.top_callers.is_empty() {
        let _ = writeln!(out, "\n## Top callers in the recent window\n");
        let _ = writeln!(
            out,
            "| caller | calls | calls/h | failure rate |\n|---|---:|---:|---:|"
        );
        for c in &r.top_callers {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {:.1}% |",
                c.caller,
                count_text(c.calls),
                rate_text(c.call_rate),
                c.failure_rate * 100.0
            );
        }
    }
    if !r.notes.is_empty() || !bad_lines.is_empty() {
        let _ = writeln!(out, "\n## Notes\n");
        for note in &r.notes {
            let _ = writeln!(out, "- {note}");
        }
        if !bad_lines.is_empty() {
            let _ = writeln!(
                out,
                "- {} unreadable line{} skipped: {}",
                bad_lines.len(),
                if bad_lines.len() == 1 { "" } else { "s" },
                bad_lines_text(bad_lines, 3)
            );
        }
    }
    out
}

/// The first `n` bad lines as `file:line: message`, then how many more.
pub fn bad_lines_text(bad: &[BadLine], n: usize) -> String {
    let mut parts: Vec<String> = bad
        .iter()
        .take(n)
        .map(|b| format!("{}:{}: {}", b.file, b.line, b.message))
        .collect();
    if bad.len() > n {
        parts.push(format!("and {} more", bad.len() - n));
    }
    parts.join("; ")
}

#[cfg(test)]
mod tests;
