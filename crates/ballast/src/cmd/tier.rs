//! `ballast tier`: placeholder until the command is implemented.

use std::process::ExitCode;

/// Arguments of `ballast tier`.
#[derive(Debug, clap::Args)]
pub struct TierArgs {}

/// Runs `ballast tier`.
pub fn run(_args: TierArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`ballast tier` is not implemented yet")
}
