//! When a running plugin's checkpoint is due: every `checkpoint_interval`, and once when memory
//! stalls. A pure schedule that takes `now` and never reads a clock; the daemon's shell asks it
//! what is due, takes the checkpoints on the plugins' lifecycle threads and stores them.

use std::collections::BTreeMap;
use std::time::Duration;

use ballast_core::Timestamp;

/// The shortest `checkpoint_interval` a plugin may ask for.
pub const MIN_INTERVAL: Duration = Duration::from_secs(1);

/// A stall asks for a checkpoint only of plugins whose last one (or whose start) is at least
/// this old: a plugin checkpointed a moment ago has little to lose, and a stall that lasts
/// does not checkpoint the same plugin over and over.
pub const STALL_SPACING: Duration = Duration::from_secs(30);

/// Why a checkpoint is due.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CheckpointWhy {
    /// Its `checkpoint_interval` has passed since the last one (or since it started).
    Periodic,
    /// Memory stalled (the pressure trigger fired, or the scaler declared an emergency).
    Stall,
}

impl CheckpointWhy {
    /// How the logs name it.
    pub fn as_str(self) -> &'static str {
        match self {
            CheckpointWhy::Periodic => "periodic",
            CheckpointWhy::Stall => "memory stall",
        }
    }
}

#[derive(Clone, Debug)]
struct Entry {
    interval: Duration,
    /// Whether an instance runs (enabled or suspended); nothing is due otherwise.
    running: bool,
    /// When the count towards the next checkpoint started: the last checkpoint or attempt, or
    /// the start of the instance, whichever came last.
    base: Timestamp,
    /// A stall asked for a checkpoint that has not been handed out yet.
    stall: bool,
    /// A checkpoint was handed out and its outcome is not known yet.
    in_flight: bool,
}

/// The checkpoint schedule of every plugin that has a `checkpoint_interval`.
#[derive(Clone, Debug, Default)]
pub struct CheckpointSchedule {
    plugins: BTreeMap<String, Entry>,
}

impl CheckpointSchedule {
    /// A schedule for these plugins and their intervals; none is running yet.
    pub fn new(intervals: impl IntoIterator<Item = (String, Duration)>) -> Self {
        let plugins = intervals
            .into_iter()
            .map(|(name, interval)| {
                (
                    name,
                    Entry {
                        interval: interval.max(MIN_INTERVAL),
                        running: false,
                        base: Timestamp::ZERO,
                        stall: false,
                        in_flight: false,
                    },
                )
            })
            .collect();
        CheckpointSchedule { plugins }
    }

    /// Whether `plugin` is scheduled at all.
    pub fn covers(&self, plugin: &str) -> bool {
        self.plugins.contains_key(plugin)
    }

    /// `plugin` has an instance running from `now` (started, restarted, resumed). Its next
    /// periodic checkpoint is an interval after its start; one already running keeps its count.
    pub fn running(&mut self, plugin: &str, now: Timestamp) {
        if let Some(e) = self.plugins.get_mut(plugin)
            && !e.running
        {
            e.running = true;
            e.base = e.base.max(now);
        }
    }

    /// `plugin` has no running instance (shed, unloaded, crashed, failed): nothing is due.
    pub fn stopped(&mut self, plugin: &str) {
        if let Some(e) = self.plugins.get_mut(plugin) {
            e.running = false;
            e.stall = false;
        }
    }

    /// Memory stalled at `now`: every running plugin whose last checkpoint (or start) is at
    /// least [`STALL_SPACING`] old is due at once.
    pub fn stall(&mut self, now: Timestamp) {
        for e in self.plugins.values_mut() {
            if e.running && now.saturating_duration_since(e.base) >= STALL_SPACING {
                e.stall = true;
            }
        }
    }

    /// The checkpoints due at `now`, each handed out once: it is not due again until
    /// [`Self::done`] reports its outcome.
    pub fn poll_due(&mut self, now: Timestamp) -> Vec<(String, CheckpointWhy)> {
        let mut due = Vec::new();
        for (name, e) in &mut self.plugins {
            if !e.running || e.in_flight {
                continue;
            }
            let why = if e.stall {
                CheckpointWhy::Stall
            } else if now >= e.base.saturating_add(e.interval) {
                CheckpointWhy::Periodic
            } else {
                continue;
            };
            e.stall = false;
            e.in_flight = true;
            due.push((name.clone(), why));
        }
        due
    }

    /// The checkpoint of `plugin` handed out earlier ended at `now`, taken or not: the next
    /// periodic one is an interval from now (a plugin that cannot checkpoint is not asked in a
    /// loop).
    pub fn done(&mut self, plugin: &str, now: Timestamp) {
        if let Some(e) = self.plugins.get_mut(plugin) {
            e.in_flight = false;
            e.base = e.base.max(now);
        }
    }

    /// A checkpoint of `plugin` was taken at `at` by another path (its instance was shed,
    /// unloaded or stopped): the count restarts from it.
    pub fn taken(&mut self, plugin: &str, at: Timestamp) {
        if let Some(e) = self.plugins.get_mut(plugin) {
            e.base = e.base.max(at);
        }
    }

    /// When the next periodic checkpoint falls due, if any plugin runs; a pending stall is due
    /// at once (`Timestamp::ZERO`).
    pub fn poll_timeout(&self) -> Option<Timestamp> {
        self.plugins
            .values()
            .filter(|e| e.running && !e.in_flight)
            .map(|e| {
                if e.stall {
                    Timestamp::ZERO
                } else {
                    e.base.saturating_add(e.interval)
                }
            })
            .min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn at(secs: u64) -> Timestamp {
        Timestamp::from_secs(secs)
    }

    fn schedule() -> CheckpointSchedule {
        CheckpointSchedule::new([
            ("voice".to_owned(), Duration::from_secs(600)),
            ("clock".to_owned(), Duration::from_secs(300)),
        ])
    }

    #[test]
    fn periodic_checkpoints_fall_an_interval_after_the_start_and_after_each_other() {
        let mut s = schedule();
        assert!(s.poll_due(at(10_000)).is_empty(), "nothing runs yet");
        s.running("voice", at(100));
        assert_eq!(s.poll_timeout(), Some(at(700)));
        assert!(s.poll_due(at(699)).is_empty());
        assert_eq!(
            s.poll_due(at(700)),
            vec![("voice".to_owned(), CheckpointWhy::Periodic)]
        );
        assert!(s.poll_due(at(800)).is_empty(), "handed out once");
        s.done("voice", at(702));
        assert_eq!(s.poll_timeout(), Some(at(1302)));
        assert!(s.poll_due(at(1301)).is_empty());
        assert_eq!(s.poll_due(at(1302)).len(), 1);
    }

    #[test]
    fn a_stopped_plugin_is_never_due_and_counts_again_from_its_next_start() {
        let mut s = schedule();
        s.running("clock", at(0));
        s.stopped("clock");
        assert!(s.poll_due(at(5_000)).is_empty());
        assert_eq!(s.poll_timeout(), None);
        s.running("clock", at(5_000));
        assert!(s.poll_due(at(5_299)).is_empty());
        assert_eq!(s.poll_due(at(5_300)).len(), 1);
    }

    #[test]
    fn a_checkpoint_taken_by_a_shed_restarts_the_count() {
        let mut s = schedule();
        s.running("clock", at(0));
        s.taken("clock", at(200));
        assert!(s.poll_due(at(300)).is_empty());
        assert_eq!(s.poll_due(at(500)).len(), 1);
    }

    #[test]
    fn a_stall_checkpoints_at_once_only_plugins_whose_last_checkpoint_is_old_enough() {
        let mut s = schedule();
        s.running("voice", at(0));
        s.running("clock", at(100));
        s.stall(at(120));
        assert_eq!(
            s.poll_due(at(120)),
            vec![("voice".to_owned(), CheckpointWhy::Stall)],
            "clock started 20 s ago"
        );
        s.done("voice", at(121));
        // The stall goes on: voice was just checkpointed, clock still too recent.
        s.stall(at(125));
        assert!(s.poll_due(at(125)).is_empty());
        s.stall(at(151));
        assert_eq!(s.poll_timeout(), Some(Timestamp::ZERO));
        assert_eq!(
            s.poll_due(at(151)),
            vec![
                ("clock".to_owned(), CheckpointWhy::Stall),
                ("voice".to_owned(), CheckpointWhy::Stall)
            ]
        );
    }

    #[test]
    fn unknown_plugins_are_ignored_and_intervals_have_a_floor() {
        let mut s = CheckpointSchedule::new([("a".to_owned(), Duration::from_secs(1))]);
        s.running("b", at(0));
        s.done("b", at(0));
        s.running("a", at(0));
        assert!(!s.covers("b"));
        assert_eq!(s.poll_timeout(), Some(at(0).saturating_add(MIN_INTERVAL)));
    }

    #[derive(Clone, Debug)]
    enum Op {
        Running(usize),
        Stopped(usize),
        Stall,
        Taken(usize),
        Poll,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0..3usize).prop_map(Op::Running),
            (0..3usize).prop_map(Op::Stopped),
            Just(Op::Stall),
            (0..3usize).prop_map(Op::Taken),
            Just(Op::Poll),
        ]
    }

    proptest! {
        /// On virtual time, whatever happens: a plugin is handed out only while it runs and
        /// only once until its outcome; two periodic checkpoints of a plugin that kept running
        /// are at least its interval apart; nothing running is ever late by more than the step
        /// between two polls; a stall checkpoint never follows another checkpoint by less than
        /// the spacing.
        #[test]
        fn the_schedule_keeps_its_promises(
            intervals in proptest::collection::vec(1u64..2_000, 3),
            steps in proptest::collection::vec((1u64..120, op()), 1..300),
        ) {
            let names = ["a", "b", "c"];
            let mut s = CheckpointSchedule::new(
                names.iter().zip(&intervals).map(|(n, i)| ((*n).to_owned(), Duration::from_secs(*i))),
            );
            let mut running = [false; 3];
            let mut base = [Timestamp::ZERO; 3];
            let mut now = Timestamp::ZERO;
            for (step, op) in steps {
                now = now.saturating_add(Duration::from_secs(step));
                match op {
                    Op::Running(i) => {
                        if !running[i] {
                            base[i] = base[i].max(now);
                        }
                        running[i] = true;
                        s.running(names[i], now);
                    }
                    Op::Stopped(i) => {
                        running[i] = false;
                        s.stopped(names[i]);
                    }
                    Op::Stall => s.stall(now),
                    Op::Taken(i) => {
                        base[i] = base[i].max(now);
                        s.taken(names[i], now);
                    }
                    Op::Poll => {}
                }
                for (name, why) in s.poll_due(now) {
                    let i = names.iter().position(|n| *n == name).unwrap();
                    prop_assert!(running[i], "{name} handed out while not running");
                    let since = now.saturating_duration_since(base[i]);
                    match why {
                        CheckpointWhy::Periodic => {
                            prop_assert!(since >= Duration::from_secs(intervals[i]));
                        }
                        CheckpointWhy::Stall => prop_assert!(since >= STALL_SPACING),
                    }
                    prop_assert!(s.poll_due(now).iter().all(|(n, _)| *n != name), "handed out twice");
                    s.done(&name, now);
                    base[i] = now;
                }
                // After a poll the next one is in the future, and there is one while anything runs.
                let next = s.poll_timeout();
                prop_assert_eq!(next.is_some(), running.iter().any(|r| *r));
                prop_assert!(next.is_none_or(|t| t > now));
                // Nothing running is overdue after a poll.
                for (i, r) in running.iter().enumerate() {
                    if *r {
                        prop_assert!(
                            now < base[i].saturating_add(Duration::from_secs(intervals[i].max(MIN_INTERVAL.as_secs())))
                        );
                    }
                }
            }
        }
    }
}
