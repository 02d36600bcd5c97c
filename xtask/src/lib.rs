//! What `cargo xtask` and the workspace's own tidy tests share: header generation and source checks.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

/// Where the generated C header lives, relative to the workspace root.
pub const HEADER_PATH: &str = "crates/ballast-abi/include/ballast_plugin.h";

/// Generates `ballast_plugin.h` from the ABI crate with cbindgen.
pub fn generate_header(root: &Path) -> Result<Vec<u8>> {
    let crate_dir = root.join("crates/ballast-abi");
    let config = cbindgen::Config::from_file(crate_dir.join("cbindgen.toml"))
        .map_err(|e| anyhow::anyhow!("cannot read crates/ballast-abi/cbindgen.toml: {e}"))?;
    let bindings = cbindgen::Builder::new()
        .with_crate(&crate_dir)
        .with_config(config)
        .generate()
        .context("cbindgen could not generate the header")?;
    let mut out = Vec::new();
    bindings.write(&mut out);
    Ok(out)
}

/// Every `.rs` file of the project (crates, plugins, xtask, tests, fuzz), build outputs excluded.
pub fn rust_sources(root: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut stack: Vec<PathBuf> = ["crates", "plugins", "xtask", "tests", "fuzz"]
        .iter()
        .map(|d| root.join(d))
        .collect();
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if path.is_dir() {
                if !name.starts_with("target") && !name.starts_with('.') {
                    stack.push(path);
                }
            } else if name.ends_with(".rs") {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}
