//! The simulation engine: the real `Predictor` and `Scaler` joined on a virtual clock, with a
//! counterfactual replay of one resource and the summary `ballast simulate` reports.
//!
//! Each trace reading is the utilization the machine had with every plugin at full level. While
//! the scaler has a plugin shed (or at a lower level) the difference between its declared cost
//! at full level and its cost now is subtracted from the reading, so the replay shows the effect
//! of the policy. Time comes only from the trace: scaler timeouts that fall between two readings
//! are fired at their own instant, as the daemon's timer would.

use std::collections::BTreeMap;
use std::time::Duration;

use ballast_core::decision::{Decision, DecisionKind};
use ballast_core::{Command, Level, LevelHints, PluginSpec, Resource, ResourceHints, Timestamp};
use ballast_predict::Predictor;

use ballast_predict::PredictorSettings;
use ballast_scaler::{Scaler, ScalerConfig};
use serde::{Deserialize, Serialize};

/// The simulation's configuration file.
///
/// ```toml
/// resource = "cpu"             # the resource the trace stands for, unless --resource says
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
/// ```
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimConfig {
    /// The resource the trace stands for when `--resource` is not given.
    #[serde(default)]
    pub resource: Option<Resource>,
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
    /// Restores followed by a shed of the same plugin within the stabilization period.
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
    last_restore_at: Option<Timestamp>,
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
        self.level != Some(0)
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
    stabilization: Duration,
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
                    ..Default::default()
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
            .map(|p| PluginTrack {
                name: p.name.clone(),
                costs: p.levels.clone(),
                level: Some(0),
                last_restore_at: None,
            })
            .collect();
        Ok(Sim {
            predictor: Predictor::new(config.predictor.to_predictor_config()),
            scaler,
            shed: thresholds.shed,
            emergency: thresholds.emergency,
            thresholds,
            stabilization: profile.stabilization,
            seconds_shed: vec![0.0; plugins.len()],
            plugins,
            report: Report {
                decisions: Vec::new(),
                summary: Summary {
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
                },
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

    /// The seconds counted by [`Sim::watch`] so far (zero without it).
    pub fn seconds_over_watch(&self) -> f64 {
        self.watch.map_or(0.0, |w| w.1)
    }

    /// The shed, restore and emergency thresholds of the replayed resource.
    pub fn thresholds(&self) -> ballast_core::Thresholds {
        self.thresholds
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
        // Timers due before this reading fire first, at their own time.
        while let Some(t) = self.scaler.poll_timeout().filter(|t| *t < at) {
            self.account_until(t);
            self.now = t;
            self.scaler.handle_timeout(t);
            self.drain();
        }
        self.account_until(at);
        self.now = at;
        if let Some(recording) = &mut self.recording
            && self.first_at.is_none()
        {
            for ((_, changes), plugin) in recording.levels.iter_mut().zip(&self.plugins) {
                changes.push((at, plugin.level));
            }
        }
        self.first_at.get_or_insert(at);
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
        let assessment = self.predictor.observe(at, &self.values);
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
        let level = plugin.level;
        if let Some(recording) = &mut self.recording
            && let Some((_, changes)) = recording.levels.get_mut(index)
            && changes.last().is_none_or(|(_, l)| *l != level)
        {
            changes.push((self.now, level));
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
                if let Some(track) = track
                    && let Some(restored) = track.last_restore_at.take()
                    && decision.at - restored < self.stabilization
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

    /// Ends the replay at the last reading and hands back the report and the recording.
    pub fn finish_recorded(mut self) -> (Report, Option<Recording>) {
        let recording = self.recording.take();
        (self.finish(), recording)
    }

    /// Ends the replay at the last reading and hands back the report.
    pub fn finish(mut self) -> Report {
        if let (Some(first), Some(last)) = (self.first_at, self.accounted_at) {
            self.report.summary.duration_seconds = (last - first).as_secs_f64();
        }
        self.report.summary.seconds_shed = self
            .plugins
            .iter()
            .zip(&self.seconds_shed)
            .map(|(p, s)| (p.name.clone(), *s))
            .collect();
        self.report
    }
}
