//! ballast's offline lab: what runs on recorded data instead of the live machine.
//!
//! * [`trace`] reads recorded traces (NAB, Google and Azure CSV layouts, request logs binned into
//!   rates, the daemon's own telemetry JSON lines) into one time series; it parses what it is
//!   handed and never opens files itself.
//! * [`simulate`] replays a trace through the real predictor and scaler on a virtual clock
//!   (`ballast simulate`), draws a replay, and compares configs side by side.
//! * [`tune`] searches the policy's settings over traces (`ballast tune`).
//! * [`forecast`] evaluates the forecaster on a trace and builds the demand report from the
//!   daemon's logs (`ballast forecast evaluate|report`).
//!
//! The daemon does not depend on this crate, and this crate uses the predictor and the scaler
//! without their actors: no actix, no tokio, and time comes only from the trace.

pub mod forecast;
pub mod simulate;
pub mod trace;
pub mod tune;
