//! The `{{name}}` plugin for ballast: greets whoever calls it, remembers recent callers, and
//! counts its calls across sheds.
//!
//! What each part of the contract looks like here:
//!
//! * **Levels.** Level 0 ("full") remembers the last 1024 callers, level 1 ("lite") the last 16.
//!   Each level declares the memory it needs; the daemon lowers the level under pressure before
//!   it sheds the plugin, and counts what the plugin was seen to hold at each level.
//! * **Calls** may run on several threads at once (`&self`); lifecycle methods (`&mut self`)
//!   never run while a call does.
//! * **Streamed calls**: `count:N` streams N lines and stops as soon as the call is cancelled.
//! * **Drain and checkpoint**: before the daemon sheds the plugin it drains it, then asks for a
//!   checkpoint, which the next instance gets in `create`, so the call count survives.
//! * **Panics** are caught by the SDK and come back to the caller as errors.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use ballast_sdk::{
    CallContext, CreateContext, LevelInfo, Plugin, PluginError, PluginInfo, export_plugin,
};

const MIB: u64 = 1 << 20;

/// How many recent callers each level remembers.
const REMEMBERED: [usize; 2] = [1024, 16];

/// The longest caller name remembered, in bytes.
const LONGEST_NAME: usize = 256;

/// The most lines `count:N` streams.
const MOST_LINES: u64 = 100_000;

/// The `{{name}}` plugin.
pub struct {{type}} {
    greeting: String,
    level: usize,
    calls: AtomicU64,
    recent: Mutex<VecDeque<String>>,
}

impl {{type}} {
    /// Remembers `caller`, forgetting the oldest beyond what the level keeps.
    fn remember(&self, caller: &str) {
        let mut end = caller.len().min(LONGEST_NAME);
        while !caller.is_char_boundary(end) {
            end -= 1;
        }
        let mut recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        recent.push_back(caller[..end].to_owned());
        while recent.len() > REMEMBERED[self.level] {
            recent.pop_front();
        }
    }
}

/// Reads the config table from the ballast config (`config = { greeting = "hello" }`).
fn greeting(config_json: &str) -> Result<String, PluginError> {
    let config: serde_json::Value = serde_json::from_str(config_json)
        .map_err(|e| PluginError::invalid(format!("{{name}}: config is not JSON: {e}")))?;
    let Some(table) = config.as_object() else {
        return Err(PluginError::invalid("{{name}}: config must be a table"));
    };
    if let Some(key) = table.keys().find(|k| k.as_str() != "greeting") {
        return Err(PluginError::invalid(format!(
            "{{name}}: unknown config key `{key}`; the only key is `greeting`"
        )));
    }
    match table.get("greeting") {
        None => Ok("hello".to_owned()),
        Some(serde_json::Value::String(s)) => Ok(s.clone()),
        Some(other) => Err(PluginError::invalid(format!(
            "{{name}}: config key `greeting` must be a string, got {other}"
        ))),
    }
}

impl Plugin for {{type}} {
    const INFO: PluginInfo = PluginInfo {
        name: "{{name}}",
        version: env!("CARGO_PKG_VERSION"),
        levels: &[LevelInfo::new("full", 4 * MIB), LevelInfo::new("lite", MIB)],
        cpu_share: 0.01,
        needs_gpu: false,
    };

    fn create(ctx: CreateContext<'_>) -> Result<Self, PluginError> {
        let greeting = greeting(ctx.config_json())?;
        // A checkpoint this version cannot read is not fatal: start counting afresh.
        let calls = match std::str::from_utf8(ctx.checkpoint()) {
            Ok("") => 0,
            Ok(text) => text
                .strip_prefix("calls=")
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| {
                    log::warn!("{{name}}: ignoring a checkpoint it cannot read: {text:?}");
                    0
                }),
            Err(_) => {
                log::warn!("{{name}}: ignoring a checkpoint that is not text");
                0
            }
        };
        log::info!("{{name}}: created, {calls} calls served before");
        Ok({{type}} {
            greeting,
            level: 0,
            calls: AtomicU64::new(calls),
            recent: Mutex::new(VecDeque::new()),
        })
    }

    fn start(&mut self) -> Result<(), PluginError> {
        // Start threads or open connections here; `stop` ends them.
        Ok(())
    }

    fn set_level(&mut self, level: u32) -> Result<(), PluginError> {
        // The SDK refuses levels beyond INFO.levels before calling this.
        self.level = level as usize;
        let mut recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        while recent.len() > REMEMBERED[self.level] {
            recent.pop_front();
        }
        recent.shrink_to_fit();
        log::info!("{{name}}: now at level {level}");
        Ok(())
    }

    fn drain(&mut self, deadline: Duration) -> Result<(), PluginError> {
        // The daemon sends no call from here on and has waited for the calls in flight. Finish
        // background work (flush, close) within `deadline`; this plugin has none.
        log::info!("{{name}}: draining within {} ms", deadline.as_millis());
        Ok(())
    }

    fn stop(&mut self) -> Result<(), PluginError> {
        Ok(())
    }

    fn call(&self, request: &[u8]) -> Result<Vec<u8>, PluginError> {
        let caller = std::str::from_utf8(request)
            .map_err(|_| PluginError::invalid("{{name}}: the request is not UTF-8"))?
            .trim();
        if caller == "recent" {
            let recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
            return Ok(Vec::from(
                recent.iter().cloned().collect::<Vec<_>>().join("\n"),
            ));
        }
        self.remember(caller);
        let n = self.calls.fetch_add(1, Ordering::Relaxed) + 1;
        Ok(format!(
            "{}, {caller}! (call {n}, level {})",
            self.greeting, self.level
        )
        .into_bytes())
    }

    fn call_stream(
        &self,
        request: &[u8],
        ctx: &mut CallContext<'_>,
    ) -> Result<Vec<u8>, PluginError> {
        let Some(count) = request.strip_prefix(b"count:") else {
            return self.call(request);
        };
        let n: u64 = std::str::from_utf8(count)
            .ok()
            .and_then(|n| n.trim().parse().ok())
            .filter(|n| *n <= MOST_LINES)
            .ok_or_else(|| {
                PluginError::invalid(format!("{{name}}: count:N takes N from 0 to {MOST_LINES}"))
            })?;
        for i in 1..=n {
            // Fails with `Cancelled` once the caller went away, the deadline passed or the
            // plugin is being shed: `?` stops here.
            ctx.send(format!("{i}\n").as_bytes())?;
        }
        Ok(b"done\n".to_vec())
    }

    fn checkpoint(&self) -> Result<Option<Vec<u8>>, PluginError> {
        Ok(Some(
            format!("calls={}", self.calls.load(Ordering::Relaxed)).into_bytes(),
        ))
    }
}

export_plugin!({{type}});

#[cfg(test)]
mod tests {
    use ballast_sdk::testing::{FailureKind, StreamCall, TestHost};

    use super::*;

    #[test]
    fn greets_with_the_configured_greeting_and_counts() {
        let mut host = TestHost::<{{type}}>::new().with_config(r#"{"greeting":"hi"}"#);
        host.create().unwrap();
        assert_eq!(host.call("ada").unwrap(), b"hi, ada! (call 1, level 0)");
        assert_eq!(host.call("bob").unwrap(), b"hi, bob! (call 2, level 0)");
        assert_eq!(host.call("recent").unwrap(), b"ada\nbob");
    }

    #[test]
    fn the_lite_level_remembers_fewer_callers() {
        let mut host = TestHost::<{{type}}>::new();
        host.create().unwrap();
        for i in 0..20 {
            host.call(format!("caller {i}")).unwrap();
        }
        host.set_level(1).unwrap();
        let recent = host.call("recent").unwrap();
        assert_eq!(
            String::from_utf8(recent).unwrap().lines().count(),
            REMEMBERED[1]
        );
        // Only the declared levels exist.
        assert_eq!(
            host.set_level(2).unwrap_err().kind,
            FailureKind::Unsupported
        );
    }

    #[test]
    fn the_call_count_survives_a_shed() {
        let mut host = TestHost::<{{type}}>::new();
        host.create().unwrap();
        host.call("ada").unwrap();
        host.call("bob").unwrap();
        let checkpoint = host.shed(Duration::from_secs(5)).unwrap();
        host.create_from(&checkpoint).unwrap();
        assert_eq!(host.call("eve").unwrap(), b"hello, eve! (call 3, level 0)");
        assert!(
            host.logs()
                .iter()
                .any(|r| r.message == "{{name}}: created, 2 calls served before"),
            "{:?}",
            host.logs()
        );
    }

    #[test]
    fn an_unreadable_checkpoint_starts_afresh() {
        let mut host = TestHost::<{{type}}>::new();
        host.create_from(b"from another version").unwrap();
        assert_eq!(host.call("ada").unwrap(), b"hello, ada! (call 1, level 0)");
    }

    #[test]
    fn a_stream_stops_when_the_call_is_cancelled() {
        let mut host = TestHost::<{{type}}>::new();
        host.create().unwrap();
        let all = host.call_stream("count:3", &StreamCall::new());
        assert_eq!(all.whole(), Some(b"1\n2\n3\ndone\n".to_vec()));

        let cut = host.call_stream("count:1000", &StreamCall::new().cancel_after(2));
        assert_eq!(cut.chunks, [b"1\n", b"2\n"]);
        assert_eq!(cut.result.unwrap_err().kind, FailureKind::Cancelled);
    }

    #[test]
    fn a_bad_config_names_the_key() {
        let mut host = TestHost::<{{type}}>::new().with_config(r#"{"greting":"hi"}"#);
        let failure = host.create().unwrap_err();
        assert_eq!(failure.kind, FailureKind::InvalidArgument);
        assert_eq!(
            failure.message,
            "{{name}}: unknown config key `greting`; the only key is `greeting`"
        );
    }
}
