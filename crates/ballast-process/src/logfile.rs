//! Per-plugin log files: every line a plugin process writes (stdout and stderr) with the time
//! and the stream, rotated by size (`NAME.log`, `NAME.log.1`, ... up to a count), and the
//! readers behind `ballast plugin NAME logs`: the last N lines across the rotated files, and
//! what was appended since an offset.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, UNIX_EPOCH};

use ballast_core::Timestamp;

/// Which stream a line came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stream {
    /// Standard output (lines that are not protocol messages).
    Stdout,
    /// Standard error.
    Stderr,
    /// A `log` message of the protocol.
    Log,
    /// The host's own note (started, exited, signalled).
    Host,
}

impl Stream {
    fn as_str(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
            Stream::Log => "log",
            Stream::Host => "host",
        }
    }
}

/// The size and count of a plugin's log files.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rotation {
    /// Rotate when the current file reaches this many bytes.
    pub max_bytes: u64,
    /// Keep this many rotated files besides the current one.
    pub keep: usize,
}

impl Default for Rotation {
    fn default() -> Self {
        Rotation {
            max_bytes: 4 << 20,
            keep: 3,
        }
    }
}

struct Open {
    file: File,
    size: u64,
}

/// One plugin's log, shared by the threads that read its output.
pub struct LogFile {
    path: PathBuf,
    rotation: Rotation,
    open: Mutex<Option<Open>>,
}

impl std::fmt::Debug for LogFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogFile")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

/// The file that `keep`-th rotation of `path` goes to: `path.N`.
fn rotated(path: &Path, n: usize) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".{n}"));
    PathBuf::from(name)
}

impl LogFile {
    /// The log at `path` (created on the first line, with its directory).
    pub fn new(path: PathBuf, rotation: Rotation) -> LogFile {
        LogFile {
            path,
            rotation,
            open: Mutex::new(None),
        }
    }

    /// Where it is written.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one line. Write errors are logged once per open attempt and otherwise ignored:
    /// a full disk must not stop the plugin.
    pub fn write(&self, at: Timestamp, stream: Stream, text: &[u8]) {
        let mut line = format!(
            "{} {} ",
            humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(at.as_millis())),
            stream.as_str()
        )
        .into_bytes();
        let text = text.strip_suffix(b"\r").unwrap_or(text);
        line.extend(String::from_utf8_lossy(text).bytes());
        line.push(b'\n');
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        if open
            .as_ref()
            .is_some_and(|o| o.size >= self.rotation.max_bytes)
        {
            *open = None;
            self.rotate();
        }
        if open.is_none() {
            match self.open_file() {
                Ok(file) => *open = Some(file),
                Err(error) => {
                    tracing::warn!(file = %self.path.display(), %error, "cannot open a plugin log");
                    return;
                }
            }
        }
        if let Some(o) = open.as_mut() {
            match o.file.write_all(&line) {
                Ok(()) => o.size += line.len() as u64,
                Err(error) => {
                    tracing::warn!(file = %self.path.display(), %error, "cannot write a plugin log");
                    *open = None;
                }
            }
        }
    }

    fn open_file(&self) -> std::io::Result<Open> {
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)?;
        let size = file.metadata()?.len();
        Ok(Open { file, size })
    }

    fn rotate(&self) {
        if self.rotation.keep == 0 {
            let _ = std::fs::remove_file(&self.path);
            return;
        }
        let _ = std::fs::remove_file(rotated(&self.path, self.rotation.keep));
        for n in (1..self.rotation.keep).rev() {
            let _ = std::fs::rename(rotated(&self.path, n), rotated(&self.path, n + 1));
        }
        let _ = std::fs::rename(&self.path, rotated(&self.path, 1));
    }
}

/// The last `n` lines of the log at `path`, oldest first, reading the rotated files (`path.1`,
/// `path.2`, ...) when the current one has fewer. A missing log has no lines.
pub fn tail(path: &Path, n: usize) -> std::io::Result<Vec<String>> {
    let mut lines: Vec<String> = Vec::new();
    let mut index = 0;
    loop {
        let file = if index == 0 {
            path.to_owned()
        } else {
            rotated(path, index)
        };
        let mut text = match std::fs::read(&file) {
            Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => break,
            Err(e) => return Err(e),
        };
        if text.ends_with('\n') {
            text.pop();
        }
        let mut older: Vec<String> = if text.is_empty() {
            Vec::new()
        } else {
            text.split('\n').map(str::to_owned).collect()
        };
        let want = n - lines.len();
        if older.len() > want {
            older.drain(..older.len() - want);
        }
        older.append(&mut lines);
        lines = older;
        if lines.len() >= n {
            break;
        }
        index += 1;
    }
    Ok(lines)
}

/// What [`read_from`] found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Appended {
    /// Complete lines written since the offset.
    pub lines: Vec<String>,
    /// Where to read from next time.
    pub offset: u64,
}

/// The complete lines appended to `path` since `offset` (for following a log). When the file is
/// shorter than `offset` it was rotated: reading starts again at its beginning.
pub fn read_from(path: &Path, offset: u64) -> std::io::Result<Appended> {
    let mut file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(Appended {
                lines: Vec::new(),
                offset: 0,
            });
        }
        Err(e) => return Err(e),
    };
    let len = file.metadata()?.len();
    let start = if len < offset { 0 } else { offset };
    file.seek(SeekFrom::Start(start))?;
    let mut bytes = Vec::new();
    // Bounded, so a burst of output cannot make one read unbounded.
    file.take(4 << 20).read_to_end(&mut bytes)?;
    let complete = bytes.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
    let lines = String::from_utf8_lossy(&bytes[..complete])
        .lines()
        .map(str::to_owned)
        .collect();
    Ok(Appended {
        lines,
        offset: start + complete as u64,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_rotate_by_size_and_tail_reads_across_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("logs/indexer.log");
        let log = LogFile::new(
            path.clone(),
            Rotation {
                max_bytes: 200,
                keep: 2,
            },
        );
        for i in 0..30 {
            log.write(
                Timestamp::from_secs(1_800_000_000),
                Stream::Stderr,
                format!("line {i}").as_bytes(),
            );
        }
        assert!(rotated(&path, 1).exists() && rotated(&path, 2).exists());
        assert!(!rotated(&path, 3).exists());
        let last = tail(&path, 5).unwrap();
        assert_eq!(last.len(), 5);
        assert_eq!(last[4], "2027-01-15T08:00:00.000Z stderr line 29");
        assert!(last[0].ends_with("line 25"));
        // Asking for more than the current file holds reads the rotated one too, in order.
        let many = tail(&path, 8).unwrap();
        let numbers: Vec<u32> = many
            .iter()
            .map(|l| l.rsplit(' ').next().unwrap().parse().unwrap())
            .collect();
        assert_eq!(numbers, (22..30).collect::<Vec<_>>());
        assert!(tail(&dir.path().join("none.log"), 3).unwrap().is_empty());
    }

    #[test]
    fn following_reads_complete_lines_and_starts_over_after_a_rotation() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.log");
        std::fs::write(&path, "one\ntwo\npart").unwrap();
        let a = read_from(&path, 0).unwrap();
        assert_eq!(a.lines, ["one", "two"]);
        assert_eq!(a.offset, 8);
        std::fs::write(&path, "one\ntwo\npartial done\n").unwrap();
        let b = read_from(&path, a.offset).unwrap();
        assert_eq!(b.lines, ["partial done"]);
        std::fs::write(&path, "new\n").unwrap();
        let c = read_from(&path, b.offset).unwrap();
        assert_eq!(c.lines, ["new"]);
        assert_eq!(c.offset, 4);
    }
}
