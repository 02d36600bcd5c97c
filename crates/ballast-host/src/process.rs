//! Plugins that run in a process of their own: process plugins (any executable, with or without
//! the control protocol) and native plugins isolated in a `ballast worker`. [`ProcessPlugin`] is
//! what one such plugin keeps across its processes (how to start it, its log, its supervision
//! figures); [`ProcessInstance`] is one running process behind the protocol, as the host's
//! lifecycle and call code sees it.

use std::collections::{BTreeMap, HashMap};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ballast_abi::{BALLAST_STATUS_ERROR, BALLAST_STATUS_UNSUPPORTED};
use ballast_core::Timestamp;
use ballast_core::plugin::{PluginAlert, ProcessStatus, ProcessUsage, ProgressStatus};
use ballast_process::protocol::Described;
use ballast_process::{
    Child, ChildEvent, HostMessage, LogFile, PROTOCOL_VERSION, PluginMessage, Progress,
    RestartTracker, Rotation, Spawn, Stream,
};
use nix::sys::signal::Signal;

use crate::config::{Isolation, PluginConfig, PluginKind, Protocol};
use crate::host_api::Clock;
use crate::instance::PluginFault;
use crate::library::{LevelInfo, PluginInfo};
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
}

impl Default for ProcessOptions {
    fn default() -> Self {
        ProcessOptions {
            log_dir: None,
            log_rotation: Rotation::default(),
            worker_program: std::env::current_exe().unwrap_or_else(|_| PathBuf::from("ballast")),
            sample_interval: Duration::from_secs(2),
        }
    }
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

/// How to start the plugin's process: the program and arguments from its config, or a worker
/// for an isolated native plugin.
fn spawn_of(config: &PluginConfig, options: &ProcessOptions) -> Spawn {
    match config.kind {
        PluginKind::Process => Spawn {
            program: config.command.clone().unwrap_or_default(),
            args: config.args.iter().map(OsString::from).collect(),
            env: Vec::new(),
            working_dir: config.working_dir.clone(),
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
    const KNOWN: [&str; 4] = ["thread_safe_calls", "checkpoint", "drain", "alloc_stats"];
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

/// Calls and other requests waiting for their answer.
#[derive(Default)]
struct Pending {
    map: Mutex<PendingMap>,
}

type Answer = Result<Option<Vec<u8>>, String>;

#[derive(Default)]
struct PendingMap {
    waiting: HashMap<u64, crossbeam_channel::Sender<Answer>>,
    /// Set when the process exited: why new requests fail at once.
    closed: Option<String>,
}

impl Pending {
    fn register(&self, id: u64) -> Result<crossbeam_channel::Receiver<Answer>, String> {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(reason) = &map.closed {
            return Err(reason.clone());
        }
        let (tx, rx) = crossbeam_channel::bounded(1);
        map.waiting.insert(id, tx);
        Ok(rx)
    }

    fn complete(&self, id: u64, answer: Answer) {
        let sender = self
            .map
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .waiting
            .remove(&id);
        if let Some(sender) = sender {
            let _ = sender.send(answer);
        }
    }

    fn forget(&self, id: u64) {
        self.map
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .waiting
            .remove(&id);
    }

    fn close(&self, reason: String) {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        for (_, sender) in map.waiting.drain() {
            let _ = sender.send(Err(reason.clone()));
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
}

impl ProcessPlugin {
    /// The plugin for `config`. For an isolated native plugin this starts a worker once to read
    /// the library's descriptor (the daemon never loads the library itself).
    pub(crate) fn new(
        config: PluginConfig,
        options: ProcessOptions,
        clock: Clock,
        supervisor: crossbeam_channel::Sender<SupervisorMsg>,
    ) -> Result<ProcessPlugin, PluginFault> {
        let isolated = config.kind == PluginKind::Native && config.isolation == Isolation::Process;
        let protocol = isolated || config.protocol == Protocol::JsonLines;
        let log = options.log_dir.as_ref().map(|dir| {
            Arc::new(LogFile::new(
                dir.join(format!("{}.log", config.name)),
                options.log_rotation,
            ))
        });
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
        let (startup_tx, startup_rx) = crossbeam_channel::bounded::<Startup>(2);
        let sink_pending = Arc::clone(&pending);
        let events: ballast_process::EventSink = Arc::new(move |event: ChildEvent| {
            match &event {
                ChildEvent::Message(PluginMessage::Response { id, data }) => {
                    sink_pending.complete(*id, Ok(data.clone()));
                    return;
                }
                ChildEvent::Message(PluginMessage::Error {
                    id: Some(id),
                    message,
                }) => {
                    sink_pending.complete(*id, Err(message.clone()));
                    return;
                }
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
        let child = ballast_process::spawn(
            &spawn,
            self.protocol,
            self.log.clone(),
            Arc::clone(&self.clock),
            events,
        )
        .map_err(|e| fault(format!("cannot start {}: {e}", spawn.program.display())))?;
        self.note(&format!(
            "started {} as pid {} at level {level}",
            spawn.program.display(),
            child.pid()
        ));
        if !self.protocol {
            return Ok(Launched {
                child,
                pending,
                version: None,
                describe: None,
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
        let launched = self.launch(
            level,
            Some(&checkpoint),
            Some((generation, self.supervisor.clone())),
            false,
        )?;
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

    fn request(
        &self,
        what: &str,
        timeout: Duration,
        message: impl FnOnce(u64) -> HostMessage,
    ) -> Result<Option<Vec<u8>>, PluginFault> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let answer = self.pending.register(id).map_err(fault)?;
        if let Err(error) = self.child.send(&message(id)) {
            self.pending.forget(id);
            return Err(fault(format!("cannot send the {what} request: {error}")));
        }
        match answer.recv_timeout(timeout) {
            Ok(Ok(data)) => Ok(data),
            Ok(Err(message)) => Err(fault(message)),
            Err(_) => {
                self.pending.forget(id);
                Err(fault(format!(
                    "no answer to the {what} request within {}",
                    humantime::format_duration(timeout)
                )))
            }
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
        self.request("set_level", wait, |id| HostMessage::SetLevel { id, level })?;
        self.level.store(level, Ordering::SeqCst);
        Ok(())
    }

    /// Asks a protocol plugin to drain within `deadline`.
    pub(crate) fn drain(&self, deadline: Duration) -> Result<(), PluginFault> {
        let _ = self.resume();
        if !self.plugin.protocol || deadline.is_zero() {
            return Ok(());
        }
        let deadline_ms = u64::try_from(deadline.as_millis()).unwrap_or(u64::MAX);
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

    /// A call through the protocol.
    /// A streamed call. Until the protocol's `chunk` and `cancel` are wired, the whole answer of
    /// `call` is one chunk.
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
        if !self.plugin.protocol {
            return Err(PluginFault {
                status: BALLAST_STATUS_UNSUPPORTED,
                message:
                    "it speaks no control protocol (`protocol = \"none\"`), so it takes no calls"
                        .to_owned(),
            });
        }
        let data = request.to_vec();
        self.request("call", self.plugin.config.call_timeout, |id| {
            HostMessage::Call {
                id,
                data,
                deadline_ms: None,
            }
        })
        .map(Option::unwrap_or_default)
    }

    /// Stops the process: end of stdin, SIGTERM, SIGKILL after `stop_timeout`.
    pub(crate) fn stop(&self) -> Result<(), PluginFault> {
        self.stopping.store(true, Ordering::SeqCst);
        let (exit, killed) = self.child.stop(self.plugin.config.stop_timeout);
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

impl Drop for ProcessInstance {
    fn drop(&mut self) {
        // Dropping the child kills its process group if it is still running.
        self.stopping.store(true, Ordering::SeqCst);
    }
}
