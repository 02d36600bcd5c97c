//! Hardware tier detection, tier profiles and the [`TierActor`].
//!
//! A machine's [`HardwareFacts`](ballast_core::tier::HardwareFacts) (memory, cores, GPUs) are
//! classified by configurable rules ([`TierConfig`]) into a [`Tier`](ballast_core::tier::Tier):
//! `constrained`, `standard`, `performance` or `gpu` by default. The tier selects the scaler's
//! threshold profile and what each plugin may run at. [`classify()`] is a pure function of the
//! facts; detection itself is injected ([`DetectFacts`]), because only ballast-monitor reads the
//! machine.

mod actor;
mod bytes;
mod classify;
mod config;

pub use actor::{CurrentTier, DetectFacts, SubscribeTier, TierActor};
pub use bytes::ByteSize;
pub use classify::classify;
pub use config::{Conditions, LevelRule, PluginRule, TierConfig, TierConfigError, TierRule};
