//! The monitor on fixture trees: host and cgroup memory, CPU deltas, PSI, disks, the daemon's
//! own figures, and unavailable metrics with their reasons.

use ballast_core::{MemoryScope, Metric, Resource, Timestamp};
use ballast_monitor::Monitor;

use crate::machine::FakeMachine;

const MIB: u64 = 1 << 20;

fn page_size() -> u64 {
    // SAFETY: sysconf has no memory-safety preconditions.
    u64::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap()
}

#[test]
fn host_memory_cpu_psi_and_daemon_from_the_tree() {
    let machine = FakeMachine::new();
    let mut monitor = Monitor::new(machine.config());
    machine.set_cpu_ticks(100 + 250, 1000 + 1000);
    let first = monitor.sample(Timestamp::from_secs(10));
    machine.set_daemon_ticks(50);
    let second = monitor.sample(Timestamp::from_secs(12));

    let memory = first.memory.value().unwrap();
    assert_eq!(memory.total_bytes, 8192 * MIB);
    assert_eq!(memory.available_bytes, 2048 * MIB);
    assert_eq!(memory.used_bytes, 6144 * MIB);
    assert_eq!(memory.swap_used_bytes, 512 * MIB);
    assert_eq!(memory.scope, MemoryScope::Host);
    assert_eq!(first.utilization(Resource::Memory), Some(0.75));

    let cpu = first.cpu.value().unwrap();
    assert_eq!(cpu.utilization, 0.25);
    assert_eq!(cpu.cores, 2);
    assert_eq!(cpu.load_average, [0.5, 0.25, 0.1]);
    // No tick passed between the two samples: the utilization is repeated, not made up.
    assert_eq!(second.cpu.value().unwrap().utilization, 0.25);

    assert_eq!(first.utilization(Resource::MemoryPressure), Some(0.125));
    assert_eq!(first.psi.memory.value().unwrap().full.unwrap().avg10, 4.0);

    // The daemon's CPU needs two readings; 50 ticks (0.5 s at 100 Hz) over 2 s is 0.25 core.
    assert!(
        first
            .daemon
            .unavailable_reason()
            .unwrap()
            .contains("two readings")
    );
    let daemon = second.daemon.value().unwrap();
    assert_eq!(daemon.rss_bytes, 2560 * page_size());
    // SAFETY: sysconf has no memory-safety preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    assert!((daemon.cpu_cores - 50.0 / hz / 2.0).abs() < 1e-9);

    assert!(
        first
            .gpus
            .unavailable_reason()
            .unwrap()
            .contains("disabled")
    );
    assert_eq!(first.disks.len(), 1);
    assert!(first.disks[0].value().unwrap().total_bytes > 0);
}

#[test]
fn cgroup_v2_limit_makes_memory_relative_to_the_cgroup() {
    let machine = FakeMachine::new();
    machine.write("proc/self/cgroup", "0::/ballast.slice/ballast.service\n");
    let dir = "sys/fs/cgroup/ballast.slice/ballast.service";
    machine.write(&format!("{dir}/memory.max"), &format!("{}\n", 512 * MIB));
    machine.write(
        &format!("{dir}/memory.current"),
        &format!("{}\n", 300 * MIB),
    );
    machine.write(
        &format!("{dir}/memory.stat"),
        &format!(
            "anon 1\nfile 2\ninactive_file {}\nactive_file 3\n",
            100 * MIB
        ),
    );
    let mut monitor = Monitor::new(machine.config());
    let memory = monitor.sample_memory();
    let memory = memory.value().unwrap();
    assert_eq!(memory.total_bytes, 512 * MIB);
    assert_eq!(memory.used_bytes, 200 * MIB);
    assert_eq!(memory.available_bytes, 312 * MIB);
    assert_eq!(
        memory.scope,
        MemoryScope::CgroupV2 {
            path: "/ballast.slice/ballast.service".into()
        }
    );

    // A limit above the host's memory is no limit: the host's figures are used.
    machine.write(&format!("{dir}/memory.max"), "max\n");
    assert_eq!(
        monitor.sample_memory().value().unwrap().scope,
        MemoryScope::Host
    );
}

/// A v2 cgroup's memory files: its limit (`max` for none), usage and inactive file cache.
fn v2_memory(machine: &FakeMachine, dir: &str, max: &str, current: u64, inactive: u64) {
    machine.write(&format!("{dir}/memory.max"), &format!("{max}\n"));
    machine.write(&format!("{dir}/memory.current"), &format!("{current}\n"));
    machine.write(
        &format!("{dir}/memory.stat"),
        &format!("anon 1\ninactive_file {inactive}\n"),
    );
}

#[test]
fn a_limit_on_an_ancestor_binds_and_its_figures_are_read() {
    // `MemoryMax=` on the slice, none on the service: the slice's limit holds the service.
    let machine = FakeMachine::new();
    machine.write(
        "proc/self/cgroup",
        "0::/ballast.slice/ballast.service
",
    );
    let slice = "sys/fs/cgroup/ballast.slice";
    let service = format!("{slice}/ballast.service");
    v2_memory(&machine, &service, "max", 300 * MIB, 0);
    v2_memory(
        &machine,
        slice,
        &(1024 * MIB).to_string(),
        700 * MIB,
        100 * MIB,
    );
    let mut monitor = Monitor::new(machine.config());
    let memory = monitor.sample_memory();
    let memory = memory.value().unwrap();
    assert_eq!(
        (memory.total_bytes, memory.used_bytes),
        (1024 * MIB, 600 * MIB)
    );
    assert_eq!(
        memory.scope,
        MemoryScope::CgroupV2 {
            path: "/ballast.slice".into()
        }
    );

    // A tighter limit set later on the service itself (`systemctl set-property`) takes over.
    v2_memory(&machine, &service, &(512 * MIB).to_string(), 300 * MIB, 0);
    let memory = monitor.sample_memory();
    let memory = memory.value().unwrap();
    assert_eq!(
        (memory.total_bytes, memory.used_bytes),
        (512 * MIB, 300 * MIB)
    );
    assert_eq!(
        memory.scope,
        MemoryScope::CgroupV2 {
            path: "/ballast.slice/ballast.service".into()
        }
    );

    // v1 the same: the parent's `memory.limit_in_bytes` binds.
    let v1 = FakeMachine::new();
    v1.write("proc/self/cgroup", "4:memory:/docker/abc\n0::/\n");
    let docker = "sys/fs/cgroup/memory/docker";
    v1.write(
        &format!("{docker}/abc/memory.limit_in_bytes"),
        "9223372036854771712\n",
    );
    v1.write(
        &format!("{docker}/memory.limit_in_bytes"),
        &format!("{}\n", 256 * MIB),
    );
    v1.write(
        &format!("{docker}/memory.usage_in_bytes"),
        &format!("{}\n", 64 * MIB),
    );
    v1.write(&format!("{docker}/memory.stat"), "total_inactive_file 0\n");
    let memory = Monitor::new(v1.config()).sample_memory();
    let memory = memory.value().unwrap();
    assert_eq!(
        (memory.total_bytes, memory.used_bytes),
        (256 * MIB, 64 * MIB)
    );
    assert_eq!(
        memory.scope,
        MemoryScope::CgroupV1 {
            path: "/docker".into()
        }
    );

    // No limit anywhere: the host's.
    v2_memory(&machine, &service, "max", 300 * MIB, 0);
    v2_memory(&machine, slice, "max", 700 * MIB, 0);
    assert_eq!(
        monitor.sample_memory().value().unwrap().scope,
        MemoryScope::Host
    );
}

#[test]
fn cgroup_v1_limit_including_a_namespaced_mount_root() {
    let machine = FakeMachine::new();
    machine.write(
        "proc/self/cgroup",
        "9:name=systemd:/\n4:memory:/docker/abc\n1:cpu:/\n0::/\n",
    );
    // Inside a cgroup namespace the memory mount's root is the container's cgroup itself.
    let dir = "sys/fs/cgroup/memory";
    machine.write(
        &format!("{dir}/memory.limit_in_bytes"),
        &format!("{}\n", 1024 * MIB),
    );
    machine.write(
        &format!("{dir}/memory.usage_in_bytes"),
        &format!("{}\n", 600 * MIB),
    );
    machine.write(
        &format!("{dir}/memory.stat"),
        &format!(
            "cache 5\ninactive_file 1\ntotal_inactive_file {}\n",
            200 * MIB
        ),
    );
    let mut monitor = Monitor::new(machine.config());
    let memory = monitor.sample_memory();
    let memory = memory.value().unwrap();
    assert_eq!(memory.total_bytes, 1024 * MIB);
    assert_eq!(memory.used_bytes, 400 * MIB);
    assert_eq!(
        memory.scope,
        MemoryScope::CgroupV1 {
            path: "/docker/abc".into()
        }
    );
}

#[test]
fn a_broken_cgroup_file_falls_back_to_the_host_figures() {
    let machine = FakeMachine::new();
    machine.write("proc/self/cgroup", "0::/x\n");
    machine.write("sys/fs/cgroup/x/memory.max", "1048576\n");
    machine.write("sys/fs/cgroup/x/memory.current", "not a number\n");
    machine.write("sys/fs/cgroup/x/memory.stat", "inactive_file 0\n");
    let mut monitor = Monitor::new(machine.config());
    let memory = monitor.sample_memory();
    assert_eq!(memory.value().unwrap().scope, MemoryScope::Host);
}

#[test]
fn unreadable_files_are_unavailable_with_the_reason_never_zero() {
    let machine = FakeMachine::new();
    machine.remove("proc/pressure");
    machine.remove("proc/meminfo");
    machine.write("proc/loadavg", "garbage\n");
    let mut config = machine.config();
    config.disk_paths.push(machine.path("no/such/dir"));
    let mut monitor = Monitor::new(config);
    let sample = monitor.sample(Timestamp::from_secs(1));

    let reason = sample.memory.unavailable_reason().unwrap();
    assert!(
        reason.starts_with("cannot read ") && reason.contains("proc/meminfo"),
        "{reason}"
    );
    assert_eq!(sample.utilization(Resource::Memory), None);
    let reason = sample.psi.memory.unavailable_reason().unwrap();
    assert!(reason.contains("no pressure stall information"), "{reason}");
    assert!(
        reason.contains("pressure/memory does not exist"),
        "{reason}"
    );
    let reason = sample.cpu.unavailable_reason().unwrap();
    assert!(
        reason.contains("loadavg: line 1: `load1` is not a valid number: `garbage`"),
        "{reason}"
    );
    let reason = sample.disks[1].unavailable_reason().unwrap();
    assert!(reason.contains("no/such/dir"), "{reason}");
    assert!(sample.disks[0].value().is_some());

    let json = serde_json::to_value(&sample).unwrap();
    assert_eq!(json["memory"]["status"], "unavailable");
    assert!(json["memory"].get("value").is_none());
}

#[test]
fn hardware_facts_from_the_tree() {
    let machine = FakeMachine::new();
    let mut monitor = Monitor::new(machine.config());
    let facts = monitor.hardware_facts().unwrap();
    assert_eq!(facts.memory_total_bytes, 8192 * MIB);
    assert_eq!(facts.cores, 2);
    // Physical cores come from sysinfo, which reads the real machine: not on a fixture tree.
    assert_eq!(facts.physical_cores, None);
    assert!(matches!(facts.gpus, Metric::Unavailable { .. }));

    machine.write("proc/meminfo", "MemTotal: a lot\n");
    let error = monitor.hardware_facts().unwrap_err();
    assert!(error.to_string().contains("meminfo"), "{error}");
}

#[test]
fn cgroup_cpu_quotas_in_the_facts() {
    let machine = FakeMachine::new();
    let mut monitor = Monitor::new(machine.config());
    assert_eq!(monitor.hardware_facts().unwrap().cpu_limit_cores, None);

    machine.write("proc/self/cgroup", "0::/app\n");
    machine.write("sys/fs/cgroup/app/cpu.max", "150000 100000\n");
    let facts = monitor.hardware_facts().unwrap();
    assert_eq!(facts.cpu_limit_cores, Some(1.5));
    assert_eq!(facts.effective_cores(), 2);

    machine.write("proc/self/cgroup", "3:cpu,cpuacct:/docker/abc\n0::/\n");
    let dir = "sys/fs/cgroup/cpu,cpuacct/docker/abc";
    machine.write(&format!("{dir}/cpu.cfs_quota_us"), "50000\n");
    machine.write(&format!("{dir}/cpu.cfs_period_us"), "100000\n");
    let facts = monitor.hardware_facts().unwrap();
    assert_eq!(facts.cpu_limit_cores, Some(0.5));
    assert_eq!(facts.effective_cores(), 1);

    machine.write(&format!("{dir}/cpu.cfs_quota_us"), "-1\n");
    assert_eq!(monitor.hardware_facts().unwrap().cpu_limit_cores, None);

    machine.write(&format!("{dir}/cpu.cfs_quota_us"), "many\n");
    let error = monitor.hardware_facts().unwrap_err();
    assert!(error.to_string().contains("cpu.cfs_quota_us"), "{error}");
}
