//! A cgroup per plugin process, so that the kernel enforces its limits: its memory hard limit
//! (v2 `memory.max`, v1 `memory.limit_in_bytes`), its level's declared need as a throttling
//! point (v2 `memory.high`; v1 `memory.soft_limit_in_bytes`, the cgroup reclaimed first), and
//! its CPU share as a quota when asked (v2 `cpu.max`, v1 `cpu.cfs_quota_us`).
//!
//! The layout, under the daemon's own cgroup in each hierarchy used (v2: the unified one when it
//! offers the memory controller; v1: those of `memory`, `cpu` and `cpuacct`):
//!
//! ```text
//! <daemon's cgroup>/ballast-<pid>-<start>.1/     the daemon's directory, one per running daemon
//!                                    indexer.2/  one plugin process (the number grows per process)
//!                                    indexer.3/  ... its restart
//! ```
//!
//! On v2 a cgroup other than the root can hand controllers to its children only while it holds
//! no process, so a daemon alone in its cgroup (systemd's `Delegate=yes`, a container) first
//! moves itself into a leaf, `<daemon's cgroup>/daemon/`, beside its directory; its cgroup,
//! which then holds the daemon and its plugins, stays the scope the monitor reads.
//!
//! A process joins its cgroup before it runs anything of its own: between fork and exec
//! ([`crate::Spawn::cgroups`]). Its cgroup is removed once it has exited, with anything left in
//! it killed. A daemon killed with SIGKILL leaves its directory behind; the next daemon started
//! in the same cgroup removes every `ballast-<pid>-<start>` whose daemon is gone.
//!
//! The pure parts: [`layout`] (which hierarchies, from `/proc/self/cgroup` and `mountinfo`),
//! [`limits`] (which files with which values), [`events`] (parsing what the kernel reports, and
//! the alerts it makes) and [`stale`] (whose directory is whose). [`tree`] is the IO shell.

pub mod events;
pub mod layout;
pub mod limits;
pub mod stale;
pub mod tree;

use std::path::PathBuf;

pub use events::{EventTracker, Reading};
pub use layout::{Layout, Version};
pub use limits::Limits;
pub use tree::{CgroupRoots, CgroupTree, DAEMON_LEAF, PluginCgroup, remove_stale, settle_in_leaf};

/// Why a cgroup file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    /// Its text is not what the kernel writes.
    #[error("{file}: {problem}")]
    Parse {
        /// The file.
        file: String,
        /// What is wrong.
        problem: String,
    },
    /// A file or directory could not be read, written, created or removed.
    #[error("cannot {action} {}: {error}", path.display())]
    Io {
        /// What was tried.
        action: &'static str,
        /// On what.
        path: PathBuf,
        /// Why it failed.
        error: std::io::Error,
    },
}
