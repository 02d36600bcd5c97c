//! The disk sampler: used and total space of the file systems holding the watched paths.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

use ballast_core::{DiskReading, Metric};

/// One watched path.
#[derive(Debug)]
struct Watched {
    shown: String,
    c_path: Option<CString>,
}

/// Reads the file systems of the watched paths with `statvfs`.
#[derive(Debug)]
pub struct DiskSampler {
    paths: Vec<Watched>,
}

impl DiskSampler {
    /// A sampler for `paths` (e.g. the data directory).
    pub fn new(paths: &[PathBuf]) -> Self {
        DiskSampler {
            paths: paths
                .iter()
                .map(|p| Watched {
                    shown: p.display().to_string(),
                    c_path: CString::new(p.as_os_str().as_bytes()).ok(),
                })
                .collect(),
        }
    }

    /// The watched paths.
    pub fn paths(&self) -> impl Iterator<Item = &str> {
        self.paths.iter().map(|w| w.shown.as_str())
    }

    /// Reads each path once, in the configured order.
    ///
    /// `used` is everything this daemon cannot use (blocks reserved for root count as used), so
    /// that the utilization says how close the daemon is to a full disk.
    pub fn sample(&self) -> Vec<Metric<DiskReading>> {
        self.paths.iter().map(read).collect()
    }
}

fn read(watched: &Watched) -> Metric<DiskReading> {
    let Some(c_path) = &watched.c_path else {
        return Metric::unavailable(format!("the path {} holds a NUL byte", watched.shown));
    };
    // SAFETY: an all-zero statvfs is a valid value of that plain C struct.
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c_path` is NUL-terminated and `stat` is a valid, writable statvfs.
    let rc = unsafe { libc::statvfs(c_path.as_ptr(), &mut stat) };
    if rc != 0 {
        let error = std::io::Error::last_os_error();
        return Metric::unavailable(format!(
            "cannot read the file system of {}: {error}",
            watched.shown
        ));
    }
    // The statvfs field types differ between platforms; on some they are already u64.
    #[allow(clippy::useless_conversion)]
    let (fragment, blocks, blocks_available) = (
        u64::from(stat.f_frsize),
        u64::from(stat.f_blocks),
        u64::from(stat.f_bavail),
    );
    let total = blocks.saturating_mul(fragment);
    let available = blocks_available.saturating_mul(fragment);
    Metric::available(DiskReading {
        path: watched.shown.clone(),
        used_bytes: total.saturating_sub(available),
        total_bytes: total,
    })
}
