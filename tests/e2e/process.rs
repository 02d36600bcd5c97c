//! Process plugins under the real daemon, as an operator meets them: the Python and shell
//! examples next to native plugins, shed and restored through the scaler, suspended (state `T`
//! in /proc) and resumed from the CLI, their logs through the API and the CLI; and a native
//! plugin isolated in a worker that segfaults without taking the daemon down.

use std::path::Path;
use std::time::Duration;

use crate::support;
use crate::support::{Daemon, ballast};

/// Thresholds above anything this machine reaches (only the operator changes states), fast
/// timings, and: a native plugin, the Python indexer, the shell load logger, the faulty plugin
/// isolated in a worker, and the essential stubs.
fn config(notes: &Path) -> String {
    let root = ballast_testkit::plugins::workspace_root();
    format!(
        r#"{header}
[[default.plugins]]
name = "voice"
path = "libvoice.so"
priority = 10
config = {{ workload = {{ working_set_mb = [8, 2], cpu_duty = 0.0 }} }}

[[default.plugins]]
name = "indexer"
kind = "process"
command = "{root}/plugins/python/indexer/indexer.py"
protocol = "json-lines"
priority = 15
can_suspend = true
levels = [{{ name = "full", memory_mb = 32 }}, {{ name = "keywords", memory_mb = 8 }}]
config = {{ notes_dir = "{notes}", heartbeat_s = 0.5 }}

[[default.plugins]]
name = "loadwatch"
kind = "process"
command = "{root}/plugins/shell/loadwatch/loadwatch.sh"
priority = 35
can_suspend = true
env = {{ LOADWATCH_INTERVAL = "1" }}

[[default.plugins]]
name = "faulty"
path = "libfaulty.so"
isolation = "process"
priority = 5
restart = {{ backoff = "100ms", burst = 5, window = "1m" }}

[[default.plugins]]
name = "stubs"
path = "libstubs.so"
priority = 100
essential = true
config = {{ workload = {{ working_set_mb = [2], cpu_duty = 0.0 }} }}
"#,
        header = support::quiet_machine("1s"),
        root = root.display(),
        notes = notes.display(),
    )
}

fn view(daemon: &Daemon, plugin: &str) -> serde_json::Value {
    daemon.json(&format!("/plugins/{plugin}"))
}

fn state(daemon: &Daemon, plugin: &str) -> String {
    view(daemon, plugin)["state"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

fn wait_state(daemon: &mut Daemon, plugin: &str, wanted: &str) {
    daemon.wait_until(
        Duration::from_secs(60),
        &format!("{plugin} to be {wanted}"),
        |d| state(d, plugin) == wanted,
    );
}

fn pid(daemon: &Daemon, plugin: &str) -> u32 {
    view(daemon, plugin)["process"]["pid"]
        .as_u64()
        .expect("a running process") as u32
}

/// The state letter of `/proc/PID/stat`, or None when the process is gone (or a zombie).
fn proc_state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let state = stat.rsplit_once(')')?.1.split_whitespace().next()?;
    state.chars().next().filter(|c| *c != 'Z')
}

/// The indexer's answer (JSON lines: a result each, then a summary) as its summary with the
/// results in `results`.
fn indexer_answer(body: &str) -> serde_json::Value {
    let mut lines: Vec<serde_json::Value> = body
        .lines()
        .filter(|line| !line.is_empty())
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {body}")))
        .collect();
    let mut summary = lines.pop().unwrap_or_else(|| panic!("no summary: {body}"));
    summary["results"] = serde_json::Value::Array(lines);
    summary
}

fn cli(daemon: &Daemon, args: &[&str]) -> String {
    let out = ballast()
        .args(args)
        .args(["--api", &daemon.url])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "ballast {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn process_plugins_run_beside_native_ones_and_are_shed_restored_and_suspended() {
    let dir = tempfile::tempdir().unwrap();
    let notes = dir.path().join("notes");
    std::fs::create_dir_all(&notes).unwrap();
    std::fs::write(notes.join("plants.md"), "Water the basil every morning").unwrap();
    let mut daemon = support::start(dir.path(), &config(&notes));
    for plugin in ["voice", "indexer", "loadwatch", "faulty", "stubs"] {
        wait_state(&mut daemon, plugin, "enabled");
    }

    // The Python plugin answers calls; each plugin shows its kind.
    daemon.wait_until(Duration::from_secs(30), "the index", |d| {
        view(d, "indexer")["gauges"]["documents"] == 1.0
    });
    let (status, body) = daemon.post("/plugins/indexer/call", "basil").unwrap();
    assert_eq!(status, 200, "{body}");
    let answer = indexer_answer(&body);
    assert!(
        answer["results"][0]["file"]
            .as_str()
            .is_some_and(|f| f.ends_with("plants.md")),
        "{body}"
    );
    assert_eq!(view(&daemon, "indexer")["kind"], "process");
    assert_eq!(view(&daemon, "voice")["kind"], "native");
    assert_eq!(view(&daemon, "faulty")["process"]["protocol"], "worker");

    // Shed through the scaler (an operator pin): drained, checkpointed, its process gone, and
    // calls get the degraded answer.
    let first = pid(&daemon, "indexer");
    cli(&daemon, &["plugin", "indexer", "disable"]);
    wait_state(&mut daemon, "indexer", "disabled");
    daemon.wait_until(Duration::from_secs(30), "the process to end", |_| {
        proc_state(first).is_none()
    });
    let (status, body) = daemon.post("/plugins/indexer/call", "basil").unwrap();
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("\"state\":\"disabled\""), "{body}");
    // The journal stores the checkpoint on its own thread, after the state change.
    daemon.wait_until(Duration::from_secs(30), "the stored checkpoint", |d| {
        d.data_dir.join("checkpoints/indexer.bin").exists()
    });

    // Restored by the scaler once released: a new process that continues from the checkpoint.
    cli(&daemon, &["plugin", "indexer", "release"]);
    wait_state(&mut daemon, "indexer", "enabled");
    assert_ne!(pid(&daemon, "indexer"), first);
    let (_, body) = daemon.post("/plugins/indexer/call", "basil").unwrap();
    let answer = indexer_answer(&body);
    assert_eq!(answer["queries"], 2, "the count came back: {body}");

    // Suspended from the CLI: the process is stopped (T), calls answer 503; resumed, it runs.
    let loadwatch = pid(&daemon, "loadwatch");
    cli(&daemon, &["plugin", "loadwatch", "suspend"]);
    daemon.wait_until(Duration::from_secs(30), "state T", |_| {
        proc_state(loadwatch) == Some('T')
    });
    assert_eq!(state(&daemon, "loadwatch"), "suspended");
    cli(&daemon, &["plugin", "loadwatch", "resume"]);
    daemon.wait_until(Duration::from_secs(30), "running again", |_| {
        proc_state(loadwatch).is_some_and(|s| s != 'T')
    });

    // Its output is in its log, through the CLI.
    daemon.wait_until(Duration::from_secs(30), "two load lines", |d| {
        cli(d, &["plugin", "loadwatch", "logs", "--tail", "50"])
            .matches(" stdout load ")
            .count()
            >= 2
    });
    let logs = cli(&daemon, &["plugin", "loadwatch", "logs", "--tail", "50"]);
    assert!(logs.contains(" host suspended: SIGSTOP\n"), "{logs}");
    assert!(logs.contains(" host resumed: SIGCONT\n"), "{logs}");
    // The process line appears once the supervisor has measured the process again.
    daemon.wait_until(Duration::from_secs(30), "the process line in show", |d| {
        cli(d, &["plugin", "loadwatch", "show"]).contains("\nprocess      pid ")
    });

    // Metrics attribute each process's figures to its plugin (once it has been measured).
    daemon.wait_until(
        Duration::from_secs(30),
        "the indexer's process metrics",
        |d| {
            d.get("/metrics").is_ok_and(|(_, m)| {
                m.contains("ballast_plugin_process_resident_memory_bytes{plugin=\"indexer\"}")
            })
        },
    );

    // SIGTERM drains everything, stops every plugin process, and exits 0.
    let processes = [pid(&daemon, "indexer"), loadwatch, pid(&daemon, "faulty")];
    daemon.signal(libc::SIGTERM);
    assert_eq!(
        daemon.wait_exit(Duration::from_secs(60)),
        Some(0),
        "log:\n{}",
        daemon.log()
    );
    for pid in processes {
        assert_eq!(proc_state(pid), None, "process {pid} outlived the daemon");
    }
}

#[test]
fn a_segfault_in_an_isolated_native_plugin_leaves_the_daemon_running() {
    let dir = tempfile::tempdir().unwrap();
    let notes = dir.path().join("notes");
    std::fs::create_dir_all(&notes).unwrap();
    let mut daemon = support::start(dir.path(), &config(&notes));
    wait_state(&mut daemon, "faulty", "enabled");
    let worker = pid(&daemon, "faulty");
    let (status, body) = daemon.post("/plugins/faulty/call", "hello").unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, "generation 1");

    // The plugin segfaults: the worker dies, the call fails, the daemon does not.
    let (status, body) = daemon.post("/plugins/faulty/call", "segfault").unwrap();
    assert_eq!(status, 502, "{body}");
    assert!(
        body.contains("the plugin's process was killed by signal 11 (SIGSEGV)"),
        "{body}"
    );
    let (status, _) = daemon.get("/healthz").unwrap();
    assert_eq!(status, 200);
    let (status, body) = daemon.post("/plugins/voice/call", "still here?").unwrap();
    assert_eq!(status, 200, "{body}");

    // The host restarts the worker after the back-off; the new one answers.
    daemon.wait_until(Duration::from_secs(60), "a new worker", |d| {
        state(d, "faulty") == "enabled"
            && view(d, "faulty")["process"]["pid"].as_u64() != Some(u64::from(worker))
    });
    let (status, body) = daemon.post("/plugins/faulty/call", "hello").unwrap();
    assert_eq!(status, 200, "{body}");
    let faulty = view(&daemon, "faulty");
    assert_eq!(faulty["process"]["restarts"], 1, "{faulty}");
    // "core dumped" is added where the core size limit allows a dump.
    assert!(
        faulty["process"]["last_exit"]
            .as_str()
            .is_some_and(|e| e.starts_with("killed by signal 11 (SIGSEGV)")),
        "{faulty}"
    );
    let log = daemon.log();
    assert!(
        log.contains("its process was killed by signal 11 (SIGSEGV)"),
        "{log}"
    );
}
