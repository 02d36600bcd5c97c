//! Hardware tier detection, tier profiles and, with the `actor` feature, the `TierActor`.
//!
//! A machine's [`HardwareFacts`](ballast_core::tier::HardwareFacts) (memory, cores, GPUs) are
//! classified by configurable rules ([`TierConfig`]) into a [`Tier`](ballast_core::tier::Tier):
//! `constrained`, `standard`, `performance` or `gpu` by default. The tier selects the scaler's
//! threshold profile and what each plugin may run at. [`classify()`] is a pure function of the
//! facts. The `TierActor` (feature `actor`, on by default) detects the facts at start through an
//! injected `DetectFacts`, because only ballast-monitor reads the machine; without the feature
//! the crate depends on neither actix nor tokio.

#[cfg(feature = "actor")]
mod actor;
mod bytes;
mod classify;
mod config;

#[cfg(feature = "actor")]
pub use actor::{CurrentTier, DetectFacts, SubscribeTier, TierActor};
pub use bytes::ByteSize;
pub use classify::classify;
pub use config::{Conditions, LevelRule, PluginRule, TierConfig, TierConfigError, TierRule};
