//! Example ballast integration `discord`: the chat bot; one level.

use ballast_example_workload::{Integration, WorkloadConfig};
use ballast_sdk::{
    CreateContext, Health, LevelInfo, Plugin, PluginError, PluginInfo, export_plugin,
};

const MIB: u64 = 1 << 20;

/// The `discord` integration.
pub struct Discord {
    inner: Integration,
    started: bool,
}

impl Plugin for Discord {
    const INFO: PluginInfo = PluginInfo {
        name: "discord",
        version: env!("CARGO_PKG_VERSION"),
        levels: &[LevelInfo::new("full", 64 * MIB)],
        cpu_share: 0.1,
        needs_gpu: false,
    };

    fn create(ctx: CreateContext<'_>) -> Result<Self, PluginError> {
        let inner = Integration::create("discord", &ctx, WorkloadConfig::with_working_sets(&[64]))?;
        Ok(Discord {
            inner,
            started: false,
        })
    }

    fn start(&mut self) -> Result<(), PluginError> {
        self.inner.start()?;
        self.started = true;
        Ok(())
    }

    fn set_level(&mut self, level: u32) -> Result<(), PluginError> {
        self.inner.set_level(level);
        Ok(())
    }

    fn stop(&mut self) -> Result<(), PluginError> {
        self.inner.stop();
        self.started = false;
        Ok(())
    }

    fn call(&self, request: &[u8]) -> Result<Vec<u8>, PluginError> {
        self.inner.answer(request, serde_json::Map::new())
    }

    fn health(&self) -> Health {
        self.inner.health(self.started)
    }

    fn threads(&self) -> u32 {
        self.inner.threads()
    }

    fn checkpoint(&self) -> Result<Option<Vec<u8>>, PluginError> {
        Ok(Some(self.inner.checkpoint()))
    }
}

export_plugin!(Discord);
