//! The GPU sampler: NVIDIA devices through NVML (nvml-wrapper). No driver is the normal case on
//! most machines and gives an unavailable metric with the reason, not an error.

use std::ffi::{CStr, CString, OsStr};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

use std::collections::BTreeMap;

use ballast_core::tier::GpuFact;
use ballast_core::{GpuProcess, GpuReading, Metric};
use nvml_wrapper::enum_wrappers::device::TemperatureSensor;
use nvml_wrapper::enums::device::UsedGpuMemory;
use nvml_wrapper::error::NvmlError;
use nvml_wrapper::struct_wrappers::device::ProcessInfo;
use nvml_wrapper::{Device, Nvml};

/// The library NVML is loaded from when no path is configured.
pub const DEFAULT_NVML_LIBRARY: &str = "libnvidia-ml.so.1";

/// The start of the reason given when the system has no NVML library: the normal case on
/// machines without an NVIDIA GPU.
const NO_DRIVER: &str = "no NVIDIA driver";

/// The reason given when GPU monitoring is turned off.
const DISABLED: &str = "GPU monitoring is disabled in the configuration";

/// Where the GPU figures come from.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum NvmlSource {
    /// The system's NVML library, `libnvidia-ml.so.1`, found by the dynamic loader.
    #[default]
    System,
    /// An NVML library at this path (a specific driver's, or a fake one in tests).
    Path(PathBuf),
    /// No GPU monitoring: GPUs are reported unavailable, saying so.
    Disabled,
}

/// How many samples pass between attempts to load NVML again while it is unavailable (a driver
/// installed or loaded after the daemon started is picked up within a minute at 1 Hz).
pub const NVML_RETRY_SAMPLES: u32 = 60;

/// Reads every NVIDIA device through NVML, which is loaded at construction and, while it is
/// unavailable, tried again every [`NVML_RETRY_SAMPLES`] samples.
pub struct GpuSampler {
    source: NvmlSource,
    nvml: Result<Nvml, String>,
    failed_samples: u32,
}

impl std::fmt::Debug for GpuSampler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.nvml {
            Ok(_) => f.write_str("GpuSampler(NVML loaded)"),
            Err(reason) => write!(f, "GpuSampler(unavailable: {reason})"),
        }
    }
}

impl GpuSampler {
    /// Loads and initializes NVML from `source`. Failure is remembered as the reason every
    /// sample reports; it is not an error.
    pub fn new(source: &NvmlSource) -> Self {
        GpuSampler {
            source: source.clone(),
            nvml: open(source),
            failed_samples: 0,
        }
    }

    /// Loads NVML again now.
    pub fn reload(&mut self) {
        self.nvml = open(&self.source);
        self.failed_samples = 0;
    }

    /// Why GPUs are unavailable, if they are.
    pub fn unavailable_reason(&self) -> Option<&str> {
        self.nvml.as_ref().err().map(String::as_str)
    }

    /// Whether GPUs are unavailable only because the machine has no NVIDIA driver, the normal
    /// case on most machines (not worth more than a debug log line).
    pub fn absent_normally(&self) -> bool {
        self.unavailable_reason()
            .is_some_and(|r| r.starts_with(NO_DRIVER) || r.starts_with(DISABLED))
    }

    /// Reads every device once. An empty list means NVML works and sees no device.
    pub fn sample(&mut self) -> Metric<Vec<GpuReading>> {
        if self.nvml.is_err() && self.source != NvmlSource::Disabled {
            self.failed_samples = self.failed_samples.saturating_add(1);
            if self.failed_samples >= NVML_RETRY_SAMPLES {
                self.reload();
            }
        }
        match &self.nvml {
            Ok(nvml) => match read_devices(nvml) {
                Ok(devices) => Metric::available(devices),
                Err(reason) => Metric::unavailable(reason),
            },
            Err(reason) => Metric::unavailable(reason.clone()),
        }
    }

    /// The devices' names and memory, for tier detection.
    pub fn facts(&mut self) -> Metric<Vec<GpuFact>> {
        match self.sample() {
            Metric::Available { value } => Metric::available(
                value
                    .into_iter()
                    .map(|g| GpuFact {
                        index: g.index,
                        name: g.name,
                        memory_total_bytes: g.memory_total_bytes,
                    })
                    .collect(),
            ),
            Metric::Unavailable { reason } => Metric::unavailable(reason),
        }
    }
}

fn open(source: &NvmlSource) -> Result<Nvml, String> {
    let path: &OsStr = match source {
        NvmlSource::Disabled => {
            return Err("GPU monitoring is disabled in the configuration".into());
        }
        NvmlSource::System => OsStr::new(DEFAULT_NVML_LIBRARY),
        NvmlSource::Path(path) => path.as_os_str(),
    };
    check_library(path)?;
    let mut builder = Nvml::builder();
    if matches!(source, NvmlSource::Path(_)) {
        builder.lib_path(path);
    }
    builder.init().map_err(|error| match error {
        NvmlError::DriverNotLoaded => format!(
            "the NVIDIA driver is not loaded (NVML from {} could not initialize)",
            path.to_string_lossy()
        ),
        other => format!(
            "NVML from {} failed to initialize: {}",
            path.to_string_lossy(),
            error_chain(&other)
        ),
    })
}

/// Checks that the library loads and exports `nvmlShutdown` before nvml-wrapper takes it:
/// nvml-wrapper calls that symbol with `expect` when it drops its handle, so a library without
/// it would panic the daemon.
fn check_library(path: &OsStr) -> Result<(), String> {
    let shown = path.to_string_lossy();
    let c_path = CString::new(path.as_bytes())
        .map_err(|_| format!("the NVML library path {shown} holds a NUL byte"))?;
    // SAFETY: dlopen takes a NUL-terminated path; loading runs the library's initializers, which
    // nvml-wrapper would run anyway when it loads the same library.
    let handle = unsafe { libc::dlopen(c_path.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL) };
    if handle.is_null() {
        let detail = dlerror().unwrap_or_else(|| "dlopen failed".into());
        return Err(if matches!(path.to_str(), Some(DEFAULT_NVML_LIBRARY)) {
            if detail.contains("cannot open shared object file") {
                format!("{NO_DRIVER} ({DEFAULT_NVML_LIBRARY} is not installed)")
            } else {
                format!("{NO_DRIVER} ({detail})")
            }
        } else {
            format!("cannot load the NVML library {shown}: {detail}")
        });
    }
    // SAFETY: `handle` is a live handle from dlopen and the symbol name is NUL-terminated.
    let shutdown = unsafe { libc::dlsym(handle, c"nvmlShutdown".as_ptr()) };
    // SAFETY: `handle` came from dlopen above and is closed once; nvml-wrapper holds its own.
    unsafe { libc::dlclose(handle) };
    if shutdown.is_null() {
        return Err(format!(
            "the NVML library {shown} does not export nvmlShutdown; not using it"
        ));
    }
    Ok(())
}

fn dlerror() -> Option<String> {
    // SAFETY: dlerror returns NULL or a NUL-terminated string valid until the next dl* call on
    // this thread; it is copied at once.
    let message = unsafe { libc::dlerror() };
    if message.is_null() {
        return None;
    }
    // SAFETY: non-NULL, NUL-terminated, see above.
    Some(
        unsafe { CStr::from_ptr(message) }
            .to_string_lossy()
            .into_owned(),
    )
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

fn read_devices(nvml: &Nvml) -> Result<Vec<GpuReading>, String> {
    let count = nvml
        .device_count()
        .map_err(|e| format!("NVML: counting devices: {}", error_chain(&e)))?;
    let mut devices = Vec::with_capacity(count as usize);
    for index in 0..count {
        let fail =
            |what: &str, e: NvmlError| format!("NVML: GPU {index}: {what}: {}", error_chain(&e));
        let device = nvml
            .device_by_index(index)
            .map_err(|e| fail("opening the device", e))?;
        let name = device.name().map_err(|e| fail("reading its name", e))?;
        let memory = device
            .memory_info()
            .map_err(|e| fail("reading its memory", e))?;
        let utilization = device
            .utilization_rates()
            .map_err(|e| fail("reading its utilization", e))?;
        devices.push(GpuReading {
            index,
            name,
            memory_used_bytes: memory.used,
            memory_total_bytes: memory.total,
            utilization: (f64::from(utilization.gpu) / 100.0).clamp(0.0, 1.0),
            temperature_celsius: device
                .temperature(TemperatureSensor::Gpu)
                .ok()
                .map(f64::from),
            power_watts: device.power_usage().ok().map(|mw| f64::from(mw) / 1000.0),
            processes: read_processes(index, &device),
        });
    }
    Ok(devices)
}

/// The processes with a context on `device`: its compute and its graphics processes, each once.
/// When either list cannot be read the whole is unavailable, since a partial list would charge
/// too little to someone.
fn read_processes(index: u32, device: &Device<'_>) -> Metric<Vec<GpuProcess>> {
    let fail = |what: &str, e: NvmlError| {
        Metric::unavailable(format!(
            "NVML: GPU {index}: listing its {what} processes: {}",
            error_chain(&e)
        ))
    };
    let compute = match device.running_compute_processes() {
        Ok(list) => list,
        Err(e) => return fail("compute", e),
    };
    let graphics = match device.running_graphics_processes() {
        Ok(list) => list,
        Err(e) => return fail("graphics", e),
    };
    Metric::available(merge_processes(
        compute.iter().chain(&graphics).map(process_entry),
    ))
}

fn process_entry(info: &ProcessInfo) -> (u32, Option<u64>) {
    let used = match info.used_gpu_memory {
        UsedGpuMemory::Used(bytes) => Some(bytes),
        UsedGpuMemory::Unavailable => None,
    };
    (info.pid, used)
}

/// One entry per process id, in pid order. A process with both a compute and a graphics context
/// is listed in both with the memory it holds on the device, so it counts once: with the
/// larger figure, or the one that is known when the other is not.
pub(crate) fn merge_processes(
    entries: impl Iterator<Item = (u32, Option<u64>)>,
) -> Vec<GpuProcess> {
    let mut by_pid: BTreeMap<u32, Option<u64>> = BTreeMap::new();
    for (pid, used) in entries {
        by_pid
            .entry(pid)
            .and_modify(|known| {
                *known = match (*known, used) {
                    (Some(a), Some(b)) => Some(a.max(b)),
                    (a, b) => a.or(b),
                }
            })
            .or_insert(used);
    }
    by_pid
        .into_iter()
        .map(|(pid, used_bytes)| GpuProcess {
            pid,
            used_bytes,
            holder: None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_process_in_both_lists_counts_once_with_its_known_figure() {
        let merged = merge_processes(
            [
                (30, Some(5)),
                (10, None),
                (20, Some(7)),
                (10, Some(3)),
                (20, Some(7)),
                (40, None),
                (40, None),
            ]
            .into_iter(),
        );
        let pairs: Vec<_> = merged.iter().map(|p| (p.pid, p.used_bytes)).collect();
        assert_eq!(
            pairs,
            [(10, Some(3)), (20, Some(7)), (30, Some(5)), (40, None)]
        );
    }
}
