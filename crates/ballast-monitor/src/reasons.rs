//! Logs each unavailable metric's reason once, when it first appears or changes, not every tick.

use std::collections::BTreeMap;

use ballast_core::Metric;

/// The last reason logged for each unavailable metric.
#[derive(Debug, Default)]
pub(crate) struct Reasons {
    last: BTreeMap<String, String>,
}

impl Reasons {
    /// Notes the state of metric `key`: logs a new or changed reason, and a recovery.
    pub(crate) fn note<T>(&mut self, key: &str, metric: &Metric<T>) {
        self.note_reason(key, metric.unavailable_reason());
    }

    /// Notes `reason` (`None`: the metric is fine) for metric `key`.
    pub(crate) fn note_reason(&mut self, key: &str, reason: Option<&str>) {
        self.note_reason_quietly(key, reason, false);
    }

    /// Like [`Reasons::note`], logging a new reason at debug level when `expected` (e.g. no
    /// NVIDIA driver on a machine without a GPU).
    pub(crate) fn note_expected<T>(&mut self, key: &str, metric: &Metric<T>, expected: bool) {
        self.note_reason_quietly(key, metric.unavailable_reason(), expected);
    }

    fn note_reason_quietly(&mut self, key: &str, reason: Option<&str>, expected: bool) {
        match (reason, self.last.get(key)) {
            (Some(reason), Some(last)) if last == reason => {}
            (Some(reason), _) => {
                if expected {
                    tracing::debug!(metric = key, reason, "metric unavailable");
                } else {
                    tracing::info!(metric = key, reason, "metric unavailable");
                }
                self.last.insert(key.to_owned(), reason.to_owned());
            }
            (None, Some(_)) => {
                tracing::info!(metric = key, "metric available again");
                self.last.remove(key);
            }
            (None, None) => {}
        }
    }

    /// How many metrics are currently noted as unavailable.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.last.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reason_is_kept_until_the_metric_recovers() {
        let mut reasons = Reasons::default();
        reasons.note::<u8>("gpu", &Metric::unavailable("no driver"));
        reasons.note::<u8>("gpu", &Metric::unavailable("no driver"));
        assert_eq!(reasons.len(), 1);
        reasons.note("gpu", &Metric::available(1u8));
        assert_eq!(reasons.len(), 0);
    }
}
