//! The API's errors: one JSON shape, `{"error": "<kind>", "message": "<sentence>", ...}`, and the
//! status code each kind of failure answers with.

use std::fmt;

use actix_web::http::StatusCode;
use actix_web::http::header;
use actix_web::{HttpResponse, ResponseError};
use ballast_host::{CallError, CancelReason, HostError};
use ballast_scaler::ScalerError;
use serde_json::{Value, json};

/// An error answer of the control API.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    body: Value,
    retry_after_secs: Option<u64>,
}

impl ApiError {
    /// An error with `status`, a kind (`error`) and a message.
    pub fn new(status: StatusCode, error: &str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            body: json!({ "error": error, "message": message.into() }),
            retry_after_secs: None,
        }
    }

    /// 400: the request is malformed; the message says what is wrong.
    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    /// 401: no valid bearer token.
    pub fn unauthorized(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    /// 404: no plugin of that name.
    pub fn unknown_plugin(name: &str) -> ApiError {
        let mut e = ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown_plugin",
            format!("no plugin named `{name}` is loaded"),
        );
        e.body["plugin"] = json!(name);
        e
    }

    /// 413: the body is larger than `api.max_body_bytes`.
    pub fn too_large(limit: usize) -> ApiError {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("the request body is larger than {limit} bytes (api.max_body_bytes)"),
        )
    }

    /// 503: an actor of the daemon is not answering (it is stopping or restarting).
    pub fn unavailable(what: &str, error: impl fmt::Display) -> ApiError {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            format!("the {what} is not answering ({error}); the daemon may be stopping"),
        )
    }

    /// The JSON body.
    pub fn body(&self) -> &Value {
        &self.body
    }

    /// The JSON body, to add fields to.
    pub fn body_mut(&mut self) -> &mut Value {
        &mut self.body
    }

    /// The kind of error, as the `error` field spells it.
    pub fn kind(&self) -> &str {
        self.body["error"].as_str().unwrap_or("error")
    }

    /// The error for a refused or failed call.
    pub fn from_call(error: CallError) -> ApiError {
        let message = error.to_string();
        let (status, mut body) = match &error {
            CallError::UnknownPlugin { plugin } => return ApiError::unknown_plugin(plugin),
            CallError::Degraded {
                plugin,
                state,
                reason,
                since,
            } => (
                StatusCode::SERVICE_UNAVAILABLE,
                json!({ "error": "degraded", "plugin": plugin, "state": state,
                        "reason": reason, "since": since, "since_rfc3339": rfc3339(*since) }),
            ),
            CallError::Idle {
                plugin,
                reason,
                since,
            } => (
                StatusCode::SERVICE_UNAVAILABLE,
                json!({ "error": "degraded", "plugin": plugin, "state": "idle",
                        "reason": reason, "since": since, "since_rfc3339": rfc3339(*since) }),
            ),
            CallError::WakeQueueFull { plugin, queue } => (
                StatusCode::TOO_MANY_REQUESTS,
                json!({ "error": "busy", "plugin": plugin, "wake_queue": queue }),
            ),
            CallError::LoadTimeout { plugin, timeout_ms } => (
                StatusCode::GATEWAY_TIMEOUT,
                json!({ "error": "load_timeout", "plugin": plugin, "timeout_ms": timeout_ms }),
            ),
            CallError::Busy {
                plugin,
                limit,
                queue,
            } => (
                StatusCode::TOO_MANY_REQUESTS,
                json!({ "error": "busy", "plugin": plugin, "limit": limit, "queue": queue }),
            ),
            CallError::Timeout { plugin, timeout_ms } => (
                StatusCode::GATEWAY_TIMEOUT,
                json!({ "error": "timeout", "plugin": plugin, "timeout_ms": timeout_ms }),
            ),
            CallError::Cancelled { plugin, reason } => (
                match reason {
                    CancelReason::Deadline => StatusCode::GATEWAY_TIMEOUT,
                    CancelReason::Shed => StatusCode::SERVICE_UNAVAILABLE,
                    // Nobody is left to read it; 499 is what proxies log for a client that
                    // closed its request.
                    CancelReason::Caller => {
                        StatusCode::from_u16(499).unwrap_or(StatusCode::BAD_REQUEST)
                    }
                },
                json!({ "error": "cancelled", "plugin": plugin, "reason": reason }),
            ),
            CallError::Failed { plugin, .. } => (
                StatusCode::BAD_GATEWAY,
                json!({ "error": "call_failed", "plugin": plugin }),
            ),
            CallError::Panicked { plugin, .. } => (
                StatusCode::BAD_GATEWAY,
                json!({ "error": "panicked", "plugin": plugin }),
            ),
        };
        body["message"] = json!(message);
        ApiError {
            status,
            body,
            retry_after_secs: matches!(
                error,
                CallError::Busy { .. } | CallError::WakeQueueFull { .. }
            )
            .then_some(1),
        }
    }

    /// The error for a failed lifecycle command.
    pub fn from_host(error: HostError) -> ApiError {
        match &error {
            HostError::UnknownPlugin { name } => ApiError::unknown_plugin(name),
            HostError::InvalidLevel { .. } => ApiError::bad_request(error.to_string()),
            HostError::NotEnabled { .. } => {
                ApiError::new(StatusCode::CONFLICT, "conflict", error.to_string())
            }
            HostError::Plugin { .. } => {
                ApiError::new(StatusCode::BAD_GATEWAY, "plugin_failed", error.to_string())
            }
            _ => ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                error.to_string(),
            ),
        }
    }

    /// 503: a call woke an idle plugin that does not fit, even with room made; the message
    /// says what it needed and what is free.
    pub fn no_room(no_room: &ballast_scaler::NoRoom) -> ApiError {
        let mut e = ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "no_room",
            no_room.to_string(),
        );
        e.body["plugin"] = json!(no_room.plugin);
        e.body["level"] = json!(no_room.level);
        e.body["resource"] = json!(no_room.resource);
        e.body["need"] = json!(no_room.need);
        e.body["free"] = json!(no_room.free);
        e.body["held_by_lower_priority"] = json!(no_room.held_below);
        e
    }

    /// The error for a refused pin or release.
    pub fn from_scaler(error: ScalerError) -> ApiError {
        match &error {
            ScalerError::UnknownPlugin(name) => ApiError::unknown_plugin(name),
            ScalerError::InvalidLevel { .. } => ApiError::bad_request(error.to_string()),
            ScalerError::Config(_) => ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                error.to_string(),
            ),
        }
    }
}

/// A timestamp as RFC 3339 in UTC, to the second.
fn rfc3339(at: ballast_core::Timestamp) -> String {
    let time = std::time::UNIX_EPOCH + std::time::Duration::from_millis(at.as_millis());
    humantime::format_rfc3339_seconds(time).to_string()
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {}: {}",
            self.status.as_u16(),
            self.kind(),
            self.body["message"].as_str().unwrap_or_default()
        )
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.status
    }

    fn error_response(&self) -> HttpResponse {
        let mut response = HttpResponse::build(self.status);
        if let Some(seconds) = self.retry_after_secs {
            response.insert_header((header::RETRY_AFTER, seconds.to_string()));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            response.insert_header((header::WWW_AUTHENTICATE, "Bearer"));
        }
        response.json(&self.body)
    }
}
