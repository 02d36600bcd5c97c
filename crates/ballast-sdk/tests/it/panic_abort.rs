//! `export_plugin!` refuses a plugin built with `panic = "abort"`: a tiny plugin crate is
//! checked by cargo in a temporary directory, once with `panic = "abort"` (refused, with the
//! reason) and once with the default `panic = "unwind"` (accepted).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The SDK's source, which the probe crate depends on by path.
const SDK: &str = env!("CARGO_MANIFEST_DIR");

const PLUGIN: &str = r#"//! A minimal plugin.
use ballast_sdk::{export_plugin, CreateContext, LevelInfo, Plugin, PluginError, PluginInfo};

pub struct Probe;

impl Plugin for Probe {
    const INFO: PluginInfo = PluginInfo {
        name: "probe",
        version: "0.1.0",
        levels: &[LevelInfo::new("full", 1 << 20)],
        cpu_share: 0.01,
        needs_gpu: false,
    };

    fn create(_ctx: CreateContext<'_>) -> Result<Self, PluginError> {
        Ok(Probe)
    }

    fn call(&self, request: &[u8]) -> Result<Vec<u8>, PluginError> {
        Ok(request.to_vec())
    }
}

export_plugin!(Probe);
"#;

/// Where the probe's build goes: a folder of the workspace's target directory (the test binary
/// is `<target>/<profile>/deps/it-*`), so that a second run reuses it.
fn probe_target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary has a path");
    exe.ancestors()
        .nth(3)
        .map_or_else(std::env::temp_dir, Path::to_path_buf)
        .join("sdk-probes")
}

/// Writes the probe crate into `dir` with `panic` as the dev profile's panic strategy and runs
/// `cargo check` on it.
fn check_probe(dir: &Path, panic: &str) -> Output {
    let manifest = format!(
        r#"[package]
name = "abort-probe"
version = "0.1.0"
edition = "2024"
publish = false

[lib]
crate-type = ["cdylib"]

[dependencies]
ballast-sdk = {{ path = "{SDK}" }}

[workspace]

[profile.dev]
panic = "{panic}"
"#
    );
    std::fs::create_dir_all(dir.join("src")).unwrap();
    std::fs::write(dir.join("Cargo.toml"), manifest).unwrap();
    std::fs::write(dir.join("src/lib.rs"), PLUGIN).unwrap();
    // The workspace's lock file pins the same versions this workspace builds with, so the check
    // needs no registry look-up.
    std::fs::copy(
        Path::new(SDK).join("../../Cargo.lock"),
        dir.join("Cargo.lock"),
    )
    .unwrap();
    Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned()))
        .args(["check", "--quiet", "--manifest-path"])
        .arg(dir.join("Cargo.toml"))
        .env("CARGO_TARGET_DIR", probe_target_dir())
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .output()
        .expect("cargo runs")
}

#[test]
fn a_plugin_built_with_panic_abort_does_not_compile_and_says_why() {
    let dir = tempfile::tempdir().unwrap();

    let refused = check_probe(dir.path(), "abort");
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        !refused.status.success(),
        "checked with panic = abort:\n{stderr}"
    );
    assert!(
        stderr.contains("a ballast plugin cannot be built with `panic = \"abort\"`")
            && stderr.contains("its panics would abort the ballast daemon"),
        "{stderr}"
    );

    let accepted = check_probe(dir.path(), "unwind");
    assert!(
        accepted.status.success(),
        "the same plugin with panic = unwind:\n{}",
        String::from_utf8_lossy(&accepted.stderr)
    );
}
