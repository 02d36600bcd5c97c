//! The cost of a call through the host for each way a plugin can run: a native plugin inside
//! the daemon, the same plugin isolated in a `ballast worker` process (the request and answer
//! cross two pipes as JSON lines), and Python process plugins speaking the protocol: a minimal
//! echo (what ballast's protocol path costs) and the `indexer` example (which runs each call on a
//! thread of its own, so it can read a `cancel` meanwhile). The native plugin is the C `clock`
//! example (small, fast calls), so the differences are the overhead.

use std::hint::black_box;
use std::path::PathBuf;
use std::sync::Arc;

use ballast_core::Level;
use ballast_host::{Isolation, PluginConfig, PluginHost, ProcessOptions, Protocol, system_clock};
use ballast_testkit::plugins::workspace_root;
use criterion::{Criterion, criterion_group, criterion_main};

/// A process plugin that answers each call at once on its reading thread: the least a plugin
/// can do with the protocol.
const ECHO: &str = r#"#!/usr/bin/env python3
import json, sys
for line in sys.stdin:
    message = json.loads(line)
    kind = message.get("type")
    if kind == "init":
        print(json.dumps({"type": "hello", "name": "echo", "version": "1", "protocol": 1}), flush=True)
    elif kind == "call":
        print(json.dumps({"type": "response", "id": message["id"], "data": message["data"]}), flush=True)
    elif "id" in message:
        print(json.dumps({"type": "response", "id": message["id"]}), flush=True)
"#;

/// The C `clock` plugin, compiled with optimisations into the target directory.
fn clock_plugin() -> PathBuf {
    let library = ballast_testkit::plugins::target_dir().join("plugin-bench/libclock.so");
    ballast_testkit::plugins::compile_c(
        &workspace_root().join("plugins/c/clock/clock.c"),
        &library,
    );
    library
}

fn host() -> PluginHost {
    PluginHost::with_options(
        system_clock(),
        Arc::new(|_| {}),
        ProcessOptions {
            worker_program: PathBuf::from(env!("CARGO_BIN_EXE_ballast")),
            ..ProcessOptions::default()
        },
    )
}

fn calls(c: &mut Criterion) {
    let library = clock_plugin();
    let mut group = c.benchmark_group("plugin_call");

    let in_process = host();
    let mut config = PluginConfig::new("clock", &library);
    config.config = serde_json::json!({ "working_set_mb": [1, 1] });
    in_process.load(config.clone()).expect("clock loads");
    in_process
        .enable("clock", Level::FULL, "bench")
        .expect("clock starts");
    group.bench_function("native_in_process", |b| {
        b.iter(|| black_box(in_process.call("clock", b"ping").expect("answer")))
    });

    let isolated = host();
    config.isolation = Isolation::Process;
    isolated.load(config).expect("clock loads in a worker");
    isolated
        .enable("clock", Level::FULL, "bench")
        .expect("the worker starts");
    group.bench_function("native_isolated_worker", |b| {
        b.iter(|| black_box(isolated.call("clock", b"ping").expect("answer")))
    });

    let python = host();
    // An empty notes directory: the indexer's search then costs next to nothing.
    let notes = tempfile::tempdir().expect("a notes directory");
    let mut indexer = PluginConfig::process(
        "indexer",
        workspace_root().join("plugins/python/indexer/indexer.py"),
    );
    indexer.protocol = Protocol::JsonLines;
    indexer.config = serde_json::json!({ "notes_dir": notes.path() });
    python.load(indexer).expect("indexer loads");
    python
        .enable("indexer", Level::FULL, "bench")
        .expect("the indexer starts");
    group.bench_function("python_process_plugin", |b| {
        b.iter(|| black_box(python.call("indexer", b"ping").expect("answer")))
    });

    let echo_host = host();
    let echo_path = notes.path().join("echo.py");
    std::fs::write(&echo_path, ECHO).expect("the echo plugin is written");
    std::fs::set_permissions(
        &echo_path,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .expect("the echo plugin is executable");
    let mut echo = PluginConfig::process("echo", &echo_path);
    echo.protocol = Protocol::JsonLines;
    echo_host.load(echo).expect("echo loads");
    echo_host
        .enable("echo", Level::FULL, "bench")
        .expect("echo starts");
    group.bench_function("python_echo_process_plugin", |b| {
        b.iter(|| black_box(echo_host.call("echo", b"ping").expect("answer")))
    });
    group.finish();
    echo_host.disable_all("bench done");
    in_process.disable_all("bench done");
    isolated.disable_all("bench done");
    python.disable_all("bench done");
}

criterion_group!(benches, calls);
criterion_main!(benches);
