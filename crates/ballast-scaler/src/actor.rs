//! `ScalerActor`: the thin actix shell around [`Scaler`]: receive, `handle_*`, drain `poll_*`,
//! send, and keep one timer armed for [`Scaler::poll_timeout`].
//!
//! The actor does not read the wall clock either. Its idea of "now" is the timestamp of the
//! latest message it received plus the monotonic time (tokio's, which tests pause and advance)
//! that has passed since, so timer expiries land on the same timeline as the assessments.

use std::time::Duration;

use actix::prelude::*;
use ballast_core::decision::{Decision, Mode};
use ballast_core::{
    Assessment, Command, Level, PluginEvent, Resource, ThresholdProfile, Thresholds, Timestamp,
};

use crate::error::ScalerError;
use crate::scaler::{PinTarget, PluginStatus, Preflight, Scaler, WakeError, WakeGrant};

/// An assessment from the predictor.
#[derive(Clone, Debug, Message)]
#[rtype(result = "()")]
pub struct AssessmentMsg(pub Assessment);

/// An event from the plugin host.
#[derive(Clone, Debug, Message)]
#[rtype(result = "()")]
pub struct PluginEventMsg(pub PluginEvent);

/// A command for the plugin host.
#[derive(Clone, Debug, Message)]
#[rtype(result = "()")]
pub struct CommandMsg(pub Command);

/// A decision for the decision log and the event stream.
#[derive(Clone, Debug, Message)]
#[rtype(result = "()")]
pub struct DecisionMsg(pub Decision);

/// A warning for operators (see [`Scaler::poll_warning`]).
#[derive(Clone, Debug, Message)]
#[rtype(result = "()")]
pub struct WarningMsg(pub Decision);

/// An operator pin: hold `plugin` at `target`, for `duration` when given.
#[derive(Clone, Debug, Message)]
#[rtype(result = "Result<(), ScalerError>")]
pub struct PinMsg {
    /// The plugin.
    pub plugin: String,
    /// Where to hold it.
    pub target: PinTarget,
    /// How long, or until released.
    pub duration: Option<Duration>,
}

/// An operator release of a pin.
#[derive(Clone, Debug, Message)]
#[rtype(result = "Result<(), ScalerError>")]
pub struct ReleaseMsg {
    /// The plugin.
    pub plugin: String,
}

/// The fullest level the tier allows a plugin (`None`: not at all).
#[derive(Clone, Debug, Message)]
#[rtype(result = "Result<(), ScalerError>")]
pub struct SetAllowanceMsg {
    /// The plugin.
    pub plugin: String,
    /// Its fullest allowed level.
    pub best: Option<ballast_core::Level>,
}

/// A new threshold profile (a tier change).
#[derive(Clone, Debug, Message)]
#[rtype(result = "Result<(), ScalerError>")]
pub struct SetProfileMsg(pub ThresholdProfile);

/// A call wants an idle plugin: bring it up if it fits, making room by priority.
#[derive(Clone, Debug, Message)]
#[rtype(result = "Result<WakeGrant, WakeError>")]
pub struct WakeMsg(pub String);

/// Would `plugin` fit at `level` (its fullest allowed when `None`)? Changes nothing.
#[derive(Clone, Debug, Message)]
#[rtype(result = "Result<Preflight, ScalerError>")]
pub struct PreflightMsg {
    /// The plugin.
    pub plugin: String,
    /// The level asked about.
    pub level: Option<ballast_core::Level>,
}

/// The GPU memory each plugin's processes were measured holding (`(plugin, bytes)`), at `at`.
#[derive(Clone, Debug, Message)]
#[rtype(result = "()")]
pub struct GpuUsageMsg {
    /// When it was measured.
    pub at: Timestamp,
    /// Per plugin.
    pub usage: Vec<(String, u64)>,
}

/// A new mode.
#[derive(Clone, Copy, Debug, Message)]
#[rtype(result = "()")]
pub struct SetModeMsg(pub Mode);

/// Asks for every plugin's status.
#[derive(Clone, Copy, Debug, Message)]
#[rtype(result = "Vec<PluginStatus>")]
pub struct GetPluginsMsg;

/// Asks what readiness checks need: whether the scaler has made its first decisions, and what
/// a call to each plugin would meet ([`Scaler::wake_check`]). Changes nothing.
#[derive(Clone, Copy, Debug, Message)]
#[rtype(result = "Readiness")]
pub struct ReadinessMsg;

/// The answer to [`ReadinessMsg`].
#[derive(Clone, Debug, PartialEq)]
pub struct Readiness {
    /// When the latest assessment was taken in; `None` before the first decision round.
    pub assessed_at: Option<Timestamp>,
    /// Per plugin, in shed order: the level a call would be served at (woken if it must), or
    /// why it would be refused at once.
    pub plugins: Vec<(String, Result<Level, WakeError>)>,
}

/// Asks for the thresholds in force for each resource the scaler acts on.
#[derive(Clone, Copy, Debug, Message)]
#[rtype(result = "Vec<(Resource, Thresholds)>")]
pub struct GetThresholdsMsg;

/// Where the actor sends what the scaler produces.
#[derive(Clone)]
pub struct ScalerOutputs {
    /// Commands for the plugin host.
    pub commands: Recipient<CommandMsg>,
    /// Decisions for the log, if anyone listens.
    pub decisions: Option<Recipient<DecisionMsg>>,
    /// Warnings for operators, if anyone listens.
    pub warnings: Option<Recipient<WarningMsg>>,
}

/// The actor around [`Scaler`].
pub struct ScalerActor {
    scaler: Scaler,
    outputs: ScalerOutputs,
    /// The latest timestamp received and the monotonic instant it was received at.
    anchor: Option<(Timestamp, tokio::time::Instant)>,
    timer: Option<(Timestamp, SpawnHandle)>,
}

impl ScalerActor {
    /// An actor driving `scaler` and sending to `outputs`.
    pub fn new(scaler: Scaler, outputs: ScalerOutputs) -> Self {
        ScalerActor {
            scaler,
            outputs,
            anchor: None,
            timer: None,
        }
    }

    /// Starts the actor's timeline at `now` instead of at the first timestamped message, so that
    /// pins with a duration made before any assessment (restored at start-up, say) run out at the
    /// right time.
    pub fn starting_at(mut self, now: Timestamp) -> Self {
        self.anchor = Some((now, tokio::time::Instant::now()));
        self
    }

    /// Now, on the timeline of the messages: the latest timestamp plus the time passed since.
    fn now(&self) -> Timestamp {
        match self.anchor {
            Some((at, instant)) => at + instant.elapsed(),
            None => Timestamp::ZERO,
        }
    }

    /// Moves the anchor to a message's timestamp (never backwards).
    fn observe_time(&mut self, at: Timestamp) -> Timestamp {
        let now = self.now().max(at);
        self.anchor = Some((now, tokio::time::Instant::now()));
        now
    }

    /// Sends everything the scaler produced and re-arms the timer.
    fn flush(&mut self, ctx: &mut Context<Self>) {
        while let Some(command) = self.scaler.poll_command() {
            self.outputs.commands.do_send(CommandMsg(command));
        }
        while let Some(decision) = self.scaler.poll_decision() {
            if let Some(decisions) = &self.outputs.decisions {
                decisions.do_send(DecisionMsg(decision));
            }
        }
        while let Some(warning) = self.scaler.poll_warning() {
            if let Some(warnings) = &self.outputs.warnings {
                warnings.do_send(WarningMsg(warning));
            }
        }
        let wanted = self.scaler.poll_timeout();
        if self.timer.as_ref().map(|(at, _)| *at) == wanted {
            return;
        }
        if let Some((_, handle)) = self.timer.take() {
            ctx.cancel_future(handle);
        }
        if let Some(at) = wanted {
            let delay = at - self.now();
            let handle = ctx.run_later(delay, move |actor, ctx| {
                actor.timer = None;
                let now = actor.observe_time(at);
                actor.scaler.handle_timeout(now);
                actor.flush(ctx);
            });
            self.timer = Some((at, handle));
        }
    }
}

impl Actor for ScalerActor {
    type Context = Context<Self>;
}

impl Handler<AssessmentMsg> for ScalerActor {
    type Result = ();

    fn handle(&mut self, msg: AssessmentMsg, ctx: &mut Context<Self>) {
        let now = self.observe_time(msg.0.at);
        self.scaler.handle_assessment(now, &msg.0);
        self.flush(ctx);
    }
}

impl Handler<PluginEventMsg> for ScalerActor {
    type Result = ();

    fn handle(&mut self, msg: PluginEventMsg, ctx: &mut Context<Self>) {
        let now = self.observe_time(msg.0.at);
        self.scaler.handle_plugin_event(now, &msg.0);
        self.flush(ctx);
    }
}

impl Handler<PinMsg> for ScalerActor {
    type Result = Result<(), ScalerError>;

    fn handle(&mut self, msg: PinMsg, ctx: &mut Context<Self>) -> Self::Result {
        let now = self.now();
        let until = msg.duration.map(|d| now + d);
        let result = self.scaler.pin(now, &msg.plugin, msg.target, until);
        self.flush(ctx);
        result
    }
}

impl Handler<ReleaseMsg> for ScalerActor {
    type Result = Result<(), ScalerError>;

    fn handle(&mut self, msg: ReleaseMsg, ctx: &mut Context<Self>) -> Self::Result {
        let now = self.now();
        let result = self.scaler.release(now, &msg.plugin);
        self.flush(ctx);
        result
    }
}

impl Handler<SetAllowanceMsg> for ScalerActor {
    type Result = Result<(), ScalerError>;

    fn handle(&mut self, msg: SetAllowanceMsg, ctx: &mut Context<Self>) -> Self::Result {
        let result = self.scaler.set_allowance(&msg.plugin, msg.best);
        self.flush(ctx);
        result
    }
}

impl Handler<SetProfileMsg> for ScalerActor {
    type Result = Result<(), ScalerError>;

    fn handle(&mut self, msg: SetProfileMsg, ctx: &mut Context<Self>) -> Self::Result {
        let result = self.scaler.set_profile(msg.0);
        self.flush(ctx);
        result
    }
}

impl Handler<SetModeMsg> for ScalerActor {
    type Result = ();

    fn handle(&mut self, msg: SetModeMsg, ctx: &mut Context<Self>) {
        self.scaler.set_mode(msg.0);
        self.flush(ctx);
    }
}

impl Handler<WakeMsg> for ScalerActor {
    type Result = Result<WakeGrant, WakeError>;

    fn handle(&mut self, msg: WakeMsg, ctx: &mut Context<Self>) -> Self::Result {
        let now = self.now();
        let result = self.scaler.wake(now, &msg.0);
        self.flush(ctx);
        result
    }
}

impl Handler<PreflightMsg> for ScalerActor {
    type Result = Result<Preflight, ScalerError>;

    fn handle(&mut self, msg: PreflightMsg, _ctx: &mut Context<Self>) -> Self::Result {
        self.scaler.preflight(&msg.plugin, msg.level)
    }
}

impl Handler<GpuUsageMsg> for ScalerActor {
    type Result = ();

    fn handle(&mut self, msg: GpuUsageMsg, _ctx: &mut Context<Self>) {
        let now = self.observe_time(msg.at);
        self.scaler.handle_gpu_usage(now, &msg.usage);
    }
}

impl Handler<ReadinessMsg> for ScalerActor {
    type Result = MessageResult<ReadinessMsg>;

    fn handle(&mut self, _msg: ReadinessMsg, _ctx: &mut Context<Self>) -> Self::Result {
        let plugins = self
            .scaler
            .plugins()
            .into_iter()
            .map(|p| {
                let check = self.scaler.wake_check(&p.name);
                (p.name, check)
            })
            .collect();
        MessageResult(Readiness {
            assessed_at: self.scaler.assessed_at(),
            plugins,
        })
    }
}

impl Handler<GetThresholdsMsg> for ScalerActor {
    type Result = MessageResult<GetThresholdsMsg>;

    fn handle(&mut self, _msg: GetThresholdsMsg, _ctx: &mut Context<Self>) -> Self::Result {
        MessageResult(self.scaler.thresholds())
    }
}

impl Handler<GetPluginsMsg> for ScalerActor {
    type Result = MessageResult<GetPluginsMsg>;

    fn handle(&mut self, _msg: GetPluginsMsg, _ctx: &mut Context<Self>) -> Self::Result {
        MessageResult(self.scaler.plugins())
    }
}
