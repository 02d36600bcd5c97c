//! `ballast plugin`: tools for plugin authors (`inspect` loads a file and prints its descriptor).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use ballast_host::{PluginInfo, PluginLibrary, sha256_file};

/// Arguments of `ballast plugin`.
#[derive(Debug, clap::Args)]
pub struct PluginArgs {
    #[command(subcommand)]
    command: PluginCommand,
}

#[derive(Debug, clap::Subcommand)]
enum PluginCommand {
    /// Load a plugin file, validate it and print its descriptor; exits 0 only if it is loadable.
    Inspect {
        /// The plugin's shared library, e.g. target/debug/libvoice.so.
        file: PathBuf,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
        /// Also require this sha256 (as a config pin would).
        #[arg(long)]
        sha256: Option<String>,
    },
}

/// Runs `ballast plugin`.
pub fn run(args: PluginArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        PluginCommand::Inspect { file, json, sha256 } => {
            let library = PluginLibrary::load(&file, sha256.as_deref())
                .with_context(|| format!("{} is not a loadable ballast plugin", file.display()))?;
            let mut info = library.info().clone();
            if info.sha256.is_none() {
                info.sha256 = Some(sha256_file(&file).with_context(|| format!("cannot hash {}", file.display()))?);
            }
            let info = &info;
            if json {
                println!("{}", serde_json::to_string_pretty(info)?);
            } else {
                print!("{}", render(info));
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Bytes for people: 256 MiB, 1.5 GiB, 512 B.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 || value.fract() == 0.0 {
        format!("{value:.0} {}", UNITS[unit])
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

fn render(info: &PluginInfo) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = writeln!(out, "plugin       {} {}", info.name, info.version);
    let _ = writeln!(
        out,
        "abi          {} (built with {})",
        info.abi, info.sdk_version
    );
    let _ = writeln!(
        out,
        "file         {} ({})",
        info.file.display(),
        human_bytes(info.size_bytes)
    );
    if let Some(sha256) = &info.sha256 {
        let _ = writeln!(out, "sha256       {sha256}");
    }
    let caps = if info.capabilities.is_empty() {
        "none".to_owned()
    } else {
        info.capabilities.join(", ")
    };
    let _ = writeln!(out, "capabilities {caps}");
    let _ = writeln!(out, "cpu share    {:.2} core", info.cpu_share);
    let _ = writeln!(
        out,
        "gpu          {}",
        if info.needs_gpu { "yes" } else { "no" }
    );
    let _ = writeln!(out, "levels       {}", info.levels.len());
    let width = info.levels.iter().map(|l| l.name.len()).max().unwrap_or(0);
    for l in &info.levels {
        let mut line = format!(
            "  {} {:<width$}  memory {}",
            l.level,
            l.name,
            human_bytes(l.memory_min_bytes)
        );
        if l.memory_preferred_bytes != l.memory_min_bytes {
            let _ = write!(line, " (prefers {})", human_bytes(l.memory_preferred_bytes));
        }
        if l.gpu_memory_bytes > 0 {
            let _ = write!(line, ", gpu memory {}", human_bytes(l.gpu_memory_bytes));
        }
        let _ = writeln!(out, "{line}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::human_bytes;

    #[test]
    fn bytes_read_like_free_prints_them() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(256 << 20), "256 MiB");
        assert_eq!(human_bytes(1536 << 20), "1.5 GiB");
    }
}
