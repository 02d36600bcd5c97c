//! A memory cgroup of a test's own, so that one daemon of several on this machine can be pressed
//! alone: the daemon reads its memory relative to the cgroup's limit, and a load started in the
//! same cgroup counts against that limit and nothing else. v1 (`/sys/fs/cgroup/memory`) or v2,
//! under the cgroup this process is in; it needs the right to write there (root, usually).

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt as _;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// A memory cgroup made for a test, removed when dropped (with whatever still runs in it
/// killed: only the test's own processes are there).
#[derive(Debug)]
pub struct MemoryCgroup {
    dir: PathBuf,
    /// Its memory limit, in bytes.
    pub limit: u64,
}

impl MemoryCgroup {
    /// Creates `NAME-PID` under this process's memory cgroup, limited to `limit` bytes. `Err`
    /// says why it cannot (no memory controller, not permitted).
    pub fn create(name: &str, limit: u64) -> Result<MemoryCgroup, String> {
        let cgroups = std::fs::read_to_string("/proc/self/cgroup")
            .map_err(|e| format!("cannot read /proc/self/cgroup: {e}"))?;
        let v1 = cgroups.lines().find_map(|line| {
            let mut parts = line.splitn(3, ':');
            let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
            controllers.split(',').any(|c| c == "memory").then(|| {
                (
                    Path::new("/sys/fs/cgroup/memory"),
                    path,
                    "memory.limit_in_bytes",
                )
            })
        });
        let (mount, path, limit_file) = v1
            .or_else(|| {
                cgroups
                    .lines()
                    .find_map(|l| l.strip_prefix("0::"))
                    .map(|path| (Path::new("/sys/fs/cgroup"), path, "memory.max"))
            })
            .ok_or("this process is in no memory cgroup (see /proc/self/cgroup)")?;
        let dir = mount
            .join(path.trim_start_matches('/'))
            .join(format!("{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir)
            .map_err(|e| format!("cannot create the memory cgroup {}: {e}", dir.display()))?;
        let cgroup = MemoryCgroup { dir, limit };
        std::fs::write(cgroup.dir.join(limit_file), limit.to_string()).map_err(|e| {
            format!(
                "cannot set the memory limit of {}: {e}",
                cgroup.dir.display()
            )
        })?;
        Ok(cgroup)
    }

    /// Its directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Its `cgroup.procs` file: a process that writes its pid there moves in.
    pub fn procs_file(&self) -> PathBuf {
        self.dir.join("cgroup.procs")
    }

    /// The processes in it now.
    pub fn pids(&self) -> Vec<i32> {
        std::fs::read_to_string(self.procs_file())
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect()
    }

    /// Makes `command`'s process start in this cgroup (it moves itself in between fork and
    /// exec, so everything it allocates counts here).
    pub fn start_in(&self, command: &mut Command) {
        enter_on_exec(command, &self.procs_file());
    }
}

/// Makes `command`'s process move itself into the cgroup whose `cgroup.procs` file is `procs`
/// before it runs: it writes `0` (itself) there. The start fails if it cannot.
pub fn enter_on_exec(command: &mut Command, procs: &Path) {
    let path = CString::new(procs.as_os_str().as_bytes())
        .unwrap_or_else(|_| panic!("a cgroup path without NUL bytes: {}", procs.display()));
    // SAFETY: the closure runs between fork and exec and calls only open(2), write(2) and
    // close(2), which are async-signal-safe; it allocates nothing (the path was made before).
    unsafe {
        command.pre_exec(move || {
            let fd = libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
            if fd < 0 {
                return Err(std::io::Error::last_os_error());
            }
            let written = libc::write(fd, b"0".as_ptr().cast(), 1);
            let error = std::io::Error::last_os_error();
            libc::close(fd);
            if written != 1 {
                return Err(error);
            }
            Ok(())
        });
    }
}

/// `dir` and every cgroup under it, deepest first.
fn tree(dir: &Path) -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                dirs.extend(tree(&entry.path()));
            }
        }
    }
    dirs.push(dir.to_owned());
    dirs
}

impl Drop for MemoryCgroup {
    /// Kills what still runs in it or in a cgroup under it (a daemon makes its plugins' there),
    /// then removes them all, deepest first.
    fn drop(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let dirs = tree(&self.dir);
            for dir in &dirs {
                let procs = std::fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
                for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
                    // SAFETY: kill(2) has no memory-safety preconditions; the processes in
                    // this cgroup are the test's own.
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                }
            }
            for dir in &dirs {
                let _ = std::fs::remove_dir(dir);
            }
            if !self.dir.exists() || Instant::now() >= deadline {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}
