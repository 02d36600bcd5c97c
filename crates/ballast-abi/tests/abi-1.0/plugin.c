/*
 * legacy: a plugin built against the frozen ABI 1.0 header beside this file, exactly as a plugin
 * author built one before ABI 1.1. The host tests compile it and check that a newer host loads it,
 * calls it, and streams its calls as one chunk each.
 *
 * Its quoted include finds ./ballast_plugin.h (the frozen copy) before the current header.
 */
#include <stdlib.h>
#include <string.h>

#include "ballast_plugin.h"

_Static_assert(BALLAST_ABI_MINOR == 0, "legacy must be built against the frozen 1.0 header");

static int instance;

static BallastStatus ok(void *i, BallastMessageBuf *e) {
    (void)i;
    (void)e;
    return BALLAST_STATUS_OK;
}

static BallastStatus create(const BallastHostApi *h, BallastBytes c, BallastBytes k, void **o,
                            BallastMessageBuf *e) {
    (void)h;
    (void)c;
    (void)k;
    (void)e;
    *o = &instance;
    return BALLAST_STATUS_OK;
}

static BallastStatus level(void *i, uint32_t l, BallastMessageBuf *e) {
    (void)i;
    (void)l;
    (void)e;
    return BALLAST_STATUS_OK;
}

static BallastStatus drain(void *i, uint64_t d, BallastMessageBuf *e) {
    (void)i;
    (void)d;
    (void)e;
    return BALLAST_STATUS_OK;
}

/* Answers "legacy:" and the request. */
static BallastStatus call(void *i, BallastBytes r, BallastBuffer *o, BallastMessageBuf *e) {
    (void)i;
    (void)e;
    size_t n = 7 + r.len;
    uint8_t *out = malloc(n);
    if (out == NULL) {
        return BALLAST_STATUS_ERROR;
    }
    memcpy(out, "legacy:", 7);
    if (r.len > 0) {
        memcpy(out + 7, r.ptr, r.len);
    }
    o->ptr = out;
    o->len = n;
    o->owner = 1;
    return BALLAST_STATUS_OK;
}

static void release(BallastBuffer b) {
    free(b.ptr);
}

static BallastStatus health(void *i, BallastMessageBuf *m) {
    (void)i;
    (void)m;
    return BALLAST_STATUS_OK;
}

static BallastStatus stats(void *i, BallastStats *s) {
    (void)i;
    (void)s;
    return BALLAST_STATUS_OK;
}

static const BallastPluginVTable VTABLE = {
    .struct_size = sizeof(BallastPluginVTable),
    .create = create,
    .start = ok,
    .set_level = level,
    .drain = drain,
    .stop = ok,
    .destroy = ok,
    .call = call,
    .free_buffer = release,
    .health = health,
    .stats = stats,
};

static const BallastLevelHints LEVELS[1] = {{.name = {(const uint8_t *)"full", 4}}};

static const BallastPluginDescriptor DESCRIPTOR = {
    .header = {.magic = BALLAST_PLUGIN_MAGIC,
               .abi_major = BALLAST_ABI_MAJOR,
               .abi_minor = BALLAST_ABI_MINOR,
               .struct_size = sizeof(BallastPluginDescriptor),
               .name = {(const uint8_t *)"legacy", 6}},
    .version = {(const uint8_t *)"1.0.0", 5},
    .sdk_version = {(const uint8_t *)"c-header-1.0", 12},
    .capabilities = BALLAST_CAP_THREAD_SAFE_CALLS,
    .hints = {.n_levels = 1, .levels = LEVELS},
    .vtable = &VTABLE,
};

const BallastPluginDescriptor *ballast_plugin_entry_v1(void) {
    return &DESCRIPTOR;
}
