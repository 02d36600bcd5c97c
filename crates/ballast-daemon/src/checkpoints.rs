//! Periodic checkpoints and checkpoints at a memory stall: the thin shell around the pure
//! [`CheckpointSchedule`].
//!
//! The `Checkpointer` runs on the control loop's arbiter and never blocks: it learns which
//! plugins run from the host's events and of stalls from the pressure trigger and the scaler's
//! emergencies, asks the schedule what is due once a second (at once after a stall), has the host
//! take each checkpoint on the plugin's lifecycle thread, and the journal store it atomically on
//! the disk arbiter.

use std::time::Duration;

use actix::prelude::*;
use ballast_core::Timestamp;
use ballast_core::plugin::PluginState;
use ballast_host::checkpoint::CheckpointSchedule;
use ballast_host::{Clock, PluginHostActor, TakeCheckpoint};
use ballast_monitor::{TriggerSource, Wake, WakeSink};

use crate::journal::{Journal, SaveCheckpoint};

/// How often the schedule is asked what is due.
const TICK: Duration = Duration::from_secs(1);

/// A plugin's state changed (from the host's events).
#[derive(Clone, Debug, Message)]
#[rtype(result = "()")]
pub struct PluginStateMsg {
    /// The plugin.
    pub plugin: String,
    /// Its state now.
    pub to: PluginState,
    /// When.
    pub at: Timestamp,
}

/// Memory stalled: checkpoint the running plugins whose last checkpoint is old enough.
#[derive(Clone, Copy, Debug, Message)]
#[rtype(result = "()")]
pub struct Stall {
    /// What saw it: `pressure trigger` or `emergency`.
    pub by: &'static str,
}

/// A checkpoint handed out earlier has ended.
#[derive(Clone, Debug, Message)]
#[rtype(result = "()")]
struct Done(String);

/// The actor that takes the periodic and stall checkpoints.
pub struct Checkpointer {
    schedule: CheckpointSchedule,
    clock: Clock,
    host: Addr<PluginHostActor>,
    journal: Addr<Journal>,
}

impl Checkpointer {
    /// A checkpointer for the plugins that have a `checkpoint_interval`.
    pub fn new(
        intervals: impl IntoIterator<Item = (String, Duration)>,
        clock: Clock,
        host: Addr<PluginHostActor>,
        journal: Addr<Journal>,
    ) -> Self {
        Checkpointer {
            schedule: CheckpointSchedule::new(intervals),
            clock,
            host,
            journal,
        }
    }

    fn poll(&mut self, ctx: &mut Context<Self>) {
        let now = (self.clock)();
        for (plugin, why) in self.schedule.poll_due(now) {
            let host = self.host.clone();
            let journal = self.journal.clone();
            let me = ctx.address();
            actix::spawn(async move {
                match host.send(TakeCheckpoint(plugin.clone())).await {
                    Ok(Ok(Some(at))) => {
                        tracing::info!(%plugin, why = why.as_str(), %at, "checkpoint taken");
                        journal.do_send(SaveCheckpoint(plugin.clone()));
                    }
                    Ok(Ok(None)) => {
                        tracing::debug!(%plugin, why = why.as_str(), "no checkpoint to take")
                    }
                    Ok(Err(error)) => {
                        tracing::warn!(%plugin, why = why.as_str(), %error, "checkpoint failed; the last one is kept")
                    }
                    Err(error) => {
                        tracing::error!(%plugin, %error, "the plugin host is not answering")
                    }
                }
                me.do_send(Done(plugin));
            });
        }
    }
}

impl Actor for Checkpointer {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.run_interval(TICK, |actor, ctx| actor.poll(ctx));
    }
}

impl Handler<PluginStateMsg> for Checkpointer {
    type Result = ();

    fn handle(&mut self, msg: PluginStateMsg, _ctx: &mut Self::Context) {
        match msg.to {
            PluginState::Enabled { .. } => self.schedule.running(&msg.plugin, msg.at),
            // A shed, an unload or a stop took a checkpoint of its own.
            PluginState::Disabled | PluginState::Idle => {
                self.schedule.stopped(&msg.plugin);
                self.schedule.taken(&msg.plugin, msg.at);
            }
            _ => self.schedule.stopped(&msg.plugin),
        }
    }
}

impl Handler<Stall> for Checkpointer {
    type Result = ();

    fn handle(&mut self, msg: Stall, ctx: &mut Self::Context) {
        let now = (self.clock)();
        tracing::debug!(by = msg.by, "memory stall: checkpoints due");
        self.schedule.stall(now);
        self.poll(ctx);
    }
}

impl Handler<Done> for Checkpointer {
    type Result = ();

    fn handle(&mut self, Done(plugin): Done, _ctx: &mut Self::Context) {
        let now = (self.clock)();
        self.schedule.done(&plugin, now);
    }
}

/// A trigger that also tells the checkpointer when it fires: the monitor samples at once, and
/// the running plugins are checkpointed.
pub struct StallTee<T> {
    /// The trigger itself.
    pub inner: T,
    /// Who else hears it.
    pub checkpointer: Addr<Checkpointer>,
}

struct TeeSink {
    sink: Box<dyn WakeSink>,
    checkpointer: Addr<Checkpointer>,
}

impl WakeSink for TeeSink {
    fn wake(&self, wake: Wake) {
        self.sink.wake(wake);
        match wake {
            Wake::MemoryPressure => self.checkpointer.do_send(Stall {
                by: "pressure trigger",
            }),
        }
    }

    fn is_listening(&self) -> bool {
        self.sink.is_listening()
    }
}

impl<T: TriggerSource> TriggerSource for StallTee<T> {
    fn start(self: Box<Self>, sink: Box<dyn WakeSink>) -> Result<(), String> {
        let StallTee {
            inner,
            checkpointer,
        } = *self;
        Box::new(inner).start(Box::new(TeeSink { sink, checkpointer }))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::store::checkpoint_path;
    use crate::testing::{Options, app_state, plugin};

    /// Waits (bounded) until `test` holds.
    async fn wait_for(what: &str, test: impl Fn() -> bool) {
        for _ in 0..4000 {
            if test() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        panic!("{what} never happened");
    }

    #[actix_web::test]
    async fn a_memory_stall_checkpoints_the_running_plugins_and_stores_it() {
        let mut voice = plugin("voice", 10);
        // Far off: only the stall can take this checkpoint.
        voice.checkpoint_interval = Some(Duration::from_secs(3600));
        let fixture = app_state(Options {
            plugins: vec![voice, plugin("stubs", 100)],
            ..Options::default()
        })
        .await;
        for _ in 0..2 {
            let answer = fixture
                .host
                .send(ballast_host::Call {
                    plugin: "voice".into(),
                    request: b"hello".to_vec(),
                    options: None,
                })
                .await
                .unwrap()
                .unwrap();
            assert!(String::from_utf8_lossy(&answer).contains("hello"));
        }
        assert_eq!(
            fixture.plugin_host.checkpoint_taken_at("voice").unwrap(),
            None
        );

        let path = checkpoint_path(&fixture.topology.data_dir, "voice");

        // A minute later, memory stalls: voice is checkpointed at once and stored; stubs, with
        // no interval, is not.
        fixture.advance_clock(Duration::from_secs(60));
        fixture.fire_trigger();
        wait_for("voice's stall checkpoint on disk", || path.exists()).await;
        let stored: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(stored["calls_served"], 2, "{stored}");
        let taken = fixture.plugin_host.checkpoint_taken_at("voice").unwrap();
        assert!(taken.is_some());
        let status = fixture.plugin_host.status("voice").unwrap();
        assert_eq!(status.stats.last_checkpoint, taken);
        assert!(status.state.name() == "enabled", "still running");
        assert!(
            !checkpoint_path(&fixture.topology.data_dir, "stubs").exists(),
            "stubs has no checkpoint_interval"
        );
    }
}
