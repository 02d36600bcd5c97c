//! The telemetry actor: every event goes to the live view (API, event stream) and the metrics at
//! once, and what is logged (samples, plugin events and call tallies in `telemetry`, decisions in
//! `decisions`) goes to the [`Journal`] on the disk arbiter. It never
//! waits on the disk.

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use ballast_core::telemetry::TelemetryRecord;

use crate::journal::{Append, Journal, Sync};
use crate::live::{DaemonEvent, LiveView};
use crate::metrics::Metrics;

/// How often the call tallies of the API are written to the telemetry log.
const CALLS_INTERVAL: Duration = Duration::from_secs(10);

/// An event for the telemetry actor.
#[derive(Clone, Debug, Message)]
#[rtype(result = "()")]
pub struct Record(pub DaemonEvent);

/// Write the call tallies and sync the logs now (at shutdown); answers when they are on disk.
#[derive(Clone, Copy, Debug, Message)]
#[rtype(result = "()")]
pub struct Flush;

/// The telemetry actor.
pub struct TelemetryActor {
    live: Arc<LiveView>,
    metrics: Arc<Metrics>,
    journal: Addr<Journal>,
    sample_every: u32,
    samples_seen: u64,
}

impl TelemetryActor {
    /// An actor publishing to `live` and `metrics` and logging through `journal`, every
    /// `sample_every`-th sample of them.
    pub fn new(
        live: Arc<LiveView>,
        metrics: Arc<Metrics>,
        journal: Addr<Journal>,
        sample_every: u32,
    ) -> TelemetryActor {
        TelemetryActor {
            live,
            metrics,
            journal,
            sample_every: sample_every.max(1),
            samples_seen: 0,
        }
    }

    /// The record the logs keep of `event`, if they keep one.
    fn record(&mut self, event: &DaemonEvent) -> Option<TelemetryRecord> {
        match event {
            DaemonEvent::Sample(s) => {
                self.samples_seen += 1;
                (self.samples_seen - 1)
                    .is_multiple_of(u64::from(self.sample_every))
                    .then(|| TelemetryRecord::Sample(s.clone()))
            }
            DaemonEvent::Plugin(e) => Some(TelemetryRecord::Plugin(e.clone())),
            DaemonEvent::Decision(d) => Some(TelemetryRecord::Decision(d.clone())),
            // Assessments are derived from samples and tiers from the machine: not logged. A
            // warning is also a decision, logged as one.
            DaemonEvent::Assessment(_) | DaemonEvent::Tier(_) | DaemonEvent::Warning(_) => None,
        }
    }

    fn write_calls(&mut self) {
        for summary in self.live.take_calls() {
            self.journal
                .do_send(Append(TelemetryRecord::Calls(summary)));
        }
    }
}

impl Actor for TelemetryActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.run_interval(CALLS_INTERVAL, |actor, _| actor.write_calls());
    }
}

impl Handler<Record> for TelemetryActor {
    type Result = ();

    fn handle(&mut self, Record(event): Record, _ctx: &mut Self::Context) {
        self.metrics.observe(&event);
        if let Some(record) = self.record(&event) {
            self.journal.do_send(Append(record));
        }
        self.live.publish(event);
    }
}

impl Handler<Flush> for TelemetryActor {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, _msg: Flush, _ctx: &mut Self::Context) -> Self::Result {
        self.write_calls();
        let journal = self.journal.clone();
        Box::pin(async move {
            // The journal handles its mailbox in order: the sync comes after every record sent
            // before it.
            let _ = journal.send(Sync).await;
        })
    }
}
