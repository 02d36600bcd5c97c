//! `ballast plugin check` as a plugin author and CI run it: every example plugin passes as the
//! default config describes it (and the faulty one as a file), a plugin that breaks the protocol
//! fails with the step named and exit 1, and a plugin that cannot be described is a usage error
//! (exit 78).

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;

use crate::support::{ballast, plugin_dir};

/// A plugin directory as `cargo xtask plugins` lays it out: the built libraries, and the
/// Python and shell examples in directories of their own.
fn example_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for name in ["voice", "android", "discord", "stubs", "clock", "faulty"] {
        let file = format!("lib{name}.so");
        std::fs::copy(plugin_dir().join(&file), dir.path().join(&file)).unwrap();
    }
    let root = ballast_testkit::plugins::workspace_root();
    for (script, source) in [
        ("indexer/indexer.py", "plugins/python/indexer/indexer.py"),
        (
            "loadwatch/loadwatch.sh",
            "plugins/shell/loadwatch/loadwatch.sh",
        ),
    ] {
        let target = dir.path().join(script);
        std::fs::create_dir_all(target.parent().unwrap()).unwrap();
        std::fs::copy(root.join(source), &target).unwrap();
        std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    // The indexer imports the Python SDK from beside it, as the install step lays it out.
    let sdk = dir.path().join("indexer/ballast_plugin");
    std::fs::create_dir_all(&sdk).unwrap();
    for file in ["__init__.py", "py.typed"] {
        std::fs::copy(
            root.join("sdk/python/ballast_plugin").join(file),
            sdk.join(file),
        )
        .unwrap();
    }
    dir
}

/// Runs `ballast plugin check ARGS --json` with `dir` as the plugin directory; its exit code
/// and report.
fn check(dir: &Path, args: &[&str]) -> (Option<i32>, serde_json::Value, String) {
    let out = ballast()
        .args(["plugin", "check", "--json"])
        .args(args)
        .env("BALLAST_PLUGIN_DIR", dir)
        .env_remove("BALLAST_CONFIG")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let report = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{args:?}: not JSON ({e}): {stderr}"));
    (out.status.code(), report, stderr)
}

#[test]
fn every_example_plugin_passes_as_the_default_config_describes_it() {
    let dir = example_dir();
    let plugins = [
        ("voice", "stream:20:8:5"),
        ("indexer", "ping"),
        ("android", "stream:20:8:5"),
        ("discord", "stream:20:8:5"),
        ("loadwatch", "ping"),
        ("clock", "tick:20:5"),
        ("stubs", "stream:20:8:5"),
    ];
    for (name, stream) in plugins {
        let (code, report, stderr) =
            check(dir.path(), &["--plugin", name, "--stream-request", stream]);
        assert_eq!(code, Some(0), "{name}: {report:#} {stderr}");
        assert_eq!(report["plugin"], name);
        assert_eq!(report["ok"], true);
        let steps = report["steps"].as_array().unwrap();
        for step in steps {
            for field in ["name", "ok", "skipped", "duration_ms", "detail"] {
                assert!(step.get(field).is_some(), "{name}: {step} has no {field}");
            }
        }
    }
    let faulty = dir.path().join("libfaulty.so");
    let (code, report, stderr) = check(
        dir.path(),
        &[faulty.to_str().unwrap(), "--stream-request", "stream 20 5"],
    );
    assert_eq!(code, Some(0), "faulty: {report:#} {stderr}");
    assert_eq!(report["kind"], "native, in-process");
}

#[test]
fn a_process_that_answers_twice_fails_with_the_step_named_and_exit_1() {
    let script = ballast_testkit::plugins::workspace_root()
        .join("crates/ballast-host/tests/fixtures/protocol_plugin.py");
    let out = ballast()
        .args(["plugin", "check", "--name", "twice", "--command", "python3"])
        .arg(&script)
        .arg("answer-twice")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("checking plugin `twice` (process, json-lines protocol)"),
        "{text}"
    );
    assert!(
        text.contains("plugin `twice` breaks the contract: 1 of ")
            && text.contains("  step `ids answered exactly once`: "),
        "{text}"
    );
    // The table's own logs stay out of the way.
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_plugin_that_cannot_be_described_is_a_usage_error() {
    let dir = example_dir();
    let out = ballast()
        .args(["plugin", "check", "--plugin", "nosuch"])
        .env("BALLAST_PLUGIN_DIR", dir.path())
        .env_remove("BALLAST_CONFIG")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(78));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("the config has no plugin `nosuch`; it has voice, indexer, android"),
        "{stderr}"
    );
    let out = ballast()
        .args(["plugin", "check", "--level", "full", "--command", "true"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(78));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--level `full`: write it NAME=MIB"),
        "{stderr}"
    );
    let out = ballast().args(["plugin", "check"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "clap's usage error");
}
