//! The lifecycle steps of one plugin, on its [`Slot`]: create and start an instance, enable,
//! change level, drain and disable, mark failed; and the call worker that runs admitted calls.
//!
//! The host's commands and the supervisor's restarts and sheds are both made of these steps, so
//! they live below both.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use ballast_core::Timestamp;
use ballast_core::plugin::{Level, PluginEventKind, PluginState};

use crate::error::{CallError, HostError};
use crate::instance::{Instance, PluginFault};
use crate::live::Live;
use crate::slot::{Backend, Job, Shared, Slot};
use crate::stream::{CallIo, CancelReason};

/// How long a drain waits, past its deadline, for the calls it cut to return before it stops the
/// instance without them.
const CUT_GRACE: Duration = Duration::from_millis(100);

/// Fails with [`HostError::InvalidLevel`] unless the plugin has `level`.
pub(crate) fn check_level(slot: &Slot, level: Level) -> Result<(), HostError> {
    let n = slot.backend.info().n_levels();
    if level.0 >= n {
        return Err(HostError::InvalidLevel {
            plugin: slot.config.name.clone(),
            level: level.0,
            max: n - 1,
        });
    }
    Ok(())
}

/// Marks the plugin failed after `operation` failed, and returns the error.
pub(crate) fn fail(slot: &Slot, operation: &'static str, fault: PluginFault) -> HostError {
    slot.shared.transition(
        PluginState::Failed {
            reason: format!("{operation} failed: {fault}"),
        },
        &format!("{operation} failed"),
        None,
    );
    HostError::Plugin {
        plugin: slot.config.name.clone(),
        operation,
        fault,
    }
}

/// Creates and starts a new instance at `level`, handing it the checkpoint (kept for the next
/// attempt if the create fails). `supervised` marks a restart by the supervisor. The caller
/// holds the lifecycle lock (`checkpoint` is its content) and makes the transition.
pub(crate) fn start_instance(
    slot: &Slot,
    level: Level,
    checkpoint: &mut Option<Vec<u8>>,
    supervised: bool,
) -> Result<Arc<Live>, (&'static str, PluginFault)> {
    let blob = checkpoint.take().unwrap_or_default();
    let created = match &slot.backend {
        Backend::Native {
            library,
            host_api,
            tap,
            ..
        } => {
            let config_json =
                serde_json::to_vec(&slot.config.config).unwrap_or_else(|_| b"{}".to_vec());
            Instance::create(
                Arc::clone(library),
                host_api.0,
                &config_json,
                &blob,
                tap.clone(),
            )
            .map(Live::Native)
        }
        Backend::Process(plugin) => plugin.create(level.0, &blob, supervised).map(Live::Process),
    };
    let instance = match created {
        Ok(instance) => Arc::new(instance),
        Err(fault) => {
            *checkpoint = (!blob.is_empty()).then_some(blob);
            return Err(("create", fault));
        }
    };
    let wait = slot.config.drain_timeout;
    instance.start(wait).map_err(|f| ("start", f))?;
    if level != Level::FULL {
        instance
            .set_level(level.0, wait)
            .map_err(|f| ("set_level", f))?;
    }
    Ok(instance)
}

/// Reads the plugin's figures and reports them as a [`PluginEventKind::Stats`] event.
pub(crate) fn publish_stats(slot: &Slot) {
    slot.shared.emit(PluginEventKind::Stats(slot.stats()));
}

/// [`PluginHost::enable`](crate::PluginHost::enable) on a slot.
pub(crate) fn enable_slot(slot: &Slot, level: Level, reason: &str) -> Result<(), HostError> {
    check_level(slot, level)?;
    let mut checkpoint = slot.lifecycle.lock().unwrap_or_else(|p| p.into_inner());
    let (state, instance) = slot.shared.snapshot();
    match (state, instance) {
        (PluginState::Enabled { level: current }, _) if current == level => return Ok(()),
        (PluginState::Enabled { .. } | PluginState::Suspended, Some(instance)) => {
            return change_level(slot, &instance, level, reason, &mut checkpoint);
        }
        _ => {}
    }
    let result = match start_instance(slot, level, &mut checkpoint, false) {
        Ok(instance) => {
            slot.shared
                .transition(PluginState::Enabled { level }, reason, Some(instance));
            // The figures on arrival: what the plugin holds at this level is known at once,
            // not at the next periodic refresh.
            publish_stats(slot);
            Ok(())
        }
        Err((operation, fault)) => Err(fail(slot, operation, fault)),
    };
    drop(checkpoint);
    // Calls that woke the plugin go to it now, or learn why it did not come up.
    slot.settle_waiting();
    result
}

/// Moves the running `instance` to `level` (a process that speaks no protocol is restarted at it).
pub(crate) fn change_level(
    slot: &Slot,
    instance: &Arc<Live>,
    level: Level,
    reason: &str,
    checkpoint: &mut Option<Vec<u8>>,
) -> Result<(), HostError> {
    // The figures on departure, then on arrival: the scaler learns what each level really holds
    // even when the plugin stays at a level for less than one periodic refresh.
    publish_stats(slot);
    let plugin_error = |operation, fault| HostError::Plugin {
        plugin: slot.config.name.clone(),
        operation,
        fault,
    };
    // A suspended process must run to answer.
    instance.resume().map_err(|f| plugin_error("resume", f))?;
    if let Some(process) = instance.process()
        && !process.plugin().speaks_protocol()
        && process.level() != level.0
    {
        // It learns its level only from its environment: restart it at the new one.
        process.plugin().note(&format!(
            "restarting at level {level}: it speaks no protocol ({reason})"
        ));
        if let Err(fault) = instance.stop(slot.config.drain_timeout) {
            tracing::warn!(plugin = %slot.config.name, %fault, "stop before the level change failed");
        }
        return match start_instance(slot, level, checkpoint, false) {
            Ok(instance) => {
                slot.shared
                    .transition(PluginState::Enabled { level }, reason, Some(instance));
                Ok(())
            }
            Err((operation, fault)) => Err(fail(slot, operation, fault)),
        };
    }
    if let Err(fault) = instance.set_level(level.0, slot.config.drain_timeout) {
        if fault.is_panic() {
            return Err(fail(slot, "set_level", fault));
        }
        return Err(plugin_error("set_level", fault));
    }
    slot.shared.transition(
        PluginState::Enabled { level },
        reason,
        Some(Arc::clone(instance)),
    );
    publish_stats(slot);
    Ok(())
}

/// [`PluginHost::disable`](crate::PluginHost::disable) on a slot.
pub(crate) fn disable_slot(slot: &Slot, reason: &str) -> Result<(), HostError> {
    disable_slot_as(slot, reason, false)
}

/// [`disable_slot`], on the host's own initiative when `by_host`.
pub(crate) fn disable_slot_as(slot: &Slot, reason: &str, by_host: bool) -> Result<(), HostError> {
    disable_slot_reporting(slot, reason, by_host).map(|_| ())
}

/// [`disable_slot_as`], with what each step of the retirement did (for the conformance check).
pub(crate) fn disable_slot_reporting(
    slot: &Slot,
    reason: &str,
    by_host: bool,
) -> Result<Retired, HostError> {
    let result = retire_slot(slot, reason, by_host, PluginState::Disabled, None);
    slot.settle_waiting();
    result
}

/// Unloads an idle plugin: like a disable, but it ends `Idle` (a call wakes it), and it is
/// refused when the plugin took a call after `idle_since` or has one in flight.
pub(crate) fn unload_slot(
    slot: &Slot,
    reason: &str,
    idle_since: Timestamp,
) -> Result<(), HostError> {
    let result = retire_slot(slot, reason, false, PluginState::Idle, Some(idle_since));
    slot.settle_waiting();
    result.map(|_| ())
}

/// What one retirement (drain, checkpoint, stop) did, step by step, with how long each took.
/// The daemon logs the failures; the conformance check reports them.
#[derive(Debug, Default)]
pub(crate) struct Retired {
    /// Whether there was a running instance to retire.
    pub(crate) had_instance: bool,
    /// Calls admitted and not answered when the drain began.
    pub(crate) in_flight_at_start: u32,
    /// How long it waited for them.
    pub(crate) waited_for_calls: Duration,
    /// Calls cut at the drain deadline.
    pub(crate) cut: usize,
    /// Calls still running after the deadline (and the cut's grace): the instance was then
    /// neither drained nor stopped, and is destroyed when they return.
    pub(crate) in_flight_left: u32,
    /// The deadline handed to the plugin's drain, how long the drain took, and its result.
    pub(crate) drain: Option<(Duration, Duration, Result<(), PluginFault>)>,
    /// How long the checkpoint took, and its result (its size; the blob is kept in the slot).
    pub(crate) checkpoint: Option<(Duration, Result<Option<usize>, PluginFault>)>,
    /// How long the stop took, and its result.
    pub(crate) stop: Option<(Duration, Result<(), PluginFault>)>,
    /// How long the destroy took (when this retirement dropped the last reference).
    pub(crate) destroy: Option<Duration>,
}

/// Drains, checkpoints, stops and destroys the running instance, ending in `to`. With
/// `idle_since`, it first checks, under the lifecycle lock, that no call ran since.
fn retire_slot(
    slot: &Slot,
    reason: &str,
    by_host: bool,
    to: PluginState,
    idle_since: Option<Timestamp>,
) -> Result<Retired, HostError> {
    let name = slot.config.name.as_str();
    let mut retired = Retired::default();
    let mut checkpoint = slot.lifecycle.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(since) = idle_since {
        let in_flight = slot.shared.outstanding.load(Ordering::SeqCst);
        let last_end = slot.shared.last_call_end.load(Ordering::SeqCst);
        let active = if in_flight > 0 {
            Some(format!("{in_flight} calls in flight"))
        } else if last_end > since.as_millis() {
            Some(format!(
                "a call ended at {} after the idleness the unload was for",
                Timestamp::from_millis(last_end)
            ))
        } else if !matches!(slot.shared.snapshot().0, PluginState::Enabled { .. }) {
            Some("it is not enabled".to_owned())
        } else {
            None
        };
        if let Some(why) = active {
            drop(checkpoint);
            // Fresh figures, so the scaler sees the activity it missed.
            publish_stats(slot);
            return Err(HostError::Active {
                plugin: name.to_owned(),
                why,
            });
        }
    }
    let (state, instance) = slot.shared.snapshot();
    let instance = match state {
        PluginState::Enabled { .. } | PluginState::Suspended => instance,
        _ => None,
    };
    let Some(instance) = instance else {
        if matches!(
            state,
            PluginState::Loaded | PluginState::Failed { .. } | PluginState::Restarting
        ) || (state == PluginState::Idle && to == PluginState::Disabled)
        {
            slot.shared.transition_as(to, reason, None, by_host);
        }
        return Ok(retired);
    };
    retired.had_instance = true;
    // The figures on departure (see `change_level`).
    publish_stats(slot);
    slot.shared
        .transition(PluginState::Draining, reason, Some(Arc::clone(&instance)));
    let began = Instant::now();
    retired.in_flight_at_start = slot.shared.outstanding.load(Ordering::SeqCst);
    let deadline = began + slot.config.drain_timeout;
    while slot.shared.outstanding.load(Ordering::SeqCst) > 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1));
    }
    let mut in_flight = slot.shared.outstanding.load(Ordering::SeqCst);
    if in_flight > 0 {
        // Streams and calls with a deadline are cut now, each told why; a plugin that looks at
        // its context stops, and one that does not is no longer waited for by its caller.
        let cut = slot.shared.cancel_all(CancelReason::Shed);
        retired.cut = cut;
        if cut > 0 {
            tracing::info!(plugin = %name, cut, "calls cut at the drain deadline");
            let grace = Instant::now() + CUT_GRACE;
            while slot.shared.outstanding.load(Ordering::SeqCst) > 0 && Instant::now() < grace {
                std::thread::sleep(Duration::from_millis(1));
            }
            in_flight = slot.shared.outstanding.load(Ordering::SeqCst);
        }
    }
    retired.waited_for_calls = began.elapsed();
    retired.in_flight_left = in_flight;
    let left = deadline.saturating_duration_since(Instant::now());
    if in_flight > 0 {
        tracing::warn!(plugin = %name, in_flight, "calls still running after the drain deadline; the instance is destroyed when they return");
    } else {
        let started = Instant::now();
        let drained = instance.drain(left);
        if let Err(fault) = &drained {
            tracing::warn!(plugin = %name, %fault, "plugin drain failed; stopping it anyway");
        }
        retired.drain = Some((left, started.elapsed(), drained));
        let started = Instant::now();
        let blob = instance.checkpoint(left);
        let size = match blob {
            Ok(Some(blob)) if !blob.is_empty() => {
                let size = blob.len();
                *checkpoint = Some(blob);
                slot.shared
                    .checkpoint_at
                    .store(slot.shared.now().as_millis().max(1), Ordering::Relaxed);
                Ok(Some(size))
            }
            Ok(_) => Ok(None),
            Err(fault) => {
                tracing::warn!(plugin = %name, %fault, "plugin checkpoint failed; its state will not carry over");
                Err(fault)
            }
        };
        retired.checkpoint = Some((started.elapsed(), size));
        let started = Instant::now();
        let stopped = instance.stop(left);
        if let Err(fault) = &stopped {
            tracing::warn!(plugin = %name, %fault, "plugin stop failed");
        }
        retired.stop = Some((started.elapsed(), stopped));
    }
    slot.shared.transition_as(to, reason, None, by_host);
    // Dropping the last reference (here, or in the last call still running) destroys it.
    let started = Instant::now();
    if Arc::into_inner(instance).is_some() {
        retired.destroy = Some(started.elapsed());
    }
    Ok(retired)
}

/// A worker thread: takes jobs, waits for a permit, runs the call, replies.
pub(crate) fn worker(shared: &Shared, jobs: &crate::queue::Receiver<Job>) {
    while let Some(job) = jobs.recv() {
        shared.permits.acquire();
        let started = Instant::now();
        let still_current = shared
            .serving()
            .is_some_and(|current| Arc::ptr_eq(&current, &job.instance));
        let mut io = job.io;
        let result = if !still_current {
            Err(shared.degraded())
        } else if let Some((io, _)) = &mut io {
            run_with_io(shared, &job.instance, &job.request, io)
        } else {
            job.instance
                .call(&job.request)
                .map_err(|fault| call_error(shared, &job.instance, fault))
        };
        shared
            .stats
            .record(started.elapsed(), result.as_ref().err());
        if let Some((io, ticket)) = &io {
            shared.stats.record_io(io, started);
            shared.forget(*ticket);
        }
        drop(job.instance);
        shared.permits.release();
        if shared.tracks_activity {
            shared
                .last_call_end
                .store(shared.now().as_millis(), Ordering::SeqCst);
        }
        shared.outstanding.fetch_sub(1, Ordering::SeqCst);
        // The chunks' listener goes before the answer: the last chunk is out when it comes.
        drop(io);
        (job.reply)(result);
    }
}

/// Runs a call against its side channel: the chunks go out as the plugin sends them (a final
/// answer as the last one), or are joined into the answer for a caller that does not stream. A
/// call cancelled before it starts never reaches the plugin; one cancelled while it runs ends
/// [`CallError::Cancelled`] whatever the plugin made of it.
fn run_with_io(
    shared: &Shared,
    instance: &Arc<Live>,
    request: &[u8],
    io: &mut CallIo,
) -> Result<Vec<u8>, CallError> {
    let cancelled = |reason| CallError::Cancelled {
        plugin: shared.name.clone(),
        reason,
    };
    if let Some(reason) = io.cancel_reason() {
        return Err(cancelled(reason));
    }
    let answer = instance.call_stream(request, io);
    if let Some(reason) = io.cancel_reason() {
        return Err(cancelled(reason));
    }
    let answer = answer.map_err(|fault| call_error(shared, instance, fault))?;
    if !answer.is_empty() {
        io.send(&answer);
    }
    if let Some(reason) = io.cancel_reason() {
        return Err(cancelled(reason));
    }
    Ok(if io.streams() {
        Vec::new()
    } else {
        io.take_joined()
    })
}

/// The error for a call that failed with `fault`; a panic marks the plugin failed, if the
/// instance that panicked is still the current one.
fn call_error(shared: &Shared, instance: &Arc<Live>, fault: PluginFault) -> CallError {
    if !fault.is_panic() {
        return CallError::Failed {
            plugin: shared.name.clone(),
            message: fault.to_string(),
        };
    }
    if shared.callable().is_some_and(|c| Arc::ptr_eq(&c, instance)) {
        shared.transition(
            PluginState::Failed {
                reason: format!("call panicked: {}", fault.message),
            },
            "call panicked",
            None,
        );
    }
    CallError::Panicked {
        plugin: shared.name.clone(),
        message: fault.message,
    }
}
