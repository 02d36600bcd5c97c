//! The ballast daemon (`ballast run`): its configuration, the one place that wires the actors
//! together, the control API, the telemetry and the durable state in the data directory.
//!
//! Only this crate knows actix-web, figment and the data directory's layout; the CLI clients
//! reach the daemon through the wire types of `ballast-api`, never through this crate.

pub mod api;
pub mod checkpoints;
pub mod config;
pub mod journal;
pub mod live;
pub mod lock;
pub mod metrics;
pub mod pins;
pub mod readiness;
pub mod run;
pub mod startup;
pub mod state;
pub mod store;
pub mod telemetry;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
pub mod topology;

use std::fmt::Write as _;

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
