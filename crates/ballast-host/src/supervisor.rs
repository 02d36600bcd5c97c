//! The supervisor thread of one plugin that runs in a process: it hears what the process does,
//! measures its process tree, runs the detectors, raises alerts, and acts: restarts a process
//! that exited on its own (with the restart policy's back-off, or marks the plugin failed at
//! the start limit), sheds a plugin over its hard memory limit, restarts a stalled one when so
//! configured, and fails one that reports itself unhealthy. Where the process runs in a cgroup
//! of its own, the kernel enforces its hard memory limit instead of the polling: the supervisor
//! reads the cgroup's memory events with each measurement and once the process has exited,
//! raises them as alerts, and sheds a plugin whose process the kernel killed at its limit.
//!
//! Its timeline is monotonic (the host clock at start plus `Instant` time since), so the
//! detectors and the back-off are unaffected by wall-clock jumps; events carry the host clock.

use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use ballast_core::Timestamp;
use ballast_core::plugin::{PluginAlert, PluginEventKind, PluginState};
use ballast_process::cgroup::{EventTracker, PluginCgroup, Reading};
use ballast_process::procfs::ticks_per_second;
use ballast_process::{
    ChildEvent, DetectorConfig, Detectors, Exit, HealthStatus, PluginMessage, ProcReader,
    RestartDecision, UsageMeter,
};

use crate::lifecycle::{disable_slot_as, start_instance};
use crate::process::{ProcessPlugin, SupervisorMsg};
use crate::slot::Slot;

/// Gauges a plugin may create.
const MAX_GAUGES: usize = 256;

/// The cgroup of the process being watched, and what its events said so far.
struct CgroupWatch {
    generation: u64,
    cgroup: Arc<PluginCgroup>,
    tracker: EventTracker,
}

struct Supervisor {
    slot: Weak<Slot>,
    plugin: Arc<ProcessPlugin>,
    origin: (Instant, Timestamp),
    detectors: Option<(u64, Detectors)>,
    cgroup: Option<CgroupWatch>,
    /// Alerts from the cgroup's events, not yet raised.
    cgroup_alerts: Vec<(PluginAlert, String)>,
    meter: UsageMeter,
    reader: ProcReader,
    next_sample: Instant,
    restart_at: Option<Instant>,
    warned_bad_line: u64,
    /// The newest generation whose exit was seen (a `Started` may arrive after it).
    last_exited: u64,
}

/// Runs until the plugin's slot is gone (the host was dropped).
pub(crate) fn supervise(
    slot: Weak<Slot>,
    plugin: Arc<ProcessPlugin>,
    events: crossbeam_channel::Receiver<SupervisorMsg>,
) {
    let origin = (Instant::now(), (plugin.clock)());
    let mut supervisor = Supervisor {
        slot,
        plugin,
        origin,
        detectors: None,
        cgroup: None,
        cgroup_alerts: Vec::new(),
        meter: UsageMeter::new(ticks_per_second()),
        reader: ProcReader::default(),
        next_sample: Instant::now(),
        restart_at: None,
        warned_bad_line: 0,
        last_exited: 0,
    };
    loop {
        let wake = supervisor.next_wake();
        let received = events.recv_timeout(wake.saturating_duration_since(Instant::now()));
        let Some(slot) = supervisor.slot.upgrade() else {
            return;
        };
        match received {
            Ok(message) => supervisor.handle(&slot, message),
            Err(crossbeam_channel::RecvTimeoutError::Timeout) => {}
            Err(crossbeam_channel::RecvTimeoutError::Disconnected) => return,
        }
        supervisor.periodic(&slot);
    }
}

impl Supervisor {
    fn now(&self) -> Timestamp {
        self.origin.1 + self.origin.0.elapsed()
    }

    fn instant_of(&self, t: Timestamp) -> Instant {
        self.origin.0 + t.saturating_duration_since(self.origin.1)
    }

    fn timestamp_of(&self, at: Instant) -> Timestamp {
        self.origin.1 + at.saturating_duration_since(self.origin.0)
    }

    fn next_wake(&self) -> Instant {
        let mut wake = self.next_sample;
        if let Some(at) = self.restart_at {
            wake = wake.min(at);
        }
        if let Some(t) = self.detectors.as_ref().and_then(|(_, d)| d.poll_timeout()) {
            wake = wake.min(self.instant_of(t));
        }
        wake
    }

    /// The detectors' settings; `kernel_limit` when the kernel enforces the hard limit, which
    /// is then not polled.
    fn detector_config(&self, kernel_limit: bool) -> DetectorConfig {
        let c = &self.plugin.config;
        DetectorConfig {
            stall_threshold: c.effective_stall_threshold(),
            busy_cpu: c.busy_cpu,
            stuck_threshold: Some(c.stuck_threshold),
            memory_soft_limit: c.memory_soft_limit_mb.map(|mb| mb << 20),
            memory_hard_limit: c
                .memory_hard_limit_mb
                .filter(|_| !kernel_limit)
                .map(|mb| mb << 20),
            leak: c.leak.clone(),
        }
    }

    fn current_generation(&self) -> Option<u64> {
        self.detectors.as_ref().map(|(g, _)| *g)
    }

    fn handle(&mut self, slot: &Arc<Slot>, message: SupervisorMsg) {
        let now = self.now();
        match message {
            SupervisorMsg::Started { generation } => self.begin(generation, now),
            SupervisorMsg::Stopped {
                generation,
                stopped,
            } => {
                if let Some((g, d)) = &mut self.detectors
                    && *g == generation
                {
                    if stopped {
                        d.suspend(now);
                    } else {
                        d.resume(now);
                    }
                }
            }
            SupervisorMsg::Child { generation, event } => {
                if let ChildEvent::Exited(exit) = event {
                    self.exited(slot, generation, exit);
                    return;
                }
                // A process's first lines can arrive before its `Started`.
                self.begin(generation, now);
                if self.current_generation() != Some(generation) {
                    return;
                }
                self.child_event(slot, generation, now, event);
            }
        }
        self.alerts(slot);
    }

    /// Starts watching process `generation`, unless it is already watched or already gone.
    fn begin(&mut self, generation: u64, now: Timestamp) {
        let newer = self.current_generation().is_none_or(|g| generation > g);
        if newer && generation > self.last_exited {
            // Its cgroup was made before it started.
            let cgroup = self
                .lock()
                .cgroup
                .as_ref()
                .filter(|(g, _)| *g == generation)
                .map(|(_, c)| Arc::clone(c));
            self.cgroup = cgroup.map(|cgroup| CgroupWatch {
                generation,
                tracker: EventTracker::new(cgroup.limits()),
                cgroup,
            });
            let kernel_limit = self
                .cgroup
                .as_ref()
                .is_some_and(|w| w.cgroup.limits().memory_max.is_some());
            self.detectors = Some((
                generation,
                Detectors::new(self.detector_config(kernel_limit), now),
            ));
            self.next_sample = Instant::now();
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, crate::process::Supervision> {
        self.plugin
            .supervision
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    fn child_event(
        &mut self,
        slot: &Arc<Slot>,
        generation: u64,
        now: Timestamp,
        event: ChildEvent,
    ) {
        let Some((_, detectors)) = &mut self.detectors else {
            return;
        };
        let message = match event {
            ChildEvent::Output { .. } => {
                detectors.output(now);
                return;
            }
            ChildEvent::BadLine { error, excerpt, .. } => {
                detectors.output(now);
                if self.warned_bad_line != generation {
                    self.warned_bad_line = generation;
                    tracing::warn!(plugin = %self.plugin.config.name, %error, line = %excerpt, "plugin wrote a line that is not a protocol message (it goes to its log; this is said once per process)");
                }
                return;
            }
            ChildEvent::Exited(_) => return,
            ChildEvent::Message(message) => message,
        };
        match message {
            PluginMessage::Heartbeat => detectors.heartbeat(now),
            PluginMessage::Progress { percent, phase } => {
                detectors.progress_report(now, percent, phase);
                let progress = detectors.progress().cloned();
                self.lock().progress = progress;
            }
            PluginMessage::Stats {
                live_bytes,
                peak_bytes,
                allocations,
            } => {
                detectors.output(now);
                self.lock().reported = Some((live_bytes, peak_bytes, allocations));
            }
            PluginMessage::Gauge { name, value } => {
                detectors.output(now);
                let mut s = self.lock();
                if s.gauges.len() < MAX_GAUGES || s.gauges.contains_key(&name) {
                    s.gauges.insert(name, value);
                }
            }
            PluginMessage::Health { status, message } => {
                detectors.output(now);
                let message = message.unwrap_or_default();
                match status {
                    HealthStatus::Ok => {}
                    HealthStatus::Degraded => slot.shared.emit(PluginEventKind::Reported {
                        healthy: true,
                        message: format!("degraded: {message}"),
                    }),
                    HealthStatus::Unhealthy => self.unhealthy(slot, generation, &message),
                }
            }
            PluginMessage::Error { id: None, message } => {
                detectors.output(now);
                tracing::warn!(plugin = %self.plugin.config.name, %message, "plugin reports an error");
                self.plugin.note(&format!("error: {message}"));
            }
            PluginMessage::Hello { .. }
            | PluginMessage::Log { .. }
            | PluginMessage::Error { .. }
            | PluginMessage::Chunk { .. }
            | PluginMessage::Response { .. } => detectors.output(now),
        }
    }

    /// Measures the process tree when due, ticks the detectors, restarts when due.
    fn periodic(&mut self, slot: &Arc<Slot>) {
        if Instant::now() >= self.next_sample {
            self.next_sample = Instant::now() + self.plugin.options.sample_interval;
            self.sample(slot);
        }
        if self.restart_at.is_some_and(|at| Instant::now() >= at) {
            self.restart_at = None;
            self.restart(slot);
        }
        let now = self.now();
        if let Some((_, d)) = &mut self.detectors {
            d.tick(now);
        }
        self.alerts(slot);
    }

    /// Reads the watched cgroup: its events become alerts, its figures the status.
    fn read_cgroup(&mut self, generation: u64, live: bool) -> Option<Reading> {
        if self
            .cgroup
            .as_ref()
            .is_none_or(|w| w.generation != generation)
        {
            // A process that exited before it was watched still has its cgroup to read.
            let cgroup = self
                .lock()
                .cgroup
                .as_ref()
                .filter(|(g, _)| *g == generation)
                .map(|(_, c)| Arc::clone(c))?;
            self.cgroup = Some(CgroupWatch {
                generation,
                tracker: EventTracker::new(cgroup.limits()),
                cgroup,
            });
        }
        let watch = self
            .cgroup
            .as_mut()
            .filter(|w| w.generation == generation)?;
        let mut reading = watch.cgroup.read();
        if !live {
            // What is charged to a cgroup whose process is gone says nothing of the process.
            reading.memory_current = None;
        }
        watch.tracker.set_limits(watch.cgroup.limits());
        self.cgroup_alerts.extend(watch.tracker.observe(&reading));
        let status =
            watch
                .cgroup
                .status(&reading, watch.tracker.counts(), watch.tracker.peak(), live);
        self.lock().cgroup_status = Some(status);
        Some(reading)
    }

    fn sample(&mut self, slot: &Arc<Slot>) {
        let Some(generation) = self.current_generation() else {
            return;
        };
        self.read_cgroup(generation, true);
        let Some(pid) = slot.shared.snapshot().1.and_then(|l| {
            l.process()
                .filter(|p| p.generation() == generation)
                .map(|p| p.pid())
        }) else {
            return;
        };
        let Ok(reading) = self.reader.read_tree(pid) else {
            return;
        };
        let now = self.now();
        let (usage, has_delta) = self.meter.reading(now, &reading);
        let rss = usage.rss_bytes;
        let cpu = has_delta.then_some(usage.cpu_cores);
        {
            let mut s = self.lock();
            s.peak_rss = s.peak_rss.max(rss);
            s.usage = Some(usage);
        }
        if let Some((_, d)) = &mut self.detectors {
            d.usage(now, rss, cpu);
        }
    }

    /// The process is gone (or going): nothing of it is watched any more, and no condition of
    /// it holds (a plugin shed for its hard limit is no longer over it).
    fn stop_detecting(&mut self) {
        let generation = self
            .current_generation()
            .or(self.cgroup.as_ref().map(|w| w.generation));
        self.detectors = None;
        self.cgroup = None;
        self.cgroup_alerts.clear();
        let mut s = self.lock();
        s.conditions.clear();
        // Its cgroup goes once the instance lets go of it too (a newer process's stays).
        if s.cgroup
            .as_ref()
            .is_some_and(|(g, _)| Some(*g) == generation)
        {
            s.cgroup = None;
            if let Some(status) = &mut s.cgroup_status {
                status.live = false;
            }
        }
    }

    /// Sends the detectors' alerts and acts on the hard limit and on stalls.
    fn alerts(&mut self, slot: &Arc<Slot>) {
        let Some((generation, detectors)) = &mut self.detectors else {
            return;
        };
        let generation = *generation;
        let mut raised = std::mem::take(&mut self.cgroup_alerts);
        while let Some(alert) = detectors.poll_alert() {
            raised.push(alert);
        }
        // A process on its way out is in no condition any more.
        let conditions = if Self::current(slot, generation).is_some() {
            let mut conditions = detectors.conditions();
            if let Some(watch) = self.cgroup.as_ref().filter(|w| w.generation == generation) {
                conditions.extend(watch.tracker.conditions());
                conditions.sort();
            }
            conditions
        } else {
            Vec::new()
        };
        self.lock().conditions = conditions;
        for (alert, message) in raised {
            let name = &self.plugin.config.name;
            match alert {
                PluginAlert::Active => {
                    tracing::info!(plugin = %name, alert = %alert, %message, "plugin alert")
                }
                _ => tracing::warn!(plugin = %name, alert = %alert, %message, "plugin alert"),
            }
            self.plugin.note(&format!("{alert}: {message}"));
            slot.shared.emit(PluginEventKind::Alert {
                alert,
                message: message.clone(),
            });
            match alert {
                PluginAlert::MemoryHardLimit => self.shed(slot, generation, &message),
                PluginAlert::Stalled if self.plugin.config.stall_restart => {
                    self.restart_stalled(slot, generation, &message)
                }
                _ => {}
            }
        }
    }

    /// Raises the alerts of the cgroup's events that are waiting (at an exit, whether or not
    /// the detectors still run).
    fn raise_cgroup_alerts(&mut self, slot: &Arc<Slot>) {
        for (alert, message) in std::mem::take(&mut self.cgroup_alerts) {
            tracing::warn!(plugin = %self.plugin.config.name, alert = %alert, %message, "plugin alert");
            self.plugin.note(&format!("{alert}: {message}"));
            slot.shared.emit(PluginEventKind::Alert { alert, message });
        }
    }

    /// The running instance of `generation`, if it is still the current one.
    fn current(slot: &Slot, generation: u64) -> Option<(PluginState, Arc<crate::live::Live>)> {
        let (state, instance) = slot.shared.snapshot();
        let instance = instance?;
        let process = instance.process()?;
        (process.generation() == generation && !process.stopping()).then_some((state, instance))
    }

    fn shed(&mut self, slot: &Arc<Slot>, generation: u64, message: &str) {
        if Self::current(slot, generation).is_none() {
            return;
        }
        let reason = format!("{message}: shed by the host");
        if let Err(error) = disable_slot_as(slot, &reason, true) {
            tracing::warn!(plugin = %self.plugin.config.name, %error, "shedding the plugin over its hard limit failed");
        }
        self.stop_detecting();
    }

    fn restart_stalled(&mut self, slot: &Arc<Slot>, generation: u64, message: &str) {
        let _lifecycle = slot.lifecycle.lock().unwrap_or_else(|p| p.into_inner());
        let Some((PluginState::Enabled { .. }, instance)) = Self::current(slot, generation) else {
            return;
        };
        let _ = instance.stop(Duration::ZERO);
        let why = format!("stalled ({message}), so it was stopped");
        let started = instance.process().map(|p| p.started());
        self.after_exit(slot, None, &why, started);
    }

    fn unhealthy(&mut self, slot: &Arc<Slot>, generation: u64, message: &str) {
        let _lifecycle = slot.lifecycle.lock().unwrap_or_else(|p| p.into_inner());
        let Some((PluginState::Enabled { .. }, instance)) = Self::current(slot, generation) else {
            return;
        };
        let _ = instance.stop(Duration::ZERO);
        let reason = format!("it reports it is unhealthy: {message}");
        slot.shared.transition(
            PluginState::Failed {
                reason: reason.clone(),
            },
            "health check failed",
            None,
        );
        self.stop_detecting();
    }

    /// The process of `generation` exited; unless the host was stopping it, apply the restart
    /// policy.
    fn exited(&mut self, slot: &Arc<Slot>, generation: u64, exit: Exit) {
        self.last_exited = self.last_exited.max(generation);
        // What its cgroup says now that it is gone: the events since the last reading, and
        // whether the kernel killed it at its limit.
        let killed_by_kernel = self.read_cgroup(generation, false).is_some().then(|| {
            let sigkill = matches!(exit, Exit::Signal { signal, .. } if signal == libc::SIGKILL);
            self.cgroup
                .as_mut()
                .and_then(|w| w.tracker.kill_reason(None, sigkill))
        });
        let killed_by_kernel = killed_by_kernel.flatten();
        self.raise_cgroup_alerts(slot);
        let watched = self
            .cgroup
            .as_ref()
            .is_some_and(|w| w.generation == generation);
        if self.current_generation() == Some(generation) || watched {
            self.stop_detecting();
        }
        let _lifecycle = slot.lifecycle.lock().unwrap_or_else(|p| p.into_inner());
        let Some((state, instance)) = Self::current(slot, generation) else {
            return;
        };
        let started = instance.process().map(|p| p.started());
        if let Some(reason) = killed_by_kernel {
            // As at a hard limit the host polls for: shed, for the scaler to bring it back.
            self.lock().last_exit = Some(format!("{exit}: {reason}"));
            tracing::warn!(plugin = %self.plugin.config.name, %reason, "plugin process killed at its memory limit");
            self.plugin.note(&reason);
            if matches!(state, PluginState::Enabled { .. } | PluginState::Suspended) {
                slot.shared
                    .transition_by_host(PluginState::Disabled, &reason);
            }
            return;
        }
        let why = format!("its process {}", exit.sentence());
        self.lock().last_exit = Some(exit.to_string());
        match state {
            PluginState::Suspended => {
                slot.shared.transition_by_host(
                    PluginState::Disabled,
                    &format!("{why} while it was suspended"),
                );
            }
            PluginState::Enabled { .. } => self.after_exit(slot, Some(exit), &why, started),
            _ => {}
        }
    }

    /// Applies the restart policy after an exit (`None`: one the host caused, or a failed
    /// start). The caller holds the lifecycle lock.
    fn after_exit(&mut self, slot: &Slot, exit: Option<Exit>, why: &str, started: Option<Instant>) {
        self.stop_detecting();
        let now = self.now();
        let started = started.map(|at| self.timestamp_of(at));
        let decision = {
            let mut s = self.lock();
            if let Some(started) = started {
                s.tracker.started(started);
            }
            s.tracker.exited(now, exit, why)
        };
        match decision {
            RestartDecision::Restart { delay, attempt, .. } => {
                let reason = format!(
                    "{why}; restart {attempt} in {}",
                    humantime::format_duration(delay)
                );
                tracing::warn!(plugin = %self.plugin.config.name, %reason, "plugin process exited");
                slot.shared
                    .transition(PluginState::Restarting, &reason, None);
                self.restart_at = Some(Instant::now() + delay);
            }
            RestartDecision::GiveUp { reason } => {
                slot.shared.transition(
                    PluginState::Failed {
                        reason: reason.clone(),
                    },
                    &reason,
                    None,
                );
            }
            RestartDecision::Stop { reason } => {
                slot.shared
                    .transition_by_host(PluginState::Disabled, &reason);
            }
        }
    }

    /// The back-off has passed: start the process again, if the plugin is still waiting for it.
    fn restart(&mut self, slot: &Arc<Slot>) {
        let mut checkpoint = slot.lifecycle.lock().unwrap_or_else(|p| p.into_inner());
        if slot.shared.snapshot().0 != PluginState::Restarting {
            return;
        }
        let level = slot.shared.level();
        match start_instance(slot, level, &mut checkpoint, true) {
            Ok(instance) => {
                let last = {
                    let mut s = self.lock();
                    s.restarts += 1;
                    s.last_exit.clone()
                };
                let reason = match last {
                    Some(exit) => format!("restarted; its last process: {exit}"),
                    None => "restarted".to_owned(),
                };
                slot.shared
                    .transition(PluginState::Enabled { level }, &reason, Some(instance));
            }
            Err((operation, fault)) => {
                let why = format!("its restart failed ({operation}: {fault})");
                self.after_exit(slot, None, &why, None);
            }
        }
    }
}
