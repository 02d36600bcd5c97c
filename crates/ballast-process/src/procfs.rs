//! What a process and its descendants use, from `/proc`: pure parsers of `/proc/PID/stat` and
//! `/proc/PID/io` (tested on fixture text), a thin reader that walks a process tree under an
//! injectable root, and [`UsageMeter`], which turns readings into rates and totals that survive
//! restarts.

use std::path::{Path, PathBuf};

use ballast_core::{ProcessUsage, Timestamp};

/// Why `/proc` text could not be read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProcError {
    /// The process does not exist (any more).
    #[error("process {pid} does not exist")]
    Gone {
        /// Its id.
        pid: u32,
    },
    /// A file could not be read.
    #[error("cannot read {path}: {message}")]
    Read {
        /// The file.
        path: String,
        /// The IO error.
        message: String,
    },
    /// A file's text is not what the kernel writes.
    #[error("{what}: {problem}")]
    Malformed {
        /// Which file.
        what: &'static str,
        /// What is wrong.
        problem: String,
    },
}

/// The fields of `/proc/PID/stat` that supervision needs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stat {
    /// The state letter: R, S, D, T (stopped), t, Z, X, I.
    pub state: char,
    /// The parent's id.
    pub ppid: u32,
    /// The process group.
    pub pgrp: i32,
    /// User time, in clock ticks.
    pub utime: u64,
    /// System time, in clock ticks.
    pub stime: u64,
    /// User time of waited-for children, in clock ticks.
    pub cutime: u64,
    /// System time of waited-for children, in clock ticks.
    pub cstime: u64,
    /// Threads.
    pub threads: u32,
    /// Virtual memory, in bytes.
    pub vsize: u64,
    /// Resident memory, in pages.
    pub rss_pages: u64,
    /// When it started, in clock ticks since boot: with the pid, it names one process for the
    /// life of the machine.
    pub start_ticks: u64,
}

/// Parses `/proc/PID/stat`. The command name (in parentheses) may contain spaces and
/// parentheses itself, so the fields are counted from the last `)`.
pub fn parse_stat(text: &str) -> Result<Stat, ProcError> {
    let malformed = |problem: String| ProcError::Malformed {
        what: "/proc/PID/stat",
        problem,
    };
    let (_, rest) = text
        .rsplit_once(')')
        .ok_or_else(|| malformed("no `)` closing the command name".to_owned()))?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // Fields 3 (state) .. 24 (rss) are indices 0 .. 21 here.
    if fields.len() < 22 {
        return Err(malformed(format!(
            "{} fields after the command name, expected at least 22",
            fields.len()
        )));
    }
    let number = |index: usize, name: &str| -> Result<u64, ProcError> {
        fields[index]
            .parse::<u64>()
            .map_err(|_| malformed(format!("{name} `{}` is not a number", fields[index])))
    };
    let mut state_chars = fields[0].chars();
    let state = match (state_chars.next(), state_chars.next()) {
        (Some(c), None) if c.is_ascii_alphabetic() => c,
        _ => {
            return Err(malformed(format!(
                "state `{}` is not one letter",
                fields[0]
            )));
        }
    };
    Ok(Stat {
        state,
        ppid: u32::try_from(number(1, "ppid")?).map_err(|_| malformed("ppid overflows".into()))?,
        pgrp: fields[2]
            .parse::<i32>()
            .map_err(|_| malformed(format!("pgrp `{}` is not a number", fields[2])))?,
        utime: number(11, "utime")?,
        stime: number(12, "stime")?,
        cutime: number(13, "cutime")?,
        cstime: number(14, "cstime")?,
        threads: u32::try_from(number(17, "num_threads")?).unwrap_or(u32::MAX),
        start_ticks: number(19, "starttime")?,
        vsize: number(20, "vsize")?,
        rss_pages: number(21, "rss")?,
    })
}

/// The storage figures of `/proc/PID/io`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Io {
    /// Bytes read from storage.
    pub read_bytes: u64,
    /// Bytes written to storage.
    pub write_bytes: u64,
}

/// Parses `/proc/PID/io` (`read_bytes` and `write_bytes`; the other lines are ignored).
pub fn parse_io(text: &str) -> Result<Io, ProcError> {
    let malformed = |problem: String| ProcError::Malformed {
        what: "/proc/PID/io",
        problem,
    };
    let mut read = None;
    let mut write = None;
    for line in text.lines() {
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        let slot = match key.trim() {
            "read_bytes" => &mut read,
            "write_bytes" => &mut write,
            _ => continue,
        };
        *slot = Some(
            value
                .trim()
                .parse::<u64>()
                .map_err(|_| malformed(format!("{key} `{}` is not a number", value.trim())))?,
        );
    }
    match (read, write) {
        (Some(read_bytes), Some(write_bytes)) => Ok(Io {
            read_bytes,
            write_bytes,
        }),
        _ => Err(malformed("no read_bytes or write_bytes line".to_owned())),
    }
}

/// Parses a `/proc/PID/task/TID/children` file: process ids separated by spaces.
pub fn parse_children(text: &str) -> Result<Vec<u32>, ProcError> {
    text.split_whitespace()
        .map(|p| {
            p.parse::<u32>().map_err(|_| ProcError::Malformed {
                what: "/proc/PID/task/TID/children",
                problem: format!("`{p}` is not a process id"),
            })
        })
        .collect()
}

/// One reading of a process tree.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TreeReading {
    /// The root's id.
    pub pid: u32,
    /// The root's state letter (`T` when stopped).
    pub state: char,
    /// Processes read.
    pub processes: u32,
    /// Resident memory, bytes.
    pub rss_bytes: u64,
    /// Virtual memory, bytes.
    pub vsz_bytes: u64,
    /// CPU time of the tree (and of its waited-for children), clock ticks.
    pub cpu_ticks: u64,
    /// Threads.
    pub threads: u32,
    /// Open file descriptors (of the processes whose `fd` directory could be read).
    pub open_fds: u32,
    /// Storage bytes read (of the processes whose `io` could be read).
    pub read_bytes: u64,
    /// Storage bytes written.
    pub write_bytes: u64,
}

/// The most processes a tree reading visits.
const MAX_TREE: usize = 4096;

/// Reads process trees under a `/proc` root (the real one, or a fixture tree in tests).
#[derive(Clone, Debug)]
pub struct ProcReader {
    root: PathBuf,
    page_size: u64,
}

impl Default for ProcReader {
    fn default() -> Self {
        ProcReader::new("/proc", page_size())
    }
}

/// The system's page size in bytes.
pub fn page_size() -> u64 {
    // SAFETY: sysconf has no preconditions and only reads configuration.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u64::try_from(size).ok().filter(|s| *s > 0).unwrap_or(4096)
}

/// Clock ticks per second, the unit of CPU times in `/proc`.
pub fn ticks_per_second() -> u64 {
    // SAFETY: as in `page_size`.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    u64::try_from(ticks).ok().filter(|t| *t > 0).unwrap_or(100)
}

impl ProcReader {
    /// A reader of `root` (normally `/proc`), with the given page size.
    pub fn new(root: impl Into<PathBuf>, page_size: u64) -> ProcReader {
        ProcReader {
            root: root.into(),
            page_size,
        }
    }

    fn read(&self, path: &Path) -> Result<String, std::io::Error> {
        std::fs::read_to_string(path)
    }

    /// The parsed `stat` of one process.
    pub fn stat(&self, pid: u32) -> Result<Stat, ProcError> {
        let path = self.root.join(pid.to_string()).join("stat");
        match self.read(&path) {
            Ok(text) => parse_stat(&text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(ProcError::Gone { pid }),
            Err(e) => Err(ProcError::Read {
                path: path.display().to_string(),
                message: e.to_string(),
            }),
        }
    }

    /// The direct children of `pid`, from its tasks' `children` files.
    fn children(&self, pid: u32) -> Vec<u32> {
        let tasks = self.root.join(pid.to_string()).join("task");
        let Ok(entries) = std::fs::read_dir(&tasks) else {
            return Vec::new();
        };
        let mut children = Vec::new();
        for entry in entries.flatten() {
            if let Ok(text) = self.read(&entry.path().join("children")) {
                children.extend(parse_children(&text).unwrap_or_default());
            }
        }
        children
    }

    /// Reads `pid` and every descendant. Fails only if `pid` itself cannot be read; a child
    /// that exits during the walk is skipped.
    pub fn read_tree(&self, pid: u32) -> Result<TreeReading, ProcError> {
        let root_stat = self.stat(pid)?;
        let mut reading = TreeReading {
            pid,
            state: root_stat.state,
            ..TreeReading::default()
        };
        let mut stack = vec![(pid, root_stat)];
        let mut seen = 0usize;
        while let Some((current, stat)) = stack.pop() {
            seen += 1;
            reading.processes += 1;
            reading.rss_bytes += stat.rss_pages.saturating_mul(self.page_size);
            reading.vsz_bytes += stat.vsize;
            reading.cpu_ticks += stat.utime + stat.stime + stat.cutime + stat.cstime;
            reading.threads += stat.threads;
            let dir = self.root.join(current.to_string());
            if let Ok(fds) = std::fs::read_dir(dir.join("fd")) {
                reading.open_fds += u32::try_from(fds.count()).unwrap_or(u32::MAX);
            }
            if let Ok(io) = self.read(&dir.join("io")).map(|t| parse_io(&t))
                && let Ok(io) = io
            {
                reading.read_bytes += io.read_bytes;
                reading.write_bytes += io.write_bytes;
            }
            if seen >= MAX_TREE {
                break;
            }
            for child in self.children(current) {
                if let Ok(stat) = self.stat(child) {
                    stack.push((child, stat));
                }
            }
        }
        Ok(reading)
    }
}

/// Turns successive [`TreeReading`]s of a plugin into [`ProcessUsage`]: CPU as cores between
/// readings, and CPU time and IO bytes as totals that carry over when the process is restarted
/// (a new pid starts its counters at zero).
#[derive(Clone, Debug)]
pub struct UsageMeter {
    ticks_per_second: f64,
    last: Option<(Timestamp, TreeReading)>,
    base_cpu_ticks: u64,
    base_read: u64,
    base_write: u64,
}

impl UsageMeter {
    /// A meter for CPU times counted in `ticks_per_second`.
    pub fn new(ticks_per_second: u64) -> UsageMeter {
        UsageMeter {
            ticks_per_second: ticks_per_second.max(1) as f64,
            last: None,
            base_cpu_ticks: 0,
            base_read: 0,
            base_write: 0,
        }
    }

    /// The usage from `reading`, taken at `now`, and whether the CPU figure is a real delta
    /// (false on the first reading of a process).
    pub fn reading(&mut self, now: Timestamp, reading: &TreeReading) -> (ProcessUsage, bool) {
        let mut cpu_cores = 0.0;
        let mut has_delta = false;
        if let Some((then, last)) = &self.last {
            if last.pid == reading.pid {
                let seconds = (now - *then).as_secs_f64();
                if seconds > 0.0 {
                    let ticks = reading.cpu_ticks.saturating_sub(last.cpu_ticks);
                    cpu_cores = ticks as f64 / self.ticks_per_second / seconds;
                    has_delta = true;
                }
            } else {
                self.base_cpu_ticks += last.cpu_ticks;
                self.base_read += last.read_bytes;
                self.base_write += last.write_bytes;
            }
        }
        // Counters of a process never go down; a child that exited unwaited can make the sum
        // dip, which is not counted as negative time.
        let mut reading = *reading;
        if let Some((_, last)) = &self.last
            && last.pid == reading.pid
        {
            reading.cpu_ticks = reading.cpu_ticks.max(last.cpu_ticks);
            reading.read_bytes = reading.read_bytes.max(last.read_bytes);
            reading.write_bytes = reading.write_bytes.max(last.write_bytes);
        }
        self.last = Some((now, reading));
        let usage = ProcessUsage {
            pid: reading.pid,
            processes: reading.processes,
            rss_bytes: reading.rss_bytes,
            vsz_bytes: reading.vsz_bytes,
            cpu_cores,
            cpu_seconds: (self.base_cpu_ticks + reading.cpu_ticks) as f64 / self.ticks_per_second,
            open_fds: reading.open_fds,
            threads: reading.threads,
            read_bytes: self.base_read + reading.read_bytes,
            write_bytes: self.base_write + reading.write_bytes,
        };
        (usage, has_delta)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STAT: &str = "4242 (python3 (indexer)) S 4200 4242 4242 0 -1 4194304 1843 0 0 0 150 30 7 3 20 0 3 0 123456 52428800 2560 18446744073709551615 1 1 0 0 0 0 0 16781312 2 0 0 0 17 1 0 0 0 0 0";

    #[test]
    fn stat_fields_are_counted_from_the_last_parenthesis() {
        let stat = parse_stat(STAT).unwrap();
        assert_eq!(
            stat,
            Stat {
                state: 'S',
                ppid: 4200,
                pgrp: 4242,
                utime: 150,
                stime: 30,
                cutime: 7,
                cstime: 3,
                threads: 3,
                vsize: 52_428_800,
                rss_pages: 2560,
                start_ticks: 123_456,
            }
        );
        let stopped = STAT.replace(") S ", ") T ");
        assert_eq!(parse_stat(&stopped).unwrap().state, 'T');
    }

    #[test]
    fn malformed_stat_says_what_is_wrong() {
        for (text, expected) in [
            ("", "no `)`"),
            ("1 (x) S 1 2", "fields after the command name"),
            (
                &STAT.replace(" 150 30 ", " lots 30 ")[..],
                "utime `lots` is not a number",
            ),
            (&STAT.replace(") S ", ") SS ")[..], "state `SS`"),
        ] {
            let error = parse_stat(text).unwrap_err().to_string();
            assert!(error.contains(expected), "{error}");
        }
    }

    #[test]
    fn io_and_children_parse() {
        let io = "rchar: 100\nwchar: 50\nsyscr: 3\nsyscw: 2\nread_bytes: 4096\nwrite_bytes: 8192\ncancelled_write_bytes: 0\n";
        assert_eq!(
            parse_io(io).unwrap(),
            Io {
                read_bytes: 4096,
                write_bytes: 8192
            }
        );
        assert!(parse_io("rchar: 1\n").is_err());
        assert!(parse_io("read_bytes: x\nwrite_bytes: 1").is_err());
        assert_eq!(parse_children("12 13 \n").unwrap(), [12, 13]);
        assert_eq!(parse_children("").unwrap(), Vec::<u32>::new());
        assert!(parse_children("12 x").is_err());
    }

    #[test]
    fn the_meter_gives_cores_between_readings_and_totals_across_restarts() {
        let mut meter = UsageMeter::new(100);
        let t0 = Timestamp::from_secs(100);
        let first = TreeReading {
            pid: 10,
            cpu_ticks: 500,
            read_bytes: 1000,
            ..TreeReading::default()
        };
        let (usage, delta) = meter.reading(t0, &first);
        assert!(!delta);
        assert_eq!(usage.cpu_seconds, 5.0);
        let second = TreeReading {
            cpu_ticks: 700,
            ..first
        };
        let (usage, delta) = meter.reading(t0 + std::time::Duration::from_secs(4), &second);
        assert!(delta);
        assert_eq!(usage.cpu_cores, 0.5);
        // A restart: the new process counts from zero, the totals go on.
        let restarted = TreeReading {
            pid: 11,
            cpu_ticks: 100,
            read_bytes: 10,
            ..TreeReading::default()
        };
        let (usage, delta) = meter.reading(t0 + std::time::Duration::from_secs(8), &restarted);
        assert!(!delta);
        assert_eq!(usage.cpu_seconds, 8.0);
        assert_eq!(usage.read_bytes, 1010);
    }
}
