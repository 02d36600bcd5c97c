//! `ballast plugin inspect` as a plugin author uses it: every example plugin passes, a bad file
//! fails with a message naming it and a non-zero exit.

use crate::support::{ballast, plugin_dir};

#[test]
fn every_example_plugin_is_accepted_with_its_descriptor() {
    for name in ["voice", "android", "discord", "stubs", "clock"] {
        let file = plugin_dir().join(format!("lib{name}.so"));
        let out = ballast()
            .args(["plugin", "inspect", "--json"])
            .arg(&file)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let info: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(info["name"], name);
        assert_eq!(info["abi"], "1.1");
        assert!(info["levels"].as_array().is_some_and(|l| !l.is_empty()));
        assert_eq!(info["sha256"].as_str().map(str::len), Some(64));
    }
    let out = ballast()
        .args(["plugin", "inspect"])
        .arg(plugin_dir().join("libvoice.so"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("large-model") && text.contains("small-model"),
        "{text}"
    );
}

#[test]
fn bad_files_are_refused_with_the_reason_and_a_non_zero_exit() {
    let dir = tempfile::tempdir().unwrap();
    let text = dir.path().join("libnotes.so");
    std::fs::write(&text, "not a library").unwrap();
    let full = std::fs::read(plugin_dir().join("libstubs.so")).unwrap();
    let truncated = dir.path().join("libstubs.so");
    std::fs::write(&truncated, &full[..full.len() / 3]).unwrap();
    let cases = [
        (text, "is not a shared object"),
        (truncated, "truncated"),
        (dir.path().join("libmissing.so"), "cannot read plugin file"),
        (
            std::path::PathBuf::from("/lib/x86_64-linux-gnu/libc.so.6"),
            "does not export `ballast_plugin_entry_v1`",
        ),
    ];
    for (file, expected) in cases {
        if !file.exists() && !expected.starts_with("cannot read") {
            continue; // libc lives elsewhere on other architectures
        }
        let out = ballast()
            .args(["plugin", "inspect"])
            .arg(&file)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{}", file.display());
        assert!(
            stderr.contains(expected),
            "{}: expected `{expected}` in {stderr}",
            file.display()
        );
        assert!(
            stderr.contains(&*file.to_string_lossy()),
            "the error names the file: {stderr}"
        );
    }
    let pinned = ballast()
        .args(["plugin", "inspect", "--sha256", &"0".repeat(64)])
        .arg(plugin_dir().join("libstubs.so"))
        .output()
        .unwrap();
    assert!(!pinned.status.success());
    assert!(String::from_utf8_lossy(&pinned.stderr).contains("refusing to load it"));
}
