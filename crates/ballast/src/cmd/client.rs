//! CLI commands that are clients of a running daemon's control API: placeholder until written.

use std::process::ExitCode;

/// Arguments of `ballast status`.
#[derive(Debug, clap::Args)]
pub struct StatusArgs {}

/// Arguments of `ballast plugins`.
#[derive(Debug, clap::Args)]
pub struct PluginsArgs {}

/// Arguments of `ballast decisions`.
#[derive(Debug, clap::Args)]
pub struct DecisionsArgs {}

/// Arguments of `ballast events`.
#[derive(Debug, clap::Args)]
pub struct EventsArgs {}

/// Runs `ballast status`.
pub fn status(_args: StatusArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`ballast status` is not implemented yet")
}

/// Runs `ballast plugins`.
pub fn plugins(_args: PluginsArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`ballast plugins` is not implemented yet")
}

/// Runs `ballast decisions`.
pub fn decisions(_args: DecisionsArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`ballast decisions` is not implemented yet")
}

/// Runs `ballast events`.
pub fn events(_args: EventsArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`ballast events` is not implemented yet")
}
