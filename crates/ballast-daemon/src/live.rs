//! What the daemon knows right now, shared by the telemetry actor (which writes it) and the API
//! (which reads it): the latest sample and assessment, the tier, the recent decisions, call
//! tallies per caller, and a broadcast of every event for the `/events` stream.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Mutex, RwLock};

use ballast_core::decision::{Decision, Mode};
use ballast_core::telemetry::CallSummary;
use ballast_core::tier::Tier;
use ballast_core::{Assessment, PluginEvent, Sample, Timestamp};
use serde::Serialize;
use tokio::sync::broadcast;

/// How many recent decisions are kept in memory for `GET /decisions`.
pub const RECENT_DECISIONS: usize = 1000;

/// One event on the daemon's event stream (`GET /events`, `ballast events`).
#[derive(Clone, Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum DaemonEvent {
    /// A new sample (boxed: it is by far the largest event).
    Sample(Box<Sample>),
    /// A new assessment.
    Assessment(Assessment),
    /// A scaler decision.
    Decision(Decision),
    /// A warning for the operator.
    Warning(Decision),
    /// A plugin changed state or reported something.
    Plugin(PluginEvent),
    /// The tier was (re)detected.
    Tier(Tier),
}

/// The outcome of one call routed through the API, for the call tallies.
#[derive(Clone, Debug)]
pub struct CallOutcome {
    /// The plugin.
    pub plugin: String,
    /// The caller's name, `-` if none was given.
    pub caller: String,
    /// Whether it was answered.
    pub ok: bool,
    /// Whether it was refused because the plugin is shed, suspended or failed.
    pub degraded: bool,
    /// How long it took, in microseconds.
    pub latency_us: u64,
}

/// The daemon's live view. All methods are cheap and never block on IO.
pub struct LiveView {
    sample: RwLock<Option<Sample>>,
    assessment: RwLock<Option<Assessment>>,
    tier: RwLock<Option<Tier>>,
    mode: RwLock<Mode>,
    decisions: Mutex<VecDeque<Decision>>,
    calls: Mutex<BTreeMap<(String, String), CallSummary>>,
    events: broadcast::Sender<DaemonEvent>,
    started_at: Timestamp,
}

impl LiveView {
    /// An empty view for a daemon started at `started_at` in `mode`.
    pub fn new(started_at: Timestamp, mode: Mode) -> LiveView {
        let (events, _) = broadcast::channel(1024);
        LiveView {
            sample: RwLock::new(None),
            assessment: RwLock::new(None),
            tier: RwLock::new(None),
            mode: RwLock::new(mode),
            decisions: Mutex::new(VecDeque::with_capacity(RECENT_DECISIONS)),
            calls: Mutex::new(BTreeMap::new()),
            events,
            started_at,
        }
    }

    /// Records `event` in the view and broadcasts it to every subscriber.
    pub fn publish(&self, event: DaemonEvent) {
        match &event {
            DaemonEvent::Sample(s) => {
                *self.sample.write().unwrap_or_else(|p| p.into_inner()) = Some(Sample::clone(s))
            }
            DaemonEvent::Assessment(a) => {
                *self.assessment.write().unwrap_or_else(|p| p.into_inner()) = Some(a.clone());
            }
            DaemonEvent::Tier(t) => {
                *self.tier.write().unwrap_or_else(|p| p.into_inner()) = Some(t.clone())
            }
            // A warning is also a decision: kept once, as the decision.
            DaemonEvent::Decision(d) => {
                let mut decisions = self.decisions.lock().unwrap_or_else(|p| p.into_inner());
                if decisions.len() == RECENT_DECISIONS {
                    decisions.pop_front();
                }
                decisions.push_back(d.clone());
            }
            DaemonEvent::Plugin(_) | DaemonEvent::Warning(_) => {}
        }
        // No subscriber is not an error.
        let _ = self.events.send(event);
    }

    /// A receiver of every event published from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<DaemonEvent> {
        self.events.subscribe()
    }

    /// The latest sample.
    pub fn sample(&self) -> Option<Sample> {
        self.sample
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The latest assessment.
    pub fn assessment(&self) -> Option<Assessment> {
        self.assessment
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The current tier.
    pub fn tier(&self) -> Option<Tier> {
        self.tier.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The scaler's mode.
    pub fn mode(&self) -> Mode {
        *self.mode.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Sets the mode shown (the scaler's own mode is changed by the caller).
    pub fn set_mode(&self, mode: Mode) {
        *self.mode.write().unwrap_or_else(|p| p.into_inner()) = mode;
    }

    /// The last `n` decisions, oldest first.
    pub fn decisions(&self, n: usize) -> Vec<Decision> {
        let decisions = self.decisions.lock().unwrap_or_else(|p| p.into_inner());
        decisions
            .iter()
            .skip(decisions.len().saturating_sub(n))
            .cloned()
            .collect()
    }

    /// When the daemon started.
    pub fn started_at(&self) -> Timestamp {
        self.started_at
    }

    /// Counts one call routed through the API.
    pub fn record_call(&self, now: Timestamp, outcome: &CallOutcome) {
        let mut calls = self.calls.lock().unwrap_or_else(|p| p.into_inner());
        let entry = calls
            .entry((outcome.plugin.clone(), outcome.caller.clone()))
            .or_insert_with(|| CallSummary {
                from: now,
                to: now,
                plugin: outcome.plugin.clone(),
                caller: outcome.caller.clone(),
                ..CallSummary::default()
            });
        entry.to = now;
        entry.calls += 1;
        if !outcome.ok {
            entry.failures += 1;
        }
        if outcome.degraded {
            entry.degraded += 1;
        }
        if outcome.ok {
            entry.latency_total_us += outcome.latency_us;
            entry.latency_max_us = entry.latency_max_us.max(outcome.latency_us);
        }
    }

    /// Takes the call tallies collected since the last call (for the telemetry log).
    pub fn take_calls(&self) -> Vec<CallSummary> {
        std::mem::take(&mut *self.calls.lock().unwrap_or_else(|p| p.into_inner()))
            .into_values()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn published_events_update_the_view_and_reach_subscribers() {
        let live = LiveView::new(Timestamp::ZERO, Mode::Enforce);
        let mut rx = live.subscribe();
        live.publish(DaemonEvent::Sample(Box::new(Sample::unavailable(
            Timestamp::from_secs(1),
            "test",
        ))));
        assert_eq!(live.sample().unwrap().at, Timestamp::from_secs(1));
        assert!(matches!(rx.try_recv(), Ok(DaemonEvent::Sample(_))));
    }

    #[test]
    fn calls_are_tallied_per_plugin_and_caller_and_taken_once() {
        let live = LiveView::new(Timestamp::ZERO, Mode::Enforce);
        let call = |caller: &str, ok: bool, degraded: bool| CallOutcome {
            plugin: "voice".into(),
            caller: caller.into(),
            ok,
            degraded,
            latency_us: 100,
        };
        live.record_call(Timestamp::from_secs(1), &call("app", true, false));
        live.record_call(Timestamp::from_secs(2), &call("app", false, true));
        live.record_call(Timestamp::from_secs(3), &call("-", true, false));
        let mut tallies = live.take_calls();
        tallies.sort_by(|a, b| a.caller.cmp(&b.caller));
        assert_eq!(tallies.len(), 2);
        let app = &tallies[1];
        assert_eq!(
            (app.calls, app.failures, app.degraded, app.latency_total_us),
            (2, 1, 1, 100)
        );
        assert_eq!(
            (app.from, app.to),
            (Timestamp::from_secs(1), Timestamp::from_secs(2))
        );
        assert!(live.take_calls().is_empty());
    }
}
