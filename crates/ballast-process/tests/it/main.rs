//! Integration tests of ballast-process: the protocol parser against arbitrary input, the
//! detectors' invariants on virtual time, `/proc` and cgroup fixture trees, real child processes,
//! and real cgroups where the machine lets the tests write them.

mod cgroup;
mod child;
mod detect;
mod procfs;
mod protocol;
