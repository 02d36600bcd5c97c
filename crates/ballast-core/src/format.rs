//! How ballast writes figures for people: bytes, durations, times, latencies and aligned tables.
//!
//! The one place that decides what `1.5 GiB`, `2h 5m ago` or a table looks like, so that the
//! daemon's log lines, the CLI clients and the offline tools agree. Every function is pure: "now"
//! is an argument.

use std::time::Duration;

use crate::time::Timestamp;

/// Bytes in binary units, one decimal where it says something: `512 B`, `256 MiB`, `1.5 GiB`.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    let rounded = (value * 10.0).round() / 10.0;
    if unit == 0 || rounded.fract() == 0.0 {
        format!("{rounded:.0} {}", UNITS[unit])
    } else {
        format!("{rounded:.1} {}", UNITS[unit])
    }
}

/// A duration exactly, in the units a config file accepts: `1h 15m`, `27days 2h 40m`, `250ms`.
pub fn duration(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}

/// A duration for people, to its two largest units: `2h 5m`, not `2h 5m 13s 200ms`.
pub fn duration_short(d: Duration) -> String {
    let whole = if d >= Duration::from_secs(1) {
        Duration::from_secs(d.as_secs())
    } else {
        Duration::from_millis(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    };
    let text = duration(whole);
    let short: Vec<&str> = text.split(' ').take(2).collect();
    short.join(" ")
}

/// How long before `now` a moment was: `just now`, `3m 12s ago`.
pub fn ago(at: Timestamp, now: Timestamp) -> String {
    let seconds = now.saturating_duration_since(at).as_secs();
    if seconds == 0 {
        return "just now".to_owned();
    }
    format!("{} ago", duration_short(Duration::from_secs(seconds)))
}

/// A moment as RFC 3339 in UTC, to the second: `2026-11-23T09:22:29Z`.
pub fn time(at: Timestamp) -> String {
    let c = at.civil();
    if c.year > 9999 {
        // Beyond what RFC 3339 can show: the raw timestamp.
        return format!("{at} after the epoch");
    }
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        c.year, c.month, c.day, c.hour, c.minute, c.second
    )
}

/// A moment of a replayed trace: a UTC date and time when it looks like one
/// (`2014-02-22 00:02:00`), else an offset from the trace's start (`+3d 04:05:06`) for traces
/// without timestamps, whose virtual clock starts at zero.
pub fn trace_time(t: Timestamp) -> String {
    let secs = t.as_millis() / 1000;
    // 2000-01-01: earlier values are offsets of traces without timestamps.
    if secs < 946_684_800 {
        let days = secs / 86_400;
        let rest = secs % 86_400;
        return format!(
            "+{days}d {:02}:{:02}:{:02}",
            rest / 3600,
            rest / 60 % 60,
            rest % 60
        );
    }
    let c = t.civil();
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02}",
        c.year, c.month, c.day, c.hour, c.minute, c.second
    )
}

/// A latency in microseconds: `850us`, `12.3ms`, `1.20s`.
pub fn latency_us(us: u64) -> String {
    if us < 1000 {
        format!("{us}us")
    } else if us < 1_000_000 {
        format!("{:.1}ms", us as f64 / 1000.0)
    } else {
        format!("{:.2}s", us as f64 / 1e6)
    }
}

/// A fraction as a percentage with one decimal: `43.5%`.
pub fn percent(fraction: f64) -> String {
    format!("{:.1}%", fraction * 100.0)
}

/// Rows of cells printed in aligned columns, two spaces apart, without trailing spaces.
///
/// Columns are left-aligned unless [`Table::right_aligned`] says otherwise (numbers read best
/// right-aligned). A row shorter than the widest one leaves the rest empty, and its last cell
/// (e.g. the reason a metric is unavailable) may overflow without widening its column.
#[derive(Clone, Debug, Default)]
pub struct Table {
    rows: Vec<Vec<String>>,
    right: Vec<bool>,
}

impl Table {
    /// An empty table, every column left-aligned.
    pub fn new() -> Self {
        Table::default()
    }

    /// A table with a header row.
    pub fn with_header(header: &[&str]) -> Self {
        let mut table = Table::new();
        table.row(header.iter().copied());
        table
    }

    /// Right-aligns the columns where `right` is true.
    pub fn right_aligned(mut self, right: &[bool]) -> Self {
        self.right = right.to_vec();
        self
    }

    /// Adds a row.
    pub fn row(&mut self, cells: impl IntoIterator<Item = impl Into<String>>) {
        self.rows.push(cells.into_iter().map(Into::into).collect());
    }

    /// The table as text, each line ending in a newline.
    pub fn render(&self) -> String {
        let columns = self.rows.iter().map(Vec::len).max().unwrap_or(0);
        let mut widths = vec![0; columns];
        for row in &self.rows {
            let counted = if row.len() < columns {
                row.len().saturating_sub(1)
            } else {
                row.len()
            };
            for (width, cell) in widths.iter_mut().zip(&row[..counted]) {
                *width = (*width).max(cell.chars().count());
            }
        }
        let mut out = String::new();
        for row in &self.rows {
            let mut line = String::new();
            for (i, cell) in row.iter().enumerate() {
                if i > 0 {
                    line.push_str("  ");
                }
                let pad = widths[i].saturating_sub(cell.chars().count());
                let last = i + 1 == row.len();
                if self.right.get(i).copied().unwrap_or(false) && !(last && row.len() < columns) {
                    line.push_str(&" ".repeat(pad));
                    line.push_str(cell);
                } else {
                    line.push_str(cell);
                    if !last {
                        line.push_str(&" ".repeat(pad));
                    }
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

/// A table of `rows` under `headers`, every column left-aligned.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut table = Table::with_header(headers);
    for row in rows {
        table.row(row.iter().cloned());
    }
    table.render()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_read_like_free_prints_them() {
        assert_eq!(bytes(0), "0 B");
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(1023), "1023 B");
        assert_eq!(bytes(1024), "1 KiB");
        assert_eq!(bytes(256 << 20), "256 MiB");
        assert_eq!(bytes(1536 << 20), "1.5 GiB");
        assert_eq!(bytes(25_232_932_864), "23.5 GiB");
        // Rounding to one decimal never prints `1024.0 MiB` or `2.0 GiB`.
        assert_eq!(bytes((2 << 30) - 1), "2 GiB");
        assert_eq!(bytes(u64::MAX), "16384 PiB");
    }

    #[test]
    fn durations_exact_and_short() {
        assert_eq!(duration(Duration::from_secs(4500)), "1h 15m");
        assert_eq!(duration(Duration::from_millis(250)), "250ms");
        assert_eq!(duration_short(Duration::from_secs(7513)), "2h 5m");
        assert_eq!(duration_short(Duration::from_millis(1500)), "1s");
        assert_eq!(duration_short(Duration::from_millis(40)), "40ms");
        assert_eq!(duration_short(Duration::ZERO), "0s");
    }

    #[test]
    fn ago_counts_back_from_now() {
        let now = Timestamp::from_secs(10_000);
        assert_eq!(ago(now, now), "just now");
        assert_eq!(ago(Timestamp::from_secs(10_000 - 192), now), "3m 12s ago");
        assert_eq!(ago(Timestamp::from_secs(10_000 - 7513), now), "2h 5m ago");
        // A moment after now (clocks differ) is not "in the future ago".
        assert_eq!(ago(Timestamp::from_secs(20_000), now), "just now");
    }

    #[test]
    fn times_in_utc() {
        assert_eq!(
            time(Timestamp::from_millis(1_795_425_749_834)),
            "2026-11-23T09:22:29Z"
        );
        assert_eq!(time(Timestamp::ZERO), "1970-01-01T00:00:00Z");
        assert_eq!(
            time(Timestamp::from_millis(u64::MAX)),
            format!("{} after the epoch", Timestamp::from_millis(u64::MAX))
        );
        assert_eq!(
            trace_time(Timestamp::from_secs(1_393_027_320)),
            "2014-02-22 00:02:00"
        );
        assert_eq!(
            trace_time(Timestamp::from_secs(3 * 86_400 + 3723)),
            "+3d 01:02:03"
        );
    }

    #[test]
    fn latencies_in_the_unit_that_reads_best() {
        assert_eq!(latency_us(850), "850us");
        assert_eq!(latency_us(12_345), "12.3ms");
        assert_eq!(latency_us(1_200_000), "1.20s");
    }

    #[test]
    fn tables_align_columns_without_trailing_spaces() {
        let text = table(
            &["NAME", "STATE", "P95"],
            &[
                vec!["voice".into(), "enabled".into(), "-".into()],
                vec!["android".into(), "off".into(), "12.3ms".into()],
            ],
        );
        assert_eq!(
            text,
            "NAME     STATE    P95\nvoice    enabled  -\nandroid  off      12.3ms\n"
        );
        let mut numbers = Table::new().right_aligned(&[false, true, true]);
        numbers.row(["", "total", "used"]);
        numbers.row(["memory", "23.5 GiB", "1 GiB"]);
        numbers.row(["gpu", "unavailable: no NVIDIA driver"]);
        assert_eq!(
            numbers.render(),
            concat!(
                "           total   used\n",
                "memory  23.5 GiB  1 GiB\n",
                "gpu     unavailable: no NVIDIA driver\n"
            )
        );
    }
}
