//! Forecasting one series: several candidate models, scored online by their own recent error and
//! blended by it.
//!
//! A [`SeriesPredictor`] is fed one value per step (a bucket in the daemon, a row of a trace in
//! `ballast forecast evaluate`) and forecasts the value `horizon` steps ahead. It keeps a dozen
//! cheap candidate models (persistence, four exponential moving averages, a short and a long
//! running median, the window mean, a damped trend, two direct `horizon`-ahead regressions on
//! lagged values solved with smartcore's SVD, and an optional seasonal model). Every forecast
//! each model makes is remembered until its target step arrives, then scored; each model carries
//! an exponentially weighted mean absolute error (MAE) of those scores. The published forecast
//! blends the few models with the lowest recent error, weighted by inverse squared error, and its
//! confidence comes from the blend's own measured recent error, never from a constant.
//!
//! Why a blend: on the real traces in `../shared/traces` a straight line extrapolated over the
//! window is worse than "next = last", and which simple model wins differs from series to series
//! (medians on spiky EC2 CPU, the seasonal model and regressions on the daily Azure pattern,
//! persistence-like models on smooth cluster averages). Scoring them online on the series itself
//! picks the right one without configuration. The regressions keep exponentially weighted normal
//! equations, updated in `O(features^2)` per step and solved every
//! [`ForecastConfig::refit_every`] steps, so a long memory costs nothing.

use std::collections::VecDeque;

use smartcore::linalg::basic::arrays::Array;
use smartcore::linalg::basic::matrix::DenseMatrix;
use smartcore::linalg::traits::svd::SVDDecomposable;

/// The candidate models. Each forecasts the value `horizon` steps ahead from the history so far.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Model {
    /// The last value ("next = last").
    Persistence,
    /// Exponential moving average with weight 0.7 on the newest value.
    EmaFast,
    /// Exponential moving average with weight 0.3.
    EmaMedium,
    /// Exponential moving average with weight 0.1.
    EmaSlow,
    /// Exponential moving average with weight 0.03.
    EmaSlowest,
    /// The median of the last few values ([`ForecastConfig::median_len`]): robust to isolated
    /// spikes.
    Median,
    /// The median of three times as many values: robust to bursts.
    MedianLong,
    /// The mean of the window.
    WindowMean,
    /// Holt's linear trend with a damped slope, extrapolated to the horizon.
    DampedTrend,
    /// Linear regression (smartcore, SVD) of the value `horizon` ahead on lagged values and
    /// averages, over an exponentially weighted memory of [`ForecastConfig::fit_memory`] rows.
    LagRegression,
    /// Linear regression of the change `horizon` ahead on lagged differences from the last value.
    DeltaRegression,
    /// Last value plus the mean change over the same `horizon` steps one, two, ... seasons earlier
    /// (only with [`ForecastConfig::season`]).
    Seasonal,
}

/// How many candidate models there are.
pub const N_MODELS: usize = 12;

impl Model {
    /// Every model, in a stable order (the index of a model's error in reports).
    pub const ALL: [Model; N_MODELS] = [
        Model::Persistence,
        Model::EmaFast,
        Model::EmaMedium,
        Model::EmaSlow,
        Model::EmaSlowest,
        Model::Median,
        Model::MedianLong,
        Model::WindowMean,
        Model::DampedTrend,
        Model::LagRegression,
        Model::DeltaRegression,
        Model::Seasonal,
    ];

    /// A short stable name, used in [`ballast_core::Forecast::model`].
    pub const fn name(self) -> &'static str {
        match self {
            Model::Persistence => "persistence",
            Model::EmaFast => "ema0.7",
            Model::EmaMedium => "ema0.3",
            Model::EmaSlow => "ema0.1",
            Model::EmaSlowest => "ema0.03",
            Model::Median => "median",
            Model::MedianLong => "median_long",
            Model::WindowMean => "mean",
            Model::DampedTrend => "damped_trend",
            Model::LagRegression => "lag_regression",
            Model::DeltaRegression => "delta_regression",
            Model::Seasonal => "seasonal",
        }
    }
}

/// Settings of a [`SeriesPredictor`], in steps (one step is one value pushed).
#[derive(Clone, Debug, PartialEq)]
pub struct ForecastConfig {
    /// How many steps ahead to forecast.
    pub horizon: usize,
    /// Steps in the window for the window mean.
    pub window: usize,
    /// Below this many values the forecast is a fallback (the fast EMA) with low confidence.
    pub min_points: usize,
    /// The regressions' memory in rows: each row's weight in the fit decays by `1 - 1/fit_memory`
    /// per step, so about this many recent rows (whose targets are known) shape the fit.
    pub fit_memory: usize,
    /// Refit the regressions every this many steps (fitting is the only costly part).
    pub refit_every: usize,
    /// Values in the running median.
    pub median_len: usize,
    /// Half-life, in scored forecasts, of each model's recent error.
    pub error_half_life: f64,
    /// How many of the best models are blended (1 picks the best alone).
    pub blend_top: usize,
    /// The season's length in steps (e.g. one day), enabling the seasonal model; `None`: none.
    pub season: Option<usize>,
    /// How many past seasons the seasonal model averages (history kept: this many seasons).
    pub season_cycles: usize,
    /// The recent MAE at which confidence reaches zero, in the series' units (0.25 for a
    /// utilization: an average miss of a quarter of the range is no better than a guess).
    pub confidence_scale: f64,
}

impl Default for ForecastConfig {
    fn default() -> Self {
        ForecastConfig {
            horizon: 10,
            window: 60,
            min_points: 10,
            fit_memory: 1000,
            refit_every: 64,
            median_len: 9,
            error_half_life: 40.0,
            blend_top: 3,
            season: None,
            season_cycles: 7,
            confidence_scale: 0.25,
        }
    }
}

impl ForecastConfig {
    /// Every problem with these settings, each naming its field; empty when they are usable.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        let mut positive = |name: &str, value: usize| {
            if value == 0 {
                problems.push(format!("{name} must be at least 1"));
            }
        };
        positive("horizon", self.horizon);
        positive("window", self.window);
        positive("min_points", self.min_points);
        positive("refit_every", self.refit_every);
        positive("median_len", self.median_len);
        positive("blend_top", self.blend_top);
        if self.fit_memory < 2 * N_FEATURES {
            problems.push(format!("fit_memory must be at least {}", 2 * N_FEATURES));
        }
        if !(self.error_half_life.is_finite() && self.error_half_life >= 1.0) {
            problems.push("error_half_life must be a number of at least 1".to_owned());
        }
        if !(self.confidence_scale.is_finite() && self.confidence_scale > 0.0) {
            problems.push("confidence_scale must be a positive number".to_owned());
        }
        if self.season == Some(0) {
            problems.push("season must be at least 1 step when set".to_owned());
        }
        problems
    }
}

/// A forecast of one series, `horizon` steps ahead.
#[derive(Clone, Debug, PartialEq)]
pub struct PointForecast {
    /// The forecast value.
    pub value: f64,
    /// How much to trust it, in `0..=1`, from the blend's measured recent error.
    pub confidence: f64,
    /// The models blended, best first, with their weights (summing to 1).
    pub models: Vec<(Model, f64)>,
    /// Whether this is the fallback used before `min_points` values were seen.
    pub fallback: bool,
    /// The blend's recent MAE, once any of its forecasts has been scored.
    pub recent_mae: Option<f64>,
}

impl PointForecast {
    /// The model description for [`ballast_core::Forecast::model`]: `ema0.3` for one model,
    /// `blend(median,ema0.3)` for several, `fallback(ema0.7)` before enough points.
    pub fn model_label(&self) -> String {
        if self.fallback {
            return "fallback(ema0.7)".to_owned();
        }
        match self.models.as_slice() {
            [(only, _)] => only.name().to_owned(),
            models => {
                let names: Vec<&str> = models.iter().map(|(m, _)| m.name()).collect();
                format!("blend({})", names.join(","))
            }
        }
    }
}

/// How many inputs each regression has.
const N_FEATURES: usize = 6;

/// The unknowns of a regression: the coefficients and the intercept.
const N_UNKNOWNS: usize = N_FEATURES + 1;

/// Exponentially weighted normal equations `A w = b` of a least-squares fit with an intercept,
/// updated in `O(features^2)` per row so that a long memory costs nothing to keep.
#[derive(Clone, Debug)]
struct NormalEquations {
    a: [[f64; N_UNKNOWNS]; N_UNKNOWNS],
    b: [f64; N_UNKNOWNS],
    rows: f64,
}

impl NormalEquations {
    fn new() -> Self {
        NormalEquations {
            a: [[0.0; N_UNKNOWNS]; N_UNKNOWNS],
            b: [0.0; N_UNKNOWNS],
            rows: 0.0,
        }
    }

    /// Adds one row, first fading the older ones by `keep`.
    fn add(&mut self, keep: f64, features: &[f64; N_FEATURES], target: f64) {
        let mut x = [1.0; N_UNKNOWNS];
        x[..N_FEATURES].copy_from_slice(features);
        for (i, row) in self.a.iter_mut().enumerate() {
            for (j, cell) in row.iter_mut().enumerate() {
                *cell = keep * *cell + x[i] * x[j];
            }
            self.b[i] = keep * self.b[i] + x[i] * target;
        }
        self.rows = keep * self.rows + 1.0;
        // Values whose squares overflow leave nothing to fit: start over rather than keep
        // infinities around forever.
        if !self.b.iter().all(|v| v.is_finite()) || !self.a.iter().flatten().all(|v| v.is_finite())
        {
            *self = NormalEquations::new();
        }
    }

    /// Solves for the coefficients with smartcore's SVD (a pseudo-inverse, so a constant or
    /// duplicated feature is harmless, where QR would return garbage). A small ridge relative to
    /// each feature's own scale keeps nearly collinear features from fitting noise.
    fn solve(&self) -> Option<Linear> {
        // smartcore's SVD panics when it does not converge, which it cannot on non-finite
        // input; values so large that their squares overflow never reach it.
        let finite = self
            .b
            .iter()
            .chain(self.a.iter().flatten())
            .all(|v| v.is_finite());
        if !finite {
            return None;
        }
        let mut values = Vec::with_capacity(N_UNKNOWNS * N_UNKNOWNS);
        for (i, row) in self.a.iter().enumerate() {
            for (j, cell) in row.iter().enumerate() {
                let ridge = if i == j && i < N_FEATURES {
                    RIDGE * cell
                } else {
                    0.0
                };
                values.push(cell + ridge);
            }
        }
        let a = DenseMatrix::new(N_UNKNOWNS, N_UNKNOWNS, values, false).ok()?;
        let b = DenseMatrix::new(N_UNKNOWNS, 1, self.b.to_vec(), false).ok()?;
        // The SVD's iteration limit is an `assert!` in smartcore, not an error. Finite input
        // does not reach it in practice, but a panic here would take the daemon down with it,
        // so it is contained and counts as a failed fit.
        let w = std::panic::catch_unwind(move || a.svd_solve_mut(b))
            .ok()?
            .ok()?;
        let mut fit = Linear {
            intercept: *w.get((N_FEATURES, 0)),
            coefficients: [0.0; N_FEATURES],
        };
        for (i, c) in fit.coefficients.iter_mut().enumerate() {
            *c = *w.get((i, 0));
        }
        let finite = fit.intercept.is_finite() && fit.coefficients.iter().all(|c| c.is_finite());
        finite.then_some(fit)
    }
}

/// The ridge penalty, relative to each feature's weighted sum of squares.
const RIDGE: f64 = 1e-3;

/// A fitted linear model: `intercept + coefficients . features`.
#[derive(Clone, Copy, Debug, Default)]
struct Linear {
    intercept: f64,
    coefficients: [f64; N_FEATURES],
}

impl Linear {
    fn apply(&self, features: &[f64; N_FEATURES]) -> f64 {
        self.intercept
            + self
                .coefficients
                .iter()
                .zip(features)
                .map(|(c, f)| c * f)
                .sum::<f64>()
    }
}

/// Per-step state the regressions learn from: the features at a step and that step's value.
#[derive(Clone, Copy, Debug)]
struct Row {
    step: u64,
    value: f64,
    levels: [f64; N_FEATURES],
    deltas: [f64; N_FEATURES],
}

/// Forecasts one series `horizon` steps ahead, blending candidate models by their recent error.
///
/// Feed it with [`SeriesPredictor::push`] (one value per step, in order) or
/// [`SeriesPredictor::push_at`] (with a step index, so that missing steps are known). It never
/// panics on any `f64`: non-finite values are ignored and leave the state untouched.
#[derive(Clone, Debug)]
pub struct SeriesPredictor {
    config: ForecastConfig,
    /// Recent values, oldest first.
    history: VecDeque<f64>,
    /// The last `horizon + 1` regression rows, waiting for their target.
    rows: VecDeque<Row>,
    level_equations: NormalEquations,
    delta_equations: NormalEquations,
    emas: [f64; 4],
    /// Holt's level and slope.
    holt: (f64, f64),
    window_sum: f64,
    /// Forecasts waiting for their target: (target step, each model's forecast, the blend's).
    pending: VecDeque<(u64, [f64; N_MODELS], f64)>,
    /// Each model's recent MAE (`None` until scored once).
    errors: [Option<f64>; N_MODELS],
    blend_error: Option<f64>,
    scored: u64,
    level_fit: Option<Linear>,
    delta_fit: Option<Linear>,
    since_fit: usize,
    next_step: u64,
    seen: u64,
    median_scratch: Vec<f64>,
}

impl SeriesPredictor {
    /// A predictor with no history. The config should be valid ([`ForecastConfig::problems`]);
    /// zero lengths are treated as 1.
    pub fn new(mut config: ForecastConfig) -> Self {
        config.horizon = config.horizon.max(1);
        config.window = config.window.max(1);
        config.refit_every = config.refit_every.max(1);
        config.median_len = config.median_len.max(1);
        config.blend_top = config.blend_top.max(1);
        config.fit_memory = config.fit_memory.max(2 * N_FEATURES);
        config.season = config.season.filter(|s| *s > 0);
        SeriesPredictor {
            // A long season grows the history as values arrive rather than all at once.
            history: VecDeque::with_capacity(Self::history_len(&config).min(4096) + 1),
            rows: VecDeque::with_capacity(config.horizon + 2),
            level_equations: NormalEquations::new(),
            delta_equations: NormalEquations::new(),
            emas: [0.0; 4],
            holt: (0.0, 0.0),
            window_sum: 0.0,
            pending: VecDeque::with_capacity(config.horizon + 1),
            errors: [None; N_MODELS],
            blend_error: None,
            scored: 0,
            level_fit: None,
            delta_fit: None,
            since_fit: 0,
            next_step: 0,
            seen: 0,
            median_scratch: Vec::with_capacity(config.median_len.saturating_mul(3)),
            config,
        }
    }

    fn history_len(config: &ForecastConfig) -> usize {
        let season = config
            .season
            .map_or(0, |s| s.saturating_mul(config.season_cycles.max(1)) + 1);
        config
            .window
            .max(config.median_len.saturating_mul(3))
            .max(season)
            .max(3)
    }

    /// The settings in use.
    pub fn config(&self) -> &ForecastConfig {
        &self.config
    }

    /// How many values have been accepted.
    pub fn len(&self) -> u64 {
        self.seen
    }

    /// Whether no value has been accepted yet.
    pub fn is_empty(&self) -> bool {
        self.seen == 0
    }

    /// Each model's recent MAE, in [`Model::ALL`] order (`None` until scored).
    pub fn model_errors(&self) -> [Option<f64>; N_MODELS] {
        self.errors
    }

    /// Accepts the value of the next step and forecasts `horizon` steps ahead of it. A
    /// non-finite value is ignored and gives `None`.
    pub fn push(&mut self, value: f64) -> Option<PointForecast> {
        let step = self.next_step;
        self.push_at(step, value)
    }

    /// Accepts the value of step `step` (steps skipped since the last call are missing values,
    /// not zeros) and forecasts `horizon` steps ahead of it. A non-finite value, or a step not
    /// after the last one, is ignored and gives `None`.
    pub fn push_at(&mut self, step: u64, value: f64) -> Option<PointForecast> {
        if !value.is_finite() || (self.seen > 0 && step < self.next_step) {
            return None;
        }
        self.next_step = step.saturating_add(1);
        self.score(step, value);
        self.update_state(step, value);
        self.seen += 1;
        let forecasts = self.model_forecasts();
        let forecast = self.blend(&forecasts);
        let target = step.saturating_add(self.config.horizon as u64);
        self.pending.push_back((target, forecasts, forecast.value));
        if self.pending.len() > self.config.horizon + 1 {
            self.pending.pop_front();
        }
        Some(forecast)
    }

    /// Scores the forecasts whose target is `step` against `value`; older ones lost their target
    /// to a gap and are dropped.
    fn score(&mut self, step: u64, value: f64) {
        let decay = 1.0 - 0.5_f64.powf(1.0 / self.config.error_half_life);
        while let Some(&(target, forecasts, blend)) = self.pending.front() {
            if target > step {
                break;
            }
            self.pending.pop_front();
            if target < step {
                continue;
            }
            for (error, forecast) in self.errors.iter_mut().zip(forecasts) {
                *error = Some(track_error(*error, (forecast - value).abs(), decay));
            }
            self.blend_error = Some(track_error(self.blend_error, (blend - value).abs(), decay));
            self.scored += 1;
        }
    }

    fn update_state(&mut self, step: u64, value: f64) {
        const ALPHAS: [f64; 4] = [0.7, 0.3, 0.1, 0.03];
        if self.seen == 0 {
            self.emas = [value; 4];
            self.holt = (value, 0.0);
        } else {
            for (ema, alpha) in self.emas.iter_mut().zip(ALPHAS) {
                *ema += alpha * (value - *ema);
            }
            let (level, slope) = self.holt;
            let (alpha, beta, phi) = (0.5, 0.1, 0.9);
            let new_level = alpha * value + (1.0 - alpha) * (level + phi * slope);
            let new_slope = beta * (new_level - level) + (1.0 - beta) * phi * slope;
            self.holt = (new_level, new_slope);
        }
        self.history.push_back(value);
        self.window_sum += value;
        let window = self.config.window;
        if self.history.len() > window {
            self.window_sum -= self.history[self.history.len() - 1 - window];
        }
        if self.history.len() > Self::history_len(&self.config) {
            self.history.pop_front();
        }
        // Recompute the sum now and then so that rounding errors cannot accumulate.
        if self.seen.is_multiple_of(1024) {
            self.window_sum = self.history.iter().rev().take(window).sum();
        }

        // The row made `horizon` steps ago now has its target: it joins the fits. Rows whose
        // target step fell into a gap are dropped.
        let horizon = self.config.horizon as u64;
        while let Some(row) = self.rows.front().copied() {
            let target = row.step.saturating_add(horizon);
            if target > step {
                break;
            }
            self.rows.pop_front();
            if target == step {
                let keep = 1.0 - 1.0 / self.config.fit_memory as f64;
                self.level_equations.add(keep, &row.levels, value);
                self.delta_equations
                    .add(keep, &row.deltas, value - row.value);
            }
        }
        let row = self.make_row(step, value);
        self.rows.push_back(row);
        self.since_fit += 1;
        if self.since_fit >= self.config.refit_every || self.level_fit.is_none() {
            self.since_fit = 0;
            self.refit();
        }
    }

    fn window_mean(&self) -> f64 {
        let n = self.history.len().min(self.config.window).max(1);
        self.window_sum / n as f64
    }

    fn lag(&self, back: usize) -> f64 {
        let n = self.history.len();
        self.history
            .get(n.saturating_sub(1 + back))
            .copied()
            .unwrap_or(0.0)
    }

    fn make_row(&self, step: u64, value: f64) -> Row {
        let mean = self.window_mean();
        let lag1 = self.lag(1);
        let lag3 = self.lag(3);
        let seasonal = self.seasonal_change();
        Row {
            step,
            value,
            levels: [
                value,
                lag1,
                self.emas[1],
                self.emas[2],
                mean,
                value + seasonal,
            ],
            deltas: [
                lag1 - value,
                lag3 - value,
                self.emas[1] - value,
                self.emas[2] - value,
                mean - value,
                seasonal,
            ],
        }
    }

    /// Solves both regressions once enough rows have their target.
    fn refit(&mut self) {
        if self.level_equations.rows < (2 * N_FEATURES) as f64 {
            return;
        }
        if let Some(fit) = self.level_equations.solve() {
            self.level_fit = Some(fit);
        }
        if let Some(fit) = self.delta_equations.solve() {
            self.delta_fit = Some(fit);
        }
    }

    fn model_forecasts(&mut self) -> [f64; N_MODELS] {
        let last = self.lag(0);
        let h = self.config.horizon;
        let (low, high) = self.plausible_range();
        let clamp = |v: f64| {
            if v.is_finite() {
                v.clamp(low, high)
            } else {
                last
            }
        };
        let row = self.rows.back().copied();
        let regression =
            |fit: Option<Linear>, features: Option<[f64; N_FEATURES]>, base: f64| match (
                fit, features,
            ) {
                (Some(fit), Some(features)) => clamp(base + fit.apply(&features)),
                _ => last,
            };
        let level = regression(self.level_fit, row.map(|r| r.levels), 0.0);
        let delta = regression(self.delta_fit, row.map(|r| r.deltas), last);
        let (holt_level, holt_slope) = self.holt;
        let phi: f64 = 0.9;
        // Sum of phi^1..=phi^h, the damped trend's total slope multiplier.
        let damping = phi * (1.0 - phi.powi(h as i32)) / (1.0 - phi);
        let seasonal = clamp(last + self.seasonal_change());
        let mut forecasts = [
            last,
            self.emas[0],
            self.emas[1],
            self.emas[2],
            self.emas[3],
            self.median(self.config.median_len),
            self.median(self.config.median_len.saturating_mul(3)),
            self.window_mean(),
            clamp(holt_level + damping * holt_slope),
            level,
            delta,
            seasonal,
        ];
        // Sums over extreme values can overflow; such a model falls back to the last value.
        for forecast in &mut forecasts {
            if !forecast.is_finite() {
                *forecast = last;
            }
        }
        forecasts
    }

    /// The mean change from a step to `horizon` steps later, one, two, ... seasons ago (as many
    /// as the history holds, up to `season_cycles`); zero without a season.
    fn seasonal_change(&self) -> f64 {
        let Some(season) = self.config.season else {
            return 0.0;
        };
        let h = self.config.horizon.min(season);
        let mut sum = 0.0;
        let mut count = 0;
        for cycle in 1..=self.config.season_cycles.max(1) {
            let back = season * cycle;
            if back >= self.history.len() {
                break;
            }
            sum += self.lag(back - h) - self.lag(back);
            count += 1;
        }
        if count == 0 { 0.0 } else { sum / count as f64 }
    }

    /// Forecasts are clamped to the window's range widened by half of it, so that a regression
    /// fitted on a quiet stretch cannot throw a forecast far outside anything seen.
    fn plausible_range(&self) -> (f64, f64) {
        let (mut low, mut high) = (f64::INFINITY, f64::NEG_INFINITY);
        for &v in self.history.iter().rev().take(self.config.window) {
            low = low.min(v);
            high = high.max(v);
        }
        let margin = (high - low) * 0.5;
        (low - margin, high + margin)
    }

    fn median(&mut self, len: usize) -> f64 {
        self.median_scratch.clear();
        self.median_scratch
            .extend(self.history.iter().rev().take(len.max(1)).copied());
        let middle = self.median_scratch.len() / 2;
        let (_, median, _) = self
            .median_scratch
            .select_nth_unstable_by(middle, f64::total_cmp);
        *median
    }

    fn blend(&self, forecasts: &[f64; N_MODELS]) -> PointForecast {
        if self.seen < self.config.min_points as u64 || self.errors[0].is_none() {
            return PointForecast {
                value: forecasts[1],
                confidence: self.confidence().min(0.25),
                models: vec![(Model::EmaFast, 1.0)],
                fallback: true,
                recent_mae: self.blend_error,
            };
        }
        // Ranked on the stack: this runs at every step.
        let mut candidates = [(0_usize, 0.0_f64); N_MODELS];
        let mut n = 0;
        for (i, error) in self.errors.iter().enumerate() {
            if Model::ALL[i] == Model::Seasonal && self.config.season.is_none() {
                continue;
            }
            if let Some(error) = error {
                candidates[n] = (i, *error);
                n += 1;
            }
        }
        let ranked = &mut candidates[..n];
        ranked.sort_unstable_by(|a, b| a.1.total_cmp(&b.1).then(a.0.cmp(&b.0)));
        let ranked = &ranked[..n.min(self.config.blend_top)];
        // Inverse squared error weights, written relative to the best model's error so that
        // huge errors cannot overflow; a tiny floor keeps a perfect model from dividing by 0.
        let best = ranked.first().map_or(0.0, |(_, e)| *e);
        let floor = (best * 1e-3).max(1e-12);
        let mut weights = [0.0; N_MODELS];
        for (weight, (_, e)) in weights.iter_mut().zip(ranked) {
            *weight = ((best + floor) / (e + floor)).powi(2);
        }
        let weights = &weights[..ranked.len()];
        let total: f64 = weights.iter().sum();
        let value = ranked
            .iter()
            .zip(weights)
            .map(|((i, _), w)| forecasts[*i] * (w / total))
            .sum();
        PointForecast {
            value,
            confidence: self.confidence(),
            models: ranked
                .iter()
                .zip(weights)
                .map(|((i, _), w)| (Model::ALL[*i], w / total))
                .collect(),
            fallback: false,
            recent_mae: self.blend_error,
        }
    }

    /// `1 - recent MAE / scale`, discounted while few forecasts have been scored.
    fn confidence(&self) -> f64 {
        let Some(error) = self.blend_error else {
            return 0.0;
        };
        let skill = (1.0 - error / self.config.confidence_scale).clamp(0.0, 1.0);
        let scored = self.scored as f64;
        let warmup = scored / (scored + self.config.min_points as f64);
        (skill * warmup).clamp(0.0, 1.0)
    }
}

/// The exponentially weighted mean of absolute errors after one more `miss`. A miss too large
/// to represent counts as the largest finite error, so that one overflow cannot make the mean
/// infinite (or NaN) for ever.
fn track_error(mean: Option<f64>, miss: f64, decay: f64) -> f64 {
    let miss = if miss.is_finite() {
        miss
    } else {
        f64::MAX / 4.0
    };
    match mean {
        Some(mean) => mean + decay * (miss - mean),
        None => miss,
    }
}

/// The accuracy of a walk-forward evaluation.
#[derive(Clone, Debug, PartialEq)]
pub struct Evaluation {
    /// Forecasts scored (values minus the horizon).
    pub n: usize,
    /// The predictor's mean absolute error.
    pub mae: f64,
    /// The persistence forecast's ("next = last") mean absolute error over the same steps.
    pub mae_persistence: f64,
    /// `mae / mae_persistence` (below 1 beats persistence); `None` when persistence is perfect.
    pub ratio: Option<f64>,
    /// Each model's mean absolute error alone, in [`Model::ALL`] order, for diagnosis.
    pub mae_by_model: [f64; N_MODELS],
}

/// Walks forward through `values` (one step each, no look-ahead): at every step the predictor
/// sees the values so far and forecasts `config.horizon` steps ahead; each forecast whose target
/// lies within the series is scored against it, as is persistence. Non-finite values are skipped
/// by the predictor and are not scored.
pub fn evaluate(values: &[f64], config: &ForecastConfig) -> Evaluation {
    let h = config.horizon.max(1);
    let mut predictor = SeriesPredictor::new(config.clone());
    let mut error = 0.0;
    let mut error_persistence = 0.0;
    let mut by_model = [0.0; N_MODELS];
    let mut n = 0;
    for (t, &value) in values.iter().enumerate() {
        let Some(forecast) = predictor.push_at(t as u64, value) else {
            continue;
        };
        let Some(&actual) = values.get(t + h) else {
            continue;
        };
        if !actual.is_finite() {
            continue;
        }
        error += (forecast.value - actual).abs();
        error_persistence += (value - actual).abs();
        if let Some(&(_, forecasts, _)) = predictor.pending.back() {
            for (sum, f) in by_model.iter_mut().zip(forecasts) {
                *sum += (f - actual).abs();
            }
        }
        n += 1;
    }
    let divisor = n.max(1) as f64;
    let mae = error / divisor;
    let mae_persistence = error_persistence / divisor;
    Evaluation {
        n,
        mae,
        mae_persistence,
        ratio: (mae_persistence > 0.0).then(|| mae / mae_persistence),
        mae_by_model: by_model.map(|e| e / divisor),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evaluate_scores_each_forecast_against_the_value_horizon_steps_later() {
        // Below `min_points` every forecast is the fallback, the EMA with weight 0.7, so the
        // figures can be worked out by hand. Horizon 2 over 0, 1, 1, 0, 1 and a NaN:
        //
        //   t  value  EMA (forecast)          target (t + 2)  miss   persistence miss
        //   0  0      0                       1               1      |0 - 1| = 1
        //   1  1      0 + 0.7 (1 - 0) = 0.7   0               0.7    |1 - 0| = 1
        //   2  1      0.7 + 0.7 (0.3) = 0.91  1               0.09   |1 - 1| = 0
        //   3  0      0.273                   NaN: not scored
        //   4  1      0.7819                  beyond the series
        //   5  NaN    skipped by the predictor
        //
        // n = 3, MAE = (1 + 0.7 + 0.09) / 3 = 1.79 / 3, persistence MAE = 2 / 3, ratio 0.895.
        let config = ForecastConfig {
            horizon: 2,
            min_points: 100,
            ..ForecastConfig::default()
        };
        let values = [0.0, 1.0, 1.0, 0.0, 1.0, f64::NAN];
        let evaluation = evaluate(&values, &config);
        assert_eq!(evaluation.n, 3);
        let close = |a: f64, b: f64| (a - b).abs() < 1e-12;
        assert!(close(evaluation.mae, 1.79 / 3.0), "{evaluation:?}");
        assert!(
            close(evaluation.mae_persistence, 2.0 / 3.0),
            "{evaluation:?}"
        );
        assert!(close(evaluation.ratio.expect("persistence misses"), 0.895));
        // Per model: persistence alone is the persistence figure, the fast EMA the fallback's.
        let by_model = evaluation.mae_by_model;
        assert!(close(by_model[0], 2.0 / 3.0), "{by_model:?}");
        assert!(close(by_model[1], 1.79 / 3.0), "{by_model:?}");
    }
}
