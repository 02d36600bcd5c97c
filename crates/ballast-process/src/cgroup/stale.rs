//! Whose cgroups are whose: each daemon makes its plugins' cgroups in a directory named after
//! itself (`ballast-<pid>-<start time>.<n>`, `n` counting the trees the process made, 1 in a
//! daemon), so that a daemon starting after a `kill -9` can tell the cgroups of a daemon that is
//! gone from those of one still running beside it (tests run several in one cgroup), even once
//! the pid is reused. Pure: liveness is a lookup the caller gives.

/// What every daemon's directory is named with.
pub const PREFIX: &str = "ballast-";

/// A daemon: its pid and its start time (`/proc/<pid>/stat` field 22, in clock ticks since
/// boot), which together name one process for the life of the machine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Owner {
    /// The daemon's pid.
    pub pid: u32,
    /// When it started, in clock ticks since boot.
    pub start_ticks: u64,
}

impl Owner {
    /// The name of its `n`th directory: `ballast-<pid>-<start>.<n>`.
    pub fn dir_name(&self, n: u64) -> String {
        format!("{PREFIX}{}-{}.{n}", self.pid, self.start_ticks)
    }

    /// The owner a directory name names, if it is one of ours.
    pub fn parse(name: &str) -> Option<Owner> {
        let rest = name.strip_prefix(PREFIX)?;
        let (pid, start) = rest.split_once('-')?;
        let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        let (start, n) = start.split_once('.')?;
        if !digits(pid) || !digits(start) || !digits(n) {
            return None;
        }
        Some(Owner {
            pid: pid.parse().ok()?,
            start_ticks: start.parse().ok()?,
        })
    }
}

/// Which of `names` (the sub-directories beside the daemon's own) belong to a daemon that is no
/// longer running: named like ours, not `own`, and whose pid is not running or started at
/// another time (`start_of(pid)`: that process's start time, `None` when there is none).
pub fn stale<'a>(
    names: impl IntoIterator<Item = &'a str>,
    own: Owner,
    start_of: impl Fn(u32) -> Option<u64>,
) -> Vec<String> {
    let mut stale: Vec<String> = names
        .into_iter()
        .filter(|name| {
            Owner::parse(name)
                .is_some_and(|owner| owner != own && start_of(owner.pid) != Some(owner.start_ticks))
        })
        .map(str::to_owned)
        .collect();
    stale.sort();
    stale
}

/// The name of a plugin process's cgroup: the plugin's name and a number that grows with each
/// process the daemon starts, so that a new process never waits for the last one's cgroup to
/// be removed.
pub fn plugin_dir_name(plugin: &str, serial: u64) -> String {
    let safe: String = plugin
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("{safe}.{serial}")
}

/// The controllers of `wanted` that a v2 `cgroup.subtree_control` (its text) does not enable.
pub fn missing_controllers<'a>(subtree_control: &str, wanted: &[&'a str]) -> Vec<&'a str> {
    wanted
        .iter()
        .filter(|c| !subtree_control.split_ascii_whitespace().any(|w| w == **c))
        .copied()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_others_are_not_ours() {
        let owner = Owner {
            pid: 4242,
            start_ticks: 987_654,
        };
        assert_eq!(owner.dir_name(1), "ballast-4242-987654.1");
        assert_eq!(Owner::parse("ballast-4242-987654.1"), Some(owner));
        assert_eq!(Owner::parse("ballast-4242-987654.12"), Some(owner));
        for other in [
            "ballast-soak-12",
            "ballast-12",
            "ballast--5.1",
            "ballast-1-.1",
            "ballast-1-2",
            "ballast-1-2.",
            "ballast-1-2-3.1",
            "ballast-1-2.x",
            "user.slice",
            "ballast-99999999999-1.1",
        ] {
            assert_eq!(Owner::parse(other), None, "{other}");
        }
    }

    #[test]
    fn a_daemon_gone_or_replaced_is_stale_and_a_running_one_is_not() {
        let own = Owner {
            pid: 10,
            start_ticks: 100,
        };
        let running = |pid: u32| match pid {
            10 => Some(100),
            20 => Some(200),
            // Pid 30 was reused by a process that started later.
            30 => Some(999),
            _ => None,
        };
        let names = [
            "ballast-10-100.1",
            "ballast-10-100.2",
            "ballast-20-200.1",
            "ballast-30-300.1",
            "ballast-40-400.1",
            "ballast-soak-77",
            "other",
        ];
        assert_eq!(
            stale(names, own, running),
            ["ballast-30-300.1", "ballast-40-400.1"]
        );
    }

    #[test]
    fn plugin_dirs_and_missing_controllers() {
        assert_eq!(plugin_dir_name("indexer", 3), "indexer.3");
        assert_eq!(plugin_dir_name("a/b", 1), "a_b.1");
        assert_eq!(
            missing_controllers("cpu memory\n", &["memory", "cpu"]),
            Vec::<&str>::new()
        );
        assert_eq!(
            missing_controllers("io\n", &["memory", "cpu"]),
            ["memory", "cpu"]
        );
    }
}
