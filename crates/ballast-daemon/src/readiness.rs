//! Readiness, for load balancers and probes: whether the daemon has made its first decisions,
//! and whether a plugin takes calls now. One pure function of the host's status of a plugin and
//! what the scaler says a call would meet, shared by `GET /plugins/{name}/ready` and the
//! `ballast_plugin_ready` metric, so that the two never disagree.
//!
//! A plugin is ready while it is enabled (at any level: a cheaper level still answers), and
//! while it is idle and a call would wake it (an on-demand plugin, or one unloaded after its
//! `keep_alive`, that fits, perhaps with room made by priority): taking it out of a load
//! balancer would keep it idle forever. It is not ready while it is draining, disabled (shed for
//! pressure, or pinned off), suspended, restarting, failed or only loaded, nor while it is idle
//! and a call would be refused (no room even with room made, observe mode, not allowed on this
//! hardware). No plugin is ready before the daemon is.

use ballast_core::{Level, PluginState, Timestamp};
use ballast_host::CallError;
use ballast_scaler::WakeError;

/// Why a plugin is not ready: the call path's refusal, as the call path would answer it.
#[derive(Clone, Debug, PartialEq)]
pub enum NotReady {
    /// The daemon has not made its first decisions yet.
    Starting,
    /// A call would get the degraded answer (shed, suspended, failed, ...).
    Degraded(CallError),
    /// It is idle and would not fit even with room made.
    NoRoom(ballast_scaler::NoRoom),
}

/// A plugin that takes calls now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ready {
    /// Its lifecycle state: `enabled`, or `idle` when a call would wake it.
    pub state: &'static str,
    /// The level it runs at, or would be woken at.
    pub level: Level,
    /// Since when it has been in that state.
    pub since: Timestamp,
}

/// What the host says of a plugin: the part of its status readiness depends on.
#[derive(Clone, Copy, Debug)]
pub struct HostView<'a> {
    /// The plugin.
    pub name: &'a str,
    /// Its lifecycle state.
    pub state: &'a PluginState,
    /// Since when.
    pub since: Timestamp,
    /// Why it entered that state.
    pub reason: &'a str,
}

impl<'a> From<&'a ballast_host::PluginStatus> for HostView<'a> {
    fn from(status: &'a ballast_host::PluginStatus) -> HostView<'a> {
        HostView {
            name: &status.name,
            state: &status.state,
            since: status.since,
            reason: &status.reason,
        }
    }
}

/// Whether `status`'s plugin is ready: `assessed_at` is when the scaler took in its latest
/// assessment (`None` before its first decisions), `wake` what the scaler says a call to the
/// plugin would meet (asked for idle plugins; `None` when the scaler did not answer).
pub fn plugin(
    status: HostView<'_>,
    assessed_at: Option<Timestamp>,
    wake: Option<&Result<Level, WakeError>>,
) -> Result<Ready, NotReady> {
    if assessed_at.is_none() {
        return Err(NotReady::Starting);
    }
    let degraded = |reason: &str| {
        NotReady::Degraded(CallError::Degraded {
            plugin: status.name.to_owned(),
            state: status.state.name().to_owned(),
            reason: if reason.is_empty() {
                "not enabled".to_owned()
            } else {
                reason.to_owned()
            },
            since: status.since,
        })
    };
    match status.state {
        PluginState::Enabled { level } => Ok(Ready {
            state: "enabled",
            level: *level,
            since: status.since,
        }),
        PluginState::Idle => match wake {
            Some(Ok(level)) => Ok(Ready {
                state: "idle",
                level: *level,
                since: status.since,
            }),
            Some(Err(WakeError::NoRoom(no_room))) => Err(NotReady::NoRoom(no_room.clone())),
            Some(Err(WakeError::NotIdle { why, .. })) => Err(degraded(&format!(
                "idle, and a call would not wake it: {why}"
            ))),
            Some(Err(WakeError::UnknownPlugin(_))) | None => Err(degraded(
                "idle, and the scaler did not say whether a call would wake it",
            )),
        },
        _ => Err(degraded(status.reason)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status<'a>(state: &'a PluginState, reason: &'a str) -> HostView<'a> {
        HostView {
            name: "voice",
            state,
            since: Timestamp::from_secs(100),
            reason,
        }
    }

    const ASSESSED: Option<Timestamp> = Some(Timestamp::from_secs(101));

    #[test]
    fn enabled_at_any_level_is_ready() {
        for level in [0, 1] {
            let ready = plugin(
                status(
                    &PluginState::Enabled {
                        level: Level(level),
                    },
                    "start-up",
                ),
                ASSESSED,
                None,
            )
            .unwrap();
            assert_eq!(ready.state, "enabled");
            assert_eq!(ready.level, Level(level));
            assert_eq!(ready.since, Timestamp::from_secs(100));
        }
    }

    #[test]
    fn nothing_is_ready_before_the_first_decisions() {
        let answer = plugin(
            status(&PluginState::Enabled { level: Level(0) }, "start-up"),
            None,
            None,
        );
        assert_eq!(answer, Err(NotReady::Starting));
    }

    #[test]
    fn every_state_that_refuses_calls_is_not_ready_with_the_call_paths_reason() {
        for (state, reason) in [
            (
                PluginState::Disabled,
                "memory pressure 0.91 reached shed 0.80",
            ),
            (
                PluginState::Draining,
                "memory pressure 0.91 reached shed 0.80",
            ),
            (
                PluginState::Suspended,
                "operator suspended it through the API",
            ),
            (PluginState::Restarting, "its process exited with status 1"),
            (
                PluginState::Failed {
                    reason: "create failed".into(),
                },
                "create failed",
            ),
            (PluginState::Loaded, ""),
        ] {
            let name = state.name();
            let Err(NotReady::Degraded(CallError::Degraded {
                plugin: p,
                state: s,
                reason: r,
                since,
            })) = plugin(status(&state, reason), ASSESSED, None)
            else {
                panic!("{name} is ready");
            };
            assert_eq!(p, "voice");
            assert_eq!(s, name);
            assert_eq!(
                r,
                if reason.is_empty() {
                    "not enabled"
                } else {
                    reason
                }
            );
            assert_eq!(since, Timestamp::from_secs(100));
        }
    }

    #[test]
    fn idle_is_ready_when_a_call_would_wake_it_and_not_otherwise() {
        let idle = status(&PluginState::Idle, "on-demand: loaded at its first call");
        let ready = plugin(idle, ASSESSED, Some(&Ok(Level(1)))).unwrap();
        assert_eq!(ready.state, "idle");
        assert_eq!(ready.level, Level(1));

        let no_room = ballast_scaler::NoRoom {
            plugin: "voice".into(),
            level: Level(0),
            resource: ballast_core::Resource::GpuMemory,
            need: 0.3,
            free: 0.1,
            held_below: 0.0,
            machine: Default::default(),
        };
        assert_eq!(
            plugin(
                idle,
                ASSESSED,
                Some(&Err(WakeError::NoRoom(no_room.clone())))
            ),
            Err(NotReady::NoRoom(no_room))
        );

        let observe = WakeError::NotIdle {
            plugin: "voice".into(),
            why: "ballast is in observe mode and loads nothing".into(),
        };
        let Err(NotReady::Degraded(CallError::Degraded { reason, state, .. })) =
            plugin(idle, ASSESSED, Some(&Err(observe)))
        else {
            panic!("an idle plugin that would not be woken is ready");
        };
        assert_eq!(state, "idle");
        assert_eq!(
            reason,
            "idle, and a call would not wake it: ballast is in observe mode and loads nothing"
        );
        assert!(matches!(
            plugin(idle, ASSESSED, None),
            Err(NotReady::Degraded(_))
        ));
    }
}
