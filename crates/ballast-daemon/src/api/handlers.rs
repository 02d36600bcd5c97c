//! The handlers of the control API's endpoints, except the event stream (see `events`).

use std::time::Duration;

use actix_web::http::header;
use actix_web::web::{self, BytesMut};
use actix_web::{HttpRequest, HttpResponse};
use ballast_core::Level;
use ballast_core::plugin::Command;
use ballast_host::Execute;
use ballast_scaler::PinTarget;
use ballast_scaler::actor::{
    GetPluginsMsg, GetThresholdsMsg, PinMsg, PreflightMsg, ReadinessMsg, ReleaseMsg,
};
use futures_util::StreamExt as _;
use serde::Deserialize;
use serde_json::json;

use super::errors::ApiError;
use ballast_api::views::{
    ActionView, PluginSummary, PluginView, ResourceView, StatusView, TierView,
};

use super::views;
use crate::live::RECENT_DECISIONS;
use crate::metrics::{
    OPENMETRICS_CONTENT_TYPE, PROMETHEUS_TEXT_CONTENT_TYPE, ScalerFigures,
    openmetrics_to_prometheus_text,
};
use crate::state::AppState;

/// How many decisions `GET /decisions` returns without `tail`.
const DEFAULT_TAIL: usize = 50;

/// `GET /healthz`: the daemon answers. Needs no token.
pub async fn healthz(state: web::Data<AppState>) -> HttpResponse {
    let started = state.live.started_at();
    HttpResponse::Ok().json(json!({
        "status": "ok",
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_ms": state.now().saturating_duration_since(started).as_millis() as u64,
    }))
}

/// Any other path.
pub async fn not_found(req: HttpRequest) -> Result<HttpResponse, ApiError> {
    Err(ApiError::new(
        actix_web::http::StatusCode::NOT_FOUND,
        "not_found",
        format!(
            "no endpoint {} {}; see GET /status, /plugins, /decisions, /events, /metrics",
            req.method(),
            req.path()
        ),
    ))
}

/// A known path with the wrong method.
pub async fn method_not_allowed(req: HttpRequest) -> Result<HttpResponse, ApiError> {
    let allowed = if req.path().starts_with("/plugins/")
        && req.path().matches('/').count() == 3
        && !req.path().ends_with("/logs")
        && !req.path().ends_with("/ready")
        && !req.path().ends_with("/preflight")
    {
        "POST"
    } else {
        "GET"
    };
    Err(ApiError::new(
        actix_web::http::StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!(
            "{} {} is not an endpoint; use {allowed}",
            req.method(),
            req.path()
        ),
    ))
}

/// The scaler's view of every plugin, or none if the scaler does not answer.
async fn scaler_plugins(state: &AppState) -> Vec<ballast_scaler::PluginStatus> {
    match state.scaler.send(GetPluginsMsg).await {
        Ok(plugins) => plugins,
        Err(error) => {
            tracing::warn!(%error, "the scaler did not answer a status request");
            Vec::new()
        }
    }
}

fn plugin_view(
    state: &AppState,
    name: &str,
    scaler: &[ballast_scaler::PluginStatus],
    detail: bool,
) -> Result<PluginView, ApiError> {
    let status = state
        .plugin_host
        .status(name)
        .map_err(|_| ApiError::unknown_plugin(name))?;
    Ok(views::plugin_view(
        &status,
        scaler.iter().find(|s| s.name == name),
        detail,
    ))
}

/// `GET /status`: tier, mode, the latest sample, each resource's figures and the plugins.
pub async fn status(state: web::Data<AppState>) -> HttpResponse {
    let sample = state.live.sample();
    let assessment = state.live.assessment();
    let view = StatusView {
        version: env!("CARGO_PKG_VERSION").to_owned(),
        started_at: state.live.started_at(),
        mode: state.live.mode(),
        tier: state.live.tier().map(|t| TierView {
            name: t.name,
            rank: t.rank,
            rule: t.rule,
        }),
        sample_at: sample.as_ref().map(|s| s.at),
        resources: ResourceView::from_live(sample.as_ref(), assessment.as_ref()),
        plugins: state
            .plugin_host
            .statuses()
            .iter()
            .map(|s| PluginSummary {
                name: s.name.clone(),
                state: s.state.name().to_owned(),
                level: match s.state {
                    ballast_core::PluginState::Enabled { level } => Some(level.0),
                    _ => None,
                },
            })
            .collect(),
        sample,
    };
    HttpResponse::Ok().json(view)
}

/// `GET /plugins`: every plugin with its state, stats and the scaler's view.
pub async fn plugins(state: web::Data<AppState>) -> HttpResponse {
    let scaler = scaler_plugins(&state).await;
    let views: Vec<PluginView> = state
        .plugin_host
        .statuses()
        .iter()
        .map(|s| views::plugin_view(s, scaler.iter().find(|p| p.name == s.name), false))
        .collect();
    HttpResponse::Ok().json(views)
}

/// `GET /plugins/{name}`: one plugin in detail.
pub async fn plugin(
    state: web::Data<AppState>,
    name: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let scaler = scaler_plugins(&state).await;
    Ok(HttpResponse::Ok().json(plugin_view(&state, &name, &scaler, true)?))
}

/// The query of `GET /plugins/{name}/preflight`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PreflightQuery {
    /// The level to ask about; the plugin's fullest allowed when absent.
    pub(super) level: Option<u32>,
}

/// `GET /plugins/{name}/preflight?level=N`: would the plugin fit at that level now, the need per
/// resource (declared and measured), the headroom under each shed threshold, and which plugins a
/// wake would take down to make room. Changes nothing.
pub async fn preflight(
    state: web::Data<AppState>,
    name: web::Path<String>,
    query: web::Query<PreflightQuery>,
) -> Result<HttpResponse, ApiError> {
    let answer = state
        .scaler
        .send(PreflightMsg {
            plugin: name.into_inner(),
            level: query.level.map(Level),
        })
        .await
        .map_err(|e| ApiError::unavailable("scaler", e))?
        .map_err(ApiError::from_scaler)?;
    Ok(HttpResponse::Ok().json(views::preflight_view(&answer)))
}

/// Reads the request body, refusing more than `limit` bytes with 413.
pub(super) async fn read_body(
    req: &HttpRequest,
    mut payload: web::Payload,
    limit: usize,
) -> Result<BytesMut, ApiError> {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(ApiError::too_large(limit));
    }
    let mut body = BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk
            .map_err(|e| ApiError::bad_request(format!("cannot read the request body: {e}")))?;
        if body.len() + chunk.len() > limit {
            return Err(ApiError::too_large(limit));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// The JSON body (or query) of the pin endpoints.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PinRequest {
    /// How long the pin holds, e.g. "10m"; without it, until released.
    #[serde(rename = "for")]
    duration: Option<String>,
    /// The level, for `POST /plugins/{name}/level`.
    level: Option<u32>,
}

/// What a pin, release, suspend or resume request asks for, checked.
pub(super) struct PinParams {
    /// How long the pin holds.
    pub(super) duration: Option<Duration>,
    /// The duration as the client wrote it.
    pub(super) duration_text: Option<String>,
    /// The level, for `level`.
    pub(super) level: Option<u32>,
}

pub(super) fn parse_pin_request(
    action: &str,
    body: &[u8],
    query: PinRequest,
) -> Result<PinParams, ApiError> {
    let from_body: PinRequest = if body.iter().all(u8::is_ascii_whitespace) {
        PinRequest::default()
    } else {
        serde_json::from_slice(body).map_err(|e| {
            ApiError::bad_request(format!(
                "invalid JSON body: {e}; expected e.g. {{\"for\": \"10m\"}}{}",
                if action == "level" {
                    " or {\"level\": 1, \"for\": \"5m\"}"
                } else {
                    ""
                }
            ))
        })?
    };
    let text = from_body.duration.or(query.duration);
    let level = from_body.level.or(query.level);
    if level.is_some() && action != "level" {
        return Err(ApiError::bad_request(format!(
            "`level` is not accepted by {action}; use POST /plugins/{{name}}/level"
        )));
    }
    if action == "level" && level.is_none() {
        return Err(ApiError::bad_request(
            "missing `level`: send {\"level\": N} (0 is full), optionally with \"for\": \"5m\"",
        ));
    }
    if text.is_some() && matches!(action, "release" | "suspend" | "resume") {
        return Err(ApiError::bad_request(format!(
            "`for` is not accepted by {action}; only enable, disable and level pins have a duration"
        )));
    }
    let duration = match &text {
        None => None,
        Some(t) => {
            let d = humantime::parse_duration(t).map_err(|e| {
                ApiError::bad_request(format!(
                    "invalid duration `{t}` in `for`: {e}; write it like 90s, 10m or 2h"
                ))
            })?;
            if d.is_zero() {
                return Err(ApiError::bad_request("`for` must be longer than zero"));
            }
            Some(d)
        }
    };
    Ok(PinParams {
        duration,
        duration_text: text,
        level,
    })
}

/// `POST /plugins/{name}/enable|disable|release|level`: pins through the scaler.
pub async fn pin(
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
    query: web::Query<PinRequest>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let (name, action) = path.into_inner();
    let body = read_body(&req, payload, state.config.api.max_body_bytes).await?;
    let PinParams {
        duration,
        duration_text,
        level,
    } = parse_pin_request(&action, &body, query.into_inner())?;
    // Unknown plugins answer 404 before anything is asked of the scaler.
    state
        .plugin_host
        .status(&name)
        .map_err(|_| ApiError::unknown_plugin(&name))?;
    let target = match action.as_str() {
        "enable" => Some(PinTarget::On { level: Level::FULL }),
        "disable" => Some(PinTarget::Off),
        "level" => Some(PinTarget::On {
            level: Level(level.unwrap_or(0)),
        }),
        _ => None,
    };
    let scaler_result = match target {
        Some(target) => {
            state
                .scaler
                .send(PinMsg {
                    plugin: name.clone(),
                    target,
                    duration,
                })
                .await
        }
        None => {
            state
                .scaler
                .send(ReleaseMsg {
                    plugin: name.clone(),
                })
                .await
        }
    };
    scaler_result
        .map_err(|e| ApiError::unavailable("scaler", e))?
        .map_err(ApiError::from_scaler)?;
    // Stored before the answer: a pin the operator saw acknowledged survives a crash.
    let _ = state.pins.send(crate::pins::PersistPins).await;
    let message = match (target, &duration_text) {
        (Some(PinTarget::On { level }), None) => {
            format!("pinned `{name}` on at level {level} until released")
        }
        (Some(PinTarget::On { level }), Some(d)) => {
            format!("pinned `{name}` on at level {level} for {d}")
        }
        (Some(PinTarget::Off), None) => format!("pinned `{name}` off until released"),
        (Some(PinTarget::Off), Some(d)) => format!("pinned `{name}` off for {d}"),
        (None, _) => format!("released `{name}`: the scaler manages it again"),
    };
    tracing::info!(plugin = %name, %action, duration = ?duration_text, "operator request through the API");
    let scaler = scaler_plugins(&state).await;
    Ok(HttpResponse::Ok().json(ActionView {
        plugin: name.clone(),
        action,
        duration: duration_text,
        message,
        plugin_view: plugin_view(&state, &name, &scaler, false)?,
    }))
}

/// `POST /plugins/{name}/suspend|resume`: straight to the host.
pub async fn lifecycle(
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
    query: web::Query<PinRequest>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let (name, action) = path.into_inner();
    let body = read_body(&req, payload, state.config.api.max_body_bytes).await?;
    parse_pin_request(&action, &body, query.into_inner())?;
    state
        .plugin_host
        .status(&name)
        .map_err(|_| ApiError::unknown_plugin(&name))?;
    let result = if action == "suspend" {
        state
            .host
            .send(Execute(Command::Suspend {
                plugin: name.clone(),
                reason: "operator suspended it through the API".to_owned(),
            }))
            .await
    } else {
        state
            .host
            .send(Execute(Command::Resume {
                plugin: name.clone(),
                reason: "operator resumed it through the API".to_owned(),
            }))
            .await
    };
    result
        .map_err(|e| ApiError::unavailable("plugin host", e))?
        .map_err(ApiError::from_host)?;
    tracing::info!(plugin = %name, %action, "operator request through the API");
    let scaler = scaler_plugins(&state).await;
    Ok(HttpResponse::Ok().json(ActionView {
        plugin: name.clone(),
        message: if action == "suspend" {
            format!("suspended `{name}`: its calls answer 503 until it is resumed")
        } else {
            format!("resumed `{name}`")
        },
        action,
        duration: None,
        plugin_view: plugin_view(&state, &name, &scaler, false)?,
    }))
}

/// The query of `GET /decisions`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DecisionsQuery {
    /// How many of the latest decisions.
    pub(super) tail: Option<usize>,
}

/// `GET /decisions?tail=N`: the latest decisions, oldest first.
pub async fn decisions(
    state: web::Data<AppState>,
    query: web::Query<DecisionsQuery>,
) -> HttpResponse {
    let tail = query.tail.unwrap_or(DEFAULT_TAIL).min(RECENT_DECISIONS);
    HttpResponse::Ok().json(state.live.decisions(tail))
}

/// `GET /metrics`: OpenMetrics text, or the classic Prometheus text format (0.0.4, what
/// `promtool check metrics` reads) when the client accepts `text/plain` and not OpenMetrics.
pub async fn metrics(state: web::Data<AppState>, req: HttpRequest) -> HttpResponse {
    let scaler = ScalerFigures {
        plugins: scaler_plugins(&state).await,
        readiness: state.scaler.send(ReadinessMsg).await.ok(),
        thresholds: state
            .scaler
            .send(GetThresholdsMsg)
            .await
            .unwrap_or_default(),
    };
    // The host's status after the scaler's: a plugin the scaler just woke reads as enabled
    // rather than as idle with a stale answer.
    let plugins = state.plugin_host.statuses();
    let text = state.metrics.render(&state.live, &plugins, &scaler);
    let accept = req
        .headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if accept.contains("text/plain") && !accept.contains("application/openmetrics-text") {
        HttpResponse::Ok()
            .content_type(PROMETHEUS_TEXT_CONTENT_TYPE)
            .body(openmetrics_to_prometheus_text(&text))
    } else {
        HttpResponse::Ok()
            .content_type(OPENMETRICS_CONTENT_TYPE)
            .body(text)
    }
}
