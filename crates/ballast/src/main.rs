//! The `ballast` binary: the daemon and its command-line tools, and the only crate that wires the
//! others together.

mod cmd;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Hosts an assistant's integrations as plugins and keeps the machine healthy under load.
#[derive(Debug, Parser)]
#[command(name = "ballast", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Tools for plugin authors: inspect a plugin file.
    Plugin(cmd::plugin::PluginArgs),
    /// Take one sample of the machine (or watch it) as the monitor sees it.
    Sample(cmd::sample::SampleArgs),
    /// Show the detected hardware tier, the facts and the rule that chose it.
    Tier(cmd::tier::TierArgs),
    /// Replay a trace through the predictor and the scaler on a virtual clock.
    Simulate(cmd::simulate::SimulateArgs),
    /// Evaluate the forecaster on a trace.
    Forecast(cmd::forecast::ForecastArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    cmd::init_logging();
    let result = match cli.command {
        Command::Plugin(args) => cmd::plugin::run(args),
        Command::Sample(args) => cmd::sample::run(args),
        Command::Tier(args) => cmd::tier::run(args),
        Command::Simulate(args) => cmd::simulate::run(args),
        Command::Forecast(args) => cmd::forecast::run(args),
    };
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {}", cmd::error_chain(&error));
            ExitCode::FAILURE
        }
    }
}
