//! Integration tests of ballast-lab, one binary with a module per area.

mod accuracy;
mod traces;
