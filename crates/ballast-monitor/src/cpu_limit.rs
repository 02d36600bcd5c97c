//! The CPU quota of the daemon's cgroup (v2 `cpu.max`, v1 `cpu.cfs_quota_us` over
//! `cpu.cfs_period_us`) and the cgroup's CPU use (v2 `cpu.stat` `usage_usec`, v1
//! `cpuacct.usage`): for tier detection (a container limited to one CPU on a large host should
//! not count as a large host) and for CPU utilization relative to the quota.

use std::path::Path;

use ballast_core::MemoryScope;

use crate::memory::{find_dir, levels_of};
use crate::parse::{
    CgroupEntry, parse_cfs_quota, parse_cgroup_u64, parse_cpu_max, parse_memory_stat_key,
    parse_proc_cgroup, with_v2_path,
};
use crate::source::{SampleError, Source};

/// The v1 mount points the `cpu` controller is found under, alone or mounted with `cpuacct`.
const V1_CPU_MOUNTS: [&str; 3] = ["cpu", "cpu,cpuacct", "cpuacct,cpu"];
/// The same for the `cpuacct` controller.
const V1_CPUACCT_MOUNTS: [&str; 3] = ["cpuacct", "cpu,cpuacct", "cpuacct,cpu"];

/// Where the quota is written.
#[derive(Debug)]
enum Quota {
    /// v1: `cpu.cfs_quota_us` and `cpu.cfs_period_us`.
    Cfs { quota: Source, period: Source },
    /// v2: `cpu.max`.
    Max(Source),
}

/// Where the cgroup's CPU use is counted.
#[derive(Debug)]
enum Usage {
    /// v1 `cpuacct.usage`, in nanoseconds.
    CpuacctNs(Source),
    /// v2 `cpu.stat`'s `usage_usec`, in microseconds.
    StatUsec(Source),
}

/// One cgroup's CPU files: the daemon's own, or one of its ancestors'.
#[derive(Debug)]
struct Level {
    scope: MemoryScope,
    quota: Quota,
    usage: Option<Usage>,
}

/// The CPU files of the daemon's cgroup and of its ancestors up to the mount: the quota that
/// holds is the tightest of them (a slice's `CPUQuota=` binds the services in it), and the use
/// measured against it is that cgroup's.
#[derive(Debug)]
pub(crate) struct CpuCgroup {
    /// The daemon's cgroup first, then each ancestor that has a quota file.
    levels: Vec<Level>,
}

impl CpuCgroup {
    /// Finds the CPU quota files of the cgroup `<proc>/self/cgroup` names and of its ancestors,
    /// v1 first (as for memory), under `<sys>/fs/cgroup`. `None` when there is no cgroup
    /// information or no CPU controller. `v2_path`, when given, is the v2 cgroup to read instead
    /// of the daemon's own.
    pub(crate) fn discover(
        proc_root: &Path,
        sys_root: &Path,
        v2_path: Option<&str>,
    ) -> Result<Option<Self>, SampleError> {
        let mut source = Source::under(proc_root, "self/cgroup");
        let entries = match source.parse(parse_proc_cgroup) {
            Ok(entries) => with_v2_path(entries, v2_path),
            Err(error) if error.is_not_found() => return Ok(None),
            Err(error) => return Err(error),
        };
        Ok(discover_in(&entries, &sys_root.join("fs/cgroup")))
    }

    /// The tightest quota in cores and the level it is set on (for [`CpuCgroup::usage_us`] and
    /// [`CpuCgroup::scope`]), `None` when none is limited.
    pub(crate) fn quota_cores(&mut self) -> Result<Option<(f64, usize)>, SampleError> {
        let mut tightest: Option<(f64, usize)> = None;
        for (index, level) in self.levels.iter_mut().enumerate() {
            let cores = match &mut level.quota {
                Quota::Cfs { quota, period } => {
                    // Unlimited (most ancestors): the period is not needed.
                    if quota.read()?.trim() == "-1" {
                        continue;
                    }
                    let period_text = period.read()?.to_owned();
                    let period_name = period.name.clone();
                    quota.parse(|file, text| {
                        parse_cfs_quota(file, text, &period_name, &period_text)
                    })?
                }
                Quota::Max(max) => max.parse(parse_cpu_max)?,
            };
            if let Some(cores) = cores
                && tightest.is_none_or(|(least, _)| cores < least)
            {
                tightest = Some((cores, index));
            }
        }
        Ok(tightest)
    }

    /// The CPU time so far of the cgroup at `level`, in microseconds; `None` when it is not
    /// counted there.
    pub(crate) fn usage_us(&mut self, level: usize) -> Result<Option<u64>, SampleError> {
        match &mut self.levels[level].usage {
            None => Ok(None),
            Some(Usage::CpuacctNs(source)) => Ok(Some(source.parse(parse_cgroup_u64)? / 1_000)),
            Some(Usage::StatUsec(source)) => source
                .parse(|file, text| parse_memory_stat_key(file, text, "usage_usec"))
                .map(Some),
        }
    }

    /// Whose quota it is at `level`.
    pub(crate) fn scope(&self, level: usize) -> &MemoryScope {
        &self.levels[level].scope
    }
}

fn discover_in(entries: &[CgroupEntry], cgroup_root: &Path) -> Option<CpuCgroup> {
    let has = |e: &&CgroupEntry, c: &str| e.controllers.iter().any(|x| x == c);
    let found = |levels: Vec<Level>| (!levels.is_empty()).then_some(CpuCgroup { levels });
    if let Some(entry) = entries.iter().find(|e| has(e, "cpu")) {
        let acct = entries.iter().find(|e| has(e, "cpuacct"));
        for mount in V1_CPU_MOUNTS {
            let quota_levels = levels_of(&cgroup_root.join(mount), &entry.path, "cpu.cfs_quota_us");
            if quota_levels.is_empty() {
                continue;
            }
            let levels = quota_levels
                .into_iter()
                .enumerate()
                .map(|(index, (path, dir))| {
                    // The cpuacct cgroup of the same path (the daemon's own found as memory's).
                    let usage = acct.and_then(|acct| {
                        V1_CPUACCT_MOUNTS.iter().find_map(|m| {
                            let mount = cgroup_root.join(m);
                            if index == 0 {
                                find_dir(&mount, &acct.path, "cpuacct.usage")
                            } else {
                                let dir = mount.join(path.trim_start_matches('/'));
                                dir.join("cpuacct.usage").is_file().then_some(dir)
                            }
                        })
                    });
                    Level {
                        scope: MemoryScope::CgroupV1 { path },
                        quota: Quota::Cfs {
                            quota: Source::new(dir.join("cpu.cfs_quota_us")),
                            period: Source::new(dir.join("cpu.cfs_period_us")),
                        },
                        usage: usage
                            .map(|d| Usage::CpuacctNs(Source::new(d.join("cpuacct.usage")))),
                    }
                })
                .collect();
            return found(levels);
        }
    }
    let entry = entries.iter().find(|e| e.is_v2())?;
    let levels = levels_of(cgroup_root, &entry.path, "cpu.max")
        .into_iter()
        .map(|(path, dir)| Level {
            scope: MemoryScope::CgroupV2 { path },
            quota: Quota::Max(Source::new(dir.join("cpu.max"))),
            usage: dir
                .join("cpu.stat")
                .is_file()
                .then(|| Usage::StatUsec(Source::new(dir.join("cpu.stat")))),
        })
        .collect();
    found(levels)
}

/// The daemon's cgroup CPU quota in cores, `None` when there is none (or no cgroup information).
pub(crate) fn cpu_limit_cores(
    proc_root: &Path,
    sys_root: &Path,
    v2_path: Option<&str>,
) -> Result<Option<f64>, SampleError> {
    match CpuCgroup::discover(proc_root, sys_root, v2_path)? {
        Some(mut cgroup) => Ok(cgroup.quota_cores()?.map(|(cores, _)| cores)),
        None => Ok(None),
    }
}
