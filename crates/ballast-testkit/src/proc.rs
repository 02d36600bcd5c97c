//! A fixture `/proc` (and an empty `/sys`) whose figures a test sets: memory, CPU use, load
//! averages and pressure stall. Point the monitor's `proc_root` and `sys_root` at it and it reads
//! this machine instead of the real one.
//!
//! Files are rewritten in place (the monitor keeps them open and re-reads them with `pread`), so
//! a test sets its figures first and then has the monitor sample.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Pressure stall figures of one resource, as `/proc/pressure/<resource>` shows them.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Pressure {
    /// `some avg10`, in percent.
    pub some_avg10: f64,
    /// `some avg60`.
    pub some_avg60: f64,
    /// `some avg300`.
    pub some_avg300: f64,
    /// `some total`, microseconds.
    pub some_total_us: u64,
    /// The `full` line, where the resource has one (memory and IO).
    pub full: Option<(f64, f64, f64, u64)>,
}

/// The CPU counters of `/proc/stat`, in clock ticks.
#[derive(Clone, Copy, Debug)]
struct CpuTicks {
    busy: u64,
    idle: u64,
}

/// A fixture machine under a directory of the test's.
#[derive(Debug)]
pub struct FakeProc {
    proc_root: PathBuf,
    sys_root: PathBuf,
    cores: u32,
    ticks: Mutex<CpuTicks>,
}

/// 1 GiB.
pub const GIB: u64 = 1 << 30;

impl FakeProc {
    /// A calm machine under `dir` (`dir/proc`, `dir/sys`): 16 GiB with 12 GiB available, 8
    /// cores idle, no pressure.
    ///
    /// # Panics
    ///
    /// When the files cannot be written.
    pub fn new(dir: &Path) -> FakeProc {
        let proc_root = dir.join("proc");
        let sys_root = dir.join("sys");
        for d in [
            proc_root.join("pressure"),
            proc_root.join("self"),
            sys_root.clone(),
        ] {
            std::fs::create_dir_all(&d).expect("the fixture tree can be created");
        }
        let fake = FakeProc {
            proc_root,
            sys_root,
            cores: 8,
            ticks: Mutex::new(CpuTicks {
                busy: 1000,
                idle: 100_000,
            }),
        };
        fake.set_memory(16 * GIB, 12 * GIB);
        fake.write_stat();
        fake.set_load([0.0, 0.0, 0.0]);
        for resource in ["cpu", "memory", "io"] {
            fake.set_pressure(resource, Pressure::default());
        }
        fake
    }

    /// The fixture `/proc`.
    pub fn proc_root(&self) -> &Path {
        &self.proc_root
    }

    /// The fixture `/sys` (no cgroup: the monitor sees the host).
    pub fn sys_root(&self) -> &Path {
        &self.sys_root
    }

    /// Memory in all and available, in bytes (no swap).
    pub fn set_memory(&self, total: u64, available: u64) {
        let kib = |b: u64| b / 1024;
        self.write(
            "meminfo",
            &format!(
                "MemTotal:       {} kB\nMemFree:        {} kB\nMemAvailable:   {} kB\nSwapTotal:             0 kB\nSwapFree:              0 kB\n",
                kib(total),
                kib(available),
                kib(available)
            ),
        );
    }

    /// Advances the CPU counters so that the time since the last reading was `busy` (0 to 1)
    /// busy on every core.
    pub fn set_cpu(&self, busy: f64) {
        {
            let mut ticks = self.ticks.lock().unwrap_or_else(|p| p.into_inner());
            let step = 1000 * u64::from(self.cores);
            let used = (busy.clamp(0.0, 1.0) * step as f64).round() as u64;
            ticks.busy += used;
            ticks.idle += step - used;
        }
        self.write_stat();
    }

    /// The 1, 5 and 15 minute load averages.
    pub fn set_load(&self, load: [f64; 3]) {
        self.write(
            "loadavg",
            &format!("{:.2} {:.2} {:.2} 1/200 4242\n", load[0], load[1], load[2]),
        );
    }

    /// `/proc/pressure/<resource>` (`cpu`, `memory` or `io`).
    pub fn set_pressure(&self, resource: &str, pressure: Pressure) {
        let mut text = format!(
            "some avg10={:.2} avg60={:.2} avg300={:.2} total={}\n",
            pressure.some_avg10, pressure.some_avg60, pressure.some_avg300, pressure.some_total_us
        );
        if let Some((a10, a60, a300, total)) = pressure.full {
            text.push_str(&format!(
                "full avg10={a10:.2} avg60={a60:.2} avg300={a300:.2} total={total}\n"
            ));
        } else if resource != "cpu" {
            text.push_str("full avg10=0.00 avg60=0.00 avg300=0.00 total=0\n");
        }
        self.write(&format!("pressure/{resource}"), &text);
    }

    /// Writes `contents` to `relative` under the fixture `/proc`, in place.
    ///
    /// # Panics
    ///
    /// When the file cannot be written.
    pub fn write(&self, relative: &str, contents: &str) {
        let path = self.proc_root.join(relative);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).expect("the fixture directory can be created");
        }
        std::fs::write(&path, contents)
            .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
    }

    fn write_stat(&self) {
        let ticks = *self.ticks.lock().unwrap_or_else(|p| p.into_inner());
        let mut text = format!("cpu  {} 0 0 {} 0 0 0 0 0 0\n", ticks.busy, ticks.idle);
        let cores = u64::from(self.cores);
        for core in 0..self.cores {
            text.push_str(&format!(
                "cpu{core} {} 0 0 {} 0 0 0 0 0 0\n",
                ticks.busy / cores,
                ticks.idle / cores
            ));
        }
        text.push_str("procs_running 1\nprocs_blocked 0\n");
        self.write("stat", &text);
    }
}
