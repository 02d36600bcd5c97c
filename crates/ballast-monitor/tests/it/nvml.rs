//! nvml-wrapper's real code path against the fake `libnvidia-ml.so` built by build.rs: two
//! scripted devices, a driver that is not loaded, a failing init and a missing library.

use std::path::{Path, PathBuf};

use ballast_core::{Metric, Resource, Timestamp};
use ballast_monitor::{GpuSampler, Monitor, NVML_RETRY_SAMPLES, NvmlSource};
use expect_test::expect;

use crate::machine::FakeMachine;

const TWO_DEVICES: &str = "\
init 0
count 2
0 name Fake GPU A100
0 memory_total 42949672960
0 memory_used 10737418240
0 utilization 35
0 temperature 61
0 power_mw 120500
1 name Fake GPU T4
1 memory_total 17179869184
1 memory_used 15032385536
1 utilization 90
1 temperature_rc 3
1 power_rc 3
";

/// Copies the fake library into `dir` with `script` beside it; each copy loads separately.
fn fake_nvml(dir: &Path, script: &str) -> PathBuf {
    let built = env!("BALLAST_FAKE_NVML");
    assert!(
        !built.is_empty(),
        "the fake NVML library was not built (see the build script's warning: is a C compiler installed?)"
    );
    let library = dir.join("libnvidia-ml.so");
    std::fs::copy(built, &library).expect("copy the fake NVML library");
    std::fs::write(dir.join("fake-nvml.conf"), script).expect("write the fake NVML script");
    library
}

fn describe(metric: &Metric<Vec<ballast_core::GpuReading>>) -> String {
    match metric {
        Metric::Available { value } => value.iter().map(|g| format!("{g:?}\n")).collect(),
        Metric::Unavailable { reason } => format!("unavailable: {reason}\n"),
    }
}

#[test]
fn two_fake_devices_through_nvml_wrapper() {
    let dir = tempfile::tempdir().unwrap();
    let library = fake_nvml(dir.path(), TWO_DEVICES);
    let mut gpu = GpuSampler::new(&NvmlSource::Path(library));
    assert_eq!(gpu.unavailable_reason(), None);
    expect![[r#"
        GpuReading { index: 0, name: "Fake GPU A100", memory_used_bytes: 10737418240, memory_total_bytes: 42949672960, utilization: 0.35, temperature_celsius: Some(61.0), power_watts: Some(120.5) }
        GpuReading { index: 1, name: "Fake GPU T4", memory_used_bytes: 15032385536, memory_total_bytes: 17179869184, utilization: 0.9, temperature_celsius: None, power_watts: None }
    "#]]
    .assert_eq(&describe(&gpu.sample()));
}

#[test]
fn the_monitor_reports_the_busiest_fake_device() {
    let dir = tempfile::tempdir().unwrap();
    let machine = FakeMachine::new();
    let mut config = machine.config();
    config.nvml = NvmlSource::Path(fake_nvml(dir.path(), TWO_DEVICES));
    let mut monitor = Monitor::new(config);
    let sample = monitor.sample(Timestamp::from_secs(1));
    assert_eq!(sample.utilization(Resource::Gpu), Some(0.9));
    assert_eq!(sample.utilization(Resource::GpuMemory), Some(14.0 / 16.0));
    let facts = monitor.hardware_facts().unwrap();
    assert_eq!(facts.gpu_count(), 2);
    assert_eq!(facts.largest_gpu_memory_bytes(), 40 << 30);
}

#[test]
fn no_devices_is_an_empty_list_not_unavailable() {
    let dir = tempfile::tempdir().unwrap();
    let library = fake_nvml(dir.path(), "init 0\ncount 0\n");
    let mut gpu = GpuSampler::new(&NvmlSource::Path(library));
    assert_eq!(gpu.sample(), Metric::available(Vec::new()));
}

#[test]
fn driver_not_loaded_and_failing_init_are_reasons() {
    let dir = tempfile::tempdir().unwrap();
    let library = fake_nvml(dir.path(), "init 9\n");
    let gpu = GpuSampler::new(&NvmlSource::Path(library.clone()));
    let reason = gpu.unavailable_reason().unwrap();
    assert!(
        reason.starts_with("the NVIDIA driver is not loaded"),
        "{reason}"
    );

    let dir = tempfile::tempdir().unwrap();
    let library = fake_nvml(dir.path(), "init 999\n");
    let gpu = GpuSampler::new(&NvmlSource::Path(library));
    let reason = gpu.unavailable_reason().unwrap();
    assert!(reason.contains("failed to initialize"), "{reason}");
}

#[test]
fn a_missing_library_is_a_reason() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("libnvidia-ml.so");
    let mut gpu = GpuSampler::new(&NvmlSource::Path(missing));
    let metric = gpu.sample();
    let reason = metric.unavailable_reason().unwrap();
    assert!(
        reason.starts_with("cannot load the NVML library"),
        "{reason}"
    );
    assert!(reason.contains("libnvidia-ml.so"), "{reason}");
}

#[test]
fn a_library_without_nvml_shutdown_is_refused_before_nvml_wrapper_loads_it() {
    // libm has no nvmlShutdown: nvml-wrapper would panic on drop with such a library.
    let gpu = GpuSampler::new(&NvmlSource::Path(PathBuf::from("libm.so.6")));
    let reason = gpu.unavailable_reason().unwrap();
    assert!(reason.contains("does not export nvmlShutdown"), "{reason}");
}

#[test]
fn a_driver_installed_later_is_picked_up() {
    let dir = tempfile::tempdir().unwrap();
    let library = dir.path().join("libnvidia-ml.so");
    let mut gpu = GpuSampler::new(&NvmlSource::Path(library.clone()));
    assert!(gpu.sample().unavailable_reason().is_some());
    fake_nvml(dir.path(), TWO_DEVICES);
    for _ in 2..NVML_RETRY_SAMPLES {
        assert!(gpu.sample().unavailable_reason().is_some());
    }
    // The sixtieth sample while unavailable loads NVML again.
    assert_eq!(gpu.sample().value().map(Vec::len), Some(2));

    // Tier detection tries again at once.
    let dir = tempfile::tempdir().unwrap();
    let machine = FakeMachine::new();
    let mut config = machine.config();
    config.nvml = NvmlSource::Path(dir.path().join("libnvidia-ml.so"));
    let mut monitor = Monitor::new(config);
    assert_eq!(monitor.hardware_facts().unwrap().gpu_count(), 0);
    fake_nvml(dir.path(), TWO_DEVICES);
    assert_eq!(monitor.hardware_facts().unwrap().gpu_count(), 2);
}
