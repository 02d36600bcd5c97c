//! The fixture `/proc` reads, through the real monitor, as the figures the test set.

use ballast_core::Timestamp;
use ballast_monitor::{Monitor, MonitorConfig, NvmlSource};
use ballast_testkit::proc::{FakeProc, GIB, Pressure};

#[test]
fn the_monitor_reads_the_figures_a_test_sets() {
    let dir = tempfile::tempdir().unwrap();
    let machine = FakeProc::new(dir.path());
    let mut monitor = Monitor::new(MonitorConfig {
        proc_root: machine.proc_root().to_owned(),
        sys_root: machine.sys_root().to_owned(),
        disk_paths: Vec::new(),
        nvml: NvmlSource::Disabled,
        cgroup_v2_path: None,
    });
    let _first = monitor.sample(Timestamp::from_secs(1));
    machine.set_memory(16 * GIB, 10 * GIB);
    machine.set_cpu(0.25);
    machine.set_load([0.5, 0.4, 0.3]);
    machine.set_pressure(
        "memory",
        Pressure {
            some_avg10: 1.5,
            some_avg60: 0.75,
            some_avg300: 0.25,
            some_total_us: 123_456,
            full: Some((1.5, 0.75, 0.25, 123_456)),
        },
    );
    let sample = monitor.sample(Timestamp::from_secs(2));
    let memory = sample.memory.value().expect("memory is read");
    assert_eq!(memory.total_bytes, 16 * GIB);
    assert_eq!(memory.available_bytes, 10 * GIB);
    let cpu = sample.cpu.value().expect("cpu is read");
    assert_eq!(cpu.cores, 8);
    assert!((cpu.utilization - 0.25).abs() < 1e-9, "{}", cpu.utilization);
    assert_eq!(cpu.load_average, [0.5, 0.4, 0.3]);
    let psi = sample.psi.memory.value().expect("memory pressure is read");
    assert_eq!(psi.some.avg10, 1.5);
    assert_eq!(psi.full.expect("a full line").total_us, 123_456);
}
