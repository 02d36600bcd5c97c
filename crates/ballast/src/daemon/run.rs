//! The daemon's wiring: starts every actor, connects them with `Recipient`s, runs the start-up
//! plan, serves the API, talks to systemd and shuts down cleanly on SIGTERM/SIGINT.
//!
//! ```text
//!            TierActor --tier--> ScalerActor (thresholds)
//! MonitorActor --Sample--> PredictorActor --Assessment--> ScalerActor --Command--> PluginHostActor
//!      ^ (tick + PSI trigger + pre-flight)                                           |
//!      +---------------------------- plugin usage <---------- PluginEvent <----------+
//! every actor --> TelemetryActor (live view, metrics, JSONL logs) --> API, /events
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix::prelude::*;
use anyhow::{Context as _, Result};
use ballast_core::decision::{DecisionKind, Mode};
use ballast_core::plugin::{Command, PluginEventKind, PluginState};
use ballast_core::sample::PluginUsage;
use ballast_core::{Level, Timestamp};
use ballast_host::{
    Execute, HostEvent, PluginHost, PluginHostActor, ProcessOptions, Subscribe as HostSubscribe,
};
use ballast_monitor::{
    Monitor, MonitorActor, MonitorConfig, NoTrigger, NvmlSource, PsiTrigger, ReportPluginUsage,
};
use ballast_predict::{Predictor, PredictorActor, SampleMsg, SubscribeAssessments};
use ballast_scaler::actor::{
    AssessmentMsg, CommandMsg, DecisionMsg, GetPluginsMsg, PinMsg, PluginEventMsg, ScalerOutputs,
    SetAllowanceMsg, SetModeMsg, SetProfileMsg, WarningMsg,
};
use ballast_scaler::{PinTarget, Scaler, ScalerActor};
use ballast_tier::{CurrentTier, SubscribeTier, TierActor};
use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::daemon::api;
use crate::daemon::live::{DaemonEvent, LiveView};
use crate::daemon::metrics::Metrics;
use crate::daemon::state::AppState;
use crate::daemon::store;
use crate::daemon::telemetry::{Flush, Record, TelemetryActor};

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

/// An operator pin as stored in `pins.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StoredPin {
    /// `None` pins the plugin off, a level pins it on at that level.
    pub level: Option<u32>,
    /// When the pin runs out, if it does.
    pub until: Option<Timestamp>,
}

/// File names in the data directory.
fn pins_path(data_dir: &Path) -> PathBuf {
    data_dir.join("pins.json")
}

/// Where plugins that run in a process have their log files (`<plugin>.log`, rotated).
pub fn logs_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("logs")
}

fn checkpoint_path(data_dir: &Path, plugin: &str) -> PathBuf {
    data_dir.join("checkpoints").join(format!("{plugin}.bin"))
}

/// Writes the plugin's checkpoint, if the host holds one, to the data directory.
fn persist_checkpoint(host: &PluginHost, data_dir: &Path, plugin: &str) {
    match host.checkpoint(plugin) {
        Ok(Some(blob)) => {
            if let Err(error) = store::write_atomic(&checkpoint_path(data_dir, plugin), &blob) {
                tracing::warn!(plugin, error = %crate::cmd::error_chain(&error), "cannot store the plugin's checkpoint");
            }
        }
        Ok(None) => {}
        Err(error) => tracing::warn!(plugin, %error, "cannot read the plugin's checkpoint"),
    }
}

/// One writer of `pins.json` at a time: each reads the scaler's pins while it holds this, so the
/// last write holds the latest pins whichever task (an API request, a pin that ran out) wrote.
static PINS_WRITER: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Asks the scaler for its pins and stores them atomically in `data_dir`. The API calls it
/// before it answers a pin request, so an acknowledged pin survives a crash.
pub async fn persist_pins(scaler: &Addr<ScalerActor>, data_dir: &Path) {
    let _writer = PINS_WRITER.lock().await;
    let Ok(plugins) = scaler.send(GetPluginsMsg).await else {
        return;
    };
    let pins: BTreeMap<String, StoredPin> = plugins
        .into_iter()
        .filter_map(|p| {
            let (target, until) = p.pin?;
            let level = match target {
                PinTarget::On { level } => Some(level.0),
                PinTarget::Off => None,
            };
            Some((p.name, StoredPin { level, until }))
        })
        .collect();
    if let Err(error) = store::write_json(&pins_path(data_dir), &pins) {
        tracing::warn!(error = %crate::cmd::error_chain(&error), "cannot store the operator pins");
    }
}

/// Runs the daemon until SIGTERM or SIGINT. Returns after a clean shutdown.
pub async fn run(config: Config) -> Result<()> {
    let config = Arc::new(config);
    let data_dir = config.data_dir();
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("cannot create the data directory {}", data_dir.display()))?;
    raise_file_limit();
    for dir in [data_dir.clone(), data_dir.join("checkpoints")] {
        store::remove_stale_temp_files(&dir);
    }
    let clock = ballast_host::system_clock();
    let now = clock();
    tracing::info!(data_dir = %data_dir.display(), listen = %config.api.listen, mode = %config.scaler.mode, "ballast starting");

    let live = Arc::new(LiveView::new(now, config.scaler.mode));
    let metrics = Arc::new(Metrics::default());
    let telemetry = TelemetryActor::open(
        &data_dir,
        &config.telemetry,
        Arc::clone(&live),
        Arc::clone(&metrics),
    )
    .context("cannot open the telemetry logs")?
    .start();

    // The monitor's view of the machine: the real /proc and /sys, the data directory's disk.
    let mut monitor_config = MonitorConfig {
        disk_paths: config.monitor.disk_paths.clone(),
        ..MonitorConfig::default()
    };
    monitor_config.disk_paths.push(data_dir.clone());
    if let Some(library) = &config.monitor.nvml_library {
        monitor_config.nvml = NvmlSource::Path(library.clone());
    }

    // Tier: detected now for the start-up plan, and again on request.
    let facts_config = monitor_config.clone();
    let mut facts_monitor: Option<Monitor> = None;
    let tier_actor = TierActor::new(config.tier.clone(), move || {
        let monitor = facts_monitor.get_or_insert_with(|| Monitor::new(facts_config.clone()));
        monitor.reload_gpu();
        monitor.hardware_facts().map_err(|e| e.to_string())
    })
    .start();
    let tier = tier_actor.send(CurrentTier).await.ok().flatten();
    match &tier {
        Some(t) => tracing::info!(tier = %t.name, rule = %t.rule, "hardware tier detected"),
        None => {
            tracing::warn!("hardware tier could not be detected; using the configured thresholds")
        }
    }

    // Plugins: loaded now (failures are logged, not fatal), enabled after the pre-flight check.
    let plugin_configs = config.resolved_plugins();
    let process_options = ProcessOptions {
        log_dir: Some(logs_dir(&data_dir)),
        // Isolated native plugins run in this very binary's `ballast worker`.
        worker_program: std::env::current_exe()
            .context("cannot find the ballast executable to run isolated plugins with")?,
        ..ProcessOptions::default()
    };
    let host_actor = PluginHostActor::new(
        |sink| {
            let host = PluginHost::with_options(Arc::clone(&clock), sink, process_options);
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
        Duration::from_secs(5),
    );
    let plugin_host = host_actor.host();
    for name in plugin_host.names() {
        let path = checkpoint_path(&data_dir, &name);
        if let Ok(blob) = std::fs::read(&path) {
            tracing::info!(plugin = %name, bytes = blob.len(), "restoring the plugin's checkpoint");
            let _ = plugin_host.set_checkpoint(&name, Some(blob));
        }
    }
    let host = host_actor.start();

    // The scaler: machine totals from the detected facts unless configured.
    let mut scaler_config = config.scaler.clone();
    if let Some(t) = &tier {
        scaler_config
            .machine
            .memory_bytes
            .get_or_insert(t.facts.memory_total_bytes);
        scaler_config
            .machine
            .cpu_cores
            .get_or_insert(f64::from(t.facts.cores));
        if let Some(gpu) = t
            .facts
            .gpus
            .value()
            .and_then(|g| g.iter().map(|g| g.memory_total_bytes).max())
        {
            scaler_config.machine.gpu_memory_bytes.get_or_insert(gpu);
        }
    }
    let specs: Vec<_> = plugin_host
        .names()
        .iter()
        .filter_map(|n| plugin_host.spec(n).ok())
        .collect();
    let scaler = Scaler::new(scaler_config, specs.clone()).context("cannot start the scaler")?;
    let commands = {
        let host = host.clone();
        Relay::start(move |CommandMsg(command): CommandMsg| {
            let host = host.clone();
            actix::spawn(async move {
                let plugin = command.plugin().to_owned();
                match host.send(ballast_host::Execute(command)).await {
                    Ok(Ok(())) => {}
                    Ok(Err(error)) => tracing::warn!(%plugin, %error, "command failed"),
                    Err(error) => {
                        tracing::error!(%plugin, %error, "the plugin host is not answering")
                    }
                }
            });
        })
    };
    let scaler_addr: Addr<ScalerActor> = {
        let telemetry_decisions = telemetry.clone();
        let telemetry_warnings = telemetry.clone();
        let pins_data_dir = data_dir.clone();
        let scaler_cell: Arc<Mutex<Option<Addr<ScalerActor>>>> = Arc::default();
        let cell = Arc::clone(&scaler_cell);
        let decisions = Relay::start(move |DecisionMsg(decision): DecisionMsg| {
            if decision.kind == DecisionKind::Override
                && let Some(scaler) = cell.lock().unwrap_or_else(|p| p.into_inner()).clone()
            {
                let dir = pins_data_dir.clone();
                actix::spawn(async move { persist_pins(&scaler, &dir).await });
            }
            telemetry_decisions.do_send(Record(DaemonEvent::Decision(decision)));
        });
        let warnings = Relay::start(move |WarningMsg(warning): WarningMsg| {
            tracing::warn!(plugin = ?warning.plugin, rule = ?warning.rule, "{}", warning.reason);
            telemetry_warnings.do_send(Record(DaemonEvent::Warning(warning)));
        });
        let addr = ScalerActor::new(
            scaler,
            ScalerOutputs {
                commands,
                decisions: Some(decisions),
                warnings: Some(warnings),
            },
        )
        .starting_at(clock())
        .start();
        *scaler_cell.lock().unwrap_or_else(|p| p.into_inner()) = Some(addr.clone());
        addr
    };

    // The tier sets the scaler's thresholds and how far it may restore each plugin; changes
    // reach the event stream.
    {
        let scaler = scaler_addr.clone();
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
        let scaler = scaler_addr.clone();
        let telemetry = telemetry.clone();
        let acted_on = config.monitor.resources.clone();
        predictor.do_send(SubscribeAssessments::callback(move |assessment| {
            let mut for_scaler = assessment.clone();
            for_scaler
                .resources
                .retain(|r| acted_on.contains(&r.resource));
            scaler.do_send(AssessmentMsg(for_scaler));
            telemetry.do_send(Record(DaemonEvent::Assessment(assessment.clone())));
            true
        }));
    }

    // Plugin events reach the scaler, the telemetry and (as usage) the monitor; a disabled
    // plugin's checkpoint is stored.
    let monitor_cell: Arc<Mutex<Option<Addr<MonitorActor>>>> = Arc::default();
    {
        let scaler = scaler_addr.clone();
        let telemetry = telemetry.clone();
        let monitor = Arc::clone(&monitor_cell);
        let plugin_host = Arc::clone(&plugin_host);
        let data_dir = data_dir.clone();
        let mut usage: BTreeMap<String, PluginUsage> = BTreeMap::new();
        let relay = Relay::start(move |HostEvent(event): HostEvent| {
            match &event.kind {
                PluginEventKind::Stats(stats) => {
                    usage.insert(
                        event.plugin.clone(),
                        PluginUsage {
                            plugin: event.plugin.clone(),
                            live_bytes: stats.live_bytes,
                            peak_bytes: stats.peak_bytes,
                        },
                    );
                    if let Some(monitor) =
                        monitor.lock().unwrap_or_else(|p| p.into_inner()).as_ref()
                    {
                        monitor.do_send(ReportPluginUsage(usage.values().cloned().collect()));
                    }
                }
                PluginEventKind::StateChanged {
                    to: PluginState::Disabled,
                    ..
                } => {
                    persist_checkpoint(&plugin_host, &data_dir, &event.plugin);
                }
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
    let stored_pins: BTreeMap<String, StoredPin> = match store::read_json(&pins_path(&data_dir)) {
        Ok(pins) => pins.unwrap_or_default(),
        Err(error) => {
            tracing::warn!(error = %crate::cmd::error_chain(&error), "ignoring the stored pins");
            BTreeMap::new()
        }
    };
    let mut pinned_off = Vec::new();
    for (plugin, pin) in &stored_pins {
        let duration = match pin.until {
            Some(until) if until <= now => continue,
            Some(until) => Some(until - now),
            None => None,
        };
        let target = match pin.level {
            Some(level) => PinTarget::On {
                level: Level(level),
            },
            None => {
                pinned_off.push((
                    plugin.clone(),
                    "not enabled: pinned off by the operator".to_owned(),
                ));
                PinTarget::Off
            }
        };
        match scaler_addr
            .send(PinMsg {
                plugin: plugin.clone(),
                target,
                duration,
            })
            .await
        {
            Ok(Ok(())) => tracing::info!(%plugin, ?target, "operator pin restored"),
            Ok(Err(error)) => tracing::warn!(%plugin, %error, "cannot restore the operator pin"),
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

    // Start-up: a fresh sample, then plugins in priority order after the pre-flight check. This
    // happens before the monitor starts, so the scaler sees the plugins as started before its
    // first assessment.
    let sample = Some(Monitor::new(monitor_config.clone()).sample(clock()));
    let profile = tier
        .as_ref()
        .filter(|_| config.use_tier_thresholds)
        .map(|t| t.profile.clone())
        .unwrap_or_else(|| config.scaler.profile());
    for planned in crate::daemon::startup::plan(
        &specs,
        sample.as_ref(),
        &profile,
        tier.as_ref(),
        &pinned_off,
    ) {
        match planned.level {
            Some(level) => {
                let result = host
                    .send(Execute(Command::Enable {
                        plugin: planned.name.clone(),
                        level,
                        reason: "start-up".to_owned(),
                    }))
                    .await;
                match result {
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
            None => {
                tracing::warn!(plugin = %planned.name, reason = %planned.reason, "plugin left disabled")
            }
        }
    }

    // The monitor samples on the tick and on memory stalls.
    let monitor = {
        let predictor = predictor.clone();
        let telemetry = telemetry.clone();
        let subscriber = ballast_monitor::Subscribe::callback(move |sample| {
            predictor.do_send(SampleMsg(sample.clone()));
            telemetry.do_send(Record(DaemonEvent::Sample(sample.clone())));
            true
        });
        let sample_clock = Arc::clone(&clock);
        let actor = MonitorActor::new(Monitor::new(monitor_config.clone()))
            .with_interval(config.monitor.interval)
            .with_clock(move || sample_clock())
            .with_subscriber(subscriber);
        if config.monitor.psi_trigger {
            actor
                .with_trigger(PsiTrigger::memory(PathBuf::from("/proc/pressure/memory")))
                .start()
        } else {
            actor.with_trigger(NoTrigger).start()
        }
    };
    *monitor_cell.lock().unwrap_or_else(|p| p.into_inner()) = Some(monitor);

    // The control API.
    let token = match &config.api.token_file {
        Some(path) => Some(Arc::<str>::from(api::load_token(path)?)),
        None => None,
    };
    let state = AppState {
        host: host.clone(),
        plugin_host: Arc::clone(&plugin_host),
        scaler: scaler_addr.clone(),
        live: Arc::clone(&live),
        config: Arc::clone(&config),
        pins_dir: Some(data_dir.clone()),
        token,
        metrics: Arc::clone(&metrics),
    };
    let server = api::server(state)?;
    let server_handle = server.handle();
    actix::spawn(async move {
        if let Err(error) = server.await {
            tracing::error!(%error, "the control API stopped");
        }
    });
    tracing::info!(listen = %config.api.listen, "control API listening");

    notify_systemd();

    let mut signals = Signals::install()?;
    signals.next().await;
    tracing::info!("shutting down: no more decisions, draining plugins");
    scaler_addr.do_send(SetModeMsg(Mode::Observe));
    live.set_mode(Mode::Observe);
    // A second signal exits at once.
    actix::spawn(async move {
        signals.next().await;
        tracing::warn!("second signal: exiting without draining");
        std::process::exit(130);
    });
    server_handle.stop(true).await;
    let drain_host = Arc::clone(&plugin_host);
    let drain_dir = data_dir.clone();
    let drained = tokio::time::timeout(
        config.shutdown_timeout,
        tokio::task::spawn_blocking(move || {
            drain_host.disable_all(crate::cmd::forecast::report::SHUTDOWN_REASON);
            for name in drain_host.names() {
                persist_checkpoint(&drain_host, &drain_dir, &name);
            }
        }),
    )
    .await;
    if drained.is_err() {
        tracing::warn!(timeout = %humantime::format_duration(config.shutdown_timeout), "plugins did not drain in time");
    }
    let _ = telemetry.send(Flush).await;
    tracing::info!("ballast stopped");
    Ok(())
}

/// Raises the soft limit on open files to the hard limit (at most 65536), as most daemons do:
/// the default soft limit of 1024 is low for a process holding API connections, logs and
/// plugins. The API's connection cap follows from the limit (see `api::max_connections`).
fn raise_file_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit(2) writes one rlimit into the struct it is given.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return;
    }
    let wanted = limit.rlim_max.min(65536);
    if limit.rlim_cur >= wanted {
        return;
    }
    let raised = libc::rlimit {
        rlim_cur: wanted,
        rlim_max: limit.rlim_max,
    };
    // SAFETY: setrlimit(2) reads one rlimit; raising the soft limit up to the hard one is always
    // permitted.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
        tracing::debug!(
            from = limit.rlim_cur,
            to = wanted,
            "raised the open files limit"
        );
    }
}

/// Tells systemd the daemon is ready and keeps its watchdog fed, when run under systemd.
fn notify_systemd() {
    if std::env::var_os("NOTIFY_SOCKET").is_none() {
        return;
    }
    if let Err(error) = sd_notify::notify(&[sd_notify::NotifyState::Ready]) {
        tracing::warn!(%error, "cannot notify systemd");
    }
    if let Some(timeout) = sd_notify::watchdog_enabled().filter(|t| !t.is_zero()) {
        let period = timeout / 2;
        actix::spawn(async move {
            let mut tick = tokio::time::interval(period);
            loop {
                tick.tick().await;
                let _ = sd_notify::notify(&[sd_notify::NotifyState::Watchdog]);
            }
        });
    }
}

/// SIGTERM and SIGINT, installed once so that a second signal is told from the first.
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> Result<Signals> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Signals {
            term: signal(SignalKind::terminate()).context("cannot handle SIGTERM")?,
            int: signal(SignalKind::interrupt()).context("cannot handle SIGINT")?,
        })
    }

    /// Waits for the next SIGTERM or SIGINT.
    async fn next(&mut self) {
        tokio::select! {
            _ = self.term.recv() => {}
            _ = self.int.recv() => {}
        }
    }
}
