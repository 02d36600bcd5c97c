//! What the control API's handlers are given: the actors to talk to and the live view.

use std::sync::Arc;

use actix::Addr;
use ballast_host::{PluginHost, PluginHostActor};
use ballast_scaler::ScalerActor;

use crate::config::Config;
use crate::live::LiveView;

/// Shared state of the control API (cloned into every worker).
#[derive(Clone)]
pub struct AppState {
    /// The plugin host actor: calls, lifecycle commands, status.
    pub host: Addr<PluginHostActor>,
    /// The plugin host itself, for cheap read-only status.
    pub plugin_host: Arc<PluginHost>,
    /// The scaler actor: pins, releases, mode, its view of the plugins.
    pub scaler: Addr<ScalerActor>,
    /// What the daemon knows right now.
    pub live: Arc<LiveView>,
    /// The effective config.
    pub config: Arc<Config>,
    /// Where operator pins are stored before a pin request is answered (the data directory);
    /// `None` stores nothing (tests of the API alone).
    pub pins_dir: Option<std::path::PathBuf>,
    /// The bearer token clients must present, if one is configured.
    pub token: Option<Arc<str>>,
    /// The metrics registry.
    pub metrics: Arc<crate::metrics::Metrics>,
}
