//! The plugin host: a registry of loaded plugins, their lifecycle (Loaded, Enabled(level),
//! Draining, Disabled, Suspended, Failed), and calls that run on per-plugin worker threads with a
//! concurrency limit, a bounded queue and a timeout.
//!
//! Lifecycle operations of one plugin are serialized; calls never wait for them. A call to a
//! plugin that is not enabled fails at once with [`CallError::Degraded`], naming the state, the
//! reason and since when.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, RwLock};
use std::time::{Duration, Instant};

use ballast_core::Timestamp;
use ballast_core::plugin::{
    Level, PluginAlert, PluginEvent, PluginEventKind, PluginSpec, PluginState, PluginStats,
    ProcessStatus,
};
use ballast_process::LeakDetector;
use serde::Serialize;

use crate::config::PluginConfig;
use crate::host_api::{Clock, HostApiRef, HostContext, StateReport, leak_host_api, system_clock};
use crate::instance::{Instance, PluginFault};
use crate::library::{LoadError, PluginInfo, PluginLibrary};
use crate::live::Live;
use crate::process::{ProcessOptions, ProcessPlugin, SupervisorMsg};

/// Where the host sends plugin events.
pub type EventSink = Arc<dyn Fn(PluginEvent) + Send + Sync>;

/// How a call's answer is delivered.
pub type Reply = Box<dyn FnOnce(Result<Vec<u8>, CallError>) + Send>;

/// Errors of lifecycle operations. Each names the plugin.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    /// The plugin config is invalid.
    #[error("{}", problems.join("; "))]
    Config {
        /// Every problem, each naming the plugin and field.
        problems: Vec<String>,
    },
    /// The file could not be loaded.
    #[error(transparent)]
    Load(#[from] LoadError),
    /// Two plugins share a name.
    #[error(
        "plugin `{name}` is loaded twice: from {first} and from {second}; plugin names must be unique"
    )]
    Duplicate {
        /// The name.
        name: String,
        /// The file loaded first.
        first: String,
        /// The file loaded second.
        second: String,
    },
    /// The config's name and the file's declared name differ.
    #[error(
        "plugin `{configured}`: the file {file} declares the name `{declared}`; make the config name match"
    )]
    NameMismatch {
        /// The name in the config.
        configured: String,
        /// The name in the file.
        declared: String,
        /// The file.
        file: String,
    },
    /// No plugin of that name is loaded.
    #[error("no plugin named `{name}` is loaded")]
    UnknownPlugin {
        /// The name asked for.
        name: String,
    },
    /// The level does not exist.
    #[error("plugin `{plugin}` has levels 0..={max}; level {level} does not exist")]
    InvalidLevel {
        /// The plugin.
        plugin: String,
        /// The level asked for.
        level: u32,
        /// Its highest level.
        max: u32,
    },
    /// The operation needs the plugin enabled.
    #[error("plugin `{plugin}` is {state}, not enabled")]
    NotEnabled {
        /// The plugin.
        plugin: String,
        /// Its state.
        state: String,
    },
    /// A plugin function failed.
    #[error("plugin `{plugin}`: {operation} failed: {fault}")]
    Plugin {
        /// The plugin.
        plugin: String,
        /// The function, e.g. "create".
        operation: &'static str,
        /// What it returned.
        fault: PluginFault,
    },
}

/// Why a call was not answered. Degraded and Busy are decided before the plugin is touched.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, thiserror::Error)]
#[serde(tag = "error", rename_all = "snake_case")]
pub enum CallError {
    /// No plugin of that name.
    #[error("no plugin named `{plugin}`")]
    UnknownPlugin {
        /// The name asked for.
        plugin: String,
    },
    /// The plugin is shed, suspended, draining or failed.
    #[error("plugin `{plugin}` is {state} since {since}: {reason}")]
    Degraded {
        /// The plugin.
        plugin: String,
        /// Its state (disabled, suspended, draining, failed, loaded).
        state: String,
        /// Why it is in that state.
        reason: String,
        /// Since when.
        since: Timestamp,
    },
    /// The concurrency limit and the queue are full.
    #[error("plugin `{plugin}` is busy: {limit} calls running and the queue of {queue} is full")]
    Busy {
        /// The plugin.
        plugin: String,
        /// Its current limit.
        limit: u32,
        /// Its queue size.
        queue: u32,
    },
    /// No answer within the timeout.
    #[error("plugin `{plugin}` did not answer within {timeout_ms} ms")]
    Timeout {
        /// The plugin.
        plugin: String,
        /// The timeout.
        timeout_ms: u64,
    },
    /// The plugin returned an error.
    #[error("plugin `{plugin}` failed the call: {message}")]
    Failed {
        /// The plugin.
        plugin: String,
        /// Its message.
        message: String,
    },
    /// The plugin panicked; it is now marked failed.
    #[error("plugin `{plugin}` panicked during the call and was marked failed: {message}")]
    Panicked {
        /// The plugin.
        plugin: String,
        /// The panic message.
        message: String,
    },
}

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

/// The state calls look at, swapped atomically at each transition.
struct Current {
    state: PluginState,
    since: Timestamp,
    reason: String,
    instance: Option<Arc<Live>>,
}

/// Call counters and the latency histogram of one plugin.
struct CallStats {
    calls: AtomicU64,
    errors: AtomicU64,
    timeouts: AtomicU64,
    latency_us: Mutex<hdrhistogram::Histogram<u64>>,
    last_error: Mutex<Option<String>>,
}

impl CallStats {
    fn new() -> CallStats {
        // Three significant figures from 1 µs to 1 hour; construction cannot fail for these bounds,
        // but fall back to an auto-resizing histogram rather than panic.
        let histogram = hdrhistogram::Histogram::new_with_bounds(1, 3_600_000_000, 3)
            .or_else(|_| hdrhistogram::Histogram::new(3))
            .unwrap_or_else(|_| unreachable!("a 3-significant-figure histogram is always valid"));
        CallStats {
            calls: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            timeouts: AtomicU64::new(0),
            latency_us: Mutex::new(histogram),
            last_error: Mutex::new(None),
        }
    }

    fn record(&self, elapsed: Duration, error: Option<&CallError>) {
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

    fn timed_out(&self, error: &CallError) {
        self.timeouts.fetch_add(1, Ordering::Relaxed);
        self.errors.fetch_add(1, Ordering::Relaxed);
        *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(error.to_string());
    }
}

/// A dynamic limit on calls running at once.
struct Permits {
    state: Mutex<(u32, u32)>, // (running, limit)
    freed: Condvar,
}

impl Permits {
    fn acquire(&self) {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        while s.0 >= s.1 {
            s = self.freed.wait(s).unwrap_or_else(|p| p.into_inner());
        }
        s.0 += 1;
    }

    fn release(&self) {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        s.0 = s.0.saturating_sub(1);
        self.freed.notify_one();
    }

    fn set_limit(&self, limit: u32) {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        s.1 = limit.max(1);
        self.freed.notify_all();
    }

    fn limit(&self) -> u32 {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).1
    }
}

/// What the worker threads of one plugin share with the host.
pub(crate) struct Shared {
    name: String,
    current: RwLock<Current>,
    stats: CallStats,
    permits: Permits,
    /// Calls admitted and not yet answered (queued or running).
    outstanding: AtomicU32,
    /// The level of the last Enabled state (a suspended instance keeps it).
    level: AtomicU32,
    clock: Clock,
    events: EventSink,
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

    /// The current state and instance, read together.
    pub(crate) fn snapshot(&self) -> (PluginState, Option<Arc<Live>>) {
        let current = self.current.read().unwrap_or_else(|p| p.into_inner());
        (current.state.clone(), current.instance.clone())
    }

    fn degraded(&self) -> CallError {
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
    fn serving(&self) -> Option<Arc<Live>> {
        let current = self.current.read().unwrap_or_else(|p| p.into_inner());
        match current.state {
            PluginState::Enabled { .. } | PluginState::Draining => current.instance.clone(),
            _ => None,
        }
    }

    /// The live instance if the plugin takes new calls.
    fn callable(&self) -> Option<Arc<Live>> {
        let current = self.current.read().unwrap_or_else(|p| p.into_inner());
        if current.state.accepts_calls() {
            current.instance.clone()
        } else {
            None
        }
    }
}

struct Job {
    instance: Arc<Live>,
    request: Vec<u8>,
    reply: Reply,
}

/// What runs a plugin: a library in the daemon, or a process.
pub(crate) enum Backend {
    /// A native library loaded into the daemon.
    Native {
        library: Arc<PluginLibrary>,
        host_api: HostApiRef,
        context: &'static HostContext,
    },
    /// A process plugin, or a native plugin in a worker process.
    Process(Arc<ProcessPlugin>),
}

impl Backend {
    fn info(&self) -> &PluginInfo {
        match self {
            Backend::Native { library, .. } => library.info(),
            Backend::Process(p) => &p.info,
        }
    }

    fn gauges(&self) -> BTreeMap<String, f64> {
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
    jobs: crossbeam_channel::Sender<Job>,
    /// Serializes lifecycle operations; holds the checkpoint of the last instance.
    pub(crate) lifecycle: Mutex<Option<Vec<u8>>>,
    /// The allocator's live bytes of a native plugin, for leak detection.
    leak: Mutex<LeakDetector>,
}

/// Hosts plugins: native libraries and processes. Thread-safe; share it in an `Arc`.
pub struct PluginHost {
    slots: RwLock<BTreeMap<String, Arc<Slot>>>,
    clock: Clock,
    events: EventSink,
    options: ProcessOptions,
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
            permits: Permits {
                state: Mutex::new((0, config.max_concurrent_calls)),
                freed: Condvar::new(),
            },
            outstanding: AtomicU32::new(0),
            level: AtomicU32::new(0),
            clock,
            events: Arc::clone(&self.events),
        });
        let (jobs, receiver) = crossbeam_channel::unbounded::<Job>();
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
    /// plugin (unknown, degraded, busy) are returned at once instead.
    pub fn submit(&self, name: &str, request: Vec<u8>, reply: Reply) -> Result<(), CallError> {
        let slot = self.slot(name).map_err(|_| CallError::UnknownPlugin {
            plugin: name.to_owned(),
        })?;
        let Some(instance) = slot.shared.callable() else {
            return Err(slot.shared.degraded());
        };
        let limit = slot.shared.permits.limit();
        let admitted =
            slot.shared
                .outstanding
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                    (n < limit.saturating_add(slot.config.queue)).then_some(n + 1)
                });
        if admitted.is_err() {
            return Err(CallError::Busy {
                plugin: name.to_owned(),
                limit,
                queue: slot.config.queue,
            });
        }
        let job = Job {
            instance,
            request,
            reply,
        };
        if let Err(crossbeam_channel::SendError(job)) = slot.jobs.send(job) {
            slot.shared.outstanding.fetch_sub(1, Ordering::SeqCst);
            (job.reply)(Err(slot.shared.degraded()));
        }
        Ok(())
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
        let stats = Self::stats_of(&slot);
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
        let stats = Self::stats_of(&slot);
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

    fn stats_of(slot: &Slot) -> PluginStats {
        let s = &slot.shared.stats;
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
            in_flight: slot.shared.outstanding.load(Ordering::Relaxed),
            latency_p50_us: p50,
            latency_p95_us: p95,
            latency_p99_us: p99,
            ..PluginStats::default()
        };
        match &slot.backend {
            Backend::Native { .. } => {
                let alloc = slot
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
                let running = slot.shared.snapshot().1.is_some();
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

fn check_level(slot: &Slot, level: Level) -> Result<(), HostError> {
    let n = slot.backend.info().n_levels();
    if level.0 >= n {
        return Err(HostError::InvalidLevel {
            plugin: slot.config.name.clone(),
            level: level.0,
            max: n - 1,
        });
    }
    Ok(())
}

/// Marks the plugin failed after `operation` failed, and returns the error.
pub(crate) fn fail(slot: &Slot, operation: &'static str, fault: PluginFault) -> HostError {
    slot.shared.transition(
        PluginState::Failed {
            reason: format!("{operation} failed: {fault}"),
        },
        &format!("{operation} failed"),
        None,
    );
    HostError::Plugin {
        plugin: slot.config.name.clone(),
        operation,
        fault,
    }
}

/// Creates and starts a new instance at `level`, handing it the checkpoint (kept for the next
/// attempt if the create fails). `supervised` marks a restart by the supervisor. The caller
/// holds the lifecycle lock (`checkpoint` is its content) and makes the transition.
pub(crate) fn start_instance(
    slot: &Slot,
    level: Level,
    checkpoint: &mut Option<Vec<u8>>,
    supervised: bool,
) -> Result<Arc<Live>, (&'static str, PluginFault)> {
    let blob = checkpoint.take().unwrap_or_default();
    let created = match &slot.backend {
        Backend::Native {
            library, host_api, ..
        } => {
            let config_json =
                serde_json::to_vec(&slot.config.config).unwrap_or_else(|_| b"{}".to_vec());
            Instance::create(Arc::clone(library), host_api.0, &config_json, &blob).map(Live::Native)
        }
        Backend::Process(plugin) => plugin.create(level.0, &blob, supervised).map(Live::Process),
    };
    let instance = match created {
        Ok(instance) => Arc::new(instance),
        Err(fault) => {
            *checkpoint = (!blob.is_empty()).then_some(blob);
            return Err(("create", fault));
        }
    };
    let wait = slot.config.drain_timeout;
    instance.start(wait).map_err(|f| ("start", f))?;
    if level != Level::FULL {
        instance
            .set_level(level.0, wait)
            .map_err(|f| ("set_level", f))?;
    }
    Ok(instance)
}

/// [`PluginHost::enable`] on a slot.
/// Reads the plugin's figures and reports them as a [`PluginEventKind::Stats`] event.
fn publish_stats(slot: &Slot) {
    slot.shared
        .emit(PluginEventKind::Stats(PluginHost::stats_of(slot)));
}

pub(crate) fn enable_slot(slot: &Slot, level: Level, reason: &str) -> Result<(), HostError> {
    check_level(slot, level)?;
    let mut checkpoint = slot.lifecycle.lock().unwrap_or_else(|p| p.into_inner());
    let (state, instance) = slot.shared.snapshot();
    match (state, instance) {
        (PluginState::Enabled { level: current }, _) if current == level => return Ok(()),
        (PluginState::Enabled { .. } | PluginState::Suspended, Some(instance)) => {
            return change_level(slot, &instance, level, reason, &mut checkpoint);
        }
        _ => {}
    }
    match start_instance(slot, level, &mut checkpoint, false) {
        Ok(instance) => {
            slot.shared
                .transition(PluginState::Enabled { level }, reason, Some(instance));
            // The figures on arrival: what the plugin holds at this level is known at once,
            // not at the next periodic refresh.
            publish_stats(slot);
            Ok(())
        }
        Err((operation, fault)) => Err(fail(slot, operation, fault)),
    }
}

fn change_level(
    slot: &Slot,
    instance: &Arc<Live>,
    level: Level,
    reason: &str,
    checkpoint: &mut Option<Vec<u8>>,
) -> Result<(), HostError> {
    // The figures on departure, then on arrival: the scaler learns what each level really holds
    // even when the plugin stays at a level for less than one periodic refresh.
    publish_stats(slot);
    let plugin_error = |operation, fault| HostError::Plugin {
        plugin: slot.config.name.clone(),
        operation,
        fault,
    };
    // A suspended process must run to answer.
    instance.resume().map_err(|f| plugin_error("resume", f))?;
    if let Some(process) = instance.process()
        && !process.plugin().speaks_protocol()
        && process.level() != level.0
    {
        // It learns its level only from its environment: restart it at the new one.
        process.plugin().note(&format!(
            "restarting at level {level}: it speaks no protocol ({reason})"
        ));
        if let Err(fault) = instance.stop(slot.config.drain_timeout) {
            tracing::warn!(plugin = %slot.config.name, %fault, "stop before the level change failed");
        }
        return match start_instance(slot, level, checkpoint, false) {
            Ok(instance) => {
                slot.shared
                    .transition(PluginState::Enabled { level }, reason, Some(instance));
                Ok(())
            }
            Err((operation, fault)) => Err(fail(slot, operation, fault)),
        };
    }
    if let Err(fault) = instance.set_level(level.0, slot.config.drain_timeout) {
        if fault.is_panic() {
            return Err(fail(slot, "set_level", fault));
        }
        return Err(plugin_error("set_level", fault));
    }
    slot.shared.transition(
        PluginState::Enabled { level },
        reason,
        Some(Arc::clone(instance)),
    );
    publish_stats(slot);
    Ok(())
}

/// [`PluginHost::disable`] on a slot.
pub(crate) fn disable_slot(slot: &Slot, reason: &str) -> Result<(), HostError> {
    disable_slot_as(slot, reason, false)
}

/// [`disable_slot`], on the host's own initiative when `by_host`.
pub(crate) fn disable_slot_as(slot: &Slot, reason: &str, by_host: bool) -> Result<(), HostError> {
    let name = slot.config.name.as_str();
    let mut checkpoint = slot.lifecycle.lock().unwrap_or_else(|p| p.into_inner());
    let (state, instance) = slot.shared.snapshot();
    let instance = match state {
        PluginState::Enabled { .. } | PluginState::Suspended => instance,
        _ => None,
    };
    let Some(instance) = instance else {
        if matches!(
            state,
            PluginState::Loaded | PluginState::Failed { .. } | PluginState::Restarting
        ) {
            slot.shared
                .transition_as(PluginState::Disabled, reason, None, by_host);
        }
        return Ok(());
    };
    // The figures on departure (see `change_level`).
    publish_stats(slot);
    slot.shared
        .transition(PluginState::Draining, reason, Some(Arc::clone(&instance)));
    let deadline = Instant::now() + slot.config.drain_timeout;
    while slot.shared.outstanding.load(Ordering::SeqCst) > 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1));
    }
    let left = deadline.saturating_duration_since(Instant::now());
    let in_flight = slot.shared.outstanding.load(Ordering::SeqCst);
    if in_flight > 0 {
        tracing::warn!(plugin = %name, in_flight, "calls still running after the drain deadline; the instance is destroyed when they return");
    } else {
        if let Err(fault) = instance.drain(left) {
            tracing::warn!(plugin = %name, %fault, "plugin drain failed; stopping it anyway");
        }
        match instance.checkpoint(left) {
            Ok(Some(blob)) if !blob.is_empty() => *checkpoint = Some(blob),
            Ok(_) => {}
            Err(fault) => {
                tracing::warn!(plugin = %name, %fault, "plugin checkpoint failed; its state will not carry over")
            }
        }
        if let Err(fault) = instance.stop(left) {
            tracing::warn!(plugin = %name, %fault, "plugin stop failed");
        }
    }
    slot.shared
        .transition_as(PluginState::Disabled, reason, None, by_host);
    // Dropping the last reference (here, or in the last call still running) destroys it.
    drop(instance);
    Ok(())
}

/// A worker thread: takes jobs, waits for a permit, runs the call, replies.
fn worker(shared: &Shared, jobs: &crossbeam_channel::Receiver<Job>) {
    while let Ok(job) = jobs.recv() {
        shared.permits.acquire();
        let started = Instant::now();
        let still_current = shared
            .serving()
            .is_some_and(|current| Arc::ptr_eq(&current, &job.instance));
        let result = if still_current {
            match job.instance.call(&job.request) {
                Ok(bytes) => Ok(bytes),
                Err(fault) if fault.is_panic() => {
                    let error = CallError::Panicked {
                        plugin: shared.name.clone(),
                        message: fault.message.clone(),
                    };
                    // Mark failed only if the instance that panicked is still the current one.
                    if shared
                        .callable()
                        .is_some_and(|c| Arc::ptr_eq(&c, &job.instance))
                    {
                        shared.transition(
                            PluginState::Failed {
                                reason: format!("call panicked: {}", fault.message),
                            },
                            "call panicked",
                            None,
                        );
                    }
                    Err(error)
                }
                Err(fault) => Err(CallError::Failed {
                    plugin: shared.name.clone(),
                    message: fault.to_string(),
                }),
            }
        } else {
            Err(shared.degraded())
        };
        shared
            .stats
            .record(started.elapsed(), result.as_ref().err());
        drop(job.instance);
        shared.permits.release();
        shared.outstanding.fetch_sub(1, Ordering::SeqCst);
        (job.reply)(result);
    }
}
