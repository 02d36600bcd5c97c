//! The records of the daemon's telemetry log (JSONL): what `ballast simulate`, `ballast forecast`
//! and the demand report read back.

use serde::{Deserialize, Serialize};

use crate::assessment::Assessment;
use crate::decision::Decision;
use crate::plugin::PluginEvent;
use crate::sample::Sample;
use crate::time::Timestamp;

/// Calls to one plugin from one caller over one interval.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CallSummary {
    /// The start of the interval.
    pub from: Timestamp,
    /// The end of the interval.
    pub to: Timestamp,
    /// The plugin.
    pub plugin: String,
    /// The caller's name (`-` when the caller gave none).
    pub caller: String,
    /// Calls made.
    pub calls: u64,
    /// Calls that failed (degraded, busy, timeout, plugin error).
    pub failures: u64,
    /// Calls refused because the plugin was shed, suspended or failed.
    pub degraded: u64,
    /// Total latency of the answered calls, in microseconds.
    pub latency_total_us: u64,
    /// The slowest answered call, in microseconds.
    pub latency_max_us: u64,
}

/// One line of the telemetry log.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum TelemetryRecord {
    /// A sample of the machine (boxed: it is by far the largest record).
    Sample(Box<Sample>),
    /// The predictor's assessment of a sample.
    Assessment(Assessment),
    /// A scaler decision (or warning).
    Decision(Decision),
    /// A plugin event from the host.
    Plugin(PluginEvent),
    /// Calls per plugin and caller over an interval.
    Calls(CallSummary),
}

impl TelemetryRecord {
    /// When the record happened (for calls, the end of the interval).
    pub fn at(&self) -> Timestamp {
        match self {
            TelemetryRecord::Sample(s) => s.at,
            TelemetryRecord::Assessment(a) => a.at,
            TelemetryRecord::Decision(d) => d.at,
            TelemetryRecord::Plugin(e) => e.at,
            TelemetryRecord::Calls(c) => c.to,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_are_tagged_with_their_type() {
        let record = TelemetryRecord::Sample(Box::new(Sample::unavailable(
            Timestamp::from_secs(3),
            "test",
        )));
        let json = serde_json::to_value(&record).unwrap();
        assert_eq!(json["type"], "sample");
        assert_eq!(json["at"], 3000);
        let back: TelemetryRecord = serde_json::from_value(json).unwrap();
        assert_eq!(back, record);
        assert_eq!(back.at(), Timestamp::from_secs(3));
    }
}
