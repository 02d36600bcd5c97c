//! `GET /events`: the daemon's event stream as server-sent events.
//!
//! Each event is `event: <type>` (sample, assessment, decision, warning, plugin, tier) and
//! `data: <the event as one line of JSON>`. A client that reads too slowly to keep up with the
//! broadcast loses the oldest events; it is told so with a comment line (`: skipped N events`)
//! and the stream goes on. A comment every 15 s keeps idle connections alive and notices clients
//! that went away.

use std::collections::BTreeSet;
use std::time::Duration;

use actix_web::web::{self, Bytes};
use actix_web::{HttpResponse, http::header};
use futures_util::{StreamExt as _, stream};
use serde::Deserialize;
use tokio::sync::broadcast::error::RecvError;

use super::errors::ApiError;
use crate::live::DaemonEvent;
use crate::state::AppState;

/// Every event type, as `event:` names it.
pub const EVENT_TYPES: [&str; 6] = [
    "sample",
    "assessment",
    "decision",
    "warning",
    "plugin",
    "tier",
];

const KEEPALIVE: Duration = Duration::from_secs(15);

/// The event's type, as `event:` names it.
pub fn event_type(event: &DaemonEvent) -> &'static str {
    match event {
        DaemonEvent::Sample(_) => "sample",
        DaemonEvent::Assessment(_) => "assessment",
        DaemonEvent::Decision(_) => "decision",
        DaemonEvent::Warning(_) => "warning",
        DaemonEvent::Plugin(_) => "plugin",
        DaemonEvent::Tier(_) => "tier",
    }
}

/// The query of `GET /events`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventsQuery {
    /// Only these types, comma-separated (e.g. `decision,warning`); all without it.
    pub(super) types: Option<String>,
}

/// One event in SSE framing.
fn frame(event: &DaemonEvent) -> Bytes {
    match serde_json::to_string(event) {
        Ok(json) => Bytes::from(format!("event: {}\ndata: {json}\n\n", event_type(event))),
        Err(error) => Bytes::from(format!(
            ": cannot encode a {} event: {error}\n\n",
            event_type(event)
        )),
    }
}

/// The event types a `types` filter asks for (comma-separated), or `None` for every type.
pub(super) fn wanted_types(
    types: Option<&str>,
) -> Result<Option<BTreeSet<&'static str>>, ApiError> {
    let Some(list) = types else {
        return Ok(None);
    };
    let mut wanted = BTreeSet::new();
    for name in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let known = EVENT_TYPES.iter().find(|t| **t == name).ok_or_else(|| {
            ApiError::bad_request(format!(
                "unknown event type `{name}` in `types` (expected some of: {})",
                EVENT_TYPES.join(", ")
            ))
        })?;
        wanted.insert(*known);
    }
    Ok(Some(wanted))
}

/// `GET /events`: server-sent events from now on.
pub async fn events(
    state: web::Data<AppState>,
    query: web::Query<EventsQuery>,
) -> Result<HttpResponse, ApiError> {
    let wanted = wanted_types(query.types.as_deref())?;
    let receiver = state.live.subscribe();
    let opening =
        stream::once(async { Ok::<_, actix_web::Error>(Bytes::from_static(b": connected\n\n")) });
    let body = stream::unfold((receiver, wanted), |(mut receiver, wanted)| async move {
        loop {
            let bytes = match tokio::time::timeout(KEEPALIVE, receiver.recv()).await {
                Err(_) => Bytes::from_static(b": keepalive\n\n"),
                Ok(Ok(event)) => {
                    if wanted
                        .as_ref()
                        .is_some_and(|w| !w.contains(event_type(&event)))
                    {
                        continue;
                    }
                    frame(&event)
                }
                Ok(Err(RecvError::Lagged(skipped))) => {
                    tracing::debug!(skipped, "an event stream client fell behind");
                    Bytes::from(format!(": skipped {skipped} events\n\n"))
                }
                Ok(Err(RecvError::Closed)) => return None,
            };
            return Some((Ok::<_, actix_web::Error>(bytes), (receiver, wanted)));
        }
    });
    Ok(HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, "text/event-stream"))
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .streaming(opening.chain(body)))
}
