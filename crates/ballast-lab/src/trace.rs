//! Reading recorded resource-usage traces into one timestamped series, without any IO of its own.
//!
//! A trace is a time series of one value column: a [`Trace`] of [`TracePoint`]s. The parser works
//! on any [`Read`] or `&str` it is handed; opening files is the caller's job (the `ballast` binary),
//! so this module stays pure and testable. Supported inputs:
//!
//! | input | example | timestamps |
//! |---|---|---|
//! | CSV with a `timestamp` column holding dates | NAB: `timestamp,value` / `2014-02-14 14:30:00` | from the column (UTC) |
//! | CSV with a `timestamp` column holding numbers | Azure V2: `timestamp,cpu_usage,assigned_mem` | seconds from the column |
//! | CSV without a timestamp column | Google 2019: `avg_cpu,avg_mem,...` | evenly spaced, [`TraceOptions::interval`] |
//! | CSV of events (sub-second, irregular arrivals) | Azure LLM: `TIMESTAMP,ContextTokens,...` | binned into a rate series, [`TraceOptions::bin`] |
//! | JSON lines of the daemon's telemetry | one `Sample` per line | from each sample's `at` |
//!
//! A request log can also be read as its arrivals alone, one timestamp per request and unbinned
//! ([`parse_arrivals`]): `ballast simulate --calls` replays them as calls to a plugin.
//!
//! The value column is [`TraceOptions::column`] when given (matched exactly, then ignoring ASCII
//! case), else `value` when the file has one, else the first column that is not the timestamp.
//!
//! Gaps and irregular or out-of-order timestamps are kept as they are: nothing is resampled or
//! filled in. An empty cell is a missing reading and is skipped (counted in [`Trace::skipped`]);
//! any other cell that is not a finite number is an error naming the file, line and column.
//!
//! ```
//! use ballast_lab::trace::{parse_trace, TraceOptions};
//!
//! let text = "timestamp,value\n2014-02-14 14:30:00,0.5\n2014-02-14 14:35:00,0.7\n";
//! let trace = parse_trace("cpu.csv", text, &TraceOptions::default()).unwrap();
//! assert_eq!(trace.column, "value");
//! assert_eq!(trace.values(), vec![0.5, 0.7]);
//! assert_eq!(trace.points[1].at.as_millis() - trace.points[0].at.as_millis(), 300_000);
//! ```
//!
//! Adding a format: give it a variant in [`TraceFormat`], teach [`TraceFormat::detect`] to
//! recognise it (or let callers force it with [`TraceOptions::format`]) and add a `parse_*`
//! function next to [`parse_csv`] and [`parse_telemetry_jsonl`] that returns a [`Trace`].

use std::io::Read;
use std::time::Duration;

use ballast_core::{Resource, Sample, Timestamp};

/// The spacing assumed for a CSV without a timestamp column when no interval is given: five
/// minutes, that of the Google and Azure traces in `../shared/traces`.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(300);

/// The bin width for event logs (request arrivals) when none is given.
pub const DEFAULT_BIN: Duration = Duration::from_secs(10);

/// One reading of a trace.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TracePoint {
    /// When it was taken.
    pub at: Timestamp,
    /// The value of the chosen column (a utilization, a byte count, a request rate, ...).
    pub value: f64,
}

/// How the timestamps of a [`Trace`] were obtained.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Spacing {
    /// Read from the file, one per row, gaps and irregularities kept.
    FromFile,
    /// The file has no timestamps: rows are evenly spaced by this interval from the epoch.
    Fixed(Duration),
    /// The file is an event log; each point counts the events of one bin of this width, as a
    /// rate per second (or, with a value column, the column's sum per second).
    Binned(Duration),
}

/// The input formats the reader understands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TraceFormat {
    /// Comma-separated values with a header row.
    Csv,
    /// The daemon's telemetry: one JSON object per line.
    TelemetryJsonl,
}

impl TraceFormat {
    /// Guesses the format from the text: JSON lines start with `{`, everything else is CSV.
    pub fn detect(text: &str) -> TraceFormat {
        match text.trim_start().as_bytes().first() {
            Some(b'{') => TraceFormat::TelemetryJsonl,
            _ => TraceFormat::Csv,
        }
    }
}

/// How to read a trace. The default reads `timestamp,value` files and guesses everything else.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TraceOptions {
    /// The value column (CSV), or the resource name (telemetry: `memory`, `cpu`, ...).
    /// `None`: `value` if present, else the first non-timestamp column (telemetry: `cpu`).
    pub column: Option<String>,
    /// The spacing of rows in a CSV without a timestamp column; `None` means
    /// [`DEFAULT_INTERVAL`]. Ignored when the file has timestamps.
    pub interval: Option<Duration>,
    /// Bin event logs into rates with this width. `None`: a CSV is treated as an event log only
    /// when the median gap between its timestamps is under one second, then with [`DEFAULT_BIN`].
    /// `Some(width)` forces binning of any timestamped CSV.
    pub bin: Option<Duration>,
    /// Force a format instead of detecting it.
    pub format: Option<TraceFormat>,
}

/// A parsed trace: one value column over time.
#[derive(Clone, Debug, PartialEq)]
pub struct Trace {
    /// The name the caller gave the input (usually its path), used in messages.
    pub source: String,
    /// The value column (or resource) that was read.
    pub column: String,
    /// How the timestamps were obtained.
    pub spacing: Spacing,
    /// The readings in file order.
    pub points: Vec<TracePoint>,
    /// Rows skipped because the value cell was empty (or, in telemetry, the resource was not
    /// measured in that sample).
    pub skipped: usize,
}

impl Trace {
    /// The values alone, in file order.
    pub fn values(&self) -> Vec<f64> {
        self.points.iter().map(|p| p.value).collect()
    }

    /// The median gap between consecutive timestamps (the trace's own sampling interval), or
    /// `None` with fewer than two points. Out-of-order pairs count as a zero gap.
    pub fn median_interval(&self) -> Option<Duration> {
        let mut gaps: Vec<u64> = self
            .points
            .windows(2)
            .map(|w| w[1].at.as_millis().saturating_sub(w[0].at.as_millis()))
            .collect();
        if gaps.is_empty() {
            return None;
        }
        let middle = gaps.len() / 2;
        let (_, median, _) = gaps.select_nth_unstable(middle);
        Some(Duration::from_millis(*median))
    }
}

/// Why a trace could not be read. Every variant names the input; those about one cell also name
/// its line (1-based, the header is line 1) and column.
#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    /// Reading the input failed.
    #[error("{source_name}: cannot read: {error}")]
    Io {
        /// The input's name.
        source_name: String,
        /// The underlying error.
        #[source]
        error: std::io::Error,
    },
    /// The input is not valid UTF-8 text.
    #[error("{source_name}: not UTF-8 text near byte {offset}")]
    NotText {
        /// The input's name.
        source_name: String,
        /// Where the first invalid byte is.
        offset: usize,
    },
    /// The CSV structure is broken (e.g. a row with a different number of fields).
    #[error("{source_name}:{line}: malformed CSV: {message}")]
    Csv {
        /// The input's name.
        source_name: String,
        /// The line, 1-based.
        line: u64,
        /// What the CSV reader said.
        message: String,
    },
    /// The input has no header row or no rows at all.
    #[error("{source_name}: empty input, expected a header row and readings")]
    Empty {
        /// The input's name.
        source_name: String,
    },
    /// The requested value column does not exist.
    #[error("{source_name}: no column `{column}`; the columns are: {available}")]
    NoSuchColumn {
        /// The input's name.
        source_name: String,
        /// The requested column.
        column: String,
        /// The columns the header has, comma-separated.
        available: String,
    },
    /// The header has no column that could hold values.
    #[error("{source_name}: no value column, only `{available}`; name one with --column")]
    NoValueColumn {
        /// The input's name.
        source_name: String,
        /// The columns the header has.
        available: String,
    },
    /// A request log has no timestamp column.
    #[error(
        "{source_name}: no `timestamp` column, only `{available}`; a request log needs the time \
         of each request"
    )]
    NoTimestampColumn {
        /// The input's name.
        source_name: String,
        /// The columns the header has.
        available: String,
    },
    /// A value cell is not a finite number.
    #[error("{source_name}:{line}: column `{column}`: `{text}` is not a finite number")]
    BadValue {
        /// The input's name.
        source_name: String,
        /// The line, 1-based.
        line: u64,
        /// The column's name.
        column: String,
        /// The cell's text.
        text: String,
    },
    /// A timestamp cell is neither seconds nor `YYYY-MM-DD HH:MM:SS[.fff]`.
    #[error(
        "{source_name}:{line}: column `{column}`: `{text}` is not a timestamp \
         (expected seconds or YYYY-MM-DD HH:MM:SS)"
    )]
    BadTimestamp {
        /// The input's name.
        source_name: String,
        /// The line, 1-based.
        line: u64,
        /// The column's name.
        column: String,
        /// The cell's text.
        text: String,
    },
    /// A telemetry line is not valid JSON.
    #[error("{source_name}:{line}: invalid JSON at column {column}: {message}")]
    Json {
        /// The input's name.
        source_name: String,
        /// The line, 1-based.
        line: u64,
        /// The character column, 1-based.
        column: u64,
        /// What the JSON parser said.
        message: String,
    },
    /// A telemetry trace was asked for a resource name that does not exist.
    #[error("{source_name}: `{column}` is not a resource (expected one of: {expected})")]
    UnknownResource {
        /// The input's name.
        source_name: String,
        /// The requested name.
        column: String,
        /// The valid names.
        expected: String,
    },
    /// An option is out of range (a zero interval or bin width).
    #[error("{source_name}: {message}")]
    BadOption {
        /// The input's name.
        source_name: String,
        /// What is wrong.
        message: String,
    },
}

/// Reads a whole trace from `reader`. `source_name` (usually the path) is used in errors.
pub fn read_trace<R: Read>(
    source_name: &str,
    reader: R,
    options: &TraceOptions,
) -> Result<Trace, TraceError> {
    let text = read_text(source_name, reader)?;
    parse_trace(source_name, &text, options)
}

/// Reads all of `reader` as UTF-8 text.
fn read_text<R: Read>(source_name: &str, mut reader: R) -> Result<String, TraceError> {
    let mut bytes = Vec::new();
    reader
        .read_to_end(&mut bytes)
        .map_err(|error| TraceError::Io {
            source_name: source_name.to_owned(),
            error,
        })?;
    String::from_utf8(bytes).map_err(|e| TraceError::NotText {
        source_name: source_name.to_owned(),
        offset: e.utf8_error().valid_up_to(),
    })
}

/// Reads a request log from `reader` as its arrivals ([`parse_arrivals`]).
pub fn read_arrivals<R: Read>(source_name: &str, reader: R) -> Result<Vec<Timestamp>, TraceError> {
    let text = read_text(source_name, reader)?;
    parse_arrivals(source_name, &text)
}

/// Parses a request log (a CSV with one row per request and a `timestamp` column, such as the
/// Azure LLM traces) into its arrival times, earliest first, without binning them. The other
/// columns are not read; blank lines are skipped; a cell that is not a timestamp is an error
/// naming its line.
pub fn parse_arrivals(source_name: &str, text: &str) -> Result<Vec<Timestamp>, TraceError> {
    let (mut reader, headers) = open_csv(source_name, text)?;
    let Some(time_index) = time_column(&headers) else {
        return Err(TraceError::NoTimestampColumn {
            source_name: source_name.to_owned(),
            available: headers.iter().collect::<Vec<_>>().join(", "),
        });
    };
    let time_column = headers.get(time_index).unwrap_or_default().to_owned();
    let mut arrivals = Vec::new();
    for record in reader.records() {
        let record = record.map_err(|e| csv_error(source_name, &e))?;
        if record.iter().all(str::is_empty) {
            continue;
        }
        let cell = record.get(time_index).unwrap_or_default();
        let at = parse_timestamp(cell).ok_or_else(|| TraceError::BadTimestamp {
            source_name: source_name.to_owned(),
            line: record.position().map_or(0, csv::Position::line),
            column: time_column.clone(),
            text: cell.to_owned(),
        })?;
        arrivals.push(at);
    }
    if arrivals.is_empty() {
        return Err(TraceError::Empty {
            source_name: source_name.to_owned(),
        });
    }
    arrivals.sort_unstable();
    Ok(arrivals)
}

/// The position of the timestamp column (`timestamp` or `time`, in any case), if there is one.
fn time_column(headers: &csv::StringRecord) -> Option<usize> {
    headers
        .iter()
        .position(|h| h.eq_ignore_ascii_case("timestamp") || h.eq_ignore_ascii_case("time"))
}

/// Refuses options out of range: a zero interval or bin width (a rate over a zero-width bin is
/// infinite).
fn check_options(source_name: &str, options: &TraceOptions) -> Result<(), TraceError> {
    for (what, value) in [("--interval", options.interval), ("bin width", options.bin)] {
        if value.is_some_and(|v| v.as_millis() == 0) {
            return Err(TraceError::BadOption {
                source_name: source_name.to_owned(),
                message: format!("{what} must be at least 1 ms"),
            });
        }
    }
    Ok(())
}

/// Parses a whole trace held in `text`, detecting its format unless [`TraceOptions::format`]
/// says which. `source_name` (usually the path) is used in errors.
pub fn parse_trace(
    source_name: &str,
    text: &str,
    options: &TraceOptions,
) -> Result<Trace, TraceError> {
    match options.format.unwrap_or_else(|| TraceFormat::detect(text)) {
        TraceFormat::Csv => parse_csv(source_name, text, options),
        TraceFormat::TelemetryJsonl => parse_telemetry_jsonl(source_name, text, options),
    }
}

/// A CSV reader over `text` (trimmed cells, a header row) and its header, which must name at
/// least one column.
fn open_csv<'a>(
    source_name: &str,
    text: &'a str,
) -> Result<(csv::Reader<&'a [u8]>, csv::StringRecord), TraceError> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .trim(csv::Trim::All)
        .from_reader(text.as_bytes());
    let headers = reader
        .headers()
        .map_err(|e| csv_error(source_name, &e))?
        .clone();
    if headers.is_empty() || headers.iter().all(str::is_empty) {
        return Err(TraceError::Empty {
            source_name: source_name.to_owned(),
        });
    }
    Ok((reader, headers))
}

/// Parses a CSV trace (see the module docs for the layouts it accepts).
pub fn parse_csv(
    source_name: &str,
    text: &str,
    options: &TraceOptions,
) -> Result<Trace, TraceError> {
    check_options(source_name, options)?;
    let name = || source_name.to_owned();
    let (mut reader, headers) = open_csv(source_name, text)?;
    let available = headers.iter().collect::<Vec<_>>().join(", ");
    let time_index = time_column(&headers);
    let value_index = match &options.column {
        Some(wanted) => headers
            .iter()
            .position(|h| h == wanted)
            .or_else(|| headers.iter().position(|h| h.eq_ignore_ascii_case(wanted)))
            .ok_or_else(|| TraceError::NoSuchColumn {
                source_name: name(),
                column: wanted.clone(),
                available: available.clone(),
            })?,
        None => headers
            .iter()
            .position(|h| h.eq_ignore_ascii_case("value"))
            .or_else(|| (0..headers.len()).find(|&i| Some(i) != time_index))
            .ok_or_else(|| TraceError::NoValueColumn {
                source_name: name(),
                available: available.clone(),
            })?,
    };
    let column = headers.get(value_index).unwrap_or_default().to_owned();
    let time_column = time_index
        .and_then(|i| headers.get(i))
        .unwrap_or_default()
        .to_owned();

    // Rows as (line, timestamp if any, value if present).
    let mut rows: Vec<(u64, Option<Timestamp>, Option<f64>)> = Vec::new();
    for record in reader.records() {
        let record = record.map_err(|e| csv_error(source_name, &e))?;
        let line = record.position().map_or(0, csv::Position::line);
        // A completely blank line is not a reading.
        if record.iter().all(str::is_empty) {
            continue;
        }
        let at = match time_index {
            Some(i) => {
                let cell = record.get(i).unwrap_or_default();
                Some(
                    parse_timestamp(cell).ok_or_else(|| TraceError::BadTimestamp {
                        source_name: name(),
                        line,
                        column: time_column.clone(),
                        text: cell.to_owned(),
                    })?,
                )
            }
            None => None,
        };
        let cell = record.get(value_index).unwrap_or_default();
        let value = if cell.is_empty() {
            None
        } else {
            match cell.parse::<f64>() {
                Ok(v) if v.is_finite() => Some(v),
                _ => {
                    return Err(TraceError::BadValue {
                        source_name: name(),
                        line,
                        column: column.clone(),
                        text: cell.to_owned(),
                    });
                }
            }
        };
        rows.push((line, at, value));
    }
    if rows.is_empty() {
        return Err(TraceError::Empty {
            source_name: name(),
        });
    }

    if time_index.is_none() {
        let interval = options.interval.unwrap_or(DEFAULT_INTERVAL);
        let step = u64::try_from(interval.as_millis()).unwrap_or(u64::MAX);
        let mut points = Vec::with_capacity(rows.len());
        let mut skipped = 0;
        for (row, (_, _, value)) in rows.iter().enumerate() {
            match value {
                Some(value) => points.push(TracePoint {
                    at: Timestamp::from_millis((row as u64).saturating_mul(step)),
                    value: *value,
                }),
                None => skipped += 1,
            }
        }
        return Ok(Trace {
            source: name(),
            column,
            spacing: Spacing::Fixed(interval),
            points,
            skipped,
        });
    }

    let stamps: Vec<Timestamp> = rows.iter().filter_map(|r| r.1).collect();
    let bin = options.bin.or_else(|| {
        let mut gaps: Vec<u64> = stamps
            .windows(2)
            .map(|w| w[1].as_millis().saturating_sub(w[0].as_millis()))
            .collect();
        if gaps.is_empty() {
            return None;
        }
        let middle = gaps.len() / 2;
        let (_, median, _) = gaps.select_nth_unstable(middle);
        (*median < 1000).then_some(DEFAULT_BIN)
    });
    match bin {
        Some(width) => Ok(bin_events(
            source_name,
            column,
            options.column.is_none(),
            &rows,
            width,
        )),
        None => {
            let mut points = Vec::with_capacity(rows.len());
            let mut skipped = 0;
            for (_, at, value) in &rows {
                match (at, value) {
                    (Some(at), Some(value)) => points.push(TracePoint {
                        at: *at,
                        value: *value,
                    }),
                    _ => skipped += 1,
                }
            }
            Ok(Trace {
                source: name(),
                column,
                spacing: Spacing::FromFile,
                points,
                skipped,
            })
        }
    }
}

/// Turns event rows into a rate series: one point per bin from the first event's bin to the
/// last's, the events per second in it (`count_only`, used when the caller named no column: what
/// an arrival log means is its arrivals), or else the value column's sum per second. A bin with no
/// events is a real zero rate, not a filled gap.
fn bin_events(
    source_name: &str,
    column: String,
    count_only: bool,
    rows: &[(u64, Option<Timestamp>, Option<f64>)],
    width: Duration,
) -> Trace {
    let width_ms = u64::try_from(width.as_millis()).unwrap_or(u64::MAX).max(1);
    let first = rows
        .iter()
        .filter_map(|r| r.1)
        .map(Timestamp::as_millis)
        .min()
        .unwrap_or(0);
    let last = rows
        .iter()
        .filter_map(|r| r.1)
        .map(Timestamp::as_millis)
        .max()
        .unwrap_or(0);
    let origin = first - first % width_ms;
    let n_bins = usize::try_from((last - origin) / width_ms + 1).unwrap_or(usize::MAX);
    // A log that spans more bins than it has rows many times over is binned too finely to be
    // useful; cap the allocation at something sane rather than run out of memory.
    let n_bins = n_bins.min(rows.len().saturating_mul(1000).max(1));
    let mut sums = vec![0.0_f64; n_bins];
    let mut skipped = 0;
    for (_, at, value) in rows {
        let Some(at) = at else {
            skipped += 1;
            continue;
        };
        let index = usize::try_from((at.as_millis() - origin) / width_ms).unwrap_or(usize::MAX);
        let Some(slot) = sums.get_mut(index) else {
            skipped += 1;
            continue;
        };
        *slot += if count_only {
            1.0
        } else {
            value.unwrap_or(0.0)
        };
    }
    // The width the bins really have (whole milliseconds, at least one).
    let seconds = width_ms as f64 / 1000.0;
    let points = sums
        .iter()
        .enumerate()
        .map(|(i, sum)| TracePoint {
            at: Timestamp::from_millis(origin.saturating_add((i as u64).saturating_mul(width_ms))),
            value: sum / seconds,
        })
        .collect();
    Trace {
        source: source_name.to_owned(),
        column: if count_only {
            "requests_per_second".to_owned()
        } else {
            format!("{column}_per_second")
        },
        spacing: Spacing::Binned(width),
        points,
        skipped,
    }
}

/// Parses the daemon's telemetry: one JSON object per line, as the telemetry log writes
/// [`ballast_core::telemetry::TelemetryRecord`]s (`{"type":"sample","at":..,...}`). A sample
/// record (or a bare [`Sample`], or an object with a `sample` field holding one) contributes the
/// utilization of the resource named by [`TraceOptions::column`] (default `cpu`) at the sample's
/// time. Records of other types (assessments, decisions, plugin events, calls) and samples that
/// did not measure the resource are skipped; blank lines are ignored.
pub fn parse_telemetry_jsonl(
    source_name: &str,
    text: &str,
    options: &TraceOptions,
) -> Result<Trace, TraceError> {
    check_options(source_name, options)?;
    let wanted = options.column.as_deref().unwrap_or("cpu");
    let resource: Resource = wanted.parse().map_err(|_| TraceError::UnknownResource {
        source_name: source_name.to_owned(),
        column: wanted.to_owned(),
        expected: Resource::ALL
            .iter()
            .map(|r| r.as_str())
            .collect::<Vec<_>>()
            .join(", "),
    })?;
    let mut points = Vec::new();
    let mut skipped = 0;
    for (index, line) in text.lines().enumerate() {
        let line_number = index as u64 + 1;
        if line.trim().is_empty() {
            continue;
        }
        let value: serde_json::Value =
            serde_json::from_str(line).map_err(|e| TraceError::Json {
                source_name: source_name.to_owned(),
                line: line_number,
                column: e.column() as u64,
                message: json_message(&e),
            })?;
        let kind = value.get("type").and_then(serde_json::Value::as_str);
        if kind.is_some_and(|kind| kind != "sample") {
            skipped += 1;
            continue;
        }
        let candidate = match value.get("sample") {
            Some(inner) => inner.clone(),
            None => value,
        };
        match serde_json::from_value::<Sample>(candidate) {
            Ok(sample) => match sample.utilization(resource) {
                Some(v) if v.is_finite() => points.push(TracePoint {
                    at: sample.at,
                    value: v,
                }),
                _ => skipped += 1,
            },
            Err(_) => skipped += 1,
        }
    }
    if points.is_empty() && skipped == 0 {
        return Err(TraceError::Empty {
            source_name: source_name.to_owned(),
        });
    }
    Ok(Trace {
        source: source_name.to_owned(),
        column: resource.as_str().to_owned(),
        spacing: Spacing::FromFile,
        points,
        skipped,
    })
}

/// serde_json's message without its own "at line 1 column 5" suffix (the line is ours).
fn json_message(error: &serde_json::Error) -> String {
    let text = error.to_string();
    match text.rfind(" at line ") {
        Some(cut) => text[..cut].to_owned(),
        None => text,
    }
}

fn csv_error(source_name: &str, error: &csv::Error) -> TraceError {
    let line = error.position().map_or(0, csv::Position::line);
    let message = match error.kind() {
        csv::ErrorKind::UnequalLengths {
            expected_len, len, ..
        } => format!("expected {expected_len} fields, found {len}"),
        csv::ErrorKind::Utf8 { err, .. } => format!("not UTF-8 text in field {}", err.field() + 1),
        _ => error.to_string(),
    };
    TraceError::Csv {
        source_name: source_name.to_owned(),
        line,
        message,
    }
}

/// Parses seconds since the epoch (`1392388200`, `300`, `12.5`) or a UTC date and time
/// (`2014-02-14 14:30:00`, `2023-11-16 18:17:03.9799600`, `2014-02-14T14:30:00Z`).
pub fn parse_timestamp(text: &str) -> Option<Timestamp> {
    let text = text.trim();
    if let Ok(seconds) = text.parse::<f64>() {
        if !(0.0..=1.0e15).contains(&seconds) {
            return None;
        }
        return Some(Timestamp::from_millis((seconds * 1000.0).round() as u64));
    }
    let text = text.strip_suffix('Z').unwrap_or(text);
    let (date, time) = text.split_once([' ', 'T'])?;
    let mut date_parts = date.splitn(3, '-');
    let year: i64 = date_parts.next()?.parse().ok()?;
    let month: u32 = date_parts.next()?.parse().ok()?;
    let day: u32 = date_parts.next()?.parse().ok()?;
    let (clock, fraction) = match time.split_once('.') {
        Some((clock, fraction)) => (clock, Some(fraction)),
        None => (time, None),
    };
    let mut clock_parts = clock.splitn(3, ':');
    let hour: u64 = clock_parts.next()?.parse().ok()?;
    let minute: u64 = clock_parts.next()?.parse().ok()?;
    let second: u64 = match clock_parts.next() {
        Some(s) => s.parse().ok()?,
        None => 0,
    };
    if !(1..=12).contains(&month) || hour > 23 || minute > 59 {
        return None;
    }
    let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
    let month_days = match month {
        2 if leap => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    };
    if !(1..=month_days).contains(&day) {
        return None;
    }
    if second > 60 || !(1970..=9999).contains(&year) {
        return None;
    }
    let millis_fraction = match fraction {
        Some(digits) if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) => {
            // Keep the first three digits as milliseconds, padding shorter fractions.
            let padded: String = digits.chars().chain("000".chars()).take(3).collect();
            padded.parse::<u64>().ok()?
        }
        Some(_) => return None,
        None => 0,
    };
    let days = u64::try_from(days_from_civil(year, month, day)).ok()?;
    let seconds = days * 86_400 + hour * 3600 + minute * 60 + second;
    Some(Timestamp::from_millis(seconds * 1000 + millis_fraction))
}

/// Days from 1970-01-01 to the given proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month = i64::from(month);
    let day_of_year =
        (153 * (if month > 2 { month - 3 } else { month + 9 }) + 2) / 5 + i64::from(day) - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str, options: &TraceOptions) -> Result<Trace, TraceError> {
        parse_trace("t.csv", text, options)
    }

    /// Found by the `trace_csv` fuzz target: a zero bin width handed to `parse_csv` directly
    /// (not through `parse_trace`) divided by zero into infinite rates.
    #[test]
    fn a_zero_or_sub_millisecond_bin_is_refused_by_every_entry_point() {
        let text = "\t\t\t\ttimestamp,\0\0vlue\n2014-02-14 14:3.3,0";
        for bin in [Duration::ZERO, Duration::from_micros(500)] {
            let options = TraceOptions {
                interval: Some(Duration::from_millis(738_817_068)),
                bin: Some(bin),
                ..TraceOptions::default()
            };
            for result in [
                parse_csv("fuzz.csv", text, &options),
                parse_telemetry_jsonl("t.jsonl", "", &options),
                parse_trace("t.csv", text, &options),
            ] {
                let error = result.expect_err("a zero bin is refused").to_string();
                assert!(error.contains("bin width must be at least 1 ms"), "{error}");
            }
        }
        // The smallest bin there is gives finite rates.
        let options = TraceOptions {
            bin: Some(Duration::from_millis(1)),
            ..TraceOptions::default()
        };
        let trace = parse_csv(
            "t.csv",
            "timestamp,tokens\n2014-02-14 14:30:00,5\n",
            &options,
        )
        .unwrap();
        assert_eq!(trace.points.len(), 1);
        assert_eq!(trace.points[0].value, 1000.0);
    }

    #[test]
    fn dates_become_utc_milliseconds() {
        assert_eq!(
            parse_timestamp("1970-01-01 00:00:00"),
            Some(Timestamp::ZERO)
        );
        assert_eq!(
            parse_timestamp("2014-02-14 14:30:00"),
            Some(Timestamp::from_secs(1_392_388_200))
        );
        assert_eq!(
            parse_timestamp("2023-11-16 18:17:03.9799600"),
            Some(Timestamp::from_millis(1_700_158_623_979))
        );
        assert_eq!(
            parse_timestamp("2024-02-29T00:00:00Z"),
            Some(Timestamp::from_secs(1_709_164_800))
        );
        assert_eq!(parse_timestamp("300"), Some(Timestamp::from_secs(300)));
        for bad in [
            "",
            "yesterday",
            "2014-13-01 00:00:00",
            "2026-02-31T00:00:00Z",
            "2023-02-29 00:00:00",
            "2014-04-31 00:00:00",
            "2014-02-14",
            "-5",
            "NaN",
        ] {
            assert_eq!(parse_timestamp(bad), None, "{bad}");
        }
    }

    #[test]
    fn nab_layout_keeps_gaps() {
        let text = "timestamp,value\n2014-02-14 14:30:00,1\n2014-02-14 14:35:00,2\n\
                    2014-02-14 15:35:00,3\n";
        let trace = parse(text, &TraceOptions::default()).unwrap();
        assert_eq!(trace.spacing, Spacing::FromFile);
        assert_eq!(trace.values(), vec![1.0, 2.0, 3.0]);
        assert_eq!(
            trace.points[2].at - trace.points[1].at,
            Duration::from_secs(3600)
        );
        assert_eq!(trace.median_interval(), Some(Duration::from_secs(3600)));
    }

    #[test]
    fn no_timestamp_column_is_evenly_spaced_and_column_is_picked_by_name() {
        let text = "avg_cpu,avg_mem\n0.4,0.3\n0.5,0.35\n";
        let options = TraceOptions {
            column: Some("AVG_MEM".into()),
            interval: Some(Duration::from_secs(60)),
            ..TraceOptions::default()
        };
        let trace = parse(text, &options).unwrap();
        assert_eq!(trace.column, "avg_mem");
        assert_eq!(trace.spacing, Spacing::Fixed(Duration::from_secs(60)));
        assert_eq!(trace.points[1].at, Timestamp::from_secs(60));
        assert_eq!(trace.values(), vec![0.3, 0.35]);
        let default = parse(text, &TraceOptions::default()).unwrap();
        assert_eq!(default.column, "avg_cpu");
        assert_eq!(default.points[1].at, Timestamp::from_secs(300));
    }

    #[test]
    fn numeric_timestamps_are_seconds() {
        let text = "timestamp,cpu_usage,assigned_mem\n0,5.5,1\n300,6.5,2";
        let trace = parse(text, &TraceOptions::default()).unwrap();
        assert_eq!(trace.column, "cpu_usage");
        assert_eq!(trace.points[1].at, Timestamp::from_secs(300));
    }

    #[test]
    fn request_logs_read_as_arrivals_keep_every_request_in_time_order() {
        let text = "TIMESTAMP,ContextTokens,GeneratedTokens\n\
                    2023-11-16 18:17:00.2,20,1\n2023-11-16 18:17:00.1,10,2\n\n\
                    2023-11-16 18:17:25.0,40,3\n";
        let arrivals = parse_arrivals("log.csv", text).unwrap();
        let start = parse_timestamp("2023-11-16 18:17:00").unwrap().as_millis();
        let offsets: Vec<u64> = arrivals.iter().map(|t| t.as_millis() - start).collect();
        assert_eq!(offsets, vec![100, 200, 25_000]);
        let error = parse_arrivals("log.csv", "ContextTokens\n10\n").unwrap_err();
        assert_eq!(
            error.to_string(),
            "log.csv: no `timestamp` column, only `ContextTokens`; a request log needs the time \
             of each request"
        );
        let error = parse_arrivals("log.csv", "timestamp,x\n5,1\nsoon,2\n").unwrap_err();
        assert_eq!(
            error.to_string(),
            "log.csv:3: column `timestamp`: `soon` is not a timestamp (expected seconds or \
             YYYY-MM-DD HH:MM:SS)"
        );
        assert!(matches!(
            parse_arrivals("log.csv", "timestamp\n"),
            Err(TraceError::Empty { .. })
        ));
    }

    #[test]
    fn arrival_logs_become_request_rates() {
        let text = "TIMESTAMP,ContextTokens\n2023-11-16 18:17:00.1,10\n2023-11-16 18:17:00.2,20\n\
                    2023-11-16 18:17:00.3,30\n2023-11-16 18:17:25.0,40\n";
        let trace = parse(text, &TraceOptions::default()).unwrap();
        assert_eq!(trace.spacing, Spacing::Binned(DEFAULT_BIN));
        assert_eq!(trace.column, "requests_per_second");
        // Bins [18:17:00, :10) holds three, [:10, :20) none, [:20, :30) one.
        assert_eq!(trace.values(), vec![0.3, 0.0, 0.1]);
        let tokens = parse(
            text,
            &TraceOptions {
                column: Some("ContextTokens".into()),
                bin: Some(Duration::from_secs(1)),
                ..TraceOptions::default()
            },
        )
        .unwrap();
        assert_eq!(tokens.column, "ContextTokens_per_second");
        assert_eq!(tokens.points.len(), 26);
        assert_eq!(tokens.points[0].value, 60.0);
        assert_eq!(tokens.points[25].value, 40.0);
    }

    #[test]
    fn errors_name_file_line_and_column() {
        let bad_value = parse(
            "timestamp,value\n2014-02-14 14:30:00,1\n2014-02-14 14:35:00,x\n",
            &TraceOptions::default(),
        );
        assert_eq!(
            bad_value.unwrap_err().to_string(),
            "t.csv:3: column `value`: `x` is not a finite number"
        );
        let bad_time = parse("timestamp,value\nlater,1\n", &TraceOptions::default());
        assert_eq!(
            bad_time.unwrap_err().to_string(),
            "t.csv:2: column `timestamp`: `later` is not a timestamp \
             (expected seconds or YYYY-MM-DD HH:MM:SS)"
        );
        let ragged = parse("a,b\n1,2\n3\n", &TraceOptions::default());
        assert_eq!(
            ragged.unwrap_err().to_string(),
            "t.csv:3: malformed CSV: expected 2 fields, found 1"
        );
        let missing = parse(
            "a,b\n1,2\n",
            &TraceOptions {
                column: Some("c".into()),
                ..TraceOptions::default()
            },
        );
        assert_eq!(
            missing.unwrap_err().to_string(),
            "t.csv: no column `c`; the columns are: a, b"
        );
        assert!(matches!(
            parse("", &TraceOptions::default()),
            Err(TraceError::Empty { .. })
        ));
        assert!(matches!(
            parse("timestamp,value\n", &TraceOptions::default()),
            Err(TraceError::Empty { .. })
        ));
        assert!(matches!(
            parse("timestamp\n2014-02-14 14:30:00\n", &TraceOptions::default()),
            Err(TraceError::NoValueColumn { .. })
        ));
    }

    #[test]
    fn empty_cells_are_skipped_not_filled() {
        let trace = parse("a\n1\n\n2\n", &TraceOptions::default()).unwrap();
        assert_eq!(trace.values(), vec![1.0, 2.0]);
        let trace = parse("a,b\n1,\n2,3\n", &TraceOptions::default()).unwrap();
        assert_eq!(trace.values(), vec![1.0, 2.0]);
        let trace = parse(
            "a,b\n1,\n2,3\n",
            &TraceOptions {
                column: Some("b".into()),
                ..TraceOptions::default()
            },
        )
        .unwrap();
        assert_eq!(trace.values(), vec![3.0]);
        assert_eq!(trace.skipped, 1);
        assert_eq!(trace.points[0].at, Timestamp::from_secs(300));
    }

    #[test]
    fn telemetry_lines_give_the_resource() {
        let mut sample = Sample::unavailable(Timestamp::from_secs(5), "test");
        sample.cpu = ballast_core::Metric::available(ballast_core::CpuReading {
            utilization: 0.25,
            load_average: [0.0; 3],
            cores: 2,
            quota: None,
        });
        let line = serde_json::to_string(&sample).unwrap();
        let record = serde_json::to_string(&ballast_core::telemetry::TelemetryRecord::Sample(
            Box::new(sample.clone()),
        ))
        .unwrap();
        let assessment = serde_json::to_string(
            &ballast_core::telemetry::TelemetryRecord::Assessment(ballast_core::Assessment {
                at: Timestamp::from_secs(6),
                resources: Vec::new(),
            }),
        )
        .unwrap();
        let text = format!(
            "{line}\n{{\"sample\":{line}}}\n{{\"decision\":1}}\n{record}\n\n{assessment}\n"
        );
        let trace = parse_trace("t.jsonl", &text, &TraceOptions::default()).unwrap();
        assert_eq!(trace.values(), vec![0.25, 0.25, 0.25]);
        assert_eq!(trace.skipped, 2);
        let memory = TraceOptions {
            column: Some("memory".into()),
            ..TraceOptions::default()
        };
        let trace = parse_trace("t.jsonl", &text, &memory).unwrap();
        assert!(trace.points.is_empty());
        assert_eq!(trace.skipped, 5);
        let bad = TraceOptions {
            column: Some("watts".into()),
            ..TraceOptions::default()
        };
        assert!(matches!(
            parse_trace("t.jsonl", &text, &bad),
            Err(TraceError::UnknownResource { .. })
        ));
        let error = parse_trace("t.jsonl", "{\"at\": 1}\n{oops\n", &TraceOptions::default());
        assert!(
            error
                .unwrap_err()
                .to_string()
                .starts_with("t.jsonl:2: invalid JSON at column")
        );
    }
}
