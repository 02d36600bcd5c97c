//! Integration tests of ballast-predict, one binary with a module per area.

#[cfg(feature = "actor")]
mod actor;
mod properties;
mod series;
