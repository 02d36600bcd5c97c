//! Benchmarks of the plugin call path and plugin loading.
fn main() {}
