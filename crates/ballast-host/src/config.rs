//! How a plugin is configured: where its file is, how important it is, its own settings and its
//! call limits.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// One plugin in the ballast config (`[[plugins]]`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginConfig {
    /// The plugin's name; must equal the name its file declares.
    pub name: String,
    /// The plugin file, or a directory in which `lib<name>.so` is looked up.
    pub path: PathBuf,
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

impl PluginConfig {
    /// A config for `name` at `path` with every other field at its default.
    pub fn new(name: impl Into<String>, path: impl Into<PathBuf>) -> Self {
        PluginConfig {
            name: name.into(),
            path: path.into(),
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
        }
    }

    /// The plugin file: `path` itself, or `path/lib<name>.so` when `path` is a directory.
    pub fn file(&self) -> PathBuf {
        resolve(&self.path, &self.name)
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
        if let Some(pin) = &self.sha256
            && (pin.len() != 64 || !pin.chars().all(|c| c.is_ascii_hexdigit()))
        {
            problems.push(format!("{who}: sha256 must be 64 hexadecimal characters"));
        }
        if !self.config.is_object() {
            problems.push(format!("{who}: config must be a table"));
        }
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
    fn a_directory_path_finds_the_library_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let c = PluginConfig::new("voice", dir.path());
        assert_eq!(c.file(), dir.path().join("libvoice.so"));
        let c = PluginConfig::new("voice", "/some/file.so");
        assert_eq!(c.file(), PathBuf::from("/some/file.so"));
    }
}
