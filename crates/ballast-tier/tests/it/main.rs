//! Integration tests of ballast-tier: classification of fixture machines, configuration files
//! (good and bad) and the TierActor.

mod actor;
mod classify;
mod config;
