//! `ballast config check|show`: validate a config, or print the effective one with where each
//! value came from.

use std::process::ExitCode;

use anyhow::Context;

use crate::cmd::run::ConfigSource;
use ballast_daemon::config::{self, EXIT_CONFIG};

/// Arguments of `ballast config`.
#[derive(Debug, clap::Args)]
pub struct ConfigArgs {
    #[command(subcommand)]
    command: ConfigCommand,
}

#[derive(Debug, clap::Subcommand)]
enum ConfigCommand {
    /// Validate the config; prints every problem and exits 78 if there is any.
    Check {
        #[command(flatten)]
        source: ConfigSource,
    },
    /// Print the effective config as TOML, each value annotated with where it came from.
    Show {
        #[command(flatten)]
        source: ConfigSource,
        /// Print JSON instead (without sources).
        #[arg(long)]
        json: bool,
    },
}

/// Runs `ballast config`.
pub fn run(args: ConfigArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        ConfigCommand::Check { source } => match source.load() {
            Ok(config) => {
                println!(
                    "config is valid (profile {}, {} plugins, mode {})",
                    source.profile,
                    config.plugins.len(),
                    config.scaler.mode
                );
                Ok(ExitCode::SUCCESS)
            }
            Err(code) => Ok(code),
        },
        ConfigCommand::Show { source, json } => {
            let config = match source.load() {
                Ok(config) => config,
                Err(code) => return Ok(code),
            };
            if json {
                println!("{}", serde_json::to_string_pretty(&config)?);
                return Ok(ExitCode::SUCCESS);
            }
            let figment = match config::figment(
                source.config.as_deref(),
                &source.profile,
                &source.overrides(),
            ) {
                Ok(figment) => figment,
                Err(error) => {
                    eprintln!("error: {error}");
                    return Ok(ExitCode::from(EXIT_CONFIG));
                }
            };
            let value = serde_json::to_value(&config).context("cannot encode the config")?;
            let mut lines = Vec::new();
            flatten("", &value, &mut lines);
            let width = lines.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
            for (key, value) in lines {
                let source = figment
                    .find_metadata(&key)
                    .map(|m| config::source_of(m, &key))
                    .unwrap_or_else(|| "built-in default".to_owned());
                println!("{key:<width$} = {value}  # {source}");
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Flattens a JSON value into `a.b.c = value` lines; arrays of tables keep their index.
fn flatten(prefix: &str, value: &serde_json::Value, out: &mut Vec<(String, String)>) {
    match value {
        serde_json::Value::Object(map) if !map.is_empty() => {
            for (k, v) in map {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(&key, v, out);
            }
        }
        serde_json::Value::Array(items) if items.iter().any(serde_json::Value::is_object) => {
            for (i, v) in items.iter().enumerate() {
                flatten(&format!("{prefix}.{i}"), v, out);
            }
        }
        other => out.push((prefix.to_owned(), other.to_string())),
    }
}
