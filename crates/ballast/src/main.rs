//! The `ballast` binary: a thin command line over the daemon (`ballast-daemon`), the offline lab
//! (`ballast-lab`) and the control API's clients.

use std::process::ExitCode;

mod cmd;
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
    /// Run the daemon: host the plugins and keep the machine healthy.
    Run(cmd::run::RunArgs),
    /// Check or show the effective configuration.
    Config(cmd::config::ConfigArgs),
    /// Show the running daemon's status: tier, mode, resources, plugins.
    Status(cmd::client::StatusArgs),
    /// List the running daemon's plugins.
    Plugins(cmd::client::PluginsArgs),
    /// Show the running daemon's recent decisions (or follow them).
    Decisions(cmd::client::DecisionsArgs),
    /// Follow the running daemon's event stream.
    Events(cmd::client::EventsArgs),
    /// Inspect a plugin file, or act on a running daemon's plugin (enable, disable, level, ...).
    Plugin(cmd::plugin::PluginArgs),
    /// Take one sample of the machine (or watch it) as the monitor sees it.
    Sample(cmd::sample::SampleArgs),
    /// Show the detected hardware tier, the facts and the rule that chose it.
    Tier(cmd::tier::TierArgs),
    /// Replay a trace through the predictor and the scaler on a virtual clock.
    Simulate(ballast_lab::simulate::SimulateArgs),
    /// Evaluate the forecaster on a trace, or report on demand from the daemon's logs.
    Forecast(ballast_lab::forecast::ForecastArgs),
    /// Search the shed/restore thresholds, smoothing, cool-down and stabilization that do best
    /// on recorded traces.
    Tune(ballast_lab::tune::TuneArgs),
    /// Run one native plugin in a process of its own (started by the daemon for plugins with
    /// `isolation = "process"`).
    #[command(hide = true)]
    Worker(cmd::worker::WorkerArgs),
}

impl Command {
    /// Whether the command's own output says all there is, so that the host's logs would only
    /// repeat it.
    fn reports_everything(&self) -> bool {
        matches!(self, Command::Plugin(args) if args.is_check())
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if cli.command.reports_everything() {
        cmd::init_logging_at("error");
    } else {
        cmd::init_logging();
    }
    let result = match cli.command {
        Command::Run(args) => cmd::run::run(args),
        Command::Config(args) => cmd::config::run(args),
        Command::Status(args) => cmd::client::status(args),
        Command::Plugins(args) => cmd::client::plugins(args),
        Command::Decisions(args) => cmd::client::decisions(args),
        Command::Events(args) => cmd::client::events(args),
        Command::Plugin(args) => cmd::plugin::run(args),
        Command::Sample(args) => cmd::sample::run(args),
        Command::Tier(args) => cmd::tier::run(args),
        Command::Simulate(args) => ballast_lab::simulate::run(args),
        Command::Forecast(args) => ballast_lab::forecast::run(args),
        Command::Tune(args) => ballast_lab::tune::run(args),
        Command::Worker(args) => cmd::worker::run(args),
    };
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {}", cmd::error_chain(&error));
            ExitCode::FAILURE
        }
    }
}
