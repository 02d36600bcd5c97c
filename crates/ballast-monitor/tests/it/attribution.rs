//! GPU memory charged to plugins: the pure attribution on fixture process trees, parents read
//! from a fixture `/proc`, property tests (nothing in `/proc` panics it, and every known byte is
//! charged exactly once), and the monitor charging what the fake NVML lists to the plugins it
//! was told about.

use std::collections::HashMap;
use std::fmt::Write as _;

use ballast_core::{
    GpuMemoryHolder, GpuMemoryUnattributed, GpuProcess, GpuReading, Metric, PluginUsage, Timestamp,
};
use ballast_monitor::{
    MAX_ANCESTORS, Monitor, NvmlSource, attribute_gpu_memory, process_name, read_parent,
};
use expect_test::{Expect, expect};
use proptest::prelude::*;

use crate::machine::FakeMachine;

const DAEMON: u32 = 10;

/// A device's processes as `(pid, bytes)`, or the reason NVML could not list them.
type Listing = Result<Vec<(u32, Option<u64>)>, &'static str>;

fn reading(index: u32, listing: Listing) -> GpuReading {
    GpuReading {
        index,
        name: format!("GPU {index}"),
        memory_used_bytes: 0,
        memory_total_bytes: 1 << 40,
        utilization: 0.0,
        temperature_celsius: None,
        power_watts: None,
        processes: match listing {
            Ok(list) => Metric::available(
                list.into_iter()
                    .map(|(pid, used_bytes)| GpuProcess {
                        pid,
                        used_bytes,
                        holder: None,
                    })
                    .collect(),
            ),
            Err(reason) => Metric::unavailable(reason),
        },
    }
}

/// A plugin with a process of its own, rooted at `pid`.
fn process_plugin(name: &str, pid: u32) -> PluginUsage {
    PluginUsage {
        plugin: name.into(),
        pid: Some(pid),
        ..PluginUsage::default()
    }
}

/// A plugin inside the daemon, declaring a GPU or not.
fn in_process(name: &str, needs_gpu: bool) -> PluginUsage {
    PluginUsage {
        plugin: name.into(),
        in_process_gpu: needs_gpu,
        ..PluginUsage::default()
    }
}

fn bytes(b: Option<u64>) -> String {
    b.map_or_else(|| "unknown".to_owned(), |b| b.to_string())
}

/// Attributes `gpus` to `plugins` with the parents in `parents` (`child -> parent`; a pid not in
/// it cannot be read) and describes every figure the attribution wrote.
fn attribute(
    gpus: Vec<(u32, Listing)>,
    plugins: Vec<PluginUsage>,
    parents: &[(u32, u32)],
) -> String {
    let parents: HashMap<u32, u32> = parents.iter().copied().collect();
    let mut gpus = Metric::available(
        gpus.into_iter()
            .map(|(index, listing)| reading(index, listing))
            .collect::<Vec<_>>(),
    );
    let mut plugins = plugins;
    let remainder = attribute_gpu_memory(&mut gpus, &mut plugins, DAEMON, |pid| {
        parents.get(&pid).copied()
    });
    describe(&gpus, &plugins, &remainder)
}

fn describe(
    gpus: &Metric<Vec<GpuReading>>,
    plugins: &[PluginUsage],
    remainder: &Metric<GpuMemoryUnattributed>,
) -> String {
    let mut out = String::new();
    for reading in gpus.value().into_iter().flatten() {
        match &reading.processes {
            Metric::Available { value } => {
                for p in value {
                    let holder = match &p.holder {
                        Some(GpuMemoryHolder::Plugin { plugin }) => plugin.clone(),
                        Some(GpuMemoryHolder::InProcessUnattributed) => "in-process".into(),
                        Some(GpuMemoryHolder::Other) => "other".into(),
                        None => "not attributed".into(),
                    };
                    let _ = writeln!(
                        out,
                        "gpu {} pid {} {} -> {holder}",
                        reading.index,
                        p.pid,
                        bytes(p.used_bytes)
                    );
                }
            }
            Metric::Unavailable { reason } => {
                let _ = writeln!(out, "gpu {} unavailable: {reason}", reading.index);
            }
        }
    }
    for plugin in plugins {
        let _ = writeln!(
            out,
            "plugin {}: {}",
            plugin.plugin,
            bytes(plugin.gpu_memory_bytes)
        );
    }
    match remainder {
        Metric::Available { value } => {
            let _ = writeln!(
                out,
                "unattributed: in-process {}, other {}",
                bytes(value.in_process_bytes),
                bytes(value.other_bytes)
            );
        }
        Metric::Unavailable { reason } => {
            let _ = writeln!(out, "unattributed: unavailable: {reason}");
        }
    }
    out
}

fn check(actual: String, expected: Expect) {
    expected.assert_eq(&actual);
}

#[test]
fn processes_go_to_the_plugin_whose_tree_holds_them() {
    // indexer (root 100) runs 101, which runs 102 on GPU 0; voice's worker 200 is on both GPUs
    // itself; 300 is a child of the daemon outside every plugin; 400 has vanished.
    check(
        attribute(
            vec![
                (
                    0,
                    Ok(vec![
                        (102, Some(1000)),
                        (200, Some(20)),
                        (300, Some(3)),
                        (400, Some(4)),
                    ]),
                ),
                (1, Ok(vec![(200, Some(22)), (999, Some(9))])),
            ],
            vec![process_plugin("indexer", 100), process_plugin("voice", 200)],
            &[
                (102, 101),
                (101, 100),
                (100, DAEMON),
                (200, DAEMON),
                (300, DAEMON),
                (DAEMON, 1),
                (999, 1),
                (1, 0),
            ],
        ),
        expect![[r#"
            gpu 0 pid 102 1000 -> indexer
            gpu 0 pid 200 20 -> voice
            gpu 0 pid 300 3 -> other
            gpu 0 pid 400 4 -> other
            gpu 1 pid 200 22 -> voice
            gpu 1 pid 999 9 -> other
            plugin indexer: 1000
            plugin voice: 42
            unattributed: in-process 0, other 16
        "#]],
    );
}

#[test]
fn the_daemons_memory_goes_to_the_one_in_process_plugin_that_declares_a_gpu() {
    check(
        attribute(
            vec![(0, Ok(vec![(DAEMON, Some(5000)), (200, Some(20))]))],
            vec![
                in_process("vision", true),
                in_process("clock", false),
                process_plugin("voice", 200),
            ],
            &[],
        ),
        expect![[r#"
            gpu 0 pid 10 5000 -> vision
            gpu 0 pid 200 20 -> voice
            plugin vision: 5000
            plugin clock: 0
            plugin voice: 20
            unattributed: in-process 0, other 0
        "#]],
    );
}

#[test]
fn with_two_declarers_or_none_the_daemons_memory_is_unattributed() {
    let two = attribute(
        vec![(0, Ok(vec![(DAEMON, Some(5000))]))],
        vec![
            in_process("vision", true),
            in_process("whisper", true),
            in_process("clock", false),
            process_plugin("voice", 200),
        ],
        &[],
    );
    check(
        two,
        expect![[r#"
            gpu 0 pid 10 5000 -> in-process
            plugin vision: unknown
            plugin whisper: unknown
            plugin clock: unknown
            plugin voice: 0
            unattributed: in-process 5000, other 0
        "#]],
    );
    let none = attribute(
        vec![(0, Ok(vec![(DAEMON, Some(5000))]))],
        vec![in_process("clock", false)],
        &[],
    );
    check(
        none,
        expect![[r#"
            gpu 0 pid 10 5000 -> in-process
            plugin clock: unknown
            unattributed: in-process 5000, other 0
        "#]],
    );
    // When the daemon holds no GPU memory, no in-process plugin holds any.
    let idle = attribute(
        vec![(0, Ok(vec![(999, Some(1))]))],
        vec![in_process("vision", true), in_process("whisper", true)],
        &[],
    );
    check(
        idle,
        expect![[r#"
            gpu 0 pid 999 1 -> other
            plugin vision: 0
            plugin whisper: 0
            unattributed: in-process 0, other 1
        "#]],
    );
}

#[test]
fn an_unreported_figure_is_unknown_not_zero() {
    check(
        attribute(
            vec![(
                0,
                Ok(vec![
                    (201, None),
                    (200, Some(20)),
                    (300, Some(1)),
                    (999, None),
                    (DAEMON, None),
                ]),
            )],
            vec![
                process_plugin("voice", 200),
                process_plugin("indexer", 300),
                in_process("vision", true),
            ],
            &[(201, 200)],
        ),
        expect![[r#"
            gpu 0 pid 201 unknown -> voice
            gpu 0 pid 200 20 -> voice
            gpu 0 pid 300 1 -> indexer
            gpu 0 pid 999 unknown -> other
            gpu 0 pid 10 unknown -> vision
            plugin voice: unknown
            plugin indexer: 1
            plugin vision: unknown
            unattributed: in-process 0, other unknown
        "#]],
    );
}

#[test]
fn a_device_whose_processes_cannot_be_listed_leaves_every_figure_unknown() {
    check(
        attribute(
            vec![
                (0, Ok(vec![(200, Some(20))])),
                (
                    1,
                    Err("NVML: GPU 1: listing its compute processes: not supported"),
                ),
            ],
            vec![process_plugin("voice", 200), in_process("clock", false)],
            &[],
        ),
        expect![[r#"
            gpu 0 pid 200 20 -> voice
            gpu 1 unavailable: NVML: GPU 1: listing its compute processes: not supported
            plugin voice: unknown
            plugin clock: unknown
            unattributed: unavailable: NVML: GPU 1: listing its compute processes: not supported
        "#]],
    );
}

#[test]
fn without_gpus_every_figure_is_unknown_with_the_reason() {
    let mut gpus = Metric::unavailable("no NVIDIA driver (libnvidia-ml.so.1 is not installed)");
    let mut plugins = vec![PluginUsage {
        gpu_memory_bytes: Some(7),
        ..process_plugin("voice", 200)
    }];
    let remainder = attribute_gpu_memory(&mut gpus, &mut plugins, DAEMON, |_| None);
    assert_eq!(plugins[0].gpu_memory_bytes, None);
    assert_eq!(
        remainder.unavailable_reason(),
        Some("no NVIDIA driver (libnvidia-ml.so.1 is not installed)")
    );
}

#[test]
fn nested_roots_charge_the_nearest_and_cycles_and_deep_trees_end() {
    // The indexer's root 110 is a child of the supervisor plugin's root 100.
    check(
        attribute(
            vec![(0, Ok(vec![(111, Some(1)), (105, Some(2)), (50, Some(3))]))],
            vec![
                process_plugin("supervisor", 100),
                process_plugin("indexer", 110),
            ],
            &[
                (111, 110),
                (110, 100),
                (105, 100),
                (50, 51),
                (51, 52),
                (52, 50),
            ],
        ),
        expect![[r#"
            gpu 0 pid 111 1 -> indexer
            gpu 0 pid 105 2 -> supervisor
            gpu 0 pid 50 3 -> other
            plugin supervisor: 2
            plugin indexer: 1
            unattributed: in-process 0, other 3
        "#]],
    );

    // A chain of exactly MAX_ANCESTORS steps reaches the root; one more does not.
    let depth = u32::try_from(MAX_ANCESTORS).unwrap();
    let chain: Vec<(u32, u32)> = (1..=depth + 1).map(|i| (1000 + i, 1000 + i - 1)).collect();
    let reached = attribute(
        vec![(
            0,
            Ok(vec![(1000 + depth, Some(1)), (1001 + depth, Some(2))]),
        )],
        vec![process_plugin("deep", 1000)],
        &chain,
    );
    assert!(reached.contains("pid 1064 1 -> deep"), "{reached}");
    assert!(reached.contains("pid 1065 2 -> other"), "{reached}");
}

#[test]
fn parents_and_names_are_read_from_the_proc_tree_tolerating_garbage() {
    let machine = FakeMachine::new();
    let proc = machine.path("proc");
    machine.write(
        "proc/102/stat",
        "102 (python3 (x)) S 101 102 102 0 -1 4194560 1 0 0 0 0 0 0 0 20 0 1 0 1 2 3\n",
    );
    machine.write("proc/102/comm", "python3 (x)\n");
    machine.write("proc/103/stat", "garbage");
    machine.write("proc/104/stat", "999 (other) S 1 1\n");
    machine.write("proc/105/stat", "");
    machine.write("proc/105/comm", "");
    assert_eq!(read_parent(&proc, 102), Some(101));
    assert_eq!(process_name(&proc, 102).as_deref(), Some("python3 (x)"));
    assert_eq!(read_parent(&proc, 103), None);
    // A stat file that names another process is not this one's.
    assert_eq!(read_parent(&proc, 104), None);
    assert_eq!(read_parent(&proc, 105), None);
    assert_eq!(process_name(&proc, 105), None);
    assert_eq!(read_parent(&proc, 106), None);
    assert_eq!(process_name(&proc, 106), None);
}

#[test]
fn the_monitor_charges_the_fake_gpus_processes_to_the_reported_plugins() {
    let machine = FakeMachine::new();
    // The daemon is 4242 (the fixture's self/stat). indexer's root 5000 runs 5001 -> 5002.
    for (pid, ppid) in [(5002, 5001), (5001, 5000), (5000, 4242), (6000, 1)] {
        machine.write(
            &format!("proc/{pid}/stat"),
            &format!("{pid} (worker) S {ppid} 1 1 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 1 2 3\n"),
        );
    }
    let nvml = tempfile::tempdir().unwrap();
    let library = nvml.path().join("libnvidia-ml.so");
    std::fs::copy(env!("BALLAST_FAKE_NVML"), &library).unwrap();
    std::fs::write(
        nvml.path().join("fake-nvml.conf"),
        "init 0\ncount 1\n0 name A\n0 memory_total 100000\n0 memory_used 9000\n",
    )
    .unwrap();
    std::fs::write(
        nvml.path().join("fake-nvml-processes"),
        "0 5002 3000 compute\n0 4242 4000 compute\n0 4242 4000 graphics\n0 6000 500 graphics\n",
    )
    .unwrap();
    let mut config = machine.config();
    config.nvml = NvmlSource::Path(library);
    let mut monitor = Monitor::new(config);
    assert_eq!(monitor.daemon_pid(), 4242);

    // Before the host reports anything every process is another program's or the daemon's.
    let sample = monitor.sample(Timestamp::from_secs(1));
    assert_eq!(
        sample.gpu_memory_unattributed.value(),
        Some(&GpuMemoryUnattributed {
            in_process_bytes: Some(4000),
            other_bytes: Some(3500),
        })
    );

    monitor.report_plugin_usage(PluginUsage {
        live_bytes: 1,
        ..process_plugin("indexer", 5000)
    });
    monitor.report_plugin_usage(in_process("vision", true));
    let sample = monitor.sample(Timestamp::from_secs(2));
    let charged: Vec<(&str, Option<u64>)> = sample
        .plugins
        .iter()
        .map(|p| (p.plugin.as_str(), p.gpu_memory_bytes))
        .collect();
    assert_eq!(charged, [("indexer", Some(3000)), ("vision", Some(4000))]);
    assert_eq!(
        sample.gpu_memory_unattributed.value(),
        Some(&GpuMemoryUnattributed {
            in_process_bytes: Some(0),
            other_bytes: Some(500),
        })
    );
    let holders: Vec<(u32, Option<&GpuMemoryHolder>)> = sample.gpus.value().unwrap()[0]
        .processes
        .value()
        .unwrap()
        .iter()
        .map(|p| (p.pid, p.holder.as_ref()))
        .collect();
    assert_eq!(
        holders,
        [
            (
                4242,
                Some(&GpuMemoryHolder::Plugin {
                    plugin: "vision".into()
                })
            ),
            (
                5002,
                Some(&GpuMemoryHolder::Plugin {
                    plugin: "indexer".into()
                })
            ),
            (6000, Some(&GpuMemoryHolder::Other)),
        ]
    );

    // The indexer's child exits and its pid is reused by an unrelated process.
    machine.write(
        "proc/5002/stat",
        "5002 (other) S 6000 1 1 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 1 2 3\n",
    );
    let sample = monitor.sample(Timestamp::from_secs(3));
    assert_eq!(sample.plugins[0].gpu_memory_bytes, Some(0));
}

/// Text near a `stat` line, and anything at all.
fn stat_text() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[0-9]{1,6} \\([ -~]{0,20}\\) [A-Z] -?[0-9]{0,12}( [0-9]{1,4}){0,4}\n?",
        "[0-9 ()a-zA-Z\n-]{0,60}",
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn no_proc_content_panics_the_attribution(
        stats in proptest::collection::vec(stat_text(), 1..6),
        comm in any::<String>(),
    ) {
        let dir = tempfile::tempdir().unwrap();
        for (i, text) in stats.iter().enumerate() {
            let pid_dir = dir.path().join((100 + i).to_string());
            std::fs::create_dir_all(&pid_dir).unwrap();
            std::fs::write(pid_dir.join("stat"), text).unwrap();
            std::fs::write(pid_dir.join("comm"), &comm).unwrap();
        }
        let pids: Vec<(u32, Option<u64>)> =
            (100..106).map(|pid| (pid, Some(u64::from(pid)))).collect();
        let mut gpus = Metric::available(vec![reading(0, Ok(pids))]);
        let mut plugins = vec![process_plugin("a", 101), in_process("b", true)];
        let _ = attribute_gpu_memory(&mut gpus, &mut plugins, 102, |pid| {
            read_parent(dir.path(), pid)
        });
        for pid in 100..106 {
            let _ = process_name(dir.path(), pid);
        }
    }

    #[test]
    fn every_known_byte_is_charged_exactly_once(
        parents in proptest::collection::hash_map(1u32..40, 0u32..40, 0..40),
        listed in proptest::collection::vec((1u32..40, 0u64..1_000_000), 0..20),
        roots in proptest::collection::btree_set(1u32..40, 0..4),
        declarers in 0usize..3,
        daemon in 1u32..40,
    ) {
        let mut plugins: Vec<PluginUsage> = roots
            .iter()
            .map(|&pid| process_plugin(&format!("p{pid}"), pid))
            .collect();
        plugins.extend((0..declarers).map(|i| in_process(&format!("in{i}"), true)));
        // Each pid once per device, as the sampler gives them.
        let mut seen = std::collections::BTreeMap::new();
        for (pid, used) in listed {
            seen.insert(pid, Some(used));
        }
        let total: u64 = seen.values().flatten().sum();
        let mut gpus = Metric::available(vec![reading(0, Ok(seen.into_iter().collect()))]);
        let remainder = attribute_gpu_memory(&mut gpus, &mut plugins, daemon, |pid| {
            parents.get(&pid).copied()
        });
        let remainder = remainder.value().unwrap();
        let charged: u64 = plugins
            .iter()
            .filter_map(|p| p.gpu_memory_bytes)
            .sum::<u64>()
            + remainder.in_process_bytes.unwrap()
            + remainder.other_bytes.unwrap();
        let unknown_shares = plugins.iter().any(|p| p.gpu_memory_bytes.is_none());
        // Only in-process plugins may be unknown here (every figure is reported), and then the
        // daemon's memory is in the in-process remainder instead.
        prop_assert!(!unknown_shares || declarers != 1);
        prop_assert_eq!(charged, total);
        for process in gpus.value().unwrap()[0].processes.value().unwrap() {
            prop_assert!(process.holder.is_some());
        }
    }
}
