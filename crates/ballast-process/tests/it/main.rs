//! Integration tests of ballast-process: the protocol parser against arbitrary input, the
//! detectors' invariants on virtual time, `/proc` fixture trees, and real child processes.

mod child;
mod detect;
mod procfs;
mod protocol;
