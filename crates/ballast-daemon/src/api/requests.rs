//! What the control API makes of a request's query string, body and caller header, without a
//! daemon: the same parsing and checks the handlers run, reachable as one pure function so that
//! the fuzz target (and tests) can feed it anything.

use actix_web::http::header::HeaderValue;
use actix_web::web::Query;

use super::calls::{CallQuery, caller_name, deadline};
use super::errors::ApiError;
use super::events::{EventsQuery, wanted_types};
use super::handlers::{DecisionsQuery, PinRequest, parse_pin_request};

/// The endpoints that read a query string or a body.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Endpoint {
    /// `POST /plugins/{name}/enable|disable|release|level|suspend|resume`, by action.
    Pin(&'static str),
    /// `POST /plugins/{name}/call`.
    Call,
    /// `GET /decisions`.
    Decisions,
    /// `GET /events`.
    Events,
}

impl Endpoint {
    /// Every endpoint that reads a query string or a body.
    pub const ALL: [Endpoint; 9] = [
        Endpoint::Pin("enable"),
        Endpoint::Pin("disable"),
        Endpoint::Pin("release"),
        Endpoint::Pin("level"),
        Endpoint::Pin("suspend"),
        Endpoint::Pin("resume"),
        Endpoint::Call,
        Endpoint::Decisions,
        Endpoint::Events,
    ];
}

/// Parses what `endpoint` would read from a request: its query string (without the `?`), its
/// body and, for calls, the raw X-Ballast-Caller header. `Ok` carries what the handler would go
/// on with, in words; `Err` is the 400 it would answer. The body is taken as already within
/// `api.max_body_bytes` (the handlers refuse a larger one with 413 before parsing it).
pub fn parse_request(
    endpoint: Endpoint,
    query: &str,
    body: &[u8],
    caller_header: Option<&[u8]>,
) -> Result<String, ApiError> {
    let invalid_query = |e: actix_web::error::QueryPayloadError| {
        ApiError::bad_request(format!("invalid query string: {e}"))
    };
    match endpoint {
        Endpoint::Pin(action) => {
            let query = Query::<PinRequest>::from_query(query).map_err(invalid_query)?;
            let params = parse_pin_request(action, body, query.into_inner())?;
            Ok(format!(
                "{action}: level {:?} for {:?}",
                params.level, params.duration
            ))
        }
        Endpoint::Call => {
            let query = Query::<CallQuery>::from_query(query).map_err(invalid_query)?;
            let header = match caller_header {
                Some(bytes) => Some(HeaderValue::from_bytes(bytes).map_err(|_| {
                    ApiError::bad_request("the X-Ballast-Caller header is not a valid header value")
                })?),
                None => None,
            };
            let caller = caller_name(header.as_ref(), query.caller.as_deref())?;
            let deadline = deadline(None, query.timeout.as_deref())?;
            Ok(format!(
                "call by {caller} with {} bytes, deadline {deadline:?}",
                body.len()
            ))
        }
        Endpoint::Decisions => {
            let query = Query::<DecisionsQuery>::from_query(query).map_err(invalid_query)?;
            Ok(format!("decisions, tail {:?}", query.tail))
        }
        Endpoint::Events => {
            let query = Query::<EventsQuery>::from_query(query).map_err(invalid_query)?;
            let wanted = wanted_types(query.types.as_deref())?;
            Ok(format!("events of types {wanted:?}"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error(endpoint: Endpoint, query: &str, body: &str) -> String {
        let e = parse_request(endpoint, query, body.as_bytes(), None).unwrap_err();
        e.to_string()
    }

    #[test]
    fn the_handlers_checks_answer_without_a_daemon() {
        assert_eq!(
            parse_request(Endpoint::Pin("level"), "for=5m", br#"{"level": 1}"#, None).unwrap(),
            "level: level Some(1) for Some(300s)"
        );
        assert!(error(Endpoint::Pin("level"), "", "{}").contains("missing `level`"));
        assert!(error(Endpoint::Pin("release"), "for=1m", "").contains("`for` is not accepted"));
        assert!(
            error(Endpoint::Pin("enable"), "", "{\"for\": \"0s\"}").contains("longer than zero")
        );
        assert!(error(Endpoint::Pin("enable"), "colour=red", "").contains("invalid query string"));
        assert!(
            error(Endpoint::Events, "types=gossip", "").contains("unknown event type `gossip`")
        );
        assert!(error(Endpoint::Decisions, "tail=-1", "").contains("invalid query string"));
        assert_eq!(
            parse_request(Endpoint::Call, "caller=a", b"hi", Some(b"assistant")).unwrap(),
            "call by assistant with 2 bytes, deadline None"
        );
        assert_eq!(
            parse_request(Endpoint::Call, "timeout=250", b"", None).unwrap(),
            "call by - with 0 bytes, deadline Some(250ms)"
        );
        assert!(error(Endpoint::Call, "timeout=soon", "").contains("invalid deadline `soon`"));
        let e = parse_request(Endpoint::Call, "", b"", Some(b"bad caller")).unwrap_err();
        assert!(
            e.to_string().contains("invalid caller name `bad caller`"),
            "{e}"
        );
    }
}
