//! Parsers for cgroup files: `/proc/self/cgroup`, memory limits, counters and `memory.stat`.

use super::{ParseError, Problem, error, parse_u64, unexpected};

/// One line of `/proc/<pid>/cgroup`: `hierarchy-id:controllers:path`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CgroupEntry {
    /// The hierarchy id (0 for the cgroup v2 unified hierarchy).
    pub hierarchy: u32,
    /// The v1 controllers bound to the hierarchy (empty for v2).
    pub controllers: Vec<String>,
    /// The cgroup's path inside the hierarchy, starting with `/`.
    pub path: String,
}

impl CgroupEntry {
    /// Whether this is the cgroup v2 unified hierarchy's line (`0::/path`).
    pub fn is_v2(&self) -> bool {
        self.hierarchy == 0 && self.controllers.is_empty()
    }

    /// Whether this v1 hierarchy carries the `memory` controller.
    pub fn has_memory_controller(&self) -> bool {
        self.controllers.iter().any(|c| c == "memory")
    }
}

/// `entries` with the v2 entry's path replaced by `v2_path` when one is given: the cgroup to
/// measure when it is not the one the process is in (the cgroup a daemon moved out of into a
/// leaf of it, which holds the daemon and its plugins).
pub fn with_v2_path(mut entries: Vec<CgroupEntry>, v2_path: Option<&str>) -> Vec<CgroupEntry> {
    let Some(path) = v2_path else {
        return entries;
    };
    match entries.iter_mut().find(|e| e.is_v2()) {
        Some(entry) => path.clone_into(&mut entry.path),
        None => entries.push(CgroupEntry {
            hierarchy: 0,
            controllers: Vec::new(),
            path: path.to_owned(),
        }),
    }
    entries
}

/// Parses `/proc/<pid>/cgroup`.
pub fn parse_proc_cgroup(file: &str, text: &str) -> Result<Vec<CgroupEntry>, ParseError> {
    let mut entries = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let n = index + 1;
        if line.trim().is_empty() {
            continue;
        }
        let mut parts = line.splitn(3, ':');
        let (Some(id), Some(controllers), Some(path)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(unexpected(file, n, "`id:controllers:path`", line));
        };
        let hierarchy = u32::try_from(parse_u64(file, n, "hierarchy id", id)?)
            .map_err(|_| super::bad_number(file, n, "hierarchy id", id))?;
        if !path.starts_with('/') {
            return Err(unexpected(file, n, "a path starting with `/`", path));
        }
        entries.push(CgroupEntry {
            hierarchy,
            controllers: controllers
                .split(',')
                .filter(|c| !c.is_empty())
                .map(str::to_owned)
                .collect(),
            path: path.to_owned(),
        });
    }
    if entries.is_empty() {
        return Err(error(file, Problem::Empty));
    }
    Ok(entries)
}

/// Parses a memory limit: cgroup v2 `memory.max` (`max` or bytes) or cgroup v1
/// `memory.limit_in_bytes` (bytes; a value near `i64::MAX` means unlimited). `None` is no limit.
pub fn parse_cgroup_limit(file: &str, text: &str) -> Result<Option<u64>, ParseError> {
    // cgroup v1 reports "unlimited" as the largest page-aligned i64.
    const V1_UNLIMITED: u64 = 0x7fff_ffff_ffff_f000;
    let value = text.trim();
    if value.is_empty() {
        return Err(error(file, Problem::Empty));
    }
    if value == "max" {
        return Ok(None);
    }
    let bytes = parse_u64(file, 1, "limit", value)?;
    Ok((bytes < V1_UNLIMITED).then_some(bytes))
}

/// Parses cgroup v2 `cpu.max` (`max 100000` or `200000 100000`): the quota in cores, `None`
/// when unlimited.
pub fn parse_cpu_max(file: &str, text: &str) -> Result<Option<f64>, ParseError> {
    let mut words = text.split_ascii_whitespace();
    let (Some(quota), period) = (words.next(), words.next()) else {
        return Err(error(file, Problem::Empty));
    };
    if quota == "max" {
        return Ok(None);
    }
    let quota = parse_u64(file, 1, "quota", quota)?;
    let period = match period {
        Some(p) => parse_u64(file, 1, "period", p)?,
        None => 100_000,
    };
    Ok(cores(quota, period))
}

/// Parses cgroup v1 `cpu.cfs_quota_us` and `cpu.cfs_period_us`: the quota in cores, `None` when
/// unlimited (`-1`).
pub fn parse_cfs_quota(
    quota_file: &str,
    quota_text: &str,
    period_file: &str,
    period_text: &str,
) -> Result<Option<f64>, ParseError> {
    let quota = quota_text.trim();
    if quota.is_empty() {
        return Err(error(quota_file, Problem::Empty));
    }
    if quota == "-1" {
        return Ok(None);
    }
    let quota = parse_u64(quota_file, 1, "quota", quota)?;
    let period = parse_cgroup_u64(period_file, period_text)?;
    Ok(cores(quota, period))
}

fn cores(quota: u64, period: u64) -> Option<f64> {
    (quota > 0 && period > 0).then(|| quota as f64 / period as f64)
}

/// Parses a file holding one number, e.g. `memory.current` or `memory.usage_in_bytes`.
pub fn parse_cgroup_u64(file: &str, text: &str) -> Result<u64, ParseError> {
    let value = text.trim();
    if value.is_empty() {
        return Err(error(file, Problem::Empty));
    }
    parse_u64(file, 1, "value", value)
}

/// Finds `key` in a flat keyed file such as `memory.stat` (`key value` lines). Other lines are
/// skipped; the key's value must be a number.
pub fn parse_memory_stat_key(file: &str, text: &str, key: &'static str) -> Result<u64, ParseError> {
    for (index, line) in text.lines().enumerate() {
        let mut words = line.split_ascii_whitespace();
        if words.next() == Some(key) {
            let value = words.next().unwrap_or("");
            return parse_u64(file, index + 1, key, value);
        }
    }
    if text.trim().is_empty() {
        return Err(error(file, Problem::Empty));
    }
    Err(error(file, Problem::Missing(key)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_cgroup_v1_and_v2_lines() {
        let entries = parse_proc_cgroup(
            "cgroup",
            "4:memory:/process_api/abc\n1:cpu,cpuacct:/\n0::/user.slice/x:y\n",
        )
        .unwrap();
        assert!(entries[0].has_memory_controller());
        assert_eq!(entries[0].path, "/process_api/abc");
        assert_eq!(entries[1].controllers, ["cpu", "cpuacct"]);
        assert!(entries[2].is_v2());
        assert_eq!(entries[2].path, "/user.slice/x:y");
        let e = parse_proc_cgroup("cgroup", "x:memory:/x\n").unwrap_err();
        assert!(e.to_string().contains("hierarchy id"), "{e}");
        let e = parse_proc_cgroup("cgroup", "memory:/x\n").unwrap_err();
        assert!(
            e.to_string().contains("expected `id:controllers:path`"),
            "{e}"
        );
    }

    #[test]
    fn limits_max_and_v1_unlimited_are_none() {
        assert_eq!(parse_cgroup_limit("memory.max", "max\n").unwrap(), None);
        assert_eq!(
            parse_cgroup_limit("memory.limit_in_bytes", "9223372036854771712\n").unwrap(),
            None
        );
        assert_eq!(
            parse_cgroup_limit("memory.max", "536870912\n").unwrap(),
            Some(512 << 20)
        );
        let e = parse_cgroup_limit("memory.max", "-1\n").unwrap_err();
        assert_eq!(
            e.to_string(),
            "memory.max: line 1: `limit` is not a valid number: `-1`"
        );
    }

    #[test]
    fn cpu_quotas_in_cores() {
        assert_eq!(parse_cpu_max("cpu.max", "max 100000\n").unwrap(), None);
        assert_eq!(
            parse_cpu_max("cpu.max", "150000 100000\n").unwrap(),
            Some(1.5)
        );
        assert!(parse_cpu_max("cpu.max", "lots 100000\n").is_err());
        assert_eq!(parse_cfs_quota("q", "-1\n", "p", "100000\n").unwrap(), None);
        assert_eq!(
            parse_cfs_quota("q", "200000\n", "p", "100000\n").unwrap(),
            Some(2.0)
        );
        assert!(parse_cfs_quota("q", "200000\n", "p", "\n").is_err());
    }

    #[test]
    fn memory_stat_key() {
        let text = "anon 10\nfile 20\ninactive_file 7\n";
        assert_eq!(
            parse_memory_stat_key("memory.stat", text, "inactive_file").unwrap(),
            7
        );
        let e = parse_memory_stat_key("memory.stat", "anon 1\n", "inactive_file").unwrap_err();
        assert_eq!(e.to_string(), "memory.stat: missing inactive_file");
    }
}
