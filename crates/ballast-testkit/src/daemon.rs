//! A real `ballast run` for a test or a measurement: started on a config in a directory of its
//! own, on a free loopback port, talked to over HTTP, and always stopped (killed when dropped,
//! also when a test panics, and the plugin cgroups it leaves behind removed).

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};

/// How a daemon is started.
#[derive(Clone, Debug)]
pub struct Options {
    /// The `ballast` binary.
    pub binary: PathBuf,
    /// Where relative plugin paths are resolved (`BALLAST_PLUGIN_DIR`).
    pub plugin_dir: PathBuf,
    /// `BALLAST_LOG`, e.g. `info` or `info,ballast_monitor=debug`.
    pub log_filter: String,
    /// Run it at the lowest CPU priority (`nice -n 19`), so a load tool on the same machine
    /// measures the machine rather than fighting the daemon.
    pub nice: bool,
    /// The profile of the config file.
    pub profile: Option<String>,
    /// A command the daemon runs under: the daemon's own command line is appended to it (e.g.
    /// `unshare -m sh -c '... && exec "$0" "$@"'`).
    pub prefix: Vec<std::ffi::OsString>,
    /// Start it in this cgroup (the path of its `cgroup.procs` file), e.g. a
    /// [`MemoryCgroup`](crate::cgroup::MemoryCgroup) of the test's.
    pub cgroup_procs: Option<PathBuf>,
    /// Start it in this cgroup v2 group as well (the path of its `cgroup.procs` file), e.g. a
    /// [`PressureGroup`](crate::cgroup::PressureGroup) beside a v1 memory cgroup: the daemon
    /// then reads that group's pressure files and arms its PSI trigger on its `memory.pressure`.
    pub pressure_group_procs: Option<PathBuf>,
}

impl Options {
    /// `binary` with plugins from `plugin_dir`, logging at info.
    pub fn new(binary: impl Into<PathBuf>, plugin_dir: impl Into<PathBuf>) -> Self {
        Options {
            binary: binary.into(),
            plugin_dir: plugin_dir.into(),
            log_filter: "info".to_owned(),
            nice: false,
            profile: None,
            prefix: Vec::new(),
            cgroup_procs: None,
            pressure_group_procs: None,
        }
    }
}

/// A free port on the loopback interface.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// A running daemon.
pub struct Daemon {
    child: Option<Child>,
    options: Options,
    /// Its API base URL, `http://127.0.0.1:PORT`.
    pub url: String,
    /// Its port.
    pub port: u16,
    /// Its data directory.
    pub data_dir: PathBuf,
    /// Its config file.
    pub config: PathBuf,
    log: PathBuf,
}

impl Daemon {
    /// Writes `config_text` to `dir/ballast.toml`, starts the daemon on it with the data
    /// directory `dir/data`, and waits until `/healthz` answers.
    ///
    /// # Panics
    ///
    /// When it does not start: the panic carries its log.
    pub fn start(options: &Options, dir: &Path, config_text: &str) -> Daemon {
        let config = dir.join("ballast.toml");
        std::fs::write(&config, config_text).expect("the config can be written");
        let mut daemon = Daemon::spawn(options, config, dir.join("data"), free_port())
            .unwrap_or_else(|e| panic!("{e:#}"));
        if let Err(error) = daemon.wait_healthy(Duration::from_secs(60)) {
            panic!("{error:#}; log:\n{}", daemon.log());
        }
        daemon
    }

    /// Starts the daemon on `config` and `data_dir`, listening on `port`, without waiting.
    pub fn spawn(
        options: &Options,
        config: PathBuf,
        data_dir: PathBuf,
        port: u16,
    ) -> Result<Daemon> {
        std::fs::create_dir_all(&data_dir)
            .with_context(|| format!("cannot create {}", data_dir.display()))?;
        let log = data_dir.with_extension("log");
        let log_file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .with_context(|| format!("cannot open {}", log.display()))?;
        let mut command = if options.nice {
            let mut nice = Command::new("nice");
            nice.args(["-n", "19"]).arg(&options.binary);
            nice
        } else if let Some((program, args)) = options.prefix.split_first() {
            let mut prefixed = Command::new(program);
            prefixed.args(args).arg(&options.binary);
            prefixed
        } else {
            Command::new(&options.binary)
        };
        command
            .args(["run", "--config"])
            .arg(&config)
            .arg("--data-dir")
            .arg(&data_dir)
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .env("BALLAST_PLUGIN_DIR", &options.plugin_dir)
            .env("BALLAST_LOG", &options.log_filter)
            .env_remove("BALLAST_CONFIG")
            .env_remove("BALLAST_PROFILE")
            .stdout(Stdio::null())
            .stderr(log_file);
        if let Some(profile) = &options.profile {
            command.args(["--profile", profile]);
        }
        if let Some(procs) = &options.cgroup_procs {
            crate::cgroup::enter_on_exec(&mut command, procs);
        }
        if let Some(procs) = &options.pressure_group_procs {
            crate::cgroup::enter_on_exec(&mut command, procs);
        }
        let child = command
            .spawn()
            .with_context(|| format!("cannot start {}", options.binary.display()))?;
        Ok(Daemon {
            child: Some(child),
            options: options.clone(),
            url: format!("http://127.0.0.1:{port}"),
            port,
            data_dir,
            config,
            log,
        })
    }

    /// Waits until `/healthz` answers 200; returns how long that took.
    pub fn wait_healthy(&mut self, timeout: Duration) -> Result<Duration> {
        let started = Instant::now();
        loop {
            if self.get("/healthz").is_ok_and(|(status, _)| status == 200) {
                return Ok(started.elapsed());
            }
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                self.child = None;
                bail!("the daemon exited ({status}) during start-up");
            }
            if started.elapsed() > timeout {
                bail!("the daemon did not answer /healthz within {timeout:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills the daemon and starts it again on the same config, data directory and port.
    ///
    /// # Panics
    ///
    /// When it does not come back.
    pub fn restart(&mut self) {
        self.kill();
        let mut again = Daemon::spawn(
            &self.options,
            self.config.clone(),
            self.data_dir.clone(),
            self.port,
        )
        .unwrap_or_else(|e| panic!("{e:#}"));
        if let Err(error) = again.wait_healthy(Duration::from_secs(60)) {
            panic!("{error:#}; log:\n{}", again.log());
        }
        *self = again;
    }

    /// The daemon's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Every record of the daemon's JSONL logs in its data directory whose file name starts
    /// with `prefix` (`telemetry-`, `decisions-`, or `""` for all of them), in file order. A line
    /// that is not JSON (a record being written) is left out.
    pub fn log_records(&self, prefix: &str) -> Vec<serde_json::Value> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(&self.data_dir)
            .map(|dir| {
                dir.flatten()
                    .map(|entry| entry.path())
                    .filter(|path| {
                        path.file_name()
                            .and_then(|name| name.to_str())
                            .is_some_and(|name| {
                                name.starts_with(prefix) && name.ends_with(".jsonl")
                            })
                    })
                    .collect()
            })
            .unwrap_or_default();
        files.sort();
        files
            .iter()
            .filter_map(|path| std::fs::read_to_string(path).ok())
            .flat_map(|text| {
                text.lines()
                    .filter_map(|line| serde_json::from_str(line).ok())
                    .collect::<Vec<serde_json::Value>>()
            })
            .collect()
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Polls `condition` every 50 ms until it holds; `Err` says what was awaited, with the
    /// daemon's log, when it exits or `timeout` passes first.
    pub fn try_wait_until(
        &mut self,
        timeout: Duration,
        what: &str,
        mut condition: impl FnMut(&mut Daemon) -> bool,
    ) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if condition(self) {
                return Ok(());
            }
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                bail!(
                    "the daemon exited ({status}) while waiting for {what}; log:\n{}",
                    self.log()
                );
            }
            if Instant::now() >= deadline {
                bail!("timed out waiting for {what}; log:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// [`Daemon::try_wait_until`] for tests: fails the test instead.
    pub fn wait_until(
        &mut self,
        timeout: Duration,
        what: &str,
        condition: impl FnMut(&mut Daemon) -> bool,
    ) {
        if let Err(error) = self.try_wait_until(timeout, what, condition) {
            panic!("{error:#}");
        }
    }

    /// `method` on `path` with `body`: status and body.
    pub fn request(&self, method: &str, path: &str, body: &str) -> Result<(u16, String), String> {
        crate::http::request(method, &format!("{}{path}", self.url), body.as_bytes(), &[])
    }

    /// GET `path`: status and body.
    pub fn get(&self, path: &str) -> Result<(u16, String), String> {
        self.request("GET", path, "")
    }

    /// POST `body` to `path`: status and body.
    pub fn post(&self, path: &str, body: &str) -> Result<(u16, String), String> {
        self.request("POST", path, body)
    }

    /// GET `path` as JSON, asserting 200.
    ///
    /// # Panics
    ///
    /// When it does not answer 200 with JSON.
    pub fn json(&self, path: &str) -> serde_json::Value {
        crate::http::get_json(&format!("{}{path}", self.url)).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Sends `signal` to the daemon.
    pub fn signal(&self, signal: i32) {
        if let Some(pid) = self.pid() {
            // SAFETY: kill(2) on our own child's pid has no memory-safety preconditions.
            unsafe { libc::kill(pid as i32, signal) };
        }
    }

    /// How the daemon ended, if it has (without waiting).
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        let status = self.child.as_mut()?.try_wait().ok()??;
        self.child = None;
        Some(status)
    }

    /// Waits for the daemon to exit, at most `timeout`; returns its exit code.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let deadline = Instant::now() + timeout;
        let child = self.child.as_mut()?;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                self.child = None;
                return status.code();
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM, then SIGKILL if it has not exited within `grace`.
    pub fn terminate(&mut self, grace: Duration) {
        self.signal(libc::SIGTERM);
        if self.wait_exit(grace).is_none() {
            self.kill();
        }
    }

    /// Kills the daemon with SIGKILL, as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Daemon {
    /// Kills the daemon and removes the plugin cgroups it can no longer remove itself (a daemon
    /// started next in the same cgroup would, but there may be none).
    fn drop(&mut self) {
        if self.child.is_some() {
            self.kill();
            let _ = ballast_process::cgroup::remove_stale(
                &ballast_process::cgroup::CgroupRoots::default(),
            );
        }
    }
}
