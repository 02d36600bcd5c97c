//! Calls: timeouts, the concurrency limit and queue, panics, and draining with calls in flight.

use std::sync::mpsc;
use std::time::Duration;

use ballast_core::Level;
use ballast_host::{CallError, PluginConfig, PluginHost};

use crate::support::{c_library, faulty, host, logged};

#[test]
fn a_slow_call_times_out_and_is_counted() {
    let (host, _) = host();
    let mut config = faulty(serde_json::json!({ "call_sleep_ms": 300 }));
    config.call_timeout = Duration::from_millis(20);
    host.load(config).unwrap();
    host.enable("faulty", Level::FULL, "test").unwrap();
    let error = host.call("faulty", b"slow").unwrap_err();
    assert_eq!(
        error,
        CallError::Timeout {
            plugin: "faulty".into(),
            timeout_ms: 20
        }
    );
    let stats = host.refresh_stats("faulty").unwrap();
    assert_eq!(stats.timeouts, 1);
    assert_eq!(stats.errors, 1);
}

#[test]
fn past_the_limit_and_the_queue_calls_are_refused_as_busy() {
    let (host, _) = host();
    let mut config = faulty(serde_json::json!({ "call_sleep_ms": 200 }));
    config.max_concurrent_calls = 1;
    config.queue = 1;
    host.load(config).unwrap();
    host.enable("faulty", Level::FULL, "test").unwrap();
    let (tx, rx) = mpsc::channel();
    for _ in 0..2 {
        let tx = tx.clone();
        host.submit(
            "faulty",
            b"work".to_vec(),
            Box::new(move |r| tx.send(r).unwrap()),
        )
        .unwrap();
    }
    let refused = host.submit("faulty", b"one too many".to_vec(), Box::new(|_| {}));
    assert_eq!(
        refused,
        Err(CallError::Busy {
            plugin: "faulty".into(),
            limit: 1,
            queue: 1
        })
    );
    for _ in 0..2 {
        assert!(rx.recv().unwrap().is_ok());
    }
}

/// A thread-safe C plugin that measures how many of its calls run at once. A call `N MS` waits
/// until N calls have been running at once (since the last `reset`), at most MS milliseconds, and
/// answers the most it saw; `reset` forgets it.
const OVERLAP: &str = r#"
#define _POSIX_C_SOURCE 200809L
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "ballast_plugin.h"
static int instance;
static atomic_int running;
static atomic_int most;
static long long now_ms(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (long long)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}
static BallastStatus ok(void *i, BallastMessageBuf *e) { (void)i; (void)e; return BALLAST_STATUS_OK; }
static BallastStatus create(const BallastHostApi *h, BallastBytes c, BallastBytes k, void **o, BallastMessageBuf *e) {
    (void)h; (void)c; (void)k; (void)e; *o = &instance; return BALLAST_STATUS_OK; }
static BallastStatus call(void *i, BallastBytes r, BallastBuffer *o, BallastMessageBuf *e) {
    (void)i; (void)e;
    char request[64] = {0};
    if (r.len > 0) memcpy(request, r.ptr, r.len < sizeof request ? r.len : sizeof request - 1);
    int want = 0;
    long long ms = 0;
    if (strcmp(request, "reset") == 0) {
        atomic_store(&most, 0);
    } else if (sscanf(request, "%d %lld", &want, &ms) == 2) {
        int now = atomic_fetch_add(&running, 1) + 1;
        int seen = atomic_load(&most);
        while (now > seen && !atomic_compare_exchange_weak(&most, &seen, now)) {}
        long long deadline = now_ms() + ms;
        struct timespec pause = {0, 100000};
        while (atomic_load(&most) < want && now_ms() < deadline) nanosleep(&pause, NULL);
        atomic_fetch_sub(&running, 1);
    } else {
        return BALLAST_STATUS_INVALID_ARGUMENT;
    }
    char *out = malloc(16);
    if (out == NULL) return BALLAST_STATUS_ERROR;
    o->len = (size_t)snprintf(out, 16, "%d", atomic_load(&most));
    o->ptr = (uint8_t *)out;
    o->owner = 1;
    return BALLAST_STATUS_OK;
}
static BallastStatus level(void *i, uint32_t l, BallastMessageBuf *e) { (void)i; (void)l; (void)e; return BALLAST_STATUS_OK; }
static BallastStatus drain(void *i, uint64_t d, BallastMessageBuf *e) { (void)i; (void)d; (void)e; return BALLAST_STATUS_OK; }
static BallastStatus stats(void *i, BallastStats *s) { (void)i; (void)s; return BALLAST_STATUS_OK; }
static void release(BallastBuffer b) { free(b.ptr); }
static const BallastPluginVTable VT = { .struct_size = sizeof(BallastPluginVTable), .create = create,
    .start = ok, .set_level = level, .drain = drain, .stop = ok, .destroy = ok, .call = call,
    .free_buffer = release, .health = ok, .stats = stats };
static const BallastLevelHints LEVELS[1] = { { .name = { (const uint8_t *)"full", 4 } } };
static const BallastPluginDescriptor D = {
    .header = { .magic = BALLAST_PLUGIN_MAGIC, .abi_major = 1, .abi_minor = 0,
                .struct_size = sizeof(BallastPluginDescriptor), .name = { (const uint8_t *)"overlap", 7 } },
    .version = { (const uint8_t *)"1", 1 }, .sdk_version = { (const uint8_t *)"c", 1 },
    .capabilities = BALLAST_CAP_THREAD_SAFE_CALLS, .hints = { .n_levels = 1, .levels = LEVELS }, .vtable = &VT };
const BallastPluginDescriptor *ballast_plugin_entry_v1(void) { return &D; }
"#;

/// Sends `n` calls of `request` to the `overlap` plugin at once and returns their answers.
fn overlapping(host: &PluginHost, n: usize, request: &str) -> Vec<String> {
    host.call("overlap", b"reset").unwrap();
    let (tx, rx) = mpsc::channel();
    for _ in 0..n {
        let tx = tx.clone();
        host.submit(
            "overlap",
            request.as_bytes().to_vec(),
            Box::new(move |r| tx.send(r).unwrap()),
        )
        .unwrap();
    }
    (0..n)
        .map(|_| {
            let answer = rx.recv_timeout(Duration::from_secs(60)).unwrap().unwrap();
            String::from_utf8(answer).unwrap()
        })
        .collect()
}

#[test]
fn a_lowered_concurrency_limit_takes_effect_and_none_restores_the_configured_one() {
    let (host, _) = host();
    let mut config = PluginConfig::new("overlap", c_library("overlap", OVERLAP));
    config.max_concurrent_calls = 4;
    config.call_timeout = Duration::from_secs(60);
    host.load(config).unwrap();
    host.enable("overlap", Level::FULL, "test").unwrap();
    // The configured maximum: four calls run at once.
    assert_eq!(overlapping(&host, 4, "4 5000"), ["4"; 4]);
    // Lowered (the scaler's adaptive concurrency), bounded by 1 and the maximum.
    assert_eq!(host.set_concurrency("overlap", Some(0)).unwrap(), 1);
    assert_eq!(host.set_concurrency("overlap", Some(9)).unwrap(), 4);
    assert_eq!(host.set_concurrency("overlap", Some(1)).unwrap(), 1);
    // Two calls one after the other: each waits 200 ms in vain for a second one to join it.
    assert_eq!(overlapping(&host, 2, "2 200"), ["1"; 2]);
    // None restores the configured maximum.
    assert_eq!(host.set_concurrency("overlap", None).unwrap(), 4);
    assert_eq!(overlapping(&host, 4, "4 5000"), ["4"; 4]);
}

#[test]
fn a_panicking_call_fails_the_plugin_not_the_host_and_it_can_come_back() {
    let (host, _) = host();
    host.load(faulty(serde_json::json!({}))).unwrap();
    host.enable("faulty", Level::FULL, "test").unwrap();
    assert_eq!(
        host.call("faulty", b"fail").unwrap_err(),
        CallError::Failed {
            plugin: "faulty".into(),
            message: "error: faulty: failure requested by the caller".into()
        }
    );
    let error = host.call("faulty", b"panic").unwrap_err();
    assert!(
        matches!(&error, CallError::Panicked { message, .. } if message.contains("panic requested by the caller")),
        "{error:?}"
    );
    let status = host.status("faulty").unwrap();
    assert_eq!(status.state.name(), "failed");
    assert!(
        matches!(host.call("faulty", b"x"), Err(CallError::Degraded { ref state, .. }) if state == "failed")
    );
    // The operator (or the scaler) can bring it back: a fresh instance from the checkpoint-less create.
    host.enable("faulty", Level::FULL, "retry").unwrap();
    assert_eq!(host.call("faulty", b"x").unwrap(), b"generation 1");
}

#[test]
fn panics_in_every_entry_point_are_contained() {
    for function in ["start", "set_level", "drain", "stop", "checkpoint"] {
        let (host, _) = host();
        host.load(faulty(serde_json::json!({ "panic_in": function })))
            .unwrap();
        let enabled = host.enable("faulty", Level::FULL, "test");
        if function == "start" {
            assert!(
                enabled
                    .unwrap_err()
                    .to_string()
                    .contains("configured to panic in start")
            );
            continue;
        }
        enabled.unwrap();
        if function == "set_level" {
            let error = host
                .set_level("faulty", Level(1), "test")
                .unwrap_err()
                .to_string();
            assert!(
                error.contains("configured to panic in set_level"),
                "{error}"
            );
            assert_eq!(host.status("faulty").unwrap().state.name(), "failed");
            continue;
        }
        // drain, stop and checkpoint failures are logged, panic and all; the plugin is still
        // disabled.
        let ((), logs) = logged(|| host.disable("faulty", "test").unwrap());
        assert!(
            logs.contains(&format!("configured to panic in {function}")),
            "{function} was not called, or its panic not logged: {logs}"
        );
        assert_eq!(
            host.status("faulty").unwrap().state.name(),
            "disabled",
            "{function}"
        );
    }
}

#[test]
fn disable_waits_for_calls_in_flight_within_the_drain_deadline() {
    let (host, _) = host();
    host.load(faulty(serde_json::json!({ "call_sleep_ms": 100 })))
        .unwrap();
    host.enable("faulty", Level::FULL, "test").unwrap();
    let (tx, rx) = mpsc::channel();
    host.submit(
        "faulty",
        b"in flight".to_vec(),
        Box::new(move |r| tx.send(r).unwrap()),
    )
    .unwrap();
    host.disable("faulty", "shed").unwrap();
    // The call admitted before the disable was answered, not cut off.
    assert_eq!(rx.recv().unwrap().unwrap(), b"generation 1");
    // The checkpoint went to the next instance.
    host.enable("faulty", Level::FULL, "restore").unwrap();
    assert_eq!(host.call("faulty", b"x").unwrap(), b"generation 2");
}

#[test]
fn an_unhealthy_plugin_is_marked_failed_by_the_health_check() {
    let (host, _) = host();
    host.load(faulty(serde_json::json!({ "unhealthy": true })))
        .unwrap();
    host.enable("faulty", Level::FULL, "test").unwrap();
    let error = host.check_health("faulty").unwrap_err().to_string();
    assert!(error.contains("configured to be unhealthy"), "{error}");
    assert_eq!(host.status("faulty").unwrap().state.name(), "failed");
}
