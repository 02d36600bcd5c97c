//! ballast-sdk's integration tests: what a plugin crate outside this workspace sees when it
//! builds against the SDK.

mod panic_abort;
