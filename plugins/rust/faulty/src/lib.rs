//! A plugin that fails on demand, for testing how the host contains plugin failures.
//!
//! Its config chooses where it misbehaves: `{"panic_in": "call"}` panics in every call,
//! `{"fail_in": "create"}` returns an error from create, `{"call_sleep_ms": 500}` makes calls
//! slow, `{"unhealthy": true}` fails its health check. Requests `panic` and `fail` misbehave once;
//! `segfault` and `abort` crash the whole process, which only a plugin isolated in a worker
//! process (`isolation = "process"`) survives.

use std::time::Duration;

use ballast_sdk::{
    CreateContext, Health, LevelInfo, Plugin, PluginError, PluginInfo, export_plugin,
};
use serde::Deserialize;

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct Faults {
    panic_in: Option<String>,
    fail_in: Option<String>,
    call_sleep_ms: u64,
    unhealthy: bool,
}

/// The faulty plugin.
pub struct Faulty {
    faults: Faults,
    generation: u64,
}

impl Faulty {
    fn maybe_fail(&self, function: &str) -> Result<(), PluginError> {
        if self.faults.panic_in.as_deref() == Some(function) {
            panic!("faulty: configured to panic in {function}");
        }
        if self.faults.fail_in.as_deref() == Some(function) {
            return Err(PluginError::new(format!(
                "faulty: configured to fail in {function}"
            )));
        }
        Ok(())
    }
}

impl Plugin for Faulty {
    const INFO: PluginInfo = PluginInfo {
        name: "faulty",
        version: env!("CARGO_PKG_VERSION"),
        levels: &[
            LevelInfo::new("full", 1 << 20),
            LevelInfo::new("reduced", 1 << 10),
        ],
        cpu_share: 0.01,
        needs_gpu: false,
    };

    fn create(ctx: CreateContext<'_>) -> Result<Self, PluginError> {
        let faults: Faults = serde_json::from_str(ctx.config_json())
            .map_err(|e| PluginError::invalid(format!("faulty: bad config: {e}")))?;
        let generation = std::str::from_utf8(ctx.checkpoint())
            .ok()
            .and_then(|s| s.parse::<u64>().ok())
            .unwrap_or(0)
            + 1;
        let plugin = Faulty { faults, generation };
        plugin.maybe_fail("create")?;
        Ok(plugin)
    }

    fn start(&mut self) -> Result<(), PluginError> {
        self.maybe_fail("start")
    }

    fn set_level(&mut self, _level: u32) -> Result<(), PluginError> {
        self.maybe_fail("set_level")
    }

    fn drain(&mut self, _deadline: Duration) -> Result<(), PluginError> {
        self.maybe_fail("drain")
    }

    fn stop(&mut self) -> Result<(), PluginError> {
        self.maybe_fail("stop")
    }

    fn call(&self, request: &[u8]) -> Result<Vec<u8>, PluginError> {
        self.maybe_fail("call")?;
        match request {
            b"panic" => panic!("faulty: panic requested by the caller"),
            b"fail" => return Err(PluginError::new("faulty: failure requested by the caller")),
            b"segfault" => {
                // SAFETY: not safe at all, on purpose: the caller asked for the crash that
                // isolation exists to contain. The default action is restored first because
                // Rust's own SIGSEGV handler (for stack overflows) would return from a raised one.
                unsafe {
                    libc::signal(libc::SIGSEGV, libc::SIG_DFL);
                    libc::raise(libc::SIGSEGV);
                }
            }
            b"abort" => std::process::abort(),
            _ => {}
        }
        if self.faults.call_sleep_ms > 0 {
            std::thread::sleep(Duration::from_millis(self.faults.call_sleep_ms));
        }
        Ok(format!("generation {}", self.generation).into_bytes())
    }

    fn health(&self) -> Health {
        if self.faults.unhealthy {
            Health::Unhealthy("faulty: configured to be unhealthy".to_owned())
        } else {
            Health::Healthy
        }
    }

    fn checkpoint(&self) -> Result<Option<Vec<u8>>, PluginError> {
        self.maybe_fail("checkpoint")?;
        Ok(Some(self.generation.to_string().into_bytes()))
    }
}

export_plugin!(Faulty);
