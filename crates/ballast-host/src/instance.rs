//! One live plugin instance behind the vtable: every unsafe call into a plugin is in this file.
//!
//! The host keeps the ABI's promises here: lifecycle functions never run concurrently with calls
//! (a gate lock), calls of plugins without `thread_safe_calls` are serialized, plugin buffers go
//! back through the plugin's own `free_buffer`, and `destroy` runs exactly once, when the last
//! holder (possibly a call still finishing after a drain deadline) lets go.

use std::ffi::c_void;
use std::mem::MaybeUninit;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock, RwLockWriteGuard};
use std::time::{Duration, Instant};

use ballast_abi::{
    BALLAST_STATUS_DEGRADED, BALLAST_STATUS_OK, BALLAST_STATUS_PANIC, BallastBuffer, BallastBytes,
    BallastHostApi, BallastMessageBuf, BallastStats, BallastStatus,
};

use crate::library::PluginLibrary;

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
}

// SAFETY: the instance pointer is only used through the plugin's vtable under the locking rules
// above, which are exactly what the ABI requires for calls from several threads.
unsafe impl Send for Instance {}
// SAFETY: as above.
unsafe impl Sync for Instance {}

impl Instance {
    /// Calls `create` with the config JSON and the last checkpoint.
    pub(crate) fn create(
        library: Arc<PluginLibrary>,
        host_api: &'static BallastHostApi,
        config_json: &[u8],
        checkpoint: &[u8],
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

    /// Calls `call` with `request`, returning the plugin's response bytes.
    /// A streamed call. Until the ABI's streaming entry is wired, the whole answer of `call` is
    /// one chunk.
    pub(crate) fn call_stream(
        &self,
        request: &[u8],
        io: &mut crate::stream::CallIo,
    ) -> Result<Vec<u8>, PluginFault> {
        let answer = self.call(request)?;
        io.send(&answer);
        Ok(Vec::new())
    }

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
