//! Plugins that run in a process of their own: process plugins (any executable, with or without
//! the control protocol) and native plugins isolated in a `ballast worker`. [`ProcessPlugin`] is
//! what one such plugin keeps across its processes (how to start it, its log, its supervision
//! figures); [`ProcessInstance`] is one running process behind the protocol, as the host's
//! lifecycle and call code sees it.
//!
//! A call is a `call` line and its answer: any number of `chunk` lines, handed to the caller's
//! [`CallIo`] in order as they arrive, then a `response` (or an `error`). The process's reader
//! thread routes each line to the request it answers ([`Pending`]); the caller's thread waits for
//! them, and is woken when the call is cancelled (the caller went away, its deadline passed): it
//! then sends `cancel` and stops waiting at once. What still comes for a request the host gave
//! up on is dropped.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ballast_abi::{BALLAST_STATUS_CANCELLED, BALLAST_STATUS_ERROR, BALLAST_STATUS_UNSUPPORTED};
use ballast_core::Timestamp;
use ballast_core::plugin::CgroupStatus;
use ballast_core::plugin::{PluginAlert, ProcessStatus, ProcessUsage, ProgressStatus};
use ballast_process::cgroup::{CgroupTree, Limits, PluginCgroup};
use ballast_process::protocol::Described;
use ballast_process::{
    CgroupJoinError, Child, ChildEvent, HostMessage, LogFile, PROTOCOL_VERSION, PluginMessage,
    Progress, RestartTracker, Rotation, Spawn, Stream,
};
use nix::sys::signal::Signal;

use crate::config::{Isolation, PluginConfig, PluginKind, Protocol};
use crate::host_api::Clock;
use crate::instance::PluginFault;
use crate::library::{LevelInfo, PluginInfo};
use crate::stream::{CallIo, CancelReason, CancelToken};
use crate::tap::{Observed, Tap};
use crate::trust::FileTrust;

/// Options the host gives every plugin that runs in a process.
#[derive(Clone, Debug)]
pub struct ProcessOptions {
    /// Where per-plugin log files go (`<dir>/<plugin>.log`); no files when `None`.
    pub log_dir: Option<PathBuf>,
    /// How the log files rotate.
    pub log_rotation: Rotation,
    /// The `ballast` executable that runs isolated native plugins (`ballast worker`).
    pub worker_program: PathBuf,
    /// How often a process tree is measured.
    pub sample_interval: Duration,
    /// Whether each process runs in a cgroup of its own.
    pub cgroups: Cgroups,
}

impl Default for ProcessOptions {
    fn default() -> Self {
        ProcessOptions {
            log_dir: None,
            log_rotation: Rotation::default(),
            worker_program: std::env::current_exe().unwrap_or_else(|_| PathBuf::from("ballast")),
            sample_interval: Duration::from_secs(2),
            cgroups: Cgroups::Off,
        }
    }
}

/// Whether the processes of plugins run in cgroups of their own, where the kernel enforces
/// their memory limit, throttling point and CPU quota.
#[derive(Clone, Debug, Default)]
pub enum Cgroups {
    /// They do not, and nobody asked: memory limits are polled.
    #[default]
    Off,
    /// They cannot (why, for the status): memory limits are polled.
    Unavailable(String),
    /// Each process gets a cgroup in this tree.
    Tree(Arc<CgroupTree>),
}

/// What the supervisor learns, shown in the status.
#[derive(Debug)]
pub(crate) struct Supervision {
    pub(crate) usage: Option<ProcessUsage>,
    /// The highest resident memory seen since it was loaded.
    pub(crate) peak_rss: u64,
    /// A worker's own figures: live bytes, peak bytes, allocations.
    pub(crate) reported: Option<(u64, u64, u64)>,
    pub(crate) conditions: Vec<PluginAlert>,
    pub(crate) progress: Option<Progress>,
    pub(crate) restarts: u32,
    pub(crate) last_exit: Option<String>,
    pub(crate) started_at: Option<Timestamp>,
    pub(crate) version: Option<String>,
    pub(crate) pid: Option<u32>,
    pub(crate) gauges: BTreeMap<String, f64>,
    pub(crate) tracker: RestartTracker,
    /// The cgroup of the process of a generation, set before that process starts.
    pub(crate) cgroup: Option<(u64, Arc<PluginCgroup>)>,
    /// What its current or last cgroup looked like at the last reading.
    pub(crate) cgroup_status: Option<CgroupStatus>,
    /// Why its processes run in no cgroup of their own, when cgroups are wanted.
    pub(crate) cgroup_unavailable: Option<String>,
}

/// A message for a plugin's supervisor thread.
#[derive(Debug)]
pub(crate) enum SupervisorMsg {
    /// Something a process of generation `generation` did.
    Child { generation: u64, event: ChildEvent },
    /// A process of generation `generation` started (said hello, or was spawned).
    Started { generation: u64 },
    /// The process was stopped (true) or continued (false).
    Stopped { generation: u64, stopped: bool },
}

/// What one plugin that runs in a process keeps across its processes.
pub(crate) struct ProcessPlugin {
    pub(crate) config: PluginConfig,
    spawn: Spawn,
    /// Speaks the protocol (process plugins with `json-lines`, and workers).
    protocol: bool,
    isolated: bool,
    pub(crate) info: PluginInfo,
    pub(crate) log: Option<Arc<LogFile>>,
    pub(crate) clock: Clock,
    pub(crate) options: ProcessOptions,
    supervisor: crossbeam_channel::Sender<SupervisorMsg>,
    generation: AtomicU64,
    pub(crate) supervision: Mutex<Supervision>,
    /// The checkpoint the last process started with: a restart after a crash starts from it.
    last_checkpoint: Mutex<Option<Vec<u8>>>,
    /// The conformance check's record of the protocol (never in the daemon).
    tap: Option<Arc<Tap>>,
}

impl std::fmt::Debug for ProcessPlugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProcessPlugin")
            .field("name", &self.config.name)
            .finish_non_exhaustive()
    }
}

fn fault(message: impl Into<String>) -> PluginFault {
    PluginFault {
        status: BALLAST_STATUS_ERROR,
        message: message.into(),
    }
}

/// How a call ended without an answer.
enum CallEnd {
    /// It was cancelled (and the plugin sent `cancel` once it had the call).
    Cancelled(CancelReason),
    /// It failed.
    Fault(PluginFault),
}

/// The fault of a cancelled call.
fn cancelled(reason: CancelReason) -> PluginFault {
    let why = match reason {
        CancelReason::Caller => "its caller went away",
        CancelReason::Deadline => "its deadline passed",
        CancelReason::Shed => "the plugin is being shed",
    };
    PluginFault {
        status: BALLAST_STATUS_CANCELLED,
        message: format!("the call was cancelled: {why}"),
    }
}

/// A duration in whole milliseconds, saturating.
fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// How to start the plugin's process: the program and arguments from its config, or a worker
/// for an isolated native plugin.
fn spawn_of(config: &PluginConfig, options: &ProcessOptions) -> Spawn {
    match config.kind {
        PluginKind::Process => Spawn {
            program: config.command.clone().unwrap_or_default(),
            args: config.args.iter().map(OsString::from).collect(),
            env: Vec::new(),
            working_dir: config.working_dir.clone(),
            cgroups: Vec::new(),
        },
        PluginKind::Native => {
            let heartbeat = config
                .effective_stall_threshold()
                .map_or(Duration::from_secs(5), |t| t / 4)
                .clamp(Duration::from_millis(100), Duration::from_secs(5));
            let mut args: Vec<OsString> = vec![
                "worker".into(),
                "--plugin".into(),
                config.file().into_os_string(),
                "--threads".into(),
                config.max_concurrent_calls.to_string().into(),
                "--heartbeat-ms".into(),
                heartbeat.as_millis().to_string().into(),
            ];
            if let Some(pin) = &config.sha256 {
                args.push("--sha256".into());
                args.push(pin.into());
            }
            Spawn {
                program: options.worker_program.clone(),
                args,
                env: Vec::new(),
                working_dir: None,
                cgroups: Vec::new(),
            }
        }
    }
}

/// The file `program` names: itself when it has a slash, else the first executable of that
/// name in `PATH`. `None` when there is none (the spawn then fails with its own error).
fn resolve_program(program: &Path) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    if program.as_os_str().is_empty() {
        return None;
    }
    if program.components().count() > 1 || program.is_absolute() {
        return program.exists().then(|| program.to_owned());
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| {
            std::fs::metadata(candidate)
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

/// The declared info of a process plugin, from its config.
fn process_info(config: &PluginConfig) -> PluginInfo {
    let file = config.command.clone().unwrap_or_default();
    let levels: Vec<LevelInfo> = if config.levels.is_empty() {
        vec![LevelInfo {
            level: 0,
            name: "full".to_owned(),
            memory_min_bytes: 0,
            memory_preferred_bytes: 0,
            gpu_memory_bytes: 0,
        }]
    } else {
        config
            .levels
            .iter()
            .zip(0u32..)
            .map(|(l, level)| LevelInfo {
                level,
                name: l.name.clone(),
                memory_min_bytes: l.memory_mb << 20,
                memory_preferred_bytes: l.memory_mb << 20,
                gpu_memory_bytes: l.gpu_memory_mb << 20,
            })
            .collect()
    };
    let (abi, capabilities) = match config.protocol {
        Protocol::JsonLines => (
            format!("process, json-lines protocol {PROTOCOL_VERSION}"),
            vec!["checkpoint", "drain"],
        ),
        Protocol::None => ("process, no protocol".to_owned(), Vec::new()),
    };
    PluginInfo {
        name: config.name.clone(),
        version: String::new(),
        sdk_version: String::new(),
        abi,
        size_bytes: std::fs::metadata(&file).map_or(0, |m| m.len()),
        file,
        sha256: None,
        capabilities,
        cpu_share: config.cpu_share,
        needs_gpu: config.needs_gpu,
        levels,
    }
}

/// The info of an isolated native plugin, from its worker's `hello`.
fn described_info(config: &PluginConfig, version: Option<String>, d: &Described) -> PluginInfo {
    const KNOWN: [&str; 5] = [
        "thread_safe_calls",
        "checkpoint",
        "drain",
        "alloc_stats",
        "streaming",
    ];
    PluginInfo {
        name: config.name.clone(),
        version: version.unwrap_or_default(),
        sdk_version: d.sdk_version.clone(),
        abi: d.abi.clone(),
        file: config.file(),
        sha256: d.sha256.clone(),
        size_bytes: d.size_bytes,
        capabilities: KNOWN
            .into_iter()
            .filter(|k| d.capabilities.iter().any(|c| c == k))
            .collect(),
        cpu_share: d.cpu_share,
        needs_gpu: d.needs_gpu,
        levels: d
            .levels
            .iter()
            .zip(0u32..)
            .map(|(l, level)| LevelInfo {
                level,
                name: l.name.clone(),
                memory_min_bytes: l.memory_min_bytes,
                memory_preferred_bytes: l.memory_preferred_bytes,
                gpu_memory_bytes: l.gpu_memory_bytes,
            })
            .collect(),
    }
}

/// Calls and other requests waiting for their answer, by id.
#[derive(Default)]
struct Pending {
    map: Mutex<PendingMap>,
}

/// What comes for a request while it waits: parts of a call's answer, then its end.
#[derive(Debug)]
enum Event {
    /// A `chunk`.
    Chunk(Vec<u8>),
    /// Its `response` (with its data), or why it failed.
    Done(Result<Option<Vec<u8>>, Failure>),
    /// The call's token was cancelled: the waiting thread looks at it.
    Wake,
}

/// Why a request failed.
#[derive(Debug)]
enum Failure {
    /// The plugin answered `error`.
    Plugin(String),
    /// A line for it broke the protocol: the host gave it up, and the plugin should stop.
    Protocol(String),
    /// The process exited.
    Closed(String),
}

impl Failure {
    fn into_message(self) -> String {
        match self {
            Failure::Plugin(m) | Failure::Protocol(m) | Failure::Closed(m) => m,
        }
    }
}

/// How many requests the host gave up on are remembered, so that what still comes for them is
/// dropped quietly rather than reported as a stray answer.
const ABANDONED_KEPT: usize = 1024;

#[derive(Default)]
struct PendingMap {
    waiting: HashMap<u64, crossbeam_channel::Sender<Event>>,
    /// Requests given up (cancelled, timed out, broken), newest ids last.
    abandoned: BTreeSet<u64>,
    /// Set when the process exited: why new requests fail at once.
    closed: Option<String>,
}

impl PendingMap {
    fn give_up(&mut self, id: u64) {
        self.abandoned.insert(id);
        while self.abandoned.len() > ABANDONED_KEPT {
            self.abandoned.pop_first();
        }
    }
}

impl Pending {
    fn lock(&self) -> std::sync::MutexGuard<'_, PendingMap> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits for `id`: what comes for it arrives on the receiver, and the sender is there to
    /// wake the waiting thread.
    fn register(
        &self,
        id: u64,
    ) -> Result<
        (
            crossbeam_channel::Sender<Event>,
            crossbeam_channel::Receiver<Event>,
        ),
        String,
    > {
        let mut map = self.lock();
        if let Some(reason) = &map.closed {
            return Err(reason.clone());
        }
        // Unbounded: the reader thread serves every request of the process and must never
        // block on one slow caller. The caller's thread drains it as the parts arrive.
        let (tx, rx) = crossbeam_channel::unbounded();
        map.waiting.insert(id, tx.clone());
        Ok((tx, rx))
    }

    /// A part of the answer to `id`.
    fn chunk(&self, plugin: &str, id: u64, data: Vec<u8>) {
        let map = self.lock();
        match map.waiting.get(&id) {
            Some(sender) => {
                let _ = sender.send(Event::Chunk(data));
            }
            None if map.abandoned.contains(&id) => {
                tracing::debug!(plugin, id, "dropping a chunk of a call given up on");
            }
            None => tracing::debug!(plugin, id, "dropping a chunk for no waiting request"),
        }
    }

    /// The end of the request `id`.
    fn complete(&self, plugin: &str, id: u64, end: Result<Option<Vec<u8>>, Failure>) {
        let mut map = self.lock();
        match map.waiting.remove(&id) {
            Some(sender) => {
                let _ = sender.send(Event::Done(end));
            }
            None if map.abandoned.remove(&id) => {
                tracing::debug!(plugin, id, "dropping the answer of a request given up on");
            }
            None => tracing::debug!(plugin, id, "dropping an answer to no waiting request"),
        }
    }

    /// A line for `id` broke the protocol: the request fails with `message` and is given up.
    fn fail(&self, plugin: &str, id: u64, message: String) {
        let mut map = self.lock();
        match map.waiting.remove(&id) {
            Some(sender) => {
                let _ = sender.send(Event::Done(Err(Failure::Protocol(message))));
                map.give_up(id);
            }
            None => tracing::debug!(plugin, id, %message, "a bad line for no waiting request"),
        }
    }

    /// The host gives up on `id`: what still comes for it is dropped.
    fn abandon(&self, id: u64) {
        let mut map = self.lock();
        map.waiting.remove(&id);
        map.give_up(id);
    }

    /// `id` was never sent: forget it.
    fn forget(&self, id: u64) {
        self.lock().waiting.remove(&id);
    }

    fn close(&self, reason: String) {
        let mut map = self.lock();
        for (_, sender) in map.waiting.drain() {
            let _ = sender.send(Event::Done(Err(Failure::Closed(reason.clone()))));
        }
        map.closed = Some(reason);
    }
}

/// What start-up waits for.
enum Startup {
    Hello {
        name: String,
        version: Option<String>,
        protocol: u32,
        describe: Option<Box<Described>>,
    },
    Exited(ballast_process::Exit),
}

/// A process started and (for protocol plugins) greeted.
struct Launched {
    child: Child,
    pending: Arc<Pending>,
    version: Option<String>,
    describe: Option<Box<Described>>,
    /// The cgroup it runs in.
    cgroup: Option<Arc<PluginCgroup>>,
}

impl ProcessPlugin {
    /// The plugin for `config`. For an isolated native plugin this starts a worker once to read
    /// the library's descriptor (the daemon never loads the library itself).
    pub(crate) fn new(
        config: PluginConfig,
        options: ProcessOptions,
        clock: Clock,
        supervisor: crossbeam_channel::Sender<SupervisorMsg>,
        tap: Option<Arc<Tap>>,
    ) -> Result<ProcessPlugin, PluginFault> {
        let isolated = config.kind == PluginKind::Native && config.isolation == Isolation::Process;
        let protocol = isolated || config.protocol == Protocol::JsonLines;
        let log = options.log_dir.as_ref().map(|dir| {
            Arc::new(LogFile::new(
                dir.join(format!("{}.log", config.name)),
                options.log_rotation,
            ))
        });
        let cgroup_unavailable = match &options.cgroups {
            Cgroups::Unavailable(why) => Some(why.clone()),
            Cgroups::Off | Cgroups::Tree(_) => None,
        };
        let mut plugin = ProcessPlugin {
            spawn: spawn_of(&config, &options),
            protocol,
            isolated,
            info: process_info(&config),
            log,
            clock,
            options,
            supervisor,
            generation: AtomicU64::new(0),
            last_checkpoint: Mutex::new(None),
            tap,
            supervision: Mutex::new(Supervision {
                usage: None,
                peak_rss: 0,
                reported: None,
                conditions: Vec::new(),
                progress: None,
                restarts: 0,
                last_exit: None,
                started_at: None,
                version: None,
                pid: None,
                gauges: BTreeMap::new(),
                tracker: RestartTracker::new(config.restart.clone()),
                cgroup: None,
                cgroup_status: None,
                cgroup_unavailable,
            }),
            config,
        };
        if isolated {
            let launched = plugin.launch(0, None, None, true)?;
            let _ = launched.child.stop(plugin.config.stop_timeout);
            let describe = launched.describe.ok_or_else(|| {
                fault("the worker's hello did not describe the plugin: is `worker_program` a ballast of the same version?")
            })?;
            plugin.info = described_info(&plugin.config, launched.version, &describe);
        }
        Ok(plugin)
    }

    /// Whether it speaks the control protocol.
    pub(crate) fn speaks_protocol(&self) -> bool {
        self.protocol
    }

    /// The status for the API.
    pub(crate) fn status(&self, stopped: bool) -> ProcessStatus {
        let s = self.supervision.lock().unwrap_or_else(|p| p.into_inner());
        let mut command = self.spawn.program.display().to_string();
        for arg in &self.spawn.args {
            command.push(' ');
            command.push_str(&arg.to_string_lossy());
        }
        ProcessStatus {
            command,
            protocol: if self.isolated {
                "worker"
            } else if self.protocol {
                "json-lines"
            } else {
                "none"
            }
            .to_owned(),
            pid: s.pid,
            started_at: s.started_at,
            version: s.version.clone(),
            restarts: s.restarts,
            last_exit: s.last_exit.clone(),
            conditions: s.conditions.clone(),
            progress: s.progress.as_ref().map(|p| ProgressStatus {
                percent: p.percent,
                phase: p.phase.clone(),
                since: p.since,
            }),
            stopped,
            log_file: self.log.as_ref().map(|l| l.path().to_owned()),
            cgroup: s.cgroup_status.clone(),
            cgroup_unavailable: s.cgroup_unavailable.clone(),
        }
    }

    /// The limits its cgroup has at `level`: its hard limit, the level's declared need as the
    /// throttling point, its CPU share as a quota when its config asks for one.
    pub(crate) fn cgroup_limits(&self, level: u32) -> Limits {
        let need = self
            .info
            .levels
            .get(level as usize)
            .map_or(0, |l| l.memory_preferred_bytes.max(l.memory_min_bytes));
        Limits::for_plugin(
            self.config.memory_hard_limit_mb.map(|mb| mb << 20),
            need,
            self.config.cpu_limit.then_some(self.info.cpu_share),
        )
    }

    /// Its processes run without a cgroup of their own from now on: says why, once.
    fn cgroup_failed(&self, why: &str) {
        let mut s = self.supervision.lock().unwrap_or_else(|p| p.into_inner());
        if s.cgroup_unavailable.is_none() {
            tracing::warn!(plugin = %self.config.name, reason = %why, "plugin runs without a cgroup of its own: its memory limit is polled and no CPU quota is set");
            self.note(&format!("no cgroup of its own: {why}"));
        }
        s.cgroup_unavailable = Some(why.to_owned());
    }

    /// A new cgroup for a process at `level`, where cgroups are in use and work for it.
    fn new_cgroup(&self, level: u32) -> Option<Arc<PluginCgroup>> {
        let Cgroups::Tree(tree) = &self.options.cgroups else {
            return None;
        };
        if self
            .supervision
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .cgroup_unavailable
            .is_some()
        {
            return None;
        }
        match tree.create(&self.config.name, &self.cgroup_limits(level)) {
            Ok(cgroup) => Some(Arc::new(cgroup)),
            Err(error) => {
                self.cgroup_failed(&error.to_string());
                None
            }
        }
    }

    /// Writes a note of the host's to the plugin's log.
    pub(crate) fn note(&self, text: &str) {
        if let Some(log) = &self.log {
            log.write((self.clock)(), Stream::Host, text.as_bytes());
        }
    }

    /// Starts a process at `level` and, when it speaks the protocol, sends `init` and waits
    /// for its `hello`. `forward` receives every event (with the pending requests answered).
    fn launch(
        &self,
        level: u32,
        checkpoint: Option<&[u8]>,
        forward: Option<(u64, crossbeam_channel::Sender<SupervisorMsg>)>,
        describe: bool,
    ) -> Result<Launched, PluginFault> {
        let pending: Arc<Pending> = Arc::default();
        let generation = forward.as_ref().map(|(g, _)| *g);
        let (startup_tx, startup_rx) = crossbeam_channel::bounded::<Startup>(2);
        let sink_pending = Arc::clone(&pending);
        let name = self.config.name.clone();
        let tap = self.tap.clone();
        let tapped = forward.as_ref().map_or(0, |(generation, _)| *generation);
        let events: ballast_process::EventSink = Arc::new(move |event: ChildEvent| {
            if let Some(tap) = &tap {
                match &event {
                    ChildEvent::Message(message) => {
                        tap.record(tapped, Observed::Message(message.clone()))
                    }
                    ChildEvent::BadLine { error, excerpt, .. } => tap.record(
                        tapped,
                        Observed::BadLine {
                            error: error.clone(),
                            excerpt: excerpt.clone(),
                        },
                    ),
                    ChildEvent::Exited(exit) => {
                        tap.record(tapped, Observed::Exited { exit: *exit })
                    }
                    ChildEvent::Output { .. } => {}
                }
            }
            let event = match event {
                ChildEvent::Message(PluginMessage::Chunk { id, data }) => {
                    sink_pending.chunk(&name, id, data);
                    // A part of an answer is output: the plugin is alive.
                    ChildEvent::Output {
                        stream: Stream::Stdout,
                    }
                }
                ChildEvent::Message(PluginMessage::Response { id, data }) => {
                    sink_pending.complete(&name, id, Ok(data));
                    return;
                }
                ChildEvent::Message(PluginMessage::Error {
                    id: Some(id),
                    message,
                }) => {
                    sink_pending.complete(&name, id, Err(Failure::Plugin(message)));
                    return;
                }
                ChildEvent::BadLine {
                    error,
                    excerpt,
                    id: Some(id),
                } => {
                    // The request it answers fails; the line is still reported (and logged).
                    sink_pending.fail(
                        &name,
                        id,
                        format!("plugin `{name}` sent a bad line for this request: {error}"),
                    );
                    ChildEvent::BadLine {
                        error,
                        excerpt,
                        id: Some(id),
                    }
                }
                other => other,
            };
            match &event {
                ChildEvent::Message(PluginMessage::Hello {
                    name,
                    version,
                    protocol,
                    describe,
                }) => {
                    let _ = startup_tx.try_send(Startup::Hello {
                        name: name.clone(),
                        version: version.clone(),
                        protocol: *protocol,
                        describe: describe.clone(),
                    });
                }
                ChildEvent::Exited(exit) => {
                    sink_pending.close(format!("the plugin's process {}", exit.sentence()));
                    let _ = startup_tx.try_send(Startup::Exited(*exit));
                }
                _ => {}
            }
            if let Some((generation, supervisor)) = &forward {
                let _ = supervisor.send(SupervisorMsg::Child {
                    generation: *generation,
                    event,
                });
            }
        });
        let mut spawn = self.spawn.clone();
        if describe {
            spawn.args.push("--describe".into());
        }
        spawn.env = self
            .config
            .env
            .iter()
            .map(|(k, v)| (OsString::from(k), OsString::from(v)))
            .collect();
        spawn.env.extend([
            ("BALLAST_PLUGIN".into(), self.config.name.clone().into()),
            ("BALLAST_LEVEL".into(), level.to_string().into()),
            (
                "BALLAST_PROTOCOL".into(),
                if self.protocol {
                    PROTOCOL_VERSION.to_string()
                } else {
                    "none".to_owned()
                }
                .into(),
            ),
        ]);
        // Like a native plugin's file, the program is run only if nobody but root or the
        // daemon's user could have written it (the worker, ballast itself, is checked too).
        if let Some(program) = resolve_program(&spawn.program) {
            FileTrust::current()
                .check(&program)
                .map_err(|e| fault(format!("refusing to start {}: {e}", program.display())))?;
        }
        let mut cgroup = self.new_cgroup(level);
        if let Some(cgroup) = &cgroup {
            spawn.cgroups = cgroup.procs_files();
            if let Some(generation) = generation {
                let mut s = self.supervision.lock().unwrap_or_else(|p| p.into_inner());
                s.cgroup = Some((generation, Arc::clone(cgroup)));
            }
        }
        let spawned = ballast_process::spawn(
            &spawn,
            self.protocol,
            self.log.clone(),
            Arc::clone(&self.clock),
            Arc::clone(&events),
        );
        let spawned = match spawned {
            Err(error) if CgroupJoinError::of(&error).is_some() => {
                // It could not join its cgroup: it starts without one.
                self.cgroup_failed(&error.to_string());
                cgroup = None;
                spawn.cgroups.clear();
                self.supervision
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .cgroup = None;
                ballast_process::spawn(
                    &spawn,
                    self.protocol,
                    self.log.clone(),
                    Arc::clone(&self.clock),
                    events,
                )
            }
            other => other,
        };
        let child =
            spawned.map_err(|e| fault(format!("cannot start {}: {e}", spawn.program.display())))?;
        match &cgroup {
            Some(cgroup) => self.note(&format!(
                "started {} as pid {} at level {level} in cgroup {}",
                spawn.program.display(),
                child.pid(),
                cgroup.dir().display()
            )),
            None => self.note(&format!(
                "started {} as pid {} at level {level}",
                spawn.program.display(),
                child.pid()
            )),
        }
        if !self.protocol {
            return Ok(Launched {
                child,
                pending,
                version: None,
                describe: None,
                cgroup,
            });
        }
        let init = HostMessage::Init {
            name: self.config.name.clone(),
            level,
            config: self.config.config.clone(),
            checkpoint: checkpoint.filter(|c| !c.is_empty()).map(<[u8]>::to_vec),
        };
        // A process that exits at once closes its stdin: its exit says more than the pipe.
        let _ = child.send(&init);
        let timeout = self.config.start_timeout;
        let last_output = |child: &Child| {
            let lines = child.last_lines();
            if lines.is_empty() {
                String::new()
            } else {
                format!("; its last output: {}", lines.join(" | "))
            }
        };
        match startup_rx.recv_timeout(timeout) {
            Ok(Startup::Hello {
                name,
                version,
                protocol,
                describe,
            }) => {
                let problem = if protocol != PROTOCOL_VERSION {
                    Some(format!(
                        "it speaks protocol version {protocol}; this ballast speaks {PROTOCOL_VERSION}"
                    ))
                } else if name != self.config.name {
                    Some(format!(
                        "it says its name is `{name}`; make the config name match"
                    ))
                } else {
                    None
                };
                if let Some(problem) = problem {
                    let _ = child.stop(self.config.stop_timeout);
                    return Err(fault(problem));
                }
                Ok(Launched {
                    child,
                    pending,
                    version,
                    describe,
                    cgroup,
                })
            }
            Ok(Startup::Exited(exit)) => {
                let detail = last_output(&child);
                Err(fault(format!(
                    "its process {} before it said hello{detail}",
                    exit.sentence()
                )))
            }
            Err(_) => {
                let _ = child.stop(self.config.stop_timeout);
                let detail = last_output(&child);
                Err(fault(format!(
                    "its process did not say hello within {}{detail}",
                    humantime::format_duration(timeout)
                )))
            }
        }
    }

    /// Starts a new process at `level` with `checkpoint`. `supervised` is true when the
    /// supervisor restarts it; any other start forgets the restart history.
    pub(crate) fn create(
        self: &Arc<Self>,
        level: u32,
        checkpoint: &[u8],
        supervised: bool,
    ) -> Result<ProcessInstance, PluginFault> {
        if !supervised {
            self.supervision
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .tracker
                .reset();
        }
        let checkpoint = {
            let mut last = self
                .last_checkpoint
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            if !checkpoint.is_empty() {
                *last = Some(checkpoint.to_vec());
                checkpoint.to_vec()
            } else if supervised {
                last.clone().unwrap_or_default()
            } else {
                Vec::new()
            }
        };
        let generation = self.generation.fetch_add(1, Ordering::SeqCst) + 1;
        let launched = self
            .launch(
                level,
                Some(&checkpoint),
                Some((generation, self.supervisor.clone())),
                false,
            )
            .inspect_err(|_| {
                // The process is gone: so goes its cgroup.
                let mut s = self.supervision.lock().unwrap_or_else(|p| p.into_inner());
                if s.cgroup.as_ref().is_some_and(|(g, _)| *g == generation) {
                    s.cgroup = None;
                }
            })?;
        {
            let mut s = self.supervision.lock().unwrap_or_else(|p| p.into_inner());
            s.pid = Some(launched.child.pid());
            s.started_at = Some((self.clock)());
            s.version = launched.version;
            s.usage = None;
            s.reported = None;
            s.conditions.clear();
            s.progress = None;
        }
        let _ = self.supervisor.send(SupervisorMsg::Started { generation });
        Ok(ProcessInstance {
            plugin: Arc::clone(self),
            generation,
            child: launched.child,
            cgroup: launched.cgroup,
            pending: launched.pending,
            next_id: AtomicU64::new(1),
            level: AtomicU32::new(level),
            stopping: AtomicBool::new(false),
            stopped: AtomicBool::new(false),
            started: Instant::now(),
        })
    }
}

/// One running process of a plugin.
pub(crate) struct ProcessInstance {
    plugin: Arc<ProcessPlugin>,
    generation: u64,
    child: Child,
    /// The cgroup it runs in (removed once the last holder drops it, after the process exits).
    cgroup: Option<Arc<PluginCgroup>>,
    pending: Arc<Pending>,
    next_id: AtomicU64,
    level: AtomicU32,
    /// The host is stopping it: its exit is expected.
    stopping: AtomicBool,
    /// It is stopped with SIGSTOP.
    stopped: AtomicBool,
    /// When it was started.
    started: Instant,
}

impl ProcessInstance {
    /// Which process of the plugin this is (1 for the first).
    pub(crate) fn generation(&self) -> u64 {
        self.generation
    }

    /// When it was started.
    pub(crate) fn started(&self) -> Instant {
        self.started
    }

    /// The process id.
    pub(crate) fn pid(&self) -> u32 {
        self.child.pid()
    }

    /// Whether the host is stopping it.
    pub(crate) fn stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }

    /// Whether it is stopped with SIGSTOP.
    pub(crate) fn is_stopped(&self) -> bool {
        self.stopped.load(Ordering::SeqCst)
    }

    /// The level it runs at.
    pub(crate) fn level(&self) -> u32 {
        self.level.load(Ordering::SeqCst)
    }

    /// The plugin it belongs to.
    pub(crate) fn plugin(&self) -> &Arc<ProcessPlugin> {
        &self.plugin
    }

    /// Sends a lifecycle request (set_level, drain, checkpoint) and waits for its answer.
    fn request(
        &self,
        what: &'static str,
        timeout: Duration,
        message: impl FnOnce(u64) -> HostMessage,
    ) -> Result<Option<Vec<u8>>, PluginFault> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (_, events) = self.pending.register(id).map_err(fault)?;
        self.tap(Observed::Request { id, kind: what });
        if let Err(error) = self.child.send(&message(id)) {
            self.pending.forget(id);
            return Err(fault(format!("cannot send the {what} request: {error}")));
        }
        let deadline = Instant::now() + timeout;
        loop {
            match events.recv_deadline(deadline) {
                Ok(Event::Done(Ok(data))) => return Ok(data),
                Ok(Event::Done(Err(failure))) => return Err(fault(failure.into_message())),
                Ok(Event::Chunk(_)) => {
                    tracing::debug!(plugin = %self.plugin.config.name, id, "dropping a chunk sent for a {what} request");
                }
                Ok(Event::Wake) => {}
                Err(_) => {
                    self.pending.abandon(id);
                    return Err(fault(format!(
                        "no answer to the {what} request within {}",
                        humantime::format_duration(timeout)
                    )));
                }
            }
        }
    }

    /// A call: sends it with the deadline of `io`, hands the parts of its answer to `io` as they
    /// arrive and returns the data of its `response`. Once `io` is cancelled (its token wakes
    /// the wait, and its deadline ends it), it sends `cancel` and returns at once.
    fn run_call(&self, request: &[u8], io: &mut CallIo) -> Result<Vec<u8>, CallEnd> {
        if !self.plugin.protocol {
            return Err(CallEnd::Fault(PluginFault {
                status: BALLAST_STATUS_UNSUPPORTED,
                message:
                    "it speaks no control protocol (`protocol = \"none\"`), so it takes no calls"
                        .to_owned(),
            }));
        }
        if let Some(reason) = io.cancel_reason() {
            return Err(CallEnd::Cancelled(reason));
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (wake, events) = self
            .pending
            .register(id)
            .map_err(|reason| CallEnd::Fault(fault(reason)))?;
        let message = HostMessage::Call {
            id,
            data: request.to_vec(),
            deadline_ms: io
                .deadline_instant()
                .map(|at| millis(at.saturating_duration_since(Instant::now()))),
        };
        self.tap(Observed::Request { id, kind: "call" });
        if let Err(error) = self.child.send(&message) {
            self.pending.forget(id);
            return Err(CallEnd::Fault(fault(format!(
                "cannot send the call request: {error}"
            ))));
        }
        let _hook = io.token().on_cancel(move || {
            let _ = wake.send(Event::Wake);
        });
        loop {
            let event = match io.deadline_instant() {
                Some(at) => events.recv_deadline(at),
                None => events
                    .recv()
                    .map_err(|_| crossbeam_channel::RecvTimeoutError::Disconnected),
            };
            match event {
                Ok(Event::Chunk(data)) => {
                    // False once the call is cancelled, or its listener went away.
                    if !io.send(&data) {
                        break;
                    }
                }
                Ok(Event::Done(Ok(data))) => return Ok(data.unwrap_or_default()),
                Ok(Event::Done(Err(failure))) => {
                    if let Failure::Protocol(_) = failure {
                        // The host gave the call up: the plugin should stop working on it.
                        self.send_cancel(id);
                    }
                    return Err(CallEnd::Fault(fault(failure.into_message())));
                }
                Ok(Event::Wake) | Err(crossbeam_channel::RecvTimeoutError::Timeout) => {}
                Err(crossbeam_channel::RecvTimeoutError::Disconnected) => {
                    return Err(CallEnd::Fault(fault(
                        "the call was dropped without an answer",
                    )));
                }
            }
            if io.is_cancelled() {
                break;
            }
        }
        let reason = io.cancel_reason().unwrap_or(CancelReason::Caller);
        self.pending.abandon(id);
        self.send_cancel(id);
        Err(CallEnd::Cancelled(reason))
    }

    /// Tells the plugin to stop working on the call `id`.
    fn send_cancel(&self, id: u64) {
        self.tap(Observed::Cancel { id });
        if let Err(error) = self.child.send(&HostMessage::Cancel { id }) {
            tracing::debug!(plugin = %self.plugin.config.name, id, %error, "cannot send cancel");
        }
    }

    /// Moves a protocol plugin to `level`. A plugin without the protocol cannot: the host
    /// restarts it instead.
    pub(crate) fn set_level(&self, level: u32, wait: Duration) -> Result<(), PluginFault> {
        if self.level() == level {
            return Ok(());
        }
        if !self.plugin.protocol {
            return Err(PluginFault {
                status: BALLAST_STATUS_UNSUPPORTED,
                message: "it speaks no protocol, so its level changes by a restart".to_owned(),
            });
        }
        // The throttling point moves with the level: raised before the plugin grows into the
        // new level, lowered once it has shrunk out of the old one.
        let limits = self.plugin.cgroup_limits(level);
        let raise = self.cgroup.as_ref().is_some_and(|c| {
            limits.memory_high.unwrap_or(u64::MAX) >= c.limits().memory_high.unwrap_or(u64::MAX)
        });
        if raise {
            self.retarget(&limits);
        }
        self.request("set_level", wait, |id| HostMessage::SetLevel { id, level })?;
        self.level.store(level, Ordering::SeqCst);
        if !raise {
            self.retarget(&limits);
        }
        Ok(())
    }

    /// Puts `limits` in force on its cgroup; a failure is logged (the old limits stay).
    fn retarget(&self, limits: &Limits) {
        if let Some(cgroup) = &self.cgroup
            && let Err(error) = cgroup.apply(limits)
        {
            tracing::warn!(plugin = %self.plugin.config.name, %error, "cannot move the plugin's cgroup limits to its new level");
        }
    }

    /// Asks a protocol plugin to drain within `deadline`.
    pub(crate) fn drain(&self, deadline: Duration) -> Result<(), PluginFault> {
        let _ = self.resume();
        if !self.plugin.protocol || deadline.is_zero() {
            return Ok(());
        }
        let deadline_ms = millis(deadline);
        self.request("drain", deadline, |id| HostMessage::Drain {
            id,
            deadline_ms,
        })
        .map(|_| ())
    }

    /// Asks a protocol plugin for its checkpoint.
    pub(crate) fn checkpoint(&self, wait: Duration) -> Result<Option<Vec<u8>>, PluginFault> {
        if !self.plugin.protocol || wait.is_zero() {
            return Ok(None);
        }
        self.request("checkpoint", wait, |id| HostMessage::Checkpoint { id })
    }

    /// A streamed call: the parts of the answer go to `io` in order as they arrive, and the data
    /// of the plugin's `response` (empty when it streamed everything) is returned for the caller
    /// to send as the last part. A plugin that answers with one `response` streams nothing here:
    /// its whole answer is returned. Once `io` is cancelled (its caller went away, its deadline
    /// passed) the plugin is sent `cancel` and the call fails at once with
    /// `BALLAST_STATUS_CANCELLED`, whether the plugin stops or not.
    pub(crate) fn call_stream(
        &self,
        request: &[u8],
        io: &mut CallIo,
    ) -> Result<Vec<u8>, PluginFault> {
        self.run_call(request, io).map_err(|end| match end {
            CallEnd::Cancelled(reason) => cancelled(reason),
            CallEnd::Fault(fault) => fault,
        })
    }

    /// A call that waits for the whole answer (the parts of a plugin that streams, joined), at
    /// most the plugin's `call_timeout`, which the plugin learns as the call's deadline.
    pub(crate) fn call(&self, request: &[u8]) -> Result<Vec<u8>, PluginFault> {
        let timeout = self.plugin.config.call_timeout;
        let mut io = CallIo::new(
            None,
            CancelToken::new(),
            Some((
                Instant::now() + timeout,
                (self.plugin.clock)().saturating_add(timeout),
            )),
        );
        match self.run_call(request, &mut io) {
            Ok(last) => {
                let mut answer = io.take_joined();
                answer.extend_from_slice(&last);
                Ok(answer)
            }
            Err(CallEnd::Cancelled(CancelReason::Deadline)) => Err(fault(format!(
                "no answer to the call request within {}",
                humantime::format_duration(timeout)
            ))),
            Err(CallEnd::Cancelled(reason)) => Err(cancelled(reason)),
            Err(CallEnd::Fault(fault)) => Err(fault),
        }
    }

    /// Records a protocol event of this process for the conformance check, if it watches.
    fn tap(&self, line: Observed) {
        if let Some(tap) = &self.plugin.tap {
            tap.record(self.generation, line);
        }
    }

    /// Writes a line the host's protocol does not know (the conformance check's unknown
    /// message) to the process's stdin.
    pub(crate) fn send_unknown(&self, line: &str) -> std::io::Result<()> {
        self.tap(Observed::Raw);
        self.child.send_line(line)
    }

    /// Stops the process: end of stdin, SIGTERM, SIGKILL after `stop_timeout`. Under the
    /// conformance check, a process that speaks the protocol first gets the check's grace to
    /// exit on the end of its stdin alone.
    pub(crate) fn stop(&self) -> Result<(), PluginFault> {
        self.stopping.store(true, Ordering::SeqCst);
        if let Some(grace) = self.plugin.tap.as_ref().and_then(|t| t.eof_grace)
            && self.plugin.protocol
            && self.child.exit().is_none()
        {
            let closed = Instant::now();
            self.child.close_stdin();
            let exited = self.child.wait_timeout(grace);
            self.tap(Observed::EndOfInput {
                exited_after: exited.map(|_| closed.elapsed()),
            });
        }
        let (exit, killed) = self.child.stop(self.plugin.config.stop_timeout);
        self.tap(Observed::Stopped { exit, killed });
        // Whatever it was in (over a memory limit, stalled), it is not any more.
        self.plugin
            .supervision
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .conditions
            .clear();
        if killed {
            tracing::warn!(plugin = %self.plugin.config.name, pid = self.pid(), timeout = %humantime::format_duration(self.plugin.config.stop_timeout), "plugin process did not stop after SIGTERM and was killed");
        }
        match exit {
            Some(_) => Ok(()),
            None => Err(fault(format!(
                "process {} did not exit even after SIGKILL",
                self.pid()
            ))),
        }
    }

    /// SIGSTOP to its process group.
    pub(crate) fn suspend(&self) -> Result<(), PluginFault> {
        self.child
            .signal(Signal::SIGSTOP)
            .map_err(|e| fault(format!("cannot stop process {}: {e}", self.pid())))?;
        if !self.stopped.swap(true, Ordering::SeqCst) {
            self.plugin.note("suspended: SIGSTOP");
            let _ = self.plugin.supervisor.send(SupervisorMsg::Stopped {
                generation: self.generation,
                stopped: true,
            });
        }
        Ok(())
    }

    /// SIGCONT to its process group.
    pub(crate) fn resume(&self) -> Result<(), PluginFault> {
        self.child
            .signal(Signal::SIGCONT)
            .map_err(|e| fault(format!("cannot continue process {}: {e}", self.pid())))?;
        if self.stopped.swap(false, Ordering::SeqCst) {
            self.plugin.note("resumed: SIGCONT");
            let _ = self.plugin.supervisor.send(SupervisorMsg::Stopped {
                generation: self.generation,
                stopped: false,
            });
        }
        Ok(())
    }
}

/// One protocol process started at level 0 without a host: no slot, no lifecycle, no
/// supervision (its events go nowhere, and it is not restarted). It is how the tests and the
/// benchmarks of the crate drive a process plugin's call path directly.
#[doc(hidden)]
pub struct StandaloneProcess {
    instance: ProcessInstance,
}

impl StandaloneProcess {
    /// Starts the process of `config` and waits for its `hello`.
    pub fn start(config: PluginConfig, options: ProcessOptions) -> Result<Self, PluginFault> {
        // Nobody listens: what the process does is dropped, as the supervisor would drop the
        // events of a process it no longer watches.
        let (supervisor, _) = crossbeam_channel::unbounded();
        let plugin = Arc::new(ProcessPlugin::new(
            config,
            options,
            crate::host_api::system_clock(),
            supervisor,
            None,
        )?);
        let instance = plugin.create(0, &[], false)?;
        Ok(StandaloneProcess { instance })
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.instance.pid()
    }

    /// A call that waits for the whole answer, at most the plugin's `call_timeout`.
    pub fn call(&self, request: &[u8]) -> Result<Vec<u8>, PluginFault> {
        self.instance.call(request)
    }

    /// A streamed call (see the host's streamed calls): the parts go to `io`, the data of the
    /// plugin's `response` comes back.
    pub fn call_stream(&self, request: &[u8], io: &mut CallIo) -> Result<Vec<u8>, PluginFault> {
        self.instance.call_stream(request, io)
    }

    /// Stops it: end of stdin, SIGTERM, SIGKILL after its `stop_timeout`.
    pub fn stop(&self) -> Result<(), PluginFault> {
        self.instance.stop()
    }
}

impl Drop for ProcessInstance {
    fn drop(&mut self) {
        // Dropping the child kills its process group if it is still running.
        self.stopping.store(true, Ordering::SeqCst);
    }
}
