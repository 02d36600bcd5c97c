//! Example ballast integration `voice`: speech in and out; level 0 runs the large model, level 1 the small one.

use ballast_example_workload::{Integration, WorkloadConfig};
use ballast_sdk::{
    CreateContext, Health, LevelInfo, Plugin, PluginError, PluginInfo, export_plugin,
};

const MIB: u64 = 1 << 20;

/// The `voice` integration.
pub struct Voice {
    inner: Integration,
    started: bool,
}

impl Plugin for Voice {
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

    fn create(ctx: CreateContext<'_>) -> Result<Self, PluginError> {
        let inner =
            Integration::create("voice", &ctx, WorkloadConfig::with_working_sets(&[256, 32]))?;
        Ok(Voice {
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
        let (model, quality) = match self.inner.level() {
            0 => ("large", "high"),
            _ => ("small", "reduced"),
        };
        let mut extra = serde_json::Map::new();
        extra.insert("model".into(), model.into());
        extra.insert("quality".into(), quality.into());
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

export_plugin!(Voice);
