//! Example ballast integration `stubs`: the essential fallback that answers when everything else is shed; one small level.

use ballast_example_workload::{Integration, WorkloadConfig};
use ballast_sdk::{
    CreateContext, Health, LevelInfo, Plugin, PluginError, PluginInfo, export_plugin,
};

const MIB: u64 = 1 << 20;

/// The `stubs` integration.
pub struct Stubs {
    inner: Integration,
    started: bool,
}

impl Plugin for Stubs {
    const INFO: PluginInfo = PluginInfo {
        name: "stubs",
        version: env!("CARGO_PKG_VERSION"),
        levels: &[LevelInfo::new("full", 8 * MIB)],
        cpu_share: 0.02,
        needs_gpu: false,
    };

    fn create(ctx: CreateContext<'_>) -> Result<Self, PluginError> {
        let inner = Integration::create("stubs", &ctx, WorkloadConfig::with_working_sets(&[8]))?;
        Ok(Stubs {
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
        let mut extra = serde_json::Map::new();
        extra.insert("note".into(), "answered by the essential fallback".into());
        self.inner.answer(request, extra)
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

export_plugin!(Stubs);
