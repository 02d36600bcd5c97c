//! The JSON bodies of the control API's answers: the daemon builds them, the CLI clients read
//! them.

use std::collections::BTreeMap;

use ballast_core::decision::Mode;
use ballast_core::plugin::PluginStats;
use ballast_core::{Assessment, Resource, Sample, Timestamp};
use serde::{Deserialize, Serialize};

/// `GET /status`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StatusView {
    /// The daemon's version.
    pub version: String,
    /// When the daemon started (milliseconds since the epoch).
    pub started_at: Timestamp,
    /// The scaler's mode.
    pub mode: Mode,
    /// The detected hardware tier, once detected.
    pub tier: Option<TierView>,
    /// When the latest sample was taken.
    pub sample_at: Option<Timestamp>,
    /// Each measured resource: value, smoothed, forecast and confidence.
    pub resources: Vec<ResourceView>,
    /// Every plugin in short.
    pub plugins: Vec<PluginSummary>,
    /// The latest sample, whole.
    pub sample: Option<Sample>,
}

/// The tier in short.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TierView {
    /// Its name.
    pub name: String,
    /// Its rank (0 is the least capable).
    pub rank: u32,
    /// The rule that chose it.
    pub rule: String,
}

/// One resource as the monitor and the predictor last saw it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ResourceView {
    /// Which resource.
    pub resource: Resource,
    /// The latest sampled utilization.
    pub value: Option<f64>,
    /// The smoothed utilization.
    pub smoothed: Option<f64>,
    /// The forecast at the predictor's horizon.
    pub forecast: Option<f64>,
    /// The forecast's confidence.
    pub confidence: Option<f64>,
    /// Whether the latest value looks anomalous.
    pub anomaly: bool,
}

impl ResourceView {
    /// One entry per resource that the sample or the assessment has, in [`Resource::ALL`] order.
    pub fn from_live(
        sample: Option<&Sample>,
        assessment: Option<&Assessment>,
    ) -> Vec<ResourceView> {
        Resource::ALL
            .into_iter()
            .filter_map(|resource| {
                let value = sample.and_then(|s| s.utilization(resource));
                let assessed = assessment.and_then(|a| a.get(resource));
                if value.is_none() && assessed.is_none() {
                    return None;
                }
                let forecast = assessed.and_then(|a| a.forecast.as_ref());
                Some(ResourceView {
                    resource,
                    value: value.or(assessed.map(|a| a.value)),
                    smoothed: assessed.map(|a| a.smoothed),
                    forecast: forecast.map(|f| f.value),
                    confidence: forecast.map(|f| f.confidence),
                    anomaly: assessed.is_some_and(|a| a.anomaly.flagged),
                })
            })
            .collect()
    }
}

/// A plugin in short, for `GET /status`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PluginSummary {
    /// Its name.
    pub name: String,
    /// Its lifecycle state: loaded, enabled, draining, disabled, suspended or failed.
    pub state: String,
    /// Its level, when enabled.
    pub level: Option<u32>,
}

/// `GET /plugins` (a list) and `GET /plugins/{name}`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PluginView {
    /// Its name.
    pub name: String,
    /// Its lifecycle state: loaded, enabled, draining, disabled, suspended or failed.
    pub state: String,
    /// Its level, when enabled.
    pub level: Option<u32>,
    /// Since when it is in that state.
    pub since: Timestamp,
    /// Why it entered that state.
    pub reason: String,
    /// What went wrong, when it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<String>,
    /// Its priority (higher is kept longer).
    pub priority: i32,
    /// Whether it is never shed.
    pub essential: bool,
    /// Its current max-concurrent-calls limit.
    pub concurrency_limit: u32,
    /// Live figures: memory, calls, errors, timeouts, latency percentiles.
    pub stats: PluginStats,
    /// The last call error.
    pub last_error: Option<String>,
    /// The scaler's view of it.
    pub scaler: Option<ScalerView>,
    /// Gauges the plugin reports itself.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub gauges: BTreeMap<String, f64>,
    /// What its file declares (only for `GET /plugins/{name}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub info: Option<serde_json::Value>,
    /// `native` or `process`.
    #[serde(default = "native")]
    pub kind: String,
    /// Its process, when it runs in one (a process plugin, or a native one isolated in a
    /// worker): pid, restarts, conditions, progress, log file. What the process uses is in
    /// `stats.process`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub process: Option<ballast_core::ProcessStatus>,
}

fn native() -> String {
    "native".to_owned()
}

/// What the scaler knows about a plugin.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ScalerView {
    /// Where the scaler has put it: `on`, `off`, `suspended` or `idle` (off, not shed: a call
    /// wakes it).
    pub placement: String,
    /// The level of that placement (for `off`, the level it had).
    pub placement_level: u32,
    /// The operator's pin, if any.
    pub pin: Option<PinView>,
    /// Whether its concurrency is lowered.
    pub throttled: bool,
    /// Whether the host reported it failed.
    pub failed: bool,
    /// How many times in a row it was shed soon after a restore.
    pub flaps: u32,
    /// The calm time it needs before its next restore, in milliseconds.
    pub stabilization_ms: u64,
    /// The memory its process was last measured using, which the pre-flight check counts
    /// when it exceeds the declaration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub measured_memory_bytes: Option<u64>,
    /// The CPU its process was last measured using, in cores.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub measured_cpu_cores: Option<f64>,
    /// The GPU memory its processes were last measured holding, which the scaler counts when
    /// it exceeds the declaration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub measured_gpu_memory_bytes: Option<u64>,
    /// Since when it has had no call, for a plugin with a `keep_alive`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_since: Option<Timestamp>,
}

/// An operator pin.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PinView {
    /// `on` or `off`.
    pub target: String,
    /// The level held, for `on`.
    pub level: Option<u32>,
    /// When it runs out (on the scaler's timeline), or never.
    pub until: Option<Timestamp>,
}

/// The answer to `POST /plugins/{name}/enable|disable|release|level|suspend|resume`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ActionView {
    /// The plugin.
    pub plugin: String,
    /// What was done: enable, disable, release, level, suspend or resume.
    pub action: String,
    /// The pin's duration, as given, when one was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<String>,
    /// A sentence for people.
    pub message: String,
    /// The plugin as it is now (a pinned change reaches the host a moment later).
    pub plugin_view: PluginView,
}

/// The answer of `GET /plugins/{name}/preflight?level=N`: would the plugin fit at that level
/// now, and what would a wake take down to make room. Asking changes nothing.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PreflightView {
    /// The plugin.
    pub plugin: String,
    /// The level asked about (its fullest allowed when none was given).
    pub level: u32,
    /// Whether it fits as things are.
    pub fits: bool,
    /// Whether it fits once the plugins in `would_take_down` are taken down.
    pub fits_with_room: bool,
    /// Its need and the headroom, per resource the scaler acts on.
    pub resources: Vec<PreflightResourceView>,
    /// What a wake would take down to make room for it, in order.
    pub would_take_down: Vec<PreflightStepView>,
    /// Why it does not fit even with room made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub no_room: Option<String>,
}

/// One resource of a [`PreflightView`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PreflightResourceView {
    /// The resource.
    pub resource: Resource,
    /// What the step would add, as a fraction of the machine (the larger of declared and
    /// measured).
    pub need: f64,
    /// What the plugin declares at the level, in bytes (memory, GPU memory) or cores (CPU).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub declared: Option<f64>,
    /// What it was measured using at the level, in the same unit, if it ran there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub measured: Option<f64>,
    /// The pressure now.
    pub pressure: f64,
    /// The shed threshold.
    pub shed: f64,
    /// What is free under the shed threshold (negative when over it).
    pub headroom: f64,
    /// Whether the step fits on this resource as things are.
    pub fits: bool,
}

/// One plugin a wake would take down, and how far.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PreflightStepView {
    /// The plugin.
    pub plugin: String,
    /// What would happen to it: `disable`, `level 0 -> 1`.
    pub action: String,
}
