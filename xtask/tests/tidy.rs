//! Tidy checks run by plain `cargo test`: every Rust file says what it is for, and the checked-in
//! C header matches a fresh generation from the ABI crate.

use std::path::Path;

fn root() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

#[test]
fn every_rust_file_starts_with_a_doc_line_saying_what_it_is_for() {
    let files = xtask::rust_sources(root());
    assert!(
        files.len() > 20,
        "the walk found too few files: {}",
        files.len()
    );
    let missing: Vec<String> = files
        .iter()
        .filter(|f| {
            let text = std::fs::read_to_string(f).unwrap_or_default();
            !text.starts_with("//! ") || text.lines().next().is_some_and(|l| l.trim().len() < 10)
        })
        .map(|f| f.strip_prefix(root()).unwrap_or(f).display().to_string())
        .collect();
    assert!(
        missing.is_empty(),
        "files without a leading `//!` line: {missing:#?}"
    );
}

#[test]
fn the_checked_in_c_header_is_current() {
    let fresh = xtask::generate_header(root()).expect("cbindgen generates the header");
    let current = std::fs::read(root().join(xtask::HEADER_PATH)).expect("the header is checked in");
    assert!(
        current == fresh,
        "{} differs from a fresh generation: run `cargo xtask header` and commit it",
        xtask::HEADER_PATH
    );
}
