//! Example ballast integration `discord`: the chat bot; one level.

use ballast_example_workload::{Example, Integration, MIB};
use ballast_sdk::{LevelInfo, PluginInfo, export_plugin};

/// The `discord` integration.
pub struct Discord;

impl Integration for Discord {
    const INFO: PluginInfo = PluginInfo {
        name: "discord",
        version: env!("CARGO_PKG_VERSION"),
        levels: &[LevelInfo::new("full", 64 * MIB)],
        cpu_share: 0.1,
        needs_gpu: false,
    };
    const WORKING_SETS_MB: &'static [u64] = &[64];
}

export_plugin!(Example<Discord>);
