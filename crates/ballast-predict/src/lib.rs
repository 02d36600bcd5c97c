//! Smoothing, trend, anomaly detection and forecasting, and, with the `actor` feature, the
//! PredictorActor.
//!
//! The [`Predictor`] turns samples into an [`Assessment`](ballast_core::Assessment) per
//! resource: the EMA-smoothed value, trend and anomaly over a sliding window of buckets, and a
//! forecast at the horizon with a confidence. It is a pure state machine: time is an argument,
//! and it never reads a clock, sleeps or does IO. `PredictorActor` is its actix shell, in the
//! `actor` module (feature `actor`, on by default); without the feature the crate depends on
//! neither actix nor tokio.
//!
//! The main design choice is in [`forecast`]: a straight line extrapolated over the window is
//! worse than "next = last" on real telemetry, so no single model is trusted. Several cheap
//! candidates forecast every step, each is scored when its target arrives, and the forecast
//! blends the few with the lowest recent error; the confidence is that blend's measured error.

#[cfg(feature = "actor")]
pub mod actor;
pub mod forecast;
pub mod predictor;
pub mod settings;

#[cfg(feature = "actor")]
pub use actor::{PredictorActor, SampleMsg, SubscribeAssessments};
pub use forecast::{Evaluation, ForecastConfig, Model, PointForecast, SeriesPredictor, evaluate};
pub use predictor::{Predictor, PredictorConfig};
pub use settings::PredictorSettings;
