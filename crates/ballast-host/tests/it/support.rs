//! Builds the plugin files the tests load: the Rust plugins with cargo (into their own target
//! directory, since the outer cargo holds the main one) and the C fixtures with the system `cc`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex, OnceLock};

use ballast_core::Timestamp;
use ballast_core::plugin::PluginEvent;
use ballast_host::{PluginConfig, PluginHost};

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The directory holding the Rust example plugins, built once per test run.
pub fn rust_plugins() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let exe = std::env::current_exe().expect("test binary path");
        // target/<profile>/deps/it-<hash> -> target/plugin-tests
        let target = exe
            .ancestors()
            .nth(3)
            .expect("target directory")
            .join("plugin-tests");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
        let status = Command::new(cargo)
            .current_dir(workspace_root())
            .args(["build", "--quiet", "--target-dir"])
            .arg(&target)
            .args([
                "-p",
                "ballast-plugin-voice",
                "-p",
                "ballast-plugin-stubs",
                "-p",
                "ballast-plugin-faulty",
            ])
            .status()
            .expect("cargo runs");
        assert!(status.success(), "building the test plugins failed");
        target.join("debug")
    })
}

/// Compiles `source` (C) into a shared library named `lib<name>.so` and returns its path.
pub fn c_library(name: &str, source: &str) -> PathBuf {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    let dir = DIR.get_or_init(|| tempfile::tempdir().expect("temp dir"));
    let c_file = dir.path().join(format!("{name}.c"));
    let so_file = dir.path().join(format!("lib{name}.so"));
    std::fs::write(&c_file, source).expect("write C source");
    let status = Command::new(std::env::var("CC").unwrap_or_else(|_| "cc".to_owned()))
        .args([
            "-std=c11",
            "-shared",
            "-fPIC",
            "-Wall",
            "-Werror",
            "-Wno-unused-function",
            "-pthread",
            "-I",
        ])
        .arg(workspace_root().join("crates/ballast-abi/include"))
        .arg("-o")
        .arg(&so_file)
        .arg(&c_file)
        .status()
        .expect("cc runs");
    assert!(status.success(), "compiling {name}.c failed");
    so_file
}

/// The C example plugin, compiled from plugins/c/clock.
pub fn clock_plugin() -> PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let source = std::fs::read_to_string(workspace_root().join("plugins/c/clock/clock.c"))
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
