//! nvml-wrapper's real code path against the fake `libnvidia-ml.so` built by build.rs: two
//! scripted devices, a driver that is not loaded, a failing init and a missing library, and the
//! processes on each device (both lists merged, unavailable figures, a failing list, entries
//! changed between samples).

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

/// Replaces the processes the fake library lists (`DEVICE PID BYTES KIND` lines) with `lines`,
/// all at once: a new file renamed over the old one.
fn set_processes(dir: &Path, lines: &str) {
    let staged = dir.join("fake-nvml-processes.new");
    std::fs::write(&staged, lines).expect("write the fake NVML processes");
    std::fs::rename(&staged, dir.join("fake-nvml-processes")).expect("replace the processes");
}

/// Each device's processes as `GPU: pid=bytes ...`, or the reason they are unavailable.
fn describe_processes(metric: &Metric<Vec<ballast_core::GpuReading>>) -> String {
    let Some(readings) = metric.value() else {
        return format!(
            "unavailable: {}\n",
            metric.unavailable_reason().unwrap_or("")
        );
    };
    let mut out = String::new();
    for reading in readings {
        out.push_str(&format!("{}:", reading.index));
        match &reading.processes {
            Metric::Available { value } => {
                for p in value {
                    match p.used_bytes {
                        Some(bytes) => out.push_str(&format!(" {}={bytes}", p.pid)),
                        None => out.push_str(&format!(" {}=?", p.pid)),
                    }
                    assert_eq!(p.holder, None, "the sampler attributes nothing");
                }
            }
            Metric::Unavailable { reason } => out.push_str(&format!(" unavailable: {reason}")),
        }
        out.push('\n');
    }
    out
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
        GpuReading { index: 0, name: "Fake GPU A100", memory_used_bytes: 10737418240, memory_total_bytes: 42949672960, utilization: 0.35, temperature_celsius: Some(61.0), power_watts: Some(120.5), processes: Available { value: [] } }
        GpuReading { index: 1, name: "Fake GPU T4", memory_used_bytes: 15032385536, memory_total_bytes: 17179869184, utilization: 0.9, temperature_celsius: None, power_watts: None, processes: Available { value: [] } }
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

#[test]
fn processes_of_both_lists_each_once_with_unavailable_figures_kept_unknown() {
    let dir = tempfile::tempdir().unwrap();
    let library = fake_nvml(dir.path(), TWO_DEVICES);
    set_processes(
        dir.path(),
        "# device pid bytes kind\n\
         0 4100 1073741824 compute\n\
         0 4100 1073741824 graphics\n\
         0 4200 - compute\n\
         0 4300 536870912 graphics\n\
         0 4400 0 compute\n\
         1 4100 2048 compute\n\
         1 4500 - graphics\n\
         1 4500 4096 compute\n",
    );
    let mut gpu = GpuSampler::new(&NvmlSource::Path(library));
    expect![[r#"
        0: 4100=1073741824 4200=? 4300=536870912 4400=0
        1: 4100=2048 4500=4096
    "#]]
    .assert_eq(&describe_processes(&gpu.sample()));
}

#[test]
fn more_processes_than_the_first_guess_go_through_the_two_call_protocol() {
    let dir = tempfile::tempdir().unwrap();
    let library = fake_nvml(
        dir.path(),
        "init 0\ncount 1\n0 name A\n0 memory_total 100\n",
    );
    let lines: String = (0..40)
        .map(|i| {
            format!(
                "0 {} {} compute\n0 {} {} graphics\n",
                1000 + i,
                i,
                2000 + i,
                i
            )
        })
        .collect();
    set_processes(dir.path(), &lines);
    let mut gpu = GpuSampler::new(&NvmlSource::Path(library));
    let sample = gpu.sample();
    let processes = sample.value().unwrap()[0].processes.value().unwrap();
    assert_eq!(processes.len(), 80);
    assert_eq!(processes[0].pid, 1000);
    assert_eq!(processes[79].pid, 2039);
    assert_eq!(processes[79].used_bytes, Some(39));
}

#[test]
fn a_failing_process_list_is_unavailable_with_the_reason_and_the_device_still_read() {
    let dir = tempfile::tempdir().unwrap();
    let library = fake_nvml(dir.path(), TWO_DEVICES);
    // 3 is NVML_ERROR_NOT_SUPPORTED, 4 NVML_ERROR_NO_PERMISSION.
    set_processes(
        dir.path(),
        "0 4100 1024 compute\n0 fail graphics 3\n1 fail compute 4\n1 4500 1 graphics\n",
    );
    let mut gpu = GpuSampler::new(&NvmlSource::Path(library));
    let sample = gpu.sample();
    expect![[r#"
        0: unavailable: NVML: GPU 0: listing its graphics processes: the requested operation is not available on the target device
        1: unavailable: NVML: GPU 1: listing its compute processes: the current user does not have permission to perform this operation
    "#]]
    .assert_eq(&describe_processes(&sample));
    assert_eq!(sample.value().unwrap()[0].memory_used_bytes, 10737418240);
}

#[test]
fn processes_changed_during_a_test_are_seen_on_the_next_sample() {
    let dir = tempfile::tempdir().unwrap();
    let library = fake_nvml(dir.path(), TWO_DEVICES);
    let mut gpu = GpuSampler::new(&NvmlSource::Path(library));
    // No processes file yet: NVML lists no process, which is a list, not unavailable.
    assert_eq!(describe_processes(&gpu.sample()), "0:\n1:\n");
    set_processes(dir.path(), "1 77 5000 compute\n");
    assert_eq!(describe_processes(&gpu.sample()), "0:\n1: 77=5000\n");
    set_processes(dir.path(), "0 78 6000 graphics\n1 fail compute 999\n");
    let text = describe_processes(&gpu.sample());
    assert!(
        text.starts_with("0: 78=6000\n1: unavailable: NVML: GPU 1"),
        "{text}"
    );
    set_processes(dir.path(), "");
    assert_eq!(describe_processes(&gpu.sample()), "0:\n1:\n");
}
