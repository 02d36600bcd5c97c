//! Tier configuration files: the defaults, a custom file, and bad files whose every problem is
//! named.

use std::path::Path;

use ballast_core::Timestamp;
use ballast_tier::{TierConfig, TierConfigError, classify};
use expect_test::{Expect, expect};

fn load(name: &str) -> Result<TierConfig, TierConfigError> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/config")
        .join(name);
    let text = std::fs::read_to_string(&path).unwrap();
    TierConfig::from_toml_str(name, &text)
}

fn check_error(name: &str, expect: Expect) {
    let error = load(name).unwrap_err();
    let text = match &error {
        TierConfigError::Invalid { problems, .. } => problems.join("\n"),
        other => other.to_string(),
    };
    expect.assert_eq(&text);
}

#[test]
fn the_defaults_are_valid_and_survive_toml() {
    let config = TierConfig::default();
    assert_eq!(config.problems(), Vec::<String>::new());
    let text = config.to_toml_string().unwrap();
    assert!(text.contains("min_memory = \"15 GiB\""), "{text}");
    assert!(text.contains("min_memory = \"3584 MiB\""), "{text}");
    let back = TierConfig::from_toml_str("defaults.toml", &text).unwrap();
    assert_eq!(back, config);
}

#[test]
fn a_custom_file() {
    let config = load("ok-custom.toml").unwrap();
    assert_eq!(config.tiers.len(), 2);
    let tier = classify(
        &crate::classify::facts(16, 4, None),
        &config,
        Timestamp::ZERO,
    );
    assert_eq!(tier.name, "small");
    assert_eq!(tier.profile.default.shed, 0.7);
    assert_eq!(tier.best_level("voice"), Some(ballast_core::Level(1)));
}

#[test]
fn every_problem_is_named() {
    check_error(
        "bad-many-problems.toml",
        expect![[r#"
            tiers[0].when: the first tier (`base`) must have no conditions, so that every machine gets a tier
            tiers[0].profile.default.restore (0.6) must be below tiers[0].profile.default.shed (0.5) so that a restore cannot cause the next shed
            tiers[1].name: tier `base` is defined twice
            plugins.voice.min_tier: unknown tier `huge` (tiers: base, base)
            plugins.voice.levels[0]: level 0 sets no requirement (min_tier, min_memory or min_gpu_memory)
            plugins.voice.levels[1].min_tier: unknown tier `gpux` (tiers: base, base)"#]],
    );
}

#[test]
fn unknown_fields_and_bad_sizes_name_the_key() {
    check_error(
        "bad-typo-field.toml",
        expect![[r#"
        bad-typo-field.toml: TOML parse error at line 3, column 10
          |
        3 | when = { min_memroy = "4 GiB" }
          |          ^^^^^^^^^^
        unknown field `min_memroy`, expected one of `min_memory`, `min_cores`, `min_gpus`, `min_gpu_memory`
    "#]],
    );
    check_error(
        "bad-size.toml",
        expect![[r#"
        bad-size.toml: TOML parse error at line 6, column 23
          |
        6 | when = { min_memory = "16 gigs" }
          |                       ^^^^^^^^^
        unknown unit `gigs` in `16 gigs` (use B, KiB, MiB, GiB, TiB, kB, MB, GB or TB)
    "#]],
    );
}
