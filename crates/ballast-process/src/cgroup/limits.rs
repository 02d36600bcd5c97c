//! What the kernel enforces on a plugin's cgroup, and which files say so: a pure function from
//! the limits and the cgroup version to `(controller, file, value)` writes.

use super::layout::Version;

/// The CFS period a CPU quota is expressed over, in microseconds (the kernel's default).
pub const CPU_PERIOD_US: u64 = 100_000;

/// The smallest quota the kernel accepts, in microseconds.
const CPU_QUOTA_MIN_US: u64 = 1_000;

/// The limits of one plugin process's cgroup.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Limits {
    /// The memory the kernel never lets it exceed (its `memory_hard_limit_mb`).
    pub memory_max: Option<u64>,
    /// Where the kernel starts reclaiming from it: on v2 it throttles the process there, on v1
    /// the cgroup is reclaimed down to it first when the machine is short of memory.
    pub memory_high: Option<u64>,
    /// A CPU quota, in cores.
    pub cpu_cores: Option<f64>,
}

impl Limits {
    /// A plugin's limits: `hard_limit` as the kernel's limit; the level's declared `need` as the
    /// throttling point, when there is a limit and the need is below it (above it, the limit
    /// comes first; with no limit, ballast throttles nobody); `cpu_share` as the quota when the
    /// plugin asks for one and declares a share above zero.
    pub fn for_plugin(hard_limit: Option<u64>, need: u64, cpu_share: Option<f64>) -> Limits {
        Limits {
            memory_max: hard_limit,
            memory_high: hard_limit
                .filter(|max| need > 0 && need < *max)
                .map(|_| need),
            cpu_cores: cpu_share.filter(|c| c.is_finite() && *c > 0.0),
        }
    }
}

/// Which controller a file belongs to (on v1, which hierarchy it is in).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Controller {
    /// `memory`.
    Memory,
    /// `cpu`.
    Cpu,
}

/// One write to a cgroup file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Setting {
    /// The controller whose hierarchy the file is in.
    pub controller: Controller,
    /// The file's name.
    pub file: &'static str,
    /// What to write.
    pub value: String,
}

fn setting(controller: Controller, file: &'static str, value: impl Into<String>) -> Setting {
    Setting {
        controller,
        file,
        value: value.into(),
    }
}

/// The CPU quota of `cores` per [`CPU_PERIOD_US`], in microseconds.
pub fn cpu_quota_us(cores: f64) -> u64 {
    let quota = (cores * CPU_PERIOD_US as f64).round();
    if quota.is_finite() && quota < u64::MAX as f64 {
        (quota as u64).max(CPU_QUOTA_MIN_US)
    } else {
        u64::MAX / 2
    }
}

/// The writes that put `limits` in force, in order, for a cgroup of `version`. Each limit that
/// is `None` is written as "none", so that the same writes also lift a limit.
pub fn settings(version: Version, limits: &Limits) -> Vec<Setting> {
    let bytes =
        |value: Option<u64>, none: &str| value.map_or_else(|| none.to_owned(), |b| b.to_string());
    let quota = limits.cpu_cores.map(cpu_quota_us);
    match version {
        Version::V2 => vec![
            // `memory.high` first: lowering both never leaves high above max for long.
            setting(
                Controller::Memory,
                "memory.high",
                bytes(limits.memory_high, "max"),
            ),
            setting(
                Controller::Memory,
                "memory.max",
                bytes(limits.memory_max, "max"),
            ),
            setting(
                Controller::Cpu,
                "cpu.max",
                format!(
                    "{} {CPU_PERIOD_US}",
                    quota.map_or_else(|| "max".to_owned(), |q| q.to_string())
                ),
            ),
        ],
        Version::V1 => vec![
            setting(
                Controller::Memory,
                "memory.limit_in_bytes",
                bytes(limits.memory_max, "-1"),
            ),
            setting(
                Controller::Memory,
                "memory.soft_limit_in_bytes",
                bytes(limits.memory_high, "-1"),
            ),
            setting(
                Controller::Cpu,
                "cpu.cfs_period_us",
                CPU_PERIOD_US.to_string(),
            ),
            setting(
                Controller::Cpu,
                "cpu.cfs_quota_us",
                quota.map_or_else(|| "-1".to_owned(), |q| q.to_string()),
            ),
        ],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn written(version: Version, limits: Limits) -> Vec<String> {
        settings(version, &limits)
            .into_iter()
            .map(|s| format!("{:?} {} = {}", s.controller, s.file, s.value))
            .collect()
    }

    #[test]
    fn a_plugin_with_a_limit_a_need_and_a_quota() {
        let limits = Limits::for_plugin(Some(200 << 20), 64 << 20, Some(0.25));
        assert_eq!(
            written(Version::V2, limits),
            [
                "Memory memory.high = 67108864",
                "Memory memory.max = 209715200",
                "Cpu cpu.max = 25000 100000",
            ]
        );
        assert_eq!(
            written(Version::V1, limits),
            [
                "Memory memory.limit_in_bytes = 209715200",
                "Memory memory.soft_limit_in_bytes = 67108864",
                "Cpu cpu.cfs_period_us = 100000",
                "Cpu cpu.cfs_quota_us = 25000",
            ]
        );
    }

    #[test]
    fn no_limit_is_written_as_none() {
        let limits = Limits::for_plugin(None, 64 << 20, None);
        assert_eq!(limits.memory_high, None, "no limit, no throttling");
        assert_eq!(
            written(Version::V2, limits),
            [
                "Memory memory.high = max",
                "Memory memory.max = max",
                "Cpu cpu.max = max 100000",
            ]
        );
        assert_eq!(
            written(Version::V1, limits),
            [
                "Memory memory.limit_in_bytes = -1",
                "Memory memory.soft_limit_in_bytes = -1",
                "Cpu cpu.cfs_period_us = 100000",
                "Cpu cpu.cfs_quota_us = -1",
            ]
        );
    }

    #[test]
    fn a_need_at_or_above_the_limit_sets_no_throttling_point() {
        assert_eq!(
            Limits::for_plugin(Some(64 << 20), 64 << 20, None).memory_high,
            None
        );
        assert_eq!(
            Limits::for_plugin(Some(64 << 20), 0, None).memory_high,
            None
        );
        assert_eq!(Limits::for_plugin(None, 0, Some(0.0)).cpu_cores, None);
        assert_eq!(Limits::for_plugin(None, 0, Some(f64::NAN)).cpu_cores, None);
    }

    #[test]
    fn quotas_are_at_least_a_millisecond_and_may_span_cores() {
        assert_eq!(cpu_quota_us(0.001), 1_000);
        assert_eq!(cpu_quota_us(2.5), 250_000);
        assert_eq!(cpu_quota_us(f64::INFINITY), u64::MAX / 2);
    }
}
