//! The conformance check behind `ballast plugin check`: it runs one plugin through its whole
//! contract the way the daemon would, through a [`PluginHost`] and the same lifecycle, call and
//! process code the daemon runs, and reports each step with its timing.
//!
//! The steps, in order (those that do not apply to a kind of plugin are left out or skipped,
//! with why):
//!
//! * **load**: the file is checked and its descriptor validated (a process plugin: its
//!   config; an isolated one: its worker describes it).
//! * **hello** (processes that speak the protocol): it says `hello` within its `start_timeout`.
//! * **create without a checkpoint**, then a **call** with the request (`ping` unless told
//!   otherwise), and the **memory** it holds at level 0 against what it declares.
//! * **every level, down and up**: a call at each, and its memory at each. A plugin that holds
//!   more than it declares (by over [`MEMORY_SLACK_MIN`] and over [`MEMORY_SLACK_FRACTION`] of
//!   the declaration) is flagged: the scaler counts what it holds. A native plugin's memory is
//!   what its allocator counts (the `alloc_stats` capability; without it, nothing is measured);
//!   a process's is the resident memory of its process tree.
//! * **concurrent calls**: four times its `max_concurrent_calls` at once (at most what its
//!   queue admits), all answered; a native plugin that does not declare thread-safe calls must
//!   never have two inside it at once.
//! * **streamed call** and **cancel** (plugins that stream, and every process that speaks the
//!   protocol): the chunks reach the caller in the order the plugin sent them; a call cancelled
//!   after its first chunk stops within [`CANCEL_GRACE`].
//! * **unknown message ignored** and **heartbeats** (protocol): a message type it does not
//!   know is ignored and the next call answered; it sends a heartbeat at least every stall
//!   threshold.
//! * **drain with calls in flight**: calls (streamed ones among them) are in flight when it is
//!   disabled; all are answered, and its drain returns within the deadline it is given (with
//!   [`DEADLINE_SLACK`]). Then its **checkpoint**, **stop and destroy**.
//! * **create with the checkpoint**, and **checkpoint restored**: an instance created from the
//!   checkpoint must not hand back the state of an instance created without one (unless the
//!   two cannot be told apart).
//! * **ids answered exactly once**, **valid messages** and **exit on end of input** (protocol),
//!   over the whole run: every request got exactly one answer, every line on stdout was a
//!   protocol message, and each process exited on the end of its stdin within its
//!   `stop_timeout`, before any SIGTERM. A process without the protocol must stop on
//!   SIGTERM within its `stop_timeout` (**stop on SIGTERM**).
//!
//! Any step during which the plugin failed, or its process exited and was restarted, fails
//! with what happened. The check is not a benchmark: its timings say what one run took.

mod protocol;
mod report;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ballast_abi::BALLAST_STATUS_UNSUPPORTED;
use ballast_core::format::{bytes, duration_short, latency_us};
use ballast_core::plugin::{Level, PluginEvent, PluginEventKind, PluginState};

pub use report::{Report, Step};

use crate::config::{Isolation, PluginConfig, PluginKind, Protocol};
use crate::error::CallError;
use crate::host::PluginHost;
use crate::host_api::system_clock;
use crate::library::{PluginInfo, PluginLibrary};
use crate::process::ProcessOptions;
use crate::stream::{CallOptions, CancelReason, CancelToken};
use crate::tap::{Observed, Tap};

use protocol::count;

/// Memory held over the declaration that is always tolerated (a declaration is in MiB).
pub const MEMORY_SLACK_MIN: u64 = 1 << 20;

/// The share of the declaration that may be held over it.
pub const MEMORY_SLACK_FRACTION: f64 = 0.05;

/// How long past the deadline it was given a plugin's drain may return.
pub const DEADLINE_SLACK: Duration = Duration::from_millis(50);

/// How soon after its call is cancelled a plugin must stop working on it.
pub const CANCEL_GRACE: Duration = Duration::from_millis(500);

/// How often the process of a process plugin is measured during the check.
const SAMPLE_INTERVAL: Duration = Duration::from_millis(100);

/// The message the check sends to see that a plugin ignores what it does not know.
pub const UNKNOWN_MESSAGE: &str = r#"{"type":"ballast_check_unknown","note":"a message type this plugin does not know: the protocol asks it to ignore it"}"#;

/// What the check sends, and where it finds what it needs.
#[derive(Clone, Debug)]
pub struct CheckOptions {
    /// The request of every call (`ping` by default): something harmless the plugin answers.
    pub request: Vec<u8>,
    /// The request of the streamed calls, the cancelled one and those in flight at the drain
    /// (the `request` when none): one whose answer streams in several chunks over some time
    /// lets the check cancel it midway.
    pub stream_request: Option<Vec<u8>>,
    /// The `ballast` executable that runs an isolated plugin's worker (this one when none).
    pub worker_program: Option<PathBuf>,
    /// For a process plugin: its name is the one its hello says, and the config's is only a
    /// guess (a check of a command whose name nobody gave). When the hello says another, the
    /// check starts over under that name.
    pub name_from_hello: bool,
}

impl Default for CheckOptions {
    fn default() -> Self {
        CheckOptions {
            request: b"ping".to_vec(),
            stream_request: None,
            worker_program: None,
            name_from_hello: false,
        }
    }
}

/// A config for the native plugin `file` with every other field at its default: its name is
/// the one its descriptor declares (or, when the file cannot be read as a plugin, its file name
/// without `lib` and `.so`, and the check's load step says what is wrong).
pub fn config_for_file(file: &Path) -> PluginConfig {
    let name = PluginLibrary::load(file, None)
        .map(|library| library.info().name.clone())
        .unwrap_or_else(|_| {
            let stem = file
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            stem.strip_prefix("lib").unwrap_or(&stem).to_owned()
        });
    PluginConfig::new(name, file)
}

/// Runs the plugin of `config` through its contract and reports every step.
pub fn check(config: PluginConfig, options: &CheckOptions) -> Report {
    let started = Instant::now();
    let mut checker = Checker::new(config.clone(), options);
    checker.run();
    if options.name_from_hello
        && let Some(said) = checker.other_name()
    {
        let mut config = config;
        config.name = said;
        checker = Checker::new(config, options);
        checker.run();
    }
    let ok = checker.steps.iter().all(|s| s.ok);
    Report {
        plugin: checker.name.clone(),
        kind: checker.kind.label().to_owned(),
        target: checker.target(),
        ok,
        duration_ms: started.elapsed().as_secs_f64() * 1000.0,
        steps: checker.steps,
    }
}

/// How the plugin runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    InProcess,
    Isolated,
    Protocol,
    NoProtocol,
}

impl Kind {
    fn of(config: &PluginConfig) -> Kind {
        match (config.kind, config.isolation, config.protocol) {
            (PluginKind::Native, Isolation::InProcess, _) => Kind::InProcess,
            (PluginKind::Native, Isolation::Process, _) => Kind::Isolated,
            (PluginKind::Process, _, Protocol::JsonLines) => Kind::Protocol,
            (PluginKind::Process, _, Protocol::None) => Kind::NoProtocol,
        }
    }

    fn label(self) -> &'static str {
        match self {
            Kind::InProcess => "native, in-process",
            Kind::Isolated => "native, isolated in a worker process",
            Kind::Protocol => "process, json-lines protocol",
            Kind::NoProtocol => "process, no protocol",
        }
    }

    /// Whether it takes calls.
    fn callable(self) -> bool {
        self != Kind::NoProtocol
    }

    /// Whether it speaks the control protocol (a worker speaks it for an isolated plugin).
    fn speaks_protocol(self) -> bool {
        matches!(self, Kind::Isolated | Kind::Protocol)
    }

    /// Whether it runs in a process of its own (its calls cross the protocol).
    fn has_process(self) -> bool {
        self != Kind::InProcess
    }
}

/// The answers to calls submitted at once, gathered as they come.
type Replies = crossbeam_channel::Receiver<(Instant, Result<Vec<u8>, CallError>)>;

/// The chunks a streamed call got, each with when it came.
type Chunks = Arc<Mutex<Vec<(Instant, Vec<u8>)>>>;

/// The check of one plugin: its host, what it observes, and the steps so far.
struct Checker<'a> {
    options: &'a CheckOptions,
    config: PluginConfig,
    name: String,
    kind: Kind,
    host: PluginHost,
    tap: Arc<Tap>,
    events: Arc<Mutex<Vec<PluginEvent>>>,
    info: Option<PluginInfo>,
    steps: Vec<Step>,
    /// How many chunks the streamed call got.
    stream_chunks: usize,
    /// When the plugin last came to the level it is at (created, or moved).
    arrived: Instant,
}

impl<'a> Checker<'a> {
    fn new(config: PluginConfig, options: &'a CheckOptions) -> Checker<'a> {
        let kind = Kind::of(&config);
        let eof_grace = kind.speaks_protocol().then_some(config.stop_timeout);
        let tap = Arc::new(Tap::new(eof_grace));
        let events: Arc<Mutex<Vec<PluginEvent>>> = Arc::default();
        let sink_events = Arc::clone(&events);
        let mut process_options = ProcessOptions {
            sample_interval: SAMPLE_INTERVAL,
            ..ProcessOptions::default()
        };
        if let Some(program) = &options.worker_program {
            process_options.worker_program = program.clone();
        }
        let host = PluginHost::tapped(
            system_clock(),
            Arc::new(move |event| {
                sink_events
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(event)
            }),
            process_options,
            Arc::clone(&tap),
        );
        Checker {
            options,
            name: config.name.clone(),
            config,
            kind,
            host,
            tap,
            events,
            info: None,
            steps: Vec::new(),
            stream_chunks: 0,
            arrived: Instant::now(),
        }
    }

    fn target(&self) -> String {
        match &self.config.command {
            Some(command) if self.config.kind == PluginKind::Process => {
                let mut text = command.display().to_string();
                for arg in &self.config.args {
                    text.push(' ');
                    text.push_str(arg);
                }
                text
            }
            _ => self.config.file().display().to_string(),
        }
    }

    fn stream_request(&self) -> Vec<u8> {
        self.options
            .stream_request
            .clone()
            .unwrap_or_else(|| self.options.request.clone())
    }

    fn run(&mut self) {
        if !self.load() || !self.create() {
            return;
        }
        self.first_call();
        self.memory(0);
        self.levels();
        self.concurrent_calls();
        self.streaming();
        if self.kind.speaks_protocol() {
            self.unknown_message();
            self.heartbeats();
        }
        if !self.drain() {
            return;
        }
        self.restore();
        self.protocol_record();
    }

    // --- Helpers ---

    /// Where the plugin's events stand, to look at what happened during a step.
    fn mark(&self) -> usize {
        self.events.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// What went wrong with the plugin since `mark` without the check asking: it failed, or its
    /// process exited and is restarted, or the host took it down on its own.
    fn upsets(&self, mark: usize) -> Vec<String> {
        let events = self.events.lock().unwrap_or_else(|p| p.into_inner());
        events
            .iter()
            .skip(mark)
            .filter_map(|e| match &e.kind {
                PluginEventKind::StateChanged {
                    to,
                    reason,
                    by_host,
                    ..
                } if *by_host
                    || matches!(to, PluginState::Failed { .. } | PluginState::Restarting) =>
                {
                    Some(format!("the plugin became {}: {reason}", to.name()))
                }
                _ => None,
            })
            .collect()
    }

    /// Adds a step; one during which the plugin was upset fails, saying how.
    fn push(&mut self, mut step: Step, mark: usize) {
        let upsets = self.upsets(mark);
        if !upsets.is_empty() {
            step.ok = false;
            step.skipped = false;
            step.detail = format!("{}; meanwhile {}", step.detail, upsets.join("; "));
        }
        self.steps.push(step);
    }

    /// The name its first process's hello said, when that is not the configured one.
    fn other_name(&self) -> Option<String> {
        self.tap.seen().iter().find_map(|s| match &s.what {
            Observed::Message(ballast_process::PluginMessage::Hello { name, .. })
                if s.generation == 1 && *name != self.name =>
            {
                Some(name.clone())
            }
            _ => None,
        })
    }

    /// The step named `name`, if it ran.
    fn step(&self, name: &str) -> Option<&Step> {
        self.steps.iter().find(|s| s.name == name)
    }

    fn state(&self) -> Option<PluginState> {
        self.host.status(&self.name).ok().map(|s| s.state)
    }

    fn info(&self) -> &PluginInfo {
        self.info
            .as_ref()
            .unwrap_or_else(|| unreachable!("the steps after load run only once it loaded"))
    }

    fn has_capability(&self, capability: &str) -> bool {
        self.info().capabilities.contains(&capability)
    }

    fn level_name(&self, level: u32) -> String {
        self.info()
            .levels
            .get(level as usize)
            .map_or_else(|| format!("level {level}"), |l| l.name.clone())
    }

    /// Brings the plugin back to level 0 when an earlier step left it otherwise (failed,
    /// restarting, disabled); `false` when it cannot be.
    fn ensure_enabled(&mut self) -> bool {
        let back = match self.state() {
            Some(PluginState::Enabled { level }) if level == Level::FULL => return true,
            Some(PluginState::Enabled { .. }) => self
                .host
                .set_level(&self.name, Level::FULL, "check: back to level 0")
                .is_ok(),
            _ => {
                let _ = self.host.disable(&self.name, "check: recovering");
                let _ = self.host.set_checkpoint(&self.name, None);
                self.host
                    .enable(&self.name, Level::FULL, "check: recovering")
                    .is_ok()
            }
        };
        self.arrived = Instant::now();
        back
    }

    /// Skips `step` when the plugin cannot be brought back; `true` when it can go on.
    fn ready(&mut self, step: &str) -> bool {
        if self.ensure_enabled() {
            return true;
        }
        self.steps.push(Step::skip(
            step,
            "not run: the plugin could not be enabled again after an earlier step",
        ));
        false
    }

    /// Submits `n` calls of `request` at once, plain or streamed (each chunk to `chunks`);
    /// returns the replies, how many were refused at once, and the first refusal.
    fn submit(
        &self,
        n: usize,
        request: &[u8],
        streamed: Option<&Chunks>,
    ) -> (Replies, usize, Option<String>) {
        let (tx, rx) = crossbeam_channel::unbounded();
        let mut refused = 0;
        let mut first_refusal = None;
        for _ in 0..n {
            let tx = tx.clone();
            let reply = Box::new(move |result| {
                let _ = tx.send((Instant::now(), result));
            });
            let submitted = match streamed {
                None => self.host.submit(&self.name, request.to_vec(), reply),
                Some(chunks) => {
                    let chunks = Arc::clone(chunks);
                    let options = CallOptions {
                        deadline: None,
                        cancel: CancelToken::new(),
                        sink: Some(Box::new(move |chunk| {
                            chunks
                                .lock()
                                .unwrap_or_else(|p| p.into_inner())
                                .push((Instant::now(), chunk));
                            true
                        })),
                    };
                    self.host
                        .submit_with(&self.name, request.to_vec(), options, reply)
                }
            };
            if let Err(error) = submitted {
                refused += 1;
                first_refusal.get_or_insert_with(|| error.to_string());
            }
        }
        (rx, refused, first_refusal)
    }

    /// Waits for `n` replies until `until`; the ones that came.
    fn gather(
        replies: &Replies,
        n: usize,
        until: Instant,
    ) -> Vec<(Instant, Result<Vec<u8>, CallError>)> {
        let mut got = Vec::new();
        while got.len() < n {
            match replies.recv_deadline(until) {
                Ok(reply) => got.push(reply),
                Err(_) => break,
            }
        }
        got
    }

    // --- The steps ---

    fn load(&mut self) -> bool {
        let started = Instant::now();
        match self.host.load(self.config.clone()) {
            Ok(info) => {
                let detail = describe(&info);
                self.info = Some(info);
                self.steps
                    .push(Step::pass("load", Some(started.elapsed()), detail));
                true
            }
            Err(error) => {
                self.steps.push(Step::fail(
                    "load",
                    Some(started.elapsed()),
                    error.to_string(),
                ));
                false
            }
        }
    }

    fn create(&mut self) -> bool {
        let _ = self.host.set_checkpoint(&self.name, None);
        let mark = self.mark();
        let started = Instant::now();
        let result = self.host.enable(
            &self.name,
            Level::FULL,
            "check: create without a checkpoint",
        );
        let took = started.elapsed();
        self.arrived = Instant::now();
        if self.kind.speaks_protocol() {
            let seen = self.tap.seen();
            let generation = seen.iter().map(|s| s.generation).max().unwrap_or(0);
            let hello = protocol::hello(&seen, generation);
            match (hello, &result) {
                (Some(at), _) => self.steps.push(Step::pass(
                    "hello",
                    Some(at.saturating_duration_since(started)),
                    format!(
                        "said hello {} after its process started (start_timeout {})",
                        latency_us(micros(at.saturating_duration_since(started))),
                        duration_short(self.config.start_timeout)
                    ),
                )),
                (None, Err(error)) => {
                    self.steps
                        .push(Step::fail("hello", Some(took), error.to_string()));
                    return false;
                }
                (None, Ok(())) => self.steps.push(Step::fail(
                    "hello",
                    Some(took),
                    "it was enabled but its hello was not seen",
                )),
            }
        }
        let level = self.level_name(0);
        match result {
            Ok(()) => {
                self.push(
                    Step::pass(
                        "create without a checkpoint",
                        Some(took),
                        format!("created, started and enabled at level 0 ({level})"),
                    ),
                    mark,
                );
                true
            }
            Err(error) => {
                self.push(
                    Step::fail("create without a checkpoint", Some(took), error.to_string()),
                    mark,
                );
                false
            }
        }
    }

    fn first_call(&mut self) {
        if !self.kind.callable() {
            self.steps.push(Step::skip(
                "call",
                "it speaks no protocol, so it takes no calls",
            ));
            return;
        }
        let mark = self.mark();
        let started = Instant::now();
        let result = self.host.call(&self.name, &self.options.request);
        let took = started.elapsed();
        let request = excerpt(&self.options.request);
        let step = match result {
            Ok(answer) => Step::pass(
                "call",
                Some(took),
                format!("{request} answered {}", excerpt(&answer)),
            ),
            Err(error) => Step::fail("call", Some(took), format!("{request}: {error}")),
        };
        self.push(step, mark);
    }

    /// What the plugin holds now and how that was measured, or why it was not measured (it
    /// declares `declared`). An isolated plugin's figures sent after `since` (when it came to
    /// its level) count.
    fn held(&self, since: Instant, declared: u64) -> Result<(u64, String), String> {
        let uncounted = format!(
            "not measured: it does not count its allocations (no alloc_stats capability); the scaler counts the {} it declares",
            bytes(declared)
        );
        let stats = || {
            self.host
                .refresh_stats(&self.name)
                .map_err(|e| format!("not measured: {e}"))
        };
        match self.kind {
            Kind::InProcess => {
                if !self.has_capability("alloc_stats") {
                    return Err(uncounted);
                }
                let a = stats()?.live_bytes;
                let b = stats()?.live_bytes;
                Ok((a.max(b), "what its allocator counts".to_owned()))
            }
            Kind::Isolated => {
                // The worker sends its plugin's figures with its heartbeats: wait for figures
                // sent after the level change.
                let until = since.max(Instant::now()) + self.heartbeat_wait();
                loop {
                    let fresh = self.tap.seen().iter().any(|s| {
                        s.at > since
                            && matches!(
                                s.what,
                                Observed::Message(ballast_process::PluginMessage::Stats { .. })
                            )
                    });
                    if fresh || Instant::now() >= until {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
                // The supervisor takes the figures in, and measures the process, shortly after.
                std::thread::sleep(SAMPLE_INTERVAL * 2);
                let stats = stats()?;
                let rss = stats.process.as_ref().map_or(0, |p| p.rss_bytes);
                if !self.has_capability("alloc_stats") {
                    return Err(format!(
                        "{}; its worker process holds {} resident",
                        uncounted,
                        bytes(rss)
                    ));
                }
                Ok((
                    stats.live_bytes,
                    format!(
                        "what its allocator counts; its worker process holds {} resident",
                        bytes(rss)
                    ),
                ))
            }
            Kind::Protocol | Kind::NoProtocol => {
                // Three samples of its process tree after the change, the most they saw.
                let until = Instant::now() + SAMPLE_INTERVAL * 3;
                let mut most = 0;
                let mut processes = 0;
                loop {
                    if let Ok(stats) = self.host.refresh_stats(&self.name)
                        && let Some(usage) = &stats.process
                        && usage.rss_bytes >= most
                    {
                        most = usage.rss_bytes;
                        processes = usage.processes;
                    }
                    if Instant::now() >= until {
                        break;
                    }
                    std::thread::sleep(SAMPLE_INTERVAL / 2);
                }
                if processes == 0 {
                    return Err("not measured: its process could not be read".to_owned());
                }
                Ok((
                    most,
                    format!("resident, {}", count(processes as usize, "process")),
                ))
            }
        }
    }

    /// How long a worker may take to send its figures.
    fn heartbeat_wait(&self) -> Duration {
        self.config
            .effective_stall_threshold()
            .map_or(Duration::from_secs(5), |t| t / 4)
            .clamp(Duration::from_millis(100), Duration::from_secs(5))
            + Duration::from_secs(1)
    }

    fn memory(&mut self, level: u32) {
        let name = format!("memory at level {level} ({})", self.level_name(level));
        let Some(declared) = self
            .info()
            .levels
            .get(level as usize)
            .map(|l| l.memory_preferred_bytes.max(l.memory_min_bytes))
        else {
            return;
        };
        let mark = self.mark();
        let started = Instant::now();
        let held = self.held(self.arrived, declared);
        let took = Some(started.elapsed());
        let step = match held {
            Err(why) => Step::skip(name, why),
            Ok((held, how)) => {
                let undeclared = self.kind == Kind::Protocol || self.kind == Kind::NoProtocol;
                if declared == 0 && undeclared && self.config.levels.is_empty() {
                    Step::pass(
                        name,
                        took,
                        format!(
                            "holds {} ({how}); it declares no levels (list them in its config to have this checked)",
                            bytes(held)
                        ),
                    )
                } else if held > declared + slack(declared) {
                    Step::fail(
                        name,
                        took,
                        format!(
                            "holds {} ({how}), more than the {} it declares: the scaler counts what it holds, so declare at least {}",
                            bytes(held),
                            bytes(declared),
                            bytes(held.div_ceil(1 << 20) << 20)
                        ),
                    )
                } else {
                    Step::pass(
                        name,
                        took,
                        format!(
                            "holds {} ({how}); declares {}",
                            bytes(held),
                            bytes(declared)
                        ),
                    )
                }
            }
        };
        self.push(step, mark);
    }

    /// Moves to `level` and, when it takes calls, calls it there.
    fn move_to(&mut self, level: u32, step: &str) {
        let mark = self.mark();
        let started = Instant::now();
        let moved = self
            .host
            .set_level(&self.name, Level(level), &format!("check: {step}"));
        let moved_in = started.elapsed();
        self.arrived = Instant::now();
        let result = match moved {
            Err(error) => Err(error.to_string()),
            Ok(()) if self.kind.callable() => self
                .host
                .call(&self.name, &self.options.request)
                .map(|_| {
                    format!(
                        "moved in {}; a call at this level answered",
                        latency_us(micros(moved_in))
                    )
                })
                .map_err(|e| format!("moved, but the call at this level failed: {e}")),
            Ok(()) => Ok(if self.kind == Kind::NoProtocol {
                format!(
                    "restarted at this level in {} (it speaks no protocol)",
                    latency_us(micros(moved_in))
                )
            } else {
                format!("moved in {}", latency_us(micros(moved_in)))
            }),
        };
        let took = Some(started.elapsed());
        let step = match result {
            Ok(detail) => Step::pass(step, took, detail),
            Err(detail) => Step::fail(step, took, detail),
        };
        self.push(step, mark);
    }

    fn levels(&mut self) {
        let n = self.info().n_levels();
        if n < 2 {
            self.steps.push(Step::skip(
                "levels",
                "it has one level: there is nothing to move to",
            ));
            return;
        }
        for level in 1..n {
            let name = format!("level {level} ({}), down", self.level_name(level));
            self.move_to(level, &name);
            self.memory(level);
        }
        for level in (0..n - 1).rev() {
            let name = format!("level {level} ({}), up", self.level_name(level));
            self.move_to(level, &name);
        }
    }

    fn concurrent_calls(&mut self) {
        const STEP: &str = "concurrent calls";
        if !self.kind.callable() {
            self.steps.push(Step::skip(
                STEP,
                "it speaks no protocol, so it takes no calls",
            ));
            return;
        }
        if !self.ready(STEP) {
            return;
        }
        let limit = self.config.max_concurrent_calls as usize;
        let n = (limit * 4).min(limit + self.config.queue as usize).max(1);
        let mark = self.mark();
        self.tap.reset_most_inside();
        let started = Instant::now();
        let (replies, refused, first_refusal) = self.submit(n, &self.options.request, None);
        let rounds = n.div_ceil(limit) as u32;
        let until = Instant::now() + self.config.call_timeout * rounds + Duration::from_secs(1);
        let got = Self::gather(&replies, n - refused, until);
        let took = Some(started.elapsed());
        let failed: Vec<String> = got
            .iter()
            .filter_map(|(_, r)| r.as_ref().err().map(ToString::to_string))
            .collect();
        let missing = n - refused - got.len();
        let thread_safe = self.has_capability("thread_safe_calls");
        let (most, unit) = match self.kind {
            Kind::InProcess => (self.tap.most_inside() as usize, "inside the plugin"),
            _ => (
                protocol::most_outstanding(&self.tap.seen(), started),
                "outstanding on the protocol",
            ),
        };
        let step = if refused + failed.len() + missing > 0 {
            let why = failed
                .first()
                .cloned()
                .or(first_refusal)
                .unwrap_or_else(|| "no answer came".to_owned());
            let alone_ok = self.step("call").is_some_and(|s| s.ok && !s.skipped);
            let hint = if !failed.is_empty() && alone_ok && thread_safe {
                "; the same request alone succeeds, so its calls are not safe to run at once though it declares thread-safe calls"
            } else {
                ""
            };
            Step::fail(
                STEP,
                took,
                format!(
                    "{} of {n} calls made at once failed or went unanswered ({refused} refused, {} failed, {missing} unanswered): {why}{hint}",
                    refused + failed.len() + missing,
                    failed.len()
                ),
            )
        } else if self.kind == Kind::InProcess && !thread_safe && most > 1 {
            Step::fail(
                STEP,
                took,
                format!(
                    "{most} calls were inside the plugin at once, though it does not declare thread-safe calls"
                ),
            )
        } else {
            let how = match (self.kind, thread_safe) {
                (Kind::InProcess, false) => {
                    " (it does not declare thread-safe calls: the host ran them one at a time)"
                }
                (Kind::InProcess | Kind::Isolated, true) => " (it declares thread-safe calls)",
                _ => "",
            };
            Step::pass(
                STEP,
                took,
                format!(
                    "{n} calls made at once (max_concurrent_calls {limit}), all answered; at most {most} {unit} at once{how}"
                ),
            )
        };
        self.push(step, mark);
    }

    fn streams(&self) -> bool {
        match self.kind {
            Kind::InProcess | Kind::Isolated => self.has_capability("streaming"),
            // Any call of the protocol may be answered in chunks.
            Kind::Protocol => true,
            Kind::NoProtocol => false,
        }
    }

    fn streaming(&mut self) {
        if !self.streams() {
            let why = if self.kind == Kind::NoProtocol {
                "it speaks no protocol, so it takes no calls"
            } else {
                "it does not declare streaming"
            };
            self.steps.push(Step::skip("streamed call", why));
            self.steps.push(Step::skip("cancel", why));
            return;
        }
        if self.ready("streamed call") {
            self.streamed_call();
        }
        if self.ready("cancel") {
            self.cancel();
        }
    }

    fn streamed_call(&mut self) {
        const STEP: &str = "streamed call";
        let request = self.stream_request();
        let mark = self.mark();
        let chunks: Chunks = Arc::default();
        let started = Instant::now();
        let (replies, refused, first_refusal) = self.submit(1, &request, Some(&chunks));
        let got = if refused > 0 {
            Vec::new()
        } else {
            Self::gather(
                &replies,
                1,
                Instant::now() + self.config.call_timeout + Duration::from_secs(1),
            )
        };
        let took = Some(started.elapsed());
        let received: Vec<(Instant, Vec<u8>)> =
            std::mem::take(&mut *chunks.lock().unwrap_or_else(|p| p.into_inner()));
        self.stream_chunks = received.len();
        let what = excerpt(&request);
        let step = match got.first() {
            None => Step::fail(
                STEP,
                took,
                format!(
                    "{what}: {}",
                    first_refusal.unwrap_or_else(|| "no answer came".to_owned())
                ),
            ),
            Some((_, Err(error))) => Step::fail(STEP, took, format!("{what}: {error}")),
            Some((ended, Ok(_))) => {
                let parts: Vec<Vec<u8>> = received.iter().map(|(_, c)| c.clone()).collect();
                let mut mismatch = None;
                if self.kind.has_process() {
                    // What the plugin sent, read off the protocol, against what the caller got.
                    let seen = self.tap.seen();
                    if let Some(&(generation, id)) = protocol::calls_since(&seen, started).first() {
                        let (mut sent, last) = protocol::answer_parts(&seen, generation, id);
                        if let Some(last) = last.filter(|l| !l.is_empty()) {
                            sent.push(last);
                        }
                        if sent != parts {
                            let at = sent.iter().zip(&parts).take_while(|(a, b)| a == b).count();
                            mismatch = Some(format!(
                                "the plugin sent {} but the caller got {}, differing from part {}",
                                count(sent.len(), "part"),
                                count(parts.len(), "part"),
                                at + 1
                            ));
                        }
                    }
                }
                match mismatch {
                    Some(why) => Step::fail(STEP, took, format!("{what}: {why}")),
                    None => {
                        let first = received.first().map_or_else(
                            || "none".to_owned(),
                            |(at, _)| latency_us(micros(at.saturating_duration_since(started))),
                        );
                        let total: usize = parts.iter().map(Vec::len).sum();
                        Step::pass(
                            STEP,
                            took,
                            format!(
                                "{what}: {} in order ({}), the first after {first}, the call ended after {}",
                                count(parts.len(), "chunk"),
                                bytes(total as u64),
                                latency_us(micros(ended.saturating_duration_since(started)))
                            ),
                        )
                    }
                }
            }
        };
        self.push(step, mark);
    }

    fn cancel(&mut self) {
        const STEP: &str = "cancel";
        let request = self.stream_request();
        let what = excerpt(&request);
        if self.stream_chunks < 2 {
            self.steps.push(Step::skip(
                STEP,
                format!(
                    "the streamed answer to {what} came in {}: too few to cancel one midway (pass a stream request that streams longer)",
                    count(self.stream_chunks, "part")
                ),
            ));
            return;
        }
        let mark = self.mark();
        let cancelled_at: Arc<Mutex<Option<Instant>>> = Arc::default();
        let first = Arc::new(AtomicBool::new(true));
        let (tx, rx) = crossbeam_channel::bounded(1);
        let token = CancelToken::new();
        let sink_cancelled = Arc::clone(&cancelled_at);
        let options = CallOptions {
            deadline: None,
            cancel: token,
            sink: Some(Box::new(move |_chunk| {
                if first.swap(false, Ordering::SeqCst) {
                    // The caller goes away after the first chunk, as a closed connection does.
                    *sink_cancelled.lock().unwrap_or_else(|p| p.into_inner()) =
                        Some(Instant::now());
                    false
                } else {
                    true
                }
            })),
        };
        let started = Instant::now();
        let submitted = self.host.submit_with(
            &self.name,
            request,
            options,
            Box::new(move |result| {
                let _ = tx.send((Instant::now(), result));
            }),
        );
        if let Err(error) = submitted {
            self.push(
                Step::fail(STEP, Some(started.elapsed()), format!("{what}: {error}")),
                mark,
            );
            return;
        }
        let reply = rx.recv_deadline(Instant::now() + self.config.call_timeout + CANCEL_GRACE * 4);
        let cancel_at = *cancelled_at.lock().unwrap_or_else(|p| p.into_inner());
        let step = match (reply, cancel_at) {
            (Err(_), _) => Step::fail(
                STEP,
                Some(started.elapsed()),
                format!(
                    "{what}: the call cancelled after its first chunk had not returned {} later",
                    duration_short(self.config.call_timeout + CANCEL_GRACE * 4)
                ),
            ),
            (Ok((_, Ok(_))), _) | (Ok(_), None) => Step::skip(
                STEP,
                format!("{what}: the call ended before it could be cancelled"),
            ),
            (Ok((replied, Err(_))), Some(cancel_at)) => {
                if self.kind.has_process() {
                    self.cancel_on_protocol(started, cancel_at, &what)
                } else {
                    let stopped = replied.saturating_duration_since(cancel_at);
                    let took = Some(started.elapsed());
                    if stopped > CANCEL_GRACE {
                        Step::fail(
                            STEP,
                            took,
                            format!(
                                "{what}: it went on for {} after its call was cancelled (it must stop within {}): it does not honour cancellation",
                                latency_us(micros(stopped)),
                                latency_us(micros(CANCEL_GRACE))
                            ),
                        )
                    } else {
                        Step::pass(
                            STEP,
                            took,
                            format!(
                                "{what}: cancelled after its first chunk, it stopped {} later",
                                latency_us(micros(stopped))
                            ),
                        )
                    }
                }
            }
        };
        self.push(step, mark);
    }

    /// Whether a process stopped sending for its cancelled call: it may finish what was on
    /// its way, but nothing may come for the call past [`CANCEL_GRACE`] after the `cancel`.
    fn cancel_on_protocol(&self, started: Instant, cancel_at: Instant, what: &str) -> Step {
        const STEP: &str = "cancel";
        let Some(&(generation, id)) = protocol::calls_since(&self.tap.seen(), started).first()
        else {
            return Step::fail(
                STEP,
                Some(started.elapsed()),
                "the call was not seen on the protocol",
            );
        };
        // Watch for twice the grace, or until the plugin answered the call.
        let until = cancel_at + CANCEL_GRACE * 2;
        while !protocol::answered(&self.tap.seen(), generation, id) && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(10));
        }
        let took = Some(started.elapsed());
        let seen = self.tap.seen();
        let Some((sent, last, after)) = protocol::after_cancel(&seen, generation, id) else {
            return Step::fail(
                STEP,
                took,
                format!("{what}: the host's cancel for call {id} was not seen on the protocol"),
            );
        };
        match last {
            Some(last) if last.saturating_duration_since(sent) > CANCEL_GRACE => Step::fail(
                STEP,
                took,
                format!(
                    "{what}: it sent {} for call {id} up to {} after the host's cancel (it must stop within {}): it does not honour cancellation",
                    count(after, "message"),
                    latency_us(micros(last.saturating_duration_since(sent))),
                    latency_us(micros(CANCEL_GRACE))
                ),
            ),
            Some(last) => Step::pass(
                STEP,
                took,
                format!(
                    "{what}: cancelled after its first chunk; {} still came, the last {} after the cancel",
                    count(after, "message"),
                    latency_us(micros(last.saturating_duration_since(sent)))
                ),
            ),
            None => Step::pass(
                STEP,
                took,
                format!("{what}: cancelled after its first chunk; nothing more came for it"),
            ),
        }
    }

    fn unknown_message(&mut self) {
        const STEP: &str = "unknown message ignored";
        if !self.ready(STEP) {
            return;
        }
        let mark = self.mark();
        let started = Instant::now();
        let generation = match self.host.send_unknown(&self.name, UNKNOWN_MESSAGE) {
            Ok(generation) => generation,
            Err(error) => {
                self.push(Step::fail(STEP, Some(started.elapsed()), error), mark);
                return;
            }
        };
        let call = self.host.call(&self.name, &self.options.request);
        // A process that dies of it may take a moment.
        std::thread::sleep(Duration::from_millis(100));
        let took = Some(started.elapsed());
        let exited = protocol::exited(&self.tap.seen(), generation);
        let step = match (exited, call) {
            (Some((_, exit)), _) => Step::fail(
                STEP,
                took,
                format!(
                    "after a message of a type it does not know its process {}",
                    exit.sentence()
                ),
            ),
            (None, Err(error)) => Step::fail(
                STEP,
                took,
                format!(
                    "after a message of a type it does not know, the next call failed: {error}"
                ),
            ),
            (None, Ok(_)) => Step::pass(
                STEP,
                took,
                "sent a message of a type it does not know; it went on and answered the next call",
            ),
        };
        self.push(step, mark);
    }

    fn heartbeats(&mut self) {
        const STEP: &str = "heartbeats";
        if !self.ready(STEP) {
            return;
        }
        let Some(threshold) = self.config.effective_stall_threshold() else {
            return;
        };
        let Some(generation) = self.host.process_generation(&self.name) else {
            return;
        };
        let mark = self.mark();
        let started = Instant::now();
        let Some(hello) = protocol::hello(&self.tap.seen(), generation) else {
            self.push(
                Step::fail(STEP, None, "its running process's hello was not seen"),
                mark,
            );
            return;
        };
        let until = hello + threshold + Duration::from_millis(100);
        let beats = loop {
            let seen = self.tap.seen();
            let beats = protocol::heartbeats(&seen, generation);
            if !beats.is_empty()
                || Instant::now() >= until
                || protocol::exited(&seen, generation).is_some()
            {
                break beats;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let took = Some(started.elapsed());
        let threshold_text = duration_short(threshold);
        let step = match beats.first() {
            None => Step::fail(
                STEP,
                took,
                format!(
                    "no heartbeat within its stall threshold of {threshold_text} after its hello: the daemon would raise `stalled`"
                ),
            ),
            Some(&first) => {
                let mut longest = first.saturating_duration_since(hello);
                for pair in beats.windows(2) {
                    longest = longest.max(pair[1].saturating_duration_since(pair[0]));
                }
                if longest > threshold {
                    Step::fail(
                        STEP,
                        took,
                        format!(
                            "{} without a heartbeat, longer than its stall threshold of {threshold_text}",
                            latency_us(micros(longest))
                        ),
                    )
                } else {
                    let apart = if beats.len() > 1 {
                        format!(", at most {} apart", latency_us(micros(longest)))
                    } else {
                        String::new()
                    };
                    Step::pass(
                        STEP,
                        took,
                        format!(
                            "{} so far, the first {} after its hello{apart} (stall threshold {threshold_text})",
                            count(beats.len(), "heartbeat"),
                            latency_us(micros(first.saturating_duration_since(hello))),
                        ),
                    )
                }
            }
        };
        self.push(step, mark);
    }

    /// Disables the plugin with calls in flight: the drain, checkpoint and stop steps. `false`
    /// when the check cannot go on.
    fn drain(&mut self) -> bool {
        const STEP: &str = "drain with calls in flight";
        if !self.ready(STEP) {
            return false;
        }
        let limit = self.config.max_concurrent_calls as usize;
        let mark = self.mark();
        let started = Instant::now();
        let chunks: Chunks = Arc::default();
        let stream_request = self.stream_request();
        let mut submitted = Vec::new();
        if self.streams() {
            submitted.push(self.submit(limit, &stream_request, Some(&chunks)));
        }
        if self.kind.callable() {
            submitted.push(self.submit(limit, &self.options.request, None));
        }
        let retired = self
            .host
            .disable_reporting(&self.name, "check: drain with calls in flight");
        let until = Instant::now()
            + self.config.drain_timeout
            + self.config.call_timeout
            + Duration::from_secs(1);
        let mut admitted = 0;
        let mut answers = Vec::new();
        for (replies, refused, _) in &submitted {
            let expected = limit - refused;
            admitted += expected;
            answers.extend(Self::gather(replies, expected, until));
        }
        let took = Some(started.elapsed());
        let retired = match retired {
            Ok(retired) => retired,
            Err(error) => {
                self.push(Step::fail(STEP, took, error.to_string()), mark);
                return false;
            }
        };
        let mut problems = Vec::new();
        let missing = admitted - answers.len();
        if missing > 0 {
            problems.push(format!(
                "{} admitted before the drain never answered",
                count(missing, "call")
            ));
        }
        let failed: Vec<String> = answers
            .iter()
            .filter_map(|(_, r)| match r {
                Err(CallError::Cancelled {
                    reason: CancelReason::Shed,
                    ..
                }) => None,
                Err(error) => Some(error.to_string()),
                Ok(_) => None,
            })
            .collect();
        if let Some(first) = failed.first() {
            problems.push(format!(
                "{} in flight failed: {first}",
                count(failed.len(), "call")
            ));
        }
        if retired.in_flight_left > 0 {
            problems.push(format!(
                "{} still ran past its drain_timeout of {}",
                count(retired.in_flight_left as usize, "call"),
                duration_short(self.config.drain_timeout)
            ));
        }
        let mut drained = String::new();
        if let Some((deadline, drain_took, result)) = &retired.drain {
            match result {
                Err(fault) if fault.status == BALLAST_STATUS_UNSUPPORTED => {
                    drained = "it has no drain of its own".to_owned();
                }
                Err(fault) => problems.push(format!("its drain failed: {fault}")),
                Ok(()) if *drain_took > *deadline + DEADLINE_SLACK => problems.push(format!(
                    "its drain took {}, past the deadline of {} it was given",
                    latency_us(micros(*drain_took)),
                    latency_us(micros(*deadline))
                )),
                Ok(()) => {
                    drained = format!(
                        "it drained in {} of the {} it was given",
                        latency_us(micros(*drain_took)),
                        latency_us(micros(*deadline))
                    );
                }
            }
        }
        let cut = answers
            .iter()
            .filter(|(_, r)| {
                matches!(
                    r,
                    Err(CallError::Cancelled {
                        reason: CancelReason::Shed,
                        ..
                    })
                )
            })
            .count();
        let step = if problems.is_empty() {
            let calls = if admitted == 0 {
                "no calls (it takes none)".to_owned()
            } else {
                let cut = if cut > 0 {
                    format!(", {cut} cut at the drain deadline")
                } else {
                    String::new()
                };
                format!(
                    "{} submitted, {} in flight when the drain began, all answered{cut} within {}",
                    count(admitted, "call"),
                    retired.in_flight_at_start,
                    latency_us(micros(retired.waited_for_calls))
                )
            };
            Step::pass(STEP, took, format!("{calls}; {drained}"))
        } else {
            Step::fail(STEP, took, problems.join("; "))
        };
        self.push(step, mark);
        self.checkpoint_step(&retired);
        self.stop_step(&retired);
        true
    }

    fn checkpoint_step(&mut self, retired: &crate::lifecycle::Retired) {
        const STEP: &str = "checkpoint";
        let step = match &retired.checkpoint {
            None => Step::skip(
                STEP,
                "not taken: calls were still running after the drain deadline",
            ),
            Some((took, Ok(Some(size)))) => Step::pass(
                STEP,
                Some(*took),
                format!("handed over {}", bytes(*size as u64)),
            ),
            Some((took, Ok(None))) => Step::pass(
                STEP,
                Some(*took),
                "none: it keeps no state to hand to its next instance",
            ),
            Some((took, Err(fault))) => {
                Step::fail(STEP, Some(*took), format!("its checkpoint failed: {fault}"))
            }
        };
        self.steps.push(step);
    }

    fn stop_step(&mut self, retired: &crate::lifecycle::Retired) {
        const STEP: &str = "stop and destroy";
        let destroyed = match retired.destroy {
            Some(took) => format!("destroyed in {}", latency_us(micros(took))),
            None => "destroyed once its last call returned".to_owned(),
        };
        let step = match &retired.stop {
            None => Step::skip(
                STEP,
                format!(
                    "not stopped: calls were still running after the drain deadline; {destroyed}"
                ),
            ),
            Some((took, Err(fault))) if fault.status != BALLAST_STATUS_UNSUPPORTED => {
                Step::fail(STEP, Some(*took), format!("its stop failed: {fault}"))
            }
            Some((took, _)) => {
                let took = *took + retired.destroy.unwrap_or_default();
                if self.kind.has_process() {
                    let seen = self.tap.seen();
                    let generation = seen.iter().map(|s| s.generation).max().unwrap_or(0);
                    match protocol::stop_of(&seen, generation) {
                        Some((_, true)) => Step::fail(
                            STEP,
                            Some(took),
                            format!(
                                "its process did not exit within its stop_timeout of {} after SIGTERM, and was killed",
                                duration_short(self.config.stop_timeout)
                            ),
                        ),
                        Some((Some(exit), false)) => {
                            Step::pass(STEP, Some(took), format!("its process {}", exit.sentence()))
                        }
                        _ => Step::pass(STEP, Some(took), "its process was stopped"),
                    }
                } else {
                    Step::pass(STEP, Some(took), format!("stopped; {destroyed}"))
                }
            }
        };
        self.steps.push(step);
    }

    /// Enables the plugin at level 0 and disables it at once; its checkpoint then, with what
    /// went wrong.
    fn cycle(&self, reason: &str) -> Result<Option<Vec<u8>>, String> {
        self.host
            .enable(&self.name, Level::FULL, reason)
            .map_err(|e| e.to_string())?;
        let retired = self
            .host
            .disable_reporting(&self.name, reason)
            .map_err(|e| e.to_string())?;
        if let Some((_, Err(fault))) = &retired.checkpoint {
            return Err(format!("its checkpoint failed: {fault}"));
        }
        self.host.checkpoint(&self.name).map_err(|e| e.to_string())
    }

    fn restore(&mut self) {
        const CREATE: &str = "create with the checkpoint";
        const RESTORED: &str = "checkpoint restored";
        let handed = self.host.checkpoint(&self.name).ok().flatten();
        let Some(handed) = handed else {
            let why = if self.kind.callable() {
                "it handed over no checkpoint"
            } else {
                "it speaks no protocol, so it hands over no checkpoint"
            };
            self.steps.push(Step::skip(CREATE, why));
            self.steps.push(Step::skip(RESTORED, why));
            return;
        };
        // An instance created from the checkpoint, checkpointed at once.
        let mark = self.mark();
        let started = Instant::now();
        let created =
            self.host
                .enable(&self.name, Level::FULL, "check: create with the checkpoint");
        let took = Some(started.elapsed());
        if let Err(error) = created {
            self.push(
                Step::fail(
                    CREATE,
                    took,
                    format!(
                        "created from its own checkpoint ({}), it failed: {error}",
                        blob(&handed)
                    ),
                ),
                mark,
            );
            return;
        }
        self.push(
            Step::pass(
                CREATE,
                took,
                format!("created at level 0 from its checkpoint ({})", blob(&handed)),
            ),
            mark,
        );
        let mark = self.mark();
        let started = Instant::now();
        let restored = self
            .host
            .disable_reporting(&self.name, "check: checkpoint of the restored instance")
            .map_err(|e| e.to_string())
            .and_then(|retired| match retired.checkpoint {
                Some((_, Err(fault))) => Err(format!("its checkpoint failed: {fault}")),
                _ => self.host.checkpoint(&self.name).map_err(|e| e.to_string()),
            });
        // And one created without a checkpoint, for comparison.
        let _ = self.host.set_checkpoint(&self.name, None);
        let fresh = self.cycle("check: checkpoint of a fresh instance");
        let took = Some(started.elapsed());
        let step = match (restored, fresh) {
            (Err(error), _) | (_, Err(error)) => Step::fail(RESTORED, took, error),
            (Ok(restored), Ok(fresh)) => {
                let handed_text = blob(&handed);
                let fresh_text = fresh.as_deref().map_or_else(|| "none".to_owned(), blob);
                let restored_text = restored.as_deref().map_or_else(|| "none".to_owned(), blob);
                if fresh.as_deref() == Some(handed.as_slice()) {
                    Step::new(
                        RESTORED,
                        true,
                        true,
                        took,
                        format!(
                            "cannot tell: the checkpoint it handed over ({handed_text}) equals a fresh instance's"
                        ),
                    )
                } else if restored == fresh {
                    Step::fail(
                        RESTORED,
                        took,
                        format!(
                            "created from its checkpoint ({handed_text}), it handed back the state of an instance created without one ({fresh_text}): it did not restore what it was handed"
                        ),
                    )
                } else {
                    Step::pass(
                        RESTORED,
                        took,
                        format!(
                            "created from {handed_text}, it handed on {restored_text} (a fresh instance: {fresh_text})"
                        ),
                    )
                }
            }
        };
        self.push(step, mark);
    }

    fn protocol_record(&mut self) {
        let seen = self.tap.seen();
        match self.kind {
            Kind::InProcess => {}
            Kind::NoProtocol => {
                let (killed, processes) = protocol::killed(&seen);
                let stop_timeout = duration_short(self.config.stop_timeout);
                self.steps.push(if killed > 0 {
                    Step::fail(
                        "stop on SIGTERM",
                        None,
                        format!(
                            "{killed} of its {processes} stopped processes did not exit within its stop_timeout of {stop_timeout} after SIGTERM and were killed"
                        ),
                    )
                } else {
                    Step::pass(
                        "stop on SIGTERM",
                        None,
                        format!(
                            "each of its {} exited on SIGTERM within its stop_timeout of {stop_timeout}",
                            count(processes, "process")
                        ),
                    )
                });
            }
            Kind::Isolated | Kind::Protocol => {
                let answers = protocol::answers(&seen);
                let processes = seen
                    .iter()
                    .map(|s| s.generation)
                    .filter(|g| *g > 0)
                    .max()
                    .unwrap_or(0) as usize;
                self.steps.push(if answers.hold() {
                    Step::pass(
                        "ids answered exactly once",
                        None,
                        format!(
                            "{} to {}, each answered once ({} cancelled)",
                            count(answers.requests, "request"),
                            count(processes, "process"),
                            answers.cancelled
                        ),
                    )
                } else {
                    Step::fail("ids answered exactly once", None, answers.problems())
                });
                let bad = protocol::bad_lines(&seen);
                self.steps.push(match bad.first() {
                    None => Step::pass(
                        "valid messages",
                        None,
                        "every line it wrote to stdout was a protocol message",
                    ),
                    Some((line, why)) => Step::fail(
                        "valid messages",
                        None,
                        format!(
                            "{} on its stdout {} not protocol messages (stdout carries only protocol lines; log to stderr): `{line}`: {why}",
                            count(bad.len(), "line"),
                            if bad.len() == 1 { "was" } else { "were" }
                        ),
                    ),
                });
                let grace = self.config.stop_timeout;
                let exits = protocol::eof_exits(&seen);
                let late: Vec<&protocol::EofExit> =
                    exits.iter().filter(|e| e.exited_after.is_none()).collect();
                let step = if exits.is_empty() {
                    Step::skip("exit on end of input", "no process was stopped")
                } else if late.is_empty() {
                    let slowest = exits
                        .iter()
                        .filter_map(|e| e.exited_after)
                        .max()
                        .unwrap_or_default();
                    Step::pass(
                        "exit on end of input",
                        None,
                        format!(
                            "each of its {} exited within {} of the end of its stdin",
                            count(exits.len(), "process"),
                            latency_us(micros(slowest))
                        ),
                    )
                } else {
                    let killed = late.iter().filter(|e| e.killed).count();
                    let killed = if killed > 0 {
                        format!(", and {killed} not even then: killed with SIGKILL")
                    } else {
                        String::new()
                    };
                    Step::fail(
                        "exit on end of input",
                        None,
                        format!(
                            "{} of its {} processes did not exit within {} of the end of its stdin (its stop_timeout), so it took SIGTERM{killed}",
                            late.len(),
                            exits.len(),
                            duration_short(grace)
                        ),
                    )
                };
                self.steps.push(step);
            }
        }
    }
}

/// What the descriptor (or config) declares, in a line.
fn describe(info: &PluginInfo) -> String {
    let levels: Vec<String> = info
        .levels
        .iter()
        .map(|l| {
            format!(
                "{} {}",
                l.name,
                bytes(l.memory_preferred_bytes.max(l.memory_min_bytes))
            )
        })
        .collect();
    let capabilities = if info.capabilities.is_empty() {
        "none".to_owned()
    } else {
        info.capabilities.join(", ")
    };
    let version = if info.version.is_empty() {
        String::new()
    } else {
        format!(" {}", info.version)
    };
    // A native plugin's ABI is a version; a process's says what it speaks.
    let abi = if info.abi.starts_with(|c: char| c.is_ascii_digit()) {
        format!("ABI {}", info.abi)
    } else {
        info.abi.clone()
    };
    format!(
        "{}{version}, {abi}; {}: {}; capabilities: {capabilities}",
        info.name,
        count(info.levels.len(), "level"),
        levels.join(", ")
    )
}

/// How much more than its declaration a plugin may hold before it is flagged.
fn slack(declared: u64) -> u64 {
    MEMORY_SLACK_MIN.max((declared as f64 * MEMORY_SLACK_FRACTION) as u64)
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// A request or answer for a message: quoted text when it reads as text, its size otherwise.
fn excerpt(data: &[u8]) -> String {
    match std::str::from_utf8(data) {
        Ok(text) if !text.chars().any(|c| c.is_control() && c != '\n') => {
            let mut shown: String = text.chars().take(60).collect();
            if text.chars().count() > 60 {
                shown.push('…');
            }
            format!("`{}`", shown.trim_end().replace('\n', "\\n"))
        }
        _ => bytes(data.len() as u64),
    }
}

/// A checkpoint for a message: its size, and its text when short.
fn blob(data: &[u8]) -> String {
    let size = bytes(data.len() as u64);
    match std::str::from_utf8(data) {
        Ok(text) if text.len() <= 60 && !text.chars().any(char::is_control) => {
            format!("{size}: `{text}`")
        }
        _ => size,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_memory_slack_is_a_mib_or_five_percent() {
        assert_eq!(slack(0), 1 << 20);
        assert_eq!(slack(8 << 20), 1 << 20);
        assert_eq!(slack(256 << 20), (256 << 20) / 20);
    }

    #[test]
    fn excerpts_quote_text_and_size_the_rest() {
        assert_eq!(excerpt(b"ping"), "`ping`");
        assert_eq!(excerpt(b"a\nb\n"), "`a\\nb`");
        assert_eq!(excerpt(&[0, 1, 2]), "3 B");
        assert_eq!(excerpt("x".repeat(70).as_bytes()).chars().count(), 63);
        assert_eq!(blob(b"7"), "1 B: `7`");
        assert_eq!(blob(&[0xff; 100]), "100 B");
    }
}
