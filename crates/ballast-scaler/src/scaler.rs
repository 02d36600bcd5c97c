//! The shedding policy as a sans-IO state machine: `handle_*(now, ..)` in, `poll_*()` out.
//!
//! Restores go one step at a time, highest priority first, once the machine as a whole has been
//! calm for the stabilization period since the calm began or the last step, whichever is later.
//! The calm is timed on the pressure now (the smoothed value, or the reading once it confirms a
//! climb), every resource under its restore threshold, so that a forecast that rose and fell
//! again does not restart it; the step itself is taken only while the pressure in force, the
//! confident forecast included, is under the restore threshold too.
//! A plugin that flapped (or that the host keeps taking off at its hard limit) has a back-off of
//! its own on top: its stabilization, doubled per flap up to `flap_backoff_max`, counted from the
//! start of the calm or its own last step, whichever is later. While that runs the plugin is
//! passed over and the next plugin in priority order is restored, so a plugin in a long back-off
//! never holds the restores of the plugins behind it; it comes back when its back-off ends, and
//! each restore that passed it over names it in its reason.
//!
//! Restores read the forecast both ways. A restore is held, and the decision log says so
//! (`restore held: cpu forecast 0.83 at confidence 0.81 within 5m ...`), while a confident
//! forecast with the plugin's need added reaches the shed threshold within its horizon. And when
//! every resource's forecast is confident and stays well under the restore threshold (with the
//! need and the forecast's own recent error added), the restore waits only the stabilization
//! floor (by default a tenth of the period) instead of the whole period. A forecast under
//! `min_confidence` changes nothing: the plain stabilization rule applies, so a series the
//! forecaster cannot predict never holds a restore.

use std::collections::{BTreeMap, VecDeque};
use std::fmt::Write as _;
use std::time::Duration;

use ballast_core::decision::{
    Action, Decision, DecisionKind, Mode, PerformanceFigures, ResourceFigures, Rule,
};
use ballast_core::{
    Assessment, Command, Level, PluginEvent, PluginEventKind, PluginSpec, PluginState, PluginStats,
    Resource, StartMode, ThresholdProfile, Thresholds, Timestamp,
};

use crate::config::{DEFAULT_MIN_CALLS, MachineTotals, PluginPolicy, ScalerConfig};
use crate::error::ScalerError;

mod demand;

pub use demand::{NoRoom, Preflight, PreflightResource, PreflightStep, WakeError, WakeGrant};

/// The number of resources, the size of the per-resource tables.
const N_RESOURCES: usize = Resource::ALL.len();

/// The flap count at which the back-off stops doubling (the cap applies long before).
const MAX_FLAP_EXPONENT: u32 = 16;

/// Whether stopping a plugin's process (SIGSTOP) relieves `resource`. A stopped process uses no
/// CPU, GPU compute or IO, but keeps every byte of its memory (and GPU memory): for those, only
/// disabling it helps.
const fn suspension_relieves(resource: Resource) -> bool {
    match resource {
        Resource::Cpu | Resource::CpuPressure | Resource::IoPressure | Resource::Gpu => true,
        Resource::Memory | Resource::MemoryPressure | Resource::GpuMemory | Resource::Disk => false,
    }
}

/// Whether a suspended plugin still holds `resource` (its memory stays resident).
const fn held_while_suspended(resource: Resource) -> bool {
    matches!(resource, Resource::Memory | Resource::GpuMemory)
}

/// The position of `resource` in [`Resource::ALL`].
const fn resource_index(resource: Resource) -> usize {
    match resource {
        Resource::Memory => 0,
        Resource::Cpu => 1,
        Resource::Gpu => 2,
        Resource::GpuMemory => 3,
        Resource::Disk => 4,
        Resource::MemoryPressure => 5,
        Resource::CpuPressure => 6,
        Resource::IoPressure => 7,
    }
}

/// What an operator pins a plugin to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "target", rename_all = "snake_case")]
pub enum PinTarget {
    /// Keep the plugin enabled at this level.
    On {
        /// The level to hold.
        level: Level,
    },
    /// Keep the plugin off.
    Off,
}

/// The state the scaler has put a plugin in (or, in observe mode, would have).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum Placement {
    /// Enabled at a level.
    On {
        /// The level.
        level: Level,
    },
    /// Disabled or suspended.
    Off {
        /// Whether it was suspended (it resumes) rather than disabled (it is enabled again).
        suspended: bool,
        /// The level it had when it went off; a resume comes back at it.
        level: Level,
    },
}

/// What the scaler knows about one plugin, for the control API.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct PluginStatus {
    /// The plugin's name.
    pub name: String,
    /// Where the scaler has put it.
    pub placement: Placement,
    /// Whether its concurrency is lowered.
    pub throttled: bool,
    /// The operator's pin, if any, and until when.
    pub pin: Option<(PinTarget, Option<Timestamp>)>,
    /// Whether the host reported it failed.
    pub failed: bool,
    /// How many times in a row it was shed soon after a restore.
    pub flaps: u32,
    /// The calm time it needs before its next restore (doubled per flap).
    pub stabilization: Duration,
    /// What its process was last measured using (memory in bytes, CPU in cores), for a plugin
    /// that runs in a process; the pre-flight check counts it when it exceeds the declaration.
    #[serde(default)]
    pub measured: Option<(u64, f64)>,
    /// Whether it is idle (unloaded for idleness or on-demand and not woken): off, not shed.
    #[serde(default)]
    pub idle: bool,
    /// The GPU memory its processes were last measured holding, in bytes.
    #[serde(default)]
    pub measured_gpu_memory: Option<u64>,
    /// Since when it has had no call, for a plugin with a `keep_alive`.
    #[serde(default)]
    pub idle_since: Option<Timestamp>,
    /// Whether the policy holds it off below where it belongs (shed for pressure, or taken down
    /// to make room): not idle, not pinned, not failed, and the calm brings it back.
    #[serde(default)]
    pub shed: bool,
}

#[derive(Clone, Copy, Debug)]
struct Pin {
    target: PinTarget,
    until: Option<Timestamp>,
}

#[derive(Debug)]
struct Slot {
    spec: PluginSpec,
    policy: PluginPolicy,
    n_levels: u32,
    placement: Placement,
    throttled: bool,
    pin: Option<Pin>,
    failed: bool,
    reported: Option<PluginState>,
    last_restore_at: Option<Timestamp>,
    /// When the scaler last took a step on it, or the host took it off: its own back-off (its
    /// stabilization, doubled per flap) counts from here or from the start of the calm,
    /// whichever is later.
    last_step_at: Option<Timestamp>,
    flaps: u32,
    last_performance_step_at: Option<Timestamp>,
    performance_base: Option<PluginStats>,
    /// The fullest level the hardware tier allows, or `None` when it may not run at all.
    allowance: Option<Level>,
    /// Memory the plugin was seen to use, per level: the most during its last stay at that level.
    observed_memory: BTreeMap<Level, u64>,
    /// The level whose figure the next stats replace rather than raise (a new stay began).
    fresh_stay: Option<Level>,
    /// The memory the plugin uses now, from its latest figures.
    latest_memory: Option<u64>,
    /// What its process was last measured using, and at which level.
    measured: Option<Measured>,
    /// GPU memory its processes were last measured holding, and at which level.
    measured_gpu: Option<(Level, u64)>,
    /// Unloaded after this long without calls (from its spec).
    keep_alive: Option<Duration>,
    /// Off because it is idle (unloaded after its `keep_alive`, or on-demand and not woken
    /// yet): not shed, never brought back by the restore path; a call wakes it.
    idle: bool,
    /// Calls admitted and not answered at its latest figures.
    in_flight: u32,
    /// When it was last enabled (the keep-alive of a plugin without calls counts from there).
    enabled_at: Option<Timestamp>,
    /// Since when it has had no call: the end of its last call or when it was enabled, whichever
    /// is later; `None` while a call is in flight.
    idle_since: Option<Timestamp>,
    /// The `idle_since` an unload was asked for, so that it is asked once.
    unload_requested: Option<Timestamp>,
    /// A call wanted it while its unload was under way: wake it again once the unload is done.
    wake_after_unload: bool,
}

/// What a plugin's process was measured using while it ran at `level`.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Measured {
    level: Level,
    memory_bytes: u64,
    cpu_cores: f64,
}

impl Slot {
    /// The placement the scaler brings the plugin back to: full, or the pin's target.
    fn target(&self) -> Placement {
        match self.pin.map(|p| p.target) {
            Some(PinTarget::Off) => Placement::Off {
                suspended: false,
                level: self.lowest_level(),
            },
            Some(PinTarget::On { level }) => Placement::On { level },
            // A tier that allows only levels cheaper than the plugin's cheapest (the rules ask
            // more of this machine for every level it has) keeps it off.
            None => match self.allowance {
                Some(best) if best <= self.lowest_level() => Placement::On { level: best },
                Some(_) | None => Placement::Off {
                    suspended: false,
                    level: self.lowest_level(),
                },
            },
        }
    }

    /// Records the memory the plugin uses now against the level the host reports it at.
    fn observe(&mut self, stats: &PluginStats) {
        let Some(PluginState::Enabled { level }) = self.reported else {
            self.latest_memory = None;
            return;
        };
        // What the plugin counted itself, or what its process was measured holding (a process
        // plugin's resident memory), whichever is more.
        let bytes = stats
            .live_bytes
            .max(stats.process.as_ref().map_or(0, |p| p.rss_bytes));
        if bytes == 0 {
            // Plugins that cannot count their memory (C plugins) report nothing.
            return;
        }
        self.latest_memory = Some(bytes);
        let figure = self.observed_memory.entry(level).or_insert(0);
        if self.fresh_stay == Some(level) {
            *figure = bytes;
            self.fresh_stay = None;
        } else {
            *figure = (*figure).max(bytes);
        }
    }

    fn lowest_level(&self) -> Level {
        Level(self.n_levels.saturating_sub(1))
    }

    /// Whether the plugin is below its target (shed further than it should be when calm). An
    /// idle plugin is not: it waits for a call, not for calm.
    fn below_target(&self) -> bool {
        if self.idle {
            return false;
        }
        match (self.placement, self.target()) {
            (_, Placement::Off { .. }) => false,
            (Placement::Off { .. }, Placement::On { .. }) => true,
            (Placement::On { level }, Placement::On { level: target }) => level > target,
        }
    }

    /// Whether the policy may take a step on this plugin for pressure (not in an emergency).
    fn sheddable(&self) -> bool {
        !self.spec.essential
            && self.pin.is_none()
            && !self.failed
            && matches!(self.placement, Placement::On { .. })
    }

    /// Whether the policy may disable this suspended plugin to free memory: it serves nobody
    /// but still holds its memory.
    fn suspended_and_sheddable(&self) -> bool {
        !self.spec.essential
            && self.pin.is_none()
            && !self.failed
            && matches!(
                self.placement,
                Placement::Off {
                    suspended: true,
                    ..
                }
            )
    }

    /// Declared utilization of `resource` at `placement`, if it can be known. A suspended
    /// plugin still holds its memory at the level it had, and uses nothing else.
    fn need(&self, placement: Placement, resource: Resource, machine: &MachineTotals) -> f64 {
        let level = match placement {
            Placement::On { level } => level,
            Placement::Off {
                suspended: true,
                level,
            } if held_while_suspended(resource) => level,
            Placement::Off { .. } => return 0.0,
        };
        // What the plugin was seen to use counts when it is more than it declared: a plugin
        // that under-declares is not restored into the pressure it caused.
        // At the level it runs at now, what it uses now; at another, the most it used there.
        let observed = match (resource, machine.memory_bytes) {
            (Resource::Memory, Some(total)) if total > 0 => {
                let bytes = if placement == self.placement {
                    self.latest_memory
                } else {
                    self.observed_memory.get(&level).copied()
                };
                bytes.unwrap_or(0) as f64 / total as f64
            }
            _ => 0.0,
        };
        if let Some(costs) = self.policy.cost.get(&resource) {
            let index = (level.0 as usize).min(costs.len().saturating_sub(1));
            return costs.get(index).copied().unwrap_or(0.0).max(observed);
        }
        let hints = self.spec.hints.level(level);
        // What its process was measured using at this level counts when it is more than
        // declared: a declaration is a guess, a measurement is not.
        let measured = self.measured.filter(|m| m.level == level);
        match resource {
            Resource::Memory => match machine.memory_bytes {
                Some(total) if total > 0 => {
                    let bytes = hints
                        .memory_preferred_bytes
                        .max(hints.memory_min_bytes)
                        .max(measured.map_or(0, |m| m.memory_bytes));
                    (bytes as f64 / total as f64).max(observed)
                }
                _ => 0.0,
            },
            Resource::GpuMemory => match machine.gpu_memory_bytes {
                Some(total) if total > 0 => {
                    // What its processes were measured holding on the GPU at this level counts
                    // when it is more than declared, as for memory.
                    let measured = self
                        .measured_gpu
                        .filter(|(l, _)| *l == level)
                        .map_or(0, |(_, bytes)| bytes);
                    hints.gpu_memory_bytes.max(measured) as f64 / total as f64
                }
                _ => 0.0,
            },
            Resource::Cpu => match machine.cpu_cores {
                Some(cores) if cores > 0.0 => {
                    self.spec
                        .hints
                        .cpu_share
                        .max(measured.map_or(0.0, |m| m.cpu_cores))
                        / cores
                }
                _ => 0.0,
            },
            _ => 0.0,
        }
    }

    fn uses(&self, resource: Resource) -> bool {
        !resource.is_gpu()
            || self.spec.hints.needs_gpu
            || self
                .policy
                .cost
                .get(&resource)
                .is_some_and(|c| c.iter().any(|v| *v > 0.0))
    }
}

/// Where pressure stands for one resource.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Zone {
    Calm,
    Hold,
    Soft,
    Hard,
    Emergency,
}

/// A confident forecast a restore was checked against.
#[derive(Clone, Debug)]
struct ForecastFigures {
    view: ResourceFigures,
    /// The forecast.
    forecast: f64,
    /// The forecast's recent error (an early restore's margin).
    error: f64,
    /// What the check compared with the threshold.
    after: f64,
    /// How far ahead the forecast looks.
    horizon: Duration,
}

/// What the confident forecasts say about a restore step ([`Scaler::outlook`]): when every
/// resource stays under its restore threshold with the step (its forecast confident), the one
/// with the least room left. (A forecast that holds a restore needs no check of its own: a
/// confident forecast is in the pressure the pre-flight check compares.)
#[derive(Clone, Debug, Default)]
struct Outlook {
    calm: Option<ForecastFigures>,
}

/// The shedding policy: a pure state machine.
///
/// Feed it [`Assessment`]s with [`Scaler::handle_assessment`], plugin events with
/// [`Scaler::handle_plugin_event`] and expired timers with [`Scaler::handle_timeout`]; then drain
/// [`Scaler::poll_command`], [`Scaler::poll_decision`] and [`Scaler::poll_warning`], and arm a
/// timer for [`Scaler::poll_timeout`]. It never reads a clock, never sleeps and never does IO:
/// every `now` is an argument, so the daemon, the simulator and the property tests run the same
/// code.
#[derive(Debug)]
pub struct Scaler {
    config: ScalerConfig,
    profile: ThresholdProfile,
    thresholds: [Thresholds; N_RESOURCES],
    soft_limits: [f64; N_RESOURCES],
    views: [Option<ResourceFigures>; N_RESOURCES],
    /// How far ahead each resource's latest forecast looks.
    horizons: [Option<Duration>; N_RESOURCES],
    /// Each resource's latest forecast's recent error.
    forecast_errors: [Option<f64>; N_RESOURCES],
    /// Per resource, the pressure without the forecast (the smoothed value, or the reading once
    /// it confirms a climb): what the calm before a restore is judged on.
    present: [f64; N_RESOURCES],
    soft_warned: [bool; N_RESOURCES],
    /// Slots sorted by shed order: lowest priority first, then configuration order.
    slots: Vec<Slot>,
    now: Timestamp,
    calm_since: Option<Timestamp>,
    last_shed_at: Option<Timestamp>,
    last_step_at: Option<Timestamp>,
    /// When the latest assessment was taken in.
    assessed_at: Option<Timestamp>,
    nothing_to_shed_warned: bool,
    preflight_warned: bool,
    commands: VecDeque<Command>,
    decisions: VecDeque<Decision>,
    warnings: VecDeque<Decision>,
}

impl Scaler {
    /// A scaler for `plugins` under `config`. All plugins are taken to start enabled at full
    /// level. Fails with every problem of the configuration and the plugin list.
    pub fn new(config: ScalerConfig, plugins: Vec<PluginSpec>) -> Result<Self, ScalerError> {
        let mut problems = config.problems();
        for (i, spec) in plugins.iter().enumerate() {
            if spec.name.trim().is_empty() {
                problems.push(format!("plugin #{}: name must not be empty", i + 1));
            }
            if plugins[..i].iter().any(|p| p.name == spec.name) {
                problems.push(format!("plugin `{}`: listed twice", spec.name));
            }
            if !(spec.hints.cpu_share >= 0.0 && spec.hints.cpu_share.is_finite()) {
                problems.push(format!(
                    "plugin `{}`: hints.cpu_share must be a number at least 0",
                    spec.name
                ));
            }
        }
        for (name, policy) in &config.plugins {
            match plugins.iter().find(|p| &p.name == name) {
                None => problems.push(format!("plugins.{name}: no plugin of that name")),
                Some(spec) => {
                    let n_levels = spec.hints.n_levels() as usize;
                    for (resource, costs) in &policy.cost {
                        if costs.len() > n_levels {
                            problems.push(format!(
                                "plugins.{name}.cost.{resource}: lists {} levels but the plugin has {n_levels}",
                                costs.len()
                            ));
                        }
                    }
                }
            }
        }
        if !problems.is_empty() {
            return Err(ScalerError::Config(problems));
        }
        let mut slots: Vec<Slot> = plugins
            .into_iter()
            .map(|spec| Slot {
                policy: config.plugins.get(&spec.name).cloned().unwrap_or_default(),
                keep_alive: spec.keep_alive,
                n_levels: spec.hints.n_levels(),
                spec,
                placement: Placement::On { level: Level::FULL },
                throttled: false,
                pin: None,
                failed: false,
                reported: None,
                last_restore_at: None,
                last_step_at: None,
                flaps: 0,
                last_performance_step_at: None,
                allowance: Some(Level::FULL),
                performance_base: None,
                observed_memory: BTreeMap::new(),
                fresh_stay: None,
                latest_memory: None,
                measured: None,
                measured_gpu: None,
                idle: false,
                in_flight: 0,
                enabled_at: None,
                idle_since: None,
                unload_requested: None,
                wake_after_unload: false,
            })
            .collect();
        // An on-demand plugin starts idle: its first call wakes it.
        for slot in &mut slots {
            if slot.spec.start == StartMode::OnDemand {
                slot.idle = true;
                slot.placement = Placement::Off {
                    suspended: false,
                    level: Level::FULL,
                };
            }
        }
        // A stable sort keeps configuration order among equal priorities.
        slots.sort_by_key(|s| s.spec.priority);
        let profile = config.profile();
        let mut scaler = Scaler {
            thresholds: [Thresholds::DEFAULT; N_RESOURCES],
            soft_limits: [0.0; N_RESOURCES],
            views: std::array::from_fn(|_| None),
            horizons: [None; N_RESOURCES],
            forecast_errors: [None; N_RESOURCES],
            present: [0.0; N_RESOURCES],
            soft_warned: [false; N_RESOURCES],
            slots,
            now: Timestamp::ZERO,
            calm_since: None,
            last_shed_at: None,
            last_step_at: None,
            assessed_at: None,
            nothing_to_shed_warned: false,
            preflight_warned: false,
            commands: VecDeque::new(),
            decisions: VecDeque::new(),
            warnings: VecDeque::new(),
            profile: profile.clone(),
            config,
        };
        scaler.apply_profile(profile);
        Ok(scaler)
    }

    fn apply_profile(&mut self, profile: ThresholdProfile) {
        for resource in Resource::ALL {
            let i = resource_index(resource);
            let t = profile.thresholds(resource);
            self.thresholds[i] = t;
            self.soft_limits[i] = self
                .config
                .soft_limits
                .get(&resource)
                .copied()
                // Rounded so that 0.8 - 0.1 reads 0.7 in decisions, not 0.7000000000000001.
                .unwrap_or(((t.shed - self.config.soft_margin) * 1e9).round() / 1e9)
                // Never under restore: pressure between the two would be neither calm nor
                // soft, and a soft limit under restore would hold every restore forever.
                .clamp(t.restore.min(t.shed), t.shed);
            if let Some(view) = &mut self.views[i] {
                view.thresholds = t;
                view.soft_limit = self.soft_limits[i];
            }
        }
        self.profile = profile;
    }

    /// Switches to another threshold profile (a tier change). Plugin states are kept; the new
    /// thresholds count from the next evaluation.
    pub fn set_profile(&mut self, profile: ThresholdProfile) -> Result<(), ScalerError> {
        let problems = profile.problems("profile");
        if !problems.is_empty() {
            return Err(ScalerError::Config(problems));
        }
        self.apply_profile(profile);
        Ok(())
    }

    /// The threshold profile in force.
    pub fn profile(&self) -> &ThresholdProfile {
        &self.profile
    }

    /// Switches mode. Going from observe or advise to enforce forgets the steps that were only
    /// recorded: each plugin's placement becomes what the host last reported (full when it never
    /// reported), and the cool-down and stabilization clocks start again, so enforcement begins
    /// from the machine as it is rather than with a burst of catch-up commands.
    pub fn set_mode(&mut self, mode: Mode) {
        let was = self.config.mode;
        self.config.mode = mode;
        if was != Mode::Enforce && mode == Mode::Enforce {
            let now = self.now;
            for slot in &mut self.slots {
                slot.placement = match &slot.reported {
                    Some(PluginState::Enabled { level }) => Placement::On { level: *level },
                    Some(PluginState::Suspended) => Placement::Off {
                        suspended: true,
                        level: slot.lowest_level(),
                    },
                    Some(PluginState::Disabled | PluginState::Loaded | PluginState::Idle) => {
                        Placement::Off {
                            suspended: false,
                            level: slot.lowest_level(),
                        }
                    }
                    _ => Placement::On { level: Level::FULL },
                };
                slot.idle = slot.reported == Some(PluginState::Idle)
                    || (slot.reported.is_none() && slot.spec.start == StartMode::OnDemand);
                if slot.idle && slot.reported.is_none() {
                    slot.placement = Placement::Off {
                        suspended: false,
                        level: Level::FULL,
                    };
                }
                slot.throttled = false;
                slot.last_step_at = Some(now);
            }
            self.last_shed_at = None;
            self.last_step_at = Some(now);
        }
    }

    /// The mode in force.
    pub fn mode(&self) -> Mode {
        self.config.mode
    }

    /// The configuration the scaler was made with (mode as currently set).
    pub fn config(&self) -> &ScalerConfig {
        &self.config
    }

    /// What the scaler knows about every plugin, in shed order.
    pub fn plugins(&self) -> Vec<PluginStatus> {
        self.slots
            .iter()
            .map(|s| PluginStatus {
                name: s.spec.name.clone(),
                placement: s.placement,
                throttled: s.throttled,
                pin: s.pin.map(|p| (p.target, p.until)),
                failed: s.failed,
                flaps: s.flaps,
                stabilization: self.stabilization_for(s),
                measured: s.measured.map(|m| (m.memory_bytes, m.cpu_cores)),
                idle: s.idle,
                measured_gpu_memory: s.measured_gpu.map(|(_, bytes)| bytes),
                idle_since: s.keep_alive.and(s.idle_since),
                shed: matches!(s.placement, Placement::Off { .. }) && !s.failed && s.below_target(),
            })
            .collect()
    }

    /// When the scaler took in its latest assessment: `None` until its first decision round,
    /// which is when a daemon counts as ready.
    pub fn assessed_at(&self) -> Option<Timestamp> {
        self.assessed_at
    }

    /// The thresholds in force for each resource the scaler acts on.
    pub fn thresholds(&self) -> Vec<(Resource, Thresholds)> {
        Resource::ALL
            .into_iter()
            .filter(|r| {
                self.config
                    .acted_on
                    .as_ref()
                    .is_none_or(|acted_on| acted_on.contains(r))
            })
            .map(|r| (r, self.thresholds[resource_index(r)]))
            .collect()
    }

    /// The placement of one plugin, if it exists.
    pub fn placement(&self, plugin: &str) -> Option<Placement> {
        self.slots
            .iter()
            .find(|s| s.spec.name == plugin)
            .map(|s| s.placement)
    }

    /// Takes in the predictor's assessment made at `now` and decides.
    pub fn handle_assessment(&mut self, now: Timestamp, assessment: &Assessment) {
        let now = self.advance(now);
        self.assessed_at = Some(now);
        for ra in &assessment.resources {
            if let Some(acted_on) = &self.config.acted_on
                && !acted_on.contains(&ra.resource)
            {
                continue;
            }
            let i = resource_index(ra.resource);
            let (forecast, confidence) = match &ra.forecast {
                Some(f) => (Some(f.value), Some(f.confidence)),
                None => (None, None),
            };
            self.horizons[i] = ra.forecast.as_ref().map(|f| f.horizon);
            self.forecast_errors[i] = ra
                .forecast
                .as_ref()
                .and_then(|f| f.error)
                .filter(|e| e.is_finite() && *e >= 0.0);
            let forecast_used = match (forecast, confidence) {
                (Some(f), Some(c)) => c >= self.config.min_confidence && f.is_finite(),
                _ => false,
            };
            let smoothed = if ra.smoothed.is_finite() {
                ra.smoothed
            } else {
                0.0
            };
            let mut present = smoothed;
            // A reading over the shed threshold counts as it is once the smoothed value
            // confirms the rise (it is past the soft limit): the smoothing is there to ignore a
            // spike it keeps under the soft limit, not to hold a climb already under way for
            // one more tick, which is what the smoothed value alone would cost.
            if ra.value.is_finite()
                && ra.value >= self.thresholds[i].shed
                && smoothed >= self.soft_limits[i]
            {
                present = present.max(ra.value);
            }
            self.present[i] = present;
            let pressure = match forecast {
                Some(f) if forecast_used => present.max(f),
                _ => present,
            };
            self.views[i] = Some(ResourceFigures {
                resource: ra.resource,
                value: ra.value,
                smoothed,
                forecast,
                confidence,
                forecast_used,
                pressure,
                thresholds: self.thresholds[i],
                soft_limit: self.soft_limits[i],
            });
            self.soft_limit_warning(now, i);
        }
        let all_calm = self
            .views
            .iter()
            .flatten()
            .all(|v| self.present[resource_index(v.resource)] < v.thresholds.restore);
        if all_calm {
            self.calm_since.get_or_insert(now);
        } else {
            self.calm_since = None;
            self.preflight_warned = false;
        }
        if !self
            .views
            .iter()
            .flatten()
            .any(|v| v.pressure >= v.thresholds.shed)
        {
            self.nothing_to_shed_warned = false;
        }
        self.evaluate(now);
    }

    /// Takes in what the host reports about a plugin: state changes and performance figures.
    pub fn handle_plugin_event(&mut self, now: Timestamp, event: &PluginEvent) {
        let now = self.advance(now);
        let Some(i) = self.slots.iter().position(|s| s.spec.name == event.plugin) else {
            return;
        };
        match &event.kind {
            PluginEventKind::StateChanged { to, by_host, .. } => {
                let mut rewake = false;
                let slot = &mut self.slots[i];
                match to {
                    PluginState::Failed { .. } => slot.failed = true,
                    PluginState::Enabled { level } => {
                        slot.failed = false;
                        if !matches!(slot.reported, Some(PluginState::Enabled { level: l }) if l == *level)
                        {
                            slot.fresh_stay = Some(*level);
                        }
                        if !matches!(slot.reported, Some(PluginState::Enabled { .. })) {
                            // A new instance: its keep-alive counts from now.
                            slot.enabled_at = Some(event.at);
                            slot.idle_since = Some(event.at);
                            slot.unload_requested = None;
                        }
                        // Enabled by someone else while it was idle (an operator, the start-up
                        // of a mode that preloads everything): it runs.
                        if slot.idle {
                            slot.idle = false;
                            slot.placement = Placement::On { level: *level };
                        }
                    }
                    PluginState::Idle => {
                        // Unloaded for idleness (or never loaded): off, not shed.
                        let level = match slot.placement {
                            Placement::On { level } | Placement::Off { level, .. } => level,
                        };
                        slot.idle = true;
                        slot.placement = Placement::Off {
                            suspended: false,
                            level,
                        };
                        slot.in_flight = 0;
                        slot.idle_since = None;
                        slot.unload_requested = None;
                        slot.latest_memory = None;
                        // A call came while it was being unloaded and waits for it: wake it
                        // again (below, once the event is taken in).
                        rewake = std::mem::take(&mut slot.wake_after_unload);
                    }
                    _ => {}
                }
                slot.reported = Some(to.clone());
                if rewake {
                    // A wake that finds no room records why as a decision of its own.
                    let name = slot.spec.name.clone();
                    let _ = self.wake(now, &name);
                    return;
                }
                // The host took the plugin off on its own (a hard memory limit, a process that
                // exited for good, one that crashed while suspended): it is off now, and the
                // usual restore brings it back once the machine is calm, later each time it
                // breaks again (see `host_shed_accounting`). A disable that answers a command
                // is not followed: it may arrive after a newer command (an operator's enable
                // right after a disable) and would undo it.
                if *to == PluginState::Disabled && *by_host {
                    let level = match slot.placement {
                        Placement::On { level } => Some(level),
                        Placement::Off {
                            suspended: true,
                            level,
                        } => Some(level),
                        Placement::Off { .. } => None,
                    };
                    if let Some(level) = level {
                        self.host_shed_accounting(now, i);
                        self.slots[i].placement = Placement::Off {
                            suspended: false,
                            level,
                        };
                        // Like a step of the scaler's own: the stabilization counts again.
                        self.stepped(now, i);
                    }
                }
            }
            PluginEventKind::Stats(stats) => {
                if let (Some(usage), Placement::On { level }) =
                    (&stats.process, self.slots[i].placement)
                    && usage.cpu_cores.is_finite()
                {
                    self.slots[i].measured = Some(Measured {
                        level,
                        memory_bytes: usage.rss_bytes,
                        cpu_cores: usage.cpu_cores.max(0.0),
                    });
                }
                self.slots[i].observe(stats);
                self.activity(i, stats);
                self.performance(now, i, stats);
            }
            PluginEventKind::Reported { .. } | PluginEventKind::Alert { .. } => {}
        }
        self.expire_pins(now);
    }

    /// Takes in the GPU memory each plugin's processes were measured holding (`(plugin, bytes)`,
    /// attributed by the monitor). Like a plugin's memory, it counts at the level it was
    /// measured at when it is more than the plugin declares.
    pub fn handle_gpu_usage(&mut self, now: Timestamp, usage: &[(String, u64)]) {
        self.advance(now);
        for (plugin, bytes) in usage {
            if let Some(slot) = self.slots.iter_mut().find(|s| &s.spec.name == plugin)
                && let Placement::On { level } = slot.placement
            {
                slot.measured_gpu = Some((level, *bytes));
            }
        }
    }

    /// Tells the scaler that the time it asked for with [`Scaler::poll_timeout`] has come.
    pub fn handle_timeout(&mut self, now: Timestamp) {
        let now = self.advance(now);
        self.evaluate(now);
    }

    /// The next command for the host. Only enforce mode produces any.
    pub fn poll_command(&mut self) -> Option<Command> {
        self.commands.pop_front()
    }

    /// The next decision for the decision log.
    pub fn poll_decision(&mut self) -> Option<Decision> {
        self.decisions.pop_front()
    }

    /// The next warning for operators: every decision in advise mode; soft limits, blocked
    /// restores and performance breaches of untouchable plugins in enforce mode; none in observe
    /// mode.
    pub fn poll_warning(&mut self) -> Option<Decision> {
        self.warnings.pop_front()
    }

    /// When the scaler wants [`Scaler::handle_timeout`] called, if it does: the end of a
    /// cool-down while pressure is up and a newer assessment waits to be acted on, the end of a
    /// stabilization period (the machine's, or a waiting plugin's own back-off) while a restore
    /// waits, or the end of a pin. Always later than the latest `now` it was given.
    pub fn poll_timeout(&self) -> Option<Timestamp> {
        let mut next: Option<Timestamp> = None;
        let mut consider = |t: Timestamp| {
            if t > self.now {
                next = Some(next.map_or(t, |n| n.min(t)));
            }
        };
        for slot in &self.slots {
            if let Some(until) = slot.pin.and_then(|p| p.until) {
                consider(until);
            }
            if let Some(at) = slot.unload_due() {
                consider(at);
            }
        }
        let zone = self.worst_zone().map_or(Zone::Calm, |(zone, _)| zone);
        if zone >= Zone::Soft
            && let Some(t) = self.last_shed_at
            && self.assessed_at.is_some_and(|a| a > t)
        {
            consider(t + self.profile.cooldown);
        }
        // Each plugin waiting for a restore, at the time it may come back: a plugin passed over
        // in its back-off gets its own timer, even while another restore is held.
        if let Some(calm_since) = self.calm_since {
            let calm_ready = self.calm_ready_at(calm_since);
            for i in self.restore_order() {
                consider(
                    self.own_ready_at(&self.slots[i], calm_since)
                        .max(calm_ready),
                );
            }
            // The next restore's earlier time, while the confident forecast stays calm.
            if let Some(index) = self.restore_candidate(self.now, calm_since) {
                consider(self.restore_ready_at(index, calm_since).0);
            }
        }
        next
    }

    /// Pins `plugin` to `target` until `until` (or until released). The scaler moves it there now
    /// and leaves it alone afterwards, except in an emergency; after an emergency it brings a
    /// plugin pinned on back to its pinned level by the usual restore steps. Like every other
    /// decision, the move is only recorded, not sent, in observe and advise mode.
    pub fn pin(
        &mut self,
        now: Timestamp,
        plugin: &str,
        target: PinTarget,
        until: Option<Timestamp>,
    ) -> Result<(), ScalerError> {
        let now = self.advance(now);
        let i = self.slot_index(plugin)?;
        if let PinTarget::On { level } = target
            && level.0 >= self.slots[i].n_levels
        {
            return Err(ScalerError::InvalidLevel {
                plugin: plugin.to_owned(),
                level,
                n_levels: self.slots[i].n_levels,
            });
        }
        self.slots[i].pin = Some(Pin { target, until });
        let mut reason = match target {
            PinTarget::On { level } => format!("operator pinned it on at level {level}"),
            PinTarget::Off => "operator pinned it off".to_owned(),
        };
        if let Some(until) = until {
            let _ = write!(reason, " until {until}");
        }
        let from = self.slots[i].placement;
        let to = match target {
            PinTarget::On { level } => Placement::On { level },
            // The operator asked for it off: disabled, not suspended (suspend and resume are
            // the operator's own commands to the host).
            PinTarget::Off => Placement::Off {
                suspended: false,
                level: match from {
                    Placement::On { level } | Placement::Off { level, .. } => level,
                },
            },
        };
        let action = match (from, to) {
            (a, b) if a == b => Action::None,
            (Placement::Off { .. }, Placement::Off { .. }) => Action::None,
            (
                Placement::On { .. },
                Placement::Off {
                    suspended: true, ..
                },
            ) => Action::Suspend,
            (Placement::On { .. }, Placement::Off { .. }) => Action::Disable,
            (
                Placement::Off {
                    suspended: true,
                    level: was,
                },
                Placement::On { level },
            ) if was == level => Action::Resume,
            (Placement::Off { .. }, Placement::On { level }) => Action::Enable { level },
            (Placement::On { level: from }, Placement::On { level: to }) => {
                Action::SetLevel { from, to }
            }
        };
        // A failed plugin is placed on but runs nothing: pinning it on is the operator asking
        // for a fresh instance, whatever its placement says.
        let action = match to {
            Placement::On { level } if self.slots[i].failed => Action::Enable { level },
            _ => action,
        };
        if action != Action::None {
            self.slots[i].placement = to;
        }
        self.record(
            now,
            DecisionKind::Override,
            action,
            Some(i),
            Rule::Pinned,
            None,
            None,
            reason,
        );
        Ok(())
    }

    /// Sets the fullest level the hardware tier allows `plugin` (`None`: it may not run here;
    /// a level past the plugin's cheapest: none of its levels may). Restores never go above
    /// it; an operator pin still may. A plugin already running above it
    /// is left alone until the policy next sheds it.
    pub fn set_allowance(&mut self, plugin: &str, best: Option<Level>) -> Result<(), ScalerError> {
        let index = self.slot_index(plugin)?;
        self.slots[index].allowance = best;
        Ok(())
    }

    /// Hands a pinned plugin back to the policy. Nothing changes at once: it is shed or restored
    /// by the rules from the next evaluation on.
    pub fn release(&mut self, now: Timestamp, plugin: &str) -> Result<(), ScalerError> {
        let now = self.advance(now);
        let i = self.slot_index(plugin)?;
        if self.slots[i].pin.take().is_some() {
            self.record(
                now,
                DecisionKind::Override,
                Action::None,
                Some(i),
                Rule::Released,
                None,
                None,
                "operator released its pin".to_owned(),
            );
        }
        Ok(())
    }

    fn slot_index(&self, plugin: &str) -> Result<usize, ScalerError> {
        self.slots
            .iter()
            .position(|s| s.spec.name == plugin)
            .ok_or_else(|| ScalerError::UnknownPlugin(plugin.to_owned()))
    }

    /// Time never goes back inside the scaler: an earlier `now` counts as the latest one.
    fn advance(&mut self, now: Timestamp) -> Timestamp {
        self.now = self.now.max(now);
        self.now
    }

    fn stabilization_for(&self, slot: &Slot) -> Duration {
        let factor = 1u32 << slot.flaps.min(MAX_FLAP_EXPONENT);
        self.profile
            .stabilization
            .saturating_mul(factor)
            .min(self.config.flap_backoff_max.max(self.profile.stabilization))
    }

    fn expire_pins(&mut self, now: Timestamp) {
        for i in 0..self.slots.len() {
            if let Some(pin) = self.slots[i].pin
                && pin.until.is_some_and(|until| until <= now)
            {
                self.slots[i].pin = None;
                self.record(
                    now,
                    DecisionKind::Override,
                    Action::None,
                    Some(i),
                    Rule::PinExpired,
                    None,
                    None,
                    "the operator's pin ran out".to_owned(),
                );
            }
        }
    }

    fn zone(&self, view: &ResourceFigures) -> Zone {
        let t = view.thresholds;
        let p = view.pressure;
        // An emergency looks at the raw reading too: a jump to 0.99 memory must not wait for the
        // smoothing to catch up, the OOM killer will not.
        if t.emergency.is_some_and(|e| p.max(view.value) >= e) {
            Zone::Emergency
        } else if p >= t.shed {
            Zone::Hard
        } else if p >= view.soft_limit {
            Zone::Soft
        } else if p < t.restore {
            Zone::Calm
        } else {
            Zone::Hold
        }
    }

    /// The most urgent zone and the resource most over the matching threshold.
    fn worst_zone(&self) -> Option<(Zone, usize)> {
        let mut worst: Option<(Zone, f64, usize)> = None;
        for (i, view) in self.views.iter().enumerate() {
            let Some(view) = view else { continue };
            let zone = self.zone(view);
            let t = view.thresholds;
            let excess = match zone {
                Zone::Emergency => view.pressure - t.emergency.unwrap_or(t.shed),
                Zone::Hard => view.pressure - t.shed,
                Zone::Soft => view.pressure - view.soft_limit,
                Zone::Hold | Zone::Calm => view.pressure - t.restore,
            };
            let better = match worst {
                None => true,
                Some((z, e, _)) => zone > z || (zone == z && excess > e),
            };
            if better {
                worst = Some((zone, excess, i));
            }
        }
        worst.map(|(zone, _, i)| (zone, i))
    }

    fn soft_limit_warning(&mut self, now: Timestamp, i: usize) {
        let Some(view) = &self.views[i] else { return };
        let zone = self.zone(view);
        if zone == Zone::Calm {
            self.soft_warned[i] = false;
        } else if zone == Zone::Soft && !self.soft_warned[i] {
            self.soft_warned[i] = true;
            let reason = format!(
                "{} pressure {:.2} reached soft limit {:.2}{}",
                view.resource,
                view.pressure,
                view.soft_limit,
                pressure_note(view)
            );
            let figures = view.clone();
            self.record(
                now,
                DecisionKind::Warn,
                Action::None,
                None,
                Rule::SoftLimit,
                Some(figures),
                None,
                reason,
            );
        }
    }

    fn evaluate(&mut self, now: Timestamp) {
        self.expire_pins(now);
        self.unload_idle(now);
        let Some((zone, i)) = self.worst_zone() else {
            return;
        };
        let cooled_down = self.cooled_down(now);
        match zone {
            Zone::Emergency => self.emergency(now, i),
            Zone::Hard if cooled_down => self.shed_step(now, i),
            Zone::Soft if cooled_down && self.config.concurrency.enabled => {
                self.throttle_step(now, i)
            }
            // The calm's length is judged on the pressure now (`calm_since`); the step itself
            // also wants the pressure in force, the confident forecast included, under the
            // restore threshold.
            Zone::Calm if self.calm_since.is_some() => self.restore_step(now),
            _ => {}
        }
    }

    /// Whether the next shed or throttle step may be taken: the cool-down after the previous one
    /// has passed, and an assessment made after it has shown the step's effect.
    fn cooled_down(&self, now: Timestamp) -> bool {
        self.last_shed_at.is_none_or(|t| {
            now >= t + self.profile.cooldown && self.assessed_at.is_some_and(|a| a > t)
        })
    }

    /// The plugin a pressure step on resource `i` goes to: the lowest priority one that may be
    /// touched and, for a GPU resource, one that uses the GPU while any such is left.
    fn pick(&self, i: usize, eligible: impl Fn(&Slot) -> bool) -> Option<usize> {
        let resource = Resource::ALL[i];
        let mut fallback = None;
        for (index, slot) in self.slots.iter().enumerate() {
            if !eligible(slot) {
                continue;
            }
            if slot.uses(resource) {
                return Some(index);
            }
            fallback.get_or_insert(index);
        }
        fallback
    }

    fn shed_step(&mut self, now: Timestamp, i: usize) {
        let Some(view) = self.views[i].clone() else {
            return;
        };
        // A suspended plugin serves nobody yet keeps its memory: when memory is what runs hot,
        // it is disabled before anything that still serves is touched.
        if !suspension_relieves(view.resource)
            && let Some(index) = self.slots.iter().position(Slot::suspended_and_sheddable)
        {
            let reason = format!(
                "{} pressure {:.2} reached shed {:.2}{}; it was suspended, which keeps its memory",
                view.resource,
                view.pressure,
                view.thresholds.shed,
                pressure_note(&view)
            );
            let level = match self.slots[index].placement {
                Placement::On { level } | Placement::Off { level, .. } => level,
            };
            self.go_off(
                now,
                index,
                level,
                false,
                Rule::HighPressure,
                Some(view),
                None,
                reason,
            );
            self.last_shed_at = Some(now);
            return;
        }
        let Some(mut index) = self.pick(i, Slot::sheddable) else {
            let reason = format!(
                "{} pressure {:.2} reached shed {:.2} but no plugin is left that may be shed",
                view.resource, view.pressure, view.thresholds.shed
            );
            self.warn_nothing_to_shed(now, view, reason);
            return;
        };
        let mut reason = format!(
            "{} pressure {:.2} reached shed {:.2}{}",
            view.resource,
            view.pressure,
            view.thresholds.shed,
            pressure_note(&view)
        );
        // While the confident forecast, less what the steps so far free by the plugins' needs,
        // stays at the shed threshold, the next step is taken at once rather than after a
        // cool-down: the forecast already says the first step is not enough.
        let machine = self.config.machine;
        let mut freed = 0.0;
        loop {
            let before = self.slots[index].placement;
            self.step_down(
                now,
                index,
                Rule::HighPressure,
                Some(view.clone()),
                None,
                reason,
            );
            let slot = &self.slots[index];
            let step = slot.need(before, view.resource, &machine)
                - slot.need(slot.placement, view.resource, &machine);
            freed += step;
            let Some(forecast) = view.forecast.filter(|_| view.forecast_used) else {
                break;
            };
            if step <= 0.0 || forecast - freed < view.thresholds.shed {
                break;
            }
            let Some(next) = self.pick(i, Slot::sheddable) else {
                break;
            };
            index = next;
            reason = format!(
                "{} forecast {forecast:.2} at confidence {:.2}, less {freed:.2} freed by the step \
                 before, still reaches shed {:.2}",
                view.resource,
                view.confidence.unwrap_or(0.0),
                view.thresholds.shed
            );
        }
        self.last_shed_at = Some(now);
    }

    fn throttle_step(&mut self, now: Timestamp, i: usize) {
        let Some(view) = self.views[i].clone() else {
            return;
        };
        let Some(index) = self.pick(i, |s| s.sheddable() && !s.throttled) else {
            return;
        };
        let limit = self.throttled_limit(&self.slots[index]);
        self.slots[index].throttled = true;
        let reason = format!(
            "{} pressure {:.2} reached soft limit {:.2}{}, lowering concurrency first",
            view.resource,
            view.pressure,
            view.soft_limit,
            pressure_note(&view)
        );
        self.record(
            now,
            DecisionKind::Throttle,
            Action::SetConcurrency { limit: Some(limit) },
            Some(index),
            Rule::SoftLimit,
            Some(view),
            None,
            reason,
        );
        self.last_shed_at = Some(now);
        self.stepped(now, index);
    }

    fn throttled_limit(&self, slot: &Slot) -> u32 {
        let normal = slot
            .policy
            .max_concurrency
            .unwrap_or(self.config.concurrency.default_limit);
        ((f64::from(normal) * self.config.concurrency.factor).floor() as u32).max(1)
    }

    fn emergency(&mut self, now: Timestamp, i: usize) {
        let Some(view) = self.views[i].clone() else {
            return;
        };
        let reason = format!(
            "{} pressure {:.2} reached emergency {:.2}{}",
            view.resource,
            view.pressure,
            view.thresholds.emergency.unwrap_or(view.thresholds.shed),
            pressure_note(&view)
        );
        let mut any = false;
        for index in 0..self.slots.len() {
            let slot = &self.slots[index];
            if slot.spec.essential || slot.failed {
                continue;
            }
            let level = match slot.placement {
                Placement::On { level } => level,
                // Suspended plugins keep their memory: a memory emergency disables them too.
                Placement::Off {
                    suspended: true,
                    level,
                } if !suspension_relieves(view.resource) => level,
                Placement::Off { .. } => continue,
            };
            any = true;
            let suspended = self.suspend_instead(slot, Some(view.resource));
            self.go_off(
                now,
                index,
                level,
                suspended,
                Rule::Emergency,
                Some(view.clone()),
                None,
                reason.clone(),
            );
        }
        if any {
            self.last_shed_at = Some(now);
        } else {
            self.warn_nothing_to_shed(
                now,
                view,
                format!("{reason} but no plugin is left that may be shed"),
            );
        }
    }

    /// Warns, once until pressure falls, that pressure is high but nothing is left to shed.
    fn warn_nothing_to_shed(&mut self, now: Timestamp, view: ResourceFigures, reason: String) {
        if self.nothing_to_shed_warned {
            return;
        }
        self.nothing_to_shed_warned = true;
        self.record(
            now,
            DecisionKind::Warn,
            Action::None,
            None,
            Rule::NothingToShed,
            Some(view),
            None,
            reason,
        );
    }

    /// Whether `slot`'s last step off is a suspension rather than a disable: it can be
    /// suspended, `prefer_suspend` is set, and the step is for a resource that stopping its
    /// process relieves (not memory, which a stopped process keeps). Steps for performance
    /// (no resource) suspend too.
    fn suspend_instead(&self, slot: &Slot, resource: Option<Resource>) -> bool {
        self.config.prefer_suspend
            && slot.spec.can_suspend
            && resource.is_none_or(suspension_relieves)
    }

    /// One step down for `index`: a lower level if it has one, else off.
    fn step_down(
        &mut self,
        now: Timestamp,
        index: usize,
        rule: Rule,
        figures: Option<ResourceFigures>,
        performance: Option<PerformanceFigures>,
        reason: String,
    ) {
        let slot = &self.slots[index];
        let Placement::On { level } = slot.placement else {
            return;
        };
        if level.0 + 1 < slot.n_levels {
            let to = Level(level.0 + 1);
            let reason = self.flap_accounting(now, index, reason);
            self.slots[index].placement = Placement::On { level: to };
            self.record(
                now,
                DecisionKind::Shed,
                Action::SetLevel { from: level, to },
                Some(index),
                rule,
                figures,
                performance,
                reason,
            );
            self.stepped(now, index);
        } else {
            let suspended = self.suspend_instead(slot, figures.as_ref().map(|f| f.resource));
            self.go_off(
                now,
                index,
                level,
                suspended,
                rule,
                figures,
                performance,
                reason,
            );
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn go_off(
        &mut self,
        now: Timestamp,
        index: usize,
        level: Level,
        suspended: bool,
        rule: Rule,
        figures: Option<ResourceFigures>,
        performance: Option<PerformanceFigures>,
        reason: String,
    ) {
        let reason = self.flap_accounting(now, index, reason);
        self.slots[index].placement = Placement::Off { suspended, level };
        let action = if suspended {
            Action::Suspend
        } else {
            Action::Disable
        };
        self.record(
            now,
            DecisionKind::Shed,
            action,
            Some(index),
            rule,
            figures,
            performance,
            reason,
        );
        self.stepped(now, index);
    }

    /// Notes a step on the plugin at `index` (or the host taking it off): the stabilization counts
    /// again from `now`, for the machine as a whole and for the plugin's own back-off.
    fn stepped(&mut self, now: Timestamp, index: usize) {
        self.last_step_at = Some(now);
        self.slots[index].last_step_at = Some(now);
    }

    /// A shed soon after the plugin's last restore is a flap: its stabilization doubles. A shed
    /// after a restore that held for its whole stabilization resets the count.
    fn flap_accounting(&mut self, now: Timestamp, index: usize, mut reason: String) -> String {
        let stabilization = self.stabilization_for(&self.slots[index]);
        let slot = &mut self.slots[index];
        if let Some(restored) = slot.last_restore_at.take() {
            if now - restored < stabilization {
                slot.flaps = slot.flaps.saturating_add(1);
                let next = self.stabilization_for(&self.slots[index]);
                let _ = write!(
                    reason,
                    "; flap {} (restored {} ago), its next restore waits {}",
                    self.slots[index].flaps,
                    humantime::format_duration(now - restored),
                    humantime::format_duration(next)
                );
            } else {
                slot.flaps = 0;
            }
        }
        reason
    }

    /// A plugin the host took off on its own broke by itself (it reached its hard memory limit,
    /// its process gave up): restoring it sooner will not help. Unlike a shed of the scaler's,
    /// which is a flap only within the stabilization after a restore, this one counts as a flap
    /// whenever it comes within the backoff cap (`flap_backoff_max`) of the last restore, so a
    /// plugin that leaks to its hard limit in ten minutes waits twice as long each time (up to
    /// the cap) instead of being restored into the same breach every stabilization.
    fn host_shed_accounting(&mut self, now: Timestamp, index: usize) {
        let horizon = self.config.flap_backoff_max.max(self.profile.stabilization);
        let slot = &mut self.slots[index];
        if let Some(restored) = slot.last_restore_at.take() {
            if now - restored < horizon {
                slot.flaps = slot.flaps.saturating_add(1);
            } else {
                slot.flaps = 0;
            }
        }
    }

    /// The plugins a restore step may go to, in the order it tries them: those below their
    /// target, highest priority first, then the throttled ones, highest priority first.
    fn restore_order(&self) -> impl Iterator<Item = usize> + '_ {
        let ok = |s: &Slot| !s.failed && (s.pin.is_none() || s.below_target());
        let below = (0..self.slots.len())
            .rev()
            .filter(move |&i| ok(&self.slots[i]) && self.slots[i].below_target());
        let throttled = (0..self.slots.len()).rev().filter(move |&i| {
            let s = &self.slots[i];
            ok(s) && s.throttled && s.pin.is_none() && !s.below_target()
        });
        below.chain(throttled)
    }

    /// When the machine as a whole has been calm long enough for any restore: the stabilization
    /// period after the start of the calm or the last step, whichever is later.
    fn calm_ready_at(&self, calm_since: Timestamp) -> Timestamp {
        self.wait_start(calm_since) + self.profile.stabilization
    }

    /// Where a restore's wait starts: the start of the calm or the last step, whichever is later.
    fn wait_start(&self, calm_since: Timestamp) -> Timestamp {
        self.last_step_at.map_or(calm_since, |t| t.max(calm_since))
    }

    /// When `slot`'s own back-off ends: its stabilization (doubled per flap) after the start of
    /// the calm or its own last step, whichever is later. For a plugin that has not flapped this
    /// is never later than [`Scaler::calm_ready_at`], since a step on it is a step.
    fn own_ready_at(&self, slot: &Slot, calm_since: Timestamp) -> Timestamp {
        let start = slot.last_step_at.map_or(calm_since, |t| t.max(calm_since));
        start + self.stabilization_for(slot)
    }

    /// When a restore may come while the confident forecast stays calm: the stabilization floor
    /// after the start of the calm or the last step, whichever is later.
    fn floor_ready_at(&self, calm_since: Timestamp) -> Timestamp {
        self.wait_start(calm_since) + self.config.floor_of(self.profile.stabilization)
    }

    /// When the restore of the plugin at `index` may come, and what the confident forecasts say
    /// of it: at the stabilization floor where they let it come early (it has not flapped, and
    /// [`Scaler::outlook`] is calm), else after the whole stabilization.
    fn restore_ready_at(&self, index: usize, calm_since: Timestamp) -> (Timestamp, Outlook) {
        let plain = self.calm_ready_at(calm_since);
        // A plugin that flapped waits its whole back-off (it is the candidate only once that is
        // over) and the machine's whole stabilization too.
        if self.slots[index].flaps > 0 {
            return (plain, Outlook::default());
        }
        let (_, to) = self.restore_action(index);
        let outlook = self.outlook(index, to);
        let ready = match outlook.calm {
            Some(_) => self.floor_ready_at(calm_since).min(plain),
            None => plain,
        };
        (ready, outlook)
    }

    /// The plugin a restore step at `now` goes to: the first in restore order that has not
    /// flapped or whose own back-off is over. A plugin still in its back-off does not hold the
    /// ones behind it; it comes back when its back-off ends. (A plugin that has not flapped has
    /// no back-off of its own: its wait is the machine's.)
    fn restore_candidate(&self, now: Timestamp, calm_since: Timestamp) -> Option<usize> {
        self.restore_order().find(|&i| {
            let slot = &self.slots[i];
            slot.flaps == 0 || self.own_ready_at(slot, calm_since) <= now
        })
    }

    /// The restore step on the plugin at `index`: its action and the placement it moves to.
    fn restore_action(&self, index: usize) -> (Action, Placement) {
        let slot = &self.slots[index];
        if !slot.below_target() {
            return (Action::SetConcurrency { limit: None }, slot.placement);
        }
        match slot.placement {
            Placement::Off {
                suspended: true,
                level,
            } => (Action::Resume, Placement::On { level }),
            Placement::Off { .. } => {
                let level = match slot.target() {
                    Placement::On { level } => level.max(slot.lowest_level()),
                    Placement::Off { .. } => slot.lowest_level(),
                };
                (Action::Enable { level }, Placement::On { level })
            }
            Placement::On { level } => {
                let to = Level(level.0.saturating_sub(1));
                (
                    Action::SetLevel { from: level, to },
                    Placement::On { level: to },
                )
            }
        }
    }

    /// What each resource's confident forecast says about moving the plugin at `index` to `to`:
    /// whether it lets the restore come at the stabilization floor (every resource has a
    /// confident forecast, and the pressure, forecast included, stays under the restore
    /// threshold with the need added and the forecast's recent error). A resource without a
    /// confident forecast lets nothing come early.
    fn outlook(&self, index: usize, to: Placement) -> Outlook {
        let slot = &self.slots[index];
        let machine = self.config.machine;
        let mut outlook = Outlook::default();
        let mut all_calm = true;
        for (i, view) in self.views.iter().enumerate() {
            let Some(view) = view else { continue };
            let added = (slot.need(to, view.resource, &machine)
                - slot.need(slot.placement, view.resource, &machine))
            .max(0.0);
            let forecast = match (view.forecast, view.forecast_used) {
                (Some(f), true) => f,
                _ => {
                    all_calm = false;
                    continue;
                }
            };
            let horizon = self.horizons[i].unwrap_or_default();
            // Well under: by more than the forecast has missed by lately. (The pressure holds
            // the confident forecast already.)
            let error = self.forecast_errors[i].unwrap_or(0.0);
            let after = view.pressure + added + error;
            if after >= view.thresholds.restore {
                all_calm = false;
            } else if outlook.calm.as_ref().is_none_or(|c| {
                after - view.thresholds.restore > c.after - c.view.thresholds.restore
            }) {
                // The resource with the least room left under its restore threshold.
                outlook.calm = Some(ForecastFigures {
                    view: view.clone(),
                    forecast,
                    error,
                    after,
                    horizon,
                });
            }
        }
        if !all_calm {
            outlook.calm = None;
        }
        outlook
    }

    /// Why each plugin ahead of `index` in restore order was passed over: it is still in its
    /// back-off.
    fn passed_over_note(&self, now: Timestamp, calm_since: Timestamp, index: usize) -> String {
        let mut note = String::new();
        for i in self.restore_order().take_while(|&i| i != index) {
            let slot = &self.slots[i];
            let ready = self.own_ready_at(slot, calm_since);
            let _ = write!(
                note,
                "; {} goes later: still in its back-off after {} flap{} ({} left of {})",
                slot.spec.name,
                slot.flaps,
                if slot.flaps == 1 { "" } else { "s" },
                humantime::format_duration(ready - now),
                humantime::format_duration(self.stabilization_for(slot))
            );
        }
        note
    }

    fn restore_step(&mut self, now: Timestamp) {
        let Some(calm_since) = self.calm_since else {
            return;
        };
        let Some(index) = self.restore_candidate(now, calm_since) else {
            return;
        };
        // Before the floor nothing can come, whatever the forecast says.
        let plain_ready = self.calm_ready_at(calm_since);
        if now < self.floor_ready_at(calm_since).min(plain_ready) {
            return;
        }
        let (ready, outlook) = self.restore_ready_at(index, calm_since);
        if now < ready {
            return;
        }
        let (action, to) = self.restore_action(index);
        // Early: before the whole stabilization period, which the forecast let it skip.
        let early = now < plain_ready;
        let stabilization = self.stabilization_for(&self.slots[index]);
        let slot = &self.slots[index];
        // The pre-flight check: the declared needs of the step must fit under every shed
        // threshold, given the pressure now, a confident forecast included (over its horizon).
        let machine = self.config.machine;
        let mut blocked: Option<(ResourceFigures, f64, f64, usize)> = None;
        let mut headroom: Option<(ResourceFigures, f64)> = None;
        for (i, view) in self.views.iter().enumerate() {
            let Some(view) = view else { continue };
            let added = (slot.need(to, view.resource, &machine)
                - slot.need(slot.placement, view.resource, &machine))
            .max(0.0);
            let projected = view.pressure + added;
            if projected >= view.thresholds.shed && blocked.is_none() {
                blocked = Some((view.clone(), projected, added, i));
            }
            let margin = view.pressure - view.thresholds.restore;
            if headroom
                .as_ref()
                .is_none_or(|(v, _)| margin > v.pressure - v.thresholds.restore)
            {
                headroom = Some((view.clone(), projected));
            }
        }
        if let Some((view, projected, added, i)) = blocked {
            if !self.preflight_warned {
                self.preflight_warned = true;
                let reason = match view
                    .forecast
                    .filter(|f| view.forecast_used && *f >= view.pressure)
                {
                    // The confident forecast is what reaches the threshold: the restore is held
                    // for what is coming, not for what is.
                    Some(forecast) => format!(
                        "restore held: {} forecast {:.2} at confidence {:.2} within {} with {} \
                         restored ({action}: {forecast:.2} + its {added:.2}), not under shed {:.2}",
                        view.resource,
                        projected,
                        view.confidence.unwrap_or(0.0),
                        humantime::format_duration(self.horizons[i].unwrap_or_default()),
                        slot.spec.name,
                        view.thresholds.shed
                    ),
                    None => format!(
                        "restoring {} ({action}) would bring {} to {projected:.2}, not under shed {:.2}",
                        slot.spec.name, view.resource, view.thresholds.shed
                    ),
                };
                self.record(
                    now,
                    DecisionKind::Warn,
                    Action::None,
                    Some(index),
                    Rule::PreflightFailed,
                    Some(view),
                    None,
                    reason,
                );
            }
            return;
        }
        let calm_for = now - calm_since;
        let mut reason = match outlook.calm.as_ref().filter(|_| early) {
            Some(calm) => {
                let since = now - self.wait_start(calm_since);
                format!(
                    "every resource below its restore threshold for {}, {} since the last step: \
                     past the stabilization floor {} (instead of {}) as the confident forecast \
                     stays calm, {} forecast {:.2} ± {:.2} at confidence {:.2} within {}, {:.2} \
                     with the step, under restore {:.2}",
                    humantime::format_duration(calm_for),
                    humantime::format_duration(since),
                    humantime::format_duration(self.config.floor_of(self.profile.stabilization)),
                    humantime::format_duration(stabilization),
                    calm.view.resource,
                    calm.forecast,
                    calm.error,
                    calm.view.confidence.unwrap_or(0.0),
                    humantime::format_duration(calm.horizon),
                    calm.after,
                    calm.view.thresholds.restore
                )
            }
            None => format!(
                "every resource below its restore threshold for {} (needs {})",
                humantime::format_duration(calm_for),
                humantime::format_duration(stabilization)
            ),
        };
        if let Some((view, projected)) = &headroom {
            let _ = write!(
                reason,
                "; {} {:.2} -> {projected:.2} after it",
                view.resource, view.pressure
            );
        }
        reason.push_str(&self.passed_over_note(now, calm_since, index));
        let kind = if matches!(action, Action::SetConcurrency { .. }) {
            self.slots[index].throttled = false;
            DecisionKind::Unthrottle
        } else {
            self.slots[index].placement = to;
            self.slots[index].last_restore_at = Some(now);
            DecisionKind::Restore
        };
        self.record(
            now,
            kind,
            action,
            Some(index),
            Rule::Stabilized,
            headroom.map(|(v, _)| v),
            None,
            reason,
        );
        self.stepped(now, index);
        self.preflight_warned = false;
    }

    fn performance(&mut self, now: Timestamp, index: usize, stats: &PluginStats) {
        let slot = &mut self.slots[index];
        let objective = slot.policy.latency_p95_objective;
        let limit = slot.policy.max_failure_rate;
        if objective.is_none() && limit.is_none() {
            return;
        }
        // The failure rate counts the calls since the last figures that had enough of them.
        let base = slot.performance_base.clone().unwrap_or_default();
        let (calls, errors) = if stats.calls < base.calls {
            // The plugin was re-created: its counters started again.
            (stats.calls, stats.errors)
        } else {
            (
                stats.calls - base.calls,
                stats.errors.saturating_sub(base.errors),
            )
        };
        let min_calls = slot.policy.min_calls.unwrap_or(DEFAULT_MIN_CALLS).max(1);
        let failure_rate = if calls >= min_calls {
            slot.performance_base = Some(stats.clone());
            (errors as f64 / calls as f64).min(1.0)
        } else {
            if slot.performance_base.is_none() {
                slot.performance_base = Some(PluginStats::default());
            }
            0.0
        };
        let objective_us = objective.map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX));
        let figures = PerformanceFigures {
            latency_p95_us: stats.latency_p95_us,
            latency_objective_us: objective_us,
            failure_rate,
            failure_rate_limit: limit,
        };
        let (rule, reason) = if let Some(o) = objective_us.filter(|o| stats.latency_p95_us > *o) {
            (
                Rule::LatencyObjective,
                format!(
                    "p95 latency {:.1} ms over its objective {:.1} ms",
                    stats.latency_p95_us as f64 / 1000.0,
                    o as f64 / 1000.0
                ),
            )
        } else if let Some(l) = limit.filter(|l| calls >= min_calls && failure_rate > *l) {
            (
                Rule::FailureRate,
                format!(
                    "failure rate {failure_rate:.2} over its limit {l:.2} ({errors} of {calls} calls)"
                ),
            )
        } else {
            return;
        };
        if !matches!(slot.placement, Placement::On { .. }) || slot.failed {
            return;
        }
        let cooled_down = slot
            .last_performance_step_at
            .is_none_or(|t| now >= t + self.profile.cooldown);
        if !cooled_down {
            return;
        }
        slot.last_performance_step_at = Some(now);
        if slot.spec.essential || slot.pin.is_some() {
            let why = if slot.spec.essential {
                "essential"
            } else {
                "pinned"
            };
            let reason = format!("{reason}; not degraded because it is {why}");
            self.record(
                now,
                DecisionKind::Warn,
                Action::None,
                Some(index),
                rule,
                None,
                Some(figures),
                reason,
            );
            return;
        }
        self.step_down(now, index, rule, None, Some(figures), reason);
    }

    /// Records a decision, and in enforce mode sends its command.
    #[allow(clippy::too_many_arguments)]
    fn record(
        &mut self,
        now: Timestamp,
        kind: DecisionKind,
        action: Action,
        index: Option<usize>,
        rule: Rule,
        resource: Option<ResourceFigures>,
        performance: Option<PerformanceFigures>,
        reason: String,
    ) {
        let mode = self.config.mode;
        let plugin = index.map(|i| self.slots[i].spec.name.clone());
        let command = match (&plugin, mode) {
            (Some(plugin), Mode::Enforce) => command_for(plugin, &action, &reason),
            _ => None,
        };
        let applied = command.is_some();
        if let Some(command) = command {
            self.commands.push_back(command);
        }
        let decision = Decision {
            at: now,
            kind,
            action,
            plugin,
            rule,
            resource,
            performance,
            applied,
            mode,
            reason,
        };
        let warn = match mode {
            Mode::Observe => false,
            Mode::Advise => true,
            Mode::Enforce => kind == DecisionKind::Warn,
        };
        if warn {
            self.warnings.push_back(decision.clone());
        }
        self.decisions.push_back(decision);
    }
}

/// The command that carries out `action` on `plugin`, if it changes anything.
fn command_for(plugin: &str, action: &Action, reason: &str) -> Option<Command> {
    let plugin = plugin.to_owned();
    let reason = reason.to_owned();
    Some(match action {
        Action::SetLevel { to, .. } => Command::SetLevel {
            plugin,
            level: *to,
            reason,
        },
        Action::Disable => Command::Disable { plugin, reason },
        Action::Unload { idle_since } => Command::Unload {
            plugin,
            idle_since: *idle_since,
            reason,
        },
        Action::Enable { level } => Command::Enable {
            plugin,
            level: *level,
            reason,
        },
        Action::Suspend => Command::Suspend { plugin, reason },
        Action::Resume => Command::Resume { plugin, reason },
        Action::SetConcurrency { limit } => Command::SetConcurrency {
            plugin,
            limit: *limit,
            reason,
        },
        Action::None => return None,
    })
}

/// What the pressure in a reason was, when it is not the smoothed value: the forecast, or the
/// reading itself (a rise the smoothed value confirms).
fn pressure_note(view: &ResourceFigures) -> String {
    match (view.forecast, view.confidence) {
        (Some(f), Some(c)) if view.forecast_used && f > view.smoothed && f >= view.pressure => {
            format!(
                " (forecast {f:.2} at confidence {c:.2}, smoothed {:.2})",
                view.smoothed
            )
        }
        _ if view.pressure > view.smoothed && view.pressure == view.value => format!(
            " (the reading itself: smoothed {:.2} confirms the rise past the soft limit {:.2})",
            view.smoothed, view.soft_limit
        ),
        _ => String::new(),
    }
}
