//! The shedding policy as a pure state machine, and the ScalerActor.
//!
//! [`Scaler`] turns the predictor's [`ballast_core::Assessment`]s into shed and restore
//! [`ballast_core::Command`]s, one step at a time and lowest priority first, and records every
//! [`ballast_core::decision::Decision`] with the figures and the rule behind it. It is written in
//! the sans-IO style: time is an argument of every `handle_*` call, outputs are drained with
//! `poll_*`, and [`Scaler::poll_timeout`] says when it wants to be woken. It never reads a clock,
//! never sleeps and never does IO, so the daemon, `ballast simulate` and the property tests run
//! the very same code.
//!
//! The policy, in order of urgency:
//!
//! 1. **Emergency**: a resource at its emergency threshold sheds every non-essential plugin in
//!    one evaluation, pinned ones included, without a cool-down.
//! 2. **Hard limit**: a resource at its shed threshold takes one step on the lowest-priority
//!    plugin that may be touched (a lower level if it has one, else disable, or suspend when
//!    it can be suspended, `prefer_suspend` is set and the resource is one a stopped process
//!    stops using: CPU, CPU and IO pressure, GPU compute), then waits for the cool-down and for
//!    an assessment made after the step, so the next step sees the effect of the previous one.
//!    While the confident forecast, less what the steps taken so far free by the plugins'
//!    declared needs, still reaches the shed threshold, the next step is taken at once: the
//!    forecast already says one step is not enough. For GPU resources, plugins that declare GPU use go first. A stopped process keeps its
//!    memory, so under memory pressure a suspended plugin is disabled before anything that
//!    still serves is touched, and a resume's pre-flight counts no memory.
//! 3. **Soft limit**: between the soft limit and the shed threshold the scaler warns once and
//!    lowers concurrency limits one plugin per cool-down (the gentlest step).
//! 4. **Restore**: after every resource stayed below its restore threshold for the stabilization
//!    period (counted again after every step), one step back up, highest priority first, only if
//!    the pre-flight check finds that the step's declared needs fit under every shed threshold,
//!    now and by the confident forecast over its horizon (else `restore held: ...`). When every
//!    resource's confident forecast, with the step's need and the forecast's recent error added,
//!    stays under the restore threshold, the wait is only `stabilization_floor` (a tenth of the
//!    period by default); a forecast under `min_confidence` changes nothing.
//!    A plugin shed again within its stabilization period after a restore has flapped: its next
//!    stabilization doubles, up to `flap_backoff_max`. That longer wait is the plugin's own
//!    back-off, counted from the start of the calm or its own last step, whichever is later:
//!    while it runs the plugin is passed over and the next one in priority order is restored
//!    (the machine's stabilization still applies to every restore), so a plugin in back-off
//!    never holds the ones behind it. It comes back when its back-off ends; the decision of a
//!    restore that passed it over names it and the time it has left.
//!
//! Pressure is `max(smoothed, forecast)` where the forecast counts only at or above
//! `min_confidence`, and the raw reading itself when it is over the shed threshold while the
//! smoothed value is past the soft limit (a climb under way is shed on this tick; a spike the
//! smoothing keeps under the soft limit is still ignored). Performance figures from the host (p95
//! latency over an objective, failure rate over a limit) take the same step down on that plugin,
//! with that reason. Operator pins hold a plugin on or off, optionally until a time; only an
//! emergency overrides them. A plugin the host disabled on its own (over its hard memory limit, or
//! a process that ended for good) is placed off and restored like one the scaler shed, except that
//! it broke by itself: each such disable within `flap_backoff_max` of its last restore counts as a
//! flap, however long the restore held, so it is not restored into the same breach every
//! stabilization. In observe mode the scaler decides exactly as in enforce mode but sends no
//! command.
//!
//! `ScalerActor` and its messages (the `actor` module) are behind the `actor` feature, on by
//! default. Without it the crate is the policy alone and depends on neither actix nor tokio, for
//! a user that drives [`Scaler`] itself.

#![deny(missing_docs)]

#[cfg(feature = "actor")]
pub mod actor;
pub mod config;
mod error;
mod scaler;

#[cfg(feature = "actor")]
pub use actor::ScalerActor;
pub use config::{ConcurrencyConfig, MachineTotals, PluginPolicy, ScalerConfig, ThresholdsConfig};
pub use error::ScalerError;
pub use scaler::{
    NoRoom, PinTarget, Placement, PluginStatus, Preflight, PreflightResource, PreflightStep,
    Scaler, WakeError, WakeGrant,
};

pub use ballast_core::decision::{Action, Decision, DecisionKind, Mode, Rule};
