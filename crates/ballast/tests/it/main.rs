//! Integration tests of the `ballast` binary: one test binary for the crate, a module per area.

mod cli;
mod fleet_report;
mod report;
mod sample;
mod simulate;
