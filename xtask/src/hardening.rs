//! `cargo xtask crash` and `cargo xtask soak`: the daemon's crash safety and long-run behaviour,
//! measured on the real binary with the example plugins, figures printed at the end.
//!
//! * crash: `kill -9` at random moments while an operator client pins and unpins plugins as fast
//!   as the API answers (every pin is a decision, a plugin event and a rewrite of `pins.json`)
//!   and the monitor samples every 100 ms into small, often rotated log segments. After every
//!   restart: each state file parses, no temp file is left, the acknowledged pins are back, and
//!   each log lost at most the torn last line of its segment.
//! * soak: memory held by this tool oscillates around the daemon's thresholds (slow swings that
//!   cross shed and restore, small fast ones that hover at the shed line) while the `faulty`
//!   plugin panics and fails at random; the daemon's RSS, flaps and failures are reported.
//!
//! Both run at the lowest CPU priority on a debug build: what they measure is correctness and
//! stability, not speed.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// A small xorshift generator: reproducible from its printed seed, no dependency.
struct Rng(u64);

impl Rng {
    fn seeded() -> Rng {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0x9e37_79b9, |d| d.as_nanos() as u64)
            | 1;
        Rng(seed)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// Uniform in `lo..hi`.
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo).max(1)
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.range(0, items.len() as u64) as usize]
    }
}

/// One request to the daemon at `address`: status and body, whatever the status.
fn http(address: &str, method: &str, path: &str, body: &str) -> Result<(u16, String)> {
    ballast_testkit::http::request(
        method,
        &format!("http://{address}{path}"),
        body.as_bytes(),
        &[],
    )
    .map_err(anyhow::Error::msg)
}

fn get_json(address: &str, path: &str) -> Result<serde_json::Value> {
    ballast_testkit::http::get_json(&format!("http://{address}{path}")).map_err(anyhow::Error::msg)
}

/// Builds the daemon and the example plugins (debug profile).
fn build(root: &Path) -> Result<PathBuf> {
    crate::build_plugins(root, false)?;
    crate::step(
        "build ballast",
        crate::cargo().args(["build", "-p", "ballast"]),
    )?;
    Ok(crate::target_dir(root).join("debug"))
}

/// A daemon this tool started, at the lowest CPU priority; its log is `data_dir` + `.log`.
struct Daemon {
    daemon: ballast_testkit::daemon::Daemon,
    address: String,
}

impl Daemon {
    fn start(bin: &Path, config: &Path, data_dir: &Path, port: u16) -> Result<Daemon> {
        let mut options = ballast_testkit::daemon::Options::new(bin.join("ballast"), bin);
        options.nice = true;
        let daemon = ballast_testkit::daemon::Daemon::spawn(
            &options,
            config.to_owned(),
            data_dir.to_owned(),
            port,
        )?;
        Ok(Daemon {
            daemon,
            address: format!("127.0.0.1:{port}"),
        })
    }

    /// Waits until `/healthz` answers; returns how long that took.
    fn wait_healthy(&mut self, timeout: Duration) -> Result<Duration> {
        self.daemon.wait_healthy(timeout)
    }

    fn pid(&self) -> u32 {
        self.daemon.pid().unwrap_or(0)
    }

    fn kill9(&mut self) -> Result<()> {
        self.daemon.kill();
        Ok(())
    }

    fn terminate(&mut self) {
        self.daemon.terminate(Duration::from_secs(30));
    }
}

fn free_port() -> Result<u16> {
    Ok(ballast_testkit::daemon::free_port())
}

/// The JSONL segments in the data directory, by file name.
fn segments(data_dir: &Path) -> Result<BTreeMap<String, Vec<u8>>> {
    let mut files = BTreeMap::new();
    for entry in std::fs::read_dir(data_dir)?.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.ends_with(".jsonl") {
            files.insert(name, std::fs::read(entry.path())?);
        }
    }
    Ok(files)
}

/// Where a segment's torn last line starts (its length when every line is whole): a last line
/// without its newline, or one that is not JSON, as the daemon's repair sees it.
fn whole_lines_end(bytes: &[u8]) -> usize {
    if bytes.is_empty() {
        return 0;
    }
    let body = bytes.strip_suffix(b"\n").unwrap_or(bytes);
    let start = body.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
    let whole = bytes.ends_with(b"\n")
        && serde_json::from_slice::<serde_json::Value>(&body[start..]).is_ok();
    if whole { bytes.len() } else { start }
}

/// Appends the first half of the last record of `log`'s newest segment to it, without a
/// newline: what a power cut in the middle of a write leaves.
fn simulate_torn_write(data_dir: &Path, log: &str) -> Result<bool> {
    let Some((name, bytes)) = segments(data_dir)?
        .into_iter()
        .rfind(|(n, _)| n.starts_with(&format!("{log}-")))
    else {
        return Ok(false);
    };
    let body = bytes.strip_suffix(b"\n").unwrap_or(&bytes);
    let start = body.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
    let last = &body[start..];
    if last.len() < 2 || !bytes.ends_with(b"\n") {
        return Ok(false);
    }
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(data_dir.join(&name))?;
    file.write_all(&last[..last.len() / 2])?;
    Ok(true)
}

/// Temporary files of interrupted atomic writes (`.<name>.tmp-*`) in `dir`.
fn temp_files(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with('.') && n.contains(".tmp"))
                .collect()
        })
        .unwrap_or_default()
}

/// An operator pin as the crash driver asked for it: off, or on at a level.
type PinState = Option<(String, u64)>;

/// The plugins the crash driver pins, with their number of levels.
const PINNED: [(&str, u64); 3] = [("voice", 2), ("android", 2), ("discord", 1)];

const CRASH_CONFIG: &str = r#"
[default]
use_tier_thresholds = false

[default.monitor]
interval = "100ms"
resources = ["memory"]

[default.scaler.thresholds.memory]
shed = 0.99
restore = 0.98
emergency = 0.995

[default.telemetry]
segment_bytes = 16384
segments = 100000
sample_every = 1

[[default.plugins]]
name = "voice"
path = "libvoice.so"
priority = 10
config = { workload = { working_set_mb = [4, 1], cpu_duty = 0.0 } }

[[default.plugins]]
name = "android"
path = "libandroid.so"
priority = 20
config = { workload = { working_set_mb = [4, 1], cpu_duty = 0.0 } }

[[default.plugins]]
name = "discord"
path = "libdiscord.so"
priority = 30
config = { workload = { working_set_mb = [2], cpu_duty = 0.0 } }

[[default.plugins]]
name = "stubs"
path = "libstubs.so"
priority = 100
essential = true
config = { workload = { working_set_mb = [1], cpu_duty = 0.0 } }
"#;

/// What the crash driver saw acknowledged, and what it had in flight when the daemon died.
#[derive(Default)]
struct Acknowledged {
    pins: BTreeMap<String, PinState>,
    in_flight: Option<(String, PinState)>,
    requests: u64,
}

/// Pins, releases and calls as fast as the API answers, until `stop`.
fn crash_driver(address: &str, stop: &AtomicBool, acked: &Mutex<Acknowledged>, seed: u64) {
    let mut rng = Rng(seed | 1);
    while !stop.load(Ordering::SeqCst) {
        let (plugin, levels) = *rng.pick(&PINNED);
        // What the request asks for: `Some(pin)` for the pin endpoints (`None` inside for a
        // release), `None` for a call, which changes no pin.
        let (path, body, wanted): (String, String, Option<PinState>) = match rng.range(0, 5) {
            0 => (
                format!("/plugins/{plugin}/disable"),
                String::new(),
                Some(Some(("off".to_owned(), 0))),
            ),
            1 => (
                format!("/plugins/{plugin}/enable"),
                r#"{"for": "1h"}"#.to_owned(),
                Some(Some(("on".to_owned(), 0))),
            ),
            2 => {
                let level = rng.range(0, levels);
                (
                    format!("/plugins/{plugin}/level"),
                    format!(r#"{{"level": {level}}}"#),
                    Some(Some(("on".to_owned(), level))),
                )
            }
            3 => (
                format!("/plugins/{plugin}/release"),
                String::new(),
                Some(None),
            ),
            _ => ("/plugins/stubs/call".to_owned(), "ping".to_owned(), None),
        };
        if let Some(w) = &wanted {
            acked.lock().unwrap_or_else(|p| p.into_inner()).in_flight =
                Some((plugin.to_owned(), w.clone()));
        }
        let answer = http(address, "POST", &path, &body);
        let mut acked = acked.lock().unwrap_or_else(|p| p.into_inner());
        match answer {
            Ok((200, _)) => {
                acked.requests += 1;
                if let Some(w) = wanted {
                    acked.pins.insert(plugin.to_owned(), w);
                }
                acked.in_flight = None;
            }
            // The daemon died under the request: it stays in flight.
            _ => return,
        }
    }
}

/// The pins the daemon holds, by plugin.
fn daemon_pins(address: &str) -> Result<BTreeMap<String, PinState>> {
    let plugins = get_json(address, "/plugins")?;
    let mut pins = BTreeMap::new();
    for plugin in plugins.as_array().context("/plugins is not a list")? {
        let name = plugin["name"].as_str().unwrap_or_default().to_owned();
        let pin = &plugin["scaler"]["pin"];
        let state = if pin.is_null() {
            None
        } else {
            let target = pin["target"].as_str().unwrap_or_default().to_owned();
            let level = if target == "off" {
                0
            } else {
                pin["level"].as_u64().unwrap_or(0)
            };
            Some((target, level))
        };
        pins.insert(name, state);
    }
    Ok(pins)
}

/// The temp files of interrupted writes in the data directory and its checkpoints, by path.
fn all_temp_files(data_dir: &Path) -> Vec<PathBuf> {
    [data_dir.to_owned(), data_dir.join("checkpoints")]
        .iter()
        .flat_map(|dir| temp_files(dir).into_iter().map(move |n| dir.join(n)))
        .collect()
}

/// Every problem found in the data directory's state files after a restart (temp files a
/// running daemon is writing are no problem; those a kill left are checked by the caller).
fn check_state_files(data_dir: &Path) -> Vec<String> {
    let mut problems = Vec::new();
    let pins = data_dir.join("pins.json");
    if pins.exists() {
        match std::fs::read(&pins)
            .map_err(anyhow::Error::from)
            .and_then(|b| Ok(serde_json::from_slice::<serde_json::Value>(&b)?))
        {
            Ok(v) if v.is_object() => {}
            Ok(v) => problems.push(format!("pins.json is not an object: {v}")),
            Err(e) => problems.push(format!("pins.json does not parse: {e}")),
        }
    }
    let checkpoints = data_dir.join("checkpoints");
    for entry in std::fs::read_dir(&checkpoints)
        .into_iter()
        .flatten()
        .flatten()
    {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            continue;
        }
        match std::fs::read(entry.path()) {
            Ok(bytes) if serde_json::from_slice::<serde_json::Value>(&bytes).is_ok() => {}
            Ok(bytes) => problems.push(format!(
                "checkpoints/{name} ({} bytes) does not parse",
                bytes.len()
            )),
            Err(e) => problems.push(format!("checkpoints/{name}: {e}")),
        }
    }
    match segments(data_dir) {
        Ok(files) => {
            for (name, bytes) in files {
                for (i, line) in bytes.split(|b| *b == b'\n').enumerate() {
                    if !line.is_empty()
                        && serde_json::from_slice::<serde_json::Value>(line).is_err()
                    {
                        problems.push(format!("{name}:{}: does not parse", i + 1));
                    }
                }
            }
        }
        Err(e) => problems.push(format!("cannot read the logs: {e}")),
    }
    problems
}

/// `cargo xtask crash --rounds N`.
pub fn crash(root: &Path, rounds: u32) -> Result<()> {
    let bin = build(root)?;
    let dir = std::env::temp_dir().join(format!("ballast-crash-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let config = dir.join("crash.toml");
    std::fs::write(&config, CRASH_CONFIG)?;
    let data_dir = dir.join("data");
    let log = data_dir.with_extension("log");
    let port = free_port()?;
    let mut rng = Rng::seeded();
    eprintln!(
        "==> {rounds} rounds of kill -9, seed {}, data in {}",
        rng.0,
        dir.display()
    );
    let mut expected: BTreeMap<String, PinState> = BTreeMap::new();
    let mut in_flight: Option<(String, PinState)> = None;
    let mut before_kill: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    let (mut torn, mut lost_bytes, mut lines_lost_beyond_torn) = (0u64, 0u64, 0u64);
    let (mut pin_mismatches, mut in_flight_applied) = (Vec::new(), 0u64);
    let mut state_problems = Vec::new();
    let mut restarts = Vec::new();
    let mut requests = 0u64;
    let mut uptimes = Vec::new();
    let (mut stale_temps, mut temps_left_by_kills) = (Vec::<PathBuf>::new(), 0u64);
    let mut simulated = 0u64;
    for round in 1..=rounds {
        let mut daemon = Daemon::start(&bin, &config, &data_dir, port)?;
        restarts.push(daemon.wait_healthy(Duration::from_secs(60))?);
        // What the last crash left: repaired logs, whole state files, the acknowledged pins.
        let after = segments(&data_dir)?;
        for (name, old) in &before_kill {
            let kept = whole_lines_end(old);
            if kept < old.len() {
                torn += 1;
                lost_bytes += (old.len() - kept) as u64;
            }
            let now = after.get(name).map(Vec::as_slice).unwrap_or_default();
            if !now.starts_with(&old[..kept]) {
                let common = now.iter().zip(old).take_while(|(a, b)| a == b).count();
                let lost = old[common..kept].iter().filter(|b| **b == b'\n').count() as u64;
                lines_lost_beyond_torn += lost.max(1);
                state_problems.push(format!(
                    "round {round}: {name} lost whole lines after byte {common}"
                ));
            }
        }
        state_problems.extend(
            check_state_files(&data_dir)
                .into_iter()
                .map(|p| format!("round {round}: {p}")),
        );
        for stale in stale_temps.drain(..) {
            if stale.exists() {
                state_problems.push(format!(
                    "round {round}: {} left by the kill was not removed",
                    stale.display()
                ));
            }
        }
        let pins = daemon_pins(&daemon.address)?;
        for (plugin, _) in PINNED {
            let want = expected.get(plugin).cloned().unwrap_or(None);
            let have = pins.get(plugin).cloned().unwrap_or(None);
            if have == want {
                continue;
            }
            if in_flight
                .as_ref()
                .is_some_and(|(p, w)| p == plugin && *w == have)
            {
                // The request the daemon died under took effect before it died.
                in_flight_applied += 1;
                expected.insert(plugin.to_owned(), have);
                continue;
            }
            pin_mismatches.push(format!(
                "round {round}: {plugin} acknowledged {want:?}, restored {have:?}"
            ));
            expected.insert(plugin.to_owned(), have);
        }
        // Write hard until a random moment, then kill -9.
        let stop = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(Mutex::new(Acknowledged {
            pins: expected.clone(),
            ..Acknowledged::default()
        }));
        let driver = {
            let (stop, acked) = (Arc::clone(&stop), Arc::clone(&acked));
            let address = daemon.address.clone();
            let seed = rng.next();
            std::thread::spawn(move || crash_driver(&address, &stop, &acked, seed))
        };
        let uptime = Duration::from_millis(rng.range(200, 2000));
        std::thread::sleep(uptime);
        uptimes.push(uptime);
        daemon.kill9()?;
        stop.store(true, Ordering::SeqCst);
        let _ = driver.join();
        let acked = std::mem::take(&mut *acked.lock().unwrap_or_else(|p| p.into_inner()));
        requests += acked.requests;
        expected = acked.pins;
        in_flight = acked.in_flight;
        // A process kill cannot tear a line (each record is one small write, and the page
        // cache keeps it); a power cut can. Every fourth round simulates one: half a record
        // appended, without its newline, to the newest segment of a log.
        if rng.range(0, 4) == 0
            && simulate_torn_write(
                &data_dir,
                if rng.range(0, 2) == 0 {
                    "telemetry"
                } else {
                    "decisions"
                },
            )?
        {
            simulated += 1;
        }
        before_kill = segments(&data_dir)?;
        stale_temps = all_temp_files(&data_dir);
        temps_left_by_kills += stale_temps.len() as u64;
        if round % 10 == 0 {
            eprintln!("    {round} rounds, {requests} acknowledged requests");
        }
    }
    // The last restart, checked like the others, then a clean stop.
    let mut daemon = Daemon::start(&bin, &config, &data_dir, port)?;
    restarts.push(daemon.wait_healthy(Duration::from_secs(60))?);
    state_problems.extend(check_state_files(&data_dir));
    for stale in stale_temps.iter().filter(|s| s.exists()) {
        state_problems.push(format!(
            "last restart: {} left by the kill was not removed",
            stale.display()
        ));
    }
    daemon.terminate();
    let files = segments(&data_dir)?;
    let records: usize = files
        .values()
        .map(|b| b.iter().filter(|c| **c == b'\n').count())
        .sum();
    let log_text = std::fs::read_to_string(&log).unwrap_or_default();
    let repairs = log_text.matches("skipping a torn last line").count();
    restarts.sort();
    uptimes.sort();
    println!("kill -9 rounds          {rounds} (seed printed above)");
    println!(
        "uptime before the kill  {:?} .. {:?}",
        uptimes.first().copied().unwrap_or_default(),
        uptimes.last().copied().unwrap_or_default()
    );
    println!("acknowledged requests   {requests} (pins, releases, calls)");
    println!(
        "records at the end      {records} lines in {} segments",
        files.len()
    );
    println!(
        "torn last lines         {torn} ({simulated} simulated power cuts, {} from the kills; {lost_bytes} bytes), {repairs} repaired by the daemon at restart",
        torn.saturating_sub(simulated)
    );
    println!("whole lines lost        {lines_lost_beyond_torn}");
    println!(
        "temp files              {temps_left_by_kills} left by the kills, all removed at restart unless listed below"
    );
    println!(
        "pins restored           {} of {} rounds as acknowledged; in-flight pins that took effect: {in_flight_applied}",
        rounds as usize - pin_mismatches.len().min(rounds as usize),
        rounds
    );
    println!(
        "restart to /healthz     median {:?}, max {:?}",
        restarts[restarts.len() / 2],
        restarts[restarts.len() - 1]
    );
    println!("state file problems     {}", state_problems.len());
    for problem in state_problems.iter().chain(&pin_mismatches).take(20) {
        println!("  {problem}");
    }
    if !state_problems.is_empty() || !pin_mismatches.is_empty() || lines_lost_beyond_torn > 0 {
        bail!(
            "the daemon lost state across kill -9 (log: {})",
            log.display()
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// Memory this tool holds for the soak, in 64 MiB blocks (each its own mapping, so freeing it
/// returns it to the system at once).
struct Ballast {
    blocks: Vec<Vec<u8>>,
}

const BLOCK: usize = 64 << 20;

impl Ballast {
    fn hold(&mut self, bytes: u64) {
        let wanted = (bytes as usize).div_ceil(BLOCK);
        while self.blocks.len() < wanted {
            // Touch every page so the memory is really in use.
            self.blocks.push(vec![1u8; BLOCK]);
        }
        self.blocks.truncate(wanted);
    }
}

/// `MemTotal` and `MemAvailable` from /proc/meminfo, in bytes.
fn meminfo() -> Result<(u64, u64)> {
    let text = std::fs::read_to_string("/proc/meminfo")?;
    let field = |key: &str| -> Option<u64> {
        text.lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<u64>().ok())
            .map(|kib| kib * 1024)
    };
    Ok((
        field("MemTotal:").context("no MemTotal")?,
        field("MemAvailable:").context("no MemAvailable")?,
    ))
}

fn rss_bytes(pid: u32) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse::<u64>().ok())
        .map(|kib| kib * 1024)
}

/// The soak's own memory cgroup: this tool and the daemon it starts, under a limit, so that the
/// daemon's memory reading (usage over the limit) is the soak's load alone, whatever else the
/// machine runs.
struct SoakCgroup {
    dir: PathBuf,
    limit: u64,
}

impl SoakCgroup {
    /// Creates a child of this process's memory cgroup (v1 or v2) limited to `limit` bytes and
    /// moves this process into it, so the daemon started next is in it too. `None` where that
    /// is not permitted (not root, no writable cgroup file system).
    fn enter(limit: u64) -> Option<SoakCgroup> {
        let cgroups = std::fs::read_to_string("/proc/self/cgroup").ok()?;
        let (mount, path, limit_file) = cgroups
            .lines()
            .find_map(|line| {
                let mut parts = line.splitn(3, ':');
                let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
                if controllers.split(',').any(|c| c == "memory") {
                    Some(("/sys/fs/cgroup/memory", path, "memory.limit_in_bytes"))
                } else {
                    None
                }
            })
            .or_else(|| {
                cgroups
                    .lines()
                    .find_map(|l| l.strip_prefix("0::"))
                    .map(|path| ("/sys/fs/cgroup", path, "memory.max"))
            })?;
        let dir = Path::new(mount)
            .join(path.trim_start_matches('/'))
            .join(format!("ballast-soak-{}", std::process::id()));
        std::fs::create_dir_all(&dir).ok()?;
        let entered = std::fs::write(dir.join(limit_file), limit.to_string()).and_then(|()| {
            std::fs::write(dir.join("cgroup.procs"), std::process::id().to_string())
        });
        match entered {
            Ok(()) => Some(SoakCgroup { dir, limit }),
            Err(error) => {
                eprintln!(
                    "==> cannot use a memory cgroup at {}: {error}",
                    dir.display()
                );
                let _ = std::fs::remove_dir(&dir);
                None
            }
        }
    }
}

impl Drop for SoakCgroup {
    /// Moves this process back to the parent cgroup and removes the soak's (the daemon has
    /// exited by then).
    fn drop(&mut self) {
        if let Some(parent) = self.dir.parent() {
            let _ = std::fs::write(parent.join("cgroup.procs"), std::process::id().to_string());
        }
        let _ = std::fs::remove_dir(&self.dir);
    }
}

/// The soak's cool-down and stabilization, in seconds: short enough that a 30 min soak sees
/// several rounds of shedding and of restoring every plugin.
const SOAK_COOLDOWN_S: u64 = 10;
const SOAK_STABILIZATION_S: u64 = 60;

fn soak_config(shed: f64, restore: f64, emergency: f64) -> String {
    let (cooldown, stabilization) = (SOAK_COOLDOWN_S, SOAK_STABILIZATION_S);
    format!(
        r#"
[default]
use_tier_thresholds = false

[default.monitor]
interval = "1s"
resources = ["memory"]

[default.scaler]
cooldown = "{cooldown}s"
stabilization = "{stabilization}s"

[default.scaler.thresholds.memory]
shed = {shed:.4}
restore = {restore:.4}
emergency = {emergency:.4}

[default.telemetry]
segment_bytes = 1048576
segments = 1000

[[default.plugins]]
name = "voice"
path = "libvoice.so"
priority = 10
config = {{ workload = {{ working_set_mb = [64, 8], cpu_duty = 0.0 }} }}

[[default.plugins]]
name = "android"
path = "libandroid.so"
priority = 20
config = {{ workload = {{ working_set_mb = [32, 4], cpu_duty = 0.0 }} }}

[[default.plugins]]
name = "faulty"
path = "libfaulty.so"
priority = 25

[[default.plugins]]
name = "discord"
path = "libdiscord.so"
priority = 30
config = {{ workload = {{ working_set_mb = [32], cpu_duty = 0.0 }} }}

[[default.plugins]]
name = "clock"
path = "libclock.so"
priority = 40
config = {{ working_set_mb = [4, 1] }}

[[default.plugins]]
name = "stubs"
path = "libstubs.so"
priority = 100
essential = true
config = {{ workload = {{ working_set_mb = [1], cpu_duty = 0.0 }} }}
"#
    )
}

/// What the soak's fault injector did and saw.
#[derive(Default)]
struct Faults {
    call_panics: u64,
    call_failures: u64,
    armed: u64,
    recoveries: u64,
    unexpected: Vec<String>,
}

/// Makes `faulty` panic or fail at random every 2 to 10 s, and brings it back when it failed.
fn fault_injector(address: &str, stop: &AtomicBool, faults: &Mutex<Faults>, seed: u64) {
    const ARMABLE: [&str; 9] = [
        "create",
        "start",
        "set_level",
        "drain",
        "stop",
        "checkpoint",
        "health",
        "destroy",
        "call",
    ];
    let mut rng = Rng(seed | 1);
    while !stop.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(rng.range(2000, 10_000)));
        let state = get_json(address, "/plugins/faulty")
            .map(|p| p["state"].as_str().unwrap_or_default().to_owned())
            .unwrap_or_default();
        let mut f = faults.lock().unwrap_or_else(|p| p.into_inner());
        if state == "failed" {
            // Bring it back as an operator would, then hand it back to the scaler.
            let enabled = http(address, "POST", "/plugins/faulty/enable", "");
            std::thread::sleep(Duration::from_millis(500));
            let released = http(address, "POST", "/plugins/faulty/release", "");
            if matches!((&enabled, &released), (Ok((200, _)), Ok((200, _)))) {
                f.recoveries += 1;
            } else {
                f.unexpected
                    .push(format!("recovery: {enabled:?} / {released:?}"));
            }
            continue;
        }
        if state != "enabled" {
            continue;
        }
        let body = match rng.range(0, 3) {
            0 => "panic".to_owned(),
            1 => "fail".to_owned(),
            _ => format!("arm {}", rng.pick(&ARMABLE)),
        };
        let kind = |answer: &str| {
            serde_json::from_str::<serde_json::Value>(answer)
                .ok()
                .and_then(|v| v["error"].as_str().map(str::to_owned))
                .unwrap_or_default()
        };
        match http(address, "POST", "/plugins/faulty/call", &body) {
            Ok((200, answer)) if answer.starts_with("armed ") => f.armed += 1,
            // A panic requested now, or one armed earlier for `call`.
            Ok((502, answer)) if kind(&answer) == "panicked" => f.call_panics += 1,
            Ok((502, answer)) if kind(&answer) == "call_failed" => f.call_failures += 1,
            // Shed or failed in the meantime: the call is refused, which is fine.
            Ok((503, _)) => {}
            other => f.unexpected.push(format!("{body}: {other:?}")),
        }
    }
}

/// The memory the soak holds: swings between nothing and `high` (30 s rising, 150 s held, 30 s
/// falling), each followed by a calm that lasts until the scaler has brought every plugin back and
/// taken no step for a stabilization, and 30 s more (at most 15 min), with a small fast wobble of
/// `wobble` on top that makes the load hover at the thresholds. Since the load rises again only
/// once everything has been back for a whole stabilization, a shed within the stabilization after a
/// restore is the daemon's own flap, not the next swing.
struct Swing {
    high: f64,
    wobble: f64,
    /// When the current swing began (its rise).
    began: f64,
    /// When every plugin was first seen back during this swing's calm.
    all_back: Option<f64>,
    /// Calms that ended at the 15 min cap, with a plugin still not back.
    capped: u64,
    /// Swings completed.
    swings: u64,
}

impl Swing {
    const RISE: f64 = 30.0;
    const HOLD: f64 = 150.0;
    const FALL: f64 = 30.0;
    const MAX_CALM: f64 = 900.0;
    /// How long the calm goes on once everything is back (which already means no step for a
    /// stabilization), so that a restore's aftermath is seen.
    const SETTLE: f64 = 30.0;

    fn new(high: f64, wobble: f64) -> Swing {
        Swing {
            high,
            wobble,
            began: 0.0,
            all_back: None,
            capped: 0,
            swings: 0,
        }
    }

    /// The memory to hold at `t` seconds; `back` says whether every plugin runs at full level
    /// now. Returns whether a calm just ended with everything back (a point to compare RSS at).
    fn at(&mut self, t: f64, back: bool) -> (f64, bool) {
        let into = t - self.began;
        let calm_from = Self::RISE + Self::HOLD + Self::FALL;
        let mut calm_ended = false;
        let swing = if into < Self::RISE {
            into / Self::RISE
        } else if into < Self::RISE + Self::HOLD {
            1.0
        } else if into < calm_from {
            1.0 - (into - Self::RISE - Self::HOLD) / Self::FALL
        } else {
            if back {
                self.all_back.get_or_insert(t);
            }
            let settled = self.all_back.is_some_and(|at| t - at >= Self::SETTLE);
            let capped = into - calm_from >= Self::MAX_CALM;
            if settled || capped {
                self.capped += u64::from(!settled);
                calm_ended = settled;
                self.swings += 1;
                self.began = t;
                self.all_back = None;
            }
            0.0
        };
        let wobble = self.wobble * (t * std::f64::consts::TAU / 30.0).sin();
        ((self.high * swing + wobble).max(0.0), calm_ended)
    }
}

/// Whether the scaler has brought back all it will: every plugin enabled (`faulty` aside: the
/// fault injector fails it on purpose and brings it back) and no shed or restore for a whole
/// stabilization and 30 s (the scaler restores one step per stabilization while any plugin is
/// below the level it may run at here, which the hardware tier may cap).
fn all_back(address: &str) -> bool {
    let enabled = get_json(address, "/plugins")
        .ok()
        .and_then(|p| {
            p.as_array().map(|a| {
                a.iter()
                    .all(|p| p["name"] == "faulty" || p["state"] == "enabled")
            })
        })
        .unwrap_or(false);
    let last_step = get_json(address, "/decisions?tail=200").ok().and_then(|d| {
        d.as_array().map(|a| {
            a.iter()
                .filter(|d| d["kind"] == "shed" || d["kind"] == "restore")
                .filter_map(|d| d["at"].as_u64())
                .max()
                .unwrap_or(0)
        })
    });
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    enabled
        && last_step
            .is_some_and(|at| now_ms.saturating_sub(at) >= (SOAK_STABILIZATION_S + 30) * 1000)
}

/// Restores followed by a shed of the same plugin within `window`, from the decision logs.
fn flaps(data_dir: &Path, window: Duration) -> Result<(u64, u64, u64, Vec<String>)> {
    let mut decisions = Vec::new();
    for (name, bytes) in segments(data_dir)? {
        if !name.starts_with("decisions-") {
            continue;
        }
        for line in bytes.split(|b| *b == b'\n') {
            if let Ok(d) = serde_json::from_slice::<serde_json::Value>(line) {
                decisions.push(d);
            }
        }
    }
    decisions.sort_by_key(|d| d["at"].as_u64().unwrap_or(0));
    let (mut sheds, mut restores) = (0, 0);
    let mut last_restore: BTreeMap<String, u64> = BTreeMap::new();
    let mut found = Vec::new();
    for d in &decisions {
        let (Some(plugin), Some(at)) = (d["plugin"].as_str(), d["at"].as_u64()) else {
            continue;
        };
        match d["kind"].as_str() {
            Some("restore") => {
                restores += 1;
                last_restore.insert(plugin.to_owned(), at);
            }
            Some("shed") => {
                sheds += 1;
                if let Some(restored) = last_restore.get(plugin)
                    && at.saturating_sub(*restored) < window.as_millis() as u64
                {
                    found.push(format!(
                        "{plugin}: restored, then shed {} s later ({})",
                        (at - restored) / 1000,
                        d["rule"]
                    ));
                }
            }
            _ => {}
        }
    }
    Ok((sheds, restores, found.len() as u64, found))
}

/// `cargo xtask soak --minutes N`.
pub fn soak(root: &Path, minutes: u64) -> Result<()> {
    let bin = build(root)?;
    let dir = std::env::temp_dir().join(format!("ballast-soak-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let (total, available) = meminfo()?;
    // In a memory cgroup of its own the daemon reads the soak's load alone: fixed thresholds,
    // and the held memory brings the reading to just above the shed threshold with a wobble
    // across it. Without one, the thresholds sit just above what the machine uses now, and what
    // other programs do moves the reading too.
    let cgroup = SoakCgroup::enter(2 << 30);
    let (shed, restore, emergency, high, wobble, scope) = match &cgroup {
        Some(cgroup) => {
            let limit = cgroup.limit as f64;
            // The daemon with its plugins' working sets, and this tool: 4 to 7 % of the limit,
            // so the held memory brings the reading to about 0.52, wobbling across 0.50.
            (
                0.50,
                0.35,
                0.90,
                0.47 * limit,
                0.05 * limit,
                format!(
                    "memory cgroup {} limited to {} MiB",
                    cgroup.dir.display(),
                    cgroup.limit >> 20
                ),
            )
        }
        None => {
            let baseline = 1.0 - available as f64 / total as f64;
            (
                baseline + 0.04,
                baseline + 0.025,
                (baseline + 0.12).min(0.99),
                0.06 * total as f64,
                0.01 * total as f64,
                format!("the host's memory (in use at the start: {baseline:.3})"),
            )
        }
    };
    let config = dir.join("soak.toml");
    std::fs::write(&config, soak_config(shed, restore, emergency))?;
    let data_dir = dir.join("data");
    let log = data_dir.with_extension("log");
    let port = free_port()?;
    let mut rng = Rng::seeded();
    eprintln!(
        "==> soak for {minutes} min, seed {}: {scope}; thresholds shed {shed:.3} restore {restore:.3} emergency {emergency:.3}; held memory swings 0..{:.0} MiB +- {:.0} MiB; data in {}",
        rng.0,
        high / 1048576.0,
        wobble / 1048576.0,
        dir.display()
    );
    let mut daemon = Daemon::start(&bin, &config, &data_dir, port)?;
    daemon.wait_healthy(Duration::from_secs(60))?;
    let address = daemon.address.clone();
    let stop = Arc::new(AtomicBool::new(false));
    let faults = Arc::new(Mutex::new(Faults::default()));
    let injector = {
        let (stop, faults, address) = (Arc::clone(&stop), Arc::clone(&faults), address.clone());
        let seed = rng.next();
        std::thread::spawn(move || fault_injector(&address, &stop, &faults, seed))
    };
    let mut ballast = Ballast { blocks: Vec::new() };
    let seconds = minutes * 60;
    let started = Instant::now();
    let warm_up = Duration::from_secs(60.min(seconds / 4));
    let mut rss_start = None;
    let (mut rss_min, mut rss_max) = (u64::MAX, 0u64);
    let mut rss_samples = Vec::new();
    let (mut health_failures, mut health_max) = (0u64, Duration::ZERO);
    let mut exited = None;
    let mut swing = Swing::new(high, wobble);
    // The daemon's RSS (less its plugins' live bytes) each time a calm ended with every plugin
    // back: the same state of the daemon at each point, so a growth between them is its own.
    let mut calm_points = Vec::new();
    while started.elapsed() < Duration::from_secs(seconds) {
        let t = started.elapsed().as_secs_f64();
        let (hold, calm_ended) = swing.at(t, all_back(&address));
        ballast.hold(hold as u64);
        let asked = Instant::now();
        match http(&address, "GET", "/healthz", "") {
            Ok((200, _)) => health_max = health_max.max(asked.elapsed()),
            _ => health_failures += 1,
        }
        if let Some(status) = daemon.daemon.exited() {
            exited = Some(status);
            break;
        }
        if started.elapsed() >= warm_up
            && let Some(rss) = rss_bytes(daemon.pid())
        {
            let plugins_live: u64 = get_json(&address, "/plugins")
                .ok()
                .and_then(|p| {
                    p.as_array().map(|a| {
                        a.iter()
                            .map(|p| p["stats"]["live_bytes"].as_u64().unwrap_or(0))
                            .sum()
                    })
                })
                .unwrap_or(0);
            let own = rss.saturating_sub(plugins_live);
            rss_start.get_or_insert((rss, own));
            rss_min = rss_min.min(own);
            rss_max = rss_max.max(own);
            rss_samples.push((t, rss, own));
            if calm_ended {
                calm_points.push(own);
            }
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    stop.store(true, Ordering::SeqCst);
    ballast.hold(0);
    let _ = injector.join();
    let fired = http(&address, "POST", "/plugins/faulty/call", "fired")
        .ok()
        .filter(|(s, _)| *s == 200)
        .map(|(_, b)| b);
    let plugins = get_json(&address, "/plugins").ok();
    daemon.terminate();
    let (sheds, restores, n_flaps, flap_list) =
        flaps(&data_dir, Duration::from_secs(SOAK_STABILIZATION_S))?;
    let scaler_flaps: u64 = plugins
        .as_ref()
        .and_then(|p| p.as_array())
        .map(|a| {
            a.iter()
                .map(|p| p["scaler"]["flaps"].as_u64().unwrap_or(0))
                .sum()
        })
        .unwrap_or(0);
    let faults = std::mem::take(&mut *faults.lock().unwrap_or_else(|p| p.into_inner()));
    let log_text = std::fs::read_to_string(&log).unwrap_or_default();
    // How the host recorded them: a state change to failed, or (drain, stop, checkpoint and
    // destroy, whose faults have nobody to go to) a logged fault.
    let failed_states = log_text.matches("plugin failed plugin=").count();
    let logged_faults = log_text.matches(" fault=panic:").count();
    let mib = |b: u64| b as f64 / 1048576.0;
    let (start_rss, start_own) = rss_start.unwrap_or_default();
    let (_, end_rss, end_own) = rss_samples.last().copied().unwrap_or_default();
    println!(
        "soak                    {minutes} min, daemon {}",
        match exited {
            Some(status) => format!("EXITED ({status})"),
            None => "alive throughout".to_owned(),
        }
    );
    println!(
        "rss (after {}s warm-up)  start {:.1} MiB, end {:.1} MiB; without the plugins' live bytes: start {:.1}, end {:.1}, min {:.1}, max {:.1} MiB",
        warm_up.as_secs(),
        mib(start_rss),
        mib(end_rss),
        mib(start_own),
        mib(end_own),
        mib(if rss_min == u64::MAX { 0 } else { rss_min }),
        mib(rss_max)
    );
    println!(
        "rss with every plugin back, at the end of each calm (less the plugins' live bytes): {} MiB",
        calm_points
            .iter()
            .map(|b| format!("{:.1}", mib(*b)))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!(
        "swings                  {} (calms that hit the 15 min cap with a plugin not back: {})",
        swing.swings, swing.capped
    );
    println!("decisions               {sheds} sheds, {restores} restores");
    println!(
        "flaps within {SOAK_STABILIZATION_S} s       {n_flaps} (scaler's own count: {scaler_flaps})"
    );
    for flap in &flap_list {
        println!("  {flap}");
    }
    println!(
        "faults injected         {} calls answered `panicked`, {} `call_failed`; {} panics armed in entry points ({} fired); {} recoveries by an operator pin",
        faults.call_panics,
        faults.call_failures,
        faults.armed,
        fired.as_deref().unwrap_or("?"),
        faults.recoveries
    );
    println!(
        "contained               {failed_states} plugin failures (state failed), {logged_faults} panics logged as faults without a state change"
    );
    println!("/healthz                {health_failures} failures, slowest {health_max:.1?}");
    for problem in &faults.unexpected {
        println!("  unexpected: {problem}");
    }
    let samples_file = dir.join("rss.tsv");
    let mut tsv = String::from("seconds\trss_bytes\trss_without_plugins\n");
    for (t, rss, own) in &rss_samples {
        tsv.push_str(&format!("{t:.0}\t{rss}\t{own}\n"));
    }
    std::fs::write(&samples_file, tsv)?;
    println!(
        "rss samples             {} (log: {})",
        samples_file.display(),
        log.display()
    );
    if exited.is_some() || health_failures > 0 {
        bail!("the daemon did not survive the soak");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_torn_tail_is_found_where_the_daemon_would_cut() {
        assert_eq!(whole_lines_end(b""), 0);
        assert_eq!(whole_lines_end(b"{\"a\":1}\n"), 8);
        assert_eq!(whole_lines_end(b"{\"a\":1}\n{\"a\""), 8);
        assert_eq!(whole_lines_end(b"{\"a\":1}\n{\"a\"\n"), 8);
        assert_eq!(whole_lines_end(b"{\"a\""), 0);
    }

    #[test]
    fn the_soak_load_rises_again_only_once_every_plugin_is_back_and_settled() {
        let mut swing = Swing::new(100.0, 0.0);
        let mut at = |t: f64, back: bool| swing.at(t, back);
        assert_eq!(at(0.0, true).0, 0.0);
        assert!((at(15.0, false).0 - 50.0).abs() < 1e-9);
        assert_eq!(at(100.0, false).0, 100.0);
        assert!((at(195.0, false).0 - 50.0).abs() < 1e-9);
        // Calm while the plugins are not back, however long it takes (up to the cap).
        assert_eq!(at(240.0, false), (0.0, false));
        assert_eq!(at(600.0, false), (0.0, false));
        // Back at 600 s: calm for 30 s more, then the next rise.
        assert_eq!(at(601.0, true), (0.0, false));
        let end = 601.0 + Swing::SETTLE;
        assert_eq!(at(end - 1.0, true), (0.0, false));
        assert_eq!(at(end, true), (0.0, true));
        assert!((at(end + 15.0, false).0 - 50.0).abs() < 1e-9);
        // A calm in which a plugin never comes back ends at the cap, and says so.
        let mut swing = Swing::new(100.0, 0.0);
        assert_eq!(swing.at(210.0 + Swing::MAX_CALM, false), (0.0, false));
        assert_eq!((swing.swings, swing.capped), (1, 1));
        // The wobble rides on top.
        assert!(Swing::new(0.0, 10.0).at(7.5, true).0 > 9.9);
    }
}
