//! Plugin cgroups: the IO shell on fixture trees of a cgroup v2 machine and of a v1 (hybrid)
//! one, under an injectable root; property tests that no file content panics the readers; and,
//! where this machine lets the test write cgroups (as root, with a writable cgroup file system),
//! the kernel itself: a process in its cgroup before it runs, a fast grower stopped at its limit,
//! a busy loop held to its CPU quota, limits retargeted, cgroups removed, and a dead daemon's
//! cgroups cleaned. Where cgroups are not writable those tests print `SKIPPED: ...` and pass.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ballast_core::{MemoryEventCounts, PluginAlert, Timestamp};
use ballast_process::cgroup::events::{
    keyed, parse_cpu_stat, parse_memory_events, parse_number, parse_oom_control, parse_pressure,
};
use ballast_process::cgroup::layout::{discover, parse_mountinfo, parse_proc_cgroup};
use ballast_process::cgroup::stale::Owner;
use ballast_process::cgroup::{
    CgroupRoots, CgroupTree, EventTracker, Limits, PluginCgroup, Reading, Version, settle_in_leaf,
};
use ballast_process::{CgroupJoinError, ChildEvent, Exit, Spawn, spawn};
use proptest::prelude::*;

/// `/proc/<pid>/stat` text of a process started at `start` ticks.
fn stat(pid: u32, start: u64) -> String {
    format!(
        "{pid} (ballast) S 1 {pid} {pid} 0 -1 4194304 1843 0 0 0 150 30 7 3 20 0 3 0 {start} 52428800 2560 18446744073709551615 1 1 0 0 0 0 0 16781312 2 0 0 0 17 1 0 0 0 0 0"
    )
}

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A fixture `/proc` for daemon `pid` (started at tick 1000; each test has its own, as the
/// trees of one daemon are numbered), with daemon 5000 (tick 2000) still running beside it.
fn fixture_proc(root: &Path, pid: u32, cgroup: &str, mountinfo: &str) {
    write(&root.join("proc/self/cgroup"), cgroup);
    write(&root.join("proc/self/mountinfo"), mountinfo);
    write(&root.join("proc/self/stat"), &stat(pid, 1000));
    write(&root.join(format!("proc/{pid}/stat")), &stat(pid, 1000));
    write(&root.join("proc/5000/stat"), &stat(5000, 2000));
}

/// Interface files of a cgroup directory, empty, as a fixture.
fn cgroup_files(dir: &Path, files: &[&str]) {
    for file in files {
        write(&dir.join(file), "");
    }
}

fn roots(root: &Path) -> CgroupRoots {
    CgroupRoots {
        proc: root.join("proc"),
        root: root.to_owned(),
    }
}

/// Stale directories beside the daemon's own: one of a daemon gone, one of a pid reused since,
/// one of a daemon still running, and something else.
fn stale_dirs(base: &Path) {
    std::fs::create_dir_all(base.join("ballast-4000-900.1/indexer.3")).unwrap();
    std::fs::create_dir_all(base.join("ballast-5000-1500.1")).unwrap();
    std::fs::create_dir_all(base.join("ballast-5000-2000.1/voice.1")).unwrap();
    std::fs::create_dir_all(base.join("user-session")).unwrap();
}

fn assert_cleaned(base: &Path, tree: &CgroupTree) {
    assert!(!base.join("ballast-4000-900.1").exists());
    assert!(!base.join("ballast-5000-1500.1").exists());
    assert!(base.join("ballast-5000-2000.1/voice.1").exists());
    assert!(base.join("user-session").exists());
    assert_eq!(tree.cleaned().len(), 2, "{:?}", tree.cleaned());
}

#[test]
fn a_v2_fixture_tree_gets_the_daemons_directory_and_a_plugins_limits() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    fixture_proc(
        root,
        4242,
        "0::/system.slice/ballast.service\n",
        "30 25 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate\n",
    );
    let service = root.join("sys/fs/cgroup/system.slice/ballast.service");
    write(
        &service.join("cgroup.controllers"),
        "cpuset cpu io memory pids\n",
    );
    write(&service.join("cgroup.subtree_control"), "");
    stale_dirs(&service);
    // The files the kernel would make in the daemon's directory and its plugins' cgroups.
    let own = service.join("ballast-4242-1000.1");
    cgroup_files(&own, &["cgroup.subtree_control"]);
    write(&own.join("cgroup.controllers"), "cpu memory pids\n");
    let plugin_files = ["cgroup.procs", "memory.high", "memory.max", "cpu.max"];
    cgroup_files(&own.join("probe.1"), &plugin_files);
    cgroup_files(&own.join("indexer.2"), &plugin_files);

    let tree = CgroupTree::setup(&roots(root)).expect("the fixture tree is usable");
    assert_eq!(tree.version(), Version::V2);
    assert_eq!(tree.dirs(), [own.as_path()]);
    assert_eq!(tree.cpu_unavailable(), None);
    assert_cleaned(&service, &tree);
    // The daemon's cgroup hands memory and cpu down, and so does the daemon's directory.
    assert_eq!(
        read(&service.join("cgroup.subtree_control")),
        "+memory +cpu"
    );
    assert_eq!(read(&own.join("cgroup.subtree_control")), "+memory +cpu");
    // The probe process joined its cgroup.
    assert_eq!(read(&own.join("probe.1/cgroup.procs")), "0");

    let limits = Limits::for_plugin(Some(200 << 20), 64 << 20, Some(0.25));
    let cgroup = tree.create("indexer", &limits).unwrap();
    let plugin = own.join("indexer.2");
    assert_eq!(cgroup.dir(), plugin);
    assert_eq!(cgroup.procs_files(), [plugin.join("cgroup.procs")]);
    assert_eq!(read(&plugin.join("memory.max")), "209715200");
    assert_eq!(read(&plugin.join("memory.high")), "67108864");
    assert_eq!(read(&plugin.join("cpu.max")), "25000 100000");
    // A level change retargets the throttling point.
    cgroup
        .apply(&Limits::for_plugin(Some(200 << 20), 16 << 20, Some(0.25)))
        .unwrap();
    assert_eq!(read(&plugin.join("memory.high")), "16777216");

    write(
        &plugin.join("memory.events"),
        "low 0\nhigh 40\nmax 3\noom 1\noom_kill 1\noom_group_kill 0\n",
    );
    write(&plugin.join("memory.current"), "104857600\n");
    write(&plugin.join("memory.peak"), "209715200\n");
    write(
        &plugin.join("cpu.stat"),
        "usage_usec 1500000\nuser_usec 1000000\nsystem_usec 500000\nnr_periods 10\nnr_throttled 4\nthrottled_usec 250000\n",
    );
    write(
        &plugin.join("memory.pressure"),
        "some avg10=12.50 avg60=3.00 avg300=0.75 total=987654\nfull avg10=6.25 avg60=1.50 avg300=0.25 total=123456\n",
    );
    let pressure = cgroup.read().memory_pressure.expect("its memory pressure");
    assert_eq!(pressure.some.avg10, 12.5);
    assert_eq!(pressure.some.total_us, 987_654);
    assert_eq!(pressure.full.unwrap().avg300, 0.25);
    let status = cgroup.status(&cgroup.read(), MemoryEventCounts::default(), None, true);
    assert_eq!(status.memory_pressure, Some(pressure));
    std::fs::remove_file(plugin.join("memory.pressure")).unwrap();
    assert_eq!(
        cgroup.read(),
        Reading {
            events: MemoryEventCounts {
                high: 40,
                max: 3,
                oom: 1,
                oom_kill: 1
            },
            under_oom: false,
            memory_current: Some(100 << 20),
            memory_peak: Some(200 << 20),
            cpu_usage_ns: Some(1_500_000_000),
            cpu_throttled_ns: Some(250_000_000),
            memory_pressure: None,
        }
    );
}

#[test]
fn a_v1_fixture_tree_spans_the_memory_cpu_and_cpuacct_hierarchies() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    fixture_proc(
        root,
        4343,
        "9:name=systemd:/\n4:memory:/process_api/abc\n2:cpuacct:/\n1:cpu:/\n0::/\n",
        "31 30 0:27 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu\n\
         32 30 0:28 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct\n\
         33 30 0:29 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory\n\
         35 30 0:31 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n",
    );
    let cgroups = root.join("sys/fs/cgroup");
    write(&cgroups.join("unified/cgroup.controllers"), "hugetlb\n");
    let memory = cgroups.join("memory/process_api/abc");
    stale_dirs(&memory);
    let memory_files = [
        "cgroup.procs",
        "memory.limit_in_bytes",
        "memory.soft_limit_in_bytes",
    ];
    let cpu_files = ["cgroup.procs", "cpu.cfs_period_us", "cpu.cfs_quota_us"];
    for name in ["probe.1", "voice.2"] {
        cgroup_files(
            &memory.join("ballast-4343-1000.1").join(name),
            &memory_files,
        );
        cgroup_files(
            &cgroups.join("cpu/ballast-4343-1000.1").join(name),
            &cpu_files,
        );
        cgroup_files(
            &cgroups.join("cpuacct/ballast-4343-1000.1").join(name),
            &["cgroup.procs"],
        );
    }

    let tree = CgroupTree::setup(&roots(root)).expect("the fixture tree is usable");
    assert_eq!(tree.version(), Version::V1);
    assert_eq!(
        tree.dirs(),
        [
            memory.join("ballast-4343-1000.1"),
            cgroups.join("cpu/ballast-4343-1000.1"),
            cgroups.join("cpuacct/ballast-4343-1000.1"),
        ]
    );
    assert_cleaned(&memory, &tree);

    let cgroup = tree
        .create(
            "voice",
            &Limits::for_plugin(Some(256 << 20), 32 << 20, Some(1.5)),
        )
        .unwrap();
    let in_memory = memory.join("ballast-4343-1000.1/voice.2");
    let in_cpu = cgroups.join("cpu/ballast-4343-1000.1/voice.2");
    assert_eq!(
        cgroup.procs_files(),
        [
            in_memory.join("cgroup.procs"),
            in_cpu.join("cgroup.procs"),
            cgroups.join("cpuacct/ballast-4343-1000.1/voice.2/cgroup.procs"),
        ]
    );
    assert_eq!(read(&in_memory.join("memory.limit_in_bytes")), "268435456");
    assert_eq!(
        read(&in_memory.join("memory.soft_limit_in_bytes")),
        "33554432"
    );
    assert_eq!(read(&in_cpu.join("cpu.cfs_period_us")), "100000");
    assert_eq!(read(&in_cpu.join("cpu.cfs_quota_us")), "150000");
    // The quota lifted.
    cgroup
        .apply(&Limits::for_plugin(Some(256 << 20), 32 << 20, None))
        .unwrap();
    assert_eq!(read(&in_cpu.join("cpu.cfs_quota_us")), "-1");

    write(&in_memory.join("memory.failcnt"), "2074\n");
    write(
        &in_memory.join("memory.oom_control"),
        "oom_kill_disable 0\nunder_oom 0\noom_kill 1\n",
    );
    write(&in_memory.join("memory.usage_in_bytes"), "0\n");
    write(&in_memory.join("memory.max_usage_in_bytes"), "268435456\n");
    write(
        &cgroups.join("cpuacct/ballast-4343-1000.1/voice.2/cpuacct.usage"),
        "418581885\n",
    );
    write(
        &in_cpu.join("cpu.stat"),
        "nr_periods 21\nnr_throttled 20\nthrottled_time 1169847458\n",
    );
    let reading = cgroup.read();
    assert_eq!(reading.events.max, 2074);
    assert_eq!(reading.events.oom_kill, 1);
    assert_eq!(reading.memory_peak, Some(256 << 20));
    assert_eq!(reading.cpu_usage_ns, Some(418_581_885));
    assert_eq!(reading.cpu_throttled_ns, Some(1_169_847_458));
    let mut tracker = EventTracker::new(cgroup.limits());
    assert_eq!(
        tracker.kill_reason(Some(&reading), true).as_deref(),
        Some("killed by the kernel at its memory limit 256 MiB")
    );
}

#[test]
fn a_tree_that_cannot_be_written_says_where_and_why_and_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    fixture_proc(
        root,
        4444,
        "4:memory:/a\n",
        "33 30 0:29 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory\n",
    );
    let base = root.join("sys/fs/cgroup/memory/a");
    std::fs::create_dir_all(&base).unwrap();
    // The directories can be made, but they are no cgroups: they have no files to write.
    let error = CgroupTree::setup(&roots(root)).unwrap_err();
    let probe = base.join("ballast-4444-1000.1/probe.1/memory.limit_in_bytes");
    assert_eq!(
        error,
        format!(
            "cannot write {}: No such file or directory (os error 2)",
            probe.display()
        )
    );
    assert!(!base.join("ballast-4444-1000.1").exists());

    // Read-only mounts and missing controllers are said as such.
    fixture_proc(
        root,
        4444,
        "4:memory:/a\n",
        "33 30 0:29 / /sys/fs/cgroup/memory ro,relatime - cgroup cgroup ro,memory\n",
    );
    assert_eq!(
        CgroupTree::setup(&roots(root)).unwrap_err(),
        "the cgroup v1 memory hierarchy holding /sys/fs/cgroup/memory/a is mounted read-only"
    );
    fixture_proc(root, 4444, "0::/\n", "");
    assert_eq!(
        CgroupTree::setup(&roots(root)).unwrap_err(),
        "no cgroup file system with the memory controller is mounted"
    );
    std::fs::remove_file(root.join("proc/self/mountinfo")).unwrap();
    assert!(
        CgroupTree::setup(&roots(root))
            .unwrap_err()
            .starts_with("cannot read "),
    );
}

#[test]
fn pressure_files_parse_as_the_kernel_writes_them_and_fail_saying_why() {
    let reading = parse_pressure(
        "memory.pressure",
        "some avg10=0.00 avg60=1.25 avg300=0.10 total=42\n",
    )
    .unwrap();
    assert_eq!(reading.some.avg60, 1.25);
    assert_eq!(reading.full, None);
    for (text, why) in [
        ("", "it has no `some` line"),
        ("some avg10=1 avg60=2 avg300=3\n", "lacks one of"),
        ("some avg10=1 avg10=2 avg300=3 total=4\n", "lacks one of"),
        (
            "some avg10=x avg60=2 avg300=3 total=4\n",
            "avg10: `x` is not a number",
        ),
        (
            "some avg10=-1 avg60=2 avg300=3 total=4\n",
            "avg10: `-1` is not a number",
        ),
        ("most avg10=1\n", "a line starts with `most`"),
        ("some avg10\n", "`avg10` is not key=value"),
    ] {
        let error = parse_pressure("memory.pressure", text)
            .unwrap_err()
            .to_string();
        assert!(error.contains("memory.pressure"), "{error}");
        assert!(error.contains(why), "{text:?}: {error}");
    }
}

proptest! {
    /// No text in a cgroup or proc file panics a reader.
    #[test]
    fn no_file_content_panics_the_readers(text in "(?s).{0,300}") {
        let _ = parse_memory_events(&text);
        let _ = parse_oom_control(&text);
        let _ = parse_cpu_stat(Version::V1, &text);
        let _ = parse_cpu_stat(Version::V2, &text);
        let _ = parse_number("memory.current", &text);
        let _ = parse_pressure("memory.pressure", &text);
        let _ = keyed("cpu.stat", &text, "usage_usec");
        let _ = parse_proc_cgroup(&text);
        if let Ok(mounts) = parse_mountinfo(&text) {
            let lines = parse_proc_cgroup(&text).unwrap_or_default();
            let _ = discover(&lines, &mounts);
        }
        let _ = Owner::parse(&text);
    }

    /// Lines shaped like the kernel's, with arbitrary words and numbers, parse or fail cleanly.
    #[test]
    fn kernel_shaped_lines_parse_or_fail_cleanly(
        lines in proptest::collection::vec(("[a-z_]{1,12}", "[0-9-]{0,22}"), 0..12),
    ) {
        let text: String = lines.iter().map(|(k, v)| format!("{k} {v}\n")).collect();
        let _ = parse_memory_events(&text);
        let _ = parse_oom_control(&text);
        let _ = parse_cpu_stat(Version::V2, &text);
        let mountinfo: String = lines
            .iter()
            .map(|(k, v)| format!("1 2 0:3 / /{k} rw - cgroup {v} rw,{k}\n"))
            .collect();
        let _ = parse_mountinfo(&mountinfo);
    }

    /// Whatever the readings (counters that jump, fall back, under_oom on and off), the tracker
    /// never panics, its counts never fall below the latest reading's, and a kill is only ever
    /// blamed on the kernel after an oom_kill.
    #[test]
    fn the_tracker_takes_any_readings(
        readings in proptest::collection::vec(
            (any::<u64>(), any::<u64>(), any::<u64>(), 0u64..3, any::<bool>()),
            0..20,
        ),
        sigkill in any::<bool>(),
    ) {
        let mut tracker = EventTracker::new(Limits::for_plugin(Some(1 << 30), 1 << 20, None));
        let mut any_kill = false;
        for (high, max, oom, oom_kill, under_oom) in readings {
            let reading = Reading {
                events: MemoryEventCounts { high, max, oom, oom_kill },
                under_oom,
                ..Reading::default()
            };
            let alerts = tracker.observe(&reading);
            prop_assert!(alerts.len() <= 4);
            prop_assert!(tracker.counts().oom_kill == oom_kill);
            any_kill |= oom_kill > 0;
            let _ = tracker.conditions();
        }
        let reason = tracker.clone().kill_reason(None, sigkill);
        prop_assert_eq!(reason.is_some(), sigkill && tracker.counts().oom_kill > 0);
        if reason.is_some() {
            prop_assert!(any_kill);
        }
    }
}

// -- The kernel itself, where the test may write cgroups. --

/// One real tree at a time: every tree of this process has the same name.
static REAL: Mutex<()> = Mutex::new(());

/// Says that a test is skipped and why, on a line of its own in the output of `cargo test`
/// (written past the test harness's capture of `println!`, which shows only failures).
pub(crate) fn skipped(test: &str, why: &str) {
    use std::io::Write as _;
    let _ = writeln!(std::io::stdout(), "SKIPPED: {test}: {why}");
}

/// The machine's cgroups, or `None` after saying why the test is skipped.
fn real_tree(test: &str) -> Option<CgroupTree> {
    match CgroupTree::setup(&CgroupRoots::default()) {
        Ok(tree) => Some(tree),
        Err(reason) => {
            skipped(test, &format!("cgroups are not writable here: {reason}"));
            None
        }
    }
}

/// A child in `cgroup` running `script`, and its exit once it comes.
fn spawn_in(
    cgroup: &PluginCgroup,
    script: &str,
) -> (ballast_process::Child, Arc<Mutex<Option<Exit>>>) {
    let exit: Arc<Mutex<Option<Exit>>> = Arc::default();
    let sink = Arc::clone(&exit);
    let child = spawn(
        &Spawn {
            program: PathBuf::from("sh"),
            args: vec!["-c".into(), script.into()],
            env: Vec::new(),
            working_dir: None,
            cgroups: cgroup.procs_files(),
        },
        false,
        None,
        Arc::new(|| Timestamp::from_secs(1_800_000_000)),
        Arc::new(move |event| {
            if let ChildEvent::Exited(e) = event {
                *sink.lock().unwrap() = Some(e);
            }
        }),
    )
    .expect("sh starts");
    (child, exit)
}

fn wait_exit(exit: &Mutex<Option<Exit>>, within: Duration) -> Option<Exit> {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if let Some(e) = *exit.lock().unwrap() {
            return Some(e);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    None
}

/// The cgroup path of `pid` in the hierarchy of `controller`.
fn cgroup_of(pid: u32, controller: &str) -> Option<String> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    parse_proc_cgroup(&text)
        .ok()?
        .into_iter()
        .find(|l| {
            l.controllers.iter().any(|c| c == controller) || (l.is_v2() && controller == "v2")
        })
        .map(|l| l.path)
}

#[test]
fn real_a_process_is_in_its_cgroup_from_its_start_and_the_cgroup_goes_with_it() {
    let _one = REAL.lock().unwrap_or_else(|p| p.into_inner());
    let Some(tree) = real_tree("a process in its cgroup") else {
        return;
    };
    let cgroup = tree
        .create("joiner", &Limits::for_plugin(Some(64 << 20), 0, None))
        .unwrap();
    // The shell reads its own cgroup as the first thing it does.
    let (child, exit) = spawn_in(&cgroup, "cat /proc/self/cgroup > /dev/null; exec sleep 30");
    let controller = if tree.version() == Version::V2 {
        "v2"
    } else {
        "memory"
    };
    let path = cgroup_of(child.pid(), controller).expect("the child's cgroup");
    assert!(
        cgroup.dir().ends_with(path.trim_start_matches('/')),
        "{path} is not {}",
        cgroup.dir().display()
    );
    // Its `cat` may still be there for a moment, in the same cgroup.
    assert!(cgroup.pids().contains(&child.pid()), "{:?}", cgroup.pids());
    let dirs: Vec<PathBuf> = cgroup
        .procs_files()
        .iter()
        .map(|f| f.parent().unwrap().to_owned())
        .collect();
    drop(child);
    assert!(wait_exit(&exit, Duration::from_secs(10)).is_some());
    drop(cgroup);
    for dir in &dirs {
        assert!(!dir.exists(), "{} is still there", dir.display());
    }
    let own: Vec<PathBuf> = tree.dirs().iter().map(|d| d.to_path_buf()).collect();
    drop(tree);
    for dir in &own {
        assert!(!dir.exists(), "{} is still there", dir.display());
    }
}

#[test]
fn real_a_process_that_cannot_join_its_cgroup_does_not_start() {
    let _one = REAL.lock().unwrap_or_else(|p| p.into_inner());
    let Some(tree) = real_tree("a failed join") else {
        return;
    };
    let cgroup = tree.create("nojoin", &Limits::default()).unwrap();
    let missing = cgroup.dir().join("gone/cgroup.procs");
    let error = spawn(
        &Spawn {
            program: PathBuf::from("true"),
            cgroups: vec![missing.clone()],
            ..Spawn::default()
        },
        false,
        None,
        Arc::new(|| Timestamp::from_secs(1_800_000_000)),
        Arc::new(|_| {}),
    )
    .unwrap_err();
    let join = CgroupJoinError::of(&error).expect("a join error");
    assert_eq!(join.path, missing);
    assert_eq!(join.error.raw_os_error(), Some(libc::ENOENT));
}

#[test]
fn real_a_fast_grower_is_stopped_by_the_kernel_at_its_limit() {
    let _one = REAL.lock().unwrap_or_else(|p| p.into_inner());
    let Some(tree) = real_tree("a fast grower") else {
        return;
    };
    let limit = 64 << 20;
    let limits = Limits::for_plugin(Some(limit), 0, None);
    let cgroup = tree.create("grower", &limits).unwrap();
    // 4 MiB a step, each byte written, as fast as Python goes.
    let (_child, exit) = spawn_in(
        &cgroup,
        "exec python3 -c 'a = []\nwhile True: a.append(b\"x\" * (4 << 20))'",
    );
    let exit = wait_exit(&exit, Duration::from_secs(60)).expect("the grower is stopped");
    assert_eq!(
        exit,
        Exit::Signal {
            signal: 9,
            core_dumped: false
        }
    );
    let reading = cgroup.read();
    let peak = reading.memory_peak.expect("the peak is readable");
    println!(
        "grower: limit {} MiB, peak {:.1} MiB, {} times at the limit, {} oom kills",
        limit >> 20,
        peak as f64 / 1048576.0,
        reading.events.max,
        reading.events.oom_kill
    );
    assert!(peak <= limit, "peak {peak} over the limit {limit}");
    assert!(
        peak > limit / 2,
        "peak {peak}: the grower never came near its limit"
    );
    let mut tracker = EventTracker::new(limits);
    let alerts: Vec<PluginAlert> = tracker
        .observe(&reading)
        .into_iter()
        .map(|(a, _)| a)
        .collect();
    assert!(alerts.contains(&PluginAlert::MemoryOomKill), "{alerts:?}");
    assert_eq!(
        tracker.kill_reason(None, true).as_deref(),
        Some("killed by the kernel at its memory limit 64 MiB")
    );
}

#[test]
fn real_limits_are_retargeted_in_place() {
    let _one = REAL.lock().unwrap_or_else(|p| p.into_inner());
    let Some(tree) = real_tree("retargeted limits") else {
        return;
    };
    let cgroup = tree
        .create(
            "levels",
            &Limits::for_plugin(Some(128 << 20), 64 << 20, Some(0.5)),
        )
        .unwrap();
    let file = |name: &str| {
        let dir = match (tree.version(), name.starts_with("cpu")) {
            (Version::V1, true) => cgroup.procs_files()[1].parent().unwrap().to_owned(),
            _ => cgroup.dir().to_owned(),
        };
        read(&dir.join(name)).trim().to_owned()
    };
    let (throttle, quota) = match tree.version() {
        Version::V2 => ("memory.high", "cpu.max"),
        Version::V1 => ("memory.soft_limit_in_bytes", "cpu.cfs_quota_us"),
    };
    assert_eq!(file(throttle), (64u64 << 20).to_string());
    cgroup
        .apply(&Limits::for_plugin(Some(128 << 20), 16 << 20, Some(0.5)))
        .unwrap();
    assert_eq!(file(throttle), (16u64 << 20).to_string());
    if tree.cpu_unavailable().is_none() {
        assert!(file(quota).starts_with("50000"), "{}", file(quota));
    }
}

#[test]
fn real_a_busy_loop_uses_no_more_than_its_cpu_quota() {
    let _one = REAL.lock().unwrap_or_else(|p| p.into_inner());
    let Some(tree) = real_tree("a CPU quota") else {
        return;
    };
    if let Some(why) = tree.cpu_unavailable() {
        skipped("a CPU quota", why);
        return;
    }
    let quota = 0.2;
    let cgroup = tree
        .create("spinner", &Limits::for_plugin(None, 0, Some(quota)))
        .unwrap();
    let (child, _exit) = spawn_in(&cgroup, "while :; do :; done");
    std::thread::sleep(Duration::from_millis(300));
    let (start, used_before) = (
        Instant::now(),
        cgroup.read().cpu_usage_ns.expect("CPU time"),
    );
    std::thread::sleep(Duration::from_secs(2));
    let used = cgroup.read().cpu_usage_ns.expect("CPU time") - used_before;
    let window = start.elapsed().as_secs_f64();
    drop(child);
    let cores = used as f64 / 1e9 / window;
    println!("spinner: quota {quota} cores, used {cores:.3} cores over {window:.2} s");
    // The kernel enforces the quota per 100 ms period; a period's overrun is the tolerance.
    assert!(
        cores <= quota * 1.1 + 0.05,
        "used {cores:.3} cores for a quota of {quota}"
    );
    assert!(cores > 0.0);
}

#[test]
fn real_the_cgroups_a_dead_daemon_left_are_removed_with_what_runs_in_them() {
    let _one = REAL.lock().unwrap_or_else(|p| p.into_inner());
    let Some(tree) = real_tree("stale cgroups") else {
        return;
    };
    // A daemon that can never have run (a pid above any pid_max) left a plugin's cgroup, with
    // a process still in it.
    let stale: Vec<PathBuf> = tree
        .dirs()
        .iter()
        .map(|d| d.parent().unwrap().join("ballast-4294967295-1.1/orphan.1"))
        .collect();
    for dir in &stale {
        std::fs::create_dir_all(dir).unwrap();
    }
    let mut orphan = std::process::Command::new("sleep")
        .arg("60")
        .spawn()
        .unwrap();
    for dir in &stale {
        std::fs::write(dir.join("cgroup.procs"), orphan.id().to_string()).unwrap();
    }
    drop(tree);
    let tree = real_tree("stale cgroups").expect("set up again");
    for dir in &stale {
        assert!(
            !dir.parent().unwrap().exists(),
            "{} is still there",
            dir.display()
        );
    }
    assert!(tree.cleaned().len() >= stale.len());
    // The orphan was killed.
    let status = orphan.wait().unwrap();
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(9)
    );
}

#[test]
fn a_leaf_move_that_cannot_enable_the_controllers_moves_the_daemon_back() {
    let dir = tempfile::tempdir().unwrap();
    let own = dir.path().join("ballast.service");
    write(&own.join("cgroup.procs"), "4242\n");
    // Not a file the daemon can write: the enabling fails as an undelegated cgroup's would.
    std::fs::create_dir_all(own.join("cgroup.subtree_control")).unwrap();
    std::fs::create_dir_all(own.join("daemon")).unwrap();
    write(&own.join("daemon/cgroup.procs"), "");
    let error = settle_in_leaf(&own, 4242, &["memory"]).unwrap_err();
    assert!(
        error.to_string().contains("cgroup.subtree_control"),
        "{error}"
    );
    assert_eq!(read(&own.join("cgroup.procs")), "4242", "moved back");

    // A cgroup that holds another process is left as it is.
    write(&own.join("cgroup.procs"), "4242\n77\n");
    let error = settle_in_leaf(&own, 4242, &["memory"]).unwrap_err();
    assert!(
        error.to_string().contains("other than the daemon (77)"),
        "{error}"
    );
    assert_eq!(read(&own.join("daemon/cgroup.procs")), "4242");
}

/// The v2 hierarchy's mount point and a controller it offers, when this process may write it.
fn writable_v2_with_a_controller(test: &str) -> Option<(PathBuf, String)> {
    let mounts = parse_mountinfo(&read(Path::new("/proc/self/mountinfo"))).unwrap();
    let Some(mount) = mounts.into_iter().find(|m| m.v2 && !m.read_only) else {
        skipped(test, "no writable cgroup v2 hierarchy is mounted");
        return None;
    };
    let root = mount.mount_point;
    let offered = std::fs::read_to_string(root.join("cgroup.controllers")).unwrap_or_default();
    let Some(controller) = offered.split_ascii_whitespace().next() else {
        skipped(test, "the cgroup v2 hierarchy offers no controller");
        return None;
    };
    let probe = root.join(format!("ballast-probe-{}", std::process::id()));
    if let Err(error) = std::fs::create_dir(&probe) {
        skipped(test, &format!("cannot create {}: {error}", probe.display()));
        return None;
    }
    let _ = std::fs::remove_dir(&probe);
    // The root cgroup offers it to its children (the root may hold processes and still do so).
    let _ = std::fs::write(
        root.join("cgroup.subtree_control"),
        format!("+{controller}"),
    );
    Some((root, controller.to_owned()))
}

#[test]
fn real_a_process_alone_in_its_v2_cgroup_moves_into_a_leaf_and_the_cgroup_hands_controllers_down() {
    let test = "the daemon's leaf";
    let Some((root, controller)) = writable_v2_with_a_controller(test) else {
        return;
    };
    let own = root.join(format!("ballast-leaf-test-{}", std::process::id()));
    std::fs::create_dir(&own).unwrap();
    let procs = own.join("cgroup.procs");
    let mut daemon = std::process::Command::new("sleep")
        .arg("60")
        .spawn()
        .unwrap();
    let mut other = std::process::Command::new("sleep")
        .arg("60")
        .spawn()
        .unwrap();
    std::fs::write(&procs, daemon.id().to_string()).unwrap();
    std::fs::write(&procs, other.id().to_string()).unwrap();
    // The kernel's rule: a cgroup that holds processes cannot hand controllers down.
    let enable = own.join("cgroup.subtree_control");
    let refused = std::fs::write(&enable, format!("+{controller}")).unwrap_err();
    assert_eq!(refused.raw_os_error(), Some(libc::EBUSY), "{refused}");

    // With another process beside it, the daemon stays where it is.
    let error = settle_in_leaf(&own, daemon.id(), &[controller.as_str()]).unwrap_err();
    assert!(
        error.to_string().contains(&other.id().to_string()),
        "{error}"
    );
    let own_path = format!("/{}", own.file_name().unwrap().to_string_lossy());
    assert_eq!(cgroup_of(daemon.id(), "v2").as_deref(), Some(&*own_path));

    // Alone, it moves into the leaf, and its cgroup hands the controller to a plugin's.
    other.kill().unwrap();
    other.wait().unwrap();
    let leaf = settle_in_leaf(&own, daemon.id(), &[controller.as_str()]).unwrap();
    assert_eq!(leaf, own.join("daemon"));
    assert_eq!(
        cgroup_of(daemon.id(), "v2"),
        Some(format!("{own_path}/daemon"))
    );
    assert!(
        read(&enable)
            .split_ascii_whitespace()
            .any(|c| c == controller)
    );
    let plugin = own.join("plugin.1");
    std::fs::create_dir(&plugin).unwrap();
    assert!(
        read(&plugin.join("cgroup.controllers"))
            .split_ascii_whitespace()
            .any(|c| c == controller)
    );

    daemon.kill().unwrap();
    daemon.wait().unwrap();
    for dir in [plugin, leaf, own] {
        std::fs::remove_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    }
}
