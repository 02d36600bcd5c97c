//! The memory sampler: `/proc/meminfo`, relative to the cgroup's limit when the daemon runs in a
//! memory-limited cgroup (v1 or v2).

use std::path::{Path, PathBuf};

use ballast_core::{MemoryReading, MemoryScope};

use crate::parse::{
    parse_cgroup_limit, parse_cgroup_u64, parse_meminfo, parse_memory_stat_key, parse_proc_cgroup,
    with_v2_path,
};
use crate::source::{SampleError, Source};

/// Which cgroup version a memory controller belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Version {
    V1,
    V2,
}

/// The memory files of one cgroup: the daemon's own, or one of its ancestors.
#[derive(Debug)]
struct Level {
    /// The cgroup's path inside its hierarchy, as `/proc/self/cgroup` writes it.
    path: String,
    limit: Source,
    usage: Source,
    stat: Source,
}

/// The memory files of the daemon's own cgroup and of its ancestors up to the mount: the limit
/// that holds is the tightest of them (a systemd slice's `MemoryMax=` binds the services in it,
/// a Kubernetes pod's limit its containers), and the figures are that cgroup's.
#[derive(Debug)]
struct CgroupMemory {
    version: Version,
    /// The daemon's cgroup first, then each ancestor that has a limit file.
    levels: Vec<Level>,
}

impl CgroupMemory {
    /// Finds the daemon's memory cgroup from `/proc/self/cgroup`, under the cgroup mounts at
    /// `<sys>/fs/cgroup` (v2) or `<sys>/fs/cgroup/memory` (v1), and its ancestors. Inside a
    /// cgroup namespace the mount's root is the cgroup itself, so the mount root is tried when
    /// the path is not found. `v2_path`, when given, is the v2 cgroup to read instead of the
    /// daemon's own.
    fn discover(proc_root: &Path, sys_root: &Path, v2_path: Option<&str>) -> Option<CgroupMemory> {
        let mut source = Source::under(proc_root, "self/cgroup");
        let entries = match source.parse(parse_proc_cgroup) {
            Ok(entries) => with_v2_path(entries, v2_path),
            Err(error) => {
                tracing::debug!(%error, "no cgroup information: memory is the host's");
                return None;
            }
        };
        let cgroup_root = sys_root.join("fs/cgroup");
        let v1 = entries.iter().find(|e| e.has_memory_controller());
        let v2 = entries.iter().find(|e| e.is_v2());
        let found = |version: Version, mount: &Path, path: &str, files: [&str; 3]| {
            let levels: Vec<Level> = levels_of(mount, path, files[0])
                .into_iter()
                .map(|(path, dir)| Level {
                    path,
                    limit: Source::new(dir.join(files[0])),
                    usage: Source::new(dir.join(files[1])),
                    stat: Source::new(dir.join(files[2])),
                })
                .collect();
            (!levels.is_empty()).then_some(CgroupMemory { version, levels })
        };
        if let Some(entry) = v1
            && let Some(found) = found(
                Version::V1,
                &cgroup_root.join("memory"),
                &entry.path,
                [
                    "memory.limit_in_bytes",
                    "memory.usage_in_bytes",
                    "memory.stat",
                ],
            )
        {
            return Some(found);
        }
        let entry = v2?;
        found(
            Version::V2,
            &cgroup_root,
            &entry.path,
            ["memory.max", "memory.current", "memory.stat"],
        )
    }

    fn scope(&self, level: usize) -> MemoryScope {
        let path = self.levels[level].path.clone();
        match self.version {
            Version::V1 => MemoryScope::CgroupV1 { path },
            Version::V2 => MemoryScope::CgroupV2 { path },
        }
    }

    fn inactive_file_key(&self) -> &'static str {
        match self.version {
            Version::V1 => "total_inactive_file",
            Version::V2 => "inactive_file",
        }
    }
}

/// The cgroup `path` under `mount` and each of its ancestors below the hierarchy's root that
/// holds `file`, nearest first, with their paths inside the hierarchy. When `path` is not under
/// `mount` (inside a cgroup namespace the mount's root is the cgroup itself), the mount's root
/// if it holds `file`.
pub(crate) fn levels_of(mount: &Path, path: &str, file: &str) -> Vec<(String, PathBuf)> {
    let relative = path.trim_start_matches('/');
    if relative.is_empty() || !mount.join(relative).join(file).is_file() {
        return find_dir(mount, path, file)
            .map(|dir| (path.to_owned(), dir))
            .into_iter()
            .collect();
    }
    let mut levels = Vec::new();
    let mut current = Some(relative);
    while let Some(relative) = current.filter(|r| !r.is_empty()) {
        let dir = mount.join(relative);
        if dir.join(file).is_file() {
            levels.push((format!("/{relative}"), dir));
        }
        current = relative.rsplit_once('/').map(|(parent, _)| parent);
    }
    levels
}

/// `<mount>/<path>` if it holds `file`, else `<mount>` if that does.
pub(crate) fn find_dir(mount: &Path, path: &str, file: &str) -> Option<PathBuf> {
    let nested = mount.join(path.trim_start_matches('/'));
    [nested, mount.to_path_buf()]
        .into_iter()
        .find(|dir| dir.join(file).is_file())
}

/// Reads memory figures: the host's from `/proc/meminfo`, or the cgroup's when its limit is
/// below the host's total.
#[derive(Debug)]
pub struct MemorySampler {
    meminfo: Source,
    cgroup: Option<CgroupMemory>,
}

/// A memory reading, and the problem with the cgroup files if they could not be used.
#[derive(Debug)]
pub struct MemoryOutcome {
    /// The reading (host scope when the cgroup could not be read).
    pub reading: Result<MemoryReading, SampleError>,
    /// Why the cgroup's figures were not used although the daemon is in a memory cgroup.
    pub cgroup_problem: Option<SampleError>,
}

impl MemorySampler {
    /// A sampler over `<proc_root>/meminfo` and the cgroup files under `<sys_root>/fs/cgroup`
    /// (of the v2 cgroup `v2_path` when given, else of the daemon's own cgroup).
    pub fn new(proc_root: &Path, sys_root: &Path, v2_path: Option<&str>) -> Self {
        MemorySampler {
            meminfo: Source::under(proc_root, "meminfo"),
            cgroup: CgroupMemory::discover(proc_root, sys_root, v2_path),
        }
    }

    /// Reads the figures once.
    pub fn sample(&mut self) -> MemoryOutcome {
        let host = match self.meminfo.parse(parse_meminfo) {
            Ok(host) => host,
            Err(error) => {
                return MemoryOutcome {
                    reading: Err(error),
                    cgroup_problem: None,
                };
            }
        };
        let swap_used = host.swap_total.saturating_sub(host.swap_free);
        let host_reading = MemoryReading {
            total_bytes: host.total,
            used_bytes: host.total.saturating_sub(host.available),
            available_bytes: host.available,
            swap_total_bytes: host.swap_total,
            swap_used_bytes: swap_used,
            scope: MemoryScope::Host,
        };
        let Some(cgroup) = &mut self.cgroup else {
            return MemoryOutcome {
                reading: Ok(host_reading),
                cgroup_problem: None,
            };
        };
        match read_cgroup(cgroup) {
            Ok(Some((limit, used, level))) if limit < host.total => {
                let used = used.min(limit);
                MemoryOutcome {
                    reading: Ok(MemoryReading {
                        total_bytes: limit,
                        used_bytes: used,
                        available_bytes: limit - used,
                        swap_total_bytes: host.swap_total,
                        swap_used_bytes: swap_used,
                        scope: cgroup.scope(level),
                    }),
                    cgroup_problem: None,
                }
            }
            Ok(_) => MemoryOutcome {
                reading: Ok(host_reading),
                cgroup_problem: None,
            },
            Err(error) => MemoryOutcome {
                reading: Ok(host_reading),
                cgroup_problem: Some(error),
            },
        }
    }
}

/// The tightest limit among the cgroup and its ancestors, the working set of the cgroup it is
/// set on (usage less inactive file cache, as the kernel would reclaim that first) and which
/// level that is, or `None` when none has a limit.
fn read_cgroup(cgroup: &mut CgroupMemory) -> Result<Option<(u64, u64, usize)>, SampleError> {
    let mut tightest: Option<(u64, usize)> = None;
    for (index, level) in cgroup.levels.iter_mut().enumerate() {
        if let Some(limit) = level.limit.parse(parse_cgroup_limit)?
            && tightest.is_none_or(|(least, _)| limit < least)
        {
            tightest = Some((limit, index));
        }
    }
    let Some((limit, index)) = tightest else {
        return Ok(None);
    };
    let key = cgroup.inactive_file_key();
    let level = &mut cgroup.levels[index];
    let usage = level.usage.parse(parse_cgroup_u64)?;
    let inactive = level
        .stat
        .parse(|file, text| parse_memory_stat_key(file, text, key))?;
    Ok(Some((limit, usage.saturating_sub(inactive), index)))
}
