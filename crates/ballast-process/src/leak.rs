//! Leak detection from a memory series: memory that grew steadily over the whole window (a good
//! straight-line fit with a clear rise), as opposed to a working set that goes up and down.
//! Used for process plugins (their RSS) and native ones (the SDK allocator's live bytes).

use std::collections::VecDeque;
use std::time::Duration;

use ballast_core::Timestamp;
use serde::{Deserialize, Serialize};

/// What counts as a leak.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LeakConfig {
    /// The series must span this long, and grow over all of it.
    #[serde(with = "humantime_serde")]
    pub window: Duration,
    /// The fitted growth over the window must be at least this many bytes ...
    pub min_growth_bytes: u64,
    /// ... and at least this fraction of the memory at the window's start.
    pub min_growth_ratio: f64,
    /// How straight the rise must be: the fit's coefficient of determination (R²), 0 to 1.
    pub min_r_squared: f64,
}

impl Default for LeakConfig {
    fn default() -> Self {
        LeakConfig {
            window: Duration::from_secs(600),
            min_growth_bytes: 16 << 20,
            min_growth_ratio: 0.2,
            min_r_squared: 0.9,
        }
    }
}

impl LeakConfig {
    /// Every problem, each naming the field under `prefix`.
    pub fn problems(&self, prefix: &str) -> Vec<String> {
        let mut problems = Vec::new();
        if self.window < Duration::from_secs(1) {
            problems.push(format!("{prefix}.window must be at least 1s"));
        }
        if !(self.min_growth_ratio >= 0.0 && self.min_growth_ratio.is_finite()) {
            problems.push(format!("{prefix}.min_growth_ratio must be at least 0"));
        }
        if !(0.0..=1.0).contains(&self.min_r_squared) {
            problems.push(format!("{prefix}.min_r_squared must be 0 to 1"));
        }
        problems
    }
}

/// The most samples kept: the window is thinned to this many.
const MAX_SAMPLES: usize = 120;

/// What a leak check found.
#[derive(Clone, Debug, PartialEq)]
pub struct LeakFinding {
    /// The fitted growth over the window, in bytes.
    pub growth_bytes: f64,
    /// Memory at the window's start (fitted), in bytes.
    pub start_bytes: f64,
    /// The growth rate, in bytes per second.
    pub bytes_per_second: f64,
    /// The fit's R².
    pub r_squared: f64,
    /// The window the series spans.
    pub span: Duration,
}

impl LeakFinding {
    /// The finding in a sentence.
    pub fn describe(&self) -> String {
        format!(
            "memory grew steadily by {:.1} MiB ({:.0}%) over {} ({:.1} KiB/s, R² {:.2})",
            self.growth_bytes / 1048576.0,
            if self.start_bytes > 0.0 {
                self.growth_bytes / self.start_bytes * 100.0
            } else {
                100.0
            },
            humantime::format_duration(Duration::from_secs(self.span.as_secs())),
            self.bytes_per_second / 1024.0,
            self.r_squared
        )
    }
}

/// A sliding window of memory readings and the leak verdict over it.
#[derive(Clone, Debug)]
pub struct LeakDetector {
    config: LeakConfig,
    samples: VecDeque<(Timestamp, u64)>,
    flagged: bool,
}

impl LeakDetector {
    /// A detector with `config`.
    pub fn new(config: LeakConfig) -> LeakDetector {
        LeakDetector {
            config,
            samples: VecDeque::new(),
            flagged: false,
        }
    }

    /// Forgets the series (a new process, or memory freed by a restart).
    pub fn reset(&mut self) {
        self.samples.clear();
        self.flagged = false;
    }

    /// Whether a leak is currently suspected.
    pub fn flagged(&self) -> bool {
        self.flagged
    }

    /// Takes in a reading; returns a finding when a leak becomes suspected (once, until the
    /// growth stops and it is cleared).
    pub fn sample(&mut self, now: Timestamp, bytes: u64) -> Option<LeakFinding> {
        let spacing = self.config.window / MAX_SAMPLES as u32;
        if self
            .samples
            .back()
            .is_some_and(|(t, _)| now < *t || now - *t < spacing)
        {
            return None;
        }
        self.samples.push_back((now, bytes));
        // Keep exactly one sample at or before the window's start so the series spans it.
        let start = now.saturating_sub(self.config.window);
        while self.samples.len() > 2 && self.samples[1].0 <= start {
            self.samples.pop_front();
        }
        let finding = self.check(now);
        match (&finding, self.flagged) {
            (Some(_), false) => {
                self.flagged = true;
                finding
            }
            (None, true) => {
                self.flagged = false;
                None
            }
            _ => None,
        }
    }

    fn check(&self, now: Timestamp) -> Option<LeakFinding> {
        let first = self.samples.front()?.0;
        let span = now - first;
        if span < self.config.window || self.samples.len() < 8 {
            return None;
        }
        let n = self.samples.len() as f64;
        let xs = self.samples.iter().map(|(t, _)| (*t - first).as_secs_f64());
        let ys = self.samples.iter().map(|(_, b)| *b as f64);
        let mean_x = xs.clone().sum::<f64>() / n;
        let mean_y = ys.clone().sum::<f64>() / n;
        let (mut sxy, mut sxx, mut syy) = (0.0, 0.0, 0.0);
        for (x, y) in xs.zip(ys) {
            sxy += (x - mean_x) * (y - mean_y);
            sxx += (x - mean_x) * (x - mean_x);
            syy += (y - mean_y) * (y - mean_y);
        }
        if sxx <= 0.0 || syy <= 0.0 {
            return None;
        }
        let slope = sxy / sxx;
        let r_squared = (sxy * sxy) / (sxx * syy);
        let span_s = span.as_secs_f64();
        let start_bytes = mean_y - slope * mean_x;
        let growth = slope * span_s;
        let steady = slope > 0.0
            && r_squared >= self.config.min_r_squared
            && growth >= self.config.min_growth_bytes as f64
            && growth >= self.config.min_growth_ratio * start_bytes.max(0.0);
        steady.then_some(LeakFinding {
            growth_bytes: growth,
            start_bytes,
            bytes_per_second: slope,
            r_squared,
            span,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn detector() -> LeakDetector {
        LeakDetector::new(LeakConfig {
            window: Duration::from_secs(600),
            ..LeakConfig::default()
        })
    }

    #[test]
    fn steady_growth_is_flagged_once_after_a_full_window() {
        let mut d = detector();
        let t0 = Timestamp::from_secs(10_000);
        let mut findings = Vec::new();
        for i in 0..=900u64 {
            // 100 MiB growing by 64 KiB/s: +37.5 MiB over 10 minutes.
            let bytes = (100 << 20) + i * (64 << 10);
            if let Some(f) = d.sample(t0 + Duration::from_secs(i), bytes) {
                findings.push((i, f));
            }
        }
        assert_eq!(findings.len(), 1, "{findings:?}");
        let (at, finding) = &findings[0];
        assert!((600..=610).contains(at), "flagged at {at}s");
        assert!(
            finding
                .describe()
                .starts_with("memory grew steadily by 37.5 MiB"),
            "{}",
            finding.describe()
        );
        assert!(d.flagged());
    }

    #[test]
    fn a_sawtooth_working_set_is_not_a_leak() {
        let mut d = detector();
        let t0 = Timestamp::from_secs(0);
        for i in 0..3600u64 {
            // Grows by 50 MiB over 5 minutes, then a collection frees it all.
            let bytes = (200 << 20) + (i % 300) * ((50 << 20) / 300);
            assert_eq!(
                d.sample(t0 + Duration::from_secs(i), bytes),
                None,
                "at {i}s"
            );
        }
    }

    #[test]
    fn the_flag_clears_when_growth_stops() {
        let mut d = detector();
        let t0 = Timestamp::from_secs(0);
        for i in 0..=700u64 {
            d.sample(t0 + Duration::from_secs(i), (10 << 20) + i * (100 << 10));
        }
        assert!(d.flagged());
        let top = (10 << 20) + 700 * (100 << 10);
        for i in 701..=2000u64 {
            d.sample(t0 + Duration::from_secs(i), top);
        }
        assert!(!d.flagged());
    }
}
