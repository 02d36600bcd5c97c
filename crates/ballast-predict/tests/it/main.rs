//! Integration tests of ballast-predict, one binary with a module per area.

mod accuracy;
#[cfg(feature = "actor")]
mod actor;
mod properties;
mod series;
mod traces;
