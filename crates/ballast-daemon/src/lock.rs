//! One daemon per data directory: an advisory lock (`flock`) on `ballast.lock` in it, held for
//! the daemon's life and released by the kernel when it exits, even by `kill -9`.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// The exit code of a daemon that finds its data directory in use: EX_TEMPFAIL, "try again
/// later", since the other daemon may be stopping.
pub const EXIT_IN_USE: u8 = 75;

/// Why the data directory could not be locked.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another daemon holds it.
    #[error(
        "the data directory {} is in use by another ballast daemon{}; stop it first, or give this one its own --data-dir",
        dir.display(),
        match pid { Some(pid) => format!(" (pid {pid})"), None => String::new() }
    )]
    InUse {
        /// The data directory.
        dir: PathBuf,
        /// The other daemon's process id, as it wrote it into the lock file.
        pid: Option<u32>,
    },
    /// The lock file cannot be opened or locked.
    #[error("cannot lock the data directory {} ({}): {source}", dir.display(), file.display())]
    Io {
        /// The data directory.
        dir: PathBuf,
        /// The lock file.
        file: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// The held lock; dropping it releases the directory.
#[derive(Debug)]
pub struct DataDirLock {
    _file: File,
}

/// Where the lock is.
pub fn lock_path(data_dir: &Path) -> PathBuf {
    data_dir.join("ballast.lock")
}

/// Locks `data_dir` for this process, or says who holds it.
pub fn lock(data_dir: &Path) -> Result<DataDirLock, LockError> {
    let path = lock_path(data_dir);
    let io = |source| LockError::Io {
        dir: data_dir.to_owned(),
        file: path.clone(),
        source,
    };
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(io)?;
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            let mut text = String::new();
            let _ = file.read_to_string(&mut text);
            return Err(LockError::InUse {
                dir: data_dir.to_owned(),
                pid: text.trim().parse().ok(),
            });
        }
        Err(std::fs::TryLockError::Error(error)) => return Err(io(error)),
    }
    // Ours now: say who holds it, for the next one to name.
    file.set_len(0)
        .and_then(|()| file.seek(SeekFrom::Start(0)))
        .and_then(|_| writeln!(file, "{}", std::process::id()))
        .map_err(io)?;
    Ok(DataDirLock { _file: file })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_is_refused_naming_the_directory_and_the_holder() {
        let dir = tempfile::tempdir().unwrap();
        let held = lock(dir.path()).unwrap();
        let refused = lock(dir.path()).unwrap_err();
        match &refused {
            LockError::InUse { pid, .. } => assert_eq!(*pid, Some(std::process::id())),
            other => panic!("expected InUse, got {other:?}"),
        }
        let message = refused.to_string();
        assert!(
            message.contains(&dir.path().display().to_string()),
            "{message}"
        );
        assert!(
            message.contains(&format!("pid {}", std::process::id())),
            "{message}"
        );
        drop(held);
        // Released: the next daemon gets it.
        let _again = lock(dir.path()).unwrap();
    }

    #[test]
    fn a_directory_that_cannot_hold_the_lock_file_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("not-there");
        let error = lock(&missing).unwrap_err().to_string();
        assert!(error.contains("cannot lock the data directory"), "{error}");
        assert!(error.contains("not-there"), "{error}");
    }
}
