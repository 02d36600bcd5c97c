//! Where pressure stall information is read: the daemon's own cgroup's pressure files (cgroup v2
//! `cpu.pressure`, `memory.pressure`, `io.pressure`) when it runs in a cgroup that has them,
//! else the host's `/proc/pressure/*`. cgroup v1 has no per-cgroup pressure, so a daemon in a v1
//! memory cgroup reads the host's files (which do show stalls caused inside the cgroup).

use std::path::{Path, PathBuf};

use ballast_core::MemoryScope;

use crate::parse::{parse_proc_cgroup, with_v2_path};
use crate::source::Source;

/// Where the v2 hierarchy is mounted under `<sys>`: alone (`fs/cgroup`), or next to the v1
/// controllers in a hybrid layout (`fs/cgroup/unified`).
const V2_MOUNTS: [&str; 2] = ["fs/cgroup", "fs/cgroup/unified"];

/// The three pressure files and whose they are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PressureFiles {
    /// The host's, or the daemon's v2 cgroup's.
    pub scope: MemoryScope,
    /// CPU pressure.
    pub cpu: PathBuf,
    /// Memory pressure: the file a PSI trigger is armed on.
    pub memory: PathBuf,
    /// IO pressure.
    pub io: PathBuf,
}

impl PressureFiles {
    /// The host's: `<proc>/pressure/{cpu,memory,io}`.
    pub fn host(proc_root: &Path) -> Self {
        PressureFiles {
            scope: MemoryScope::Host,
            cpu: proc_root.join("pressure/cpu"),
            memory: proc_root.join("pressure/memory"),
            io: proc_root.join("pressure/io"),
        }
    }

    /// The pressure files of the cgroup the process of `<proc>/self` runs in, when it is a v2
    /// cgroup other than the root (whose files are the host's own figures) and it has them;
    /// else the host's. Inside a cgroup namespace `/proc/self/cgroup` says `/` and the mount's
    /// root is the cgroup itself: it is taken when it is not the real root (it has
    /// `cgroup.type`, which the root cgroup lacks). `v2_path`, when given, is the v2 cgroup to
    /// read instead of the daemon's own.
    pub fn discover(proc_root: &Path, sys_root: &Path, v2_path: Option<&str>) -> Self {
        let mut source = Source::under(proc_root, "self/cgroup");
        let Ok(entries) = source.parse(parse_proc_cgroup) else {
            return PressureFiles::host(proc_root);
        };
        let entries = with_v2_path(entries, v2_path);
        let Some(entry) = entries.iter().find(|e| e.is_v2()) else {
            return PressureFiles::host(proc_root);
        };
        for mount in V2_MOUNTS {
            let mount = sys_root.join(mount);
            let nested = mount.join(entry.path.trim_start_matches('/'));
            for dir in [nested, mount.clone()] {
                if dir.join("memory.pressure").is_file() && dir.join("cgroup.type").is_file() {
                    return PressureFiles {
                        scope: MemoryScope::CgroupV2 {
                            path: entry.path.clone(),
                        },
                        cpu: dir.join("cpu.pressure"),
                        memory: dir.join("memory.pressure"),
                        io: dir.join("io.pressure"),
                    };
                }
            }
        }
        PressureFiles::host(proc_root)
    }
}
