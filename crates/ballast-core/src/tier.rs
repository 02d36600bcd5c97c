//! Hardware tiers: the facts detected about a machine and the tier they put it in.
//!
//! The monitor detects [`HardwareFacts`]; ballast-tier classifies them into a [`Tier`], which
//! carries the threshold profile the scaler applies and what each plugin may run at
//! ([`PluginAllowance`]). Everything here is plain serde data.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::plugin::Level;
use crate::policy::ThresholdProfile;
use crate::sample::{MemoryScope, Metric};
use crate::time::Timestamp;

/// One GPU as tier detection sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GpuFact {
    /// Device index as the driver numbers it.
    pub index: u32,
    /// Device name, e.g. "NVIDIA H100 80GB HBM3".
    pub name: String,
    /// GPU memory in total, in bytes.
    pub memory_total_bytes: u64,
}

/// What was detected about the machine: the inputs of tier classification.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HardwareFacts {
    /// Memory the daemon can use, in bytes: the cgroup limit when one is below the host's total.
    pub memory_total_bytes: u64,
    /// What `memory_total_bytes` is relative to.
    pub memory_scope: MemoryScope,
    /// Logical cores.
    pub cores: u32,
    /// The CPU quota of the daemon's cgroup in cores (cgroup v2 `cpu.max`, v1
    /// `cpu.cfs_quota_us / cpu.cfs_period_us`), where one is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_limit_cores: Option<f64>,
    /// Physical cores, where the system reports them.
    #[serde(default)]
    pub physical_cores: Option<u32>,
    /// CPU architecture, e.g. "x86_64".
    #[serde(default)]
    pub cpu_arch: Option<String>,
    /// GPUs (unavailable without an NVIDIA driver; empty when the driver sees no device).
    pub gpus: Metric<Vec<GpuFact>>,
}

impl HardwareFacts {
    /// The cores the daemon can use: the logical cores, or fewer when a cgroup CPU quota is
    /// lower (a quota of 1.5 cores counts as 2).
    pub fn effective_cores(&self) -> u32 {
        match self.cpu_limit_cores {
            Some(limit) if limit.is_finite() && limit > 0.0 => {
                let limit = limit.ceil().min(f64::from(u32::MAX)) as u32;
                self.cores.min(limit.max(1))
            }
            _ => self.cores,
        }
    }

    /// The number of GPUs seen (0 when GPUs are unavailable).
    pub fn gpu_count(&self) -> u32 {
        self.gpus
            .value()
            .map_or(0, |g| u32::try_from(g.len()).unwrap_or(u32::MAX))
    }

    /// The memory of the largest GPU in bytes (0 when there is none).
    pub fn largest_gpu_memory_bytes(&self) -> u64 {
        self.gpus.value().map_or(0, |g| {
            g.iter().map(|d| d.memory_total_bytes).max().unwrap_or(0)
        })
    }
}

/// What one plugin may run at on the detected tier.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum PluginAllowance {
    /// The plugin may run, at `best_level` or any cheaper (higher-numbered) level.
    Allowed {
        /// The fullest level the machine affords.
        best_level: Level,
        /// Why, e.g. "level 0 needs tier `gpu` or better; level 1 is allowed".
        reason: String,
    },
    /// The plugin may not run on this machine at all.
    Forbidden {
        /// Why, e.g. "needs tier `standard` or better, this machine is `constrained`".
        reason: String,
    },
}

impl PluginAllowance {
    /// The fullest level allowed, or `None` if the plugin may not run.
    pub fn best_level(&self) -> Option<Level> {
        match self {
            PluginAllowance::Allowed { best_level, .. } => Some(*best_level),
            PluginAllowance::Forbidden { .. } => None,
        }
    }

    /// Why the plugin has this allowance.
    pub fn reason(&self) -> &str {
        match self {
            PluginAllowance::Allowed { reason, .. } | PluginAllowance::Forbidden { reason } => {
                reason
            }
        }
    }
}

/// The tier a machine was classified into, with everything the scaler needs from it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Tier {
    /// The tier's name, e.g. "standard".
    pub name: String,
    /// Its rank among the configured tiers: 0 is the least capable.
    pub rank: u32,
    /// The rule that chose it, as a sentence, e.g. "memory 23.5 GiB >= 16 GiB and cores 8 >= 8".
    pub rule: String,
    /// The facts it was chosen from.
    pub facts: HardwareFacts,
    /// The thresholds and timings the scaler applies on this tier.
    pub profile: ThresholdProfile,
    /// What each plugin with rules may run at; a plugin without rules is allowed at every level.
    pub plugins: BTreeMap<String, PluginAllowance>,
    /// When the facts were detected.
    pub detected_at: Timestamp,
}

impl Tier {
    /// The fullest level `plugin` may run at: [`Level::FULL`] for a plugin without rules, `None`
    /// when it may not run.
    pub fn best_level(&self, plugin: &str) -> Option<Level> {
        self.plugins
            .get(plugin)
            .map_or(Some(Level::FULL), PluginAllowance::best_level)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(gpus: Metric<Vec<GpuFact>>) -> HardwareFacts {
        HardwareFacts {
            memory_total_bytes: 8 << 30,
            memory_scope: MemoryScope::Host,
            cores: 4,
            cpu_limit_cores: None,
            physical_cores: None,
            cpu_arch: None,
            gpus,
        }
    }

    #[test]
    fn unavailable_gpus_count_as_none() {
        let f = facts(Metric::unavailable("no NVIDIA driver"));
        assert_eq!(f.gpu_count(), 0);
        assert_eq!(f.largest_gpu_memory_bytes(), 0);
        let f = facts(Metric::available(vec![
            GpuFact {
                index: 0,
                name: "a".into(),
                memory_total_bytes: 8,
            },
            GpuFact {
                index: 1,
                name: "b".into(),
                memory_total_bytes: 16,
            },
        ]));
        assert_eq!(f.gpu_count(), 2);
        assert_eq!(f.largest_gpu_memory_bytes(), 16);
    }

    #[test]
    fn a_cpu_quota_limits_the_effective_cores() {
        let mut f = facts(Metric::available(Vec::new()));
        assert_eq!(f.effective_cores(), 4);
        f.cpu_limit_cores = Some(1.5);
        assert_eq!(f.effective_cores(), 2);
        f.cpu_limit_cores = Some(64.0);
        assert_eq!(f.effective_cores(), 4);
        f.cpu_limit_cores = Some(f64::NAN);
        assert_eq!(f.effective_cores(), 4);
    }

    #[test]
    fn a_plugin_without_rules_is_allowed_at_full_level() {
        let tier = Tier {
            name: "standard".into(),
            rank: 1,
            rule: "test".into(),
            facts: facts(Metric::available(Vec::new())),
            profile: ThresholdProfile::default(),
            plugins: BTreeMap::from([(
                "voice".to_owned(),
                PluginAllowance::Forbidden {
                    reason: "test".into(),
                },
            )]),
            detected_at: Timestamp::ZERO,
        };
        assert_eq!(tier.best_level("discord"), Some(Level::FULL));
        assert_eq!(tier.best_level("voice"), None);
        let json = serde_json::to_value(&tier).unwrap();
        assert_eq!(json["plugins"]["voice"]["status"], "forbidden");
        let back: Tier = serde_json::from_value(json).unwrap();
        assert_eq!(back, tier);
    }
}
