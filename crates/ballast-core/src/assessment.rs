//! The predictor's view of each resource: smoothed value, trend, anomaly and forecast.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::resource::Resource;
use crate::time::Timestamp;

/// Where a resource is heading at the forecast horizon.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Forecast {
    /// Predicted utilization at `at + horizon`, in `0..=1`.
    pub value: f64,
    /// How far ahead the forecast looks.
    #[serde(with = "duration_ms")]
    pub horizon: Duration,
    /// How much to trust it, in `0..=1`, from the model's measured recent error on this series.
    pub confidence: f64,
    /// The model (or blend) that produced it, e.g. "ema", "blend(persistence,damped_trend)".
    pub model: String,
    /// The forecast's recent mean absolute error on this series, in the same unit as `value`,
    /// once any of its forecasts has been scored: how far off it has been lately.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<f64>,
}

/// Trend statistics over the predictor's window.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TrendStats {
    /// Slope of utilization in units per second (positive: rising).
    pub slope_per_second: f64,
    /// Lowest value in the window.
    pub min: f64,
    /// Highest value in the window.
    pub max: f64,
    /// Mean over the window.
    pub mean: f64,
}

/// Anomaly detection result for the latest value.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Anomaly {
    /// Whether the latest value is anomalous for this series.
    pub flagged: bool,
    /// Robust z-score of the latest value over the window.
    pub score: f64,
}

/// The assessment of one resource.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ResourceAssessment {
    /// Which resource.
    pub resource: Resource,
    /// The latest raw utilization.
    pub value: f64,
    /// The smoothed (EMA) utilization.
    pub smoothed: f64,
    /// The forecast, once the model has enough points (`None` before any estimate exists).
    pub forecast: Option<Forecast>,
    /// Trend over the window.
    pub trend: TrendStats,
    /// Anomaly of the latest value.
    pub anomaly: Anomaly,
}

/// The predictor's output for one sample: one entry per measured resource.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Assessment {
    /// The time of the sample it was made from.
    pub at: Timestamp,
    /// One entry per resource that was measured; unmeasured resources are absent.
    pub resources: Vec<ResourceAssessment>,
}

impl Assessment {
    /// The entry for `resource`, if it was measured.
    pub fn get(&self, resource: Resource) -> Option<&ResourceAssessment> {
        self.resources.iter().find(|r| r.resource == resource)
    }
}

/// Serde for a [`Duration`] as whole milliseconds.
pub mod duration_ms {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    /// Serialize as milliseconds.
    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }

    /// Deserialize from milliseconds.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_millis)
    }
}
