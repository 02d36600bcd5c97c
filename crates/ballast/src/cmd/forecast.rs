//! `ballast forecast`: placeholder until the command is implemented.

use std::process::ExitCode;

/// Arguments of `ballast forecast`.
#[derive(Debug, clap::Args)]
pub struct ForecastArgs {}

/// Runs `ballast forecast`.
pub fn run(_args: ForecastArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`ballast forecast` is not implemented yet")
}
