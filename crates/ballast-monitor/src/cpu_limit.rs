//! The CPU quota of the daemon's cgroup (v2 `cpu.max`, v1 `cpu.cfs_quota_us` over
//! `cpu.cfs_period_us`) and the cgroup's CPU use (v2 `cpu.stat` `usage_usec`, v1
//! `cpuacct.usage`): for tier detection (a container limited to one CPU on a large host should
//! not count as a large host) and for CPU utilization relative to the quota.

use std::path::Path;

use ballast_core::MemoryScope;

use crate::memory::find_dir;
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

/// The daemon's cgroup's CPU files.
#[derive(Debug)]
pub(crate) struct CpuCgroup {
    scope: MemoryScope,
    quota: Quota,
    usage: Option<Usage>,
}

impl CpuCgroup {
    /// Finds the CPU quota files of the cgroup `<proc>/self/cgroup` names, v1 first (as for
    /// memory), under `<sys>/fs/cgroup`. `None` when there is no cgroup information or no CPU
    /// controller. `v2_path`, when given, is the v2 cgroup to read instead of the daemon's own.
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

    /// The quota in cores, `None` when unlimited.
    pub(crate) fn quota_cores(&mut self) -> Result<Option<f64>, SampleError> {
        match &mut self.quota {
            Quota::Cfs { quota, period } => {
                let period_text = period.read()?.to_owned();
                let period_name = period.name.clone();
                quota.parse(|file, text| parse_cfs_quota(file, text, &period_name, &period_text))
            }
            Quota::Max(max) => max.parse(parse_cpu_max),
        }
    }

    /// The cgroup's CPU time so far, in microseconds; `None` when it is not counted here.
    pub(crate) fn usage_us(&mut self) -> Result<Option<u64>, SampleError> {
        match &mut self.usage {
            None => Ok(None),
            Some(Usage::CpuacctNs(source)) => Ok(Some(source.parse(parse_cgroup_u64)? / 1_000)),
            Some(Usage::StatUsec(source)) => source
                .parse(|file, text| parse_memory_stat_key(file, text, "usage_usec"))
                .map(Some),
        }
    }

    /// Whose quota it is.
    pub(crate) fn scope(&self) -> &MemoryScope {
        &self.scope
    }
}

fn discover_in(entries: &[CgroupEntry], cgroup_root: &Path) -> Option<CpuCgroup> {
    let has = |e: &&CgroupEntry, c: &str| e.controllers.iter().any(|x| x == c);
    if let Some(entry) = entries.iter().find(|e| has(e, "cpu")) {
        for mount in V1_CPU_MOUNTS {
            if let Some(dir) = find_dir(&cgroup_root.join(mount), &entry.path, "cpu.cfs_quota_us") {
                let usage = entries.iter().find(|e| has(e, "cpuacct")).and_then(|acct| {
                    V1_CPUACCT_MOUNTS
                        .iter()
                        .find_map(|m| find_dir(&cgroup_root.join(m), &acct.path, "cpuacct.usage"))
                });
                return Some(CpuCgroup {
                    scope: MemoryScope::CgroupV1 {
                        path: entry.path.clone(),
                    },
                    quota: Quota::Cfs {
                        quota: Source::new(dir.join("cpu.cfs_quota_us")),
                        period: Source::new(dir.join("cpu.cfs_period_us")),
                    },
                    usage: usage.map(|d| Usage::CpuacctNs(Source::new(d.join("cpuacct.usage")))),
                });
            }
        }
    }
    if let Some(entry) = entries.iter().find(|e| e.is_v2())
        && let Some(dir) = find_dir(cgroup_root, &entry.path, "cpu.max")
    {
        return Some(CpuCgroup {
            scope: MemoryScope::CgroupV2 {
                path: entry.path.clone(),
            },
            quota: Quota::Max(Source::new(dir.join("cpu.max"))),
            usage: dir
                .join("cpu.stat")
                .is_file()
                .then(|| Usage::StatUsec(Source::new(dir.join("cpu.stat")))),
        });
    }
    None
}

/// The daemon's cgroup CPU quota in cores, `None` when there is none (or no cgroup information).
pub(crate) fn cpu_limit_cores(
    proc_root: &Path,
    sys_root: &Path,
    v2_path: Option<&str>,
) -> Result<Option<f64>, SampleError> {
    match CpuCgroup::discover(proc_root, sys_root, v2_path)? {
        Some(mut cgroup) => cgroup.quota_cores(),
        None => Ok(None),
    }
}
