//! The telemetry actor: every event goes to the live view (API, event stream), the metrics, and
//! the JSONL logs in the data directory (samples, plugin events and call tallies in `telemetry`,
//! decisions and warnings in `decisions`).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use anyhow::Result;
use ballast_core::telemetry::TelemetryRecord;

use crate::config::TelemetryConfig;
use crate::live::{DaemonEvent, LiveView};
use crate::metrics::Metrics;
use crate::store::JsonlLog;

/// An event for the telemetry actor.
#[derive(Clone, Debug, Message)]
#[rtype(result = "()")]
pub struct Record(pub DaemonEvent);

/// Flush and sync the logs now (at shutdown); answers when done.
#[derive(Clone, Copy, Debug, Message)]
#[rtype(result = "()")]
pub struct Flush;

/// The telemetry actor.
pub struct TelemetryActor {
    live: Arc<LiveView>,
    metrics: Arc<Metrics>,
    telemetry: JsonlLog,
    decisions: JsonlLog,
    sample_every: u32,
    samples_seen: u64,
}

impl TelemetryActor {
    /// Opens the logs in `dir` (repairing torn last lines) and builds the actor.
    pub fn open(
        dir: &Path,
        config: &TelemetryConfig,
        live: Arc<LiveView>,
        metrics: Arc<Metrics>,
    ) -> Result<TelemetryActor> {
        Ok(TelemetryActor {
            telemetry: JsonlLog::open(dir, "telemetry", config.segment_bytes, config.segments)?,
            decisions: JsonlLog::open(dir, "decisions", config.segment_bytes, config.segments)?,
            live,
            metrics,
            sample_every: config.sample_every.max(1),
            samples_seen: 0,
        })
    }

    fn write(&mut self, event: &DaemonEvent) {
        let (log, record) = match event {
            DaemonEvent::Sample(s) => {
                self.samples_seen += 1;
                if !(self.samples_seen - 1).is_multiple_of(u64::from(self.sample_every)) {
                    return;
                }
                (
                    &mut self.telemetry,
                    TelemetryRecord::Sample(Box::new(s.clone())),
                )
            }
            DaemonEvent::Plugin(e) => (&mut self.telemetry, TelemetryRecord::Plugin(e.clone())),
            DaemonEvent::Decision(d) => (&mut self.decisions, TelemetryRecord::Decision(d.clone())),
            // Assessments are derived from samples and tiers from the machine: not logged. A
            // warning is also a decision, logged as one.
            DaemonEvent::Assessment(_) | DaemonEvent::Tier(_) | DaemonEvent::Warning(_) => return,
        };
        if let Err(error) = log.append(&record) {
            tracing::warn!(error = %crate::error_chain(&error), "cannot write telemetry");
        }
    }

    fn write_calls(&mut self) {
        for summary in self.live.take_calls() {
            if let Err(error) = self.telemetry.append(&TelemetryRecord::Calls(summary)) {
                tracing::warn!(error = %crate::error_chain(&error), "cannot write call tallies");
            }
        }
    }

    fn sync(&mut self) {
        for log in [&mut self.telemetry, &mut self.decisions] {
            if let Err(error) = log.sync() {
                tracing::warn!(error = %crate::error_chain(&error), "cannot sync a log");
            }
        }
    }
}

impl Actor for TelemetryActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.run_interval(Duration::from_secs(10), |actor, _| actor.write_calls());
        ctx.run_interval(Duration::from_secs(2), |actor, _| actor.sync());
    }

    fn stopped(&mut self, _ctx: &mut Self::Context) {
        self.write_calls();
        self.sync();
    }
}

impl Handler<Record> for TelemetryActor {
    type Result = ();

    fn handle(&mut self, msg: Record, _ctx: &mut Self::Context) {
        let event = msg.0;
        self.metrics.observe(&event);
        self.write(&event);
        self.live.publish(event);
    }
}

impl Handler<Flush> for TelemetryActor {
    type Result = ();

    fn handle(&mut self, _msg: Flush, _ctx: &mut Self::Context) {
        self.write_calls();
        self.sync();
    }
}
