//! Project automation for ballast: CI, plugin builds, header generation, benchmarks.
fn main() {}
