//! What a streamed call carries besides its request: where its chunks go as the plugin produces
//! them, its deadline, and whether it was cancelled (the caller went away, the deadline passed,
//! or the plugin is being drained past its deadline).
//!
//! Every backend runs a streamed call against a [`CallIo`]: a native plugin through the ABI's
//! call context (`send`, `is_cancelled`, the deadline), a process plugin through `chunk` and
//! `cancel` messages. A plugin that does not stream (ABI 1.0, or a process that answers with one
//! `response`) has its whole answer sent as one chunk. A plugin that does not look at its
//! context is not waited for once the call is cancelled: its result is dropped.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use ballast_core::Timestamp;

/// Why a call was cancelled.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CancelReason {
    /// The caller went away (its connection closed).
    Caller,
    /// The call's deadline passed.
    Deadline,
    /// The plugin is being shed and its drain deadline passed with the call still running.
    Shed,
}

impl CancelReason {
    fn code(self) -> u8 {
        match self {
            CancelReason::Caller => 1,
            CancelReason::Deadline => 2,
            CancelReason::Shed => 3,
        }
    }

    fn from_code(code: u8) -> Option<CancelReason> {
        match code {
            1 => Some(CancelReason::Caller),
            2 => Some(CancelReason::Deadline),
            3 => Some(CancelReason::Shed),
            _ => None,
        }
    }

    /// `caller`, `deadline` or `shed`.
    pub fn as_str(self) -> &'static str {
        match self {
            CancelReason::Caller => "caller",
            CancelReason::Deadline => "deadline",
            CancelReason::Shed => "shed",
        }
    }

    /// What happened, for messages: "the caller went away", "its deadline passed", "the plugin
    /// is being shed".
    pub fn describe(self) -> &'static str {
        match self {
            CancelReason::Caller => "the caller went away",
            CancelReason::Deadline => "its deadline passed",
            CancelReason::Shed => "the plugin is being shed",
        }
    }
}

/// A call's cancellation, shared by the caller, the host and the plugin's side. The first reason
/// given sticks. Whoever waits for the call can be woken when it is cancelled
/// ([`CancelToken::on_cancel`]).
#[derive(Clone, Default)]
pub struct CancelToken(Arc<TokenState>);

#[derive(Default)]
struct TokenState {
    reason: AtomicU8,
    wakers: Mutex<Wakers>,
}

/// What runs when a token is cancelled, each with the id its [`CancelHook`] removes it by.
#[derive(Default)]
struct Wakers {
    next: u64,
    waiting: Vec<(u64, Box<dyn FnOnce() + Send>)>,
}

impl std::fmt::Debug for CancelToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("CancelToken").field(&self.reason()).finish()
    }
}

impl CancelToken {
    /// A token not cancelled.
    pub fn new() -> Self {
        CancelToken::default()
    }

    /// Cancels the call for `reason`, unless it was cancelled already, and wakes whoever waits.
    pub fn cancel(&self, reason: CancelReason) {
        let first = self
            .0
            .reason
            .compare_exchange(0, reason.code(), Ordering::SeqCst, Ordering::SeqCst)
            .is_ok();
        if first {
            let woken = std::mem::take(&mut self.wakers().waiting);
            for (_, wake) in woken {
                wake();
            }
        }
    }

    /// Why the call was cancelled, if it was.
    pub fn reason(&self) -> Option<CancelReason> {
        CancelReason::from_code(self.0.reason.load(Ordering::SeqCst))
    }

    /// Whether the call was cancelled.
    pub fn is_cancelled(&self) -> bool {
        self.0.reason.load(Ordering::SeqCst) != 0
    }

    /// Runs `wake` once when the call is cancelled (at once when it already is), unless the
    /// returned hook is dropped first. `wake` runs on the thread that cancels, so it should
    /// only wake (send on a channel, notify), not work.
    pub fn on_cancel(&self, wake: impl FnOnce() + Send + 'static) -> CancelHook {
        let mut wakers = self.wakers();
        // Checked under the lock `cancel` takes to wake: a cancel either came before (and
        // `wake` runs here) or finds `wake` waiting.
        if self.is_cancelled() {
            drop(wakers);
            wake();
            return CancelHook { token: None, id: 0 };
        }
        let id = wakers.next;
        wakers.next += 1;
        wakers.waiting.push((id, Box::new(wake)));
        CancelHook {
            token: Some(self.clone()),
            id,
        }
    }

    fn wakers(&self) -> std::sync::MutexGuard<'_, Wakers> {
        self.0.wakers.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A wake registered with [`CancelToken::on_cancel`]; dropping it removes the wake if it has
/// not run.
#[must_use = "dropping the hook removes the wake at once"]
pub struct CancelHook {
    token: Option<CancelToken>,
    id: u64,
}

impl Drop for CancelHook {
    fn drop(&mut self) {
        if let Some(token) = &self.token {
            token.wakers().waiting.retain(|(id, _)| *id != self.id);
        }
    }
}

/// How a caller wants a call run: a deadline, a way to cancel it, and where its chunks go.
#[derive(Default)]
pub struct CallOptions {
    /// How long the call may take, from its submission; capped by the plugin's `call_timeout`
    /// (`None`: the `call_timeout`).
    pub deadline: Option<std::time::Duration>,
    /// The call's cancellation, kept by the caller to cancel it.
    pub cancel: CancelToken,
    /// Where the chunks go as the plugin sends them; without one, they are joined into the
    /// answer.
    pub sink: Option<ChunkSink>,
}

impl std::fmt::Debug for CallOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallOptions")
            .field("deadline", &self.deadline)
            .field("cancel", &self.cancel)
            .field("streams", &self.sink.is_some())
            .finish()
    }
}

/// Where a streamed call's chunks go, in order; `false` back means nobody listens any more (the
/// caller went away), and the call is cancelled for it.
pub type ChunkSink = Box<dyn FnMut(Vec<u8>) -> bool + Send>;

/// One call's side channel: its chunks out, its deadline and its cancellation in.
pub struct CallIo {
    sink: Option<ChunkSink>,
    cancel: CancelToken,
    deadline: Option<(Instant, Timestamp)>,
    chunks: u64,
    first_chunk: Option<Instant>,
    /// Chunks of a call nobody streams (a plain call to a plugin that streams), joined.
    joined: Vec<u8>,
}

impl CallIo {
    /// The side channel of a call whose chunks go to `sink` (or, without one, are joined into
    /// its answer), cancelled through `cancel`, with a deadline at `deadline` (the monotonic
    /// instant, and the same moment on the host's clock for the plugin).
    pub fn new(
        sink: Option<ChunkSink>,
        cancel: CancelToken,
        deadline: Option<(Instant, Timestamp)>,
    ) -> CallIo {
        CallIo {
            sink,
            cancel,
            deadline,
            chunks: 0,
            first_chunk: None,
            joined: Vec::new(),
        }
    }

    /// Hands one chunk on; `false` once the call is cancelled (the plugin should stop).
    pub fn send(&mut self, chunk: &[u8]) -> bool {
        if self.is_cancelled() {
            return false;
        }
        self.chunks += 1;
        self.first_chunk.get_or_insert_with(Instant::now);
        match &mut self.sink {
            Some(sink) => {
                if sink(chunk.to_vec()) {
                    true
                } else {
                    self.cancel.cancel(CancelReason::Caller);
                    false
                }
            }
            None => {
                self.joined.extend_from_slice(chunk);
                true
            }
        }
    }

    /// Whether the call was cancelled; a passed deadline cancels it now.
    pub fn is_cancelled(&self) -> bool {
        if self.cancel.is_cancelled() {
            return true;
        }
        if let Some((at, _)) = self.deadline
            && Instant::now() >= at
        {
            self.cancel.cancel(CancelReason::Deadline);
            return true;
        }
        false
    }

    /// Why the call was cancelled, if it was.
    pub fn cancel_reason(&self) -> Option<CancelReason> {
        let _ = self.is_cancelled();
        self.cancel.reason()
    }

    /// The cancellation, to share with another thread (a process plugin's reader).
    pub fn token(&self) -> &CancelToken {
        &self.cancel
    }

    /// The deadline on the host's clock, for the plugin (`None`: no deadline).
    pub fn deadline(&self) -> Option<Timestamp> {
        self.deadline.map(|(_, at)| at)
    }

    /// The deadline as a monotonic instant.
    pub fn deadline_instant(&self) -> Option<Instant> {
        self.deadline.map(|(at, _)| at)
    }

    /// How many chunks went out.
    pub fn chunks(&self) -> u64 {
        self.chunks
    }

    /// When the first chunk went out.
    pub fn first_chunk(&self) -> Option<Instant> {
        self.first_chunk
    }

    /// Whether the chunks go to a listener (a streamed call) rather than into the answer.
    pub fn streams(&self) -> bool {
        self.sink.is_some()
    }

    /// The chunks joined, for a call nobody streams.
    pub fn take_joined(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.joined)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::time::Duration;

    use super::*;

    #[test]
    fn chunks_go_to_the_sink_in_order_and_a_gone_listener_cancels() {
        let got = Arc::new(Mutex::new(Vec::new()));
        let sink_got = Arc::clone(&got);
        let mut io = CallIo::new(
            Some(Box::new(move |chunk| {
                let mut got = sink_got.lock().unwrap();
                got.push(chunk);
                got.len() < 2
            })),
            CancelToken::new(),
            None,
        );
        assert!(io.send(b"a"));
        assert!(!io.send(b"b"), "the listener left after the second");
        assert!(!io.send(b"c"), "nothing goes out once cancelled");
        assert_eq!(*got.lock().unwrap(), [b"a".to_vec(), b"b".to_vec()]);
        assert_eq!(io.cancel_reason(), Some(CancelReason::Caller));
        assert_eq!(io.chunks(), 2);
    }

    #[test]
    fn without_a_sink_chunks_are_joined_and_a_deadline_cancels() {
        let mut io = CallIo::new(
            None,
            CancelToken::new(),
            Some((Instant::now() + Duration::from_millis(30), Timestamp::ZERO)),
        );
        assert!(io.send(b"ab"));
        assert!(io.send(b"cd"));
        assert_eq!(io.take_joined(), b"abcd");
        std::thread::sleep(Duration::from_millis(40));
        assert!(io.is_cancelled());
        assert_eq!(io.cancel_reason(), Some(CancelReason::Deadline));
    }

    #[test]
    fn the_first_reason_sticks() {
        let token = CancelToken::new();
        token.cancel(CancelReason::Shed);
        token.cancel(CancelReason::Caller);
        assert_eq!(token.reason(), Some(CancelReason::Shed));
    }

    #[test]
    fn a_wake_runs_once_on_cancel_and_not_after_its_hook_is_dropped() {
        let token = CancelToken::new();
        let woken = Arc::new(AtomicU8::new(0));
        let count = |woken: &Arc<AtomicU8>| {
            let woken = Arc::clone(woken);
            move || {
                woken.fetch_add(1, Ordering::SeqCst);
            }
        };
        let kept = token.on_cancel(count(&woken));
        let dropped = token.on_cancel(count(&woken));
        drop(dropped);
        assert_eq!(woken.load(Ordering::SeqCst), 0);
        token.cancel(CancelReason::Caller);
        token.cancel(CancelReason::Deadline);
        assert_eq!(woken.load(Ordering::SeqCst), 1, "the kept wake ran once");
        // On a token already cancelled, a wake runs at once.
        let _late = token.on_cancel(count(&woken));
        assert_eq!(woken.load(Ordering::SeqCst), 2);
        drop(kept);
    }
}
