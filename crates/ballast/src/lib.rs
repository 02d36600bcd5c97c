//! The `ballast` crate's library half: the daemon, its configuration and the command-line tools,
//! kept here so the binary stays a thin `main` and fuzz targets and tests can reach the parsers.

pub mod cmd;
pub mod config;
pub mod daemon;
