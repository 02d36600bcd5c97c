//! Prometheus metrics of the daemon, encoded with prometheus-client (no global registry).
//!
//! Two kinds of figures live here. Counters of things that happen (decisions by action and rule,
//! warnings, plugin transitions, calls routed through the API with their latency histogram and by
//! caller) are counted as the events arrive, in [`Metrics::observe`] and
//! [`Metrics::observe_call`]. Figures
//! that are a snapshot (utilization, smoothed value, forecast, PSI, plugin state and level, live
//! bytes, the host's call counters, mode, tier) are set from the live view and the host's status
//! at render time, in [`Metrics::render`], so they are never staler than the scrape.
//!
//! [`Metrics::render`] writes OpenMetrics text; [`openmetrics_to_prometheus_text`] turns it into
//! the classic Prometheus text format (0.0.4) for clients that do not ask for OpenMetrics, which
//! is also what `promtool check metrics` reads.

use std::sync::Mutex;
use std::sync::atomic::AtomicU64;

use ballast_core::Resource;
use ballast_core::decision::{Action, Decision, Mode};
use ballast_core::plugin::{PluginEventKind, PluginState};
use ballast_core::sample::PsiReading;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

use crate::live::{DaemonEvent, LiveView};

/// The content type of [`Metrics::render`]'s output.
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The content type of [`openmetrics_to_prometheus_text`]'s output.
pub const PROMETHEUS_TEXT_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Every lifecycle state a plugin can be in, as the `state` label spells it.
const PLUGIN_STATES: [&str; 8] = PluginState::NAMES;

/// Every scaler mode, as the `mode` label spells it.
const MODES: [Mode; 3] = [Mode::Observe, Mode::Advise, Mode::Enforce];

type GaugeF64 = Gauge<f64, AtomicU64>;

/// What the scaler says, for the metrics that come from it: readiness, shed, flaps and the
/// thresholds in force. Empty when the scaler did not answer (those metrics then have no
/// series rather than wrong ones).
#[derive(Clone, Debug, Default)]
pub struct ScalerFigures {
    /// The scaler's view of every plugin.
    pub plugins: Vec<ballast_scaler::PluginStatus>,
    /// Whether it made its first decisions, and what a call to each plugin would meet.
    pub readiness: Option<ballast_scaler::actor::Readiness>,
    /// The thresholds of each resource it acts on.
    pub thresholds: Vec<(Resource, ballast_core::Thresholds)>,
}
type CounterF64 = Counter<f64, AtomicU64>;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResourceLabels {
    resource: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PsiLabels {
    resource: String,
    kind: String,
    window: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PsiTotalLabels {
    resource: String,
    kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PluginLabels {
    plugin: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PluginStateLabels {
    plugin: String,
    state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AlertLabels {
    plugin: String,
    alert: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallLabels {
    plugin: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallerLabels {
    caller: String,
    outcome: String,
}

/// How many callers get series of their own in `ballast_caller_calls_total`, in the order they
/// first called; calls from the callers after them count as `caller="other"`. Caller names come
/// from outside: without a bound they would grow the series forever.
pub const MAX_CALLER_SERIES: usize = 32;

/// The caller label of calls from callers past [`MAX_CALLER_SERIES`].
pub const OTHER_CALLERS: &str = "other";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CancelLabels {
    plugin: String,
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DecisionLabels {
    kind: String,
    action: String,
    rule: String,
    applied: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RuleLabels {
    rule: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EventLabels {
    r#type: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ModeLabels {
    mode: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TierLabels {
    tier: String,
}

fn call_histogram() -> Histogram {
    // 100 µs to about 52 s in 20 doubling steps.
    Histogram::new(exponential_buckets(0.0001, 2.0, 20))
}

/// The daemon's metrics registry.
pub struct Metrics {
    registry: Registry,
    /// Serializes renders: snapshot gauges are cleared and set, then encoded, as one step.
    render_lock: Mutex<()>,
    // Per resource, set at render time.
    utilization: Family<ResourceLabels, GaugeF64>,
    smoothed: Family<ResourceLabels, GaugeF64>,
    forecast: Family<ResourceLabels, GaugeF64>,
    forecast_confidence: Family<ResourceLabels, GaugeF64>,
    psi: Family<PsiLabels, GaugeF64>,
    psi_stall: Family<PsiTotalLabels, CounterF64>,
    daemon_resident: Gauge,
    daemon_cpu: GaugeF64,
    // Per plugin, set at render time from the host's status.
    plugin_state: Family<PluginStateLabels, Gauge>,
    plugin_level: Family<PluginLabels, Gauge>,
    plugin_calls: Family<PluginLabels, Counter>,
    plugin_errors: Family<PluginLabels, Counter>,
    plugin_timeouts: Family<PluginLabels, Counter>,
    plugin_streamed_calls: Family<PluginLabels, Counter>,
    plugin_chunks: Family<PluginLabels, Counter>,
    plugin_cancellations: Family<CancelLabels, Counter>,
    plugin_in_flight: Family<PluginLabels, Gauge>,
    plugin_concurrency_limit: Family<PluginLabels, Gauge>,
    plugin_live_bytes: Family<PluginLabels, Gauge>,
    plugin_peak_bytes: Family<PluginLabels, Gauge>,
    // Per plugin, set at render time from the scaler's view.
    plugin_ready: Family<PluginLabels, Gauge>,
    plugin_shed: Family<PluginLabels, Gauge>,
    plugin_flaps: Family<PluginLabels, Gauge>,
    // Per resource the scaler acts on.
    shed_threshold: Family<ResourceLabels, GaugeF64>,
    restore_threshold: Family<ResourceLabels, GaugeF64>,
    emergency_threshold: Family<ResourceLabels, GaugeF64>,
    // GPU memory charged to each plugin, and to no plugin, from the latest sample.
    plugin_gpu_memory: Family<PluginLabels, Gauge>,
    // Without labels, and no series at all while no GPU reports the figure (never a fake zero).
    gpu_memory_other: Family<Vec<(String, String)>, Gauge>,
    gpu_memory_in_process: Family<Vec<(String, String)>, Gauge>,
    // Per plugin that runs in a process, set at render time from its measured process tree.
    process_resident: Family<PluginLabels, Gauge>,
    process_virtual: Family<PluginLabels, Gauge>,
    process_cpu_cores: Family<PluginLabels, GaugeF64>,
    process_cpu_seconds: Family<PluginLabels, CounterF64>,
    process_open_fds: Family<PluginLabels, Gauge>,
    process_threads: Family<PluginLabels, Gauge>,
    process_read: Family<PluginLabels, Counter>,
    process_written: Family<PluginLabels, Counter>,
    // A plugin cgroup's own memory pressure (v2), `some` and `full` over 10 s, as fractions.
    plugin_memory_pressure: Family<Vec<(String, String)>, GaugeF64>,
    plugin_restarts: Family<PluginLabels, Counter>,
    plugin_condition: Family<AlertLabels, Gauge>,
    plugin_alerts: Family<AlertLabels, Counter>,
    // Counted as they happen.
    call_duration: Family<CallLabels, Histogram, fn() -> Histogram>,
    caller_calls: Family<CallerLabels, Counter>,
    /// The callers with series of their own, at most [`MAX_CALLER_SERIES`].
    callers: Mutex<std::collections::BTreeSet<String>>,
    first_chunk: Family<PluginLabels, Histogram, fn() -> Histogram>,
    plugin_transitions: Family<PluginStateLabels, Counter>,
    decisions: Family<DecisionLabels, Counter>,
    warnings: Family<RuleLabels, Counter>,
    events: Family<EventLabels, Counter>,
    // Daemon-wide, set at render time.
    mode: Family<ModeLabels, Gauge>,
    tier: Family<TierLabels, Gauge>,
    tier_rank: Gauge,
    start_time: GaugeF64,
    ready: Gauge,
    last_sample_time: Family<Vec<(String, String)>, GaugeF64>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// A registry with every metric of the daemon registered, all empty.
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("ballast");
        let utilization = Family::<ResourceLabels, GaugeF64>::default();
        registry.register(
            "resource_utilization_ratio",
            "Latest sampled utilization of the resource (0 to 1)",
            utilization.clone(),
        );
        let smoothed = Family::<ResourceLabels, GaugeF64>::default();
        registry.register(
            "resource_smoothed_ratio",
            "Smoothed utilization of the resource (0 to 1)",
            smoothed.clone(),
        );
        let forecast = Family::<ResourceLabels, GaugeF64>::default();
        registry.register(
            "resource_forecast_ratio",
            "Forecast utilization of the resource at the predictor's horizon (0 to 1)",
            forecast.clone(),
        );
        let forecast_confidence = Family::<ResourceLabels, GaugeF64>::default();
        registry.register(
            "resource_forecast_confidence_ratio",
            "Confidence of the resource's forecast (0 to 1)",
            forecast_confidence.clone(),
        );
        let psi = Family::<PsiLabels, GaugeF64>::default();
        registry.register(
            "psi_stall_ratio",
            "Pressure stall information: share of time stalled over the window (0 to 1)",
            psi.clone(),
        );
        let psi_stall = Family::<PsiTotalLabels, CounterF64>::default();
        registry.register_with_unit(
            "psi_stall",
            "Pressure stall information: total time stalled since boot",
            Unit::Seconds,
            psi_stall.clone(),
        );
        let daemon_resident = Gauge::default();
        registry.register(
            "daemon_resident_memory_bytes",
            "Resident memory of the daemon process, plugins included",
            daemon_resident.clone(),
        );
        let daemon_cpu = GaugeF64::default();
        registry.register(
            "daemon_cpu_cores_ratio",
            "CPU used by the daemon process, in cores",
            daemon_cpu.clone(),
        );
        let plugin_state = Family::<PluginStateLabels, Gauge>::default();
        registry.register(
            "plugin_state",
            "1 for the plugin's current lifecycle state, 0 for the others",
            plugin_state.clone(),
        );
        let plugin_level = Family::<PluginLabels, Gauge>::default();
        registry.register(
            "plugin_level",
            "The enabled plugin's degradation level (0 = full); absent when not enabled",
            plugin_level.clone(),
        );
        let plugin_calls = Family::<PluginLabels, Counter>::default();
        registry.register(
            "plugin_calls",
            "Calls the plugin answered or failed since it was loaded",
            plugin_calls.clone(),
        );
        let plugin_errors = Family::<PluginLabels, Counter>::default();
        registry.register(
            "plugin_errors",
            "Calls that returned an error, timeouts included",
            plugin_errors.clone(),
        );
        let plugin_timeouts = Family::<PluginLabels, Counter>::default();
        registry.register(
            "plugin_timeouts",
            "Calls that did not answer within the plugin's timeout",
            plugin_timeouts.clone(),
        );
        let plugin_streamed_calls = Family::<PluginLabels, Counter>::default();
        registry.register(
            "plugin_streamed_calls",
            "Calls whose chunks went to the caller as the plugin sent them",
            plugin_streamed_calls.clone(),
        );
        let plugin_chunks = Family::<PluginLabels, Counter>::default();
        registry.register(
            "plugin_chunks",
            "Chunks the plugin sent to the callers of streamed calls",
            plugin_chunks.clone(),
        );
        let plugin_cancellations = Family::<CancelLabels, Counter>::default();
        registry.register(
            "plugin_cancellations",
            "Calls cancelled, by reason: the caller went away, the deadline passed, or the plugin was shed past its drain deadline",
            plugin_cancellations.clone(),
        );
        let plugin_in_flight = Family::<PluginLabels, Gauge>::default();
        registry.register(
            "plugin_in_flight_calls",
            "Calls running in the plugin now",
            plugin_in_flight.clone(),
        );
        let plugin_concurrency_limit = Family::<PluginLabels, Gauge>::default();
        registry.register(
            "plugin_concurrency_limit_calls",
            "The plugin's current max-concurrent-calls limit",
            plugin_concurrency_limit.clone(),
        );
        let plugin_live_bytes = Family::<PluginLabels, Gauge>::default();
        registry.register(
            "plugin_live_bytes",
            "Bytes the plugin allocated and has not freed",
            plugin_live_bytes.clone(),
        );
        let plugin_peak_bytes = Family::<PluginLabels, Gauge>::default();
        registry.register(
            "plugin_peak_live_bytes",
            "Highest live bytes the plugin reached",
            plugin_peak_bytes.clone(),
        );
        let plugin_ready = Family::<PluginLabels, Gauge>::default();
        registry.register(
            "plugin_ready",
            "1 while the plugin takes calls (GET /plugins/{name}/ready answers 200): enabled, or idle with a call able to wake it",
            plugin_ready.clone(),
        );
        let plugin_shed = Family::<PluginLabels, Gauge>::default();
        registry.register(
            "plugin_shed",
            "1 while the scaler holds the plugin off for pressure (or to make room) until the machine is calm; idle, pinned off and failed plugins are not shed",
            plugin_shed.clone(),
        );
        let plugin_flaps = Family::<PluginLabels, Gauge>::default();
        registry.register(
            "plugin_flaps",
            "Times in a row the plugin was shed again soon after a restore; each doubles its wait before the next restore",
            plugin_flaps.clone(),
        );
        let shed_threshold = Family::<ResourceLabels, GaugeF64>::default();
        registry.register(
            "resource_shed_threshold_ratio",
            "The threshold at which the scaler sheds for the resource (0 to 1), for each resource it acts on",
            shed_threshold.clone(),
        );
        let restore_threshold = Family::<ResourceLabels, GaugeF64>::default();
        registry.register(
            "resource_restore_threshold_ratio",
            "The threshold the resource must stay below for plugins to be restored (0 to 1)",
            restore_threshold.clone(),
        );
        let emergency_threshold = Family::<ResourceLabels, GaugeF64>::default();
        registry.register(
            "resource_emergency_threshold_ratio",
            "The threshold at which every non-essential plugin is shed at once (0 to 1); absent where the resource has none",
            emergency_threshold.clone(),
        );
        let plugin_gpu_memory = Family::<PluginLabels, Gauge>::default();
        registry.register_with_unit(
            "plugin_gpu_memory",
            "GPU memory held by the plugin's processes (or, for the one in-process plugin that declares a GPU, by the daemon), as NVML reports it",
            Unit::Bytes,
            plugin_gpu_memory.clone(),
        );
        let gpu_memory_other = Family::<Vec<(String, String)>, Gauge>::default();
        registry.register_with_unit(
            "gpu_memory_other",
            "GPU memory held by processes that are no plugin's (another program, a game)",
            Unit::Bytes,
            gpu_memory_other.clone(),
        );
        let gpu_memory_in_process = Family::<Vec<(String, String)>, Gauge>::default();
        registry.register_with_unit(
            "gpu_memory_in_process_unattributed",
            "GPU memory held by the daemon's own process that no single in-process plugin can be charged with",
            Unit::Bytes,
            gpu_memory_in_process.clone(),
        );
        let process_resident = Family::<PluginLabels, Gauge>::default();
        registry.register(
            "plugin_process_resident_memory_bytes",
            "Resident memory of the plugin's process and its children",
            process_resident.clone(),
        );
        let process_virtual = Family::<PluginLabels, Gauge>::default();
        registry.register(
            "plugin_process_virtual_memory_bytes",
            "Virtual memory of the plugin's process and its children",
            process_virtual.clone(),
        );
        let process_cpu_cores = Family::<PluginLabels, GaugeF64>::default();
        registry.register(
            "plugin_process_cpu_cores_ratio",
            "CPU used by the plugin's process and its children, in cores",
            process_cpu_cores.clone(),
        );
        let plugin_memory_pressure = Family::<Vec<(String, String)>, GaugeF64>::default();
        registry.register(
            "plugin_memory_pressure_ratio",
            "Share of the last 10 s the tasks of the plugin's cgroup stalled waiting for memory (cgroup v2 memory.pressure avg10; kind some or full)",
            plugin_memory_pressure.clone(),
        );
        let process_cpu_seconds = Family::<PluginLabels, CounterF64>::default();
        registry.register_with_unit(
            "plugin_process_cpu",
            "CPU time of the plugin's processes since it was loaded, across restarts",
            Unit::Seconds,
            process_cpu_seconds.clone(),
        );
        let process_open_fds = Family::<PluginLabels, Gauge>::default();
        registry.register(
            "plugin_process_open_fds",
            "Open file descriptors of the plugin's process and its children",
            process_open_fds.clone(),
        );
        let process_threads = Family::<PluginLabels, Gauge>::default();
        registry.register(
            "plugin_process_threads",
            "Threads of the plugin's process and its children",
            process_threads.clone(),
        );
        let process_read = Family::<PluginLabels, Counter>::default();
        registry.register_with_unit(
            "plugin_process_storage_read",
            "Bytes the plugin's processes read from storage since it was loaded",
            Unit::Bytes,
            process_read.clone(),
        );
        let process_written = Family::<PluginLabels, Counter>::default();
        registry.register_with_unit(
            "plugin_process_storage_written",
            "Bytes the plugin's processes wrote to storage since it was loaded",
            Unit::Bytes,
            process_written.clone(),
        );
        let plugin_restarts = Family::<PluginLabels, Counter>::default();
        registry.register(
            "plugin_restarts",
            "Restarts of the plugin's process after it crashed or stalled",
            plugin_restarts.clone(),
        );
        let plugin_condition = Family::<AlertLabels, Gauge>::default();
        registry.register(
            "plugin_condition",
            "1 while a supervision condition holds (stalled, busy_stall, stuck, leak_suspected, memory_soft_limit, memory_hard_limit, and from a cgroup's events memory_high, memory_max)",
            plugin_condition.clone(),
        );
        let plugin_alerts = Family::<AlertLabels, Counter>::default();
        registry.register(
            "plugin_alerts",
            "Supervision alerts raised for the plugin, by alert",
            plugin_alerts.clone(),
        );
        let call_duration =
            Family::<CallLabels, Histogram, fn() -> Histogram>::new_with_constructor(
                call_histogram as fn() -> Histogram,
            );
        registry.register_with_unit(
            "plugin_call_duration",
            "Duration of calls routed through the control API, by outcome",
            Unit::Seconds,
            call_duration.clone(),
        );
        let caller_calls = Family::<CallerLabels, Counter>::default();
        registry.register(
            "caller_calls",
            "Calls routed through the control API by caller (the first 32 callers, the rest as \
             `other`; `-` for none) and outcome: ok, refused (the plugin was out of service) or \
             failed",
            caller_calls.clone(),
        );
        let first_chunk =
            Family::<PluginLabels, Histogram, fn() -> Histogram>::new_with_constructor(
                call_histogram as fn() -> Histogram,
            );
        registry.register_with_unit(
            "plugin_first_chunk",
            "Time from a streamed call's arrival at the control API to its first chunk",
            Unit::Seconds,
            first_chunk.clone(),
        );
        let plugin_transitions = Family::<PluginStateLabels, Counter>::default();
        registry.register(
            "plugin_transitions",
            "Lifecycle transitions of the plugin, by the state entered",
            plugin_transitions.clone(),
        );
        let decisions = Family::<DecisionLabels, Counter>::default();
        registry.register(
            "decisions",
            "Scaler decisions by kind, action, rule and whether a command was sent",
            decisions.clone(),
        );
        let warnings = Family::<RuleLabels, Counter>::default();
        registry.register(
            "warnings",
            "Warnings raised for operators, by rule",
            warnings.clone(),
        );
        let events = Family::<EventLabels, Counter>::default();
        registry.register(
            "events",
            "Events published on the daemon's event stream, by type",
            events.clone(),
        );
        let mode = Family::<ModeLabels, Gauge>::default();
        registry.register(
            "scaler_mode",
            "1 for the scaler's current mode, 0 for the others",
            mode.clone(),
        );
        let tier = Family::<TierLabels, Gauge>::default();
        registry.register(
            "tier",
            "1 for the detected hardware tier; absent until one is detected",
            tier.clone(),
        );
        let tier_rank = Gauge::default();
        registry.register(
            "tier_rank",
            "Rank of the detected hardware tier (higher is bigger hardware)",
            tier_rank.clone(),
        );
        let start_time = GaugeF64::default();
        registry.register_with_unit(
            "start_time",
            "When the daemon started, since the Unix epoch",
            Unit::Seconds,
            start_time.clone(),
        );
        let ready = Gauge::default();
        registry.register(
            "ready",
            "1 once the daemon has made its first decisions (GET /ready answers 200), 0 before (or while its scaler does not answer)",
            ready.clone(),
        );
        let last_sample_time = Family::<Vec<(String, String)>, GaugeF64>::default();
        registry.register_with_unit(
            "last_sample_time",
            "When the latest sample of the machine was taken, since the Unix epoch; absent before the first",
            Unit::Seconds,
            last_sample_time.clone(),
        );
        Metrics {
            registry,
            render_lock: Mutex::new(()),
            utilization,
            smoothed,
            forecast,
            forecast_confidence,
            psi,
            psi_stall,
            daemon_resident,
            daemon_cpu,
            plugin_state,
            plugin_level,
            plugin_calls,
            plugin_errors,
            plugin_timeouts,
            plugin_streamed_calls,
            plugin_chunks,
            plugin_cancellations,
            plugin_in_flight,
            plugin_concurrency_limit,
            plugin_live_bytes,
            plugin_peak_bytes,
            plugin_ready,
            plugin_shed,
            plugin_flaps,
            shed_threshold,
            restore_threshold,
            emergency_threshold,
            plugin_gpu_memory,
            gpu_memory_other,
            gpu_memory_in_process,
            process_resident,
            process_virtual,
            process_cpu_cores,
            process_cpu_seconds,
            process_open_fds,
            process_threads,
            process_read,
            process_written,
            plugin_memory_pressure,
            plugin_restarts,
            plugin_condition,
            plugin_alerts,
            call_duration,
            caller_calls,
            callers: Mutex::new(std::collections::BTreeSet::new()),
            first_chunk,
            plugin_transitions,
            decisions,
            warnings,
            events,
            mode,
            tier,
            tier_rank,
            start_time,
            ready,
            last_sample_time,
        }
    }

    /// Counts what an event means for the metrics: events by type, decisions by kind, action and
    /// rule, warnings by rule, plugin transitions by the state entered.
    pub fn observe(&self, event: &DaemonEvent) {
        let kind = match event {
            DaemonEvent::Sample(_) => "sample",
            DaemonEvent::Assessment(_) => "assessment",
            DaemonEvent::Decision(decision) => {
                self.decisions
                    .get_or_create(&decision_labels(decision))
                    .inc();
                "decision"
            }
            DaemonEvent::Warning(warning) => {
                self.warnings
                    .get_or_create(&RuleLabels {
                        rule: warning.rule.as_str().to_owned(),
                    })
                    .inc();
                "warning"
            }
            DaemonEvent::Plugin(plugin_event) => {
                match &plugin_event.kind {
                    PluginEventKind::StateChanged { to, .. } => {
                        self.plugin_transitions
                            .get_or_create(&PluginStateLabels {
                                plugin: plugin_event.plugin.clone(),
                                state: to.name().to_owned(),
                            })
                            .inc();
                    }
                    PluginEventKind::Alert { alert, .. } => {
                        self.plugin_alerts
                            .get_or_create(&AlertLabels {
                                plugin: plugin_event.plugin.clone(),
                                alert: alert.as_str().to_owned(),
                            })
                            .inc();
                    }
                    _ => {}
                }
                "plugin"
            }
            DaemonEvent::Tier(_) => "tier",
        };
        self.events
            .get_or_create(&EventLabels {
                r#type: kind.to_owned(),
            })
            .inc();
    }

    /// Counts one call routed through the control API: its outcome (`ok`, `degraded`, `busy`,
    /// `timeout`, `failed`, `panicked`, `unknown`) and how long it took, per plugin; and per
    /// caller (the first [`MAX_CALLER_SERIES`] by name, the rest as [`OTHER_CALLERS`]) whether it
    /// succeeded, was refused or failed.
    pub fn observe_call(
        &self,
        plugin: &str,
        caller: &str,
        outcome: &str,
        duration: std::time::Duration,
    ) {
        self.call_duration
            .get_or_create(&CallLabels {
                plugin: plugin.to_owned(),
                outcome: outcome.to_owned(),
            })
            .observe(duration.as_secs_f64());
        let caller = {
            let mut callers = self.callers.lock().unwrap_or_else(|p| p.into_inner());
            if callers.contains(caller) {
                caller
            } else if callers.len() < MAX_CALLER_SERIES && caller != OTHER_CALLERS {
                callers.insert(caller.to_owned());
                caller
            } else {
                OTHER_CALLERS
            }
        };
        let outcome = match outcome {
            "ok" => "ok",
            "degraded" | "shed" => "refused",
            _ => "failed",
        };
        self.caller_calls
            .get_or_create(&CallerLabels {
                caller: caller.to_owned(),
                outcome: outcome.to_owned(),
            })
            .inc();
    }

    /// Records the time from a streamed call's arrival to its first chunk.
    pub fn observe_first_chunk(&self, plugin: &str, duration: std::time::Duration) {
        self.first_chunk
            .get_or_create(&PluginLabels {
                plugin: plugin.to_owned(),
            })
            .observe(duration.as_secs_f64());
    }

    /// Sets the snapshot figures from `live`, the host's `plugins` and the `scaler`'s figures, and
    /// encodes every metric as OpenMetrics text (ending in `# EOF`).
    pub fn render(
        &self,
        live: &LiveView,
        plugins: &[ballast_host::PluginStatus],
        scaler: &ScalerFigures,
    ) -> String {
        let _guard = self.render_lock.lock().unwrap_or_else(|p| p.into_inner());
        self.set_resources(live);
        self.set_gpu_memory(live);
        self.set_plugins(plugins);
        self.set_scaler(plugins, scaler);
        for mode in MODES {
            self.mode
                .get_or_create(&ModeLabels {
                    mode: mode.as_str().to_owned(),
                })
                .set(i64::from(mode == live.mode()));
        }
        self.tier.clear();
        if let Some(tier) = live.tier() {
            self.tier
                .get_or_create(&TierLabels { tier: tier.name })
                .set(1);
            self.tier_rank.set(i64::from(tier.rank));
        }
        self.start_time.set(live.started_at().as_secs_f64());
        let mut out = String::new();
        if let Err(error) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            // Writing to a String cannot fail; say so in the log rather than panic if it ever does.
            tracing::error!(%error, "cannot encode metrics");
        }
        out
    }

    /// The GPU memory each plugin holds, and what no plugin does, from the latest sample.
    fn set_gpu_memory(&self, live: &LiveView) {
        let Some(sample) = live.sample() else {
            return;
        };
        let as_i64 = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        for usage in &sample.plugins {
            let labels = PluginLabels {
                plugin: usage.plugin.clone(),
            };
            match usage.gpu_memory_bytes {
                Some(bytes) => {
                    self.plugin_gpu_memory
                        .get_or_create(&labels)
                        .set(as_i64(bytes));
                }
                // Not measured (no GPU, or not reported): no series rather than a fake zero.
                None => {
                    self.plugin_gpu_memory.remove(&labels);
                }
            }
        }
        if let Some(rest) = sample.gpu_memory_unattributed.value() {
            for (family, value) in [
                (&self.gpu_memory_other, rest.other_bytes),
                (&self.gpu_memory_in_process, rest.in_process_bytes),
            ] {
                match value {
                    Some(bytes) => {
                        family.get_or_create(&Vec::new()).set(as_i64(bytes));
                    }
                    None => {
                        family.remove(&Vec::new());
                    }
                }
            }
        }
    }

    fn set_resources(&self, live: &LiveView) {
        for family in [
            &self.utilization,
            &self.smoothed,
            &self.forecast,
            &self.forecast_confidence,
        ] {
            family.clear();
        }
        self.psi.clear();
        let resource = |r: Resource| ResourceLabels {
            resource: r.as_str().to_owned(),
        };
        self.last_sample_time.clear();
        if let Some(sample) = live.sample() {
            self.last_sample_time
                .get_or_create(&Vec::new())
                .set(sample.at.as_secs_f64());
            for r in Resource::ALL {
                if let Some(value) = sample.utilization(r).filter(|v| v.is_finite()) {
                    self.utilization.get_or_create(&resource(r)).set(value);
                }
            }
            for (name, reading) in [
                ("cpu", &sample.psi.cpu),
                ("memory", &sample.psi.memory),
                ("io", &sample.psi.io),
            ] {
                if let Some(reading) = reading.value() {
                    self.set_psi(name, reading);
                }
            }
            if let Some(daemon) = sample.daemon.value() {
                self.daemon_resident
                    .set(i64::try_from(daemon.rss_bytes).unwrap_or(i64::MAX));
                self.daemon_cpu.set(daemon.cpu_cores);
            }
        }
        if let Some(assessment) = live.assessment() {
            for ra in &assessment.resources {
                let labels = resource(ra.resource);
                if ra.smoothed.is_finite() {
                    self.smoothed.get_or_create(&labels).set(ra.smoothed);
                }
                if let Some(f) = &ra.forecast
                    && f.value.is_finite()
                {
                    self.forecast.get_or_create(&labels).set(f.value);
                    self.forecast_confidence
                        .get_or_create(&labels)
                        .set(f.confidence);
                }
            }
        }
    }

    fn set_psi(&self, resource: &str, reading: &PsiReading) {
        let lines = [
            ("some", Some(&reading.some)),
            ("full", reading.full.as_ref()),
        ];
        for (kind, line) in lines {
            let Some(line) = line else { continue };
            for (window, percent) in [
                ("10s", line.avg10),
                ("60s", line.avg60),
                ("300s", line.avg300),
            ] {
                self.psi
                    .get_or_create(&PsiLabels {
                        resource: resource.to_owned(),
                        kind: kind.to_owned(),
                        window: window.to_owned(),
                    })
                    .set(percent / 100.0);
            }
            let total = self.psi_stall.get_or_create(&PsiTotalLabels {
                resource: resource.to_owned(),
                kind: kind.to_owned(),
            });
            let seconds = line.total_us as f64 / 1e6;
            // The kernel's total only grows; a counter only takes the increase.
            if seconds > total.get() {
                total.inc_by(seconds - total.get());
            }
        }
    }

    fn set_plugins(&self, plugins: &[ballast_host::PluginStatus]) {
        self.plugin_level.clear();
        self.set_processes(plugins);
        for status in plugins {
            let labels = PluginLabels {
                plugin: status.name.clone(),
            };
            for state in PLUGIN_STATES {
                self.plugin_state
                    .get_or_create(&PluginStateLabels {
                        plugin: status.name.clone(),
                        state: state.to_owned(),
                    })
                    .set(i64::from(status.state.name() == state));
            }
            if let PluginState::Enabled { level } = status.state {
                self.plugin_level
                    .get_or_create(&labels)
                    .set(i64::from(level.0));
            }
            let stats = &status.stats;
            for (family, value) in [
                (&self.plugin_calls, stats.calls),
                (&self.plugin_errors, stats.errors),
                (&self.plugin_timeouts, stats.timeouts),
                (&self.plugin_streamed_calls, stats.streamed_calls),
                (&self.plugin_chunks, stats.chunks),
            ] {
                grow(&family.get_or_create(&labels), value);
            }
            for (reason, value) in [
                ("caller", stats.cancellations.caller),
                ("deadline", stats.cancellations.deadline),
                ("shed", stats.cancellations.shed),
            ] {
                let counter = self.plugin_cancellations.get_or_create(&CancelLabels {
                    plugin: status.name.clone(),
                    reason: reason.to_owned(),
                });
                grow(&counter, value);
            }
            let as_i64 = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
            self.plugin_in_flight
                .get_or_create(&labels)
                .set(i64::from(stats.in_flight));
            self.plugin_concurrency_limit
                .get_or_create(&labels)
                .set(i64::from(status.concurrency_limit));
            self.plugin_live_bytes
                .get_or_create(&labels)
                .set(as_i64(stats.live_bytes));
            self.plugin_peak_bytes
                .get_or_create(&labels)
                .set(as_i64(stats.peak_bytes));
        }
    }
}

/// Brings a counter up to the host's figure (the host's counters only grow: plugins are never
/// unloaded).
fn grow(counter: &Counter, value: u64) {
    if value > counter.get() {
        counter.inc_by(value - counter.get());
    }
}

impl Metrics {
    /// The figures that come from the scaler: readiness (the same function as the readiness
    /// endpoints), shed, flaps, thresholds; and when the latest sample was taken.
    fn set_scaler(&self, plugins: &[ballast_host::PluginStatus], scaler: &ScalerFigures) {
        for family in [&self.plugin_ready, &self.plugin_shed, &self.plugin_flaps] {
            family.clear();
        }
        for family in [
            &self.shed_threshold,
            &self.restore_threshold,
            &self.emergency_threshold,
        ] {
            family.clear();
        }
        self.ready.set(i64::from(
            scaler
                .readiness
                .as_ref()
                .is_some_and(|r| r.assessed_at.is_some()),
        ));
        if let Some(readiness) = &scaler.readiness {
            for status in plugins {
                let wake = readiness
                    .plugins
                    .iter()
                    .find(|(name, _)| *name == status.name)
                    .map(|(_, check)| check);
                let ready =
                    crate::readiness::plugin(status.into(), readiness.assessed_at, wake).is_ok();
                self.plugin_ready
                    .get_or_create(&PluginLabels {
                        plugin: status.name.clone(),
                    })
                    .set(i64::from(ready));
            }
        }
        for status in &scaler.plugins {
            let labels = PluginLabels {
                plugin: status.name.clone(),
            };
            self.plugin_shed
                .get_or_create(&labels)
                .set(i64::from(status.shed));
            self.plugin_flaps
                .get_or_create(&labels)
                .set(i64::from(status.flaps));
        }
        for (resource, thresholds) in &scaler.thresholds {
            let labels = ResourceLabels {
                resource: resource.as_str().to_owned(),
            };
            self.shed_threshold
                .get_or_create(&labels)
                .set(thresholds.shed);
            self.restore_threshold
                .get_or_create(&labels)
                .set(thresholds.restore);
            if let Some(emergency) = thresholds.emergency {
                self.emergency_threshold
                    .get_or_create(&labels)
                    .set(emergency);
            }
        }
    }

    /// The figures of plugins that run in a process: set while the process runs, absent when
    /// none does; totals only grow.
    fn set_processes(&self, plugins: &[ballast_host::PluginStatus]) {
        for family in [
            &self.process_resident,
            &self.process_virtual,
            &self.process_open_fds,
            &self.process_threads,
        ] {
            family.clear();
        }
        self.process_cpu_cores.clear();
        self.plugin_memory_pressure.clear();
        self.plugin_condition.clear();
        let as_i64 = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        for status in plugins {
            let Some(process) = &status.process else {
                continue;
            };
            let labels = PluginLabels {
                plugin: status.name.clone(),
            };
            for condition in &process.conditions {
                self.plugin_condition
                    .get_or_create(&AlertLabels {
                        plugin: status.name.clone(),
                        alert: condition.as_str().to_owned(),
                    })
                    .set(1);
            }
            if let Some(psi) = process
                .cgroup
                .as_ref()
                .filter(|c| c.live)
                .and_then(|c| c.memory_pressure)
            {
                for (kind, line) in [("some", Some(psi.some)), ("full", psi.full)] {
                    if let Some(line) = line {
                        self.plugin_memory_pressure
                            .get_or_create(&vec![
                                ("plugin".to_owned(), status.name.clone()),
                                ("kind".to_owned(), kind.to_owned()),
                            ])
                            .set(line.avg10 / 100.0);
                    }
                }
            }
            let restarts = self.plugin_restarts.get_or_create(&labels);
            let count = u64::from(process.restarts);
            if count > restarts.get() {
                restarts.inc_by(count - restarts.get());
            }
            let Some(usage) = &status.stats.process else {
                continue;
            };
            self.process_resident
                .get_or_create(&labels)
                .set(as_i64(usage.rss_bytes));
            self.process_virtual
                .get_or_create(&labels)
                .set(as_i64(usage.vsz_bytes));
            self.process_cpu_cores
                .get_or_create(&labels)
                .set(usage.cpu_cores);
            self.process_open_fds
                .get_or_create(&labels)
                .set(i64::from(usage.open_fds));
            self.process_threads
                .get_or_create(&labels)
                .set(i64::from(usage.threads));
            let cpu = self.process_cpu_seconds.get_or_create(&labels);
            if usage.cpu_seconds > cpu.get() {
                cpu.inc_by(usage.cpu_seconds - cpu.get());
            }
            for (family, value) in [
                (&self.process_read, usage.read_bytes),
                (&self.process_written, usage.write_bytes),
            ] {
                let counter = family.get_or_create(&labels);
                if value > counter.get() {
                    counter.inc_by(value - counter.get());
                }
            }
        }
    }
}

fn decision_labels(decision: &Decision) -> DecisionLabels {
    let action = match decision.action {
        Action::SetLevel { .. } => "set_level",
        Action::Disable => "disable",
        Action::Unload { .. } => "unload",
        Action::Enable { .. } => "enable",
        Action::Suspend => "suspend",
        Action::Resume => "resume",
        Action::SetConcurrency { .. } => "set_concurrency",
        Action::None => "none",
    };
    DecisionLabels {
        kind: decision.kind.as_str().to_owned(),
        action: action.to_owned(),
        rule: decision.rule.as_str().to_owned(),
        applied: decision.applied.to_string(),
    }
}

/// Turns prometheus-client's OpenMetrics text into the classic Prometheus text format (0.0.4):
/// counters are declared under their `_total` sample name, and `# UNIT` and `# EOF` go.
pub fn openmetrics_to_prometheus_text(openmetrics: &str) -> String {
    let mut counters: Vec<&str> = Vec::new();
    for line in openmetrics.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ")
            && let Some(name) = rest.strip_suffix(" counter")
        {
            counters.push(name);
        }
    }
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line.starts_with("# UNIT ") || line == "# EOF" {
            continue;
        }
        let renamed = ["# HELP ", "# TYPE "].iter().find_map(|prefix| {
            let rest = line.strip_prefix(prefix)?;
            let (name, tail) = rest.split_once(' ')?;
            counters
                .contains(&name)
                .then(|| format!("{prefix}{name}_total {tail}"))
        });
        match renamed {
            Some(line) => out.push_str(&line),
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests;
