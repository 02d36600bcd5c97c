//! How a plugin is configured: where its file (or program) is, how important it is, its own
//! settings, its call limits and, for plugins that run in a process of their own, how that
//! process is supervised.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ballast_core::StartMode;
use ballast_process::{LeakConfig, RestartPolicy};
use serde::{Deserialize, Serialize};

/// What a plugin is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PluginKind {
    /// A shared library built against the ballast ABI (`path`).
    #[default]
    Native,
    /// An executable in any language, supervised as a child process (`command`).
    Process,
}

/// Where a native plugin runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Isolation {
    /// Inside the daemon: the fastest calls, but a segfault takes the daemon down.
    #[default]
    InProcess,
    /// In a `ballast worker` child process that loads the library: a crash kills only the
    /// worker, which is restarted; each call crosses a pipe.
    Process,
}

/// How a process plugin talks to the host.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Protocol {
    /// Lifecycle only: started, stopped, restarted, suspended, measured, logged; no calls; its
    /// level is `BALLAST_LEVEL` and a level change restarts it.
    #[default]
    None,
    /// The JSON-lines control protocol on stdin/stdout (see the ballast-process crate docs).
    JsonLines,
}

/// One level a process plugin declares (a native plugin declares its levels in its file).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LevelConfig {
    /// The level's name, e.g. "full" or "keywords-only".
    pub name: String,
    /// Memory it needs at this level, in MiB.
    #[serde(default)]
    pub memory_mb: u64,
    /// GPU memory it uses at this level, in MiB.
    #[serde(default)]
    pub gpu_memory_mb: u64,
}

/// One plugin in the ballast config (`[[plugins]]`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginConfig {
    /// The plugin's name; must equal the name its file declares.
    pub name: String,
    /// `native` (a shared library, the default) or `process` (an executable).
    #[serde(default)]
    pub kind: PluginKind,
    /// A native plugin's file, or a directory in which `lib<name>.so` is looked up.
    #[serde(default)]
    pub path: PathBuf,
    /// Where a native plugin runs: `in_process` (the default) or `process` (a worker).
    #[serde(default)]
    pub isolation: Isolation,
    /// A process plugin's program: a path (relative ones are looked up in the plugin directory)
    /// or a name looked up in `PATH`.
    #[serde(default)]
    pub command: Option<PathBuf>,
    /// The program's arguments.
    #[serde(default)]
    pub args: Vec<String>,
    /// Environment variables for the program, added to the daemon's.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// The directory the program starts in (relative ones are looked up in the plugin
    /// directory); the daemon's own when unset.
    #[serde(default)]
    pub working_dir: Option<PathBuf>,
    /// `none` (lifecycle only, the default) or `json-lines` (the control protocol).
    #[serde(default)]
    pub protocol: Protocol,
    /// A process plugin's levels, full first, with what each needs.
    #[serde(default)]
    pub levels: Vec<LevelConfig>,
    /// A process plugin's share of one CPU core at full level.
    #[serde(default)]
    pub cpu_share: f64,
    /// Hold the plugin's process to its CPU share (`cpu_share`, or what a native plugin's file
    /// declares) with a CPU quota on its cgroup. Only for plugins with a process of their own,
    /// and only where the daemon can make cgroups.
    #[serde(default)]
    pub cpu_limit: bool,
    /// Whether a process plugin uses a GPU.
    #[serde(default)]
    pub needs_gpu: bool,
    /// Whether the plugin's process may be suspended (SIGSTOP) instead of disabled: cheaper to
    /// bring back, but it keeps its memory. Only for plugins with a process of their own.
    #[serde(default)]
    pub can_suspend: bool,
    /// Resident memory (the process and its children) that raises a `memory_soft_limit` event.
    #[serde(default)]
    pub memory_soft_limit_mb: Option<u64>,
    /// Resident memory at which the host sheds the plugin (drains it, then kills it if it does
    /// not stop within `stop_timeout`), in every scaler mode.
    #[serde(default)]
    pub memory_hard_limit_mb: Option<u64>,
    /// No output and no heartbeat for this long raises `stalled`. Default: 30s for plugins
    /// that speak the protocol (they send heartbeats), off for the others.
    #[serde(default, with = "humantime_serde::option")]
    pub stall_threshold: Option<Duration>,
    /// Restart a stalled plugin (counted by the restart policy like a crash).
    #[serde(default)]
    pub stall_restart: bool,
    /// Reported progress that does not advance for this long raises `stuck`.
    #[serde(default = "default_stuck_threshold", with = "humantime_serde")]
    pub stuck_threshold: Duration,
    /// CPU (in cores) that makes a silent plugin a `busy_stall` (a likely infinite loop).
    #[serde(default = "default_busy_cpu")]
    pub busy_cpu: f64,
    /// What makes memory growth a suspected leak (`leak_suspected`).
    #[serde(default)]
    pub leak: LeakConfig,
    /// When a crashed process is restarted, and when the host gives up.
    #[serde(default)]
    pub restart: RestartPolicy,
    /// How long a process may take to say `hello` (protocol plugins) before its start fails.
    #[serde(default = "default_start_timeout", with = "humantime_serde")]
    pub start_timeout: Duration,
    /// How long a stopping process gets after SIGTERM before SIGKILL.
    #[serde(default = "default_stop_timeout", with = "humantime_serde")]
    pub stop_timeout: Duration,
    /// Importance: higher is kept longer under pressure.
    #[serde(default)]
    pub priority: i32,
    /// An essential plugin is never shed.
    #[serde(default)]
    pub essential: bool,
    /// Whether to enable it at start.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// The level to start at (0 = full).
    #[serde(default)]
    pub level: u32,
    /// The plugin's own settings, handed to it as JSON.
    #[serde(default = "empty_table")]
    pub config: serde_json::Value,
    /// If set, the file's sha256 (hex) must match before it is loaded.
    #[serde(default)]
    pub sha256: Option<String>,
    /// Calls that may run at once.
    #[serde(default = "default_max_concurrent_calls")]
    pub max_concurrent_calls: u32,
    /// Calls that may wait for a slot; more are refused as busy.
    #[serde(default = "default_queue")]
    pub queue: u32,
    /// How long a caller waits for an answer.
    #[serde(default = "default_call_timeout", with = "humantime_serde")]
    pub call_timeout: Duration,
    /// How long disabling waits for calls in flight and the plugin's drain.
    #[serde(default = "default_drain_timeout", with = "humantime_serde")]
    pub drain_timeout: Duration,
    /// `preload` (loaded at start, the default) or `on-demand` (idle until its first call).
    #[serde(default)]
    pub start: StartMode,
    /// Unload the plugin after this long without calls, counted from the end of the last one
    /// (`10m`); the next call wakes it. Unset: never unloaded for idleness.
    #[serde(default, with = "humantime_serde")]
    pub keep_alive: Option<Duration>,
    /// How long a call that wakes the plugin waits for it to load.
    #[serde(default = "default_load_timeout", with = "humantime_serde")]
    pub load_timeout: Duration,
    /// How many calls may wait for the plugin to load; more get "busy" (429) at once.
    #[serde(default = "default_wake_queue")]
    pub wake_queue: u32,
    /// Take a checkpoint of the running plugin this often (`10m`), and one when memory stalls,
    /// so that a restart after a crash, a kernel kill or a daemon restart comes back from it.
    /// Unset (the default): checkpoints only when the plugin is shed, unloaded or stopped.
    #[serde(default, with = "humantime_serde")]
    pub checkpoint_interval: Option<Duration>,
}

fn default_true() -> bool {
    true
}

fn empty_table() -> serde_json::Value {
    serde_json::Value::Object(serde_json::Map::new())
}

fn default_max_concurrent_calls() -> u32 {
    4
}

fn default_queue() -> u32 {
    16
}

fn default_call_timeout() -> Duration {
    Duration::from_secs(5)
}

fn default_drain_timeout() -> Duration {
    Duration::from_secs(5)
}

fn default_load_timeout() -> Duration {
    Duration::from_secs(60)
}

fn default_wake_queue() -> u32 {
    64
}

fn default_stuck_threshold() -> Duration {
    Duration::from_secs(600)
}

fn default_busy_cpu() -> f64 {
    0.9
}

fn default_start_timeout() -> Duration {
    Duration::from_secs(10)
}

fn default_stop_timeout() -> Duration {
    Duration::from_secs(5)
}

impl PluginConfig {
    /// A config for `name` at `path` with every other field at its default.
    pub fn new(name: impl Into<String>, path: impl Into<PathBuf>) -> Self {
        PluginConfig {
            name: name.into(),
            kind: PluginKind::Native,
            path: path.into(),
            isolation: Isolation::InProcess,
            command: None,
            args: Vec::new(),
            env: BTreeMap::new(),
            working_dir: None,
            protocol: Protocol::None,
            levels: Vec::new(),
            cpu_share: 0.0,
            cpu_limit: false,
            needs_gpu: false,
            can_suspend: false,
            memory_soft_limit_mb: None,
            memory_hard_limit_mb: None,
            stall_threshold: None,
            stall_restart: false,
            stuck_threshold: default_stuck_threshold(),
            busy_cpu: default_busy_cpu(),
            leak: LeakConfig::default(),
            restart: RestartPolicy::default(),
            start_timeout: default_start_timeout(),
            stop_timeout: default_stop_timeout(),
            priority: 0,
            essential: false,
            enabled: true,
            level: 0,
            config: empty_table(),
            sha256: None,
            max_concurrent_calls: default_max_concurrent_calls(),
            queue: default_queue(),
            call_timeout: default_call_timeout(),
            drain_timeout: default_drain_timeout(),
            start: StartMode::Preload,
            keep_alive: None,
            load_timeout: default_load_timeout(),
            wake_queue: default_wake_queue(),
            checkpoint_interval: None,
        }
    }

    /// A process plugin `name` running `command`, every other field at its default.
    pub fn process(name: impl Into<String>, command: impl Into<PathBuf>) -> Self {
        let mut config = PluginConfig::new(name, PathBuf::new());
        config.kind = PluginKind::Process;
        config.command = Some(command.into());
        config
    }

    /// The plugin file: `path` itself, or `path/lib<name>.so` when `path` is a directory.
    pub fn file(&self) -> PathBuf {
        resolve(&self.path, &self.name)
    }

    /// Whether the plugin runs in a process of its own (a process plugin, or a native plugin
    /// isolated in a worker).
    pub fn runs_in_process(&self) -> bool {
        self.kind == PluginKind::Process || self.isolation == Isolation::Process
    }

    /// The stall threshold in force: the configured one, else 30s for protocol plugins (and
    /// isolated native ones, whose worker sends heartbeats) and none for the others.
    pub fn effective_stall_threshold(&self) -> Option<Duration> {
        self.stall_threshold.or_else(|| {
            (self.protocol == Protocol::JsonLines || self.kind == PluginKind::Native)
                .then_some(Duration::from_secs(30))
        })
    }

    /// Every problem with this config, each naming the plugin and the field.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        let who = format!("plugin `{}`", self.name);
        if self.name.is_empty()
            || !self
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            problems.push(format!(
                "{who}: name must be non-empty letters, digits, `-` or `_`"
            ));
        }
        if !(1..=1024).contains(&self.max_concurrent_calls) {
            problems.push(format!(
                "{who}: max_concurrent_calls must be 1..=1024, got {}",
                self.max_concurrent_calls
            ));
        }
        if self.queue > 65_536 {
            problems.push(format!(
                "{who}: queue must be at most 65536, got {}",
                self.queue
            ));
        }
        if self.call_timeout.is_zero() {
            problems.push(format!("{who}: call_timeout must be positive"));
        }
        if self.keep_alive.is_some_and(|k| k.is_zero()) {
            problems.push(format!(
                "{who}: keep_alive must be longer than zero (leave it out to never unload the plugin for idleness)"
            ));
        }
        if self
            .checkpoint_interval
            .is_some_and(|i| i < crate::checkpoint::MIN_INTERVAL)
        {
            problems.push(format!(
                "{who}: checkpoint_interval must be at least {}s (leave it out for no periodic checkpoints)",
                crate::checkpoint::MIN_INTERVAL.as_secs()
            ));
        }
        if self.load_timeout.is_zero() || self.load_timeout > Duration::from_secs(3600) {
            problems.push(format!(
                "{who}: load_timeout must be between 1ms and 1h, got {}",
                humantime::format_duration(self.load_timeout)
            ));
        }
        if !(1..=65_536).contains(&self.wake_queue) {
            problems.push(format!(
                "{who}: wake_queue must be 1..=65536, got {}",
                self.wake_queue
            ));
        }
        if let Some(pin) = &self.sha256
            && (pin.len() != 64 || !pin.chars().all(|c| c.is_ascii_hexdigit()))
        {
            problems.push(format!("{who}: sha256 must be 64 hexadecimal characters"));
        }
        if !self.config.is_object() {
            problems.push(format!("{who}: config must be a table"));
        }
        problems.extend(self.process_problems(&who));
        problems
    }

    /// The problems of the fields that belong to one kind of plugin or the other.
    fn process_problems(&self, who: &str) -> Vec<String> {
        let mut problems = Vec::new();
        match self.kind {
            PluginKind::Native => {
                if self.path.as_os_str().is_empty() {
                    problems.push(format!(
                        "{who}: a native plugin needs `path` (its library, or a directory holding lib{}.so)",
                        self.name
                    ));
                }
                for (set, field) in [
                    (self.command.is_some(), "command"),
                    (!self.args.is_empty(), "args"),
                    (!self.env.is_empty(), "env"),
                    (self.working_dir.is_some(), "working_dir"),
                    (self.protocol != Protocol::None, "protocol"),
                ] {
                    if set {
                        problems.push(format!(
                            "{who}: `{field}` is for process plugins; set `kind = \"process\"` or remove it"
                        ));
                    }
                }
                for (set, field) in [
                    (!self.levels.is_empty(), "levels"),
                    (self.cpu_share != 0.0, "cpu_share"),
                    (self.needs_gpu, "needs_gpu"),
                ] {
                    if set {
                        problems.push(format!(
                            "{who}: `{field}` is for process plugins; a native plugin declares it in its file"
                        ));
                    }
                }
            }
            PluginKind::Process => {
                match &self.command {
                    None => problems.push(format!(
                        "{who}: a process plugin needs `command` (a program path or a name in PATH)"
                    )),
                    Some(c) if c.as_os_str().is_empty() => {
                        problems.push(format!("{who}: `command` must not be empty"))
                    }
                    Some(_) => {}
                }
                if !self.path.as_os_str().is_empty() {
                    problems.push(format!(
                        "{who}: `path` is for native plugins; a process plugin runs `command`"
                    ));
                }
                if self.isolation != Isolation::InProcess {
                    problems.push(format!(
                        "{who}: `isolation` is for native plugins; a process plugin always runs in its own process"
                    ));
                }
                if self.levels.len() > 16 {
                    problems.push(format!(
                        "{who}: at most 16 levels, got {}",
                        self.levels.len()
                    ));
                }
                if self.levels.iter().any(|l| l.name.is_empty()) {
                    problems.push(format!("{who}: every level needs a name"));
                }
                if !(self.cpu_share >= 0.0 && self.cpu_share.is_finite()) {
                    problems.push(format!(
                        "{who}: cpu_share must be a number at least 0, got {}",
                        self.cpu_share
                    ));
                } else if self.cpu_limit && self.cpu_share == 0.0 {
                    problems.push(format!(
                        "{who}: cpu_limit holds the process to its cpu_share, which is 0: set cpu_share (in cores, e.g. 0.5)"
                    ));
                }
                if let Some(key) = self
                    .env
                    .keys()
                    .find(|k| k.is_empty() || k.contains('=') || k.contains('\0'))
                {
                    problems.push(format!("{who}: env key `{key}` is not a variable name"));
                }
            }
        }
        if !self.runs_in_process() {
            for (set, field) in [
                (self.can_suspend, "can_suspend"),
                (self.cpu_limit, "cpu_limit"),
                (self.memory_soft_limit_mb.is_some(), "memory_soft_limit_mb"),
                (self.memory_hard_limit_mb.is_some(), "memory_hard_limit_mb"),
                (self.stall_threshold.is_some(), "stall_threshold"),
                (self.stall_restart, "stall_restart"),
            ] {
                if set {
                    problems.push(format!(
                        "{who}: `{field}` needs a process of its own: use `kind = \"process\"` or `isolation = \"process\"`"
                    ));
                }
            }
        }
        if let (Some(soft), Some(hard)) = (self.memory_soft_limit_mb, self.memory_hard_limit_mb)
            && soft > hard
        {
            problems.push(format!(
                "{who}: memory_soft_limit_mb ({soft}) must not be above memory_hard_limit_mb ({hard})"
            ));
        }
        if self.memory_hard_limit_mb == Some(0) || self.memory_soft_limit_mb == Some(0) {
            problems.push(format!("{who}: memory limits must be at least 1 MiB"));
        }
        if self
            .stall_threshold
            .is_some_and(|t| t < Duration::from_millis(100))
        {
            problems.push(format!("{who}: stall_threshold must be at least 100ms"));
        }
        if self.stuck_threshold < Duration::from_millis(100) {
            problems.push(format!("{who}: stuck_threshold must be at least 100ms"));
        }
        if !(self.busy_cpu > 0.0 && self.busy_cpu.is_finite()) {
            problems.push(format!(
                "{who}: busy_cpu must be a positive number of cores"
            ));
        }
        if self.start_timeout.is_zero() {
            problems.push(format!("{who}: start_timeout must be positive"));
        }
        problems.extend(self.restart.problems(&format!("{who}: restart")));
        problems.extend(self.leak.problems(&format!("{who}: leak")));
        problems
    }
}

fn resolve(path: &Path, name: &str) -> PathBuf {
    if path.is_dir() {
        path.join(format!("lib{name}.so"))
    } else {
        path.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_fill_in_and_durations_read_like_people_write_them() {
        let c: PluginConfig = serde_json::from_value(serde_json::json!({
            "name": "voice", "path": "/opt/plugins", "priority": 10, "call_timeout": "250ms",
            "config": { "workload": { "working_set_mb": [64, 8] } }
        }))
        .unwrap();
        assert_eq!(c.call_timeout, Duration::from_millis(250));
        assert_eq!(c.drain_timeout, Duration::from_secs(5));
        assert_eq!(c.max_concurrent_calls, 4);
        assert!(c.enabled);
        assert!(c.problems().is_empty(), "{:?}", c.problems());
    }

    #[test]
    fn a_checkpoint_interval_reads_like_people_write_it_and_has_a_floor() {
        let c: PluginConfig = serde_json::from_value(serde_json::json!({
            "name": "indexer", "path": "/x", "checkpoint_interval": "10m"
        }))
        .unwrap();
        assert_eq!(c.checkpoint_interval, Some(Duration::from_secs(600)));
        assert!(c.problems().is_empty(), "{:?}", c.problems());
        assert_eq!(PluginConfig::new("voice", "/x").checkpoint_interval, None);
        let mut fast = PluginConfig::new("voice", "/x");
        fast.checkpoint_interval = Some(Duration::from_millis(500));
        assert_eq!(
            fast.problems(),
            [
                "plugin `voice`: checkpoint_interval must be at least 1s (leave it out for no periodic checkpoints)"
            ]
        );
    }

    #[test]
    fn every_problem_is_named() {
        let mut c = PluginConfig::new("bad name", "/x");
        c.max_concurrent_calls = 0;
        c.sha256 = Some("abc".into());
        c.config = serde_json::json!([1]);
        let problems = c.problems();
        assert_eq!(problems.len(), 4, "{problems:?}");
        assert!(problems.iter().all(|p| p.starts_with("plugin `bad name`")));
    }

    #[test]
    fn a_process_plugin_reads_like_people_write_it() {
        let c: PluginConfig = serde_json::from_value(serde_json::json!({
            "name": "indexer", "kind": "process", "command": "indexer/indexer.py",
            "protocol": "json-lines", "args": ["--fast"], "env": { "LANG": "C" },
            "levels": [{ "name": "full", "memory_mb": 64 }, { "name": "keywords", "memory_mb": 16 }],
            "can_suspend": true, "memory_soft_limit_mb": 200, "memory_hard_limit_mb": 400,
            "stall_threshold": "20s",
            "restart": { "backoff": "1s", "burst": 3, "window": "2m" }
        }))
        .unwrap();
        assert!(c.problems().is_empty(), "{:?}", c.problems());
        assert!(c.runs_in_process());
        assert_eq!(c.restart.burst, 3);
        assert_eq!(c.restart.backoff_max, Duration::from_secs(30));
        assert_eq!(c.effective_stall_threshold(), Some(Duration::from_secs(20)));
        let quiet = PluginConfig::process("loadwatch", "loadwatch.sh");
        assert_eq!(quiet.effective_stall_threshold(), None);
    }

    #[test]
    fn fields_of_the_other_kind_are_named_as_problems() {
        let mut native = PluginConfig::new("voice", "/x");
        native.command = Some("python3".into());
        native.levels = vec![LevelConfig {
            name: "full".into(),
            memory_mb: 1,
            gpu_memory_mb: 0,
        }];
        native.can_suspend = true;
        native.cpu_limit = true;
        let problems = native.problems();
        assert_eq!(problems.len(), 4, "{problems:?}");
        assert!(problems[0].contains("`command` is for process plugins"));
        assert!(problems[1].contains("declares it in its file"));
        assert!(problems[2].contains("`can_suspend` needs a process of its own"));
        assert!(problems[3].contains("`cpu_limit` needs a process of its own"));

        let mut process = PluginConfig::process("x", "");
        process.memory_soft_limit_mb = Some(500);
        process.memory_hard_limit_mb = Some(100);
        process.restart.burst = 0;
        process.cpu_limit = true;
        let problems = process.problems();
        assert_eq!(problems.len(), 4, "{problems:?}");
        assert!(problems[0].contains("`command` must not be empty"));
        assert!(problems[1].contains("cpu_limit holds the process to its cpu_share, which is 0"));
        assert!(problems[2].contains("must not be above memory_hard_limit_mb"));
        assert!(problems[3].contains("restart.burst must be at least 1"));

        let mut isolated = PluginConfig::new("faulty", "/x");
        isolated.isolation = Isolation::Process;
        isolated.can_suspend = true;
        isolated.memory_hard_limit_mb = Some(64);
        isolated.cpu_limit = true;
        assert!(isolated.problems().is_empty(), "{:?}", isolated.problems());
    }

    #[test]
    fn a_directory_path_finds_the_library_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let c = PluginConfig::new("voice", dir.path());
        assert_eq!(c.file(), dir.path().join("libvoice.so"));
        let c = PluginConfig::new("voice", "/some/file.so");
        assert_eq!(c.file(), PathBuf::from("/some/file.so"));
    }
}
