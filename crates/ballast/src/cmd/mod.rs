//! The subcommands of the `ballast` binary, one module each, and what they share.

pub mod client;
pub mod config;
pub mod forecast;
pub mod plugin;
pub mod run;
pub mod sample;
pub mod simulate;
pub mod tier;
pub mod tune;
pub mod worker;

use std::fmt::Write as _;

/// Logs go to stderr, filtered by `BALLAST_LOG` (default `info`), key/value formatted.
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("BALLAST_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // A second initialisation (tests) is harmless: keep the first subscriber.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .try_init();
}

/// An error and all its causes on one line: `outer: inner: innermost`.
pub fn error_chain(error: &anyhow::Error) -> String {
    let mut text = error.to_string();
    for cause in error.chain().skip(1) {
        let cause = cause.to_string();
        if !text.contains(&cause) {
            let _ = write!(text, ": {cause}");
        }
    }
    text
}
