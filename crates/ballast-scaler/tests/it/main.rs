//! Integration tests of ballast-scaler, one binary with a module per concern.

#[cfg(feature = "actor")]
mod actor;
mod config;
mod demand;
mod demand_properties;
mod forecast;
mod policy;
mod properties;
mod support;
