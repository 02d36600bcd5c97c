//! The daemon's disk writes, on an arbiter of their own: the JSONL logs (`telemetry` and
//! `decisions`) with their periodic fsync, and the plugins' checkpoints.
//!
//! Nothing on the control loop's arbiter (monitor -> predictor -> scaler -> host) ever waits on
//! the disk: the telemetry actor hands records here with `do_send` and goes on. When the disk is
//! slow (another process flooding it with fsyncs), records queue in this actor's mailbox and
//! the samples, decisions and commands keep their pace.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use anyhow::Result;
use ballast_core::telemetry::TelemetryRecord;
use ballast_host::PluginHost;

use crate::config::TelemetryConfig;
use crate::store::{self, JsonlLog};

/// How often the logs are synced to disk: at most this much is lost to a power cut.
const SYNC_INTERVAL: Duration = Duration::from_secs(2);

/// Append one record: decisions (and warnings) to the decision log, the rest to the telemetry
/// log.
#[derive(Clone, Debug, Message)]
#[rtype(result = "()")]
pub struct Append(pub TelemetryRecord);

/// Store the plugin's checkpoint, if the host holds one (after the plugin was disabled).
#[derive(Clone, Debug, Message)]
#[rtype(result = "()")]
pub struct SaveCheckpoint(pub String);

/// Sync the logs now; answered when done (at shutdown).
#[derive(Clone, Copy, Debug, Message)]
#[rtype(result = "()")]
pub struct Sync;

/// The writer of the data directory's logs and checkpoints.
pub struct Journal {
    data_dir: PathBuf,
    telemetry: JsonlLog,
    decisions: JsonlLog,
    host: Arc<PluginHost>,
}

impl Journal {
    /// Opens the logs in `data_dir` (repairing torn last lines); checkpoints are read from `host`.
    pub fn open(
        data_dir: PathBuf,
        config: &TelemetryConfig,
        host: Arc<PluginHost>,
    ) -> Result<Journal> {
        Ok(Journal {
            telemetry: JsonlLog::open(
                &data_dir,
                "telemetry",
                config.segment_bytes,
                config.segments,
            )?,
            decisions: JsonlLog::open(
                &data_dir,
                "decisions",
                config.segment_bytes,
                config.segments,
            )?,
            data_dir,
            host,
        })
    }

    fn sync(&mut self) {
        for log in [&mut self.telemetry, &mut self.decisions] {
            if let Err(error) = log.sync() {
                tracing::warn!(error = %crate::error_chain(&error), "cannot sync a log");
            }
        }
    }
}

impl Actor for Journal {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.run_interval(SYNC_INTERVAL, |journal, _| journal.sync());
    }

    fn stopped(&mut self, _ctx: &mut Self::Context) {
        self.sync();
    }
}

impl Handler<Append> for Journal {
    type Result = ();

    fn handle(&mut self, Append(record): Append, _ctx: &mut Self::Context) {
        let log = match record {
            TelemetryRecord::Decision(_) => &mut self.decisions,
            _ => &mut self.telemetry,
        };
        if let Err(error) = log.append(&record) {
            tracing::warn!(error = %crate::error_chain(&error), "cannot write telemetry");
        }
    }
}

impl Handler<SaveCheckpoint> for Journal {
    type Result = ();

    fn handle(&mut self, SaveCheckpoint(plugin): SaveCheckpoint, _ctx: &mut Self::Context) {
        store::save_checkpoint(&self.host, &self.data_dir, &plugin);
    }
}

impl Handler<Sync> for Journal {
    type Result = ();

    fn handle(&mut self, _msg: Sync, _ctx: &mut Self::Context) {
        self.sync();
    }
}
