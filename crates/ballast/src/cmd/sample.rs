//! `ballast sample`: placeholder until the command is implemented.

use std::process::ExitCode;

/// Arguments of `ballast sample`.
#[derive(Debug, clap::Args)]
pub struct SampleArgs {}

/// Runs `ballast sample`.
pub fn run(_args: SampleArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`ballast sample` is not implemented yet")
}
