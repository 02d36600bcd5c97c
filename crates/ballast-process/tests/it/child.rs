//! Real child processes: output and exit reported in order, the protocol on stdout, SIGSTOP and
//! SIGCONT, and a stop that escalates from SIGTERM to SIGKILL for the whole process group. Each
//! test bounds its waits and kills its children when it ends, also when it fails (dropping a
//! `Child` kills its process group).

use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use ballast_core::Timestamp;
use ballast_process::{
    Child, ChildEvent, Exit, LogFile, PluginMessage, ProcReader, Rotation, Spawn, Stream, spawn,
};
use nix::sys::signal::Signal;

#[derive(Default)]
struct Events {
    list: Mutex<Vec<ChildEvent>>,
    changed: Condvar,
}

impl Events {
    fn wait_for(&self, what: &str, test: impl Fn(&[ChildEvent]) -> bool) -> Vec<ChildEvent> {
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut list = self.list.lock().unwrap();
        while !test(&list) {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "timed out waiting for {what}; events: {list:?}"
            );
            list = self.changed.wait_timeout(list, left).unwrap().0;
        }
        list.clone()
    }
}

fn start(script: &str, protocol: bool, log: Option<Arc<LogFile>>) -> (Child, Arc<Events>) {
    let events = Arc::new(Events::default());
    let sink = Arc::clone(&events);
    let child = spawn(
        &Spawn {
            program: PathBuf::from("sh"),
            args: vec!["-c".into(), script.into()],
            env: vec![("GREETING".into(), "hi".into())],
            working_dir: None,
            cgroups: Vec::new(),
        },
        protocol,
        log,
        Arc::new(|| Timestamp::from_secs(1_800_000_000)),
        Arc::new(move |e| {
            sink.list.lock().unwrap().push(e);
            sink.changed.notify_all();
        }),
    )
    .expect("sh starts");
    (child, events)
}

fn exited(events: &[ChildEvent]) -> bool {
    events.iter().any(|e| matches!(e, ChildEvent::Exited(_)))
}

fn state(pid: u32) -> Option<char> {
    ProcReader::default().stat(pid).ok().map(|s| s.state)
}

fn wait_state(pid: u32, wanted: impl Fn(Option<char>) -> bool, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !wanted(state(pid)) {
        assert!(
            Instant::now() < deadline,
            "process {pid} never became {what}: {:?}",
            state(pid)
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn output_is_logged_and_the_exit_comes_last() {
    let dir = tempfile::tempdir().unwrap();
    let log = Arc::new(LogFile::new(dir.path().join("t.log"), Rotation::default()));
    let (child, events) = start(
        "echo \"$GREETING out\"; echo oops >&2; exit 3",
        false,
        Some(log),
    );
    let seen = events.wait_for("the exit", exited);
    assert_eq!(
        seen.last(),
        Some(&ChildEvent::Exited(Exit::Status { code: 3 }))
    );
    assert!(seen.contains(&ChildEvent::Output {
        stream: Stream::Stdout
    }));
    assert!(seen.contains(&ChildEvent::Output {
        stream: Stream::Stderr
    }));
    assert_eq!(child.exit(), Some(Exit::Status { code: 3 }));
    assert_eq!(child.last_lines(), ["oops"]);
    let text = std::fs::read_to_string(dir.path().join("t.log")).unwrap();
    assert!(text.contains(" stdout hi out\n"), "{text}");
    assert!(text.contains(" stderr oops\n"), "{text}");
    assert!(text.contains(" host exited with status 3\n"), "{text}");
}

#[test]
fn protocol_lines_become_messages_and_other_lines_bad_lines() {
    let script = r#"read init; echo '{"type":"hello","name":"t","protocol":1}'; echo 'not json'; echo '{"type":"chunk","id":4,"data":"***"}'; read more"#;
    let (child, events) = start(script, true, None);
    child
        .send(&ballast_process::HostMessage::Init {
            name: "t".into(),
            level: 0,
            config: serde_json::json!({}),
            checkpoint: None,
        })
        .unwrap();
    let seen = events.wait_for("the bad lines", |e| {
        e.iter()
            .filter(|e| matches!(e, ChildEvent::BadLine { .. }))
            .count()
            == 2
    });
    assert!(
        matches!(&seen[0], ChildEvent::Message(PluginMessage::Hello { name, protocol: 1, .. }) if name == "t")
    );
    assert!(
        matches!(&seen[1], ChildEvent::BadLine { excerpt, id: None, .. } if excerpt == "not json")
    );
    // A malformed answer names the request it answers.
    assert!(
        matches!(&seen[2], ChildEvent::BadLine { error, id: Some(4), .. } if error.to_string().contains("not base64")),
        "{:?}",
        seen[2]
    );
    child.close_stdin();
    events.wait_for("the exit", exited);
}

#[test]
fn sigstop_stops_it_and_sigcont_continues_it() {
    let (child, _events) = start("while :; do sleep 0.05; done", false, None);
    let pid = child.pid();
    child.signal(Signal::SIGSTOP).unwrap();
    wait_state(pid, |s| s == Some('T'), "stopped (T)");
    child.signal(Signal::SIGCONT).unwrap();
    wait_state(pid, |s| s.is_some_and(|s| s != 'T'), "running again");
}

#[test]
fn a_process_that_ignores_sigterm_is_killed_with_its_group() {
    let dir = tempfile::tempdir().unwrap();
    let log = Arc::new(LogFile::new(dir.path().join("t.log"), Rotation::default()));
    // The shell ignores SIGTERM (and so does the sleep it starts in the background).
    let (child, events) = start("trap '' TERM; sleep 60 & echo $!; wait", false, Some(log));
    events.wait_for("the grandchild's pid", |e| !e.is_empty());
    let text = std::fs::read_to_string(dir.path().join("t.log")).unwrap();
    let grandchild: u32 = text
        .lines()
        .find_map(|l| l.rsplit(' ').next()?.parse().ok())
        .expect("pid line");
    let (exit, killed) = child.stop(Duration::from_millis(300));
    assert!(killed);
    assert_eq!(
        exit,
        Some(Exit::Signal {
            signal: 9,
            core_dumped: false
        })
    );
    wait_state(grandchild, |s| s.is_none() || s == Some('Z'), "gone");
    let text = std::fs::read_to_string(dir.path().join("t.log")).unwrap();
    assert!(text.contains("host stopping: SIGTERM"), "{text}");
    assert!(text.contains("after SIGTERM: SIGKILL"), "{text}");
}

#[test]
fn a_polite_process_exits_on_sigterm_within_the_grace_period() {
    let (child, events) = start(
        "trap 'exit 0' TERM; echo ready; while :; do sleep 0.05; done",
        false,
        None,
    );
    events.wait_for("the trap to be set", |e| !e.is_empty());
    let (exit, killed) = child.stop(Duration::from_secs(20));
    assert!(!killed, "{exit:?}");
    assert_eq!(exit, Some(Exit::Status { code: 0 }));
}

#[test]
fn a_missing_program_is_an_error() {
    let error = spawn(
        &Spawn {
            program: PathBuf::from("/nonexistent/plugin"),
            ..Spawn::default()
        },
        false,
        None,
        Arc::new(|| Timestamp::ZERO),
        Arc::new(|_| {}),
    )
    .unwrap_err();
    assert_eq!(error.kind(), std::io::ErrorKind::NotFound);
}
