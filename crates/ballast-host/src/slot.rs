//! One loaded plugin as the host holds it: its [`Slot`] (config, backend, call queue, lifecycle
//! lock) and the [`Shared`] state its call workers read (the current state and instance, the
//! concurrency permits, the call figures).
//!
//! The host, the lifecycle steps and the supervisor all work on these types; this file imports
//! none of them.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, RwLock};
use std::time::{Duration, Instant};

use ballast_core::Timestamp;
use ballast_core::plugin::{
    CancelCounts, Level, PluginEvent, PluginEventKind, PluginState, PluginStats,
};
use ballast_process::LeakDetector;

use crate::config::PluginConfig;
use crate::error::CallError;
use crate::host_api::{Clock, HostApiRef, HostContext};
use crate::library::{PluginInfo, PluginLibrary};
use crate::live::Live;
use crate::process::ProcessPlugin;
use crate::stream::{CallIo, CallOptions, CancelReason, CancelToken, ChunkSink};
use crate::tap::Tap;

/// Where the host sends plugin events.
pub type EventSink = Arc<dyn Fn(PluginEvent) + Send + Sync>;

/// How a call's answer is delivered.
pub type Reply = Box<dyn FnOnce(Result<Vec<u8>, CallError>) + Send>;

/// The state calls look at, swapped atomically at each transition.
pub(crate) struct Current {
    pub(crate) state: PluginState,
    pub(crate) since: Timestamp,
    pub(crate) reason: String,
    pub(crate) instance: Option<Arc<Live>>,
}

/// Call counters and the latency histogram of one plugin.
pub(crate) struct CallStats {
    calls: AtomicU64,
    errors: AtomicU64,
    timeouts: AtomicU64,
    latency_us: Mutex<hdrhistogram::Histogram<u64>>,
    pub(crate) last_error: Mutex<Option<String>>,
    /// Calls whose chunks went to a listener as the plugin sent them.
    streamed: AtomicU64,
    /// Chunks sent to listeners.
    chunks: AtomicU64,
    /// Calls cancelled, by reason (caller, deadline, shed).
    cancelled: [AtomicU64; 3],
    /// Time from a streamed call's start to its first chunk.
    first_chunk_us: Mutex<hdrhistogram::Histogram<u64>>,
}

impl CallStats {
    pub(crate) fn new() -> CallStats {
        CallStats {
            calls: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            timeouts: AtomicU64::new(0),
            latency_us: Mutex::new(latency_histogram()),
            last_error: Mutex::new(None),
            streamed: AtomicU64::new(0),
            chunks: AtomicU64::new(0),
            cancelled: Default::default(),
            first_chunk_us: Mutex::new(latency_histogram()),
        }
    }

    /// Counts what a call run against `io` did: its chunks, its time to the first one, whether
    /// it was cancelled.
    pub(crate) fn record_io(&self, io: &CallIo, started: Instant) {
        if io.streams() {
            self.streamed.fetch_add(1, Ordering::Relaxed);
            self.chunks.fetch_add(io.chunks(), Ordering::Relaxed);
            if let Some(first) = io.first_chunk() {
                let micros = u64::try_from(first.saturating_duration_since(started).as_micros())
                    .unwrap_or(u64::MAX)
                    .max(1);
                let _ = self
                    .first_chunk_us
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .record(micros);
            }
        }
        if let Some(reason) = io.cancel_reason() {
            self.cancelled[cancel_index(reason)].fetch_add(1, Ordering::Relaxed);
        }
    }

    pub(crate) fn record(&self, elapsed: Duration, error: Option<&CallError>) {
        self.calls.fetch_add(1, Ordering::Relaxed);
        let micros = u64::try_from(elapsed.as_micros())
            .unwrap_or(u64::MAX)
            .max(1);
        let _ = self
            .latency_us
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .record(micros);
        if let Some(e) = error {
            self.errors.fetch_add(1, Ordering::Relaxed);
            *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(e.to_string());
        }
    }

    pub(crate) fn timed_out(&self, error: &CallError) {
        self.timeouts.fetch_add(1, Ordering::Relaxed);
        self.errors.fetch_add(1, Ordering::Relaxed);
        *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(error.to_string());
    }
}

/// Three significant figures from 1 µs to 1 hour; construction cannot fail for these bounds, but
/// falls back to an auto-resizing histogram rather than panic.
fn latency_histogram() -> hdrhistogram::Histogram<u64> {
    hdrhistogram::Histogram::new_with_bounds(1, 3_600_000_000, 3)
        .or_else(|_| hdrhistogram::Histogram::new(3))
        .unwrap_or_else(|_| unreachable!("a 3-significant-figure histogram is always valid"))
}

fn cancel_index(reason: CancelReason) -> usize {
    match reason {
        CancelReason::Caller => 0,
        CancelReason::Deadline => 1,
        CancelReason::Shed => 2,
    }
}

/// The `q` quantile of a histogram, 0 when it is empty.
fn quantile(histogram: &Mutex<hdrhistogram::Histogram<u64>>, q: f64) -> u64 {
    let h = histogram.lock().unwrap_or_else(|p| p.into_inner());
    if h.is_empty() {
        0
    } else {
        h.value_at_quantile(q)
    }
}

/// A dynamic limit on calls running at once.
pub(crate) struct Permits {
    state: Mutex<PermitState>,
    freed: Condvar,
}

struct PermitState {
    running: u32,
    limit: u32,
    /// Workers waiting for a permit: a release wakes one only if there is one (a wake-up is a
    /// syscall, and a release comes with every call).
    waiting: u32,
}

impl Permits {
    pub(crate) fn new(limit: u32) -> Permits {
        Permits {
            state: Mutex::new(PermitState {
                running: 0,
                limit: limit.max(1),
                waiting: 0,
            }),
            freed: Condvar::new(),
        }
    }

    pub(crate) fn acquire(&self) {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        while s.running >= s.limit {
            s.waiting += 1;
            s = self.freed.wait(s).unwrap_or_else(|p| p.into_inner());
            s.waiting -= 1;
        }
        s.running += 1;
    }

    pub(crate) fn release(&self) {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        s.running = s.running.saturating_sub(1);
        if s.waiting > 0 {
            self.freed.notify_one();
        }
    }

    pub(crate) fn set_limit(&self, limit: u32) {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        s.limit = limit.max(1);
        self.freed.notify_all();
    }

    pub(crate) fn limit(&self) -> u32 {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).limit
    }
}

/// What the worker threads of one plugin share with the host.
pub(crate) struct Shared {
    pub(crate) name: String,
    pub(crate) current: RwLock<Current>,
    pub(crate) stats: CallStats,
    pub(crate) permits: Permits,
    /// Calls admitted and not yet answered (queued or running).
    pub(crate) outstanding: AtomicU32,
    /// The level of the last Enabled state (a suspended instance keeps it).
    pub(crate) level: AtomicU32,
    pub(crate) clock: Clock,
    pub(crate) events: EventSink,
    /// Whether calls' ends are tracked (the plugin has a `keep_alive`): the time of each costs a
    /// clock read, so only the plugins that need it pay it.
    pub(crate) tracks_activity: bool,
    /// When the last call ended, in milliseconds since the epoch (0: none yet).
    pub(crate) last_call_end: AtomicU64,
    /// The cancellations of the admitted calls that have one (streamed calls and calls with a
    /// deadline), by ticket: a drain that runs past its deadline cuts them.
    pub(crate) cancels: Mutex<HashMap<u64, CancelToken>>,
    /// The next ticket.
    pub(crate) next_ticket: AtomicU64,
    /// When the latest checkpoint was taken, in milliseconds since the epoch (0: none).
    pub(crate) checkpoint_at: AtomicU64,
}

impl Shared {
    pub(crate) fn now(&self) -> Timestamp {
        (self.clock)()
    }

    /// Sends an event about this plugin.
    pub(crate) fn emit(&self, kind: PluginEventKind) {
        (self.events)(PluginEvent {
            at: self.now(),
            plugin: self.name.clone(),
            kind,
        });
    }

    /// The level of the last Enabled state.
    pub(crate) fn level(&self) -> Level {
        Level(self.level.load(Ordering::Relaxed))
    }

    /// Moves to `state`, replacing the instance, and emits the event: the result of a command.
    pub(crate) fn transition(&self, state: PluginState, reason: &str, instance: Option<Arc<Live>>) {
        self.transition_as(state, reason, instance, false);
    }

    /// Moves to `state` on the host's own initiative (a hard limit, a process gone for good).
    pub(crate) fn transition_by_host(&self, state: PluginState, reason: &str) {
        self.transition_as(state, reason, None, true);
    }

    /// [`Shared::transition`], on the host's own initiative when `by_host`.
    pub(crate) fn transition_as(
        &self,
        state: PluginState,
        reason: &str,
        instance: Option<Arc<Live>>,
        by_host: bool,
    ) {
        let now = self.now();
        if let PluginState::Enabled { level } = state {
            self.level.store(level.0, Ordering::Relaxed);
        }
        let from = {
            let mut current = self.current.write().unwrap_or_else(|p| p.into_inner());
            let from = std::mem::replace(&mut current.state, state.clone());
            current.since = now;
            current.reason = reason.to_owned();
            current.instance = instance;
            from
        };
        match &state {
            PluginState::Failed { reason } => {
                tracing::warn!(plugin = %self.name, %from, %reason, "plugin failed")
            }
            to => tracing::info!(plugin = %self.name, %from, %to, %reason, "plugin state changed"),
        }
        (self.events)(PluginEvent {
            at: now,
            plugin: self.name.clone(),
            kind: PluginEventKind::StateChanged {
                from,
                to: state,
                reason: reason.to_owned(),
                by_host,
            },
        });
    }

    /// Drops a finished call's cancellation.
    pub(crate) fn forget(&self, ticket: u64) {
        self.cancels
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&ticket);
    }

    /// Cancels every admitted call that can be cancelled, for `reason`; how many there were.
    pub(crate) fn cancel_all(&self, reason: CancelReason) -> usize {
        let tokens: Vec<CancelToken> = self
            .cancels
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect();
        for token in &tokens {
            token.cancel(reason);
        }
        tokens.len()
    }

    /// The current state and instance, read together.
    pub(crate) fn snapshot(&self) -> (PluginState, Option<Arc<Live>>) {
        let current = self.current.read().unwrap_or_else(|p| p.into_inner());
        (current.state.clone(), current.instance.clone())
    }

    pub(crate) fn degraded(&self) -> CallError {
        let current = self.current.read().unwrap_or_else(|p| p.into_inner());
        CallError::Degraded {
            plugin: self.name.clone(),
            state: current.state.name().to_owned(),
            reason: if current.reason.is_empty() {
                "not enabled".to_owned()
            } else {
                current.reason.clone()
            },
            since: current.since,
        }
    }

    /// The instance that calls admitted earlier may still use: the current one while it is
    /// enabled or draining (a drain lets admitted calls finish).
    pub(crate) fn serving(&self) -> Option<Arc<Live>> {
        let current = self.current.read().unwrap_or_else(|p| p.into_inner());
        match current.state {
            PluginState::Enabled { .. } | PluginState::Draining => current.instance.clone(),
            _ => None,
        }
    }

    /// The live instance if the plugin takes new calls.
    pub(crate) fn callable(&self) -> Option<Arc<Live>> {
        let current = self.current.read().unwrap_or_else(|p| p.into_inner());
        if current.state.accepts_calls() {
            current.instance.clone()
        } else {
            None
        }
    }
}

/// A call waiting for its plugin to load (it woke an idle plugin).
pub(crate) struct Waiting {
    pub(crate) id: u64,
    pub(crate) request: Vec<u8>,
    pub(crate) options: Option<Submitted>,
    pub(crate) reply: Reply,
}

/// The options of a call, with its deadline fixed at its submission.
pub(crate) struct Submitted {
    pub(crate) cancel: CancelToken,
    pub(crate) sink: Option<ChunkSink>,
    /// The caller's deadline, if it gave one.
    pub(crate) until: Option<Instant>,
}

impl Submitted {
    /// `options` as submitted now.
    pub(crate) fn new(options: CallOptions) -> Submitted {
        Submitted {
            cancel: options.cancel,
            sink: options.sink,
            until: options.deadline.map(|d| Instant::now() + d),
        }
    }
}

/// One admitted call, on its way to a worker.
pub(crate) struct Job {
    pub(crate) instance: Arc<Live>,
    pub(crate) request: Vec<u8>,
    /// The call's side channel, and its ticket in the cancellations, for a call with options.
    pub(crate) io: Option<(CallIo, u64)>,
    pub(crate) reply: Reply,
}

/// What runs a plugin: a library in the daemon, or a process.
pub(crate) enum Backend {
    /// A native library loaded into the daemon.
    Native {
        library: Arc<PluginLibrary>,
        host_api: HostApiRef,
        context: &'static HostContext,
        /// The conformance check's observation of its calls (never in the daemon).
        tap: Option<Arc<Tap>>,
    },
    /// A process plugin, or a native plugin in a worker process.
    Process(Arc<ProcessPlugin>),
}

impl Backend {
    pub(crate) fn info(&self) -> &PluginInfo {
        match self {
            Backend::Native { library, .. } => library.info(),
            Backend::Process(p) => &p.info,
        }
    }

    pub(crate) fn gauges(&self) -> BTreeMap<String, f64> {
        match self {
            Backend::Native { context, .. } => context.gauges(),
            Backend::Process(p) => p
                .supervision
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .gauges
                .clone(),
        }
    }
}

/// One loaded plugin.
pub(crate) struct Slot {
    pub(crate) config: PluginConfig,
    pub(crate) backend: Backend,
    pub(crate) shared: Arc<Shared>,
    pub(crate) jobs: crate::queue::Sender<Job>,
    /// Serializes lifecycle operations; holds the checkpoint of the last instance.
    pub(crate) lifecycle: Mutex<Option<Vec<u8>>>,
    /// The allocator's live bytes of a native plugin, for leak detection.
    pub(crate) leak: Mutex<LeakDetector>,
    /// Calls waiting for the plugin to load, oldest first, and the next id to hand out.
    pub(crate) waiting: Mutex<(Vec<Waiting>, u64)>,
}

impl Slot {
    /// Admits a call for the instance that takes calls now, or refuses it (degraded or busy).
    /// A call with options runs against a [`CallIo`] whose deadline is the caller's, or the
    /// plugin's `call_timeout` from now if that comes first.
    pub(crate) fn admit(
        &self,
        request: Vec<u8>,
        options: Option<Submitted>,
        reply: Reply,
    ) -> Result<(), (CallError, Reply)> {
        let Some(instance) = self.shared.callable() else {
            return Err((self.shared.degraded(), reply));
        };
        let limit = self.shared.permits.limit();
        let admitted =
            self.shared
                .outstanding
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                    (n < limit.saturating_add(self.config.queue)).then_some(n + 1)
                });
        if admitted.is_err() {
            return Err((
                CallError::Busy {
                    plugin: self.config.name.clone(),
                    limit,
                    queue: self.config.queue,
                },
                reply,
            ));
        }
        let io = options.map(|options| {
            let now = Instant::now();
            let timeout = now + self.config.call_timeout;
            let until = options.until.map_or(timeout, |until| until.min(timeout));
            let at = self.shared.now() + until.saturating_duration_since(now);
            let ticket = self.shared.next_ticket.fetch_add(1, Ordering::Relaxed);
            self.shared
                .cancels
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(ticket, options.cancel.clone());
            (
                CallIo::new(options.sink, options.cancel, Some((until, at))),
                ticket,
            )
        });
        let job = Job {
            instance,
            request,
            io,
            reply,
        };
        if let Err(job) = self.jobs.send(job) {
            self.shared.outstanding.fetch_sub(1, Ordering::SeqCst);
            if let Some((_, ticket)) = &job.io {
                self.shared.forget(*ticket);
            }
            (job.reply)(Err(self.shared.degraded()));
        }
        Ok(())
    }

    /// Hands the calls waiting for the plugin to load to its workers once it takes calls, or
    /// answers them with why not once it settled in another state than idle (it failed, was
    /// disabled); while it is idle (its wake is on the way) they keep waiting.
    pub(crate) fn settle_waiting(&self) {
        let mut waiting = self.waiting.lock().unwrap_or_else(|p| p.into_inner());
        if waiting.0.is_empty() {
            return;
        }
        let state = self.shared.snapshot().0;
        match state {
            PluginState::Idle | PluginState::Draining => {}
            PluginState::Enabled { .. } => {
                for call in waiting.0.drain(..) {
                    if let Err((error, reply)) = self.admit(call.request, call.options, call.reply)
                    {
                        reply(Err(error));
                    }
                }
            }
            _ => {
                for call in waiting.0.drain(..) {
                    (call.reply)(Err(self.shared.degraded()));
                }
            }
        }
    }

    /// The plugin's figures: call counters and latencies, and what its instance or process holds.
    pub(crate) fn stats(&self) -> PluginStats {
        let s = &self.shared.stats;
        let (p50, p95, p99) = {
            let h = s.latency_us.lock().unwrap_or_else(|p| p.into_inner());
            if h.is_empty() {
                (0, 0, 0)
            } else {
                (
                    h.value_at_quantile(0.50),
                    h.value_at_quantile(0.95),
                    h.value_at_quantile(0.99),
                )
            }
        };
        let mut stats = PluginStats {
            calls: s.calls.load(Ordering::Relaxed),
            errors: s.errors.load(Ordering::Relaxed),
            timeouts: s.timeouts.load(Ordering::Relaxed),
            in_flight: self.shared.outstanding.load(Ordering::Relaxed),
            latency_p50_us: p50,
            latency_p95_us: p95,
            latency_p99_us: p99,
            streamed_calls: s.streamed.load(Ordering::Relaxed),
            chunks: s.chunks.load(Ordering::Relaxed),
            cancellations: CancelCounts {
                caller: s.cancelled[0].load(Ordering::Relaxed),
                deadline: s.cancelled[1].load(Ordering::Relaxed),
                shed: s.cancelled[2].load(Ordering::Relaxed),
            },
            first_chunk_p50_us: quantile(&s.first_chunk_us, 0.50),
            first_chunk_p95_us: quantile(&s.first_chunk_us, 0.95),
            last_call_end: match self.shared.last_call_end.load(Ordering::Relaxed) {
                0 => None,
                ms => Some(Timestamp::from_millis(ms)),
            },
            last_checkpoint: match self.shared.checkpoint_at.load(Ordering::Relaxed) {
                0 => None,
                ms => Some(Timestamp::from_millis(ms)),
            },
            ..PluginStats::default()
        };
        match &self.backend {
            Backend::Native { .. } => {
                let alloc = self
                    .shared
                    .callable()
                    .and_then(|i| i.stats())
                    .unwrap_or_default();
                stats.live_bytes = alloc.live_bytes;
                stats.peak_bytes = alloc.peak_bytes;
                stats.allocations = alloc.allocations;
                stats.threads = alloc.threads;
            }
            Backend::Process(plugin) => {
                let running = self.shared.snapshot().1.is_some();
                let supervision = plugin.supervision.lock().unwrap_or_else(|p| p.into_inner());
                if running && let Some(usage) = &supervision.usage {
                    // A worker reports its plugin's allocator; any other process its memory.
                    let (live, peak, allocations) =
                        supervision
                            .reported
                            .unwrap_or((usage.rss_bytes, supervision.peak_rss, 0));
                    stats.live_bytes = live;
                    stats.peak_bytes = peak;
                    stats.allocations = allocations;
                    stats.threads = usage.threads;
                    stats.process = Some(usage.clone());
                }
            }
        }
        stats
    }
}
