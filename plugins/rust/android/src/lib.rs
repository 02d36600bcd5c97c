//! Example ballast integration `android`: the phone bridge; level 0 syncs media, level 1 only notifications.

use ballast_example_workload::{Integration, WorkloadConfig};
use ballast_sdk::{
    CreateContext, Health, LevelInfo, Plugin, PluginError, PluginInfo, export_plugin,
};

const MIB: u64 = 1 << 20;

/// The `android` integration.
pub struct Android {
    inner: Integration,
    started: bool,
}

impl Plugin for Android {
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

    fn create(ctx: CreateContext<'_>) -> Result<Self, PluginError> {
        let inner = Integration::create(
            "android",
            &ctx,
            WorkloadConfig::with_working_sets(&[128, 32]),
        )?;
        Ok(Android {
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
        let mode = if self.inner.level() == 0 {
            "full-sync"
        } else {
            "notifications-only"
        };
        extra.insert("mode".into(), mode.into());
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

export_plugin!(Android);
