//! `ballast simulate`: placeholder until the command is implemented.

use std::process::ExitCode;

/// Arguments of `ballast simulate`.
#[derive(Debug, clap::Args)]
pub struct SimulateArgs {}

/// Runs `ballast simulate`.
pub fn run(_args: SimulateArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`ballast simulate` is not implemented yet")
}
