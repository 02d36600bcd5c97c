//! Who holds the GPU memory: each GPU process's memory charged to the plugin whose process tree
//! holds it, to the one in-process plugin that declares it needs a GPU (for the daemon's own
//! process), or to one of two remainders.
//!
//! [`attribute_gpu_memory`] is a pure function: the parent of a process comes from a function
//! the caller passes, which the [`crate::Monitor`] makes from [`read_parent`] over its proc root
//! (reading only the `stat` files of processes that hold GPU memory and of their ancestors, never
//! the process list). Tests pass fixtures.

use std::collections::HashMap;
use std::io::Read;
use std::path::Path;

use ballast_core::{GpuMemoryHolder, GpuMemoryUnattributed, GpuReading, Metric, PluginUsage};

use crate::parse::parse_stat_ids;

/// How many ancestors of a GPU process are looked at, at most, for a plugin's root. Real process
/// trees are far shallower; the bound keeps a corrupt or cyclic tree from costing more.
pub const MAX_ANCESTORS: usize = 64;

/// The most of a `stat` or `comm` file that is read (real ones are a few hundred bytes).
const MAX_PROC_FILE: u64 = 4096;

/// Whom one process's memory goes to, before it is written into the sample.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Owner {
    /// The plugin at this index of the usage list.
    Plugin(usize),
    /// The daemon's own process.
    Daemon,
    /// Anything else.
    Other,
}

/// Charges every listed GPU process's memory and writes the result into the sample's parts:
/// each process's [`GpuMemoryHolder`], each plugin's [`PluginUsage::gpu_memory_bytes`], and the
/// returned remainders.
///
/// * A process in the tree of a plugin's root (`PluginUsage::pid`: the process itself or one of
///   up to [`MAX_ANCESTORS`] ancestors, as `parent_of` tells them) goes to that plugin; where
///   roots nest, to the nearest.
/// * The daemon's own process (`daemon_pid`) goes to the in-process plugin that declares it
///   needs a GPU (`pid` `None` and `in_process_gpu`) when there is exactly one; otherwise it is
///   in-process and unattributed.
/// * Every other process is another program's.
///
/// `parent_of` returns `None` for a process it cannot read (vanished, unreadable, garbage),
/// which ends the walk up: the process then belongs to no plugin's tree. A plugin's figure is
/// `None` when the process lists are incomplete, when one of its processes' figures is not
/// reported, or, for an in-process plugin, when the daemon holds GPU memory that cannot be
/// split between in-process plugins. Without GPU readings every plugin's figure is `None` and
/// the remainders are unavailable with the same reason.
pub fn attribute_gpu_memory(
    gpus: &mut Metric<Vec<GpuReading>>,
    plugins: &mut [PluginUsage],
    daemon_pid: u32,
    mut parent_of: impl FnMut(u32) -> Option<u32>,
) -> Metric<GpuMemoryUnattributed> {
    let readings = match gpus {
        Metric::Available { value } => value,
        Metric::Unavailable { reason } => {
            for plugin in plugins.iter_mut() {
                plugin.gpu_memory_bytes = None;
            }
            return Metric::unavailable(reason.clone());
        }
    };
    let mut roots: HashMap<u32, usize> = HashMap::new();
    for (i, plugin) in plugins.iter().enumerate() {
        if let Some(pid) = plugin.pid {
            roots.entry(pid).or_insert(i);
        }
    }
    let mut declarers = plugins
        .iter()
        .enumerate()
        .filter(|(_, p)| p.pid.is_none() && p.in_process_gpu)
        .map(|(i, _)| i);
    let sole_declarer = match (declarers.next(), declarers.next()) {
        (Some(i), None) => Some(i),
        _ => None,
    };

    let mut plugin_bytes: Vec<Option<u64>> = vec![Some(0); plugins.len()];
    let mut in_process: Option<u64> = Some(0);
    let mut other: Option<u64> = Some(0);
    let mut daemon_holds_memory = false;
    let mut incomplete: Option<String> = None;
    for reading in readings.iter_mut() {
        let processes = match &mut reading.processes {
            Metric::Available { value } => value,
            Metric::Unavailable { reason } => {
                incomplete.get_or_insert_with(|| reason.clone());
                continue;
            }
        };
        for process in processes.iter_mut() {
            let owner = owner_of(process.pid, &roots, daemon_pid, &mut parent_of);
            let (holder, total) = match owner {
                Owner::Plugin(i) => (plugin_holder(&plugins[i]), &mut plugin_bytes[i]),
                Owner::Daemon => {
                    daemon_holds_memory = true;
                    match sole_declarer {
                        Some(i) => (plugin_holder(&plugins[i]), &mut plugin_bytes[i]),
                        None => (GpuMemoryHolder::InProcessUnattributed, &mut in_process),
                    }
                }
                Owner::Other => (GpuMemoryHolder::Other, &mut other),
            };
            *total = add(*total, process.used_bytes);
            process.holder = Some(holder);
        }
    }

    for (i, plugin) in plugins.iter_mut().enumerate() {
        plugin.gpu_memory_bytes = if incomplete.is_some() {
            None
        } else if plugin.pid.is_some() || sole_declarer == Some(i) {
            plugin_bytes[i]
        } else if !daemon_holds_memory || sole_declarer.is_some() {
            // In-process: the daemon holds nothing, or it is all charged to the one declarer.
            Some(0)
        } else {
            None
        };
    }
    match incomplete {
        Some(reason) => Metric::unavailable(reason),
        None => Metric::available(GpuMemoryUnattributed {
            in_process_bytes: in_process,
            other_bytes: other,
        }),
    }
}

fn plugin_holder(plugin: &PluginUsage) -> GpuMemoryHolder {
    GpuMemoryHolder::Plugin {
        plugin: plugin.plugin.clone(),
    }
}

fn add(total: Option<u64>, bytes: Option<u64>) -> Option<u64> {
    Some(total?.saturating_add(bytes?))
}

fn owner_of(
    pid: u32,
    roots: &HashMap<u32, usize>,
    daemon_pid: u32,
    parent_of: &mut impl FnMut(u32) -> Option<u32>,
) -> Owner {
    if let Some(&i) = roots.get(&pid) {
        return Owner::Plugin(i);
    }
    if pid == daemon_pid {
        return Owner::Daemon;
    }
    let mut current = pid;
    for _ in 0..MAX_ANCESTORS {
        match parent_of(current) {
            Some(parent) if parent != 0 && parent != current => current = parent,
            _ => break,
        }
        if let Some(&i) = roots.get(&current) {
            return Owner::Plugin(i);
        }
    }
    Owner::Other
}

/// The parent of `pid` from `<proc_root>/<pid>/stat`, or `None` when the file is gone,
/// unreadable or not a `stat` file of that process.
pub fn read_parent(proc_root: &Path, pid: u32) -> Option<u32> {
    let text = read_small(&proc_root.join(pid.to_string()).join("stat"))?;
    let ids = parse_stat_ids("stat", &text).ok()?;
    (ids.pid == pid).then_some(ids.ppid)
}

/// The command name of `pid` from `<proc_root>/<pid>/comm`, or `None` when it cannot be read.
pub fn process_name(proc_root: &Path, pid: u32) -> Option<String> {
    let text = read_small(&proc_root.join(pid.to_string()).join("comm"))?;
    let name = text.trim_end_matches('\n');
    (!name.is_empty()).then(|| name.to_owned())
}

fn read_small(path: &Path) -> Option<String> {
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .ok()?
        .take(MAX_PROC_FILE)
        .read_to_end(&mut bytes)
        .ok()?;
    Some(String::from_utf8_lossy(&bytes).into_owned())
}
