//! Loading and running ballast plugins: file checks, descriptor validation, the lifecycle, calls
//! on worker threads, and the [`PluginHostActor`] around it all.
//!
//! [`PluginHost`] is the synchronous core; [`PluginHostActor`] is the thin actix shell the daemon
//! wires to the scaler. Plugin libraries are never unloaded (see [`PluginLibrary`]).

mod actor;
mod config;
mod elf;
mod host;
mod host_api;
mod instance;
mod library;
mod trust;

pub use actor::{
    Call, Disable, Enable, Execute, HostEvent, PluginHostActor, Resume, SetLevel, Status,
    Subscribe, Suspend,
};
pub use config::PluginConfig;
pub use elf::{ElfProblem, check_shared_object};
pub use host::{CallError, EventSink, HostError, PluginHost, PluginStatus, Reply};
pub use host_api::{Clock, StateReport, system_clock};
pub use instance::PluginFault;
pub use library::{
    LevelInfo, LoadError, PluginInfo, PluginLibrary, sha256_file, validate_descriptor,
};
pub use trust::{FileTrust, Problem as TrustProblem, UntrustedPath};
