//! The errors of the scaler.

use ballast_core::Level;

/// What can go wrong when making or steering a [`crate::Scaler`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ScalerError {
    /// The configuration, the plugin list or a threshold profile has problems; all are listed.
    #[error("invalid scaler configuration: {}", .0.join("; "))]
    Config(Vec<String>),
    /// No plugin of that name is known to the scaler.
    #[error("unknown plugin `{0}`")]
    UnknownPlugin(String),
    /// A pin asked for a level the plugin does not have.
    #[error("plugin `{plugin}` has no level {level} (it has {n_levels})")]
    InvalidLevel {
        /// The plugin.
        plugin: String,
        /// The level asked for.
        level: Level,
        /// How many levels it has.
        n_levels: u32,
    },
}
