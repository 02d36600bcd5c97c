//! The predictor's settings as a config file spells them (durations as text, `0s` for no
//! season): shared by the daemon's config and `ballast simulate`'s.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::predictor::PredictorConfig;

/// The predictor's settings (the design's defaults).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PredictorSettings {
    /// Weight of the newest sample in the smoothed value.
    pub ema_weight: f64,
    /// Samples are averaged into buckets of this length.
    #[serde(with = "humantime_serde")]
    pub bucket: Duration,
    /// Buckets in the model's window.
    pub window_buckets: usize,
    /// How many buckets ahead the forecast looks.
    pub horizon_buckets: usize,
    /// Below this many buckets the forecast is a low-confidence fallback.
    pub min_points: usize,
    /// The seasonal period the forecaster may use (a day: load follows the clock); "0s"
    /// disables it.
    #[serde(with = "humantime_serde")]
    pub season: Duration,
}

impl Default for PredictorSettings {
    fn default() -> Self {
        let d = PredictorConfig::default();
        PredictorSettings {
            ema_weight: d.ema_weight,
            bucket: d.bucket,
            window_buckets: d.window_buckets,
            horizon_buckets: d.horizon_buckets,
            min_points: d.min_points,
            season: d.season.unwrap_or(Duration::ZERO),
        }
    }
}

impl PredictorSettings {
    /// The predictor's own config with these settings.
    pub fn to_predictor_config(&self) -> PredictorConfig {
        PredictorConfig {
            ema_weight: self.ema_weight,
            bucket: self.bucket,
            window_buckets: self.window_buckets,
            horizon_buckets: self.horizon_buckets,
            min_points: self.min_points,
            season: (!self.season.is_zero()).then_some(self.season),
            ..PredictorConfig::default()
        }
    }
}
