//! `ballast plugin`: placeholder until the command is implemented.

use std::process::ExitCode;

/// Arguments of `ballast plugin`.
#[derive(Debug, clap::Args)]
pub struct PluginArgs {}

/// Runs `ballast plugin`.
pub fn run(_args: PluginArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`ballast plugin` is not implemented yet")
}
