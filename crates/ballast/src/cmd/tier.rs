//! `ballast tier`: the detected hardware tier, the facts it was chosen from and the rule that
//! chose it, for a person or as JSON.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use ballast_core::tier::{PluginAllowance, Tier};
use ballast_core::{MemoryScope, Metric, Resource, Thresholds};
use ballast_monitor::Monitor;
use ballast_tier::{TierConfig, TierConfigError, classify};

use ballast_core::format::{Table, bytes, time as format_time};

use super::sample::{SourceArgs, now};

/// The exit code for an invalid configuration (EX_CONFIG).
const EX_CONFIG: u8 = 78;

/// Arguments of `ballast tier`.
#[derive(Debug, clap::Args)]
pub struct TierArgs {
    /// Print the tier, its facts, profile and plugin allowances as JSON.
    #[arg(long)]
    pub json: bool,
    /// Classify by the tier rules in this TOML file instead of the built-in ones.
    #[arg(long, value_name = "FILE")]
    pub rules: Option<PathBuf>,
    /// Print the built-in tier rules as TOML (a starting point for --rules) and exit.
    #[arg(long, conflicts_with_all = ["json", "rules"])]
    pub print_default_rules: bool,
    #[command(flatten)]
    pub source: SourceArgs,
}

/// Runs `ballast tier`.
pub fn run(args: TierArgs) -> anyhow::Result<ExitCode> {
    if args.print_default_rules {
        let text = TierConfig::default()
            .to_toml_string()
            .context("cannot write the default tier rules as TOML")?;
        return write_stdout(&text);
    }
    let config = match &args.rules {
        None => TierConfig::default(),
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read the tier rules {}", path.display()))?;
            match TierConfig::from_toml_str(&path.display().to_string(), &text) {
                Ok(config) => config,
                Err(TierConfigError::Invalid { file, problems }) => {
                    eprintln!(
                        "error: {file}: {} problem(s) in the tier rules:",
                        problems.len()
                    );
                    for problem in problems {
                        eprintln!("  {problem}");
                    }
                    return Ok(ExitCode::from(EX_CONFIG));
                }
                Err(error) => {
                    eprintln!("error: {error}");
                    return Ok(ExitCode::from(EX_CONFIG));
                }
            }
        }
    };
    let mut monitor = Monitor::new(args.source.monitor_config(Vec::new()));
    let facts = monitor
        .hardware_facts()
        .context("cannot detect the hardware")?;
    let tier = classify(&facts, &config, now());
    let text = if args.json {
        let mut text =
            serde_json::to_string_pretty(&tier).context("cannot write the tier as JSON")?;
        text.push('\n');
        text
    } else {
        render(&tier, &config)
    };
    write_stdout(&text)
}

/// Writes `text` to standard output; a reader that went away (`| head`) is not an error.
fn write_stdout(text: &str) -> anyhow::Result<ExitCode> {
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Ok(()) => Ok(ExitCode::SUCCESS),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(ExitCode::SUCCESS),
        Err(e) => Err(e).context("cannot write to standard output"),
    }
}

/// The tier as a person reads it.
pub fn render(tier: &Tier, config: &TierConfig) -> String {
    let names: Vec<&str> = config.tiers.iter().map(|t| t.name.as_str()).collect();
    let mut out = format!(
        "tier  {} (rank {} of {}: {})\nrule  {}\n\n",
        tier.name,
        tier.rank,
        names.len(),
        names.join(" < "),
        tier.rule
    );

    let facts = &tier.facts;
    let mut table = Table::new().right_aligned(&[false, false]);
    table.row([
        "facts",
        &format!("detected at {}", format_time(tier.detected_at)),
    ]);
    let scope = match &facts.memory_scope {
        MemoryScope::Host => "host".to_owned(),
        MemoryScope::CgroupV1 { path } => format!("cgroup v1 limit of {path}"),
        MemoryScope::CgroupV2 { path } => format!("cgroup v2 limit of {path}"),
    };
    table.row([
        "memory".to_owned(),
        format!("{} ({scope})", bytes(facts.memory_total_bytes)),
    ]);
    let mut cores = format!("{} logical", facts.cores);
    if let Some(limit) = facts.cpu_limit_cores {
        cores.push_str(&format!(", cgroup quota {limit:.2}"));
    }
    if let Some(physical) = facts.physical_cores {
        cores.push_str(&format!(", {physical} physical"));
    }
    if let Some(arch) = &facts.cpu_arch {
        cores.push_str(&format!(", {arch}"));
    }
    table.row(["cores".to_owned(), cores]);
    match &facts.gpus {
        Metric::Available { value } if value.is_empty() => {
            table.row(["gpus", "none (NVML sees no device)"]);
        }
        Metric::Available { value } => {
            for gpu in value {
                table.row([
                    format!("gpu {}", gpu.index),
                    format!("{} ({})", gpu.name, bytes(gpu.memory_total_bytes)),
                ]);
            }
        }
        Metric::Unavailable { reason } => {
            table.row(["gpus".to_owned(), format!("unavailable: {reason}")])
        }
    }
    out.push_str(&table.render());
    out.push('\n');

    let profile = &tier.profile;
    let mut thresholds = Table::new().right_aligned(&[false, true, true, true]);
    thresholds.row(["profile", "shed", "restore", "emergency"]);
    let row = |name: &str, t: &Thresholds| {
        [
            name.to_owned(),
            format!("{:.2}", t.shed),
            format!("{:.2}", t.restore),
            t.emergency.map_or("-".to_owned(), |e| format!("{e:.2}")),
        ]
    };
    thresholds.row(row("default", &profile.default));
    for resource in Resource::ALL {
        if let Some(t) = profile.resources.get(&resource) {
            thresholds.row(row(resource.as_str(), t));
        }
    }
    out.push_str(&thresholds.render());
    out.push_str(&format!(
        "cool-down {}, stabilization {}\n",
        humantime::format_duration(profile.cooldown),
        humantime::format_duration(profile.stabilization)
    ));

    if !tier.plugins.is_empty() {
        out.push('\n');
        let mut plugins = Table::new().right_aligned(&[false, false, false]);
        plugins.row(["plugin", "allowed", "why"]);
        for (name, allowance) in &tier.plugins {
            let allowed = match allowance {
                PluginAllowance::Allowed { best_level, .. } => format!("level {best_level}+"),
                PluginAllowance::Forbidden { .. } => "no".to_owned(),
            };
            plugins.row([name.clone(), allowed, allowance.reason().to_owned()]);
        }
        out.push_str(&plugins.render());
        out.push_str(
            "plugins without rules may run at every level; a plugin allowed only past its cheapest level does not run\n",
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use ballast_core::Timestamp;
    use ballast_core::tier::HardwareFacts;

    use super::*;

    #[test]
    fn shows_the_tier_facts_profile_and_plugins() {
        let facts = HardwareFacts {
            memory_total_bytes: 2 << 30,
            memory_scope: MemoryScope::CgroupV2 {
                path: "/ballast.service".into(),
            },
            cores: 4,
            cpu_limit_cores: None,
            physical_cores: None,
            cpu_arch: None,
            gpus: Metric::unavailable("no NVIDIA driver"),
        };
        let config = TierConfig::default();
        let tier = classify(&facts, &config, Timestamp::ZERO);
        let text = render(&tier, &config);
        assert!(
            text.starts_with("tier  constrained (rank 0 of 4: constrained < standard"),
            "{text}"
        );
        assert!(
            text.contains("memory  2 GiB (cgroup v2 limit of /ballast.service)"),
            "{text}"
        );
        assert!(
            text.contains("gpus    unavailable: no NVIDIA driver"),
            "{text}"
        );
        assert!(text.contains("voice   level 2+"), "{text}");
        assert!(text.contains("cool-down 30s, stabilization 10m"), "{text}");
    }
}
