//! Loading a plugin file and validating its descriptor: every way a file can be wrong becomes a
//! [`LoadError`] naming the file, never a crash.

use std::path::{Path, PathBuf};

use ballast_abi::{
    BALLAST_ABI_MAJOR, BALLAST_ABI_MINOR, BALLAST_CAP_ALLOC_STATS, BALLAST_CAP_CHECKPOINT,
    BALLAST_CAP_DRAIN, BALLAST_CAP_STREAMING, BALLAST_CAP_THREAD_SAFE_CALLS,
    BALLAST_DESCRIPTOR_MIN_SIZE, BALLAST_ENTRY_SYMBOL, BALLAST_ENTRY_SYMBOL_NUL,
    BALLAST_MAX_LEVELS, BALLAST_PLUGIN_MAGIC, BALLAST_VTABLE_1_1_SIZE, BALLAST_VTABLE_MIN_SIZE,
    BallastDescriptorHeader, BallastEntryFn, BallastPluginDescriptor, BallastPluginVTable,
    BallastStr,
};
use ballast_core::plugin::{LevelHints, ResourceHints};
use libloading::os::unix::{Library, RTLD_LOCAL, RTLD_NOW};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::elf::{ElfProblem, check_shared_object_file};
use crate::trust::{FileTrust, UntrustedPath};

/// Longest plugin name accepted.
const MAX_NAME_LEN: usize = 64;
/// Longest version or level name accepted.
const MAX_TEXT_LEN: usize = 256;

/// Why a plugin file cannot be loaded. Every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file cannot be read.
    #[error("cannot read plugin file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The IO error.
        source: std::io::Error,
    },
    /// Someone besides root and the daemon's user could have written the file (see
    /// [`crate::FileTrust`]).
    #[error("refusing to load plugin file {path}: {problem}")]
    Untrusted {
        /// The file.
        path: PathBuf,
        /// Which file or directory is at fault, its mode and who may write it.
        problem: UntrustedPath,
    },
    /// The file is not a loadable 64-bit ELF shared object.
    #[error("plugin file {path} is {problem}")]
    BadFile {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        problem: ElfProblem,
    },
    /// The file's sha256 differs from the pinned one.
    #[error(
        "plugin file {path} has sha256 {actual} but the config pins {expected}; refusing to load it"
    )]
    ChecksumMismatch {
        /// The file.
        path: PathBuf,
        /// The pinned digest.
        expected: String,
        /// The file's digest.
        actual: String,
    },
    /// `dlopen` failed (missing dependency, unresolved symbol, ...).
    #[error("cannot load plugin file {path}: {message}")]
    Dlopen {
        /// The file.
        path: PathBuf,
        /// The dynamic loader's message.
        message: String,
    },
    /// The file exports no entry symbol of any ABI major.
    #[error(
        "plugin file {path} does not export `{BALLAST_ENTRY_SYMBOL}`: it is not a ballast plugin (build it with ballast-sdk's export_plugin! or the C header)"
    )]
    MissingEntry {
        /// The file.
        path: PathBuf,
    },
    /// The entry symbol returned null.
    #[error("plugin file {path}: `{BALLAST_ENTRY_SYMBOL}` returned no descriptor")]
    NullDescriptor {
        /// The file.
        path: PathBuf,
    },
    /// The descriptor does not start with the magic.
    #[error(
        "plugin file {path}: descriptor has wrong magic {found:#018x} (expected {BALLAST_PLUGIN_MAGIC:#018x}); the file is corrupt or not a ballast plugin"
    )]
    BadMagic {
        /// The file.
        path: PathBuf,
        /// The magic found.
        found: u64,
    },
    /// The plugin was built for another ABI major.
    #[error(
        "plugin {name} ({file}) was built for ABI {major}.{minor}; this ballast supports ABI {BALLAST_ABI_MAJOR}.0-{BALLAST_ABI_MAJOR}.{BALLAST_ABI_MINOR}"
    )]
    AbiMismatch {
        /// The plugin's name (or "?" if unreadable).
        name: String,
        /// The file's name.
        file: String,
        /// Its major.
        major: u32,
        /// Its minor.
        minor: u32,
    },
    /// A struct is smaller than the oldest layout of this major.
    #[error(
        "plugin {name} ({file}): {what} is {size} bytes, smaller than the {min} bytes of ABI {BALLAST_ABI_MAJOR}.0; the plugin is corrupt"
    )]
    StructTooSmall {
        /// The plugin's name.
        name: String,
        /// The file's name.
        file: String,
        /// Which struct.
        what: &'static str,
        /// Its declared size.
        size: usize,
        /// The minimum.
        min: usize,
    },
    /// A descriptor field is invalid.
    #[error("plugin {name} ({file}): {problem}")]
    BadDescriptor {
        /// The plugin's name (or "?" if unreadable).
        name: String,
        /// The file's name.
        file: String,
        /// What is wrong.
        problem: String,
    },
}

/// One degradation level as a plugin declares it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LevelInfo {
    /// Level number; 0 is full.
    pub level: u32,
    /// The plugin's name for it.
    pub name: String,
    /// Memory needed at least, in bytes.
    pub memory_min_bytes: u64,
    /// Memory wanted, in bytes.
    pub memory_preferred_bytes: u64,
    /// GPU memory used, in bytes.
    pub gpu_memory_bytes: u64,
}

/// What a validated plugin file declares, copied out of its descriptor.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PluginInfo {
    /// The plugin's name.
    pub name: String,
    /// Its version.
    pub version: String,
    /// The SDK or header version it was built with.
    pub sdk_version: String,
    /// The ABI version it was built for, "major.minor".
    pub abi: String,
    /// The file it was loaded from.
    pub file: PathBuf,
    /// The file's sha256, hex (computed when a pin is checked, or by `ballast plugin inspect`).
    pub sha256: Option<String>,
    /// The file's size in bytes.
    pub size_bytes: u64,
    /// Capability names: thread_safe_calls, checkpoint, drain, alloc_stats, streaming.
    pub capabilities: Vec<&'static str>,
    /// Share of one core used at full level.
    pub cpu_share: f64,
    /// Whether it uses a GPU.
    pub needs_gpu: bool,
    /// Its levels, full first.
    pub levels: Vec<LevelInfo>,
}

impl PluginInfo {
    /// The declared needs in the shared domain type.
    pub fn resource_hints(&self) -> ResourceHints {
        ResourceHints {
            levels: self
                .levels
                .iter()
                .map(|l| LevelHints {
                    memory_min_bytes: l.memory_min_bytes,
                    memory_preferred_bytes: l.memory_preferred_bytes,
                    gpu_memory_bytes: l.gpu_memory_bytes,
                })
                .collect(),
            cpu_share: self.cpu_share,
            needs_gpu: self.needs_gpu,
        }
    }

    /// Number of levels (at least 1).
    pub fn n_levels(&self) -> u32 {
        self.levels.len().max(1) as u32
    }
}

/// A loaded, validated plugin library. The library stays mapped for the life of the process:
/// unloading Rust cdylibs is unsafe in practice (TLS destructors, threads), so this type never
/// calls `dlclose`.
pub struct PluginLibrary {
    info: PluginInfo,
    vtable: BallastPluginVTable,
    capabilities: u64,
}

impl std::fmt::Debug for PluginLibrary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginLibrary")
            .field("info", &self.info)
            .finish_non_exhaustive()
    }
}

impl PluginLibrary {
    /// Loads `path`, checks it (who may write it, ELF structure, optional sha256 pin) before
    /// `dlopen`, then validates its descriptor.
    pub fn load(path: &Path, sha256_pin: Option<&str>) -> Result<PluginLibrary, LoadError> {
        Self::load_trusting(path, sha256_pin, FileTrust::current())
    }

    /// [`PluginLibrary::load`] with the owners `trust` accepts instead of root and this
    /// process's user.
    pub fn load_trusting(
        path: &Path,
        sha256_pin: Option<&str>,
        trust: FileTrust,
    ) -> Result<PluginLibrary, LoadError> {
        let read_error = |source| LoadError::Read {
            path: path.to_owned(),
            source,
        };
        let file = std::fs::File::open(path).map_err(read_error)?;
        let metadata = file.metadata().map_err(read_error)?;
        let size = metadata.len();
        trust.check(path).map_err(|problem| LoadError::Untrusted {
            path: path.to_owned(),
            problem,
        })?;
        check_shared_object_file(&file, size).map_err(|problem| LoadError::BadFile {
            path: path.to_owned(),
            problem,
        })?;
        // Hashing reads the whole file, so it is done only when a pin asks for it. It reads the
        // file already open, the one that was checked.
        let sha256 = match sha256_pin {
            Some(expected) => {
                let actual = sha256_reader(&file).map_err(read_error)?;
                if !expected.eq_ignore_ascii_case(&actual) {
                    return Err(LoadError::ChecksumMismatch {
                        path: path.to_owned(),
                        expected: expected.to_owned(),
                        actual,
                    });
                }
                Some(actual)
            }
            None => None,
        };
        // dlopen resolves a bare file name through the library search path; make it explicit.
        let path_for_dlopen = if path.components().count() == 1 {
            Path::new(".").join(path)
        } else {
            path.to_owned()
        };
        // SAFETY: loading a library runs its initialisers. Plugins are trusted code (see the trust
        // model in ARCHITECTURE.md); the file was checked to be a complete shared object above.
        let library = unsafe { Library::open(Some(&path_for_dlopen), RTLD_NOW | RTLD_LOCAL) }
            .map_err(|e| LoadError::Dlopen {
                path: path.to_owned(),
                message: error_chain(&e),
            })?;
        let result = Self::from_library(&library, path, sha256, size);
        // Never unload: keep the library mapped for the life of the process, also on failure
        // (its initialisers may have started threads or registered TLS destructors).
        std::mem::forget(library);
        result
    }

    fn from_library(
        library: &Library,
        path: &Path,
        sha256: Option<String>,
        size: u64,
    ) -> Result<PluginLibrary, LoadError> {
        let file = path.file_name().map_or_else(
            || path.display().to_string(),
            |f| f.to_string_lossy().into_owned(),
        );
        // SAFETY: the symbol, if present, has the entry signature by the ABI's definition.
        let entry = match unsafe { library.get::<BallastEntryFn>(BALLAST_ENTRY_SYMBOL_NUL) } {
            Ok(symbol) => *symbol,
            Err(_) => return Err(other_major(library, path, &file)),
        };
        // SAFETY: calling the plugin's entry function, which returns static data.
        let descriptor = unsafe { entry() };
        // SAFETY: the entry function returns null or a descriptor it keeps alive for the life of
        // the process (the library is never unloaded).
        unsafe { Self::from_descriptor(descriptor, path, file, sha256, size) }
    }

    /// Validates the descriptor at `descriptor` as if `path` had returned it.
    ///
    /// # Safety
    ///
    /// `descriptor` is null or points to a readable descriptor header; every pointer in it that
    /// the declared sizes and lengths make the host read (the 1.0 descriptor when the header
    /// says it is at least that large, `version`, `sdk_version` and level names within their
    /// lengths, `n_levels` level entries when `n_levels` is in range, the vtable's size field
    /// and, when it declares at least the 1.0 size, the vtable up to the smaller of its declared
    /// size and this host's layout) points to that many readable bytes. The function pointers
    /// are copied, never called.
    unsafe fn from_descriptor(
        descriptor: *const BallastPluginDescriptor,
        path: &Path,
        file: String,
        sha256: Option<String>,
        size: u64,
    ) -> Result<PluginLibrary, LoadError> {
        if descriptor.is_null() {
            return Err(LoadError::NullDescriptor {
                path: path.to_owned(),
            });
        }
        // SAFETY: non-null; the header layout is the same in every major.
        let header = unsafe { std::ptr::read(descriptor.cast::<BallastDescriptorHeader>()) };
        if header.magic != BALLAST_PLUGIN_MAGIC {
            return Err(LoadError::BadMagic {
                path: path.to_owned(),
                found: header.magic,
            });
        }
        let name = read_str(header.name, MAX_NAME_LEN).unwrap_or_else(|_| "?".to_owned());
        if header.abi_major != BALLAST_ABI_MAJOR {
            return Err(LoadError::AbiMismatch {
                name,
                file,
                major: header.abi_major,
                minor: header.abi_minor,
            });
        }
        if (header.struct_size as usize) < BALLAST_DESCRIPTOR_MIN_SIZE {
            return Err(LoadError::StructTooSmall {
                name,
                file,
                what: "the descriptor",
                size: header.struct_size as usize,
                min: BALLAST_DESCRIPTOR_MIN_SIZE,
            });
        }
        // SAFETY: the plugin declares at least the 1.0 size, so the 1.0 fields are readable.
        let d = unsafe { std::ptr::read(descriptor) };
        // SAFETY: the caller's promise covers what `validate` reads through `d`'s pointers.
        unsafe { validate(&d, path, file, name, sha256, size) }
    }

    /// What the plugin declares.
    pub fn info(&self) -> &PluginInfo {
        &self.info
    }

    /// The plugin's functions, for tools that drive a plugin directly (benchmarks, a worker
    /// process). The host itself goes through [`crate::PluginHost`], which keeps the ABI's
    /// threading and ownership rules.
    pub fn vtable(&self) -> &BallastPluginVTable {
        &self.vtable
    }

    /// Whether `call` may run on several threads at once.
    pub fn thread_safe_calls(&self) -> bool {
        self.capabilities & BALLAST_CAP_THREAD_SAFE_CALLS != 0
    }

    /// Whether the plugin streams its answers (ABI 1.1 `call_stream`). When it does not,
    /// [`PluginLibrary::vtable`]'s `call_stream` is `None` whatever the plugin put there.
    pub fn streams(&self) -> bool {
        self.vtable.call_stream.is_some()
    }
}

/// Validates a descriptor's fields, copying what it declares out of the plugin.
///
/// # Safety
///
/// As for [`PluginLibrary::from_descriptor`]: the pointers in `d` are readable as far as the
/// lengths and sizes they come with declare (within the limits checked here).
unsafe fn validate(
    d: &BallastPluginDescriptor,
    path: &Path,
    file: String,
    name: String,
    sha256: Option<String>,
    size: u64,
) -> Result<PluginLibrary, LoadError> {
    let bad = |problem: String| LoadError::BadDescriptor {
        name: name.clone(),
        file: file.clone(),
        problem,
    };
    if name == "?" || name.is_empty() {
        return Err(bad("the plugin name is empty or not UTF-8".to_owned()));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_'))
    {
        return Err(bad(format!(
            "the plugin name contains `{c}`; use letters, digits, `-` and `_`"
        )));
    }
    let version = read_str(d.version, MAX_TEXT_LEN).map_err(|e| bad(format!("version: {e}")))?;
    let sdk_version =
        read_str(d.sdk_version, MAX_TEXT_LEN).map_err(|e| bad(format!("sdk version: {e}")))?;
    let hints = d.hints;
    if hints.n_levels == 0 || hints.n_levels > BALLAST_MAX_LEVELS {
        return Err(bad(format!(
            "declares {} levels; a plugin has 1 to {BALLAST_MAX_LEVELS}",
            hints.n_levels
        )));
    }
    if hints.levels.is_null() {
        return Err(bad(format!(
            "declares {} levels but no level table",
            hints.n_levels
        )));
    }
    let mut levels = Vec::with_capacity(hints.n_levels as usize);
    for i in 0..hints.n_levels {
        // SAFETY: the plugin declares `n_levels` entries at `levels` (bounded above).
        let l = unsafe { std::ptr::read(hints.levels.add(i as usize)) };
        let level_name =
            read_str(l.name, MAX_TEXT_LEN).map_err(|e| bad(format!("level {i} name: {e}")))?;
        if l.memory_min_bytes > l.memory_preferred_bytes {
            return Err(bad(format!(
                "level {i} ({level_name}) needs at least {} bytes but prefers only {}",
                l.memory_min_bytes, l.memory_preferred_bytes
            )));
        }
        levels.push(LevelInfo {
            level: i,
            name: level_name,
            memory_min_bytes: l.memory_min_bytes,
            memory_preferred_bytes: l.memory_preferred_bytes,
            gpu_memory_bytes: l.gpu_memory_bytes,
        });
    }
    if d.vtable.is_null() {
        return Err(bad("has no function table".to_owned()));
    }
    // SAFETY: non-null; read the size field first, which every vtable starts with.
    let vtable_size = unsafe { std::ptr::read(d.vtable.cast::<u32>()) } as usize;
    if vtable_size < BALLAST_VTABLE_MIN_SIZE {
        return Err(LoadError::StructTooSmall {
            name,
            file,
            what: "the function table",
            size: vtable_size,
            min: BALLAST_VTABLE_MIN_SIZE,
        });
    }
    // SAFETY: the plugin declares `vtable_size` readable bytes, at least the 1.0 size.
    let mut vtable = unsafe { read_vtable(d.vtable, vtable_size) };
    let required = [
        ("create", vtable.create.is_some()),
        ("start", vtable.start.is_some()),
        ("set_level", vtable.set_level.is_some()),
        ("drain", vtable.drain.is_some()),
        ("stop", vtable.stop.is_some()),
        ("destroy", vtable.destroy.is_some()),
        ("call", vtable.call.is_some()),
        ("free_buffer", vtable.free_buffer.is_some()),
        ("health", vtable.health.is_some()),
        ("stats", vtable.stats.is_some()),
    ];
    let missing: Vec<&str> = required
        .iter()
        .filter(|(_, present)| !present)
        .map(|(n, _)| *n)
        .collect();
    if !missing.is_empty() {
        return Err(bad(format!(
            "function table lacks required functions: {}",
            missing.join(", ")
        )));
    }
    // Streaming exists since 1.1: a 1.0 plugin's bit 4 meant nothing, and its vtable has no
    // `call_stream` to validate (it may end before it).
    let mut declared = d.capabilities;
    if d.header.abi_minor == 0 {
        declared &= !BALLAST_CAP_STREAMING;
    }
    if declared & BALLAST_CAP_STREAMING != 0 {
        if vtable_size < BALLAST_VTABLE_1_1_SIZE {
            return Err(bad(format!(
                "declares streaming but its function table is {vtable_size} bytes, smaller than the {BALLAST_VTABLE_1_1_SIZE} bytes of ABI {BALLAST_ABI_MAJOR}.1 that hold call_stream"
            )));
        }
        if vtable.call_stream.is_none() {
            return Err(bad(
                "declares streaming but its function table lacks call_stream".to_owned(),
            ));
        }
    } else {
        // Without the capability the host never calls it, whatever the plugin put there.
        vtable.call_stream = None;
    }
    let mut capabilities = Vec::new();
    for (bit, cap_name) in [
        (BALLAST_CAP_THREAD_SAFE_CALLS, "thread_safe_calls"),
        (BALLAST_CAP_CHECKPOINT, "checkpoint"),
        (BALLAST_CAP_DRAIN, "drain"),
        (BALLAST_CAP_ALLOC_STATS, "alloc_stats"),
        (BALLAST_CAP_STREAMING, "streaming"),
    ] {
        if declared & bit != 0 {
            capabilities.push(cap_name);
        }
    }
    let info = PluginInfo {
        name,
        version,
        sdk_version,
        abi: format!("{}.{}", d.header.abi_major, d.header.abi_minor),
        file: path.to_owned(),
        sha256,
        size_bytes: size,
        capabilities,
        cpu_share: f64::from(hints.cpu_share_millis) / 1000.0,
        needs_gpu: hints.needs_gpu != 0,
        levels,
    };
    Ok(PluginLibrary {
        info,
        vtable,
        capabilities: declared,
    })
}

/// Copies a plugin's vtable, reading only the `declared` bytes the plugin built (an older
/// plugin's table is shorter than this host's); the fields beyond them are `None`.
///
/// # Safety
///
/// `vtable` points to at least `declared` readable bytes, and `declared` is at least
/// [`BALLAST_VTABLE_MIN_SIZE`].
unsafe fn read_vtable(vtable: *const BallastPluginVTable, declared: usize) -> BallastPluginVTable {
    // Whole fields only: after the two `u32`s every field is one function pointer, so a size
    // that ends inside one (a corrupt table) drops that field rather than copy half of it.
    let first_pointer = std::mem::offset_of!(BallastPluginVTable, create);
    let n = declared.min(size_of::<BallastPluginVTable>());
    let n = n - (n - first_pointer) % size_of::<usize>();
    let mut copy = std::mem::MaybeUninit::<BallastPluginVTable>::zeroed();
    // SAFETY: the plugin declares `declared >= n` readable bytes at `vtable`; `copy` has room for
    // the whole struct; the two cannot overlap.
    unsafe {
        std::ptr::copy_nonoverlapping(vtable.cast::<u8>(), copy.as_mut_ptr().cast::<u8>(), n);
    }
    // SAFETY: every field is a `u32` or an `Option` of a function pointer, for which all zeroes
    // is valid (`0` and `None`), and the first `n` bytes hold whole fields the plugin built.
    unsafe { copy.assume_init() }
}

/// Validates the plugin descriptor at `descriptor` exactly as [`PluginLibrary::load`] validates
/// the one a library's entry symbol returns, and returns what it declares; `path` is only used
/// in messages. For tools that build descriptors in memory (the descriptor fuzz target): no
/// library is opened and no plugin function is called.
///
/// # Safety
///
/// `descriptor` is null or points to a readable descriptor header, and every pointer in it is
/// readable as far as the host reads it: the 1.0 descriptor when the header declares at least
/// that size, each string within its declared length when that is within the limit, `n_levels`
/// level entries when `n_levels` is 1 to `BALLAST_MAX_LEVELS`, and the vtable's size field and,
/// when it declares at least the 1.0 size, its fields up to the smaller of that size and this
/// host's layout when the vtable pointer is not null.
pub unsafe fn validate_descriptor(
    descriptor: *const BallastPluginDescriptor,
    path: &Path,
) -> Result<PluginInfo, LoadError> {
    let file = path.file_name().map_or_else(
        || path.display().to_string(),
        |f| f.to_string_lossy().into_owned(),
    );
    // SAFETY: the caller's promise.
    unsafe { PluginLibrary::from_descriptor(descriptor, path, file, None, 0) }
        .map(|library| library.info)
}

/// The error for a library without the v1 entry: name the major it was built for if it exports
/// another major's entry, else say it is no plugin.
fn other_major(library: &Library, path: &Path, file: &str) -> LoadError {
    for major in (0..=16u32).filter(|m| *m != BALLAST_ABI_MAJOR) {
        let symbol = format!("ballast_plugin_entry_v{major}\0");
        // SAFETY: every major's entry has the same signature and returns a descriptor whose
        // header layout is frozen across majors.
        let Ok(entry) = (unsafe { library.get::<BallastEntryFn>(symbol.as_bytes()) }) else {
            continue;
        };
        // SAFETY: as above.
        let descriptor = unsafe { (*entry)() };
        if descriptor.is_null() {
            return LoadError::NullDescriptor {
                path: path.to_owned(),
            };
        }
        // SAFETY: the header layout is the same in every major.
        let header = unsafe { std::ptr::read(descriptor.cast::<BallastDescriptorHeader>()) };
        let name = if header.magic == BALLAST_PLUGIN_MAGIC {
            read_str(header.name, MAX_NAME_LEN).unwrap_or_else(|_| "?".to_owned())
        } else {
            "?".to_owned()
        };
        return LoadError::AbiMismatch {
            name,
            file: file.to_owned(),
            major,
            minor: if header.magic == BALLAST_PLUGIN_MAGIC {
                header.abi_minor
            } else {
                0
            },
        };
    }
    LoadError::MissingEntry {
        path: path.to_owned(),
    }
}

/// Copies a plugin string, checking length and UTF-8.
fn read_str(s: BallastStr, max: usize) -> Result<String, String> {
    if s.len == 0 {
        return Ok(String::new());
    }
    if s.ptr.is_null() {
        return Err("null pointer with a non-zero length".to_owned());
    }
    if s.len > max {
        return Err(format!("{} bytes long, the limit is {max}", s.len));
    }
    // SAFETY: the plugin declares `len` readable bytes at `ptr` (bounded above).
    let bytes = unsafe { std::slice::from_raw_parts(s.ptr, s.len) };
    std::str::from_utf8(bytes)
        .map(str::to_owned)
        .map_err(|e| format!("not UTF-8: {e}"))
}

/// The sha256 of a file, hex.
pub fn sha256_file(path: &Path) -> std::io::Result<String> {
    sha256_reader(std::fs::File::open(path)?)
}

/// The sha256 of everything `file` yields from where it stands, hex.
fn sha256_reader(mut file: impl std::io::Read) -> std::io::Result<String> {
    let mut hasher = Sha256::new();
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        let n = file.read(&mut chunk)?;
        if n == 0 {
            break;
        }
        hasher.update(&chunk[..n]);
    }
    Ok(hex::encode(hasher.finalize()))
}

/// An error and its sources on one line (libloading's Display says only "dlopen failed").
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use ballast_abi::{BallastLevelHints, BallastResourceHints};

    use super::*;

    /// A function pointer's stand-in: never called, only checked for presence.
    extern "C" fn never_called() {}

    /// A present function of any vtable slot's type.
    fn present<F>() -> Option<F> {
        assert_eq!(size_of::<Option<F>>(), size_of::<usize>());
        // SAFETY: every slot is an `Option` of an `extern "C"` function pointer, which has the
        // layout of a nullable pointer; the tests only check for presence and never call it.
        Some(unsafe { std::mem::transmute_copy::<usize, F>(&(never_called as *const () as usize)) })
    }

    /// A vtable with every 1.0 function, declaring `size`, with `call_stream` when asked.
    fn vtable(size: usize, call_stream: bool) -> BallastPluginVTable {
        BallastPluginVTable {
            struct_size: size as u32,
            reserved: 0,
            create: present(),
            start: present(),
            set_level: present(),
            drain: present(),
            stop: present(),
            destroy: present(),
            call: present(),
            free_buffer: present(),
            health: present(),
            stats: present(),
            checkpoint: None,
            call_stream: if call_stream { present() } else { None },
        }
    }

    static LEVELS: [BallastLevelHints; 1] = [BallastLevelHints {
        name: BallastStr::from_static("full"),
        memory_min_bytes: 0,
        memory_preferred_bytes: 0,
        gpu_memory_bytes: 0,
    }];

    fn descriptor(
        minor: u32,
        capabilities: u64,
        vtable: *const BallastPluginVTable,
    ) -> BallastPluginDescriptor {
        BallastPluginDescriptor {
            header: BallastDescriptorHeader {
                magic: BALLAST_PLUGIN_MAGIC,
                abi_major: BALLAST_ABI_MAJOR,
                abi_minor: minor,
                struct_size: BALLAST_DESCRIPTOR_MIN_SIZE as u32,
                reserved: 0,
                name: BallastStr::from_static("streamer"),
            },
            version: BallastStr::from_static("1.0.0"),
            sdk_version: BallastStr::from_static("test"),
            capabilities,
            hints: BallastResourceHints {
                cpu_share_millis: 0,
                needs_gpu: 0,
                n_levels: 1,
                reserved: 0,
                levels: LEVELS.as_ptr(),
            },
            vtable,
        }
    }

    fn validate(d: &BallastPluginDescriptor) -> Result<PluginLibrary, LoadError> {
        // SAFETY: the descriptor and everything it points to live on this stack or are static,
        // each as large as it declares.
        unsafe {
            PluginLibrary::from_descriptor(
                d,
                Path::new("libstreamer.so"),
                "libstreamer.so".into(),
                None,
                0,
            )
        }
    }

    #[test]
    fn streaming_is_taken_only_from_a_1_1_plugin_that_declares_it_with_call_stream() {
        let full = vtable(BALLAST_VTABLE_1_1_SIZE, true);
        let library = validate(&descriptor(1, BALLAST_CAP_STREAMING, &full)).unwrap();
        assert!(library.streams());
        assert_eq!(library.info().capabilities, ["streaming"]);

        // Without the capability the function is never called, even when it is there.
        let library = validate(&descriptor(1, 0, &full)).unwrap();
        assert!(!library.streams());
        assert!(library.vtable().call_stream.is_none());
        assert!(library.info().capabilities.is_empty());

        // A 1.0 plugin's bit 4 meant nothing: it is ignored, not refused.
        let library = validate(&descriptor(0, BALLAST_CAP_STREAMING, &full)).unwrap();
        assert!(!library.streams());
        assert!(library.info().capabilities.is_empty());

        let without = vtable(BALLAST_VTABLE_1_1_SIZE, false);
        let error = validate(&descriptor(1, BALLAST_CAP_STREAMING, &without))
            .unwrap_err()
            .to_string();
        assert_eq!(
            error,
            "plugin streamer (libstreamer.so): declares streaming but its function table lacks call_stream"
        );

        let short = vtable(BALLAST_VTABLE_MIN_SIZE, true);
        let error = validate(&descriptor(1, BALLAST_CAP_STREAMING, &short))
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("declares streaming but its function table is 96 bytes, smaller than the 104 bytes of ABI 1.1"),
            "{error}"
        );
    }

    #[test]
    fn a_1_0_function_table_is_read_only_within_its_declared_size() {
        // The 1.0 table ends right where an unreadable page begins: reading one byte past its
        // declared size faults.
        // SAFETY: sysconf has no preconditions.
        let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap();
        // SAFETY: an anonymous private mapping of two pages, unmapped below.
        let map = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                2 * page,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert_ne!(map, libc::MAP_FAILED);
        let guard = map.cast::<u8>().wrapping_add(page);
        // SAFETY: the second page of the mapping made above.
        assert_eq!(
            unsafe { libc::mprotect(guard.cast(), page, libc::PROT_NONE) },
            0
        );
        let table = guard.wrapping_sub(BALLAST_VTABLE_MIN_SIZE);
        let old = vtable(BALLAST_VTABLE_MIN_SIZE, false);
        // SAFETY: the first `BALLAST_VTABLE_MIN_SIZE` bytes of `old` (the 1.0 table) fit in the
        // writable page before the guard; `table` is pointer-aligned as the page size is.
        unsafe {
            std::ptr::copy_nonoverlapping(
                (&raw const old).cast::<u8>(),
                table,
                BALLAST_VTABLE_MIN_SIZE,
            );
        }
        let library = validate(&descriptor(0, BALLAST_CAP_THREAD_SAFE_CALLS, table.cast()));
        // SAFETY: the mapping made above, no longer used.
        unsafe { libc::munmap(map, 2 * page) };
        let library = library.unwrap();
        assert!(library.vtable().call.is_some());
        assert!(library.vtable().call_stream.is_none());
        assert!(!library.streams());
        assert_eq!(library.info().abi, "1.0");
    }
}
