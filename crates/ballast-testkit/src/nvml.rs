//! A fake NVML library for tests that cannot load the monitor's own copy: compiled with the
//! system's C compiler from ballast-monitor's `tests/fake_nvml/fake_nvml.c` into a directory of
//! the test's, with its devices scripted beside it (`fake-nvml.conf`) and the processes on them
//! (`fake-nvml-processes`), which the test may change at any time: the library reads them again
//! on every call that lists processes.
//!
//! Point a daemon at it with `nvml_library` in its `[monitor]` table ([`FakeNvml::library`]) and
//! hand it processes whose pids are real plugin processes (a process plugin's pid, an isolated
//! plugin's worker), so that an end-to-end test sees the GPU memory charged to plugins.
//!
//! ```no_run
//! use ballast_testkit::nvml::{FakeGpu, FakeNvml, ProcessEntry};
//!
//! let dir = tempfile::tempdir().unwrap();
//! let nvml = FakeNvml::new(dir.path(), &[FakeGpu::new("Fake GPU", 16 << 30)]);
//! let config = format!("[monitor]\nnvml_library = {:?}\n", nvml.library());
//! // ... start the daemon on `config`, find a plugin's pid ...
//! # let plugin_pid = 1234;
//! nvml.set_processes(&[ProcessEntry::compute(0, plugin_pid, Some(2 << 30))]);
//! ```

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::plugins::workspace_root;

/// One scripted device.
#[derive(Clone, Debug, PartialEq)]
pub struct FakeGpu {
    /// Its name, e.g. "Fake GPU A100".
    pub name: String,
    /// Its memory in all, in bytes.
    pub memory_total_bytes: u64,
    /// Its memory in use, in bytes (the device's own figure, not the processes' sum).
    pub memory_used_bytes: u64,
    /// Its compute utilization, in percent.
    pub utilization_percent: u32,
}

impl FakeGpu {
    /// An idle device with `memory_total_bytes` of memory.
    pub fn new(name: &str, memory_total_bytes: u64) -> FakeGpu {
        FakeGpu {
            name: name.to_owned(),
            memory_total_bytes,
            memory_used_bytes: 0,
            utilization_percent: 0,
        }
    }
}

/// Which of NVML's two process lists an entry is in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ContextKind {
    /// `nvmlDeviceGetComputeRunningProcesses` (CUDA and the like).
    Compute,
    /// `nvmlDeviceGetGraphicsRunningProcesses` (OpenGL, Vulkan and the like).
    Graphics,
}

impl ContextKind {
    fn word(self) -> &'static str {
        match self {
            ContextKind::Compute => "compute",
            ContextKind::Graphics => "graphics",
        }
    }
}

/// One line of the fake library's process list.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProcessEntry {
    /// Process `pid` has a context of `kind` on `device` and holds `used_bytes` of its memory
    /// (`None`: the driver does not report the figure). A process with both kinds of context is
    /// two entries, as a real driver lists it.
    Holds {
        /// The device's index.
        device: u32,
        /// The process id.
        pid: u32,
        /// The GPU memory it holds, if reported.
        used_bytes: Option<u64>,
        /// The list it is in.
        kind: ContextKind,
    },
    /// Listing `device`'s processes of `kind` fails with the NVML return code `code` (3: not
    /// supported, 4: no permission, 15: GPU lost).
    ListFails {
        /// The device's index.
        device: u32,
        /// The list that fails.
        kind: ContextKind,
        /// The NVML return code.
        code: i32,
    },
}

impl ProcessEntry {
    /// A compute process on `device`.
    pub fn compute(device: u32, pid: u32, used_bytes: Option<u64>) -> ProcessEntry {
        ProcessEntry::Holds {
            device,
            pid,
            used_bytes,
            kind: ContextKind::Compute,
        }
    }

    /// A graphics process on `device`.
    pub fn graphics(device: u32, pid: u32, used_bytes: Option<u64>) -> ProcessEntry {
        ProcessEntry::Holds {
            device,
            pid,
            used_bytes,
            kind: ContextKind::Graphics,
        }
    }

    fn line(&self) -> String {
        match *self {
            ProcessEntry::Holds {
                device,
                pid,
                used_bytes,
                kind,
            } => {
                let bytes = used_bytes.map_or_else(|| "-".to_owned(), |b| b.to_string());
                format!("{device} {pid} {bytes} {}\n", kind.word())
            }
            ProcessEntry::ListFails { device, kind, code } => {
                format!("{device} fail {} {code}\n", kind.word())
            }
        }
    }
}

/// A fake `libnvidia-ml.so` in a directory of the test's.
#[derive(Debug)]
pub struct FakeNvml {
    dir: PathBuf,
    library: PathBuf,
}

impl FakeNvml {
    /// Compiles the fake library into `dir/libnvidia-ml.so` and scripts `devices`, with no
    /// process on them yet.
    ///
    /// # Panics
    ///
    /// When the C compiler fails or the files cannot be written: a test cannot go on without it.
    pub fn new(dir: &Path, devices: &[FakeGpu]) -> FakeNvml {
        std::fs::create_dir_all(dir)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
        let library = dir.join("libnvidia-ml.so");
        let source = workspace_root().join("crates/ballast-monitor/tests/fake_nvml/fake_nvml.c");
        let compiler = std::env::var("CC").unwrap_or_else(|_| "cc".into());
        let status = Command::new(&compiler)
            .args(["-shared", "-fPIC", "-O1", "-Wall", "-o"])
            .arg(&library)
            .arg(&source)
            .status()
            .unwrap_or_else(|e| panic!("cannot run the C compiler `{compiler}`: {e}"));
        assert!(
            status.success(),
            "compiling {} failed: {status}",
            source.display()
        );
        let nvml = FakeNvml {
            dir: dir.to_owned(),
            library,
        };
        nvml.set_devices(devices);
        nvml.set_processes(&[]);
        nvml
    }

    /// The library, for the daemon's `monitor.nvml_library` or `ballast sample --nvml-library`.
    pub fn library(&self) -> &Path {
        &self.library
    }

    /// Scripts `devices` (read when NVML is initialized: a running monitor sees the change only
    /// after it loads NVML again).
    ///
    /// # Panics
    ///
    /// When the script cannot be written.
    pub fn set_devices(&self, devices: &[FakeGpu]) {
        let mut script = format!("init 0\ncount {}\n", devices.len());
        for (i, gpu) in devices.iter().enumerate() {
            let _ = write!(
                script,
                "{i} name {}\n{i} memory_total {}\n{i} memory_used {}\n{i} utilization {}\n",
                gpu.name, gpu.memory_total_bytes, gpu.memory_used_bytes, gpu.utilization_percent
            );
        }
        self.replace("fake-nvml.conf", &script);
    }

    /// Sets `device`'s memory in use to `bytes` while the library runs (the next sample sees it),
    /// over its scripted figure.
    ///
    /// # Panics
    ///
    /// When the file cannot be written.
    pub fn set_memory_used(&self, device: u32, bytes: u64) {
        self.replace("fake-nvml-memory", &format!("{device} {bytes}\n"));
    }

    /// Replaces every process entry at once; the next sample sees exactly these.
    ///
    /// # Panics
    ///
    /// When the file cannot be written.
    pub fn set_processes(&self, entries: &[ProcessEntry]) {
        let text: String = entries.iter().map(ProcessEntry::line).collect();
        self.replace("fake-nvml-processes", &text);
    }

    /// Writes `name` beside the library through a new file renamed over the old, so that the
    /// library never reads half of it.
    fn replace(&self, name: &str, text: &str) {
        let path = self.dir.join(name);
        let staged = self.dir.join(format!("{name}.new"));
        std::fs::write(&staged, text)
            .and_then(|()| std::fs::rename(&staged, &path))
            .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
    }
}
