//! End-to-end tests that run the real `ballast` binary as an operator would: start the daemon on
//! a temporary data directory and an ephemeral port, drive it through its API and CLI, kill it,
//! restart it, and check what survived.

mod api_security;
mod cgroups;
mod check;
mod checkpoints;
mod containment;
mod daemon;
mod demand;
mod endpoints;
mod engines;
mod fleet;
mod fleet_report;
mod inspect;
mod process;
mod prometheus;
mod report;
mod stream;
mod support;
