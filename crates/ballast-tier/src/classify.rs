//! Classification: a pure function from detected facts and the rules to a [`Tier`].

use std::collections::BTreeMap;

use ballast_core::tier::{HardwareFacts, PluginAllowance, Tier};
use ballast_core::{Level, Timestamp};

use crate::bytes::ByteSize;
use crate::config::{Conditions, LevelRule, PluginRule, TierConfig};

/// Puts `facts` into the most capable tier of `config` whose conditions all hold, and works out
/// what each plugin with rules may run at. `now` is when the facts were detected.
///
/// `config` should be valid ([`TierConfig::problems`] empty). If it is not, the result is still
/// well defined: with no tier at all the machine is `unclassified` with the default profile,
/// and a reference to an unknown tier is never satisfied.
pub fn classify(facts: &HardwareFacts, config: &TierConfig, now: Timestamp) -> Tier {
    let mut rejected = Vec::new();
    let mut chosen = None;
    for (rank, tier) in config.tiers.iter().enumerate().rev() {
        match check_conditions(&tier.when, facts) {
            Ok(held) => {
                chosen = Some((rank, tier, held));
                break;
            }
            Err(failed) => rejected.push(format!("not `{}`: {failed}", tier.name)),
        }
    }
    let Some((rank, tier, held)) = chosen else {
        return Tier {
            name: "unclassified".into(),
            rank: 0,
            rule: format!("no tier's conditions hold ({})", rejected.join("; ")),
            facts: facts.clone(),
            profile: ballast_core::ThresholdProfile::default(),
            plugins: BTreeMap::new(),
            detected_at: now,
        };
    };
    let mut rule = if held.is_empty() {
        format!("`{}` has no conditions", tier.name)
    } else {
        format!("`{}` because {held}", tier.name)
    };
    if !rejected.is_empty() {
        rule.push_str("; ");
        rule.push_str(&rejected.join("; "));
    }
    let rank = u32::try_from(rank).unwrap_or(u32::MAX);
    let plugins = config
        .plugins
        .iter()
        .map(|(name, plugin)| {
            (
                name.clone(),
                allowance(plugin, config, &tier.name, rank, facts),
            )
        })
        .collect();
    Tier {
        name: tier.name.clone(),
        rank,
        rule,
        facts: facts.clone(),
        profile: tier.profile.clone(),
        plugins,
        detected_at: now,
    }
}

/// `Ok(what held)` when every condition holds, else `Err(what failed)`, as readable text.
fn check_conditions(when: &Conditions, facts: &HardwareFacts) -> Result<String, String> {
    let mut held = Vec::new();
    let mut failed = Vec::new();
    let memory = ByteSize(facts.memory_total_bytes);
    let largest_gpu = ByteSize(facts.largest_gpu_memory_bytes());
    let gpus = facts.gpu_count();
    let mut check = |ok: bool, text: String| {
        if ok {
            held.push(text);
        } else {
            failed.push(text);
        }
    };
    if let Some(min) = when.min_memory {
        check(memory >= min, compare("memory", memory, min));
    }
    if let Some(min) = when.min_cores {
        let cores = facts.effective_cores();
        check(cores >= min, compare("cores", cores, min));
    }
    if let Some(min) = when.min_gpus {
        check(gpus >= min, compare("GPUs", gpus, min));
    }
    if let Some(min) = when.min_gpu_memory {
        check(
            largest_gpu >= min,
            compare("largest GPU memory", largest_gpu, min),
        );
    }
    if failed.is_empty() {
        Ok(held.join(" and "))
    } else {
        Err(failed.join(" and "))
    }
}

fn compare<T: PartialOrd + std::fmt::Display>(what: &str, have: T, min: T) -> String {
    let op = if have >= min { ">=" } else { "<" };
    format!("{what} {have} {op} {min}")
}

fn allowance(
    plugin: &PluginRule,
    config: &TierConfig,
    tier: &str,
    rank: u32,
    facts: &HardwareFacts,
) -> PluginAllowance {
    if let Some(min_tier) = &plugin.min_tier
        && !tier_at_least(config, rank, min_tier)
    {
        return PluginAllowance::Forbidden {
            reason: format!("needs tier `{min_tier}` or better; this machine is `{tier}`"),
        };
    }
    let highest = plugin.levels.iter().map(|l| l.level.0).max();
    let mut refused = Vec::new();
    for level in 0..=highest.map_or(0, |h| h.saturating_add(1)) {
        let rules: Vec<&LevelRule> = plugin
            .levels
            .iter()
            .filter(|l| l.level.0 == level)
            .collect();
        if rules.is_empty() {
            refused.push(format!("level {level} has no requirement"));
            return allowed(level, refused);
        }
        let mut failures = Vec::new();
        for rule in &rules {
            match check_level(rule, config, tier, rank, facts) {
                Ok(held) => {
                    refused.push(format!("level {level}: {held}"));
                    return allowed(level, refused);
                }
                Err(failed) => failures.push(failed),
            }
        }
        refused.push(format!("not level {level}: {}", failures.join(", nor ")));
    }
    // The loop always ends on a level without rules; this is only reached if it did not.
    PluginAllowance::Forbidden {
        reason: refused.join("; "),
    }
}

fn allowed(level: u32, reasons: Vec<String>) -> PluginAllowance {
    PluginAllowance::Allowed {
        best_level: Level(level),
        reason: reasons.join("; "),
    }
}

fn tier_at_least(config: &TierConfig, rank: u32, min_tier: &str) -> bool {
    config.rank(min_tier).is_some_and(|min| rank >= min)
}

fn check_level(
    rule: &LevelRule,
    config: &TierConfig,
    tier: &str,
    rank: u32,
    facts: &HardwareFacts,
) -> Result<String, String> {
    let mut held = Vec::new();
    let mut failed = Vec::new();
    if let Some(min_tier) = &rule.min_tier {
        let text = format!(
            "tier `{tier}` is {} `{min_tier}`",
            if tier_at_least(config, rank, min_tier) {
                "at least"
            } else {
                "below"
            }
        );
        if tier_at_least(config, rank, min_tier) {
            held.push(text);
        } else {
            failed.push(text);
        }
    }
    let memory = ByteSize(facts.memory_total_bytes);
    if let Some(min) = rule.min_memory {
        let text = compare("memory", memory, min);
        if memory >= min {
            held.push(text)
        } else {
            failed.push(text)
        }
    }
    let largest_gpu = ByteSize(facts.largest_gpu_memory_bytes());
    if let Some(min) = rule.min_gpu_memory {
        let text = compare("largest GPU memory", largest_gpu, min);
        if largest_gpu >= min {
            held.push(text)
        } else {
            failed.push(text)
        }
    }
    if failed.is_empty() {
        Ok(held.join(" and "))
    } else {
        Err(failed.join(" and "))
    }
}
