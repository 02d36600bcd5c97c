//! `cargo xtask measure-disk`: the control loop under disk pressure. A daemon logs every sample
//! and keeps disabling and enabling a plugin whose drain takes its whole deadline, while
//! `stress-ng --hdd` floods the data directory's disk with fsyncs; the gaps between the samples'
//! timestamps (read from the event stream, so no disk is in the way of the measurement) show
//! whether anything on the control loop waited on the disk or on a drain.

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt as _;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use ballast_testkit::daemon::{Daemon, Options};

/// The monitor's tick in this measurement.
const TICK: Duration = Duration::from_secs(1);

/// The plugin whose drain takes its whole deadline, and that deadline.
const DRAIN: Duration = Duration::from_secs(3);

fn config() -> String {
    format!(
        r#"
[balanced.monitor]
interval = "{tick}ms"
psi_trigger = false

[balanced.telemetry]
sample_every = 1

[[balanced.plugins]]
name = "stubs"
path = "libstubs.so"
priority = 100
essential = true
config = {{ workload = {{ working_set_mb = [1], cpu_duty = 0.0 }} }}

[[balanced.plugins]]
name = "voice"
path = "libvoice.so"
priority = 10
config = {{ workload = {{ working_set_mb = [4, 1], cpu_duty = 0.0 }} }}

[[balanced.plugins]]
name = "faulty"
path = "libfaulty.so"
priority = 20
drain_timeout = "{drain}ms"
config = {{ drain_whole_deadline = true }}
"#,
        tick = TICK.as_millis(),
        drain = DRAIN.as_millis()
    )
}

/// `stress-ng --hdd` writing with fsync in `dir`, in its own process group, killed when dropped.
struct HddLoad(Child);

impl HddLoad {
    fn start(dir: &Path, workers: usize) -> Result<HddLoad> {
        let child = Command::new("stress-ng")
            .args(["--hdd", &workers.to_string()])
            .args(["--hdd-opts", "fsync,wr-seq"])
            .args(["--hdd-bytes", "256M", "--hdd-write-size", "4K"])
            .arg("--temp-path")
            .arg(dir)
            .args(["--timeout", "0"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .context("cannot start stress-ng (is it installed?)")?;
        Ok(HddLoad(child))
    }
}

impl Drop for HddLoad {
    fn drop(&mut self) {
        // SAFETY: kill(2) on the process group this tool started has no memory-safety
        // preconditions.
        unsafe { libc::kill(-(self.0.id() as i32), libc::SIGKILL) };
        let _ = self.0.wait();
    }
}

/// Reads the `at` of every sample on the daemon's event stream until `stop`.
fn follow_samples(url: String, stop: Arc<AtomicBool>, seen: Arc<Mutex<Vec<u64>>>) -> Result<()> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(None)
        .build()
        .into();
    let response = agent
        .get(&format!("{url}/events?types=sample"))
        .call()
        .context("cannot open the event stream")?;
    let reader = BufReader::new(response.into_body().into_reader());
    for line in reader.lines() {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let line = line.context("the event stream broke")?;
        if let Some(data) = line.strip_prefix("data: ")
            && let Ok(value) = serde_json::from_str::<serde_json::Value>(data)
            && let Some(at) = value["at"].as_u64()
        {
            seen.lock().unwrap_or_else(|p| p.into_inner()).push(at);
        }
    }
    Ok(())
}

/// Runs the measurement for `seconds` with `binary` and the plugins in `plugin_dir`.
pub fn measure_disk(binary: &Path, plugin_dir: &Path, seconds: u64) -> Result<()> {
    let dir = tempfile::Builder::new()
        .prefix("ballast-disk-")
        .tempdir_in(std::env::current_dir()?.join("target"))
        .context("cannot create a directory on the data disk")?;
    let options = Options::new(binary, plugin_dir);
    let mut daemon = Daemon::spawn(
        &options,
        {
            let path = dir.path().join("ballast.toml");
            std::fs::write(&path, config())?;
            path
        },
        dir.path().join("data"),
        ballast_testkit::daemon::free_port(),
    )?;
    daemon.wait_healthy(Duration::from_secs(60))?;
    daemon.try_wait_until(Duration::from_secs(30), "faulty enabled", |d| {
        d.json("/plugins/faulty")["state"] == "enabled"
    })?;
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let _load = HddLoad::start(&dir.path().join("data"), cores)?;
    let stop = Arc::new(AtomicBool::new(false));
    let seen: Arc<Mutex<Vec<u64>>> = Arc::default();
    let follower = {
        let (url, stop, seen) = (daemon.url.clone(), Arc::clone(&stop), Arc::clone(&seen));
        std::thread::spawn(move || follow_samples(url, stop, seen))
    };
    println!(
        "disk pressure for {seconds} s: stress-ng --hdd {cores} with fsync on the data directory's disk, \
         every sample logged, `faulty` disabled (its drain takes the whole {} s deadline) and \
         enabled again in turn",
        DRAIN.as_secs()
    );
    let started = Instant::now();
    let mut drains = 0;
    while started.elapsed() < Duration::from_secs(seconds) {
        let _ = daemon.post("/plugins/faulty/disable", "");
        drains += 1;
        std::thread::sleep(DRAIN + Duration::from_secs(1));
        let _ = daemon.post("/plugins/faulty/enable", "");
        std::thread::sleep(Duration::from_secs(1));
    }
    stop.store(true, Ordering::Relaxed);
    // The follower ends on the next sample.
    std::thread::sleep(TICK * 2);
    daemon.terminate(Duration::from_secs(20));
    match follower.join() {
        Ok(Ok(())) | Ok(Err(_)) => {}
        Err(_) => bail!("the event reader panicked"),
    }
    let samples = seen.lock().unwrap_or_else(|p| p.into_inner()).clone();
    if samples.len() < 3 {
        bail!("only {} samples arrived", samples.len());
    }
    let mut gaps: Vec<u64> = samples
        .windows(2)
        .map(|w| w[1].saturating_sub(w[0]))
        .collect();
    gaps.sort_unstable();
    let largest = *gaps.last().unwrap_or(&0);
    let p99 = gaps[(gaps.len() * 99 / 100).min(gaps.len() - 1)];
    println!(
        "  {} samples, {drains} drains: gap between samples median {} ms, p99 {p99} ms, largest {largest} ms ({:.2} ticks; goal: within 1.5)",
        samples.len(),
        gaps[gaps.len() / 2],
        largest as f64 / TICK.as_millis() as f64
    );
    Ok(())
}
