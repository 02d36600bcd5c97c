//! What a Rust plugin author writes against: a safe [`Plugin`] trait and [`export_plugin!`].
//!
//! A ballast plugin is a `cdylib` that implements [`Plugin`] and calls [`export_plugin!`] once.
//! The macro exports the ABI's entry symbol, builds the descriptor from [`Plugin::INFO`], installs
//! a counting global allocator (so the host sees the plugin's live and peak bytes) and wraps every
//! entry point so that a panic becomes an error status instead of tearing down the host: a Rust
//! panic that unwinds into the host aborts the whole daemon, because each `cdylib` carries its own
//! copy of std. A plugin written on this crate contains no `unsafe`.
//!
//! Records logged with the `log` crate inside the plugin go to the host's log, tagged with the
//! plugin's name. (`tracing` users: enable tracing's `log` feature and its events arrive too.)
//!
//! # A complete plugin
//!
//! ```
//! use ballast_sdk::{export_plugin, CreateContext, LevelInfo, Plugin, PluginError, PluginInfo};
//!
//! /// Answers every request with a greeting.
//! pub struct Hello {
//!     greeting: String,
//!     level: u32,
//! }
//!
//! impl Plugin for Hello {
//!     const INFO: PluginInfo = PluginInfo {
//!         name: "hello",
//!         version: env!("CARGO_PKG_VERSION"),
//!         levels: &[LevelInfo::new("full", 16 << 20), LevelInfo::new("terse", 1 << 20)],
//!         cpu_share: 0.05,
//!         needs_gpu: false,
//!     };
//!
//!     fn create(ctx: CreateContext<'_>) -> Result<Self, PluginError> {
//!         let greeting = if ctx.config_json().contains("\"shout\":true") { "HELLO" } else { "hello" };
//!         ctx.host().info(&format!("created at level {}", ctx.level()));
//!         Ok(Hello { greeting: greeting.to_owned(), level: ctx.level() })
//!     }
//!
//!     fn set_level(&mut self, level: u32) -> Result<(), PluginError> {
//!         self.level = level;
//!         Ok(())
//!     }
//!
//!     fn call(&self, request: &[u8]) -> Result<Vec<u8>, PluginError> {
//!         let name = std::str::from_utf8(request).map_err(|_| PluginError::invalid("request is not UTF-8"))?;
//!         Ok(format!("{}, {name} (level {})", self.greeting, self.level).into_bytes())
//!     }
//! }
//!
//! export_plugin!(Hello);
//! # fn main() {}
//! ```
//!
//! Build it with `crate-type = ["cdylib"]` and check it with `ballast plugin inspect`.
//!
//! # Streamed answers
//!
//! Every plugin built on this crate can be called with its answer streamed (ABI 1.1): the host
//! calls [`Plugin::call_stream`], whose default answers with [`Plugin::call`]'s whole answer. A
//! plugin that produces its answer in pieces overrides it and hands each piece to
//! [`CallContext::send`] as soon as it has it; `send` fails with [`Cancelled`] once the call is
//! cancelled (the caller went away, the deadline passed, the plugin is being shed), and `?`
//! turns that into the error the host expects. Long work between chunks should look at
//! [`CallContext::is_cancelled`] now and then.
//!
//! # Testing a plugin
//!
//! With the `testing` feature (in your dev-dependencies), `testing::TestHost` drives a plugin
//! type in a plain unit test through the same entry points the daemon calls: create with a
//! config, a level and a checkpoint, calls, streamed calls with cancellation and deadlines,
//! levels, drain, checkpoint, destroy, and what the plugin logged. No `cdylib`, no daemon.
//!
//! # Build settings
//!
//! Build plugins with `panic = "unwind"`, Rust's default: the SDK turns a panic into an error
//! the daemon reports, which it cannot do when a panic aborts. [`export_plugin!`] refuses to
//! compile with `panic = "abort"`, since such a plugin's first panic would abort the daemon.

#![deny(missing_docs)]

mod alloc;
#[doc(hidden)]
pub mod export;
mod host;
mod stream;
#[cfg(feature = "testing")]
pub mod testing;

use std::fmt;

pub use ballast_abi as abi;

pub use crate::alloc::{AllocStats, CountingAllocator, alloc_stats};
pub use crate::host::Host;
pub use crate::stream::{CallContext, Cancelled};

/// The SDK version compiled into every plugin's descriptor.
pub const SDK_VERSION: &str = env!("CARGO_PKG_VERSION");

/// One degradation level as the plugin declares it. Level 0 is "full"; each further level is
/// cheaper.
#[derive(Clone, Copy, Debug)]
pub struct LevelInfo {
    /// A short name, e.g. "full" or "small-model".
    pub name: &'static str,
    /// Memory needed at least, in bytes.
    pub memory_min_bytes: u64,
    /// Memory wanted, in bytes.
    pub memory_preferred_bytes: u64,
    /// GPU memory used, in bytes.
    pub gpu_memory_bytes: u64,
}

impl LevelInfo {
    /// A level that needs and wants `memory_bytes` and no GPU memory.
    pub const fn new(name: &'static str, memory_bytes: u64) -> Self {
        LevelInfo {
            name,
            memory_min_bytes: memory_bytes,
            memory_preferred_bytes: memory_bytes,
            gpu_memory_bytes: 0,
        }
    }
}

/// What a plugin declares about itself; becomes the ABI descriptor.
#[derive(Clone, Copy, Debug)]
pub struct PluginInfo {
    /// Unique name, e.g. "voice".
    pub name: &'static str,
    /// The plugin's version, usually `env!("CARGO_PKG_VERSION")`.
    pub version: &'static str,
    /// Degradation levels, level 0 ("full") first; at least one.
    pub levels: &'static [LevelInfo],
    /// Share of one CPU core used at full level, e.g. 0.25.
    pub cpu_share: f64,
    /// Whether the plugin uses a GPU.
    pub needs_gpu: bool,
}

/// What `create` is given.
pub struct CreateContext<'a> {
    pub(crate) host: Host,
    pub(crate) config_json: &'a str,
    pub(crate) checkpoint: &'a [u8],
    pub(crate) level: u32,
}

impl CreateContext<'_> {
    /// The host's functions (log, clock, metrics, state reports). Keep a clone if you need it later.
    pub fn host(&self) -> &Host {
        &self.host
    }

    /// The plugin's config table from the ballast config, as JSON (`{}` when none was given).
    pub fn config_json(&self) -> &str {
        self.config_json
    }

    /// The state blob the last instance returned from [`Plugin::checkpoint`], or empty.
    pub fn checkpoint(&self) -> &[u8] {
        self.checkpoint
    }

    /// The level the instance starts at (the host calls `set_level` after `create` when it is not
    /// 0; this is informational).
    pub fn level(&self) -> u32 {
        self.level
    }
}

/// How a plugin reports its health.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Health {
    /// Working normally.
    Healthy,
    /// Working, with reduced service; the message says how.
    Degraded(String),
    /// Not working; the message says why.
    Unhealthy(String),
}

/// The kind of a [`PluginError`], mapped to an ABI status code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// A general failure.
    Failed,
    /// The function or argument is not supported (e.g. an unknown level).
    Unsupported,
    /// An argument (e.g. a request) is invalid.
    InvalidArgument,
    /// The call was cancelled and the plugin stopped (see [`Cancelled`]).
    Cancelled,
}

/// An error a plugin returns; its message reaches the host's log and the caller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PluginError {
    kind: ErrorKind,
    message: String,
}

impl PluginError {
    /// A general failure with `message`.
    pub fn new(message: impl Into<String>) -> Self {
        PluginError {
            kind: ErrorKind::Failed,
            message: message.into(),
        }
    }

    /// An unsupported function or argument.
    pub fn unsupported(message: impl Into<String>) -> Self {
        PluginError {
            kind: ErrorKind::Unsupported,
            message: message.into(),
        }
    }

    /// An invalid argument.
    pub fn invalid(message: impl Into<String>) -> Self {
        PluginError {
            kind: ErrorKind::InvalidArgument,
            message: message.into(),
        }
    }

    /// The plugin stopped because its call was cancelled, with `message` saying where.
    pub fn cancelled(message: impl Into<String>) -> Self {
        PluginError {
            kind: ErrorKind::Cancelled,
            message: message.into(),
        }
    }

    /// The kind.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The message.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for PluginError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for PluginError {}

impl From<Cancelled> for PluginError {
    fn from(cancelled: Cancelled) -> Self {
        PluginError::cancelled(cancelled.to_string())
    }
}

/// An integration ballast can host. Implement it and call [`export_plugin!`].
///
/// Lifecycle methods take `&mut self` and are never run concurrently with anything else;
/// [`Plugin::call`], [`Plugin::call_stream`], [`Plugin::health`] and [`Plugin::threads`] take
/// `&self` and may run on several host threads at once. A panic in any method is caught and reported to the host, which marks the
/// plugin failed.
pub trait Plugin: Send + Sync + Sized + 'static {
    /// Name, version, levels and resource needs.
    const INFO: PluginInfo;

    /// Build an instance from its config and the last checkpoint.
    fn create(ctx: CreateContext<'_>) -> Result<Self, PluginError>;

    /// Start work (threads, connections). Called once after `create`.
    fn start(&mut self) -> Result<(), PluginError> {
        Ok(())
    }

    /// Switch to `level` (0 = full). The SDK rejects levels beyond [`PluginInfo::levels`] before
    /// calling this.
    fn set_level(&mut self, level: u32) -> Result<(), PluginError> {
        let _ = level;
        Ok(())
    }

    /// Stop taking new work and finish in-flight work within `deadline`.
    fn drain(&mut self, deadline: std::time::Duration) -> Result<(), PluginError> {
        let _ = deadline;
        Ok(())
    }

    /// Stop all work: join threads, close connections.
    fn stop(&mut self) -> Result<(), PluginError> {
        Ok(())
    }

    /// Answer one request.
    fn call(&self, request: &[u8]) -> Result<Vec<u8>, PluginError>;

    /// Answer one request in pieces: hand each chunk to [`CallContext::send`] as soon as it is
    /// ready, and return the last piece (may be empty). Once the call is cancelled `send` fails
    /// with [`Cancelled`]; stop and return it (`?` does). The default answers with
    /// [`Plugin::call`]'s whole answer as the last piece.
    fn call_stream(
        &self,
        request: &[u8],
        ctx: &mut CallContext<'_>,
    ) -> Result<Vec<u8>, PluginError> {
        let _ = ctx;
        self.call(request)
    }

    /// Report health.
    fn health(&self) -> Health {
        Health::Healthy
    }

    /// Threads the plugin runs (reported in its stats).
    fn threads(&self) -> u32 {
        0
    }

    /// State to hand to the next `create` after a shed or a restart, or `None`.
    fn checkpoint(&self) -> Result<Option<Vec<u8>>, PluginError> {
        Ok(None)
    }
}

/// Exports a [`Plugin`] implementation as a ballast plugin: the entry symbol, the descriptor, the
/// panic guards and a counting global allocator.
///
/// Use it once per `cdylib`: `export_plugin!(MyPlugin);`. To keep your own global allocator, write
/// `export_plugin!(MyPlugin, allocator = false);` (the stats then report no allocator figures).
#[macro_export]
macro_rules! export_plugin {
    ($plugin:ty) => {
        #[global_allocator]
        static BALLAST_SDK_ALLOCATOR: $crate::CountingAllocator = $crate::CountingAllocator;
        $crate::export_plugin!(@entry $plugin, true);
    };
    ($plugin:ty, allocator = false) => {
        $crate::export_plugin!(@entry $plugin, false);
    };
    (@entry $plugin:ty, $counting:expr) => {
        #[cfg(panic = "abort")]
        ::core::compile_error!(
            "a ballast plugin cannot be built with `panic = \"abort\"`: its panics would abort the \
             ballast daemon that loads it, instead of being caught and reported as errors; remove \
             `panic = \"abort\"` from the profile in Cargo.toml (or `-C panic=abort` from RUSTFLAGS)"
        );
        /// The ballast plugin entry point (ABI major 1).
        ///
        /// # Safety
        ///
        /// Called by the ballast host only; returns a pointer to static data.
        #[unsafe(no_mangle)]
        pub unsafe extern "C" fn ballast_plugin_entry_v1() -> *const $crate::abi::BallastPluginDescriptor {
            static DESCRIPTOR: ::std::sync::OnceLock<$crate::export::Descriptor> = ::std::sync::OnceLock::new();
            match ::std::panic::catch_unwind(|| {
                DESCRIPTOR
                    .get_or_init(|| $crate::export::Descriptor::new::<$plugin>($counting))
                    .as_ptr()
            }) {
                Ok(ptr) => ptr,
                Err(_) => ::std::ptr::null(),
            }
        }
    };
}
