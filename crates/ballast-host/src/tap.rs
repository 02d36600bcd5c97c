//! What the conformance check (`check`) sees of a plugin beyond what the host reports: how many
//! calls were inside a native plugin at once, every protocol line between the host and a
//! plugin's process in both directions, and how each process ended.
//!
//! The daemon never installs a tap: the host's code paths look at it only where one was given
//! (an `Option` per plugin), so a daemon's calls pay one branch for it and nothing else. This
//! file imports nothing of the crate.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use ballast_process::{Exit, PluginMessage, ProtocolError};

/// One thing seen on a plugin's protocol, stamped with when and by which of its processes
/// (the process's generation: 1 for the first; 0 for a worker started only to describe the
/// plugin).
#[derive(Clone, Debug)]
pub(crate) struct Seen {
    /// When it was seen.
    pub(crate) at: Instant,
    /// Which process.
    pub(crate) generation: u64,
    /// What.
    pub(crate) what: Observed,
}

/// A protocol event.
#[derive(Clone, Debug)]
pub(crate) enum Observed {
    /// The host sent a request with this id (`kind`: call, set_level, drain, checkpoint).
    Request {
        /// Its id.
        id: u64,
        /// Its type.
        kind: &'static str,
    },
    /// The host sent `cancel` for this id.
    Cancel {
        /// The call's id.
        id: u64,
    },
    /// The host sent a line of its own making (the check's unknown message).
    Raw,
    /// The plugin sent a message.
    Message(PluginMessage),
    /// The plugin sent a line that is not a valid message.
    BadLine {
        /// Why it is not.
        error: ProtocolError,
        /// The line's start.
        excerpt: String,
    },
    /// The host closed the process's stdin to ask it to exit, and waited for it.
    EndOfInput {
        /// How long after the close it exited, if it did within the wait.
        exited_after: Option<Duration>,
    },
    /// The process ended (seen once its output was read).
    Exited {
        /// How.
        exit: Exit,
    },
    /// The host's stop of the process finished.
    Stopped {
        /// How it ended, if it did.
        exit: Option<Exit>,
        /// Whether it had to be killed with SIGKILL.
        killed: bool,
    },
}

/// The observation points of one plugin, shared by its instances and processes.
#[derive(Debug)]
pub(crate) struct Tap {
    /// For a process that speaks the protocol: how long a stop waits for it to exit on the end
    /// of its stdin before it sends SIGTERM (the daemon sends SIGTERM at once).
    pub(crate) eof_grace: Option<Duration>,
    /// Native calls inside the plugin now.
    inside: AtomicU32,
    /// The most native calls seen inside the plugin at once.
    most_inside: AtomicU32,
    /// Every protocol event, in order.
    seen: Mutex<Vec<Seen>>,
}

impl Tap {
    /// A tap; `eof_grace` as in [`Tap::eof_grace`].
    pub(crate) fn new(eof_grace: Option<Duration>) -> Tap {
        Tap {
            eof_grace,
            inside: AtomicU32::new(0),
            most_inside: AtomicU32::new(0),
            seen: Mutex::new(Vec::new()),
        }
    }

    /// A native call entered the plugin; the guard marks its return.
    pub(crate) fn enter(&self) -> Inside<'_> {
        let now = self.inside.fetch_add(1, Ordering::SeqCst) + 1;
        self.most_inside.fetch_max(now, Ordering::SeqCst);
        Inside(self)
    }

    /// The most native calls seen inside the plugin at once since the last reset.
    pub(crate) fn most_inside(&self) -> u32 {
        self.most_inside.load(Ordering::SeqCst)
    }

    /// Starts counting [`Tap::most_inside`] afresh.
    pub(crate) fn reset_most_inside(&self) {
        self.most_inside
            .store(self.inside.load(Ordering::SeqCst), Ordering::SeqCst);
    }

    /// Records a protocol event of process `generation`.
    pub(crate) fn record(&self, generation: u64, what: Observed) {
        self.seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(Seen {
                at: Instant::now(),
                generation,
                what,
            });
    }

    /// Every protocol event so far.
    pub(crate) fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// A native call inside the plugin, for [`Tap::enter`].
pub(crate) struct Inside<'a>(&'a Tap);

impl Drop for Inside<'_> {
    fn drop(&mut self) {
        self.0.inside.fetch_sub(1, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_most_calls_inside_at_once_are_counted_and_reset() {
        let tap = Tap::new(None);
        {
            let _a = tap.enter();
            let _b = tap.enter();
            assert_eq!(tap.most_inside(), 2);
        }
        let _c = tap.enter();
        assert_eq!(tap.most_inside(), 2);
        tap.reset_most_inside();
        assert_eq!(tap.most_inside(), 1);
    }
}
