//! The reference policies `ballast simulate --reference` replays next to a config, each built
//! from it: the same plugins, costs, resource, thresholds and machine, a different way of acting
//! on them. They are what ballast's policy is measured against: a naive single threshold, the
//! seed's policy, and the design's defaults without a forecast.

use std::time::Duration;

use ballast_predict::PredictorSettings;
use ballast_scaler::ScalerConfig;

use super::engine::{ForecastSource, SimConfig};

/// "No stabilization" for the scaler, which needs some: a restore waits one millisecond of calm,
/// so it comes with the first calm reading.
const NO_STABILIZATION: Duration = Duration::from_millis(1);

/// A reference policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Reference {
    /// One threshold: shed a step at every reading at or over the shed threshold, restore a
    /// step at every reading under it (when the plugin's need fits); no smoothing, no forecast,
    /// no cool-down, no stabilization, no throttling.
    Naive,
    /// The seed's policy: EMA 0.7, a least-squares line through the last 60 buckets of 30 s
    /// forecasting 10 ahead (always counted), the config's thresholds, a cool-down of 30 s and no
    /// stabilization.
    Seed,
    /// The design's defaults without a forecast: EMA 0.7, hysteresis between the config's shed
    /// and restore thresholds, a cool-down of 30 s, a stabilization of 5 min with the flap
    /// back-off, throttling under the shed threshold; the smoothed value (and the reading once
    /// it confirms a climb) is all the scaler sees.
    NoForecast,
}

impl Reference {
    /// Every reference, in the order they are shown.
    pub const ALL: [Reference; 3] = [Reference::Naive, Reference::Seed, Reference::NoForecast];

    /// Its name on the command line and as a column header.
    pub const fn name(self) -> &'static str {
        match self {
            Reference::Naive => "naive",
            Reference::Seed => "seed",
            Reference::NoForecast => "no-forecast",
        }
    }

    /// The policy as a simulation config built from `base`: its plugins, resource, thresholds,
    /// machine totals, mode and `prefer_suspend` stay; smoothing, forecast and timings are the
    /// reference's.
    pub fn config(self, base: &SimConfig) -> SimConfig {
        let b = &base.scaler;
        let mut config = SimConfig {
            resource: base.resource,
            forecast: ForecastSource::Predictor,
            scaler: ScalerConfig {
                mode: b.mode,
                thresholds: b.thresholds.clone(),
                prefer_suspend: b.prefer_suspend,
                machine: b.machine,
                plugins: b.plugins.clone(),
                acted_on: b.acted_on.clone(),
                ..ScalerConfig::default()
            },
            predictor: PredictorSettings::default(),
            plugins: base.plugins.clone(),
        };
        match self {
            Reference::Naive => {
                config.predictor.ema_weight = 1.0;
                config.forecast = ForecastSource::None;
                let scaler = &mut config.scaler;
                scaler.cooldown = Duration::ZERO;
                scaler.stabilization = NO_STABILIZATION;
                scaler.soft_margin = 0.0;
                scaler.concurrency.enabled = false;
                // One threshold: restore just under the shed threshold (the scaler wants them
                // apart, and a restore still needs the plugin's need to fit under it).
                let thresholds = &mut scaler.thresholds;
                for t in std::iter::once(&mut thresholds.default)
                    .chain(thresholds.resources.values_mut())
                {
                    t.restore = (t.shed - 1e-6).max(0.0);
                }
            }
            Reference::Seed => {
                config.forecast = ForecastSource::Line;
                config.scaler.stabilization = NO_STABILIZATION;
            }
            Reference::NoForecast => config.forecast = ForecastSource::None,
        }
        config
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> SimConfig {
        toml::from_str(include_str!("../../../../config/simulate-example.toml")).unwrap()
    }

    #[test]
    fn every_reference_is_a_valid_config_with_the_base_plugins_and_thresholds() {
        let base = base();
        for reference in Reference::ALL {
            let config = reference.config(&base);
            assert!(
                config.problems().is_empty(),
                "{}: {:?}",
                reference.name(),
                config.problems()
            );
            assert_eq!(config.plugins, base.plugins, "{}", reference.name());
            assert_eq!(config.resource, base.resource, "{}", reference.name());
            let (t, b) = (
                config.scaler.thresholds.default,
                base.scaler.thresholds.default,
            );
            assert_eq!((t.shed, t.emergency), (b.shed, b.emergency));
        }
    }

    #[test]
    fn the_references_differ_where_their_descriptions_say() {
        let base = base();
        let naive = Reference::Naive.config(&base);
        assert_eq!(naive.predictor.ema_weight, 1.0);
        assert_eq!(naive.forecast, ForecastSource::None);
        assert_eq!(naive.scaler.cooldown, Duration::ZERO);
        assert!(!naive.scaler.concurrency.enabled);
        let t = naive.scaler.thresholds.default;
        assert!(t.restore < t.shed && t.shed - t.restore < 1e-5, "{t:?}");

        let seed = Reference::Seed.config(&base);
        assert_eq!(seed.forecast, ForecastSource::Line);
        assert_eq!(seed.predictor.ema_weight, 0.7);
        assert_eq!(
            (
                seed.predictor.window_buckets,
                seed.predictor.horizon_buckets
            ),
            (60, 10)
        );
        assert_eq!(seed.scaler.stabilization, NO_STABILIZATION);
        assert_eq!(seed.scaler.cooldown, Duration::from_secs(30));

        let design = Reference::NoForecast.config(&base);
        assert_eq!(design.forecast, ForecastSource::None);
        assert_eq!(design.scaler.stabilization, Duration::from_secs(300));
        assert_eq!(design.scaler.cooldown, Duration::from_secs(30));
        assert_eq!(design.predictor.ema_weight, 0.7);
    }
}
