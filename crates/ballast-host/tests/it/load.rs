//! Every kind of bad plugin file is refused with an error naming the file and the reason.

use ballast_host::{HostError, LoadError, PluginConfig, PluginLibrary};

use crate::support::{c_library, clock_plugin, faulty, host, rust_plugin, rust_plugins};

/// A C descriptor with the given header fields, vtable and entry symbol name.
fn c_descriptor(
    name: &str,
    entry: &str,
    magic: &str,
    major: u32,
    struct_size: &str,
    vtable: &str,
) -> String {
    format!(
        r#"#include "ballast_plugin.h"
static BallastStatus ok(void *i, BallastMessageBuf *e) {{ (void)i; (void)e; return BALLAST_STATUS_OK; }}
static BallastStatus create(const BallastHostApi *h, BallastBytes c, BallastBytes k, void **o, BallastMessageBuf *e) {{
    (void)h; (void)c; (void)k; (void)e; static int x; *o = &x; return BALLAST_STATUS_OK; }}
static BallastStatus level(void *i, uint32_t l, BallastMessageBuf *e) {{ (void)i; (void)l; (void)e; return BALLAST_STATUS_OK; }}
static BallastStatus drain(void *i, uint64_t d, BallastMessageBuf *e) {{ (void)i; (void)d; (void)e; return BALLAST_STATUS_OK; }}
static BallastStatus call(void *i, BallastBytes r, BallastBuffer *o, BallastMessageBuf *e) {{
    (void)i; (void)r; (void)e; o->ptr = 0; o->len = 0; return BALLAST_STATUS_OK; }}
static void release(BallastBuffer b) {{ (void)b; }}
static BallastStatus health(void *i, BallastMessageBuf *m) {{ (void)i; (void)m; return BALLAST_STATUS_OK; }}
static BallastStatus stats(void *i, BallastStats *s) {{ (void)i; (void)s; return BALLAST_STATUS_OK; }}
static const BallastPluginVTable VT = {{ .struct_size = sizeof(BallastPluginVTable), .create = create, .start = ok,
    .set_level = level, .drain = drain, .stop = ok, .destroy = ok, .call = {vtable}, .free_buffer = release,
    .health = health, .stats = stats }};
static const BallastLevelHints LEVELS[1] = {{ {{ .name = {{ (const uint8_t *)"full", 4 }} }} }};
static const BallastPluginDescriptor D = {{
    .header = {{ .magic = {magic}, .abi_major = {major}, .abi_minor = 1, .struct_size = {struct_size},
                 .name = {{ (const uint8_t *)"{name}", sizeof("{name}") - 1 }} }},
    .version = {{ (const uint8_t *)"0.1", 3 }}, .sdk_version = {{ (const uint8_t *)"test", 4 }},
    .hints = {{ .n_levels = 1, .levels = LEVELS }}, .vtable = &VT }};
const BallastPluginDescriptor *{entry}(void) {{ return &D; }}
"#
    )
}

fn load_error(path: &std::path::Path) -> String {
    let error = PluginLibrary::load(path, None).expect_err("the file must be refused");
    let text = error.to_string();
    assert!(
        text.contains(&path.display().to_string())
            || text.contains(path.file_name().unwrap().to_str().unwrap()),
        "error does not name the file: {text}"
    );
    text
}

#[test]
fn the_c_example_plugin_loads_and_declares_its_levels() {
    let library = PluginLibrary::load(&clock_plugin(), None).unwrap();
    let info = library.info();
    assert_eq!(info.name, "clock");
    assert_eq!(info.abi, "1.1");
    assert_eq!(info.levels.len(), 2);
    assert_eq!(info.levels[1].name, "utc-only");
    assert!(library.thread_safe_calls());
}

#[test]
fn a_text_file_is_not_a_shared_object() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("libnotes.so");
    std::fs::write(&path, "these are not the instructions you are looking for").unwrap();
    assert!(load_error(&path).contains("is not a shared object"));
}

#[test]
fn a_missing_file_says_so() {
    let error = load_error(std::path::Path::new("/nonexistent/libghost.so"));
    assert!(
        error.contains("cannot read plugin file /nonexistent/libghost.so"),
        "{error}"
    );
}

#[test]
fn a_truncated_library_is_refused_before_dlopen() {
    let full = std::fs::read(rust_plugins().join("libvoice.so")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("libvoice.so");
    std::fs::write(&path, &full[..full.len() / 2]).unwrap();
    let error = load_error(&path);
    assert!(error.contains("truncated"), "{error}");
}

#[test]
fn a_library_without_the_entry_symbol_is_not_a_plugin() {
    let path = c_library("noentry", "int answer(void) { return 42; }\n");
    let error = load_error(&path);
    assert!(
        error.contains("does not export `ballast_plugin_entry_v1`"),
        "{error}"
    );
}

#[test]
fn wrong_magic_is_refused() {
    let source = c_descriptor(
        "magicless",
        "ballast_plugin_entry_v1",
        "0x1234",
        1,
        "sizeof(BallastPluginDescriptor)",
        "call",
    );
    let error = load_error(&c_library("magicless", &source));
    assert!(error.contains("wrong magic 0x0000000000001234"), "{error}");
}

#[test]
fn another_abi_major_is_named_with_the_supported_range() {
    let source = c_descriptor(
        "future",
        "ballast_plugin_entry_v2",
        "BALLAST_PLUGIN_MAGIC",
        2,
        "sizeof(BallastPluginDescriptor)",
        "call",
    );
    let path = c_library("future", &source);
    let error = load_error(&path);
    assert_eq!(
        error,
        "plugin future (libfuture.so) was built for ABI 2.1; this ballast supports ABI 1.0-1.1"
    );
}

#[test]
fn a_descriptor_smaller_than_abi_1_0_is_refused() {
    let source = c_descriptor(
        "tiny",
        "ballast_plugin_entry_v1",
        "BALLAST_PLUGIN_MAGIC",
        1,
        "16",
        "call",
    );
    let error = load_error(&c_library("tiny", &source));
    assert!(
        error.contains("the descriptor is 16 bytes, smaller than the 112 bytes of ABI 1.0"),
        "{error}"
    );
}

#[test]
fn a_function_table_without_call_is_refused() {
    let source = c_descriptor(
        "mute",
        "ballast_plugin_entry_v1",
        "BALLAST_PLUGIN_MAGIC",
        1,
        "sizeof(BallastPluginDescriptor)",
        "0",
    );
    let error = load_error(&c_library("mute", &source));
    assert!(
        error.contains("function table lacks required functions: call"),
        "{error}"
    );
}

#[test]
fn a_sha256_pin_is_checked_before_loading() {
    let path = rust_plugins().join("libstubs.so");
    let error = PluginLibrary::load(&path, Some(&"0".repeat(64))).unwrap_err();
    assert!(
        matches!(error, LoadError::ChecksumMismatch { .. }),
        "{error}"
    );
    let actual = ballast_host::sha256_file(&path).unwrap();
    assert_eq!(
        PluginLibrary::load(&path, None).unwrap().info().sha256,
        None,
        "no pin, no hashing"
    );
    assert!(PluginLibrary::load(&path, Some(&actual.to_uppercase())).is_ok());
}

#[test]
fn a_duplicate_name_is_refused_and_the_first_stays() {
    let (host, _) = host();
    host.load(rust_plugin("stubs")).unwrap();
    let error = host.load(rust_plugin("stubs")).unwrap_err();
    assert!(matches!(error, HostError::Duplicate { .. }), "{error}");
    assert!(
        error.to_string().contains("plugin `stubs` is loaded twice"),
        "{error}"
    );
    assert_eq!(host.names(), vec!["stubs".to_owned()]);
}

#[test]
fn a_config_name_that_differs_from_the_file_is_refused() {
    let (host, _) = host();
    let mut config = PluginConfig::new("speech", rust_plugins().join("libvoice.so"));
    config.priority = 1;
    let error = host.load(config).unwrap_err().to_string();
    assert!(error.contains("declares the name `voice`"), "{error}");
}

#[test]
fn create_failure_and_create_panic_mark_the_plugin_failed_and_the_host_lives_on() {
    for (faults, expected) in [
        (
            serde_json::json!({ "fail_in": "create" }),
            "configured to fail in create",
        ),
        (
            serde_json::json!({ "panic_in": "create" }),
            "plugin panicked: faulty: configured to panic in create",
        ),
    ] {
        let (host, _) = host();
        host.load(faulty(faults)).unwrap();
        let error = host
            .enable("faulty", ballast_core::Level::FULL, "test")
            .unwrap_err()
            .to_string();
        assert!(error.contains(expected), "{error}");
        let status = host.status("faulty").unwrap();
        assert_eq!(status.state.name(), "failed");
    }
}
