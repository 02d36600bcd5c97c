//! `ballast worker` (hidden): runs one native plugin in a process of its own for a daemon that
//! isolates it (`isolation = "process"`), speaking the control protocol on stdin/stdout. Logs go
//! to stderr, which the daemon writes to the plugin's log file.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use ballast_host::worker::{WorkerOptions, run as run_worker};

/// Arguments of `ballast worker`.
#[derive(Debug, clap::Args)]
pub struct WorkerArgs {
    /// The plugin library to load.
    #[arg(long)]
    plugin: PathBuf,
    /// The sha256 the library must have.
    #[arg(long)]
    sha256: Option<String>,
    /// Calls that may run at once.
    #[arg(long, default_value_t = 4)]
    threads: usize,
    /// How often to send a heartbeat, in milliseconds.
    #[arg(long, default_value_t = 5000)]
    heartbeat_ms: u64,
    /// Only describe the library (its descriptor in a hello) and exit.
    #[arg(long)]
    describe: bool,
}

/// Runs `ballast worker` until its stdin ends.
pub fn run(args: WorkerArgs) -> anyhow::Result<ExitCode> {
    let options = WorkerOptions {
        plugin: args.plugin,
        sha256: args.sha256,
        threads: args.threads,
        heartbeat: Duration::from_millis(args.heartbeat_ms.max(10)),
        describe: args.describe,
    };
    match run_worker(&options, std::io::stdin().lock(), std::io::stdout()) {
        Ok(()) => Ok(ExitCode::SUCCESS),
        Err(message) => {
            eprintln!("error: {message}");
            Ok(ExitCode::from(2))
        }
    }
}
