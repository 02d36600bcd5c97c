//! Benchmarks of the monitor on this machine: one full sample without GPU and each sampler.
fn main() {}
