//! Loading and running ballast plugins: file checks, descriptor validation, the lifecycle, calls
//! on worker threads, and the `PluginHostActor` around it all.
//!
//! [`PluginHost`] is the synchronous core; `PluginHostActor` is the thin actix shell the daemon
//! wires to the scaler (with the `actor` feature, on by default; without it the crate has no
//! actix and no tokio). Plugin libraries are never unloaded (see [`PluginLibrary`]).
//!
//! Plugins come in two kinds behind the same lifecycle, calls and events: native libraries
//! inside the daemon, and plugins that run in a process of their own (process plugins in any
//! language, and native plugins isolated in a `ballast worker`, see [`worker`]). A supervisor
//! thread per process plugin restarts crashed processes with back-off, measures them and runs
//! the stall, stuck, leak and memory-limit detectors of `ballast-process`.

#[cfg(feature = "actor")]
mod actor;
pub mod check;
pub mod checkpoint;
mod config;
mod elf;
mod error;
mod host;
mod host_api;
mod instance;
mod library;
mod lifecycle;
mod live;
mod process;
mod queue;
mod slot;
mod stream;
mod supervisor;
mod tap;
mod trust;
pub mod worker;

#[cfg(feature = "actor")]
pub use actor::{
    Call, CallWhenReady, Execute, HostEvent, PluginHostActor, Subscribe, TakeCheckpoint,
};
pub use ballast_core::plugin::{ProcessStatus, ProgressStatus};
pub use config::{Isolation, LevelConfig, PluginConfig, PluginKind, Protocol};
pub use elf::{ElfProblem, check_shared_object};
pub use error::{CallError, HostError};
pub use host::{PluginHost, PluginStatus};
pub use host_api::{Clock, StateReport, system_clock};
pub use instance::{NativeInstance, PluginFault};
pub use library::{
    LevelInfo, LoadError, PluginInfo, PluginLibrary, sha256_file, validate_descriptor,
};
pub use process::{Cgroups, ProcessOptions, StandaloneProcess};
pub use slot::{EventSink, Reply};
pub use stream::{CallIo, CallOptions, CancelHook, CancelReason, CancelToken, ChunkSink};
pub use trust::{FileTrust, Problem as TrustProblem, UntrustedPath};
