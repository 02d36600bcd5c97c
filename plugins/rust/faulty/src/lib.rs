//! A plugin that fails on demand, for testing how the host contains plugin failures and what
//! `ballast plugin check` finds.
//!
//! Its config chooses where it misbehaves: `{"panic_in": "call"}` panics in every call,
//! `{"fail_in": "create"}` returns an error from create, `{"call_sleep_ms": 500}` makes calls
//! slow, `{"unhealthy": true}` fails its health check, `{"drain_whole_deadline": true}` takes the
//! whole drain deadline to drain. Breaches of its contract, one each: `{"hold_mb": 8}` holds
//! that much memory at every level, more than it declares (1 MiB, then 1 KiB);
//! `{"racy_calls": true}` declares thread-safe calls (as every SDK plugin does) but a call that
//! finds another inside fails, as shared state would be corrupted; `{"drain_overrun_ms": 300}`
//! drains for its whole deadline and that much more; `{"forget_checkpoint": true}` ignores the
//! checkpoint it is created with; `{"ignore_cancel": true}` goes on streaming after its call is
//! cancelled. Its checkpoint is its generation and the calls it served, `"GENERATION CALLS"`.
//!
//! The request `stream N MS` streams `N` chunks (`0\n`, `1\n`, ...) `MS` milliseconds apart,
//! stopping when the call is cancelled. Requests `panic` and `fail` misbehave once;
//! `segfault` and `abort` crash the whole process, which only a plugin isolated in a worker
//! process (`isolation = "process"`) survives. The request `arm <function>` makes the next run of
//! that function (create, start, set_level, drain, stop, checkpoint, health, destroy, call) panic
//! once, in whichever instance runs it next, so a test can reach every entry point of one plugin
//! in a running daemon; `fired` answers how many armed panics have fired.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ballast_sdk::{
    CallContext, CreateContext, Health, LevelInfo, Plugin, PluginError, PluginInfo, export_plugin,
};
use serde::Deserialize;

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct Faults {
    panic_in: Option<String>,
    fail_in: Option<String>,
    call_sleep_ms: u64,
    unhealthy: bool,
    drain_whole_deadline: bool,
    hold_mb: u64,
    racy_calls: bool,
    drain_overrun_ms: u64,
    forget_checkpoint: bool,
    ignore_cancel: bool,
}

/// The functions `arm` can make panic, by bit.
const ARMABLE: [&str; 9] = [
    "create",
    "start",
    "set_level",
    "drain",
    "stop",
    "checkpoint",
    "health",
    "destroy",
    "call",
];

/// One bit per armed function of [`ARMABLE`]. Process-wide: the library is never unloaded, and
/// `create` runs before there is an instance to hold it.
static ARMED: AtomicU32 = AtomicU32::new(0);

/// How many armed panics have fired in this process (the request `fired` answers it).
static FIRED: AtomicU64 = AtomicU64::new(0);

/// Calls inside the plugin now, for `racy_calls`.
static INSIDE: AtomicU32 = AtomicU32::new(0);

fn bit(function: &str) -> Option<u32> {
    ARMABLE.iter().position(|f| *f == function).map(|i| 1 << i)
}

/// Panics if `function` was armed, disarming it.
fn fire_if_armed(function: &str) {
    if let Some(bit) = bit(function)
        && ARMED.fetch_and(!bit, Ordering::SeqCst) & bit != 0
    {
        FIRED.fetch_add(1, Ordering::SeqCst);
        panic!("faulty: armed to panic once in {function}");
    }
}

/// The faulty plugin.
pub struct Faulty {
    faults: Faults,
    generation: u64,
    /// Calls served, across the instances its checkpoints connect.
    calls: AtomicU64,
    /// What `hold_mb` holds, every page touched.
    _held: Vec<u8>,
}

impl Faulty {
    fn maybe_fail(&self, function: &str) -> Result<(), PluginError> {
        fire_if_armed(function);
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
        fire_if_armed("create");
        let faults: Faults = serde_json::from_str(ctx.config_json())
            .map_err(|e| PluginError::invalid(format!("faulty: bad config: {e}")))?;
        let checkpoint = if faults.forget_checkpoint {
            ""
        } else {
            std::str::from_utf8(ctx.checkpoint()).unwrap_or("")
        };
        let mut fields = checkpoint
            .split_whitespace()
            .map(|f| f.parse::<u64>().unwrap_or(0));
        let generation = fields.next().unwrap_or(0) + 1;
        let calls = fields.next().unwrap_or(0);
        let held = vec![1u8; usize::try_from(faults.hold_mb << 20).unwrap_or(0)];
        let plugin = Faulty {
            faults,
            generation,
            calls: AtomicU64::new(calls),
            _held: held,
        };
        plugin.maybe_fail("create")?;
        Ok(plugin)
    }

    fn start(&mut self) -> Result<(), PluginError> {
        self.maybe_fail("start")
    }

    fn set_level(&mut self, _level: u32) -> Result<(), PluginError> {
        self.maybe_fail("set_level")
    }

    fn drain(&mut self, deadline: Duration) -> Result<(), PluginError> {
        self.maybe_fail("drain")?;
        if self.faults.drain_whole_deadline || self.faults.drain_overrun_ms > 0 {
            std::thread::sleep(deadline + Duration::from_millis(self.faults.drain_overrun_ms));
        }
        Ok(())
    }

    fn stop(&mut self) -> Result<(), PluginError> {
        self.maybe_fail("stop")
    }

    fn call(&self, request: &[u8]) -> Result<Vec<u8>, PluginError> {
        self.maybe_fail("call")?;
        self.calls.fetch_add(1, Ordering::SeqCst);
        if self.faults.racy_calls {
            let others = INSIDE.fetch_add(1, Ordering::SeqCst);
            std::thread::sleep(Duration::from_millis(5));
            INSIDE.fetch_sub(1, Ordering::SeqCst);
            if others > 0 {
                return Err(PluginError::new(
                    "faulty: another call ran at the same time and corrupted this one's state",
                ));
            }
        }
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
        if request == b"fired" {
            return Ok(FIRED.load(Ordering::SeqCst).to_string().into_bytes());
        }
        if let Some(function) = request.strip_prefix(b"arm ") {
            let function = String::from_utf8_lossy(function);
            let bit = bit(&function).ok_or_else(|| {
                PluginError::invalid(format!(
                    "faulty: cannot arm `{function}`; armable: {}",
                    ARMABLE.join(", ")
                ))
            })?;
            ARMED.fetch_or(bit, Ordering::SeqCst);
            return Ok(format!("armed {function}").into_bytes());
        }
        if self.faults.call_sleep_ms > 0 {
            std::thread::sleep(Duration::from_millis(self.faults.call_sleep_ms));
        }
        Ok(format!("generation {}", self.generation).into_bytes())
    }

    fn call_stream(
        &self,
        request: &[u8],
        ctx: &mut CallContext<'_>,
    ) -> Result<Vec<u8>, PluginError> {
        let text = String::from_utf8_lossy(request);
        let Some(spec) = text.strip_prefix("stream ") else {
            return self.call(request);
        };
        let mut fields = spec.split_whitespace().map(str::parse::<u64>);
        let (Some(Ok(n)), Some(Ok(ms))) = (fields.next(), fields.next()) else {
            return Err(PluginError::invalid(
                "faulty: write a stream request `stream N MS`",
            ));
        };
        self.calls.fetch_add(1, Ordering::SeqCst);
        for i in 0..n {
            if i > 0 {
                let until = Instant::now() + Duration::from_millis(ms);
                while Instant::now() < until {
                    if ctx.is_cancelled() && !self.faults.ignore_cancel {
                        return Err(PluginError::cancelled("faulty: stream cancelled"));
                    }
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
            let sent = ctx.send(format!("{i}\n").as_bytes());
            if sent.is_err() && !self.faults.ignore_cancel {
                return Err(PluginError::cancelled("faulty: stream cancelled"));
            }
        }
        Ok(format!("streamed {n}").into_bytes())
    }

    fn health(&self) -> Health {
        fire_if_armed("health");
        if self.faults.panic_in.as_deref() == Some("health") {
            panic!("faulty: configured to panic in health");
        }
        if self.faults.unhealthy {
            Health::Unhealthy("faulty: configured to be unhealthy".to_owned())
        } else {
            Health::Healthy
        }
    }

    fn checkpoint(&self) -> Result<Option<Vec<u8>>, PluginError> {
        self.maybe_fail("checkpoint")?;
        let calls = self.calls.load(Ordering::SeqCst);
        Ok(Some(format!("{} {calls}", self.generation).into_bytes()))
    }
}

impl Drop for Faulty {
    fn drop(&mut self) {
        // A panic while already unwinding would abort: only panic on a plain destroy.
        if std::thread::panicking() {
            return;
        }
        fire_if_armed("destroy");
        if self.faults.panic_in.as_deref() == Some("destroy") {
            panic!("faulty: configured to panic in destroy");
        }
    }
}

export_plugin!(Faulty);

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use ballast_sdk::testing::{FailureKind, LogLevel, TestHost};

    use super::*;

    #[test]
    fn a_configured_panic_comes_back_as_a_status_and_the_instance_lives_on() {
        let mut host = TestHost::<Faulty>::new().with_config(r#"{"panic_in":"call"}"#);
        host.create().unwrap();
        for _ in 0..2 {
            let failure = host.call("anything").unwrap_err();
            assert_eq!(failure.kind, FailureKind::Panicked);
            assert_eq!(
                failure.message,
                "plugin panicked: faulty: configured to panic in call"
            );
        }
        // Health still answers: the panics were caught inside the plugin.
        assert_eq!(host.health().unwrap(), Health::Healthy);
        assert!(
            host.logs()
                .iter()
                .any(|r| r.level == LogLevel::Error
                    && r.message.contains("configured to panic in call")),
            "the panic hook reports through the host log: {:?}",
            host.logs()
        );
    }

    #[test]
    fn requested_failures_and_panics_are_told_apart() {
        let mut host = TestHost::<Faulty>::new();
        host.create().unwrap();
        let failed = host.call("fail").unwrap_err();
        assert_eq!(failed.kind, FailureKind::Failed);
        assert_eq!(failed.message, "faulty: failure requested by the caller");
        assert_eq!(host.call("panic").unwrap_err().kind, FailureKind::Panicked);
        assert_eq!(host.call("hello").unwrap(), b"generation 1");
    }

    #[test]
    fn a_failing_start_fails_create_at_start_and_leaves_no_instance() {
        let mut host = TestHost::<Faulty>::new().with_config(r#"{"fail_in":"start"}"#);
        let failure = host.create().unwrap_err();
        assert_eq!(failure.operation, "start");
        assert_eq!(failure.message, "faulty: configured to fail in start");
        assert!(!host.is_alive());
    }

    #[test]
    fn a_bad_config_is_an_invalid_argument() {
        let mut host = TestHost::<Faulty>::new().with_config(r#"{"panic_at":"call"}"#);
        let failure = host.create().unwrap_err();
        assert_eq!(failure.kind, FailureKind::InvalidArgument);
        assert!(
            failure
                .message
                .starts_with("faulty: bad config: unknown field `panic_at`"),
            "{failure}"
        );
    }

    #[test]
    fn generations_count_up_across_sheds() {
        let mut host = TestHost::<Faulty>::new();
        for generation in 1..=3 {
            let checkpoint = if generation == 1 {
                Vec::new()
            } else {
                host.shed(Duration::from_millis(100)).unwrap()
            };
            host.create_from(&checkpoint).unwrap();
            assert_eq!(
                host.call("x").unwrap(),
                format!("generation {generation}").into_bytes()
            );
        }
    }

    #[test]
    fn a_panic_in_destroy_is_reported_and_the_instance_is_gone() {
        let mut host = TestHost::<Faulty>::new().with_config(r#"{"panic_in":"destroy"}"#);
        host.create().unwrap();
        let failure = host.shed(Duration::from_millis(100)).unwrap_err();
        assert_eq!(failure.operation, "destroy");
        assert_eq!(failure.kind, FailureKind::Panicked);
        assert!(!host.is_alive());
    }

    #[test]
    fn an_unhealthy_faulty_says_so() {
        let mut host = TestHost::<Faulty>::new().with_config(r#"{"unhealthy":true}"#);
        host.create().unwrap();
        assert_eq!(
            host.health().unwrap(),
            Health::Unhealthy("faulty: configured to be unhealthy".to_owned())
        );
    }
}
