//! Integration tests of the `ballast` binary: one test binary for the crate, a module per area.

mod cli;
mod fleet_report;
mod report;
mod sample;
mod simulate;

/// A URL where nothing listens: a port that was free a moment ago.
pub(crate) fn dead_address() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    drop(listener);
    format!("http://{address}")
}
