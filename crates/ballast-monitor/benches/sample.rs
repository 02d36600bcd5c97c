//! Benchmarks of the monitor on this machine's real /proc and /sys: one full sample without a
//! GPU, each sampler alone, the GPU sampler against the fake NVML library (two devices, without
//! and with processes), the attribution of GPU processes to plugins over the real /proc and,
//! where the machine has an NVIDIA driver, the GPU sampler against the real one.
//!
//! Run with `cargo bench -p ballast-monitor --bench sample`. At 1 Hz, the share of one core the
//! monitor costs is the full sample's time divided by one second.

use std::hint::black_box;
use std::path::PathBuf;

use ballast_core::{GpuProcess, GpuReading, Metric, PluginUsage, Timestamp};
use ballast_monitor::{
    GpuSampler, Monitor, MonitorConfig, NvmlSource, attribute_gpu_memory, read_parent,
};
use criterion::{Criterion, criterion_group, criterion_main};

fn monitor() -> Monitor {
    Monitor::new(MonitorConfig {
        disk_paths: vec![PathBuf::from(".")],
        nvml: NvmlSource::Disabled,
        ..MonitorConfig::default()
    })
}

fn samplers(c: &mut Criterion) {
    let mut m = monitor();
    let mut now = 0u64;
    c.bench_function("full_sample_without_gpu", |b| {
        b.iter(|| {
            // Each sample one second later, as on the tick.
            now += 1000;
            black_box(m.sample(Timestamp::from_millis(now)))
        })
    });
    c.bench_function("memory", |b| b.iter(|| black_box(m.sample_memory())));
    c.bench_function("cpu", |b| b.iter(|| black_box(m.sample_cpu())));
    c.bench_function("psi", |b| b.iter(|| black_box(m.sample_psi())));
    c.bench_function("disk", |b| b.iter(|| black_box(m.sample_disks())));
    c.bench_function("daemon", |b| {
        b.iter(|| {
            now += 1000;
            black_box(m.sample_daemon(Timestamp::from_millis(now)))
        })
    });
}

fn fake_gpu(c: &mut Criterion) {
    let built = env!("BALLAST_FAKE_NVML");
    if built.is_empty() {
        eprintln!("the fake NVML library was not built; skipping the GPU benchmark");
        return;
    }
    let Ok(dir) = tempfile::tempdir() else {
        eprintln!("no temporary directory; skipping the GPU benchmark");
        return;
    };
    let library = dir.path().join("libnvidia-ml.so");
    let script = "init 0\ncount 2\n0 name A\n0 memory_total 100\n1 name B\n1 memory_total 100\n";
    if std::fs::copy(built, &library).is_err()
        || std::fs::write(dir.path().join("fake-nvml.conf"), script).is_err()
    {
        eprintln!("cannot set up the fake NVML library; skipping the GPU benchmark");
        return;
    }
    let mut gpu = GpuSampler::new(&NvmlSource::Path(library));
    c.bench_function("gpu_fake_nvml_two_devices", |b| {
        b.iter(|| black_box(gpu.sample()))
    });
    // Four processes on each device, half of them in both lists. The fake library reads its
    // process file on every call (four calls per device), which a real driver does not.
    let processes: String = (0..8)
        .map(|i| {
            let kind = if i % 2 == 0 { "compute" } else { "graphics" };
            format!(
                "{} {} {} {kind}\n{} {} {} compute\n",
                i % 2,
                100 + i,
                i << 20,
                i % 2,
                100 + i,
                i << 20
            )
        })
        .collect();
    if std::fs::write(dir.path().join("fake-nvml-processes"), processes).is_err() {
        eprintln!("cannot write the fake NVML processes; skipping that benchmark");
        return;
    }
    c.bench_function("gpu_fake_nvml_two_devices_8_processes", |b| {
        b.iter(|| black_box(gpu.sample()))
    });
}

/// Charging eight GPU processes to plugins, parents read from the real /proc: this process, its
/// ancestors and pids that do not exist, with pid 1 a plugin's root so that every walk goes up.
fn attribution(c: &mut Criterion) {
    let me = std::process::id();
    let parent = read_parent(std::path::Path::new("/proc"), me).unwrap_or(1);
    let pids = [me, parent, 1, 4_000_001, 4_000_002, 4_000_003, me, parent];
    let reading = GpuReading {
        index: 0,
        name: "bench".into(),
        memory_used_bytes: 0,
        memory_total_bytes: 1 << 40,
        utilization: 0.0,
        temperature_celsius: None,
        power_watts: None,
        processes: Metric::available(
            pids.iter()
                .map(|&pid| GpuProcess {
                    pid,
                    used_bytes: Some(1 << 20),
                    holder: None,
                })
                .collect(),
        ),
    };
    let plugins = vec![
        PluginUsage {
            plugin: "root".into(),
            pid: Some(1),
            ..PluginUsage::default()
        },
        PluginUsage {
            plugin: "in-process".into(),
            in_process_gpu: true,
            ..PluginUsage::default()
        },
    ];
    let proc_root = std::path::Path::new("/proc");
    c.bench_function("attribution_8_processes_real_proc", |b| {
        b.iter(|| {
            let mut gpus = Metric::available(vec![reading.clone()]);
            let mut plugins = plugins.clone();
            let mut parents = std::collections::HashMap::new();
            let remainder = attribute_gpu_memory(&mut gpus, &mut plugins, 0, |pid| {
                *parents
                    .entry(pid)
                    .or_insert_with(|| read_parent(proc_root, pid))
            });
            black_box((gpus, plugins, remainder))
        })
    });
}

/// The system's NVML, where the machine has an NVIDIA driver (skipped elsewhere).
fn system_gpu(c: &mut Criterion) {
    let mut gpu = GpuSampler::new(&NvmlSource::System);
    if let Some(reason) = gpu.unavailable_reason() {
        eprintln!("skipping the system GPU benchmark: {reason}");
        return;
    }
    c.bench_function("gpu_system_nvml", |b| b.iter(|| black_box(gpu.sample())));
    let mut m = Monitor::new(MonitorConfig {
        disk_paths: vec![PathBuf::from(".")],
        ..MonitorConfig::default()
    });
    let mut now = 0u64;
    c.bench_function("full_sample_with_system_gpu", |b| {
        b.iter(|| {
            now += 1000;
            black_box(m.sample(Timestamp::from_millis(now)))
        })
    });
}

criterion_group!(benches, samplers, fake_gpu, attribution, system_gpu);
criterion_main!(benches);
