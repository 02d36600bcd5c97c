//! The start-up plan: which plugins to enable, at which level, in which order, given a fresh
//! sample, the shed threshold and the tier. A pure function, so it is tested without a machine.

use ballast_core::tier::Tier;
use ballast_core::{Level, PluginSpec, Resource, Sample, ThresholdProfile};

/// What start-up does with one plugin.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Planned {
    /// The plugin.
    pub name: String,
    /// The level to enable it at, or `None` to leave it disabled.
    pub level: Option<Level>,
    /// Why, for the log.
    pub reason: String,
}

fn mib(bytes: u64) -> u64 {
    bytes >> 20
}

/// Plans start-up: plugins in priority order (highest first), each at the fullest level that the
/// tier allows and whose declared minimum memory still fits under the memory shed threshold,
/// counting the plugins planned before it. An essential plugin starts at its cheapest allowed
/// level even when nothing fits (it is never shed), with a warning in its reason. `disabled` lists
/// plugins the config or an operator pin keeps off.
pub fn plan(
    specs: &[PluginSpec],
    sample: Option<&Sample>,
    profile: &ThresholdProfile,
    tier: Option<&Tier>,
    disabled: &[(String, String)],
) -> Vec<Planned> {
    let mut ordered: Vec<&PluginSpec> = specs.iter().collect();
    ordered.sort_by(|a, b| {
        b.essential
            .cmp(&a.essential)
            .then(b.priority.cmp(&a.priority))
            .then(a.name.cmp(&b.name))
    });
    let shed = profile.thresholds(Resource::Memory).shed;
    let memory = sample.and_then(|s| s.memory.value()).map(|m| {
        (
            m.total_bytes,
            m.total_bytes.saturating_sub(m.available_bytes),
        )
    });
    let mut used = memory.map_or(0, |(_, used)| used);
    let mut out = Vec::with_capacity(ordered.len());
    for spec in ordered {
        if let Some((_, why)) = disabled.iter().find(|(name, _)| *name == spec.name) {
            out.push(Planned {
                name: spec.name.clone(),
                level: None,
                reason: why.clone(),
            });
            continue;
        }
        let best = match tier.map_or(Some(Level::FULL), |t| t.best_level(&spec.name)) {
            Some(level) => level,
            None => {
                let why = tier
                    .and_then(|t| t.plugins.get(&spec.name))
                    .map_or("the tier does not allow it", |a| a.reason());
                out.push(Planned {
                    name: spec.name.clone(),
                    level: None,
                    reason: format!("not enabled: {why}"),
                });
                continue;
            }
        };
        let n_levels = spec.hints.n_levels();
        let cheapest = Level(n_levels.saturating_sub(1));
        if best > cheapest {
            // The tier's rules ask more of this machine for every level the plugin has.
            let why = tier
                .and_then(|t| t.plugins.get(&spec.name))
                .map_or("", |a| a.reason());
            out.push(Planned {
                name: spec.name.clone(),
                level: None,
                reason: format!(
                    "not enabled: the tier allows it only at level {best} or cheaper, and its cheapest level is {cheapest} ({why})"
                ),
            });
            continue;
        }
        let Some((total, _)) = memory else {
            out.push(Planned {
                name: spec.name.clone(),
                level: Some(best),
                reason: format!(
                    "enabled at level {best}: memory is not measured here, so no pre-flight check"
                ),
            });
            continue;
        };
        let fits = (best.0..n_levels).map(Level).find(|level| {
            let need = spec.hints.level(*level).memory_min_bytes;
            total > 0 && (used + need) as f64 / total as f64 <= shed
        });
        match fits {
            Some(level) => {
                let need = spec.hints.level(level).memory_min_bytes;
                used += need;
                let why = if level == best {
                    format!(
                        "enabled at level {level}: needs {} MiB, memory stays under the shed threshold {shed:.2}",
                        mib(need)
                    )
                } else {
                    format!(
                        "enabled at level {level}, not {best}: the fuller levels' memory needs would pass the shed threshold {shed:.2}"
                    )
                };
                out.push(Planned {
                    name: spec.name.clone(),
                    level: Some(level),
                    reason: why,
                });
            }
            None if spec.essential => {
                let level = cheapest.max(best);
                used += spec.hints.level(level).memory_min_bytes;
                out.push(Planned {
                    name: spec.name.clone(),
                    level: Some(level),
                    reason: format!(
                        "enabled at level {level} although memory would pass the shed threshold {shed:.2}: it is essential"
                    ),
                });
            }
            None => {
                let need = spec.hints.level(cheapest).memory_min_bytes;
                out.push(Planned {
                    name: spec.name.clone(),
                    level: None,
                    reason: format!(
                        "not enabled: even its cheapest level needs {} MiB, which would take memory to {:.2}, past the shed threshold {shed:.2}",
                        mib(need),
                        (used + need) as f64 / total.max(1) as f64
                    ),
                });
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use ballast_core::plugin::{LevelHints, ResourceHints};
    use ballast_core::{
        MemoryReading, MemoryScope, Metric, Timestamp,
        tier::{HardwareFacts, PluginAllowance},
    };

    use super::*;

    const GIB: u64 = 1 << 30;

    fn spec(name: &str, priority: i32, essential: bool, levels_gib: &[u64]) -> PluginSpec {
        PluginSpec {
            name: name.into(),
            priority,
            essential,
            hints: ResourceHints {
                levels: levels_gib
                    .iter()
                    .map(|g| LevelHints {
                        memory_min_bytes: g * GIB,
                        memory_preferred_bytes: g * GIB,
                        gpu_memory_bytes: 0,
                    })
                    .collect(),
                cpu_share: 0.0,
                needs_gpu: false,
            },
            can_suspend: false,
            ..Default::default()
        }
    }

    fn sample(total_gib: u64, used_gib: u64) -> Sample {
        let mut s = Sample::unavailable(Timestamp::ZERO, "test");
        s.memory = Metric::available(MemoryReading {
            total_bytes: total_gib * GIB,
            used_bytes: used_gib * GIB,
            available_bytes: (total_gib - used_gib) * GIB,
            swap_total_bytes: 0,
            swap_used_bytes: 0,
            scope: MemoryScope::Host,
        });
        s
    }

    fn levels(plan: &[Planned]) -> Vec<(&str, Option<u32>)> {
        plan.iter()
            .map(|p| (p.name.as_str(), p.level.map(|l| l.0)))
            .collect()
    }

    #[test]
    fn plugins_start_in_priority_order_at_the_fullest_level_that_fits() {
        let specs = [
            spec("voice", 10, false, &[4, 1]),
            spec("android", 20, false, &[2]),
            spec("stubs", 100, true, &[1]),
        ];
        // 10 GiB machine, 3 used, shed at 0.8 => 5 GiB of room.
        let plan = plan(
            &specs,
            Some(&sample(10, 3)),
            &ThresholdProfile::default(),
            None,
            &[],
        );
        assert_eq!(
            levels(&plan),
            [("stubs", Some(0)), ("android", Some(0)), ("voice", Some(1))]
        );
        assert!(
            plan[2].reason.contains("level 1, not 0"),
            "{}",
            plan[2].reason
        );
    }

    #[test]
    fn nothing_fits_leaves_plugins_off_except_essential_ones() {
        let specs = [
            spec("voice", 10, false, &[4, 1]),
            spec("stubs", 100, true, &[1]),
        ];
        let plan = plan(
            &specs,
            Some(&sample(10, 8)),
            &ThresholdProfile::default(),
            None,
            &[],
        );
        assert_eq!(levels(&plan), [("stubs", Some(0)), ("voice", None)]);
        assert!(plan[0].reason.contains("it is essential"));
        assert!(
            plan[1]
                .reason
                .contains("even its cheapest level needs 1024 MiB"),
            "{}",
            plan[1].reason
        );
    }

    #[test]
    fn a_tier_that_allows_only_levels_the_plugin_lacks_leaves_it_off_saying_why() {
        // Both of voice's levels need a better tier: the tier allows only a level 2.
        let reason = "not level 0: tier `constrained` is below `gpu`; not level 1: tier \
                      `constrained` is below `standard`; level 2 has no requirement";
        let tier = Tier {
            name: "constrained".into(),
            rank: 0,
            rule: "`constrained` has no conditions".into(),
            facts: HardwareFacts {
                memory_total_bytes: 2 * GIB,
                memory_scope: MemoryScope::Host,
                cores: 2,
                cpu_limit_cores: None,
                physical_cores: None,
                cpu_arch: None,
                gpus: Metric::available(Vec::new()),
            },
            profile: ThresholdProfile::default(),
            plugins: [(
                "voice".to_owned(),
                PluginAllowance::Allowed {
                    best_level: Level(2),
                    reason: reason.into(),
                },
            )]
            .into(),
            detected_at: Timestamp::ZERO,
        };
        let specs = [
            spec("voice", 10, false, &[1, 1]),
            spec("stubs", 5, false, &[1]),
        ];
        let plan = plan(
            &specs,
            Some(&sample(100, 0)),
            &ThresholdProfile::default(),
            Some(&tier),
            &[],
        );
        assert_eq!(levels(&plan), [("voice", None), ("stubs", Some(0))]);
        assert_eq!(
            plan[0].reason,
            format!(
                "not enabled: the tier allows it only at level 2 or cheaper, and its cheapest level is 1 ({reason})"
            )
        );
    }

    #[test]
    fn pins_and_unmeasured_memory_are_respected() {
        let specs = [spec("voice", 10, false, &[4])];
        let off = [("voice".to_owned(), "pinned off by the operator".to_owned())];
        let plan_off = plan(
            &specs,
            Some(&sample(10, 0)),
            &ThresholdProfile::default(),
            None,
            &off,
        );
        assert_eq!(plan_off[0].level, None);
        assert_eq!(plan_off[0].reason, "pinned off by the operator");
        let unmeasured = plan(&specs, None, &ThresholdProfile::default(), None, &[]);
        assert_eq!(unmeasured[0].level, Some(Level::FULL));
        assert!(unmeasured[0].reason.contains("no pre-flight check"));
    }
}
