//! `cargo xtask measure`: the closed loop measured on this machine with real pressure: reaction
//! latency (ticks, PSI trigger, emergency), the daemon's overhead idle and under load, and flaps
//! under a load that oscillates around the shed threshold.
//!
//! An independent reader samples `/proc/meminfo` and the daemon's RSS every 10 ms; it, not the
//! daemon, says when pressure crossed a threshold and when the plugin's memory was released.

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
        let child = Command::new("stress-ng")
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
        let dir = tempfile::Builder::new()
            .prefix(&format!("ballast-measure-{name}-"))
            .tempdir()
            .context("cannot create a temporary directory")?;
        let config_path = dir.path().join("ballast.toml");
        std::fs::write(&config_path, config).context("cannot write the config")?;
        let mut options = ballast_testkit::daemon::Options::new(release.join("ballast"), release);
        // The monitor says at debug level when the PSI trigger woke it between ticks.
        options.log_filter = "info,ballast_monitor=debug".to_owned();
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
    let mut decision: Vec<i64> = rounds.iter().map(|r| r.decision).collect();
    decision.sort_unstable();
    let mut released: Vec<i64> = rounds.iter().filter_map(|r| r.released).collect();
    released.sort_unstable();
    let show = |v: &[i64]| {
        if v.is_empty() {
            "-".to_owned()
        } else {
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
    };
    println!("  {name}");
    println!("    to the decision         {}", show(&decision));
    println!("    to the memory released  {}", show(&released));
    println!(
        "    PSI trigger woke the monitor in {} of {} rounds",
        rounds.iter().filter(|r| r.psi_woke).count(),
        rounds.len()
    );
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

    println!("\nreaction latency, memory step from 10 ms /proc/meminfo readings:");
    let mut ticks = Vec::new();
    let mut psi = Vec::new();
    let mut emergency = Vec::new();
    for i in 0..options.rounds {
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

    println!(
        "\noverhead over {} s (RSS without the plugins' {PLUGINS_MIB} MiB of working sets):",
        options.seconds
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
        let (cpu, rss, rss_max) = overhead(daemon.pid(), options.seconds)?;
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
        options.seconds
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
    let (cpu, rss, rss_max) = overhead(pid, options.seconds)?;
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
