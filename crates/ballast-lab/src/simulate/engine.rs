//! The simulation engine: the real `Predictor` and `Scaler` joined on a virtual clock, with a
//! counterfactual replay of one resource and the summary `ballast simulate` reports.
//!
//! Each trace reading is the utilization the machine had with every plugin at full level. While
//! the scaler has a plugin shed (or at a lower level) the difference between its declared cost
//! at full level and its cost now is subtracted from the reading, so the replay shows the effect
//! of the policy. Time comes only from the trace: scaler timeouts that fall between two readings
//! are fired at their own instant, as the daemon's timer would.
//!
//! Calls ([`Sim::add_calls`], `--calls`) add the host's side of the demand policy: each arrival is
//! a call to its plugin, which holds it for the plugin's `call_time`. A call to a loaded plugin runs
//! at once; one to a plugin being loaded waits until it is loaded; one to an idle plugin asks the
//! scaler to [wake](ballast_scaler::Scaler::wake) it, and the load that follows takes the plugin's
//! `load_time` (the call waits for it); a refused wake (no room, or the plugin is shed for
//! pressure) is a refused call. The scaler hears what the host would tell it: the calls in flight
//! and the end of the last call after every call starts and ends, `Enabled` once a load is done,
//! `Idle` at once after an unload, `Disabled` or `Suspended` at once after those commands. Calls
//! never queue for a concurrency limit. A plugin with a `keep_alive` or started `on-demand` gets
//! this host side even without calls (so that it is unloaded, or stays idle, as in the daemon).
//! Events at the same instant go in this order: a reading, the host's (a load done, calls
//! ending), arrivals, then the scaler's timers; the replay ends at the last reading or when the
//! last call has ended, whichever is later.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use std::time::Duration;

use ballast_core::decision::{Decision, DecisionKind};
use ballast_core::{
    Command, Level, LevelHints, PluginEvent, PluginEventKind, PluginSpec, PluginState, PluginStats,
    Resource, ResourceHints, StartMode, Timestamp,
};
use ballast_predict::Predictor;

use ballast_predict::PredictorSettings;
use ballast_scaler::{Scaler, ScalerConfig};
use serde::{Deserialize, Serialize};

/// The simulation's configuration file.
///
/// ```toml
/// resource = "cpu"             # the resource the trace stands for, unless --resource says
/// forecast = "predictor"       # predictor | none | line: what forecast the scaler is given
///
/// [scaler]                     # the scaler's own settings (ballast_scaler::ScalerConfig)
/// cooldown = "30s"
/// stabilization = "5m"
///
/// [predictor]
/// bucket = "30s"
///
/// [[plugins]]
/// name = "voice"
/// priority = 20
/// levels = [0.20, 0.08]        # cost of each level as a utilization of the resource
/// start = "on-demand"          # demand settings, as in the daemon's config
/// keep_alive = "5m"
/// load_time = "20s"            # what the simulation assumes of the plugin
/// call_time = "1s"
/// gpu_memory_gb = 24
/// ```
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimConfig {
    /// The resource the trace stands for when `--resource` is not given.
    #[serde(default)]
    pub resource: Option<Resource>,
    /// The forecast the scaler is given: the daemon's predictor (the default), none, or the
    /// seed's straight line (for the reference policies of `--reference`).
    #[serde(default)]
    pub forecast: ForecastSource,
    /// The scaler's settings, as in the daemon's configuration.
    #[serde(default)]
    pub scaler: ScalerConfig,
    /// The predictor's settings.
    #[serde(default)]
    pub predictor: PredictorSettings,
    /// The plugins and their declared cost.
    #[serde(default)]
    pub plugins: Vec<SimPlugin>,
}

/// Where the forecast the scaler sees comes from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ForecastSource {
    /// The predictor's own forecast and confidence, as in the daemon.
    #[default]
    Predictor,
    /// No forecast at all: the scaler acts on the smoothed value (and the reading) alone.
    None,
    /// The seed's forecast: a least-squares line through the last `window_buckets` closed
    /// buckets (counted, however far apart in time), extrapolated `horizon_buckets` past the
    /// newest, always counted (confidence 1). It is here to be measured against, not to be used:
    /// on the shared traces it is worse than persistence.
    Line,
}

#[cfg(test)]
mod line_tests;

/// The seed's forecaster ([`ForecastSource::Line`]): readings averaged into buckets, a
/// least-squares line through the last `window` of them, extrapolated `horizon` buckets past the
/// newest.
#[derive(Clone, Debug)]
struct LineForecaster {
    bucket_ms: u64,
    window: usize,
    horizon: usize,
    /// The open bucket: its index, sum and count.
    open: Option<(u64, f64, u32)>,
    /// Closed buckets, oldest first: (index, mean).
    closed: std::collections::VecDeque<(u64, f64)>,
    /// The forecast made when the newest bucket closed.
    forecast: Option<f64>,
    /// When the latest reading came, in milliseconds.
    last_ms: Option<u64>,
}

impl LineForecaster {
    fn new(bucket: Duration, window: usize, horizon: usize) -> LineForecaster {
        LineForecaster {
            bucket_ms: u64::try_from(bucket.as_millis()).unwrap_or(u64::MAX).max(1),
            window: window.max(2),
            horizon,
            open: None,
            closed: std::collections::VecDeque::new(),
            forecast: None,
            last_ms: None,
        }
    }

    /// Takes in a reading at `at`; the forecast, once two buckets have closed. Readings a
    /// bucket or more apart close their bucket at once, as the predictor does.
    fn observe(&mut self, at: Timestamp, value: f64) -> Option<f64> {
        let index = at.as_millis() / self.bucket_ms;
        let sparse = self
            .last_ms
            .is_some_and(|last| at.as_millis().saturating_sub(last) >= self.bucket_ms);
        self.last_ms = Some(
            self.last_ms
                .map_or(at.as_millis(), |l| l.max(at.as_millis())),
        );
        match &mut self.open {
            Some((open, sum, count)) if *open == index => {
                *sum += value;
                *count += 1;
            }
            Some((open, sum, count)) if index > *open => {
                let closed = (*open, *sum / f64::from((*count).max(1)));
                self.open = Some((index, value, 1));
                self.close(closed);
            }
            // A reading before the open bucket counts in it, as the predictor does.
            Some((_, sum, count)) => {
                *sum += value;
                *count += 1;
            }
            None => self.open = Some((index, value, 1)),
        }
        if sparse
            && let Some((open, sum, count)) = self.open
            && open == index
            && self.closed.back().is_none_or(|(i, _)| *i < open)
        {
            self.close((open, sum / f64::from(count.max(1))));
        }
        self.forecast
    }

    fn close(&mut self, bucket: (u64, f64)) {
        // A bucket closed at once (sparse readings) is not closed again by a late reading.
        if self.closed.back().is_some_and(|(i, _)| *i >= bucket.0) {
            return;
        }
        self.closed.push_back(bucket);
        while self.closed.len() > self.window {
            self.closed.pop_front();
        }
        let n = self.closed.len() as f64;
        if n < 2.0 {
            return;
        }
        // Bucket indices relative to the newest, so that large ones lose no precision.
        let newest = bucket.0;
        let x = |i: u64| -((newest - i) as f64);
        let mean_x = self.closed.iter().map(|(i, _)| x(*i)).sum::<f64>() / n;
        let mean_y = self.closed.iter().map(|(_, v)| v).sum::<f64>() / n;
        let (mut sxy, mut sxx) = (0.0, 0.0);
        for (i, v) in &self.closed {
            sxy += (x(*i) - mean_x) * (v - mean_y);
            sxx += (x(*i) - mean_x).powi(2);
        }
        let slope = if sxx > 0.0 { sxy / sxx } else { 0.0 };
        let value = mean_y + slope * (self.horizon as f64 - mean_x);
        self.forecast = value.is_finite().then(|| value.clamp(0.0, 1.0));
    }
}

/// A plugin of the simulation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimPlugin {
    /// Its name.
    pub name: String,
    /// Higher is kept longer.
    pub priority: i32,
    /// Never shed.
    #[serde(default)]
    pub essential: bool,
    /// Can be suspended instead of disabled (with `scaler.prefer_suspend`).
    #[serde(default)]
    pub can_suspend: bool,
    /// Uses the GPU (matters for GPU resources).
    #[serde(default)]
    pub needs_gpu: bool,
    /// Its cost at each level as a utilization of the simulated resource (0..1), level 0 (full)
    /// first; cheaper levels follow. One entry for a plugin without levels.
    pub levels: Vec<f64>,
    /// `preload` (loaded when the replay starts, the default) or `on-demand` (idle until a call
    /// wakes it), as in the daemon's config.
    #[serde(default)]
    pub start: StartMode,
    /// Unloaded after this long without calls, counted from the end of its last call, as in the
    /// daemon's config; left out, never unloaded for idleness.
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub keep_alive: Option<Duration>,
    /// How long the plugin takes to load (after a wake or a restore); calls wait for it.
    #[serde(default = "default_load_time", with = "humantime_serde")]
    pub load_time: Duration,
    /// How long each call holds the plugin (the same for every call).
    #[serde(default = "default_call_time", with = "humantime_serde")]
    pub call_time: Duration,
    /// The GPU memory it holds while loading, loaded or suspended, in GB, for the GPU-memory
    /// hours of the calls' summary.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu_memory_gb: Option<f64>,
}

/// Why calls cannot be added to a simulation ([`Sim::add_calls`]).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CallsError {
    /// The config has no plugin of that name.
    #[error("no plugin `{plugin}` to call; the plugins are: {plugins}")]
    UnknownPlugin {
        /// The plugin asked for.
        plugin: String,
        /// The config's plugins, comma-separated.
        plugins: String,
    },
    /// The replay has begun: calls are added before the first reading.
    #[error("calls to `{plugin}` must be added before the replay begins")]
    Begun {
        /// The plugin asked for.
        plugin: String,
    },
}

/// The load time assumed when a plugin does not say: 10 s, a mid-sized model read from a local
/// disk onto a GPU.
pub const DEFAULT_LOAD_TIME: Duration = Duration::from_secs(10);

/// The time a call holds its plugin when the plugin does not say.
pub const DEFAULT_CALL_TIME: Duration = Duration::from_secs(1);

fn default_load_time() -> Duration {
    DEFAULT_LOAD_TIME
}

fn default_call_time() -> Duration {
    DEFAULT_CALL_TIME
}

impl SimConfig {
    /// Every problem with the configuration, each naming its field.
    pub fn problems(&self) -> Vec<String> {
        let mut problems: Vec<String> = self
            .predictor
            .to_predictor_config()
            .problems()
            .into_iter()
            .map(|p| format!("predictor.{p}"))
            .collect();
        problems.extend(
            self.scaler
                .problems()
                .into_iter()
                .map(|p| format!("scaler.{p}")),
        );
        if self.plugins.is_empty() {
            problems.push("plugins: list at least one [[plugins]] entry".to_owned());
        }
        for (i, plugin) in self.plugins.iter().enumerate() {
            let what = if plugin.name.is_empty() {
                format!("plugins[{i}]")
            } else {
                format!("plugin `{}`", plugin.name)
            };
            if plugin.name.trim().is_empty() {
                problems.push(format!("{what}: name must not be empty"));
            }
            if self.plugins[..i].iter().any(|p| p.name == plugin.name) {
                problems.push(format!("{what}: listed twice"));
            }
            if plugin.levels.is_empty() {
                problems.push(format!(
                    "{what}: levels must list the cost of at least one level"
                ));
            }
            for (level, cost) in plugin.levels.iter().enumerate() {
                if !(0.0..=1.0).contains(cost) {
                    problems.push(format!(
                        "{what}: levels[{level}] must be a utilization between 0 and 1, got {cost}"
                    ));
                }
            }
            if plugin.keep_alive.is_some_and(|k| k.is_zero()) {
                problems.push(format!(
                    "{what}: keep_alive must be longer than zero (leave it out to never unload the \
                     plugin for idleness)"
                ));
            }
            if let Some(gb) = plugin.gpu_memory_gb
                && !(gb.is_finite() && gb >= 0.0)
            {
                problems.push(format!(
                    "{what}: gpu_memory_gb must be a number of GB at least 0, got {gb}"
                ));
            }
        }
        problems
    }
}

/// What `ballast simulate` reports at the end.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// The resource the trace was replayed as.
    pub resource: Resource,
    /// Readings replayed.
    pub samples: u64,
    /// Virtual time from the first reading to the last, in seconds.
    pub duration_seconds: f64,
    /// Shed steps (lower level, disable, suspend), applied or not.
    pub sheds: u64,
    /// Restore steps (higher level, enable, resume), applied or not.
    pub restores: u64,
    /// Restores followed by a shed of the same plugin within the stabilization period, its end
    /// included (at 5-minute readings a shed at the next reading after a restore is a flap).
    /// The scaler's own flap back-off is stricter about the end: a shed exactly one
    /// stabilization after the restore does not double the plugin's next wait.
    pub flaps: u64,
    /// Concurrency limits lowered.
    pub throttles: u64,
    /// Warnings (soft limits, blocked restores, nothing left to shed).
    pub warnings: u64,
    /// Seconds the replayed utilization spent at or above the shed threshold.
    pub seconds_over_high: f64,
    /// Seconds the replayed utilization spent at or above the emergency threshold.
    pub seconds_in_emergency: f64,
    /// Seconds each plugin spent shed: disabled, suspended or below its full level.
    pub seconds_shed: BTreeMap<String, f64>,
    /// The highest replayed utilization.
    pub peak_replayed: f64,
    /// The highest reading of the trace (after scaling).
    pub peak_trace: f64,
    /// What the callers of each plugin replayed with calls saw, and what the plugin held.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub calls: BTreeMap<String, CallSummary>,
}

impl Summary {
    /// Nothing replayed yet, as `resource`.
    pub(crate) fn empty(resource: Resource) -> Summary {
        Summary {
            resource,
            samples: 0,
            duration_seconds: 0.0,
            sheds: 0,
            restores: 0,
            flaps: 0,
            throttles: 0,
            warnings: 0,
            seconds_over_high: 0.0,
            seconds_in_emergency: 0.0,
            seconds_shed: BTreeMap::new(),
            peak_replayed: 0.0,
            peak_trace: 0.0,
            calls: BTreeMap::new(),
        }
    }

    /// Adds `other` in: counts and times summed (per plugin for the time shed), peaks the
    /// highest. The resource and the calls stay this summary's.
    pub(crate) fn add(&mut self, other: &Summary) {
        self.samples += other.samples;
        self.duration_seconds += other.duration_seconds;
        self.sheds += other.sheds;
        self.restores += other.restores;
        self.flaps += other.flaps;
        self.throttles += other.throttles;
        self.warnings += other.warnings;
        self.seconds_over_high += other.seconds_over_high;
        self.seconds_in_emergency += other.seconds_in_emergency;
        for (plugin, seconds) in &other.seconds_shed {
            *self.seconds_shed.entry(plugin.clone()).or_default() += seconds;
        }
        self.peak_replayed = self.peak_replayed.max(other.peak_replayed);
        self.peak_trace = self.peak_trace.max(other.peak_trace);
    }
}

/// The calls to one plugin over the replay.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CallSummary {
    /// Calls that arrived.
    pub calls: u64,
    /// Wakes: loads started because a call found the plugin idle.
    pub cold_starts: u64,
    /// Calls that waited for the plugin to load (after a wake, or a restore under way).
    pub waited: u64,
    /// The mean wait of the calls that waited, in seconds (0 when none did).
    pub wait_mean_seconds: f64,
    /// The 95th percentile (nearest rank) of the waits of the calls that waited, in seconds.
    pub wait_p95_seconds: f64,
    /// The longest wait, in seconds.
    pub wait_max_seconds: f64,
    /// Calls refused: the wake found no room, the plugin was shed for pressure (or pinned off),
    /// or its load was called off while they waited.
    pub refused: u64,
    /// Unloads after the keep-alive.
    pub unloads: u64,
    /// Seconds the plugin held its memory: loading, loaded or suspended.
    pub seconds_loaded: f64,
    /// `seconds_loaded` times its `gpu_memory_gb`, in GB-hours; absent when it declares none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu_memory_gb_hours: Option<f64>,
}

/// The whole result: every decision and the summary.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// The decision timeline.
    pub decisions: Vec<Decision>,
    /// The totals.
    pub summary: Summary,
}

/// One replayed reading as `--plot` draws it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SeriesPoint {
    /// When.
    pub at: Timestamp,
    /// The trace's reading, scaled: the utilization with every plugin at full level.
    pub trace: f64,
    /// The utilization replayed, less what shed plugins no longer use.
    pub replayed: f64,
    /// The predictor's smoothed value.
    pub smoothed: f64,
    /// The predictor's forecast at the horizon, made at this reading, and its confidence.
    pub forecast: Option<(f64, f64)>,
}

/// A plugin's level changes: `(at, level)`, `None` while it is off.
pub type LevelChanges = Vec<(Timestamp, Option<u32>)>;

/// Everything a plot of the replay needs, kept only when asked for ([`Sim::record`]).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Recording {
    /// Every reading, in replay order.
    pub points: Vec<SeriesPoint>,
    /// The plugins in config order, with each change of level: `(at, level)`, `None` while off.
    /// The first entry is the state at the first reading.
    pub levels: Vec<(String, LevelChanges)>,
}

#[derive(Debug)]
struct PluginTrack {
    name: String,
    costs: Vec<f64>,
    /// The level the host would have it at; `None` while it is off.
    level: Option<u32>,
    /// Off because it is idle (unloaded for idleness, or on-demand and not woken): not shed.
    idle: bool,
    last_restore_at: Option<Timestamp>,
    /// What the simulation assumes of it: its load time, call time and GPU memory.
    load_time: Duration,
    call_time: Duration,
    gpu_memory_gb: Option<f64>,
    /// The host's side of its lifecycle and calls, for a plugin that has one (see the module
    /// docs).
    demand: Option<Demand>,
}

/// What the host is doing with a plugin whose lifecycle is replayed.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Host {
    /// Not loaded: idle or disabled.
    Off,
    /// Being loaded, at `level`, until `ready_at`.
    Loading { ready_at: Timestamp, level: Level },
    /// Loaded at `level`, taking calls.
    On { level: Level },
    /// Paused, its memory still held.
    Suspended,
}

/// The host's side of one plugin: its state, its calls and their tally.
#[derive(Debug)]
struct Demand {
    host: Host,
    /// The call arrivals, earliest first, and the next one to replay.
    arrivals: Vec<Timestamp>,
    next_arrival: usize,
    /// Whether it was given calls (only those have a calls summary).
    has_calls: bool,
    /// The ends of the calls running, earliest first.
    running: BinaryHeap<Reverse<Timestamp>>,
    /// The arrivals of the calls waiting for the load to end.
    waiting: Vec<Timestamp>,
    last_call_end: Option<Timestamp>,
    /// Since when it holds its memory, while it does.
    held_since: Option<Timestamp>,
    tally: Tally,
}

#[derive(Debug, Default)]
struct Tally {
    calls: u64,
    cold_starts: u64,
    /// The waits of the calls that waited, in milliseconds.
    waits: Vec<u64>,
    refused: u64,
    unloads: u64,
    held: Duration,
}

impl Demand {
    fn new(start: StartMode) -> Demand {
        Demand {
            host: match start {
                StartMode::Preload => Host::On { level: Level::FULL },
                StartMode::OnDemand => Host::Off,
            },
            arrivals: Vec::new(),
            next_arrival: 0,
            has_calls: false,
            running: BinaryHeap::new(),
            waiting: Vec::new(),
            last_call_end: None,
            held_since: None,
            tally: Tally::default(),
        }
    }

    /// When the host's next event is due: the end of the load, or of the first call to end.
    fn next_event(&self) -> Option<Timestamp> {
        let ready = match self.host {
            Host::Loading { ready_at, .. } => Some(ready_at),
            _ => None,
        };
        let end = self.running.peek().map(|Reverse(end)| *end);
        match (ready, end) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn next_arrival(&self) -> Option<Timestamp> {
        self.arrivals.get(self.next_arrival).copied()
    }

    /// Whether calls are still to come, waiting or running.
    fn busy(&self) -> bool {
        self.next_arrival < self.arrivals.len()
            || !self.running.is_empty()
            || !self.waiting.is_empty()
    }

    fn hold(&mut self, now: Timestamp) {
        self.held_since.get_or_insert(now);
    }

    fn release(&mut self, now: Timestamp) {
        if let Some(since) = self.held_since.take() {
            self.tally.held += now - since;
        }
    }

    /// The calls waiting for a load that was called off are refused.
    fn refuse_waiting(&mut self) {
        self.tally.refused += self.waiting.len() as u64;
        self.waiting.clear();
    }

    /// The figures the host reports: calls in flight and the end of the last call.
    fn stats(&self) -> PluginStats {
        PluginStats {
            in_flight: u32::try_from(self.running.len()).unwrap_or(u32::MAX),
            last_call_end: self.last_call_end,
            ..PluginStats::default()
        }
    }

    fn summary(&self, gpu_memory_gb: Option<f64>) -> CallSummary {
        let t = &self.tally;
        let mut waits = t.waits.clone();
        waits.sort_unstable();
        let seconds = |ms: u64| ms as f64 / 1000.0;
        let p95 = match waits.len() {
            0 => 0,
            n => waits[(n * 95).div_ceil(100).clamp(1, n) - 1],
        };
        let seconds_loaded = t.held.as_secs_f64();
        CallSummary {
            calls: t.calls,
            cold_starts: t.cold_starts,
            waited: waits.len() as u64,
            wait_mean_seconds: if waits.is_empty() {
                0.0
            } else {
                waits.iter().sum::<u64>() as f64 / 1000.0 / waits.len() as f64
            },
            wait_p95_seconds: seconds(p95),
            wait_max_seconds: seconds(waits.last().copied().unwrap_or(0)),
            refused: t.refused,
            unloads: t.unloads,
            seconds_loaded,
            gpu_memory_gb_hours: gpu_memory_gb.map(|gb| gb * seconds_loaded / 3600.0),
        }
    }
}

/// What happens next on the virtual clock, besides a reading.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Event {
    /// The host's event for the plugin at this index: a load done, calls ending.
    Host(usize),
    /// A call to the plugin at this index arrives.
    Arrival(usize),
    /// The scaler's timer.
    Timer,
}

impl PluginTrack {
    fn cost(&self) -> f64 {
        match self.level {
            None => 0.0,
            Some(level) => {
                let i = (level as usize).min(self.costs.len().saturating_sub(1));
                self.costs.get(i).copied().unwrap_or(0.0)
            }
        }
    }

    fn saved(&self) -> f64 {
        self.costs.first().copied().unwrap_or(0.0) - self.cost()
    }

    fn is_shed(&self) -> bool {
        !self.idle && self.level != Some(0)
    }
}

/// The predictor and the scaler on a virtual clock.
#[derive(Debug)]
pub struct Sim {
    predictor: Predictor,
    scaler: Scaler,
    shed: f64,
    emergency: Option<f64>,
    thresholds: ballast_core::Thresholds,
    /// A shed within this long after the plugin's restore is a flap: the stabilization, unless
    /// [`Sim::count_flaps_within`] says otherwise.
    flap_window: Duration,
    forecast: ForecastSource,
    line: Option<LineForecaster>,
    /// How far ahead the predictor looks, for the line's forecast.
    horizon: Duration,
    plugins: Vec<PluginTrack>,
    seconds_shed: Vec<f64>,
    report: Report,
    /// The latest reading (scaled, before the counterfactual) and the time accounted up to.
    last_raw: f64,
    accounted_at: Option<Timestamp>,
    first_at: Option<Timestamp>,
    values: [(Resource, f64); 1],
    /// The time of the reading or timer being handled.
    now: Timestamp,
    recording: Option<Recording>,
    /// A fixed line and the seconds the replayed utilization spent at or above it
    /// ([`Sim::watch`]).
    watch: Option<(f64, f64)>,
}

impl Sim {
    /// A simulation of `resource` under `config`. Fails with every problem of the configuration.
    pub fn new(config: &SimConfig, resource: Resource) -> Result<Sim, Vec<String>> {
        let problems = config.problems();
        if !problems.is_empty() {
            return Err(problems);
        }
        let mut scaler_config = config.scaler.clone();
        let specs: Vec<PluginSpec> = config
            .plugins
            .iter()
            .map(|p| {
                // The declared cost goes to the scaler's pre-flight check as a utilization.
                scaler_config
                    .plugins
                    .entry(p.name.clone())
                    .or_default()
                    .cost
                    .insert(resource, p.levels.clone());
                PluginSpec {
                    name: p.name.clone(),
                    priority: p.priority,
                    essential: p.essential,
                    hints: ResourceHints {
                        levels: vec![LevelHints::default(); p.levels.len()],
                        cpu_share: 0.0,
                        needs_gpu: p.needs_gpu,
                    },
                    can_suspend: p.can_suspend,
                    start: p.start,
                    keep_alive: p.keep_alive,
                }
            })
            .collect();
        let profile = scaler_config.profile();
        let thresholds = profile.thresholds(resource);
        let scaler = Scaler::new(scaler_config, specs).map_err(|e| match e {
            ballast_scaler::ScalerError::Config(problems) => problems
                .into_iter()
                .map(|p| format!("scaler.{p}"))
                .collect(),
            other => vec![other.to_string()],
        })?;
        let plugins: Vec<PluginTrack> = config
            .plugins
            .iter()
            .map(|p| {
                let on_demand = p.start == StartMode::OnDemand;
                PluginTrack {
                    name: p.name.clone(),
                    costs: p.levels.clone(),
                    level: (!on_demand).then_some(0),
                    idle: on_demand,
                    last_restore_at: None,
                    load_time: p.load_time,
                    call_time: p.call_time,
                    gpu_memory_gb: p.gpu_memory_gb,
                    demand: (on_demand || p.keep_alive.is_some()).then(|| Demand::new(p.start)),
                }
            })
            .collect();
        Ok(Sim {
            predictor: Predictor::new(config.predictor.to_predictor_config()),
            scaler,
            shed: thresholds.shed,
            emergency: thresholds.emergency,
            thresholds,
            flap_window: profile.stabilization,
            forecast: config.forecast,
            line: (config.forecast == ForecastSource::Line).then(|| {
                LineForecaster::new(
                    config.predictor.bucket,
                    config.predictor.window_buckets,
                    config.predictor.horizon_buckets,
                )
            }),
            horizon: config.predictor.bucket.saturating_mul(
                u32::try_from(config.predictor.horizon_buckets).unwrap_or(u32::MAX),
            ),
            seconds_shed: vec![0.0; plugins.len()],
            plugins,
            report: Report {
                decisions: Vec::new(),
                summary: Summary::empty(resource),
            },
            last_raw: 0.0,
            accounted_at: None,
            first_at: None,
            values: [(resource, 0.0)],
            now: Timestamp::ZERO,
            recording: None,
            watch: None,
        })
    }

    /// Keeps every reading and level change for a plot ([`Sim::finish_recorded`]).
    pub fn record(&mut self) {
        self.recording = Some(Recording {
            points: Vec::new(),
            levels: self
                .plugins
                .iter()
                .map(|p| (p.name.clone(), Vec::new()))
                .collect(),
        });
    }

    /// Counts the seconds the replayed utilization spends at or above `line`, whatever the
    /// config's thresholds are (what `ballast tune` keeps fixed while it moves them).
    pub fn watch(&mut self, line: f64) {
        self.watch = Some((line, 0.0));
    }

    /// Counts a shed of a plugin within `window` after its restore as a flap, instead of within
    /// the config's stabilization: what the reference policies, some without a stabilization
    /// period, are measured with.
    pub fn count_flaps_within(&mut self, window: Duration) {
        self.flap_window = window;
    }

    /// The seconds counted by [`Sim::watch`] so far (zero without it).
    pub fn seconds_over_watch(&self) -> f64 {
        self.watch.map_or(0.0, |w| w.1)
    }

    /// The shed, restore and emergency thresholds of the replayed resource.
    pub fn thresholds(&self) -> ballast_core::Thresholds {
        self.thresholds
    }

    /// Replays `arrivals` as calls to `plugin` (see the module docs); calls added twice to the
    /// same plugin are merged. Fails when there is no such plugin, or when the replay has begun.
    pub fn add_calls(&mut self, plugin: &str, arrivals: &[Timestamp]) -> Result<(), CallsError> {
        if self.first_at.is_some() {
            return Err(CallsError::Begun {
                plugin: plugin.to_owned(),
            });
        }
        let Some(track) = self.plugins.iter_mut().find(|p| p.name == plugin) else {
            let names: Vec<&str> = self.plugins.iter().map(|p| p.name.as_str()).collect();
            return Err(CallsError::UnknownPlugin {
                plugin: plugin.to_owned(),
                plugins: names.join(", "),
            });
        };
        let start = if track.idle {
            StartMode::OnDemand
        } else {
            StartMode::Preload
        };
        let demand = track.demand.get_or_insert_with(|| Demand::new(start));
        demand.has_calls = true;
        demand.arrivals.extend_from_slice(arrivals);
        demand.arrivals.sort_unstable();
        Ok(())
    }

    /// The first call of all, if any.
    fn first_arrival(&self) -> Option<Timestamp> {
        self.plugins
            .iter()
            .filter_map(|p| p.demand.as_ref()?.arrivals.first().copied())
            .min()
    }

    /// Starts the replay at `start`: the preloaded plugins whose lifecycle is replayed are
    /// loaded, as the host reports at start-up.
    fn begin(&mut self, start: Timestamp) {
        self.first_at = Some(start);
        self.account_until(start);
        self.now = start;
        if let Some(recording) = &mut self.recording {
            for ((_, changes), plugin) in recording.levels.iter_mut().zip(&self.plugins) {
                changes.push((start, plugin.level));
            }
        }
        for i in 0..self.plugins.len() {
            let Some(demand) = &mut self.plugins[i].demand else {
                continue;
            };
            if let Host::On { level } = demand.host {
                demand.hold(start);
                self.report(i, enabled(level, "loaded at start"));
            }
        }
        self.drain();
    }

    /// Tells the scaler what the host reports about the plugin at `index`, now.
    fn report(&mut self, index: usize, kind: PluginEventKind) {
        let event = PluginEvent {
            at: self.now,
            plugin: self.plugins[index].name.clone(),
            kind,
        };
        self.scaler.handle_plugin_event(self.now, &event);
    }

    /// The next event on the virtual clock and when, in the order of the module docs.
    fn next_event(&self) -> Option<(Timestamp, Event)> {
        let mut next: Option<(Timestamp, Event)> = None;
        let mut consider = |at: Timestamp, event: Event| {
            if next.is_none_or(|n| (at, event) < n) {
                next = Some((at, event));
            }
        };
        for (i, plugin) in self.plugins.iter().enumerate() {
            let Some(demand) = &plugin.demand else {
                continue;
            };
            if let Some(at) = demand.next_event() {
                consider(at, Event::Host(i));
            }
            if let Some(at) = demand.next_arrival() {
                consider(at, Event::Arrival(i));
            }
        }
        if let Some(at) = self.scaler.poll_timeout() {
            consider(at, Event::Timer);
        }
        next
    }

    /// Fires every event due before a reading at `at`; those at `at` itself come after it.
    fn run_until(&mut self, at: Timestamp) {
        while let Some((t, event)) = self.next_event() {
            if t >= at {
                break;
            }
            self.fire(t, event);
        }
    }

    /// Fires the events left once the readings are over, until the last call has ended.
    fn run_tail(&mut self) {
        if self.first_at.is_none()
            && let Some(start) = self.first_arrival()
        {
            self.begin(start);
        }
        while self
            .plugins
            .iter()
            .any(|p| p.demand.as_ref().is_some_and(Demand::busy))
        {
            let Some((t, event)) = self.next_event() else {
                break;
            };
            self.fire(t, event);
        }
    }

    fn fire(&mut self, at: Timestamp, event: Event) {
        self.account_until(at);
        self.now = at;
        match event {
            Event::Timer => self.scaler.handle_timeout(at),
            Event::Host(i) => self.host_event(i),
            Event::Arrival(i) => self.arrival(i),
        }
        self.drain();
    }

    /// The host's event for the plugin at `index` now: its load is done (the waiting calls
    /// start), calls end.
    fn host_event(&mut self, index: usize) {
        let now = self.now;
        let call_time = self.plugins[index].call_time;
        let Some(demand) = &mut self.plugins[index].demand else {
            return;
        };
        let mut loaded = None;
        if let Host::Loading { ready_at, level } = demand.host
            && ready_at <= now
        {
            demand.host = Host::On { level };
            loaded = Some(level);
            for arrival in std::mem::take(&mut demand.waiting) {
                let wait = now.saturating_duration_since(arrival);
                if !wait.is_zero() {
                    demand
                        .tally
                        .waits
                        .push(u64::try_from(wait.as_millis()).unwrap_or(u64::MAX));
                }
                demand.running.push(Reverse(now + call_time));
            }
        }
        while let Some(Reverse(end)) = demand.running.peek().copied()
            && end <= now
        {
            demand.running.pop();
            demand.last_call_end = Some(end);
        }
        let stats = demand.stats();
        if let Some(level) = loaded {
            self.report(index, enabled(level, "loaded"));
        }
        self.report(index, PluginEventKind::Stats(stats));
    }

    /// A call to the plugin at `index` arrives now: it runs, waits for the load under way, wakes
    /// the plugin and waits, or is refused.
    fn arrival(&mut self, index: usize) {
        let now = self.now;
        let name = self.plugins[index].name.clone();
        let Some(demand) = &mut self.plugins[index].demand else {
            return;
        };
        demand.next_arrival += 1;
        demand.tally.calls += 1;
        let woken = match demand.host {
            Host::On { .. } | Host::Loading { .. } => None,
            Host::Off | Host::Suspended => {
                let grant = self.scaler.wake(now, &name);
                self.drain();
                Some(grant.is_ok_and(|g| !g.already_on))
            }
        };
        let call_time = self.plugins[index].call_time;
        let Some(demand) = &mut self.plugins[index].demand else {
            return;
        };
        match demand.host {
            Host::On { .. } => {
                demand.running.push(Reverse(now + call_time));
                let stats = demand.stats();
                self.report(index, PluginEventKind::Stats(stats));
            }
            Host::Loading { .. } => {
                demand.waiting.push(now);
                if woken == Some(true) {
                    demand.tally.cold_starts += 1;
                }
            }
            Host::Off | Host::Suspended => demand.tally.refused += 1,
        }
    }

    /// The replayed utilization now: the reading less what the shed plugins no longer use.
    fn replayed(&self) -> f64 {
        let saved: f64 = self.plugins.iter().map(PluginTrack::saved).sum();
        (self.last_raw - saved).clamp(0.0, 1.0)
    }

    /// Adds the time up to `at` to the summary's durations, in the state held until then.
    fn account_until(&mut self, at: Timestamp) {
        let Some(from) = self.accounted_at else {
            self.accounted_at = Some(at);
            return;
        };
        if at <= from {
            return;
        }
        let seconds = (at - from).as_secs_f64();
        let replayed = self.replayed();
        let summary = &mut self.report.summary;
        if replayed >= self.shed {
            summary.seconds_over_high += seconds;
        }
        if self.emergency.is_some_and(|e| replayed >= e) {
            summary.seconds_in_emergency += seconds;
        }
        if let Some((line, total)) = &mut self.watch
            && replayed >= *line
        {
            *total += seconds;
        }
        for (plugin, total) in self.plugins.iter().zip(&mut self.seconds_shed) {
            if plugin.is_shed() {
                *total += seconds;
            }
        }
        self.accounted_at = Some(at);
    }

    /// Replays one reading taken at `at`, already scaled to a utilization.
    pub fn step(&mut self, at: Timestamp, value: f64) {
        if self.first_at.is_none() {
            let start = self.first_arrival().map_or(at, |first| first.min(at));
            self.begin(start);
        }
        // Timers, calls and the host's events due before this reading happen first, at their
        // own time.
        self.run_until(at);
        self.account_until(at);
        self.now = at;
        let value = if value.is_finite() {
            value.max(0.0)
        } else {
            0.0
        };
        self.last_raw = value;
        let summary = &mut self.report.summary;
        summary.samples += 1;
        summary.peak_trace = summary.peak_trace.max(value);
        let replayed = self.replayed();
        self.report.summary.peak_replayed = self.report.summary.peak_replayed.max(replayed);
        self.values[0].1 = replayed;
        let mut assessment = self.predictor.observe(at, &self.values);
        match self.forecast {
            ForecastSource::Predictor => {}
            ForecastSource::None => {
                for r in &mut assessment.resources {
                    r.forecast = None;
                }
            }
            ForecastSource::Line => {
                let line = self.line.as_mut().and_then(|l| l.observe(at, replayed));
                for r in &mut assessment.resources {
                    r.forecast = line.map(|value| ballast_core::Forecast {
                        value,
                        horizon: self.horizon,
                        confidence: 1.0,
                        model: "line".to_owned(),
                        error: None,
                    });
                }
            }
        }
        if let Some(recording) = &mut self.recording
            && let Some(r) = assessment.get(self.values[0].0)
        {
            recording.points.push(SeriesPoint {
                at,
                trace: value,
                replayed,
                smoothed: r.smoothed,
                forecast: r.forecast.as_ref().map(|f| (f.value, f.confidence)),
            });
        }
        self.scaler.handle_assessment(at, &assessment);
        self.drain();
    }

    fn drain(&mut self) {
        while let Some(command) = self.scaler.poll_command() {
            self.apply(&command);
        }
        while let Some(decision) = self.scaler.poll_decision() {
            self.count(&decision);
            self.report.decisions.push(decision);
        }
        while self.scaler.poll_warning().is_some() {}
    }

    /// What the host would do with a command, as far as the replayed resource is concerned.
    fn apply(&mut self, command: &Command) {
        let resume_level = match command {
            Command::Resume { plugin, .. } => self.resume_level(plugin),
            _ => Level::FULL.0,
        };
        let Some(index) = self.plugins.iter().position(|p| p.name == command.plugin()) else {
            return;
        };
        let plugin = &mut self.plugins[index];
        match command {
            Command::Enable { level, .. } | Command::SetLevel { level, .. } => {
                plugin.level = Some(level.0);
            }
            Command::Resume { .. } => plugin.level = Some(resume_level),
            Command::Disable { .. } | Command::Suspend { .. } | Command::Unload { .. } => {
                plugin.level = None
            }
            Command::SetConcurrency { .. } => {}
        }
        match command {
            Command::Enable { .. } | Command::Resume { .. } => plugin.idle = false,
            Command::Unload { .. } => plugin.idle = true,
            _ => {}
        }
        let level = plugin.level;
        if let Some(recording) = &mut self.recording
            && let Some((_, changes)) = recording.levels.get_mut(index)
            && changes.last().is_none_or(|(_, l)| *l != level)
        {
            changes.push((self.now, level));
        }
        if self.plugins[index].demand.is_some() {
            self.host_command(index, command, Level(resume_level));
        }
    }

    /// What the host does with a command to a plugin whose lifecycle is replayed, and what it
    /// reports back.
    fn host_command(&mut self, index: usize, command: &Command, resume_level: Level) {
        let now = self.now;
        let load_time = self.plugins[index].load_time;
        let Some(demand) = &mut self.plugins[index].demand else {
            return;
        };
        let load = |level: Level| Host::Loading {
            ready_at: now + load_time,
            level,
        };
        let report = match command {
            Command::Enable { level, .. } | Command::SetLevel { level, .. } => match demand.host {
                Host::On { .. } => {
                    demand.host = Host::On { level: *level };
                    Some(enabled(*level, "level changed"))
                }
                Host::Loading { ready_at, .. } => {
                    demand.host = Host::Loading {
                        ready_at,
                        level: *level,
                    };
                    None
                }
                // A level change of a plugin that is not loaded changes nothing.
                Host::Off | Host::Suspended if matches!(command, Command::SetLevel { .. }) => None,
                Host::Off | Host::Suspended => {
                    demand.host = load(*level);
                    demand.hold(now);
                    None
                }
            },
            Command::Resume { .. } => match demand.host {
                Host::Suspended => {
                    demand.host = Host::On {
                        level: resume_level,
                    };
                    Some(enabled(resume_level, "resumed"))
                }
                Host::Off => {
                    demand.host = load(resume_level);
                    demand.hold(now);
                    None
                }
                Host::On { .. } | Host::Loading { .. } => None,
            },
            Command::Disable { .. } => {
                demand.refuse_waiting();
                demand.host = Host::Off;
                demand.release(now);
                Some(state(PluginState::Disabled, "disabled"))
            }
            Command::Suspend { .. } => {
                demand.refuse_waiting();
                demand.host = Host::Suspended;
                Some(state(PluginState::Suspended, "suspended"))
            }
            Command::Unload { .. } => {
                demand.host = Host::Off;
                demand.release(now);
                demand.tally.unloads += 1;
                Some(state(PluginState::Idle, "unloaded"))
            }
            Command::SetConcurrency { .. } => None,
        };
        if let Some(kind) = report {
            self.report(index, kind);
        }
    }

    fn resume_level(&self, plugin: &str) -> u32 {
        match self.scaler.placement(plugin) {
            Some(ballast_scaler::Placement::On { level }) => level.0,
            _ => Level::FULL.0,
        }
    }

    fn count(&mut self, decision: &Decision) {
        let summary = &mut self.report.summary;
        let track = decision
            .plugin
            .as_ref()
            .and_then(|name| self.plugins.iter_mut().find(|p| &p.name == name));
        match decision.kind {
            DecisionKind::Shed => {
                summary.sheds += 1;
                // The window's end counts: on a trace read every 5 minutes with a stabilization
                // of 5 minutes, a shed at the very next reading after a restore is the only flap
                // there can be.
                if let Some(track) = track
                    && let Some(restored) = track.last_restore_at.take()
                    && decision.at - restored <= self.flap_window
                {
                    summary.flaps += 1;
                }
            }
            DecisionKind::Restore => {
                summary.restores += 1;
                if let Some(track) = track {
                    track.last_restore_at = Some(decision.at);
                }
            }
            DecisionKind::Throttle => summary.throttles += 1,
            DecisionKind::Warn => summary.warnings += 1,
            DecisionKind::Unthrottle
            | DecisionKind::Override
            | DecisionKind::Unload
            | DecisionKind::Wake => {}
        }
    }

    /// Ends the replay (at the last reading, or once the last call has ended) and hands back the
    /// report and the recording.
    pub fn finish_recorded(mut self) -> (Report, Option<Recording>) {
        self.run_tail();
        let recording = self.recording.take();
        (self.finish(), recording)
    }

    /// Ends the replay (at the last reading, or once the last call has ended) and hands back the
    /// report.
    pub fn finish(mut self) -> Report {
        self.run_tail();
        if let (Some(first), Some(last)) = (self.first_at, self.accounted_at) {
            self.report.summary.duration_seconds = (last - first).as_secs_f64();
        }
        self.report.summary.seconds_shed = self
            .plugins
            .iter()
            .zip(&self.seconds_shed)
            .map(|(p, s)| (p.name.clone(), *s))
            .collect();
        let end = self.accounted_at.unwrap_or(self.now);
        for plugin in &mut self.plugins {
            let Some(demand) = &mut plugin.demand else {
                continue;
            };
            // What is still held at the end counts up to the end.
            demand.release(end);
            if demand.has_calls {
                self.report
                    .summary
                    .calls
                    .insert(plugin.name.clone(), demand.summary(plugin.gpu_memory_gb));
            }
        }
        self.report
    }
}

/// The host's report that a plugin runs at `level`.
fn enabled(level: Level, reason: &str) -> PluginEventKind {
    PluginEventKind::StateChanged {
        from: PluginState::Loaded,
        to: PluginState::Enabled { level },
        reason: reason.to_owned(),
        by_host: false,
    }
}

/// The host's report that a plugin went to `to` on a command.
fn state(to: PluginState, reason: &str) -> PluginEventKind {
    PluginEventKind::StateChanged {
        from: PluginState::Draining,
        to,
        reason: reason.to_owned(),
        by_host: false,
    }
}
