//! The subcommands of the `ballast` binary that are its own, one module each: the daemon's and
//! the offline lab's are thin calls into `ballast-daemon` and `ballast-lab`.

pub mod call;
pub mod check;
pub mod client;
pub mod config;
pub mod new;
pub mod plugin;
pub mod run;
pub mod sample;
pub mod tier;
pub mod worker;

/// Logs go to stderr, filtered by `BALLAST_LOG` (default `info`), key/value formatted.
pub fn init_logging() {
    init_logging_at("info");
}

/// [`init_logging`] with another default filter: a command whose output says everything
/// (`ballast plugin check`) logs only errors unless `BALLAST_LOG` asks for more.
pub fn init_logging_at(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("BALLAST_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    // A second initialisation (tests) is harmless: keep the first subscriber.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .try_init();
}

pub use ballast_daemon::error_chain;
