//! Durable state in the data directory: JSONL logs with size-based rotation and torn-line
//! recovery, small state files (pins) written atomically, and the plugins' checkpoints (the one
//! place that knows where they are kept).
//!
//! A crash (even `kill -9` in the middle of a write) loses at most the torn last line of a log:
//! on open, a last line without its newline, or that does not parse, is cut off with a warning.
//! State files are written to a temporary file, synced, and renamed over the old one, so a reader
//! sees the old content or the new, never a mix.

use std::fs::{File, OpenOptions};
use std::io::Write;
/// Where a plugin's checkpoint is kept: `checkpoints/<plugin>.bin` in the data directory.
pub fn checkpoint_path(data_dir: &Path, plugin: &str) -> PathBuf {
    data_dir.join("checkpoints").join(format!("{plugin}.bin"))
}

/// Writes the plugin's checkpoint, if the host holds one, to the data directory (atomically).
/// A failure is logged: the checkpoint stays in the host for the next instance.
pub fn save_checkpoint(host: &PluginHost, data_dir: &Path, plugin: &str) {
    match host.checkpoint(plugin) {
        Ok(Some(blob)) => {
            if let Err(error) = write_atomic(&checkpoint_path(data_dir, plugin), &blob) {
                tracing::warn!(plugin, error = %crate::error_chain(&error), "cannot store the plugin's checkpoint");
            }
        }
        Ok(None) => {}
        Err(error) => tracing::warn!(plugin, %error, "cannot read the plugin's checkpoint"),
    }
}

/// Hands every loaded plugin the checkpoint stored for it, for its next `create`.
pub fn restore_checkpoints(host: &PluginHost, data_dir: &Path) {
    for name in host.names() {
        let path = checkpoint_path(data_dir, &name);
        if let Ok(blob) = std::fs::read(&path) {
            tracing::info!(plugin = %name, bytes = blob.len(), "restoring the plugin's checkpoint");
            let _ = host.set_checkpoint(&name, Some(blob));
            // When it was taken: the file was written then.
            if let Ok(modified) = std::fs::metadata(&path).and_then(|m| m.modified()) {
                let _ = host.set_checkpoint_taken_at(
                    &name,
                    ballast_core::Timestamp::from_system_time(modified),
                );
            }
        }
    }
}

#[cfg(test)]
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use ballast_host::PluginHost;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// Writes `bytes` to `path` atomically: temp file, fsync, rename, fsync of the directory.
///
/// Each write has a temp file of its own (`.<name>.tmp-<random>`), so two writes of the same
/// file at once (a plugin's checkpoint stored by its `Disabled` event and by the shutdown drain)
/// never share one: the later rename wins and the file always holds one whole version. A crash
/// can leave a temp file behind; [`remove_stale_temp_files`] clears them at start.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path
        .parent()
        .with_context(|| format!("{} has no parent directory", path.display()))?;
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let name = path
        .file_name()
        .with_context(|| format!("{} has no file name", path.display()))?
        .to_string_lossy();
    let mut temp = tempfile::Builder::new()
        .prefix(&format!(".{name}{TEMP_MARK}"))
        .tempfile_in(dir)
        .with_context(|| format!("cannot create a temporary file in {}", dir.display()))?;
    temp.write_all(bytes)
        .and_then(|()| temp.as_file().sync_all())
        .with_context(|| format!("cannot write {}", temp.path().display()))?;
    temp.persist(path)
        .with_context(|| format!("cannot replace {}", path.display()))?;
    // Make the rename itself durable.
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// What marks [`write_atomic`]'s temporary files: `.<name>.tmp-<random>`.
const TEMP_MARK: &str = ".tmp-";

/// Deletes the temporary files that writes interrupted by a crash left in `dir`. Call it before
/// anything writes there. Returns how many were deleted.
pub fn remove_stale_temp_files(dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    let mut removed = 0;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with('.') && name.contains(TEMP_MARK) && entry.path().is_file() {
            match std::fs::remove_file(entry.path()) {
                Ok(()) => removed += 1,
                Err(error) => {
                    tracing::warn!(file = %entry.path().display(), %error, "cannot delete a stale temporary file")
                }
            }
        }
    }
    if removed > 0 {
        tracing::info!(dir = %dir.display(), removed, "deleted temporary files left by an interrupted write");
    }
    removed
}

/// Reads a JSON state file; a missing file is `None`, a corrupt one an error naming it.
pub fn read_json<T: DeserializeOwned>(path: &Path) -> Result<Option<T>> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map(Some).with_context(|| {
            format!(
                "{} is not valid: it will be left alone and ignored",
                path.display()
            )
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}

/// Writes a JSON state file atomically.
pub fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let mut bytes = serde_json::to_vec_pretty(value).context("cannot encode state")?;
    bytes.push(b'\n');
    write_atomic(path, &bytes)
}

/// An append-only JSONL log split into numbered segments: `<name>-000001.jsonl`, ...
pub struct JsonlLog {
    dir: PathBuf,
    name: String,
    segment_bytes: u64,
    segments: usize,
    current: u64,
    file: File,
    size: u64,
}

impl JsonlLog {
    /// Opens (or creates) the log `name` in `dir`, repairing a torn last line.
    pub fn open(dir: &Path, name: &str, segment_bytes: u64, segments: usize) -> Result<JsonlLog> {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let existing = segment_numbers(dir, name)?;
        let current = existing.last().copied().unwrap_or(1);
        let path = segment_path(dir, name, current);
        if path.exists() {
            repair_torn_tail(&path)?;
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        let size = file.metadata().map(|m| m.len()).unwrap_or(0);
        Ok(JsonlLog {
            dir: dir.to_owned(),
            name: name.to_owned(),
            segment_bytes,
            segments: segments.max(1),
            current,
            file,
            size,
        })
    }

    /// Appends one record as a line, rotating first if the segment is full.
    pub fn append<T: Serialize>(&mut self, record: &T) -> Result<()> {
        let mut line = serde_json::to_vec(record).context("cannot encode a log record")?;
        line.push(b'\n');
        if self.size > 0 && self.size + line.len() as u64 > self.segment_bytes {
            self.rotate()?;
        }
        self.file
            .write_all(&line)
            .with_context(|| format!("cannot write to {}", self.path().display()))?;
        self.size += line.len() as u64;
        Ok(())
    }

    /// Flushes written records to the disk.
    pub fn sync(&mut self) -> Result<()> {
        self.file
            .sync_data()
            .with_context(|| format!("cannot sync {}", self.path().display()))
    }

    /// The current segment's path.
    pub fn path(&self) -> PathBuf {
        segment_path(&self.dir, &self.name, self.current)
    }

    /// Every segment's path, oldest first.
    #[cfg(test)]
    pub fn segment_paths(&self) -> Result<Vec<PathBuf>> {
        Ok(segment_numbers(&self.dir, &self.name)?
            .into_iter()
            .map(|n| segment_path(&self.dir, &self.name, n))
            .collect())
    }

    fn rotate(&mut self) -> Result<()> {
        let _ = self.file.sync_data();
        // The number moves on only once the next segment is open: a failure (out of
        // descriptors, say) is retried on the next record under the same number.
        let next = self.current + 1;
        let path = segment_path(&self.dir, &self.name, next);
        self.file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        self.current = next;
        self.size = 0;
        let numbers = segment_numbers(&self.dir, &self.name)?;
        let excess = numbers.len().saturating_sub(self.segments);
        for n in numbers.into_iter().take(excess) {
            let old = segment_path(&self.dir, &self.name, n);
            if let Err(error) = std::fs::remove_file(&old) {
                tracing::warn!(file = %old.display(), %error, "cannot delete an old log segment");
            }
        }
        Ok(())
    }
}

fn segment_path(dir: &Path, name: &str, n: u64) -> PathBuf {
    dir.join(format!("{name}-{n:06}.jsonl"))
}

fn segment_numbers(dir: &Path, name: &str) -> Result<Vec<u64>> {
    let prefix = format!("{name}-");
    let mut numbers: Vec<u64> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot list {}", dir.display()))?
        .flatten()
        .filter_map(|e| {
            let file = e.file_name().to_string_lossy().into_owned();
            file.strip_prefix(&prefix)?
                .strip_suffix(".jsonl")?
                .parse()
                .ok()
        })
        .collect();
    numbers.sort_unstable();
    Ok(numbers)
}

/// Where the torn last line of a JSONL log's `bytes` starts, if it has one: a last line without
/// its newline, or one that is not JSON. Keeping `bytes[..start]` leaves whole lines only (or
/// nothing). Earlier lines are not looked at: only the last write can have been interrupted.
pub fn torn_tail(bytes: &[u8]) -> Option<usize> {
    if bytes.is_empty() {
        return None;
    }
    // The start of the last line: after the last newline that is not the final byte.
    let body = bytes.strip_suffix(b"\n").unwrap_or(bytes);
    let start = body.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
    let last = &body[start..];
    let complete =
        bytes.ends_with(b"\n") && serde_json::from_slice::<serde_json::Value>(last).is_ok();
    (!complete).then_some(start)
}

/// Cuts a torn last line (no newline, or not JSON) off `path`, with a warning. Returns whether
/// something was cut.
pub fn repair_torn_tail(path: &Path) -> Result<bool> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let Some(start) = torn_tail(&bytes) else {
        return Ok(false);
    };
    tracing::warn!(
        file = %path.display(),
        bytes = bytes.len() - start,
        "skipping a torn last line left by an interrupted write"
    );
    let file = OpenOptions::new()
        .write(true)
        .open(path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    file.set_len(start as u64)
        .and_then(|()| file.sync_all())
        .with_context(|| format!("cannot truncate {}", path.display()))?;
    Ok(true)
}

/// A JSONL file read back: the records that parse, and the 1-based numbers of lines that did not.
#[cfg(test)]
pub struct ReadBack<T> {
    /// Parsed records in file order.
    pub records: Vec<T>,
    /// Line numbers that did not parse.
    pub bad_lines: Vec<usize>,
}

/// Reads every line of a JSONL file, skipping (and counting) lines that do not parse.
#[cfg(test)]
pub fn read_jsonl<T: DeserializeOwned>(path: &Path) -> Result<ReadBack<T>> {
    let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut records = Vec::new();
    let mut bad_lines = Vec::new();
    for (i, line) in BufReader::new(file).split(b'\n').enumerate() {
        let line = line.with_context(|| format!("cannot read {}", path.display()))?;
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        match serde_json::from_slice(&line) {
            Ok(record) => records.push(record),
            Err(_) => bad_lines.push(i + 1),
        }
    }
    Ok(ReadBack { records, bad_lines })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_writes_replace_the_whole_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state/pins.json");
        write_json(&path, &serde_json::json!({ "voice": "off" })).unwrap();
        write_json(&path, &serde_json::json!({ "voice": "on" })).unwrap();
        let back: serde_json::Value = read_json(&path).unwrap().unwrap();
        assert_eq!(back["voice"], "on");
        let leftovers: Vec<_> = std::fs::read_dir(path.parent().unwrap())
            .unwrap()
            .flatten()
            .collect();
        assert_eq!(leftovers.len(), 1, "no temporary file is left behind");
        assert!(
            read_json::<serde_json::Value>(&dir.path().join("missing.json"))
                .unwrap()
                .is_none()
        );
        std::fs::write(&path, "{ torn").unwrap();
        let error = read_json::<serde_json::Value>(&path)
            .unwrap_err()
            .to_string();
        assert!(error.contains("pins.json is not valid"), "{error}");
    }

    #[test]
    fn concurrent_atomic_writes_of_one_file_all_succeed_and_leave_one_whole_version() {
        // Two writers of the same checkpoint at once used to share a temp file: one renamed it
        // away while the other still wrote to it, and the second rename failed.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("checkpoints/voice.bin");
        let versions: Vec<Vec<u8>> = (0..8u8).map(|i| vec![i; 64 * 1024]).collect();
        std::thread::scope(|scope| {
            for version in &versions {
                let path = &path;
                scope.spawn(move || {
                    for _ in 0..20 {
                        write_atomic(path, version).unwrap();
                    }
                });
            }
        });
        let content = std::fs::read(&path).unwrap();
        assert!(versions.contains(&content), "the file mixes versions");
        let names: Vec<String> = std::fs::read_dir(path.parent().unwrap())
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["voice.bin"], "no temporary file is left behind");
    }

    #[test]
    fn temp_files_left_by_a_crash_are_removed_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(".pins.json.tmp-Xa12bc"), "{ half").unwrap();
        std::fs::write(dir.path().join(".pins.json.tmp-4242"), "{").unwrap();
        std::fs::write(dir.path().join("pins.json"), "{}").unwrap();
        std::fs::write(dir.path().join(".hidden"), "keep").unwrap();
        std::fs::write(dir.path().join("telemetry-000001.jsonl"), "").unwrap();
        assert_eq!(remove_stale_temp_files(dir.path()), 2);
        let mut names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, [".hidden", "pins.json", "telemetry-000001.jsonl"]);
        assert_eq!(remove_stale_temp_files(&dir.path().join("missing")), 0);
    }

    #[test]
    fn logs_rotate_by_size_and_keep_only_the_newest_segments() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = JsonlLog::open(dir.path(), "telemetry", 100, 3).unwrap();
        for i in 0..40 {
            log.append(&serde_json::json!({ "i": i })).unwrap();
        }
        let segments = log.segment_paths().unwrap();
        assert_eq!(segments.len(), 3);
        assert!(
            segments.last().unwrap().ends_with("telemetry-000004.jsonl"),
            "{segments:?}"
        );
        let last: ReadBack<serde_json::Value> = read_jsonl(segments.last().unwrap()).unwrap();
        assert_eq!(last.records.last().unwrap()["i"], 39);
        assert!(last.bad_lines.is_empty());
    }

    #[test]
    fn a_segment_that_cannot_be_opened_is_retried_under_the_same_number() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = JsonlLog::open(dir.path(), "telemetry", 100, 10).unwrap();
        // Something in the way of the next segment: opening it fails.
        let blocker = dir.path().join("telemetry-000002.jsonl");
        std::fs::create_dir(&blocker).unwrap();
        let record = serde_json::json!({ "padding": "x".repeat(60) });
        log.append(&record).unwrap();
        assert!(log.append(&record).is_err());
        assert!(log.append(&record).is_err());
        std::fs::remove_dir(&blocker).unwrap();
        log.append(&record).unwrap();
        let names: Vec<String> = log
            .segment_paths()
            .unwrap()
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["telemetry-000001.jsonl", "telemetry-000002.jsonl"]);
    }

    #[test]
    fn a_torn_last_line_is_cut_and_nothing_else_is_lost() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("decisions-000001.jsonl");
        std::fs::write(&path, "{\"a\":1}\n{\"a\":2}\n{\"a\":").unwrap();
        let mut log = JsonlLog::open(dir.path(), "decisions", 1 << 20, 2).unwrap();
        log.append(&serde_json::json!({ "a": 3 })).unwrap();
        let back: ReadBack<serde_json::Value> = read_jsonl(&path).unwrap();
        let values: Vec<i64> = back
            .records
            .iter()
            .map(|r| r["a"].as_i64().unwrap())
            .collect();
        assert_eq!(values, [1, 2, 3]);
        assert!(back.bad_lines.is_empty());

        // A complete last line that is not JSON is torn too (a crash mid-line then a newline).
        std::fs::write(&path, "{\"a\":1}\nnot json\n").unwrap();
        assert!(repair_torn_tail(&path).unwrap());
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "{\"a\":1}\n");
        assert!(!repair_torn_tail(&path).unwrap());
    }

    #[test]
    fn bad_lines_in_the_middle_are_skipped_and_counted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.jsonl");
        std::fs::write(&path, "{\"a\":1}\ngarbage\n\n{\"a\":2}\n").unwrap();
        let back: ReadBack<serde_json::Value> = read_jsonl(&path).unwrap();
        assert_eq!(back.records.len(), 2);
        assert_eq!(back.bad_lines, [2]);
    }
}
