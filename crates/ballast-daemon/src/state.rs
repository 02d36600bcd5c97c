//! What the control API's handlers are given: the actors to talk to, the live view and the
//! environment's clock.

use std::sync::Arc;

use actix::Addr;
use ballast_core::Timestamp;
use ballast_host::{Clock, PluginHost, PluginHostActor};
use ballast_scaler::ScalerActor;

use crate::config::Config;
use crate::live::LiveView;
use crate::metrics::Metrics;
use crate::pins::PinWriter;

/// Shared state of the control API (cloned into every worker).
#[derive(Clone)]
pub struct AppState {
    /// The plugin host actor: calls, lifecycle commands.
    pub host: Addr<PluginHostActor>,
    /// The plugin host itself, for cheap read-only status.
    pub plugin_host: Arc<PluginHost>,
    /// The scaler actor: pins, releases, mode, its view of the plugins.
    pub scaler: Addr<ScalerActor>,
    /// What the daemon knows right now.
    pub live: Arc<LiveView>,
    /// The effective config.
    pub config: Arc<Config>,
    /// Stores the operator pins before a pin request is answered.
    pub pins: Addr<PinWriter>,
    /// The bearer token clients must present, if one is configured.
    pub token: Option<Arc<str>>,
    /// The metrics registry.
    pub metrics: Arc<Metrics>,
    /// The daemon's clock.
    pub clock: Clock,
}

impl AppState {
    /// Now, by the daemon's clock.
    pub fn now(&self) -> Timestamp {
        (self.clock)()
    }
}
