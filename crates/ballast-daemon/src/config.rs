//! The daemon's configuration: one TOML file with profiles, layered by figment as built-in
//! defaults < file < `BALLAST_*` environment < command-line flags, validated all at once.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ballast_core::Resource;
use ballast_host::{Isolation, LevelConfig, PluginConfig, Protocol};
use ballast_predict::PredictorSettings;
use ballast_scaler::ScalerConfig;
use ballast_tier::TierConfig;
use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

/// The profiles a config file may define (besides `default`, which every profile inherits).
pub const PROFILES: [&str; 3] = ["dev", "balanced", "production"];

/// The profile used when none is named.
pub const DEFAULT_PROFILE: &str = "balanced";

/// Exit code for configuration errors (EX_CONFIG from sysexits.h).
pub const EXIT_CONFIG: u8 = 78;

/// The control API.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiConfig {
    /// Where the API listens. Anything but a loopback address requires `token_file`.
    pub listen: SocketAddr,
    /// A file holding the bearer token clients must send; it must not be readable by others.
    pub token_file: Option<PathBuf>,
    /// The largest request body accepted, in bytes.
    pub max_body_bytes: usize,
    /// Whether the readiness endpoints (`/ready`, `/plugins/{name}/ready`) need the bearer token
    /// like every other endpoint but `/healthz`. Off by default: load balancers and
    /// orchestrators probe them, and they say no more than a call's refusal would.
    pub ready_requires_token: bool,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 7878)),
            token_file: None,
            max_body_bytes: 1 << 20,
            ready_requires_token: false,
        }
    }
}

/// What the monitor watches.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MonitorSettings {
    /// How often to sample.
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// Paths whose disks are watched; the data directory is always added.
    pub disk_paths: Vec<PathBuf>,
    /// Wake on a memory stall through a PSI trigger (`some 150000 2000000`: 150 ms of stall
    /// within 2 s) on the memory pressure file the monitor reads: the daemon's cgroup v2 group's
    /// `memory.pressure`, else /proc/pressure/memory (falls back to the tick where the file
    /// cannot be used).
    pub psi_trigger: bool,
    /// How the trigger learns of the stall: `auto` (the default) arms the kernel's trigger where
    /// the daemon has `CAP_SYS_RESOURCE` and otherwise reads the pressure file every 100 ms
    /// (every 10 ms while half the threshold's stall is within the window) and wakes the monitor
    /// on the same stall (the kernel checks an unprivileged trigger only every 2 s, and a reader
    /// of the same file can make it miss those checks), and also where the kernel refuses the
    /// trigger; a duration such as `"50ms"` polls at that interval (a tenth of it while a stall
    /// builds), privileged or not; `off` arms the kernel's trigger only.
    pub psi_poll_interval: PsiPollInterval,
    /// The NVML library to load instead of the system's `libnvidia-ml.so.1`.
    pub nvml_library: Option<PathBuf>,
    /// The resources the scaler acts on; the others are still measured, logged and shown. Disk
    /// is left out by default: plugins declare no disk use, so shedding them frees no space.
    pub resources: Vec<Resource>,
}

impl Default for MonitorSettings {
    fn default() -> Self {
        MonitorSettings {
            interval: Duration::from_secs(1),
            disk_paths: Vec::new(),
            psi_trigger: true,
            psi_poll_interval: PsiPollInterval::Auto,
            nvml_library: None,
            resources: Resource::ALL
                .into_iter()
                .filter(|r| *r != Resource::Disk)
                .collect(),
        }
    }
}

/// `monitor.psi_poll_interval`: `auto`, `off` or a duration.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum PsiPollInterval {
    /// The kernel's trigger with `CAP_SYS_RESOURCE`, else polling every 100 ms.
    #[default]
    Auto,
    /// The kernel's trigger only.
    Off,
    /// Polling at this interval, privileged or not.
    Every(Duration),
}

impl PsiPollInterval {
    /// What the monitor's trigger does with it.
    pub fn polling(self) -> ballast_monitor::PsiPolling {
        use ballast_monitor::PsiPolling;
        match self {
            PsiPollInterval::Auto => PsiPolling::Auto(PsiPolling::DEFAULT_INTERVAL),
            PsiPollInterval::Off => PsiPolling::Never,
            PsiPollInterval::Every(interval) => PsiPolling::Always(interval),
        }
    }
}

impl TryFrom<String> for PsiPollInterval {
    type Error = String;

    fn try_from(text: String) -> Result<Self, String> {
        match text.trim() {
            "auto" => Ok(PsiPollInterval::Auto),
            "off" => Ok(PsiPollInterval::Off),
            other => match humantime::parse_duration(other) {
                Ok(interval) if interval >= Duration::from_millis(1) => {
                    Ok(PsiPollInterval::Every(interval))
                }
                _ => Err(format!(
                    "psi_poll_interval: expected `auto`, `off` or a duration of at least 1ms such \
                     as `100ms`, found `{other}`"
                )),
            },
        }
    }
}

impl From<PsiPollInterval> for String {
    fn from(value: PsiPollInterval) -> String {
        match value {
            PsiPollInterval::Auto => "auto".to_owned(),
            PsiPollInterval::Off => "off".to_owned(),
            PsiPollInterval::Every(interval) => humantime::format_duration(interval).to_string(),
        }
    }
}

/// The telemetry and decision logs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TelemetryConfig {
    /// Rotate a log segment when it reaches this many bytes.
    pub segment_bytes: u64,
    /// Keep at most this many segments of each log (older ones are deleted).
    pub segments: usize,
    /// Write every n-th sample to the telemetry log (decisions and events are always written).
    pub sample_every: u32,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        TelemetryConfig {
            segment_bytes: 16 << 20,
            segments: 8,
            sample_every: 1,
        }
    }
}

/// The whole daemon config, as one profile resolves it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Where telemetry, decisions, pins and checkpoints are kept. Default: `$STATE_DIRECTORY`,
    /// else `$XDG_STATE_HOME/ballast`, else `~/.local/state/ballast`.
    pub data_dir: Option<PathBuf>,
    /// Where plugin `path`s that are not absolute are looked up. Default: the directory of the
    /// `ballast` executable (where `cargo build` puts the example plugins).
    pub plugin_dir: Option<PathBuf>,
    /// Use the detected tier's thresholds (true) or `scaler.thresholds` as written (false).
    pub use_tier_thresholds: bool,
    /// How long shutdown waits for plugins to drain.
    #[serde(with = "humantime_serde")]
    pub shutdown_timeout: Duration,
    /// Run each plugin process in a cgroup of its own under the daemon's, so that the kernel
    /// enforces its memory limit (and its CPU quota with `cpu_limit`). Where cgroups cannot be
    /// written, the daemon says why once and polls the limits instead.
    pub plugin_cgroups: bool,
    /// The control API.
    pub api: ApiConfig,
    /// The monitor.
    pub monitor: MonitorSettings,
    /// The predictor.
    pub predictor: PredictorSettings,
    /// The shedding policy.
    pub scaler: ScalerConfig,
    /// Hardware tiers and per-plugin tier needs.
    pub tier: TierConfig,
    /// The logs.
    pub telemetry: TelemetryConfig,
    /// The plugins, in any order (they start in priority order, highest first).
    pub plugins: Vec<PluginConfig>,
}

impl Default for Config {
    /// The built-in default: every example plugin, balanced thresholds.
    fn default() -> Self {
        Config {
            data_dir: None,
            plugin_dir: None,
            use_tier_thresholds: true,
            shutdown_timeout: Duration::from_secs(10),
            plugin_cgroups: true,
            api: ApiConfig::default(),
            monitor: MonitorSettings::default(),
            predictor: PredictorSettings::default(),
            scaler: ScalerConfig::default(),
            tier: TierConfig::default(),
            telemetry: TelemetryConfig::default(),
            plugins: example_plugins(),
        }
    }
}

/// The example integrations, with the priorities the design gives them: voice is shed first,
/// then the notes indexer, android, discord (isolated in a worker process), the load logger;
/// `stubs` is essential.
fn example_plugins() -> Vec<PluginConfig> {
    let plugin = |name: &str, priority: i32, essential: bool| {
        let mut c = PluginConfig::new(name, format!("lib{name}.so"));
        c.priority = priority;
        c.essential = essential;
        c
    };
    let mut discord = plugin("discord", 30, false);
    discord.isolation = Isolation::Process;
    discord.can_suspend = true;
    let mut indexer = PluginConfig::process("indexer", "indexer/indexer.py");
    indexer.priority = 15;
    indexer.protocol = Protocol::JsonLines;
    indexer.can_suspend = true;
    indexer.levels = vec![
        LevelConfig {
            name: "full".to_owned(),
            memory_mb: 64,
            gpu_memory_mb: 0,
        },
        LevelConfig {
            name: "keywords".to_owned(),
            // What Python and the SDK hold before any index: 15 MiB with their bytecode cached,
            // 17.5 MiB when the interpreter compiles them at start (`ballast plugin check`).
            memory_mb: 24,
            gpu_memory_mb: 0,
        },
    ];
    indexer.cpu_share = 0.05;
    indexer.memory_soft_limit_mb = Some(256);
    indexer.memory_hard_limit_mb = Some(512);
    let mut loadwatch = PluginConfig::process("loadwatch", "loadwatch/loadwatch.sh");
    loadwatch.priority = 35;
    loadwatch.can_suspend = true;
    loadwatch.stall_threshold = Some(Duration::from_secs(60));
    // The shell and the `sleep` it waits on hold about 3 MiB resident (`ballast plugin check
    // --plugin loadwatch` measures it).
    loadwatch.levels = vec![
        LevelConfig {
            name: "every-5s".to_owned(),
            memory_mb: 4,
            gpu_memory_mb: 0,
        },
        LevelConfig {
            name: "every-30s".to_owned(),
            memory_mb: 4,
            gpu_memory_mb: 0,
        },
    ];
    // voice is unloaded after 10 minutes without calls; clock loads on its first call and is
    // unloaded 5 minutes after its last.
    let mut voice = plugin("voice", 10, false);
    voice.keep_alive = Some(Duration::from_secs(600));
    let mut clock = plugin("clock", 40, false);
    clock.start = ballast_core::StartMode::OnDemand;
    clock.keep_alive = Some(Duration::from_secs(300));
    vec![
        voice,
        indexer,
        plugin("android", 20, false),
        discord,
        loadwatch,
        clock,
        plugin("stubs", 100, true),
    ]
}

/// Where a config value may come from, for `ballast config show`.
#[derive(Clone, Debug, Default)]
pub struct Overrides {
    /// `--data-dir`.
    pub data_dir: Option<PathBuf>,
    /// `--listen`.
    pub listen: Option<SocketAddr>,
    /// `--mode`.
    pub mode: Option<String>,
}

/// Every problem found while loading a config, each naming its key and source.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration:\n  - {}", problems.join("\n  - "))]
pub struct ConfigError {
    /// The problems.
    pub problems: Vec<String>,
}

impl ConfigError {
    fn one(problem: impl Into<String>) -> Self {
        ConfigError {
            problems: vec![problem.into()],
        }
    }
}

/// Builds the layered figment for `profile`.
pub fn figment(
    file: Option<&Path>,
    profile: &str,
    overrides: &Overrides,
) -> Result<Figment, ConfigError> {
    if profile != "default" && !PROFILES.contains(&profile) {
        return Err(ConfigError::one(format!(
            "unknown profile `{profile}` (expected one of: {})",
            PROFILES.join(", ")
        )));
    }
    let mut figment = Figment::new().merge(Named(
        "built-in default",
        Serialized::defaults(Config::default()),
    ));
    if let Some(file) = file {
        if !file.is_file() {
            return Err(ConfigError::one(format!(
                "config file {} does not exist",
                file.display()
            )));
        }
        let text = std::fs::read_to_string(file).map_err(|e| {
            ConfigError::one(format!("cannot read config file {}: {e}", file.display()))
        })?;
        check_profiles(&text, &file.display().to_string())?;
        figment = figment.merge(Toml::file(file).nested());
    }
    figment = figment
        .merge(
            Env::prefixed("BALLAST_")
                .split("__")
                .ignore(&["log", "config", "profile"])
                .global(),
        )
        .select(profile);
    if let Some(dir) = &overrides.data_dir {
        figment = figment.merge(Named("--data-dir", Serialized::global("data_dir", dir)));
    }
    if let Some(listen) = overrides.listen {
        figment = figment.merge(Named("--listen", Serialized::global("api.listen", listen)));
    }
    if let Some(mode) = &overrides.mode {
        figment = figment.merge(Named("--mode", Serialized::global("scaler.mode", mode)));
    }
    Ok(figment)
}

/// Rejects unknown top-level tables: they are profiles, and a typo would be silently ignored.
/// Text that is not TOML passes here; figment reports it with its line.
fn check_profiles(text: &str, file_name: &str) -> Result<(), ConfigError> {
    let Ok(table) = text.parse::<toml::Table>() else {
        return Ok(());
    };
    let problems: Vec<String> = table
        .keys()
        .filter(|k| k.as_str() != "default" && !PROFILES.contains(&k.as_str()))
        .map(|k| {
            format!(
                "{file_name}: unknown top-level table `[{k}]`; top-level tables are profiles (default, {})",
                PROFILES.join(", ")
            )
        })
        .collect();
    if problems.is_empty() {
        Ok(())
    } else {
        Err(ConfigError { problems })
    }
}

/// A provider under another name, so that `ballast config show` can say "built-in default" or
/// "--listen" instead of a source-code location.
struct Named<P>(&'static str, P);

impl<P: figment::Provider> figment::Provider for Named<P> {
    fn metadata(&self) -> figment::Metadata {
        figment::Metadata::named(self.0)
    }

    fn data(
        &self,
    ) -> Result<figment::value::Map<figment::Profile, figment::value::Dict>, figment::Error> {
        self.1.data()
    }

    fn profile(&self) -> Option<figment::Profile> {
        self.1.profile()
    }
}

/// Loads and validates the config, reporting every problem at once.
pub fn load(
    file: Option<&Path>,
    profile: &str,
    overrides: &Overrides,
) -> Result<Config, ConfigError> {
    let figment = figment(file, profile, overrides)?;
    let config: Config = figment.extract().map_err(|error| ConfigError {
        problems: error.into_iter().map(|e| describe(&e)).collect(),
    })?;
    let problems = config.problems();
    if problems.is_empty() {
        Ok(config)
    } else {
        Err(ConfigError { problems })
    }
}

/// Parses and validates config `text` as if it were the file `file_name`, layered only over the
/// built-in defaults: no environment, no flags, no file system. The same checks as [`load`], as a
/// pure function of its input (for fuzzing and for tools that hold a config in memory).
pub fn from_toml(text: &str, file_name: &str, profile: &str) -> Result<Config, ConfigError> {
    if profile != "default" && !PROFILES.contains(&profile) {
        return Err(ConfigError::one(format!(
            "unknown profile `{profile}` (expected one of: {})",
            PROFILES.join(", ")
        )));
    }
    check_profiles(text, file_name)?;
    let figment = Figment::new()
        .merge(Named(
            "built-in default",
            Serialized::defaults(Config::default()),
        ))
        .merge(Toml::string(text).nested())
        .select(profile);
    let config: Config = figment.extract().map_err(|error| ConfigError {
        problems: error
            .into_iter()
            .map(|e| format!("{file_name}: {}", describe(&e)))
            .collect(),
    })?;
    let problems = config.problems();
    if problems.is_empty() {
        Ok(config)
    } else {
        Err(ConfigError { problems })
    }
}

/// Where a value came from, in words: the file, the environment variable, the flag, or the
/// built-in default.
pub fn source_of(metadata: &figment::Metadata, key: &str) -> String {
    match &metadata.source {
        Some(source) => source.to_string(),
        None if metadata.name.contains("environment") => {
            format!(
                "environment variable BALLAST_{}",
                key.to_ascii_uppercase().replace('.', "__")
            )
        }
        None => metadata.name.to_string(),
    }
}

/// A figment error with its key and where the value came from (file or environment variable).
fn describe(error: &figment::Error) -> String {
    let key = error.path.join(".");
    let source = error
        .metadata
        .as_ref()
        .map(|m| source_of(m, &key))
        .unwrap_or_default();
    let mut text = error.kind.to_string();
    if !key.is_empty() {
        text = format!("key `{key}`: {text}");
    }
    if !source.is_empty() {
        text = format!("{text} (in {source})");
    }
    text
}

impl Config {
    /// Every problem with the config, each naming its key.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.monitor.interval < Duration::from_millis(100)
            || self.monitor.interval > Duration::from_secs(3600)
        {
            problems.push(format!(
                "monitor.interval must be between 100ms and 1h, got {}",
                humantime::format_duration(self.monitor.interval)
            ));
        }
        problems.extend(
            self.predictor
                .to_predictor_config()
                .problems()
                .into_iter()
                .map(|p| format!("predictor.{p}")),
        );
        problems.extend(
            self.scaler
                .problems()
                .into_iter()
                .map(|p| format!("scaler: {p}")),
        );
        problems.extend(
            self.tier
                .problems()
                .into_iter()
                .map(|p| format!("tier: {p}")),
        );
        if self.telemetry.segment_bytes < 4096 {
            problems.push(format!(
                "telemetry.segment_bytes must be at least 4096, got {}",
                self.telemetry.segment_bytes
            ));
        }
        if self.telemetry.segments == 0 {
            problems.push("telemetry.segments must be at least 1".to_owned());
        }
        if self.telemetry.sample_every == 0 {
            problems.push("telemetry.sample_every must be at least 1".to_owned());
        }
        if !self.api.listen.ip().is_loopback() && self.api.token_file.is_none() {
            problems.push(format!(
                "api.listen is {}, which is not a loopback address: set api.token_file to require a bearer token",
                self.api.listen
            ));
        }
        let mut seen = std::collections::BTreeSet::new();
        for plugin in &self.plugins {
            problems.extend(plugin.problems());
            if !seen.insert(plugin.name.as_str()) {
                problems.push(format!("plugin `{}` is configured twice", plugin.name));
            }
        }
        problems
    }

    /// The data directory, resolved from the config or the environment.
    pub fn data_dir(&self) -> PathBuf {
        if let Some(dir) = &self.data_dir {
            return dir.clone();
        }
        if let Some(dir) = std::env::var_os("STATE_DIRECTORY") {
            // systemd may pass several, colon-separated; the first is ours.
            let first = dir
                .to_string_lossy()
                .split(':')
                .next()
                .unwrap_or_default()
                .to_owned();
            return PathBuf::from(first);
        }
        if let Some(dir) = std::env::var_os("XDG_STATE_HOME") {
            return PathBuf::from(dir).join("ballast");
        }
        if let Some(home) = std::env::var_os("HOME") {
            return PathBuf::from(home).join(".local/state/ballast");
        }
        PathBuf::from("ballast-data")
    }

    /// The plugin directory, resolved.
    pub fn plugin_dir(&self) -> PathBuf {
        if let Some(dir) = &self.plugin_dir {
            return dir.clone();
        }
        std::env::current_exe()
            .ok()
            .and_then(|exe| exe.parent().map(Path::to_path_buf))
            .unwrap_or_else(|| PathBuf::from("."))
    }

    /// The plugins with relative paths resolved against the plugin directory: a native
    /// plugin's `path`, a process plugin's `working_dir`, and its `command` when that is a path
    /// (it has a `/`; a bare name is looked up in `PATH`, as a shell would).
    pub fn resolved_plugins(&self) -> Vec<PluginConfig> {
        let dir = self.plugin_dir();
        self.plugins
            .iter()
            .map(|p| {
                let mut p = p.clone();
                if p.path.is_relative() && !p.path.as_os_str().is_empty() {
                    p.path = dir.join(&p.path);
                }
                if let Some(command) = &p.command
                    && command.is_relative()
                    && command.components().count() > 1
                {
                    p.command = Some(dir.join(command));
                }
                if let Some(working_dir) = &p.working_dir
                    && working_dir.is_relative()
                {
                    p.working_dir = Some(dir.join(working_dir));
                }
                p
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &tempfile::TempDir, text: &str) -> PathBuf {
        let path = dir.path().join("ballast.toml");
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn the_built_in_default_is_valid_and_has_the_example_plugins() {
        let config = load(None, DEFAULT_PROFILE, &Overrides::default()).unwrap();
        let names: Vec<&str> = config.plugins.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "voice",
                "indexer",
                "android",
                "discord",
                "loadwatch",
                "clock",
                "stubs"
            ]
        );
        assert!(
            config
                .plugins
                .iter()
                .find(|p| p.name == "stubs")
                .unwrap()
                .essential
        );
    }

    #[test]
    fn relative_programs_resolve_in_the_plugin_directory_and_bare_names_in_path() {
        let mut config = load(None, DEFAULT_PROFILE, &Overrides::default()).unwrap();
        config.plugin_dir = Some(PathBuf::from("/opt/ballast"));
        let mut python = PluginConfig::process("bare", "python3");
        python.working_dir = Some(PathBuf::from("bare"));
        config.plugins.push(python);
        let resolved = config.resolved_plugins();
        let find = |name: &str| resolved.iter().find(|p| p.name == name).unwrap();
        assert_eq!(
            find("indexer").command.as_deref(),
            Some(Path::new("/opt/ballast/indexer/indexer.py"))
        );
        assert_eq!(find("bare").command.as_deref(), Some(Path::new("python3")));
        assert_eq!(
            find("bare").working_dir.as_deref(),
            Some(Path::new("/opt/ballast/bare"))
        );
        assert_eq!(find("voice").path, Path::new("/opt/ballast/libvoice.so"));
        assert_eq!(find("indexer").path, Path::new(""));
    }

    #[test]
    fn a_process_plugin_in_a_file_is_read_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let file = write(
            &dir,
            r#"
[[default.plugins]]
name = "bot"
kind = "process"
command = "bot/bot.py"
protocol = "json-lines"
levels = [{ name = "full", memory_mb = 128 }]
restart = { burst = 3, window = "2m" }
memory_hard_limit_mb = 64
memory_soft_limit_mb = 96
"#,
        );
        let e = load(Some(&file), "balanced", &Overrides::default()).unwrap_err();
        assert_eq!(
            e.problems,
            ["plugin `bot`: memory_soft_limit_mb (96) must not be above memory_hard_limit_mb (64)"]
        );
        let file = write(
            &dir,
            "[[default.plugins]]\nname = \"bot\"\nkind = \"process\"\ncommand = \"bot.py\"\nprotocol = \"grpc\"\n",
        );
        let e = load(Some(&file), "balanced", &Overrides::default()).unwrap_err();
        assert!(
            e.to_string()
                .contains("key `plugins.0.protocol`: unknown variant: found `grpc`"),
            "{e}"
        );
    }

    #[test]
    fn profiles_layer_over_default_and_flags_win() {
        let dir = tempfile::tempdir().unwrap();
        let file = write(
            &dir,
            r#"
[default.monitor]
interval = "2s"
[dev.monitor]
interval = "500ms"
[production.scaler]
mode = "observe"
"#,
        );
        let dev = load(Some(&file), "dev", &Overrides::default()).unwrap();
        assert_eq!(dev.monitor.interval, Duration::from_millis(500));
        let balanced = load(Some(&file), "balanced", &Overrides::default()).unwrap();
        assert_eq!(balanced.monitor.interval, Duration::from_secs(2));
        let overrides = Overrides {
            mode: Some("advise".into()),
            ..Overrides::default()
        };
        let production = load(Some(&file), "production", &overrides).unwrap();
        assert_eq!(
            serde_json::to_value(production.scaler.mode).unwrap(),
            "advise"
        );
    }

    #[test]
    fn an_unknown_profile_and_a_missing_file_are_errors() {
        let e = load(None, "fast", &Overrides::default()).unwrap_err();
        assert!(e.to_string().contains("unknown profile `fast`"), "{e}");
        let e = load(
            Some(Path::new("/nonexistent/ballast.toml")),
            "dev",
            &Overrides::default(),
        )
        .unwrap_err();
        assert!(
            e.to_string()
                .contains("config file /nonexistent/ballast.toml does not exist"),
            "{e}"
        );
    }

    #[test]
    fn every_error_names_its_key_and_file_and_all_are_reported() {
        let dir = tempfile::tempdir().unwrap();
        let file = write(
            &dir,
            r#"
[balanced.monitor]
interval = "fast"
[balanced.predictor]
ema_weight = 3.0
"#,
        );
        let e = load(Some(&file), "balanced", &Overrides::default()).unwrap_err();
        let text = e.to_string();
        assert!(text.contains("monitor.interval"), "{text}");
        assert!(text.contains("ballast.toml"), "{text}");

        let file = write(
            &dir,
            r#"
[balanced.predictor]
ema_weight = 3.0
window_buckets = 1
[balanced.api]
listen = "0.0.0.0:7878"
"#,
        );
        let e = load(Some(&file), "balanced", &Overrides::default()).unwrap_err();
        assert_eq!(e.problems.len(), 3, "{e}");
        assert!(
            e.problems
                .iter()
                .any(|p| p.contains("predictor.ema_weight"))
        );
        assert!(
            e.problems
                .iter()
                .any(|p| p.contains("api.listen is 0.0.0.0:7878"))
        );
    }

    #[test]
    fn a_config_in_memory_gets_the_same_checks_as_a_file() {
        let config = from_toml(
            "[default.monitor]\ninterval = \"2s\"\n",
            "mem.toml",
            "balanced",
        )
        .unwrap();
        assert_eq!(config.monitor.interval, Duration::from_secs(2));
        let e = from_toml("[balancd.monitor]\n", "mem.toml", "balanced").unwrap_err();
        assert!(
            e.to_string()
                .contains("mem.toml: unknown top-level table `[balancd]`")
        );
        let e = from_toml(
            "[balanced.monitor]\ninterval = \"fast\"\n",
            "mem.toml",
            "balanced",
        )
        .unwrap_err();
        assert!(
            e.to_string().contains("mem.toml: key `monitor.interval`"),
            "{e}"
        );
        let e =
            from_toml("[default.monitor]\ninterval = \"1ms\"\n", "mem.toml", "dev").unwrap_err();
        assert!(
            e.to_string().contains("monitor.interval must be between"),
            "{e}"
        );
        assert!(from_toml("", "mem.toml", "fast").is_err());
    }

    #[test]
    fn psi_poll_interval_is_auto_off_or_a_duration() {
        use ballast_monitor::PsiPolling;
        let config = load(None, DEFAULT_PROFILE, &Overrides::default()).unwrap();
        assert_eq!(config.monitor.psi_poll_interval, PsiPollInterval::Auto);
        assert_eq!(
            config.monitor.psi_poll_interval.polling(),
            PsiPolling::Auto(Duration::from_millis(100))
        );
        let dir = tempfile::tempdir().unwrap();
        for (text, expected) in [
            ("auto", PsiPollInterval::Auto),
            ("off", PsiPollInterval::Off),
            ("50ms", PsiPollInterval::Every(Duration::from_millis(50))),
        ] {
            let file = write(
                &dir,
                &format!("[default.monitor]\npsi_poll_interval = \"{text}\"\n"),
            );
            let config = load(Some(&file), "balanced", &Overrides::default()).unwrap();
            assert_eq!(config.monitor.psi_poll_interval, expected, "{text}");
            assert_eq!(String::from(expected), text);
        }
        assert_eq!(PsiPollInterval::Off.polling(), PsiPolling::Never);
        for bad in ["often", "0ms", ""] {
            let file = write(
                &dir,
                &format!("[default.monitor]\npsi_poll_interval = \"{bad}\"\n"),
            );
            let e = load(Some(&file), "balanced", &Overrides::default()).unwrap_err();
            assert!(
                e.to_string().contains("psi_poll_interval")
                    && e.to_string()
                        .contains("expected `auto`, `off` or a duration"),
                "{e}"
            );
        }
    }

    #[test]
    fn an_unknown_top_level_table_is_not_silently_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let file = write(&dir, "[balancd.monitor]\ninterval = \"1s\"\n");
        let e = load(Some(&file), "balanced", &Overrides::default()).unwrap_err();
        assert!(
            e.to_string()
                .contains("unknown top-level table `[balancd]`"),
            "{e}"
        );
    }

    #[test]
    #[allow(
        clippy::result_large_err,
        reason = "figment's Jail fixes the closure's error type"
    )]
    fn environment_variables_override_the_file_and_flags_override_both() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "ballast.toml",
                "[balanced.telemetry]\nsegments = 3\nsample_every = 2\n",
            )?;
            jail.set_env("BALLAST_TELEMETRY__SEGMENTS", "5");
            jail.set_env("BALLAST_DATA_DIR", "/from/env");
            let overrides = Overrides {
                data_dir: Some(PathBuf::from("/from/flag")),
                ..Overrides::default()
            };
            let config = load(Some(Path::new("ballast.toml")), "balanced", &overrides)
                .map_err(|e| e.to_string())?;
            assert_eq!(config.telemetry.segments, 5);
            assert_eq!(config.telemetry.sample_every, 2);
            assert_eq!(config.data_dir, Some(PathBuf::from("/from/flag")));
            Ok(())
        });
    }
}
