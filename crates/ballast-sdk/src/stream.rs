//! What a streamed call gives the plugin besides its request: [`CallContext`], where the answer's
//! chunks go as they are produced, whether the call was cancelled, and its deadline.

use std::ffi::c_void;
use std::fmt;
use std::marker::PhantomData;
use std::mem::offset_of;
use std::time::{Duration, SystemTime};

use ballast_abi::{BALLAST_STATUS_OK, BallastBytes, BallastCallContext, BallastStatus};

/// The size of the field `field` picks, without reading it.
fn field_size<T>(_field: fn(&BallastCallContext) -> &T) -> usize {
    size_of::<T>()
}

/// The call was cancelled: its caller went away, its deadline passed, or the plugin is being
/// shed. Stop the work and return it (`?` turns it into a [`crate::PluginError`] the host
/// recognises as a cancellation).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Cancelled;

impl fmt::Display for Cancelled {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the call was cancelled")
    }
}

impl std::error::Error for Cancelled {}

type SendFn = unsafe extern "C" fn(*mut c_void, BallastBytes) -> BallastStatus;
type IsCancelledFn = unsafe extern "C" fn(*mut c_void) -> u32;

/// A streamed call's side channel, handed to [`crate::Plugin::call_stream`]: send the answer in
/// chunks as you produce them, look whether the call was cancelled, read its deadline.
///
/// It lives for one call on the thread that runs it (it is neither `Send` nor `Sync`). Chunks
/// are copied by the host before [`CallContext::send`] returns.
///
/// ```
/// use ballast_sdk::{CallContext, CreateContext, LevelInfo, Plugin, PluginError, PluginInfo};
///
/// /// Counts to the number it is sent, one line per chunk.
/// pub struct Counter;
///
/// impl Plugin for Counter {
///     const INFO: PluginInfo = PluginInfo {
///         name: "counter",
///         version: "1.0.0",
///         levels: &[LevelInfo::new("full", 1 << 20)],
///         cpu_share: 0.01,
///         needs_gpu: false,
///     };
///
///     fn create(_ctx: CreateContext<'_>) -> Result<Self, PluginError> {
///         Ok(Counter)
///     }
///
///     fn call(&self, request: &[u8]) -> Result<Vec<u8>, PluginError> {
///         Ok(request.to_vec())
///     }
///
///     fn call_stream(&self, request: &[u8], ctx: &mut CallContext<'_>) -> Result<Vec<u8>, PluginError> {
///         let n: u32 = std::str::from_utf8(request)
///             .ok()
///             .and_then(|s| s.trim().parse().ok())
///             .ok_or_else(|| PluginError::invalid("send a number"))?;
///         for i in 1..=n {
///             ctx.send(format!("{i}\n").as_bytes())?; // Stops here once the call is cancelled.
///         }
///         Ok(b"done\n".to_vec()) // The last piece.
///     }
/// }
/// ```
pub struct CallContext<'a> {
    host_data: *mut c_void,
    send: Option<SendFn>,
    is_cancelled: Option<IsCancelledFn>,
    deadline_ms: u64,
    /// Chunks kept for the answer when the host gave no `send` (not a 1.1 host's way).
    pending: Vec<u8>,
    _call: PhantomData<&'a BallastCallContext>,
}

impl fmt::Debug for CallContext<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CallContext")
            .field("deadline_ms", &self.deadline_ms)
            .finish_non_exhaustive()
    }
}

impl<'a> CallContext<'a> {
    /// Reads the host's context, only the fields within the size it declares; `None` for null.
    ///
    /// # Safety
    ///
    /// `raw` is null or points to a context the host keeps valid, with its functions, for the
    /// lifetime `'a` (the call), on this thread.
    pub(crate) unsafe fn from_raw(raw: *const BallastCallContext) -> Option<CallContext<'a>> {
        if raw.is_null() {
            return None;
        }
        // SAFETY: the caller's promise; `struct_size` is the first field of every version.
        let size = unsafe { raw.cast::<u32>().read() } as usize;
        // A field beyond the size the host built is absent.
        macro_rules! field {
            ($name:ident, $absent:expr) => {
                if offset_of!(BallastCallContext, $name)
                    + field_size(|c: &BallastCallContext| &c.$name)
                    <= size
                {
                    // SAFETY: the field lies within the size the host declares readable.
                    unsafe { (&raw const (*raw).$name).read() }
                } else {
                    $absent
                }
            };
        }
        let host_data = field!(host_data, std::ptr::null_mut());
        let send = field!(send, None);
        let is_cancelled = field!(is_cancelled, None);
        let deadline_ms = field!(deadline_ms, 0);
        Some(CallContext {
            host_data,
            send,
            is_cancelled,
            deadline_ms,
            pending: Vec::new(),
            _call: PhantomData,
        })
    }

    /// Hands the host the next chunk of the answer; it is copied before this returns. An empty
    /// chunk sends nothing. `Err(Cancelled)` once the call is cancelled: the chunk was dropped,
    /// stop and return the error.
    #[must_use = "a cancelled call should stop: return the error, e.g. with `?`"]
    pub fn send(&mut self, chunk: &[u8]) -> Result<(), Cancelled> {
        let Some(send) = self.send else {
            if self.is_cancelled() {
                return Err(Cancelled);
            }
            self.pending.extend_from_slice(chunk);
            return Ok(());
        };
        // SAFETY: a host function called during the call, on its thread, with its own data and
        // bytes borrowed for the duration of the call.
        let status = unsafe { send(self.host_data, BallastBytes::new(chunk)) };
        if status == BALLAST_STATUS_OK {
            Ok(())
        } else {
            Err(Cancelled)
        }
    }

    /// Whether the call was cancelled (its caller went away, its deadline passed, or the plugin
    /// is being shed). Cheap: call it between any two pieces of work.
    pub fn is_cancelled(&self) -> bool {
        match self.is_cancelled {
            // SAFETY: as in `send`.
            Some(is_cancelled) => unsafe { is_cancelled(self.host_data) != 0 },
            None => false,
        }
    }

    /// The call's deadline, if it has one. It is on the host's clock, the wall clock in the
    /// daemon; the host cancels the call when it passes, so watching it is optional.
    pub fn deadline(&self) -> Option<SystemTime> {
        self.deadline_ms()
            .map(|ms| SystemTime::UNIX_EPOCH + Duration::from_millis(ms))
    }

    /// The call's deadline in milliseconds since the Unix epoch on the host's clock (compare it
    /// with [`crate::Host::now_ms`]), if it has one.
    pub fn deadline_ms(&self) -> Option<u64> {
        (self.deadline_ms != 0).then_some(self.deadline_ms)
    }

    /// The chunks kept when the host gave no `send`, to go out before the last piece.
    pub(crate) fn take_pending(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.pending)
    }
}
