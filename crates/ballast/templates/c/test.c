/*
 * Tests of the {{name}} plugin: drives it through its entry point and vtable with a host of its
 * own, as the ballast daemon does after loading the library: create with a config and a
 * checkpoint, calls, a streamed call that is cancelled, levels, stats, drain, checkpoint, stop
 * and destroy. `make test` builds and runs it; it exits 1 at the first check that fails.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ballast_plugin.h"

static int checks = 0;

#define CHECK(condition)                                                                       \
    do {                                                                                       \
        checks++;                                                                              \
        if (!(condition)) {                                                                    \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #condition);      \
            exit(1);                                                                           \
        }                                                                                      \
    } while (0)

/* The host's side: the last log line, a fixed clock. */
static char last_log[256];

static void host_log(void *host_data, uint32_t level, BallastStr target, BallastStr message) {
    (void)host_data;
    (void)level;
    (void)target;
    size_t n = message.len < sizeof last_log - 1 ? message.len : sizeof last_log - 1;
    memcpy(last_log, message.ptr, n);
    last_log[n] = '\0';
}

static uint64_t host_now_ms(void *host_data) {
    (void)host_data;
    return 1767225600000ull;
}

static void host_emit_metric(void *host_data, BallastStr name, double value) {
    (void)host_data;
    (void)name;
    (void)value;
}

static void host_report_state(void *host_data, uint32_t healthy, BallastStr message) {
    (void)host_data;
    (void)healthy;
    (void)message;
}

static const BallastHostApi HOST = {
    .struct_size = sizeof(BallastHostApi),
    .abi_minor = BALLAST_ABI_MINOR,
    .host_data = NULL,
    .log = host_log,
    .now_ms = host_now_ms,
    .emit_metric = host_emit_metric,
    .report_state = host_report_state,
};

/* A message buffer of the daemon's size. */
static char message_bytes[4096];
static BallastMessageBuf message = {(uint8_t *)message_bytes, sizeof message_bytes, 0};

static const char *message_text(void) {
    message_bytes[message.len < sizeof message_bytes ? message.len : sizeof message_bytes - 1] = '\0';
    return message_bytes;
}

static BallastBytes bytes(const char *text) {
    BallastBytes b = {(const uint8_t *)text, strlen(text)};
    return b;
}

/* Calls `call` and checks that it answers `expected`. */
static void check_call(const BallastPluginVTable *vt, void *instance, const char *request, const char *expected) {
    BallastBuffer out = {0};
    CHECK(vt->call(instance, bytes(request), &out, &message) == BALLAST_STATUS_OK);
    CHECK(out.len == strlen(expected) && memcmp(out.ptr, expected, out.len) == 0);
    vt->free_buffer(out);
}

/* The host's side of a streamed call: takes `cancel_after` chunks, then cancels. */
typedef struct {
    int chunks;
    int cancel_after;
    char text[64];
} Stream;

static BallastStatus stream_send(void *host_data, BallastBytes chunk) {
    Stream *s = host_data;
    if (s->chunks >= s->cancel_after) {
        return BALLAST_STATUS_CANCELLED;
    }
    size_t used = strlen(s->text);
    if (used + chunk.len < sizeof s->text) {
        memcpy(s->text + used, chunk.ptr, chunk.len);
        s->text[used + chunk.len] = '\0';
    }
    s->chunks++;
    return BALLAST_STATUS_OK;
}

static uint32_t stream_is_cancelled(void *host_data) {
    Stream *s = host_data;
    return s->chunks >= s->cancel_after;
}

static BallastStatus stream(const BallastPluginVTable *vt, void *instance, const char *request, Stream *s) {
    BallastCallContext ctx = {
        .struct_size = sizeof(BallastCallContext),
        .abi_minor = BALLAST_ABI_MINOR,
        .host_data = s,
        .send = stream_send,
        .is_cancelled = stream_is_cancelled,
        .deadline_ms = 0,
    };
    BallastBuffer out = {0};
    BallastStatus status = vt->call_stream(instance, bytes(request), &ctx, &out, &message);
    if (status == BALLAST_STATUS_OK) {
        size_t used = strlen(s->text);
        if (used + out.len < sizeof s->text) {
            memcpy(s->text + used, out.ptr, out.len);
            s->text[used + out.len] = '\0';
        }
        vt->free_buffer(out);
    }
    return status;
}

int main(void) {
    const BallastPluginDescriptor *d = ballast_plugin_entry_v1();
    CHECK(d != NULL);
    CHECK(d->header.magic == BALLAST_PLUGIN_MAGIC);
    CHECK(d->header.abi_major == BALLAST_ABI_MAJOR);
    CHECK(d->header.name.len == strlen("{{name}}") && memcmp(d->header.name.ptr, "{{name}}", d->header.name.len) == 0);
    CHECK(d->hints.n_levels >= 1 && d->hints.n_levels <= BALLAST_MAX_LEVELS);
    const BallastPluginVTable *vt = d->vtable;
    CHECK(vt->struct_size == sizeof(BallastPluginVTable));

    /* Create with a config, as the daemon hands it. */
    void *instance = NULL;
    CHECK(vt->create(&HOST, bytes("{\"greeting\":\"hi\"}"), bytes(""), &instance, &message) == BALLAST_STATUS_OK);
    CHECK(instance != NULL);
    CHECK(strcmp(last_log, "{{name}}: created, 0 calls served before") == 0);
    CHECK(vt->start(instance, &message) == BALLAST_STATUS_OK);
    check_call(vt, instance, "ada", "hi, ada! (call 1, level 0)");

    /* Levels: what it holds shrinks, and only the declared levels exist. */
    BallastStats stats = {.struct_size = sizeof(BallastStats)};
    CHECK(vt->stats(instance, &stats) == BALLAST_STATUS_OK);
    uint64_t full_bytes = stats.live_bytes;
    CHECK(full_bytes <= d->hints.levels[0].memory_min_bytes);
    CHECK(vt->set_level(instance, 1, &message) == BALLAST_STATUS_OK);
    CHECK(vt->stats(instance, &stats) == BALLAST_STATUS_OK);
    CHECK(stats.live_bytes < full_bytes && stats.live_bytes <= d->hints.levels[1].memory_min_bytes);
    CHECK(vt->set_level(instance, d->hints.n_levels, &message) == BALLAST_STATUS_UNSUPPORTED);
    check_call(vt, instance, "bob", "hi, bob! (call 2, level 1)");

    /* Streamed: every chunk, then a call cancelled after two chunks. */
    Stream whole = {.cancel_after = 1000};
    CHECK(stream(vt, instance, "count:3", &whole) == BALLAST_STATUS_OK);
    CHECK(strcmp(whole.text, "1\n2\n3\ndone\n") == 0);
    Stream cut = {.cancel_after = 2};
    CHECK(stream(vt, instance, "count:100", &cut) == BALLAST_STATUS_CANCELLED);
    CHECK(strcmp(cut.text, "1\n2\n") == 0);

    /* Shed and restore, as the daemon does: the call count carries over. */
    CHECK(vt->drain(instance, 5000, &message) == BALLAST_STATUS_OK);
    BallastBuffer checkpoint = {0};
    CHECK(vt->checkpoint(instance, &checkpoint, &message) == BALLAST_STATUS_OK);
    CHECK(vt->stop(instance, &message) == BALLAST_STATUS_OK);
    CHECK(vt->destroy(instance, &message) == BALLAST_STATUS_OK);
    BallastBytes saved = {checkpoint.ptr, checkpoint.len};
    CHECK(vt->create(&HOST, bytes("{}"), saved, &instance, &message) == BALLAST_STATUS_OK);
    vt->free_buffer(checkpoint);
    CHECK(strcmp(last_log, "{{name}}: created, 2 calls served before") == 0);
    check_call(vt, instance, "eve", "hello, eve! (call 3, level 0)");
    CHECK(vt->destroy(instance, &message) == BALLAST_STATUS_OK);

    /* A bad config is refused with a message naming the key. */
    instance = NULL;
    CHECK(vt->create(&HOST, bytes("{\"greeting\": 7}"), bytes(""), &instance, &message) ==
          BALLAST_STATUS_INVALID_ARGUMENT);
    CHECK(instance == NULL);
    CHECK(strstr(message_text(), "`greeting`") != NULL);

    printf("{{name}}: %d checks passed\n", checks);
    return 0;
}
