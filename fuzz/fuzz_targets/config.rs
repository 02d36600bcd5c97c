//! Fuzz target: the config file. Any text, as a profile's file, through the same layering and
//! validation as `ballast run --config`: it is refused with problems or accepted as a config that
//! passes its own checks and survives a JSON round trip (what `ballast config show --json` prints
//! reads back the same).

#![no_main]

use ballast_daemon::config::{Config, PROFILES, from_toml};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let profile = PROFILES[data.len() % PROFILES.len()];
    match from_toml(text, "fuzz.toml", profile) {
        Ok(config) => {
            assert!(config.problems().is_empty());
            let json = serde_json::to_string(&config).expect("a valid config serializes");
            let back: Config = serde_json::from_str(&json).expect("a serialized config reads back");
            assert_eq!(
                back, config,
                "the config changed in a JSON round trip: {json}"
            );
        }
        Err(error) => assert!(!error.problems.is_empty()),
    }
});
