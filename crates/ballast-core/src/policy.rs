//! Threshold profiles: when to shed, restore and declare an emergency, and how long to wait.
//!
//! A hardware tier selects a [`ThresholdProfile`]; the scaler applies it. Both sides use these
//! types so that neither has to know the other.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::resource::Resource;

/// Thresholds for one resource, as utilizations in `0..=1`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Thresholds {
    /// Shed when pressure reaches this.
    pub shed: f64,
    /// Restore only when pressure stays below this (must be below `shed`: hysteresis).
    pub restore: f64,
    /// Shed every non-essential plugin at once when pressure reaches this; `None` disables the
    /// emergency path for the resource.
    pub emergency: Option<f64>,
}

impl Thresholds {
    /// The default thresholds of the design: shed 0.80, restore 0.65, no emergency.
    pub const DEFAULT: Thresholds = Thresholds {
        shed: 0.80,
        restore: 0.65,
        emergency: None,
    };

    /// Every problem with these thresholds, each naming `what` (e.g. "thresholds.memory").
    pub fn problems(&self, what: &str) -> Vec<String> {
        let mut problems = Vec::new();
        for (name, value) in [
            ("shed", Some(self.shed)),
            ("restore", Some(self.restore)),
            ("emergency", self.emergency),
        ] {
            if let Some(v) = value
                && !(0.0..=1.0).contains(&v)
            {
                problems.push(format!("{what}.{name} must be between 0 and 1, got {v}"));
            }
        }
        if self.restore >= self.shed {
            problems.push(format!(
                "{what}.restore ({}) must be below {what}.shed ({}) so that a restore cannot cause the next shed",
                self.restore, self.shed
            ));
        }
        if let Some(e) = self.emergency
            && e < self.shed
        {
            problems.push(format!(
                "{what}.emergency ({e}) must not be below {what}.shed ({})",
                self.shed
            ));
        }
        problems
    }
}

/// The thresholds and timings a tier selects.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ThresholdProfile {
    /// Thresholds for resources not listed in `resources`.
    pub default: Thresholds,
    /// Per-resource thresholds.
    #[serde(default)]
    pub resources: BTreeMap<Resource, Thresholds>,
    /// Wait after each shed step before the next, to see its effect.
    #[serde(with = "crate::assessment::duration_ms")]
    pub cooldown: Duration,
    /// How long every resource must stay below its restore threshold before a restore.
    #[serde(with = "crate::assessment::duration_ms")]
    pub stabilization: Duration,
}

impl ThresholdProfile {
    /// The thresholds for `resource`.
    pub fn thresholds(&self, resource: Resource) -> Thresholds {
        self.resources
            .get(&resource)
            .copied()
            .unwrap_or(self.default)
    }

    /// Every problem with this profile, each naming its field under `what`.
    pub fn problems(&self, what: &str) -> Vec<String> {
        let mut problems = self.default.problems(&format!("{what}.default"));
        for (resource, t) in &self.resources {
            problems.extend(t.problems(&format!("{what}.resources.{resource}")));
        }
        problems
    }
}

impl Default for ThresholdProfile {
    /// The design's defaults: shed 0.80, restore 0.65, memory emergency 0.95, cool-down 30 s,
    /// stabilization 5 min.
    fn default() -> Self {
        let memory = Thresholds {
            emergency: Some(0.95),
            ..Thresholds::DEFAULT
        };
        ThresholdProfile {
            default: Thresholds::DEFAULT,
            resources: BTreeMap::from([(Resource::Memory, memory)]),
            cooldown: Duration::from_secs(30),
            stabilization: Duration::from_secs(300),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_profile_is_valid_and_has_a_memory_emergency() {
        let p = ThresholdProfile::default();
        assert!(p.problems("profile").is_empty());
        assert_eq!(p.thresholds(Resource::Memory).emergency, Some(0.95));
        assert_eq!(p.thresholds(Resource::Cpu).emergency, None);
    }

    #[test]
    fn inverted_hysteresis_and_out_of_range_values_are_named() {
        let t = Thresholds {
            shed: 0.6,
            restore: 0.7,
            emergency: Some(1.5),
        };
        let problems = t.problems("thresholds.cpu");
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems[0].contains("thresholds.cpu.emergency must be between 0 and 1"));
        assert!(
            problems[1]
                .contains("thresholds.cpu.restore (0.7) must be below thresholds.cpu.shed (0.6)")
        );
    }
}
