//! Integration tests of ballast-host against real plugin files: the example plugins, the faulty
//! test plugin and small C fixtures compiled here.

#[cfg(feature = "actor")]
mod actor;
mod calls;
mod check;
mod demand;
mod lifecycle;
mod load;
mod native_stream;
mod panics;
mod process;
mod process_stream;
mod stream;
mod support;
mod trust;
mod worker;
