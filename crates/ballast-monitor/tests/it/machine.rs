//! A fake machine: a temporary proc and sys tree with plausible files that tests can change.

use std::path::{Path, PathBuf};

use ballast_monitor::{MonitorConfig, NvmlSource};

/// A temporary directory holding `proc/` and `sys/` trees.
pub struct FakeMachine {
    dir: tempfile::TempDir,
}

pub const MEMINFO: &str = "MemTotal:       8388608 kB\nMemFree:        1048576 kB\nMemAvailable:   2097152 kB\nSwapTotal:      1048576 kB\nSwapFree:        524288 kB\n";

impl FakeMachine {
    /// An 8 GiB, two-core machine without a cgroup limit, with PSI.
    pub fn new() -> Self {
        let machine = FakeMachine {
            dir: tempfile::tempdir().expect("a temporary directory"),
        };
        machine.write("proc/meminfo", MEMINFO);
        machine.set_cpu_ticks(100, 1000);
        machine.write("proc/loadavg", "0.50 0.25 0.10 1/100 4242\n");
        machine.write(
            "proc/pressure/cpu",
            "some avg10=1.00 avg60=2.00 avg300=3.00 total=100\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=0\n",
        );
        machine.write(
            "proc/pressure/memory",
            "some avg10=12.50 avg60=5.00 avg300=1.00 total=2000\nfull avg10=4.00 avg60=1.00 avg300=0.50 total=900\n",
        );
        machine.write(
            "proc/pressure/io",
            "some avg10=0.00 avg60=0.00 avg300=0.00 total=0\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=0\n",
        );
        machine.set_daemon_ticks(0);
        machine.write("proc/self/cgroup", "0::/\n");
        std::fs::create_dir_all(machine.path("sys/fs/cgroup")).expect("sys tree");
        machine
    }

    pub fn path(&self, relative: &str) -> PathBuf {
        self.dir.path().join(relative)
    }

    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    pub fn write(&self, relative: &str, text: &str) {
        let path = self.path(relative);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).expect("fixture directory");
        }
        std::fs::write(path, text).expect("fixture file");
    }

    pub fn remove(&self, relative: &str) {
        let path = self.path(relative);
        if path.is_dir() {
            std::fs::remove_dir_all(path).expect("remove fixture directory");
        } else {
            std::fs::remove_file(path).expect("remove fixture file");
        }
    }

    /// Sets `/proc/stat` so that `busy` of `total` ticks were busy, over two cores.
    pub fn set_cpu_ticks(&self, busy: u64, total: u64) {
        let idle = total - busy;
        self.write(
            "proc/stat",
            &format!(
                "cpu  {busy} 0 0 {idle} 0 0 0 0 0 0\ncpu0 0 0 0 0 0 0 0 0 0 0\ncpu1 0 0 0 0 0 0 0 0 0 0\nintr 1 2 3\n"
            ),
        );
    }

    /// Sets the daemon's user plus system time in clock ticks.
    pub fn set_daemon_ticks(&self, ticks: u64) {
        self.write(
            "proc/self/stat",
            &format!("4242 (ballast) S 1 4242 4242 0 -1 4194560 100 0 0 0 {ticks} 0 0 0 20 0 3 0 100 5000 2560\n"),
        );
    }

    /// A config over this tree, GPUs disabled, watching the tree's own file system.
    pub fn config(&self) -> MonitorConfig {
        MonitorConfig {
            proc_root: self.path("proc"),
            sys_root: self.path("sys"),
            disk_paths: vec![self.root().to_path_buf()],
            nvml: NvmlSource::Disabled,
            cgroup_v2_path: None,
        }
    }
}
