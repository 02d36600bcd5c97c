//! Process plugins under the host with real child processes: crash, restart with back-off and
//! failure at the start limit; a stall and its end; SIGSTOP/SIGCONT seen in /proc/PID/stat; a
//! hard memory limit that sheds; the Python example speaking the whole protocol, streaming its
//! results and stopping a cancelled or late search; a plugin without the protocol restarted for
//! a level change; and, where this machine lets the tests write cgroups, each process in a cgroup
//! of its own: killed by the kernel at its limit and shed with that reason, its throttling point
//! moved by a level change, its cgroup removed when it stops (elsewhere those tests print
//! `SKIPPED: ...`). Every wait is bounded, and dropping the host kills every child it started,
//! also when a test fails.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use ballast_core::Level;
use ballast_core::plugin::{PluginAlert, PluginEvent, PluginEventKind, PluginState};
use ballast_host::{
    CallError, Cgroups, LevelConfig, PluginConfig, PluginHost, ProcessOptions, Protocol,
    system_clock,
};
use ballast_process::cgroup::{CgroupRoots, CgroupTree};
use ballast_process::{ProcReader, RestartPolicy, Rotation};

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

#[derive(Default)]
struct Recorder {
    events: Mutex<Vec<PluginEvent>>,
    changed: Condvar,
}

impl Recorder {
    /// Waits (at most 30 s) until `test` holds for the events so far.
    fn wait_for(&self, what: &str, test: impl Fn(&[PluginEvent]) -> bool) -> Vec<PluginEvent> {
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut events = self.events.lock().unwrap();
        while !test(&events) {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "timed out waiting for {what}; events: {events:#?}"
            );
            events = self.changed.wait_timeout(events, left).unwrap().0;
        }
        events.clone()
    }
}

fn states(events: &[PluginEvent]) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| match &e.kind {
            PluginEventKind::StateChanged { to, .. } => Some(to.name().to_owned()),
            _ => None,
        })
        .collect()
}

fn alerts(events: &[PluginEvent]) -> Vec<PluginAlert> {
    events
        .iter()
        .filter_map(|e| match &e.kind {
            PluginEventKind::Alert { alert, .. } => Some(*alert),
            _ => None,
        })
        .collect()
}

struct Fixture {
    host: PluginHost,
    recorder: Arc<Recorder>,
    dir: tempfile::TempDir,
}

fn fixture() -> Fixture {
    fixture_with(Cgroups::Off)
}

fn fixture_with(cgroups: Cgroups) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let recorder = Arc::new(Recorder::default());
    let sink = Arc::clone(&recorder);
    let host = PluginHost::with_options(
        system_clock(),
        Arc::new(move |e| {
            sink.events.lock().unwrap().push(e);
            sink.changed.notify_all();
        }),
        ProcessOptions {
            log_dir: Some(dir.path().join("logs")),
            log_rotation: Rotation::default(),
            sample_interval: Duration::from_millis(50),
            cgroups,
            ..ProcessOptions::default()
        },
    );
    Fixture {
        host,
        recorder,
        dir,
    }
}

fn shell(name: &str, script: &str) -> PluginConfig {
    let mut c = PluginConfig::process(name, "sh");
    c.args = vec!["-c".into(), script.into()];
    c.stop_timeout = Duration::from_secs(5);
    c
}

fn process_state(pid: u32) -> Option<char> {
    ProcReader::default().stat(pid).ok().map(|s| s.state)
}

fn wait_process(pid: u32, what: &str, wanted: impl Fn(Option<char>) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !wanted(process_state(pid)) {
        assert!(
            Instant::now() < deadline,
            "process {pid} never became {what}: {:?}",
            process_state(pid)
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn pid_of(host: &PluginHost, name: &str) -> u32 {
    host.status(name)
        .unwrap()
        .process
        .and_then(|p| p.pid)
        .expect("a running process")
}

#[test]
fn a_crashing_process_is_restarted_with_back_off_then_failed_at_the_start_limit() {
    let f = fixture();
    let mut config = shell("crasher", "echo starting; exit 3");
    config.restart = RestartPolicy {
        backoff: Duration::from_millis(20),
        backoff_max: Duration::from_millis(80),
        burst: 3,
        window: Duration::from_secs(600),
        ..RestartPolicy::default()
    };
    f.host.load(config).unwrap();
    f.host.enable("crasher", Level::FULL, "test").unwrap();
    let events = f.recorder.wait_for("the plugin to fail", |e| {
        states(e).last().is_some_and(|s| s == "failed")
    });
    assert_eq!(
        states(&events),
        [
            "enabled",
            "restarting",
            "enabled",
            "restarting",
            "enabled",
            "failed"
        ]
    );
    let reasons: Vec<String> = events
        .iter()
        .filter_map(|e| match &e.kind {
            PluginEventKind::StateChanged { reason, .. } => Some(reason.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(
        reasons[1],
        "its process exited with status 3; restart 1 in 20ms"
    );
    assert_eq!(
        reasons[2],
        "restarted; its last process: exited with status 3"
    );
    assert_eq!(
        reasons[3],
        "its process exited with status 3; restart 2 in 40ms"
    );
    let status = f.host.status("crasher").unwrap();
    match &status.state {
        PluginState::Failed { reason } => assert!(
            reason.starts_with("its process exited with status 3; 3 exits within 10m reached its start limit (3 per 10m)"),
            "{reason}"
        ),
        other => panic!("expected failed, got {other:?}"),
    }
    let process = status.process.unwrap();
    assert_eq!(process.restarts, 2);
    assert_eq!(process.last_exit.as_deref(), Some("exited with status 3"));
    // Calls get the degraded answer, with the reason.
    match f.host.call("crasher", b"x") {
        Err(CallError::Degraded { state, reason, .. }) => {
            assert_eq!(state, "failed");
            assert!(reason.contains("start limit"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    // The log has each start and exit.
    let log = std::fs::read_to_string(f.dir.path().join("logs/crasher.log")).unwrap();
    assert_eq!(log.matches(" stdout starting\n").count(), 3, "{log}");
    assert_eq!(
        log.matches(" host exited with status 3\n").count(),
        3,
        "{log}"
    );
}

#[test]
fn a_silent_process_raises_stalled_and_active_when_it_speaks_again() {
    let f = fixture();
    let go = f.dir.path().join("go");
    let script = format!(
        "echo hello; while [ ! -e '{}' ]; do sleep 0.02; done; echo again; exec sleep 60",
        go.display()
    );
    let mut config = shell("quiet", &script);
    config.stall_threshold = Some(Duration::from_millis(300));
    f.host.load(config).unwrap();
    f.host.enable("quiet", Level::FULL, "test").unwrap();
    let events = f
        .recorder
        .wait_for("a stall", |e| alerts(e).contains(&PluginAlert::Stalled));
    let message = events
        .iter()
        .find_map(|e| match &e.kind {
            PluginEventKind::Alert {
                alert: PluginAlert::Stalled,
                message,
            } => Some(message.clone()),
            _ => None,
        })
        .unwrap();
    assert!(
        message.starts_with("no output and no heartbeat for"),
        "{message}"
    );
    let conditions = f.host.status("quiet").unwrap().process.unwrap().conditions;
    assert_eq!(conditions, [PluginAlert::Stalled]);
    std::fs::write(&go, "").unwrap();
    f.recorder.wait_for("activity again", |e| {
        alerts(e).contains(&PluginAlert::Active)
    });
    // Still enabled: a stall is reported, not acted on, unless `stall_restart` is set.
    assert_eq!(
        f.host.status("quiet").unwrap().state,
        PluginState::Enabled { level: Level::FULL }
    );
}

#[test]
fn suspend_stops_the_process_and_resume_continues_it() {
    let f = fixture();
    // One process: a shell stopped while it forks can show `D` (waiting for its stopped vfork
    // child) rather than `T`, though the whole group is stopped.
    let mut config = shell("pausable", "exec sleep 60");
    config.can_suspend = true;
    f.host.load(config).unwrap();
    assert!(f.host.spec("pausable").unwrap().can_suspend);
    f.host.enable("pausable", Level::FULL, "test").unwrap();
    let pid = pid_of(&f.host, "pausable");
    f.host.suspend("pausable", "cpu pressure").unwrap();
    wait_process(pid, "stopped (T)", |s| s == Some('T'));
    let status = f.host.status("pausable").unwrap();
    assert_eq!(status.state, PluginState::Suspended);
    assert!(status.process.unwrap().stopped);
    f.host.resume("pausable", "calm").unwrap();
    wait_process(pid, "running again", |s| s.is_some_and(|s| s != 'T'));
    assert_eq!(
        pid_of(&f.host, "pausable"),
        pid,
        "the same process continues"
    );
    // Disabling a suspended process continues it so that it can stop.
    f.host.suspend("pausable", "again").unwrap();
    f.host.disable("pausable", "shed").unwrap();
    wait_process(pid, "gone", |s| s.is_none() || s == Some('Z'));
}

#[test]
fn a_process_over_its_hard_memory_limit_is_shed() {
    let f = fixture();
    // Touches 48 MiB (over the soft limit), holds it for a few measurements, then 96 MiB (over
    // the hard limit), then waits: both limits are seen crossed, in order.
    let mut config = PluginConfig::process("hog", "python3");
    config.args = vec![
        "-c".into(),
        "import time\nx = b'a' * (48 << 20)\ntime.sleep(3)\ny = b'a' * (48 << 20)\nprint('allocated', flush=True)\ntime.sleep(60)".into(),
    ];
    config.memory_soft_limit_mb = Some(32);
    config.memory_hard_limit_mb = Some(64);
    f.host.load(config).unwrap();
    f.host.enable("hog", Level::FULL, "test").unwrap();
    let pid = pid_of(&f.host, "hog");
    let events = f.recorder.wait_for("the shed", |e| {
        states(e).last().is_some_and(|s| s == "disabled")
    });
    let raised = alerts(&events);
    assert!(raised.contains(&PluginAlert::MemorySoftLimit), "{raised:?}");
    assert!(raised.contains(&PluginAlert::MemoryHardLimit), "{raised:?}");
    let status = f.host.status("hog").unwrap();
    assert!(
        status
            .reason
            .contains("reached its hard limit 64.0 MiB: shed by the host"),
        "{}",
        status.reason
    );
    wait_process(pid, "gone", |s| s.is_none() || s == Some('Z'));
    // Its process is gone, and so are the conditions it was in.
    let conditions = f
        .host
        .status("hog")
        .unwrap()
        .process
        .map(|p| p.conditions)
        .unwrap_or_default();
    assert!(conditions.is_empty(), "{conditions:?}");
}

fn indexer(notes: &Path) -> PluginConfig {
    let mut c = PluginConfig::process(
        "indexer",
        workspace_root().join("plugins/python/indexer/indexer.py"),
    );
    c.protocol = Protocol::JsonLines;
    c.levels = vec![
        LevelConfig {
            name: "full".into(),
            memory_mb: 32,
            gpu_memory_mb: 0,
        },
        LevelConfig {
            name: "keywords".into(),
            memory_mb: 16,
            gpu_memory_mb: 0,
        },
    ];
    c.config = serde_json::json!({ "notes_dir": notes, "heartbeat_s": 0.2 });
    c
}

/// The indexer's answer to `text`: its summary (the last JSON line) with the results before it
/// (one line each) as `results`.
fn query(host: &PluginHost, text: &str) -> serde_json::Value {
    let answer = host.call("indexer", text.as_bytes()).unwrap();
    let mut lines: Vec<serde_json::Value> = answer
        .split(|b| *b == b'\n')
        .filter(|line| !line.is_empty())
        .map(|line| serde_json::from_slice(line).unwrap())
        .collect();
    let mut summary = lines.pop().expect("a summary line");
    assert_eq!(summary["found"], lines.len(), "{summary}");
    summary["results"] = serde_json::Value::Array(lines);
    summary
}

#[test]
fn the_python_example_speaks_the_whole_protocol() {
    let f = fixture();
    let notes = f.dir.path().join("notes");
    std::fs::create_dir_all(&notes).unwrap();
    std::fs::write(
        notes.join("garden.md"),
        "Tomatoes need water\nwater the tomatoes daily",
    )
    .unwrap();
    std::fs::write(notes.join("car.txt"), "Service the car in May").unwrap();
    let info = f.host.load(indexer(&notes)).unwrap();
    assert_eq!(info.levels.len(), 2);
    f.host.enable("indexer", Level::FULL, "test").unwrap();
    let status = f.host.status("indexer").unwrap();
    assert_eq!(status.info.version, "1.1.0", "from its hello");
    // Indexing runs in the background and reports progress; wait for the gauge it sets after.
    let deadline = Instant::now() + Duration::from_secs(30);
    while f.host.status("indexer").unwrap().gauges.get("documents") != Some(&2.0) {
        assert!(Instant::now() < deadline, "the index was never built");
        std::thread::sleep(Duration::from_millis(10));
    }
    let answer = query(&f.host, "water tomatoes");
    assert_eq!(answer["level"], 0);
    assert_eq!(
        answer["results"][0]["file"],
        notes.join("garden.md").display().to_string()
    );
    assert_eq!(answer["results"][0]["line"], "Tomatoes need water");
    assert_eq!(answer["queries"], 1);
    assert_eq!(answer["stopped"], serde_json::Value::Null);
    // A bad request is the plugin's error, not a crash.
    match f.host.call("indexer", b"") {
        Err(CallError::Failed { message, .. }) => {
            assert!(message.contains("empty query"), "{message}")
        }
        other => panic!("{other:?}"),
    }
    // Level changes in place: the same process.
    let pid = pid_of(&f.host, "indexer");
    f.host.set_level("indexer", Level(1), "memory").unwrap();
    assert_eq!(query(&f.host, "car")["level"], 1);
    assert_eq!(pid_of(&f.host, "indexer"), pid);
    // Heartbeats keep it from stalling; the process is measured.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !f
        .host
        .refresh_stats("indexer")
        .is_ok_and(|s| s.process.is_some_and(|p| p.rss_bytes > 0 && p.threads >= 2))
    {
        assert!(Instant::now() < deadline, "the process was never measured");
        std::thread::sleep(Duration::from_millis(10));
    }
    // Disable drains and checkpoints; enabling again starts a new process that continues.
    f.host.disable("indexer", "shed").unwrap();
    assert!(f.host.checkpoint("indexer").unwrap().is_some());
    f.host.enable("indexer", Level::FULL, "restore").unwrap();
    assert_ne!(pid_of(&f.host, "indexer"), pid);
    assert_eq!(
        query(&f.host, "car")["queries"],
        3,
        "the counter carried over"
    );
    let log = std::fs::read_to_string(f.dir.path().join("logs/indexer.log")).unwrap();
    assert!(
        log.contains(" log [info] indexed 2 files at level 0"),
        "{log}"
    );
    assert!(
        log.contains(" log [info] continuing from a checkpoint: 2 queries"),
        "{log}"
    );
    assert!(
        !alerts(&f.recorder.events.lock().unwrap()).contains(&PluginAlert::Stalled),
        "heartbeats every 0.2s never stall at the 30s default"
    );
}

/// The indexer run on pipes, without a host: the test writes its stdin and reads its stdout.
struct RawIndexer {
    child: std::process::Child,
    stdin: std::process::ChildStdin,
    lines: std::sync::mpsc::Receiver<serde_json::Value>,
}

impl RawIndexer {
    fn start(notes: &Path) -> RawIndexer {
        use std::io::BufRead;
        let mut child =
            std::process::Command::new(workspace_root().join("plugins/python/indexer/indexer.py"))
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .spawn()
                .unwrap();
        let stdin = child.stdin.take().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                if tx.send(serde_json::from_str(&line).unwrap()).is_err() {
                    return;
                }
            }
        });
        let mut indexer = RawIndexer {
            child,
            stdin,
            lines,
        };
        indexer.send(serde_json::json!({
            "type": "init", "name": "indexer", "level": 0,
            "config": { "notes_dir": notes, "heartbeat_s": 3600 },
        }));
        indexer.until(|m| m["type"] == "gauge" && m["name"] == "documents");
        indexer
    }

    fn send(&mut self, message: serde_json::Value) {
        use std::io::Write;
        writeln!(self.stdin, "{message}").unwrap();
    }

    fn call(&mut self, id: u64, query: &str, deadline_ms: Option<u64>) {
        use base64::Engine as _;
        let data = base64::engine::general_purpose::STANDARD.encode(query);
        let mut call = serde_json::json!({ "type": "call", "id": id, "data": data });
        if let Some(ms) = deadline_ms {
            call["deadline_ms"] = ms.into();
        }
        self.send(call);
    }

    /// Every message up to and including the first for which `last` holds (at most 30 s away).
    fn until(&self, last: impl Fn(&serde_json::Value) -> bool) -> Vec<serde_json::Value> {
        let mut seen = Vec::new();
        loop {
            let message = self
                .lines
                .recv_timeout(Duration::from_secs(30))
                .unwrap_or_else(|_| panic!("no more messages after {seen:#?}"));
            let done = last(&message);
            seen.push(message);
            if done {
                return seen;
            }
        }
    }
}

impl Drop for RawIndexer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The decoded data of the messages of request `id` of type `kind`.
fn data_of(messages: &[serde_json::Value], id: u64, kind: &str) -> Vec<String> {
    use base64::Engine as _;
    messages
        .iter()
        .filter(|m| m["id"] == id && m["type"] == kind)
        .map(|m| {
            let data = m["data"].as_str().unwrap_or_default();
            String::from_utf8(
                base64::engine::general_purpose::STANDARD
                    .decode(data)
                    .unwrap(),
            )
            .unwrap()
        })
        .collect()
}

#[test]
fn the_python_example_streams_its_results_and_stops_a_cancelled_or_late_search() {
    let dir = tempfile::tempdir().unwrap();
    let notes = dir.path().join("notes");
    std::fs::create_dir_all(&notes).unwrap();
    for (name, text) in [
        ("a.md", "water water water"),
        ("b.md", "water water"),
        ("c.md", "water"),
        ("d.md", "some water"),
    ] {
        std::fs::write(notes.join(name), text).unwrap();
    }
    let mut indexer = RawIndexer::start(&notes);

    // One chunk per result, best first, then the summary.
    indexer.call(1, "water", Some(30_000));
    let messages = indexer.until(|m| m["id"] == 1 && m["type"] == "response");
    let files: Vec<String> = data_of(&messages, 1, "chunk")
        .iter()
        .map(|line| {
            let result: serde_json::Value = serde_json::from_str(line).unwrap();
            let file = result["file"].as_str().unwrap();
            file.rsplit('/').next().unwrap().to_owned()
        })
        .collect();
    assert_eq!(files, ["a.md", "b.md", "c.md", "d.md"]);
    let summary: serde_json::Value =
        serde_json::from_str(&data_of(&messages, 1, "response")[0]).unwrap();
    assert_eq!(summary["found"], 4);
    assert_eq!(summary["stopped"], serde_json::Value::Null);

    // A deadline already passed: nothing is searched.
    indexer.call(2, "water", Some(0));
    let messages = indexer.until(|m| m["id"] == 2 && m["type"] == "response");
    assert!(data_of(&messages, 2, "chunk").is_empty());
    let summary: serde_json::Value =
        serde_json::from_str(&data_of(&messages, 2, "response")[0]).unwrap();
    assert_eq!(summary["stopped"], "deadline");

    // The second result becomes a pipe, so the search blocks on it after the first result.
    let b = notes.join("b.md");
    std::fs::remove_file(&b).unwrap();
    let made = std::process::Command::new("mkfifo")
        .arg(&b)
        .status()
        .unwrap();
    assert!(made.success());
    indexer.call(3, "water", Some(30_000));
    let mut messages = indexer.until(|m| m["id"] == 3 && m["type"] == "chunk");
    indexer.send(serde_json::json!({ "type": "cancel", "id": 3 }));
    // Lines are read in order: once the checkpoint is answered, the cancel was read.
    indexer.send(serde_json::json!({ "type": "checkpoint", "id": 4 }));
    messages.extend(indexer.until(|m| m["id"] == 4));
    // Unblock the search: opening the pipe for writing and closing it ends its read.
    drop(std::fs::OpenOptions::new().write(true).open(&b).unwrap());
    // A drain answers once no call runs: everything call 3 sent is before its answer.
    indexer.send(serde_json::json!({ "type": "drain", "id": 5, "deadline_ms": 30_000 }));
    messages.extend(indexer.until(|m| m["id"] == 5));
    let chunks = data_of(&messages, 3, "chunk");
    assert_eq!(
        chunks.len(),
        1,
        "the result found after the cancel was not sent, nor any after it: {chunks:?}"
    );
    assert!(
        !messages
            .iter()
            .any(|m| m["id"] == 3 && (m["type"] == "response" || m["type"] == "error")),
        "nothing answers a cancelled call: {messages:#?}"
    );
}

#[test]
fn a_process_without_the_protocol_takes_no_calls_and_restarts_for_a_level_change() {
    let f = fixture();
    let mut config = shell("levels", "echo \"level $BALLAST_LEVEL\"; exec sleep 60");
    config.levels = vec![
        LevelConfig {
            name: "full".into(),
            memory_mb: 1,
            gpu_memory_mb: 0,
        },
        LevelConfig {
            name: "lite".into(),
            memory_mb: 1,
            gpu_memory_mb: 0,
        },
    ];
    f.host.load(config).unwrap();
    f.host.enable("levels", Level::FULL, "test").unwrap();
    match f.host.call("levels", b"hi") {
        Err(CallError::Failed { message, .. }) => {
            assert!(message.contains("speaks no control protocol"), "{message}")
        }
        other => panic!("{other:?}"),
    }
    let first = pid_of(&f.host, "levels");
    f.host.set_level("levels", Level(1), "pressure").unwrap();
    let second = pid_of(&f.host, "levels");
    assert_ne!(first, second);
    wait_process(first, "gone", |s| s.is_none() || s == Some('Z'));
    let log_path = f.dir.path().join("logs/levels.log");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !std::fs::read_to_string(&log_path)
        .unwrap_or_default()
        .contains(" stdout level 1\n")
    {
        assert!(
            Instant::now() < deadline,
            "the new process never said its level"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn a_missing_program_fails_the_start_and_dropping_the_host_kills_its_children() {
    let f = fixture();
    f.host
        .load(PluginConfig::process("ghost", "/nonexistent/plugin"))
        .unwrap();
    let error = f.host.enable("ghost", Level::FULL, "test").unwrap_err();
    assert!(
        error
            .to_string()
            .contains("cannot start /nonexistent/plugin"),
        "{error}"
    );
    f.host.load(shell("sleeper", "exec sleep 60")).unwrap();
    f.host.enable("sleeper", Level::FULL, "test").unwrap();
    let pid = pid_of(&f.host, "sleeper");
    drop(f.host);
    wait_process(pid, "gone", |s| s.is_none() || s == Some('Z'));
}

#[test]
fn a_program_others_may_write_is_refused_before_it_runs() {
    use std::os::unix::fs::PermissionsExt;
    let f = fixture();
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("ran");
    let program = dir.path().join("plugin.sh");
    std::fs::write(
        &program,
        format!("#!/bin/sh\ntouch {}\nexec sleep 60\n", marker.display()),
    )
    .unwrap();
    let chmod = |mode| {
        std::fs::set_permissions(&program, std::fs::Permissions::from_mode(mode)).unwrap();
    };
    chmod(0o777);
    f.host
        .load(PluginConfig::process("writable", &program))
        .unwrap();
    let error = f.host.enable("writable", Level::FULL, "test").unwrap_err();
    let text = error.to_string();
    assert!(
        text.contains(&format!("refusing to start {}", program.display())),
        "{text}"
    );
    assert!(text.contains("(mode 0777"), "{text}");
    assert!(!marker.exists(), "the program ran");

    // Once only its owner may write it, it starts.
    chmod(0o755);
    f.host.enable("writable", Level::FULL, "test").unwrap();
    let pid = pid_of(&f.host, "writable");
    assert!(process_state(pid).is_some());
}

// -- Each process in a cgroup of its own, where this machine lets the tests make cgroups. --

/// One host with real cgroups at a time: every cgroup tree of this process has the same name.
static REAL_CGROUPS: Mutex<()> = Mutex::new(());

/// A host whose processes run in cgroups of their own (dropped before the tree), or `None`
/// after printing why the test is skipped.
struct CgroupFixture {
    f: Fixture,
    tree: Arc<CgroupTree>,
    _one: std::sync::MutexGuard<'static, ()>,
}

impl Drop for CgroupFixture {
    /// As the daemon does when it exits: whatever the test left is killed and its cgroups go,
    /// before the next test makes its own.
    fn drop(&mut self) {
        self.f.host.disable_all("test over");
        self.tree.remove();
    }
}

fn cgroup_fixture(test: &str) -> Option<CgroupFixture> {
    let one = REAL_CGROUPS.lock().unwrap_or_else(|p| p.into_inner());
    match CgroupTree::setup(&CgroupRoots::default()) {
        Ok(tree) => {
            let tree = Arc::new(tree);
            Some(CgroupFixture {
                f: fixture_with(Cgroups::Tree(Arc::clone(&tree))),
                tree,
                _one: one,
            })
        }
        Err(reason) => {
            // Past the test harness's capture, so that the skip shows in `cargo test`.
            use std::io::Write as _;
            let _ = writeln!(
                std::io::stdout(),
                "SKIPPED: {test}: cgroups are not writable here: {reason}"
            );
            None
        }
    }
}

/// The cgroup status of the plugin, once its first reading is in.
fn cgroup_status(host: &PluginHost, name: &str) -> ballast_core::CgroupStatus {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(cgroup) = host.status(name).unwrap().process.and_then(|p| p.cgroup) {
            return cgroup;
        }
        assert!(Instant::now() < deadline, "no cgroup status for {name}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn wait_gone(path: &Path) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while path.exists() {
        assert!(
            Instant::now() < deadline,
            "{} is still there",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn in_a_cgroup_a_fast_grower_is_killed_by_the_kernel_and_shed_with_that_reason() {
    let Some(c) = cgroup_fixture("a fast grower under the host") else {
        return;
    };
    // 4 MiB every 10 ms: 400 MiB/s, far faster than any polling sees.
    let mut config = PluginConfig::process("grower", "python3");
    config.args = vec![
        "-c".into(),
        "import time\na = []\nwhile True:\n    a.append(b'x' * (4 << 20))\n    time.sleep(0.01)"
            .into(),
    ];
    config.memory_hard_limit_mb = Some(64);
    c.f.host.load(config).unwrap();
    c.f.host.enable("grower", Level::FULL, "test").unwrap();
    let pid = pid_of(&c.f.host, "grower");
    let cgroup = cgroup_status(&c.f.host, "grower");
    let line = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default();
    let relative = cgroup
        .path
        .components()
        .skip(4 + usize::from(cgroup.version == "v1"))
        .collect::<PathBuf>();
    assert!(
        line.contains(&format!("{}\n", Path::new("/").join(&relative).display())),
        "{line} does not name {}",
        cgroup.path.display()
    );
    let events = c.f.recorder.wait_for("the kernel's kill", |e| {
        states(e).last().is_some_and(|s| s == "disabled")
    });
    let status = c.f.host.status("grower").unwrap();
    assert_eq!(
        status.reason,
        "killed by the kernel at its memory limit 64 MiB"
    );
    let raised = alerts(&events);
    assert!(raised.contains(&PluginAlert::MemoryOomKill), "{raised:?}");
    // The kernel enforced the limit: the host's polling did not.
    assert!(
        !raised.contains(&PluginAlert::MemoryHardLimit),
        "{raised:?}"
    );
    let process = status.process.unwrap();
    assert!(
        process
            .last_exit
            .as_deref()
            .is_some_and(|e| e.ends_with("killed by the kernel at its memory limit 64 MiB")),
        "{:?}",
        process.last_exit
    );
    let cgroup = process.cgroup.expect("its last cgroup");
    assert!(!cgroup.live);
    let peak = cgroup.memory_peak_bytes.expect("a peak");
    println!(
        "grower under the host: limit 64 MiB, peak {:.1} MiB, {} times at the limit, {} oom kills",
        peak as f64 / 1048576.0,
        cgroup.events.max,
        cgroup.events.oom_kill
    );
    assert!(peak <= 64 << 20, "peak {peak}");
    assert_eq!(cgroup.events.oom_kill, 1);
    wait_gone(&cgroup.path);
}

#[test]
fn in_a_cgroup_a_level_change_moves_the_throttling_point() {
    let Some(c) = cgroup_fixture("a level change under the host") else {
        return;
    };
    let notes = c.f.dir.path().join("notes");
    std::fs::create_dir_all(&notes).unwrap();
    let mut config = indexer(&notes);
    config.memory_hard_limit_mb = Some(256);
    c.f.host.load(config).unwrap();
    c.f.host.enable("indexer", Level::FULL, "test").unwrap();
    let cgroup = cgroup_status(&c.f.host, "indexer");
    assert_eq!(cgroup.memory_max_bytes, Some(256 << 20));
    assert_eq!(cgroup.memory_high_bytes, Some(32 << 20));
    let (throttle, limit) = if cgroup.version == "v1" {
        ("memory.soft_limit_in_bytes", "memory.limit_in_bytes")
    } else {
        ("memory.high", "memory.max")
    };
    let file = |name: &str| {
        std::fs::read_to_string(cgroup.path.join(name))
            .unwrap()
            .trim()
            .to_owned()
    };
    assert_eq!(file(throttle), (32u64 << 20).to_string());
    assert_eq!(file(limit), (256u64 << 20).to_string());
    c.f.host.set_level("indexer", Level(1), "memory").unwrap();
    assert_eq!(file(throttle), (16u64 << 20).to_string());
    c.f.host.set_level("indexer", Level::FULL, "calm").unwrap();
    assert_eq!(file(throttle), (32u64 << 20).to_string());
    assert_eq!(file(limit), (256u64 << 20).to_string());
    c.f.host.disable("indexer", "test").unwrap();
    wait_gone(&cgroup.path);
}

#[test]
fn in_a_cgroup_a_cpu_limited_plugin_gets_its_share_as_a_quota_and_its_cgroup_goes_when_it_stops() {
    let Some(c) = cgroup_fixture("a CPU quota under the host") else {
        return;
    };
    let mut config = shell("spinner", "while :; do :; done");
    config.cpu_share = 0.25;
    config.cpu_limit = true;
    c.f.host.load(config).unwrap();
    c.f.host.enable("spinner", Level::FULL, "test").unwrap();
    let cgroup = cgroup_status(&c.f.host, "spinner");
    match c.tree.cpu_unavailable() {
        Some(why) => println!("no CPU quota here: {why}"),
        None => assert_eq!(cgroup.cpu_quota_cores, Some(0.25)),
    }
    assert_eq!(cgroup.memory_max_bytes, None);
    c.f.host.disable("spinner", "test").unwrap();
    wait_gone(&cgroup.path);
    let dirs: Vec<PathBuf> = c.tree.dirs().iter().map(|d| d.to_path_buf()).collect();
    // What the daemon does as it exits, its plugins stopped.
    c.tree.remove();
    for dir in dirs {
        assert!(!dir.exists(), "{} is still there", dir.display());
    }
}

#[test]
fn without_cgroups_the_status_says_why_and_the_host_polls_the_limit() {
    let f = fixture_with(Cgroups::Unavailable(
        "cannot create /sys/fs/cgroup/memory/ballast-1-2: Read-only file system (os error 30)"
            .to_owned(),
    ));
    f.host.load(shell("plain", "exec sleep 60")).unwrap();
    f.host.enable("plain", Level::FULL, "test").unwrap();
    let process = f.host.status("plain").unwrap().process.unwrap();
    assert_eq!(process.cgroup, None);
    assert_eq!(
        process.cgroup_unavailable.as_deref(),
        Some(
            "cannot create /sys/fs/cgroup/memory/ballast-1-2: Read-only file system (os error 30)"
        )
    );
}
