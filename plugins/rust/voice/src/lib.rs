//! Example ballast integration `voice`: speech in and out; level 0 runs the large model, level 1 the small one.

use ballast_example_workload::{Example, Integration, MIB};
use ballast_sdk::{LevelInfo, PluginInfo, export_plugin};

/// The `voice` integration.
pub struct Voice;

impl Integration for Voice {
    const INFO: PluginInfo = PluginInfo {
        name: "voice",
        version: env!("CARGO_PKG_VERSION"),
        levels: &[
            LevelInfo::new("large-model", 256 * MIB),
            LevelInfo::new("small-model", 32 * MIB),
        ],
        cpu_share: 0.5,
        needs_gpu: false,
    };
    const WORKING_SETS_MB: &'static [u64] = &[256, 32];

    fn describe(level: u32) -> serde_json::Map<String, serde_json::Value> {
        let (model, quality) = if level == 0 {
            ("large", "high")
        } else {
            ("small", "reduced")
        };
        let mut extra = serde_json::Map::new();
        extra.insert("model".into(), model.into());
        extra.insert("quality".into(), quality.into());
        extra
    }
}

export_plugin!(Example<Voice>);
