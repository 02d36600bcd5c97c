//! Real pressure for the closed-loop tests: `stress-ng` processes that are always cleaned up, the
//! machine's memory and CPU as the daemon sees them, and a lock so that only one test loads the
//! machine at a time.

use std::os::unix::process::CommandExt as _;
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::support::ballast;

/// Held by a test while it loads the machine: two loads at once would make both tests wrong.
pub fn machine() -> MutexGuard<'static, ()> {
    static MACHINE: Mutex<()> = Mutex::new(());
    MACHINE
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Memory as the daemon's monitor sees it (the cgroup's limit when there is one).
#[derive(Clone, Copy, Debug)]
pub struct Memory {
    /// Bytes in all.
    pub total: u64,
    /// `1 - available / total`.
    pub used: f64,
}

/// One sample of the machine taken by `ballast sample --json`, so the test measures what the
/// daemon will measure (host or cgroup scope alike).
fn sample() -> serde_json::Value {
    let out = ballast()
        .args(["sample", "--json"])
        .output()
        .expect("ballast sample runs");
    assert!(
        out.status.success(),
        "ballast sample failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("ballast sample --json prints JSON")
}

/// The memory in use now, the median of five readings 100 ms apart.
pub fn memory() -> Memory {
    let mut readings: Vec<Memory> = (0..5)
        .map(|i| {
            if i > 0 {
                std::thread::sleep(Duration::from_millis(100));
            }
            let sample = sample();
            let value = &sample["memory"]["value"];
            let total = value["total_bytes"].as_u64().expect("memory total");
            let available = value["available_bytes"].as_u64().expect("memory available");
            Memory {
                total,
                used: 1.0 - available as f64 / total as f64,
            }
        })
        .collect();
    readings.sort_by(|a, b| a.used.total_cmp(&b.used));
    readings[2]
}

/// CPU busy time over all cores and the core count, once the CPUs are calmer than `calm` (other
/// tests of this run may be busy for a while), waiting at most a minute.
pub fn calm_cpu(calm: f64) -> (f64, u64) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (busy, cores) = cpu();
        if busy < calm || Instant::now() >= deadline {
            return (busy, cores);
        }
    }
}

/// CPU busy time over all cores, the highest of four one-second readings, and the core count.
pub fn cpu() -> (f64, u64) {
    let mut busiest: f64 = 0.0;
    let mut cores = 1;
    for _ in 0..4 {
        let sample = sample();
        let value = &sample["cpu"]["value"];
        busiest = busiest.max(value["utilization"].as_f64().expect("cpu utilization"));
        cores = value["cores"].as_u64().expect("cpu cores");
        std::thread::sleep(Duration::from_millis(1000));
    }
    (busiest, cores)
}

/// A `stress-ng` run in its own process group, killed with its workers when dropped (also when
/// the test fails), and bounded by stress-ng's own `--timeout` should the test process die.
pub struct Load {
    child: Option<Child>,
    what: String,
}

fn stress_ng() -> Command {
    let found = std::env::var_os("PATH").is_some_and(|paths| {
        std::env::split_paths(&paths).any(|dir| dir.join("stress-ng").is_file())
    });
    assert!(
        found,
        "stress-ng is not installed; `cargo xtask ci` installs it (Debian package stress-ng)"
    );
    let mut command = Command::new("stress-ng");
    command
        .args(["--timeout", "180s", "--quiet"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0);
    command
}

impl Load {
    /// Holds `bytes` of anonymous memory resident: two workers (one per core of a small
    /// machine, so the step is steep), each touching its half once, then sleeping. stress-ng
    /// shares `--vm-bytes` among the workers.
    pub fn memory(bytes: u64) -> Load {
        let mut command = stress_ng();
        command.args([
            "--vm",
            "2",
            "--vm-bytes",
            &format!("{}k", bytes / 1024),
            "--vm-keep",
            "--vm-populate",
            "--vm-hang",
            "0",
        ]);
        Load::spawn(command, format!("{} MiB of memory", bytes >> 20))
    }

    /// Keeps `workers` CPUs busy.
    pub fn cpu(workers: u64) -> Load {
        let mut command = stress_ng();
        command.args(["--cpu", &workers.to_string(), "--cpu-method", "int64"]);
        Load::spawn(command, format!("{workers} busy CPUs"))
    }

    fn spawn(mut command: Command, what: String) -> Load {
        let child = command.spawn().expect("stress-ng starts");
        Load {
            child: Some(child),
            what,
        }
    }

    /// What it loads, for messages.
    pub fn what(&self) -> &str {
        &self.what
    }

    /// Ends the load and waits until its processes are gone.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let group = child.id() as i32;
            // SAFETY: kill(2) on the process group we created has no memory-safety preconditions.
            unsafe { libc::kill(-group, libc::SIGKILL) };
            let _ = child.wait();
            // Workers reparented away from stress-ng die with the group; wait until the group is
            // empty so that the memory is really back.
            let deadline = Instant::now() + Duration::from_secs(10);
            // SAFETY: as above; signal 0 only checks whether the group still exists.
            while unsafe { libc::kill(-group, 0) } == 0 && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A process's state letter from `/proc/PID/stat` (`T` when stopped), or `None` when it is gone.
pub fn process_state(pid: u64) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The name in parentheses may hold spaces; the state follows its closing parenthesis.
    stat.rsplit_once(')')?.1.trim_start().chars().next()
}
