//! Starting and stopping a real daemon for a test, and talking to it.

use std::io::Read;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The `ballast` binary cargo built for these tests.
pub fn ballast() -> Command {
    Command::new(env!("CARGO_BIN_EXE_ballast"))
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The example plugins, built once per run into their own target directory (the outer cargo
/// holds the lock on the main one), plus the C `clock` plugin.
pub fn plugin_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let exe = PathBuf::from(env!("CARGO_BIN_EXE_ballast"));
        let target = exe
            .ancestors()
            .nth(2)
            .expect("target directory")
            .join("plugin-tests");
        let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .current_dir(workspace_root())
            .args(["build", "--quiet", "--target-dir"])
            .arg(&target)
            .args([
                "-p",
                "ballast-plugin-voice",
                "-p",
                "ballast-plugin-android",
                "-p",
                "ballast-plugin-discord",
            ])
            .args(["-p", "ballast-plugin-stubs", "-p", "ballast-plugin-faulty"])
            .status()
            .expect("cargo runs");
        assert!(status.success(), "building the example plugins failed");
        let dir = target.join("debug");
        let status = Command::new(std::env::var("CC").unwrap_or_else(|_| "cc".into()))
            .args(["-std=c11", "-shared", "-fPIC", "-O2", "-pthread", "-I"])
            .arg(workspace_root().join("crates/ballast-abi/include"))
            .arg("-o")
            .arg(dir.join("libclock.so"))
            .arg(workspace_root().join("plugins/c/clock/clock.c"))
            .status()
            .expect("cc runs");
        assert!(status.success(), "building the C plugin failed");
        dir
    })
}

/// A free port on the loopback interface.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A daemon under test. Killed when dropped, also when the test fails.
pub struct Daemon {
    child: Option<Child>,
    /// Its API base URL.
    pub url: String,
    /// Its data directory.
    pub data_dir: PathBuf,
    /// Its config file.
    pub config: PathBuf,
    log: PathBuf,
}

impl Daemon {
    /// Starts `ballast run` with `config_text` (TOML, profile `balanced`) in `dir` and waits until
    /// `/healthz` answers.
    pub fn start(dir: &Path, config_text: &str) -> Daemon {
        let config = dir.join("ballast.toml");
        std::fs::write(&config, config_text).expect("write config");
        let data_dir = dir.join("data");
        let port = free_port();
        Daemon::start_with(config, data_dir, port)
    }

    /// Starts the daemon again on the same config, data directory and port.
    pub fn restart(&mut self) {
        self.kill();
        let port: u16 = self
            .url
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .expect("port");
        let again = Daemon::start_with(self.config.clone(), self.data_dir.clone(), port);
        *self = again;
    }

    fn start_with(config: PathBuf, data_dir: PathBuf, port: u16) -> Daemon {
        let log = data_dir.with_extension(format!("log-{}", std::process::id()));
        let log_file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .expect("log file");
        let child = ballast()
            .args(["run", "--config"])
            .arg(&config)
            .arg("--data-dir")
            .arg(&data_dir)
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .env("BALLAST_PLUGIN_DIR", plugin_dir())
            .env("BALLAST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .expect("ballast starts");
        let mut daemon = Daemon {
            child: Some(child),
            url: format!("http://127.0.0.1:{port}"),
            data_dir,
            config,
            log,
        };
        daemon.wait_until(Duration::from_secs(60), "the API answers /healthz", |d| {
            d.get("/healthz").is_ok_and(|(status, _)| status == 200)
        });
        daemon
    }

    /// The daemon's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Polls `condition` every 50 ms until it holds; fails the test with the daemon's log after
    /// `timeout`.
    pub fn wait_until(
        &mut self,
        timeout: Duration,
        what: &str,
        mut condition: impl FnMut(&mut Daemon) -> bool,
    ) {
        let deadline = Instant::now() + timeout;
        loop {
            if condition(self) {
                return;
            }
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                panic!(
                    "the daemon exited ({status}) while waiting for {what}; log:\n{}",
                    self.log()
                );
            }
            if Instant::now() >= deadline {
                panic!("timed out waiting for {what}; log:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// GET `path`: status and body.
    pub fn get(&self, path: &str) -> Result<(u16, String), String> {
        request("GET", &format!("{}{path}", self.url), None)
    }

    /// POST `body` to `path`: status and body.
    pub fn post(&self, path: &str, body: &str) -> Result<(u16, String), String> {
        request("POST", &format!("{}{path}", self.url), Some(body))
    }

    /// GET `path` as JSON, asserting 200.
    pub fn json(&self, path: &str) -> serde_json::Value {
        let (status, body) = self.get(path).expect("request");
        assert_eq!(status, 200, "GET {path}: {body}");
        serde_json::from_str(&body)
            .unwrap_or_else(|e| panic!("GET {path} is not JSON ({e}): {body}"))
    }

    /// Sends `signal` to the daemon.
    pub fn signal(&self, signal: i32) {
        if let Some(child) = &self.child {
            // SAFETY: kill(2) on our own child's pid has no memory-safety preconditions.
            unsafe { libc::kill(child.id() as i32, signal) };
        }
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

    /// Kills the daemon with SIGKILL, as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill();
    }
}

/// One HTTP request over a plain TCP connection (the API speaks HTTP/1.1 on loopback).
fn request(method: &str, url: &str, body: Option<&str>) -> Result<(u16, String), String> {
    use std::io::Write;
    let rest = url.strip_prefix("http://").ok_or("only http URLs")?;
    let (host, path) = rest
        .split_once('/')
        .map_or((rest, "/".to_owned()), |(h, p)| (h, format!("/{p}")));
    let mut stream = std::net::TcpStream::connect(host).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .map_err(|e| e.to_string())?;
    let body = body.unwrap_or("");
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    stream
        .write_all(head.as_bytes())
        .map_err(|e| e.to_string())?;
    stream
        .write_all(body.as_bytes())
        .map_err(|e| e.to_string())?;
    let mut response = Vec::new();
    stream
        .read_to_end(&mut response)
        .map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&response).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").ok_or("no HTTP head")?;
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or("no status")?;
    let chunked = head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked");
    Ok((
        status,
        if chunked {
            dechunk(body)
        } else {
            body.to_owned()
        },
    ))
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        body = rest[n..].trim_start_matches("\r\n");
    }
    out
}
