//! Fuzz target: plugin descriptor validation. Each input describes a fake library image: a
//! descriptor whose every field is chosen by the fuzzer, and whose pointers are offsets into
//! buffers standing in for the library's data (or null), with lengths and counts of any size.
//! The host's validation must refuse it with a message or accept it only when it is a
//! well-formed descriptor; it reads only what the declared sizes allow, which AddressSanitizer
//! checks here: every buffer is exactly as large as the farthest read the limits permit.

#![no_main]

use std::path::Path;

use arbitrary::Arbitrary;
use ballast_abi::{
    BALLAST_ABI_MAJOR, BALLAST_DESCRIPTOR_MIN_SIZE, BALLAST_MAX_LEVELS, BALLAST_PLUGIN_MAGIC,
    BALLAST_VTABLE_MIN_SIZE, BallastDescriptorHeader, BallastLevelHints, BallastPluginDescriptor,
    BallastPluginVTable, BallastResourceHints, BallastStr,
};
use ballast_host::validate_descriptor;
use libfuzzer_sys::fuzz_target;

/// Bytes standing in for the library's read-only data, where strings point.
const DATA_BYTES: usize = 4096;
/// The longest string the host reads (its limit for versions and level names).
const MAX_STRING: usize = 256;
/// Bytes of the level table's buffer: room for the most levels the host reads.
const LEVEL_SLOTS: usize = BALLAST_MAX_LEVELS as usize;

/// A string field: null, or an offset and a length into the data bytes.
#[derive(Debug, Arbitrary)]
enum FakeStr {
    Null { len: usize },
    At { offset: u16, len: u16 },
    Huge { offset: u16, len: usize },
}

#[derive(Debug, Arbitrary)]
struct FakeLevel {
    name: FakeStr,
    memory_min_bytes: u64,
    memory_preferred_bytes: u64,
    gpu_memory_bytes: u64,
}

#[derive(Debug, Arbitrary)]
struct FakeVTable {
    /// Declared size: exact, or anything.
    size: Option<u32>,
    /// Which of the eleven function pointers are present.
    present: u16,
}

#[derive(Debug, Arbitrary)]
struct FakeDescriptor {
    magic: Option<u64>,
    abi_major: Option<u32>,
    abi_minor: u32,
    struct_size: Option<u32>,
    name: FakeStr,
    version: FakeStr,
    sdk_version: FakeStr,
    capabilities: u64,
    cpu_share_millis: u32,
    needs_gpu: u32,
    n_levels: u32,
    /// The level table: absent (null), or its first entry's index in the table buffer.
    levels_at: Option<u8>,
    levels: Vec<FakeLevel>,
    vtable: Option<FakeVTable>,
    data: Vec<u8>,
}

/// The fake image's buffers; pointers into them stay valid while it lives.
struct Image {
    data: Vec<u8>,
    levels: Vec<BallastLevelHints>,
    vtable: Box<BallastPluginVTable>,
}

impl Image {
    fn string(&self, s: &FakeStr) -> BallastStr {
        let at = |offset: u16| {
            // Every offset lands where the longest permitted read still fits.
            let offset = usize::from(offset) % (DATA_BYTES - MAX_STRING);
            self.data[offset..].as_ptr()
        };
        match *s {
            FakeStr::Null { len } => BallastStr {
                ptr: std::ptr::null(),
                len,
            },
            FakeStr::At { offset, len } => BallastStr {
                ptr: at(offset),
                len: usize::from(len),
            },
            FakeStr::Huge { offset, len } => BallastStr {
                ptr: at(offset),
                len,
            },
        }
    }
}

/// A function pointer's stand-in: never called, only checked for presence.
extern "C" fn never_called() {}

fn vtable(fake: &FakeVTable) -> BallastPluginVTable {
    // SAFETY: an all-zero vtable is valid: a size of 0 and every function pointer `None`.
    let mut v: BallastPluginVTable = unsafe { std::mem::zeroed() };
    v.struct_size = fake.size.unwrap_or(BALLAST_VTABLE_MIN_SIZE as u32);
    let some = |bit: u16| -> usize {
        if fake.present & (1 << bit) != 0 {
            never_called as *const () as usize
        } else {
            0
        }
    };
    // SAFETY: each slot is an `Option<unsafe extern "C" fn(..)>`, which has the layout of a
    // nullable pointer; the pointers are never called.
    unsafe {
        v.create = std::mem::transmute(some(0));
        v.start = std::mem::transmute(some(1));
        v.set_level = std::mem::transmute(some(2));
        v.drain = std::mem::transmute(some(3));
        v.stop = std::mem::transmute(some(4));
        v.destroy = std::mem::transmute(some(5));
        v.call = std::mem::transmute(some(6));
        v.free_buffer = std::mem::transmute(some(7));
        v.health = std::mem::transmute(some(8));
        v.stats = std::mem::transmute(some(9));
        v.checkpoint = std::mem::transmute(some(10));
    }
    v
}

fuzz_target!(|fake: FakeDescriptor| {
    let mut data = fake.data.clone();
    data.resize(DATA_BYTES, 0);
    let mut image = Image {
        data,
        levels: Vec::new(),
        vtable: Box::new(vtable(fake.vtable.as_ref().unwrap_or(&FakeVTable {
            size: None,
            present: u16::MAX,
        }))),
    };
    // The level table: as many entries as the host may read from the chosen start.
    let start = fake.levels_at.map_or(0, |i| usize::from(i) % LEVEL_SLOTS);
    let mut table: Vec<BallastLevelHints> = (0..start + LEVEL_SLOTS)
        .map(|_| BallastLevelHints {
            name: BallastStr::EMPTY,
            memory_min_bytes: 0,
            memory_preferred_bytes: 0,
            gpu_memory_bytes: 0,
        })
        .collect();
    for (slot, level) in table[start..].iter_mut().zip(&fake.levels) {
        *slot = BallastLevelHints {
            name: image.string(&level.name),
            memory_min_bytes: level.memory_min_bytes,
            memory_preferred_bytes: level.memory_preferred_bytes,
            gpu_memory_bytes: level.gpu_memory_bytes,
        };
    }
    image.levels = table;
    let descriptor = Box::new(BallastPluginDescriptor {
        header: BallastDescriptorHeader {
            magic: fake.magic.unwrap_or(BALLAST_PLUGIN_MAGIC),
            abi_major: fake.abi_major.unwrap_or(BALLAST_ABI_MAJOR),
            abi_minor: fake.abi_minor,
            struct_size: fake
                .struct_size
                .unwrap_or(BALLAST_DESCRIPTOR_MIN_SIZE as u32),
            reserved: 0,
            name: image.string(&fake.name),
        },
        version: image.string(&fake.version),
        sdk_version: image.string(&fake.sdk_version),
        capabilities: fake.capabilities,
        hints: BallastResourceHints {
            cpu_share_millis: fake.cpu_share_millis,
            needs_gpu: fake.needs_gpu,
            n_levels: fake.n_levels,
            reserved: 0,
            levels: match fake.levels_at {
                Some(_) => image.levels[start..].as_ptr(),
                None => std::ptr::null(),
            },
        },
        vtable: match fake.vtable {
            Some(_) => &*image.vtable,
            None => std::ptr::null(),
        },
    });
    // SAFETY: every pointer in the descriptor is null or points into the image's buffers, each
    // sized for the farthest read the host's limits permit from where it points.
    let result = unsafe { validate_descriptor(&*descriptor, Path::new("/fuzz/libfake.so")) };
    match result {
        Ok(info) => {
            // Accepted: then it is well-formed in every way the host promises to check.
            assert_eq!(
                fake.magic.unwrap_or(BALLAST_PLUGIN_MAGIC),
                BALLAST_PLUGIN_MAGIC
            );
            assert_eq!(
                fake.abi_major.unwrap_or(BALLAST_ABI_MAJOR),
                BALLAST_ABI_MAJOR
            );
            assert!(!info.name.is_empty() && info.name.len() <= 64);
            assert!(
                info.name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            );
            assert_eq!(info.levels.len(), fake.n_levels as usize);
            assert!((1..=BALLAST_MAX_LEVELS as usize).contains(&info.levels.len()));
            for level in &info.levels {
                assert!(level.memory_min_bytes <= level.memory_preferred_bytes);
                assert!(level.name.len() <= MAX_STRING);
            }
            let present = fake.vtable.as_ref().map(|v| v.present);
            assert!(present.is_some(), "accepted without a function table");
            assert!(
                present.is_some_and(|p| p & 0x3ff == 0x3ff),
                "accepted without a required function"
            );
        }
        Err(error) => {
            let text = error.to_string();
            assert!(
                text.contains("libfake.so"),
                "the error does not name the file: {text}"
            );
        }
    }
    drop(descriptor);
    drop(image);
});
