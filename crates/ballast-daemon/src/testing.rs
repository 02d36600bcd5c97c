//! Test fixtures for the control API and its CLI clients: a real [`AppState`] around a
//! `PluginHostActor` that loads the example plugins, a real `ScalerActor` and a `LiveView`,
//! wired the way the daemon wires them, and a server on an ephemeral port in its own thread.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command as Process;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use actix::prelude::*;
use ballast_core::decision::Mode;
use ballast_core::plugin::Command;
use ballast_core::{
    Anomaly, Assessment, CpuReading, Forecast, Level, MemoryReading, MemoryScope, Metric, PsiLine,
    PsiReading, Resource, ResourceAssessment, Sample, TrendStats,
};
use ballast_host::{
    Execute, HostEvent, PluginConfig, PluginHost, PluginHostActor, ProcessOptions, Subscribe,
};
use ballast_scaler::actor::{
    CommandMsg, DecisionMsg, GetPluginsMsg, PluginEventMsg, ScalerOutputs, WarningMsg,
};
use ballast_scaler::{Scaler, ScalerActor, ScalerConfig};

fn now() -> ballast_core::Timestamp {
    ballast_core::Timestamp::from_system_time(std::time::SystemTime::now())
}
use crate::config::Config;
use crate::live::{DaemonEvent, LiveView};
use crate::metrics::Metrics;
use crate::state::AppState;

/// The directory holding the example plugins the tests load, built once per test run into its
/// own target directory (the outer cargo holds the lock of the main one).
pub fn plugin_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let exe = std::env::current_exe().expect("test binary path");
        // target/<profile>/deps/ballast-<hash> -> target/plugin-tests (shared with the host's tests)
        let target = exe
            .ancestors()
            .nth(3)
            .expect("target directory")
            .join("plugin-tests");
        let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
        let status = Process::new(cargo)
            .current_dir(workspace)
            .args(["build", "--quiet", "--target-dir"])
            .arg(&target)
            .args([
                "-p",
                "ballast-plugin-voice",
                "-p",
                "ballast-plugin-stubs",
                "-p",
                "ballast-plugin-faulty",
            ])
            .status()
            .expect("cargo runs");
        assert!(status.success(), "building the test plugins failed");
        target.join("debug")
    })
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
    /// The plugins, all enabled at start.
    pub plugins: Vec<PluginConfig>,
    /// The bearer token, if any.
    pub token: Option<String>,
    /// `api.max_body_bytes`.
    pub max_body_bytes: usize,
    /// Where plugins that run in a process write their logs.
    pub log_dir: Option<PathBuf>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            plugins: vec![plugin("voice", 10), plugin("stubs", 100)],
            token: None,
            max_body_bytes: 4096,
            log_dir: None,
        }
    }
}

/// Sends the scaler's commands to the host, as the daemon's wiring does.
struct Forwarder(Addr<PluginHostActor>);

impl Actor for Forwarder {
    type Context = Context<Self>;
}

impl Handler<CommandMsg> for Forwarder {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, msg: CommandMsg, _ctx: &mut Context<Self>) -> Self::Result {
        let host = self.0.clone();
        Box::pin(async move {
            if let Ok(Err(error)) = host.send(Execute(msg.0)).await {
                tracing::warn!(%error, "test command failed");
            }
        })
    }
}

/// Publishes what the actors produce on the live view, as the daemon's telemetry does.
struct Telemetry {
    live: Arc<LiveView>,
    metrics: Arc<Metrics>,
    scaler: Option<Addr<ScalerActor>>,
}

impl Telemetry {
    fn publish(&self, event: DaemonEvent) {
        self.metrics.observe(&event);
        self.live.publish(event);
    }
}

impl Actor for Telemetry {
    type Context = Context<Self>;
}

impl Handler<HostEvent> for Telemetry {
    type Result = ();

    fn handle(&mut self, msg: HostEvent, _ctx: &mut Context<Self>) {
        if let Some(scaler) = &self.scaler {
            scaler.do_send(PluginEventMsg(msg.0.clone()));
        }
        self.publish(DaemonEvent::Plugin(msg.0));
    }
}

impl Handler<DecisionMsg> for Telemetry {
    type Result = ();

    fn handle(&mut self, msg: DecisionMsg, _ctx: &mut Context<Self>) {
        self.publish(DaemonEvent::Decision(msg.0));
    }
}

impl Handler<WarningMsg> for Telemetry {
    type Result = ();

    fn handle(&mut self, msg: WarningMsg, _ctx: &mut Context<Self>) {
        self.publish(DaemonEvent::Warning(msg.0));
    }
}

/// Answered once every message sent to the telemetry actor before it has been handled.
#[derive(Message)]
#[rtype(result = "()")]
struct Flush;

impl Handler<Flush> for Telemetry {
    type Result = ();

    fn handle(&mut self, _msg: Flush, _ctx: &mut Context<Self>) {}
}

/// Message to hand the telemetry actor the scaler's address once it exists.
#[derive(Message)]
#[rtype(result = "()")]
struct SetScaler(Addr<ScalerActor>);

impl Handler<SetScaler> for Telemetry {
    type Result = ();

    fn handle(&mut self, msg: SetScaler, _ctx: &mut Context<Self>) {
        self.scaler = Some(msg.0);
    }
}

/// A real `AppState` with `options`' plugins loaded and enabled. Must run inside an actix System.
pub async fn app_state(options: Options) -> AppState {
    let plugins = options.plugins;
    let process_options = ProcessOptions {
        log_dir: options.log_dir,
        sample_interval: Duration::from_millis(50),
        ..ProcessOptions::default()
    };
    let host_actor = PluginHostActor::new(
        move |sink| {
            let host = PluginHost::with_options(Arc::new(now), sink, process_options);
            for config in plugins {
                host.load(config).expect("test plugin loads");
            }
            host
        },
        Duration::from_secs(3600),
    );
    let plugin_host = host_actor.host();
    let host = host_actor.start();
    let live = Arc::new(LiveView::new(now(), Mode::Enforce));
    let metrics = Arc::new(Metrics::new());
    let telemetry = Telemetry {
        live: Arc::clone(&live),
        metrics: Arc::clone(&metrics),
        scaler: None,
    }
    .start();
    // The scaler exists and hears plugin events before the plugins are enabled, so that its
    // clock follows the events' timestamps from the start (as in the daemon, where pins come
    // after the first messages).
    let specs = plugin_host
        .names()
        .iter()
        .map(|n| plugin_host.spec(n).expect("loaded plugin has a spec"))
        .collect();
    let scaler = Scaler::new(ScalerConfig::default(), specs).expect("scaler config is valid");
    let forwarder = Forwarder(host.clone()).start();
    let scaler = ScalerActor::new(
        scaler,
        ScalerOutputs {
            commands: forwarder.recipient(),
            decisions: Some(telemetry.clone().recipient()),
            warnings: Some(telemetry.clone().recipient()),
        },
    )
    .start();
    telemetry
        .send(SetScaler(scaler.clone()))
        .await
        .expect("telemetry runs");
    host.send(Subscribe(telemetry.clone().recipient()))
        .await
        .expect("host actor runs");
    for name in plugin_host.names() {
        host.send(Execute(Command::Enable {
            plugin: name.clone(),
            level: Level::FULL,
            reason: "test start".into(),
        }))
        .await
        .expect("host actor runs")
        .expect("test plugin enables");
    }
    // The scaler has heard the enables once a request sent after them is answered.
    let _ = telemetry.send(Flush).await;
    let _ = scaler.send(GetPluginsMsg).await;
    let mut config = Config::default();
    config.api.max_body_bytes = options.max_body_bytes;
    config.plugins = Vec::new();
    AppState {
        host,
        plugin_host,
        scaler,
        live,
        config: Arc::new(config),
        pins_dir: None,
        token: options.token.map(Arc::from),
        metrics,
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

/// A sample and an assessment with figures in every metric family.
pub fn publish_figures(state: &AppState) {
    let at = now();
    let mut sample = Sample::unavailable(at, "test");
    sample.memory = Metric::available(MemoryReading {
        total_bytes: 16 << 30,
        used_bytes: 6 << 30,
        available_bytes: 10 << 30,
        swap_total_bytes: 0,
        swap_used_bytes: 0,
        scope: MemoryScope::Host,
    });
    sample.cpu = Metric::available(CpuReading {
        utilization: 0.25,
        load_average: [0.5, 0.4, 0.3],
        cores: 8,
    });
    let line = PsiLine {
        avg10: 1.5,
        avg60: 0.75,
        avg300: 0.25,
        total_us: 123_456,
    };
    sample.psi.memory = Metric::available(PsiReading {
        some: line,
        full: Some(line),
    });
    state.live.publish(DaemonEvent::Sample(sample));
    state.live.publish(DaemonEvent::Assessment(Assessment {
        at,
        resources: vec![ResourceAssessment {
            resource: Resource::Memory,
            value: 0.375,
            smoothed: 0.36,
            forecast: Some(Forecast {
                value: 0.41,
                horizon: Duration::from_secs(300),
                confidence: 0.8,
                model: "test".into(),
            }),
            trend: TrendStats::default(),
            anomaly: Anomaly::default(),
        }],
    }));
}

/// An API server on an ephemeral loopback port, in its own thread and actix System.
pub struct TestDaemon {
    /// `http://127.0.0.1:<port>`.
    pub url: String,
    /// Its state, to publish events or look at plugins.
    pub state: AppState,
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
                let state = app_state(options).await;
                let listener = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
                let address = listener.local_addr().expect("bound address");
                let server =
                    crate::api::server_on(listener, state.clone()).expect("the API server starts");
                tx.send((format!("http://{address}"), state, server.handle()))
                    .expect("the test waits");
                let _ = server.await;
            });
        });
        let (url, state, server) = rx.recv().expect("the test daemon starts");
        TestDaemon {
            url,
            state,
            server,
            thread: Some(thread),
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
