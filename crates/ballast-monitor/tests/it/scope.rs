//! Pressure and CPU where the daemon runs, on fixture trees: a v2 cgroup's pressure files (alone
//! and in a hybrid layout's `unified` mount, and a namespaced mount root), the host's files for
//! a v1 cgroup and the real root, and CPU utilization relative to a v2 or v1 quota.

use ballast_core::MemoryScope;
use ballast_monitor::Monitor;
use proptest::prelude::*;

use crate::machine::FakeMachine;

const CGROUP_MEMORY_PRESSURE: &str = "some avg10=42.00 avg60=10.00 avg300=2.00 total=77\nfull avg10=30.00 avg60=8.00 avg300=1.00 total=55\n";

/// Writes a v2 cgroup directory `dir` with pressure files (cpu 3.00, memory 42.00, io 7.00).
fn v2_cgroup(machine: &FakeMachine, dir: &str) {
    machine.write(&format!("{dir}/cgroup.type"), "domain\n");
    machine.write(
        &format!("{dir}/cpu.pressure"),
        "some avg10=3.00 avg60=0.00 avg300=0.00 total=1\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=0\n",
    );
    machine.write(&format!("{dir}/memory.pressure"), CGROUP_MEMORY_PRESSURE);
    machine.write(
        &format!("{dir}/io.pressure"),
        "some avg10=7.00 avg60=0.00 avg300=0.00 total=1\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=0\n",
    );
}

fn memory_avg10(monitor: &mut Monitor) -> f64 {
    monitor.sample_psi().memory.value().unwrap().some.avg10
}

#[test]
fn a_v2_cgroups_pressure_files_are_read_and_named() {
    let machine = FakeMachine::new();
    machine.write("proc/self/cgroup", "0::/ballast.slice/ballast.service\n");
    let dir = "sys/fs/cgroup/ballast.slice/ballast.service";
    v2_cgroup(&machine, dir);
    let mut monitor = Monitor::new(machine.config());
    let scope = MemoryScope::CgroupV2 {
        path: "/ballast.slice/ballast.service".into(),
    };
    let files = monitor.pressure_files().clone();
    assert_eq!(files.scope, scope);
    assert_eq!(
        files.memory,
        machine.path(&format!("{dir}/memory.pressure"))
    );
    let psi = monitor.sample_psi();
    assert_eq!(psi.scope, scope);
    assert_eq!(psi.memory.value().unwrap().some.avg10, 42.0);
    assert_eq!(psi.cpu.value().unwrap().some.avg10, 3.0);
    assert_eq!(psi.io.value().unwrap().some.avg10, 7.0);
    // The host's file says 12.50: not the figure read.
    assert_eq!(psi.memory.value().unwrap().full.unwrap().avg10, 30.0);
}

#[test]
fn a_hybrid_layouts_unified_mount_is_looked_in_too() {
    let machine = FakeMachine::new();
    machine.write(
        "proc/self/cgroup",
        "4:memory:/process_api/abc\n1:cpu:/\n0::/user.slice/session-1.scope\n",
    );
    v2_cgroup(&machine, "sys/fs/cgroup/unified/user.slice/session-1.scope");
    let mut monitor = Monitor::new(machine.config());
    assert_eq!(
        monitor.pressure_files().scope,
        MemoryScope::CgroupV2 {
            path: "/user.slice/session-1.scope".into()
        }
    );
    assert_eq!(memory_avg10(&mut monitor), 42.0);
}

#[test]
fn v1_cgroups_and_the_real_root_read_the_hosts_pressure() {
    // v1 has no per-cgroup pressure: a daemon in a v1 memory cgroup reads the host's files.
    let machine = FakeMachine::new();
    machine.write(
        "proc/self/cgroup",
        "4:memory:/process_api/abc\n1:cpu:/\n0::/\n",
    );
    machine.write(
        "sys/fs/cgroup/memory/process_api/abc/memory.limit_in_bytes",
        "1048576\n",
    );
    // The hybrid layout's unified root has pressure files (the host's own), but no cgroup.type.
    machine.write(
        "sys/fs/cgroup/unified/memory.pressure",
        CGROUP_MEMORY_PRESSURE,
    );
    let mut monitor = Monitor::new(machine.config());
    assert_eq!(monitor.pressure_files().scope, MemoryScope::Host);
    assert_eq!(
        monitor.pressure_files().memory,
        machine.path("proc/pressure/memory")
    );
    assert_eq!(memory_avg10(&mut monitor), 12.5);
    assert_eq!(monitor.sample_psi().scope, MemoryScope::Host);
}

#[test]
fn inside_a_cgroup_namespace_the_mount_root_is_the_cgroup() {
    let machine = FakeMachine::new();
    machine.write("proc/self/cgroup", "0::/\n");
    v2_cgroup(&machine, "sys/fs/cgroup");
    let mut monitor = Monitor::new(machine.config());
    assert_eq!(
        monitor.pressure_files().scope,
        MemoryScope::CgroupV2 { path: "/".into() }
    );
    assert_eq!(memory_avg10(&mut monitor), 42.0);
}

#[test]
fn a_daemon_in_a_leaf_of_its_cgroup_reads_the_cgroup_it_moved_out_of() {
    // The daemon moved into `daemon/` so that its cgroup could hand controllers to its plugins'
    // cgroups: the service's cgroup, with its limits, holds the daemon and the plugins.
    let machine = FakeMachine::new();
    machine.write(
        "proc/self/cgroup",
        "0::/system.slice/ballast.service/daemon
",
    );
    let service = "sys/fs/cgroup/system.slice/ballast.service";
    v2_cgroup(&machine, service);
    v2_cgroup(&machine, &format!("{service}/daemon"));
    machine.write(
        &format!("{service}/daemon/memory.pressure"),
        "some avg10=1.00 avg60=0.00 avg300=0.00 total=1\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=0\n",
    );
    let mib = 1u64 << 20;
    machine.write(
        &format!("{service}/memory.max"),
        &format!("{}\n", 512 * mib),
    );
    machine.write(
        &format!("{service}/memory.current"),
        &format!("{}\n", 300 * mib),
    );
    machine.write(&format!("{service}/memory.stat"), "inactive_file 0\n");
    machine.write(&format!("{service}/daemon/memory.max"), "max\n");
    machine.write(&format!("{service}/cpu.max"), "50000 100000\n");
    machine.write(&format!("{service}/cpu.stat"), "usage_usec 5000\n");

    // Without being told, it reads its leaf's pressure (the service's memory limit it finds
    // among its ancestors' anyway).
    let mut leaf = Monitor::new(machine.config());
    assert_eq!(memory_avg10(&mut leaf), 1.0);

    let mut monitor = Monitor::new(ballast_monitor::MonitorConfig {
        cgroup_v2_path: Some("/system.slice/ballast.service".into()),
        ..machine.config()
    });
    let scope = MemoryScope::CgroupV2 {
        path: "/system.slice/ballast.service".into(),
    };
    assert_eq!(monitor.pressure_files().scope, scope);
    assert_eq!(
        monitor.pressure_files().memory,
        machine.path(&format!("{service}/memory.pressure"))
    );
    assert_eq!(memory_avg10(&mut monitor), 42.0);
    let memory = monitor.sample_memory();
    let memory = memory.value().unwrap();
    assert_eq!(
        (memory.total_bytes, memory.used_bytes),
        (512 * mib, 300 * mib)
    );
    assert_eq!(memory.scope, scope);
    machine.set_cpu_ticks(100 + 200, 1000 + 400);
    let cpu = monitor.sample_cpu();
    let quota = cpu.value().unwrap().quota.clone().unwrap();
    assert_eq!((quota.cores, quota.scope), (0.5, scope));
}

/// USER_HZ, as the monitor converts jiffies with it.
fn hz() -> f64 {
    // SAFETY: sysconf has no memory-safety preconditions.
    unsafe { libc::sysconf(libc::_SC_CLK_TCK) as f64 }
}

/// The fixture host has 2 cores; 400 more jiffies in all is 200 per core, 2 s at 100 Hz.
fn elapsed_us_for(jiffies: u64) -> f64 {
    jiffies as f64 * 1e6 / (2.0 * hz())
}

#[test]
fn cpu_utilization_is_relative_to_a_v2_quota() {
    let machine = FakeMachine::new();
    machine.write("proc/self/cgroup", "0::/app\n");
    machine.write("sys/fs/cgroup/app/cpu.max", "100000 100000\n");
    machine.write(
        "sys/fs/cgroup/app/cpu.stat",
        "usage_usec 5000\nuser_usec 1\n",
    );
    let mut monitor = Monitor::new(machine.config());
    // Half the host busy (2 of 2 cores' jiffies: 200 busy of 400), and the cgroup used half its
    // one-core quota over the same time.
    machine.set_cpu_ticks(100 + 200, 1000 + 400);
    let used = (0.5 * elapsed_us_for(400)) as u64;
    machine.write(
        "sys/fs/cgroup/app/cpu.stat",
        &format!("usage_usec {}\nuser_usec 1\n", 5000 + used),
    );
    let cpu = monitor.sample_cpu();
    let cpu = cpu.value().unwrap();
    assert!((cpu.utilization - 0.5).abs() < 1e-3, "{cpu:?}");
    let quota = cpu.quota.as_ref().unwrap();
    assert_eq!(quota.cores, 1.0);
    assert_eq!(
        quota.scope,
        MemoryScope::CgroupV2 {
            path: "/app".into()
        }
    );

    // Busier than its quota allows (a burst): clamped to 1.
    machine.set_cpu_ticks(300 + 100, 1400 + 400);
    machine.write(
        "sys/fs/cgroup/app/cpu.stat",
        &format!("usage_usec {}\n", 5000 + used + 3 * used),
    );
    assert_eq!(monitor.sample_cpu().value().unwrap().utilization, 1.0);

    // No quota: the host's figure, and no quota reported.
    machine.write("sys/fs/cgroup/app/cpu.max", "max 100000\n");
    machine.set_cpu_ticks(400 + 100, 1800 + 400);
    let cpu = monitor.sample_cpu();
    let cpu = cpu.value().unwrap();
    assert_eq!(cpu.quota, None);
    assert_eq!(cpu.utilization, 0.25);
}

#[test]
fn a_quota_on_an_ancestor_binds_and_its_use_is_measured() {
    // `CPUQuota=50%` on the slice, none on the service.
    let machine = FakeMachine::new();
    machine.write("proc/self/cgroup", "0::/ballast.slice/ballast.service\n");
    let slice = "sys/fs/cgroup/ballast.slice";
    let service = format!("{slice}/ballast.service");
    machine.write(&format!("{service}/cpu.max"), "max 100000\n");
    machine.write(&format!("{service}/cpu.stat"), "usage_usec 0\n");
    machine.write(&format!("{slice}/cpu.max"), "50000 100000\n");
    machine.write(&format!("{slice}/cpu.stat"), "usage_usec 0\n");
    let mut monitor = Monitor::new(machine.config());
    // The slice used a quarter of a core over the interval: half its half-core quota (the
    // service's own counter, which says less, is not the one measured).
    machine.set_cpu_ticks(100 + 200, 1000 + 400);
    let used = (0.25 * elapsed_us_for(400)) as u64;
    machine.write(
        &format!("{slice}/cpu.stat"),
        &format!("usage_usec {used}\n"),
    );
    machine.write(&format!("{service}/cpu.stat"), "usage_usec 10\n");
    let cpu = monitor.sample_cpu();
    let cpu = cpu.value().unwrap();
    assert!((cpu.utilization - 0.5).abs() < 1e-3, "{cpu:?}");
    let quota = cpu.quota.clone().unwrap();
    assert_eq!(quota.cores, 0.5);
    assert_eq!(
        quota.scope,
        MemoryScope::CgroupV2 {
            path: "/ballast.slice".into()
        }
    );

    // A tighter quota set later on the service takes over: its counter is another, so the
    // utilization is measured afresh from the next interval.
    machine.write(&format!("{service}/cpu.max"), "25000 100000\n");
    machine.set_cpu_ticks(300 + 200, 1400 + 400);
    let cpu = monitor.sample_cpu();
    let quota = cpu.value().unwrap().quota.clone().unwrap();
    assert_eq!(quota.cores, 0.25);
    assert_eq!(
        quota.scope,
        MemoryScope::CgroupV2 {
            path: "/ballast.slice/ballast.service".into()
        }
    );
    let service_used = (0.25 * elapsed_us_for(400)) as u64;
    machine.write(
        &format!("{service}/cpu.stat"),
        &format!("usage_usec {}\n", 10 + service_used),
    );
    machine.set_cpu_ticks(500 + 200, 1800 + 400);
    let cpu = monitor.sample_cpu();
    assert!(
        (cpu.value().unwrap().utilization - 1.0).abs() < 1e-3,
        "{cpu:?}"
    );
}

#[test]
fn cpu_utilization_is_relative_to_a_v1_cfs_quota() {
    let machine = FakeMachine::new();
    machine.write(
        "proc/self/cgroup",
        "3:cpu,cpuacct:/docker/abc\n4:memory:/docker/abc\n0::/\n",
    );
    let dir = "sys/fs/cgroup/cpu,cpuacct/docker/abc";
    machine.write(&format!("{dir}/cpu.cfs_quota_us"), "50000\n");
    machine.write(&format!("{dir}/cpu.cfs_period_us"), "100000\n");
    machine.write(&format!("{dir}/cpuacct.usage"), "0\n");
    let mut monitor = Monitor::new(machine.config());
    machine.set_cpu_ticks(100 + 50, 1000 + 400);
    // A quarter of a core over the interval: half its half-core quota.
    let used_ns = (0.25 * elapsed_us_for(400) * 1000.0) as u64;
    machine.write(&format!("{dir}/cpuacct.usage"), &format!("{used_ns}\n"));
    let cpu = monitor.sample_cpu();
    let cpu = cpu.value().unwrap();
    assert!((cpu.utilization - 0.5).abs() < 1e-3, "{cpu:?}");
    assert_eq!(
        cpu.quota.as_ref().unwrap().scope,
        MemoryScope::CgroupV1 {
            path: "/docker/abc".into()
        }
    );
    assert_eq!(cpu.quota.as_ref().unwrap().cores, 0.5);

    // A counter that cannot be read makes CPU unavailable, saying which file.
    machine.write(&format!("{dir}/cpuacct.usage"), "lots\n");
    machine.set_cpu_ticks(150 + 50, 1400 + 400);
    let reason = monitor
        .sample_cpu()
        .unavailable_reason()
        .unwrap()
        .to_owned();
    assert!(reason.contains("cpuacct.usage"), "{reason}");
}

/// Arbitrary text, and text close to the cgroup files' formats.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "(([0-9]+:[a-z,]*:/[a-z/]{0,8}|some|full|usage_usec|max|-1)( [a-z0-9=.]{0,10}){0,4}\n?){0,4}",
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Whatever the cgroup files hold, the monitor samples without panicking.
    #[test]
    fn no_cgroup_file_content_panics_the_monitor(
        proc_cgroup in text(),
        cpu_max in text(),
        cpu_stat in text(),
        quota in text(),
        usage in text(),
        pressure in text(),
    ) {
        let machine = FakeMachine::new();
        machine.write("proc/self/cgroup", &proc_cgroup);
        for dir in ["sys/fs/cgroup/a", "sys/fs/cgroup/unified/a", "sys/fs/cgroup"] {
            machine.write(&format!("{dir}/cgroup.type"), "domain\n");
            machine.write(&format!("{dir}/cpu.max"), &cpu_max);
            machine.write(&format!("{dir}/cpu.stat"), &cpu_stat);
            machine.write(&format!("{dir}/memory.pressure"), &pressure);
            machine.write(&format!("{dir}/cpu.pressure"), &pressure);
        }
        let dir = "sys/fs/cgroup/cpu,cpuacct/a";
        machine.write(&format!("{dir}/cpu.cfs_quota_us"), &quota);
        machine.write(&format!("{dir}/cpu.cfs_period_us"), &quota);
        machine.write(&format!("{dir}/cpuacct.usage"), &usage);
        let mut monitor = Monitor::new(machine.config());
        machine.set_cpu_ticks(200, 1400);
        let _ = monitor.sample_psi();
        let _ = monitor.sample_cpu();
        let _ = monitor.hardware_facts();
    }
}
