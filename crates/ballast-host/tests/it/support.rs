//! The plugin files the tests load (the workspace's test kit builds them) and a host that records
//! its events.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use ballast_core::Timestamp;
use ballast_core::plugin::PluginEvent;
use ballast_host::{PluginConfig, PluginHost};

/// The directory holding the Rust example plugins, built once per test run.
pub fn rust_plugins() -> &'static Path {
    ballast_testkit::plugins::example_plugins()
}

/// Compiles `source` (C) into a shared library named `lib<name>.so` and returns its path.
pub fn c_library(name: &str, source: &str) -> PathBuf {
    ballast_testkit::plugins::c_plugin(name, source)
}

/// The C example plugin, compiled from plugins/c/clock.
pub fn clock_plugin() -> PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let source = std::fs::read_to_string(
            ballast_testkit::plugins::workspace_root().join("plugins/c/clock/clock.c"),
        )
        .expect("clock.c");
        c_library("clock", &source)
    })
    .clone()
}

/// A host with a fixed clock that records every event.
pub fn host() -> (PluginHost, Arc<Mutex<Vec<PluginEvent>>>) {
    let events: Arc<Mutex<Vec<PluginEvent>>> = Arc::default();
    let sink = Arc::clone(&events);
    let host = PluginHost::new(
        Arc::new(|| Timestamp::from_secs(1_700_000_000)),
        Arc::new(move |e| sink.lock().unwrap().push(e)),
    );
    (host, events)
}

/// A config for one of the Rust test plugins with a small working set.
pub fn rust_plugin(name: &str) -> PluginConfig {
    let mut c = PluginConfig::new(name, rust_plugins());
    c.config = serde_json::json!({ "workload": { "working_set_mb": [8, 1], "cpu_duty": 0.0 } });
    c
}

/// A config for the faulty plugin with `faults` as its config.
pub fn faulty(faults: serde_json::Value) -> PluginConfig {
    let mut c = PluginConfig::new("faulty", rust_plugins());
    c.config = faults;
    c
}

/// Runs `f` and returns its result with what it logged on this thread (tracing, plain text).
pub fn logged<T>(f: impl FnOnce() -> T) -> (T, String) {
    #[derive(Clone, Default)]
    struct Capture(Arc<Mutex<Vec<u8>>>);
    impl std::io::Write for Capture {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let capture = Capture::default();
    let writer = capture.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let result = tracing::subscriber::with_default(subscriber, f);
    let text = String::from_utf8_lossy(&capture.0.lock().unwrap()).into_owned();
    (result, text)
}
