//! `ballast plugin check`: runs one plugin through its whole contract, as the daemon would, and
//! prints each step with its timing (a table, or one JSON document with `--json`). The check
//! itself is `ballast_host::check`; this is its command line.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use ballast_daemon::config::{self, DEFAULT_PROFILE, EXIT_CONFIG, Overrides};
use ballast_host::check::{CheckOptions, Report, check, config_for_file};
use ballast_host::{Isolation, LevelConfig, PluginConfig, Protocol};

/// Arguments of `ballast plugin check`.
#[derive(Debug, clap::Args)]
#[command(group(
    clap::ArgGroup::new("what").required(true).args(["file", "command", "plugin"])
))]
pub struct CheckArgs {
    /// A native plugin's shared library, e.g. target/debug/libclock.so.
    pub file: Option<PathBuf>,
    /// A process plugin: its program and arguments (everything after `--command`, so put it
    /// last), e.g. `--command plugins/python/indexer/indexer.py`.
    #[arg(long, num_args = 1.., allow_hyphen_values = true, value_name = "PROGRAM [ARGS]")]
    pub command: Option<Vec<String>>,
    /// The plugin NAME as a config describes it (its backend, levels, limits and settings):
    /// the file of `--config`, or the built-in default config without one.
    #[arg(long, value_name = "NAME")]
    pub plugin: Option<String>,
    /// The config file `--plugin` is read from (TOML with profiles, as `ballast run` reads it).
    #[arg(long, short, env = "BALLAST_CONFIG", requires = "plugin")]
    pub config: Option<PathBuf>,
    /// The config profile `--plugin` is read with.
    #[arg(long, short, env = "BALLAST_PROFILE", default_value = DEFAULT_PROFILE, requires = "plugin")]
    pub profile: String,
    /// The request every call sends.
    #[arg(long, value_name = "DATA", default_value = "ping")]
    pub request: String,
    /// The request of the streamed calls (the cancelled one, and those in flight at the
    /// drain), when it should differ from `--request`: one that streams several chunks over
    /// some time, e.g. `tick:50:10` for the clock example or `stream:50::10` for the Rust ones.
    #[arg(long, value_name = "DATA")]
    pub stream_request: Option<String>,
    /// A native FILE: run it isolated in a worker process, as `isolation = "process"` does (a
    /// plugin that crashes then fails a step instead of ending the check).
    #[arg(long, requires = "file")]
    pub isolated: bool,
    /// FILE or `--command`: the plugin's own settings, as JSON (its `config` table).
    #[arg(long, value_name = "JSON")]
    pub plugin_config: Option<String>,
    /// `--command`: the plugin's name, which its hello must say (without it, the name its hello
    /// says).
    #[arg(long, requires = "command")]
    pub name: Option<String>,
    /// `--command`: the program speaks no control protocol (lifecycle only).
    #[arg(long, requires = "command")]
    pub no_protocol: bool,
    /// `--command`: a level it declares with its memory, full first, e.g. `--level full=64
    /// --level keywords=16` (MiB).
    #[arg(long = "level", value_name = "NAME=MIB", requires = "command")]
    pub levels: Vec<String>,
    /// Print one JSON document (every step: name, ok, skipped, duration_ms, detail) instead of
    /// the table.
    #[arg(long)]
    pub json: bool,
}

/// Runs `ballast plugin check`: exits 0 only when every step holds, 1 when one does not, 78
/// when the plugin cannot be described (a bad config, flag or setting).
pub fn run(args: CheckArgs, out: &mut dyn Write) -> anyhow::Result<ExitCode> {
    let plugin = match describe(&args) {
        Ok(plugin) => plugin,
        Err(error) => {
            eprintln!("error: {error:#}");
            return Ok(ExitCode::from(EXIT_CONFIG));
        }
    };
    let options = CheckOptions {
        request: args.request.clone().into_bytes(),
        stream_request: args.stream_request.clone().map(String::into_bytes),
        worker_program: None,
        name_from_hello: args.command.is_some() && args.name.is_none(),
    };
    let report = check(plugin, &options);
    write(&report, args.json, out)?;
    Ok(if report.ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Prints the report as a table or as JSON.
fn write(report: &Report, json: bool, out: &mut dyn Write) -> anyhow::Result<()> {
    if json {
        writeln!(out, "{}", serde_json::to_string_pretty(report)?)?;
    } else {
        write!(out, "{}", report.render())?;
    }
    Ok(())
}

/// The plugin's config, from the file, the command or the config file.
fn describe(args: &CheckArgs) -> anyhow::Result<PluginConfig> {
    let settings = args
        .plugin_config
        .as_deref()
        .map(|text| {
            serde_json::from_str::<serde_json::Value>(text)
                .context("--plugin-config is not valid JSON")
        })
        .transpose()?;
    if let Some(name) = &args.plugin {
        anyhow::ensure!(
            settings.is_none(),
            "--plugin-config is for a FILE or a --command; a config gives `--plugin {name}` its settings"
        );
        let config = config::load(args.config.as_deref(), &args.profile, &Overrides::default())
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let names: Vec<String> = config.plugins.iter().map(|p| p.name.clone()).collect();
        return config
            .resolved_plugins()
            .into_iter()
            .find(|p| &p.name == name)
            .with_context(|| {
                format!(
                    "the config has no plugin `{name}`; it has {}",
                    if names.is_empty() {
                        "none".to_owned()
                    } else {
                        names.join(", ")
                    }
                )
            });
    }
    let mut plugin = if let Some(command) = &args.command {
        let (program, program_args) = command.split_first().context("--command needs a program")?;
        // Without --name, the name is a guess its hello corrects: the script's file name for
        // `python3 plugin.py`, the program's for `./plugin`.
        let guess = program_args
            .first()
            .filter(|arg| Path::new(arg).is_file())
            .map_or(program.as_str(), String::as_str);
        let name = match &args.name {
            Some(name) => name.clone(),
            None => Path::new(guess)
                .file_stem()
                .map(|s| {
                    s.to_string_lossy()
                        .chars()
                        .map(|c| {
                            if c.is_ascii_alphanumeric() || c == '-' {
                                c
                            } else {
                                '_'
                            }
                        })
                        .collect()
                })
                .context("--command's program has no file name; pass --name")?,
        };
        let mut plugin = PluginConfig::process(name, program);
        plugin.args = program_args.to_vec();
        plugin.protocol = if args.no_protocol {
            Protocol::None
        } else {
            Protocol::JsonLines
        };
        plugin.levels = args
            .levels
            .iter()
            .map(|level| parse_level(level))
            .collect::<anyhow::Result<_>>()?;
        plugin
    } else {
        let file = args
            .file
            .as_ref()
            .context("name a plugin FILE, a --command or a --plugin")?;
        let mut plugin = config_for_file(file);
        if args.isolated {
            plugin.isolation = Isolation::Process;
        }
        plugin
    };
    if let Some(settings) = settings {
        plugin.config = settings;
    }
    let problems = plugin.problems();
    anyhow::ensure!(problems.is_empty(), "{}", problems.join("; "));
    Ok(plugin)
}

/// `NAME=MIB` as a level.
fn parse_level(text: &str) -> anyhow::Result<LevelConfig> {
    let (name, mib) = text
        .split_once('=')
        .with_context(|| format!("--level `{text}`: write it NAME=MIB, e.g. full=64"))?;
    let memory_mb = mib
        .trim()
        .parse()
        .with_context(|| format!("--level `{text}`: `{mib}` is not a whole number of MiB"))?;
    Ok(LevelConfig {
        name: name.trim().to_owned(),
        memory_mb,
        gpu_memory_mb: 0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_read_as_name_and_mib() {
        let level = parse_level("keywords=16").unwrap();
        assert_eq!((level.name.as_str(), level.memory_mb), ("keywords", 16));
        assert!(
            parse_level("full")
                .unwrap_err()
                .to_string()
                .contains("NAME=MIB")
        );
        assert!(
            parse_level("full=lots")
                .unwrap_err()
                .to_string()
                .contains("not a whole number")
        );
    }
}
