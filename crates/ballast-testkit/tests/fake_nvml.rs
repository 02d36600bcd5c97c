//! The fake NVML the test kit compiles, read through the real monitor: its devices, and the
//! processes a test sets and changes, charged to the plugin whose pid holds them.

use ballast_core::{Metric, PluginUsage, Timestamp};
use ballast_monitor::{Monitor, MonitorConfig, NvmlSource};
use ballast_testkit::nvml::{ContextKind, FakeGpu, FakeNvml, ProcessEntry};
use ballast_testkit::proc::{FakeProc, GIB};

#[test]
fn the_monitor_charges_the_processes_a_test_sets_to_its_plugins() {
    let dir = tempfile::tempdir().unwrap();
    let machine = FakeProc::new(&dir.path().join("machine"));
    let nvml = FakeNvml::new(
        &dir.path().join("nvml"),
        &[FakeGpu {
            memory_used_bytes: 3 * GIB,
            utilization_percent: 40,
            ..FakeGpu::new("Fake GPU", 16 * GIB)
        }],
    );
    let mut monitor = Monitor::new(MonitorConfig {
        proc_root: machine.proc_root().to_owned(),
        sys_root: machine.sys_root().to_owned(),
        disk_paths: Vec::new(),
        nvml: NvmlSource::Path(nvml.library().to_owned()),
        cgroup_v2_path: None,
    });
    monitor.report_plugin_usage(PluginUsage {
        plugin: "indexer".into(),
        pid: Some(31_000),
        ..PluginUsage::default()
    });

    let sample = monitor.sample(Timestamp::from_secs(1));
    let gpu = &sample.gpus.value().expect("the fake GPU is read")[0];
    assert_eq!(gpu.name, "Fake GPU");
    assert_eq!(gpu.memory_used_bytes, 3 * GIB);
    assert_eq!(gpu.processes, Metric::available(Vec::new()));
    assert_eq!(sample.plugins[0].gpu_memory_bytes, Some(0));

    nvml.set_processes(&[
        ProcessEntry::compute(0, 31_000, Some(2 * GIB)),
        ProcessEntry::graphics(0, 31_000, Some(2 * GIB)),
        ProcessEntry::compute(0, 32_000, Some(GIB)),
    ]);
    let sample = monitor.sample(Timestamp::from_secs(2));
    assert_eq!(sample.plugins[0].gpu_memory_bytes, Some(2 * GIB));
    let other = sample.gpu_memory_unattributed.value().expect("attributed");
    assert_eq!(other.other_bytes, Some(GIB));

    nvml.set_processes(&[ProcessEntry::ListFails {
        device: 0,
        kind: ContextKind::Compute,
        code: 3,
    }]);
    let sample = monitor.sample(Timestamp::from_secs(3));
    assert_eq!(sample.plugins[0].gpu_memory_bytes, None);
    let reason = sample.gpus.value().expect("the GPU is still read")[0]
        .processes
        .unavailable_reason()
        .expect("the list failed");
    assert!(reason.contains("listing its compute processes"), "{reason}");
}
