//! The decision of the PSI stall poller: from successive readings of a pressure file's `some`
//! total, whether tasks stalled for a trigger's threshold within its window, as the kernel's PSI
//! trigger decides it, for processes whose triggers the kernel checks only every 2 s.
//!
//! Pure: times are given, not read, so that tests run on virtual time.

use std::collections::VecDeque;

/// At most this many readings are kept: a window of 2 s polled every 100 ms needs 21. Past it the
/// oldest go, which can only make the stall within the window look smaller.
const MAX_READINGS: usize = 4096;

/// Fires when the `some` stall time accumulated within the last `window_us` reaches `stall_us`,
/// at most once per window (the kernel's rate limit for a trigger).
#[derive(Clone, Debug)]
pub struct StallDetector {
    stall_us: u64,
    window_us: u64,
    /// `(time, total)` in microseconds, oldest first: at most one at or before the window's
    /// start (the one the stall at the window's start is interpolated from), then those within.
    readings: VecDeque<(u64, u64)>,
    /// When it last fired.
    fired_at: Option<u64>,
    /// Whether the last reading found at least half the threshold's stall within the window
    /// while it could fire.
    building: bool,
}

impl StallDetector {
    /// Fires on `stall_us` of stall within `window_us` (both at least 1 µs), as a trigger
    /// `some <stall_us> <window_us>` does.
    pub fn new(stall_us: u64, window_us: u64) -> Self {
        StallDetector {
            stall_us: stall_us.max(1),
            window_us: window_us.max(1),
            readings: VecDeque::new(),
            fired_at: None,
            building: false,
        }
    }

    /// Takes the `some` total (microseconds of stall since boot or since the cgroup was made)
    /// read at `now_us` (any monotonic clock, in microseconds), and says whether to fire.
    ///
    /// A total that went down (the cgroup was made again) or a clock that went back starts the
    /// detector over: it fires once it has seen the threshold's stall after that.
    pub fn observe(&mut self, now_us: u64, total_us: u64) -> bool {
        self.building = false;
        if let Some(&(at, total)) = self.readings.back()
            && (now_us < at || total_us < total)
        {
            self.readings.clear();
            self.fired_at = None;
        }
        self.readings.push_back((now_us, total_us));
        let start = now_us.saturating_sub(self.window_us);
        while self.readings.len() > MAX_READINGS
            || (self.readings.len() > 2 && self.readings[1].0 <= start)
        {
            self.readings.pop_front();
        }
        let Some(stalled) = self.stalled_since(start, total_us) else {
            return false;
        };
        let rested = self
            .fired_at
            .is_none_or(|at| now_us.saturating_sub(at) >= self.window_us);
        if stalled >= self.stall_us && rested {
            self.fired_at = Some(now_us);
            return true;
        }
        self.building = rested && stalled >= self.stall_us.div_ceil(2);
        false
    }

    /// Whether a stall is building: the last reading found at least half the threshold's stall
    /// within the window, and the detector may fire (it did not within the window before). A
    /// poller reads more often meanwhile, so that the moment the threshold is reached is seen
    /// sooner without reading often while nothing stalls.
    pub fn is_building(&self) -> bool {
        self.building
    }

    /// The stall within the window that starts at `start`: `total_us` less the total at the
    /// window's start, that one interpolated between the readings on either side of it, or taken
    /// from the oldest reading when all came after it. `None` before a second reading.
    fn stalled_since(&self, start: u64, total_us: u64) -> Option<u64> {
        let &(t0, c0) = self.readings.front()?;
        if self.readings.len() < 2 {
            return None;
        }
        let base = if t0 >= start {
            c0
        } else {
            let (t1, c1) = self.readings[1];
            // t0 < start <= now and t1 > start, so t1 > t0; the totals never go down here.
            let span = u128::from(t1 - t0);
            let part = u128::from(start - t0);
            let grown = u128::from(c1.saturating_sub(c0));
            let at_start = u128::from(c0) + grown * part / span.max(1);
            u64::try_from(at_start).unwrap_or(u64::MAX)
        };
        Some(total_us.saturating_sub(base))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1000;

    /// Feeds a reading every 100 ms from `from_ms` while `stall_per_poll_us` of stall accumulates
    /// per poll; returns the times (ms) it fired at.
    fn run(
        detector: &mut StallDetector,
        from_ms: u64,
        polls: u64,
        total: &mut u64,
        per_poll: u64,
    ) -> Vec<u64> {
        let mut fired = Vec::new();
        for i in 0..polls {
            let at = from_ms + i * 100;
            *total += per_poll;
            if detector.observe(at * MS, *total) {
                fired.push(at);
            }
        }
        fired
    }

    #[test]
    fn a_steady_stall_fires_once_its_threshold_is_reached_then_once_per_window() {
        let mut d = StallDetector::new(150 * MS, 2000 * MS);
        let mut total = 5_000_000;
        // Quiet for 3 s: nothing.
        assert_eq!(run(&mut d, 0, 30, &mut total, 0), Vec::<u64>::new());
        // Then tasks stall for half of each poll: 150 ms are reached on the third poll.
        let fired = run(&mut d, 3000, 60, &mut total, 50 * MS);
        assert_eq!(fired, [3200, 5200, 7200]);
    }

    #[test]
    fn a_stall_is_building_from_half_the_threshold_until_it_fires() {
        let mut d = StallDetector::new(150 * MS, 2000 * MS);
        let mut building = Vec::new();
        for (at, total) in [
            (0, 0),
            (100, 50),
            (200, 75),
            (300, 140),
            (400, 150),
            (500, 300),
        ] {
            let fired = d.observe(at * MS, total * MS);
            building.push((fired, d.is_building()));
        }
        assert_eq!(
            building,
            [
                (false, false),
                (false, false),
                (false, true),
                (false, true),
                (true, false),
                // Within the window after firing: nothing to watch for.
                (false, false),
            ]
        );
    }

    #[test]
    fn stall_spread_over_more_than_the_window_does_not_fire() {
        let mut d = StallDetector::new(150 * MS, 2000 * MS);
        let mut total = 0;
        // 7 ms per 100 ms: 140 ms per 2 s, under the threshold for ever.
        assert!(run(&mut d, 0, 200, &mut total, 7 * MS).is_empty());
        // 8 ms per 100 ms: 160 ms per 2 s, which fires.
        assert!(!run(&mut d, 20_000, 40, &mut total, 8 * MS).is_empty());
    }

    #[test]
    fn the_window_start_is_interpolated_between_readings_across_a_gap() {
        let mut d = StallDetector::new(150 * MS, 2000 * MS);
        assert!(!d.observe(0, 0));
        // 4 s later, 200 ms more: 100 ms of it within the last 2 s.
        assert!(!d.observe(4000 * MS, 200 * MS));
        // 160 ms more in the next 100 ms: well over.
        assert!(d.observe(4100 * MS, 360 * MS));
    }

    #[test]
    fn a_counter_that_goes_down_or_a_clock_that_goes_back_starts_over() {
        let mut d = StallDetector::new(150 * MS, 2000 * MS);
        assert!(!d.observe(0, 10_000 * MS));
        assert!(d.observe(100 * MS, 10_200 * MS));
        // The cgroup was made again: its total starts from nothing, and the new stall fires at
        // once, the rate limit forgotten with the old counter.
        assert!(!d.observe(200 * MS, 0));
        assert!(d.observe(300 * MS, 200 * MS));
        // The clock went back: no fire on the jump itself.
        assert!(!d.observe(100 * MS, 10_000 * MS));
        assert!(!d.observe(200 * MS, 10_100 * MS));
        assert!(d.observe(300 * MS, 10_200 * MS));
    }

    #[test]
    fn one_reading_is_never_enough() {
        let mut d = StallDetector::new(150 * MS, 2000 * MS);
        assert!(!d.observe(1000 * MS, u64::MAX));
        assert!(!d.observe(1000 * MS, u64::MAX));
        assert!(!d.observe(u64::MAX, u64::MAX));
    }
}
