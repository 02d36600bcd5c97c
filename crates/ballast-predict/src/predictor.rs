//! The [`Predictor`]: per resource, EMA smoothing of every sample, bucketing into a sliding
//! window, trend, anomaly score and a forecast at the horizon. A pure state machine: time is an
//! argument, there is no clock, no sleep and no IO.

use std::collections::VecDeque;
use std::time::Duration;

use ballast_core::{
    Anomaly, Assessment, Forecast, Resource, ResourceAssessment, Sample, Timestamp, TrendStats,
};

use crate::forecast::{ForecastConfig, PointForecast, SeriesPredictor};

/// Settings of the [`Predictor`]. The defaults are the design's: EMA weight 0.7, 30 s buckets, a
/// window of 60 buckets (30 min), a forecast 10 buckets (5 min) ahead.
#[derive(Clone, Debug, PartialEq)]
pub struct PredictorConfig {
    /// Weight of the newest sample in the smoothed value (`0 < w <= 1`; 1 is no smoothing).
    pub ema_weight: f64,
    /// Samples are averaged into buckets of this length; each bucket is one model point.
    pub bucket: Duration,
    /// Buckets in the sliding window over which trend and anomaly are computed.
    pub window_buckets: usize,
    /// How many buckets ahead the forecast looks.
    pub horizon_buckets: usize,
    /// Below this many buckets the forecast is a fallback (the fast EMA) with low confidence,
    /// and no anomaly is flagged.
    pub min_points: usize,
    /// A value whose robust z-score (median and MAD over the window) exceeds this in absolute
    /// value is flagged as an anomaly.
    pub anomaly_threshold: f64,
    /// The length of the seasonal pattern the forecaster looks for (a day: load follows the
    /// clock), or `None` to disable the seasonal model. Must be at least two buckets.
    pub season: Option<Duration>,
    /// How many past seasons the seasonal model averages. The predictor keeps
    /// `season / bucket * season_cycles` bucket values per resource (7 days of 30 s buckets is
    /// about 160 KiB per resource).
    pub season_cycles: usize,
    /// The recent forecast MAE (in utilization, 0..1) at which confidence reaches zero.
    pub confidence_scale: f64,
    /// The regressions' memory, in buckets (see [`ForecastConfig::fit_memory`]).
    pub fit_memory: usize,
    /// Refit the regressions every this many buckets.
    pub refit_every: usize,
}

impl Default for PredictorConfig {
    fn default() -> Self {
        let series = ForecastConfig::default();
        PredictorConfig {
            ema_weight: 0.7,
            bucket: Duration::from_secs(30),
            window_buckets: 60,
            horizon_buckets: 10,
            min_points: 10,
            anomaly_threshold: 3.5,
            season: Some(Duration::from_secs(86_400)),
            season_cycles: series.season_cycles,
            confidence_scale: series.confidence_scale,
            fit_memory: series.fit_memory,
            refit_every: series.refit_every,
        }
    }
}

impl PredictorConfig {
    /// Every problem with these settings, each naming its field; empty when they are valid.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if !(self.ema_weight > 0.0 && self.ema_weight <= 1.0) {
            problems.push(format!(
                "ema_weight must be in (0, 1], got {}",
                self.ema_weight
            ));
        }
        if self.bucket.as_millis() == 0 {
            problems.push("bucket must be at least 1 ms".to_owned());
        }
        if self.window_buckets < 2 {
            problems.push(format!(
                "window_buckets must be at least 2, got {}",
                self.window_buckets
            ));
        }
        if self.horizon_buckets == 0 {
            problems.push("horizon_buckets must be at least 1".to_owned());
        }
        if self.min_points == 0 {
            problems.push("min_points must be at least 1".to_owned());
        }
        if !(self.anomaly_threshold.is_finite() && self.anomaly_threshold > 0.0) {
            problems.push(format!(
                "anomaly_threshold must be a positive number, got {}",
                self.anomaly_threshold
            ));
        }
        if let Some(season) = self.season
            && (season.is_zero() || season < self.bucket.saturating_mul(2))
        {
            problems.push(format!(
                "season must be at least two buckets ({:?}), got {season:?}",
                self.bucket.saturating_mul(2)
            ));
        }
        if self.season.is_some() && self.season_cycles == 0 {
            problems.push("season_cycles must be at least 1".to_owned());
        }
        if !(self.confidence_scale.is_finite() && self.confidence_scale > 0.0) {
            problems.push(format!(
                "confidence_scale must be a positive number, got {}",
                self.confidence_scale
            ));
        }
        if self.fit_memory < 12 {
            problems.push(format!(
                "fit_memory must be at least 12 buckets, got {}",
                self.fit_memory
            ));
        }
        if self.refit_every == 0 {
            problems.push("refit_every must be at least 1".to_owned());
        }
        problems
    }

    /// The single-series settings these imply, in buckets.
    pub fn forecast_config(&self) -> ForecastConfig {
        let bucket_ms = self.bucket.as_millis().max(1);
        let season = self
            .season
            .map(|s| usize::try_from(s.as_millis() / bucket_ms).unwrap_or(usize::MAX))
            .filter(|steps| *steps >= 2);
        ForecastConfig {
            horizon: self.horizon_buckets.max(1),
            window: self.window_buckets.max(2),
            min_points: self.min_points.max(1),
            fit_memory: self.fit_memory.max(12),
            refit_every: self.refit_every.max(1),
            season,
            season_cycles: self.season_cycles.max(1),
            confidence_scale: if self.confidence_scale > 0.0 && self.confidence_scale.is_finite() {
                self.confidence_scale
            } else {
                0.25
            },
            ..ForecastConfig::default()
        }
    }
}

/// Statistics of the closed buckets in the window, recomputed when a bucket closes.
#[derive(Clone, Debug, Default)]
struct WindowStats {
    n: usize,
    sum: f64,
    min: f64,
    max: f64,
    slope_per_second: f64,
    median: f64,
    /// The robust spread: 1.4826 * MAD, or a fallback when the MAD is zero.
    spread: f64,
}

/// One resource's state.
#[derive(Clone, Debug)]
struct Track {
    smoothed: f64,
    /// The open bucket: its index (time / bucket), sum and count.
    bucket_index: u64,
    bucket_sum: f64,
    bucket_count: u32,
    /// Closed buckets in the window: (bucket index, mean), oldest first.
    window: VecDeque<(u64, f64)>,
    stats: WindowStats,
    series: SeriesPredictor,
    forecast: Option<PointForecast>,
    model_label: String,
    /// The values of `window`, kept sorted so that the median and MAD cost `O(window)`.
    sorted: Vec<f64>,
    /// When the latest sample was taken, in milliseconds.
    last_sample_ms: u64,
}

/// Forecasts every measured resource from the samples it is fed. See the crate docs.
///
/// Time only comes in through `now`: samples may arrive late, out of order, duplicated or after
/// long gaps. A sample in the open bucket or slightly before it is added to the open bucket; a
/// later one closes it; one more than a window before it means the clock was reset, and that
/// resource starts over. Non-finite values are ignored; finite ones are clamped to `0..=1`.
#[derive(Clone, Debug)]
pub struct Predictor {
    config: PredictorConfig,
    series_config: ForecastConfig,
    bucket_ms: u64,
    tracks: [Option<Box<Track>>; Resource::ALL.len()],
}

impl Predictor {
    /// A predictor with no history. Out-of-range settings (see [`PredictorConfig::problems`])
    /// are replaced by the nearest usable value rather than panicking.
    pub fn new(mut config: PredictorConfig) -> Self {
        if !(config.ema_weight > 0.0 && config.ema_weight <= 1.0) {
            config.ema_weight = 0.7;
        }
        if !(config.anomaly_threshold.is_finite() && config.anomaly_threshold > 0.0) {
            config.anomaly_threshold = 3.5;
        }
        config.window_buckets = config.window_buckets.max(2);
        config.horizon_buckets = config.horizon_buckets.max(1);
        config.min_points = config.min_points.max(1);
        let bucket_ms = u64::try_from(config.bucket.as_millis())
            .unwrap_or(u64::MAX)
            .max(1);
        config.bucket = Duration::from_millis(bucket_ms);
        Predictor {
            series_config: config.forecast_config(),
            config,
            bucket_ms,
            tracks: Default::default(),
        }
    }

    /// The settings in use.
    pub fn config(&self) -> &PredictorConfig {
        &self.config
    }

    /// One step: feed the utilizations measured at `now` (absent resources are simply not in
    /// the slice) and get the assessment of each of them. A resource whose value is not finite
    /// is left out of the assessment and its state is untouched.
    pub fn observe(&mut self, now: Timestamp, values: &[(Resource, f64)]) -> Assessment {
        let mut resources = Vec::with_capacity(values.len());
        for &(resource, value) in values {
            if let Some(assessment) = self.observe_one(now, resource, value) {
                resources.push(assessment);
            }
        }
        Assessment { at: now, resources }
    }

    /// Convenience: observe every resource the sample measured, with `now = sample.at`.
    pub fn handle_sample(&mut self, sample: &Sample) -> Assessment {
        let mut values = [(Resource::Memory, 0.0); Resource::ALL.len()];
        let mut n = 0;
        for resource in Resource::ALL {
            if let Some(value) = sample.utilization(resource) {
                values[n] = (resource, value);
                n += 1;
            }
        }
        self.observe(sample.at, &values[..n])
    }

    fn observe_one(
        &mut self,
        now: Timestamp,
        resource: Resource,
        value: f64,
    ) -> Option<ResourceAssessment> {
        if !value.is_finite() {
            return None;
        }
        let value = value.clamp(0.0, 1.0);
        let index = now.as_millis() / self.bucket_ms;
        let slot = &mut self.tracks[resource as usize];
        let reset = match slot {
            Some(track) => {
                index.saturating_add(self.config.window_buckets as u64) < track.bucket_index
            }
            None => true,
        };
        if reset {
            *slot = Some(Box::new(Track {
                smoothed: value,
                bucket_index: index,
                bucket_sum: 0.0,
                bucket_count: 0,
                window: VecDeque::with_capacity(self.config.window_buckets + 1),
                stats: WindowStats::default(),
                series: SeriesPredictor::new(self.series_config.clone()),
                forecast: None,
                model_label: String::new(),
                sorted: Vec::with_capacity(self.config.window_buckets + 1),
                last_sample_ms: now.as_millis(),
            }));
        }
        let track = slot.as_mut()?;
        // Samples a bucket or more apart (a trace read every 5 minutes, a daemon sampling no
        // faster than the bucket) fill a bucket each: it is closed at once, so that the forecast
        // looks its horizon ahead of this sample rather than of the one before. Denser samples
        // close a bucket when the next one begins.
        let sparse =
            !reset && now.as_millis().saturating_sub(track.last_sample_ms) >= self.bucket_ms;
        track.last_sample_ms = track.last_sample_ms.max(now.as_millis());
        if index > track.bucket_index {
            track.close_bucket(&self.config, self.bucket_ms);
            track.bucket_index = index;
        }
        track.bucket_sum += value;
        track.bucket_count += 1;
        if !reset {
            track.smoothed += self.config.ema_weight * (value - track.smoothed);
        }
        if sparse && index == track.bucket_index {
            track.close_bucket(&self.config, self.bucket_ms);
        }
        Some(track.assess(&self.config, resource, value))
    }
}

impl Track {
    /// Closes the open bucket: it joins the window, the window's statistics are recomputed and
    /// the series predictor makes its next forecast.
    fn close_bucket(&mut self, config: &PredictorConfig, bucket_ms: u64) {
        if self.bucket_count == 0 {
            return;
        }
        let mean = (self.bucket_sum / f64::from(self.bucket_count)).clamp(0.0, 1.0);
        self.bucket_sum = 0.0;
        self.bucket_count = 0;
        // A late sample in a bucket already closed at once: the bucket stands as it was.
        // (The window's newest bucket is the latest closed: closing never removes it.)
        if self
            .window
            .back()
            .is_some_and(|(i, _)| *i == self.bucket_index)
        {
            return;
        }
        self.window.push_back((self.bucket_index, mean));
        let at = self.sorted.partition_point(|v| v.total_cmp(&mean).is_lt());
        self.sorted.insert(at, mean);
        // Buckets beyond the window's length, or that fell out of its time span after a gap,
        // no longer describe it.
        let oldest = self
            .bucket_index
            .saturating_sub(config.window_buckets as u64 - 1);
        while self.window.len() > config.window_buckets
            || self.window.front().is_some_and(|(i, _)| *i < oldest)
        {
            if let Some((_, gone)) = self.window.pop_front() {
                let at = self.sorted.partition_point(|v| v.total_cmp(&gone).is_lt());
                if at < self.sorted.len() {
                    self.sorted.remove(at);
                }
            }
        }
        self.recompute_stats(bucket_ms);
        if let Some(forecast) = self.series.push_at(self.bucket_index, mean) {
            // The label only changes when the blended models do; formatting it is skipped
            // otherwise.
            let same_models = self.forecast.as_ref().is_some_and(|old| {
                old.fallback == forecast.fallback
                    && old.models.len() == forecast.models.len()
                    && old
                        .models
                        .iter()
                        .zip(&forecast.models)
                        .all(|(a, b)| a.0 == b.0)
            });
            if !same_models || self.model_label.is_empty() {
                self.model_label = forecast.model_label();
            }
            self.forecast = Some(forecast);
        }
    }

    fn recompute_stats(&mut self, bucket_ms: u64) {
        let n = self.window.len();
        let mut stats = WindowStats {
            n,
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
            ..WindowStats::default()
        };
        if n == 0 {
            self.stats = WindowStats::default();
            return;
        }
        // Least-squares slope of value over time, times relative to the newest bucket so that
        // large timestamps lose no precision.
        let newest = self.bucket_index;
        let seconds_per_bucket = bucket_ms as f64 / 1000.0;
        let (mut st, mut stt, mut sty) = (0.0, 0.0, 0.0);
        for &(index, value) in &self.window {
            stats.sum += value;
            stats.min = stats.min.min(value);
            stats.max = stats.max.max(value);
            let t = -((newest - index) as f64) * seconds_per_bucket;
            st += t;
            stt += t * t;
            sty += t * value;
        }
        let count = n as f64;
        let mean = stats.sum / count;
        let denominator = stt - st * st / count;
        if n >= 2 && denominator > 0.0 {
            stats.slope_per_second = (sty - st * mean) / denominator;
        }
        stats.median = sorted_median(&self.sorted);
        let mean_deviation = self
            .sorted
            .iter()
            .map(|v| (v - stats.median).abs())
            .sum::<f64>()
            / count;
        let mad = median_deviation(&self.sorted, stats.median);
        // 1.4826 * MAD estimates a standard deviation; where more than half of the window is
        // identical the MAD is zero, and the mean absolute deviation (scaled likewise) stands in.
        stats.spread = if mad > 0.0 {
            1.4826 * mad
        } else {
            1.2533 * mean_deviation
        };
        self.stats = stats;
    }

    fn assess(
        &self,
        config: &PredictorConfig,
        resource: Resource,
        value: f64,
    ) -> ResourceAssessment {
        let open_mean = self.bucket_sum / f64::from(self.bucket_count.max(1));
        let stats = &self.stats;
        let trend = if self.bucket_count == 0 && stats.n > 0 {
            // The open bucket was closed at once (sparse samples): the window is the trend.
            TrendStats {
                slope_per_second: stats.slope_per_second,
                min: stats.min,
                max: stats.max,
                mean: stats.sum / stats.n as f64,
            }
        } else if stats.n == 0 {
            TrendStats {
                slope_per_second: 0.0,
                min: open_mean,
                max: open_mean,
                mean: open_mean,
            }
        } else {
            TrendStats {
                slope_per_second: stats.slope_per_second,
                min: stats.min.min(open_mean),
                max: stats.max.max(open_mean),
                mean: (stats.sum + open_mean) / (stats.n + 1) as f64,
            }
        };
        let anomaly = if stats.n < 2 {
            Anomaly::default()
        } else {
            // A window with no spread at all makes any change infinitely surprising; a floor of
            // a thousandth of the range keeps the score finite and meaningful.
            let score = ((value - stats.median) / stats.spread.max(1e-3)).clamp(-1e6, 1e6);
            Anomaly {
                flagged: stats.n >= config.min_points && score.abs() > config.anomaly_threshold,
                score,
            }
        };
        let horizon = config
            .bucket
            .saturating_mul(u32::try_from(config.horizon_buckets).unwrap_or(u32::MAX));
        let forecast = match &self.forecast {
            Some(f) => Forecast {
                value: f.value.clamp(0.0, 1.0),
                horizon,
                confidence: f.confidence.clamp(0.0, 1.0),
                model: self.model_label.clone(),
                error: f.recent_mae.filter(|e| e.is_finite()).map(|e| e.max(0.0)),
            },
            // No bucket has closed yet: the smoothed value, with no measured skill at all.
            None => Forecast {
                value: self.smoothed,
                horizon,
                confidence: 0.0,
                model: "fallback(ema0.7)".to_owned(),
                error: None,
            },
        };
        ResourceAssessment {
            resource,
            value,
            smoothed: self.smoothed,
            forecast: Some(forecast),
            trend,
            anomaly,
        }
    }
}

/// The median of sorted `values`; 0 for none.
fn sorted_median(sorted: &[f64]) -> f64 {
    let n = sorted.len();
    match n {
        0 => 0.0,
        _ if n % 2 == 1 => sorted[n / 2],
        _ => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}

/// The median absolute deviation of sorted `values` from `center`, in `O(n)`: the deviations
/// below and above the center form two ascending runs, merged just far enough to find the
/// middle one(s).
fn median_deviation(sorted: &[f64], center: f64) -> f64 {
    let n = sorted.len();
    if n == 0 {
        return 0.0;
    }
    let split = sorted.partition_point(|v| *v < center);
    // Below: indices split-1, split-2, ... (deviations ascending); above: split, split+1, ...
    let (mut below, mut above) = (split, split);
    let mut next = || -> f64 {
        let down = below.checked_sub(1).map(|i| center - sorted[i]);
        let up = sorted.get(above).map(|v| v - center);
        match (down, up) {
            (Some(d), Some(u)) if d <= u => {
                below -= 1;
                d
            }
            (_, Some(u)) => {
                above += 1;
                u
            }
            (Some(d), None) => {
                below -= 1;
                d
            }
            (None, None) => 0.0,
        }
    };
    let mut previous = 0.0;
    for _ in 0..n / 2 {
        previous = next();
    }
    let middle = next();
    if n % 2 == 1 {
        middle
    } else {
        (previous + middle) / 2.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: u64) -> Timestamp {
        Timestamp::from_secs(seconds)
    }

    #[test]
    fn default_config_is_valid_and_bad_values_are_all_named() {
        assert_eq!(PredictorConfig::default().problems(), Vec::<String>::new());
        let bad = PredictorConfig {
            ema_weight: 0.0,
            bucket: Duration::ZERO,
            window_buckets: 1,
            horizon_buckets: 0,
            min_points: 0,
            anomaly_threshold: f64::NAN,
            season: Some(Duration::ZERO),
            season_cycles: 0,
            confidence_scale: -1.0,
            fit_memory: 0,
            refit_every: 0,
        };
        let problems = bad.problems();
        for field in [
            "ema_weight",
            "bucket",
            "window_buckets",
            "horizon_buckets",
            "min_points",
            "anomaly_threshold",
            "season must",
            "season_cycles",
            "confidence_scale",
            "fit_memory",
            "refit_every",
        ] {
            assert!(
                problems.iter().any(|p| p.starts_with(field)),
                "{field} not named in {problems:?}"
            );
        }
        // Even so, a predictor made from it works.
        let mut predictor = Predictor::new(bad);
        let a = predictor.observe(at(1), &[(Resource::Cpu, 0.5)]);
        assert_eq!(a.resources.len(), 1);
    }

    #[test]
    fn samples_a_bucket_apart_are_forecast_a_horizon_past_themselves() {
        // One reading every 5 minutes (ten 30 s buckets), a steady ramp of 0.002 a reading: each
        // reading fills its bucket alone, which is closed at once, so the forecast looks 10
        // buckets (the next reading) past the reading just taken, not past the one before.
        let mut predictor = Predictor::new(PredictorConfig::default());
        let mut last = None;
        for k in 0..200_u64 {
            let value = 0.1 + 0.002 * k as f64;
            last = Some((
                value,
                predictor.observe(at(k * 300), &[(Resource::Cpu, value)]),
            ));
        }
        let (value, a) = last.unwrap();
        let cpu = a.get(Resource::Cpu).unwrap();
        let f = cpu.forecast.as_ref().unwrap();
        assert!(
            (f.value - (value + 0.002)).abs() < 2e-4,
            "{f:?} after {value}"
        );
        // Its recent error is measured, and under persistence's miss of 0.002 a reading.
        assert!(f.error.is_some_and(|e| e < 0.002), "{f:?}");
        // The window (60 buckets: the last 6 readings) holds the readings themselves; the open
        // bucket, empty once closed, does not count as a zero.
        assert!(
            (cpu.trend.min - (value - 0.002 * 5.0)).abs() < 1e-9,
            "{:?}",
            cpu.trend
        );
        assert!((cpu.trend.max - value).abs() < 1e-9, "{:?}", cpu.trend);
    }

    #[test]
    fn smoothing_is_an_ema_of_every_sample() {
        let mut predictor = Predictor::new(PredictorConfig::default());
        predictor.observe(at(0), &[(Resource::Memory, 0.5)]);
        let a = predictor.observe(at(1), &[(Resource::Memory, 1.0)]);
        let m = a.get(Resource::Memory).unwrap();
        assert!((m.smoothed - 0.85).abs() < 1e-12);
        assert_eq!(m.value, 1.0);
        assert!(a.get(Resource::Cpu).is_none());
    }

    #[test]
    fn early_forecast_is_a_low_confidence_fallback() {
        let mut predictor = Predictor::new(PredictorConfig::default());
        let a = predictor.observe(at(0), &[(Resource::Cpu, 0.4)]);
        let f = a.resources[0].forecast.clone().unwrap();
        assert_eq!(f.confidence, 0.0);
        assert_eq!(f.model, "fallback(ema0.7)");
        assert_eq!(f.horizon, Duration::from_secs(300));
    }

    #[test]
    fn rising_load_has_a_positive_slope_and_a_confident_forecast() {
        let mut predictor = Predictor::new(PredictorConfig::default());
        let mut last = None;
        // One sample a second for two hours, rising from 0.2 by 0.1 per hour.
        for second in 0..7200 {
            let value = 0.2 + 0.1 * second as f64 / 3600.0;
            last = Some(predictor.observe(at(second), &[(Resource::Cpu, value)]));
        }
        let a = last.unwrap();
        let cpu = a.get(Resource::Cpu).unwrap();
        let slope = cpu.trend.slope_per_second;
        assert!((slope - 0.1 / 3600.0).abs() < 1e-6, "slope {slope}");
        let f = cpu.forecast.clone().unwrap();
        assert!(f.confidence > 0.9, "{f:?}");
        // Five minutes ahead of the last closed bucket (~15 s ago) the line is near 0.408.
        assert!((f.value - 0.408).abs() < 0.005, "{f:?}");
        assert!(!cpu.anomaly.flagged);
    }

    #[test]
    fn a_spike_is_flagged_as_an_anomaly() {
        let mut predictor = Predictor::new(PredictorConfig::default());
        for second in 0..1800 {
            let noise = if second % 2 == 0 { 0.01 } else { -0.01 };
            predictor.observe(at(second), &[(Resource::Memory, 0.5 + noise)]);
        }
        let a = predictor.observe(at(1800), &[(Resource::Memory, 0.9)]);
        let memory = a.get(Resource::Memory).unwrap();
        assert!(memory.anomaly.flagged, "{:?}", memory.anomaly);
        assert!(memory.anomaly.score > 3.5);
    }

    #[test]
    fn non_finite_values_are_ignored() {
        let mut predictor = Predictor::new(PredictorConfig::default());
        predictor.observe(at(0), &[(Resource::Cpu, 0.5)]);
        let a = predictor.observe(at(1), &[(Resource::Cpu, f64::NAN), (Resource::Gpu, 0.1)]);
        assert!(a.get(Resource::Cpu).is_none());
        let a = predictor.observe(at(2), &[(Resource::Cpu, 0.5)]);
        assert_eq!(a.get(Resource::Cpu).unwrap().smoothed, 0.5);
    }

    #[test]
    fn clock_reset_starts_the_resource_over() {
        let mut predictor = Predictor::new(PredictorConfig::default());
        for second in 0..3600 {
            predictor.observe(at(100_000 + second), &[(Resource::Cpu, 0.9)]);
        }
        let a = predictor.observe(at(5), &[(Resource::Cpu, 0.1)]);
        let cpu = a.get(Resource::Cpu).unwrap();
        assert_eq!(cpu.smoothed, 0.1);
        assert_eq!(cpu.forecast.as_ref().unwrap().confidence, 0.0);
    }

    #[test]
    fn median_and_mad_of_even_and_odd_counts() {
        assert_eq!(sorted_median(&[1.0, 2.0, 3.0]), 2.0);
        assert_eq!(sorted_median(&[1.0, 2.0, 3.0, 4.0]), 2.5);
        assert_eq!(sorted_median(&[]), 0.0);
        // Deviations from 2: 1, 0, 1, 7 -> sorted 0, 1, 1, 7 -> 1.
        assert_eq!(median_deviation(&[1.0, 2.0, 3.0, 9.0], 2.0), 1.0);
        // Deviations from 3: 2, 1, 0, 1, 6 -> 1.
        assert_eq!(median_deviation(&[1.0, 2.0, 3.0, 4.0, 9.0], 3.0), 1.0);
        assert_eq!(median_deviation(&[5.0, 5.0, 5.0], 5.0), 0.0);
        assert_eq!(median_deviation(&[], 0.0), 0.0);
    }

    #[test]
    fn mad_matches_a_sort_on_many_windows() {
        let mut state: u64 = 7;
        for n in 1..40 {
            let mut values: Vec<f64> = (0..n)
                .map(|_| {
                    state = state
                        .wrapping_mul(6_364_136_223_846_793_005)
                        .wrapping_add(1_442_695_040_888_963_407);
                    ((state >> 40) % 7) as f64
                })
                .collect();
            values.sort_by(f64::total_cmp);
            let center = sorted_median(&values);
            let mut deviations: Vec<f64> = values.iter().map(|v| (v - center).abs()).collect();
            deviations.sort_by(f64::total_cmp);
            assert_eq!(
                median_deviation(&values, center),
                sorted_median(&deviations),
                "{values:?}"
            );
        }
    }
}
