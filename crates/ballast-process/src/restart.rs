//! The restart policy as a sans-IO state machine: after an unexpected exit, restart after an
//! exponentially growing back-off, and give up (the plugin is marked failed) after `burst`
//! exits within `window`, like systemd's `Restart=`, `RestartSec=` and `StartLimitBurst=`.

use std::time::Duration;

use ballast_core::Timestamp;
use serde::{Deserialize, Serialize};

use crate::exit::Exit;

/// When the host restarts a process that exited on its own.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RestartMode {
    /// After any exit, clean or not.
    Always,
    /// After an exit with a non-zero status or a signal (the default).
    #[default]
    OnFailure,
    /// Never: the plugin is disabled (clean exit) or failed.
    Never,
}

/// The restart policy of a process plugin (`restart = { ... }` in its config).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RestartPolicy {
    /// always, on-failure or never.
    pub mode: RestartMode,
    /// The wait before the first restart; it doubles with each exit in a row.
    #[serde(with = "humantime_serde")]
    pub backoff: Duration,
    /// The longest wait between restarts.
    #[serde(with = "humantime_serde")]
    pub backoff_max: Duration,
    /// Give up after this many exits within `window` (systemd's StartLimitBurst).
    pub burst: u32,
    /// The window `burst` counts exits in (systemd's StartLimitIntervalSec).
    #[serde(with = "humantime_serde")]
    pub window: Duration,
    /// A process that ran this long before it exited starts the back-off again from `backoff`.
    #[serde(with = "humantime_serde")]
    pub reset_after: Duration,
}

impl Default for RestartPolicy {
    fn default() -> Self {
        RestartPolicy {
            mode: RestartMode::OnFailure,
            backoff: Duration::from_millis(500),
            backoff_max: Duration::from_secs(30),
            burst: 5,
            window: Duration::from_secs(60),
            reset_after: Duration::from_secs(60),
        }
    }
}

impl RestartPolicy {
    /// Every problem with the policy, each naming the field under `prefix`.
    pub fn problems(&self, prefix: &str) -> Vec<String> {
        let mut problems = Vec::new();
        if self.backoff.is_zero() {
            problems.push(format!("{prefix}.backoff must be positive"));
        }
        if self.backoff_max < self.backoff {
            problems.push(format!(
                "{prefix}.backoff_max ({}) must be at least backoff ({})",
                humantime::format_duration(self.backoff_max),
                humantime::format_duration(self.backoff)
            ));
        }
        if self.burst == 0 {
            problems.push(format!("{prefix}.burst must be at least 1"));
        }
        if self.window.is_zero() {
            problems.push(format!("{prefix}.window must be positive"));
        }
        problems
    }
}

/// What to do after an exit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RestartDecision {
    /// Start it again at `at` (after `delay`); this is restart number `attempt` in a row.
    Restart {
        /// When.
        at: Timestamp,
        /// The back-off waited.
        delay: Duration,
        /// Exits in a row so far (1 for the first).
        attempt: u32,
    },
    /// Stop trying: the plugin is failed. The reason names the exits and the limit.
    GiveUp {
        /// Why, with the last exit in it.
        reason: String,
    },
    /// The policy does not restart after this exit (a clean exit under `on-failure`, or
    /// `never`): the plugin stops.
    Stop {
        /// Why, with the exit in it.
        reason: String,
    },
}

/// Counts exits and computes back-offs for one plugin across its restarts.
#[derive(Clone, Debug)]
pub struct RestartTracker {
    policy: RestartPolicy,
    /// When each recent exit happened, oldest first (only those inside the window are kept).
    exits: Vec<Timestamp>,
    /// Exits in a row, for the back-off (reset by a long enough run).
    consecutive: u32,
    started_at: Option<Timestamp>,
}

impl RestartTracker {
    /// A tracker for `policy`.
    pub fn new(policy: RestartPolicy) -> RestartTracker {
        RestartTracker {
            policy,
            exits: Vec::new(),
            consecutive: 0,
            started_at: None,
        }
    }

    /// The policy.
    pub fn policy(&self) -> &RestartPolicy {
        &self.policy
    }

    /// The process (re)started at `now`.
    pub fn started(&mut self, now: Timestamp) {
        self.started_at = Some(now);
    }

    /// Forgets the exit history (an operator enabled the plugin again).
    pub fn reset(&mut self) {
        self.exits.clear();
        self.consecutive = 0;
    }

    /// The process exited on its own at `now` (`why` says how, e.g. "exited with status 3" or
    /// "stalled for 30s"); decides whether and when to restart it.
    pub fn exited(&mut self, now: Timestamp, exit: Option<Exit>, why: &str) -> RestartDecision {
        let restart = match (self.policy.mode, exit) {
            (RestartMode::Never, _) => false,
            (RestartMode::OnFailure, Some(e)) => !e.success(),
            // An exit the host caused (a stall restart) is always a failure.
            (RestartMode::OnFailure, None) | (RestartMode::Always, _) => true,
        };
        if !restart {
            return RestartDecision::Stop {
                reason: format!("{why}; its restart policy is {}", self.mode_name()),
            };
        }
        let ran = self
            .started_at
            .take()
            .map_or(Duration::ZERO, |started| now - started);
        if ran >= self.policy.reset_after {
            self.consecutive = 0;
        }
        self.consecutive = self.consecutive.saturating_add(1);
        let window_start = now.saturating_sub(self.policy.window);
        self.exits.retain(|t| *t > window_start);
        self.exits.push(now);
        let count = u32::try_from(self.exits.len()).unwrap_or(u32::MAX);
        if count >= self.policy.burst {
            return RestartDecision::GiveUp {
                reason: format!(
                    "{why}; {count} exits within {} reached its start limit ({} per {}), so it is not restarted again",
                    humantime::format_duration(self.policy.window),
                    self.policy.burst,
                    humantime::format_duration(self.policy.window)
                ),
            };
        }
        let delay = self.delay(self.consecutive);
        RestartDecision::Restart {
            at: now + delay,
            delay,
            attempt: self.consecutive,
        }
    }

    /// The back-off before restart number `attempt` in a row: `backoff * 2^(attempt-1)`,
    /// capped at `backoff_max`.
    pub fn delay(&self, attempt: u32) -> Duration {
        let doublings = attempt.saturating_sub(1).min(31);
        self.policy
            .backoff
            .saturating_mul(1u32 << doublings)
            .min(self.policy.backoff_max)
    }

    fn mode_name(&self) -> &'static str {
        match self.policy.mode {
            RestartMode::Always => "always",
            RestartMode::OnFailure => "on-failure",
            RestartMode::Never => "never",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RestartPolicy {
        RestartPolicy {
            backoff: Duration::from_secs(1),
            backoff_max: Duration::from_secs(8),
            burst: 5,
            window: Duration::from_secs(60),
            reset_after: Duration::from_secs(30),
            ..RestartPolicy::default()
        }
    }

    const CRASH: Option<Exit> = Some(Exit::Signal {
        signal: 11,
        core_dumped: false,
    });

    #[test]
    fn crashes_back_off_exponentially_then_give_up_at_the_start_limit() {
        let mut tracker = RestartTracker::new(policy());
        let mut now = Timestamp::from_secs(1000);
        tracker.started(now);
        let mut delays = Vec::new();
        for _ in 0..4 {
            now = now + Duration::from_secs(2);
            match tracker.exited(now, CRASH, "killed by signal 11 (SIGSEGV)") {
                RestartDecision::Restart { at, delay, .. } => {
                    delays.push(delay.as_secs());
                    now = at;
                    tracker.started(now);
                }
                other => panic!("expected a restart, got {other:?}"),
            }
        }
        assert_eq!(delays, [1, 2, 4, 8]);
        now = now + Duration::from_secs(1);
        match tracker.exited(now, CRASH, "killed by signal 11 (SIGSEGV)") {
            RestartDecision::GiveUp { reason } => {
                assert!(
                    reason.starts_with("killed by signal 11 (SIGSEGV); 5 exits within 1m"),
                    "{reason}"
                );
                assert!(reason.contains("start limit (5 per 1m)"), "{reason}");
            }
            other => panic!("expected to give up, got {other:?}"),
        }
    }

    #[test]
    fn the_back_off_is_capped_and_a_long_run_resets_it() {
        let mut tracker = RestartTracker::new(RestartPolicy {
            burst: 100,
            ..policy()
        });
        let mut now = Timestamp::from_secs(0);
        for _ in 0..6 {
            tracker.started(now);
            now = now + Duration::from_secs(1);
            let _ = tracker.exited(now, CRASH, "crash");
        }
        assert_eq!(tracker.delay(6), Duration::from_secs(8));
        tracker.started(now);
        now = now + Duration::from_secs(31);
        match tracker.exited(now, CRASH, "crash") {
            RestartDecision::Restart { delay, attempt, .. } => {
                assert_eq!((delay, attempt), (Duration::from_secs(1), 1));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn exits_outside_the_window_do_not_count() {
        let mut tracker = RestartTracker::new(RestartPolicy {
            burst: 2,
            ..policy()
        });
        let t0 = Timestamp::from_secs(0);
        tracker.started(t0);
        assert!(matches!(
            tracker.exited(t0 + Duration::from_secs(1), CRASH, "crash"),
            RestartDecision::Restart { .. }
        ));
        tracker.started(t0 + Duration::from_secs(2));
        assert!(matches!(
            tracker.exited(t0 + Duration::from_secs(70), CRASH, "crash"),
            RestartDecision::Restart { .. }
        ));
    }

    #[test]
    fn a_clean_exit_stops_under_on_failure_but_restarts_under_always() {
        let clean = Some(Exit::Status { code: 0 });
        let mut tracker = RestartTracker::new(policy());
        match tracker.exited(Timestamp::from_secs(5), clean, "exited with status 0") {
            RestartDecision::Stop { reason } => {
                assert_eq!(
                    reason,
                    "exited with status 0; its restart policy is on-failure"
                )
            }
            other => panic!("{other:?}"),
        }
        let mut always = RestartTracker::new(RestartPolicy {
            mode: RestartMode::Always,
            ..policy()
        });
        assert!(matches!(
            always.exited(Timestamp::from_secs(5), clean, "exited with status 0"),
            RestartDecision::Restart { .. }
        ));
        let mut never = RestartTracker::new(RestartPolicy {
            mode: RestartMode::Never,
            ..policy()
        });
        assert!(matches!(
            never.exited(Timestamp::from_secs(5), CRASH, "crash"),
            RestartDecision::Stop { .. }
        ));
    }

    #[test]
    fn bad_policies_are_named() {
        let bad = RestartPolicy {
            backoff: Duration::ZERO,
            burst: 0,
            ..RestartPolicy::default()
        };
        let problems = bad.problems("plugin `x`: restart");
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems[0].starts_with("plugin `x`: restart.backoff"));
    }
}
