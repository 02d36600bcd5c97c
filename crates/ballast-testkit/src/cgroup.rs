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
        remove(&self.dir);
    }
}

/// Kills what runs in `dir` or in a cgroup under it (only a test's own processes are there),
/// then removes them all, deepest first; gives up after 10 s.
fn remove(top: &Path) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let dirs = tree(top);
        for dir in &dirs {
            let procs = std::fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
            for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
                // SAFETY: kill(2) has no memory-safety preconditions; the processes in this
                // cgroup are the test's own.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
        for dir in &dirs {
            let _ = std::fs::remove_dir(dir);
        }
        if !top.exists() || Instant::now() >= deadline {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A cgroup v2 group of a test's own, only for the pressure of what it starts there: every v2
/// cgroup has a `memory.pressure` of its own (a PSI group of its own, with or without the memory
/// controller), so a load's stall can be read as often as wanted without reading the host's
/// `/proc/pressure/memory`. (A trigger armed by a process without `CAP_SYS_RESOURCE` is checked
/// only when the kernel's worker runs the 2 s averaging of its file, and a read of the file that
/// comes when that averaging is due runs it instead, without the check: a reader of the same
/// file every few milliseconds makes such a trigger miss most of its checks.) Made on the v2
/// hierarchy of a hybrid layout (`/sys/fs/cgroup/unified`), beside the v1 controllers, so that
/// a process can be in it and in a v1 [`MemoryCgroup`] at once; removed when dropped.
#[derive(Debug)]
pub struct PressureGroup {
    dir: PathBuf,
}

impl PressureGroup {
    /// Creates `NAME-PID` under this process's cgroup in the v2 hierarchy of a hybrid layout.
    /// `Err` says why it cannot (no hybrid layout, no PSI for cgroups, not permitted).
    pub fn create(name: &str) -> Result<PressureGroup, String> {
        let mount = Path::new("/sys/fs/cgroup/unified");
        if !mount.join("cgroup.procs").exists() {
            return Err(format!(
                "no cgroup v2 hierarchy beside the v1 controllers ({} does not exist)",
                mount.display()
            ));
        }
        let cgroups = std::fs::read_to_string("/proc/self/cgroup")
            .map_err(|e| format!("cannot read /proc/self/cgroup: {e}"))?;
        let path = cgroups
            .lines()
            .find_map(|l| l.strip_prefix("0::"))
            .ok_or("this process is in no cgroup v2 cgroup (see /proc/self/cgroup)")?;
        let dir = mount
            .join(path.trim_start_matches('/'))
            .join(format!("{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir)
            .map_err(|e| format!("cannot create the cgroup {}: {e}", dir.display()))?;
        let group = PressureGroup { dir };
        if !group.memory_pressure().exists() {
            return Err(format!(
                "{} does not exist (a kernel without pressure stall information for cgroups)",
                group.memory_pressure().display()
            ));
        }
        Ok(group)
    }

    /// A group of its own under this one (`NAME`), e.g. for a load whose stall is to be read
    /// apart from that of the daemon in this one: a stall in it counts here too, as the kernel
    /// counts a group's stalls in every group above it.
    pub fn child(&self, name: &str) -> Result<PressureGroup, String> {
        let dir = self.dir.join(name);
        std::fs::create_dir_all(&dir)
            .map_err(|e| format!("cannot create the cgroup {}: {e}", dir.display()))?;
        Ok(PressureGroup { dir })
    }

    /// Its `cgroup.procs` file: a process that writes its pid there moves in.
    pub fn procs_file(&self) -> PathBuf {
        self.dir.join("cgroup.procs")
    }

    /// Its `memory.pressure` file.
    pub fn memory_pressure(&self) -> PathBuf {
        self.dir.join("memory.pressure")
    }

    /// Makes `command`'s process start in this group (as [`MemoryCgroup::start_in`]; both may
    /// be applied to one command).
    pub fn start_in(&self, command: &mut Command) {
        enter_on_exec(command, &self.procs_file());
    }
}

impl Drop for PressureGroup {
    /// Kills what still runs in it, then removes it.
    fn drop(&mut self) {
        remove(&self.dir);
    }
}
