/*
 * {{name}}: a ballast plugin in C, built against ballast_plugin.h alone.
 *
 * It greets whoever calls it and counts its calls across sheds. What each part of the contract
 * looks like here:
 *
 * - Levels: level 0 ("full") keeps a 256 KiB cache, level 1 ("lite") 64 KiB. Each level declares
 *   the memory it needs (LEVELS below) and `stats` reports what the plugin holds, so the daemon
 *   can lower the level under pressure before it sheds the plugin.
 * - Calls may run on several threads at once (BALLAST_CAP_THREAD_SAFE_CALLS): the call counter
 *   is atomic and calls touch nothing else that changes. Lifecycle functions (create .. destroy,
 *   set_level, drain, checkpoint, stats) never run while anything else runs on the instance.
 * - Streamed calls: `count:N` sends N lines and stops as soon as the call is cancelled.
 * - Drain and checkpoint: before the daemon sheds the plugin it drains it, then asks for a
 *   checkpoint ("calls=N"), which the next instance gets in `create`.
 * - Nothing may unwind out of these functions: every one returns a status, with a message in
 *   `err` when it fails.
 *
 * The config (`config = { greeting = "hello" }` in ballast.toml) arrives as JSON; this plugin
 * reads the one string it needs without a JSON library, so a greeting with escapes is refused.
 */
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ballast_plugin.h"

#define PLUGIN_NAME "{{name}}"
#define PLUGIN_VERSION "0.1.0"
#define KIB 1024u
#define N_LEVELS 2
#define GREETING_MAX 64
#define MOST_LINES 100000ul

/* What each level keeps in memory. */
static const size_t CACHE_BYTES[N_LEVELS] = {256 * KIB, 64 * KIB};

typedef struct {
    const BallastHostApi *host;
    char greeting[GREETING_MAX + 1];
    unsigned char *cache;
    size_t cache_len;
    size_t peak_bytes;
    atomic_uint level;
    atomic_ullong calls;
} Instance;

static BallastStr str(const char *s) {
    BallastStr out = {(const uint8_t *)s, strlen(s)};
    return out;
}

static void say(BallastMessageBuf *buf, const char *message) {
    if (buf == NULL || buf->ptr == NULL) {
        return;
    }
    size_t n = strlen(message);
    if (n > buf->cap) {
        n = buf->cap;
    }
    memcpy(buf->ptr, message, n);
    buf->len = n;
}

static void log_info(const Instance *self, const char *message) {
    self->host->log(self->host->host_data, BALLAST_LOG_INFO, str(PLUGIN_NAME), str(message));
}

/* Replaces the cache with one of `bytes`, every page written so that it is really held. */
static int resize_cache(Instance *self, size_t bytes) {
    unsigned char *fresh = malloc(bytes);
    if (fresh == NULL) {
        return -1;
    }
    for (size_t i = 0; i < bytes; i += 4096) {
        fresh[i] = 1;
    }
    free(self->cache);
    self->cache = fresh;
    self->cache_len = bytes;
    size_t held = sizeof *self + bytes;
    if (held > self->peak_bytes) {
        self->peak_bytes = held;
    }
    return 0;
}

/* Reads "greeting": "..." from the config JSON into `out`; 0 on success or when absent. */
static int read_greeting(BallastBytes config, char out[GREETING_MAX + 1], BallastMessageBuf *err) {
    strcpy(out, "hello");
    if (config.ptr == NULL || config.len == 0) {
        return 0;
    }
    const char *json = (const char *)config.ptr;
    const char *end = json + config.len;
    static const char key[] = "\"greeting\"";
    const char *at = NULL;
    for (const char *p = json; p + sizeof key - 1 <= end; p++) {
        if (memcmp(p, key, sizeof key - 1) == 0) {
            at = p + sizeof key - 1;
            break;
        }
    }
    if (at == NULL) {
        return 0;
    }
    while (at < end && (*at == ' ' || *at == ':')) {
        at++;
    }
    if (at >= end || *at != '"') {
        say(err, PLUGIN_NAME ": config key `greeting` must be a string");
        return -1;
    }
    at++;
    size_t n = 0;
    while (at + n < end && at[n] != '"') {
        if (at[n] == '\\' || n == GREETING_MAX) {
            say(err, PLUGIN_NAME ": config key `greeting` must be at most 64 bytes, without escapes");
            return -1;
        }
        n++;
    }
    memcpy(out, at, n);
    out[n] = '\0';
    return 0;
}

/* Reads "calls=N" from a checkpoint; 0 for none or one it cannot read (it starts afresh). */
static unsigned long long read_checkpoint(BallastBytes checkpoint) {
    char text[32];
    if (checkpoint.ptr == NULL || checkpoint.len < 7 || checkpoint.len >= sizeof text) {
        return 0;
    }
    memcpy(text, checkpoint.ptr, checkpoint.len);
    text[checkpoint.len] = '\0';
    if (strncmp(text, "calls=", 6) != 0) {
        return 0;
    }
    char *rest = NULL;
    unsigned long long calls = strtoull(text + 6, &rest, 10);
    return *rest == '\0' ? calls : 0;
}

static BallastStatus plugin_create(const BallastHostApi *host, BallastBytes config, BallastBytes checkpoint,
                                   void **out_instance, BallastMessageBuf *err) {
    if (host == NULL || out_instance == NULL) {
        say(err, PLUGIN_NAME ": null host or out-pointer");
        return BALLAST_STATUS_INVALID_ARGUMENT;
    }
    Instance *self = calloc(1, sizeof *self);
    if (self == NULL) {
        say(err, PLUGIN_NAME ": out of memory");
        return BALLAST_STATUS_ERROR;
    }
    self->host = host;
    if (read_greeting(config, self->greeting, err) != 0) {
        free(self);
        return BALLAST_STATUS_INVALID_ARGUMENT;
    }
    if (resize_cache(self, CACHE_BYTES[0]) != 0) {
        free(self);
        say(err, PLUGIN_NAME ": cannot allocate the cache");
        return BALLAST_STATUS_ERROR;
    }
    atomic_store(&self->calls, read_checkpoint(checkpoint));
    char line[96];
    snprintf(line, sizeof line, PLUGIN_NAME ": created, %llu calls served before",
             (unsigned long long)atomic_load(&self->calls));
    log_info(self, line);
    *out_instance = self;
    return BALLAST_STATUS_OK;
}

static BallastStatus plugin_start(void *instance, BallastMessageBuf *err) {
    (void)instance;
    (void)err;
    return BALLAST_STATUS_OK; /* Start threads or open connections here; stop ends them. */
}

static BallastStatus plugin_set_level(void *instance, uint32_t level, BallastMessageBuf *err) {
    Instance *self = instance;
    if (level >= N_LEVELS) {
        say(err, PLUGIN_NAME ": levels are 0 (full) and 1 (lite)");
        return BALLAST_STATUS_UNSUPPORTED;
    }
    if (resize_cache(self, CACHE_BYTES[level]) != 0) {
        say(err, PLUGIN_NAME ": cannot allocate the cache");
        return BALLAST_STATUS_ERROR;
    }
    atomic_store(&self->level, level);
    return BALLAST_STATUS_OK;
}

static BallastStatus plugin_drain(void *instance, uint64_t deadline_ms, BallastMessageBuf *err) {
    (void)err;
    /* The daemon sends no call from here on and has waited for the calls in flight. Finish
     * background work (flush, close) within the deadline; this plugin has none. */
    char line[96];
    snprintf(line, sizeof line, PLUGIN_NAME ": draining within %llu ms", (unsigned long long)deadline_ms);
    log_info(instance, line);
    return BALLAST_STATUS_OK;
}

static BallastStatus plugin_stop(void *instance, BallastMessageBuf *err) {
    (void)instance;
    (void)err;
    return BALLAST_STATUS_OK;
}

static BallastStatus plugin_destroy(void *instance, BallastMessageBuf *err) {
    (void)err;
    Instance *self = instance;
    free(self->cache);
    free(self);
    return BALLAST_STATUS_OK;
}

/* Hands `text` to the host as a plugin-owned buffer (freed by plugin_free_buffer). */
static BallastStatus answer(const char *text, BallastBuffer *out, BallastMessageBuf *err) {
    size_t len = strlen(text);
    char *copy = malloc(len > 0 ? len : 1);
    if (copy == NULL) {
        say(err, PLUGIN_NAME ": out of memory");
        return BALLAST_STATUS_ERROR;
    }
    memcpy(copy, text, len);
    out->ptr = (uint8_t *)copy;
    out->len = len;
    out->owner = 1;
    return BALLAST_STATUS_OK;
}

static BallastStatus plugin_call(void *instance, BallastBytes request, BallastBuffer *response,
                                 BallastMessageBuf *err) {
    Instance *self = instance;
    if (response == NULL) {
        say(err, PLUGIN_NAME ": null response out-pointer");
        return BALLAST_STATUS_INVALID_ARGUMENT;
    }
    size_t len = request.ptr == NULL ? 0 : request.len;
    char caller[128];
    if (len >= sizeof caller) {
        say(err, PLUGIN_NAME ": the caller's name is longer than 127 bytes");
        return BALLAST_STATUS_INVALID_ARGUMENT;
    }
    if (len > 0) {
        memcpy(caller, request.ptr, len);
    }
    caller[len] = '\0';
    unsigned long long n = atomic_fetch_add(&self->calls, 1) + 1;
    char text[256];
    snprintf(text, sizeof text, "%s, %s! (call %llu, level %u)", self->greeting, caller, n,
             atomic_load(&self->level));
    return answer(text, response, err);
}

/* Parses "count:N"; returns 1 with N in `n` for such a request, 0 for any other. */
static int parse_count(BallastBytes request, unsigned long *n) {
    char text[32];
    if (request.ptr == NULL || request.len < 7 || request.len >= sizeof text) {
        return 0;
    }
    memcpy(text, request.ptr, request.len);
    text[request.len] = '\0';
    if (strncmp(text, "count:", 6) != 0) {
        return 0;
    }
    char *rest = NULL;
    *n = strtoul(text + 6, &rest, 10);
    return rest != text + 6 && *rest == '\0';
}

static BallastStatus plugin_call_stream(void *instance, BallastBytes request, const BallastCallContext *ctx,
                                        BallastBuffer *response, BallastMessageBuf *err) {
    unsigned long n = 0;
    if (!parse_count(request, &n)) {
        return plugin_call(instance, request, response, err);
    }
    if (ctx == NULL || ctx->send == NULL) {
        say(err, PLUGIN_NAME ": no call context to stream to");
        return BALLAST_STATUS_INVALID_ARGUMENT;
    }
    if (n > MOST_LINES) {
        say(err, PLUGIN_NAME ": count:N takes N from 0 to 100000");
        return BALLAST_STATUS_INVALID_ARGUMENT;
    }
    for (unsigned long i = 1; i <= n; i++) {
        char line[24];
        int len = snprintf(line, sizeof line, "%lu\n", i);
        BallastBytes chunk = {(const uint8_t *)line, (size_t)len};
        /* CANCELLED once the caller went away, the deadline passed or the plugin is being
         * shed: stop at once. */
        if (ctx->send(ctx->host_data, chunk) != BALLAST_STATUS_OK) {
            say(err, PLUGIN_NAME ": the call was cancelled");
            return BALLAST_STATUS_CANCELLED;
        }
    }
    return answer("done\n", response, err);
}

static void plugin_free_buffer(BallastBuffer buffer) {
    free(buffer.ptr);
}

static BallastStatus plugin_health(void *instance, BallastMessageBuf *message) {
    (void)instance;
    (void)message;
    return BALLAST_STATUS_OK;
}

static BallastStatus plugin_stats(void *instance, BallastStats *stats) {
    Instance *self = instance;
    if (stats == NULL || stats->struct_size < sizeof(BallastStats)) {
        return BALLAST_STATUS_INVALID_ARGUMENT;
    }
    stats->threads = 0;
    stats->live_bytes = sizeof *self + self->cache_len;
    stats->peak_bytes = self->peak_bytes;
    stats->allocations = 0;
    return BALLAST_STATUS_OK;
}

static BallastStatus plugin_checkpoint(void *instance, BallastBuffer *out, BallastMessageBuf *err) {
    Instance *self = instance;
    char text[32];
    snprintf(text, sizeof text, "calls=%llu", (unsigned long long)atomic_load(&self->calls));
    return answer(text, out, err);
}

static const BallastPluginVTable VTABLE = {
    .struct_size = sizeof(BallastPluginVTable),
    .create = plugin_create,
    .start = plugin_start,
    .set_level = plugin_set_level,
    .drain = plugin_drain,
    .stop = plugin_stop,
    .destroy = plugin_destroy,
    .call = plugin_call,
    .free_buffer = plugin_free_buffer,
    .health = plugin_health,
    .stats = plugin_stats,
    .checkpoint = plugin_checkpoint,
    .call_stream = plugin_call_stream,
};

/* What each level needs: the cache plus room for calls in flight. */
static const BallastLevelHints LEVELS[N_LEVELS] = {
    {.name = {(const uint8_t *)"full", 4}, .memory_min_bytes = 1024 * KIB, .memory_preferred_bytes = 1024 * KIB},
    {.name = {(const uint8_t *)"lite", 4}, .memory_min_bytes = 256 * KIB, .memory_preferred_bytes = 256 * KIB},
};

static const BallastPluginDescriptor DESCRIPTOR = {
    .header =
        {
            .magic = BALLAST_PLUGIN_MAGIC,
            .abi_major = BALLAST_ABI_MAJOR,
            .abi_minor = BALLAST_ABI_MINOR,
            .struct_size = sizeof(BallastPluginDescriptor),
            .name = {(const uint8_t *)PLUGIN_NAME, sizeof PLUGIN_NAME - 1},
        },
    .version = {(const uint8_t *)PLUGIN_VERSION, sizeof PLUGIN_VERSION - 1},
    .sdk_version = {(const uint8_t *)"c-header-{{abi}}", sizeof "c-header-{{abi}}" - 1},
    .capabilities = BALLAST_CAP_THREAD_SAFE_CALLS | BALLAST_CAP_CHECKPOINT | BALLAST_CAP_DRAIN | BALLAST_CAP_STREAMING,
    .hints = {.cpu_share_millis = 10, .needs_gpu = 0, .n_levels = N_LEVELS, .levels = LEVELS},
    .vtable = &VTABLE,
};

const BallastPluginDescriptor *ballast_plugin_entry_v1(void) {
    return &DESCRIPTOR;
}
