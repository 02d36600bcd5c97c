//! The conformance check against plugins that keep their contract and fixtures that each break
//! one part of it: the faulty plugin configured into one breach at a time, and a Python
//! protocol plugin told which breach to commit. Each breach must fail the step that checks it,
//! with a message that says what was wrong, and nothing else may fail.
//!
//! Each check of a Rust plugin loads a copy of its library of its own: a library's counting
//! allocator and statics are shared by every instance in the process, and the other tests run
//! the same plugins at the same time.

use std::path::PathBuf;
use std::time::Duration;

use ballast_host::check::{CheckOptions, Report, check};
use ballast_host::{PluginConfig, Protocol};

use crate::support::rust_plugins;

fn options(stream_request: &str) -> CheckOptions {
    CheckOptions {
        stream_request: Some(stream_request.as_bytes().to_vec()),
        ..CheckOptions::default()
    }
}

/// The failed steps' names.
fn failed(report: &Report) -> Vec<&str> {
    report.failures().map(|s| s.name.as_str()).collect()
}

/// Asserts that exactly `steps` failed, and that the first of them says `says`.
#[track_caller]
fn fails_at(report: &Report, steps: &[&str], says: &str) {
    assert_eq!(failed(report), steps, "{}", report.render());
    assert!(!report.ok);
    let detail = &report.step(steps[0]).unwrap().detail;
    assert!(detail.contains(says), "step `{}`: {detail}", steps[0]);
    assert!(
        report.render().contains(&format!("step `{}`: ", steps[0])),
        "the closing lines name the step"
    );
}

#[track_caller]
fn passes(report: &Report) {
    assert!(report.ok, "{}", report.render());
}

/// A copy of the Rust example plugin `name`'s library in a directory of its own (see the
/// module's docs), and its config.
fn own_copy(name: &str) -> (tempfile::TempDir, PluginConfig) {
    let dir = tempfile::tempdir().unwrap();
    let file = format!("lib{name}.so");
    std::fs::copy(rust_plugins().join(&file), dir.path().join(&file)).unwrap();
    let config = PluginConfig::new(name, dir.path());
    (dir, config)
}

/// The faulty plugin with `faults`, and a short drain so that a breach of it shows quickly.
fn faulty_with(faults: serde_json::Value) -> (tempfile::TempDir, PluginConfig) {
    let (dir, mut config) = own_copy("faulty");
    config.config = faults;
    config.drain_timeout = Duration::from_millis(300);
    (dir, config)
}

#[test]
fn the_faulty_plugin_without_faults_keeps_its_contract_and_its_checkpoint_carries_on() {
    let report = check(
        faulty_with(serde_json::json!({})).1,
        &options("stream 20 5"),
    );
    passes(&report);
    let names: Vec<&str> = report.steps.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "load",
            "create without a checkpoint",
            "call",
            "memory at level 0 (full)",
            "level 1 (reduced), down",
            "memory at level 1 (reduced)",
            "level 0 (full), up",
            "concurrent calls",
            "streamed call",
            "cancel",
            "drain with calls in flight",
            "checkpoint",
            "stop and destroy",
            "create with the checkpoint",
            "checkpoint restored",
        ]
    );
    assert!(
        report.steps.iter().all(|s| !s.skipped),
        "{}",
        report.render()
    );
    let restored = &report.step("checkpoint restored").unwrap().detail;
    assert!(
        restored.contains("a fresh instance: 3 B: `1 0`"),
        "{restored}"
    );
    let streamed = &report.step("streamed call").unwrap().detail;
    assert!(
        streamed.starts_with("`stream 20 5`: 21 chunks in order"),
        "{streamed}"
    );
}

#[test]
fn a_native_plugin_that_holds_more_than_it_declares_fails_the_memory_steps() {
    let report = check(
        faulty_with(serde_json::json!({ "hold_mb": 4 })).1,
        &options("ping"),
    );
    fails_at(
        &report,
        &["memory at level 0 (full)", "memory at level 1 (reduced)"],
        "holds 4 MiB (what its allocator counts), more than the 1 MiB it declares: the scaler counts what it holds, so declare at least 5 MiB",
    );
}

#[test]
fn a_plugin_whose_calls_are_not_thread_safe_though_it_says_so_fails_concurrent_calls() {
    let report = check(
        faulty_with(serde_json::json!({ "racy_calls": true })).1,
        &options("ping"),
    );
    // Its calls in flight at the drain overlap too.
    fails_at(
        &report,
        &["concurrent calls", "drain with calls in flight"],
        "another call ran at the same time and corrupted this one's state; the same request alone succeeds, so its calls are not safe to run at once though it declares thread-safe calls",
    );
}

#[test]
fn a_drain_that_overruns_its_deadline_fails_the_drain_step() {
    let report = check(
        faulty_with(serde_json::json!({ "drain_overrun_ms": 400 })).1,
        &options("ping"),
    );
    fails_at(
        &report,
        &["drain with calls in flight"],
        "past the deadline of",
    );
    let detail = &report.step("drain with calls in flight").unwrap().detail;
    assert!(detail.starts_with("its drain took "), "{detail}");
}

#[test]
fn a_plugin_that_ignores_its_checkpoint_fails_checkpoint_restored() {
    let report = check(
        faulty_with(serde_json::json!({ "forget_checkpoint": true })).1,
        &options("ping"),
    );
    fails_at(
        &report,
        &["checkpoint restored"],
        "it handed back the state of an instance created without one (3 B: `1 0`): it did not restore what it was handed",
    );
}

#[test]
fn a_stream_that_goes_on_after_a_cancel_fails_the_cancel_step() {
    let report = check(
        faulty_with(serde_json::json!({ "ignore_cancel": true })).1,
        &options("stream 60 20"),
    );
    // The streams in flight at the drain go on past the drain's cut too.
    fails_at(
        &report,
        &["cancel", "drain with calls in flight"],
        "after its call was cancelled (it must stop within 500.0ms): it does not honour cancellation",
    );
    let drain = &report.step("drain with calls in flight").unwrap().detail;
    assert!(
        drain.contains("still ran past its drain_timeout of 300ms"),
        "{drain}"
    );
}

#[test]
fn an_example_plugin_passes_and_a_stream_too_short_to_cancel_is_skipped_with_why() {
    let (_dir, mut config) = own_copy("stubs");
    config.config = serde_json::json!({ "workload": { "working_set_mb": [8], "cpu_duty": 0.0 } });
    let report = check(config, &CheckOptions::default());
    passes(&report);
    let cancel = report.step("cancel").unwrap();
    assert!(cancel.skipped);
    assert!(
        cancel
            .detail
            .contains("came in 1 part: too few to cancel one midway"),
        "{}",
        cancel.detail
    );
    let memory = &report.step("memory at level 0 (full)").unwrap().detail;
    assert!(
        memory.starts_with("holds 8 MiB (what its allocator counts)"),
        "{memory}"
    );
}

#[test]
fn a_file_that_is_no_plugin_fails_the_load_step_and_nothing_runs_after() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("libnothing.so");
    std::fs::write(&file, b"not an ELF file").unwrap();
    let config = ballast_host::check::config_for_file(&file);
    assert_eq!(config.name, "nothing");
    let report = check(config, &CheckOptions::default());
    assert_eq!(failed(&report), ["load"]);
    assert_eq!(report.steps.len(), 1);
}

/// The protocol fixture in `mode`, with short timeouts so that each breach shows quickly.
fn fixture(mode: &str) -> PluginConfig {
    let script: PathBuf = [
        env!("CARGO_MANIFEST_DIR"),
        "tests/fixtures/protocol_plugin.py",
    ]
    .iter()
    .collect();
    let mut config = PluginConfig::process("fixture", "python3");
    config.args = vec![script.display().to_string(), mode.to_owned()];
    config.protocol = Protocol::JsonLines;
    config.levels = vec![
        ballast_host::LevelConfig {
            name: "full".into(),
            memory_mb: 64,
            gpu_memory_mb: 0,
        },
        ballast_host::LevelConfig {
            name: "lean".into(),
            memory_mb: 64,
            gpu_memory_mb: 0,
        },
    ];
    config.start_timeout = Duration::from_secs(2);
    config.stop_timeout = Duration::from_millis(500);
    config.call_timeout = Duration::from_secs(2);
    config.stall_threshold = Some(Duration::from_secs(1));
    config
}

#[test]
fn a_process_that_keeps_the_protocol_passes_every_step() {
    let report = check(fixture("good"), &options("stream 20 5"));
    passes(&report);
    for step in [
        "hello",
        "unknown message ignored",
        "heartbeats",
        "ids answered exactly once",
        "valid messages",
        "exit on end of input",
        "cancel",
        "checkpoint restored",
    ] {
        let found = report
            .step(step)
            .unwrap_or_else(|| panic!("no step `{step}`"));
        assert!(!found.skipped, "{step}: {}", found.detail);
    }
    let detail = &report.step("memory at level 1 (lean)").unwrap().detail;
    assert!(
        detail.contains("resident, 1 process); declares 64 MiB"),
        "{detail}"
    );
}

#[test]
fn a_process_named_by_its_hello_is_checked_under_that_name_when_asked() {
    let mut config = fixture("good");
    config.args.push("weather".into());
    let report = check(config.clone(), &options("ping"));
    assert_eq!(failed(&report), ["create without a checkpoint"]);
    let detail = &report.step("create without a checkpoint").unwrap().detail;
    assert!(
        detail.contains("it says its name is `weather`; make the config name match"),
        "{detail}"
    );
    let learn = CheckOptions {
        name_from_hello: true,
        ..CheckOptions::default()
    };
    let report = check(config, &learn);
    passes(&report);
    assert_eq!(report.plugin, "weather");
}

#[test]
fn a_process_that_never_says_hello_fails_the_hello_step() {
    let report = check(fixture("no-hello"), &options("ping"));
    fails_at(&report, &["hello"], "did not say hello within 2s");
}

#[test]
fn a_process_that_answers_a_call_twice_fails_ids_answered_exactly_once() {
    let report = check(fixture("answer-twice"), &options("ping"));
    fails_at(
        &report,
        &["ids answered exactly once"],
        "answered more than once: call 1 (2 answers)",
    );
}

#[test]
fn a_process_that_never_answers_a_call_fails_the_call_step() {
    let report = check(fixture("never-answer"), &options("ping"));
    let failures = failed(&report);
    assert_eq!(failures[0], "call", "{}", report.render());
    // The host's wait and the process call's deadline are both its call_timeout: either may
    // say so first.
    let detail = &report.step("call").unwrap().detail;
    assert!(
        detail.contains("did not answer within 2000 ms")
            || detail.contains("no answer to the call request within 2s"),
        "{detail}"
    );
}

#[test]
fn a_process_that_dies_on_an_unknown_message_fails_that_step() {
    let report = check(fixture("die-on-unknown"), &options("ping"));
    let failures = failed(&report);
    assert_eq!(
        failures[0],
        "unknown message ignored",
        "{}",
        report.render()
    );
    let detail = &report.step("unknown message ignored").unwrap().detail;
    assert!(
        detail.starts_with(
            "after a message of a type it does not know its process exited with status 1"
        ),
        "{detail}"
    );
}

#[test]
fn a_process_that_outlives_the_end_of_its_input_fails_exit_on_end_of_input() {
    let report = check(fixture("ignore-eof"), &options("ping"));
    fails_at(
        &report,
        &["exit on end of input"],
        "3 of its 3 processes did not exit within 500ms of the end of its stdin (its stop_timeout), so it took SIGTERM",
    );
}

#[test]
fn a_process_that_sends_no_heartbeat_fails_the_heartbeats_step() {
    let report = check(fixture("no-heartbeat"), &options("ping"));
    fails_at(
        &report,
        &["heartbeats"],
        "no heartbeat within its stall threshold of 1s after its hello",
    );
}

#[test]
fn a_process_that_streams_on_after_a_cancel_fails_the_cancel_step() {
    let report = check(fixture("ignore-cancel"), &options("stream 60 20"));
    fails_at(&report, &["cancel"], "it does not honour cancellation");
}

#[test]
fn a_process_that_prints_on_stdout_fails_valid_messages() {
    let report = check(fixture("bad-line"), &options("ping"));
    fails_at(
        &report,
        &["valid messages"],
        "not protocol messages (stdout carries only protocol lines; log to stderr): `debug: started`",
    );
}

#[test]
fn a_process_that_holds_more_than_its_config_declares_fails_the_memory_steps() {
    let mut config = fixture("good");
    config.levels[0].memory_mb = 1;
    let report = check(config, &options("ping"));
    fails_at(
        &report,
        &["memory at level 0 (full)"],
        "more than the 1 MiB it declares: the scaler counts what it holds",
    );
}

/// A C plugin that does not declare thread-safe calls, whose calls take a moment.
const SERIAL_PLUGIN: &str = r#"
#include <time.h>
#include "ballast_plugin.h"
static int instance;
static BallastStatus ok(void *i, BallastMessageBuf *e) { (void)i; (void)e; return BALLAST_STATUS_OK; }
static BallastStatus create(const BallastHostApi *h, BallastBytes c, BallastBytes k, void **o, BallastMessageBuf *e) {
    (void)h; (void)c; (void)k; (void)e; *o = &instance; return BALLAST_STATUS_OK; }
static BallastStatus level(void *i, uint32_t l, BallastMessageBuf *e) { (void)i; (void)l; (void)e; return BALLAST_STATUS_OK; }
static BallastStatus drain(void *i, uint64_t d, BallastMessageBuf *e) { (void)i; (void)d; (void)e; return BALLAST_STATUS_OK; }
static BallastStatus call(void *i, BallastBytes r, BallastBuffer *o, BallastMessageBuf *e) {
    (void)i; (void)r; (void)e; struct timespec pause = {0, 2 * 1000 * 1000}; nanosleep(&pause, NULL);
    o->ptr = 0; o->len = 0; o->owner = 0; return BALLAST_STATUS_OK; }
static void release(BallastBuffer b) { (void)b; }
static BallastStatus health(void *i, BallastMessageBuf *m) { (void)i; (void)m; return BALLAST_STATUS_OK; }
static BallastStatus stats(void *i, BallastStats *s) { (void)i; (void)s; return BALLAST_STATUS_OK; }
static const BallastPluginVTable VT = { .struct_size = sizeof(BallastPluginVTable), .create = create, .start = ok,
    .set_level = level, .drain = drain, .stop = ok, .destroy = ok, .call = call, .free_buffer = release,
    .health = health, .stats = stats };
static const BallastLevelHints LEVELS[1] = { { .name = { (const uint8_t *)"full", 4 } } };
static const BallastPluginDescriptor D = {
    .header = { .magic = BALLAST_PLUGIN_MAGIC, .abi_major = 1, .abi_minor = 0,
                .struct_size = sizeof(BallastPluginDescriptor), .name = { (const uint8_t *)"serial", 6 } },
    .version = { (const uint8_t *)"1", 1 }, .sdk_version = { (const uint8_t *)"c", 1 },
    .capabilities = 0, .hints = { .n_levels = 1, .levels = LEVELS }, .vtable = &VT };
const BallastPluginDescriptor *ballast_plugin_entry_v1(void) { return &D; }
"#;

#[test]
fn a_plugin_without_thread_safe_calls_gets_them_one_at_a_time() {
    let file = crate::support::c_library("serial", SERIAL_PLUGIN);
    let report = check(
        ballast_host::check::config_for_file(&file),
        &CheckOptions::default(),
    );
    passes(&report);
    let detail = &report.step("concurrent calls").unwrap().detail;
    assert!(
        detail.ends_with(
            "all answered; at most 1 inside the plugin at once (it does not declare thread-safe calls: the host ran them one at a time)"
        ),
        "{detail}"
    );
    // A plugin without a checkpoint, a stream or a count of its memory has those skipped.
    for step in [
        "memory at level 0 (full)",
        "streamed call",
        "checkpoint restored",
    ] {
        assert!(report.step(step).unwrap().skipped, "{step}");
    }
}
