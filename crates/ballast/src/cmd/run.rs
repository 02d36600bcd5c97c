//! `ballast run`: placeholder until the daemon is wired.

use std::process::ExitCode;

/// Arguments of `ballast run`.
#[derive(Debug, clap::Args)]
pub struct RunArgs {}

/// Runs the daemon.
pub fn run(_args: RunArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`ballast run` is not implemented yet")
}
