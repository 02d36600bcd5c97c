//! Decisions of the scaler, with the inputs and rule behind each: what the decision log records.
//!
//! A [`Decision`] is written for every step the scaler takes or would take (in observe mode it
//! takes none), and for every warning it raises. It carries everything needed to explain it
//! afterwards: the resource and its figures, the thresholds in force, the forecast and its
//! confidence, the rule that fired and whether a command was actually sent. The daemon's
//! telemetry, its control API and `ballast simulate` all speak this one type.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::plugin::Level;
use crate::policy::Thresholds;
use crate::resource::Resource;
use crate::time::Timestamp;

/// How far the scaler may act.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Decide and record, send no command and raise no warning.
    Observe,
    /// Decide and record, send no command, raise a warning for every decision.
    Advise,
    /// Decide, record and send commands; warnings only for soft limits and blocked steps.
    #[default]
    Enforce,
}

impl Mode {
    /// The name used in config files and the API.
    pub const fn as_str(self) -> &'static str {
        match self {
            Mode::Observe => "observe",
            Mode::Advise => "advise",
            Mode::Enforce => "enforce",
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The broad kind of a decision, what summaries count.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DecisionKind {
    /// A step down: a lower level, a disable or a suspend.
    Shed,
    /// A step back up: a higher level, an enable or a resume.
    Restore,
    /// The gentlest step: a lower max-concurrent-calls limit.
    Throttle,
    /// The concurrency limit handed back.
    Unthrottle,
    /// Nothing changes, the operator is told.
    Warn,
    /// An operator pinned or released a plugin, or a pin ran out.
    Override,
    /// A plugin without calls for its `keep_alive` is unloaded; its next call wakes it.
    Unload,
    /// A call woke an idle plugin.
    Wake,
}

impl DecisionKind {
    /// The name used in logs and the API.
    pub const fn as_str(self) -> &'static str {
        match self {
            DecisionKind::Shed => "shed",
            DecisionKind::Restore => "restore",
            DecisionKind::Throttle => "throttle",
            DecisionKind::Unthrottle => "unthrottle",
            DecisionKind::Warn => "warn",
            DecisionKind::Override => "override",
            DecisionKind::Unload => "unload",
            DecisionKind::Wake => "wake",
        }
    }
}

impl fmt::Display for DecisionKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the decision does to its plugin.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Action {
    /// Move the plugin from one level to another.
    SetLevel {
        /// The level before.
        from: Level,
        /// The level after.
        to: Level,
    },
    /// Drain and disable the plugin.
    Disable,
    /// Unload an idle plugin: it is off but not shed, and its next call wakes it.
    Unload {
        /// The end of its last call, as the scaler knew it (the host refuses if one came after).
        idle_since: Timestamp,
    },
    /// Enable the plugin at `level`.
    Enable {
        /// The level it starts at.
        level: Level,
    },
    /// Suspend the plugin.
    Suspend,
    /// Resume a suspended plugin.
    Resume,
    /// Set the plugin's max-concurrent-calls limit; `None` hands back its own default.
    SetConcurrency {
        /// The new limit.
        limit: Option<u32>,
    },
    /// Nothing is changed; the decision is a warning.
    None,
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Action::SetLevel { from, to } => write!(f, "level {from} -> {to}"),
            Action::Disable => f.write_str("disable"),
            Action::Unload { .. } => f.write_str("unload"),
            Action::Enable { level } => write!(f, "enable at level {level}"),
            Action::Suspend => f.write_str("suspend"),
            Action::Resume => f.write_str("resume"),
            Action::SetConcurrency { limit: Some(n) } => write!(f, "concurrency {n}"),
            Action::SetConcurrency { limit: None } => f.write_str("concurrency default"),
            Action::None => f.write_str("none"),
        }
    }
}

/// The rule of the policy that produced a decision.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Rule {
    /// Pressure reached the shed threshold (a hard limit): one step, then a cool-down.
    HighPressure,
    /// Pressure reached the emergency threshold: every non-essential plugin at once.
    Emergency,
    /// Pressure reached a soft limit: warn, and lower concurrency (the gentlest step).
    SoftLimit,
    /// Every resource stayed below its restore threshold for the stabilization period.
    Stabilized,
    /// A restore was due but the plugin's declared needs would not fit under the shed threshold.
    PreflightFailed,
    /// Pressure is high but no plugin is left that the policy may shed.
    NothingToShed,
    /// The plugin's p95 latency exceeded its objective.
    LatencyObjective,
    /// The plugin's failure rate exceeded its limit.
    FailureRate,
    /// An operator pinned the plugin.
    Pinned,
    /// An operator released the plugin's pin.
    Released,
    /// A time-boxed pin ran out.
    PinExpired,
    /// A plugin had no call for its `keep_alive`.
    KeepAlive,
    /// A call woke an idle or on-demand plugin.
    OnDemand,
    /// A lower-priority plugin went down so that a woken one fits.
    MakeRoom,
    /// A woken plugin did not fit, even with room made.
    NoRoom,
}

impl Rule {
    /// The name used in logs and the API.
    pub const fn as_str(self) -> &'static str {
        match self {
            Rule::HighPressure => "high_pressure",
            Rule::Emergency => "emergency",
            Rule::SoftLimit => "soft_limit",
            Rule::Stabilized => "stabilized",
            Rule::PreflightFailed => "preflight_failed",
            Rule::NothingToShed => "nothing_to_shed",
            Rule::LatencyObjective => "latency_objective",
            Rule::FailureRate => "failure_rate",
            Rule::Pinned => "pinned",
            Rule::Released => "released",
            Rule::PinExpired => "pin_expired",
            Rule::KeepAlive => "keep_alive",
            Rule::OnDemand => "on_demand",
            Rule::MakeRoom => "make_room",
            Rule::NoRoom => "no_room",
        }
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The figures of the resource a decision was made for, as the scaler saw them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ResourceFigures {
    /// Which resource.
    pub resource: Resource,
    /// The latest raw utilization.
    pub value: f64,
    /// The smoothed utilization.
    pub smoothed: f64,
    /// The forecast at the horizon, if the predictor had one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forecast: Option<f64>,
    /// The forecast's confidence, if there was a forecast.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub confidence: Option<f64>,
    /// Whether the forecast was confident enough to count.
    pub forecast_used: bool,
    /// The pressure the policy compared: max(smoothed, forecast if used), or the reading itself
    /// when it is over the shed threshold and the smoothed value is past the soft limit.
    pub pressure: f64,
    /// The thresholds in force for the resource.
    pub thresholds: Thresholds,
    /// The soft limit in force for the resource.
    pub soft_limit: f64,
}

/// The figures of a performance signal a decision was made for.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PerformanceFigures {
    /// The plugin's p95 call latency, in microseconds.
    pub latency_p95_us: u64,
    /// The configured p95 objective, in microseconds, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_objective_us: Option<u64>,
    /// The failure rate over the calls since the previous figures.
    pub failure_rate: f64,
    /// The configured failure-rate limit, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_rate_limit: Option<f64>,
}

/// One decision of the scaler, with everything behind it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    /// When it was decided (the input's time, never a clock reading).
    pub at: Timestamp,
    /// Shed, restore, throttle, unthrottle, warn or override.
    pub kind: DecisionKind,
    /// What it does.
    pub action: Action,
    /// The plugin it is about; `None` for a warning about the machine.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plugin: Option<String>,
    /// The rule that fired.
    pub rule: Rule,
    /// The resource behind it, when a resource was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource: Option<ResourceFigures>,
    /// The performance signal behind it, when one was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub performance: Option<PerformanceFigures>,
    /// Whether a command was sent for it (never in observe or advise mode, never for a warning).
    pub applied: bool,
    /// The mode the scaler was in.
    pub mode: Mode,
    /// One sentence for people, e.g. "memory pressure 0.86 reached shed 0.80".
    pub reason: String,
}

impl fmt::Display for Decision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.at, self.kind)?;
        if let Some(plugin) = &self.plugin {
            write!(f, " {plugin}")?;
        }
        if self.action != Action::None {
            write!(f, " ({})", self.action)?;
        }
        write!(f, " [{}]", self.rule)?;
        if !self.applied && self.action != Action::None {
            write!(f, " not applied ({})", self.mode)?;
        }
        write!(f, ": {}", self.reason)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decision_round_trips_through_json_and_leaves_out_empty_parts() {
        let decision = Decision {
            at: Timestamp::from_secs(90),
            kind: DecisionKind::Shed,
            action: Action::SetLevel {
                from: Level(0),
                to: Level(1),
            },
            plugin: Some("voice".into()),
            rule: Rule::HighPressure,
            resource: Some(ResourceFigures {
                resource: Resource::Memory,
                value: 0.9,
                smoothed: 0.86,
                forecast: Some(0.91),
                confidence: Some(0.4),
                forecast_used: false,
                pressure: 0.86,
                thresholds: Thresholds::DEFAULT,
                soft_limit: 0.7,
            }),
            performance: None,
            applied: true,
            mode: Mode::Enforce,
            reason: "memory pressure 0.86 reached shed 0.80".into(),
        };
        let json = serde_json::to_value(&decision).unwrap();
        assert_eq!(json["kind"], "shed");
        assert_eq!(json["action"]["kind"], "set_level");
        assert_eq!(json["rule"], "high_pressure");
        assert!(json.get("performance").is_none());
        let back: Decision = serde_json::from_value(json).unwrap();
        assert_eq!(back, decision);
        assert_eq!(
            decision.to_string(),
            "1970-01-01T00:01:30Z shed voice (level 0 -> 1) [high_pressure]: memory pressure 0.86 reached shed 0.80"
        );
    }
}
