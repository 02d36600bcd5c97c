//! Periodic checkpoints under the real daemon: a plugin whose process is killed after a periodic
//! checkpoint comes back from it, so does the plugin of a daemon killed with `kill -9` and
//! started again, and `ballast plugin NAME show` says how old the latest checkpoint is.

use std::time::Duration;

use crate::support;
use crate::support::{Daemon, ballast};

/// After `support::quiet_machine`: `voice` isolated in a worker process, checkpointed every second.
const PLUGINS: &str = r#"
[[default.plugins]]
name = "voice"
path = "libvoice.so"
isolation = "process"
priority = 10
checkpoint_interval = "1s"
restart = { backoff = "100ms", burst = 5, window = "1m" }
config = { workload = { working_set_mb = [4, 2], cpu_duty = 0.0 } }
"#;

fn view(daemon: &Daemon) -> serde_json::Value {
    daemon.json("/plugins/voice")
}

/// Calls voice and returns how many calls it has served, across instances.
fn call(daemon: &Daemon) -> u64 {
    let (status, body) = daemon.post("/plugins/voice/call", "hello").unwrap();
    assert_eq!(status, 200, "{body}");
    let answer: serde_json::Value = serde_json::from_str(&body).unwrap();
    answer["calls_served"]
        .as_u64()
        .unwrap_or_else(|| panic!("no calls_served: {body}"))
}

/// When the latest checkpoint was taken, in milliseconds since the epoch.
fn checkpoint_at(daemon: &Daemon) -> Option<u64> {
    view(daemon)["stats"]["last_checkpoint"].as_u64()
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// Waits until a checkpoint taken after `after_ms` is kept.
fn wait_checkpoint_after(daemon: &mut Daemon, after_ms: u64) {
    daemon.wait_until(
        Duration::from_secs(30),
        "a periodic checkpoint after the calls",
        |d| checkpoint_at(d).is_some_and(|at| at > after_ms),
    );
}

/// Waits until the checkpoint file holds `calls` calls and was written after `after_ms`: the
/// journal writes it on the disk arbiter, after the host has taken it, and a restarted daemon
/// dates the checkpoint by the file's modification time.
fn wait_stored(daemon: &mut Daemon, calls: u64, after_ms: u64) {
    let stored = daemon.data_dir.join("checkpoints/voice.bin");
    daemon.wait_until(
        Duration::from_secs(30),
        &format!("a checkpoint with {calls} calls stored after {after_ms} ms"),
        |_| {
            let written_after = std::fs::metadata(&stored)
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .is_some_and(|t| t.as_millis() as u64 > after_ms);
            written_after
                && std::fs::read(&stored)
                    .ok()
                    .and_then(|bytes| serde_json::from_slice::<serde_json::Value>(&bytes).ok())
                    .is_some_and(|on_disk| on_disk["calls_served"] == calls)
        },
    );
}

fn worker_pid(daemon: &Daemon) -> Option<u64> {
    let v = view(daemon);
    (v["state"] == "enabled")
        .then(|| v["process"]["pid"].as_u64())
        .flatten()
}

#[test]
fn a_plugin_killed_after_a_periodic_checkpoint_comes_back_from_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut daemon = support::start(dir.path(), &(support::quiet_machine("1s") + PLUGINS));
    daemon.wait_until(Duration::from_secs(60), "voice to be enabled", |d| {
        worker_pid(d).is_some()
    });
    let show = plugin_show(&daemon);
    assert!(show.contains("\ncheckpoint   none yet\n"), "{show}");
    for expected in 1..=3 {
        assert_eq!(call(&daemon), expected);
    }
    let after_calls = now_ms();
    wait_checkpoint_after(&mut daemon, after_calls);
    wait_stored(&mut daemon, 3, after_calls);
    let show = plugin_show(&daemon);
    assert!(show.contains("\ncheckpoint   latest taken "), "{show}");

    // The worker is killed (as the kernel would at its limit, or a crash): the supervisor starts
    // a new one, which starts from the periodic checkpoint, not from nothing.
    let worker = worker_pid(&daemon).unwrap();
    // SAFETY: a plain kill(2) of the worker process this test's daemon started.
    assert_eq!(unsafe { libc::kill(worker as i32, libc::SIGKILL) }, 0);
    daemon.wait_until(Duration::from_secs(60), "a new worker", |d| {
        worker_pid(d).is_some_and(|pid| pid != worker)
    });
    assert_eq!(view(&daemon)["process"]["restarts"], 1);
    assert_eq!(
        call(&daemon),
        4,
        "the three calls before the kill came back from the checkpoint"
    );

    // The daemon is killed with kill -9 and started again: voice comes back from the file.
    let after_call = now_ms();
    wait_checkpoint_after(&mut daemon, after_call);
    // Killed only once the file holds it: a checkpoint the host took but the disk arbiter has
    // not written yet is lost with the daemon, and the older file would come back.
    wait_stored(&mut daemon, 4, after_call);
    let log = daemon.log();
    assert!(log.contains("checkpoint taken"), "{log}");
    daemon.restart();
    daemon.wait_until(Duration::from_secs(60), "voice to be enabled again", |d| {
        worker_pid(d).is_some()
    });
    let restored = checkpoint_at(&daemon).expect("the restored checkpoint's time");
    assert!(restored > after_call, "{restored} <= {after_call}");
    assert_eq!(call(&daemon), 5, "the fourth call came back from the file");
}

fn plugin_show(daemon: &Daemon) -> String {
    let out = ballast()
        .args(["plugin", "voice", "show", "--api", &daemon.url])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}
