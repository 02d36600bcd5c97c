//! The plugin host: a registry of loaded plugins, their lifecycle (Loaded, Enabled(level),
//! Draining, Disabled, Suspended, Failed), and calls that run on per-plugin worker threads with a
//! concurrency limit, a bounded queue and a timeout.
//!
//! Lifecycle operations of one plugin are serialized; calls never wait for them. A call to a
//! plugin that is not enabled fails at once with [`CallError::Degraded`], naming the state, the
//! reason and since when.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use ballast_core::plugin::{
    Level, PluginAlert, PluginEvent, PluginEventKind, PluginSpec, PluginState, PluginStats,
    ProcessStatus,
};
use ballast_core::{StartMode, Timestamp};
use ballast_process::LeakDetector;
use serde::Serialize;

use crate::config::PluginConfig;
use crate::error::{CallError, HostError};
use crate::host_api::{Clock, StateReport, leak_host_api, system_clock};
use crate::library::{LoadError, PluginInfo, PluginLibrary};
use crate::lifecycle::{
    change_level, check_level, disable_slot, disable_slot_reporting, enable_slot, fail,
    unload_slot, worker,
};
use crate::process::{ProcessOptions, ProcessPlugin, SupervisorMsg};
use crate::slot::{
    Backend, CallStats, Current, EventSink, Job, Permits, Reply, Shared, Slot, Submitted, Waiting,
};
use crate::stream::CallOptions;
use crate::tap::Tap;

/// The state of a plugin as the API reports it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PluginStatus {
    /// The name.
    pub name: String,
    /// The lifecycle state.
    pub state: PluginState,
    /// Since when.
    pub since: Timestamp,
    /// Why it entered that state.
    pub reason: String,
    /// Priority from the config.
    pub priority: i32,
    /// Whether it is essential.
    pub essential: bool,
    /// The current concurrency limit.
    pub concurrency_limit: u32,
    /// What the file declares.
    pub info: PluginInfo,
    /// Live figures.
    pub stats: PluginStats,
    /// The last call error, if any.
    pub last_error: Option<String>,
    /// Gauges the plugin emitted through the host API.
    pub gauges: BTreeMap<String, f64>,
    /// `native` or `process`.
    pub kind: &'static str,
    /// Its process, for a plugin that runs in one (a process plugin or an isolated native one).
    pub process: Option<ProcessStatus>,
}

/// Hosts plugins: native libraries and processes. Thread-safe; share it in an `Arc`.
pub struct PluginHost {
    slots: RwLock<BTreeMap<String, Arc<Slot>>>,
    clock: Clock,
    events: EventSink,
    options: ProcessOptions,
    /// The conformance check's observation points, given to every plugin it loads (never set in
    /// the daemon).
    tap: Option<Arc<Tap>>,
}

impl Default for PluginHost {
    fn default() -> Self {
        PluginHost::new(system_clock(), Arc::new(|_| {}))
    }
}

impl PluginHost {
    /// A host with `clock` that sends plugin events to `events`.
    pub fn new(clock: Clock, events: EventSink) -> PluginHost {
        PluginHost::with_options(clock, events, ProcessOptions::default())
    }

    /// A host whose plugins that run in a process log to `options.log_dir`, are measured every
    /// `options.sample_interval`, and (isolated native ones) run in `options.worker_program`.
    pub fn with_options(clock: Clock, events: EventSink, options: ProcessOptions) -> PluginHost {
        PluginHost {
            slots: RwLock::new(BTreeMap::new()),
            clock,
            events,
            options,
            tap: None,
        }
    }

    /// A host whose plugins the conformance check observes through `tap`.
    pub(crate) fn tapped(
        clock: Clock,
        events: EventSink,
        options: ProcessOptions,
        tap: Arc<Tap>,
    ) -> PluginHost {
        PluginHost {
            tap: Some(tap),
            ..PluginHost::with_options(clock, events, options)
        }
    }

    fn slot(&self, name: &str) -> Result<Arc<Slot>, HostError> {
        self.slots
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
            .cloned()
            .ok_or_else(|| HostError::UnknownPlugin {
                name: name.to_owned(),
            })
    }

    /// Loads and validates the plugin's file; the plugin is then `Loaded`, not yet enabled.
    pub fn load(&self, config: PluginConfig) -> Result<PluginInfo, HostError> {
        let problems = config.problems();
        if !problems.is_empty() {
            return Err(HostError::Config { problems });
        }
        if config.runs_in_process() {
            return self.load_process(config);
        }
        let file = config.file();
        if let Ok(existing) = self.slot(&config.name) {
            return Err(HostError::Duplicate {
                name: config.name.clone(),
                first: existing.backend.info().file.display().to_string(),
                second: file.display().to_string(),
            });
        }
        let library = PluginLibrary::load(&file, config.sha256.as_deref())?;
        let declared = library.info().name.clone();
        if declared != config.name {
            return Err(HostError::NameMismatch {
                configured: config.name.clone(),
                declared,
                file: file.display().to_string(),
            });
        }
        let info = library.info().clone();
        let events = Arc::clone(&self.events);
        let clock = Arc::clone(&self.clock);
        let report_clock = Arc::clone(&self.clock);
        let reports: Arc<dyn Fn(StateReport) + Send + Sync> = Arc::new(move |r: StateReport| {
            if !r.healthy {
                tracing::warn!(plugin = %r.plugin, message = %r.message, "plugin reports it is unhealthy");
            }
            events(PluginEvent {
                at: report_clock(),
                plugin: r.plugin,
                kind: PluginEventKind::Reported {
                    healthy: r.healthy,
                    message: r.message,
                },
            });
        });
        let (host_api, context) = leak_host_api(&config.name, Arc::clone(&clock), reports);
        tracing::info!(plugin = %config.name, file = %file.display(), version = %info.version, abi = %info.abi, "plugin loaded");
        let backend = Backend::Native {
            library: Arc::new(library),
            host_api,
            context,
            tap: self.tap.clone(),
        };
        self.insert(config, backend).map(|_| info)
    }

    /// Loads a plugin that runs in a process of its own. Nothing is started yet, except, for an
    /// isolated native plugin, a worker that reads the library's descriptor and exits.
    fn load_process(&self, config: PluginConfig) -> Result<PluginInfo, HostError> {
        if let Ok(existing) = self.slot(&config.name) {
            return Err(HostError::Duplicate {
                name: config.name.clone(),
                first: existing.backend.info().file.display().to_string(),
                second: config
                    .command
                    .clone()
                    .unwrap_or_else(|| config.file())
                    .display()
                    .to_string(),
            });
        }
        if config.kind == crate::config::PluginKind::Native {
            // The file is checked here (a bad one is named without starting anything); the
            // worker loads it.
            let file = config.file();
            let handle = std::fs::File::open(&file).map_err(|source| LoadError::Read {
                path: file.clone(),
                source,
            })?;
            let size = handle
                .metadata()
                .map_err(|source| LoadError::Read {
                    path: file.clone(),
                    source,
                })?
                .len();
            crate::elf::check_shared_object_file(&handle, size).map_err(|problem| {
                LoadError::BadFile {
                    path: file.clone(),
                    problem,
                }
            })?;
        }
        let (supervisor_tx, supervisor_rx) = crossbeam_channel::unbounded::<SupervisorMsg>();
        let plugin = ProcessPlugin::new(
            config.clone(),
            self.options.clone(),
            Arc::clone(&self.clock),
            supervisor_tx,
            self.tap.clone(),
        )
        .map_err(|fault| HostError::Plugin {
            plugin: config.name.clone(),
            operation: "describe",
            fault,
        })?;
        let plugin = Arc::new(plugin);
        let info = plugin.info.clone();
        tracing::info!(plugin = %config.name, command = %info.file.display(), abi = %info.abi, "plugin loaded");
        let slot = self.insert(config, Backend::Process(Arc::clone(&plugin)))?;
        let weak = Arc::downgrade(&slot);
        let name = slot.config.name.clone();
        std::thread::Builder::new()
            .name(format!("supervise-{name}"))
            .spawn(move || crate::supervisor::supervise(weak, plugin, supervisor_rx))
            .map_err(|e| HostError::Config {
                problems: vec![format!(
                    "plugin `{name}`: cannot start its supervisor thread: {e}"
                )],
            })?;
        Ok(info)
    }

    /// Registers a loaded plugin: its call workers and its slot.
    fn insert(&self, config: PluginConfig, backend: Backend) -> Result<Arc<Slot>, HostError> {
        let clock = Arc::clone(&self.clock);
        let now = clock();
        let shared = Arc::new(Shared {
            name: config.name.clone(),
            current: RwLock::new(Current {
                state: PluginState::Loaded,
                since: now,
                reason: "loaded".to_owned(),
                instance: None,
            }),
            stats: CallStats::new(),
            permits: Permits::new(config.max_concurrent_calls),
            outstanding: AtomicU32::new(0),
            level: AtomicU32::new(0),
            clock,
            events: Arc::clone(&self.events),
            tracks_activity: config.keep_alive.is_some(),
            last_call_end: AtomicU64::new(0),
            cancels: Mutex::new(std::collections::HashMap::new()),
            next_ticket: AtomicU64::new(0),
            checkpoint_at: AtomicU64::new(0),
        });
        let (jobs, receiver) = crate::queue::queue::<Job>();
        for i in 0..config.max_concurrent_calls {
            let receiver = receiver.clone();
            let shared = Arc::clone(&shared);
            std::thread::Builder::new()
                .name(format!("plugin-{}-{i}", config.name))
                .spawn(move || worker(&shared, &receiver))
                .map_err(|e| HostError::Config {
                    problems: vec![format!(
                        "plugin `{}`: cannot start call worker thread: {e}",
                        config.name
                    )],
                })?;
        }
        let info = backend.info().clone();
        let slot = Arc::new(Slot {
            leak: Mutex::new(LeakDetector::new(config.leak.clone())),
            config,
            backend,
            shared,
            jobs,
            lifecycle: Mutex::new(None),
            waiting: Mutex::new((Vec::new(), 0)),
        });
        let mut slots = self.slots.write().unwrap_or_else(|p| p.into_inner());
        if let Some(existing) = slots.get(&slot.config.name) {
            return Err(HostError::Duplicate {
                name: slot.config.name.clone(),
                first: existing.backend.info().file.display().to_string(),
                second: info.file.display().to_string(),
            });
        }
        slots.insert(slot.config.name.clone(), Arc::clone(&slot));
        drop(slots);
        if slot.config.start == StartMode::OnDemand {
            slot.shared.transition(
                PluginState::Idle,
                "on-demand: it loads on its first call",
                None,
            );
        }
        Ok(slot)
    }

    /// Names of the loaded plugins.
    pub fn names(&self) -> Vec<String> {
        self.slots
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .keys()
            .cloned()
            .collect()
    }

    /// The plugin as the scaler sees it.
    pub fn spec(&self, name: &str) -> Result<PluginSpec, HostError> {
        let slot = self.slot(name)?;
        Ok(PluginSpec {
            name: slot.config.name.clone(),
            priority: slot.config.priority,
            essential: slot.config.essential,
            hints: slot.backend.info().resource_hints(),
            // Only a process can be stopped; a plugin inside the daemon keeps running its
            // threads when it is only no longer routed calls, so suspending it frees nothing.
            can_suspend: slot.config.runs_in_process() && slot.config.can_suspend,
            start: slot.config.start,
            keep_alive: slot.config.keep_alive,
        })
    }

    /// The plugin's config.
    pub fn config(&self, name: &str) -> Result<PluginConfig, HostError> {
        Ok(self.slot(name)?.config.clone())
    }

    /// Creates and starts the plugin at `level` (or moves an enabled one to `level`). Idempotent.
    pub fn enable(&self, name: &str, level: Level, reason: &str) -> Result<(), HostError> {
        enable_slot(&*self.slot(name)?, level, reason)
    }

    /// Moves an enabled plugin to `level`.
    pub fn set_level(&self, name: &str, level: Level, reason: &str) -> Result<(), HostError> {
        let slot = self.slot(name)?;
        check_level(&slot, level)?;
        let mut checkpoint = slot.lifecycle.lock().unwrap_or_else(|p| p.into_inner());
        let (state, instance) = slot.shared.snapshot();
        match (state, instance) {
            (PluginState::Enabled { level: current }, _) if current == level => Ok(()),
            (PluginState::Enabled { .. }, Some(instance)) => {
                change_level(&slot, &instance, level, reason, &mut checkpoint)
            }
            (state, _) => Err(HostError::NotEnabled {
                plugin: name.to_owned(),
                state: state.to_string(),
            }),
        }
    }

    /// Drains, stops and destroys the plugin, keeping its checkpoint for the next enable.
    /// Idempotent.
    ///
    /// New calls are refused at once. Calls in flight get up to the plugin's `drain_timeout`;
    /// if some are still running then, the instance is destroyed when the last one returns.
    /// A process is stopped with SIGTERM, then SIGKILL after its `stop_timeout`.
    pub fn disable(&self, name: &str, reason: &str) -> Result<(), HostError> {
        disable_slot(&*self.slot(name)?, reason)
    }

    /// [`PluginHost::disable`], with what each step of the retirement did and how long it took
    /// (for the conformance check).
    pub(crate) fn disable_reporting(
        &self,
        name: &str,
        reason: &str,
    ) -> Result<crate::lifecycle::Retired, HostError> {
        disable_slot_reporting(&*self.slot(name)?, reason, false)
    }

    /// The generation of the plugin's running process (1 for its first), for a plugin that
    /// runs in one.
    pub(crate) fn process_generation(&self, name: &str) -> Option<u64> {
        let slot = self.slot(name).ok()?;
        let (_, instance) = slot.shared.snapshot();
        instance.and_then(|i| i.process().map(|p| p.generation()))
    }

    /// Writes `line` as it is to the plugin's running process (the conformance check's unknown
    /// message); the generation of the process it went to.
    pub(crate) fn send_unknown(&self, name: &str, line: &str) -> Result<u64, String> {
        let slot = self.slot(name).map_err(|e| e.to_string())?;
        let (_, instance) = slot.shared.snapshot();
        let instance = instance.ok_or_else(|| "it has no running process".to_owned())?;
        let process = instance
            .process()
            .ok_or_else(|| "it has no process of its own".to_owned())?;
        process
            .send_unknown(line)
            .map_err(|e| format!("cannot write to its stdin: {e}"))?;
        Ok(process.generation())
    }

    /// Stops routing calls to the plugin while keeping its instance (and memory): cheap to bring
    /// back with [`PluginHost::resume`]. A plugin's process is stopped with SIGSTOP.
    pub fn suspend(&self, name: &str, reason: &str) -> Result<(), HostError> {
        let slot = self.slot(name)?;
        let _lifecycle = slot.lifecycle.lock().unwrap_or_else(|p| p.into_inner());
        let (state, instance) = slot.shared.snapshot();
        match (state, instance) {
            (PluginState::Suspended, _) => Ok(()),
            (PluginState::Enabled { .. }, Some(instance)) => {
                instance.suspend().map_err(|fault| HostError::Plugin {
                    plugin: name.to_owned(),
                    operation: "suspend",
                    fault,
                })?;
                slot.shared
                    .transition(PluginState::Suspended, reason, Some(instance));
                Ok(())
            }
            (state, _) => Err(HostError::NotEnabled {
                plugin: name.to_owned(),
                state: state.to_string(),
            }),
        }
    }

    /// Routes calls to a suspended plugin again, at the level it had (SIGCONT for a process).
    pub fn resume(&self, name: &str, reason: &str) -> Result<(), HostError> {
        let slot = self.slot(name)?;
        let _lifecycle = slot.lifecycle.lock().unwrap_or_else(|p| p.into_inner());
        let (state, instance) = slot.shared.snapshot();
        // A suspended instance keeps the level it had when it was last enabled.
        let level = slot.shared.level();
        match (state, instance) {
            (PluginState::Suspended, Some(instance)) => {
                instance.resume().map_err(|fault| HostError::Plugin {
                    plugin: name.to_owned(),
                    operation: "resume",
                    fault,
                })?;
                slot.shared
                    .transition(PluginState::Enabled { level }, reason, Some(instance));
                Ok(())
            }
            (PluginState::Enabled { .. }, _) => Ok(()),
            (state, _) => Err(HostError::NotEnabled {
                plugin: name.to_owned(),
                state: state.to_string(),
            }),
        }
    }

    /// Sets the plugin's concurrency limit (bounded by its configured maximum); `None` restores
    /// the configured value.
    pub fn set_concurrency(&self, name: &str, limit: Option<u32>) -> Result<u32, HostError> {
        let slot = self.slot(name)?;
        let max = slot.config.max_concurrent_calls;
        let limit = limit.unwrap_or(max).clamp(1, max);
        slot.shared.permits.set_limit(limit);
        Ok(limit)
    }

    /// Submits a call; `reply` receives the answer on a worker thread. Refusals that need no
    /// plugin (unknown, idle, degraded, busy) are returned at once instead.
    pub fn submit(&self, name: &str, request: Vec<u8>, reply: Reply) -> Result<(), CallError> {
        self.submit_inner(name, request, None, reply)
    }

    /// [`PluginHost::submit`] with a deadline, a cancellation and, for a streamed call, where its
    /// chunks go. The call runs through the plugin's streaming entry: a plugin that streams sends
    /// its chunks as it makes them and sees the deadline and the cancellation; one that does not
    /// has its whole answer sent as one chunk. The reply's answer is empty for a streamed call
    /// (everything went to the sink); a cancelled call answers [`CallError::Cancelled`].
    pub fn submit_with(
        &self,
        name: &str,
        request: Vec<u8>,
        options: CallOptions,
        reply: Reply,
    ) -> Result<(), CallError> {
        self.submit_inner(name, request, Some(Submitted::new(options)), reply)
    }

    fn submit_inner(
        &self,
        name: &str,
        request: Vec<u8>,
        options: Option<Submitted>,
        reply: Reply,
    ) -> Result<(), CallError> {
        let slot = self.slot(name).map_err(|_| CallError::UnknownPlugin {
            plugin: name.to_owned(),
        })?;
        match slot.admit(request, options, reply) {
            Ok(()) => Ok(()),
            Err((error, _reply)) => Err(idle_or(error)),
        }
    }

    /// Submits a call that may wait for the plugin to load: at once when it takes calls, else,
    /// while it is idle (its wake on the way) or unloading, in its wake queue, answered once it
    /// is up (or with why not). Returns the waiting call's id, for
    /// [`PluginHost::cancel_waiting`], when it waits.
    pub fn submit_when_ready(
        &self,
        name: &str,
        request: Vec<u8>,
        reply: Reply,
    ) -> Result<Option<u64>, CallError> {
        self.submit_when_ready_inner(name, request, None, reply)
    }

    /// [`PluginHost::submit_when_ready`] with options (see [`PluginHost::submit_with`]); the
    /// caller's deadline counts from now, the time to load included.
    pub fn submit_when_ready_with(
        &self,
        name: &str,
        request: Vec<u8>,
        options: CallOptions,
        reply: Reply,
    ) -> Result<Option<u64>, CallError> {
        self.submit_when_ready_inner(name, request, Some(Submitted::new(options)), reply)
    }

    fn submit_when_ready_inner(
        &self,
        name: &str,
        request: Vec<u8>,
        options: Option<Submitted>,
        reply: Reply,
    ) -> Result<Option<u64>, CallError> {
        let slot = self.slot(name).map_err(|_| CallError::UnknownPlugin {
            plugin: name.to_owned(),
        })?;
        // The state is read under the wake queue's lock: a transition that settles the queue
        // after this reads it sees this call.
        let mut waiting = slot.waiting.lock().unwrap_or_else(|p| p.into_inner());
        let state = slot.shared.snapshot().0;
        if matches!(state, PluginState::Idle | PluginState::Draining) {
            if waiting.0.len() >= slot.config.wake_queue as usize {
                return Err(CallError::WakeQueueFull {
                    plugin: name.to_owned(),
                    queue: slot.config.wake_queue,
                });
            }
            let id = waiting.1;
            waiting.1 += 1;
            waiting.0.push(Waiting {
                id,
                request,
                options,
                reply,
            });
            return Ok(Some(id));
        }
        drop(waiting);
        match slot.admit(request, options, reply) {
            Ok(()) => Ok(None),
            Err((error, _reply)) => Err(idle_or(error)),
        }
    }

    /// Takes a call out of the wake queue if it is still there (its caller gave up); `true` when
    /// it was (the call never reached the plugin).
    pub fn cancel_waiting(&self, name: &str, id: u64) -> bool {
        let Ok(slot) = self.slot(name) else {
            return false;
        };
        let mut waiting = slot.waiting.lock().unwrap_or_else(|p| p.into_inner());
        let before = waiting.0.len();
        waiting.0.retain(|w| w.id != id);
        waiting.0.len() != before
    }

    /// How long a call that wakes `name` waits for it to load.
    pub fn load_timeout(&self, name: &str) -> Option<Duration> {
        self.slot(name).ok().map(|s| s.config.load_timeout)
    }

    /// Unloads an idle plugin (drain, checkpoint, stop, destroy; the state becomes `Idle` and
    /// the next call wakes it), unless it took a call after `idle_since` or has one in flight.
    pub fn unload(&self, name: &str, reason: &str, idle_since: Timestamp) -> Result<(), HostError> {
        let slot = self.slot(name)?;
        unload_slot(&slot, reason, idle_since)
    }

    /// Calls the plugin and waits for the answer, at most its `call_timeout`.
    pub fn call(&self, name: &str, request: &[u8]) -> Result<Vec<u8>, CallError> {
        let timeout = self
            .slot(name)
            .map_err(|_| CallError::UnknownPlugin {
                plugin: name.to_owned(),
            })?
            .config
            .call_timeout;
        let (tx, rx) = crossbeam_channel::bounded(1);
        self.submit(
            name,
            request.to_vec(),
            Box::new(move |result| {
                let _ = tx.send(result);
            }),
        )?;
        match rx.recv_timeout(timeout) {
            Ok(result) => result,
            Err(_) => Err(self.timed_out(name, timeout)),
        }
    }

    /// Records that a caller gave up waiting on `name` after `timeout`, and the error to return.
    pub fn timed_out(&self, name: &str, timeout: Duration) -> CallError {
        let error = CallError::Timeout {
            plugin: name.to_owned(),
            timeout_ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
        };
        if let Ok(slot) = self.slot(name) {
            slot.shared.stats.timed_out(&error);
        }
        error
    }

    /// The call timeout configured for `name`.
    pub fn call_timeout(&self, name: &str) -> Option<Duration> {
        self.slot(name).ok().map(|s| s.config.call_timeout)
    }

    /// Asks the plugin for its health; an unhealthy plugin is marked failed.
    pub fn check_health(&self, name: &str) -> Result<(), HostError> {
        let slot = self.slot(name)?;
        let Some(instance) = slot.shared.callable() else {
            return Ok(());
        };
        match instance.health() {
            Ok(_) => Ok(()),
            Err(fault) if fault.status == ballast_abi::BALLAST_STATUS_DEGRADED => {
                (self.events)(PluginEvent {
                    at: (self.clock)(),
                    plugin: name.to_owned(),
                    kind: PluginEventKind::Reported {
                        healthy: true,
                        message: format!("degraded: {}", fault.message),
                    },
                });
                Ok(())
            }
            Err(fault) => {
                let _lifecycle = slot.lifecycle.lock().unwrap_or_else(|p| p.into_inner());
                Err(fail(&slot, "health check", fault))
            }
        }
    }

    /// The plugin's status with fresh figures.
    pub fn status(&self, name: &str) -> Result<PluginStatus, HostError> {
        let slot = self.slot(name)?;
        let stats = slot.stats();
        let (process, version) = match &slot.backend {
            Backend::Native { .. } => (None, None),
            Backend::Process(plugin) => {
                let stopped = slot
                    .shared
                    .snapshot()
                    .1
                    .and_then(|l| l.process().map(|p| p.is_stopped()))
                    .unwrap_or(false);
                let status = plugin.status(stopped);
                let version = status.version.clone();
                (Some(status), version)
            }
        };
        let mut info = slot.backend.info().clone();
        if let Some(version) = version {
            info.version = version;
        }
        let current = slot
            .shared
            .current
            .read()
            .unwrap_or_else(|p| p.into_inner());
        Ok(PluginStatus {
            name: slot.config.name.clone(),
            state: current.state.clone(),
            since: current.since,
            reason: current.reason.clone(),
            priority: slot.config.priority,
            essential: slot.config.essential,
            concurrency_limit: slot.shared.permits.limit(),
            info,
            stats,
            last_error: slot
                .shared
                .stats
                .last_error
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
            gauges: slot.backend.gauges(),
            kind: match slot.config.kind {
                crate::config::PluginKind::Native => "native",
                crate::config::PluginKind::Process => "process",
            },
            process,
        })
    }

    /// Every plugin's status.
    pub fn statuses(&self) -> Vec<PluginStatus> {
        self.names()
            .iter()
            .filter_map(|n| self.status(n).ok())
            .collect()
    }

    /// Fresh figures for `name`, also sent as a `Stats` event. A native plugin's live bytes
    /// feed its leak detector here (a process plugin's memory is watched by its supervisor).
    pub fn refresh_stats(&self, name: &str) -> Result<PluginStats, HostError> {
        let slot = self.slot(name)?;
        let stats = slot.stats();
        let now = (self.clock)();
        if matches!(slot.backend, Backend::Native { .. })
            && slot.shared.callable().is_some()
            && stats.live_bytes > 0
        {
            let finding = slot
                .leak
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .sample(now, stats.live_bytes);
            if let Some(finding) = finding {
                let message = finding.describe();
                tracing::warn!(plugin = %name, alert = "leak_suspected", %message, "plugin alert");
                slot.shared.emit(PluginEventKind::Alert {
                    alert: PluginAlert::LeakSuspected,
                    message,
                });
            }
        }
        (self.events)(PluginEvent {
            at: now,
            plugin: name.to_owned(),
            kind: PluginEventKind::Stats(stats.clone()),
        });
        Ok(stats)
    }

    /// The checkpoint kept for the plugin's next create, if any.
    pub fn checkpoint(&self, name: &str) -> Result<Option<Vec<u8>>, HostError> {
        Ok(self
            .slot(name)?
            .lifecycle
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone())
    }

    /// Sets the checkpoint the next create receives (e.g. restored from disk at start).
    pub fn set_checkpoint(&self, name: &str, blob: Option<Vec<u8>>) -> Result<(), HostError> {
        *self
            .slot(name)?
            .lifecycle
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = blob;
        Ok(())
    }

    /// When the plugin's latest checkpoint was taken, if it has one.
    pub fn checkpoint_taken_at(&self, name: &str) -> Result<Option<Timestamp>, HostError> {
        Ok(
            match self
                .slot(name)?
                .shared
                .checkpoint_at
                .load(Ordering::Relaxed)
            {
                0 => None,
                ms => Some(Timestamp::from_millis(ms)),
            },
        )
    }

    /// Says when the checkpoint set by [`Self::set_checkpoint`] was taken (e.g. its file's
    /// modification time), for the plugin's stats.
    pub fn set_checkpoint_taken_at(&self, name: &str, at: Timestamp) -> Result<(), HostError> {
        self.slot(name)?
            .shared
            .checkpoint_at
            .store(at.as_millis().max(1), Ordering::Relaxed);
        Ok(())
    }

    /// Asks the running instance for its checkpoint without stopping it, and keeps it as the one
    /// the next instance starts from (after a crash, a kernel kill, a shed or a restart). Runs
    /// under the lifecycle lock, so it never overlaps a drain or a restart; a native plugin's
    /// calls are held for the time it takes. `Ok(None)` when the plugin does not run (or is
    /// suspended) or had nothing to hand over; `Ok(Some(at))` when a checkpoint taken at `at`
    /// is now kept (call [`Self::checkpoint`] to read it).
    pub fn take_checkpoint(&self, name: &str) -> Result<Option<Timestamp>, HostError> {
        let slot = self.slot(name)?;
        let mut kept = slot.lifecycle.lock().unwrap_or_else(|p| p.into_inner());
        let (state, instance) = slot.shared.snapshot();
        let (PluginState::Enabled { .. }, Some(instance)) = (state, instance) else {
            return Ok(None);
        };
        match instance.checkpoint(slot.config.drain_timeout) {
            Ok(Some(blob)) if !blob.is_empty() => {
                let at = slot.shared.now();
                *kept = Some(blob);
                slot.shared
                    .checkpoint_at
                    .store(at.as_millis().max(1), Ordering::Relaxed);
                Ok(Some(at))
            }
            Ok(_) => Ok(None),
            Err(fault) => Err(HostError::Plugin {
                plugin: name.to_owned(),
                operation: "checkpoint",
                fault,
            }),
        }
    }

    /// Disables every plugin (for shutdown), lowest priority first.
    pub fn disable_all(&self, reason: &str) {
        let mut slots: Vec<Arc<Slot>> = self
            .slots
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect();
        slots.sort_by_key(|s| s.config.priority);
        for slot in slots {
            if let Err(error) = self.disable(&slot.config.name, reason) {
                tracing::warn!(plugin = %slot.config.name, %error, "disable at shutdown failed");
            }
        }
    }
}

/// The refusal of a call to an idle plugin is `Idle` (a call may wake it), not degraded.
fn idle_or(error: CallError) -> CallError {
    match error {
        CallError::Degraded {
            plugin,
            state,
            reason,
            since,
        } if state == PluginState::Idle.name() => CallError::Idle {
            plugin,
            reason,
            since,
        },
        other => other,
    }
}
