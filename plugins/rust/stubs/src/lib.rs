//! Example ballast integration `stubs`: the essential fallback that answers when everything else is shed; one small level.

use ballast_example_workload::{Example, Integration, MIB};
use ballast_sdk::{LevelInfo, PluginInfo, export_plugin};

/// The `stubs` integration.
pub struct Stubs;

impl Integration for Stubs {
    const INFO: PluginInfo = PluginInfo {
        name: "stubs",
        version: env!("CARGO_PKG_VERSION"),
        levels: &[LevelInfo::new("full", 8 * MIB)],
        cpu_share: 0.02,
        needs_gpu: false,
    };
    const WORKING_SETS_MB: &'static [u64] = &[8];

    fn describe(_level: u32) -> serde_json::Map<String, serde_json::Value> {
        serde_json::Map::from_iter([(
            "note".to_owned(),
            "answered by the essential fallback".into(),
        )])
    }
}

export_plugin!(Example<Stubs>);
