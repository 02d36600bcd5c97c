//! The test kit of the ballast workspace (dev-only, never published): what the end-to-end
//! tests, the API tests, the benchmarks and `cargo xtask` share instead of each writing its own.
//!
//! * [`plugins`]: the workspace's root, the example plugins built once per test run into a
//!   target directory of their own, and small C plugins compiled from source.
//! * [`daemon`]: a real `ballast run` started on a config, talked to over HTTP, and always
//!   stopped (killed when dropped, also when a test panics).
//! * [`cgroup`]: a memory cgroup of a test's own, so one daemon of several can be pressed alone,
//!   and a v2 group whose memory pressure is a load's own.
//! * [`http`]: one request to the control API, without failing on an error status.
//! * [`proc`]: a fixture `/proc` tree whose figures a test sets, for the monitor to read.
//! * [`nvml`]: a fake NVML library compiled into a test's directory, with the devices and the
//!   processes on them that the test sets, for the monitor (or a daemon) to load.

pub mod cgroup;
pub mod daemon;
pub mod http;
pub mod nvml;
pub mod plugins;
pub mod proc;

use std::time::{Duration, Instant};

/// Polls `condition` every `every` until it holds or `timeout` passes; `Err` says what was
/// awaited and for how long.
pub fn wait_for(
    what: &str,
    timeout: Duration,
    every: Duration,
    mut condition: impl FnMut() -> bool,
) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    loop {
        if condition() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(format!("timed out after {timeout:?} waiting for {what}"));
        }
        std::thread::sleep(every);
    }
}

/// The wall clock in milliseconds since the epoch: the time base of the daemon's timestamps
/// (samples, decisions, call tallies), for a test that brackets what the daemon logged.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}
