//! The tier rules: which tiers exist, what a machine needs for each, the threshold profile each
//! selects and what each plugin needs. Serde types (TOML-friendly) with validation that collects
//! every problem.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use ballast_core::{Level, Resource, ThresholdProfile, Thresholds};
use serde::{Deserialize, Serialize};

use crate::bytes::ByteSize;

/// The whole tier configuration.
///
/// ```toml
/// [[tiers]]
/// name = "constrained"
///
/// [[tiers]]
/// name = "standard"
/// when = { min_memory = "4 GiB", min_cores = 2 }
///
/// [plugins.voice]
/// levels = [
///   { level = 0, min_tier = "gpu" },
///   { level = 1, min_memory = "8 GiB" },
/// ]
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TierConfig {
    /// The tiers, from the least capable to the most. A machine gets the last tier whose
    /// conditions all hold; the first tier must have none, so that every machine gets one.
    pub tiers: Vec<TierRule>,
    /// What each plugin needs, by plugin name. A plugin not listed may run at every level.
    #[serde(default)]
    pub plugins: BTreeMap<String, PluginRule>,
}

/// One tier: its name, what a machine needs for it and the thresholds it selects.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TierRule {
    /// The tier's name, e.g. "standard".
    pub name: String,
    /// What a machine needs for this tier (all must hold).
    #[serde(default, skip_serializing_if = "Conditions::is_empty")]
    pub when: Conditions,
    /// The thresholds and timings the scaler applies on this tier (the design's defaults when
    /// left out).
    #[serde(default)]
    pub profile: ThresholdProfile,
}

/// Conditions on the detected facts; all that are set must hold.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Conditions {
    /// At least this much memory (the cgroup limit when it is lower than the host's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_memory: Option<ByteSize>,
    /// At least this many logical cores.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_cores: Option<u32>,
    /// At least this many GPUs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_gpus: Option<u32>,
    /// A GPU with at least this much memory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_gpu_memory: Option<ByteSize>,
}

impl Conditions {
    /// Whether no condition is set.
    pub fn is_empty(&self) -> bool {
        *self == Conditions::default()
    }
}

/// What one plugin needs.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginRule {
    /// Below this tier the plugin may not run at all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_tier: Option<String>,
    /// Requirements of particular levels. Several entries for one level are alternatives (any
    /// one suffices); a level with no entry has no requirement. The plugin runs at the fullest
    /// (lowest-numbered) level whose requirement holds.
    #[serde(default)]
    pub levels: Vec<LevelRule>,
}

/// A requirement for one level of a plugin; all the conditions set must hold.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LevelRule {
    /// The level, 0 being full.
    pub level: Level,
    /// The machine's tier must be this one or a more capable one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_tier: Option<String>,
    /// The machine needs at least this much memory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_memory: Option<ByteSize>,
    /// A GPU with at least this much memory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_gpu_memory: Option<ByteSize>,
}

/// Why a tier configuration was rejected.
#[derive(Debug, thiserror::Error)]
pub enum TierConfigError {
    /// The text is not valid TOML for these types.
    #[error("{file}: {source}")]
    Toml {
        /// The file it came from.
        file: String,
        /// The TOML error (it names the key).
        #[source]
        source: toml::de::Error,
    },
    /// The configuration parsed but is inconsistent; every problem is listed.
    #[error("{file}: {} problem(s) in the tier configuration: {}", problems.len(), problems.join("; "))]
    Invalid {
        /// The file it came from.
        file: String,
        /// Each problem, naming its field.
        problems: Vec<String>,
    },
}

impl TierConfig {
    /// Parses and validates a TOML configuration; `file` names it in errors.
    pub fn from_toml_str(file: &str, text: &str) -> Result<TierConfig, TierConfigError> {
        let config: TierConfig = toml::from_str(text).map_err(|source| TierConfigError::Toml {
            file: file.to_owned(),
            source,
        })?;
        let problems = config.problems();
        if problems.is_empty() {
            Ok(config)
        } else {
            Err(TierConfigError::Invalid {
                file: file.to_owned(),
                problems,
            })
        }
    }

    /// The configuration as TOML, e.g. to start a file from the defaults.
    pub fn to_toml_string(&self) -> Result<String, toml::ser::Error> {
        toml::to_string(self)
    }

    /// The rank of the tier named `name` (0 is the least capable).
    pub fn rank(&self, name: &str) -> Option<u32> {
        self.tiers
            .iter()
            .position(|t| t.name == name)
            .and_then(|i| u32::try_from(i).ok())
    }

    /// Every problem with the configuration, each naming its field. Empty means valid.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.tiers.is_empty() {
            problems.push("tiers: at least one tier is needed".to_owned());
        }
        let mut seen = BTreeSet::new();
        for (i, tier) in self.tiers.iter().enumerate() {
            let what = format!("tiers[{i}]");
            if tier.name.trim().is_empty() {
                problems.push(format!("{what}.name must not be empty"));
            } else if !seen.insert(tier.name.as_str()) {
                problems.push(format!(
                    "{what}.name: tier `{}` is defined twice",
                    tier.name
                ));
            }
            if i == 0 && !tier.when.is_empty() {
                problems.push(format!(
                    "{what}.when: the first tier (`{}`) must have no conditions, so that every \
                     machine gets a tier",
                    tier.name
                ));
            }
            problems.extend(tier.profile.problems(&format!("{what}.profile")));
        }
        let known = || {
            self.tiers
                .iter()
                .map(|t| t.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        };
        for (plugin, rule) in &self.plugins {
            let what = format!("plugins.{plugin}");
            if let Some(tier) = &rule.min_tier
                && self.rank(tier).is_none()
            {
                problems.push(format!(
                    "{what}.min_tier: unknown tier `{tier}` (tiers: {})",
                    known()
                ));
            }
            for (i, level) in rule.levels.iter().enumerate() {
                if let Some(tier) = &level.min_tier
                    && self.rank(tier).is_none()
                {
                    problems.push(format!(
                        "{what}.levels[{i}].min_tier: unknown tier `{tier}` (tiers: {})",
                        known()
                    ));
                }
                if level.min_tier.is_none()
                    && level.min_memory.is_none()
                    && level.min_gpu_memory.is_none()
                {
                    problems.push(format!(
                        "{what}.levels[{i}]: level {} sets no requirement (min_tier, min_memory \
                         or min_gpu_memory)",
                        level.level
                    ));
                }
            }
        }
        problems
    }
}

impl Default for TierConfig {
    /// Four tiers, `constrained`, `standard`, `performance` and `gpu`, and a rule for `voice`:
    /// its full level (large model) needs the `gpu` tier, or the `performance` tier with 30 GiB;
    /// level 1 needs `standard`.
    fn default() -> Self {
        let memory_emergency = |shed: f64, restore: f64, emergency: f64| Thresholds {
            shed,
            restore,
            emergency: Some(emergency),
        };
        let constrained = ThresholdProfile {
            default: Thresholds {
                shed: 0.70,
                restore: 0.55,
                emergency: None,
            },
            resources: BTreeMap::from([(Resource::Memory, memory_emergency(0.70, 0.55, 0.90))]),
            cooldown: Duration::from_secs(30),
            stabilization: Duration::from_secs(600),
        };
        let performance = ThresholdProfile {
            default: Thresholds {
                shed: 0.85,
                restore: 0.70,
                emergency: None,
            },
            resources: BTreeMap::from([(Resource::Memory, memory_emergency(0.85, 0.70, 0.95))]),
            cooldown: Duration::from_secs(30),
            stabilization: Duration::from_secs(300),
        };
        let mut gpu = performance.clone();
        gpu.resources
            .insert(Resource::GpuMemory, memory_emergency(0.85, 0.70, 0.97));
        let level = |level: u32, min_tier: &str, min_memory: Option<ByteSize>| LevelRule {
            level: Level(level),
            min_tier: Some(min_tier.to_owned()),
            min_memory,
            min_gpu_memory: None,
        };
        TierConfig {
            tiers: vec![
                TierRule {
                    name: "constrained".into(),
                    when: Conditions::default(),
                    profile: constrained,
                },
                TierRule {
                    name: "standard".into(),
                    when: Conditions {
                        // Machines sold with 4 GB report about 3.7 GiB.
                        min_memory: Some(ByteSize::mib(3584)),
                        min_cores: Some(2),
                        ..Conditions::default()
                    },
                    profile: ThresholdProfile::default(),
                },
                TierRule {
                    name: "performance".into(),
                    when: Conditions {
                        min_memory: Some(ByteSize::gib(15)),
                        min_cores: Some(8),
                        ..Conditions::default()
                    },
                    profile: performance,
                },
                TierRule {
                    name: "gpu".into(),
                    when: Conditions {
                        min_memory: Some(ByteSize::gib(15)),
                        min_gpus: Some(1),
                        min_gpu_memory: Some(ByteSize::mib(7680)),
                        ..Conditions::default()
                    },
                    profile: gpu,
                },
            ],
            plugins: BTreeMap::from([(
                "voice".to_owned(),
                PluginRule {
                    min_tier: None,
                    levels: vec![
                        level(0, "gpu", None),
                        level(0, "performance", Some(ByteSize::gib(30))),
                        level(1, "standard", None),
                    ],
                },
            )]),
        }
    }
}
