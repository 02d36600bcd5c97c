//! The supervision detectors of one running process, as a sans-IO state machine: feed it what
//! the process does (`output`, `heartbeat`, `progress`, `usage`) with the time, call `tick` at
//! [`Detectors::poll_timeout`], and drain [`Detectors::poll_alert`].
//!
//! * **stalled**: no output and no heartbeat for the stall threshold; **active** when output
//!   resumes.
//! * **busy_stall**: silent for the stall threshold while using at least `busy_cpu` cores the
//!   whole time: a likely infinite loop.
//! * **stuck**: the reported progress (phase, percent) has not advanced for the stuck threshold;
//!   **active** when it does.
//! * **leak_suspected**: memory grew steadily over the leak window (see [`crate::leak`]).
//! * **memory_soft_limit** (a warning, again after memory fell below 90% of it) and
//!   **memory_hard_limit** (the host sheds the plugin).
//!
//! Time spent suspended (SIGSTOP) counts for none of them.

use std::collections::{BTreeSet, VecDeque};
use std::time::Duration;

use ballast_core::{PluginAlert, Timestamp};

use crate::leak::{LeakConfig, LeakDetector};

/// The detectors' settings.
#[derive(Clone, Debug, PartialEq)]
pub struct DetectorConfig {
    /// Silence (no output, no heartbeat) that counts as a stall; `None` disables it.
    pub stall_threshold: Option<Duration>,
    /// CPU, in cores, that makes a silent process a busy stall.
    pub busy_cpu: f64,
    /// Progress that does not advance for this long is stuck; `None` disables it.
    pub stuck_threshold: Option<Duration>,
    /// Memory that raises a warning, in bytes.
    pub memory_soft_limit: Option<u64>,
    /// Memory at which the plugin is shed, in bytes.
    pub memory_hard_limit: Option<u64>,
    /// Leak detection.
    pub leak: LeakConfig,
}

impl Default for DetectorConfig {
    fn default() -> Self {
        DetectorConfig {
            stall_threshold: Some(Duration::from_secs(30)),
            busy_cpu: 0.9,
            stuck_threshold: Some(Duration::from_secs(600)),
            memory_soft_limit: None,
            memory_hard_limit: None,
            leak: LeakConfig::default(),
        }
    }
}

/// Progress as last reported.
#[derive(Clone, Debug, PartialEq)]
pub struct Progress {
    /// Percent done.
    pub percent: Option<f64>,
    /// The phase.
    pub phase: Option<String>,
    /// When it last advanced.
    pub since: Timestamp,
}

impl Progress {
    fn describe(&self) -> String {
        let phase = self
            .phase
            .as_deref()
            .map_or_else(|| "progress".to_owned(), |p| format!("phase `{p}`"));
        match self.percent {
            Some(p) => format!("{phase} at {p:.0}%"),
            None => phase,
        }
    }
}

/// The detectors of one running process.
#[derive(Clone, Debug)]
pub struct Detectors {
    config: DetectorConfig,
    /// Last output, heartbeat or progress (or the start).
    last_activity: Timestamp,
    /// Since when every usage reading showed at least `busy_cpu` cores.
    busy_since: Option<Timestamp>,
    /// The latest CPU reading.
    cpu_cores: f64,
    progress: Option<Progress>,
    suspended_at: Option<Timestamp>,
    conditions: BTreeSet<PluginAlert>,
    leak: LeakDetector,
    /// Memory fell below 90% of the soft limit since the last warning.
    soft_armed: bool,
    alerts: VecDeque<(PluginAlert, String)>,
    now: Timestamp,
}

impl Detectors {
    /// Detectors for a process started at `now`.
    pub fn new(config: DetectorConfig, now: Timestamp) -> Detectors {
        Detectors {
            leak: LeakDetector::new(config.leak.clone()),
            config,
            last_activity: now,
            busy_since: None,
            cpu_cores: 0.0,
            progress: None,
            suspended_at: None,
            conditions: BTreeSet::new(),
            soft_armed: true,
            alerts: VecDeque::new(),
            now,
        }
    }

    fn advance(&mut self, now: Timestamp) -> Timestamp {
        self.now = self.now.max(now);
        self.now
    }

    /// The conditions that hold now: stalled, busy_stall, stuck, leak_suspected,
    /// memory_soft_limit, memory_hard_limit.
    pub fn conditions(&self) -> Vec<PluginAlert> {
        self.conditions.iter().copied().collect()
    }

    /// The latest progress, if any is being tracked.
    pub fn progress(&self) -> Option<&Progress> {
        self.progress.as_ref()
    }

    /// The process wrote a line (stdout or stderr).
    pub fn output(&mut self, now: Timestamp) {
        let now = self.advance(now);
        self.activity(now, "output");
    }

    /// The process sent a heartbeat.
    pub fn heartbeat(&mut self, now: Timestamp) {
        let now = self.advance(now);
        self.activity(now, "a heartbeat");
    }

    fn activity(&mut self, now: Timestamp, what: &str) {
        let silent = now - self.last_activity;
        self.last_activity = now;
        let was_stalled = self.conditions.remove(&PluginAlert::Stalled);
        let was_busy = self.conditions.remove(&PluginAlert::BusyStall);
        if was_stalled || was_busy {
            self.alerts.push_back((
                PluginAlert::Active,
                format!(
                    "{what} again after {} of silence",
                    humantime::format_duration(Duration::from_secs(silent.as_secs()))
                ),
            ));
        }
    }

    /// The process reported progress (which also counts as a heartbeat).
    pub fn progress_report(&mut self, now: Timestamp, percent: Option<f64>, phase: Option<String>) {
        let now = self.advance(now);
        self.activity(now, "progress");
        let done = percent.is_some_and(|p| p >= 100.0) || phase.is_none() && percent.is_none();
        let advanced = match &self.progress {
            None => true,
            Some(p) => p.phase != phase || p.percent != percent,
        };
        if done {
            self.progress = None;
        } else if advanced {
            self.progress = Some(Progress {
                percent,
                phase,
                since: now,
            });
        }
        if (done || advanced) && self.conditions.remove(&PluginAlert::Stuck) {
            let what = self
                .progress
                .as_ref()
                .map_or_else(|| "the task finished".to_owned(), Progress::describe);
            self.alerts
                .push_back((PluginAlert::Active, format!("progress advanced: {what}")));
        }
    }

    /// A reading of the process tree: resident memory and CPU in cores (`None` on the first
    /// reading, before there is a delta).
    pub fn usage(&mut self, now: Timestamp, memory_bytes: u64, cpu_cores: Option<f64>) {
        let now = self.advance(now);
        if self.suspended_at.is_some() {
            return;
        }
        if let Some(cpu) = cpu_cores {
            self.cpu_cores = cpu;
            if cpu >= self.config.busy_cpu {
                self.busy_since.get_or_insert(now);
            } else {
                self.busy_since = None;
            }
        }
        if let Some(finding) = self.leak.sample(now, memory_bytes) {
            self.conditions.insert(PluginAlert::LeakSuspected);
            self.alerts
                .push_back((PluginAlert::LeakSuspected, finding.describe()));
        } else if !self.leak.flagged() {
            self.conditions.remove(&PluginAlert::LeakSuspected);
        }
        let mib = |b: u64| b as f64 / 1048576.0;
        if let Some(hard) = self.config.memory_hard_limit {
            if memory_bytes >= hard {
                if self.conditions.insert(PluginAlert::MemoryHardLimit) {
                    self.alerts.push_back((
                        PluginAlert::MemoryHardLimit,
                        format!(
                            "memory {:.1} MiB reached its hard limit {:.1} MiB",
                            mib(memory_bytes),
                            mib(hard)
                        ),
                    ));
                }
            } else {
                self.conditions.remove(&PluginAlert::MemoryHardLimit);
            }
        }
        if let Some(soft) = self.config.memory_soft_limit {
            if memory_bytes >= soft {
                self.conditions.insert(PluginAlert::MemorySoftLimit);
                if self.soft_armed {
                    self.soft_armed = false;
                    self.alerts.push_back((
                        PluginAlert::MemorySoftLimit,
                        format!(
                            "memory {:.1} MiB reached its soft limit {:.1} MiB",
                            mib(memory_bytes),
                            mib(soft)
                        ),
                    ));
                }
            } else {
                self.conditions.remove(&PluginAlert::MemorySoftLimit);
                if (memory_bytes as f64) < soft as f64 * 0.9 {
                    self.soft_armed = true;
                }
            }
        }
        self.evaluate(now);
    }

    /// The process was stopped (SIGSTOP): the timers stop too.
    pub fn suspend(&mut self, now: Timestamp) {
        let now = self.advance(now);
        self.suspended_at.get_or_insert(now);
        self.busy_since = None;
    }

    /// The process was continued (SIGCONT): the timers go on, the suspended time not counted.
    pub fn resume(&mut self, now: Timestamp) {
        let now = self.advance(now);
        if let Some(at) = self.suspended_at.take() {
            let paused = now - at;
            self.last_activity = self.last_activity + paused;
            if let Some(p) = &mut self.progress {
                p.since = p.since + paused;
            }
        }
    }

    /// The time has come (see [`Detectors::poll_timeout`]).
    pub fn tick(&mut self, now: Timestamp) {
        let now = self.advance(now);
        self.evaluate(now);
    }

    fn evaluate(&mut self, now: Timestamp) {
        if self.suspended_at.is_some() {
            return;
        }
        if let Some(threshold) = self.config.stall_threshold {
            let silent = now - self.last_activity;
            if silent >= threshold {
                if self.conditions.insert(PluginAlert::Stalled) {
                    self.alerts.push_back((
                        PluginAlert::Stalled,
                        format!(
                            "no output and no heartbeat for {}",
                            humantime::format_duration(Duration::from_secs(silent.as_secs()))
                        ),
                    ));
                }
                let busy_throughout = self
                    .busy_since
                    .is_some_and(|since| now - since >= threshold);
                if busy_throughout && self.conditions.insert(PluginAlert::BusyStall) {
                    self.alerts.push_back((
                        PluginAlert::BusyStall,
                        format!(
                            "using {:.2} cores with no output for {}: a likely infinite loop",
                            self.cpu_cores,
                            humantime::format_duration(Duration::from_secs(silent.as_secs()))
                        ),
                    ));
                }
            }
        }
        if let (Some(threshold), Some(progress)) = (self.config.stuck_threshold, &self.progress) {
            let still = now - progress.since;
            if still >= threshold && self.conditions.insert(PluginAlert::Stuck) {
                let message = format!(
                    "{} has not advanced for {}",
                    progress.describe(),
                    humantime::format_duration(Duration::from_secs(still.as_secs()))
                );
                self.alerts.push_back((PluginAlert::Stuck, message));
            }
        }
    }

    /// The next alert and its message.
    pub fn poll_alert(&mut self) -> Option<(PluginAlert, String)> {
        self.alerts.pop_front()
    }

    /// When [`Detectors::tick`] should be called next, if a timer is running.
    pub fn poll_timeout(&self) -> Option<Timestamp> {
        if self.suspended_at.is_some() {
            return None;
        }
        let stall = self
            .config
            .stall_threshold
            .filter(|_| !self.conditions.contains(&PluginAlert::Stalled))
            .map(|t| self.last_activity + t);
        let stuck = match (self.config.stuck_threshold, &self.progress) {
            (Some(t), Some(p)) if !self.conditions.contains(&PluginAlert::Stuck) => {
                Some(p.since + t)
            }
            _ => None,
        };
        match (stall, stuck) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: u64) -> Timestamp {
        Timestamp::from_secs(1_000 + s)
    }

    fn config() -> DetectorConfig {
        DetectorConfig {
            stall_threshold: Some(Duration::from_secs(30)),
            stuck_threshold: Some(Duration::from_secs(120)),
            ..DetectorConfig::default()
        }
    }

    fn alerts(d: &mut Detectors) -> Vec<(PluginAlert, String)> {
        std::iter::from_fn(|| d.poll_alert()).collect()
    }

    #[test]
    fn silence_for_the_threshold_is_a_stall_and_output_makes_it_active() {
        let mut d = Detectors::new(config(), secs(0));
        d.output(secs(10));
        assert_eq!(d.poll_timeout(), Some(secs(40)));
        d.tick(secs(39));
        assert!(alerts(&mut d).is_empty());
        d.tick(secs(40));
        assert_eq!(
            alerts(&mut d),
            [(
                PluginAlert::Stalled,
                "no output and no heartbeat for 30s".to_owned()
            )]
        );
        assert_eq!(d.conditions(), [PluginAlert::Stalled]);
        d.tick(secs(80));
        assert!(alerts(&mut d).is_empty(), "raised once");
        d.heartbeat(secs(95));
        assert_eq!(
            alerts(&mut d),
            [(
                PluginAlert::Active,
                "a heartbeat again after 1m 25s of silence".to_owned()
            )]
        );
        assert!(d.conditions().is_empty());
    }

    #[test]
    fn a_silent_process_burning_cpu_is_a_busy_stall() {
        let mut d = Detectors::new(config(), secs(0));
        for s in (2..=30).step_by(2) {
            d.usage(secs(s), 10 << 20, Some(1.0));
        }
        let raised: Vec<PluginAlert> = alerts(&mut d).into_iter().map(|(a, _)| a).collect();
        assert_eq!(raised, [PluginAlert::Stalled]);
        d.usage(secs(32), 10 << 20, Some(1.0));
        let (alert, message) = alerts(&mut d).pop().unwrap();
        assert_eq!(alert, PluginAlert::BusyStall);
        assert!(
            message.starts_with("using 1.00 cores with no output for 32s"),
            "{message}"
        );
    }

    #[test]
    fn an_idle_silent_process_is_stalled_but_not_busy() {
        let mut d = Detectors::new(config(), secs(0));
        for s in (2..=60).step_by(2) {
            d.usage(secs(s), 10 << 20, Some(0.01));
        }
        let raised: Vec<PluginAlert> = alerts(&mut d).into_iter().map(|(a, _)| a).collect();
        assert_eq!(raised, [PluginAlert::Stalled]);
    }

    #[test]
    fn progress_that_does_not_advance_is_stuck_until_it_moves() {
        let mut d = Detectors::new(config(), secs(0));
        d.progress_report(secs(0), Some(10.0), Some("indexing".into()));
        for s in (10..=200).step_by(10) {
            d.heartbeat(secs(s));
            d.progress_report(secs(s), Some(40.0), Some("indexing".into()));
            d.tick(secs(s));
        }
        // 40% was first reported at 10s; stuck from 130s.
        let stuck: Vec<_> = alerts(&mut d);
        assert_eq!(stuck.len(), 1, "{stuck:?}");
        assert_eq!(
            stuck[0],
            (
                PluginAlert::Stuck,
                "phase `indexing` at 40% has not advanced for 2m".to_owned()
            )
        );
        d.progress_report(secs(210), Some(41.0), Some("indexing".into()));
        assert_eq!(
            alerts(&mut d),
            [(
                PluginAlert::Active,
                "progress advanced: phase `indexing` at 41%".to_owned()
            )]
        );
        d.progress_report(secs(220), Some(100.0), Some("indexing".into()));
        assert_eq!(d.progress(), None);
        d.tick(secs(1000));
        assert!(alerts(&mut d).iter().all(|(a, _)| *a != PluginAlert::Stuck));
    }

    #[test]
    fn memory_limits_warn_once_per_excursion_and_the_hard_limit_is_raised() {
        let mut d = Detectors::new(
            DetectorConfig {
                memory_soft_limit: Some(100 << 20),
                memory_hard_limit: Some(200 << 20),
                stall_threshold: None,
                ..config()
            },
            secs(0),
        );
        d.usage(secs(1), 120 << 20, None);
        d.usage(secs(2), 95 << 20, None); // below the limit, above 90%: not re-armed
        d.usage(secs(3), 120 << 20, None);
        let raised: Vec<PluginAlert> = alerts(&mut d).into_iter().map(|(a, _)| a).collect();
        assert_eq!(raised, [PluginAlert::MemorySoftLimit]);
        d.usage(secs(4), 50 << 20, None);
        d.usage(secs(5), 250 << 20, None);
        let raised: Vec<(PluginAlert, String)> = alerts(&mut d);
        assert_eq!(raised.len(), 2, "{raised:?}");
        assert_eq!(
            raised[0],
            (
                PluginAlert::MemoryHardLimit,
                "memory 250.0 MiB reached its hard limit 200.0 MiB".to_owned()
            )
        );
        assert_eq!(raised[1].0, PluginAlert::MemorySoftLimit);
    }

    #[test]
    fn time_suspended_does_not_count_as_silence() {
        let mut d = Detectors::new(config(), secs(0));
        d.output(secs(20));
        d.suspend(secs(25));
        assert_eq!(d.poll_timeout(), None);
        d.tick(secs(500));
        d.resume(secs(500));
        // 5 s of silence before the stop, so 25 s more after it.
        assert_eq!(d.poll_timeout(), Some(secs(525)));
        d.tick(secs(524));
        assert!(alerts(&mut d).is_empty());
        d.tick(secs(525));
        assert_eq!(alerts(&mut d)[0].0, PluginAlert::Stalled);
    }

    #[test]
    fn a_disabled_stall_threshold_never_fires() {
        let mut d = Detectors::new(
            DetectorConfig {
                stall_threshold: None,
                ..config()
            },
            secs(0),
        );
        assert_eq!(d.poll_timeout(), None);
        d.tick(secs(100_000));
        assert!(alerts(&mut d).is_empty());
    }
}
