//! The [`Monitor`]: every sampler together, producing one [`Sample`] per call.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use ballast_core::tier::HardwareFacts;
use ballast_core::{
    CpuReading, DiskReading, GpuReading, MemoryReading, Metric, PluginUsage, ProcessReading,
    PsiReading, PsiReadings, Sample, Timestamp,
};

use crate::attribution::{attribute_gpu_memory, read_parent};
use crate::cpu::{CpuSampler, ProcessSampler};
use crate::disk::DiskSampler;
use crate::gpu::{GpuSampler, NvmlSource};
use crate::memory::MemorySampler;
use crate::parse::parse_psi;
use crate::pressure::PressureFiles;
use crate::reasons::Reasons;
use crate::source::{SampleError, Source};

/// Where the monitor reads from. Tests point the roots at fixture trees.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MonitorConfig {
    /// The proc file system, `/proc` on a real machine.
    pub proc_root: PathBuf,
    /// The sys file system, `/sys` on a real machine (cgroups are under `fs/cgroup`).
    pub sys_root: PathBuf,
    /// Paths whose file systems' space is watched (the data directory by default).
    pub disk_paths: Vec<PathBuf>,
    /// Where NVML comes from.
    pub nvml: NvmlSource,
    /// The v2 cgroup whose pressure, memory and CPU quota are read, as a path inside the
    /// hierarchy (`/system.slice/ballast.service`), when it is not the one `/proc/self/cgroup`
    /// names: the cgroup the daemon moved out of into a leaf of it, which holds the daemon and
    /// its plugins. `None`: the daemon's own cgroup.
    pub cgroup_v2_path: Option<String>,
}

impl Default for MonitorConfig {
    /// The real machine: `/proc`, `/sys`, the system's NVML, no disk paths.
    fn default() -> Self {
        MonitorConfig {
            proc_root: PathBuf::from("/proc"),
            sys_root: PathBuf::from("/sys"),
            disk_paths: Vec::new(),
            nvml: NvmlSource::System,
            cgroup_v2_path: None,
        }
    }
}

impl MonitorConfig {
    /// Whether the roots are the real machine's (`/proc` and `/sys`).
    pub fn is_real_machine(&self) -> bool {
        self.proc_root == Path::new("/proc") && self.sys_root == Path::new("/sys")
    }
}

/// One PSI file.
#[derive(Debug)]
struct PsiSource {
    key: &'static str,
    source: Source,
}

impl PsiSource {
    fn read(&mut self) -> Metric<PsiReading> {
        match self.source.parse(parse_psi) {
            Ok(reading) => Metric::available(reading),
            Err(error) if error.is_not_found() => Metric::unavailable(format!(
                "no pressure stall information: {} does not exist (kernel without PSI, or \
                 booted with psi=0)",
                self.source.name
            )),
            Err(error) => Metric::unavailable(error.to_string()),
        }
    }
}

/// Every sampler of the machine. Each call to [`Monitor::sample`] reads a handful of small files
/// (targeted reads only: no process list, no full refresh) and asks NVML about each GPU and the
/// processes on it. The GPU memory of those processes is charged to the plugins the host
/// reported (see [`crate::attribute_gpu_memory`]), reading the `stat` files of those processes
/// and their ancestors only.
///
/// Nothing read from outside can make it panic: a file that cannot be read or parsed makes its
/// metric [`Metric::Unavailable`] with the reason, which is logged once, not on every sample.
#[derive(Debug)]
pub struct Monitor {
    config: MonitorConfig,
    memory: MemorySampler,
    cpu: CpuSampler,
    psi: [PsiSource; 3],
    pressure: PressureFiles,
    disks: DiskSampler,
    gpu: GpuSampler,
    process: ProcessSampler,
    plugins: Vec<PluginUsage>,
    daemon_pid: u32,
    reasons: Reasons,
}

impl Monitor {
    /// A monitor reading from `config`'s roots. It never fails: what cannot be read is reported
    /// unavailable in each sample. NVML is loaded here, once.
    pub fn new(config: MonitorConfig) -> Self {
        let proc = config.proc_root.as_path();
        let v2_path = config.cgroup_v2_path.as_deref();
        let pressure = PressureFiles::discover(proc, &config.sys_root, v2_path);
        let mut monitor = Monitor {
            memory: MemorySampler::new(proc, &config.sys_root, v2_path),
            cpu: CpuSampler::new(proc).with_cgroup(proc, &config.sys_root, v2_path),
            psi: [
                PsiSource {
                    key: "psi.cpu",
                    source: Source::new(pressure.cpu.clone()),
                },
                PsiSource {
                    key: "psi.memory",
                    source: Source::new(pressure.memory.clone()),
                },
                PsiSource {
                    key: "psi.io",
                    source: Source::new(pressure.io.clone()),
                },
            ],
            pressure,
            disks: DiskSampler::new(&config.disk_paths),
            gpu: GpuSampler::new(&config.nvml),
            process: ProcessSampler::new(proc),
            plugins: Vec::new(),
            daemon_pid: own_pid(proc),
            reasons: Reasons::default(),
            config,
        };
        // The first CPU reading is the baseline the next sample's utilization is measured from.
        let _ = monitor.cpu.sample();
        monitor
    }

    /// The pressure files it reads and whose they are (the PSI trigger is armed on the same
    /// memory file).
    pub fn pressure_files(&self) -> &PressureFiles {
        &self.pressure
    }

    /// The configuration it was built from.
    pub fn config(&self) -> &MonitorConfig {
        &self.config
    }

    /// The process id the monitor takes for the daemon's own: the one `<proc_root>/self/stat`
    /// names (so a fixture tree decides it), or this process's when that cannot be read.
    pub fn daemon_pid(&self) -> u32 {
        self.daemon_pid
    }

    /// Takes `pid` for the daemon's own process from now on: for a monitor that is not inside
    /// the daemon (`ballast sample`) but charges GPU memory on its behalf.
    pub fn set_daemon_pid(&mut self, pid: u32) {
        self.daemon_pid = pid;
    }

    /// Takes one sample at `now`.
    pub fn sample(&mut self, now: Timestamp) -> Sample {
        let memory = self.sample_memory();
        let cpu = self.sample_cpu();
        let psi = self.sample_psi();
        let mut gpus = self.sample_gpus();
        let mut plugins = self.plugins.clone();
        let gpu_memory_unattributed = self.attribute_gpu_memory(&mut gpus, &mut plugins);
        Sample {
            at: now,
            memory,
            cpu,
            psi,
            gpus,
            disks: self.sample_disks(),
            daemon: self.sample_daemon(now),
            plugins,
            gpu_memory_unattributed,
        }
    }

    /// Charges the GPU processes in `gpus` to `plugins` (see [`crate::attribute_gpu_memory`]),
    /// reading each process's parent under the proc root at most once.
    fn attribute_gpu_memory(
        &self,
        gpus: &mut Metric<Vec<GpuReading>>,
        plugins: &mut [PluginUsage],
    ) -> Metric<ballast_core::GpuMemoryUnattributed> {
        let proc_root = self.config.proc_root.as_path();
        let mut parents: HashMap<u32, Option<u32>> = HashMap::new();
        attribute_gpu_memory(gpus, plugins, self.daemon_pid, |pid| {
            *parents
                .entry(pid)
                .or_insert_with(|| read_parent(proc_root, pid))
        })
    }

    /// Memory: the host's, or the cgroup's when its limit is lower.
    pub fn sample_memory(&mut self) -> Metric<MemoryReading> {
        let outcome = self.memory.sample();
        let cgroup_problem = outcome
            .cgroup_problem
            .map(|e| format!("{e}; memory figures are the host's instead of the cgroup's"));
        self.reasons
            .note_reason("memory.cgroup", cgroup_problem.as_deref());
        let metric = into_metric(outcome.reading);
        self.reasons.note("memory", &metric);
        metric
    }

    /// CPU utilization since the previous call, load averages and cores.
    pub fn sample_cpu(&mut self) -> Metric<CpuReading> {
        let metric = match self.cpu.sample() {
            Ok(reading) => Metric::available(reading),
            // Not ready is expected on the first sample and not worth a log line.
            Err(SampleError::NotReady(reason)) => return Metric::unavailable(reason),
            Err(error) => Metric::unavailable(error.to_string()),
        };
        self.reasons.note("cpu", &metric);
        metric
    }

    /// The three PSI files.
    pub fn sample_psi(&mut self) -> PsiReadings {
        let [cpu, memory, io] = &mut self.psi;
        let readings = PsiReadings {
            cpu: cpu.read(),
            memory: memory.read(),
            io: io.read(),
            scope: self.pressure.scope.clone(),
        };
        for (source, metric) in self
            .psi
            .iter()
            .zip([&readings.cpu, &readings.memory, &readings.io])
        {
            self.reasons.note(source.key, metric);
        }
        readings
    }

    /// The watched paths' file systems.
    pub fn sample_disks(&mut self) -> Vec<Metric<DiskReading>> {
        let disks = self.disks.sample();
        for (path, metric) in self.disks.paths().zip(&disks) {
            self.reasons.note(path, metric);
        }
        disks
    }

    /// Every GPU NVML sees.
    pub fn sample_gpus(&mut self) -> Metric<Vec<GpuReading>> {
        let metric = self.gpu.sample();
        let expected = self.gpu.absent_normally();
        self.reasons.note_expected("gpu", &metric, expected);
        metric
    }

    /// The daemon's own RSS and CPU use (CPU measured between calls, at `now`).
    pub fn sample_daemon(&mut self, now: Timestamp) -> Metric<ProcessReading> {
        let metric = match self.process.sample(now) {
            Ok(reading) => Metric::available(reading),
            Err(SampleError::NotReady(reason)) => return Metric::unavailable(reason),
            Err(error) => Metric::unavailable(error.to_string()),
        };
        self.reasons.note("daemon", &metric);
        metric
    }

    /// Takes the figures the host reported for one plugin, replacing that plugin's earlier ones;
    /// later samples carry the latest figures of every plugin, in name order, with the GPU memory
    /// charged to each (the reported `gpu_memory_bytes` is not used: the monitor measures it).
    /// The plugin's `pid` and `in_process_gpu` decide what is charged to it.
    pub fn report_plugin_usage(&mut self, usage: PluginUsage) {
        match self
            .plugins
            .binary_search_by(|known| known.plugin.cmp(&usage.plugin))
        {
            Ok(i) => self.plugins[i] = usage,
            Err(i) => self.plugins.insert(i, usage),
        }
    }

    /// Forgets every plugin's reported figures: later samples carry no plugin until the next
    /// report.
    pub fn forget_plugin_usage(&mut self) {
        self.plugins.clear();
    }

    /// Loads NVML again, e.g. after a driver was installed or a GPU appeared.
    pub fn reload_gpu(&mut self) {
        self.gpu.reload();
    }

    /// Detects the facts tier classification needs: memory (the cgroup limit when lower),
    /// cores, the cgroup's CPU quota and GPUs. Physical cores and the CPU architecture come from sysinfo, and only when
    /// the roots are the real machine's. NVML is loaded again first if it was unavailable, so
    /// that a driver installed since is seen.
    pub fn hardware_facts(&mut self) -> Result<HardwareFacts, SampleError> {
        if self.gpu.unavailable_reason().is_some() {
            self.gpu.reload();
        }
        let memory = self.memory.sample().reading?;
        let cores = self.cpu.cores()?;
        let (physical_cores, cpu_arch) = if self.config.is_real_machine() {
            (
                sysinfo::System::physical_core_count()
                    .ok()
                    .and_then(|n| u32::try_from(n).ok()),
                Some(sysinfo::System::cpu_arch()),
            )
        } else {
            (None, None)
        };
        let cpu_limit_cores = crate::cpu_limit::cpu_limit_cores(
            &self.config.proc_root,
            &self.config.sys_root,
            self.config.cgroup_v2_path.as_deref(),
        )?;
        Ok(HardwareFacts {
            memory_total_bytes: memory.total_bytes,
            memory_scope: memory.scope,
            cores,
            cpu_limit_cores,
            physical_cores,
            cpu_arch,
            gpus: self.gpu.facts(),
        })
    }
}

/// The pid in `<proc_root>/self/stat`, or this process's own when it cannot be read.
fn own_pid(proc_root: &Path) -> u32 {
    std::fs::read_to_string(proc_root.join("self/stat"))
        .ok()
        .and_then(|text| crate::parse::parse_stat_ids("self/stat", &text).ok())
        .map_or_else(std::process::id, |ids| ids.pid)
}

fn into_metric<T>(result: Result<T, SampleError>) -> Metric<T> {
    match result {
        Ok(value) => Metric::available(value),
        Err(error) => Metric::unavailable(error.to_string()),
    }
}
