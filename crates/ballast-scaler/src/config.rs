//! The scaler's configuration: a serde type that reads well in TOML, and its validation.

use std::collections::BTreeMap;
use std::time::Duration;

use ballast_core::decision::Mode;
use ballast_core::{Resource, ThresholdProfile, Thresholds};
use serde::{Deserialize, Serialize};

/// Everything the shedding policy can be told. Every field has a default, so an empty TOML table
/// is a valid configuration with the design's defaults.
///
/// ```toml
/// mode = "enforce"          # observe | advise | enforce
/// min_confidence = 0.6      # a forecast counts only at or above this confidence
/// cooldown = "30s"          # wait after each shed step
/// stabilization = "5m"      # calm time before each restore step
/// stabilization_floor = "30s" # the wait when the confident forecast stays calm (default: a tenth)
/// flap_backoff_max = "1h"   # cap of a flapping plugin's doubled stabilization
/// soft_margin = 0.10        # soft limit = shed - soft_margin (never under restore), unless soft_limits names one
/// prefer_suspend = true     # suspend a can_suspend plugin instead of disabling it, for CPU, GPU and IO
///
/// [thresholds.default]
/// shed = 0.80
/// restore = 0.65
/// [thresholds.memory]
/// shed = 0.80
/// restore = 0.65
/// emergency = 0.95
///
/// [soft_limits]
/// cpu = 0.75
///
/// [concurrency]
/// enabled = true
/// factor = 0.5
/// default_limit = 8
///
/// [machine]                 # totals for the pre-flight check of declared needs in bytes
/// memory_bytes = 17179869184
/// cpu_cores = 8
///
/// [plugins.voice]
/// latency_p95_objective = "800ms"
/// max_failure_rate = 0.05
/// max_concurrency = 4
/// cost = { memory = [0.20, 0.08] } # declared utilization per level, overrides byte hints
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ScalerConfig {
    /// Observe (decide and record only), advise (also warn) or enforce (act).
    pub mode: Mode,
    /// A forecast counts toward pressure only when its confidence is at least this.
    pub min_confidence: f64,
    /// Wait after each shed or throttle step before the next, to see its effect.
    #[serde(with = "human_duration")]
    pub cooldown: Duration,
    /// How long every resource must stay below its restore threshold before a restore step.
    #[serde(with = "human_duration")]
    pub stabilization: Duration,
    /// The shortest wait before a restore step: when every resource's forecast is confident
    /// (at least `min_confidence`) and, with the plugin's need added, stays under the restore
    /// threshold (the restore would leave the machine calm over the forecast's horizon), the
    /// restore waits only this long of calm instead of the whole stabilization period. `None`:
    /// a tenth of the stabilization period in force. Equal to the stabilization, it turns early
    /// restores off. A plugin that flapped waits its whole back-off regardless.
    #[serde(
        default,
        with = "human_duration_opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub stabilization_floor: Option<Duration>,
    /// The longest a flapping plugin's stabilization may grow to (it doubles per flap).
    #[serde(with = "human_duration")]
    pub flap_backoff_max: Duration,
    /// Shed, restore and emergency thresholds: `default` and per resource.
    pub thresholds: ThresholdsConfig,
    /// The soft limit of a resource is its shed threshold minus this, unless `soft_limits` names
    /// one. Between the soft limit and the shed threshold the scaler warns and throttles.
    pub soft_margin: f64,
    /// Soft limits per resource, overriding `soft_margin`.
    pub soft_limits: BTreeMap<Resource, f64>,
    /// Suspend a plugin that can be suspended (its process is stopped with SIGSTOP) instead of
    /// disabling it, as its last shed step, when the resource under pressure is one a stopped
    /// process stops using: CPU, CPU and IO pressure, GPU compute. For memory, which a stopped
    /// process keeps, it is disabled (and a suspended plugin is disabled first).
    pub prefer_suspend: bool,
    /// Adaptive concurrency, the gentlest step.
    pub concurrency: ConcurrencyConfig,
    /// Machine totals, to turn declared needs in bytes into utilization for the pre-flight check.
    pub machine: MachineTotals,
    /// Per-plugin policy: performance objectives, concurrency, declared cost.
    pub plugins: BTreeMap<String, PluginPolicy>,
    /// The resources the scaler acts on; an assessment of any other is ignored (it is watched
    /// and shown, never shed for: shedding an integration frees no disk space). `None` acts on
    /// every resource. The daemon sets it from its `monitor.resources`.
    #[serde(skip)]
    pub acted_on: Option<Vec<Resource>>,
}

impl Default for ScalerConfig {
    fn default() -> Self {
        let profile = ThresholdProfile::default();
        ScalerConfig {
            mode: Mode::Enforce,
            min_confidence: 0.6,
            cooldown: profile.cooldown,
            stabilization: profile.stabilization,
            stabilization_floor: None,
            flap_backoff_max: Duration::from_secs(3600),
            thresholds: ThresholdsConfig {
                default: profile.default,
                resources: profile.resources,
            },
            soft_margin: 0.10,
            soft_limits: BTreeMap::new(),
            prefer_suspend: true,
            concurrency: ConcurrencyConfig::default(),
            machine: MachineTotals::default(),
            plugins: BTreeMap::new(),
            acted_on: None,
        }
    }
}

/// Thresholds: one set for every resource plus overrides per resource.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ThresholdsConfig {
    /// Thresholds of resources not named below.
    #[serde(default = "default_thresholds")]
    pub default: Thresholds,
    /// Thresholds per resource, keyed by its name (`memory`, `cpu`, `gpu_memory`, ...).
    #[serde(flatten)]
    pub resources: BTreeMap<Resource, Thresholds>,
}

fn default_thresholds() -> Thresholds {
    Thresholds::DEFAULT
}

impl Default for ThresholdsConfig {
    fn default() -> Self {
        ScalerConfig::default().thresholds
    }
}

/// Adaptive concurrency: under moderate pressure, lower plugins' max-concurrent-calls limits
/// before lowering levels or shedding.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ConcurrencyConfig {
    /// Whether the scaler throttles at all.
    pub enabled: bool,
    /// The throttled limit is `max(1, floor(limit * factor))`.
    pub factor: f64,
    /// A plugin's limit when its policy names none.
    pub default_limit: u32,
}

impl Default for ConcurrencyConfig {
    fn default() -> Self {
        ConcurrencyConfig {
            enabled: true,
            factor: 0.5,
            default_limit: 8,
        }
    }
}

/// The machine's totals. A total left out disables the pre-flight check for declared needs in
/// that unit (declared `cost` fractions are always checked).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MachineTotals {
    /// Memory in bytes (the cgroup limit when there is one).
    pub memory_bytes: Option<u64>,
    /// GPU memory in bytes of the device plugins use.
    pub gpu_memory_bytes: Option<u64>,
    /// CPU cores.
    pub cpu_cores: Option<f64>,
}

/// What the policy knows about one plugin beyond its spec.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PluginPolicy {
    /// Degrade the plugin when its p95 call latency exceeds this.
    #[serde(with = "human_duration_opt", skip_serializing_if = "Option::is_none")]
    pub latency_p95_objective: Option<Duration>,
    /// Degrade the plugin when the share of failed calls exceeds this, in `0..=1`.
    pub max_failure_rate: Option<f64>,
    /// Calls needed between two figures before a failure rate counts.
    pub min_calls: Option<u64>,
    /// The plugin's normal max-concurrent-calls limit.
    pub max_concurrency: Option<u32>,
    /// Declared utilization per level (level 0 first) per resource, e.g. `memory = [0.2, 0.08]`.
    /// It overrides the byte hints of the plugin's spec in the pre-flight check.
    pub cost: BTreeMap<Resource, Vec<f64>>,
}

/// The default number of calls between two figures before a failure rate counts.
pub const DEFAULT_MIN_CALLS: u64 = 20;

impl ScalerConfig {
    /// The shortest wait before a restore step under `stabilization` (the tier's, which may
    /// differ from this config's): [`ScalerConfig::stabilization_floor`], never longer than the
    /// stabilization, or a tenth of it.
    pub fn floor_of(&self, stabilization: Duration) -> Duration {
        self.stabilization_floor
            .map_or(stabilization / 10, |floor| floor.min(stabilization))
    }

    /// The threshold profile this configuration describes.
    pub fn profile(&self) -> ThresholdProfile {
        ThresholdProfile {
            default: self.thresholds.default,
            resources: self.thresholds.resources.clone(),
            cooldown: self.cooldown,
            stabilization: self.stabilization,
        }
    }

    /// Every problem with this configuration, each naming its field. Empty when it is valid.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if !(0.0..=1.0).contains(&self.min_confidence) {
            problems.push(format!(
                "min_confidence must be between 0 and 1, got {}",
                self.min_confidence
            ));
        }
        if self.stabilization.is_zero() {
            problems.push("stabilization must be longer than zero".to_owned());
        }
        if let Some(floor) = self.stabilization_floor
            && floor > self.stabilization
        {
            problems.push(format!(
                "stabilization_floor ({}) must not be longer than stabilization ({})",
                humantime::format_duration(floor),
                humantime::format_duration(self.stabilization)
            ));
        }
        if self.flap_backoff_max < self.stabilization {
            problems.push(format!(
                "flap_backoff_max ({}) must not be shorter than stabilization ({})",
                humantime::format_duration(self.flap_backoff_max),
                humantime::format_duration(self.stabilization)
            ));
        }
        problems.extend(self.thresholds.default.problems("thresholds.default"));
        for (resource, t) in &self.thresholds.resources {
            problems.extend(t.problems(&format!("thresholds.{resource}")));
        }
        if !(0.0..1.0).contains(&self.soft_margin) {
            problems.push(format!(
                "soft_margin must be at least 0 and below 1, got {}",
                self.soft_margin
            ));
        }
        for (resource, soft) in &self.soft_limits {
            let t = self.profile().thresholds(*resource);
            if !(t.restore..=t.shed).contains(soft) {
                problems.push(format!(
                    "soft_limits.{resource} must be between the restore threshold {} and the shed threshold {}, got {soft}",
                    t.restore, t.shed
                ));
            }
        }
        if !(self.concurrency.factor > 0.0 && self.concurrency.factor <= 1.0) {
            problems.push(format!(
                "concurrency.factor must be above 0 and at most 1, got {}",
                self.concurrency.factor
            ));
        }
        if self.concurrency.default_limit == 0 {
            problems.push("concurrency.default_limit must be at least 1".to_owned());
        }
        if self.machine.memory_bytes == Some(0) {
            problems.push("machine.memory_bytes must be above 0".to_owned());
        }
        if self.machine.gpu_memory_bytes == Some(0) {
            problems.push("machine.gpu_memory_bytes must be above 0".to_owned());
        }
        if let Some(cores) = self.machine.cpu_cores
            && !(cores > 0.0 && cores.is_finite())
        {
            problems.push(format!("machine.cpu_cores must be above 0, got {cores}"));
        }
        for (name, policy) in &self.plugins {
            problems.extend(policy.problems(&format!("plugins.{name}")));
        }
        problems
    }
}

impl PluginPolicy {
    /// Every problem with this policy, each naming its field under `what`.
    pub fn problems(&self, what: &str) -> Vec<String> {
        let mut problems = Vec::new();
        if self.latency_p95_objective == Some(Duration::ZERO) {
            problems.push(format!(
                "{what}.latency_p95_objective must be longer than zero"
            ));
        }
        if let Some(rate) = self.max_failure_rate
            && !(0.0..=1.0).contains(&rate)
        {
            problems.push(format!(
                "{what}.max_failure_rate must be between 0 and 1, got {rate}"
            ));
        }
        if self.max_concurrency == Some(0) {
            problems.push(format!("{what}.max_concurrency must be at least 1"));
        }
        for (resource, costs) in &self.cost {
            if costs.is_empty() {
                problems.push(format!(
                    "{what}.cost.{resource} must list at least one level"
                ));
            }
            for (level, cost) in costs.iter().enumerate() {
                if !(0.0..=1.0).contains(cost) {
                    problems.push(format!(
                        "{what}.cost.{resource}[{level}] must be between 0 and 1, got {cost}"
                    ));
                }
            }
        }
        problems
    }
}

/// Serde for a [`Duration`] as a humantime string such as "30s" or "5m"; whole seconds (a
/// number) are accepted too.
pub mod human_duration {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer, de};

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Text(String),
        Seconds(u64),
    }

    /// Serialize as a humantime string.
    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }

    /// Deserialize from a humantime string or whole seconds.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        match Raw::deserialize(d)? {
            Raw::Text(text) => humantime::parse_duration(&text).map_err(|e| {
                de::Error::custom(format!(
                    "invalid duration `{text}` ({e}), e.g. \"30s\" or \"5m\""
                ))
            }),
            Raw::Seconds(secs) => Ok(Duration::from_secs(secs)),
        }
    }
}

/// Serde for an optional [`Duration`] as a humantime string.
pub mod human_duration_opt {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    /// Serialize as a humantime string, or nothing.
    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => super::human_duration::serialize(d, s),
            None => s.serialize_none(),
        }
    }

    /// Deserialize from a humantime string or whole seconds.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        #[derive(Deserialize)]
        struct Wrap(#[serde(with = "super::human_duration")] Duration);
        Option::<Wrap>::deserialize(d).map(|w| w.map(|Wrap(d)| d))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_match_the_design() {
        let config = ScalerConfig::default();
        assert!(config.problems().is_empty(), "{:?}", config.problems());
        assert_eq!(config.profile(), ThresholdProfile::default());
    }
}
