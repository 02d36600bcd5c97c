//! The plugins tests load: the workspace's example plugins, built once per test run into a
//! target directory of their own (the outer cargo holds the lock on the main one), and small C
//! plugins compiled from source against the ABI header.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};

/// Every Rust example plugin, by package.
pub const RUST_PLUGINS: [&str; 5] = [
    "ballast-plugin-voice",
    "ballast-plugin-android",
    "ballast-plugin-discord",
    "ballast-plugin-stubs",
    "ballast-plugin-faulty",
];

/// The workspace's root directory.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap_or_else(|_| Path::new(env!("CARGO_MANIFEST_DIR")).join("../.."))
}

/// The target directory the running test, benchmark or tool was built into: the nearest
/// ancestor of the current executable named `target` (or `CARGO_TARGET_DIR`).
pub fn target_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR") {
        return PathBuf::from(dir);
    }
    let exe = std::env::current_exe().unwrap_or_default();
    exe.ancestors()
        .find(|a| a.file_name().is_some_and(|n| n == "target"))
        .map_or_else(|| workspace_root().join("target"), Path::to_path_buf)
}

/// Builds `packages` (debug profile) into `<target>/plugin-tests` once per process and returns
/// the directory holding the libraries, with the C `clock` example compiled beside them.
///
/// # Panics
///
/// When cargo or the C compiler fails: a test cannot go on without its plugins.
pub fn example_plugins() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let target = target_dir().join("plugin-tests");
        build_rust(&target, &RUST_PLUGINS, false);
        let dir = target.join("debug");
        compile_c(
            &workspace_root().join("plugins/c/clock/clock.c"),
            &dir.join("libclock.so"),
        );
        dir
    })
}

/// Builds the Rust `packages` into `target` (release when asked) and fails loudly if cargo does.
pub fn build_rust(target: &Path, packages: &[&str], release: bool) {
    // One build at a time per process: tests run in parallel threads.
    static BUILD: Mutex<()> = Mutex::new(());
    let _one = BUILD.lock().unwrap_or_else(|p| p.into_inner());
    let mut command = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    command
        .current_dir(workspace_root())
        .args(["build", "--quiet", "--target-dir"])
        .arg(target);
    if release {
        command.arg("--release");
    }
    for package in packages {
        command.args(["-p", package]);
    }
    let status = command.status().expect("cargo runs");
    assert!(status.success(), "building {packages:?} failed");
}

/// Compiles the C plugin `source` into the shared library `out` against the ABI header, with
/// warnings as errors.
pub fn compile_c(source: &Path, out: &Path) {
    if let Some(dir) = out.parent() {
        std::fs::create_dir_all(dir).expect("the output directory can be created");
    }
    let status = Command::new(std::env::var("CC").unwrap_or_else(|_| "cc".into()))
        .args([
            "-std=c11",
            "-shared",
            "-fPIC",
            "-O2",
            "-Wall",
            "-Wextra",
            "-Werror",
            "-Wno-unused-function",
            "-pthread",
            "-I",
        ])
        .arg(workspace_root().join("crates/ballast-abi/include"))
        .arg("-o")
        .arg(out)
        .arg(source)
        .status()
        .expect("cc runs");
    assert!(status.success(), "compiling {} failed", source.display());
}

/// Compiles C `code` (a whole plugin, including the header) into `lib<name>.so` under
/// `<target>/plugin-tests/c`, once per name and process (a fresh build each run, so a test that
/// damaged a library on purpose leaves nothing behind); returns the library's path.
pub fn c_plugin(name: &str, code: &str) -> PathBuf {
    static BUILT: Mutex<BTreeMap<String, PathBuf>> = Mutex::new(BTreeMap::new());
    let mut built = BUILT.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(path) = built.get(name) {
        return path.clone();
    }
    let dir = target_dir().join("plugin-tests/c");
    std::fs::create_dir_all(&dir).expect("the C plugin directory can be created");
    let source = dir.join(format!("{name}.c"));
    std::fs::write(&source, code).expect("the C source can be written");
    let library = dir.join(format!("lib{name}.so"));
    compile_c(&source, &library);
    built.insert(name.to_owned(), library.clone());
    library
}

/// A C plugin named `nop` that does nothing, as fast as a plugin can: thread-safe calls that
/// answer empty, one level. For measuring what ballast adds around a plugin.
pub const NOP_PLUGIN: &str = r#"
#include "ballast_plugin.h"
static int instance;
static BallastStatus ok(void *i, BallastMessageBuf *e) { (void)i; (void)e; return BALLAST_STATUS_OK; }
static BallastStatus create(const BallastHostApi *h, BallastBytes c, BallastBytes k, void **o, BallastMessageBuf *e) {
    (void)h; (void)c; (void)k; (void)e; *o = &instance; return BALLAST_STATUS_OK; }
static BallastStatus level(void *i, uint32_t l, BallastMessageBuf *e) { (void)i; (void)l; (void)e; return BALLAST_STATUS_OK; }
static BallastStatus drain(void *i, uint64_t d, BallastMessageBuf *e) { (void)i; (void)d; (void)e; return BALLAST_STATUS_OK; }
static BallastStatus call(void *i, BallastBytes r, BallastBuffer *o, BallastMessageBuf *e) {
    (void)i; (void)r; (void)e; o->ptr = 0; o->len = 0; o->owner = 0; return BALLAST_STATUS_OK; }
static void release(BallastBuffer b) { (void)b; }
static BallastStatus health(void *i, BallastMessageBuf *m) { (void)i; (void)m; return BALLAST_STATUS_OK; }
static BallastStatus stats(void *i, BallastStats *s) { (void)i; (void)s; return BALLAST_STATUS_OK; }
static const BallastPluginVTable VT = { .struct_size = sizeof(BallastPluginVTable), .create = create, .start = ok,
    .set_level = level, .drain = drain, .stop = ok, .destroy = ok, .call = call, .free_buffer = release,
    .health = health, .stats = stats };
static const BallastLevelHints LEVELS[1] = { { .name = { (const uint8_t *)"full", 4 } } };
static const BallastPluginDescriptor D = {
    .header = { .magic = BALLAST_PLUGIN_MAGIC, .abi_major = 1, .abi_minor = 0,
                .struct_size = sizeof(BallastPluginDescriptor), .name = { (const uint8_t *)"nop", 3 } },
    .version = { (const uint8_t *)"1", 1 }, .sdk_version = { (const uint8_t *)"c", 1 },
    .capabilities = BALLAST_CAP_THREAD_SAFE_CALLS, .hints = { .n_levels = 1, .levels = LEVELS }, .vtable = &VT };
const BallastPluginDescriptor *ballast_plugin_entry_v1(void) { return &D; }
"#;

/// [`NOP_PLUGIN`], compiled (optimised) once per process.
pub fn nop_plugin() -> PathBuf {
    c_plugin("nop", NOP_PLUGIN)
}
