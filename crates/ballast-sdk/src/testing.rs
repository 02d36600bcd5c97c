//! A test host for plugin authors (cargo feature `testing`): [`TestHost`] drives a [`Plugin`]
//! type in a plain unit test, through the same `extern "C"` functions the daemon calls.
//!
//! Add the feature to your plugin's dev-dependencies:
//!
//! ```toml
//! [dev-dependencies]
//! ballast-sdk = { version = "0.1", features = ["testing"] }   # or the same path as above
//! ```
//!
//! # Through the ABI, not the trait
//!
//! [`TestHost`] does not call your [`Plugin`] methods directly. It builds the same descriptor
//! [`crate::export_plugin!`] exports and calls the functions of its vtable with a host table of
//! its own, exactly as the daemon does after `dlopen`: `create` with the config as JSON and the
//! checkpoint as bytes, then `start` and `set_level`; `call` and `call_stream` with their
//! buffers; `drain` with its deadline in milliseconds; `checkpoint`, `stop` and `destroy`. So a
//! test also runs what sits between the daemon and your code: the panic guards (a panic comes
//! back as [`FailureKind::Panicked`] and the instance keeps answering), the level check before
//! `set_level`, the error kinds as ABI statuses, the messages as the daemon would read them
//! (truncated to its 4 KiB buffer), the `log` bridge, streamed chunks and cancellation through
//! the ABI's call context, and the descriptor the host validates when it loads the file (its
//! name, its levels, their memory). What it cannot catch is what only a real `dlopen` shows:
//! a crate that is not a `cdylib`, a missing `export_plugin!`, or a symbol clash; build the
//! library and run `ballast plugin inspect` on it for those.
//!
//! # What is the same as in the daemon, and what is not
//!
//! * **The sequence.** [`TestHost::create`] runs `create`, `start` and, when the host was given
//!   a level other than 0, `set_level`, as the daemon enables a plugin; [`TestHost::shed`] runs
//!   `drain`, `checkpoint`, `stop` and `destroy`, as the daemon disables one, and hands back the
//!   checkpoint for [`TestHost::create_from`]. Each step is also a method of its own.
//! * **Threads.** Calls take `&self` and may run on several threads at once (the SDK declares
//!   thread-safe calls); lifecycle steps take `&mut self`, so, as in the daemon, none runs while
//!   a call does.
//! * **The clock** is a [`TestClock`] that starts at [`TestClock::START_MS`] and moves only when
//!   the test moves it, so a test that reads the host's time is deterministic.
//! * **Logs.** What the plugin logs through `log` (or [`crate::Host`]) on the thread of a host
//!   call is captured by that test's host ([`TestHost::logs`]). Records logged from threads the
//!   plugin starts itself go to the host of the newest instance in the process, as in the
//!   daemon, where a library has one instance at a time; in a test binary that runs tests in
//!   parallel, they may land in another test's host.
//! * **Allocation figures** ([`TestHost::stats`]) come from the SDK's counting allocator, which
//!   `export_plugin!` installs in the test binary too; they count the whole test process (every
//!   test running at the time), so compare them only coarsely. Where another allocator is the
//!   global one (`export_plugin!(P, allocator = false)`, a doc-test without `export_plugin!`),
//!   they are `None`.
//! * **Leaks on purpose.** The host table and what it records live until the process exits, as
//!   the ABI promises a plugin (its threads may still log after `destroy`): a few hundred bytes
//!   per `TestHost`.
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//!
//! use ballast_sdk::testing::{FailureKind, StreamCall, TestHost};
//! use ballast_sdk::{CallContext, CreateContext, LevelInfo, Plugin, PluginError, PluginInfo};
//!
//! /// Counts its calls; the count survives a shed through the checkpoint.
//! pub struct Counter {
//!     calls: std::sync::atomic::AtomicU64,
//!     level: u32,
//! }
//!
//! impl Plugin for Counter {
//!     const INFO: PluginInfo = PluginInfo {
//!         name: "counter",
//!         version: "1.0.0",
//!         levels: &[LevelInfo::new("full", 4 << 20), LevelInfo::new("lite", 1 << 20)],
//!         cpu_share: 0.01,
//!         needs_gpu: false,
//!     };
//!
//!     fn create(ctx: CreateContext<'_>) -> Result<Self, PluginError> {
//!         let calls = std::str::from_utf8(ctx.checkpoint()).ok().and_then(|s| s.parse().ok());
//!         log::info!("counter: starting from {}", calls.unwrap_or(0));
//!         Ok(Counter { calls: calls.unwrap_or(0).into(), level: 0 })
//!     }
//!
//!     fn set_level(&mut self, level: u32) -> Result<(), PluginError> {
//!         self.level = level;
//!         Ok(())
//!     }
//!
//!     fn call(&self, request: &[u8]) -> Result<Vec<u8>, PluginError> {
//!         if request == b"boom" {
//!             panic!("asked to panic");
//!         }
//!         let n = self.calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
//!         Ok(format!("call {n} at level {}", self.level).into_bytes())
//!     }
//!
//!     fn call_stream(&self, request: &[u8], ctx: &mut CallContext<'_>) -> Result<Vec<u8>, PluginError> {
//!         for i in 0..request.len() {
//!             ctx.send(&[b'0' + i as u8])?;
//!         }
//!         Ok(b"end".to_vec())
//!     }
//!
//!     fn checkpoint(&self) -> Result<Option<Vec<u8>>, PluginError> {
//!         Ok(Some(self.calls.load(std::sync::atomic::Ordering::SeqCst).to_string().into_bytes()))
//!     }
//! }
//!
//! let mut host = TestHost::<Counter>::new().with_level(1);
//! host.create().unwrap();
//! assert_eq!(host.call("hi").unwrap(), b"call 1 at level 1");
//! assert!(host.logs().iter().any(|r| r.message == "counter: starting from 0"));
//!
//! // A panic comes back as a status, and the instance keeps answering.
//! assert_eq!(host.call("boom").unwrap_err().kind, FailureKind::Panicked);
//! assert_eq!(host.call("hi").unwrap(), b"call 2 at level 1");
//!
//! // A level the plugin does not declare is refused before the plugin sees it.
//! assert_eq!(host.set_level(2).unwrap_err().kind, FailureKind::Unsupported);
//!
//! // Streamed: the host takes two chunks, then cancels the call.
//! let streamed = host.call_stream("abcd", &StreamCall::new().cancel_after(2));
//! assert_eq!(streamed.chunks, [b"0", b"1"]);
//! assert_eq!(streamed.result.unwrap_err().kind, FailureKind::Cancelled);
//!
//! // Shed and restore: the count carries over.
//! let checkpoint = host.shed(Duration::from_secs(5)).unwrap();
//! host.create_from(&checkpoint).unwrap();
//! assert_eq!(host.call("hi").unwrap(), b"call 3 at level 1");
//! ```

use std::cell::Cell;
use std::collections::BTreeMap;
use std::ffi::c_void;
use std::fmt;
use std::marker::PhantomData;
use std::mem::MaybeUninit;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ballast_abi::{
    BALLAST_ABI_MINOR, BALLAST_CAP_ALLOC_STATS, BALLAST_CAP_STREAMING, BALLAST_LOG_DEBUG,
    BALLAST_LOG_ERROR, BALLAST_LOG_INFO, BALLAST_LOG_WARN, BALLAST_MAX_LEVELS,
    BALLAST_STATUS_CANCELLED, BALLAST_STATUS_DEGRADED, BALLAST_STATUS_ERROR,
    BALLAST_STATUS_INVALID_ARGUMENT, BALLAST_STATUS_OK, BALLAST_STATUS_PANIC,
    BALLAST_STATUS_UNSUPPORTED, BallastBuffer, BallastBytes, BallastCallContext, BallastHostApi,
    BallastMessageBuf, BallastPluginVTable, BallastStats, BallastStatus, BallastStr,
};

use crate::export::Descriptor;
use crate::{AllocStats, Health, Plugin};

/// The most a plugin may write into a message buffer: the daemon's size.
const MESSAGE_CAPACITY: usize = 4096;

/// The longest plugin name the daemon accepts.
const MAX_NAME_LEN: usize = 64;

/// The longest version or level name the daemon accepts.
const MAX_TEXT_LEN: usize = 256;

/// How a host call failed: the ABI status the plugin returned, as a kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailureKind {
    /// A general failure ([`crate::PluginError::new`]).
    Failed,
    /// The plugin panicked; the SDK caught it.
    Panicked,
    /// The function or argument is not supported (e.g. a level the plugin does not declare).
    Unsupported,
    /// An argument was invalid ([`crate::PluginError::invalid`]).
    InvalidArgument,
    /// The call stopped because it was cancelled.
    Cancelled,
    /// The host itself refuses the plugin (a descriptor the daemon would not load, an instance
    /// `create` did not hand out).
    Refused,
    /// A status code the ABI does not define.
    Other(i32),
}

impl FailureKind {
    fn of(status: BallastStatus) -> FailureKind {
        match status {
            BALLAST_STATUS_ERROR => FailureKind::Failed,
            BALLAST_STATUS_PANIC => FailureKind::Panicked,
            BALLAST_STATUS_UNSUPPORTED => FailureKind::Unsupported,
            BALLAST_STATUS_INVALID_ARGUMENT => FailureKind::InvalidArgument,
            BALLAST_STATUS_CANCELLED => FailureKind::Cancelled,
            other => FailureKind::Other(other),
        }
    }
}

/// A host call that did not succeed: which step, how, and the plugin's message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    /// The ABI function that failed: `create`, `start`, `set_level`, `call`, ...
    pub operation: &'static str,
    /// How it failed.
    pub kind: FailureKind,
    /// The plugin's message (for a panic, `plugin panicked: ...`).
    pub message: String,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} failed ({:?}): {}",
            self.operation, self.kind, self.message
        )
    }
}

impl std::error::Error for Failure {}

/// The level of a [`LogRecord`]: the `log` crate's, re-exported for tests that do not depend on
/// it themselves.
pub use log::Level as LogLevel;

/// One record the plugin logged.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogRecord {
    /// Its level.
    pub level: LogLevel,
    /// Its target (the module path for records from `log`).
    pub target: String,
    /// Its message.
    pub message: String,
}

/// A state report the plugin made through [`crate::Host::report_state`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StateReport {
    /// Whether it says it is healthy.
    pub healthy: bool,
    /// Its message.
    pub message: String,
}

/// The figures the plugin's `stats` reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stats {
    /// Threads it says it runs ([`Plugin::threads`]).
    pub threads: u32,
    /// The counting allocator's figures, `None` when it is not the global allocator (see the
    /// module docs: in a test binary they count the whole process).
    pub alloc: Option<AllocStats>,
}

/// The host's clock as the plugin sees it ([`crate::Host::now_ms`], a call's deadline): virtual,
/// moved only by the test. Cheap to clone; every clone is the same clock, so a test may move it
/// from another thread while a call runs.
#[derive(Clone, Debug)]
pub struct TestClock {
    ms: Arc<AtomicU64>,
}

impl TestClock {
    /// Where every test clock starts: 2026-01-01T00:00:00Z, in milliseconds since the Unix epoch.
    pub const START_MS: u64 = 1_767_225_600_000;

    fn new() -> TestClock {
        TestClock {
            ms: Arc::new(AtomicU64::new(Self::START_MS)),
        }
    }

    /// The time, in milliseconds since the Unix epoch.
    pub fn now_ms(&self) -> u64 {
        self.ms.load(Ordering::SeqCst)
    }

    /// Moves the clock forward by `by`.
    pub fn advance(&self, by: Duration) {
        let by = u64::try_from(by.as_millis()).unwrap_or(u64::MAX);
        let _ = self
            .ms
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |ms| {
                Some(ms.saturating_add(by))
            });
    }

    /// Sets the clock to `ms` milliseconds since the Unix epoch (it may go back, as a wall clock
    /// can).
    pub fn set_ms(&self, ms: u64) {
        self.ms.store(ms, Ordering::SeqCst);
    }
}

/// Cancels a streamed call from anywhere, e.g. from another thread while the call runs, as a
/// caller that goes away does. Made by [`StreamCall::cancel_handle`].
#[derive(Clone, Debug, Default)]
pub struct CancelHandle {
    cancelled: Arc<AtomicBool>,
}

impl CancelHandle {
    /// Cancels the call: `send` answers [`crate::Cancelled`] and `is_cancelled` is true from now
    /// on.
    pub fn cancel(&self) {
        self.cancelled.store(true, Ordering::SeqCst);
    }

    /// Whether [`CancelHandle::cancel`] was called.
    pub fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::SeqCst)
    }
}

/// How the host treats one streamed call: when it cancels it, and its deadline.
#[derive(Clone, Debug, Default)]
pub struct StreamCall {
    cancel_after: Option<usize>,
    deadline: Option<Deadline>,
    advance_per_chunk: Duration,
    cancel: CancelHandle,
}

#[derive(Clone, Copy, Debug)]
enum Deadline {
    At(u64),
    In(Duration),
}

impl StreamCall {
    /// A call that takes every chunk, with no deadline, not cancelled.
    pub fn new() -> StreamCall {
        StreamCall::default()
    }

    /// The host cancels the call as soon as it has taken `chunks` chunks, as when the caller
    /// goes away: the next `send` is refused and `is_cancelled` is true.
    pub fn cancel_after(mut self, chunks: usize) -> StreamCall {
        self.cancel_after = Some(chunks);
        self
    }

    /// The call is cancelled before it starts (the plugin sees it at its first look).
    pub fn cancelled(self) -> StreamCall {
        self.cancel.cancel();
        self
    }

    /// The call's deadline, `after` past the [`TestClock`]'s time when the call starts. The call
    /// counts as cancelled once the clock reaches it, as the daemon cancels a call whose deadline
    /// passed; move the clock with [`StreamCall::advance_clock_per_chunk`] or from another thread.
    pub fn deadline_in(mut self, after: Duration) -> StreamCall {
        self.deadline = Some(Deadline::In(after));
        self
    }

    /// The call's deadline in milliseconds since the Unix epoch on the [`TestClock`].
    pub fn deadline_ms(mut self, ms: u64) -> StreamCall {
        self.deadline = Some(Deadline::At(ms));
        self
    }

    /// Moves the [`TestClock`] forward by `by` after every chunk the host takes: time passing as
    /// the plugin works, so a deadline passes after a known number of chunks.
    pub fn advance_clock_per_chunk(mut self, by: Duration) -> StreamCall {
        self.advance_per_chunk = by;
        self
    }

    /// A handle that cancels this call from anywhere (clones share it).
    pub fn cancel_handle(&self) -> CancelHandle {
        self.cancel.clone()
    }
}

/// What a streamed call produced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Streamed {
    /// The chunks the host took, in order.
    pub chunks: Vec<Vec<u8>>,
    /// The last piece of the answer, or how the call failed.
    pub result: Result<Vec<u8>, Failure>,
    /// How many `send`s the host refused because the call was cancelled. A plugin that stops at
    /// once makes at most one.
    pub refused: usize,
}

impl Streamed {
    /// The whole answer, as a caller that does not stream gets it: the chunks and the last
    /// piece; `None` if the call failed.
    pub fn whole(&self) -> Option<Vec<u8>> {
        let last = self.result.as_ref().ok()?;
        let mut whole = self.chunks.concat();
        whole.extend_from_slice(last);
        Some(whole)
    }
}

/// What the host table records, shared with the host functions through `host_data`.
struct Recorder {
    clock: TestClock,
    logs: Mutex<Vec<LogRecord>>,
    metrics: Mutex<BTreeMap<String, f64>>,
    reports: Mutex<Vec<StateReport>>,
}

/// Drives one plugin type the way the daemon does, through its ABI; see the module docs.
pub struct TestHost<P: Plugin> {
    vtable: BallastPluginVTable,
    capabilities: u64,
    api: &'static BallastHostApi,
    recorder: &'static Recorder,
    config_json: String,
    start_level: u32,
    instance: *mut c_void,
    level: u32,
    _plugin: PhantomData<fn() -> P>,
}

// SAFETY: the instance pointer is used only through the plugin's vtable, under the ABI's
// rules: calls (which the SDK declares thread-safe) through `&self`, lifecycle functions through
// `&mut self`, so never at the same time as anything else. The host table and its recorder are
// immutable or behind mutexes, and live for the rest of the process.
unsafe impl<P: Plugin> Send for TestHost<P> {}
// SAFETY: as above.
unsafe impl<P: Plugin> Sync for TestHost<P> {}

impl<P: Plugin> fmt::Debug for TestHost<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TestHost")
            .field("plugin", &P::INFO.name)
            .field("alive", &self.is_alive())
            .field("level", &self.level)
            .finish_non_exhaustive()
    }
}

impl<P: Plugin> TestHost<P> {
    /// A host for `P` with the config `{}` at level 0, no instance yet.
    ///
    /// # Panics
    ///
    /// If the daemon would refuse `P`'s descriptor (see [`TestHost::try_new`]), with the reason.
    pub fn new() -> TestHost<P> {
        match TestHost::try_new() {
            Ok(host) => host,
            Err(failure) => panic!("{}: {}", P::INFO.name, failure.message),
        }
    }

    /// A host for `P`, or why the daemon would refuse to load it: a name that is empty, too long
    /// or has characters other than letters, digits, `-` and `_`; no level or more than 16; a
    /// version or level name too long; a level that needs more memory than it prefers.
    pub fn try_new() -> Result<TestHost<P>, Failure> {
        crate::host::TEST_HOST_ACTIVE.store(true, Ordering::SeqCst);
        let descriptor = Descriptor::new::<P>(counting_allocator_installed());
        // SAFETY: the descriptor and everything it points to live as long as `descriptor`; the
        // vtable's functions are the SDK's own, for the life of the process.
        let (capabilities, vtable) = unsafe {
            let d = &*descriptor.as_ptr();
            validate(d)?;
            (d.capabilities, *d.vtable)
        };
        let recorder: &'static Recorder = Box::leak(Box::new(Recorder {
            clock: TestClock::new(),
            logs: Mutex::new(Vec::new()),
            metrics: Mutex::new(BTreeMap::new()),
            reports: Mutex::new(Vec::new()),
        }));
        let api: &'static BallastHostApi = Box::leak(Box::new(BallastHostApi {
            struct_size: size_of::<BallastHostApi>() as u32,
            abi_minor: BALLAST_ABI_MINOR,
            host_data: std::ptr::from_ref(recorder).cast_mut().cast(),
            log: host_log,
            now_ms: host_now_ms,
            emit_metric: host_emit_metric,
            report_state: host_report_state,
        }));
        Ok(TestHost {
            vtable,
            capabilities,
            api,
            recorder,
            config_json: "{}".to_owned(),
            start_level: 0,
            instance: std::ptr::null_mut(),
            level: 0,
            _plugin: PhantomData,
        })
    }

    /// The plugin's config table as the daemon hands it: JSON, e.g. `r#"{"greeting":"hi"}"#`
    /// for `config = { greeting = "hi" }` in the ballast config.
    pub fn with_config(mut self, config_json: impl Into<String>) -> TestHost<P> {
        self.config_json = config_json.into();
        self
    }

    /// The level [`TestHost::create`] brings the plugin up at (0, full, by default), as the
    /// daemon starts a plugin at the fullest level that fits.
    pub fn with_level(mut self, level: u32) -> TestHost<P> {
        self.start_level = level;
        self
    }

    /// The host's clock.
    pub fn clock(&self) -> &TestClock {
        &self.recorder.clock
    }

    /// Whether an instance is alive (created and not destroyed).
    pub fn is_alive(&self) -> bool {
        !self.instance.is_null()
    }

    /// The level the live instance was last set to, `None` without one.
    pub fn level(&self) -> Option<u32> {
        self.is_alive().then_some(self.level)
    }

    /// Creates an instance with no checkpoint and brings it up: `create`, `start` and, at a
    /// level other than 0, `set_level`. When a step fails the instance is stopped and destroyed,
    /// as the daemon does, and the failure names the step.
    ///
    /// # Panics
    ///
    /// If an instance is alive already: the daemon never creates a second one.
    pub fn create(&mut self) -> Result<(), Failure> {
        self.create_from(&[])
    }

    /// As [`TestHost::create`], handing `create` the checkpoint a previous instance returned.
    ///
    /// # Panics
    ///
    /// If an instance is alive already.
    pub fn create_from(&mut self, checkpoint: &[u8]) -> Result<(), Failure> {
        assert!(
            !self.is_alive(),
            "TestHost<{}>: create with an instance alive; shed or destroy it first",
            P::INFO.name
        );
        let create = required(self.vtable.create, "create");
        let mut instance: *mut c_void = std::ptr::null_mut();
        let mut message = Message::new();
        // SAFETY: the SDK's own `create`, with a host table that lives forever, bytes borrowed
        // for the call and valid out-pointers.
        let status = self.enter(|| {
            message.with(|buf| unsafe {
                create(
                    self.api,
                    BallastBytes::new(self.config_json.as_bytes()),
                    BallastBytes::new(checkpoint),
                    &mut instance,
                    buf,
                )
            })
        });
        message.result("create", status)?;
        if instance.is_null() {
            return Err(Failure {
                operation: "create",
                kind: FailureKind::Refused,
                message: "create reported success but handed out no instance".to_owned(),
            });
        }
        self.instance = instance;
        self.level = 0;
        let started = self.lifecycle("start", self.vtable.start);
        let leveled = match started {
            Ok(()) if self.start_level != 0 => self.set_level(self.start_level),
            other => other,
        };
        if leveled.is_err() {
            let _ = self.stop();
            let _ = self.destroy();
        }
        leveled
    }

    /// Answers `request` with the plugin's `call`.
    ///
    /// # Panics
    ///
    /// Without a live instance.
    pub fn call(&self, request: impl AsRef<[u8]>) -> Result<Vec<u8>, Failure> {
        let instance = self.live("call");
        let call = required(self.vtable.call, "call");
        let mut response = BallastBuffer::EMPTY;
        let mut message = Message::new();
        // SAFETY: a live instance; the request is borrowed for the call; valid out-pointers.
        let status = self.enter(|| {
            message.with(|buf| unsafe {
                call(
                    instance,
                    BallastBytes::new(request.as_ref()),
                    &mut response,
                    buf,
                )
            })
        });
        let answer = self.take_buffer(response);
        message.result("call", status).map(|()| answer)
    }

    /// Answers `request` with the plugin's `call_stream`, taking its chunks as the daemon does
    /// and cancelling the call as `how` says.
    ///
    /// # Panics
    ///
    /// Without a live instance.
    pub fn call_stream(&self, request: impl AsRef<[u8]>, how: &StreamCall) -> Streamed {
        let instance = self.live("call_stream");
        let call_stream = self
            .vtable
            .call_stream
            .filter(|_| self.capabilities & BALLAST_CAP_STREAMING != 0);
        let deadline_ms = match how.deadline {
            None => 0,
            Some(Deadline::At(ms)) => ms,
            Some(Deadline::In(after)) => self
                .clock()
                .now_ms()
                .saturating_add(u64::try_from(after.as_millis()).unwrap_or(u64::MAX)),
        };
        let Some(call_stream) = call_stream else {
            // Not a streaming plugin: the daemon calls `call` and sends its answer as one chunk.
            return Streamed {
                chunks: Vec::new(),
                result: self.call(request),
                refused: 0,
            };
        };
        let mut io = StreamIo {
            chunks: Vec::new(),
            refused: 0,
            cancel_after: how.cancel_after,
            cancel: how.cancel.clone(),
            clock: self.clock().clone(),
            deadline_ms,
            advance_per_chunk: how.advance_per_chunk,
        };
        let ctx = BallastCallContext {
            struct_size: size_of::<BallastCallContext>() as u32,
            abi_minor: BALLAST_ABI_MINOR,
            host_data: std::ptr::from_mut(&mut io).cast(),
            send: Some(stream_send),
            is_cancelled: Some(stream_is_cancelled),
            deadline_ms,
        };
        let mut response = BallastBuffer::EMPTY;
        let mut message = Message::new();
        let status = {
            let _streaming = StreamingCall::enter(ctx.host_data);
            // SAFETY: a live instance; the request and the context (whose `host_data` is `io`,
            // reached only through the trampolines while this call runs on this thread) are
            // valid for the call; valid out-pointers.
            self.enter(|| {
                message.with(|buf| unsafe {
                    call_stream(
                        instance,
                        BallastBytes::new(request.as_ref()),
                        &ctx,
                        &mut response,
                        buf,
                    )
                })
            })
        };
        let last = self.take_buffer(response);
        Streamed {
            chunks: io.chunks,
            result: message.result("call_stream", status).map(|()| last),
            refused: io.refused,
        }
    }

    /// Switches the live instance to `level` with `set_level`; a level the plugin does not
    /// declare fails as [`FailureKind::Unsupported`] without reaching the plugin.
    ///
    /// # Panics
    ///
    /// Without a live instance.
    pub fn set_level(&mut self, level: u32) -> Result<(), Failure> {
        let instance = self.live("set_level");
        let set_level = required(self.vtable.set_level, "set_level");
        let mut message = Message::new();
        // SAFETY: a live instance and a valid message buffer; nothing else runs (`&mut self`).
        let status = self.enter(|| message.with(|buf| unsafe { set_level(instance, level, buf) }));
        message.result("set_level", status)?;
        self.level = level;
        Ok(())
    }

    /// Drains the live instance with `deadline`, as the daemon does before it disables a plugin
    /// (once the calls in flight have returned).
    ///
    /// # Panics
    ///
    /// Without a live instance.
    pub fn drain(&mut self, deadline: Duration) -> Result<(), Failure> {
        let instance = self.live("drain");
        let drain = required(self.vtable.drain, "drain");
        let deadline_ms = u64::try_from(deadline.as_millis()).unwrap_or(u64::MAX);
        let mut message = Message::new();
        // SAFETY: a live instance and a valid message buffer; nothing else runs (`&mut self`).
        let status =
            self.enter(|| message.with(|buf| unsafe { drain(instance, deadline_ms, buf) }));
        message.result("drain", status)
    }

    /// The live instance's checkpoint (empty when it keeps none).
    ///
    /// # Panics
    ///
    /// Without a live instance.
    pub fn checkpoint(&mut self) -> Result<Vec<u8>, Failure> {
        let instance = self.live("checkpoint");
        let Some(checkpoint) = self.vtable.checkpoint else {
            return Ok(Vec::new());
        };
        let mut out = BallastBuffer::EMPTY;
        let mut message = Message::new();
        // SAFETY: a live instance and valid out-pointers; nothing else runs (`&mut self`).
        let status =
            self.enter(|| message.with(|buf| unsafe { checkpoint(instance, &mut out, buf) }));
        let blob = self.take_buffer(out);
        message.result("checkpoint", status).map(|()| blob)
    }

    /// Stops the live instance's work with `stop`.
    ///
    /// # Panics
    ///
    /// Without a live instance.
    pub fn stop(&mut self) -> Result<(), Failure> {
        self.live("stop");
        self.lifecycle("stop", self.vtable.stop)
    }

    /// Destroys the live instance with `destroy` (without stopping it first; see
    /// [`TestHost::shed`] for the daemon's whole sequence). The instance is gone whatever the
    /// plugin answers.
    ///
    /// # Panics
    ///
    /// Without a live instance.
    pub fn destroy(&mut self) -> Result<(), Failure> {
        self.live("destroy");
        let result = self.lifecycle("destroy", self.vtable.destroy);
        self.instance = std::ptr::null_mut();
        result
    }

    /// Disables the live instance as the daemon sheds a plugin: `drain` with `deadline`, then
    /// `checkpoint`, `stop` and `destroy`, each run even when the one before failed. Returns the
    /// checkpoint for [`TestHost::create_from`], or the first failure.
    ///
    /// # Panics
    ///
    /// Without a live instance.
    pub fn shed(&mut self, deadline: Duration) -> Result<Vec<u8>, Failure> {
        let drained = self.drain(deadline);
        let checkpoint = self.checkpoint();
        let stopped = self.stop();
        let destroyed = self.destroy();
        drained?;
        let checkpoint = checkpoint?;
        stopped?;
        destroyed?;
        Ok(checkpoint)
    }

    /// The live instance's health: `Ok` with what `health` reports, `Err` when it panicked.
    ///
    /// # Panics
    ///
    /// Without a live instance.
    pub fn health(&self) -> Result<Health, Failure> {
        let instance = self.live("health");
        let health = required(self.vtable.health, "health");
        let mut message = Message::new();
        // SAFETY: a live instance and a valid message buffer.
        let status = self.enter(|| message.with(|buf| unsafe { health(instance, buf) }));
        match status {
            BALLAST_STATUS_OK => Ok(Health::Healthy),
            BALLAST_STATUS_DEGRADED => Ok(Health::Degraded(message.text())),
            BALLAST_STATUS_ERROR => Ok(Health::Unhealthy(message.text())),
            other => Err(message.failure("health", other)),
        }
    }

    /// The live instance's figures from `stats`.
    ///
    /// # Panics
    ///
    /// Without a live instance.
    pub fn stats(&self) -> Result<Stats, Failure> {
        let instance = self.live("stats");
        let stats = required(self.vtable.stats, "stats");
        let mut out = BallastStats {
            struct_size: size_of::<BallastStats>() as u32,
            ..BallastStats::default()
        };
        // SAFETY: a live instance and a stats struct of the size it declares.
        let status = self.enter(|| unsafe { stats(instance, &mut out) });
        if status != BALLAST_STATUS_OK {
            return Err(Failure {
                operation: "stats",
                kind: FailureKind::of(status),
                message: String::new(),
            });
        }
        Ok(Stats {
            threads: out.threads,
            alloc: (self.capabilities & BALLAST_CAP_ALLOC_STATS != 0).then_some(AllocStats {
                live_bytes: out.live_bytes,
                peak_bytes: out.peak_bytes,
                allocations: out.allocations,
            }),
        })
    }

    /// Everything the plugin logged to this host so far.
    pub fn logs(&self) -> Vec<LogRecord> {
        lock(&self.recorder.logs).clone()
    }

    /// Everything the plugin logged to this host so far, forgetting it.
    pub fn take_logs(&self) -> Vec<LogRecord> {
        std::mem::take(&mut *lock(&self.recorder.logs))
    }

    /// The gauges the plugin emitted ([`crate::Host::emit_metric`]), the latest value each.
    pub fn metrics(&self) -> BTreeMap<String, f64> {
        lock(&self.recorder.metrics).clone()
    }

    /// The state reports the plugin made ([`crate::Host::report_state`]), oldest first.
    pub fn state_reports(&self) -> Vec<StateReport> {
        lock(&self.recorder.reports).clone()
    }

    /// The live instance's pointer.
    ///
    /// # Panics
    ///
    /// Without one, naming `operation`.
    fn live(&self, operation: &str) -> *mut c_void {
        assert!(
            self.is_alive(),
            "TestHost<{}>: {operation} with no live instance; call create first",
            P::INFO.name
        );
        self.instance
    }

    /// Runs a lifecycle function that takes only the instance and a message buffer.
    fn lifecycle(
        &mut self,
        operation: &'static str,
        function: Option<
            unsafe extern "C" fn(*mut c_void, *mut BallastMessageBuf) -> BallastStatus,
        >,
    ) -> Result<(), Failure> {
        let function = required(function, operation);
        let instance = self.instance;
        let mut message = Message::new();
        // SAFETY: a live instance (checked by every caller) and a valid message buffer; nothing
        // else runs (`&mut self`).
        let status = self.enter(|| message.with(|buf| unsafe { function(instance, buf) }));
        message.result(operation, status)
    }

    /// Runs `f` with this host as the destination of `log` records made on this thread.
    fn enter<R>(&self, f: impl FnOnce() -> R) -> R {
        crate::host::with_test_host(self.api, f)
    }

    /// Copies out a buffer the plugin handed over and gives it back through `free_buffer`.
    fn take_buffer(&self, buffer: BallastBuffer) -> Vec<u8> {
        let bytes = if buffer.ptr.is_null() || buffer.len == 0 {
            Vec::new()
        } else {
            // SAFETY: the plugin hands out `len` readable bytes, valid until `free_buffer`.
            unsafe { std::slice::from_raw_parts(buffer.ptr, buffer.len) }.to_vec()
        };
        if let Some(free_buffer) = self.vtable.free_buffer {
            // SAFETY: a buffer this plugin handed out, given back once.
            unsafe { free_buffer(buffer) };
        }
        bytes
    }
}

impl<P: Plugin> Default for TestHost<P> {
    fn default() -> Self {
        TestHost::new()
    }
}

impl<P: Plugin> Drop for TestHost<P> {
    /// Stops and destroys a live instance, as the daemon does; failures are ignored, since
    /// there is nobody left to tell.
    fn drop(&mut self) {
        if self.is_alive() {
            let _ = self.stop();
            let _ = self.destroy();
        }
    }
}

/// Whether the SDK's counting allocator is this process's global allocator: its counters move
/// only when it is.
fn counting_allocator_installed() -> bool {
    let before = crate::alloc_stats().allocations;
    let probe = std::hint::black_box(Box::new([0u8; 64]));
    drop(probe);
    crate::alloc_stats().allocations != before
}

/// A function the SDK always exports.
///
/// # Panics
///
/// If it is missing, which would be a bug in the SDK.
fn required<F>(function: Option<F>, name: &str) -> F {
    function.unwrap_or_else(|| panic!("the SDK's vtable lacks {name}"))
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

/// Checks a descriptor as the daemon does when it loads a plugin file.
///
/// # Safety
///
/// Every pointer in `d` is valid as far as its length says.
unsafe fn validate(d: &ballast_abi::BallastPluginDescriptor) -> Result<(), Failure> {
    let refuse = |message: String| Failure {
        operation: "load",
        kind: FailureKind::Refused,
        message,
    };
    // SAFETY: the caller's promise.
    let name = unsafe { text_of(d.header.name) };
    if name.is_empty() {
        return Err(refuse("the plugin name is empty".to_owned()));
    }
    if name.len() > MAX_NAME_LEN {
        return Err(refuse(format!(
            "the plugin name is {} bytes long, the limit is {MAX_NAME_LEN}",
            name.len()
        )));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_'))
    {
        return Err(refuse(format!(
            "the plugin name contains `{c}`; use letters, digits, `-` and `_`"
        )));
    }
    // SAFETY: the caller's promise.
    let version = unsafe { text_of(d.version) };
    if version.len() > MAX_TEXT_LEN {
        return Err(refuse(format!(
            "the version is {} bytes long, the limit is {MAX_TEXT_LEN}",
            version.len()
        )));
    }
    let n_levels = d.hints.n_levels;
    if n_levels == 0 || n_levels > BALLAST_MAX_LEVELS {
        return Err(refuse(format!(
            "declares {n_levels} levels; a plugin has 1 to {BALLAST_MAX_LEVELS}"
        )));
    }
    for i in 0..n_levels {
        // SAFETY: the descriptor holds `n_levels` level entries.
        let level = unsafe { &*d.hints.levels.add(i as usize) };
        // SAFETY: the caller's promise.
        let level_name = unsafe { text_of(level.name) };
        if level_name.len() > MAX_TEXT_LEN {
            return Err(refuse(format!(
                "level {i} name is {} bytes long, the limit is {MAX_TEXT_LEN}",
                level_name.len()
            )));
        }
        if level.memory_min_bytes > level.memory_preferred_bytes {
            return Err(refuse(format!(
                "level {i} ({level_name}) needs at least {} bytes but prefers only {}",
                level.memory_min_bytes, level.memory_preferred_bytes
            )));
        }
    }
    Ok(())
}

/// A descriptor string.
///
/// # Safety
///
/// `s` points to `len` readable bytes (or `len` is 0).
unsafe fn text_of(s: BallastStr) -> String {
    if s.ptr.is_null() || s.len == 0 {
        return String::new();
    }
    // SAFETY: the caller's promise.
    String::from_utf8_lossy(unsafe { std::slice::from_raw_parts(s.ptr, s.len) }).into_owned()
}

/// A message buffer of the daemon's size.
struct Message {
    bytes: Box<[MaybeUninit<u8>; MESSAGE_CAPACITY]>,
    len: usize,
}

impl Message {
    fn new() -> Message {
        Message {
            bytes: Box::new([MaybeUninit::uninit(); MESSAGE_CAPACITY]),
            len: 0,
        }
    }

    fn with<R>(&mut self, f: impl FnOnce(&mut BallastMessageBuf) -> R) -> R {
        let mut buf = BallastMessageBuf {
            ptr: self.bytes.as_mut_ptr().cast(),
            cap: MESSAGE_CAPACITY,
            len: 0,
        };
        let result = f(&mut buf);
        self.len = buf.len.min(MESSAGE_CAPACITY);
        result
    }

    fn text(&self) -> String {
        // SAFETY: the plugin wrote `len` bytes (bounded by the capacity) at the buffer's start.
        let bytes =
            unsafe { std::slice::from_raw_parts(self.bytes.as_ptr().cast::<u8>(), self.len) };
        String::from_utf8_lossy(bytes).into_owned()
    }

    fn failure(&self, operation: &'static str, status: BallastStatus) -> Failure {
        Failure {
            operation,
            kind: FailureKind::of(status),
            message: self.text(),
        }
    }

    fn result(&self, operation: &'static str, status: BallastStatus) -> Result<(), Failure> {
        if status == BALLAST_STATUS_OK {
            Ok(())
        } else {
            Err(self.failure(operation, status))
        }
    }
}

/// A host string the plugin passed, bounded as the daemon bounds it.
///
/// # Safety
///
/// `s` points to `len` readable bytes for the call (or `len` is 0).
unsafe fn passed_text(s: BallastStr) -> String {
    if s.ptr.is_null() || s.len == 0 {
        return String::new();
    }
    let len = s.len.min(64 * 1024);
    // SAFETY: the caller's promise, bounded above.
    String::from_utf8_lossy(unsafe { std::slice::from_raw_parts(s.ptr, len) }).into_owned()
}

fn recorder<'a>(host_data: *mut c_void) -> Option<&'a Recorder> {
    // SAFETY: `host_data` is the leaked recorder this table was built with.
    (!host_data.is_null()).then(|| unsafe { &*host_data.cast::<Recorder>() })
}

unsafe extern "C" fn host_log(
    host_data: *mut c_void,
    level: u32,
    target: BallastStr,
    message: BallastStr,
) {
    let _ = catch_unwind(AssertUnwindSafe(|| {
        let Some(recorder) = recorder(host_data) else {
            return;
        };
        let level = match level {
            BALLAST_LOG_ERROR => log::Level::Error,
            BALLAST_LOG_WARN => log::Level::Warn,
            BALLAST_LOG_INFO => log::Level::Info,
            BALLAST_LOG_DEBUG => log::Level::Debug,
            _ => log::Level::Trace,
        };
        // SAFETY: the plugin passes strings valid for the call.
        let (target, message) = unsafe { (passed_text(target), passed_text(message)) };
        lock(&recorder.logs).push(LogRecord {
            level,
            target,
            message,
        });
    }));
}

unsafe extern "C" fn host_now_ms(host_data: *mut c_void) -> u64 {
    recorder(host_data).map_or(0, |r| r.clock.now_ms())
}

unsafe extern "C" fn host_emit_metric(host_data: *mut c_void, name: BallastStr, value: f64) {
    let _ = catch_unwind(AssertUnwindSafe(|| {
        let Some(recorder) = recorder(host_data) else {
            return;
        };
        // SAFETY: the plugin passes a string valid for the call.
        let name = unsafe { passed_text(name) };
        if !name.is_empty() && value.is_finite() {
            lock(&recorder.metrics).insert(name, value);
        }
    }));
}

unsafe extern "C" fn host_report_state(host_data: *mut c_void, healthy: u32, message: BallastStr) {
    let _ = catch_unwind(AssertUnwindSafe(|| {
        let Some(recorder) = recorder(host_data) else {
            return;
        };
        // SAFETY: the plugin passes a string valid for the call.
        let message = unsafe { passed_text(message) };
        lock(&recorder.reports).push(StateReport {
            healthy: healthy != 0,
            message,
        });
    }));
}

/// The host's side of one streamed call.
struct StreamIo {
    chunks: Vec<Vec<u8>>,
    refused: usize,
    cancel_after: Option<usize>,
    cancel: CancelHandle,
    clock: TestClock,
    deadline_ms: u64,
    advance_per_chunk: Duration,
}

impl StreamIo {
    fn is_cancelled(&self) -> bool {
        self.cancel.is_cancelled()
            || self.cancel_after.is_some_and(|n| self.chunks.len() >= n)
            || (self.deadline_ms != 0 && self.clock.now_ms() >= self.deadline_ms)
    }
}

thread_local! {
    /// The `host_data` of the streamed call running on this thread, as in the daemon: a context
    /// used from another thread or after its call gets an error, not a dangling `StreamIo`.
    static STREAMING: Cell<*mut c_void> = const { Cell::new(std::ptr::null_mut()) };
}

struct StreamingCall {
    previous: *mut c_void,
}

impl StreamingCall {
    fn enter(host_data: *mut c_void) -> StreamingCall {
        StreamingCall {
            previous: STREAMING.with(|s| s.replace(host_data)),
        }
    }
}

impl Drop for StreamingCall {
    fn drop(&mut self) {
        STREAMING.with(|s| s.set(self.previous));
    }
}

/// The running call's `StreamIo`, when `host_data` is the streamed call on this thread.
///
/// # Safety
///
/// While a [`StreamingCall`] for `host_data` is live on this thread, `host_data` is a
/// `StreamIo` nothing else uses; the reference must not outlive the trampoline's call.
unsafe fn current_io<'a>(host_data: *mut c_void) -> Option<&'a mut StreamIo> {
    let current = STREAMING.try_with(Cell::get).ok()?;
    if host_data.is_null() || current != host_data {
        return None;
    }
    // SAFETY: the caller's promise.
    Some(unsafe { &mut *host_data.cast::<StreamIo>() })
}

unsafe extern "C" fn stream_send(host_data: *mut c_void, chunk: BallastBytes) -> BallastStatus {
    catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: called by the plugin during the call, on its thread (checked).
        let Some(io) = (unsafe { current_io(host_data) }) else {
            return BALLAST_STATUS_INVALID_ARGUMENT;
        };
        if io.is_cancelled() {
            io.refused += 1;
            return BALLAST_STATUS_CANCELLED;
        }
        if chunk.ptr.is_null() || chunk.len == 0 {
            return BALLAST_STATUS_OK;
        }
        // SAFETY: the plugin passes `len` readable bytes for the call.
        io.chunks
            .push(unsafe { std::slice::from_raw_parts(chunk.ptr, chunk.len) }.to_vec());
        io.clock.advance(io.advance_per_chunk);
        BALLAST_STATUS_OK
    }))
    .unwrap_or(BALLAST_STATUS_ERROR)
}

unsafe extern "C" fn stream_is_cancelled(host_data: *mut c_void) -> u32 {
    catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: as in `stream_send`.
        match unsafe { current_io(host_data) } {
            Some(io) => u32::from(io.is_cancelled()),
            None => 1,
        }
    }))
    .unwrap_or(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{CallContext, CreateContext, LevelInfo, PluginError, PluginInfo};

    /// Exercises every host function and each way a call can end.
    struct Probe {
        host: crate::Host,
        level: u32,
        generation: u64,
        drained_with: Option<Duration>,
    }

    impl Plugin for Probe {
        const INFO: PluginInfo = PluginInfo {
            name: "probe",
            version: "1.0.0",
            levels: &[LevelInfo::new("full", 2048), LevelInfo::new("lite", 1024)],
            cpu_share: 0.1,
            needs_gpu: false,
        };

        fn create(ctx: CreateContext<'_>) -> Result<Self, PluginError> {
            if ctx.config_json().contains("\"fail\"") {
                return Err(PluginError::invalid("probe: config says fail"));
            }
            let generation = std::str::from_utf8(ctx.checkpoint())
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or(0)
                + 1;
            log::info!(
                "probe: generation {generation}, config {}",
                ctx.config_json()
            );
            Ok(Probe {
                host: *ctx.host(),
                level: 0,
                generation,
                drained_with: None,
            })
        }

        fn start(&mut self) -> Result<(), PluginError> {
            self.host.emit_metric("started", 1.0);
            Ok(())
        }

        fn set_level(&mut self, level: u32) -> Result<(), PluginError> {
            if level == 1 && self.generation > 5 {
                return Err(PluginError::new("probe: too old for lite"));
            }
            self.level = level;
            Ok(())
        }

        fn drain(&mut self, deadline: Duration) -> Result<(), PluginError> {
            self.drained_with = Some(deadline);
            log::warn!("probe: draining within {} ms", deadline.as_millis());
            Ok(())
        }

        fn call(&self, request: &[u8]) -> Result<Vec<u8>, PluginError> {
            match request {
                b"panic" => panic!("probe: asked to"),
                b"fail" => Err(PluginError::new("probe: asked to fail")),
                b"now" => Ok(self.host.now_ms().to_string().into_bytes()),
                b"report" => {
                    self.host.report_state(false, "probe: lost the line");
                    Ok(Vec::new())
                }
                b"long" => Err(PluginError::new("x".repeat(10_000))),
                other => Ok(format!(
                    "{}@{}:{}",
                    self.generation,
                    self.level,
                    String::from_utf8_lossy(other)
                )
                .into_bytes()),
            }
        }

        fn call_stream(
            &self,
            request: &[u8],
            ctx: &mut CallContext<'_>,
        ) -> Result<Vec<u8>, PluginError> {
            if request == b"deadline" {
                return Ok(format!("{:?}", ctx.deadline_ms()).into_bytes());
            }
            if request == b"look" {
                return if ctx.is_cancelled() {
                    Err(PluginError::cancelled("probe: cancelled before it began"))
                } else {
                    Ok(b"not cancelled".to_vec())
                };
            }
            let n: usize = std::str::from_utf8(request)
                .ok()
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| PluginError::invalid("probe: a count"))?;
            for i in 0..n {
                ctx.send(i.to_string().as_bytes())?;
            }
            Ok(b"end".to_vec())
        }

        fn health(&self) -> Health {
            if self.level == 1 {
                Health::Degraded("probe: lite".to_owned())
            } else {
                Health::Healthy
            }
        }

        fn threads(&self) -> u32 {
            3
        }

        fn checkpoint(&self) -> Result<Option<Vec<u8>>, PluginError> {
            let drained = self.drained_with.map_or(0, |d| d.as_millis());
            log::info!("probe: checkpoint after a drain of {drained} ms");
            Ok(Some(self.generation.to_string().into_bytes()))
        }
    }

    #[test]
    fn the_whole_lifecycle_through_the_abi() {
        let mut host = TestHost::<Probe>::new().with_config(r#"{"greeting":"hi"}"#);
        assert!(!host.is_alive());
        host.create().unwrap();
        assert_eq!(host.level(), Some(0));
        assert_eq!(host.call("a").unwrap(), b"1@0:a");
        assert_eq!(host.metrics().get("started"), Some(&1.0));
        host.set_level(1).unwrap();
        assert_eq!(host.call("b").unwrap(), b"1@1:b");
        assert_eq!(
            host.health().unwrap(),
            Health::Degraded("probe: lite".to_owned())
        );
        let stats = host.stats().unwrap();
        assert_eq!(stats.threads, 3);
        // The SDK's own unit tests install no counting allocator.
        assert_eq!(stats.alloc, None);

        let checkpoint = host.shed(Duration::from_millis(1500)).unwrap();
        assert_eq!(checkpoint, b"1");
        assert!(!host.is_alive());
        let logs = host.take_logs();
        let messages: Vec<&str> = logs.iter().map(|r| r.message.as_str()).collect();
        assert_eq!(
            messages,
            [
                r#"probe: generation 1, config {"greeting":"hi"}"#,
                "probe: draining within 1500 ms",
                "probe: checkpoint after a drain of 1500 ms",
            ]
        );
        assert_eq!(logs[1].level, log::Level::Warn);
        assert!(logs[0].target.ends_with("testing::tests"), "{:?}", logs[0]);

        host.create_from(&checkpoint).unwrap();
        assert_eq!(host.call("c").unwrap(), b"2@0:c");
        assert!(
            host.take_logs()[0]
                .message
                .starts_with("probe: generation 2")
        );
    }

    #[test]
    fn create_brings_the_plugin_up_at_the_level_given() {
        let mut host = TestHost::<Probe>::new().with_level(1);
        host.create().unwrap();
        assert_eq!(host.level(), Some(1));
        assert_eq!(host.call("x").unwrap(), b"1@1:x");
    }

    #[test]
    fn a_failed_step_of_create_names_it_and_leaves_no_instance() {
        let mut host = TestHost::<Probe>::new().with_config(r#"{"fail":true}"#);
        let failure = host.create().unwrap_err();
        assert_eq!(
            failure,
            Failure {
                operation: "create",
                kind: FailureKind::InvalidArgument,
                message: "probe: config says fail".to_owned(),
            }
        );
        assert!(!host.is_alive());

        let mut host = TestHost::<Probe>::new().with_level(1);
        let failure = host.create_from(b"9").unwrap_err();
        assert_eq!(failure.operation, "set_level");
        assert_eq!(failure.kind, FailureKind::Failed);
        assert_eq!(
            failure.to_string(),
            "set_level failed (Failed): probe: too old for lite"
        );
        assert!(!host.is_alive());
    }

    #[test]
    fn errors_and_panics_come_back_as_statuses() {
        let mut host = TestHost::<Probe>::new();
        host.create().unwrap();
        let panicked = host.call("panic").unwrap_err();
        assert_eq!(panicked.kind, FailureKind::Panicked);
        assert_eq!(panicked.message, "plugin panicked: probe: asked to");
        // The panic hook reported it to the host too.
        assert!(
            host.logs()
                .iter()
                .any(|r| r.level == log::Level::Error && r.message.contains("probe: asked to")),
            "{:?}",
            host.logs()
        );
        assert_eq!(host.call("fail").unwrap_err().kind, FailureKind::Failed);
        // Messages are cut to the daemon's buffer.
        assert_eq!(
            host.call("long").unwrap_err().message.len(),
            MESSAGE_CAPACITY
        );
        let refused = host.set_level(2).unwrap_err();
        assert_eq!(refused.kind, FailureKind::Unsupported);
        assert!(
            refused.message.contains("level 2 is not supported"),
            "{refused}"
        );
        assert_eq!(host.level(), Some(0));
    }

    #[test]
    fn the_clock_and_state_reports_reach_the_plugin_and_the_test() {
        let mut host = TestHost::<Probe>::new();
        host.create().unwrap();
        assert_eq!(
            host.call("now").unwrap(),
            TestClock::START_MS.to_string().as_bytes()
        );
        host.clock().advance(Duration::from_secs(2));
        assert_eq!(
            host.call("now").unwrap(),
            (TestClock::START_MS + 2000).to_string().as_bytes()
        );
        host.call("report").unwrap();
        assert_eq!(
            host.state_reports(),
            [StateReport {
                healthy: false,
                message: "probe: lost the line".to_owned()
            }]
        );
    }

    #[test]
    fn streamed_chunks_arrive_in_order_until_the_call_is_cancelled() {
        let mut host = TestHost::<Probe>::new();
        host.create().unwrap();
        let whole = host.call_stream("3", &StreamCall::new());
        assert_eq!(whole.chunks, [b"0", b"1", b"2"]);
        assert_eq!(whole.result, Ok(b"end".to_vec()));
        assert_eq!(whole.whole(), Some(b"012end".to_vec()));
        assert_eq!(whole.refused, 0);

        let cut = host.call_stream("100", &StreamCall::new().cancel_after(2));
        assert_eq!(cut.chunks, [b"0", b"1"]);
        assert_eq!(
            cut.result.as_ref().unwrap_err().kind,
            FailureKind::Cancelled
        );
        assert_eq!(cut.refused, 1);
        assert_eq!(cut.whole(), None);

        let early = host.call_stream("look", &StreamCall::new().cancelled());
        assert_eq!(
            early.result.unwrap_err().message,
            "probe: cancelled before it began"
        );
    }

    #[test]
    fn a_deadline_passes_as_the_clock_moves() {
        let mut host = TestHost::<Probe>::new();
        host.create().unwrap();
        let start = host.clock().now_ms();
        let told = host.call_stream(
            "deadline",
            &StreamCall::new().deadline_in(Duration::from_secs(1)),
        );
        assert_eq!(
            told.result,
            Ok(format!("Some({})", start + 1000).into_bytes())
        );
        let none = host.call_stream("deadline", &StreamCall::new());
        assert_eq!(none.result, Ok(b"None".to_vec()));

        // Each chunk takes 300 ms of host time: the fourth would be past the deadline.
        let how = StreamCall::new()
            .deadline_in(Duration::from_secs(1))
            .advance_clock_per_chunk(Duration::from_millis(300));
        let streamed = host.call_stream("10", &how);
        assert_eq!(streamed.chunks.len(), 4);
        assert_eq!(streamed.result.unwrap_err().kind, FailureKind::Cancelled);
        assert_eq!(host.clock().now_ms(), start + 1200);
    }

    #[test]
    fn a_call_can_be_cancelled_from_another_thread() {
        struct Waiter;
        impl Plugin for Waiter {
            const INFO: PluginInfo = PluginInfo {
                name: "waiter",
                version: "1",
                levels: &[LevelInfo::new("full", 1)],
                cpu_share: 0.0,
                needs_gpu: false,
            };
            fn create(_: CreateContext<'_>) -> Result<Self, PluginError> {
                Ok(Waiter)
            }
            fn call(&self, _: &[u8]) -> Result<Vec<u8>, PluginError> {
                Ok(Vec::new())
            }
            fn call_stream(
                &self,
                _: &[u8],
                ctx: &mut CallContext<'_>,
            ) -> Result<Vec<u8>, PluginError> {
                ctx.send(b"waiting")?;
                WAITING.store(true, Ordering::SeqCst);
                while !ctx.is_cancelled() {
                    std::thread::yield_now();
                }
                Err(PluginError::cancelled("waiter: stopped"))
            }
        }
        static WAITING: AtomicBool = AtomicBool::new(false);
        let mut host = TestHost::<Waiter>::new();
        host.create().unwrap();
        let how = StreamCall::new();
        let handle = how.cancel_handle();
        let streamed = std::thread::scope(|s| {
            let call = s.spawn(|| host.call_stream("", &how));
            // Cancel once the plugin waits, having sent its first chunk.
            while !WAITING.load(Ordering::SeqCst) {
                std::thread::yield_now();
            }
            handle.cancel();
            call.join().unwrap()
        });
        assert_eq!(streamed.chunks, [b"waiting"]);
        assert_eq!(streamed.result.unwrap_err().message, "waiter: stopped");
    }

    #[test]
    fn calls_run_on_several_threads_at_once() {
        let mut host = TestHost::<Probe>::new();
        host.create().unwrap();
        std::thread::scope(|s| {
            let calls: Vec<_> = (0..4)
                .map(|i| {
                    let host = &host;
                    s.spawn(move || host.call(format!("t{i}")).unwrap())
                })
                .collect();
            for (i, call) in calls.into_iter().enumerate() {
                assert_eq!(call.join().unwrap(), format!("1@0:t{i}").into_bytes());
            }
        });
    }

    #[test]
    fn a_descriptor_the_daemon_would_refuse_is_refused() {
        struct BadName;
        impl Plugin for BadName {
            const INFO: PluginInfo = PluginInfo {
                name: "bad name",
                version: "1",
                levels: &[LevelInfo::new("full", 1)],
                cpu_share: 0.0,
                needs_gpu: false,
            };
            fn create(_: CreateContext<'_>) -> Result<Self, PluginError> {
                Ok(BadName)
            }
            fn call(&self, _: &[u8]) -> Result<Vec<u8>, PluginError> {
                Ok(Vec::new())
            }
        }
        struct NoLevels;
        impl Plugin for NoLevels {
            const INFO: PluginInfo = PluginInfo {
                name: "no-levels",
                version: "1",
                levels: &[],
                cpu_share: 0.0,
                needs_gpu: false,
            };
            fn create(_: CreateContext<'_>) -> Result<Self, PluginError> {
                Ok(NoLevels)
            }
            fn call(&self, _: &[u8]) -> Result<Vec<u8>, PluginError> {
                Ok(Vec::new())
            }
        }
        struct Upside;
        impl Plugin for Upside {
            const INFO: PluginInfo = PluginInfo {
                name: "upside",
                version: "1",
                levels: &[LevelInfo {
                    name: "full",
                    memory_min_bytes: 10,
                    memory_preferred_bytes: 5,
                    gpu_memory_bytes: 0,
                }],
                cpu_share: 0.0,
                needs_gpu: false,
            };
            fn create(_: CreateContext<'_>) -> Result<Self, PluginError> {
                Ok(Upside)
            }
            fn call(&self, _: &[u8]) -> Result<Vec<u8>, PluginError> {
                Ok(Vec::new())
            }
        }
        let refused = |failure: Failure| {
            assert_eq!(failure.kind, FailureKind::Refused);
            failure.message
        };
        assert_eq!(
            refused(TestHost::<BadName>::try_new().unwrap_err()),
            "the plugin name contains ` `; use letters, digits, `-` and `_`"
        );
        assert_eq!(
            refused(TestHost::<NoLevels>::try_new().unwrap_err()),
            "declares 0 levels; a plugin has 1 to 16"
        );
        assert_eq!(
            refused(TestHost::<Upside>::try_new().unwrap_err()),
            "level 0 (full) needs at least 10 bytes but prefers only 5"
        );
        assert!(TestHost::<Probe>::try_new().is_ok());
    }

    #[test]
    #[should_panic(expected = "TestHost<probe>: call with no live instance; call create first")]
    fn a_call_without_an_instance_is_a_mistake_in_the_test() {
        let host = TestHost::<Probe>::new();
        let _ = host.call("x");
    }

    #[test]
    fn dropping_the_host_stops_and_destroys_the_instance() {
        struct Loud;
        impl Plugin for Loud {
            const INFO: PluginInfo = PluginInfo {
                name: "loud",
                version: "1",
                levels: &[LevelInfo::new("full", 1)],
                cpu_share: 0.0,
                needs_gpu: false,
            };
            fn create(_: CreateContext<'_>) -> Result<Self, PluginError> {
                Ok(Loud)
            }
            fn stop(&mut self) -> Result<(), PluginError> {
                STOPPED.fetch_add(1, Ordering::SeqCst);
                Ok(())
            }
            fn call(&self, _: &[u8]) -> Result<Vec<u8>, PluginError> {
                Ok(Vec::new())
            }
        }
        impl Drop for Loud {
            fn drop(&mut self) {
                DROPPED.fetch_add(1, Ordering::SeqCst);
            }
        }
        static STOPPED: AtomicU64 = AtomicU64::new(0);
        static DROPPED: AtomicU64 = AtomicU64::new(0);
        let mut host = TestHost::<Loud>::new();
        host.create().unwrap();
        drop(host);
        assert_eq!(STOPPED.load(Ordering::SeqCst), 1);
        assert_eq!(DROPPED.load(Ordering::SeqCst), 1);
    }
}
