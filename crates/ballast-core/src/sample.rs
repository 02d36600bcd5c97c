//! One timestamped reading of the machine: plain values, with unavailable metrics marked as such.

use serde::{Deserialize, Serialize};

use crate::resource::Resource;
use crate::time::Timestamp;

/// A metric that was read, or the reason it could not be. Never a fake zero.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Metric<T> {
    /// The metric was read.
    Available {
        /// The reading.
        value: T,
    },
    /// The metric could not be read on this machine, and why (e.g. "no NVIDIA driver").
    Unavailable {
        /// A sentence a person can act on.
        reason: String,
    },
}

impl<T> Metric<T> {
    /// An available metric.
    pub fn available(value: T) -> Self {
        Metric::Available { value }
    }

    /// An unavailable metric with its reason.
    pub fn unavailable(reason: impl Into<String>) -> Self {
        Metric::Unavailable {
            reason: reason.into(),
        }
    }

    /// The value, if available.
    pub fn value(&self) -> Option<&T> {
        match self {
            Metric::Available { value } => Some(value),
            Metric::Unavailable { .. } => None,
        }
    }

    /// The reason, if unavailable.
    pub fn unavailable_reason(&self) -> Option<&str> {
        match self {
            Metric::Available { .. } => None,
            Metric::Unavailable { reason } => Some(reason),
        }
    }
}

/// What the memory figures are relative to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum MemoryScope {
    /// The whole host (`/proc/meminfo`).
    Host,
    /// A cgroup v1 memory controller limit (`memory.limit_in_bytes`).
    CgroupV1 {
        /// The cgroup's path.
        path: String,
    },
    /// A cgroup v2 memory limit (`memory.max`).
    CgroupV2 {
        /// The cgroup's path.
        path: String,
    },
}

/// Memory figures in bytes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MemoryReading {
    /// Total memory (or the cgroup limit).
    pub total_bytes: u64,
    /// Memory in use (`total - available`).
    pub used_bytes: u64,
    /// Memory available to new work without swapping.
    pub available_bytes: u64,
    /// Total swap.
    pub swap_total_bytes: u64,
    /// Swap in use.
    pub swap_used_bytes: u64,
    /// What `total_bytes` is relative to.
    pub scope: MemoryScope,
}

impl MemoryReading {
    /// `1 - available / total`, in `0..=1`.
    pub fn utilization(&self) -> f64 {
        if self.total_bytes == 0 {
            return 0.0;
        }
        (1.0 - self.available_bytes as f64 / self.total_bytes as f64).clamp(0.0, 1.0)
    }
}

/// CPU figures.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CpuReading {
    /// Busy fraction over all cores since the previous reading, in `0..=1`.
    pub utilization: f64,
    /// Load averages over 1, 5 and 15 minutes.
    pub load_average: [f64; 3],
    /// Logical cores.
    pub cores: u32,
}

/// One line of a PSI file (`some` or `full`).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct PsiLine {
    /// Percentage of time stalled over the last 10 s.
    pub avg10: f64,
    /// Percentage of time stalled over the last 60 s.
    pub avg60: f64,
    /// Percentage of time stalled over the last 300 s.
    pub avg300: f64,
    /// Total stall time in microseconds since boot.
    pub total_us: u64,
}

/// One PSI file: `some` always, `full` where the kernel reports it.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct PsiReading {
    /// Some tasks stalled.
    pub some: PsiLine,
    /// All non-idle tasks stalled (absent for `cpu` on older kernels).
    pub full: Option<PsiLine>,
}

/// The three PSI files.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PsiReadings {
    /// `/proc/pressure/cpu`.
    pub cpu: Metric<PsiReading>,
    /// `/proc/pressure/memory`.
    pub memory: Metric<PsiReading>,
    /// `/proc/pressure/io`.
    pub io: Metric<PsiReading>,
}

/// One GPU.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GpuReading {
    /// Device index as the driver numbers it.
    pub index: u32,
    /// Device name, e.g. "NVIDIA H100 80GB HBM3".
    pub name: String,
    /// GPU memory in use.
    pub memory_used_bytes: u64,
    /// GPU memory in total.
    pub memory_total_bytes: u64,
    /// Compute utilization in `0..=1`.
    pub utilization: f64,
    /// Temperature in degrees Celsius, if the device reports it.
    pub temperature_celsius: Option<f64>,
    /// Power draw in watts, if the device reports it.
    pub power_watts: Option<f64>,
}

impl GpuReading {
    /// GPU memory in use as a fraction of the total.
    pub fn memory_utilization(&self) -> f64 {
        if self.memory_total_bytes == 0 {
            return 0.0;
        }
        (self.memory_used_bytes as f64 / self.memory_total_bytes as f64).clamp(0.0, 1.0)
    }
}

/// Disk space on one watched path.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DiskReading {
    /// The watched path.
    pub path: String,
    /// Bytes used on the file system that holds it.
    pub used_bytes: u64,
    /// Bytes in total on that file system.
    pub total_bytes: u64,
}

impl DiskReading {
    /// Used space as a fraction of the total.
    pub fn utilization(&self) -> f64 {
        if self.total_bytes == 0 {
            return 0.0;
        }
        (self.used_bytes as f64 / self.total_bytes as f64).clamp(0.0, 1.0)
    }
}

/// A process's own figures (the daemon's, or a process plugin's).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ProcessReading {
    /// Resident set size.
    pub rss_bytes: u64,
    /// CPU use as a fraction of one core.
    pub cpu_cores: f64,
}

/// What one plugin uses, as the host reports it (the SDK's counting allocator).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PluginUsage {
    /// The plugin's name.
    pub plugin: String,
    /// Bytes allocated and not yet freed.
    pub live_bytes: u64,
    /// Highest `live_bytes` seen.
    pub peak_bytes: u64,
}

/// One timestamped reading of every metric the monitor watches.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    /// When the reading was taken.
    pub at: Timestamp,
    /// Memory (host or cgroup).
    pub memory: Metric<MemoryReading>,
    /// CPU.
    pub cpu: Metric<CpuReading>,
    /// Pressure stall information.
    pub psi: PsiReadings,
    /// GPUs (unavailable without an NVIDIA driver; an empty list when it has no devices).
    pub gpus: Metric<Vec<GpuReading>>,
    /// Watched paths' disks, one metric each.
    pub disks: Vec<Metric<DiskReading>>,
    /// The daemon's own process.
    pub daemon: Metric<ProcessReading>,
    /// Per-plugin usage reported by the host.
    #[serde(default)]
    pub plugins: Vec<PluginUsage>,
}

impl Sample {
    /// A sample where every metric is unavailable for `reason`, a starting point for fakes.
    pub fn unavailable(at: Timestamp, reason: &str) -> Self {
        Sample {
            at,
            memory: Metric::unavailable(reason),
            cpu: Metric::unavailable(reason),
            psi: PsiReadings {
                cpu: Metric::unavailable(reason),
                memory: Metric::unavailable(reason),
                io: Metric::unavailable(reason),
            },
            gpus: Metric::unavailable(reason),
            disks: Vec::new(),
            daemon: Metric::unavailable(reason),
            plugins: Vec::new(),
        }
    }

    /// The utilization of `resource` in `0..=1`, or `None` when it is not measured here.
    ///
    /// GPU figures are those of the busiest (fullest) device, disk that of the fullest path and
    /// pressure is PSI `some avg10` as a fraction.
    pub fn utilization(&self, resource: Resource) -> Option<f64> {
        fn max(values: impl Iterator<Item = f64>) -> Option<f64> {
            values.fold(None, |acc, v| Some(acc.map_or(v, |a: f64| a.max(v))))
        }
        fn psi(m: &Metric<PsiReading>) -> Option<f64> {
            m.value().map(|p| (p.some.avg10 / 100.0).clamp(0.0, 1.0))
        }
        match resource {
            Resource::Memory => self.memory.value().map(MemoryReading::utilization),
            Resource::Cpu => self.cpu.value().map(|c| c.utilization.clamp(0.0, 1.0)),
            Resource::Gpu => max(self
                .gpus
                .value()?
                .iter()
                .map(|g| g.utilization.clamp(0.0, 1.0))),
            Resource::GpuMemory => max(self
                .gpus
                .value()?
                .iter()
                .map(GpuReading::memory_utilization)),
            Resource::Disk => max(self
                .disks
                .iter()
                .filter_map(Metric::value)
                .map(DiskReading::utilization)),
            Resource::MemoryPressure => psi(&self.psi.memory),
            Resource::CpuPressure => psi(&self.psi.cpu),
            Resource::IoPressure => psi(&self.psi.io),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gpu(index: u32, used: u64, total: u64, util: f64) -> GpuReading {
        GpuReading {
            index,
            name: format!("fake {index}"),
            memory_used_bytes: used,
            memory_total_bytes: total,
            utilization: util,
            temperature_celsius: None,
            power_watts: None,
        }
    }

    #[test]
    fn unavailable_metrics_have_no_utilization_not_zero() {
        let s = Sample::unavailable(Timestamp::ZERO, "test");
        for r in Resource::ALL {
            assert_eq!(s.utilization(r), None, "{r}");
        }
    }

    #[test]
    fn utilization_takes_the_busiest_device_and_psi_as_fraction() {
        let mut s = Sample::unavailable(Timestamp::ZERO, "test");
        s.memory = Metric::available(MemoryReading {
            total_bytes: 1000,
            used_bytes: 750,
            available_bytes: 250,
            swap_total_bytes: 0,
            swap_used_bytes: 0,
            scope: MemoryScope::Host,
        });
        s.gpus = Metric::available(vec![gpu(0, 10, 100, 0.9), gpu(1, 80, 100, 0.2)]);
        let line = PsiLine {
            avg10: 12.5,
            avg60: 0.0,
            avg300: 0.0,
            total_us: 0,
        };
        s.psi.memory = Metric::available(PsiReading {
            some: line,
            full: None,
        });
        assert_eq!(s.utilization(Resource::Memory), Some(0.75));
        assert_eq!(s.utilization(Resource::Gpu), Some(0.9));
        assert_eq!(s.utilization(Resource::GpuMemory), Some(0.8));
        assert_eq!(s.utilization(Resource::MemoryPressure), Some(0.125));
        assert_eq!(s.utilization(Resource::Disk), None);
    }

    #[test]
    fn a_gpu_library_with_no_devices_is_not_a_reading() {
        let mut s = Sample::unavailable(Timestamp::ZERO, "test");
        s.gpus = Metric::available(Vec::new());
        assert_eq!(s.utilization(Resource::Gpu), None);
    }

    #[test]
    fn metric_serializes_with_a_status_tag() {
        let m: Metric<ProcessReading> = Metric::unavailable("no /proc");
        let json = serde_json::to_value(&m).unwrap();
        assert_eq!(json["status"], "unavailable");
        assert_eq!(json["reason"], "no /proc");
        let back: Metric<ProcessReading> = serde_json::from_value(json).unwrap();
        assert_eq!(back, m);
    }
}
