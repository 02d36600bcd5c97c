//! The wire contract of ballast's control API, shared by the daemon (which serves it) and the
//! CLI clients (which read it), like tokio-console's `console-api`: the JSON bodies of its
//! answers ([`views`]), the shape of its errors ([`ErrorBody`]) and the bearer token file both
//! sides read ([`load_token`]).
//!
//! It depends on `ballast-core` and serde only: nothing of actix-web, the host or the scaler, so
//! a client of the API builds without the daemon.

#![deny(missing_docs)]

mod token;
pub mod views;

use serde::{Deserialize, Serialize};

pub use token::{TokenError, load_token};

/// The header a caller names itself with on `POST /plugins/{name}/call` (or `?caller=`).
pub const CALLER_HEADER: &str = "X-Ballast-Caller";

/// The header that gives a call's deadline on `POST /plugins/{name}/call` (or `?timeout=`): a
/// duration such as `500ms` or `2s`, or a number of milliseconds; capped by the plugin's
/// `call_timeout`.
pub const DEADLINE_HEADER: &str = "X-Ballast-Deadline";

/// Every error the API answers with: `{"error": "<kind>", "message": "<sentence>", ...}` and,
/// where they help, more fields (a degraded plugin's `plugin`, `state`, `reason`, `since`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// The kind of error, e.g. `degraded`, `busy`, `unknown_plugin`, `bad_request`.
    pub error: String,
    /// What went wrong, as a sentence.
    pub message: String,
    /// The fields of particular kinds of error.
    #[serde(flatten)]
    pub details: serde_json::Map<String, serde_json::Value>,
}
