//! The CPU sampler (`/proc/stat`, `/proc/loadavg`, and the daemon's cgroup's CPU quota and use
//! when it has a quota) and the daemon's own process figures (`/proc/self/stat`).

use std::path::Path;

use ballast_core::{CpuQuota, CpuReading, ProcessReading, Timestamp};

use crate::cpu_limit::CpuCgroup;
use crate::parse::{CpuTimes, parse_loadavg, parse_proc_stat, parse_self_stat};
use crate::source::{SampleError, Source};

/// CPU: utilization between two readings of `/proc/stat`, load averages and core count; in a
/// cgroup with a CPU quota, the utilization is the cgroup's use relative to its quota.
#[derive(Debug)]
pub struct CpuSampler {
    stat: Source,
    loadavg: Source,
    previous: Option<CpuTimes>,
    last_utilization: Option<f64>,
    cgroup: Option<CpuCgroup>,
    /// Whose quota held, its CPU time (µs) and the host's total jiffies at the previous reading.
    previous_cgroup: Option<(usize, u64, u64)>,
    last_cgroup_utilization: Option<f64>,
    ticks_per_second: u64,
}

impl CpuSampler {
    /// A sampler over `<proc_root>/stat` and `<proc_root>/loadavg`.
    pub fn new(proc_root: &Path) -> Self {
        CpuSampler {
            stat: Source::under(proc_root, "stat"),
            loadavg: Source::under(proc_root, "loadavg"),
            previous: None,
            last_utilization: None,
            cgroup: None,
            previous_cgroup: None,
            last_cgroup_utilization: None,
            ticks_per_second: sysconf(libc::_SC_CLK_TCK, 100),
        }
    }

    /// Measures utilization against the CPU quota of the cgroup `<proc_root>/self/cgroup`
    /// names, under `<sys_root>/fs/cgroup`, when it has one. Without cgroup information (or
    /// when it cannot be read) the figures stay the host's.
    pub fn with_cgroup(mut self, proc_root: &Path, sys_root: &Path, v2_path: Option<&str>) -> Self {
        match CpuCgroup::discover(proc_root, sys_root, v2_path) {
            Ok(cgroup) => self.cgroup = cgroup,
            Err(error) => {
                tracing::debug!(%error, "no cgroup CPU information: CPU figures are the host's")
            }
        }
        self
    }

    /// The number of logical cores, read now.
    pub fn cores(&mut self) -> Result<u32, SampleError> {
        Ok(self.stat.parse(parse_proc_stat)?.cores)
    }

    /// Reads the figures once. The first call has no utilization yet (it needs two readings);
    /// a call so soon after the previous one that no tick passed repeats the last utilization.
    pub fn sample(&mut self) -> Result<CpuReading, SampleError> {
        let times = self.stat.parse(parse_proc_stat)?;
        let load_average = self.loadavg.parse(parse_loadavg)?;
        let previous = self.previous.replace(times);
        if let Some(previous) = previous {
            let total = times.total.saturating_sub(previous.total);
            let busy = times.busy.saturating_sub(previous.busy);
            if total > 0 {
                self.last_utilization = Some((busy as f64 / total as f64).clamp(0.0, 1.0));
            }
        }
        let not_ready = SampleError::NotReady(
            "CPU utilization needs two readings; the next sample will have it",
        );
        let quota = self.sample_cgroup(&times)?;
        let utilization = match &quota {
            Some(_) => self.last_cgroup_utilization.ok_or(not_ready)?,
            None => self.last_utilization.ok_or(not_ready)?,
        };
        Ok(CpuReading {
            utilization,
            load_average,
            cores: times.cores,
            quota,
        })
    }

    /// The cgroup's quota, when it has one and its use is counted, and its utilization of the
    /// quota since the previous reading (into `last_cgroup_utilization`). The time between the
    /// readings is the host's total jiffies over its cores, so no clock is read.
    fn sample_cgroup(&mut self, times: &CpuTimes) -> Result<Option<CpuQuota>, SampleError> {
        let Some(cgroup) = &mut self.cgroup else {
            return Ok(None);
        };
        let Some((cores, binding)) = cgroup.quota_cores()? else {
            self.previous_cgroup = None;
            return Ok(None);
        };
        let Some(usage_us) = cgroup.usage_us(binding)? else {
            return Ok(None);
        };
        let scope = cgroup.scope(binding);
        // Another cgroup's quota holds now: its use is another counter, so start over.
        if self
            .previous_cgroup
            .is_some_and(|(level, _, _)| level != binding)
        {
            self.previous_cgroup = None;
        }
        if let Some((_, previous_us, previous_total)) = self.previous_cgroup {
            let jiffies = times.total.saturating_sub(previous_total);
            let per_core = u64::from(times.cores.max(1)) * self.ticks_per_second;
            let elapsed_us = jiffies as f64 * 1e6 / per_core as f64;
            if elapsed_us > 0.0 {
                let used = usage_us.saturating_sub(previous_us) as f64;
                self.last_cgroup_utilization = Some((used / (elapsed_us * cores)).clamp(0.0, 1.0));
            }
        }
        if self
            .previous_cgroup
            .is_none_or(|(_, _, total)| total != times.total)
        {
            self.previous_cgroup = Some((binding, usage_us, times.total));
        }
        Ok(Some(CpuQuota {
            cores,
            scope: scope.clone(),
        }))
    }
}

/// The daemon's own RSS and CPU use.
#[derive(Debug)]
pub struct ProcessSampler {
    stat: Source,
    page_size: u64,
    ticks_per_second: u64,
    previous: Option<(u64, Timestamp)>,
    last_cpu: Option<f64>,
}

impl ProcessSampler {
    /// A sampler over `<proc_root>/self/stat`.
    pub fn new(proc_root: &Path) -> Self {
        ProcessSampler {
            stat: Source::under(proc_root, "self/stat"),
            page_size: sysconf(libc::_SC_PAGESIZE, 4096),
            ticks_per_second: sysconf(libc::_SC_CLK_TCK, 100),
            previous: None,
            last_cpu: None,
        }
    }

    /// Reads the figures at `now`. CPU use is the CPU time used since the previous reading over
    /// the time between them; readings less than 100 ms apart repeat the last figure.
    pub fn sample(&mut self, now: Timestamp) -> Result<ProcessReading, SampleError> {
        let stat = self.stat.parse(parse_self_stat)?;
        let (ticks, pages) = (stat.ticks, stat.rss_pages);
        match self.previous {
            Some((previous_ticks, previous_at)) => {
                let elapsed = now.saturating_duration_since(previous_at).as_secs_f64();
                if elapsed >= 0.1 {
                    let used =
                        ticks.saturating_sub(previous_ticks) as f64 / self.ticks_per_second as f64;
                    self.last_cpu = Some(used / elapsed);
                    self.previous = Some((ticks, now));
                }
            }
            None => self.previous = Some((ticks, now)),
        }
        let cpu_cores = self.last_cpu.ok_or(SampleError::NotReady(
            "the daemon's CPU use needs two readings; the next sample will have it",
        ))?;
        Ok(ProcessReading {
            rss_bytes: pages.saturating_mul(self.page_size),
            cpu_cores,
        })
    }
}

/// `sysconf(name)`, or `default` when the system does not say.
fn sysconf(name: libc::c_int, default: u64) -> u64 {
    // SAFETY: sysconf reads a configuration value and has no memory-safety preconditions.
    let value = unsafe { libc::sysconf(name) };
    u64::try_from(value)
        .ok()
        .filter(|v| *v > 0)
        .unwrap_or(default)
}
