//! The CPU quota of the daemon's cgroup (v2 `cpu.max`, v1 `cpu.cfs_quota_us`), read for tier
//! detection: a container limited to one CPU on a large host should not count as a large host.

use std::path::Path;

use crate::memory::find_dir;
use crate::parse::{parse_cfs_quota, parse_cpu_max, parse_proc_cgroup};
use crate::source::{SampleError, Source};

/// The v1 mount points the `cpu` controller is found under, alone or mounted with `cpuacct`.
const V1_MOUNTS: [&str; 3] = ["cpu", "cpu,cpuacct", "cpuacct,cpu"];

/// The daemon's cgroup CPU quota in cores, `None` when there is none (or no cgroup information).
pub(crate) fn cpu_limit_cores(
    proc_root: &Path,
    sys_root: &Path,
) -> Result<Option<f64>, SampleError> {
    let mut source = Source::under(proc_root, "self/cgroup");
    let entries = match source.parse(parse_proc_cgroup) {
        Ok(entries) => entries,
        Err(error) if error.is_not_found() => return Ok(None),
        Err(error) => return Err(error),
    };
    let cgroup_root = sys_root.join("fs/cgroup");
    if let Some(entry) = entries
        .iter()
        .find(|e| e.controllers.iter().any(|c| c == "cpu"))
    {
        for mount in V1_MOUNTS {
            if let Some(dir) = find_dir(&cgroup_root.join(mount), &entry.path, "cpu.cfs_quota_us") {
                let mut quota = Source::new(dir.join("cpu.cfs_quota_us"));
                let mut period = Source::new(dir.join("cpu.cfs_period_us"));
                let period_text = period.read()?.to_owned();
                let period_name = period.name.clone();
                return quota
                    .parse(|file, text| parse_cfs_quota(file, text, &period_name, &period_text));
            }
        }
    }
    if let Some(entry) = entries.iter().find(|e| e.is_v2())
        && let Some(dir) = find_dir(&cgroup_root, &entry.path, "cpu.max")
    {
        return Source::new(dir.join("cpu.max")).parse(parse_cpu_max);
    }
    Ok(None)
}
