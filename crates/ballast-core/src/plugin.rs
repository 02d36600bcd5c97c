//! Plugins as the rest of ballast sees them: specs, levels, lifecycle states, commands, events.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::time::Timestamp;

/// A degradation level. Level 0 is "full"; each higher level is a cheaper, reduced mode (for
/// voice: 0 = large model, 1 = small model). A plugin with `n` levels accepts `0..n`.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Level(pub u32);

impl Level {
    /// The full level.
    pub const FULL: Level = Level(0);
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// What a plugin declares it needs at one level.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LevelHints {
    /// Memory it needs at least, in bytes.
    pub memory_min_bytes: u64,
    /// Memory it would like, in bytes.
    pub memory_preferred_bytes: u64,
    /// GPU memory it uses, in bytes (0 if none).
    pub gpu_memory_bytes: u64,
}

/// What a plugin declares about its resource use.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ResourceHints {
    /// One entry per level, level 0 (full) first. Empty means one level with no declared needs.
    pub levels: Vec<LevelHints>,
    /// Share of one CPU core it uses at full level, e.g. 0.25.
    pub cpu_share: f64,
    /// Whether it uses a GPU at all.
    pub needs_gpu: bool,
}

impl ResourceHints {
    /// Number of levels, at least 1.
    pub fn n_levels(&self) -> u32 {
        u32::try_from(self.levels.len()).unwrap_or(u32::MAX).max(1)
    }

    /// The hints of `level`, or zeros for an undeclared level.
    pub fn level(&self, level: Level) -> LevelHints {
        self.levels
            .get(level.0 as usize)
            .copied()
            .unwrap_or_default()
    }
}

/// A plugin as the scaler sees it: identity, importance and declared needs.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PluginSpec {
    /// Unique name, e.g. "voice".
    pub name: String,
    /// Importance: higher is kept longer. Under pressure the lowest priority is shed first and
    /// restored last.
    pub priority: i32,
    /// An essential plugin is never shed, not even in an emergency.
    pub essential: bool,
    /// Declared resource needs.
    pub hints: ResourceHints,
    /// Whether it can be suspended (SIGSTOP) instead of disabled.
    pub can_suspend: bool,
    /// Whether it is loaded at start (`preload`) or on its first call (`on-demand`).
    #[serde(default)]
    pub start: StartMode,
    /// How long it may go without calls before it is unloaded (idle, woken by the next call);
    /// `None` never unloads it for idleness. Counted from the end of its last call.
    #[serde(default)]
    pub keep_alive: Option<std::time::Duration>,
}

/// When a plugin is loaded.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StartMode {
    /// At start-up, like every plugin before on-demand loading existed.
    #[default]
    Preload,
    /// On its first call: it starts idle, and a call wakes it.
    OnDemand,
}

impl StartMode {
    /// `preload` or `on-demand`, as the config spells it.
    pub const fn as_str(self) -> &'static str {
        match self {
            StartMode::Preload => "preload",
            StartMode::OnDemand => "on-demand",
        }
    }
}

/// A plugin's lifecycle state in the host.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum PluginState {
    /// The library is loaded and validated; no instance exists.
    Loaded,
    /// An instance exists, is started and takes calls at `level`.
    Enabled {
        /// The current degradation level.
        level: Level,
    },
    /// The instance takes no new calls and is finishing in-flight ones.
    Draining,
    /// The instance was stopped and destroyed; the library stays mapped.
    Disabled,
    /// The plugin is paused and will resume where it was.
    Suspended,
    /// No instance, and none is needed until a call comes: the plugin is on-demand and not
    /// loaded yet, or was unloaded after `keep_alive` without calls. Not shed: the next call
    /// wakes it.
    Idle,
    /// The plugin's process exited unexpectedly and the host restarts it after a back-off; calls
    /// get the degraded answer meanwhile. The transition's reason says how it exited and when
    /// the next start is.
    Restarting,
    /// The plugin failed and will not be used until re-enabled.
    Failed {
        /// What went wrong.
        reason: String,
    },
}

impl PluginState {
    /// Every state's [`PluginState::name`], in the order metrics list them.
    pub const NAMES: [&'static str; 8] = [
        "loaded",
        "enabled",
        "draining",
        "disabled",
        "suspended",
        "restarting",
        "failed",
        "idle",
    ];

    /// A short name: loaded, enabled, draining, disabled, suspended, idle, restarting, failed.
    pub fn name(&self) -> &'static str {
        match self {
            PluginState::Loaded => "loaded",
            PluginState::Enabled { .. } => "enabled",
            PluginState::Draining => "draining",
            PluginState::Disabled => "disabled",
            PluginState::Suspended => "suspended",
            PluginState::Idle => "idle",
            PluginState::Restarting => "restarting",
            PluginState::Failed { .. } => "failed",
        }
    }

    /// Whether calls are accepted in this state.
    pub fn accepts_calls(&self) -> bool {
        matches!(self, PluginState::Enabled { .. })
    }
}

impl fmt::Display for PluginState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PluginState::Enabled { level } => write!(f, "enabled (level {level})"),
            PluginState::Failed { reason } => write!(f, "failed: {reason}"),
            other => f.write_str(other.name()),
        }
    }
}

/// What the scaler (or an operator) asks the host to do. Every command carries its reason.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "snake_case")]
pub enum Command {
    /// Create and start the plugin at `level` (idempotent).
    Enable {
        /// Plugin name.
        plugin: String,
        /// Level to start at.
        level: Level,
        /// Why.
        reason: String,
    },
    /// Drain, stop and destroy the plugin (idempotent).
    Disable {
        /// Plugin name.
        plugin: String,
        /// Why.
        reason: String,
    },
    /// Move an enabled plugin to another level.
    SetLevel {
        /// Plugin name.
        plugin: String,
        /// The new level.
        level: Level,
        /// Why.
        reason: String,
    },
    /// Unload an idle plugin: drain, stop and destroy it, leaving it idle (the next call wakes
    /// it), unless it took a call after `idle_since` or has one in flight.
    Unload {
        /// Plugin name.
        plugin: String,
        /// The end of its last call as the scaler knew it.
        idle_since: Timestamp,
        /// Why.
        reason: String,
    },
    /// Pause the plugin.
    Suspend {
        /// Plugin name.
        plugin: String,
        /// Why.
        reason: String,
    },
    /// Resume a paused plugin.
    Resume {
        /// Plugin name.
        plugin: String,
        /// Why.
        reason: String,
    },
    /// Change the plugin's max-concurrent-calls limit; `None` restores its configured default.
    SetConcurrency {
        /// Plugin name.
        plugin: String,
        /// The new limit.
        limit: Option<u32>,
        /// Why.
        reason: String,
    },
}

impl Command {
    /// The plugin the command is for.
    pub fn plugin(&self) -> &str {
        match self {
            Command::Enable { plugin, .. }
            | Command::Disable { plugin, .. }
            | Command::Unload { plugin, .. }
            | Command::SetLevel { plugin, .. }
            | Command::Suspend { plugin, .. }
            | Command::Resume { plugin, .. }
            | Command::SetConcurrency { plugin, .. } => plugin,
        }
    }

    /// Why the command was issued.
    pub fn reason(&self) -> &str {
        match self {
            Command::Enable { reason, .. }
            | Command::Disable { reason, .. }
            | Command::Unload { reason, .. }
            | Command::SetLevel { reason, .. }
            | Command::Suspend { reason, .. }
            | Command::Resume { reason, .. }
            | Command::SetConcurrency { reason, .. } => reason,
        }
    }
}

/// Live figures of one plugin, as the host measures them.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PluginStats {
    /// Bytes allocated by the plugin and not yet freed (SDK allocator).
    pub live_bytes: u64,
    /// Highest `live_bytes` seen.
    pub peak_bytes: u64,
    /// Allocations made since load.
    pub allocations: u64,
    /// Threads the plugin runs.
    pub threads: u32,
    /// Calls answered.
    pub calls: u64,
    /// Calls that returned an error (timeouts included).
    pub errors: u64,
    /// Calls that did not answer within their timeout.
    pub timeouts: u64,
    /// Calls admitted and not answered yet (queued or running).
    pub in_flight: u32,
    /// When its last call ended, for a plugin with a `keep_alive` (the host tracks it only
    /// for those); `None` before its first call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_call_end: Option<Timestamp>,
    /// When its latest checkpoint was taken (periodic, at a stall, at a shed or stop, or the
    /// one restored from disk at start): a restarted instance starts from it. `None`: none yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_checkpoint: Option<Timestamp>,
    /// Calls whose chunks went to the caller as the plugin sent them.
    #[serde(default)]
    pub streamed_calls: u64,
    /// Chunks sent to callers of streamed calls.
    #[serde(default)]
    pub chunks: u64,
    /// Calls cancelled, by reason.
    #[serde(default)]
    pub cancellations: CancelCounts,
    /// Median time from a streamed call's start to its first chunk, in microseconds (0: none).
    #[serde(default)]
    pub first_chunk_p50_us: u64,
    /// 95th percentile time to the first chunk, in microseconds (0: none).
    #[serde(default)]
    pub first_chunk_p95_us: u64,
    /// Median call latency in microseconds.
    pub latency_p50_us: u64,
    /// 95th percentile call latency in microseconds.
    pub latency_p95_us: u64,
    /// 99th percentile call latency in microseconds.
    pub latency_p99_us: u64,
    /// What the plugin's process (and its children) use, for plugins that run in a process of
    /// their own; `None` for a plugin inside the daemon.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub process: Option<ProcessUsage>,
}

/// Calls cancelled, by why.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CancelCounts {
    /// The caller went away (its connection closed).
    pub caller: u64,
    /// The call's deadline passed.
    pub deadline: u64,
    /// The plugin was shed and its drain deadline passed with the call running.
    pub shed: u64,
}

impl CancelCounts {
    /// All cancellations.
    pub fn total(&self) -> u64 {
        self.caller + self.deadline + self.shed
    }
}

/// What a plugin's process and its children use, read from `/proc`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ProcessUsage {
    /// The main process's id.
    pub pid: u32,
    /// Processes in the tree (the main one and its descendants).
    pub processes: u32,
    /// Resident memory of the tree, in bytes.
    pub rss_bytes: u64,
    /// Virtual memory of the tree, in bytes.
    pub vsz_bytes: u64,
    /// CPU used since the previous reading, in cores (1.0 is one core busy); 0 on the first.
    pub cpu_cores: f64,
    /// CPU time used by the plugin's processes since it was loaded (across restarts), seconds.
    pub cpu_seconds: f64,
    /// Open file descriptors of the tree.
    pub open_fds: u32,
    /// Threads of the tree.
    pub threads: u32,
    /// Bytes read from storage since the plugin was loaded (across restarts).
    pub read_bytes: u64,
    /// Bytes written to storage since the plugin was loaded (across restarts).
    pub write_bytes: u64,
}

/// Something the host's supervision noticed about a plugin's behaviour.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PluginAlert {
    /// No output and no heartbeat for the stall threshold.
    Stalled,
    /// High CPU with no output for the stall threshold: a likely infinite loop.
    BusyStall,
    /// Output (or progress) resumed after a stall or a stuck phase.
    Active,
    /// The progress it reports has not advanced for the stuck threshold.
    Stuck,
    /// Its memory grew steadily over the whole detection window.
    LeakSuspected,
    /// Its memory reached the soft limit (a warning).
    MemorySoftLimit,
    /// Its memory reached the hard limit: the host sheds it.
    MemoryHardLimit,
    /// The kernel throttled it at its cgroup's throttling point (cgroup v2 `memory.high`, set to
    /// the level's declared need), reclaiming its memory before the limit.
    MemoryHigh,
    /// Its cgroup reached the kernel's memory limit (v2 `memory.max`, v1
    /// `memory.limit_in_bytes`): the kernel reclaimed its memory to stay under it.
    MemoryMax,
    /// Its cgroup ran out of memory at the limit: reclaim could not keep it under (v2 `oom`, v1
    /// `under_oom`).
    MemoryOom,
    /// The kernel's OOM killer killed a process of its cgroup at the limit.
    MemoryOomKill,
}

impl PluginAlert {
    /// Every alert, in a fixed order.
    pub const ALL: [PluginAlert; 11] = [
        PluginAlert::Stalled,
        PluginAlert::BusyStall,
        PluginAlert::Active,
        PluginAlert::Stuck,
        PluginAlert::LeakSuspected,
        PluginAlert::MemorySoftLimit,
        PluginAlert::MemoryHardLimit,
        PluginAlert::MemoryHigh,
        PluginAlert::MemoryMax,
        PluginAlert::MemoryOom,
        PluginAlert::MemoryOomKill,
    ];

    /// The name as events and metrics spell it: stalled, busy_stall, active, ...
    pub fn as_str(self) -> &'static str {
        match self {
            PluginAlert::Stalled => "stalled",
            PluginAlert::BusyStall => "busy_stall",
            PluginAlert::Active => "active",
            PluginAlert::Stuck => "stuck",
            PluginAlert::LeakSuspected => "leak_suspected",
            PluginAlert::MemorySoftLimit => "memory_soft_limit",
            PluginAlert::MemoryHardLimit => "memory_hard_limit",
            PluginAlert::MemoryHigh => "memory_high",
            PluginAlert::MemoryMax => "memory_max",
            PluginAlert::MemoryOom => "memory_oom",
            PluginAlert::MemoryOomKill => "memory_oom_kill",
        }
    }
}

impl fmt::Display for PluginAlert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The reason the daemon gives the plugins it disables because it is stopping; the demand report
/// does not count such a disable as an outage.
pub const SHUTDOWN_REASON: &str = "daemon shutdown";

/// What happened to a plugin, reported by the host.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PluginEvent {
    /// When.
    pub at: Timestamp,
    /// Which plugin.
    pub plugin: String,
    /// What.
    pub kind: PluginEventKind,
}

/// The kinds of [`PluginEvent`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum PluginEventKind {
    /// The plugin moved from one state to another.
    StateChanged {
        /// The state before.
        from: PluginState,
        /// The state now.
        to: PluginState,
        /// Why.
        reason: String,
        /// Whether the host changed the state on its own (a hard memory limit crossed, a process
        /// gone for good) rather than on a command. The scaler follows such a change; the result
        /// of its own command, which may arrive after a newer command, it does not.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        by_host: bool,
    },
    /// Periodic or on-request figures.
    Stats(PluginStats),
    /// The plugin itself reported a change through the host API (e.g. it lost its connection).
    Reported {
        /// Whether the plugin says it is healthy.
        healthy: bool,
        /// Its message.
        message: String,
    },
    /// The host's supervision noticed something: a stall, a stuck phase, a suspected leak, a
    /// memory limit reached, or activity again after a stall.
    Alert {
        /// What.
        alert: PluginAlert,
        /// The figures behind it, in a sentence.
        message: String,
    },
}

/// Reported progress, for the status page.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ProgressStatus {
    /// Percent done.
    pub percent: Option<f64>,
    /// The phase.
    pub phase: Option<String>,
    /// Since when it has been at this point.
    pub since: Timestamp,
}

/// What the host knows of a plugin's process, for the API.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ProcessStatus {
    /// What runs: the program and its arguments.
    pub command: String,
    /// `json-lines`, `none`, or `worker` for an isolated native plugin.
    pub protocol: String,
    /// The running process's id.
    pub pid: Option<u32>,
    /// When the running process started.
    pub started_at: Option<Timestamp>,
    /// The version its `hello` gave.
    pub version: Option<String>,
    /// Restarts after crashes (and stalls) since it was loaded.
    pub restarts: u32,
    /// How its last process ended, when one did on its own.
    pub last_exit: Option<String>,
    /// Conditions that hold now: stalled, busy_stall, stuck, leak_suspected, memory limits.
    pub conditions: Vec<PluginAlert>,
    /// The progress it reports.
    pub progress: Option<ProgressStatus>,
    /// Whether its process is stopped (SIGSTOP).
    pub stopped: bool,
    /// Its log file.
    pub log_file: Option<std::path::PathBuf>,
    /// The cgroup its current (or last) process runs in, with the limits the kernel enforces and
    /// what the kernel reports; `None` when it runs in none.
    #[serde(default)]
    pub cgroup: Option<CgroupStatus>,
    /// Why it runs in no cgroup of its own, so that its memory limits are enforced by polling.
    #[serde(default)]
    pub cgroup_unavailable: Option<String>,
}

/// A plugin process's own cgroup: the limits the kernel enforces on it and what it reports.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CgroupStatus {
    /// Its own memory pressure (v2 `memory.pressure`), while it is read; none on v1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_pressure: Option<crate::sample::PsiReading>,
    /// `v1` or `v2`.
    pub version: String,
    /// Its directory (on v1, the one in the memory hierarchy).
    pub path: std::path::PathBuf,
    /// Whether it still exists (it is removed once its process has exited).
    pub live: bool,
    /// The memory limit the kernel enforces (v2 `memory.max`, v1 `memory.limit_in_bytes`).
    pub memory_max_bytes: Option<u64>,
    /// Where the kernel starts reclaiming (v2 `memory.high`, throttling; v1
    /// `memory.soft_limit_in_bytes`, reclaimed first under pressure): the level's declared need.
    pub memory_high_bytes: Option<u64>,
    /// The CPU quota, in cores (v2 `cpu.max`, v1 `cpu.cfs_quota_us` / `cpu.cfs_period_us`).
    pub cpu_quota_cores: Option<f64>,
    /// Memory charged to it now (v2 `memory.current`, v1 `memory.usage_in_bytes`).
    pub memory_current_bytes: Option<u64>,
    /// The most memory ever charged to it (v2 `memory.peak`, v1 `memory.max_usage_in_bytes`).
    pub memory_peak_bytes: Option<u64>,
    /// CPU time its processes used, in seconds (v2 `cpu.stat`, v1 `cpuacct.usage`).
    pub cpu_seconds: Option<f64>,
    /// Time the CPU quota held it back, in seconds (`cpu.stat`).
    pub cpu_throttled_seconds: Option<f64>,
    /// Its memory events so far.
    pub events: MemoryEventCounts,
}

/// How often the kernel reported each memory event of a cgroup.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemoryEventCounts {
    /// Throttled at `memory.high` (v2 only).
    pub high: u64,
    /// Reached the limit (v2 `max`, v1 `memory.failcnt`).
    pub max: u64,
    /// Out of memory at the limit (v2 `oom`; v1 counts each time `under_oom` was seen).
    pub oom: u64,
    /// Processes the OOM killer killed (`oom_kill`).
    pub oom_kill: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_lists_every_states_name_once() {
        let every = [
            PluginState::Loaded,
            PluginState::Enabled { level: Level(1) },
            PluginState::Draining,
            PluginState::Disabled,
            PluginState::Suspended,
            PluginState::Idle,
            PluginState::Restarting,
            PluginState::Failed { reason: "x".into() },
        ];
        let mut names: Vec<&str> = every.iter().map(PluginState::name).collect();
        let mut listed = PluginState::NAMES.to_vec();
        names.sort_unstable();
        listed.sort_unstable();
        assert_eq!(names, listed);
    }

    #[test]
    fn hints_have_at_least_one_level() {
        let hints = ResourceHints::default();
        assert_eq!(hints.n_levels(), 1);
        assert_eq!(hints.level(Level(3)), LevelHints::default());
    }

    #[test]
    fn only_enabled_plugins_accept_calls() {
        assert!(PluginState::Enabled { level: Level::FULL }.accepts_calls());
        for s in [
            PluginState::Loaded,
            PluginState::Draining,
            PluginState::Disabled,
            PluginState::Suspended,
            PluginState::Restarting,
        ] {
            assert!(!s.accepts_calls(), "{s}");
        }
    }

    #[test]
    fn alerts_serialize_as_their_names() {
        for alert in PluginAlert::ALL {
            let json = serde_json::to_value(alert).unwrap();
            assert_eq!(json, alert.as_str());
        }
        let event = PluginEventKind::Alert {
            alert: PluginAlert::BusyStall,
            message: "1.00 core, no output for 30s".into(),
        };
        let json = serde_json::to_value(&event).unwrap();
        assert_eq!(json["event"], "alert");
        assert_eq!(json["alert"], "busy_stall");
    }

    #[test]
    fn commands_serialize_with_a_tag() {
        let c = Command::Disable {
            plugin: "voice".into(),
            reason: "memory 0.86 over 0.80".into(),
        };
        let json = serde_json::to_value(&c).unwrap();
        assert_eq!(json["command"], "disable");
        assert_eq!(c.plugin(), "voice");
    }
}
