//! The in-process daemon of the API and CLI tests: the production [`Topology`], built on a fake
//! [`Environment`] (a fixture `/proc` whose figures the test sets, a manual trigger, a temporary
//! data directory, the example plugins), and the control API on an ephemeral port.
//!
//! Tests change the machine only through the environment: they set figures on the fixture
//! `/proc` and fire the trigger, and the real monitor, predictor and scaler take it from there.

use std::net::TcpListener;
use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ballast_host::PluginConfig;
use ballast_monitor::{ManualTrigger, ManualTriggerHandle, MonitorConfig, NvmlSource};
use ballast_testkit::proc::{FakeProc, GIB, Pressure};

use crate::config::Config;
use crate::live::DaemonEvent;
use crate::state::AppState;
use crate::topology::{Environment, Topology, Trigger};

/// The directory holding the example plugins the tests load, built once per test run.
pub fn plugin_dir() -> &'static Path {
    ballast_testkit::plugins::example_plugins()
}

/// A config for an example plugin with a small working set.
pub fn plugin(name: &str, priority: i32) -> PluginConfig {
    let mut c = PluginConfig::new(name, plugin_dir());
    c.priority = priority;
    c.config = serde_json::json!({ "workload": { "working_set_mb": [4, 1], "cpu_duty": 0.0 } });
    c
}

/// The faulty plugin with slow calls, one at a time and no queue.
pub fn slow_faulty(call_sleep_ms: u64) -> PluginConfig {
    let mut c = PluginConfig::new("faulty", plugin_dir());
    c.priority = 5;
    c.config = serde_json::json!({ "call_sleep_ms": call_sleep_ms });
    c.max_concurrent_calls = 1;
    c.queue = 0;
    c
}

/// A process plugin without the protocol that prints `line 1` to `line 5`, then `later` once
/// the file `go` appears in `dir`, then waits.
pub fn talker(dir: &Path) -> PluginConfig {
    let go = dir.join("go");
    let mut c = PluginConfig::process("talker", "sh");
    c.args = vec![
        "-c".into(),
        format!(
            "for i in 1 2 3 4 5; do echo line $i; done; while [ ! -e '{}' ]; do sleep 0.02; done; echo later; exec sleep 600",
            go.display()
        ),
    ];
    c.priority = 50;
    c
}

/// What a test daemon runs with.
pub struct Options {
    /// The plugins, all enabled at start (the machine is calm and no tier rule holds them back).
    pub plugins: Vec<PluginConfig>,
    /// The bearer token, if any.
    pub token: Option<String>,
    /// `api.max_body_bytes`.
    pub max_body_bytes: usize,
    /// The data directory (plugin logs go to its `logs`); a temporary one by default.
    pub data_dir: Option<PathBuf>,
    /// `api.ready_requires_token`.
    pub ready_requires_token: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            plugins: vec![plugin("voice", 10), plugin("stubs", 100)],
            token: None,
            max_body_bytes: 4096,
            data_dir: None,
            ready_requires_token: false,
        }
    }
}

/// A daemon built for a test: the API's state, the topology behind it and the fake machine.
/// Dereferences to the [`AppState`] the API serves.
pub struct Fixture {
    /// What the API's handlers are given.
    pub state: AppState,
    /// Every actor of the daemon.
    pub topology: Topology,
    /// The machine the monitor reads.
    pub machine: FakeProc,
    trigger: ManualTriggerHandle,
    /// How far the daemon's clock is ahead of the system's, in milliseconds.
    clock_ahead: Arc<AtomicU64>,
    _dir: tempfile::TempDir,
}

impl Deref for Fixture {
    type Target = AppState;

    fn deref(&self) -> &AppState {
        &self.state
    }
}

impl Fixture {
    /// Moves the daemon's clock `by` ahead (the system's time plus what was added so far).
    pub fn advance_clock(&self, by: Duration) {
        let ms = u64::try_from(by.as_millis()).unwrap_or(u64::MAX);
        self.clock_ahead.fetch_add(ms, Ordering::SeqCst);
    }

    /// Fires the monitor's pressure trigger, as the kernel would when memory stalls.
    pub fn fire_trigger(&self) {
        assert!(self.trigger.fire(), "the monitor's trigger is not armed");
    }

    /// Sets the figures of [`set_figures`], has the monitor sample through its trigger, and
    /// returns a watch that sees when that sample and its assessment reached the live view.
    fn sample_figures(&self) -> FiguresWatch {
        let events = self.state.live.subscribe();
        set_figures(&self.machine);
        assert!(self.trigger.fire(), "the monitor's trigger is not armed");
        FiguresWatch {
            events,
            sampled: None,
            deadline: Instant::now() + SAMPLE_TIMEOUT,
        }
    }
}

/// Follows the live view's events until the sample with the test's figures and its assessment
/// went by.
struct FiguresWatch {
    events: tokio::sync::broadcast::Receiver<DaemonEvent>,
    sampled: Option<ballast_core::Timestamp>,
    deadline: Instant,
}

impl FiguresWatch {
    /// Whether both went by; panics once the time is up.
    fn done(&mut self) -> bool {
        use tokio::sync::broadcast::error::TryRecvError;
        loop {
            match self.events.try_recv() {
                Ok(DaemonEvent::Sample(sample))
                    if sample
                        .memory
                        .value()
                        .is_some_and(|m| m.available_bytes == 10 * GIB) =>
                {
                    self.sampled = Some(sample.at);
                }
                Ok(DaemonEvent::Assessment(a)) if Some(a.at) == self.sampled => return true,
                Ok(_) | Err(TryRecvError::Lagged(_)) => {}
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Closed) => panic!("the daemon's event stream closed"),
            }
        }
        assert!(
            Instant::now() < self.deadline,
            "the daemon did not sample the test's figures within {SAMPLE_TIMEOUT:?} of its trigger"
        );
        false
    }
}

/// The config a test daemon runs: the plugins, no tier rule, a monitor that samples only at
/// start and when the test fires its trigger.
fn config(options: &Options) -> Config {
    let mut config = Config::default();
    config.api.max_body_bytes = options.max_body_bytes;
    config.api.ready_requires_token = options.ready_requires_token;
    config.plugins = options.plugins.clone();
    config.plugin_dir = Some(plugin_dir().to_owned());
    config.tier.plugins.clear();
    config.monitor.interval = Duration::from_secs(3600);
    config
}

/// Builds the daemon `options` describes. Must run inside an actix System.
pub async fn app_state(options: Options) -> Fixture {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let machine = FakeProc::new(dir.path());
    let (trigger, handle) = ManualTrigger::new();
    let config = Arc::new(config(&options));
    let clock_ahead = Arc::new(AtomicU64::new(0));
    let system = ballast_host::system_clock();
    let ahead = Arc::clone(&clock_ahead);
    let env = Environment {
        clock: Arc::new(move || {
            system().saturating_add(Duration::from_millis(ahead.load(Ordering::SeqCst)))
        }),
        monitor: MonitorConfig {
            proc_root: machine.proc_root().to_owned(),
            sys_root: machine.sys_root().to_owned(),
            disk_paths: Vec::new(),
            nvml: NvmlSource::Disabled,
            cgroup_v2_path: None,
        },
        trigger: Trigger::Manual(trigger),
        data_dir: options
            .data_dir
            .clone()
            .unwrap_or_else(|| dir.path().join("data")),
        worker_program: std::env::current_exe().expect("the test binary"),
        process_sample_interval: Duration::from_millis(50),
        host_poll_interval: Duration::from_secs(3600),
        plugin_cgroups: None,
    };
    let topology = Topology::build(Arc::clone(&config), env)
        .await
        .expect("the test daemon starts");
    let state = topology.app_state(options.token.map(Arc::from));
    // The scaler has heard the start-up's enables once a request sent after them is answered.
    let _ = state
        .scaler
        .send(ballast_scaler::actor::GetPluginsMsg)
        .await;
    Fixture {
        state,
        topology,
        machine,
        trigger: handle,
        clock_ahead,
        _dir: dir,
    }
}

/// Waits (bounded) until `plugin` is in `state` ("enabled", "disabled", ...); panics if it never
/// gets there.
pub async fn wait_for_state(app: &AppState, plugin: &str, state: &str) {
    for _ in 0..2000 {
        let status = app.plugin_host.status(plugin).expect("plugin exists");
        if status.state.name() == state {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let status = app.plugin_host.status(plugin).expect("plugin exists");
    panic!(
        "plugin `{plugin}` never became {state}; it is {}",
        status.state
    );
}

/// Sets figures in every metric family on the fake machine: memory 6 of 16 GiB used (0.375),
/// CPU 25 % busy on 8 cores, load 0.5 0.4 0.3, memory pressure 1.5 / 0.75 / 0.25.
fn set_figures(machine: &FakeProc) {
    machine.set_memory(16 * GIB, 10 * GIB);
    machine.set_cpu(0.25);
    machine.set_load([0.5, 0.4, 0.3]);
    machine.set_pressure(
        "memory",
        Pressure {
            some_avg10: 1.5,
            some_avg60: 0.75,
            some_avg300: 0.25,
            some_total_us: 123_456,
            full: Some((1.5, 0.75, 0.25, 123_456)),
        },
    );
}

/// How long a test waits for the daemon to take a sample it asked for.
const SAMPLE_TIMEOUT: Duration = Duration::from_secs(20);

/// Sets the figures of [`set_figures`] on the machine, has the monitor sample, and waits until
/// the sample and its assessment are in the live view.
pub async fn publish_figures(fixture: &Fixture) {
    let mut watch = fixture.sample_figures();
    while !watch.done() {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// A daemon with its API on an ephemeral loopback port, in its own thread and actix System.
pub struct TestDaemon {
    /// `http://127.0.0.1:<port>`.
    pub url: String,
    /// Its state, to look at plugins.
    pub state: AppState,
    fixture: Arc<Fixture>,
    server: actix_web::dev::ServerHandle,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl TestDaemon {
    /// Starts one with `options`.
    pub fn start(options: Options) -> TestDaemon {
        let (tx, rx) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            let system = actix::System::new();
            system.block_on(async move {
                let fixture = Arc::new(app_state(options).await);
                let listener = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
                let address = listener.local_addr().expect("bound address");
                let server = crate::api::server_on(listener, fixture.state.clone())
                    .expect("the API server starts");
                tx.send((
                    format!("http://{address}"),
                    Arc::clone(&fixture),
                    server.handle(),
                ))
                .expect("the test waits");
                let _ = server.await;
            });
        });
        let (url, fixture, server) = rx.recv().expect("the test daemon starts");
        TestDaemon {
            url,
            state: fixture.state.clone(),
            fixture,
            server,
            thread: Some(thread),
        }
    }

    /// A handle to the daemon's fixture for another thread of the test.
    pub fn handle(&self) -> Arc<Fixture> {
        Arc::clone(&self.fixture)
    }

    /// [`publish_figures`] from a test's own thread.
    pub fn publish_figures(&self) {
        self.fixture.publish_figures();
    }
}

impl Fixture {
    /// [`publish_figures`] from a thread outside the daemon's.
    pub fn publish_figures(&self) {
        let mut watch = self.sample_figures();
        while !watch.done() {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for TestDaemon {
    fn drop(&mut self) {
        // The stop command is sent at once; the returned future only waits for it to finish.
        drop(self.server.stop(false));
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
