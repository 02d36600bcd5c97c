/*
 * clock: an example ballast integration written in C against ballast_plugin.h only.
 *
 * It tells the time. Level 0 ("full") keeps a 16 MiB working set (a pretend time-zone database)
 * and a ticking worker thread; level 1 ("utc-only") keeps 2 MiB. The config may override both
 * sizes: {"working_set_mb": [16, 2]}. Calls answer JSON with the host's clock and the request
 * echoed back.
 *
 * It streams (ABI 1.1): a streamed call of `tick:N[:MS]` sends N chunks, one JSON line each with
 * the tick's number and the host's clock, MS milliseconds apart (default 0, at most 60000). It
 * checks `is_cancelled` before every tick and every millisecond of a wait and stops with
 * BALLAST_STATUS_CANCELLED when the call is cancelled; its last piece is the usual answer. Any
 * other request streamed is answered as by `call`, in one last piece.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ballast_plugin.h"

#define MIB (1024u * 1024u)
#define N_LEVELS 2

static BallastStr str(const char *s) {
    BallastStr out = {(const uint8_t *)s, strlen(s)};
    return out;
}

static void set_message(BallastMessageBuf *buf, const char *message) {
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

typedef struct {
    const BallastHostApi *host;
    uint64_t working_set_mb[N_LEVELS];
    unsigned char *working_set;
    size_t working_set_len;
    pthread_mutex_t lock; /* guards working_set during resizes and ticks */
    pthread_t worker;
    int worker_running;
    atomic_int stop;
    atomic_uint level;
    atomic_ullong calls;
    atomic_ullong ticks;
} Clock;

/* Reads "working_set_mb": [a, b] from the config JSON, if present. */
static void parse_config(const char *json, size_t len, uint64_t sizes[N_LEVELS]) {
    char *copy = malloc(len + 1);
    if (copy == NULL) {
        return;
    }
    memcpy(copy, json, len);
    copy[len] = '\0';
    const char *key = strstr(copy, "\"working_set_mb\"");
    if (key != NULL) {
        const char *p = strchr(key, '[');
        for (int i = 0; p != NULL && i < N_LEVELS; i++) {
            char *end = NULL;
            unsigned long long v = strtoull(p + 1, &end, 10);
            if (end == p + 1) {
                break;
            }
            sizes[i] = v;
            p = strchr(end, ',');
        }
    }
    free(copy);
}

/* Replaces the working set with `mb` MiB, every page written so that it is resident. */
static int resize(Clock *c, uint64_t mb) {
    size_t len = (size_t)mb * MIB;
    unsigned char *fresh = NULL;
    if (len > 0) {
        fresh = malloc(len);
        if (fresh == NULL) {
            return -1;
        }
        for (size_t i = 0; i < len; i += 4096) {
            fresh[i] = (unsigned char)(i / 4096);
        }
    }
    pthread_mutex_lock(&c->lock);
    unsigned char *old = c->working_set;
    c->working_set = fresh;
    c->working_set_len = len;
    pthread_mutex_unlock(&c->lock);
    free(old);
    return 0;
}

static void *worker(void *arg) {
    Clock *c = arg;
    size_t cursor = 0;
    while (!atomic_load(&c->stop)) {
        pthread_mutex_lock(&c->lock);
        if (c->working_set_len > 0) {
            for (int i = 0; i < 256; i++) {
                cursor = (cursor + 4096) % c->working_set_len;
                c->working_set[cursor]++;
            }
        }
        pthread_mutex_unlock(&c->lock);
        atomic_fetch_add(&c->ticks, 1);
        struct timespec pause = {0, 250 * 1000 * 1000};
        nanosleep(&pause, NULL);
    }
    return NULL;
}

static BallastStatus clock_create(const BallastHostApi *host, BallastBytes config, BallastBytes checkpoint,
                                  void **out_instance, BallastMessageBuf *err) {
    (void)checkpoint;
    if (host == NULL || out_instance == NULL) {
        set_message(err, "clock: null host or out-pointer");
        return BALLAST_STATUS_INVALID_ARGUMENT;
    }
    Clock *c = calloc(1, sizeof(Clock));
    if (c == NULL) {
        set_message(err, "clock: out of memory");
        return BALLAST_STATUS_ERROR;
    }
    c->host = host;
    c->working_set_mb[0] = 16;
    c->working_set_mb[1] = 2;
    if (config.ptr != NULL) {
        parse_config((const char *)config.ptr, config.len, c->working_set_mb);
    }
    pthread_mutex_init(&c->lock, NULL);
    if (resize(c, c->working_set_mb[0]) != 0) {
        pthread_mutex_destroy(&c->lock);
        free(c);
        set_message(err, "clock: cannot allocate the working set");
        return BALLAST_STATUS_ERROR;
    }
    host->log(host->host_data, BALLAST_LOG_INFO, str("clock"), str("clock: created"));
    *out_instance = c;
    return BALLAST_STATUS_OK;
}

static BallastStatus clock_start(void *instance, BallastMessageBuf *err) {
    Clock *c = instance;
    if (c->worker_running) {
        return BALLAST_STATUS_OK;
    }
    atomic_store(&c->stop, 0);
    if (pthread_create(&c->worker, NULL, worker, c) != 0) {
        set_message(err, "clock: cannot start the worker thread");
        return BALLAST_STATUS_ERROR;
    }
    c->worker_running = 1;
    return BALLAST_STATUS_OK;
}

static BallastStatus clock_set_level(void *instance, uint32_t level, BallastMessageBuf *err) {
    Clock *c = instance;
    if (level >= N_LEVELS) {
        set_message(err, "clock: levels are 0 (full) and 1 (utc-only)");
        return BALLAST_STATUS_UNSUPPORTED;
    }
    if (resize(c, c->working_set_mb[level]) != 0) {
        set_message(err, "clock: cannot allocate the working set");
        return BALLAST_STATUS_ERROR;
    }
    atomic_store(&c->level, level);
    return BALLAST_STATUS_OK;
}

static BallastStatus clock_drain(void *instance, uint64_t deadline_ms, BallastMessageBuf *err) {
    (void)instance;
    (void)deadline_ms;
    (void)err;
    return BALLAST_STATUS_OK; /* No background intake to stop. */
}

static BallastStatus clock_stop(void *instance, BallastMessageBuf *err) {
    (void)err;
    Clock *c = instance;
    if (c->worker_running) {
        atomic_store(&c->stop, 1);
        pthread_join(c->worker, NULL);
        c->worker_running = 0;
    }
    return BALLAST_STATUS_OK;
}

static BallastStatus clock_destroy(void *instance, BallastMessageBuf *err) {
    Clock *c = instance;
    clock_stop(c, err);
    free(c->working_set);
    pthread_mutex_destroy(&c->lock);
    free(c);
    return BALLAST_STATUS_OK;
}

/* Appends `src` to `dst` as the body of a JSON string. Returns the new length. */
static size_t json_escape(char *dst, size_t at, size_t cap, const uint8_t *src, size_t len) {
    for (size_t i = 0; i < len && at + 7 < cap; i++) {
        unsigned char ch = src[i];
        if (ch == '"' || ch == '\\') {
            dst[at++] = '\\';
            dst[at++] = (char)ch;
        } else if (ch < 0x20) {
            at += (size_t)snprintf(dst + at, cap - at, "\\u%04x", ch);
        } else {
            dst[at++] = (char)ch;
        }
    }
    return at;
}

static BallastStatus clock_call(void *instance, BallastBytes request, BallastBuffer *response,
                                BallastMessageBuf *err) {
    Clock *c = instance;
    size_t cap = 256 + request.len * 6;
    char *out = malloc(cap);
    if (out == NULL) {
        set_message(err, "clock: out of memory");
        return BALLAST_STATUS_ERROR;
    }
    unsigned long long calls = atomic_fetch_add(&c->calls, 1) + 1;
    uint64_t now = c->host->now_ms(c->host->host_data);
    size_t at = (size_t)snprintf(out, cap, "{\"plugin\":\"clock\",\"level\":%u,\"now_ms\":%llu,\"calls_served\":%llu,\"echo\":\"",
                                 atomic_load(&c->level), (unsigned long long)now, calls);
    at = json_escape(out, at, cap, request.ptr, request.ptr == NULL ? 0 : request.len);
    at += (size_t)snprintf(out + at, cap - at, "\"}");
    response->ptr = (uint8_t *)out;
    response->len = at;
    response->owner = 1;
    return BALLAST_STATUS_OK;
}

/* Parses "tick:N[:MS]"; returns 0 when `request` is no tick request or is malformed. */
static int parse_tick(BallastBytes request, unsigned long *n, unsigned long *ms) {
    char text[64];
    if (request.ptr == NULL || request.len < 6 || request.len >= sizeof text) {
        return 0;
    }
    memcpy(text, request.ptr, request.len);
    text[request.len] = '\0';
    if (strncmp(text, "tick:", 5) != 0) {
        return 0;
    }
    char *end = NULL;
    *n = strtoul(text + 5, &end, 10);
    if (end == text + 5) {
        return 0;
    }
    *ms = 0;
    if (*end == ':') {
        char *start = end + 1;
        *ms = strtoul(start, &end, 10);
        if (end == start || *ms > 60000) {
            return 0;
        }
    }
    return *end == '\0' || *end == '\n';
}

static int cancelled(const BallastCallContext *ctx) {
    return ctx->is_cancelled != NULL && ctx->is_cancelled(ctx->host_data) != 0;
}

/* Waits `ms` milliseconds in steps of one, returning 1 as soon as the call is cancelled. */
static int wait_or_cancelled(const BallastCallContext *ctx, unsigned long ms) {
    for (unsigned long i = 0; i < ms; i++) {
        if (cancelled(ctx)) {
            return 1;
        }
        struct timespec pause = {0, 1000 * 1000};
        nanosleep(&pause, NULL);
    }
    return cancelled(ctx);
}

static BallastStatus clock_call_stream(void *instance, BallastBytes request, const BallastCallContext *ctx,
                                       BallastBuffer *response, BallastMessageBuf *err) {
    Clock *c = instance;
    unsigned long n = 0;
    unsigned long ms = 0;
    if (ctx == NULL || ctx->send == NULL) {
        set_message(err, "clock: no call context to stream to");
        return BALLAST_STATUS_INVALID_ARGUMENT;
    }
    if (parse_tick(request, &n, &ms)) {
        for (unsigned long i = 0; i < n; i++) {
            if ((i > 0 && wait_or_cancelled(ctx, ms)) || cancelled(ctx)) {
                set_message(err, "clock: saw the call cancelled, ticking stopped");
                return BALLAST_STATUS_CANCELLED;
            }
            char line[96];
            uint64_t now = c->host->now_ms(c->host->host_data);
            int len = snprintf(line, sizeof line, "{\"tick\":%lu,\"now_ms\":%llu}\n", i, (unsigned long long)now);
            BallastBytes chunk = {(const uint8_t *)line, (size_t)len};
            if (ctx->send(ctx->host_data, chunk) == BALLAST_STATUS_CANCELLED) {
                set_message(err, "clock: the host took no more ticks, ticking stopped");
                return BALLAST_STATUS_CANCELLED;
            }
        }
    }
    return clock_call(instance, request, response, err);
}

static void clock_free_buffer(BallastBuffer buffer) {
    free(buffer.ptr);
}

static BallastStatus clock_health(void *instance, BallastMessageBuf *message) {
    Clock *c = instance;
    if (c->worker_running && atomic_load(&c->stop)) {
        set_message(message, "clock: worker is stopping");
        return BALLAST_STATUS_DEGRADED;
    }
    return BALLAST_STATUS_OK;
}

static BallastStatus clock_stats(void *instance, BallastStats *stats) {
    Clock *c = instance;
    if (stats == NULL || stats->struct_size < sizeof(BallastStats)) {
        return BALLAST_STATUS_INVALID_ARGUMENT;
    }
    pthread_mutex_lock(&c->lock);
    stats->live_bytes = c->working_set_len;
    pthread_mutex_unlock(&c->lock);
    stats->peak_bytes = c->working_set_mb[0] * MIB;
    stats->allocations = 0;
    stats->threads = c->worker_running ? 1 : 0;
    return BALLAST_STATUS_OK;
}

static const BallastPluginVTable VTABLE = {
    .struct_size = sizeof(BallastPluginVTable),
    .create = clock_create,
    .start = clock_start,
    .set_level = clock_set_level,
    .drain = clock_drain,
    .stop = clock_stop,
    .destroy = clock_destroy,
    .call = clock_call,
    .free_buffer = clock_free_buffer,
    .health = clock_health,
    .stats = clock_stats,
    .checkpoint = NULL, /* Optional: the clock keeps no state worth carrying over. */
    .call_stream = clock_call_stream,
};

static const BallastLevelHints LEVELS[N_LEVELS] = {
    {.name = {(const uint8_t *)"full", 4}, .memory_min_bytes = 16 * MIB, .memory_preferred_bytes = 16 * MIB},
    {.name = {(const uint8_t *)"utc-only", 8}, .memory_min_bytes = 2 * MIB, .memory_preferred_bytes = 2 * MIB},
};

static const BallastPluginDescriptor DESCRIPTOR = {
    .header =
        {
            .magic = BALLAST_PLUGIN_MAGIC,
            .abi_major = BALLAST_ABI_MAJOR,
            .abi_minor = BALLAST_ABI_MINOR,
            .struct_size = sizeof(BallastPluginDescriptor),
            .name = {(const uint8_t *)"clock", 5},
        },
    .version = {(const uint8_t *)"1.0.0", 5},
    .sdk_version = {(const uint8_t *)"c-header-1.1", 12},
    .capabilities = BALLAST_CAP_THREAD_SAFE_CALLS | BALLAST_CAP_STREAMING,
    .hints = {.cpu_share_millis = 10, .needs_gpu = 0, .n_levels = N_LEVELS, .levels = LEVELS},
    .vtable = &VTABLE,
};

const BallastPluginDescriptor *ballast_plugin_entry_v1(void) {
    return &DESCRIPTOR;
}
