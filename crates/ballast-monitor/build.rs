//! Builds the fake `libnvidia-ml.so` the tests load through nvml-wrapper, from
//! `tests/fake_nvml/fake_nvml.c`. A missing C compiler only costs those tests, not the build.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    let source = "tests/fake_nvml/fake_nvml.c";
    println!("cargo:rerun-if-changed={source}");
    println!("cargo:rerun-if-changed=build.rs");
    let Some(out_dir) = std::env::var_os("OUT_DIR").map(PathBuf::from) else {
        println!("cargo:warning=OUT_DIR is not set; the fake NVML library is not built");
        return;
    };
    let output = out_dir.join("fake-nvml").join("libnvidia-ml.so");
    let built = build(source, &output);
    match built {
        Ok(()) => println!("cargo:rustc-env=BALLAST_FAKE_NVML={}", output.display()),
        Err(reason) => {
            println!("cargo:warning=the fake NVML library for tests was not built: {reason}");
            println!("cargo:rustc-env=BALLAST_FAKE_NVML=");
        }
    }
}

fn build(source: &str, output: &std::path::Path) -> Result<(), String> {
    if let Some(dir) = output.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    let compiler = cc::Build::new()
        .cargo_metadata(false)
        .cargo_warnings(false)
        .try_get_compiler()
        .map_err(|e| e.to_string())?;
    let status = Command::new(compiler.path())
        .args(["-shared", "-fPIC", "-O1", "-Wall", "-o"])
        .arg(output)
        .arg(source)
        .status()
        .map_err(|e| format!("{}: {e}", compiler.path().display()))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!(
            "{} exited with {status}",
            compiler.path().display()
        ))
    }
}
