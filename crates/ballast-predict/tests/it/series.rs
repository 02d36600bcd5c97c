//! Behaviour of the single-series forecaster: fallback, model choice, gaps, confidence.

use ballast_predict::{ForecastConfig, Model, PointForecast, SeriesPredictor, evaluate};

/// Deterministic noise uniform in `0..1` (a 64-bit LCG), no model can predict it.
fn noise(n: usize) -> Vec<f64> {
    let mut state: u64 = 0x2545_f491_4f6c_dd1d;
    (0..n)
        .map(|_| {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (state >> 11) as f64 / (1_u64 << 53) as f64
        })
        .collect()
}

#[test]
fn fallback_until_min_points_then_a_blend() {
    let mut predictor = SeriesPredictor::new(ForecastConfig::default());
    for i in 0..10 {
        let f = predictor.push(0.5).expect("accepted");
        assert!(f.fallback, "step {i}");
        assert!(f.confidence <= 0.25);
        assert_eq!(f.model_label(), "fallback(ema0.7)");
    }
    let mut last = None;
    for _ in 0..50 {
        last = predictor.push(0.5);
    }
    let f = last.expect("accepted");
    assert!(!f.fallback);
    assert_eq!(f.value, 0.5);
    // A constant series is forecast exactly, so confidence only waits for the warm-up.
    assert!(f.confidence > 0.75, "{f:?}");
}

/// The forecast after the last of `values`, which must not be the fallback.
fn last_forecast(values: &[f64], config: ForecastConfig) -> PointForecast {
    let mut predictor = SeriesPredictor::new(config);
    let mut last = None;
    for &v in values {
        last = predictor.push(v);
    }
    let f = last.expect("accepted");
    assert!(!f.fallback, "{f:?}");
    f
}

/// The models blended in the forecast after the last of `values`, best first.
fn chosen(values: &[f64], config: ForecastConfig) -> Vec<Model> {
    let f = last_forecast(values, config);
    f.models.iter().map(|(m, _)| *m).collect()
}

#[test]
fn a_noisy_level_prefers_smoothing_over_persistence() {
    // Noise around 0.5: the last value is a poor guess, any long average a good one.
    let values: Vec<f64> = noise(600).iter().map(|n| 0.4 + 0.2 * n).collect();
    let evaluation = evaluate(&values, &ForecastConfig::default());
    assert!(
        evaluation.ratio.expect("persistence is not exact") < 0.8,
        "{evaluation:?}"
    );
    let f = last_forecast(&values, ForecastConfig::default());
    assert!((f.value - 0.5).abs() < 0.05, "{f:?}");
    // Only models that average over many values (or learn to) are blended; the ones that follow
    // the last few values chase the noise.
    let averaging = [
        Model::EmaSlow,
        Model::EmaSlowest,
        Model::MedianLong,
        Model::WindowMean,
        Model::LagRegression,
        Model::DeltaRegression,
    ];
    assert!(f.models.iter().all(|(m, _)| averaging.contains(m)), "{f:?}");
}

#[test]
fn a_steady_ramp_is_followed_by_the_trend_models() {
    let values: Vec<f64> = (0..600).map(|i| f64::from(i) * 0.001).collect();
    let evaluation = evaluate(&values, &ForecastConfig::default());
    assert!(
        evaluation.ratio.expect("persistence is not exact") < 0.2,
        "{evaluation:?}"
    );
    // Every model that forecasts a level lags a ramp by at least the horizon's climb; the
    // regressions learn the climb exactly and the damped trend follows it.
    let models = chosen(&values, ForecastConfig::default());
    assert!(
        matches!(models[0], Model::DeltaRegression | Model::LagRegression),
        "{models:?}"
    );
    let trend = [
        Model::DeltaRegression,
        Model::LagRegression,
        Model::DampedTrend,
    ];
    assert!(models.iter().all(|m| trend.contains(m)), "{models:?}");
}

#[test]
fn a_repeating_day_is_followed_by_the_seasonal_model() {
    // Thirty "days" of the same irregular 24-step profile: only a model that looks one season
    // back knows what comes next.
    let day = noise(24);
    let values: Vec<f64> = (0..24 * 30).map(|i| day[i % 24]).collect();
    let config = ForecastConfig {
        season: Some(24),
        ..ForecastConfig::default()
    };
    let evaluation = evaluate(&values, &config);
    assert!(
        evaluation.ratio.expect("persistence is not exact") < 0.1,
        "{evaluation:?}"
    );
    let f = last_forecast(&values, config);
    let (best, weight) = f.models[0];
    assert_eq!(best, Model::Seasonal, "{f:?}");
    assert!(weight > 0.9, "{f:?}");
}

#[test]
fn isolated_spikes_are_ignored_by_the_medians() {
    // A flat 0.2 with a one-step spike to 0.9 at one step in twenty, at random.
    let values: Vec<f64> = noise(800)
        .iter()
        .map(|n| if *n < 0.05 { 0.9 } else { 0.2 })
        .collect();
    let models = chosen(&values, ForecastConfig::default());
    assert_eq!(
        models[..2],
        [Model::Median, Model::MedianLong],
        "{models:?}"
    );
}

#[test]
fn level_shifts_are_followed_by_persistence() {
    // A new flat level every 40 steps: the last value is right but for the steps after a shift,
    // and every average is still half-way between the levels.
    let levels = noise(20);
    let values: Vec<f64> = (0..800).map(|i| levels[i / 40]).collect();
    let models = chosen(&values, ForecastConfig::default());
    assert_eq!(models[0], Model::Persistence, "{models:?}");
}

#[test]
fn confidence_falls_when_the_forecasts_miss() {
    let mut predictor = SeriesPredictor::new(ForecastConfig::default());
    let mut calm = None;
    for _ in 0..300 {
        calm = predictor.push(0.3);
    }
    let mut wild = None;
    for v in noise(300) {
        wild = predictor.push(v);
    }
    let calm = calm.expect("accepted").confidence;
    let wild = wild.expect("accepted").confidence;
    assert!(calm > 0.9 && wild < calm - 0.5, "calm {calm}, wild {wild}");
}

#[test]
fn gaps_drop_the_forecasts_whose_target_is_missing() {
    let config = ForecastConfig::default();
    let horizon = config.horizon as u64;
    let mut predictor = SeriesPredictor::new(config);
    // Values that differ from step to step, so that a forecast scored against the wrong step
    // changes the errors.
    for (step, v) in (0_u64..).zip(noise(100)) {
        predictor.push_at(step, v).expect("accepted");
    }
    let before = predictor.model_errors();
    assert!(before.iter().all(Option::is_some), "{before:?}");

    // A gap of a thousand steps: the forecasts made for steps 100 to 109 lost their targets and
    // are dropped, not scored against the value that resumes the series.
    let resumed = 1_100;
    let f = predictor.push_at(resumed, 0.9).expect("accepted");
    assert!(f.value.is_finite());
    assert_eq!(predictor.model_errors(), before);
    assert!(
        predictor.push_at(1_050, 0.1).is_none(),
        "a step back is ignored"
    );
    assert_eq!(predictor.model_errors(), before);

    // No forecast targets the steps before `resumed + horizon`; the one made at `resumed` is
    // scored at its target and misses by 0.8 (persistence, for one).
    for step in resumed + 1..resumed + horizon {
        predictor.push_at(step, 0.1).expect("accepted");
        assert_eq!(predictor.model_errors(), before, "step {step}");
    }
    predictor.push_at(resumed + horizon, 0.1).expect("accepted");
    let after = predictor.model_errors();
    assert!(
        after[0].expect("scored") > before[0].expect("scored"),
        "{before:?} {after:?}"
    );
    assert_eq!(predictor.len(), 100 + 1 + horizon);
}
