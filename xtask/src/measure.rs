//! `cargo xtask measure`: the closed loop measured on this machine with real pressure: reaction
//! latency (ticks, PSI trigger, emergency), the stall path (a load that makes the kernel reclaim
//! in a small memory cgroup, so that the PSI trigger, or the poller that stands in for it without
//! `CAP_SYS_RESOURCE`, fires for real), the daemon's overhead idle and under load, and flaps
//! under a load that oscillates around the shed threshold.
//!
//! An independent reader samples `/proc/meminfo` (or, for the stall path, the load's own
//! `memory.pressure`) and the daemon's RSS every 10 ms; it, not the daemon, says when pressure
//! crossed a threshold or tasks began to stall, and when the plugin's memory was released.

use std::os::unix::process::CommandExt as _;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use serde_json::Value;

/// What `measure` was asked to do.
pub struct Options {
    /// Latency rounds per path.
    pub rounds: u32,
    /// Seconds of each overhead and flap measurement.
    pub seconds: u64,
    /// Only this part (all of them when `None`).
    pub only: Option<Part>,
}

/// A part of the measurement, to run alone with `--only`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Part {
    /// Thresholds crossed: tick rounds, PSI-trigger-on rounds and emergency rounds.
    Latency,
    /// A memory stall in a small memory cgroup: the PSI trigger's event to the shed decision.
    Stall,
    /// The daemon's overhead idle and under load, and the flaps under an oscillating load.
    Overhead,
}

/// Milliseconds since the Unix epoch, the daemon's own time base.
fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// One reading of the independent reader.
#[derive(Clone, Copy, Debug)]
struct Reading {
    at_ms: u64,
    /// `1 - MemAvailable / MemTotal` of the host.
    used: f64,
    /// The daemon's resident set in bytes.
    daemon_rss: u64,
}

/// `MemTotal` and `MemAvailable` in bytes.
fn meminfo() -> Result<(u64, u64)> {
    let text = std::fs::read_to_string("/proc/meminfo").context("cannot read /proc/meminfo")?;
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<u64>().ok())
            .map(|kib| kib * 1024)
    };
    match (field("MemTotal:"), field("MemAvailable:")) {
        (Some(total), Some(available)) if total > 0 => Ok((total, available)),
        _ => bail!("/proc/meminfo has no MemTotal/MemAvailable"),
    }
}

fn used_now() -> Result<f64> {
    let (total, available) = meminfo()?;
    Ok(1.0 - available as f64 / total as f64)
}

/// The memory in use once it has stopped falling (what the latency rounds' loads and daemons
/// held is returned over a few seconds), at most 30 s from now: thresholds set while it still
/// falls would sit too high for the next load to reach.
fn settled_use() -> Result<f64> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut last = used_now()?;
    loop {
        std::thread::sleep(Duration::from_secs(1));
        let now = used_now()?;
        if (last - now).abs() < 0.002 || Instant::now() >= deadline {
            return Ok(now.min(last));
        }
        last = now;
    }
}

/// utime + stime in clock ticks and RSS in bytes of `pid`.
fn proc_figures(pid: u32) -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss_kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse::<u64>().ok())?;
    Some((ticks, rss_kib * 1024))
}

/// The 10 ms reader, on its own thread until dropped.
struct Reader {
    readings: Arc<Mutex<Vec<Reading>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Reader {
    fn start(pid: u32) -> Reader {
        let readings = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let readings = Arc::clone(&readings);
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    if let (Ok(used), Some((_, rss))) = (used_now(), proc_figures(pid)) {
                        readings
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .push(Reading {
                                at_ms: now_ms(),
                                used,
                                daemon_rss: rss,
                            });
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
            })
        };
        Reader {
            readings,
            stop,
            thread: Some(thread),
        }
    }

    fn readings(&self) -> Vec<Reading> {
        self.readings
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

impl Drop for Reader {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A stress-ng run in its own process group, killed with its workers when dropped.
struct Load(Option<Child>);

impl Load {
    fn memory(bytes: u64) -> Result<Load> {
        Load::spawn(&[
            "--vm",
            "2",
            "--vm-bytes",
            &format!("{}k", bytes / 1024),
            "--vm-keep",
            "--vm-populate",
            "--vm-hang",
            "0",
        ])
    }

    fn cpu(workers: usize) -> Result<Load> {
        Load::spawn(&["--cpu", &workers.to_string(), "--cpu-method", "int64"])
    }

    fn spawn(args: &[&str]) -> Result<Load> {
        Load::spawn_with(args, |_| {})
    }

    /// `stress-ng` with `args`, `prepare`d first (e.g. started in a cgroup).
    fn spawn_with(args: &[&str], prepare: impl FnOnce(&mut Command)) -> Result<Load> {
        let mut command = Command::new("stress-ng");
        prepare(&mut command);
        let child = command
            .args(["--timeout", "600s", "--quiet"])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .context("cannot start stress-ng (Debian package stress-ng)")?;
        Ok(Load(Some(child)))
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let group = child.id() as i32;
            // SAFETY: kill(2) on the process group we created has no memory-safety preconditions.
            unsafe { libc::kill(-group, libc::SIGKILL) };
            let _ = child.wait();
            let deadline = Instant::now() + Duration::from_secs(10);
            // SAFETY: as above; signal 0 only checks that the group still exists.
            while unsafe { libc::kill(-group, 0) } == 0 && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A release daemon on a config of its own in a temporary directory, stopped when dropped.
struct Daemon {
    daemon: ballast_testkit::daemon::Daemon,
    _dir: tempfile::TempDir,
}

impl Daemon {
    fn start(release: &Path, config: &str, name: &str) -> Result<Daemon> {
        Daemon::start_in(release, config, name, None, None)
    }

    /// [`Daemon::start`] in the cgroup whose `cgroup.procs` file is `cgroup` and the cgroup v2
    /// group whose `cgroup.procs` file is `pressure_group`.
    fn start_in(
        release: &Path,
        config: &str,
        name: &str,
        cgroup: Option<&Path>,
        pressure_group: Option<&Path>,
    ) -> Result<Daemon> {
        let dir = tempfile::Builder::new()
            .prefix(&format!("ballast-measure-{name}-"))
            .tempdir()
            .context("cannot create a temporary directory")?;
        let config_path = dir.path().join("ballast.toml");
        std::fs::write(&config_path, config).context("cannot write the config")?;
        let mut options = ballast_testkit::daemon::Options::new(release.join("ballast"), release);
        // The monitor says at debug level when the PSI trigger woke it between ticks.
        options.log_filter = "info,ballast_monitor=debug".to_owned();
        options.cgroup_procs = cgroup.map(Path::to_owned);
        options.pressure_group_procs = pressure_group.map(Path::to_owned);
        let mut daemon = ballast_testkit::daemon::Daemon::spawn(
            &options,
            config_path,
            dir.path().join("data"),
            ballast_testkit::daemon::free_port(),
        )?;
        daemon.wait_healthy(Duration::from_secs(30))?;
        Ok(Daemon { daemon, _dir: dir })
    }

    fn pid(&self) -> u32 {
        self.daemon.pid().unwrap_or(0)
    }

    fn get(&self, path: &str) -> Result<Value> {
        ballast_testkit::http::get_json(&format!("{}{path}", self.daemon.url))
            .map_err(anyhow::Error::msg)
    }

    fn wait(
        &self,
        what: &str,
        timeout: Duration,
        mut ok: impl FnMut(&Daemon) -> bool,
    ) -> Result<()> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if ok(self) {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let log = self.daemon.log();
        let tail: Vec<&str> = log.lines().rev().take(20).collect();
        bail!(
            "timed out waiting for {what}; daemon log (last lines, newest first):\n{}",
            tail.join("\n")
        )
    }

    fn decisions(&self) -> Result<Vec<Value>> {
        let mut list = self
            .get("/decisions?tail=1000")?
            .as_array()
            .cloned()
            .unwrap_or_default();
        list.sort_by_key(|d| d["at"].as_u64().unwrap_or_default());
        Ok(list)
    }

    fn level(&self, plugin: &str) -> Option<(String, Option<u64>)> {
        let p = self.get(&format!("/plugins/{plugin}")).ok()?;
        Some((p["state"].as_str()?.to_owned(), p["level"].as_u64()))
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.daemon.terminate(Duration::from_secs(20));
    }
}

/// The example plugins' working sets at level 0 in the overhead configs, in MiB.
const PLUGINS_MIB: u64 = 16 + 16 + 8 + 2;

/// Thresholds relative to the memory in use now.
#[derive(Clone, Copy)]
struct Plan {
    shed: f64,
    restore: f64,
    emergency: f64,
}

fn config(plan: Plan, interval: &str, psi: bool, stabilization: &str, voice_mb: u64) -> String {
    format!(
        r#"
[default]
use_tier_thresholds = false

[default.monitor]
interval = "{interval}"
psi_trigger = {psi}
resources = ["memory"]

[default.scaler]
mode = "enforce"
cooldown = "1s"
stabilization = "{stabilization}"

# Shedding itself is measured: no concurrency step first.
[default.scaler.concurrency]
enabled = false

[default.scaler.thresholds.memory]
shed = {shed:.4}
restore = {restore:.4}
emergency = {emergency:.4}

[default.tier.plugins.voice]
levels = [{{ level = 0, min_tier = "constrained" }}]

[[default.plugins]]
name = "voice"
path = "libvoice.so"
priority = 10
config = {{ workload = {{ working_set_mb = [{voice_mb}, 16], cpu_duty = 0.0 }} }}

[[default.plugins]]
name = "android"
path = "libandroid.so"
priority = 20
config = {{ workload = {{ working_set_mb = [16, 4], cpu_duty = 0.0 }} }}

[[default.plugins]]
name = "discord"
path = "libdiscord.so"
priority = 30
config = {{ workload = {{ working_set_mb = [8], cpu_duty = 0.0 }} }}

[[default.plugins]]
name = "stubs"
path = "libstubs.so"
priority = 100
essential = true
config = {{ workload = {{ working_set_mb = [2], cpu_duty = 0.0 }} }}
"#,
        shed = plan.shed,
        restore = plan.restore,
        emergency = plan.emergency,
    )
}

/// What one latency round measured, in milliseconds.
struct Round {
    /// Crossing -> first decision of the rule.
    decision: i64,
    /// Crossing -> the daemon's RSS shows the plugin's memory gone.
    released: Option<i64>,
    /// Whether the PSI trigger woke the monitor between ticks.
    psi_woke: bool,
}

/// One step of memory pressure past `threshold`: when the reader saw it crossed, when the daemon
/// decided (`rule`), when the memory went.
fn latency_round(
    release: &Path,
    name: &str,
    rule: &str,
    threshold: impl Fn(Plan) -> f64,
    psi: bool,
    step: f64,
    emergency_at: f64,
) -> Result<Round> {
    let base = used_now()?;
    let (total, _) = meminfo()?;
    let plan = Plan {
        shed: base + 0.10,
        restore: base + 0.05,
        emergency: base + emergency_at,
    };
    let voice_mb = 512;
    let daemon = Daemon::start(release, &config(plan, "1s", psi, "1h", voice_mb), name)?;
    daemon.wait("voice enabled", Duration::from_secs(30), |d| {
        d.level("voice") == Some(("enabled".into(), Some(0)))
    })?;
    // Let the first samples settle the smoothing before the step.
    std::thread::sleep(Duration::from_millis(2500));
    let reader = Reader::start(daemon.pid());
    std::thread::sleep(Duration::from_millis(200));
    let mut load = Load::memory((total as f64 * step) as u64)?;
    daemon.wait(
        &format!("a {rule} decision"),
        Duration::from_secs(30),
        |d| {
            d.decisions()
                .is_ok_and(|all| all.iter().any(|x| x["rule"] == rule && x["kind"] == "shed"))
        },
    )?;
    // Give the release time to show.
    std::thread::sleep(Duration::from_millis(1500));
    let readings = reader.readings();
    drop(reader);
    load.stop();
    let limit = threshold(plan);
    let crossed = readings
        .iter()
        .find(|r| r.used >= limit)
        .context("the reader never saw the threshold crossed")?;
    let decided = daemon
        .decisions()?
        .into_iter()
        .find(|d| d["rule"] == rule && d["kind"] == "shed")
        .and_then(|d| d["at"].as_u64())
        .context("no decision")?;
    let before = readings
        .iter()
        .filter(|r| r.at_ms <= decided)
        .map(|r| r.daemon_rss)
        .max()
        .unwrap_or(0);
    let freed = (voice_mb << 20) * 3 / 4;
    let released = readings
        .iter()
        .find(|r| r.at_ms >= decided && r.daemon_rss + freed <= before)
        .map(|r| r.at_ms as i64 - crossed.at_ms as i64);
    let log = daemon.daemon.log();
    Ok(Round {
        decision: decided as i64 - crossed.at_ms as i64,
        released,
        psi_woke: log.contains("woken outside the tick"),
    })
}

fn summary(name: &str, rounds: &[Round]) {
    let decision: Vec<i64> = rounds.iter().map(|r| r.decision).collect();
    let released: Vec<i64> = rounds.iter().filter_map(|r| r.released).collect();
    println!("  {name}");
    println!("    to the decision         {}", figures(decision));
    println!("    to the memory released  {}", figures(released));
    println!(
        "    PSI trigger woke the monitor in {} of {} rounds",
        rounds.iter().filter(|r| r.psi_woke).count(),
        rounds.len()
    );
}

/// The memory cgroup of a stall round: room for what the plugins declare (456 MiB) under the
/// shed threshold, so that they all start, and small enough that the load's file writes are
/// reclaimed by the load itself all the time (memcg direct reclaim is a memory stall).
const STALL_LIMIT: u64 = 2 << 30;

/// What the stall round's load holds as anonymous memory: with the daemon and its plugins
/// (about 100 MiB) the cgroup's working set is about 0.8 of the limit, over the shed threshold
/// and far enough from the limit that nothing is killed; the rest of the limit is page cache
/// that the load's writers fill and reclaim.
const STALL_ANON: u64 = 1536 << 20;

/// Milliseconds since the epoch of a daemon log line's leading RFC 3339 UTC time
/// (`2026-12-06T03:10:11.123456Z  DEBUG ...`), or `None` if it has none.
fn log_time_ms(line: &str) -> Option<u64> {
    let at = humantime::parse_rfc3339(line.split_whitespace().next()?).ok()?;
    let since_epoch = at.duration_since(std::time::UNIX_EPOCH).ok()?;
    u64::try_from(since_epoch.as_millis()).ok()
}

/// The `some` total (microseconds) of a pressure file.
fn stall_total(path: &Path) -> Option<u64> {
    let text = std::fs::read_to_string(path).ok()?;
    text.lines()
        .find(|l| l.starts_with("some "))?
        .split_whitespace()
        .find_map(|f| f.strip_prefix("total="))?
        .parse()
        .ok()
}

/// The time of the first reading at or after `started` whose total (`(time ms, total µs)`) is
/// 150 ms over that of the oldest reading within the 2 s before it: when a reader of that file
/// would have fired the trigger `some 150000 2000000`.
fn threshold_reached(readings: &[(u64, u64)], started: u64) -> Option<u64> {
    readings
        .iter()
        .enumerate()
        .filter(|(_, r)| r.0 >= started)
        .find(|(i, r)| {
            readings[..*i]
                .iter()
                .find(|o| o.0 + 2000 >= r.0)
                .is_some_and(|o| r.1.saturating_sub(o.1) >= 150_000)
        })
        .map(|(_, r)| r.0)
}

/// What one stall round measured: milliseconds from the load's start, `None` when it did not
/// happen before the first shed decision.
struct StallRound {
    /// The reader saw the load's tasks stall.
    stall_seen: Option<i64>,
    /// The PSI trigger's events (the daemon's log: the kernel trigger's `PSI trigger fired` or
    /// the poller's `PSI stall detected`) up to the decision; negative ones came before the
    /// writers started.
    events: Vec<i64>,
    /// Which fired: `kernel trigger` or `poller` (the daemon says which it uses at start).
    mode: &'static str,
    /// The reader's figures reached the trigger's threshold, 150 ms of stall within 2 s.
    threshold_seen: Option<i64>,
    /// The same on the daemon's own file, which the reader reads where the daemon polls it.
    daemon_threshold_seen: Option<i64>,
    /// The first shed decision.
    decision: i64,
    /// Its rule.
    rule: String,
    /// Whether the monitor was woken outside its tick before the decision.
    woken: bool,
    /// The daemon's RSS showed the plugin's memory gone.
    released: Option<i64>,
    /// The load's stall within the round, in milliseconds of its `some` total.
    stalled_ms: u64,
}

/// One stall round: the daemon, its plugins and a load in a memory cgroup of their own, the
/// load's file writers reclaiming in it. Ticks an hour apart: the only sample the daemon takes
/// during the round is the one its PSI trigger asks for.
fn stall_round(release: &Path, name: &str) -> Result<StallRound> {
    let cgroup =
        ballast_testkit::cgroup::MemoryCgroup::create("ballast-measure-stall", STALL_LIMIT)
            .map_err(|e| anyhow::anyhow!("the stall round needs a memory cgroup: {e}"))?;
    // The daemon in a cgroup v2 group of its own arms its trigger on that group's
    // memory.pressure, which counts its own and the load's stalls, not those of the rest of the
    // machine; the reader reads the load's group below it, a PSI group of its own, so that its
    // reads every 10 ms cannot take the place of the trigger's checks.
    let daemon_group = ballast_testkit::cgroup::PressureGroup::create("ballast-measure-stall")
        .map_err(|e| anyhow::anyhow!("the stall round needs a cgroup v2 group: {e}"))?;
    let group = daemon_group
        .child("load")
        .map_err(|e| anyhow::anyhow!("the stall round needs a cgroup v2 group: {e}"))?;
    let files = tempfile::Builder::new()
        .prefix("ballast-measure-stall-load-")
        .tempdir()
        .context("cannot create a temporary directory")?;
    // Fractions of the cgroup's limit: the daemon and its plugins alone are under 0.1, the
    // load's memory takes it to about 0.8.
    let plan = Plan {
        shed: 0.45,
        restore: 0.35,
        emergency: 0.99,
    };
    let voice_mb = 64;
    let daemon = Daemon::start_in(
        release,
        &config(plan, "1h", true, "1h", voice_mb),
        name,
        Some(&cgroup.procs_file()),
        Some(&daemon_group.procs_file()),
    )?;
    if !daemon
        .daemon
        .log()
        .contains("memory pressure trigger armed")
    {
        bail!("the daemon armed no PSI trigger:\n{}", daemon.daemon.log());
    }

    daemon.wait("voice enabled", Duration::from_secs(30), |d| {
        d.level("voice") == Some(("enabled".into(), Some(0)))
    })?;
    std::thread::sleep(Duration::from_millis(500));
    let pressure = group.memory_pressure();
    let armed_on = daemon_group
        .memory_pressure()
        .to_string_lossy()
        .into_owned();
    // Where the daemon polls its file rather than arming the kernel's trigger, the reader reads
    // that file too (a reader cannot make a poller miss anything), to tell the poller's delay
    // from the difference between the two groups' figures.
    let polled = daemon
        .daemon
        .log()
        .lines()
        .any(|l| l.contains("polling") && l.contains(&armed_on));
    let daemon_pressure = polled.then(|| daemon_group.memory_pressure());
    type Reading = (u64, u64, u64, Option<u64>);
    let readings: Arc<Mutex<Vec<Reading>>> = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let (readings, stop, pressure) =
            (Arc::clone(&readings), Arc::clone(&stop), pressure.clone());
        let pid = daemon.pid();
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                if let (Some(total), Some((_, rss))) = (stall_total(&pressure), proc_figures(pid)) {
                    let daemons = daemon_pressure.as_deref().and_then(stall_total);
                    readings.lock().unwrap_or_else(|p| p.into_inner()).push((
                        now_ms(),
                        total,
                        rss,
                        daemons,
                    ));
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        })
    };
    let temp = files.path().to_string_lossy().into_owned();
    let in_cgroups = |command: &mut Command| {
        cgroup.start_in(command);
        group.start_in(command);
    };
    // The memory first, held and populated (which stalls nothing): the stall the trigger
    // reports is then the writers', and the working set is over shed already (no tick has
    // sampled it).
    let mut held = Load::spawn_with(
        &[
            "--vm",
            "1",
            "--vm-bytes",
            &format!("{}k", STALL_ANON / 1024),
            "--vm-keep",
            "--vm-populate",
            "--vm-hang",
            "0",
        ],
        in_cgroups,
    )?;
    let usage = ["memory.usage_in_bytes", "memory.current"]
        .iter()
        .map(|f| cgroup.dir().join(f))
        .find(|f| f.exists())
        .context("the memory cgroup has no usage file")?;
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::fs::read_to_string(&usage)
        .ok()
        .and_then(|t| t.trim().parse::<u64>().ok())
        .is_none_or(|u| u < STALL_ANON)
    {
        if Instant::now() >= deadline {
            bail!("the load's memory was not populated within 60 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let base = stall_total(&pressure).context("cannot read the load's memory.pressure")?;
    let started = now_ms();
    let mut load = Load::spawn_with(
        &["--hdd", "2", "--hdd-bytes", "1g", "--temp-path", &temp],
        in_cgroups,
    )?;
    let waited = daemon.wait("a shed decision", Duration::from_secs(30), |d| {
        d.decisions()
            .is_ok_and(|all| all.iter().any(|x| x["kind"] == "shed"))
    });
    if waited.is_ok() {
        // Give the release time to show.
        std::thread::sleep(Duration::from_millis(1500));
    }
    stop.store(true, Ordering::Relaxed);
    let _ = reader.join();
    load.stop();
    held.stop();
    waited?;
    let readings = readings.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let first = daemon
        .decisions()?
        .into_iter()
        .find(|d| d["kind"] == "shed")
        .context("no shed decision")?;
    let decided = first["at"].as_u64().context("a decision without a time")?;
    let log = daemon.daemon.log();
    let since = |at: u64| at as i64 - started as i64;
    let is_event = |l: &str| l.contains("PSI trigger fired") || l.contains("PSI stall detected");
    if let Some(other) = log.lines().find(|l| is_event(l) && !l.contains(&armed_on)) {
        bail!("the daemon's trigger is not on {armed_on}: {other}");
    }
    let mode = if polled || log.contains("PSI stall detected") {
        "poller"
    } else {
        "kernel trigger"
    };
    let events: Vec<i64> = log
        .lines()
        .filter(|l| is_event(l))
        .filter_map(log_time_ms)
        .filter(|&at| at <= decided)
        .map(since)
        .collect();
    let woken = log
        .lines()
        .filter(|l| l.contains("woken outside the tick"))
        .filter_map(log_time_ms)
        .any(|at| at >= started && at <= decided);
    let stall_seen = readings
        .iter()
        .find(|r| r.0 >= started && r.1 > base)
        .map(|r| since(r.0));
    let load_totals: Vec<(u64, u64)> = readings.iter().map(|r| (r.0, r.1)).collect();
    let threshold_seen = threshold_reached(&load_totals, started).map(since);
    let daemon_totals: Vec<(u64, u64)> =
        readings.iter().filter_map(|r| Some((r.0, r.3?))).collect();
    let daemon_threshold_seen = threshold_reached(&daemon_totals, started).map(since);
    let before = readings
        .iter()
        .filter(|r| r.0 <= decided)
        .map(|r| r.2)
        .max()
        .unwrap_or(0);
    let freed = (voice_mb << 20) * 3 / 4;
    let released = readings
        .iter()
        .find(|r| r.0 >= decided && r.2 + freed <= before)
        .map(|r| since(r.0));
    let stalled_ms = readings
        .last()
        .map_or(0, |r| r.1.saturating_sub(base) / 1000);
    Ok(StallRound {
        stall_seen,
        events,
        mode,
        threshold_seen,
        daemon_threshold_seen,
        decision: since(decided),
        rule: first["rule"].as_str().unwrap_or("?").to_owned(),
        woken,
        released,
        stalled_ms,
    })
}

/// Median, max and every value of `v`, or `-` when it is empty.
fn figures(mut v: Vec<i64>) -> String {
    v.sort_unstable();
    if v.is_empty() {
        return "-".to_owned();
    }
    format!(
        "median {} ms, max {} ms ({} rounds: {})",
        v[v.len() / 2],
        v[v.len() - 1],
        v.len(),
        v.iter()
            .map(|x| x.to_string())
            .collect::<Vec<_>>()
            .join(" ")
    )
}

/// The stall rounds, each printed as it ends, then their figures.
fn stall(release: &Path, rounds: u32) -> Result<()> {
    println!(
        "\nthe stall path: the daemon, its plugins and a load in a {} MiB memory cgroup \
         (stress-ng: {} MiB held first, then 2 writers of 1 GiB files reclaiming their page \
         cache), thresholds shed 0.45 / restore 0.35 of the limit, ticks an hour apart, the \
         trigger (the kernel's, or the poller where it is unprivileged) on the memory.pressure \
         of the daemon's cgroup v2 group; times from the writers' start; the load's stall read \
         every 10 ms from the memory.pressure of its own group below the daemon's:",
        STALL_LIMIT >> 20,
        STALL_ANON >> 20
    );
    // Without the cgroups (not root, no memory controller, no v2 hierarchy beside v1) there is
    // nothing to measure here; the other parts still run.
    let usable =
        ballast_testkit::cgroup::MemoryCgroup::create("ballast-measure-probe", STALL_LIMIT)
            .and_then(|_| {
                ballast_testkit::cgroup::PressureGroup::create("ballast-measure-probe").map(drop)
            });
    if let Err(reason) = usable {
        println!("  skipped: {reason}");
        return Ok(());
    }
    let mut all = Vec::new();
    let mut elsewhere = 0;
    for i in 0..rounds {
        // A round whose decision came before the writers started measured no stall of theirs
        // (the trigger fired while the memory was populated), and is run again.
        for attempt in 0..3 {
            let round = stall_round(release, &format!("stall-{i}-{attempt}"))?;
            let show = |v: Option<i64>| v.map_or("-".to_owned(), |v| format!("{v} ms"));
            println!(
                "  round {i}: stall seen at {}, 150 ms of it within 2 s at {} (on the daemon's \
                 file: {}), {} events at {:?} ms, first shed decision ({}) at {} ms, memory \
                 released at {}; the load stalled {} ms in all",
                show(round.stall_seen),
                show(round.threshold_seen),
                show(round.daemon_threshold_seen),
                round.mode,
                round.events,
                round.rule,
                round.decision,
                show(round.released),
                round.stalled_ms
            );
            if round.decision >= 0 {
                all.push(round);
                break;
            }
            elsewhere += 1;
            println!("    (decided before the writers started: run again)");
        }
    }
    if elsewhere > 0 {
        println!(
            "  {elsewhere} rounds were run again: the trigger fired before the writers started"
        );
    }
    // The event that led to the decision is the last one before it.
    let gaps =
        |f: &dyn Fn(&StallRound) -> Option<i64>| -> Vec<i64> { all.iter().filter_map(f).collect() };
    let first_event = |r: &StallRound| r.events.iter().find(|&&e| e >= 0).copied();
    let from_event = gaps(&|r| Some(r.decision - r.events.last()?));
    let from_stall = gaps(&|r| Some(r.decision - r.stall_seen?));
    let from_threshold = gaps(&|r| Some(r.decision - r.threshold_seen?));
    let daemon_threshold_to_event = gaps(&|r| Some(first_event(r)? - r.daemon_threshold_seen?));
    let daemon_threshold_to_decision = gaps(&|r| Some(r.decision - r.daemon_threshold_seen?));
    let stall_to_event = gaps(&|r| Some(first_event(r)? - r.stall_seen?));
    let released = gaps(&|r| Some(r.released? - r.events.last()?));
    println!(
        "  the trigger's event -> first shed decision   {}",
        figures(from_event)
    );
    println!(
        "  stall seen by the reader -> first shed decision  {}",
        figures(from_stall)
    );
    println!(
        "  the reader's 150 ms within 2 s -> decision   {}",
        figures(from_threshold)
    );
    if !daemon_threshold_to_event.is_empty() {
        println!(
            "  150 ms within 2 s on the daemon's file -> its first event  {}",
            figures(daemon_threshold_to_event)
        );
        println!(
            "  150 ms within 2 s on the daemon's file -> decision         {}",
            figures(daemon_threshold_to_decision)
        );
    }
    println!(
        "  stall seen -> the trigger's first event      {}",
        figures(stall_to_event)
    );
    println!(
        "  the trigger's event -> memory released       {}",
        figures(released)
    );
    println!(
        "  the trigger fired between the writers' start and the decision in {} of {} rounds (the monitor was woken \
         outside its tick in {}; {})",
        all.iter()
            .filter(|r| r.events.iter().any(|&e| e >= 0))
            .count(),
        all.len(),
        all.iter().filter(|r| r.woken).count(),
        {
            let polled = all.iter().filter(|r| r.mode == "poller").count();
            format!(
                "the poller in {polled}, the kernel's trigger in {}",
                all.len() - polled
            )
        }
    );
    Ok(())
}

/// CPU share of one core and RSS of the daemon over `seconds`, while `during` runs.
fn overhead(pid: u32, seconds: u64) -> Result<(f64, u64, u64)> {
    let (ticks_before, rss_before) = proc_figures(pid).context("cannot read the daemon")?;
    let started = Instant::now();
    let mut rss_max = rss_before;
    while started.elapsed() < Duration::from_secs(seconds) {
        std::thread::sleep(Duration::from_millis(500));
        if let Some((_, rss)) = proc_figures(pid) {
            rss_max = rss_max.max(rss);
        }
    }
    let (ticks_after, rss_after) = proc_figures(pid).context("cannot read the daemon")?;
    // USER_HZ is 100 on every architecture ballast runs on.
    let cpu = (ticks_after - ticks_before) as f64 / 100.0 / started.elapsed().as_secs_f64();
    Ok((cpu, rss_after, rss_max))
}

/// Runs every measurement and prints the figures.
pub fn measure(release: &Path, options: &Options) -> Result<()> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let (total, _) = meminfo()?;
    println!(
        "machine: {cores} cores, {:.1} GiB memory, {:.1}% in use at start",
        total as f64 / (1u64 << 30) as f64,
        used_now()? * 100.0
    );

    let part = |p: Part| options.only.is_none_or(|only| only == p);
    if part(Part::Latency) {
        latency(release, options.rounds)?;
    }
    if part(Part::Stall) {
        stall(release, options.rounds)?;
    }
    if part(Part::Overhead) {
        overhead_and_flaps(release, options.seconds)?;
    }
    Ok(())
}

/// The latency rounds of every path, then their figures.
fn latency(release: &Path, rounds: u32) -> Result<()> {
    println!("\nreaction latency, memory step from 10 ms /proc/meminfo readings:");
    let mut ticks = Vec::new();
    let mut psi = Vec::new();
    let mut emergency = Vec::new();
    for i in 0..rounds {
        let shed = |p: Plan| p.shed;
        let tick = format!("tick-{i}");
        ticks.push(latency_round(
            release,
            &tick,
            "high_pressure",
            shed,
            false,
            0.18,
            0.25,
        )?);
        let trigger = format!("psi-{i}");
        psi.push(latency_round(
            release,
            &trigger,
            "high_pressure",
            shed,
            true,
            0.18,
            0.25,
        )?);
        let step = format!("emergency-{i}");
        let emergency_at = |p: Plan| p.emergency;
        emergency.push(latency_round(
            release,
            &step,
            "emergency",
            emergency_at,
            false,
            0.22,
            0.13,
        )?);
    }
    summary("shed threshold crossed, 1 s ticks, PSI trigger off", &ticks);
    summary("shed threshold crossed, 1 s ticks, PSI trigger on", &psi);
    summary("emergency threshold crossed, 1 s ticks", &emergency);
    Ok(())
}

/// The daemon's overhead idle and under load, and the flaps under an oscillating load.
fn overhead_and_flaps(release: &Path, seconds: u64) -> Result<()> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let (total, _) = meminfo()?;

    println!(
        "\noverhead over {} s (RSS without the plugins' {PLUGINS_MIB} MiB of working sets):",
        seconds
    );
    let base = settled_use()?;
    let plan = Plan {
        shed: base + 0.10,
        restore: base + 0.05,
        emergency: base + 0.40,
    };
    println!(
        "  memory in use {:.3}: shed {:.3}, restore {:.3}",
        base, plan.shed, plan.restore
    );
    {
        let daemon = Daemon::start(release, &config(plan, "1s", true, "10s", 16), "idle")?;
        std::thread::sleep(Duration::from_secs(3));
        let (cpu, rss, rss_max) = overhead(daemon.pid(), seconds)?;
        println!(
            "  idle        cpu {:.3}% of one core, rss {:.1} MiB (max {:.1} MiB)",
            cpu * 100.0,
            (rss - (PLUGINS_MIB << 20).min(rss)) as f64 / 1048576.0,
            (rss_max - (PLUGINS_MIB << 20).min(rss_max)) as f64 / 1048576.0
        );
    }

    println!(
        "\nflaps: memory load switched on until the reading crosses shed (then 2 s more) and off \
         until it is back under (then 3 s more), for {} s, all CPUs busy, stabilization 10 s:",
        seconds
    );
    let daemon = Daemon::start(release, &config(plan, "1s", true, "10s", 16), "noisy")?;
    std::thread::sleep(Duration::from_secs(3));
    let reader = Reader::start(daemon.pid());
    let pid = daemon.pid();
    let stop = Arc::new(AtomicBool::new(false));
    let oscillator = {
        let stop = Arc::clone(&stop);
        // stress-ng holds about two thirds of what it is asked for here; this lands well over
        // the shed threshold (10 points over what was in use).
        let bytes = (total as f64 * 0.25) as u64;
        std::thread::spawn(move || -> Result<()> {
            let cpu = Load::cpu(cores)?;
            // Each half-cycle waits for the reading to cross (filling gigabytes with every CPU
            // busy takes seconds, more on a slow or shared machine), then holds a little: the
            // load crosses the shed threshold every cycle whatever the machine's speed.
            let until = |above: bool, limit: Duration| {
                let deadline = Instant::now() + limit;
                while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                    let used = used_now().unwrap_or(0.0);
                    if (used >= plan.shed) == above {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
            };
            while !stop.load(Ordering::Relaxed) {
                let mut load = Load::memory(bytes)?;
                until(true, Duration::from_secs(20));
                std::thread::sleep(Duration::from_secs(2));
                load.stop();
                until(false, Duration::from_secs(20));
                std::thread::sleep(Duration::from_secs(3));
            }
            drop(cpu);
            Ok(())
        })
    };
    let (cpu, rss, rss_max) = overhead(pid, seconds)?;
    stop.store(true, Ordering::Relaxed);
    match oscillator.join() {
        Ok(Ok(())) => {}
        Ok(Err(e)) => eprintln!("  the memory load failed: {e:#}"),
        Err(_) => eprintln!("  the memory load thread panicked"),
    }
    let readings = reader.readings();
    drop(reader);
    println!(
        "  under load  cpu {:.3}% of one core, rss max {:.1} MiB while the plugins ran ({:.1} MiB \
         at the end, with them shed), with {cores} CPUs busy and the memory load switching",
        cpu * 100.0,
        (rss_max - (PLUGINS_MIB << 20).min(rss_max)) as f64 / 1048576.0,
        rss as f64 / 1048576.0
    );
    let all = daemon.decisions()?;
    let count = |kind: &str| all.iter().filter(|d| d["kind"] == kind).count();
    let mut flaps = 0;
    for (i, d) in all.iter().enumerate() {
        if d["kind"] != "restore" {
            continue;
        }
        let at = d["at"].as_u64().unwrap_or_default();
        if all[i..].iter().any(|s| {
            s["kind"] == "shed"
                && s["plugin"] == d["plugin"]
                && s["at"].as_u64().unwrap_or_default() < at + 10_000
        }) {
            flaps += 1;
        }
    }
    let mut crossings = 0;
    let mut above = false;
    for r in &readings {
        let now_above = r.used >= plan.shed;
        if now_above && !above {
            crossings += 1;
        }
        above = now_above;
    }
    println!(
        "  the raw reading crossed shed {crossings} times (a policy without hysteresis or \
         stabilization would shed and restore that often)"
    );
    println!(
        "  ballast: {} shed steps, {} restore steps, {flaps} flaps (a shed within the \
         stabilization period after a restore of the same plugin)",
        count("shed"),
        count("restore")
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_log_lines_time_is_read_to_the_millisecond() {
        assert_eq!(
            log_time_ms(
                "2026-12-06T03:10:11.123456Z DEBUG ballast_monitor::trigger: PSI trigger fired"
            ),
            Some(1_796_526_611_123)
        );
        assert_eq!(
            log_time_ms("2024-02-29T23:59:59.005Z  INFO x"),
            Some(1_709_251_199_005)
        );
        assert_eq!(log_time_ms("  INFO no time"), None);
        assert_eq!(log_time_ms(""), None);
    }

    #[test]
    fn the_some_total_is_read_from_a_pressure_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("memory.pressure");
        std::fs::write(
            &path,
            "some avg10=0.00 avg60=0.00 avg300=0.00 total=1234\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=7\n",
        )
        .unwrap();
        assert_eq!(stall_total(&path), Some(1234));
        std::fs::write(&path, "garbage\n").unwrap();
        assert_eq!(stall_total(&path), None);
    }

    #[test]
    fn the_threshold_is_150_ms_of_stall_within_2_s_from_the_start() {
        // (ms, µs): 100 ms of stall before the start, then 60 ms per 100 ms.
        let readings = [
            (0, 0),
            (900, 100_000),
            (1000, 100_000),
            (1100, 160_000),
            (1200, 220_000),
        ];
        // At 1100 the oldest reading within 2 s is the one at 0: 160 ms of stall; readings
        // before the start do not count.
        assert_eq!(threshold_reached(&readings, 1000), Some(1100));
        assert_eq!(threshold_reached(&readings, 1150), Some(1200));
        // Spread over more than 2 s: never.
        let slow = [(0, 0), (2000, 100_000), (4000, 200_000), (6000, 300_000)];
        assert_eq!(threshold_reached(&slow, 0), None);
        assert_eq!(threshold_reached(&[], 0), None);
    }
}
