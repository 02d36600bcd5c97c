//! Smoothing, trend, anomaly detection and forecasting, and the PredictorActor.
//!
//! [`trace`] reads recorded traces (CSV or telemetry JSON lines) into a time series; it parses
//! what it is handed and never opens files itself.

pub mod trace;
