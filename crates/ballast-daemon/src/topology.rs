//! The daemon's topology: every actor, created and connected in one place from a config and an
//! environment. `ballast run` builds it on the real machine; the API and CLI tests build the same
//! topology with fakes in the [`Environment`] (a fixture `/proc`, a manual trigger, a temporary
//! data directory), never by wiring one of their own.
//!
//! ```text
//!            TierActor --Tier--> ScalerActor (thresholds, allowances)
//! MonitorActor --Sample--> PredictorActor --Assessment--> ScalerActor --Command--> PluginHostActor
//!      ^ (tick + PSI trigger)                                                          |
//!      +----------------------- ReportPluginUsage <------------ HostEvent <------------+
//! every actor --Record--> TelemetryActor (live view, metrics) --Append--> Journal  [disk]
//! override decisions, API pins --PersistPins--> PinWriter (pins.json)               [disk]
//! HostEvent (states), PSI trigger, emergency --> Checkpointer --TakeCheckpoint--> PluginHostActor
//!                                                 +--SaveCheckpoint--> Journal            [disk]
//! ```
//!
//! Where each actor runs: the control loop (monitor, predictor, scaler, the host actor, the
//! tier, telemetry and the relays between them) runs on the daemon's own arbiter, and none of its
//! handlers blocks: a plugin's lifecycle runs on that plugin's own thread, calls on its workers.
//! Every disk write (the JSONL logs and their fsync, checkpoints, pins) runs on a second arbiter
//! of its own, so a slow disk delays only the logs, never a sample or a decision. The control API
//! runs on actix-web's worker thread.
//!
//! Addresses are made before the actors start (actix's `Context::new()` and `address()`), so the
//! cycles of the diagram (the scaler and the pins it persists, the monitor and the usage the
//! host reports back) need no late-bound cells.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use anyhow::{Context as _, Result};
use ballast_core::Sample;
use ballast_core::decision::{DecisionKind, Mode, Rule};
use ballast_core::plugin::{Command, PluginEventKind, PluginState};
use ballast_core::sample::PluginUsage;
use ballast_core::tier::Tier;
use ballast_host::{
    Cgroups, Clock, Execute, HostEvent, PluginHost, PluginHostActor, ProcessOptions,
    Subscribe as HostSubscribe,
};
use ballast_monitor::{
    ManualTrigger, Monitor, MonitorActor, MonitorConfig, NoTrigger, NvmlSource, PsiPolling,
    PsiTrigger, ReportPluginUsage,
};
use ballast_predict::{Predictor, PredictorActor, SampleMsg, SubscribeAssessments};
use ballast_process::cgroup::{CgroupRoots, CgroupTree};
use ballast_scaler::actor::{
    AssessmentMsg, CommandMsg, DecisionMsg, GpuUsageMsg, PinMsg, PluginEventMsg, ScalerOutputs,
    SetAllowanceMsg, SetModeMsg, SetProfileMsg, WarningMsg,
};
use ballast_scaler::{Scaler, ScalerActor};
use ballast_tier::{CurrentTier, SubscribeTier, TierActor};

use crate::checkpoints::{Checkpointer, PluginStateMsg, Stall, StallTee};
use crate::config::Config;
use crate::journal::Journal;
use crate::live::{DaemonEvent, LiveView};
use crate::metrics::Metrics;
use crate::pins::{self, PersistPins, PinWriter};
use crate::state::AppState;
use crate::store;
use crate::telemetry::{Flush, Record, TelemetryActor};

/// Where the monitor is woken between ticks.
pub enum Trigger {
    /// Only the tick.
    None,
    /// A PSI trigger, the kernel's or polled, on the memory pressure file the monitor reads (the
    /// daemon's v2 cgroup's when it runs in one, else the host's `/proc/pressure/memory`).
    Psi(PsiPolling),
    /// A trigger the test fires by hand.
    Manual(ManualTrigger),
}

/// What the topology is built on: everything of the outside world it touches, so that tests can
/// replace it.
pub struct Environment {
    /// Time, for every actor and the plugins.
    pub clock: Clock,
    /// What the monitor reads: `/proc` and `/sys` roots, NVML, the disks to watch.
    pub monitor: MonitorConfig,
    /// What wakes the monitor between ticks.
    pub trigger: Trigger,
    /// The data directory: logs, pins, checkpoints, plugin logs.
    pub data_dir: PathBuf,
    /// The program isolated native plugins run in (`ballast worker`).
    pub worker_program: PathBuf,
    /// How often a plugin's process tree is measured.
    pub process_sample_interval: Duration,
    /// How often the host polls its plugins' health and stats.
    pub host_poll_interval: Duration,
    /// Where plugin processes get cgroups of their own (the machine's `/proc` and `/`), or
    /// `None` for none: their memory limits are then polled.
    pub plugin_cgroups: Option<CgroupRoots>,
}

impl Environment {
    /// The real machine, as `config` describes it: `/proc`, `/sys`, the system's NVML (or the
    /// configured library), the PSI trigger if enabled, the system clock, and this very binary
    /// as the worker of isolated plugins.
    pub fn system(config: &Config) -> Result<Environment> {
        let data_dir = config.data_dir();
        let mut monitor = MonitorConfig {
            disk_paths: config.monitor.disk_paths.clone(),
            ..MonitorConfig::default()
        };
        monitor.disk_paths.push(data_dir.clone());
        if let Some(library) = &config.monitor.nvml_library {
            monitor.nvml = NvmlSource::Path(library.clone());
        }
        let trigger = if config.monitor.psi_trigger {
            Trigger::Psi(config.monitor.psi_poll_interval.polling())
        } else {
            Trigger::None
        };
        Ok(Environment {
            clock: ballast_host::system_clock(),
            monitor,
            trigger,
            data_dir,
            worker_program: std::env::current_exe()
                .context("cannot find the ballast executable to run isolated plugins with")?,
            process_sample_interval: ProcessOptions::default().sample_interval,
            host_poll_interval: Duration::from_secs(5),
            plugin_cgroups: config.plugin_cgroups.then(CgroupRoots::default),
        })
    }
}

/// Hands each message of type `M` to a closure: the glue between one actor's output type and
/// another's input type, kept here so that no crate needs to know another's messages.
pub struct Relay<M> {
    forward: Box<dyn FnMut(M)>,
}

impl<M: Message<Result = ()> + Send + 'static> Relay<M> {
    /// A relay that calls `forward` for each message.
    pub fn start(forward: impl FnMut(M) + 'static) -> Recipient<M> {
        Relay {
            forward: Box::new(forward),
        }
        .start()
        .recipient()
    }
}

impl<M: Message<Result = ()> + Send + 'static> Actor for Relay<M> {
    type Context = Context<Self>;
}

impl<M: Message<Result = ()> + Send + 'static> Handler<M> for Relay<M> {
    type Result = ();

    fn handle(&mut self, msg: M, _ctx: &mut Self::Context) {
        (self.forward)(msg);
    }
}

/// Makes the daemon's directory of plugin cgroups (cleaning what a daemon killed before left)
/// and says in the log what it found, or, once, why plugins run without cgroups.
fn set_up_cgroups(roots: &CgroupRoots, sample_interval: Duration) -> Cgroups {
    match CgroupTree::setup(roots) {
        Ok(tree) => {
            for dir in tree.cleaned() {
                tracing::info!(cgroup = %dir.display(), "removed the plugin cgroups of a daemon that is no longer running");
            }
            let dirs: Vec<String> = tree
                .dirs()
                .iter()
                .map(|d| d.display().to_string())
                .collect();
            if let (Some(leaf), Some(scope)) = (tree.daemon_leaf(), tree.scope_v2()) {
                tracing::info!(leaf = %leaf.display(), scope, "the daemon moved into a leaf of its cgroup so that the cgroup can hand controllers to its plugins' cgroups; pressure, memory and CPU are read for the whole cgroup");
            }
            tracing::info!(version = tree.version().as_str(), dirs = %dirs.join(", "), "plugin processes run in cgroups of their own: the kernel enforces their memory limits");
            if let Some(why) = tree.cpu_unavailable() {
                tracing::warn!(reason = %why, "plugins get no CPU quota (cpu_limit)");
            }
            Cgroups::Tree(Arc::new(tree))
        }
        Err(reason) => {
            tracing::warn!(%reason, "cgroups are not writable, so plugin processes run without cgroups of their own: their memory limits are polled every {} and cpu_limit is not enforced", humantime::format_duration(sample_interval));
            Cgroups::Unavailable(reason)
        }
    }
}

/// Where plugins that run in a process have their log files (`<plugin>.log`, rotated).
pub fn logs_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("logs")
}

/// The running daemon: every actor's address and what the API reads.
pub struct Topology {
    /// The effective config.
    pub config: Arc<Config>,
    /// The environment's clock.
    pub clock: Clock,
    /// The data directory.
    pub data_dir: PathBuf,
    /// What the daemon knows right now.
    pub live: Arc<LiveView>,
    /// The metrics registry.
    pub metrics: Arc<Metrics>,
    /// The plugin host, for cheap read-only status.
    pub plugin_host: Arc<PluginHost>,
    /// The plugin host actor.
    pub host: Addr<PluginHostActor>,
    /// The scaler actor.
    pub scaler: Addr<ScalerActor>,
    /// The predictor actor.
    pub predictor: Addr<PredictorActor>,
    /// The monitor actor.
    pub monitor: Addr<MonitorActor>,
    /// The tier actor.
    pub tier: Addr<TierActor>,
    /// The telemetry actor.
    pub telemetry: Addr<TelemetryActor>,
    /// The log and checkpoint writer, on the disk arbiter.
    pub journal: Addr<Journal>,
    /// The pin writer, on the disk arbiter.
    pub pins: Addr<PinWriter>,
    /// The tier detected at start, if it could be.
    pub detected_tier: Option<Tier>,
    /// The daemon's directory of plugin cgroups, when plugins run in cgroups of their own.
    cgroups: Option<Arc<CgroupTree>>,
    disk: Arbiter,
}

impl Topology {
    /// Builds and starts everything: loads the plugins, restores checkpoints and pins, takes a
    /// first sample, enables the plugins the start-up plan admits, and starts the monitor. Must
    /// run inside an actix System.
    pub async fn build(config: Arc<Config>, env: Environment) -> Result<Topology> {
        let Environment {
            clock,
            monitor: mut monitor_config,
            trigger,
            data_dir,
            worker_program,
            process_sample_interval,
            host_poll_interval,
            plugin_cgroups,
        } = env;
        std::fs::create_dir_all(&data_dir)
            .with_context(|| format!("cannot create the data directory {}", data_dir.display()))?;
        for dir in [data_dir.clone(), data_dir.join("checkpoints")] {
            store::remove_stale_temp_files(&dir);
        }
        let now = clock();
        let live = Arc::new(LiveView::new(now, config.scaler.mode));
        let metrics = Arc::new(Metrics::new());

        // Plugin cgroups first: on v2 the daemon may move into a leaf of its cgroup, which then
        // is the scope the monitor reads.
        let cgroups = plugin_cgroups.map_or(Cgroups::Off, |roots| {
            set_up_cgroups(&roots, process_sample_interval)
        });
        if let Cgroups::Tree(tree) = &cgroups
            && let Some(scope) = tree.scope_v2()
        {
            monitor_config.cgroup_v2_path = Some(scope.to_owned());
        }

        // One monitor: the facts for the tier and the sample for the start-up plan come from it
        // now, then the monitor actor owns it.
        let mut monitor = Monitor::new(monitor_config);
        let psi_memory = monitor.pressure_files().memory.clone();
        let facts = monitor.hardware_facts().map_err(|e| e.to_string());
        let tier_clock = Arc::clone(&clock);
        let tier_actor = TierActor::new(config.tier.clone(), move || facts.clone())
            .with_clock(move || tier_clock())
            .start();
        let detected_tier = tier_actor.send(CurrentTier).await.ok().flatten();
        match &detected_tier {
            Some(t) => tracing::info!(tier = %t.name, rule = %t.rule, "hardware tier detected"),
            None => tracing::warn!(
                "hardware tier could not be detected; using the configured thresholds"
            ),
        }

        // Plugins: loaded now (failures are logged, not fatal), enabled after the start-up plan.
        let plugin_configs = config.resolved_plugins();
        let checkpoint_intervals: Vec<(String, Duration)> = plugin_configs
            .iter()
            .filter_map(|p| Some((p.name.clone(), p.checkpoint_interval?)))
            .collect();
        let cgroup_tree = match &cgroups {
            Cgroups::Tree(tree) => Some(Arc::clone(tree)),
            Cgroups::Off | Cgroups::Unavailable(_) => None,
        };
        let process_options = ProcessOptions {
            log_dir: Some(logs_dir(&data_dir)),
            worker_program,
            sample_interval: process_sample_interval,
            cgroups,
            ..ProcessOptions::default()
        };
        let host_clock = Arc::clone(&clock);
        let host_actor = PluginHostActor::new(
            move |sink| {
                let host = PluginHost::with_options(host_clock, sink, process_options);
                for plugin in plugin_configs {
                    let name = plugin.name.clone();
                    match host.load(plugin) {
                        Ok(info) => {
                            tracing::info!(plugin = %name, version = %info.version, file = %info.file.display(), "plugin loaded")
                        }
                        Err(error) => tracing::error!(plugin = %name, %error, "plugin not loaded"),
                    }
                }
                host
            },
            host_poll_interval,
        );
        let plugin_host = host_actor.host();
        store::restore_checkpoints(&plugin_host, &data_dir);
        let host = host_actor.start();

        // The disk arbiter: logs, checkpoints, pins.
        let disk = Arbiter::new();
        let journal = {
            let journal = Journal::open(
                data_dir.clone(),
                &config.telemetry,
                Arc::clone(&plugin_host),
            )
            .context("cannot open the telemetry logs")?;
            Journal::start_in_arbiter(&disk.handle(), move |_| journal)
        };
        let checkpointer = Checkpointer::new(
            checkpoint_intervals,
            Arc::clone(&clock),
            host.clone(),
            journal.clone(),
        )
        .start();
        let telemetry = TelemetryActor::new(
            Arc::clone(&live),
            Arc::clone(&metrics),
            journal.clone(),
            config.telemetry.sample_every,
        )
        .start();

        // Addresses of the actors that close a cycle, before they start.
        let scaler_context = Context::<ScalerActor>::new();
        let scaler = scaler_context.address();
        let monitor_context = Context::<MonitorActor>::new();
        let monitor_address = monitor_context.address();
        let pin_writer = {
            let writer = PinWriter::new(data_dir.clone(), scaler.clone());
            PinWriter::start_in_arbiter(&disk.handle(), move |_| writer)
        };

        // The scaler: machine totals from the detected facts unless configured; it acts on the
        // resources `monitor.resources` names.
        let mut scaler_config = config.scaler.clone();
        scaler_config.acted_on = Some(config.monitor.resources.clone());
        if let Some(t) = &detected_tier {
            let machine = &mut scaler_config.machine;
            machine
                .memory_bytes
                .get_or_insert(t.facts.memory_total_bytes);
            machine.cpu_cores.get_or_insert(f64::from(t.facts.cores));
            if let Some(gpu) = t
                .facts
                .gpus
                .value()
                .and_then(|g| g.iter().map(|g| g.memory_total_bytes).max())
            {
                machine.gpu_memory_bytes.get_or_insert(gpu);
            }
        }
        let specs: Vec<_> = plugin_host
            .names()
            .iter()
            .filter_map(|n| plugin_host.spec(n).ok())
            .collect();
        let core = Scaler::new(scaler_config, specs.clone()).context("cannot start the scaler")?;
        let outputs = {
            let host = host.clone();
            let commands = Relay::start(move |CommandMsg(command): CommandMsg| {
                let host = host.clone();
                actix::spawn(async move {
                    let plugin = command.plugin().to_owned();
                    match host.send(Execute(command)).await {
                        Ok(Ok(())) => {}
                        Ok(Err(error)) => tracing::warn!(%plugin, %error, "command failed"),
                        Err(error) => {
                            tracing::error!(%plugin, %error, "the plugin host is not answering")
                        }
                    }
                });
            });
            let decisions = {
                let telemetry = telemetry.clone();
                let pin_writer = pin_writer.clone();
                let checkpointer = checkpointer.clone();
                Relay::start(move |DecisionMsg(decision): DecisionMsg| {
                    // An emergency is a memory stall: what keeps running is checkpointed.
                    if decision.rule == Rule::Emergency {
                        checkpointer.do_send(Stall { by: "emergency" });
                    }
                    // A pin that ran out (or any override) changes what pins.json must hold.
                    if decision.kind == DecisionKind::Override {
                        pin_writer.do_send(PersistPins);
                    }
                    telemetry.do_send(Record(DaemonEvent::Decision(decision)));
                })
            };
            let warnings = {
                let telemetry = telemetry.clone();
                Relay::start(move |WarningMsg(warning): WarningMsg| {
                    tracing::warn!(plugin = ?warning.plugin, rule = ?warning.rule, "{}", warning.reason);
                    telemetry.do_send(Record(DaemonEvent::Warning(warning)));
                })
            };
            ScalerOutputs {
                commands,
                decisions: Some(decisions),
                warnings: Some(warnings),
            }
        };
        scaler_context.run(ScalerActor::new(core, outputs).starting_at(clock()));

        // The tier sets the scaler's thresholds and how far it may restore each plugin.
        {
            let scaler = scaler.clone();
            let telemetry = telemetry.clone();
            let use_tier = config.use_tier_thresholds;
            let names: Vec<String> = specs.iter().map(|s| s.name.clone()).collect();
            tier_actor.do_send(SubscribeTier::callback(move |tier| {
                if use_tier {
                    scaler.do_send(SetProfileMsg(tier.profile.clone()));
                }
                for name in &names {
                    scaler.do_send(SetAllowanceMsg {
                        plugin: name.clone(),
                        best: tier.best_level(name),
                    });
                }
                telemetry.do_send(Record(DaemonEvent::Tier(tier.clone())));
                true
            }));
        }

        // The predictor feeds the scaler and the telemetry.
        let predictor =
            PredictorActor::new(Predictor::new(config.predictor.to_predictor_config())).start();
        {
            let scaler = scaler.clone();
            let telemetry = telemetry.clone();
            predictor.do_send(SubscribeAssessments::callback(move |assessment| {
                scaler.do_send(AssessmentMsg(assessment.clone()));
                telemetry.do_send(Record(DaemonEvent::Assessment(assessment.clone())));
                true
            }));
        }

        // Plugin events reach the scaler, the telemetry, the monitor (as usage) and, for a
        // disabled plugin, the journal (its checkpoint). The monitor charges the daemon's own GPU
        // memory to the in-process plugin that declares a GPU.
        let in_process_gpu: Vec<String> = specs
            .iter()
            .filter(|s| {
                s.hints.needs_gpu
                    && plugin_host
                        .config(&s.name)
                        .is_ok_and(|c| !c.runs_in_process())
            })
            .map(|s| s.name.clone())
            .collect();
        for name in &in_process_gpu {
            monitor_address.do_send(ReportPluginUsage(PluginUsage {
                plugin: name.clone(),
                in_process_gpu: true,
                ..PluginUsage::default()
            }));
        }
        {
            let scaler = scaler.clone();
            let telemetry = telemetry.clone();
            let monitor = monitor_address.clone();
            let journal = journal.clone();
            let checkpointer = checkpointer.clone();
            let relay = Relay::start(move |HostEvent(event): HostEvent| {
                if let PluginEventKind::StateChanged { to, .. } = &event.kind {
                    checkpointer.do_send(PluginStateMsg {
                        plugin: event.plugin.clone(),
                        to: to.clone(),
                        at: event.at,
                    });
                }
                match &event.kind {
                    PluginEventKind::Stats(stats) => {
                        monitor.do_send(ReportPluginUsage(PluginUsage {
                            plugin: event.plugin.clone(),
                            live_bytes: stats.live_bytes,
                            peak_bytes: stats.peak_bytes,
                            pid: stats.process.as_ref().map(|p| p.pid),
                            in_process_gpu: in_process_gpu.contains(&event.plugin),
                            ..PluginUsage::default()
                        }))
                    }
                    PluginEventKind::StateChanged {
                        to: PluginState::Disabled,
                        ..
                    } => journal.do_send(crate::journal::SaveCheckpoint(event.plugin.clone())),
                    _ => {}
                }
                scaler.do_send(PluginEventMsg(event.clone()));
                if !matches!(event.kind, PluginEventKind::Stats(_)) {
                    telemetry.do_send(Record(DaemonEvent::Plugin(event)));
                }
            });
            host.send(HostSubscribe(relay))
                .await
                .context("the plugin host did not start")?;
        }

        // Operator pins from the last run.
        let mut pinned_off = Vec::new();
        for (plugin, pin) in pins::load(&data_dir) {
            let Some((target, duration)) = pin.to_scaler(now) else {
                continue;
            };
            if target == ballast_scaler::PinTarget::Off {
                pinned_off.push((
                    plugin.clone(),
                    "not enabled: pinned off by the operator".to_owned(),
                ));
            }
            match scaler
                .send(PinMsg {
                    plugin: plugin.clone(),
                    target,
                    duration,
                })
                .await
            {
                Ok(Ok(())) => tracing::info!(%plugin, ?target, "operator pin restored"),
                Ok(Err(error)) => {
                    tracing::warn!(%plugin, %error, "cannot restore the operator pin")
                }
                Err(error) => tracing::warn!(%plugin, %error, "the scaler is not answering"),
            }
        }
        for plugin in &config.plugins {
            if !plugin.enabled {
                pinned_off.push((
                    plugin.name.clone(),
                    "not enabled: `enabled = false` in the config".to_owned(),
                ));
            }
        }

        // Start-up: a fresh sample, then plugins in priority order after the pre-flight check,
        // before the monitor starts, so the scaler sees them started before its first assessment.
        let sample = monitor.sample(clock());
        start_plugins(
            &config,
            &host,
            &specs,
            &sample,
            detected_tier.as_ref(),
            &pinned_off,
        )
        .await;

        // The monitor samples on the tick and when its trigger fires.
        {
            let predictor = predictor.clone();
            let telemetry = telemetry.clone();
            let scaler = scaler.clone();
            let subscriber = ballast_monitor::Subscribe::callback(move |sample: &Sample| {
                predictor.do_send(SampleMsg(sample.clone()));
                // The GPU memory each plugin's processes hold, as the scaler counts it.
                let gpu: Vec<(String, u64)> = sample
                    .plugins
                    .iter()
                    .filter_map(|p| Some((p.plugin.clone(), p.gpu_memory_bytes?)))
                    .collect();
                if !gpu.is_empty() {
                    scaler.do_send(GpuUsageMsg {
                        at: sample.at,
                        usage: gpu,
                    });
                }
                telemetry.do_send(Record(DaemonEvent::Sample(Box::new(sample.clone()))));
                true
            });
            let sample_clock = Arc::clone(&clock);
            let actor = MonitorActor::new(monitor)
                .with_interval(config.monitor.interval)
                .with_clock(move || sample_clock())
                .with_subscriber(subscriber);
            let actor = match trigger {
                Trigger::None => actor.with_trigger(NoTrigger),
                Trigger::Psi(polling) => actor.with_trigger(StallTee {
                    inner: PsiTrigger::memory(psi_memory.clone()).with_polling(polling),
                    checkpointer: checkpointer.clone(),
                }),
                Trigger::Manual(manual) => actor.with_trigger(StallTee {
                    inner: manual,
                    checkpointer: checkpointer.clone(),
                }),
            };
            monitor_context.run(actor);
        }

        Ok(Topology {
            config,
            clock,
            data_dir,
            live,
            metrics,
            plugin_host,
            host,
            scaler,
            predictor,
            monitor: monitor_address,
            tier: tier_actor,
            telemetry,
            journal,
            pins: pin_writer,
            detected_tier,
            cgroups: cgroup_tree,
            disk,
        })
    }

    /// What the control API's handlers are given, with the bearer token clients must present.
    pub fn app_state(&self, token: Option<Arc<str>>) -> AppState {
        AppState {
            host: self.host.clone(),
            plugin_host: Arc::clone(&self.plugin_host),
            scaler: self.scaler.clone(),
            live: Arc::clone(&self.live),
            config: Arc::clone(&self.config),
            pins: self.pins.clone(),
            token,
            metrics: Arc::clone(&self.metrics),
            clock: Arc::clone(&self.clock),
        }
    }

    /// Stops deciding, drains every plugin within `shutdown_timeout`, stores their
    /// checkpoints, and syncs the logs.
    pub async fn shutdown(self) {
        self.scaler.do_send(SetModeMsg(Mode::Observe));
        self.live.set_mode(Mode::Observe);
        let host = Arc::clone(&self.plugin_host);
        let data_dir = self.data_dir.clone();
        let timeout = self.config.shutdown_timeout;
        let drained = tokio::time::timeout(
            timeout,
            tokio::task::spawn_blocking(move || {
                host.disable_all(ballast_core::plugin::SHUTDOWN_REASON);
                for name in host.names() {
                    store::save_checkpoint(&host, &data_dir, &name);
                }
            }),
        )
        .await;
        if drained.is_err() {
            tracing::warn!(timeout = %humantime::format_duration(timeout), "plugins did not drain in time");
        }
        // The plugins are stopped: their cgroups go, and the daemon's directory with them.
        if let Some(tree) = &self.cgroups {
            tree.remove();
        }
        let _ = self.telemetry.send(Flush).await;
        self.disk.stop();
        let _ = self.disk.join();
    }
}

/// Enables the plugins the start-up plan admits, each at its planned level.
async fn start_plugins(
    config: &Config,
    host: &Addr<PluginHostActor>,
    specs: &[ballast_core::PluginSpec],
    sample: &Sample,
    tier: Option<&Tier>,
    pinned_off: &[(String, String)],
) {
    let profile = tier
        .filter(|_| config.use_tier_thresholds)
        .map(|t| t.profile.clone())
        .unwrap_or_else(|| config.scaler.profile());
    // On-demand plugins stay idle until their first call, where the scaler may wake them; in
    // observe and advise modes nothing is ever loaded on demand, so they start with the others.
    let (on_demand, preloaded): (Vec<_>, Vec<_>) = specs.iter().cloned().partition(|s| {
        s.start == ballast_core::StartMode::OnDemand && config.scaler.mode == Mode::Enforce
    });
    for spec in &on_demand {
        tracing::info!(plugin = %spec.name, "plugin idle: on-demand, it loads on its first call");
    }
    for planned in crate::startup::plan(&preloaded, Some(sample), &profile, tier, pinned_off) {
        let Some(level) = planned.level else {
            tracing::warn!(plugin = %planned.name, reason = %planned.reason, "plugin left disabled");
            continue;
        };
        let enabled = host
            .send(Execute(Command::Enable {
                plugin: planned.name.clone(),
                level,
                reason: "start-up".to_owned(),
            }))
            .await;
        match enabled {
            Ok(Ok(())) => {
                tracing::info!(plugin = %planned.name, %level, reason = %planned.reason, "plugin enabled")
            }
            Ok(Err(error)) => {
                tracing::error!(plugin = %planned.name, %error, "plugin could not be enabled")
            }
            Err(error) => {
                tracing::error!(plugin = %planned.name, %error, "the plugin host is not answering")
            }
        }
    }
}
