//! Behaviour of the single-series forecaster: fallback, model choice, gaps, confidence.

use ballast_predict::{ForecastConfig, Model, SeriesPredictor, evaluate};

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

#[test]
fn a_noisy_level_prefers_smoothing_over_persistence() {
    // Noise around 0.5: the last value is a poor guess, any average a good one.
    let values: Vec<f64> = noise(600).iter().map(|n| 0.4 + 0.2 * n).collect();
    let evaluation = evaluate(&values, &ForecastConfig::default());
    assert!(
        evaluation.ratio.expect("persistence is not exact") < 0.8,
        "{evaluation:?}"
    );
    let mut predictor = SeriesPredictor::new(ForecastConfig::default());
    let mut last = None;
    for v in values {
        last = predictor.push(v);
    }
    let f = last.expect("accepted");
    assert!(
        !f.models.iter().any(|(m, _)| *m == Model::Persistence),
        "{f:?}"
    );
    assert!((f.value - 0.5).abs() < 0.05, "{f:?}");
}

#[test]
fn a_steady_ramp_is_followed_by_a_trend_model() {
    let values: Vec<f64> = (0..600).map(|i| f64::from(i) * 0.001).collect();
    let evaluation = evaluate(&values, &ForecastConfig::default());
    assert!(
        evaluation.ratio.expect("persistence is not exact") < 0.2,
        "{evaluation:?}"
    );
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
    let mut predictor = SeriesPredictor::new(ForecastConfig::default());
    for step in 0..100 {
        predictor.push_at(step, 0.5);
    }
    // A gap of a thousand steps, then the series resumes; nothing panics and old forecasts
    // are not scored against the wrong steps.
    let f = predictor.push_at(1_100, 0.5).expect("accepted");
    assert_eq!(f.value, 0.5);
    assert!(
        predictor.push_at(1_050, 0.9).is_none(),
        "a step back is ignored"
    );
    assert_eq!(predictor.len(), 101);
}
