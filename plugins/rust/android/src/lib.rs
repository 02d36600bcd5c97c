//! Example ballast integration `android`: the phone bridge; level 0 syncs media, level 1 only notifications.

use ballast_example_workload::{Example, Integration, MIB};
use ballast_sdk::{LevelInfo, PluginInfo, export_plugin};

/// The `android` integration.
pub struct Android;

impl Integration for Android {
    const INFO: PluginInfo = PluginInfo {
        name: "android",
        version: env!("CARGO_PKG_VERSION"),
        levels: &[
            LevelInfo::new("full-sync", 128 * MIB),
            LevelInfo::new("notifications-only", 32 * MIB),
        ],
        cpu_share: 0.25,
        needs_gpu: false,
    };
    const WORKING_SETS_MB: &'static [u64] = &[128, 32];

    fn describe(level: u32) -> serde_json::Map<String, serde_json::Value> {
        let mode = if level == 0 {
            "full-sync"
        } else {
            "notifications-only"
        };
        serde_json::Map::from_iter([("mode".to_owned(), mode.into())])
    }
}

export_plugin!(Example<Android>);
