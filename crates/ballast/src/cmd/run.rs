//! `ballast run`: loads the config (exit 78 on any problem, all of them listed) and runs the daemon.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use ballast_daemon::config::{self, DEFAULT_PROFILE, EXIT_CONFIG, Overrides};
use ballast_daemon::run::Outcome;

/// Where the config comes from; shared by `ballast run` and `ballast config`.
#[derive(Debug, Clone, clap::Args)]
pub struct ConfigSource {
    /// The config file (TOML with profiles); without it, the built-in defaults.
    #[arg(long, short, env = "BALLAST_CONFIG")]
    pub config: Option<PathBuf>,
    /// The profile: dev, balanced or production.
    #[arg(long, short, env = "BALLAST_PROFILE", default_value = DEFAULT_PROFILE)]
    pub profile: String,
    /// Where telemetry, decisions, pins and checkpoints are kept (overrides the config).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Where the control API listens (overrides the config).
    #[arg(long)]
    pub listen: Option<SocketAddr>,
    /// observe, advise or enforce (overrides the config).
    #[arg(long)]
    pub mode: Option<String>,
}

impl ConfigSource {
    /// The command-line overrides.
    pub fn overrides(&self) -> Overrides {
        Overrides {
            data_dir: self.data_dir.clone(),
            listen: self.listen,
            mode: self.mode.clone(),
        }
    }

    /// Loads the config, or prints every problem and returns the config exit code.
    pub fn load(&self) -> Result<config::Config, ExitCode> {
        config::load(self.config.as_deref(), &self.profile, &self.overrides()).map_err(|error| {
            eprintln!("error: {error}");
            ExitCode::from(EXIT_CONFIG)
        })
    }
}

/// Arguments of `ballast run`.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    #[command(flatten)]
    source: ConfigSource,
}

/// Runs the daemon until SIGTERM or SIGINT.
pub fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    let config = match args.source.load() {
        Ok(config) => config,
        Err(code) => return Ok(code),
    };
    let system = actix::System::new();
    match system.block_on(ballast_daemon::run::run(config))? {
        Outcome::Stopped => Ok(ExitCode::SUCCESS),
        Outcome::DataDirInUse(message) => {
            eprintln!("error: {message}");
            Ok(ExitCode::from(ballast_daemon::lock::EXIT_IN_USE))
        }
    }
}
