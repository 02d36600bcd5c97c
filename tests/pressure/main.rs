//! The closed loop under real load, in a test binary of its own: cargo runs test binaries one
//! after another, so no other end-to-end test loads the machine while these measure it.

mod closed_loop;
mod load;
// The end-to-end support module, shared; this binary uses only part of it.
#[allow(dead_code)]
#[path = "../e2e/support.rs"]
mod support;
