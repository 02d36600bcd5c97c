//! The IO shell: the daemon's own directory of plugin cgroups ([`CgroupTree`]: found, cleaned of
//! a dead daemon's, created and probed at start, removed at exit) and one plugin process's
//! cgroup ([`PluginCgroup`]: created with its limits before the process starts, retargeted,
//! read, and removed, with anything still in it killed, once it is dropped).
//!
//! Every path is read under an injectable root, so fixture trees stand in for `/proc` and
//! `/sys/fs/cgroup` in tests. Files are written without being created: a directory that is not a
//! real cgroup has no interface files, and writing to it fails like a cgroup file system that
//! is not writable.

use std::ffi::CString;
use std::io::Write as _;
use std::os::fd::{AsRawFd, FromRawFd as _, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt as _;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ballast_core::{CgroupStatus, MemoryEventCounts};

use super::CgroupError;
use super::events::{
    Reading, keyed, parse_cpu_stat, parse_memory_events, parse_number, parse_oom_control,
    parse_pressure,
};
use super::layout::{Layout, Version, choose, discover, parse_mountinfo, parse_proc_cgroup};
use super::limits::{Controller, Limits, settings};
use super::stale::{Owner, missing_controllers, plugin_dir_name, stale};
use crate::procfs::parse_stat;

/// Where the shell reads: `/proc` and the file system root the mounts are under.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CgroupRoots {
    /// `/proc` (its `self/cgroup`, `self/mountinfo`, `self/stat` and `<pid>/stat`).
    pub proc: PathBuf,
    /// What the mount points in `mountinfo` are relative to: `/`, or a fixture tree.
    pub root: PathBuf,
}

impl Default for CgroupRoots {
    fn default() -> Self {
        CgroupRoots {
            proc: PathBuf::from("/proc"),
            root: PathBuf::from("/"),
        }
    }
}

impl CgroupRoots {
    /// A machine path (`/sys/fs/cgroup/...`) under the root.
    fn under(&self, path: &Path) -> PathBuf {
        self.root.join(path.strip_prefix("/").unwrap_or(path))
    }
}

fn io_error(action: &'static str, path: &Path, error: std::io::Error) -> CgroupError {
    CgroupError::Io {
        action,
        path: path.to_owned(),
        error,
    }
}

/// Writes `value` to an existing cgroup file.
fn write_file(path: &Path, value: &str) -> Result<(), CgroupError> {
    std::fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(path)
        .and_then(|mut file| file.write_all(value.as_bytes()))
        .map_err(|e| io_error("write", path, e))
}

fn read_file(path: &Path) -> Result<String, CgroupError> {
    std::fs::read_to_string(path).map_err(|e| io_error("read", path, e))
}

/// Creates a cgroup directory (one that is already there is fine: it is ours by its name).
fn make_dir(path: &Path) -> Result<(), CgroupError> {
    match std::fs::create_dir(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(io_error("create", path, e)),
    }
}

/// The processes in a cgroup (its `cgroup.procs`), an unreadable or odd line being none.
fn procs(dir: &Path) -> Vec<u32> {
    std::fs::read_to_string(dir.join("cgroup.procs"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse::<u32>().ok())
        .filter(|pid| *pid > 0)
        .collect()
}

/// Kills what is left in `dir` and its sub-cgroups, and removes them, deepest first. Waits up
/// to `patience` for killed processes to be gone. Returns the first error of the removal.
fn remove_cgroup(dir: &Path, patience: Duration) -> Result<(), CgroupError> {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                let _ = remove_cgroup(&entry.path(), patience);
            }
        }
    }
    let deadline = Instant::now() + patience;
    loop {
        let left = procs(dir);
        for pid in &left {
            if let Ok(pid) = i32::try_from(*pid) {
                // SAFETY: kill has no memory-safety preconditions.
                unsafe {
                    libc::kill(pid, libc::SIGKILL);
                }
            }
        }
        match std::fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            // Only processes on their way out are worth waiting for (a cgroup whose last
            // process has just exited may be busy for a moment).
            Err(e)
                if (left.is_empty() && e.raw_os_error() != Some(libc::EBUSY))
                    || Instant::now() >= deadline =>
            {
                return Err(io_error("remove", dir, e));
            }
            Err(_) => std::thread::sleep(Duration::from_millis(10)),
        }
    }
}

/// One hierarchy's directory of the daemon's plugin cgroups.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Branch {
    /// The controllers used in it (`memory`, `cpu`, `cpuacct`; on v2 those enabled).
    controllers: Vec<String>,
    /// The daemon's directory (`.../ballast-<pid>-<start>`).
    dir: PathBuf,
}

/// The daemon's directory of plugin cgroups, in each hierarchy used.
#[derive(Debug)]
pub struct CgroupTree {
    version: Version,
    /// Memory first.
    branches: Vec<Branch>,
    /// Why no CPU quota can be set, if none can.
    cpu_unavailable: Option<String>,
    /// What was cleaned at start.
    cleaned: Vec<PathBuf>,
    /// Where the daemon moved itself to on v2 ([`settle_in_leaf`]), and the path (inside the
    /// hierarchy) of the cgroup it moved out of.
    moved: Option<Moved>,
    serial: AtomicU64,
}

/// A v2 daemon that moved into a leaf of its cgroup.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Moved {
    leaf: PathBuf,
    scope: String,
}

impl CgroupTree {
    /// Finds the daemon's cgroups, removes those a daemon that is no longer running left beside
    /// them (killing what still runs in them), creates the daemon's own directory and checks
    /// that a process can be put in a cgroup made there with limits. The error is why plugin
    /// cgroups cannot be used here, naming the path and the error, for the log.
    pub fn setup(roots: &CgroupRoots) -> Result<CgroupTree, String> {
        let read_proc = |name: &str| {
            let path = roots.proc.join(name);
            std::fs::read_to_string(&path)
                .map_err(|e| format!("cannot read {}: {e}", path.display()))
        };
        let lines = parse_proc_cgroup(&read_proc("self/cgroup")?).map_err(|e| e.to_string())?;
        let mounts = parse_mountinfo(&read_proc("self/mountinfo")?).map_err(|e| e.to_string())?;
        let own = own_owner(roots)?;
        let found = discover(&lines, &mounts);
        let v2_controllers = found.v2.as_ref().and_then(|(dir, _)| {
            std::fs::read_to_string(roots.under(dir).join("cgroup.controllers")).ok()
        });
        let layout = choose(&found, v2_controllers.as_deref())?;
        let mut tree = CgroupTree {
            version: layout.version(),
            branches: Vec::new(),
            cpu_unavailable: None,
            cleaned: Vec::new(),
            moved: None,
            serial: AtomicU64::new(0),
        };
        let mut bases = Vec::new();
        match &layout {
            Layout::V1 { hierarchies } => {
                for hierarchy in hierarchies {
                    bases.push((hierarchy.controllers.clone(), roots.under(&hierarchy.dir)));
                }
            }
            Layout::V2 { dir, cpu } => {
                let wanted: Vec<&str> = if *cpu {
                    vec!["memory", "cpu"]
                } else {
                    vec!["memory"]
                };
                let (base, leaf) = v2_base(&roots.under(dir), &wanted, own.pid)?;
                tree.moved = leaf.map(|leaf| Moved {
                    leaf,
                    scope: lines
                        .iter()
                        .find(|l| l.is_v2())
                        .map_or_else(|| "/".to_owned(), |l| l.path.clone()),
                });
                bases.push((wanted.iter().map(|c| (*c).to_owned()).collect(), base));
            }
        }
        // Each tree made for the owner has a directory of its own (a daemon makes one; tests
        // make several, one after the other, and an old one may be dropped late).
        static TREES: Mutex<Vec<(u32, u64, u64)>> = Mutex::new(Vec::new());
        let n = {
            let mut trees = TREES.lock().unwrap_or_else(|p| p.into_inner());
            match trees
                .iter_mut()
                .find(|(pid, start, _)| *pid == own.pid && *start == own.start_ticks)
            {
                Some((_, _, n)) => {
                    *n += 1;
                    *n
                }
                None => {
                    trees.push((own.pid, own.start_ticks, 1));
                    1
                }
            }
        };
        for (mut controllers, base) in bases {
            tree.cleaned
                .extend(clean_stale(&base, own, |pid| start_of(roots, pid)));
            let dir = base.join(own.dir_name(n));
            let made = make_dir(&dir).and_then(|()| {
                if tree.version == Version::V1 {
                    return Ok(());
                }
                // On v2 the directory hands down what it is offered of what ballast uses.
                let offered_file = dir.join("cgroup.controllers");
                let offered = read_file(&offered_file)?;
                let wanted = controllers.clone();
                controllers.retain(|c| offered.split_ascii_whitespace().any(|o| o == c));
                if !controllers.iter().any(|c| c == "memory") {
                    return Err(CgroupError::Parse {
                        file: offered_file.display().to_string(),
                        problem: format!(
                            "the memory controller is not offered (`{}`)",
                            offered.trim()
                        ),
                    });
                }
                if controllers.len() < wanted.len() {
                    tree.cpu_unavailable = Some(format!(
                        "the cpu controller is not offered in {}",
                        offered_file.display()
                    ));
                }
                let enable: Vec<String> = controllers.iter().map(|c| format!("+{c}")).collect();
                write_file(&dir.join("cgroup.subtree_control"), &enable.join(" "))
            });
            let controllers = if made.is_err() && tree.version == Version::V2 {
                vec!["memory".to_owned()]
            } else {
                controllers
            };
            match made {
                Ok(()) => tree.branches.push(Branch { controllers, dir }),
                Err(error) if controllers.iter().any(|c| c == "memory") => {
                    let _ = std::fs::remove_dir(&dir);
                    tree.remove();
                    return Err(error.to_string());
                }
                Err(error) => {
                    let _ = std::fs::remove_dir(&dir);
                    tree.cpu_unavailable = Some(error.to_string());
                }
            }
        }
        if tree.cpu_unavailable.is_none() && !layout.has_cpu() {
            tree.cpu_unavailable = Some(match tree.version {
                Version::V2 => {
                    "the cpu controller is not available in the daemon's cgroup".to_owned()
                }
                Version::V1 => "no cgroup v1 cpu hierarchy is mounted".to_owned(),
            });
        }
        if let Err(error) = tree.probe() {
            tree.remove();
            return Err(error);
        }
        Ok(tree)
    }

    /// Makes a cgroup with limits and puts a short-lived process in it, as every plugin will be.
    fn probe(&self) -> Result<(), String> {
        let probe = self
            .create("probe", &Limits::default())
            .map_err(|e| e.to_string())?;
        let files = probe.procs_files();
        let joined = join_in_child(&files);
        drop(probe);
        joined.map_err(|(index, error)| {
            format!(
                "cannot put a process in a cgroup: cannot write {}: {error}",
                files[index].display()
            )
        })
    }

    /// Which version.
    pub fn version(&self) -> Version {
        self.version
    }

    /// The daemon's directories, memory first.
    pub fn dirs(&self) -> Vec<&Path> {
        self.branches.iter().map(|b| b.dir.as_path()).collect()
    }

    /// Why no CPU quota can be set, when none can.
    pub fn cpu_unavailable(&self) -> Option<&str> {
        self.cpu_unavailable.as_deref()
    }

    /// The stale directories removed at start.
    pub fn cleaned(&self) -> &[PathBuf] {
        &self.cleaned
    }

    /// The leaf the daemon moved itself into at start ([`settle_in_leaf`]), if it did.
    pub fn daemon_leaf(&self) -> Option<&Path> {
        self.moved.as_ref().map(|m| m.leaf.as_path())
    }

    /// The cgroup whose pressure, memory and CPU are the daemon's own scope, as a path inside
    /// the v2 hierarchy (as `/proc/self/cgroup` writes it), when it is not the one the daemon
    /// is in: after the daemon moved into a leaf, the cgroup it moved out of, which holds the
    /// daemon and its plugins' cgroups (and carries the limits set for the daemon).
    pub fn scope_v2(&self) -> Option<&str> {
        self.moved.as_ref().map(|m| m.scope.as_str())
    }

    /// Creates the cgroup of a new process of `plugin`, with `limits` in force.
    pub fn create(&self, plugin: &str, limits: &Limits) -> Result<PluginCgroup, CgroupError> {
        let name = plugin_dir_name(plugin, self.serial.fetch_add(1, Ordering::Relaxed) + 1);
        let mut dirs: Vec<(Vec<String>, PathBuf)> = Vec::new();
        for branch in &self.branches {
            let dir = branch.dir.join(&name);
            if let Err(error) = make_dir(&dir) {
                for (_, made) in &dirs {
                    let _ = remove_cgroup(made, Duration::ZERO);
                }
                return Err(error);
            }
            dirs.push((branch.controllers.clone(), dir));
        }
        let cgroup = PluginCgroup {
            version: self.version,
            dirs,
            limits: Mutex::new(Limits::default()),
            cpu: self.cpu_unavailable.is_none(),
        };
        cgroup.apply(limits)?;
        Ok(cgroup)
    }

    /// Removes the daemon's directories and whatever is still in them (killing what runs
    /// there): what a daemon does as it exits, once its plugins are stopped. It may be called
    /// more than once; it is also done when the tree is dropped.
    pub fn remove(&self) {
        for branch in &self.branches {
            if let Err(error) = remove_cgroup(&branch.dir, Duration::from_secs(1)) {
                tracing::debug!(%error, "cannot remove the plugins' cgroups");
            }
        }
    }
}

impl Drop for CgroupTree {
    fn drop(&mut self) {
        self.remove();
    }
}

/// Where a v2 daemon's directory goes, and the leaf the daemon moved into if it did: under its
/// own cgroup when that hands `wanted` down to its children (already, or once asked: it holds
/// no process, or is the root, or the daemon, alone in it, moves into a leaf of it with
/// [`settle_in_leaf`]), else beside it, under its parent, which hands them down to the daemon's
/// cgroup already.
fn v2_base(own: &Path, wanted: &[&str], pid: u32) -> Result<(PathBuf, Option<PathBuf>), String> {
    let control = own.join("cgroup.subtree_control");
    let text = read_file(&control).map_err(|e| e.to_string())?;
    let missing = missing_controllers(&text, wanted);
    if missing.is_empty() {
        return Ok((own.to_owned(), None));
    }
    let enable: Vec<String> = missing.iter().map(|c| format!("+{c}")).collect();
    let mut error = match write_file(&control, &enable.join(" ")) {
        Ok(()) => return Ok((own.to_owned(), None)),
        Err(error) => error.to_string(),
    };
    if procs(own) == [pid] {
        match settle_in_leaf(own, pid, &missing) {
            Ok(leaf) => return Ok((own.to_owned(), Some(leaf))),
            Err(moving) => error = format!("{error}; {moving}"),
        }
    }
    let parent = own
        .parent()
        .filter(|p| p.join("cgroup.subtree_control").is_file());
    match parent {
        Some(parent) => Ok((parent.to_owned(), None)),
        None => Err(format!(
            "{error} (a cgroup v2 cgroup that holds processes cannot hand controllers to child cgroups: run ballast in a cgroup that holds no other process, e.g. with systemd's Delegate=yes)"
        )),
    }
}

/// The leaf a v2 daemon moves into when it is alone in its cgroup: `<its cgroup>/daemon`.
pub const DAEMON_LEAF: &str = "daemon";

/// Moves process `pid` out of the v2 cgroup `own` into the leaf [`DAEMON_LEAF`] under it, then
/// enables `wanted` for `own`'s children, and returns the leaf. The kernel lets a cgroup other
/// than the root hand controllers to its children only while it holds no process itself;
/// systemd's `Delegate=yes` puts the daemon in the delegated cgroup, and `DelegateSubgroup=`
/// (systemd 254 and later) is not there to move it. Docker-in-Docker's entrypoint does the same
/// with an `init` cgroup. Refused when `own` holds another process (one the daemon does not
/// own); when the move or the enabling fails, `pid` is moved back and the error says what
/// failed.
pub fn settle_in_leaf(own: &Path, pid: u32, wanted: &[&str]) -> Result<PathBuf, CgroupError> {
    let procs_file = own.join("cgroup.procs");
    let others: Vec<u32> = procs(own).into_iter().filter(|p| *p != pid).collect();
    if !others.is_empty() {
        return Err(CgroupError::Parse {
            file: procs_file.display().to_string(),
            problem: format!(
                "it holds processes other than the daemon ({}), which it would have to move",
                others
                    .iter()
                    .map(u32::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        });
    }
    let leaf = own.join(DAEMON_LEAF);
    make_dir(&leaf)?;
    write_file(&leaf.join("cgroup.procs"), &pid.to_string())?;
    let enable: Vec<String> = wanted.iter().map(|c| format!("+{c}")).collect();
    if let Err(error) = write_file(&own.join("cgroup.subtree_control"), &enable.join(" ")) {
        if let Err(back) = write_file(&procs_file, &pid.to_string()) {
            tracing::warn!(%back, "cannot move the daemon back into its cgroup");
        }
        let _ = std::fs::remove_dir(&leaf);
        return Err(error);
    }
    Ok(leaf)
}

/// Removes the plugin cgroups that daemons no longer running left beside this process's own
/// cgroups (killing what still runs in them), without making any: what a daemon does at start,
/// for a tool that started daemons and killed them. Returns the directories removed.
pub fn remove_stale(roots: &CgroupRoots) -> Result<Vec<PathBuf>, String> {
    let read_proc = |name: &str| {
        let path = roots.proc.join(name);
        std::fs::read_to_string(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))
    };
    let lines = parse_proc_cgroup(&read_proc("self/cgroup")?).map_err(|e| e.to_string())?;
    let mounts = parse_mountinfo(&read_proc("self/mountinfo")?).map_err(|e| e.to_string())?;
    let own = own_owner(roots)?;
    let found = discover(&lines, &mounts);
    let mut bases: Vec<PathBuf> = found.v1.iter().map(|h| roots.under(&h.dir)).collect();
    if let Some((dir, _)) = &found.v2 {
        let dir = roots.under(dir);
        // A v2 daemon's directory may be beside its cgroup, under the parent.
        bases.extend(dir.parent().map(Path::to_owned));
        bases.push(dir);
    }
    let mut cleaned = Vec::new();
    for base in bases {
        cleaned.extend(clean_stale(&base, own, |pid| start_of(roots, pid)));
    }
    Ok(cleaned)
}

/// This process, as `/proc/self/stat` names it.
fn own_owner(roots: &CgroupRoots) -> Result<Owner, String> {
    let path = roots.proc.join("self/stat");
    let text = std::fs::read_to_string(&path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let stat = parse_stat(&text).map_err(|e| e.to_string())?;
    Ok(Owner {
        pid: text
            .split_ascii_whitespace()
            .next()
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(std::process::id),
        start_ticks: stat.start_ticks,
    })
}

/// When process `pid` started, in clock ticks since boot, if it is running.
fn start_of(roots: &CgroupRoots, pid: u32) -> Option<u64> {
    std::fs::read_to_string(roots.proc.join(pid.to_string()).join("stat"))
        .ok()
        .and_then(|text| parse_stat(&text).ok())
        .map(|stat| stat.start_ticks)
}

/// Removes the directories beside the daemon's own that a daemon no longer running left.
fn clean_stale(base: &Path, own: Owner, start_of: impl Fn(u32) -> Option<u64>) -> Vec<PathBuf> {
    let names: Vec<String> = std::fs::read_dir(base)
        .map(|entries| {
            entries
                .flatten()
                .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                .filter_map(|e| e.file_name().to_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    let mut cleaned = Vec::new();
    for name in stale(names.iter().map(String::as_str), own, start_of) {
        let dir = base.join(&name);
        match remove_cgroup(&dir, Duration::from_secs(1)) {
            Ok(()) => cleaned.push(dir),
            Err(error) => {
                tracing::warn!(%error, "cannot remove the cgroups a previous daemon left")
            }
        }
    }
    cleaned
}

/// Forks a child that joins the cgroups whose `cgroup.procs` files are `files` and exits: the
/// index of the file that could not be written and why.
fn join_in_child(files: &[PathBuf]) -> Result<(), (usize, std::io::Error)> {
    let paths = procs_paths(files).map_err(|e| (0, e))?;
    let report = JoinReport::new().map_err(|e| (0, e))?;
    let fd = report.write_fd();
    // SAFETY: the child calls only async-signal-safe functions (open, write, close, _exit)
    // on memory prepared before the fork.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err((0, std::io::Error::last_os_error()));
    }
    if pid == 0 {
        let code = match join_now(&paths) {
            Ok(()) => 0,
            Err((index, errno)) => {
                JoinReport::report(fd, index, errno);
                1
            }
        };
        // SAFETY: _exit is async-signal-safe and ends the forked child at once.
        unsafe { libc::_exit(code) }
    }
    let mut status = 0;
    // SAFETY: waits for the child just forked; `status` is a valid pointer.
    unsafe {
        libc::waitpid(pid, &mut status, 0);
    }
    match report.take() {
        Some((index, errno)) => Err((index, std::io::Error::from_raw_os_error(errno))),
        None => Ok(()),
    }
}

/// The `cgroup.procs` paths as C strings, for use between fork and exec.
pub(crate) fn procs_paths(files: &[PathBuf]) -> std::io::Result<Vec<CString>> {
    files
        .iter()
        .map(|f| {
            CString::new(f.as_os_str().as_bytes())
                .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))
        })
        .collect()
}

/// How a child tells its parent, before exec, that it could not join its cgroup: a pipe
/// closed on exec, which holds the index of the file and the errno when it failed.
pub(crate) struct JoinReport {
    read: OwnedFd,
    write: Option<OwnedFd>,
}

impl JoinReport {
    pub(crate) fn new() -> std::io::Result<JoinReport> {
        let mut fds = [0; 2];
        // SAFETY: `fds` has room for the two descriptors pipe2 writes.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: pipe2 just opened both, and nothing else owns them.
        let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        Ok(JoinReport {
            read,
            write: Some(write),
        })
    }

    /// The descriptor the child writes to.
    pub(crate) fn write_fd(&self) -> RawFd {
        self.write.as_ref().map_or(-1, AsRawFd::as_raw_fd)
    }

    /// In the child, between fork and exec: records the failure (async-signal-safe).
    pub(crate) fn report(fd: RawFd, index: usize, errno: i32) {
        let mut record = [0u8; 8];
        record[..4].copy_from_slice(&(index as u32).to_le_bytes());
        record[4..].copy_from_slice(&errno.to_le_bytes());
        // SAFETY: write is async-signal-safe; `record` is valid for its length.
        unsafe {
            libc::write(fd, record.as_ptr().cast(), record.len());
        }
    }

    /// In the parent, once the child has exec'd or exited: the failure it recorded, if any.
    pub(crate) fn take(mut self) -> Option<(usize, i32)> {
        drop(self.write.take());
        let mut record = [0u8; 8];
        // SAFETY: reads at most `record.len()` bytes into `record` from our own descriptor.
        let n = unsafe {
            libc::read(
                self.read.as_raw_fd(),
                record.as_mut_ptr().cast(),
                record.len(),
            )
        };
        if n != 8 {
            return None;
        }
        let index = u32::from_le_bytes([record[0], record[1], record[2], record[3]]) as usize;
        let errno = i32::from_le_bytes([record[4], record[5], record[6], record[7]]);
        Some((index, errno))
    }
}

/// Joins the cgroups (writes `0`, "the writing process", to each `cgroup.procs`): the index of
/// the file that failed and the errno. Only async-signal-safe calls: it runs between fork and
/// exec.
pub(crate) fn join_now(paths: &[CString]) -> Result<(), (usize, i32)> {
    for (index, path) in paths.iter().enumerate() {
        // SAFETY: `path` is a valid C string; open, write and close are async-signal-safe.
        unsafe {
            let fd = libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
            if fd < 0 {
                return Err((index, errno()));
            }
            let written = libc::write(fd, b"0".as_ptr().cast(), 1);
            let error = errno();
            libc::close(fd);
            if written != 1 {
                return Err((index, error));
            }
        }
    }
    Ok(())
}

fn errno() -> i32 {
    std::io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EIO)
}

/// One plugin process's cgroup, in each hierarchy used. Dropping it kills what is still in it
/// and removes it.
#[derive(Debug)]
pub struct PluginCgroup {
    version: Version,
    /// Memory first.
    dirs: Vec<(Vec<String>, PathBuf)>,
    limits: Mutex<Limits>,
    cpu: bool,
}

impl PluginCgroup {
    /// Which version.
    pub fn version(&self) -> Version {
        self.version
    }

    /// Its directory in the memory hierarchy (its only one on v2).
    pub fn dir(&self) -> &Path {
        &self.dirs[0].1
    }

    /// The `cgroup.procs` files a process writes to join it.
    pub fn procs_files(&self) -> Vec<PathBuf> {
        self.dirs
            .iter()
            .map(|(_, d)| d.join("cgroup.procs"))
            .collect()
    }

    fn dir_of(&self, controller: &str) -> Option<&Path> {
        self.dirs
            .iter()
            .find(|(controllers, _)| controllers.iter().any(|c| c == controller))
            .map(|(_, dir)| dir.as_path())
    }

    /// The limits in force.
    pub fn limits(&self) -> Limits {
        *self.limits.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether a CPU quota can be set on it.
    pub fn has_cpu(&self) -> bool {
        self.cpu && self.dir_of("cpu").is_some()
    }

    /// Puts `limits` in force (a CPU quota only where the cpu controller is there).
    pub fn apply(&self, limits: &Limits) -> Result<(), CgroupError> {
        let mut current = self.limits.lock().unwrap_or_else(|p| p.into_inner());
        for setting in settings(self.version, limits) {
            let controller = match setting.controller {
                Controller::Memory => "memory",
                Controller::Cpu => "cpu",
            };
            let Some(dir) = self.dir_of(controller) else {
                continue;
            };
            if controller == "cpu" && !self.cpu {
                continue;
            }
            write_file(&dir.join(setting.file), &setting.value)?;
        }
        *current = *limits;
        if !self.has_cpu() {
            current.cpu_cores = None;
        }
        Ok(())
    }

    /// What the kernel reports now; each figure whose file cannot be read is left out.
    pub fn read(&self) -> Reading {
        let mut reading = Reading::default();
        let read = |dir: Option<&Path>, file: &str| {
            dir.and_then(|d| std::fs::read_to_string(d.join(file)).ok())
        };
        let memory = self.dir_of("memory");
        let number = |file: &str| read(memory, file).and_then(|t| parse_number(file, &t).ok());
        match self.version {
            Version::V2 => {
                if let Some(events) =
                    read(memory, "memory.events").and_then(|t| parse_memory_events(&t).ok())
                {
                    reading.events = events;
                }
                reading.memory_current = number("memory.current");
                reading.memory_peak = number("memory.peak");
                reading.memory_pressure = read(memory, "memory.pressure")
                    .and_then(|t| parse_pressure("memory.pressure", &t).ok());
                if let Some((usage, throttled)) =
                    read(memory, "cpu.stat").and_then(|t| parse_cpu_stat(Version::V2, &t).ok())
                {
                    reading.cpu_usage_ns = usage;
                    reading.cpu_throttled_ns = throttled;
                }
            }
            Version::V1 => {
                reading.events.max = number("memory.failcnt").unwrap_or(0);
                if let Some((under, kills)) =
                    read(memory, "memory.oom_control").and_then(|t| parse_oom_control(&t).ok())
                {
                    reading.under_oom = under;
                    reading.events.oom_kill = kills;
                }
                reading.memory_current = number("memory.usage_in_bytes");
                reading.memory_peak = number("memory.max_usage_in_bytes");
                reading.cpu_usage_ns = read(self.dir_of("cpuacct"), "cpuacct.usage")
                    .and_then(|t| parse_number("cpuacct.usage", &t).ok());
                reading.cpu_throttled_ns = read(self.dir_of("cpu"), "cpu.stat")
                    .and_then(|t| keyed("cpu.stat", &t, "throttled_time").ok().flatten());
            }
        }
        reading
    }

    /// The processes in it now.
    pub fn pids(&self) -> Vec<u32> {
        procs(self.dir())
    }

    /// Its status for people: its limits and `reading`, with the event `counts` and the
    /// highest `peak` seen; `live` while it exists.
    pub fn status(
        &self,
        reading: &Reading,
        counts: MemoryEventCounts,
        peak: Option<u64>,
        live: bool,
    ) -> CgroupStatus {
        let limits = self.limits();
        let seconds = |ns: Option<u64>| ns.map(|ns| ns as f64 / 1e9);
        CgroupStatus {
            version: self.version.as_str().to_owned(),
            path: self.dir().to_owned(),
            live,
            memory_max_bytes: limits.memory_max,
            memory_high_bytes: limits.memory_high,
            cpu_quota_cores: limits.cpu_cores,
            memory_current_bytes: reading.memory_current,
            memory_peak_bytes: reading.memory_peak.max(peak),
            cpu_seconds: seconds(reading.cpu_usage_ns),
            cpu_throttled_seconds: seconds(reading.cpu_throttled_ns),
            events: counts,
            memory_pressure: reading.memory_pressure,
        }
    }
}

impl Drop for PluginCgroup {
    fn drop(&mut self) {
        for (_, dir) in &self.dirs {
            if let Err(error) = remove_cgroup(dir, Duration::from_secs(2)) {
                tracing::warn!(%error, "cannot remove a plugin's cgroup");
            }
        }
    }
}
