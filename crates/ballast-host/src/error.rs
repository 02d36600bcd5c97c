//! The errors of the host: [`HostError`] for lifecycle operations, [`CallError`] for calls.

use ballast_core::Timestamp;
use serde::Serialize;

use crate::instance::PluginFault;
use crate::library::LoadError;
use crate::stream::CancelReason;

fn cancel_why(reason: CancelReason) -> &'static str {
    match reason {
        CancelReason::Caller => "the caller went away",
        CancelReason::Deadline => "its deadline passed",
        CancelReason::Shed => "the plugin was shed and its drain deadline passed",
    }
}

/// Errors of lifecycle operations. Each names the plugin.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    /// The plugin config is invalid.
    #[error("{}", problems.join("; "))]
    Config {
        /// Every problem, each naming the plugin and field.
        problems: Vec<String>,
    },
    /// The file could not be loaded.
    #[error(transparent)]
    Load(#[from] LoadError),
    /// Two plugins share a name.
    #[error(
        "plugin `{name}` is loaded twice: from {first} and from {second}; plugin names must be unique"
    )]
    Duplicate {
        /// The name.
        name: String,
        /// The file loaded first.
        first: String,
        /// The file loaded second.
        second: String,
    },
    /// The config's name and the file's declared name differ.
    #[error(
        "plugin `{configured}`: the file {file} declares the name `{declared}`; make the config name match"
    )]
    NameMismatch {
        /// The name in the config.
        configured: String,
        /// The name in the file.
        declared: String,
        /// The file.
        file: String,
    },
    /// No plugin of that name is loaded.
    #[error("no plugin named `{name}` is loaded")]
    UnknownPlugin {
        /// The name asked for.
        name: String,
    },
    /// The level does not exist.
    #[error("plugin `{plugin}` has levels 0..={max}; level {level} does not exist")]
    InvalidLevel {
        /// The plugin.
        plugin: String,
        /// The level asked for.
        level: u32,
        /// Its highest level.
        max: u32,
    },
    /// An unload for idleness was refused: the plugin took a call since, or has one in flight.
    #[error("plugin `{plugin}` is not idle: {why}")]
    Active {
        /// The plugin.
        plugin: String,
        /// What it is doing.
        why: String,
    },
    /// The operation needs the plugin enabled.
    #[error("plugin `{plugin}` is {state}, not enabled")]
    NotEnabled {
        /// The plugin.
        plugin: String,
        /// Its state.
        state: String,
    },
    /// A plugin function failed.
    #[error("plugin `{plugin}`: {operation} failed: {fault}")]
    Plugin {
        /// The plugin.
        plugin: String,
        /// The function, e.g. "create".
        operation: &'static str,
        /// What it returned.
        fault: PluginFault,
    },
}

/// Why a call was not answered. Degraded and Busy are decided before the plugin is touched.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, thiserror::Error)]
#[serde(tag = "error", rename_all = "snake_case")]
pub enum CallError {
    /// No plugin of that name.
    #[error("no plugin named `{plugin}`")]
    UnknownPlugin {
        /// The name asked for.
        plugin: String,
    },
    /// The plugin is shed, suspended, draining or failed.
    #[error("plugin `{plugin}` is {state} since {since}: {reason}")]
    Degraded {
        /// The plugin.
        plugin: String,
        /// Its state (disabled, suspended, draining, failed, loaded).
        state: String,
        /// Why it is in that state.
        reason: String,
        /// Since when.
        since: Timestamp,
    },
    /// The plugin is idle (on-demand and not loaded yet, or unloaded after its `keep_alive`):
    /// a call may wake it.
    #[error("plugin `{plugin}` is idle since {since}: {reason}")]
    Idle {
        /// The plugin.
        plugin: String,
        /// Why it is idle.
        reason: String,
        /// Since when.
        since: Timestamp,
    },
    /// Too many calls already wait for the plugin to load.
    #[error("plugin `{plugin}` is loading and {queue} calls already wait for it (wake_queue)")]
    WakeQueueFull {
        /// The plugin.
        plugin: String,
        /// How many calls may wait.
        queue: u32,
    },
    /// The plugin did not load within its `load_timeout` for a call that woke it.
    #[error("plugin `{plugin}` did not load within {timeout_ms} ms (load_timeout)")]
    LoadTimeout {
        /// The plugin.
        plugin: String,
        /// The load timeout.
        timeout_ms: u64,
    },
    /// The concurrency limit and the queue are full.
    #[error("plugin `{plugin}` is busy: {limit} calls running and the queue of {queue} is full")]
    Busy {
        /// The plugin.
        plugin: String,
        /// Its current limit.
        limit: u32,
        /// Its queue size.
        queue: u32,
    },
    /// The call was cancelled while it waited or ran: its caller went away, its deadline
    /// passed, or its plugin was shed and the drain deadline passed.
    #[error("plugin `{plugin}`: the call was cancelled: {}", cancel_why(*reason))]
    Cancelled {
        /// The plugin.
        plugin: String,
        /// Why.
        reason: CancelReason,
    },
    /// No answer within the timeout.
    #[error("plugin `{plugin}` did not answer within {timeout_ms} ms")]
    Timeout {
        /// The plugin.
        plugin: String,
        /// The timeout.
        timeout_ms: u64,
    },
    /// The plugin returned an error.
    #[error("plugin `{plugin}` failed the call: {message}")]
    Failed {
        /// The plugin.
        plugin: String,
        /// Its message.
        message: String,
    },
    /// The plugin panicked; it is now marked failed.
    #[error("plugin `{plugin}` panicked during the call and was marked failed: {message}")]
    Panicked {
        /// The plugin.
        plugin: String,
        /// The panic message.
        message: String,
    },
}
