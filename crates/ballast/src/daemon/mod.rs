//! `ballast run`: the daemon. Wires the actors together (the only place that knows them all),
//! serves the control API and keeps the durable state.

pub mod api;
pub mod live;
pub mod metrics;
pub mod run;
pub mod startup;
pub mod state;
pub mod store;
pub mod telemetry;
