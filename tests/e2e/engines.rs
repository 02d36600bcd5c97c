//! The engines a fleet of ballast nodes runs behind, started by the tests from their Debian
//! packages with generated configs: HAProxy (asked for its servers' states through its stats
//! socket) and a Prometheus server (asked through its HTTP API). Each is killed when dropped,
//! also when a test fails; and a fleet of real nodes on this machine, each with its own data
//! directory, port and memory cgroup.

use std::collections::BTreeMap;
use std::io::{Read as _, Write as _};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use ballast_testkit::cgroup::MemoryCgroup;
use serde_json::Value;

use crate::support::{Daemon, Options, plugin_dir};

/// Whether `program` is on `PATH`.
pub fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(program).is_file()))
}

/// `program`, or a failure naming the Debian package that has it.
fn program(program: &str, package: &str) -> Command {
    assert!(
        on_path(program),
        "`{program}` is not on PATH: install the Debian package `{package}` (`cargo xtask ci` does)"
    );
    Command::new(program)
}

/// A process the test started, killed when dropped, with its output in a file.
struct Process {
    child: Option<Child>,
    log: PathBuf,
    what: &'static str,
}

impl Process {
    fn spawn(mut command: Command, log: PathBuf, what: &'static str) -> Process {
        let file = std::fs::File::create(&log).expect("the engine's log can be created");
        let child = command
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("the log file can be shared"))
            .stderr(file)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {what}: {e}"));
        Process {
            child: Some(child),
            log,
            what,
        }
    }

    /// Its output so far.
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Fails the test, with the engine's output, if it has exited.
    fn check_running(&mut self) {
        if let Some(child) = self.child.as_mut()
            && let Ok(Some(status)) = child.try_wait()
        {
            self.child = None;
            panic!(
                "{} exited ({status}); its output:\n{}",
                self.what,
                self.log()
            );
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A server's state as HAProxy's `show stat` gives it: `UP`, `DOWN`, `UP 1/2` (going down),
/// `DOWN 1/2` (coming up), `MAINT`, `no check`.
pub type ServerStates = BTreeMap<(String, String), String>;

/// An HAProxy started on a generated config, with an admin stats socket.
pub struct Haproxy {
    process: Process,
    socket: PathBuf,
}

impl Haproxy {
    /// Starts `haproxy -db` on `config` (written to `dir/haproxy.cfg`), whose `global` section
    /// must declare `stats socket` at [`Haproxy::socket_path`]`(dir)`; waits until the socket
    /// answers.
    pub fn start(dir: &Path, config: &str) -> Haproxy {
        let path = dir.join("haproxy.cfg");
        std::fs::write(&path, config).expect("the HAProxy config can be written");
        let mut command = program("haproxy", "haproxy");
        command.arg("-db").arg("-f").arg(&path);
        let mut haproxy = Haproxy {
            process: Process::spawn(command, dir.join("haproxy.log"), "haproxy"),
            socket: Haproxy::socket_path(dir),
        };
        let waited = ballast_testkit::wait_for(
            "HAProxy's stats socket",
            Duration::from_secs(30),
            Duration::from_millis(20),
            || {
                haproxy.process.check_running();
                haproxy.try_states().is_ok()
            },
        );
        if let Err(error) = waited {
            panic!("{error}; HAProxy's output:\n{}", haproxy.process.log());
        }
        haproxy
    }

    /// Where the stats socket of an HAProxy started in `dir` is.
    pub fn socket_path(dir: &Path) -> PathBuf {
        dir.join("haproxy.sock")
    }

    fn try_states(&self) -> Result<ServerStates, String> {
        let mut stream = UnixStream::connect(&self.socket)
            .map_err(|e| format!("cannot connect to {}: {e}", self.socket.display()))?;
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .map_err(|e| e.to_string())?;
        stream
            .write_all(b"show stat\n")
            .map_err(|e| format!("cannot write to the stats socket: {e}"))?;
        let mut text = String::new();
        stream
            .read_to_string(&mut text)
            .map_err(|e| format!("cannot read the stats socket: {e}"))?;
        parse_show_stat(&text)
    }

    /// Every server's state, by (backend, server).
    ///
    /// # Panics
    ///
    /// When HAProxy has exited or its socket does not answer.
    pub fn states(&mut self) -> ServerStates {
        self.process.check_running();
        self.try_states()
            .unwrap_or_else(|e| panic!("{e}; HAProxy's output:\n{}", self.process.log()))
    }

    /// The state of `server` in `backend`.
    pub fn state(&mut self, backend: &str, server: &str) -> String {
        self.states()
            .remove(&(backend.to_owned(), server.to_owned()))
            .unwrap_or_else(|| panic!("HAProxy has no server {backend}/{server}"))
    }
}

/// `show stat`'s CSV: a `# pxname,svname,...` header, a line per frontend, server and backend.
fn parse_show_stat(text: &str) -> Result<ServerStates, String> {
    let mut lines = text.lines();
    let header = lines
        .next()
        .and_then(|h| h.strip_prefix("# "))
        .ok_or_else(|| format!("`show stat` answered without its header: {text:?}"))?;
    let columns: Vec<&str> = header.split(',').collect();
    let column = |name: &str| {
        columns
            .iter()
            .position(|c| *c == name)
            .ok_or_else(|| format!("`show stat` has no column {name}: {header}"))
    };
    let (proxy, server, status) = (column("pxname")?, column("svname")?, column("status")?);
    let mut states = ServerStates::new();
    for line in lines.filter(|l| !l.is_empty()) {
        let fields: Vec<&str> = line.split(',').collect();
        let (Some(p), Some(s), Some(st)) =
            (fields.get(proxy), fields.get(server), fields.get(status))
        else {
            continue;
        };
        if *s == "FRONTEND" || *s == "BACKEND" {
            continue;
        }
        states.insert(((*p).to_owned(), (*s).to_owned()), (*st).to_owned());
    }
    Ok(states)
}

/// A Prometheus server started on a generated config, with a temporary storage directory.
pub struct Prometheus {
    process: Process,
    /// Its base URL, `http://127.0.0.1:PORT`.
    pub url: String,
}

impl Prometheus {
    /// Starts `prometheus` on `config` (written to `dir/prometheus.yml`), storing in
    /// `dir/data`, listening on a free loopback port; waits until it is ready.
    pub fn start(dir: &Path, config: &str) -> Prometheus {
        Prometheus::start_with(dir, config, None, |url| {
            ballast_testkit::http::get(url).is_ok_and(|(status, _)| status == 200)
        })
    }

    /// [`Prometheus::start`] with its web config (`--web.config.file`: TLS, basic auth users)
    /// when one is given, serving `https://`; `ready` answers whether GET of the URL it is
    /// given (`/-/ready`) succeeds.
    pub fn start_with(
        dir: &Path,
        config: &str,
        web_config: Option<&Path>,
        ready: impl Fn(&str) -> bool,
    ) -> Prometheus {
        let path = dir.join("prometheus.yml");
        std::fs::write(&path, config).expect("the Prometheus config can be written");
        let port = crate::support::free_port();
        let mut command = program("prometheus", "prometheus");
        command
            .arg(format!("--config.file={}", path.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--log.level=warn");
        if let Some(web) = web_config {
            command.arg(format!("--web.config.file={}", web.display()));
        }
        let scheme = if web_config.is_some() {
            "https"
        } else {
            "http"
        };
        let mut prometheus = Prometheus {
            process: Process::spawn(command, dir.join("prometheus.log"), "prometheus"),
            url: format!("{scheme}://127.0.0.1:{port}"),
        };
        let url = format!("{}/-/ready", prometheus.url);
        let waited = ballast_testkit::wait_for(
            "Prometheus to be ready",
            Duration::from_secs(60),
            Duration::from_millis(50),
            || {
                prometheus.process.check_running();
                ready(&url)
            },
        );
        if let Err(error) = waited {
            panic!(
                "{error}; Prometheus's output:\n{}",
                prometheus.process.log()
            );
        }
        prometheus
    }

    /// GET `path` (under `/api/v1/`) as JSON, asserting `"status": "success"`; its `data`.
    pub fn api(&mut self, path: &str) -> Value {
        self.process.check_running();
        let url = format!("{}/api/v1/{path}", self.url);
        let body = ballast_testkit::http::get_json(&url).unwrap_or_else(|e| {
            panic!("{e}; Prometheus's output:\n{}", self.process.log());
        });
        assert_eq!(body["status"], "success", "GET {url}: {body}");
        body["data"].clone()
    }

    /// An instant query's result vector: each series' labels and value.
    pub fn query(&mut self, promql: &str) -> Vec<(BTreeMap<String, String>, f64)> {
        let data = self.api(&format!("query?query={}", encode(promql)));
        data["result"]
            .as_array()
            .unwrap_or_else(|| panic!("`{promql}` answered no vector: {data}"))
            .iter()
            .map(|series| {
                let labels = series["metric"]
                    .as_object()
                    .map(|m| {
                        m.iter()
                            .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
                            .collect()
                    })
                    .unwrap_or_default();
                let value = series["value"][1]
                    .as_str()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(f64::NAN);
                (labels, value)
            })
            .collect()
    }
}

/// Percent-encodes a query string value.
fn encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len() * 3);
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-_.~".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// Whether this machine lets a test make memory cgroups of its own (root, a writable cgroup file
/// system): `Err` says why not.
pub fn cgroups_writable() -> Result<(), String> {
    MemoryCgroup::create("ballast-e2e-probe", NODE_MEMORY).map(drop)
}

/// Says that `test` was skipped and why, on a `SKIPPED: ...` line that `cargo xtask ci` counts
/// (written past the test harness's capture of `println!`).
pub fn skipped(test: &str, why: &str) {
    let _ = writeln!(std::io::stdout(), "SKIPPED: {test}: {why}");
}

/// One ballast node of a fleet on this machine: a real daemon with its own data directory and
/// port, in a memory cgroup of its own.
pub struct Node {
    /// Its name in the engines' configs: `node1`, `node2`, ...
    pub name: String,
    /// The daemon.
    pub daemon: Daemon,
    /// Its memory cgroup, when it has one: what the node reads as its memory, and where a
    /// test's load goes.
    pub cgroup: Option<MemoryCgroup>,
    _dir: tempfile::TempDir,
}

/// The memory limit of each node's cgroup.
pub const NODE_MEMORY: u64 = 256 << 20;

/// Starts `n` nodes on `config` and waits until each is ready (`GET /ready`); with `cgroups`,
/// each in a memory cgroup of its own limited to [`NODE_MEMORY`].
///
/// # Panics
///
/// When the cgroups cannot be made (this needs root, or a delegated cgroup tree) or a node
/// does not start.
pub fn start_nodes(n: usize, config: &str, cgroups: bool) -> Vec<Node> {
    (1..=n)
        .map(|i| {
            let name = format!("node{i}");
            let cgroup = cgroups.then(|| {
                MemoryCgroup::create(&format!("ballast-e2e-{name}"), NODE_MEMORY).unwrap_or_else(
                    |e| panic!("a fleet node needs a memory cgroup of its own (run as root): {e}"),
                )
            });
            let dir = tempfile::tempdir().unwrap();
            let mut options = Options::new(env!("CARGO_BIN_EXE_ballast"), plugin_dir());
            options.cgroup_procs = cgroup.as_ref().map(MemoryCgroup::procs_file);
            let mut daemon = Daemon::start(&options, dir.path(), config);
            daemon.wait_until(Duration::from_secs(60), "the node to be ready", |d| {
                d.get("/ready").is_ok_and(|(status, _)| status == 200)
            });
            Node {
                name,
                daemon,
                cgroup,
                _dir: dir,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn show_stat_is_read_by_its_header() {
        let text = "# pxname,svname,qcur,status,weight\n\
                    voice,FRONTEND,,OPEN,\n\
                    voice,node1,0,UP,1\n\
                    voice,node2,0,DOWN 1/2,1\n\
                    voice,BACKEND,0,UP,2\n\n";
        let states = parse_show_stat(text).unwrap();
        assert_eq!(states.len(), 2);
        assert_eq!(states[&("voice".into(), "node1".into())], "UP");
        assert_eq!(states[&("voice".into(), "node2".into())], "DOWN 1/2");
        assert!(parse_show_stat("Unknown command\n").is_err());
    }

    #[test]
    fn queries_are_percent_encoded() {
        assert_eq!(
            encode(r#"sum by (plugin) (x{a="b"})"#),
            "sum%20by%20%28plugin%29%20%28x%7Ba%3D%22b%22%7D%29"
        );
    }
}
