//! Wake-ups outside the tick: a PSI memory-pressure trigger, like Android's lmkd uses, or a
//! manual trigger for tests.
//!
//! A trigger knows nothing of who listens: it delivers [`Wake`]s to a [`WakeSink`], which the
//! monitor's actor implements for its own address.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};

/// Why the monitor was woken outside its tick.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wake {
    /// The PSI memory trigger fired: tasks are stalling on memory.
    MemoryPressure,
}

/// Where a trigger delivers its wake-ups.
pub trait WakeSink: Send + 'static {
    /// Delivers `wake`; it is dropped when nobody listens any more.
    fn wake(&self, wake: Wake);

    /// Whether anybody still listens (a trigger stops once nobody does).
    fn is_listening(&self) -> bool;
}

/// Something that wakes the monitor when memory comes under pressure.
pub trait TriggerSource: Send + 'static {
    /// Starts delivering wake-ups to `sink`, or says why triggers are not available here (the
    /// monitor then samples on its tick only).
    fn start(self: Box<Self>, sink: Box<dyn WakeSink>) -> Result<(), String>;
}

/// No trigger: the monitor samples on its tick only.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoTrigger;

impl TriggerSource for NoTrigger {
    fn start(self: Box<Self>, _sink: Box<dyn WakeSink>) -> Result<(), String> {
        Err("no pressure trigger is configured".into())
    }
}

/// A PSI trigger on `/proc/pressure/memory`: the kernel wakes a thread polling for `POLLPRI`
/// when tasks stalled on memory for `stall_us` within any `window_us`.
///
/// Unprivileged processes may only use windows that are whole multiples of 2 s; writing a
/// trigger at all needs a kernel with PSI and write access to the file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PsiTrigger {
    /// The pressure file, `/proc/pressure/memory` on a real machine.
    pub path: PathBuf,
    /// Stall time within the window that fires the trigger, in microseconds.
    pub stall_us: u64,
    /// The window, in microseconds.
    pub window_us: u64,
}

impl PsiTrigger {
    /// `some 150000 2000000` on `path`: 150 ms of stall within 2 s, the shortest window an
    /// unprivileged process may use.
    pub fn memory(path: PathBuf) -> Self {
        PsiTrigger {
            path,
            stall_us: 150_000,
            window_us: 2_000_000,
        }
    }
}

impl TriggerSource for PsiTrigger {
    fn start(self: Box<Self>, sink: Box<dyn WakeSink>) -> Result<(), String> {
        let shown = self.path.display().to_string();
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&self.path)
            .map_err(|e| format!("cannot open {shown} for a PSI trigger: {e}"))?;
        let trigger = format!("some {} {}\0", self.stall_us, self.window_us);
        file.write_all(trigger.as_bytes()).map_err(|e| {
            format!(
                "the kernel refused the PSI trigger `{}` on {shown}: {e}",
                trigger.trim_end_matches('\0')
            )
        })?;
        std::thread::Builder::new()
            .name("ballast-psi-trigger".into())
            .spawn(move || watch(file, &shown, sink.as_ref()))
            .map_err(|e| format!("cannot start the PSI trigger thread: {e}"))?;
        Ok(())
    }
}

/// Polls the trigger's file until the monitor goes away or the kernel reports an error.
fn watch(file: std::fs::File, shown: &str, sink: &dyn WakeSink) {
    let mut poll = libc::pollfd {
        fd: file.as_raw_fd(),
        events: libc::POLLPRI,
        revents: 0,
    };
    while sink.is_listening() {
        poll.revents = 0;
        // SAFETY: `poll` is one valid pollfd whose fd stays open (owned by `file`) meanwhile.
        let rc = unsafe { libc::poll(&mut poll, 1, 1000) };
        if rc < 0 {
            let error = std::io::Error::last_os_error();
            if error.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            tracing::warn!(file = shown, %error, "PSI trigger poll failed; sampling on the tick only");
            return;
        }
        if poll.revents & libc::POLLERR != 0 {
            tracing::warn!(
                file = shown,
                "PSI trigger reported an error; sampling on the tick only"
            );
            return;
        }
        if poll.revents & libc::POLLPRI != 0 {
            // Logged as the kernel's event arrives, so that its time can be told apart from
            // the sample it causes (`cargo xtask measure` reads it).
            tracing::debug!(file = shown, "PSI trigger fired");
            sink.wake(Wake::MemoryPressure);
        }
    }
}

/// A trigger fired by hand through its [`ManualTriggerHandle`], for tests.
pub struct ManualTrigger {
    target: Target,
}

/// Fires a [`ManualTrigger`].
#[derive(Clone)]
pub struct ManualTriggerHandle {
    target: Target,
}

/// The sink a started [`ManualTrigger`] delivers to, shared with its handle.
type Target = Arc<Mutex<Option<Box<dyn WakeSink>>>>;

impl std::fmt::Debug for ManualTrigger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ManualTrigger(..)")
    }
}

impl std::fmt::Debug for ManualTriggerHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ManualTriggerHandle(..)")
    }
}

impl ManualTrigger {
    /// A trigger and the handle that fires it.
    pub fn new() -> (ManualTrigger, ManualTriggerHandle) {
        let target = Arc::new(Mutex::new(None));
        (
            ManualTrigger {
                target: Arc::clone(&target),
            },
            ManualTriggerHandle { target },
        )
    }
}

impl TriggerSource for ManualTrigger {
    fn start(self: Box<Self>, sink: Box<dyn WakeSink>) -> Result<(), String> {
        *lock(&self.target) = Some(sink);
        Ok(())
    }
}

impl ManualTriggerHandle {
    /// Sends a memory-pressure wake-up, as the kernel would. Returns whether a started monitor
    /// received it.
    pub fn fire(&self) -> bool {
        match lock(&self.target).as_ref() {
            Some(sink) if sink.is_listening() => {
                sink.wake(Wake::MemoryPressure);
                true
            }
            _ => false,
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}
