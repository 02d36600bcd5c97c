//! A plugin file that someone besides root and the daemon's user could have written is refused
//! before `dlopen` runs any of its code, with the file, its mode and who may write it.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use ballast_host::{FileTrust, LoadError, PluginLibrary, TrustProblem};

use crate::support::{c_library, rust_plugins};

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// A library whose initialiser (run by `dlopen`) creates `marker`, copied into a private
/// directory of its own: the plugin's code ran if and only if the marker exists.
fn library_that_leaves_a_marker(name: &str, marker: &Path) -> (tempfile::TempDir, PathBuf) {
    let source = format!(
        r#"#include <stdio.h>
__attribute__((constructor)) static void loaded(void) {{
    FILE *f = fopen("{}", "w");
    if (f) fclose(f);
}}
"#,
        marker.display()
    );
    let built = c_library(name, &source);
    let dir = tempfile::tempdir().unwrap();
    chmod(dir.path(), 0o755);
    let file = dir.path().join(format!("lib{name}.so"));
    std::fs::copy(&built, &file).unwrap();
    chmod(&file, 0o755);
    (dir, file)
}

#[test]
fn a_plugin_file_others_may_write_is_refused_before_its_code_runs() {
    let markers = tempfile::tempdir().unwrap();
    let marker = markers.path().join("ran");
    let (_dir, file) = library_that_leaves_a_marker("groupwritable", &marker);
    chmod(&file, 0o775);
    let error = PluginLibrary::load(&file, None).unwrap_err();
    let LoadError::Untrusted { problem, .. } = &error else {
        panic!("expected an untrusted-file error, got {error}");
    };
    assert_eq!(problem.problem, TrustProblem::Writable);
    let text = error.to_string();
    assert!(
        text.starts_with(&format!("refusing to load plugin file {}", file.display())),
        "{text}"
    );
    assert!(text.contains("(mode 0775, owner uid"), "{text}");
    assert!(text.contains("is writable by its group"), "{text}");
    assert!(!marker.exists(), "the plugin's initialiser ran");

    // Once only its owner may write it, it loads (and its initialiser runs, so the marker shows
    // the test would see it); it is no plugin, which is the next check's business.
    chmod(&file, 0o755);
    let error = PluginLibrary::load(&file, None).unwrap_err();
    assert!(matches!(error, LoadError::MissingEntry { .. }), "{error}");
    assert!(marker.exists(), "the plugin's initialiser did not run");
}

#[test]
fn a_plugin_in_a_directory_others_may_write_is_refused() {
    let markers = tempfile::tempdir().unwrap();
    let marker = markers.path().join("ran");
    let (dir, file) = library_that_leaves_a_marker("opendir", &marker);
    chmod(dir.path(), 0o1777);
    let error = PluginLibrary::load(&file, None).unwrap_err();
    let text = error.to_string();
    assert!(
        text.contains(&format!("directory {} (mode 1777", dir.path().display())),
        "{text}"
    );
    assert!(
        text.contains("writable by its group and all other users"),
        "{text}"
    );
    assert!(!marker.exists(), "the plugin's initialiser ran");
}

#[test]
fn a_plugin_owned_by_another_user_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    chmod(dir.path(), 0o755);
    let file = dir.path().join("libstubs.so");
    std::fs::copy(rust_plugins().join("libstubs.so"), &file).unwrap();
    chmod(&file, 0o755);
    let owner = std::fs::metadata(&file).map(|m| {
        use std::os::unix::fs::MetadataExt;
        m.uid()
    });
    let owner = owner.unwrap();
    let (trust, stranger) = if owner == 0 {
        // As root: give the file to another user; a daemon running as root refuses it.
        std::os::unix::fs::chown(&file, Some(4242), None).unwrap();
        (FileTrust::for_uid(0), 4242)
    } else {
        // Not root: a daemon running as someone else refuses our file.
        (FileTrust::for_uid(owner + 1), owner)
    };
    let error = PluginLibrary::load_trusting(&file, None, trust).unwrap_err();
    let text = error.to_string();
    assert!(
        text.contains(&format!(
            "is owned by uid {stranger}, who is neither root nor the daemon's user"
        )),
        "{text}"
    );
    // The daemon of the file's owner loads it.
    let library = PluginLibrary::load_trusting(&file, None, FileTrust::for_uid(stranger)).unwrap();
    assert_eq!(library.info().name, "stubs");
}
