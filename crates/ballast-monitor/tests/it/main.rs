//! Integration tests of ballast-monitor: the parsers on fixture files, the monitor on fixture
//! trees, nvml-wrapper against the fake NVML library, GPU memory charged to plugins and (with
//! the `actor` feature) the actor on tokio's paused clock.

#[cfg(feature = "actor")]
mod actor;
mod attribution;
mod fixtures;
mod machine;
mod monitor;
mod nvml;
mod props;
mod scope;
