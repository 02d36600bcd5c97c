//! Prometheus metrics of the daemon (OpenMetrics text): placeholder until written.

use crate::daemon::live::DaemonEvent;

/// The daemon's metrics registry.
#[derive(Default)]
pub struct Metrics {}

impl Metrics {
    /// Counts what an event means for the metrics (decisions by action and rule, ...).
    pub fn observe(&self, _event: &DaemonEvent) {}
}
