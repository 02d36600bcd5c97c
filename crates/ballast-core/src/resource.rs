//! The resources ballast watches and sheds for, each measured as a utilization in `0.0..=1.0`.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A resource the scaler can act on. Each is measured as a utilization between 0 and 1.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Resource {
    /// Memory in use: `1 - available / total`, relative to the cgroup limit when there is one.
    Memory,
    /// CPU busy time over all cores.
    Cpu,
    /// GPU compute utilization, the busiest device.
    Gpu,
    /// GPU memory in use, the fullest device.
    GpuMemory,
    /// Disk space used on the watched paths, the fullest one.
    Disk,
    /// Memory pressure stall: PSI `memory some avg10`, as a fraction of time.
    MemoryPressure,
    /// CPU pressure stall: PSI `cpu some avg10`, as a fraction of time.
    CpuPressure,
    /// IO pressure stall: PSI `io some avg10`, as a fraction of time.
    IoPressure,
}

impl Resource {
    /// Every resource, in a stable order.
    pub const ALL: [Resource; 8] = [
        Resource::Memory,
        Resource::Cpu,
        Resource::Gpu,
        Resource::GpuMemory,
        Resource::Disk,
        Resource::MemoryPressure,
        Resource::CpuPressure,
        Resource::IoPressure,
    ];

    /// The name used in config files, metrics and the CLI.
    pub const fn as_str(self) -> &'static str {
        match self {
            Resource::Memory => "memory",
            Resource::Cpu => "cpu",
            Resource::Gpu => "gpu",
            Resource::GpuMemory => "gpu_memory",
            Resource::Disk => "disk",
            Resource::MemoryPressure => "memory_pressure",
            Resource::CpuPressure => "cpu_pressure",
            Resource::IoPressure => "io_pressure",
        }
    }

    /// Whether a plugin only adds to this resource if it declares GPU use.
    pub const fn is_gpu(self) -> bool {
        matches!(self, Resource::Gpu | Resource::GpuMemory)
    }
}

impl fmt::Display for Resource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A resource name that is not one of [`Resource::ALL`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown resource `{0}` (expected one of: memory, cpu, gpu, gpu_memory, disk, memory_pressure, cpu_pressure, io_pressure)"
)]
pub struct UnknownResource(pub String);

impl FromStr for Resource {
    type Err = UnknownResource;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Resource::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| UnknownResource(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_through_from_str_and_serde() {
        for r in Resource::ALL {
            assert_eq!(r.as_str().parse::<Resource>(), Ok(r));
            let json = serde_json::to_string(&r).unwrap();
            assert_eq!(json, format!("\"{}\"", r.as_str()));
        }
        let err = "ram".parse::<Resource>().unwrap_err();
        assert!(err.to_string().contains("unknown resource `ram`"));
    }
}
