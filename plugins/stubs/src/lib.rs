//! Example ballast integration: stubs.
