//! Starting and stopping a real daemon for a test, and talking to it: the workspace's test kit,
//! pointed at the `ballast` binary cargo built for these tests.

use std::path::Path;
use std::process::Command;

#[allow(unused_imports)] // The pressure tests share this module and use only part of it.
pub use ballast_testkit::daemon::{Daemon, Options, free_port};

/// The `ballast` binary cargo built for these tests.
pub fn ballast() -> Command {
    Command::new(env!("CARGO_BIN_EXE_ballast"))
}

/// The example plugins, built once per run into their own target directory, with the C `clock`
/// plugin.
pub fn plugin_dir() -> &'static Path {
    ballast_testkit::plugins::example_plugins()
}

/// Starts `ballast run` with `config_text` (TOML, profile `balanced`) in `dir` and waits until
/// `/healthz` answers; the daemon is killed when dropped, also when the test fails.
pub fn start(dir: &Path, config_text: &str) -> Daemon {
    let options = Options::new(env!("CARGO_BIN_EXE_ballast"), plugin_dir());
    Daemon::start(&options, dir, config_text)
}

/// The start of a config under which only the test changes plugin states: thresholds above
/// anything this machine reaches, memory sampled every 200 ms, enforcing, with a 1 s cool-down
/// and the given stabilization before a restore. A test appends its `[[default.plugins]]`.
#[allow(dead_code)] // The pressure tests share this module and press the machine for real.
pub fn quiet_machine(stabilization: &str) -> String {
    format!(
        r#"
[default]
use_tier_thresholds = false
shutdown_timeout = "20s"

[default.monitor]
interval = "200ms"
resources = ["memory"]

[default.scaler]
mode = "enforce"
cooldown = "1s"
stabilization = "{stabilization}"

[default.scaler.thresholds.default]
shed = 0.99
restore = 0.98

[default.scaler.thresholds.memory]
shed = 0.99
restore = 0.98
emergency = 0.995
"#
    )
}
