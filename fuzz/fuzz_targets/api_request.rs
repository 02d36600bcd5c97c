//! Fuzz target: what the control API parses from a request (query string, JSON body, caller
//! header) for every endpoint that reads one. Anything is a 400 with a message or accepted;
//! nothing panics.

#![no_main]

use arbitrary::Arbitrary;
use ballast_daemon::api::requests::{Endpoint, parse_request};
use libfuzzer_sys::fuzz_target;

#[derive(Debug, Arbitrary)]
struct Request<'a> {
    endpoint: u8,
    query: &'a str,
    caller: Option<&'a [u8]>,
    body: &'a [u8],
}

fuzz_target!(|request: Request<'_>| {
    let endpoint = Endpoint::ALL[usize::from(request.endpoint) % Endpoint::ALL.len()];
    if let Err(error) = parse_request(endpoint, request.query, request.body, request.caller) {
        assert_eq!(error.kind(), "bad_request", "{error}");
    }
});
