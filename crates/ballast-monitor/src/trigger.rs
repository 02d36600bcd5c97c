//! Wake-ups outside the tick: a PSI memory-pressure trigger, like Android's lmkd uses (or, where
//! the kernel would check it only every 2 s, a poller of the same file that decides as it would),
//! or a manual trigger for tests.
//!
//! A trigger knows nothing of who listens: it delivers [`Wake`]s to a [`WakeSink`], which the
//! monitor's actor implements for its own address.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::parse::{CAP_SYS_RESOURCE, has_capability, parse_cap_eff, parse_psi};
use crate::source::Source;
use crate::stall::StallDetector;

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

/// How a [`PsiTrigger`] learns of a stall: the kernel's trigger, or a poller in user space that
/// reads the pressure file's `some` total and decides as the trigger would
/// ([`crate::StallDetector`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PsiPolling {
    /// The kernel's trigger where the process has `CAP_SYS_RESOURCE` (the kernel then checks it
    /// every tenth of its window); elsewhere, or where the kernel refuses the trigger, a poller
    /// reading the file every `interval` (every tenth of it while a stall builds). Without the
    /// privilege the kernel checks a trigger only at its 2 s averaging, and a reader of the same
    /// file can make it miss those checks.
    Auto(Duration),
    /// The poller every `interval` (every tenth of it while a stall builds), privileged or not.
    Always(Duration),
    /// The kernel's trigger only, privileged or not.
    Never,
}

impl PsiPolling {
    /// The poller's default interval: a tenth of the shortest window, as often as the kernel
    /// checks a privileged trigger of 1 s.
    pub const DEFAULT_INTERVAL: Duration = Duration::from_millis(100);
}

impl Default for PsiPolling {
    fn default() -> Self {
        PsiPolling::Auto(Self::DEFAULT_INTERVAL)
    }
}

/// A PSI trigger on `/proc/pressure/memory` (or a cgroup's `memory.pressure`): the kernel wakes
/// a thread polling for `POLLPRI` when tasks stalled on memory for `stall_us` within any
/// `window_us`, or, where the kernel would check the trigger too seldom, a thread reads the file
/// every [`PsiPolling`] interval and wakes the monitor on the same stall.
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
    /// The kernel's trigger or the poller.
    pub polling: PsiPolling,
    /// Where the process's capabilities are read (`/proc/self/status`).
    pub status: PathBuf,
}

impl PsiTrigger {
    /// `some 150000 2000000` on `path`: 150 ms of stall within 2 s, the shortest window an
    /// unprivileged process may use; polled where the kernel's trigger is unprivileged.
    pub fn memory(path: PathBuf) -> Self {
        PsiTrigger {
            path,
            stall_us: 150_000,
            window_us: 2_000_000,
            polling: PsiPolling::default(),
            status: PathBuf::from("/proc/self/status"),
        }
    }

    /// Learns of stalls as `polling` says.
    pub fn with_polling(mut self, polling: PsiPolling) -> Self {
        self.polling = polling;
        self
    }

    /// Reads the process's capabilities from `status` instead of `/proc/self/status`.
    pub fn with_status_file(mut self, status: PathBuf) -> Self {
        self.status = status;
        self
    }

    /// Whether the process has `CAP_SYS_RESOURCE`, or why that is not known.
    fn privileged(&self) -> Result<bool, String> {
        let shown = self.status.display().to_string();
        let text = std::fs::read_to_string(&self.status)
            .map_err(|e| format!("cannot read {shown}: {e}"))?;
        let caps = parse_cap_eff(&shown, &text).map_err(|e| e.to_string())?;
        Ok(has_capability(caps, CAP_SYS_RESOURCE))
    }

    /// Arms the kernel's trigger and starts the thread that waits for it.
    fn arm(&self, sink: Box<dyn WakeSink>) -> Result<(), (String, Box<dyn WakeSink>)> {
        let shown = self.path.display().to_string();
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&self.path);
        let mut file = match file {
            Ok(file) => file,
            Err(e) => return Err((format!("cannot open {shown} for a PSI trigger: {e}"), sink)),
        };
        let trigger = format!("some {} {}\0", self.stall_us, self.window_us);
        if let Err(e) = file.write_all(trigger.as_bytes()) {
            let reason = format!(
                "the kernel refused the PSI trigger `{}` on {shown}: {e}",
                trigger.trim_end_matches('\0')
            );
            return Err((reason, sink));
        }
        let (tx, rx) = std::sync::mpsc::channel::<Box<dyn WakeSink>>();
        let spawned = std::thread::Builder::new()
            .name("ballast-psi-trigger".into())
            .spawn(move || {
                // The sink comes once the thread is known to run, so that a thread that could
                // not be started leaves it to the poller.
                if let Ok(sink) = rx.recv() {
                    watch(file, &shown, &*sink);
                }
            });
        match spawned {
            Ok(_) => {
                let _ = tx.send(sink);
                Ok(())
            }
            Err(e) => Err((format!("cannot start the PSI trigger thread: {e}"), sink)),
        }
    }

    /// Starts the poller: reads the file once now (so that a file that cannot be read is said
    /// at once) and then every `interval` on a thread of its own.
    fn poll(&self, interval: Duration, sink: Box<dyn WakeSink>) -> Result<(), String> {
        let mut source = Source::new(self.path.clone());
        let mut detector = StallDetector::new(self.stall_us, self.window_us);
        let epoch = Instant::now();
        let reading = source
            .parse(parse_psi)
            .map_err(|e| format!("cannot poll {} for stalls: {e}", source.name))?;
        detector.observe(micros_since(epoch), reading.some.total_us);
        let interval = interval.max(Duration::from_millis(1));
        std::thread::Builder::new()
            .name("ballast-psi-poll".into())
            .spawn(move || {
                let poller = Poller {
                    source,
                    interval,
                    detector,
                    epoch,
                };
                poller.run(sink.as_ref());
            })
            .map_err(|e| format!("cannot start the PSI poll thread: {e}"))?;
        Ok(())
    }
}

impl TriggerSource for PsiTrigger {
    fn start(self: Box<Self>, sink: Box<dyn WakeSink>) -> Result<(), String> {
        let shown = self.path.display().to_string();
        let (interval, why) = match self.polling {
            PsiPolling::Never => {
                return self.arm(sink).map_err(|(reason, _)| reason).map(|()| {
                    tracing::info!(file = %shown, "PSI trigger armed (the kernel's; polling is off)");
                });
            }
            PsiPolling::Always(interval) => (interval, "psi_poll_interval asks for it".to_owned()),
            PsiPolling::Auto(interval) => match self.privileged() {
                Ok(true) => match self.arm(sink) {
                    Ok(()) => {
                        tracing::info!(
                            file = %shown,
                            "PSI trigger armed (the kernel's, with CAP_SYS_RESOURCE: checked \
                             every tenth of its window)"
                        );
                        return Ok(());
                    }
                    Err((reason, sink)) => {
                        return self.poll_saying(interval, &reason, sink);
                    }
                },
                Ok(false) => (
                    interval,
                    "PSI trigger unprivileged (no CAP_SYS_RESOURCE)".to_owned(),
                ),
                Err(reason) => (
                    interval,
                    format!("PSI trigger's privilege unknown ({reason})"),
                ),
            },
        };
        self.poll_saying(interval, &why, sink)
    }
}

impl PsiTrigger {
    /// Starts the poller and says once why, and on which file, it polls.
    fn poll_saying(
        &self,
        interval: Duration,
        why: &str,
        sink: Box<dyn WakeSink>,
    ) -> Result<(), String> {
        self.poll(interval, sink)?;
        tracing::info!(
            "{why}: polling {} every {} instead",
            self.path.display(),
            ballast_core::format::duration(interval)
        );
        Ok(())
    }
}

/// Microseconds since `epoch`.
fn micros_since(epoch: Instant) -> u64 {
    u64::try_from(epoch.elapsed().as_micros()).unwrap_or(u64::MAX)
}

/// The poller's thread: reads the pressure file every `interval` and wakes the monitor as the
/// kernel's trigger would.
struct Poller {
    source: Source,
    interval: Duration,
    detector: StallDetector,
    epoch: Instant,
}

impl Poller {
    fn run(mut self, sink: &dyn WakeSink) {
        // While a stall builds (half the threshold within the window) the file is read ten
        // times as often, so that the threshold is seen within a few milliseconds of being
        // reached, at the cost of reads only while tasks stall.
        let fast = (self.interval / 10).max(Duration::from_millis(1));
        // The first reading was taken at start: the detector already has it.
        let mut due = Instant::now() + self.interval;
        let mut said_bad = false;
        while sink.is_listening() {
            let now = Instant::now();
            if due > now {
                std::thread::sleep(due - now);
            }
            // A file that cannot be read or parsed skips the reading (and is opened again next
            // time, as a cgroup may have been re-created); said once.
            match self.source.parse(parse_psi) {
                Ok(reading) => {
                    if self
                        .detector
                        .observe(micros_since(self.epoch), reading.some.total_us)
                    {
                        // Logged as the stall is seen, like the kernel trigger's `PSI trigger
                        // fired` (`cargo xtask measure` reads either).
                        tracing::debug!(file = %self.source.name, "PSI stall detected");
                        sink.wake(Wake::MemoryPressure);
                    }
                }
                Err(error) if !said_bad => {
                    said_bad = true;
                    tracing::warn!(
                        %error,
                        "cannot read the pressure file it polls; its readings are skipped until it can"
                    );
                }
                Err(_) => {}
            }
            // The next read on the grid, skipping the ones a slow wake-up missed.
            let step = if self.detector.is_building() {
                fast
            } else {
                self.interval
            };
            due += step;
            let now = Instant::now();
            if due <= now {
                due = now + step;
            }
        }
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

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::mpsc;

    use super::*;

    /// Hands wake-ups to a channel until `listening` is cleared.
    struct ChannelSink {
        tx: Mutex<mpsc::Sender<Wake>>,
        listening: Arc<AtomicBool>,
    }

    impl WakeSink for ChannelSink {
        fn wake(&self, wake: Wake) {
            let _ = lock(&self.tx).send(wake);
        }

        fn is_listening(&self) -> bool {
            self.listening.load(Ordering::Relaxed)
        }
    }

    fn sink() -> (Box<dyn WakeSink>, mpsc::Receiver<Wake>, Arc<AtomicBool>) {
        let (tx, rx) = mpsc::channel();
        let listening = Arc::new(AtomicBool::new(true));
        let sink = ChannelSink {
            tx: Mutex::new(tx),
            listening: Arc::clone(&listening),
        };
        (Box::new(sink), rx, listening)
    }

    fn pressure(total: u64) -> String {
        format!(
            "some avg10=0.00 avg60=0.00 avg300=0.00 total={total}\n\
             full avg10=0.00 avg60=0.00 avg300=0.00 total=0\n"
        )
    }

    /// Without `CAP_SYS_RESOURCE` the file is polled, and a stall of the threshold wakes the
    /// monitor once (the next comes a window later at the earliest).
    #[test]
    fn an_unprivileged_trigger_polls_the_file_and_wakes_on_the_stall() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("memory.pressure");
        let status = dir.path().join("status");
        std::fs::write(&file, pressure(1_000)).unwrap();
        std::fs::write(&status, "Name:\tballast\nCapEff:\t000001fffeffffff\n").unwrap();
        let trigger = PsiTrigger::memory(file.clone())
            .with_status_file(status)
            .with_polling(PsiPolling::Auto(Duration::from_millis(5)));
        let (sink, rx, listening) = sink();
        Box::new(trigger).start(sink).unwrap();
        // Quiet: nothing.
        assert!(rx.recv_timeout(Duration::from_millis(50)).is_err());
        // 200 ms of stall: one wake-up.
        std::fs::write(&file, pressure(201_000)).unwrap();
        assert_eq!(
            rx.recv_timeout(Duration::from_secs(30)).unwrap(),
            Wake::MemoryPressure
        );
        // More stall within the same window: no second one.
        std::fs::write(&file, pressure(401_000)).unwrap();
        assert!(rx.recv_timeout(Duration::from_millis(50)).is_err());
        listening.store(false, Ordering::Relaxed);
    }

    #[test]
    fn a_poller_needs_a_file_it_can_read_as_a_pressure_file() {
        let dir = tempfile::tempdir().unwrap();
        let missing = PsiTrigger::memory(dir.path().join("missing"))
            .with_polling(PsiPolling::Always(Duration::from_millis(5)));
        let e = Box::new(missing).start(sink().0).unwrap_err();
        assert!(e.contains("cannot read") && e.contains("missing"), "{e}");
        let garbage = dir.path().join("garbage");
        std::fs::write(&garbage, "not a pressure file\n").unwrap();
        let e = Box::new(
            PsiTrigger::memory(garbage).with_polling(PsiPolling::Always(Duration::from_millis(5))),
        )
        .start(sink().0)
        .unwrap_err();
        assert!(e.contains("cannot poll") && e.contains("garbage"), "{e}");
    }
}
