//! The stable C ABI between ballast and its plugins: `#[repr(C)]` types and `extern "C"` function
//! pointers, nothing else.
//!
//! A plugin is a shared library that exports one function, [`BALLAST_ENTRY_SYMBOL`]
//! (`ballast_plugin_entry_v1`), returning a pointer to a static [`BallastPluginDescriptor`]. The
//! descriptor says who the plugin is, what it needs, and carries a [`BallastPluginVTable`] of
//! functions the host calls. Rust plugin authors use `ballast-sdk` instead of this crate; C
//! authors use the generated header `include/ballast_plugin.h`.
//!
//! # Compatibility rules
//!
//! * **Major version** ([`BALLAST_ABI_MAJOR`]): part of the entry symbol's name. A host refuses a
//!   plugin of another major, and says which major the plugin was built for.
//! * **Minor version** ([`BALLAST_ABI_MINOR`]): grows append-only. A newer minor may add fields at
//!   the *end* of a struct, never change or remove one. Every growable struct starts with its own
//!   `struct_size`; each side reads only within the size the other side declared, and treats a
//!   field beyond it as absent. So a plugin built for 1.0 loads in a 1.3 host, and a 1.3 plugin
//!   loads in a 1.0 host, which simply does not see the newer fields.
//! * **The header is frozen across majors**: [`BallastDescriptorHeader`] (magic, major, minor,
//!   struct size, name) is the first part of every descriptor of every major, so a host can always
//!   name a plugin and the ABI it was built for before refusing it.
//! * **Memory is freed on the side that allocated it.** A response or checkpoint buffer the plugin
//!   hands out is given back through its [`BallastPluginVTable::free_buffer`]; strings the host
//!   passes in are borrowed for the duration of the call only.
//! * **No unwinding across the boundary.** Every function must return a [`BallastStatus`]; a
//!   plugin catches its own panics (the SDK does this for you) and reports
//!   [`BALLAST_STATUS_PANIC`].
//! * **Threads**: the host may call `call`, `health` and `stats` from several threads at once only
//!   if the plugin sets [`BALLAST_CAP_THREAD_SAFE_CALLS`]; otherwise it serializes them. Lifecycle
//!   functions (`create` .. `destroy`) are never called concurrently with anything else on the
//!   same instance.
//! * The library is never unloaded: disabling destroys the instance, and re-enabling calls
//!   `create` again on the still-mapped library.

#![no_std]
#![deny(missing_docs)]

use core::ffi::c_void;

/// The ABI major version this crate describes. Part of the entry symbol's name.
pub const BALLAST_ABI_MAJOR: u32 = 1;

/// The ABI minor version this crate describes. Grows append-only.
pub const BALLAST_ABI_MINOR: u32 = 0;

/// The first field of every descriptor: the ASCII bytes `BALLAST!` read as a little-endian u64.
pub const BALLAST_PLUGIN_MAGIC: u64 = 0x2154_5341_4C4C_4142;

/// The name of the symbol a plugin exports, of type [`BallastEntryFn`].
pub const BALLAST_ENTRY_SYMBOL: &str = "ballast_plugin_entry_v1";

/// The same name, NUL-terminated, for `dlsym`.
pub const BALLAST_ENTRY_SYMBOL_NUL: &[u8] = b"ballast_plugin_entry_v1\0";

/// The type of the exported entry symbol: returns the plugin's static descriptor (never null).
pub type BallastEntryFn = unsafe extern "C" fn() -> *const BallastPluginDescriptor;

/// A status code returned by every plugin function.
pub type BallastStatus = i32;

/// Success.
pub const BALLAST_STATUS_OK: BallastStatus = 0;
/// The function failed; the error buffer holds a message.
pub const BALLAST_STATUS_ERROR: BallastStatus = 1;
/// The plugin panicked (or hit a C++ exception) and caught it; the error buffer holds the message.
pub const BALLAST_STATUS_PANIC: BallastStatus = 2;
/// The plugin does not support this function or argument (e.g. an unknown level).
pub const BALLAST_STATUS_UNSUPPORTED: BallastStatus = 3;
/// An argument was invalid (e.g. a request the plugin cannot parse).
pub const BALLAST_STATUS_INVALID_ARGUMENT: BallastStatus = 4;
/// The plugin is healthy but degraded (used by `health`).
pub const BALLAST_STATUS_DEGRADED: BallastStatus = 5;
/// The call was cancelled before it finished: its caller went away, its deadline passed, or the
/// plugin was shed with the call still running.
pub const BALLAST_STATUS_CANCELLED: BallastStatus = 6;

/// Capability: `call`, `health` and `stats` may be called from several threads at once.
pub const BALLAST_CAP_THREAD_SAFE_CALLS: u64 = 1 << 0;
/// Capability: `checkpoint` is implemented and state survives a destroy/create cycle.
pub const BALLAST_CAP_CHECKPOINT: u64 = 1 << 1;
/// Capability: `drain` finishes in-flight work before returning (otherwise it only stops intake).
pub const BALLAST_CAP_DRAIN: u64 = 1 << 2;
/// Capability: `stats` reports allocator figures (live/peak bytes, allocations).
pub const BALLAST_CAP_ALLOC_STATS: u64 = 1 << 3;

/// Log level: error.
pub const BALLAST_LOG_ERROR: u32 = 1;
/// Log level: warning.
pub const BALLAST_LOG_WARN: u32 = 2;
/// Log level: information.
pub const BALLAST_LOG_INFO: u32 = 3;
/// Log level: debug.
pub const BALLAST_LOG_DEBUG: u32 = 4;
/// Log level: trace.
pub const BALLAST_LOG_TRACE: u32 = 5;

/// A borrowed UTF-8 string: pointer and length, not NUL-terminated.
///
/// In a descriptor it points to static data. Passed as an argument it is valid only during the
/// call.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct BallastStr {
    /// First byte (may be null when `len` is 0).
    pub ptr: *const u8,
    /// Length in bytes.
    pub len: usize,
}

impl BallastStr {
    /// A view of a static string, usable in constants.
    pub const fn from_static(s: &'static str) -> Self {
        BallastStr {
            ptr: s.as_ptr(),
            len: s.len(),
        }
    }

    /// A view of a borrowed string, valid as long as `s`.
    pub fn new(s: &str) -> Self {
        BallastStr {
            ptr: s.as_ptr(),
            len: s.len(),
        }
    }

    /// The empty string.
    pub const EMPTY: BallastStr = BallastStr {
        ptr: core::ptr::null(),
        len: 0,
    };
}

/// Borrowed bytes: pointer and length, valid only during the call they are passed to.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct BallastBytes {
    /// First byte (may be null when `len` is 0).
    pub ptr: *const u8,
    /// Length in bytes.
    pub len: usize,
}

impl BallastBytes {
    /// A view of `bytes`, valid as long as `bytes`.
    pub fn new(bytes: &[u8]) -> Self {
        BallastBytes {
            ptr: bytes.as_ptr(),
            len: bytes.len(),
        }
    }

    /// No bytes.
    pub const EMPTY: BallastBytes = BallastBytes {
        ptr: core::ptr::null(),
        len: 0,
    };
}

/// Bytes owned by the plugin (a call's response, a checkpoint), handed to the host and given back
/// through [`BallastPluginVTable::free_buffer`]. `owner` is the plugin's own bookkeeping (e.g. the
/// allocation's capacity); the host never reads it.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct BallastBuffer {
    /// First byte (null for an empty buffer).
    pub ptr: *mut u8,
    /// Length in bytes.
    pub len: usize,
    /// Plugin-private data needed to free the buffer.
    pub owner: usize,
}

impl BallastBuffer {
    /// An empty buffer, which needs no freeing.
    pub const EMPTY: BallastBuffer = BallastBuffer {
        ptr: core::ptr::null_mut(),
        len: 0,
        owner: 0,
    };
}

/// A caller-provided buffer for an error (or health) message.
///
/// The callee writes at most `cap` bytes of UTF-8 to `ptr` and sets `len`; a longer message is
/// truncated (at a character boundary by the SDK).
#[repr(C)]
#[derive(Debug)]
pub struct BallastMessageBuf {
    /// Where to write.
    pub ptr: *mut u8,
    /// How many bytes fit.
    pub cap: usize,
    /// How many bytes were written.
    pub len: usize,
}

/// What a plugin needs at one degradation level. Level 0 is "full"; higher levels are cheaper.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct BallastLevelHints {
    /// A short name for the level, e.g. "full", "small-model".
    pub name: BallastStr,
    /// Memory it needs at least, in bytes.
    pub memory_min_bytes: u64,
    /// Memory it would like, in bytes.
    pub memory_preferred_bytes: u64,
    /// GPU memory it uses, in bytes (0 if none).
    pub gpu_memory_bytes: u64,
}

/// What a plugin declares about its resource use.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct BallastResourceHints {
    /// Share of one CPU core it uses at full level, in thousandths (250 = a quarter core).
    pub cpu_share_millis: u32,
    /// 1 if the plugin uses a GPU at all, else 0.
    pub needs_gpu: u32,
    /// Number of degradation levels, at least 1 (level 0, "full").
    pub n_levels: u32,
    /// Reserved, zero.
    pub reserved: u32,
    /// `n_levels` entries, level 0 first.
    pub levels: *const BallastLevelHints,
}

/// Live figures of a plugin instance, filled by [`BallastPluginVTable::stats`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct BallastStats {
    /// Size of this struct as the host allocated it; the plugin writes only fields within it.
    pub struct_size: u32,
    /// Threads the plugin runs.
    pub threads: u32,
    /// Bytes allocated and not yet freed.
    pub live_bytes: u64,
    /// Highest `live_bytes` seen since load.
    pub peak_bytes: u64,
    /// Allocations since load.
    pub allocations: u64,
}

/// Functions the host gives a plugin at `create`. Valid until the host process exits.
///
/// Every function is thread-safe and may be called from any thread the plugin owns.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct BallastHostApi {
    /// Size of this struct as the host built it; a plugin reads only fields within it.
    pub struct_size: u32,
    /// The host's ABI minor version.
    pub abi_minor: u32,
    /// Opaque host data, passed back as the first argument of every function.
    pub host_data: *mut c_void,
    /// Write a log record (level is one of the `BALLAST_LOG_*` constants).
    pub log: unsafe extern "C" fn(
        host_data: *mut c_void,
        level: u32,
        target: BallastStr,
        message: BallastStr,
    ),
    /// The host's clock, in milliseconds since the Unix epoch.
    pub now_ms: unsafe extern "C" fn(host_data: *mut c_void) -> u64,
    /// Record a gauge value under `name` for this plugin.
    pub emit_metric: unsafe extern "C" fn(host_data: *mut c_void, name: BallastStr, value: f64),
    /// Report that the plugin's own state changed (`healthy` is 1 or 0), e.g. it lost its
    /// connection; the host records it and may mark the plugin failed.
    pub report_state:
        unsafe extern "C" fn(host_data: *mut c_void, healthy: u32, message: BallastStr),
}

/// The functions a plugin implements. Instance pointers are created by `create` and owned by the
/// host until `destroy`.
///
/// Every function returns a [`BallastStatus`]; on failure the plugin writes a message into `err`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct BallastPluginVTable {
    /// Size of this struct as the plugin built it.
    pub struct_size: u32,
    /// Reserved, zero.
    pub reserved: u32,
    /// Create an instance from its config (UTF-8 JSON) and the last checkpoint (empty if none).
    pub create: Option<
        unsafe extern "C" fn(
            host: *const BallastHostApi,
            config_json: BallastBytes,
            checkpoint: BallastBytes,
            out_instance: *mut *mut c_void,
            err: *mut BallastMessageBuf,
        ) -> BallastStatus,
    >,
    /// Start work (threads, connections).
    pub start: Option<
        unsafe extern "C" fn(instance: *mut c_void, err: *mut BallastMessageBuf) -> BallastStatus,
    >,
    /// Switch to degradation level `level` (0 = full).
    pub set_level: Option<
        unsafe extern "C" fn(
            instance: *mut c_void,
            level: u32,
            err: *mut BallastMessageBuf,
        ) -> BallastStatus,
    >,
    /// Stop taking new work and finish in-flight work within `deadline_ms`.
    pub drain: Option<
        unsafe extern "C" fn(
            instance: *mut c_void,
            deadline_ms: u64,
            err: *mut BallastMessageBuf,
        ) -> BallastStatus,
    >,
    /// Stop all work (threads joined, connections closed).
    pub stop: Option<
        unsafe extern "C" fn(instance: *mut c_void, err: *mut BallastMessageBuf) -> BallastStatus,
    >,
    /// Free the instance. The pointer is not used afterwards.
    pub destroy: Option<
        unsafe extern "C" fn(instance: *mut c_void, err: *mut BallastMessageBuf) -> BallastStatus,
    >,
    /// Answer a request. On success `response` holds plugin-owned bytes for `free_buffer`.
    pub call: Option<
        unsafe extern "C" fn(
            instance: *mut c_void,
            request: BallastBytes,
            response: *mut BallastBuffer,
            err: *mut BallastMessageBuf,
        ) -> BallastStatus,
    >,
    /// Give back a buffer this plugin handed out.
    pub free_buffer: Option<unsafe extern "C" fn(buffer: BallastBuffer)>,
    /// Report health: OK, DEGRADED or ERROR, with a message in `message`.
    pub health: Option<
        unsafe extern "C" fn(
            instance: *mut c_void,
            message: *mut BallastMessageBuf,
        ) -> BallastStatus,
    >,
    /// Fill `stats` (only within `stats.struct_size`).
    pub stats: Option<
        unsafe extern "C" fn(instance: *mut c_void, stats: *mut BallastStats) -> BallastStatus,
    >,
    /// Optional (may be null): serialize state for the next `create`.
    pub checkpoint: Option<
        unsafe extern "C" fn(
            instance: *mut c_void,
            out: *mut BallastBuffer,
            err: *mut BallastMessageBuf,
        ) -> BallastStatus,
    >,
}

/// The part of the descriptor that every ABI major keeps at the same place.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct BallastDescriptorHeader {
    /// [`BALLAST_PLUGIN_MAGIC`].
    pub magic: u64,
    /// The ABI major the plugin was built for.
    pub abi_major: u32,
    /// The ABI minor the plugin was built for.
    pub abi_minor: u32,
    /// Size of the whole descriptor as the plugin built it.
    pub struct_size: u32,
    /// Reserved, zero.
    pub reserved: u32,
    /// The plugin's name, e.g. "voice".
    pub name: BallastStr,
}

/// What a plugin's entry symbol returns: identity, needs and functions. Static, never freed.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct BallastPluginDescriptor {
    /// Magic, versions, size and name; the same layout in every major.
    pub header: BallastDescriptorHeader,
    /// The plugin's version, e.g. "1.2.0".
    pub version: BallastStr,
    /// The SDK (or header) version it was built with.
    pub sdk_version: BallastStr,
    /// `BALLAST_CAP_*` bits.
    pub capabilities: u64,
    /// Declared resource needs.
    pub hints: BallastResourceHints,
    /// The functions.
    pub vtable: *const BallastPluginVTable,
}

/// The smallest descriptor a 1.x host accepts (the 1.0 layout).
pub const BALLAST_DESCRIPTOR_MIN_SIZE: usize = core::mem::size_of::<BallastPluginDescriptor>();

/// The smallest vtable a 1.x host accepts (the 1.0 layout).
pub const BALLAST_VTABLE_MIN_SIZE: usize = core::mem::size_of::<BallastPluginVTable>();

/// The most levels a plugin may declare.
pub const BALLAST_MAX_LEVELS: u32 = 16;

// SAFETY: a descriptor and its vtable are immutable static data; the raw pointers inside point to
// static strings and functions, so sharing them between threads is sound.
unsafe impl Sync for BallastPluginDescriptor {}
// SAFETY: as above, the vtable holds only function pointers and its size.
unsafe impl Sync for BallastPluginVTable {}
// SAFETY: level hints point to static strings.
unsafe impl Sync for BallastLevelHints {}

#[cfg(test)]
mod tests {
    use core::mem::{align_of, offset_of, size_of};

    use super::*;

    // These layouts are the ABI. A failing assert here means a plugin built against an earlier
    // version of this crate would be misread: append fields instead of changing existing ones.
    #[test]
    fn layouts_are_frozen_on_64_bit() {
        assert_eq!(size_of::<BallastStr>(), 16);
        assert_eq!(size_of::<BallastBytes>(), 16);
        assert_eq!(size_of::<BallastBuffer>(), 24);
        assert_eq!(size_of::<BallastMessageBuf>(), 24);

        assert_eq!(size_of::<BallastLevelHints>(), 40);
        assert_eq!(offset_of!(BallastLevelHints, memory_min_bytes), 16);
        assert_eq!(offset_of!(BallastLevelHints, memory_preferred_bytes), 24);
        assert_eq!(offset_of!(BallastLevelHints, gpu_memory_bytes), 32);

        assert_eq!(size_of::<BallastResourceHints>(), 24);
        assert_eq!(offset_of!(BallastResourceHints, needs_gpu), 4);
        assert_eq!(offset_of!(BallastResourceHints, n_levels), 8);
        assert_eq!(offset_of!(BallastResourceHints, levels), 16);

        assert_eq!(size_of::<BallastStats>(), 32);
        assert_eq!(offset_of!(BallastStats, live_bytes), 8);
        assert_eq!(offset_of!(BallastStats, peak_bytes), 16);
        assert_eq!(offset_of!(BallastStats, allocations), 24);

        assert_eq!(size_of::<BallastHostApi>(), 48);
        assert_eq!(offset_of!(BallastHostApi, host_data), 8);
        assert_eq!(offset_of!(BallastHostApi, log), 16);
        assert_eq!(offset_of!(BallastHostApi, now_ms), 24);
        assert_eq!(offset_of!(BallastHostApi, emit_metric), 32);
        assert_eq!(offset_of!(BallastHostApi, report_state), 40);

        assert_eq!(size_of::<BallastPluginVTable>(), 96);
        assert_eq!(offset_of!(BallastPluginVTable, create), 8);
        assert_eq!(offset_of!(BallastPluginVTable, start), 16);
        assert_eq!(offset_of!(BallastPluginVTable, set_level), 24);
        assert_eq!(offset_of!(BallastPluginVTable, drain), 32);
        assert_eq!(offset_of!(BallastPluginVTable, stop), 40);
        assert_eq!(offset_of!(BallastPluginVTable, destroy), 48);
        assert_eq!(offset_of!(BallastPluginVTable, call), 56);
        assert_eq!(offset_of!(BallastPluginVTable, free_buffer), 64);
        assert_eq!(offset_of!(BallastPluginVTable, health), 72);
        assert_eq!(offset_of!(BallastPluginVTable, stats), 80);
        assert_eq!(offset_of!(BallastPluginVTable, checkpoint), 88);

        assert_eq!(size_of::<BallastDescriptorHeader>(), 40);
        assert_eq!(offset_of!(BallastDescriptorHeader, abi_major), 8);
        assert_eq!(offset_of!(BallastDescriptorHeader, abi_minor), 12);
        assert_eq!(offset_of!(BallastDescriptorHeader, struct_size), 16);
        assert_eq!(offset_of!(BallastDescriptorHeader, name), 24);

        assert_eq!(size_of::<BallastPluginDescriptor>(), 112);
        assert_eq!(offset_of!(BallastPluginDescriptor, version), 40);
        assert_eq!(offset_of!(BallastPluginDescriptor, sdk_version), 56);
        assert_eq!(offset_of!(BallastPluginDescriptor, capabilities), 72);
        assert_eq!(offset_of!(BallastPluginDescriptor, hints), 80);
        assert_eq!(offset_of!(BallastPluginDescriptor, vtable), 104);
        assert_eq!(align_of::<BallastPluginDescriptor>(), 8);
    }

    #[test]
    fn magic_spells_ballast() {
        assert_eq!(&BALLAST_PLUGIN_MAGIC.to_le_bytes(), b"BALLAST!");
        assert_eq!(
            &BALLAST_ENTRY_SYMBOL_NUL[..BALLAST_ENTRY_SYMBOL.len()],
            BALLAST_ENTRY_SYMBOL.as_bytes()
        );
    }
}
