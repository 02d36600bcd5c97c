//! Integration tests of ballast-predict, one binary with a module per area.

mod actor;
mod properties;
mod series;
