//! `ballast worker`: runs one native plugin in a process of its own and speaks the control
//! protocol to the daemon on stdin/stdout, so that a segfault or an abort in the plugin kills
//! only this process. The daemon starts it for a plugin configured with
//! `isolation = "process"`; nobody runs it by hand.
//!
//! The worker loads the library exactly as the daemon would ([`PluginLibrary::load`]), waits for
//! `init`, creates and starts the instance, and only then says `hello` (with the library's
//! descriptor), so a failing create is a failed start. Calls run on a pool of threads and
//! lifecycle requests, in order, on a thread of their own, so the reading thread is always free
//! to read a `cancel`. Every call runs through the instance's streamed call: its chunks go out as
//! `chunk` lines as the plugin produces them, its deadline comes from the call's `deadline_ms`,
//! and `cancel` cancels it. A heartbeat thread sends heartbeats, the SDK allocator's figures and
//! health changes. End of stdin stops and destroys the instance.
//!
//! With `--describe` it only loads the library and says `hello` with its descriptor: that is how
//! the daemon learns an isolated plugin's levels without loading the library itself.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ballast_process::protocol::{Described, DescribedLevel};
use ballast_process::{
    HealthStatus, HostMessage, Line, LineBuffer, PROTOCOL_VERSION, PluginMessage,
    parse_host_message,
};

use crate::host_api::{Clock, StateReport, leak_host_api, system_clock};
use crate::instance::Instance;
use crate::library::PluginLibrary;
use crate::stream::{CallIo, CancelReason, CancelToken};

/// What `ballast worker` is asked to run.
#[derive(Clone, Debug)]
pub struct WorkerOptions {
    /// The plugin library.
    pub plugin: PathBuf,
    /// The sha256 the library must have.
    pub sha256: Option<String>,
    /// Calls that may run at once.
    pub threads: usize,
    /// How often to send a heartbeat (and the allocator's figures).
    pub heartbeat: Duration,
    /// Only describe the library and exit.
    pub describe: bool,
}

type Output = Arc<Mutex<Box<dyn Write + Send>>>;

/// The cancellation of every call the worker has taken and not yet answered, by id.
type Running = Arc<Mutex<HashMap<u64, CancelToken>>>;

/// A call waiting for a thread of the pool.
struct QueuedCall {
    id: u64,
    data: Vec<u8>,
    deadline_ms: Option<u64>,
    cancel: CancelToken,
}

fn send(output: &Output, message: &PluginMessage) -> bool {
    let line = ballast_process::encode_line(message);
    let mut out = output.lock().unwrap_or_else(|p| p.into_inner());
    out.write_all(&line).and_then(|()| out.flush()).is_ok()
}

fn describe(library: &PluginLibrary) -> Described {
    let info = library.info();
    Described {
        sdk_version: info.sdk_version.clone(),
        abi: info.abi.clone(),
        sha256: info.sha256.clone(),
        size_bytes: info.size_bytes,
        capabilities: info.capabilities.iter().map(|c| (*c).to_owned()).collect(),
        cpu_share: info.cpu_share,
        needs_gpu: info.needs_gpu,
        levels: info
            .levels
            .iter()
            .map(|l| DescribedLevel {
                name: l.name.clone(),
                memory_min_bytes: l.memory_min_bytes,
                memory_preferred_bytes: l.memory_preferred_bytes,
                gpu_memory_bytes: l.gpu_memory_bytes,
            })
            .collect(),
    }
}

fn hello(library: &PluginLibrary) -> PluginMessage {
    PluginMessage::Hello {
        name: library.info().name.clone(),
        version: Some(library.info().version.clone()),
        protocol: PROTOCOL_VERSION,
        describe: Some(Box::new(describe(library))),
    }
}

/// Runs the worker on `input` and `output` until `input` ends. An error (the library cannot be
/// loaded, its create fails) is returned for the caller to print and exit non-zero.
pub fn run(
    options: &WorkerOptions,
    input: impl Read,
    output: impl Write + Send + 'static,
) -> Result<(), String> {
    let library = Arc::new(
        PluginLibrary::load(&options.plugin, options.sha256.as_deref())
            .map_err(|e| e.to_string())?,
    );
    let output: Output = Arc::new(Mutex::new(Box::new(output)));
    if options.describe {
        send(&output, &hello(&library));
        return Ok(());
    }
    let mut lines = Lines::new(input);
    // Wait for init; nothing else can be answered before it.
    let (level, config, checkpoint) = loop {
        match lines.next() {
            None => return Ok(()),
            Some(HostMessage::Init {
                level,
                config,
                checkpoint,
                ..
            }) => break (level, config, checkpoint.unwrap_or_default()),
            // Nothing answers a cancel, and no call can be running yet.
            Some(HostMessage::Cancel { .. }) => {}
            Some(other) => reply_error(&output, &other, "the worker has not been initialized"),
        }
    };
    let reports_output = Arc::clone(&output);
    let reports: Arc<dyn Fn(StateReport) + Send + Sync> = Arc::new(move |r: StateReport| {
        send(
            &reports_output,
            &PluginMessage::Health {
                status: if r.healthy {
                    HealthStatus::Ok
                } else {
                    HealthStatus::Unhealthy
                },
                message: Some(r.message),
            },
        );
    });
    let (host_api, _context) = leak_host_api(&library.info().name, system_clock(), reports);
    let config_json = serde_json::to_vec(&config).unwrap_or_else(|_| b"{}".to_vec());
    let wait = Duration::from_secs(30);
    let instance = Instance::create(
        Arc::clone(&library),
        host_api.0,
        &config_json,
        &checkpoint,
        None,
    )
    .map_err(|f| format!("create failed: {f}"))?;
    instance
        .start(wait)
        .map_err(|f| format!("start failed: {f}"))?;
    if level != 0 {
        instance
            .set_level(level, wait)
            .map_err(|f| format!("set_level failed: {f}"))?;
    }
    let instance = Arc::new(instance);
    send(&output, &hello(&library));

    let running: Running = Arc::default();
    let clock = system_clock();
    let (calls, call_queue) = crossbeam_channel::unbounded::<QueuedCall>();
    for i in 0..options.threads.max(1) {
        let queue = call_queue.clone();
        let instance = Arc::clone(&instance);
        let output = Arc::clone(&output);
        let running = Arc::clone(&running);
        let clock = Arc::clone(&clock);
        let spawned = std::thread::Builder::new()
            .name(format!("worker-call-{i}"))
            .spawn(move || {
                while let Ok(call) = queue.recv() {
                    let id = call.id;
                    let answer = run_call(&instance, &output, &clock, call);
                    running
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .remove(&id);
                    send(&output, &answer);
                }
            });
        if let Err(error) = spawned {
            return Err(format!("cannot start a call thread: {error}"));
        }
    }
    {
        let instance = Arc::clone(&instance);
        let output = Arc::clone(&output);
        let period = options.heartbeat;
        let spawned = std::thread::Builder::new()
            .name("worker-heartbeat".to_owned())
            .spawn(move || heartbeat(&instance, &output, period));
        if let Err(error) = spawned {
            return Err(format!("cannot start the heartbeat thread: {error}"));
        }
    }
    let (lifecycle, lifecycle_queue) = crossbeam_channel::unbounded::<HostMessage>();
    let lifecycle_thread = {
        let instance = Arc::clone(&instance);
        let output = Arc::clone(&output);
        std::thread::Builder::new()
            .name("worker-lifecycle".to_owned())
            .spawn(move || {
                while let Ok(message) = lifecycle_queue.recv() {
                    if let Some(answer) = lifecycle_request(&instance, message, wait) {
                        send(&output, &answer);
                    }
                }
            })
            .map_err(|error| format!("cannot start the lifecycle thread: {error}"))?
    };
    while let Some(message) = lines.next() {
        match message {
            HostMessage::Call {
                id,
                data,
                deadline_ms,
            } => {
                let cancel = CancelToken::new();
                running
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(id, cancel.clone());
                let _ = calls.send(QueuedCall {
                    id,
                    data,
                    deadline_ms,
                    cancel,
                });
            }
            HostMessage::Cancel { id } => {
                // A call already answered (or never sent) has nothing to cancel.
                let token = running
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .get(&id)
                    .cloned();
                if let Some(token) = token {
                    token.cancel(CancelReason::Caller);
                }
            }
            HostMessage::Init { .. } => {
                send(
                    &output,
                    &PluginMessage::Error {
                        id: None,
                        message: "init was sent twice; the second is ignored".to_owned(),
                    },
                );
            }
            other => {
                let _ = lifecycle.send(other);
            }
        }
    }
    // The lifecycle requests already read are answered before the instance stops.
    drop(lifecycle);
    let _ = lifecycle_thread.join();
    drop(calls);
    if let Err(fault) = instance.stop(wait) {
        tracing::warn!(%fault, "plugin stop failed");
    }
    Ok(())
}

/// Runs one call through the instance's streamed call and returns its last message: the
/// `response` (with the data the plugin returned last), or an `error`. Its chunks go out as
/// `chunk` lines as they come; a call cancelled before it starts does not start.
fn run_call(
    instance: &Instance,
    output: &Output,
    clock: &Clock,
    call: QueuedCall,
) -> PluginMessage {
    let QueuedCall {
        id,
        data,
        deadline_ms,
        cancel,
    } = call;
    let deadline = deadline_ms.map(|ms| {
        let left = Duration::from_millis(ms);
        (Instant::now() + left, clock().saturating_add(left))
    });
    let chunks = Arc::clone(output);
    let sink =
        Box::new(move |chunk: Vec<u8>| send(&chunks, &PluginMessage::Chunk { id, data: chunk }));
    let mut io = CallIo::new(Some(sink), cancel, deadline);
    // The host no longer waits for a cancelled call: its error only ends it in the log.
    let cancelled = |reason: CancelReason| PluginMessage::Error {
        id: Some(id),
        message: format!("the call was cancelled ({})", reason.as_str()),
    };
    if let Some(reason) = io.cancel_reason() {
        return cancelled(reason);
    }
    let result = instance.call_stream(&data, &mut io);
    if let Some(reason) = io.cancel_reason() {
        return cancelled(reason);
    }
    match result {
        Ok(last) => PluginMessage::Response {
            id,
            data: (!last.is_empty()).then_some(last),
        },
        Err(fault) => PluginMessage::Error {
            id: Some(id),
            message: fault.to_string(),
        },
    }
}

/// Runs a lifecycle request; its answer, if it has one.
fn lifecycle_request(
    instance: &Instance,
    message: HostMessage,
    wait: Duration,
) -> Option<PluginMessage> {
    Some(match message {
        HostMessage::SetLevel { id, level } => {
            result(id, instance.set_level(level, wait).map(|()| None))
        }
        HostMessage::Drain { id, deadline_ms } => result(
            id,
            instance
                .drain(Duration::from_millis(deadline_ms))
                .map(|()| None),
        ),
        HostMessage::Checkpoint { id } => result(id, instance.checkpoint(wait)),
        HostMessage::Init { .. } | HostMessage::Call { .. } | HostMessage::Cancel { .. } => {
            return None;
        }
    })
}

fn result(id: u64, result: Result<Option<Vec<u8>>, crate::instance::PluginFault>) -> PluginMessage {
    match result {
        Ok(data) => PluginMessage::Response { id, data },
        Err(fault) => PluginMessage::Error {
            id: Some(id),
            message: fault.to_string(),
        },
    }
}

fn reply_error(output: &Output, message: &HostMessage, text: &str) {
    let id = match message {
        HostMessage::Call { id, .. }
        | HostMessage::SetLevel { id, .. }
        | HostMessage::Drain { id, .. }
        | HostMessage::Checkpoint { id } => Some(*id),
        HostMessage::Init { .. } | HostMessage::Cancel { .. } => None,
    };
    send(
        output,
        &PluginMessage::Error {
            id,
            message: text.to_owned(),
        },
    );
}

/// Heartbeats, the allocator's figures, and the health when it changes.
fn heartbeat(instance: &Instance, output: &Output, period: Duration) {
    let mut last_health: Option<(HealthStatus, String)> = None;
    loop {
        if !send(output, &PluginMessage::Heartbeat) {
            return;
        }
        if let Some(stats) = instance.stats() {
            send(
                output,
                &PluginMessage::Stats {
                    live_bytes: stats.live_bytes,
                    peak_bytes: stats.peak_bytes,
                    allocations: stats.allocations,
                },
            );
        }
        let health = match instance.health() {
            Ok(_) => (HealthStatus::Ok, String::new()),
            Err(fault) if fault.status == ballast_abi::BALLAST_STATUS_DEGRADED => {
                (HealthStatus::Degraded, fault.message)
            }
            Err(fault) => (HealthStatus::Unhealthy, fault.to_string()),
        };
        if last_health.as_ref() != Some(&health) {
            send(
                output,
                &PluginMessage::Health {
                    status: health.0,
                    message: Some(health.1.clone()),
                },
            );
            last_health = Some(health);
        }
        std::thread::sleep(period);
    }
}

/// Host messages read from a byte stream; bad lines are reported on stderr and skipped.
struct Lines<R> {
    input: R,
    buffer: LineBuffer,
    ready: std::collections::VecDeque<Line>,
    done: bool,
}

impl<R: Read> Lines<R> {
    fn new(input: R) -> Self {
        Lines {
            input,
            buffer: LineBuffer::new(ballast_process::protocol::MAX_LINE_BYTES),
            ready: std::collections::VecDeque::new(),
            done: false,
        }
    }

    fn next(&mut self) -> Option<HostMessage> {
        let mut chunk = [0u8; 64 << 10];
        loop {
            while let Some(line) = self.ready.pop_front() {
                match line {
                    Line::Complete(bytes) => match parse_host_message(&bytes) {
                        Ok(message) => return Some(message),
                        Err(error) => tracing::warn!(%error, "ignoring a bad line from the host"),
                    },
                    Line::TooLong { len, .. } => {
                        tracing::warn!(len, "ignoring an over-long line from the host")
                    }
                }
            }
            if self.done {
                return None;
            }
            let mut out = Vec::new();
            match self.input.read(&mut chunk) {
                Ok(0) | Err(_) => {
                    self.done = true;
                    self.buffer.finish(&mut out);
                }
                Ok(n) => self.buffer.push(&chunk[..n], &mut out),
            }
            self.ready.extend(out);
        }
    }
}
