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

    /// The value to change, if available.
    pub fn value_mut(&mut self) -> Option<&mut T> {
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

/// What the memory figures (and the pressure files, and a CPU quota) are relative to.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum MemoryScope {
    /// The whole host (`/proc/meminfo`, `/proc/pressure/*`).
    #[default]
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
    /// The CPU quota of the daemon's cgroup, when it has one: `utilization` is then the cgroup's
    /// use relative to the quota, not the host's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quota: Option<CpuQuota>,
}

/// A cgroup's CPU quota (v2 `cpu.max`, v1 `cpu.cfs_quota_us` over `cpu.cfs_period_us`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CpuQuota {
    /// The quota in cores (`150000 100000` is 1.5).
    pub cores: f64,
    /// The cgroup it belongs to.
    pub scope: MemoryScope,
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
    /// `/proc/pressure/cpu`, or the cgroup's `cpu.pressure`.
    pub cpu: Metric<PsiReading>,
    /// `/proc/pressure/memory`, or the cgroup's `memory.pressure`.
    pub memory: Metric<PsiReading>,
    /// `/proc/pressure/io`, or the cgroup's `io.pressure`.
    pub io: Metric<PsiReading>,
    /// Whose pressure it is: the host's, or the daemon's cgroup's (v2 only: v1 has no
    /// per-cgroup pressure).
    #[serde(default)]
    pub scope: MemoryScope,
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
    /// The processes holding memory on this device (compute and graphics, each once), or why
    /// NVML could not list them. Telemetry written before processes were read has none, which
    /// reads back as unavailable, not as an empty list.
    #[serde(default = "not_recorded")]
    pub processes: Metric<Vec<GpuProcess>>,
}

/// The reason given for a figure that telemetry from an older ballast does not hold.
fn not_recorded<T>() -> Metric<T> {
    Metric::unavailable("not recorded by the ballast that wrote this sample")
}

/// One process with a context on a GPU, as NVML lists it; the device is the reading's.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GpuProcess {
    /// The process id, as NVML reports it.
    pub pid: u32,
    /// GPU memory the process holds on this device; `None` when NVML does not report it (for
    /// example without the permission to see other users' processes), which is not a zero.
    pub used_bytes: Option<u64>,
    /// Whom the monitor charged this process's memory to; `None` in a reading that was not
    /// attributed (straight from the GPU sampler, or older telemetry).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub holder: Option<GpuMemoryHolder>,
}

/// Whom a GPU process's memory is charged to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum GpuMemoryHolder {
    /// A plugin: the process is in the process tree of the plugin's own process (a process
    /// plugin, or an isolated plugin's worker), or it is the daemon and this plugin is the one
    /// in-process plugin that declares it needs a GPU.
    Plugin {
        /// The plugin's name.
        plugin: String,
    },
    /// The daemon's own process, when no single in-process plugin declares it needs a GPU (none
    /// or several do), so no one plugin can be charged.
    InProcessUnattributed,
    /// A process outside every plugin's tree that is not the daemon: another program.
    Other,
}

/// The GPU memory no plugin was charged with, summed over every device.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GpuMemoryUnattributed {
    /// Held by the daemon's own process and charged to no plugin (see
    /// [`GpuMemoryHolder::InProcessUnattributed`]); `None` when NVML does not report that
    /// process's figure.
    pub in_process_bytes: Option<u64>,
    /// Held by other programs' processes ([`GpuMemoryHolder::Other`]); `None` when NVML does not
    /// report the figure of one of them.
    pub other_bytes: Option<u64>,
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

/// What one plugin uses: the figures the host reports (the SDK's counting allocator, the
/// plugin's process) and the GPU memory the monitor attributes to it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PluginUsage {
    /// The plugin's name.
    pub plugin: String,
    /// Bytes allocated and not yet freed.
    pub live_bytes: u64,
    /// Highest `live_bytes` seen.
    pub peak_bytes: u64,
    /// The process at the root of the plugin's own process tree, reported by the host: a
    /// process plugin's process, or the worker of a native plugin isolated in one. `None` for a
    /// plugin that runs inside the daemon. GPU processes in this tree are charged to the plugin.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    /// Reported by the host: the plugin runs inside the daemon and declares it needs a GPU
    /// (`needs_gpu`). When exactly one plugin says so, the daemon's own GPU memory is charged to
    /// it; otherwise that memory is unattributed.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub in_process_gpu: bool,
    /// Filled in by the monitor on each sample: the GPU memory the plugin holds on every device,
    /// read per process through NVML. `None` when it is not known: no GPU process list (no
    /// driver, or NVML cannot list a device's processes), a process of the plugin whose figure
    /// NVML does not report, or an in-process plugin whose share of the daemon's GPU memory
    /// cannot be told (several in-process plugins, or none, declare they need a GPU).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu_memory_bytes: Option<u64>,
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
    /// Per-plugin usage reported by the host, with the GPU memory the monitor attributed.
    #[serde(default)]
    pub plugins: Vec<PluginUsage>,
    /// The GPU memory charged to no plugin: the daemon's own when no single in-process plugin
    /// can be charged, and other programs'. Unavailable, with the reason, when the GPUs' process
    /// lists are.
    #[serde(default = "not_recorded")]
    pub gpu_memory_unattributed: Metric<GpuMemoryUnattributed>,
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
                scope: MemoryScope::Host,
            },
            gpus: Metric::unavailable(reason),
            disks: Vec::new(),
            daemon: Metric::unavailable(reason),
            plugins: Vec::new(),
            gpu_memory_unattributed: Metric::unavailable(reason),
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
            processes: Metric::available(Vec::new()),
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

    /// A sample as ballast wrote it to its telemetry before GPU processes were read.
    const OLD_SAMPLE: &str = r#"{
        "at": 1000,
        "memory": {"status": "unavailable", "reason": "test"},
        "cpu": {"status": "unavailable", "reason": "test"},
        "psi": {
            "cpu": {"status": "unavailable", "reason": "test"},
            "memory": {"status": "unavailable", "reason": "test"},
            "io": {"status": "unavailable", "reason": "test"}
        },
        "gpus": {"status": "available", "value": [{
            "index": 0, "name": "A", "memory_used_bytes": 10, "memory_total_bytes": 100,
            "utilization": 0.5, "temperature_celsius": null, "power_watts": null
        }]},
        "disks": [],
        "daemon": {"status": "unavailable", "reason": "test"},
        "plugins": [{"plugin": "voice", "live_bytes": 1, "peak_bytes": 2}]
    }"#;

    #[test]
    fn telemetry_from_before_gpu_processes_reads_back_as_not_recorded() {
        let sample: Sample = serde_json::from_str(OLD_SAMPLE).unwrap();
        let gpu = &sample.gpus.value().unwrap()[0];
        assert_eq!(
            gpu.processes.unavailable_reason(),
            Some("not recorded by the ballast that wrote this sample")
        );
        assert!(sample.gpu_memory_unattributed.value().is_none());
        let voice = &sample.plugins[0];
        assert_eq!((voice.pid, voice.in_process_gpu), (None, false));
        assert_eq!(voice.gpu_memory_bytes, None);
    }

    #[test]
    fn gpu_processes_and_attribution_round_trip() {
        let mut sample = Sample::unavailable(Timestamp::ZERO, "test");
        let mut reading = gpu(0, 10, 100, 0.5);
        reading.processes = Metric::available(vec![
            GpuProcess {
                pid: 7,
                used_bytes: Some(5),
                holder: Some(GpuMemoryHolder::Plugin {
                    plugin: "voice".into(),
                }),
            },
            GpuProcess {
                pid: 8,
                used_bytes: None,
                holder: Some(GpuMemoryHolder::Other),
            },
        ]);
        sample.gpus = Metric::available(vec![reading]);
        sample.plugins = vec![PluginUsage {
            plugin: "voice".into(),
            pid: Some(7),
            in_process_gpu: true,
            gpu_memory_bytes: Some(5),
            ..PluginUsage::default()
        }];
        sample.gpu_memory_unattributed = Metric::available(GpuMemoryUnattributed {
            in_process_bytes: Some(0),
            other_bytes: None,
        });
        let json = serde_json::to_value(&sample).unwrap();
        let processes = &json["gpus"]["value"][0]["processes"]["value"];
        assert_eq!(processes[0]["holder"]["kind"], "plugin");
        assert_eq!(processes[1]["used_bytes"], serde_json::Value::Null);
        let back: Sample = serde_json::from_value(json).unwrap();
        assert_eq!(back, sample);
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
