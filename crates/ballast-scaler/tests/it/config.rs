//! Configuration: TOML in, every problem out, each naming its field.

use std::time::Duration;

use ballast_core::Resource;
use ballast_core::decision::Mode;
use ballast_scaler::{Scaler, ScalerConfig, ScalerError};
use expect_test::expect;

use crate::support::*;

#[test]
fn an_empty_file_is_the_default_configuration() {
    let config: ScalerConfig = toml::from_str("").unwrap();
    assert_eq!(config, ScalerConfig::default());
}

#[test]
fn a_full_file_reads_with_humantime_durations_and_per_resource_tables() {
    let text = r#"
mode = "advise"
min_confidence = 0.7
cooldown = "45s"
stabilization = "10m"
flap_backoff_max = "2h"
soft_margin = 0.05
prefer_suspend = true

[thresholds.default]
shed = 0.85
restore = 0.6

[thresholds.gpu_memory]
shed = 0.9
restore = 0.7
emergency = 0.98

[soft_limits]
cpu = 0.75

[concurrency]
factor = 0.25

[machine]
memory_bytes = 17179869184
cpu_cores = 8

[plugins.voice]
latency_p95_objective = "800ms"
max_failure_rate = 0.05
cost = { memory = [0.2, 0.08] }
"#;
    let config: ScalerConfig = toml::from_str(text).unwrap();
    assert_eq!(config.mode, Mode::Advise);
    assert_eq!(config.cooldown, Duration::from_secs(45));
    assert_eq!(config.stabilization, Duration::from_secs(600));
    let profile = config.profile();
    assert_eq!(
        profile.thresholds(Resource::GpuMemory).emergency,
        Some(0.98)
    );
    assert_eq!(profile.thresholds(Resource::Memory).shed, 0.85);
    assert_eq!(
        config.plugins["voice"].latency_p95_objective,
        Some(Duration::from_millis(800))
    );
    assert!(config.problems().is_empty(), "{:?}", config.problems());
    // It survives a round trip.
    let again: ScalerConfig = toml::from_str(&toml::to_string(&config).unwrap()).unwrap();
    assert_eq!(again, config);
}

#[test]
fn every_problem_is_listed_with_its_field() {
    let text = r#"
min_confidence = 1.5
stabilization = "0s"
soft_margin = 2.0
[thresholds.cpu]
shed = 0.5
restore = 0.7
[soft_limits]
memory = 0.9
[concurrency]
factor = 0
[plugins.voice]
max_failure_rate = 3
cost = { memory = [1.5] }
[plugins.ghost]
"#;
    let config: ScalerConfig = toml::from_str(text).unwrap();
    let error = Scaler::new(config, plugins()).unwrap_err();
    let ScalerError::Config(problems) = error else {
        panic!("expected a config error");
    };
    expect![[r#"
        [
            "min_confidence must be between 0 and 1, got 1.5",
            "stabilization must be longer than zero",
            "thresholds.cpu.restore (0.7) must be below thresholds.cpu.shed (0.5) so that a restore cannot cause the next shed",
            "soft_margin must be at least 0 and below 1, got 2",
            "soft_limits.memory must be between the restore threshold 0.65 and the shed threshold 0.8, got 0.9",
            "concurrency.factor must be above 0 and at most 1, got 0",
            "plugins.voice.max_failure_rate must be between 0 and 1, got 3",
            "plugins.voice.cost.memory[0] must be between 0 and 1, got 1.5",
            "plugins.ghost: no plugin of that name",
        ]
    "#]]
    .assert_debug_eq(&problems);
}

#[test]
fn unknown_keys_and_bad_durations_are_errors_naming_the_key() {
    let error = toml::from_str::<ScalerConfig>("cooldwn = \"30s\"").unwrap_err();
    assert!(error.to_string().contains("cooldwn"), "{error}");
    let error = toml::from_str::<ScalerConfig>("cooldown = \"thirty\"").unwrap_err();
    assert!(
        error.to_string().contains("invalid duration `thirty`"),
        "{error}"
    );
}

#[test]
fn duplicate_and_unnamed_plugins_are_refused() {
    let error = Scaler::new(
        ScalerConfig::default(),
        vec![spec("a", 1, 1), spec("a", 2, 1), spec("", 3, 1)],
    )
    .unwrap_err();
    expect![
        "invalid scaler configuration: plugin `a`: listed twice; plugin #3: name must not be empty"
    ]
    .assert_eq(&error.to_string());
}
