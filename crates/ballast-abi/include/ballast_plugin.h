/*
 * ballast_plugin.h: the stable C ABI between ballast and its plugins.
 *
 * Generated from crates/ballast-abi by `cargo xtask header`; do not edit by hand.
 * A plugin exports one function:
 *
 *     const BallastPluginDescriptor *ballast_plugin_entry_v1(void);
 *
 * Compatibility rules, ownership and threading are documented in crates/ballast-abi/src/lib.rs.
 */

#ifndef BALLAST_PLUGIN_H
#define BALLAST_PLUGIN_H

#include <stddef.h>
#include <stdint.h>

// The ABI major version this crate describes. Part of the entry symbol's name.
#define BALLAST_ABI_MAJOR 1

// The ABI minor version this crate describes. Grows append-only.
#define BALLAST_ABI_MINOR 0

// The first field of every descriptor: the ASCII bytes `BALLAST!` read as a little-endian u64.
#define BALLAST_PLUGIN_MAGIC 2401636041213362498

// Capability: `call`, `health` and `stats` may be called from several threads at once.
#define BALLAST_CAP_THREAD_SAFE_CALLS (1 << 0)

// Capability: `checkpoint` is implemented and state survives a destroy/create cycle.
#define BALLAST_CAP_CHECKPOINT (1 << 1)

// Capability: `drain` finishes in-flight work before returning (otherwise it only stops intake).
#define BALLAST_CAP_DRAIN (1 << 2)

// Capability: `stats` reports allocator figures (live/peak bytes, allocations).
#define BALLAST_CAP_ALLOC_STATS (1 << 3)

// Log level: error.
#define BALLAST_LOG_ERROR 1

// Log level: warning.
#define BALLAST_LOG_WARN 2

// Log level: information.
#define BALLAST_LOG_INFO 3

// Log level: debug.
#define BALLAST_LOG_DEBUG 4

// Log level: trace.
#define BALLAST_LOG_TRACE 5

// The most levels a plugin may declare.
#define BALLAST_MAX_LEVELS 16

// A status code returned by every plugin function.
typedef int32_t BallastStatus;

// A borrowed UTF-8 string: pointer and length, not NUL-terminated.
//
// In a descriptor it points to static data. Passed as an argument it is valid only during the
// call.
typedef struct {
  // First byte (may be null when `len` is 0).
  const uint8_t *ptr;
  // Length in bytes.
  size_t len;
} BallastStr;

// The part of the descriptor that every ABI major keeps at the same place.
typedef struct {
  // [`BALLAST_PLUGIN_MAGIC`].
  uint64_t magic;
  // The ABI major the plugin was built for.
  uint32_t abi_major;
  // The ABI minor the plugin was built for.
  uint32_t abi_minor;
  // Size of the whole descriptor as the plugin built it.
  uint32_t struct_size;
  // Reserved, zero.
  uint32_t reserved;
  // The plugin's name, e.g. "voice".
  BallastStr name;
} BallastDescriptorHeader;

// What a plugin needs at one degradation level. Level 0 is "full"; higher levels are cheaper.
typedef struct {
  // A short name for the level, e.g. "full", "small-model".
  BallastStr name;
  // Memory it needs at least, in bytes.
  uint64_t memory_min_bytes;
  // Memory it would like, in bytes.
  uint64_t memory_preferred_bytes;
  // GPU memory it uses, in bytes (0 if none).
  uint64_t gpu_memory_bytes;
} BallastLevelHints;

// What a plugin declares about its resource use.
typedef struct {
  // Share of one CPU core it uses at full level, in thousandths (250 = a quarter core).
  uint32_t cpu_share_millis;
  // 1 if the plugin uses a GPU at all, else 0.
  uint32_t needs_gpu;
  // Number of degradation levels, at least 1 (level 0, "full").
  uint32_t n_levels;
  // Reserved, zero.
  uint32_t reserved;
  // `n_levels` entries, level 0 first.
  const BallastLevelHints *levels;
} BallastResourceHints;

// Functions the host gives a plugin at `create`. Valid until the host process exits.
//
// Every function is thread-safe and may be called from any thread the plugin owns.
typedef struct {
  // Size of this struct as the host built it; a plugin reads only fields within it.
  uint32_t struct_size;
  // The host's ABI minor version.
  uint32_t abi_minor;
  // Opaque host data, passed back as the first argument of every function.
  void *host_data;
  // Write a log record (level is one of the `BALLAST_LOG_*` constants).
  void (*log)(void *host_data, uint32_t level, BallastStr target, BallastStr message);
  // The host's clock, in milliseconds since the Unix epoch.
  uint64_t (*now_ms)(void *host_data);
  // Record a gauge value under `name` for this plugin.
  void (*emit_metric)(void *host_data, BallastStr name, double value);
  // Report that the plugin's own state changed (`healthy` is 1 or 0), e.g. it lost its
  // connection; the host records it and may mark the plugin failed.
  void (*report_state)(void *host_data, uint32_t healthy, BallastStr message);
} BallastHostApi;

// Borrowed bytes: pointer and length, valid only during the call they are passed to.
typedef struct {
  // First byte (may be null when `len` is 0).
  const uint8_t *ptr;
  // Length in bytes.
  size_t len;
} BallastBytes;

// A caller-provided buffer for an error (or health) message.
//
// The callee writes at most `cap` bytes of UTF-8 to `ptr` and sets `len`; a longer message is
// truncated (at a character boundary by the SDK).
typedef struct {
  // Where to write.
  uint8_t *ptr;
  // How many bytes fit.
  size_t cap;
  // How many bytes were written.
  size_t len;
} BallastMessageBuf;

// Bytes owned by the plugin (a call's response, a checkpoint), handed to the host and given back
// through [`BallastPluginVTable::free_buffer`]. `owner` is the plugin's own bookkeeping (e.g. the
// allocation's capacity); the host never reads it.
typedef struct {
  // First byte (null for an empty buffer).
  uint8_t *ptr;
  // Length in bytes.
  size_t len;
  // Plugin-private data needed to free the buffer.
  size_t owner;
} BallastBuffer;

// Live figures of a plugin instance, filled by [`BallastPluginVTable::stats`].
typedef struct {
  // Size of this struct as the host allocated it; the plugin writes only fields within it.
  uint32_t struct_size;
  // Threads the plugin runs.
  uint32_t threads;
  // Bytes allocated and not yet freed.
  uint64_t live_bytes;
  // Highest `live_bytes` seen since load.
  uint64_t peak_bytes;
  // Allocations since load.
  uint64_t allocations;
} BallastStats;

// The functions a plugin implements. Instance pointers are created by `create` and owned by the
// host until `destroy`.
//
// Every function returns a [`BallastStatus`]; on failure the plugin writes a message into `err`.
typedef struct {
  // Size of this struct as the plugin built it.
  uint32_t struct_size;
  // Reserved, zero.
  uint32_t reserved;
  // Create an instance from its config (UTF-8 JSON) and the last checkpoint (empty if none).
  BallastStatus (*create)(const BallastHostApi *host,
                          BallastBytes config_json,
                          BallastBytes checkpoint,
                          void **out_instance,
                          BallastMessageBuf *err);
  // Start work (threads, connections).
  BallastStatus (*start)(void *instance, BallastMessageBuf *err);
  // Switch to degradation level `level` (0 = full).
  BallastStatus (*set_level)(void *instance, uint32_t level, BallastMessageBuf *err);
  // Stop taking new work and finish in-flight work within `deadline_ms`.
  BallastStatus (*drain)(void *instance, uint64_t deadline_ms, BallastMessageBuf *err);
  // Stop all work (threads joined, connections closed).
  BallastStatus (*stop)(void *instance, BallastMessageBuf *err);
  // Free the instance. The pointer is not used afterwards.
  BallastStatus (*destroy)(void *instance, BallastMessageBuf *err);
  // Answer a request. On success `response` holds plugin-owned bytes for `free_buffer`.
  BallastStatus (*call)(void *instance,
                        BallastBytes request,
                        BallastBuffer *response,
                        BallastMessageBuf *err);
  // Give back a buffer this plugin handed out.
  void (*free_buffer)(BallastBuffer buffer);
  // Report health: OK, DEGRADED or ERROR, with a message in `message`.
  BallastStatus (*health)(void *instance, BallastMessageBuf *message);
  // Fill `stats` (only within `stats.struct_size`).
  BallastStatus (*stats)(void *instance, BallastStats *stats);
  // Optional (may be null): serialize state for the next `create`.
  BallastStatus (*checkpoint)(void *instance, BallastBuffer *out, BallastMessageBuf *err);
} BallastPluginVTable;

// What a plugin's entry symbol returns: identity, needs and functions. Static, never freed.
typedef struct {
  // Magic, versions, size and name; the same layout in every major.
  BallastDescriptorHeader header;
  // The plugin's version, e.g. "1.2.0".
  BallastStr version;
  // The SDK (or header) version it was built with.
  BallastStr sdk_version;
  // `BALLAST_CAP_*` bits.
  uint64_t capabilities;
  // Declared resource needs.
  BallastResourceHints hints;
  // The functions.
  const BallastPluginVTable *vtable;
} BallastPluginDescriptor;

// Success.
#define BALLAST_STATUS_OK 0

// The function failed; the error buffer holds a message.
#define BALLAST_STATUS_ERROR 1

// The plugin panicked (or hit a C++ exception) and caught it; the error buffer holds the message.
#define BALLAST_STATUS_PANIC 2

// The plugin does not support this function or argument (e.g. an unknown level).
#define BALLAST_STATUS_UNSUPPORTED 3

// An argument was invalid (e.g. a request the plugin cannot parse).
#define BALLAST_STATUS_INVALID_ARGUMENT 4

// The plugin is healthy but degraded (used by `health`).
#define BALLAST_STATUS_DEGRADED 5

// The call was cancelled before it finished: its caller went away, its deadline passed, or the
// plugin was shed with the call still running.
#define BALLAST_STATUS_CANCELLED 6

#endif  /* BALLAST_PLUGIN_H */

#ifdef __cplusplus
extern "C" {
#endif

/* The symbol every ABI 1.x plugin exports; returns a pointer to a static descriptor. */
const BallastPluginDescriptor *ballast_plugin_entry_v1(void);

#ifdef __cplusplus
}
#endif
