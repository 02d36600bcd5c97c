//! Property tests: whatever the input, outputs stay finite and in range, and bad values never
//! poison the state.

use ballast_core::{Assessment, Resource, Timestamp};
use ballast_predict::{ForecastConfig, Predictor, PredictorConfig, SeriesPredictor};
use proptest::prelude::*;

/// How the clock moves between two observations: normally, not at all, backwards, by a huge
/// gap, or anywhere at all.
fn clock_step() -> impl Strategy<Value = i128> {
    prop_oneof![
        6 => 0_i128..3_000,
        2 => Just(0_i128),
        1 => -120_000_i128..0,
        1 => 0_i128..10_000_000_000,
        1 => any::<u64>().prop_map(|t| i128::from(t) - i128::from(u64::MAX / 2)),
    ]
}

/// One observation: a clock step and up to three resources with values in `0..=1`.
fn observation() -> impl Strategy<Value = (i128, Vec<(Resource, f64)>)> {
    let resource = prop::sample::select(vec![Resource::Cpu, Resource::Memory, Resource::Gpu]);
    (
        clock_step(),
        prop::collection::vec((resource, 0.0_f64..=1.0), 0..4),
    )
}

fn advance(now: u64, step: i128) -> u64 {
    (i128::from(now) + step).clamp(0, i128::from(u64::MAX)) as u64
}

fn in_unit(x: f64) -> bool {
    x.is_finite() && (0.0..=1.0).contains(&x)
}

fn check_assessment(a: &Assessment) {
    for r in &a.resources {
        assert!(in_unit(r.value), "{r:?}");
        assert!(in_unit(r.smoothed), "{r:?}");
        let f = r
            .forecast
            .as_ref()
            .expect("a forecast once a value was seen");
        assert!(in_unit(f.value), "{r:?}");
        assert!(in_unit(f.confidence), "{r:?}");
        assert!(
            in_unit(r.trend.min) && in_unit(r.trend.max) && in_unit(r.trend.mean),
            "{r:?}"
        );
        assert!(r.trend.min <= r.trend.max, "{r:?}");
        assert!(r.trend.slope_per_second.is_finite(), "{r:?}");
        assert!(r.anomaly.score.is_finite(), "{r:?}");
    }
}

fn small_config() -> PredictorConfig {
    // Short buckets and season so that a few hundred observations exercise every model.
    PredictorConfig {
        bucket: std::time::Duration::from_secs(1),
        season: Some(std::time::Duration::from_secs(20)),
        season_cycles: 2,
        ..PredictorConfig::default()
    }
}

proptest! {
    // Each case replays hundreds of steps; 64 cases keep the debug-build run to a few seconds.
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn outputs_are_finite_and_in_range(
        start in any::<u64>(),
        observations in prop::collection::vec(observation(), 1..300),
    ) {
        for config in [PredictorConfig::default(), small_config()] {
            let mut predictor = Predictor::new(config);
            let mut now = start;
            for (step, values) in &observations {
                now = advance(now, *step);
                let a = predictor.observe(Timestamp::from_millis(now), values);
                prop_assert_eq!(a.resources.len(), values.len());
                check_assessment(&a);
            }
        }
    }

    #[test]
    fn non_finite_values_are_ignored_without_poisoning_state(
        observations in prop::collection::vec(observation(), 1..200),
        poison in prop::collection::vec(
            prop::sample::select(vec![f64::NAN, f64::INFINITY, f64::NEG_INFINITY]),
            200,
        ),
    ) {
        let mut clean = Predictor::new(small_config());
        let mut dirty = Predictor::new(small_config());
        let mut now = 1_000_000_u64;
        for (i, (step, values)) in observations.iter().enumerate() {
            now = advance(now, *step);
            let at = Timestamp::from_millis(now);
            let expected = clean.observe(at, values);
            // The same values plus a non-finite reading of the storage resource each time.
            let mut with_poison = values.clone();
            with_poison.push((Resource::Disk, poison[i]));
            if let Some(first) = values.first() {
                with_poison.push((first.0, poison[i]));
            }
            let got = dirty.observe(at, &with_poison);
            check_assessment(&got);
            prop_assert_eq!(&expected, &got);
        }
    }

    #[test]
    fn series_forecasts_stay_finite_on_any_finite_input(
        values in prop::collection::vec(
            prop_oneof![-1e12_f64..1e12, -1.0_f64..1.0, Just(0.0), Just(1e300)],
            1..400,
        ),
        horizon in 1_usize..20,
    ) {
        let mut predictor = SeriesPredictor::new(ForecastConfig {
            horizon,
            season: Some(7),
            ..ForecastConfig::default()
        });
        for v in values {
            let f = predictor.push(v).expect("finite values are accepted");
            prop_assert!(f.value.is_finite(), "{f:?}");
            prop_assert!(in_unit(f.confidence), "{f:?}");
            let total: f64 = f.models.iter().map(|(_, w)| w).sum();
            prop_assert!((total - 1.0).abs() < 1e-9, "{f:?}");
        }
    }

    #[test]
    fn series_ignores_non_finite_values(
        values in prop::collection::vec(0.0_f64..1.0, 1..200),
        poison_every in 1_usize..5,
    ) {
        let mut clean = SeriesPredictor::new(ForecastConfig::default());
        let mut dirty = SeriesPredictor::new(ForecastConfig::default());
        for (i, v) in values.iter().enumerate() {
            if i % poison_every == 0 {
                prop_assert!(dirty.push(f64::NAN).is_none());
                prop_assert!(dirty.push(f64::INFINITY).is_none());
            }
            prop_assert_eq!(clean.push(*v), dirty.push(*v));
        }
    }
}
