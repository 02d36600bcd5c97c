//! Each plugin process in a cgroup of its own, under the real daemon on this machine: a process
//! plugin, a protocol plugin and an isolated native plugin's worker each in theirs; a fast grower
//! stopped by the kernel at its limit and shed with that reason; a level change that moves the
//! throttling point; a CPU-capped busy loop held to its quota; cgroups gone after a plugin stops,
//! after `kill -9` and a restart, and after a clean exit. And where cgroups are read-only, the
//! plugins run as before, their limit polled, and the log says why once.
//!
//! These need a machine whose cgroups the test may write (root, a writable cgroup file system);
//! elsewhere they print `SKIPPED: ...` and pass.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ballast_process::cgroup::events::{keyed, parse_number};
use ballast_process::cgroup::layout::{discover, parse_mountinfo, parse_proc_cgroup};

use crate::support;
use crate::support::{Daemon, Options, ballast};

/// Grows by 4 MiB every `pause` seconds, each byte written, up to 160 MiB, then holds it.
fn grower(pause: &str) -> String {
    format!(
        "import time\\na = []\\nwhile len(a) < 40:\\n    a.append(b'x' * (4 << 20))\\n    time.sleep({pause})\\ntime.sleep(600)"
    )
}

/// Thresholds above anything this machine reaches and no restore for ten minutes (only the
/// operator and the host change states), and the plugins under test.
fn config(notes: &Path, grower_pause: &str) -> String {
    let root = ballast_testkit::plugins::workspace_root();
    format!(
        r#"{header}
[[default.plugins]]
name = "grower"
kind = "process"
command = "python3"
args = ["-c", "{grower}"]
priority = 10
levels = [{{ name = "full", memory_mb = 32 }}]
memory_hard_limit_mb = 64

[[default.plugins]]
name = "indexer"
kind = "process"
command = "{root}/plugins/python/indexer/indexer.py"
protocol = "json-lines"
priority = 15
levels = [{{ name = "full", memory_mb = 32 }}, {{ name = "keywords", memory_mb = 8 }}]
memory_hard_limit_mb = 256
config = {{ notes_dir = "{notes}", heartbeat_s = 0.5 }}

[[default.plugins]]
name = "spinner"
kind = "process"
command = "sh"
args = ["-c", "while :; do :; done"]
priority = 20
cpu_share = 0.2
cpu_limit = true

[[default.plugins]]
name = "discord"
path = "libdiscord.so"
isolation = "process"
priority = 30
memory_hard_limit_mb = 256
config = {{ workload = {{ working_set_mb = [4], cpu_duty = 0.0 }} }}
"#,
        header = support::quiet_machine("10m"),
        root = root.display(),
        notes = notes.display(),
        grower = grower(grower_pause),
    )
}

/// Says that a test is skipped and why, on a line of its own in the output of `cargo test`
/// (written past the test harness's capture of `println!`, which shows only failures).
fn skipped(test: &str, why: &str) {
    use std::io::Write as _;
    let _ = writeln!(std::io::stdout(), "SKIPPED: {test}: {why}");
}

fn view(daemon: &Daemon, plugin: &str) -> serde_json::Value {
    daemon.json(&format!("/plugins/{plugin}"))
}

fn wait_state(daemon: &mut Daemon, plugin: &str, wanted: &str) {
    daemon.wait_until(
        Duration::from_secs(60),
        &format!("{plugin} to be {wanted}"),
        |d| view(d, plugin)["state"] == wanted,
    );
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

/// The plugin's cgroup as the API shows it, once the supervisor has read it.
fn cgroup(daemon: &mut Daemon, plugin: &str) -> serde_json::Value {
    daemon.wait_until(
        Duration::from_secs(30),
        &format!("{plugin}'s cgroup"),
        |d| view(d, plugin)["process"]["cgroup"].is_object(),
    );
    view(daemon, plugin)["process"]["cgroup"].clone()
}

/// The cgroup directories of process `pid`, one per hierarchy (memory first on v1), from its
/// `/proc/PID/cgroup` and this process's mounts.
fn dirs_of(pid: u32) -> Vec<PathBuf> {
    let lines = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default();
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let found = discover(
        &parse_proc_cgroup(&lines).unwrap_or_default(),
        &parse_mountinfo(&mounts).unwrap(),
    );
    let mut dirs: Vec<PathBuf> = found.v1.into_iter().map(|h| h.dir).collect();
    if dirs.is_empty() {
        dirs.extend(found.v2.map(|(dir, _)| dir));
    }
    dirs
}

fn pid(daemon: &Daemon, plugin: &str) -> u32 {
    view(daemon, plugin)["process"]["pid"]
        .as_u64()
        .expect("a running process") as u32
}

/// The CPU time, in seconds, the cgroups of `pid` count for it (v1 `cpuacct.usage`, v2
/// `cpu.stat`).
fn cgroup_cpu_seconds(dirs: &[PathBuf]) -> f64 {
    for dir in dirs {
        if let Ok(text) = std::fs::read_to_string(dir.join("cpuacct.usage")) {
            return parse_number("cpuacct.usage", &text).unwrap() as f64 / 1e9;
        }
        if let Ok(text) = std::fs::read_to_string(dir.join("cpu.stat"))
            && let Ok(Some(us)) = keyed("cpu.stat", &text, "usage_usec")
        {
            return us as f64 / 1e6;
        }
    }
    panic!("no CPU time in {dirs:?}");
}

fn wait_gone(daemon: &mut Daemon, dirs: &[PathBuf], what: &str) {
    daemon.wait_until(Duration::from_secs(30), what, |_| {
        dirs.iter().all(|d| !d.exists())
    });
}

#[test]
fn each_plugin_process_runs_in_a_cgroup_of_its_own_with_its_limits_enforced_by_the_kernel() {
    let dir = tempfile::tempdir().unwrap();
    let notes = dir.path().join("notes");
    std::fs::create_dir_all(&notes).unwrap();
    // 4 MiB every 10 ms: 400 MiB/s, over its 64 MiB in a fraction of the 2 s between polls.
    let mut daemon = support::start(dir.path(), &config(&notes, "0.01"));
    if let Some(line) = daemon
        .log()
        .lines()
        .find(|l| l.contains("cgroups are not writable"))
    {
        skipped("plugin cgroups", line);
        return;
    }
    for plugin in ["indexer", "spinner", "discord"] {
        wait_state(&mut daemon, plugin, "enabled");
    }

    // Each process (the isolated plugin's worker too) is in the cgroup the API names.
    let mut trees = Vec::new();
    for plugin in ["indexer", "spinner", "discord"] {
        let cgroup = cgroup(&mut daemon, plugin);
        let path = PathBuf::from(cgroup["path"].as_str().unwrap());
        let dirs = dirs_of(pid(&daemon, plugin));
        assert_eq!(dirs[0], path, "{plugin}: {cgroup}");
        trees.extend(dirs.iter().map(|d| d.parent().unwrap().to_owned()));
    }
    trees.sort();
    trees.dedup();

    // The fast grower: stopped by the kernel at its limit, and shed with that reason.
    wait_state(&mut daemon, "grower", "disabled");
    let grower = view(&daemon, "grower");
    assert_eq!(
        grower["reason"], "killed by the kernel at its memory limit 64 MiB",
        "{grower}"
    );
    let peak = grower["process"]["cgroup"]["memory_peak_bytes"]
        .as_u64()
        .expect("its peak");
    println!(
        "grower under the daemon: limit 64 MiB, peak {:.1} MiB, events {}",
        peak as f64 / 1048576.0,
        grower["process"]["cgroup"]["events"]
    );
    assert!(peak <= 64 << 20, "peak {peak} over the limit: {grower}");
    assert!(grower["process"]["cgroup"]["events"]["oom_kill"].as_u64() >= Some(1));
    let show = cli(&daemon, &["plugin", "grower", "show"]);
    assert!(
        show.contains("disabled")
            && show.contains("killed by the kernel at its memory limit 64 MiB"),
        "{show}"
    );
    assert!(show.contains("memory limit 64 MiB"), "{show}");
    // The kernel's events are alerts, in the plugin's log with the rest.
    let logs = cli(&daemon, &["plugin", "grower", "logs", "--tail", "20"]);
    assert!(
        logs.contains(
            " host memory_oom_kill: the kernel killed a process of it at its memory limit 64 MiB\n"
        ),
        "{logs}"
    );

    // A level change moves the throttling point.
    let indexer = cgroup(&mut daemon, "indexer");
    let indexer_dir = PathBuf::from(indexer["path"].as_str().unwrap());
    let throttle = if indexer["version"] == "v1" {
        "memory.soft_limit_in_bytes"
    } else {
        "memory.high"
    };
    let read = |file: &Path| std::fs::read_to_string(file).unwrap().trim().to_owned();
    assert_eq!(read(&indexer_dir.join(throttle)), (32u64 << 20).to_string());
    cli(&daemon, &["plugin", "indexer", "level", "1"]);
    daemon.wait_until(Duration::from_secs(30), "the new throttling point", |_| {
        read(&indexer_dir.join(throttle)) == (8u64 << 20).to_string()
    });

    // The busy loop uses no more than its quota (the kernel's, per 100 ms period).
    let spinner_dirs = dirs_of(pid(&daemon, "spinner"));
    let quota = view(&daemon, "spinner")["process"]["cgroup"]["cpu_quota_cores"].as_f64();
    if let Some(quota) = quota {
        let (start, before) = (Instant::now(), cgroup_cpu_seconds(&spinner_dirs));
        std::thread::sleep(Duration::from_secs(3));
        let used = cgroup_cpu_seconds(&spinner_dirs) - before;
        let cores = used / start.elapsed().as_secs_f64();
        println!("spinner under the daemon: quota {quota} cores, used {cores:.3} cores");
        assert!(
            cores <= quota * 1.1 + 0.05,
            "{cores:.3} cores for a quota of {quota}"
        );
    } else {
        println!("no CPU quota here: {}", daemon.log());
    }

    // A plugin that stops leaves no cgroup behind.
    cli(&daemon, &["plugin", "spinner", "disable"]);
    wait_state(&mut daemon, "spinner", "disabled");
    wait_gone(&mut daemon, &spinner_dirs, "the spinner's cgroups to go");

    // Killed with SIGKILL, the daemon leaves its directory; the next one removes it at start.
    for tree in &trees {
        assert!(tree.exists(), "{}", tree.display());
    }
    daemon.restart();
    for tree in &trees {
        assert!(!tree.exists(), "{} outlived a restart", tree.display());
    }
    assert!(
        daemon
            .log()
            .contains("removed the plugin cgroups of a daemon that is no longer running"),
        "{}",
        daemon.log()
    );

    // A clean exit removes the daemon's own.
    wait_state(&mut daemon, "indexer", "enabled");
    let indexer = cgroup(&mut daemon, "indexer");
    let tree = PathBuf::from(indexer["path"].as_str().unwrap())
        .parent()
        .unwrap()
        .to_owned();
    daemon.signal(libc::SIGTERM);
    assert_eq!(daemon.wait_exit(Duration::from_secs(60)), Some(0));
    assert!(!tree.exists(), "{} outlived the daemon", tree.display());
}

#[test]
fn where_cgroups_are_read_only_plugins_run_as_before_and_the_log_says_why_once() {
    let unshare = std::process::Command::new("unshare")
        .args(["-m", "true"])
        .output();
    if !unshare.is_ok_and(|o| o.status.success()) {
        skipped("read-only cgroups", "`unshare -m` is not permitted here");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let notes = dir.path().join("notes");
    std::fs::create_dir_all(&notes).unwrap();
    // In a mount namespace of its own, every cgroup file system is read-only for the daemon.
    let mut options = Options::new(env!("CARGO_BIN_EXE_ballast"), support::plugin_dir());
    options.prefix = vec![
        "unshare".into(),
        "-m".into(),
        "sh".into(),
        "-c".into(),
        "for m in $(awk '$3 ~ /^cgroup/ {print $2}' /proc/mounts); do mount -o remount,bind,ro \"$m\" || exit 1; done; exec \"$0\" \"$@\"".into(),
    ];
    // 4 MiB every 100 ms: a poll every 2 s sees it over its 64 MiB.
    let mut daemon = Daemon::start(&options, dir.path(), &config(&notes, "0.1"));
    wait_state(&mut daemon, "grower", "disabled");
    let grower = view(&daemon, "grower");
    let reason = grower["reason"].as_str().unwrap();
    assert!(
        reason.contains("reached its hard limit 64.0 MiB: shed by the host"),
        "{grower}"
    );
    let log = daemon.log();
    let why: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("cgroups are not writable"))
        .collect();
    assert_eq!(why.len(), 1, "{log}");
    assert!(
        why[0].contains("/sys/fs/cgroup") && why[0].contains("read-only"),
        "{}",
        why[0]
    );
    println!("the log says: {}", why[0]);
    let show = cli(&daemon, &["plugin", "grower", "show"]);
    assert!(
        show.contains("cgroup       none (memory limits polled, no CPU quota): "),
        "{show}"
    );
    // The other plugins run as before.
    wait_state(&mut daemon, "indexer", "enabled");
    wait_state(&mut daemon, "discord", "enabled");
    assert!(view(&daemon, "indexer")["process"]["cgroup"].is_null());
}
