//! What the kernel reports about a plugin's cgroup: pure parsers of its files (v2
//! `memory.events`, `cpu.stat`, `memory.pressure`; v1 `memory.failcnt`, `memory.oom_control`, `cpuacct.usage`), and
//! [`EventTracker`], a sans-IO state machine that turns successive readings into alerts and, once
//! the process has exited, says whether the kernel killed it at its limit.

use ballast_core::format::bytes;
use ballast_core::{MemoryEventCounts, PluginAlert, PsiLine, PsiReading};

use super::CgroupError;
use super::layout::Version;

/// One reading of a plugin's cgroup. A figure whose file is missing or unreadable is `None`.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Reading {
    /// The memory event counters (v1: `oom` is 0, see `under_oom`).
    pub events: MemoryEventCounts,
    /// v1's `under_oom`: the cgroup is out of memory right now.
    pub under_oom: bool,
    /// Memory charged now, in bytes.
    pub memory_current: Option<u64>,
    /// The most memory ever charged, in bytes.
    pub memory_peak: Option<u64>,
    /// CPU time used, in nanoseconds.
    pub cpu_usage_ns: Option<u64>,
    /// Time held back by the CPU quota, in nanoseconds.
    pub cpu_throttled_ns: Option<u64>,
    /// Its own memory pressure (v2 `memory.pressure`; v1 has none): how long its tasks stalled
    /// waiting for memory, reclaim at its `memory.high` included.
    pub memory_pressure: Option<PsiReading>,
}

fn parse_error(file: &str, problem: String) -> CgroupError {
    CgroupError::Parse {
        file: file.to_owned(),
        problem,
    }
}

/// Parses a pressure file (`memory.pressure`): a `some` line and, where the kernel writes one,
/// a `full` line, each `avg10=.. avg60=.. avg300=.. total=..`.
pub fn parse_pressure(file: &str, text: &str) -> Result<PsiReading, CgroupError> {
    let mut some = None;
    let mut full = None;
    for line in text.lines() {
        let mut words = line.split_ascii_whitespace();
        let slot = match words.next() {
            Some("some") => &mut some,
            Some("full") => &mut full,
            Some(other) => {
                return Err(parse_error(
                    file,
                    format!("a line starts with `{}`, not some or full", excerpt(other)),
                ));
            }
            None => continue,
        };
        let mut line = PsiLine {
            avg10: f64::NAN,
            avg60: f64::NAN,
            avg300: f64::NAN,
            total_us: 0,
        };
        let mut seen = 0;
        for word in words {
            let Some((key, value)) = word.split_once('=') else {
                return Err(parse_error(
                    file,
                    format!("`{}` is not key=value", excerpt(word)),
                ));
            };
            let bad = || parse_error(file, format!("{key}: `{}` is not a number", excerpt(value)));
            let avg = || {
                value
                    .parse::<f64>()
                    .ok()
                    .filter(|v| v.is_finite() && *v >= 0.0)
                    .ok_or_else(bad)
            };
            match key {
                "avg10" => line.avg10 = avg()?,
                "avg60" => line.avg60 = avg()?,
                "avg300" => line.avg300 = avg()?,
                "total" => line.total_us = value.parse().map_err(|_| bad())?,
                _ => continue,
            }
            seen |= match key {
                "avg10" => 1,
                "avg60" => 2,
                "avg300" => 4,
                _ => 8,
            };
        }
        if seen != 15 {
            return Err(parse_error(
                file,
                "a line lacks one of avg10, avg60, avg300, total".to_owned(),
            ));
        }
        *slot = Some(line);
    }
    let some = some.ok_or_else(|| parse_error(file, "it has no `some` line".to_owned()))?;
    Ok(PsiReading { some, full })
}

/// Parses a file holding one number (`memory.current`, `memory.failcnt`, `cpuacct.usage`...).
pub fn parse_number(file: &str, text: &str) -> Result<u64, CgroupError> {
    let value = text.trim();
    if value.is_empty() {
        return Err(parse_error(file, "it is empty".to_owned()));
    }
    value
        .parse::<u64>()
        .map_err(|_| parse_error(file, format!("`{}` is not a number", excerpt(value))))
}

fn excerpt(text: &str) -> String {
    text.chars().take(60).collect()
}

/// The value of `key` in a flat keyed file (`key value` lines), if the key is there. A key
/// whose value is not a number is an error; other lines are skipped.
pub fn keyed(file: &str, text: &str, key: &str) -> Result<Option<u64>, CgroupError> {
    for line in text.lines() {
        let mut words = line.split_ascii_whitespace();
        if words.next() == Some(key) {
            let value = words.next().unwrap_or("");
            return value.parse::<u64>().map(Some).map_err(|_| {
                parse_error(
                    file,
                    format!("`{key}` is not followed by a number: `{}`", excerpt(line)),
                )
            });
        }
    }
    Ok(None)
}

/// Parses v2 `memory.events` (`low`, `high`, `max`, `oom`, `oom_kill`, ... one per line). Keys
/// it does not know are skipped; a file with none of the four it reads is an error.
pub fn parse_memory_events(text: &str) -> Result<MemoryEventCounts, CgroupError> {
    const FILE: &str = "memory.events";
    let high = keyed(FILE, text, "high")?;
    let max = keyed(FILE, text, "max")?;
    let oom = keyed(FILE, text, "oom")?;
    let oom_kill = keyed(FILE, text, "oom_kill")?;
    if [high, max, oom, oom_kill].iter().all(Option::is_none) {
        return Err(parse_error(
            FILE,
            "none of high, max, oom, oom_kill is in it".to_owned(),
        ));
    }
    Ok(MemoryEventCounts {
        high: high.unwrap_or(0),
        max: max.unwrap_or(0),
        oom: oom.unwrap_or(0),
        oom_kill: oom_kill.unwrap_or(0),
    })
}

/// Parses v1 `memory.oom_control`: whether the cgroup is under OOM now, and how many processes
/// the OOM killer killed in it (`oom_kill`, since Linux 4.13; 0 before).
pub fn parse_oom_control(text: &str) -> Result<(bool, u64), CgroupError> {
    const FILE: &str = "memory.oom_control";
    let Some(under_oom) = keyed(FILE, text, "under_oom")? else {
        return Err(parse_error(FILE, "no `under_oom` line".to_owned()));
    };
    Ok((under_oom != 0, keyed(FILE, text, "oom_kill")?.unwrap_or(0)))
}

/// Parses `cpu.stat`: the CPU time used (v2 `usage_usec`; v1 has none, it is in
/// `cpuacct.usage`) and the time throttled (v2 `throttled_usec`, v1 `throttled_time`), in
/// nanoseconds.
pub fn parse_cpu_stat(
    version: Version,
    text: &str,
) -> Result<(Option<u64>, Option<u64>), CgroupError> {
    const FILE: &str = "cpu.stat";
    let micros = |key| keyed(FILE, text, key).map(|v| v.map(|us| us.saturating_mul(1000)));
    Ok(match version {
        Version::V2 => (micros("usage_usec")?, micros("throttled_usec")?),
        Version::V1 => (None, keyed(FILE, text, "throttled_time")?),
    })
}

/// Turns the readings of one process's cgroup into alerts and held conditions.
///
/// * `memory_high` (v2) and `memory_max`: raised when the counter grows; held while it keeps
///   growing from one reading to the next, raised again after a reading in which it did not.
/// * `memory_oom` and `memory_oom_kill`: raised each time the counter grows (v1: each time
///   `under_oom` is seen set after a reading where it was not).
#[derive(Clone, Debug)]
pub struct EventTracker {
    limits: super::Limits,
    last: MemoryEventCounts,
    /// v1: `under_oom` in the previous reading.
    was_under_oom: bool,
    /// v1: how often `under_oom` was seen newly set.
    v1_ooms: u64,
    high_held: bool,
    max_held: bool,
    peak: Option<u64>,
}

impl EventTracker {
    /// A tracker for a fresh cgroup (every counter at zero) with `limits`.
    pub fn new(limits: super::Limits) -> EventTracker {
        EventTracker {
            limits,
            last: MemoryEventCounts::default(),
            was_under_oom: false,
            v1_ooms: 0,
            high_held: false,
            max_held: false,
            peak: None,
        }
    }

    /// The limits changed (a level change): the messages name the new ones.
    pub fn set_limits(&mut self, limits: super::Limits) {
        self.limits = limits;
    }

    /// The counters so far (v1's `oom` counted from `under_oom`).
    pub fn counts(&self) -> MemoryEventCounts {
        let mut counts = self.last;
        counts.oom = counts.oom.max(self.v1_ooms);
        counts
    }

    /// The conditions that hold: `memory_high`, `memory_max`.
    pub fn conditions(&self) -> Vec<PluginAlert> {
        let mut held = Vec::new();
        if self.high_held {
            held.push(PluginAlert::MemoryHigh);
        }
        if self.max_held {
            held.push(PluginAlert::MemoryMax);
        }
        held
    }

    fn limit(&self) -> String {
        self.limits.memory_max.map_or_else(
            || "no limit".to_owned(),
            |b| format!("its memory limit {}", bytes(b)),
        )
    }

    /// A new reading: the alerts it raises, each with its message. Counters that went down (a
    /// file misread) are taken as they are, and raise nothing.
    pub fn observe(&mut self, reading: &Reading) -> Vec<(PluginAlert, String)> {
        let mut alerts = Vec::new();
        let new = reading.events;
        if let Some(peak) = reading.memory_peak {
            self.peak = Some(self.peak.map_or(peak, |p| p.max(peak)));
        }
        let grew = |now: u64, before: u64| now.saturating_sub(before);
        let current = reading
            .memory_current
            .map(|b| format!("; {} charged now", bytes(b)))
            .unwrap_or_default();
        let high = grew(new.high, self.last.high);
        if high > 0 && !self.high_held {
            alerts.push((
                PluginAlert::MemoryHigh,
                format!(
                    "the kernel throttled it at its level's declared need {} ({high} times){current}",
                    self.limits.memory_high.map_or_else(|| "(memory.high)".to_owned(), bytes)
                ),
            ));
        }
        self.high_held = high > 0;
        let max = grew(new.max, self.last.max);
        if max > 0 && !self.max_held {
            alerts.push((
                PluginAlert::MemoryMax,
                format!(
                    "it reached {} and the kernel reclaimed its memory to keep it there ({max} times){current}",
                    self.limit()
                ),
            ));
        }
        self.max_held = max > 0;
        let oom = grew(new.oom, self.last.oom);
        let v1_oom = reading.under_oom && !self.was_under_oom;
        if v1_oom {
            self.v1_ooms += 1;
        }
        self.was_under_oom = reading.under_oom;
        if oom > 0 || v1_oom {
            alerts.push((
                PluginAlert::MemoryOom,
                format!("it ran out of memory at {}", self.limit()),
            ));
        }
        let kills = grew(new.oom_kill, self.last.oom_kill);
        if kills > 0 {
            let what = if kills == 1 {
                "a process".to_owned()
            } else {
                format!("{kills} processes")
            };
            alerts.push((
                PluginAlert::MemoryOomKill,
                format!("the kernel killed {what} of it at {}", self.limit()),
            ));
        }
        self.last = new;
        alerts
    }

    /// The highest peak seen.
    pub fn peak(&self) -> Option<u64> {
        self.peak
    }

    /// Why the process ended, when the kernel killed it: it was killed by SIGKILL and the OOM
    /// killer killed a process of its cgroup (`final_reading`, taken after its exit, is observed
    /// first).
    pub fn kill_reason(
        &mut self,
        final_reading: Option<&Reading>,
        sigkill: bool,
    ) -> Option<String> {
        if let Some(reading) = final_reading {
            let _ = self.observe(reading);
        }
        if !sigkill || self.last.oom_kill == 0 {
            return None;
        }
        Some(match self.limits.memory_max {
            Some(max) => format!("killed by the kernel at its memory limit {}", bytes(max)),
            None => "killed by the kernel's OOM killer".to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cgroup::Limits;

    #[test]
    fn v2_memory_events_and_cpu_stat() {
        let text = "low 0\nhigh 12\nmax 3\noom 1\noom_kill 1\noom_group_kill 0\n";
        assert_eq!(
            parse_memory_events(text).unwrap(),
            MemoryEventCounts {
                high: 12,
                max: 3,
                oom: 1,
                oom_kill: 1
            }
        );
        assert!(parse_memory_events("").is_err());
        assert!(parse_memory_events("high lots\n").is_err());
        let stat = "usage_usec 2500\nuser_usec 2000\nsystem_usec 500\nnr_periods 4\nnr_throttled 2\nthrottled_usec 700\n";
        assert_eq!(
            parse_cpu_stat(Version::V2, stat).unwrap(),
            (Some(2_500_000), Some(700_000))
        );
    }

    #[test]
    fn v1_oom_control_and_cpu_stat() {
        assert_eq!(
            parse_oom_control("oom_kill_disable 0\nunder_oom 1\noom_kill 3\n").unwrap(),
            (true, 3)
        );
        // Before Linux 4.13 there is no oom_kill line.
        assert_eq!(
            parse_oom_control("oom_kill_disable 0\nunder_oom 0\n").unwrap(),
            (false, 0)
        );
        assert!(parse_oom_control("oom_kill 3\n").is_err());
        let stat = "nr_periods 21\nnr_throttled 20\nthrottled_time 1169847458\n";
        assert_eq!(
            parse_cpu_stat(Version::V1, stat).unwrap(),
            (None, Some(1_169_847_458))
        );
        assert_eq!(
            parse_number("cpuacct.usage", "418581885\n").unwrap(),
            418_581_885
        );
        assert!(parse_number("cpuacct.usage", " \n").is_err());
    }

    fn reading(high: u64, max: u64, oom_kill: u64) -> Reading {
        Reading {
            events: MemoryEventCounts {
                high,
                max,
                oom: oom_kill,
                oom_kill,
            },
            memory_current: Some(150 << 20),
            ..Reading::default()
        }
    }

    #[test]
    fn growing_counters_raise_once_while_they_keep_growing() {
        let mut tracker = EventTracker::new(Limits::for_plugin(Some(200 << 20), 64 << 20, None));
        assert!(tracker.observe(&reading(0, 0, 0)).is_empty());
        let alerts = tracker.observe(&reading(5, 0, 0));
        assert_eq!(
            alerts,
            [(
                PluginAlert::MemoryHigh,
                "the kernel throttled it at its level's declared need 64 MiB (5 times); 150 MiB charged now".to_owned()
            )]
        );
        assert_eq!(tracker.conditions(), [PluginAlert::MemoryHigh]);
        // Still growing: held, not raised again.
        assert!(tracker.observe(&reading(9, 0, 0)).is_empty());
        // Calm, then again: raised again.
        assert!(tracker.observe(&reading(9, 0, 0)).is_empty());
        assert!(tracker.conditions().is_empty());
        assert_eq!(tracker.observe(&reading(10, 0, 0)).len(), 1);
        let alerts = tracker.observe(&reading(10, 2, 1));
        let kinds: Vec<PluginAlert> = alerts.iter().map(|(a, _)| *a).collect();
        assert_eq!(
            kinds,
            [
                PluginAlert::MemoryMax,
                PluginAlert::MemoryOom,
                PluginAlert::MemoryOomKill
            ]
        );
        assert_eq!(
            alerts[2].1,
            "the kernel killed a process of it at its memory limit 200 MiB"
        );
        assert_eq!(tracker.counts().oom_kill, 1);
    }

    #[test]
    fn the_kill_reason_needs_sigkill_and_an_oom_kill() {
        let limits = Limits::for_plugin(Some(200 << 20), 0, None);
        let mut tracker = EventTracker::new(limits);
        assert_eq!(tracker.kill_reason(Some(&reading(0, 7, 0)), true), None);
        let mut tracker = EventTracker::new(limits);
        assert_eq!(tracker.kill_reason(Some(&reading(0, 7, 1)), false), None);
        let mut tracker = EventTracker::new(limits);
        assert_eq!(
            tracker
                .kill_reason(Some(&reading(0, 7, 1)), true)
                .as_deref(),
            Some("killed by the kernel at its memory limit 200 MiB")
        );
        // Seen before the exit, then the cgroup could not be read: still known.
        let mut tracker = EventTracker::new(limits);
        let _ = tracker.observe(&reading(0, 7, 1));
        assert!(tracker.kill_reason(None, true).is_some());
    }

    #[test]
    fn v1_under_oom_counts_as_an_oom_each_time_it_is_newly_set() {
        let mut tracker = EventTracker::new(Limits::default());
        let under = Reading {
            under_oom: true,
            ..Reading::default()
        };
        assert_eq!(tracker.observe(&under)[0].0, PluginAlert::MemoryOom);
        assert!(tracker.observe(&under).is_empty());
        assert!(tracker.observe(&Reading::default()).is_empty());
        assert_eq!(tracker.observe(&under).len(), 1);
        assert_eq!(tracker.counts().oom, 2);
    }
}
