//! Integration tests of ballast-tier: classification of fixture machines, configuration files
//! (good and bad) and, with the `actor` feature, the TierActor.

#[cfg(feature = "actor")]
mod actor;
mod classify;
mod config;
