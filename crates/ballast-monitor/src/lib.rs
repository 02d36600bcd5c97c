//! Resource samplers (memory, CPU, PSI, cgroup, disk, GPU) and, with the `actor` feature, the
//! `MonitorActor`.
//!
//! The [`Monitor`] reads the machine and produces plain [`ballast_core::Sample`] values: no
//! sysinfo or NVML type leaves this crate, and nothing else in ballast calls either library.
//! Files are read with a few targeted reads per sample (`/proc/meminfo`, `/proc/stat`,
//! `/proc/loadavg`, the PSI files, the daemon's own `stat` and, inside a memory-limited
//! cgroup, its limit and usage), parsed by the pure functions in [`parse`]. Roots are injectable
//! so that tests run on fixture trees, and so is the NVML library, so that tests run
//! nvml-wrapper's real code path against a fake `libnvidia-ml.so`.
//!
//! A metric that cannot be read is [`ballast_core::Metric::Unavailable`] with the reason (logged
//! once), never a zero. No NVIDIA driver is the normal case and is not an error.
//!
//! GPU memory is also read per process (NVML's compute and graphics process lists) and charged
//! to the plugins the host reported, by [`attribute_gpu_memory`]: to the plugin whose process
//! tree holds the process, to the one in-process plugin that declares it needs a GPU for the
//! daemon's own process, or to what stays unattributed (the daemon's, other programs').
//!
//! The `MonitorActor` (feature `actor`, on by default) samples on a tick and on a PSI
//! memory-pressure trigger, and publishes each sample to its subscribers. Without the feature the
//! crate depends on neither actix nor tokio, and the trigger, which only the actor listens to, is
//! left out too.

#[cfg(feature = "actor")]
mod actor;
mod attribution;
mod cpu;
mod cpu_limit;
mod disk;
mod gpu;
mod memory;
mod monitor;
pub mod parse;
mod pressure;
mod reasons;
mod source;
mod stall;
#[cfg(feature = "actor")]
mod trigger;

#[cfg(feature = "actor")]
pub use actor::{MonitorActor, ReportPluginUsage, Subscribe};
pub use attribution::{MAX_ANCESTORS, attribute_gpu_memory, process_name, read_parent};
pub use cpu::{CpuSampler, ProcessSampler};
pub use disk::DiskSampler;
pub use gpu::{DEFAULT_NVML_LIBRARY, GpuSampler, NVML_RETRY_SAMPLES, NvmlSource};
pub use memory::{MemoryOutcome, MemorySampler};
pub use monitor::{Monitor, MonitorConfig};
pub use pressure::PressureFiles;
pub use source::SampleError;
pub use stall::StallDetector;
#[cfg(feature = "actor")]
pub use trigger::{
    ManualTrigger, ManualTriggerHandle, NoTrigger, PsiPolling, PsiTrigger, TriggerSource, Wake,
    WakeSink,
};
