//! One live plugin instance behind the vtable: every unsafe call into a plugin is in this file.
//!
//! The host keeps the ABI's promises here: lifecycle functions never run concurrently with calls
//! (a gate lock), calls of plugins without `thread_safe_calls` are serialized, plugin buffers go
//! back through the plugin's own `free_buffer`, and `destroy` runs exactly once, when the last
//! holder (possibly a call still finishing after a drain deadline) lets go.
//!
//! A streamed call to a plugin that streams (ABI 1.1 `call_stream`) hands the plugin a
//! `BallastCallContext` built on this thread's stack whose `host_data` is the call's
//! [`CallIo`]; the `send` and `is_cancelled` trampolines here reach it only while that call runs
//! on this thread, and never let a panic unwind into the plugin.

use std::cell::Cell;
use std::ffi::c_void;
use std::mem::MaybeUninit;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock, RwLockWriteGuard};
use std::time::{Duration, Instant};

use ballast_abi::{
    BALLAST_ABI_MINOR, BALLAST_STATUS_CANCELLED, BALLAST_STATUS_DEGRADED,
    BALLAST_STATUS_INVALID_ARGUMENT, BALLAST_STATUS_OK, BALLAST_STATUS_PANIC, BallastBuffer,
    BallastBytes, BallastCallContext, BallastHostApi, BallastMessageBuf, BallastStats,
    BallastStatus,
};

use crate::host_api::{Clock, leak_host_api};
use crate::library::PluginLibrary;
use crate::stream::{CallIo, CancelReason};
use crate::tap::Tap;

/// Room for a plugin's error message.
const MESSAGE_CAPACITY: usize = 4096;

/// A plugin function returned a failure status.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PluginFault {
    /// The ABI status code.
    pub status: BallastStatus,
    /// The plugin's message (may be empty).
    pub message: String,
}

impl PluginFault {
    /// Whether the plugin reported a caught panic.
    pub fn is_panic(&self) -> bool {
        self.status == BALLAST_STATUS_PANIC
    }

    /// Whether the plugin stopped because its call was cancelled.
    pub fn is_cancelled(&self) -> bool {
        self.status == BALLAST_STATUS_CANCELLED
    }

    fn host(message: impl Into<String>) -> Self {
        PluginFault {
            status: ballast_abi::BALLAST_STATUS_ERROR,
            message: message.into(),
        }
    }
}

impl std::fmt::Display for PluginFault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self.status {
            ballast_abi::BALLAST_STATUS_ERROR => "error",
            BALLAST_STATUS_PANIC => "panic",
            ballast_abi::BALLAST_STATUS_UNSUPPORTED => "unsupported",
            ballast_abi::BALLAST_STATUS_INVALID_ARGUMENT => "invalid argument",
            BALLAST_STATUS_DEGRADED => "degraded",
            BALLAST_STATUS_CANCELLED => "cancelled",
            _ => "unknown status",
        };
        if self.message.is_empty() {
            write!(f, "{kind} (status {})", self.status)
        } else {
            write!(f, "{kind}: {}", self.message)
        }
    }
}

/// A message buffer the plugin writes into: on the stack and never zeroed, since only the bytes
/// the plugin reports writing are read back.
struct Message {
    bytes: [MaybeUninit<u8>; MESSAGE_CAPACITY],
    len: usize,
}

impl Message {
    fn new() -> Message {
        Message {
            bytes: [MaybeUninit::uninit(); MESSAGE_CAPACITY],
            len: 0,
        }
    }

    /// Runs `f` with an ABI view of this buffer and keeps the length it reports.
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
        // SAFETY: the plugin wrote `len` bytes (bounded by the capacity) at the start of the buffer.
        let bytes =
            unsafe { std::slice::from_raw_parts(self.bytes.as_ptr().cast::<u8>(), self.len) };
        String::from_utf8_lossy(bytes).into_owned()
    }

    fn result(&self, status: BallastStatus) -> Result<(), PluginFault> {
        if status == BALLAST_STATUS_OK {
            Ok(())
        } else {
            Err(PluginFault {
                status,
                message: self.text(),
            })
        }
    }
}

/// A plugin instance created by `create`, destroyed on drop.
pub(crate) struct Instance {
    library: Arc<PluginLibrary>,
    ptr: *mut c_void,
    /// Calls hold it shared, lifecycle functions exclusively.
    gate: RwLock<()>,
    /// Serializes calls of plugins that are not thread-safe.
    serial: Option<Mutex<()>>,
    stopped: AtomicBool,
    /// Counts the calls inside the plugin at once, for the conformance check.
    tap: Option<Arc<Tap>>,
}

// SAFETY: the instance pointer is only used through the plugin's vtable under the locking rules
// above, which are exactly what the ABI requires for calls from several threads.
unsafe impl Send for Instance {}
// SAFETY: as above.
unsafe impl Sync for Instance {}

impl Instance {
    /// Calls `create` with the config JSON and the last checkpoint; `tap` (the check's) counts
    /// the calls inside it at once.
    pub(crate) fn create(
        library: Arc<PluginLibrary>,
        host_api: &'static BallastHostApi,
        config_json: &[u8],
        checkpoint: &[u8],
        tap: Option<Arc<Tap>>,
    ) -> Result<Instance, PluginFault> {
        let Some(create) = library.vtable().create else {
            return Err(PluginFault::host("plugin has no create function"));
        };
        let mut message = Message::new();
        let mut ptr: *mut c_void = std::ptr::null_mut();
        // SAFETY: a validated vtable function, called with a host table that lives forever,
        // borrowed bytes valid for the call, and valid out-pointers.
        let status = message.with(|buf| unsafe {
            create(
                host_api,
                BallastBytes::new(config_json),
                BallastBytes::new(checkpoint),
                &mut ptr,
                buf,
            )
        });
        message.result(status)?;
        if ptr.is_null() {
            return Err(PluginFault::host(
                "create reported success but returned no instance",
            ));
        }
        let serial = (!library.thread_safe_calls()).then(|| Mutex::new(()));
        Ok(Instance {
            library,
            ptr,
            gate: RwLock::new(()),
            serial,
            stopped: AtomicBool::new(false),
            tap,
        })
    }

    /// Takes the gate exclusively, waiting at most `wait` for calls in flight to finish.
    fn exclusive(&self, wait: Duration) -> Result<RwLockWriteGuard<'_, ()>, PluginFault> {
        let deadline = Instant::now() + wait;
        loop {
            match self.gate.try_write() {
                Ok(guard) => return Ok(guard),
                Err(std::sync::TryLockError::Poisoned(p)) => return Ok(p.into_inner()),
                Err(std::sync::TryLockError::WouldBlock) => {
                    if Instant::now() >= deadline {
                        return Err(PluginFault::host(format!(
                            "calls still running after {}",
                            humantime::format_duration(wait)
                        )));
                    }
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
        }
    }

    fn lifecycle(
        &self,
        wait: Duration,
        f: impl FnOnce(*mut c_void, &mut BallastMessageBuf) -> BallastStatus,
    ) -> Result<(), PluginFault> {
        let _gate = self.exclusive(wait)?;
        let mut message = Message::new();
        let status = message.with(|buf| f(self.ptr, buf));
        message.result(status)
    }

    /// Calls `start`.
    pub(crate) fn start(&self, wait: Duration) -> Result<(), PluginFault> {
        let start = self.library.vtable().start;
        self.lifecycle(wait, |ptr, buf| match start {
            // SAFETY: a validated vtable function on this live instance, under the exclusive gate.
            Some(f) => unsafe { f(ptr, buf) },
            None => ballast_abi::BALLAST_STATUS_UNSUPPORTED,
        })
    }

    /// Calls `set_level`.
    pub(crate) fn set_level(&self, level: u32, wait: Duration) -> Result<(), PluginFault> {
        let set_level = self.library.vtable().set_level;
        self.lifecycle(wait, |ptr, buf| match set_level {
            // SAFETY: as in `start`.
            Some(f) => unsafe { f(ptr, level, buf) },
            None => ballast_abi::BALLAST_STATUS_UNSUPPORTED,
        })
    }

    /// Calls `drain` with `deadline`.
    pub(crate) fn drain(&self, deadline: Duration) -> Result<(), PluginFault> {
        let drain = self.library.vtable().drain;
        let deadline_ms = u64::try_from(deadline.as_millis()).unwrap_or(u64::MAX);
        self.lifecycle(deadline, |ptr, buf| match drain {
            // SAFETY: as in `start`.
            Some(f) => unsafe { f(ptr, deadline_ms, buf) },
            None => ballast_abi::BALLAST_STATUS_UNSUPPORTED,
        })
    }

    /// Calls `stop` (once).
    pub(crate) fn stop(&self, wait: Duration) -> Result<(), PluginFault> {
        if self.stopped.swap(true, Ordering::SeqCst) {
            return Ok(());
        }
        let stop = self.library.vtable().stop;
        self.lifecycle(wait, |ptr, buf| match stop {
            // SAFETY: as in `start`.
            Some(f) => unsafe { f(ptr, buf) },
            None => ballast_abi::BALLAST_STATUS_UNSUPPORTED,
        })
    }

    /// Calls `checkpoint`, if the plugin has one.
    pub(crate) fn checkpoint(&self, wait: Duration) -> Result<Option<Vec<u8>>, PluginFault> {
        let vtable = self.library.vtable();
        let (Some(checkpoint), Some(free)) = (vtable.checkpoint, vtable.free_buffer) else {
            return Ok(None);
        };
        let _gate = self.exclusive(wait)?;
        let mut message = Message::new();
        let mut out = BallastBuffer::EMPTY;
        // SAFETY: as in `start`, with a valid out-buffer.
        let status = message.with(|buf| unsafe { checkpoint(self.ptr, &mut out, buf) });
        message.result(status)?;
        // SAFETY: the plugin handed out `out`; it is copied and given back through its own free.
        let blob = unsafe { take_buffer(out, free) };
        Ok(Some(blob))
    }

    /// A streamed call: the chunks go to `io` as the plugin produces them, and the answer is the
    /// plugin's last piece (empty when it streamed everything); the caller sends a non-empty
    /// answer as the last chunk. A plugin that does not stream is called with `call` and its
    /// whole answer sent to `io` as one chunk; the answer is then empty.
    ///
    /// A plugin that stopped because the call was cancelled returns a fault with
    /// [`BALLAST_STATUS_CANCELLED`] whose message names the reason.
    pub(crate) fn call_stream(
        &self,
        request: &[u8],
        io: &mut CallIo,
    ) -> Result<Vec<u8>, PluginFault> {
        let vtable = self.library.vtable();
        // The library keeps `call_stream` only for a 1.1 plugin that declares streaming.
        let (Some(call_stream), Some(free)) = (vtable.call_stream, vtable.free_buffer) else {
            let answer = self.call(request)?;
            io.send(&answer);
            return Ok(Vec::new());
        };
        let _gate = self.gate.read().unwrap_or_else(|p| p.into_inner());
        let _serial = self
            .serial
            .as_ref()
            .map(|m| m.lock().unwrap_or_else(|p| p.into_inner()));
        let deadline_ms = io.deadline().map_or(0, |at| at.as_millis().max(1));
        let _inside = self.tap.as_ref().map(|t| t.enter());
        let io_ptr: *mut CallIo = &mut *io;
        let ctx = BallastCallContext {
            struct_size: size_of::<BallastCallContext>() as u32,
            abi_minor: BALLAST_ABI_MINOR,
            host_data: io_ptr.cast(),
            send: Some(host_send),
            is_cancelled: Some(host_is_cancelled),
            deadline_ms,
        };
        let mut message = Message::new();
        let mut out = BallastBuffer::EMPTY;
        let status = {
            let _streaming = StreamingCall::enter(ctx.host_data);
            // SAFETY: as in `call`, with a context that lives on this stack for the whole call and
            // whose `host_data` is the exclusive `io`, which nothing else touches until it returns.
            message.with(|buf| unsafe {
                call_stream(self.ptr, BallastBytes::new(request), &ctx, &mut out, buf)
            })
        };
        if status != BALLAST_STATUS_OK {
            // SAFETY: as below.
            unsafe { take_buffer(out, free) };
            let mut message = message.text();
            if status == BALLAST_STATUS_CANCELLED {
                let why = match io.cancel_reason() {
                    Some(reason) => format!("the call was cancelled because {}", reason.describe()),
                    None => "the plugin stopped as if cancelled, but the call was not".to_owned(),
                };
                message = if message.is_empty() {
                    why
                } else {
                    format!("{why}; the plugin says: {message}")
                };
            }
            return Err(PluginFault { status, message });
        }
        // SAFETY: the plugin handed out `out`; it is copied and given back through its own free.
        Ok(unsafe { take_buffer(out, free) })
    }

    /// Calls `call` with `request`, returning the plugin's response bytes.
    pub(crate) fn call(&self, request: &[u8]) -> Result<Vec<u8>, PluginFault> {
        let vtable = self.library.vtable();
        let (Some(call), Some(free)) = (vtable.call, vtable.free_buffer) else {
            return Err(PluginFault::host("plugin has no call function"));
        };
        let _gate = self.gate.read().unwrap_or_else(|p| p.into_inner());
        let _serial = self
            .serial
            .as_ref()
            .map(|m| m.lock().unwrap_or_else(|p| p.into_inner()));
        let _inside = self.tap.as_ref().map(|t| t.enter());
        let mut message = Message::new();
        let mut out = BallastBuffer::EMPTY;
        // SAFETY: a validated vtable function on this live instance; calls run concurrently only
        // for thread-safe plugins (else `serial` is held); request and out-pointers are valid.
        let status = message
            .with(|buf| unsafe { call(self.ptr, BallastBytes::new(request), &mut out, buf) });
        if status != BALLAST_STATUS_OK {
            // A failing plugin should not hand out a buffer, but free one if it did.
            // SAFETY: as below.
            unsafe { take_buffer(out, free) };
            return Err(PluginFault {
                status,
                message: message.text(),
            });
        }
        // SAFETY: the plugin handed out `out`; it is copied and given back through its own free.
        Ok(unsafe { take_buffer(out, free) })
    }

    /// Calls `health`: `Ok(message)` when healthy, else the fault (DEGRADED counts as a fault
    /// with that status).
    pub(crate) fn health(&self) -> Result<String, PluginFault> {
        let Some(health) = self.library.vtable().health else {
            return Ok(String::new());
        };
        let _gate = self.gate.read().unwrap_or_else(|p| p.into_inner());
        let _serial = self
            .serial
            .as_ref()
            .map(|m| m.lock().unwrap_or_else(|p| p.into_inner()));
        let mut message = Message::new();
        // SAFETY: as in `call`.
        let status = message.with(|buf| unsafe { health(self.ptr, buf) });
        message.result(status).map(|()| message.text())
    }

    /// Calls `stats`.
    pub(crate) fn stats(&self) -> Option<BallastStats> {
        let stats = self.library.vtable().stats?;
        let _gate = self.gate.read().unwrap_or_else(|p| p.into_inner());
        let _serial = self
            .serial
            .as_ref()
            .map(|m| m.lock().unwrap_or_else(|p| p.into_inner()));
        let mut out = BallastStats {
            struct_size: size_of::<BallastStats>() as u32,
            ..BallastStats::default()
        };
        // SAFETY: as in `call`, with a valid stats struct of the declared size.
        let status = unsafe { stats(self.ptr, &mut out) };
        (status == BALLAST_STATUS_OK).then_some(out)
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        // No other reference exists any more, so nothing can be in flight: stop (if not done) and
        // destroy. Failures here are logged; there is nobody left to return them to.
        let name = self.library.info().name.clone();
        if let Err(fault) = self.stop(Duration::ZERO) {
            tracing::warn!(plugin = %name, %fault, "plugin stop failed during destroy");
        }
        if let Some(destroy) = self.library.vtable().destroy {
            let mut message = Message::new();
            // SAFETY: the instance is live and referenced by nobody else; destroy is called once.
            let status = message.with(|buf| unsafe { destroy(self.ptr, buf) });
            if let Err(fault) = message.result(status) {
                tracing::warn!(plugin = %name, %fault, "plugin destroy failed");
            }
        }
        release_freed_memory();
    }
}

thread_local! {
    /// The `host_data` of the streamed call running on this thread (null when none): the
    /// trampolines answer only for it, so a plugin that keeps its context past the call or uses
    /// it from another thread gets an error instead of reaching a `CallIo` that is gone or in use.
    static STREAMING: Cell<*mut c_void> = const { Cell::new(std::ptr::null_mut()) };
}

/// Marks a streamed call as running on this thread until dropped.
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

/// The call's `CallIo`, when `host_data` is the streamed call running on this thread.
///
/// # Safety
///
/// While a [`StreamingCall`] for `host_data` is live on this thread, `host_data` is a `CallIo`
/// that nothing else uses; the returned reference must not outlive the trampoline's call.
unsafe fn current_io<'a>(host_data: *mut c_void) -> Option<&'a mut CallIo> {
    let current = STREAMING.try_with(Cell::get).ok()?;
    if host_data.is_null() || current != host_data {
        return None;
    }
    // SAFETY: the caller's promise: this is the running call's exclusive `CallIo`.
    Some(unsafe { &mut *host_data.cast::<CallIo>() })
}

/// `BallastCallContext::send`: copies the chunk into the call's sink.
unsafe extern "C" fn host_send(host_data: *mut c_void, chunk: BallastBytes) -> BallastStatus {
    let sent = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: the trampoline runs during the plugin's call, which holds the only other use of
        // the `CallIo` (the host's own frame, waiting for the plugin to return).
        let Some(io) = (unsafe { current_io(host_data) }) else {
            return BALLAST_STATUS_INVALID_ARGUMENT;
        };
        let bytes: &[u8] = match (chunk.ptr.is_null(), chunk.len) {
            (_, 0) => &[],
            (true, _) => return BALLAST_STATUS_INVALID_ARGUMENT,
            // SAFETY: the plugin lends `len` readable bytes at `ptr` for the duration of `send`.
            (false, len) => unsafe { std::slice::from_raw_parts(chunk.ptr, len) },
        };
        let going_on = if bytes.is_empty() {
            !io.is_cancelled()
        } else {
            io.send(bytes)
        };
        if going_on {
            BALLAST_STATUS_OK
        } else {
            BALLAST_STATUS_CANCELLED
        }
    }));
    sent.unwrap_or_else(|_| {
        // The sink panicked: nobody can take the chunks any more, so the call is cancelled.
        // SAFETY: as above; the reference the closure held ended with the unwind.
        if let Some(io) = unsafe { current_io(host_data) } {
            io.token().cancel(CancelReason::Caller);
        }
        tracing::error!("the sink of a streamed call panicked; the call is cancelled");
        BALLAST_STATUS_CANCELLED
    })
}

/// `BallastCallContext::is_cancelled`: nonzero once the call is cancelled or its deadline passed.
unsafe extern "C" fn host_is_cancelled(host_data: *mut c_void) -> u32 {
    let cancelled = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: as in `host_send`.
        match unsafe { current_io(host_data) } {
            Some(io) => io.is_cancelled(),
            None => true,
        }
    }));
    u32::from(cancelled.unwrap_or(true))
}

/// A native plugin instance driven directly, without the host's lifecycle, queue or worker
/// threads: for tools that measure or test a plugin's calls (benchmarks, tests). The daemon goes
/// through [`crate::PluginHost`]. The instance keeps the ABI's rules as the host does (calls
/// serialized unless the plugin is thread-safe, buffers freed by the plugin) and is stopped and
/// destroyed on drop.
pub struct NativeInstance {
    instance: Instance,
}

impl std::fmt::Debug for NativeInstance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NativeInstance")
            .field("plugin", &self.instance.library.info().name)
            .finish_non_exhaustive()
    }
}

impl NativeInstance {
    /// Creates an instance of `library` from `config_json` (no checkpoint) with `clock` as its
    /// host clock, and starts it. Each instance leaks its small host table, which the ABI needs
    /// to live until the process exits.
    pub fn start(
        library: Arc<PluginLibrary>,
        config_json: &[u8],
        clock: Clock,
    ) -> Result<NativeInstance, PluginFault> {
        let (host_api, _) = leak_host_api(&library.info().name, clock, Arc::new(|_| {}));
        let instance = Instance::create(library, host_api.0, config_json, &[], None)?;
        instance.start(Duration::from_secs(30))?;
        Ok(NativeInstance { instance })
    }

    /// Calls `call` with `request`, returning the plugin's answer.
    pub fn call(&self, request: &[u8]) -> Result<Vec<u8>, PluginFault> {
        self.instance.call(request)
    }

    /// A streamed call, as the host makes it: chunks go to `io` while the plugin runs; the
    /// answer is the plugin's last piece (empty for a plugin that streamed everything, and for
    /// one that does not stream, whose whole answer went to `io` as one chunk).
    pub fn call_stream(&self, request: &[u8], io: &mut CallIo) -> Result<Vec<u8>, PluginFault> {
        self.instance.call_stream(request, io)
    }
}

/// Hands the memory a destroyed plugin freed back to the machine. glibc keeps freed small
/// allocations in its arenas (one per thread that allocated, and the plugin's calls ran on
/// many), so without this a shed plugin's memory would stay in the daemon's RSS and shedding
/// would not relieve the pressure it was for. `malloc_trim` returns every whole free page.
fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim(3) only walks the allocator's own free lists; any pad is valid.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Copies a plugin buffer and gives it back to the plugin.
///
/// # Safety
///
/// `buffer` must be empty or have been handed out by the plugin whose `free` this is, not yet freed.
unsafe fn take_buffer(buffer: BallastBuffer, free: unsafe extern "C" fn(BallastBuffer)) -> Vec<u8> {
    if buffer.ptr.is_null() {
        return Vec::new();
    }
    // SAFETY: the plugin declares `len` readable bytes at `ptr` until it is freed.
    let bytes = unsafe { std::slice::from_raw_parts(buffer.ptr, buffer.len) }.to_vec();
    // SAFETY: given back once, to the plugin that allocated it.
    unsafe { free(buffer) };
    bytes
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::sync::atomic::AtomicUsize;

    use ballast_core::Timestamp;

    use super::*;
    use crate::host_api::system_clock;
    use crate::stream::CancelToken;

    /// A streaming C plugin whose request names what its `call_stream` does:
    /// `count N` sends the chunks `0` .. `N-1` (stopping with CANCELLED when the call is
    /// cancelled) and answers `end`; `deadline` answers its context's `deadline_ms`; `wait` waits
    /// (up to a minute) until the call is cancelled, then stops with CANCELLED; `thread` has
    /// another thread call `send` and `is_cancelled` and answers what they returned.
    const STREAMER: &str = r#"
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "ballast_plugin.h"
static int instance;
static BallastStatus ok(void *i, BallastMessageBuf *e) { (void)i; (void)e; return BALLAST_STATUS_OK; }
static BallastStatus create(const BallastHostApi *h, BallastBytes c, BallastBytes k, void **o, BallastMessageBuf *e) {
    (void)h; (void)c; (void)k; (void)e; *o = &instance; return BALLAST_STATUS_OK; }
static BallastStatus level(void *i, uint32_t l, BallastMessageBuf *e) { (void)i; (void)l; (void)e; return BALLAST_STATUS_OK; }
static BallastStatus drain(void *i, uint64_t d, BallastMessageBuf *e) { (void)i; (void)d; (void)e; return BALLAST_STATUS_OK; }
static BallastStatus answer(BallastBuffer *o, const char *text) {
    size_t n = strlen(text); o->ptr = malloc(n + 1); memcpy(o->ptr, text, n); o->len = n; o->owner = 1;
    return BALLAST_STATUS_OK; }
static BallastStatus call(void *i, BallastBytes r, BallastBuffer *o, BallastMessageBuf *e) {
    (void)i; (void)r; (void)e; return answer(o, "whole"); }
static void release(BallastBuffer b) { free(b.ptr); }
static BallastStatus health(void *i, BallastMessageBuf *m) { (void)i; (void)m; return BALLAST_STATUS_OK; }
static BallastStatus stats(void *i, BallastStats *s) { (void)i; (void)s; return BALLAST_STATUS_OK; }
static void say(BallastMessageBuf *e, const char *text) {
    size_t n = strlen(text); if (n > e->cap) n = e->cap; memcpy(e->ptr, text, n); e->len = n; }
typedef struct { const BallastCallContext *ctx; BallastStatus sent; uint32_t cancelled; } Stray;
static void *stray(void *arg) {
    Stray *s = arg; BallastBytes b = { (const uint8_t *)"x", 1 };
    s->sent = s->ctx->send(s->ctx->host_data, b); s->cancelled = s->ctx->is_cancelled(s->ctx->host_data);
    return NULL; }
static BallastStatus call_stream(void *i, BallastBytes r, const BallastCallContext *ctx, BallastBuffer *o,
                                 BallastMessageBuf *e) {
    (void)i; char request[64] = {0}; char text[64];
    memcpy(request, r.ptr, r.len < 63 ? r.len : 63);
    if (strncmp(request, "count ", 6) == 0) {
        int n = atoi(request + 6);
        for (int k = 0; k < n; k++) {
            if (ctx->is_cancelled(ctx->host_data)) { say(e, "stopped before a chunk"); return BALLAST_STATUS_CANCELLED; }
            snprintf(text, sizeof text, "%d", k);
            BallastBytes chunk = { (const uint8_t *)text, strlen(text) };
            if (ctx->send(ctx->host_data, chunk) == BALLAST_STATUS_CANCELLED) { say(e, "send said cancelled"); return BALLAST_STATUS_CANCELLED; }
        }
        return answer(o, "end");
    }
    if (strcmp(request, "deadline") == 0) {
        snprintf(text, sizeof text, "%llu/%u", (unsigned long long)ctx->deadline_ms, ctx->struct_size);
        return answer(o, text);
    }
    if (strcmp(request, "wait") == 0) {
        for (int k = 0; k < 60000 && !ctx->is_cancelled(ctx->host_data); k++) {
            struct timespec pause = {0, 1000 * 1000}; nanosleep(&pause, NULL);
        }
        return ctx->is_cancelled(ctx->host_data) ? BALLAST_STATUS_CANCELLED : answer(o, "never cancelled");
    }
    if (strcmp(request, "thread") == 0) {
        Stray s = { ctx, -1, 0 }; pthread_t t; pthread_create(&t, NULL, stray, &s); pthread_join(t, NULL);
        snprintf(text, sizeof text, "%d %u", s.sent, s.cancelled);
        return answer(o, text);
    }
    say(e, "unknown request"); return BALLAST_STATUS_INVALID_ARGUMENT;
}
static const BallastPluginVTable VT = { .struct_size = sizeof(BallastPluginVTable), .create = create, .start = ok,
    .set_level = level, .drain = drain, .stop = ok, .destroy = ok, .call = call, .free_buffer = release,
    .health = health, .stats = stats, .call_stream = call_stream };
static const BallastLevelHints LEVELS[1] = { { .name = { (const uint8_t *)"full", 4 } } };
static const BallastPluginDescriptor D = {
    .header = { .magic = BALLAST_PLUGIN_MAGIC, .abi_major = 1, .abi_minor = BALLAST_ABI_MINOR,
                .struct_size = sizeof(BallastPluginDescriptor), .name = { (const uint8_t *)"streamer", 8 } },
    .version = { (const uint8_t *)"1", 1 }, .sdk_version = { (const uint8_t *)"c", 1 },
    .capabilities = BALLAST_CAP_THREAD_SAFE_CALLS | BALLAST_CAP_STREAMING,
    .hints = { .n_levels = 1, .levels = LEVELS }, .vtable = &VT };
const BallastPluginDescriptor *ballast_plugin_entry_v1(void) { return &D; }
"#;

    fn streamer() -> NativeInstance {
        let path = ballast_testkit::plugins::c_plugin("streamer", STREAMER);
        let library = Arc::new(PluginLibrary::load(&path, None).expect("the streamer loads"));
        assert!(library.streams());
        NativeInstance::start(library, b"{}", system_clock()).expect("the streamer starts")
    }

    type Chunks = Arc<Mutex<Vec<Vec<u8>>>>;

    /// A call's side channel whose sink records the chunks and asks for more while `more` says
    /// so (given how many it has seen).
    fn recording(
        token: &CancelToken,
        more: impl Fn(usize) -> bool + Send + 'static,
    ) -> (CallIo, Chunks) {
        let chunks: Chunks = Arc::default();
        let sink_chunks = Arc::clone(&chunks);
        let sink = Box::new(move |chunk| {
            let mut chunks = sink_chunks.lock().unwrap();
            chunks.push(chunk);
            more(chunks.len())
        });
        (CallIo::new(Some(sink), token.clone(), None), chunks)
    }

    fn texts(chunks: &Chunks) -> Vec<String> {
        chunks
            .lock()
            .unwrap()
            .iter()
            .map(|c| String::from_utf8_lossy(c).into_owned())
            .collect()
    }

    #[test]
    fn chunks_reach_the_sink_in_order_and_the_last_piece_is_the_answer() {
        let streamer = streamer();
        let (mut io, chunks) = recording(&CancelToken::new(), |_| true);
        let answer = streamer.call_stream(b"count 5", &mut io).unwrap();
        assert_eq!(answer, b"end");
        assert_eq!(texts(&chunks), ["0", "1", "2", "3", "4"]);
        assert_eq!(io.chunks(), 5);
        // A plain call still goes to `call`.
        assert_eq!(streamer.call(b"count 5").unwrap(), b"whole");
    }

    #[test]
    fn the_deadline_reaches_the_plugin_on_the_host_clock_and_none_is_zero() {
        let streamer = streamer();
        let at = Timestamp::from_millis(1_700_000_123_456);
        let far = Instant::now() + Duration::from_secs(3600);
        let mut io = CallIo::new(None, CancelToken::new(), Some((far, at)));
        let answer = streamer.call_stream(b"deadline", &mut io).unwrap();
        let size = size_of::<BallastCallContext>();
        assert_eq!(
            String::from_utf8(answer).unwrap(),
            format!("1700000123456/{size}")
        );
        let mut io = CallIo::new(None, CancelToken::new(), None);
        let answer = streamer.call_stream(b"deadline", &mut io).unwrap();
        assert_eq!(String::from_utf8(answer).unwrap(), format!("0/{size}"));
    }

    #[test]
    fn a_listener_that_goes_away_stops_the_plugin_with_the_reason() {
        let streamer = streamer();
        let token = CancelToken::new();
        let (mut io, chunks) = recording(&token, |seen| seen < 3);
        let fault = streamer.call_stream(b"count 100", &mut io).unwrap_err();
        assert!(fault.is_cancelled(), "{fault}");
        assert_eq!(
            fault.message,
            "the call was cancelled because the caller went away; the plugin says: send said cancelled"
        );
        assert_eq!(texts(&chunks), ["0", "1", "2"]);
        assert_eq!(token.reason(), Some(CancelReason::Caller));
    }

    #[test]
    fn a_token_cancelled_from_another_thread_stops_a_waiting_plugin() {
        let streamer = streamer();
        let token = CancelToken::new();
        let canceller = token.clone();
        let (mut io, _) = recording(&token, |_| true);
        std::thread::scope(|scope| {
            scope.spawn(move || canceller.cancel(CancelReason::Shed));
            let fault = streamer.call_stream(b"wait", &mut io).unwrap_err();
            assert!(fault.is_cancelled(), "{fault}");
            assert_eq!(
                fault.message,
                "the call was cancelled because the plugin is being shed"
            );
        });
    }

    #[test]
    fn a_passed_deadline_cancels_before_the_first_chunk() {
        let streamer = streamer();
        let passed = Instant::now();
        let mut io = CallIo::new(None, CancelToken::new(), Some((passed, Timestamp::ZERO)));
        let fault = streamer.call_stream(b"count 3", &mut io).unwrap_err();
        assert_eq!(
            fault.message,
            "the call was cancelled because its deadline passed; the plugin says: stopped before a chunk"
        );
        assert_eq!(io.chunks(), 0);
    }

    #[test]
    fn the_context_answers_only_on_the_calling_thread() {
        let streamer = streamer();
        let (mut io, chunks) = recording(&CancelToken::new(), |_| true);
        let answer = streamer.call_stream(b"thread", &mut io).unwrap();
        let expected = format!("{BALLAST_STATUS_INVALID_ARGUMENT} 1");
        assert_eq!(String::from_utf8(answer).unwrap(), expected);
        assert!(chunks.lock().unwrap().is_empty());
        assert!(!io.is_cancelled(), "a stray use does not cancel the call");
    }

    #[test]
    fn a_panicking_sink_cancels_the_call_without_unwinding_into_the_plugin() {
        let streamer = streamer();
        let token = CancelToken::new();
        let seen = Arc::new(AtomicUsize::new(0));
        let sink_seen = Arc::clone(&seen);
        let sink = Box::new(move |_chunk: Vec<u8>| {
            if sink_seen.fetch_add(1, Ordering::SeqCst) == 1 {
                panic!("the sink broke");
            }
            true
        });
        let mut io = CallIo::new(Some(sink), token.clone(), None);
        let fault = streamer.call_stream(b"count 10", &mut io).unwrap_err();
        assert!(fault.is_cancelled(), "{fault}");
        assert_eq!(seen.load(Ordering::SeqCst), 2);
        assert_eq!(token.reason(), Some(CancelReason::Caller));
    }

    #[test]
    fn a_plugin_that_does_not_stream_sends_its_whole_answer_as_one_chunk() {
        let path = ballast_testkit::plugins::nop_plugin();
        let library = Arc::new(PluginLibrary::load(&path, None).unwrap());
        assert!(!library.streams());
        let nop = NativeInstance::start(library, b"{}", system_clock()).unwrap();
        let (mut io, chunks) = recording(&CancelToken::new(), |_| true);
        assert_eq!(nop.call_stream(b"anything", &mut io).unwrap(), b"");
        assert_eq!(texts(&chunks), [""]);
    }
}
