//! The IO shell around one plugin process: spawn it in its own process group (so signals reach
//! its children too), read its stdout and stderr on threads (protocol messages, log lines),
//! write to its stdin, signal it (SIGSTOP, SIGCONT, SIGTERM then SIGKILL after a grace period)
//! and learn how it exited. Everything it observes goes to one callback as [`ChildEvent`]s.
//!
//! Every child is started by one long-lived spawner thread with `PR_SET_PDEATHSIG` set to
//! SIGKILL, so that plugin processes die with the daemon even when it is killed with SIGKILL.
//! When the main process of a plugin exits, the rest of its process group is killed, like
//! systemd's `KillMode=control-group`.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::io::{Read, Write};
use std::os::unix::process::CommandExt as _;
use std::path::PathBuf;
use std::process::{ChildStdin, Stdio};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

use ballast_core::Timestamp;
use nix::sys::signal::Signal;
use nix::unistd::Pid;

use crate::cgroup::tree::{JoinReport, join_now};
use crate::exit::Exit;
use crate::logfile::{LogFile, Stream};
use crate::protocol::{
    HostMessage, Line, LineBuffer, MAX_LINE_BYTES, PluginMessage, ProtocolError, encode_line,
    parse_plugin_message, request_id,
};

/// A clock for log lines and events.
pub type Clock = Arc<dyn Fn() -> Timestamp + Send + Sync>;

/// What to run.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Spawn {
    /// The program: a path, or a name looked up in `PATH`.
    pub program: PathBuf,
    /// Its arguments.
    pub args: Vec<OsString>,
    /// Variables added to the daemon's environment.
    pub env: Vec<(OsString, OsString)>,
    /// The directory it starts in (the daemon's when `None`).
    pub working_dir: Option<PathBuf>,
    /// The `cgroup.procs` files of the cgroups it joins between fork and exec (see
    /// [`crate::cgroup`]), so that nothing it runs is outside them. A failure to join fails the
    /// spawn with a [`CgroupJoinError`].
    pub cgroups: Vec<PathBuf>,
}

/// The process could not join its cgroup: writing its `cgroup.procs` failed. A spawn fails with
/// it inside an [`std::io::Error`] of kind `Other` (see [`CgroupJoinError::of`]).
#[derive(Debug, thiserror::Error)]
#[error("cannot join the cgroup: cannot write {}: {error}", path.display())]
pub struct CgroupJoinError {
    /// The `cgroup.procs` file.
    pub path: PathBuf,
    /// Why.
    pub error: std::io::Error,
}

impl CgroupJoinError {
    /// The join error inside a spawn's error, if that is what it is.
    pub fn of(error: &std::io::Error) -> Option<&CgroupJoinError> {
        error
            .get_ref()
            .and_then(|e| e.downcast_ref::<CgroupJoinError>())
    }
}

/// Something the child did.
#[derive(Clone, Debug, PartialEq)]
pub enum ChildEvent {
    /// A line on stdout (when it speaks no protocol) or stderr.
    Output {
        /// Which stream.
        stream: Stream,
    },
    /// A protocol message on stdout.
    Message(PluginMessage),
    /// A stdout line that is not a valid message (it still counts as output).
    BadLine {
        /// Why.
        error: ProtocolError,
        /// The line's start, for the log.
        excerpt: String,
        /// The request it answers, when its id can be read (see [`request_id`]): that request
        /// fails, and nothing else does.
        id: Option<u64>,
    },
    /// The main process exited (reported after its output was read).
    Exited(Exit),
}

/// Where a child's events go.
pub type EventSink = Arc<dyn Fn(ChildEvent) + Send + Sync>;

/// The last lines a child wrote to stderr, for error messages.
const KEPT_LINES: usize = 5;

struct ExitState {
    exit: Mutex<Option<Exit>>,
    exited: Condvar,
}

/// A running (or exited) plugin process.
pub struct Child {
    pid: u32,
    stdin: Mutex<Option<ChildStdin>>,
    state: Arc<ExitState>,
    last_lines: Arc<Mutex<VecDeque<String>>>,
    log: Option<Arc<LogFile>>,
    clock: Clock,
}

impl std::fmt::Debug for Child {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Child")
            .field("pid", &self.pid)
            .field("exit", &self.exit())
            .finish_non_exhaustive()
    }
}

type SpawnJob = Box<dyn FnOnce() + Send>;

/// The thread every child is forked from. `PR_SET_PDEATHSIG` fires when the thread that forked
/// the child exits, so it must be one that lives as long as the daemon.
fn spawner() -> &'static Mutex<std::sync::mpsc::Sender<SpawnJob>> {
    static SPAWNER: OnceLock<Mutex<std::sync::mpsc::Sender<SpawnJob>>> = OnceLock::new();
    SPAWNER.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel::<SpawnJob>();
        let started = std::thread::Builder::new()
            .name("plugin-spawner".to_owned())
            .spawn(move || {
                while let Ok(job) = rx.recv() {
                    job();
                }
            });
        if let Err(error) = started {
            tracing::error!(%error, "cannot start the plugin spawner thread");
        }
        Mutex::new(tx)
    })
}

/// Starts `spawn`. With `protocol`, stdout lines are parsed as protocol messages; without it
/// they are plain output. Lines go to `log` (when given) and events to `events`.
pub fn spawn(
    spawn: &Spawn,
    protocol: bool,
    log: Option<Arc<LogFile>>,
    clock: Clock,
    events: EventSink,
) -> std::io::Result<Child> {
    let mut command = std::process::Command::new(&spawn.program);
    command
        .args(&spawn.args)
        .envs(spawn.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    if let Some(dir) = &spawn.working_dir {
        command.current_dir(dir);
    }
    let parent = std::process::id();
    let cgroups = crate::cgroup::tree::procs_paths(&spawn.cgroups)?;
    let report = if cgroups.is_empty() {
        None
    } else {
        Some(JoinReport::new()?)
    };
    let report_fd = report.as_ref().map_or(-1, JoinReport::write_fd);
    // SAFETY: the closure runs in the child between fork and exec and calls only prctl, getppid,
    // _exit, open, write and close (on memory prepared before the fork), which are
    // async-signal-safe.
    unsafe {
        command.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The daemon died between fork and prctl: do not outlive it.
            if libc::getppid() as u32 != parent {
                libc::_exit(1);
            }
            if let Err((index, errno)) = join_now(&cgroups) {
                JoinReport::report(report_fd, index, errno);
                return Err(std::io::Error::from_raw_os_error(errno));
            }
            Ok(())
        });
    }
    let (tx, rx) = std::sync::mpsc::channel();
    let job: SpawnJob = Box::new(move || {
        let _ = tx.send(command.spawn());
    });
    spawner()
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .send(job)
        .map_err(|_| std::io::Error::other("the plugin spawner thread is not running"))?;
    let spawned = rx
        .recv()
        .map_err(|_| std::io::Error::other("the plugin spawner thread stopped"))?;
    // The spawn returned: the child has exec'd or failed, so what it recorded is there.
    if let Some((index, errno)) = report.and_then(JoinReport::take) {
        let path = spawn.cgroups.get(index).cloned().unwrap_or_default();
        if let Ok(mut child) = spawned {
            // Cannot happen (the child returns an error after recording one), but never leave
            // a process behind.
            let _ = child.kill();
            let _ = child.wait();
        }
        return Err(std::io::Error::other(CgroupJoinError {
            path,
            error: std::io::Error::from_raw_os_error(errno),
        }));
    }
    let mut child = spawned?;
    let pid = child.id();
    let stdin = child.stdin.take();
    let stdout = child.stdout.take();
    let stderr = child.stderr.take();
    let state = Arc::new(ExitState {
        exit: Mutex::new(None),
        exited: Condvar::new(),
    });
    let last_lines: Arc<Mutex<VecDeque<String>>> = Arc::default();
    let mut readers = Vec::new();
    if let Some(stdout) = stdout {
        let reader = Reader {
            stream: Stream::Stdout,
            protocol,
            log: log.clone(),
            clock: Arc::clone(&clock),
            events: Arc::clone(&events),
            last_lines: Arc::clone(&last_lines),
        };
        readers.push(thread(format!("plugin-{pid}-out"), move || {
            reader.run(stdout)
        })?);
    }
    if let Some(stderr) = stderr {
        let reader = Reader {
            stream: Stream::Stderr,
            protocol: false,
            log: log.clone(),
            clock: Arc::clone(&clock),
            events: Arc::clone(&events),
            last_lines: Arc::clone(&last_lines),
        };
        readers.push(thread(format!("plugin-{pid}-err"), move || {
            reader.run(stderr)
        })?);
    }
    {
        let state = Arc::clone(&state);
        let log = log.clone();
        let clock = Arc::clone(&clock);
        thread(format!("plugin-{pid}-wait"), move || {
            let exit = match child.wait() {
                Ok(status) => Exit::from_status(status),
                Err(_) => Exit::Status { code: -1 },
            };
            // The rest of the group goes with the main process.
            let _ = nix::sys::signal::killpg(Pid::from_raw(pid as i32), Signal::SIGKILL);
            if let Some(log) = &log {
                log.write(clock(), Stream::Host, exit.to_string().as_bytes());
            }
            *state.exit.lock().unwrap_or_else(|p| p.into_inner()) = Some(exit);
            state.exited.notify_all();
            for reader in readers {
                let _ = reader.join();
            }
            events(ChildEvent::Exited(exit));
        })?;
    }
    Ok(Child {
        pid,
        stdin: Mutex::new(stdin),
        state,
        last_lines,
        log,
        clock,
    })
}

fn thread(
    name: String,
    f: impl FnOnce() + Send + 'static,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new().name(name).spawn(f)
}

struct Reader {
    stream: Stream,
    protocol: bool,
    log: Option<Arc<LogFile>>,
    clock: Clock,
    events: EventSink,
    last_lines: Arc<Mutex<VecDeque<String>>>,
}

impl Reader {
    fn run(self, mut pipe: impl Read) {
        let mut buffer = LineBuffer::new(MAX_LINE_BYTES);
        let mut chunk = vec![0u8; 64 << 10];
        let mut lines = Vec::new();
        loop {
            match pipe.read(&mut chunk) {
                Ok(0) => break,
                Ok(n) => buffer.push(&chunk[..n], &mut lines),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) => break,
            }
            for line in lines.drain(..) {
                self.line(line);
            }
        }
        buffer.finish(&mut lines);
        for line in lines.drain(..) {
            self.line(line);
        }
    }

    fn write_log(&self, stream: Stream, text: &[u8]) {
        if let Some(log) = &self.log {
            log.write((self.clock)(), stream, text);
        }
    }

    fn line(&self, line: Line) {
        let bytes = match line {
            Line::Complete(bytes) => bytes,
            Line::TooLong { len, head } => {
                let error = ProtocolError::TooLong { len };
                let note = format!("(a line of {len} bytes was too long and was dropped)");
                self.write_log(self.stream, note.as_bytes());
                (self.events)(if self.protocol {
                    ChildEvent::BadLine {
                        error,
                        excerpt: excerpt(&head),
                        id: request_id(&head),
                    }
                } else {
                    ChildEvent::Output {
                        stream: self.stream,
                    }
                });
                return;
            }
        };
        if !self.protocol {
            if self.stream == Stream::Stderr {
                let mut kept = self.last_lines.lock().unwrap_or_else(|p| p.into_inner());
                if kept.len() == KEPT_LINES {
                    kept.pop_front();
                }
                kept.push_back(excerpt(&bytes));
            }
            self.write_log(self.stream, &bytes);
            (self.events)(ChildEvent::Output {
                stream: self.stream,
            });
            return;
        }
        match parse_plugin_message(&bytes) {
            Ok(message) => {
                if let PluginMessage::Log { level, message } = &message {
                    let text = format!("[{}] {message}", level.as_deref().unwrap_or("info"));
                    self.write_log(Stream::Log, text.as_bytes());
                }
                (self.events)(ChildEvent::Message(message));
            }
            Err(error) => {
                self.write_log(self.stream, &bytes);
                (self.events)(ChildEvent::BadLine {
                    error,
                    excerpt: excerpt(&bytes),
                    id: request_id(&bytes),
                });
            }
        }
    }
}

/// The first 200 characters of a line, for messages.
fn excerpt(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let mut out: String = text.chars().take(200).collect();
    if text.chars().count() > 200 {
        out.push('…');
    }
    out
}

impl Child {
    /// The main process's id (also its process group's).
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// How it exited, once it has.
    pub fn exit(&self) -> Option<Exit> {
        *self.state.exit.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The last lines it wrote to stderr, oldest first.
    pub fn last_lines(&self) -> Vec<String> {
        self.last_lines
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .cloned()
            .collect()
    }

    /// Writes a message to its stdin.
    pub fn send(&self, message: &HostMessage) -> std::io::Result<()> {
        let line = encode_line(message);
        let mut stdin = self.stdin.lock().unwrap_or_else(|p| p.into_inner());
        match stdin.as_mut() {
            Some(pipe) => pipe.write_all(&line).and_then(|()| pipe.flush()),
            None => Err(std::io::Error::new(
                std::io::ErrorKind::BrokenPipe,
                "its stdin is closed",
            )),
        }
    }

    /// Writes one line of text (a newline is added) to its stdin, as it is: for a message the
    /// host's protocol has no type for, such as the conformance check's unknown message.
    pub fn send_line(&self, line: &str) -> std::io::Result<()> {
        let mut stdin = self.stdin.lock().unwrap_or_else(|p| p.into_inner());
        match stdin.as_mut() {
            Some(pipe) => pipe
                .write_all(line.as_bytes())
                .and_then(|()| pipe.write_all(b"\n"))
                .and_then(|()| pipe.flush()),
            None => Err(std::io::Error::new(
                std::io::ErrorKind::BrokenPipe,
                "its stdin is closed",
            )),
        }
    }

    /// Closes its stdin: a protocol plugin takes end-of-file as the request to exit.
    pub fn close_stdin(&self) {
        self.stdin.lock().unwrap_or_else(|p| p.into_inner()).take();
    }

    /// Sends `signal` to its whole process group (nothing once it has exited).
    pub fn signal(&self, signal: Signal) -> std::io::Result<()> {
        if self.exit().is_some() {
            return Ok(());
        }
        match nix::sys::signal::killpg(Pid::from_raw(self.pid as i32), signal) {
            Ok(()) | Err(nix::errno::Errno::ESRCH) => Ok(()),
            Err(e) => Err(std::io::Error::from(e)),
        }
    }

    /// Waits at most `timeout` for it to exit.
    pub fn wait_timeout(&self, timeout: Duration) -> Option<Exit> {
        let deadline = Instant::now() + timeout;
        let mut exit = self.state.exit.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if let Some(e) = *exit {
                return Some(e);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            exit = self
                .state
                .exited
                .wait_timeout(exit, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    /// Stops it: closes stdin, sends SIGTERM to its group (and SIGCONT, in case it is stopped),
    /// waits up to `grace`, then SIGKILL. Returns how it exited and whether it had to be killed.
    pub fn stop(&self, grace: Duration) -> (Option<Exit>, bool) {
        self.close_stdin();
        if let Some(exit) = self.exit() {
            return (Some(exit), false);
        }
        if let Some(log) = &self.log {
            log.write((self.clock)(), Stream::Host, b"stopping: SIGTERM");
        }
        let _ = self.signal(Signal::SIGTERM);
        let _ = self.signal(Signal::SIGCONT);
        if let Some(exit) = self.wait_timeout(grace) {
            return (Some(exit), false);
        }
        if let Some(log) = &self.log {
            let note = format!(
                "still running {} after SIGTERM: SIGKILL",
                humantime::format_duration(grace)
            );
            log.write((self.clock)(), Stream::Host, note.as_bytes());
        }
        let _ = self.signal(Signal::SIGKILL);
        (self.wait_timeout(Duration::from_secs(10)), true)
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        self.close_stdin();
        if self.exit().is_none() {
            let _ = self.signal(Signal::SIGKILL);
        }
    }
}
