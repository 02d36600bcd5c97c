//! `ballast config`: placeholder until written.

use std::process::ExitCode;

/// Arguments of `ballast config`.
#[derive(Debug, clap::Args)]
pub struct ConfigArgs {}

/// Runs `ballast config`.
pub fn run(_args: ConfigArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`ballast config` is not implemented yet")
}
