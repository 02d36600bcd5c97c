//! `GET /ready` and `GET|HEAD /plugins/{name}/ready`: readiness for load balancers (HAProxy's
//! `option httpchk`, Envoy's active health checks) and orchestrators (a Kubernetes readiness
//! probe). 200 while the daemon, or the plugin, takes calls; 503 with the reason otherwise, in
//! the body a call would get. No token is needed unless `api.ready_requires_token` says so.
//! What counts as ready is `crate::readiness`.

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use ballast_scaler::actor::{Readiness, ReadinessMsg};
use serde_json::json;

use super::errors::ApiError;
use crate::readiness::{self, NotReady};
use crate::state::AppState;

/// The scaler's readiness figures, or an error saying it does not answer.
async fn scaler_readiness(state: &AppState) -> Result<Readiness, ApiError> {
    state
        .scaler
        .send(ReadinessMsg)
        .await
        .map_err(|e| ApiError::unavailable("scaler", e))
}

/// Refuses the request when `api.ready_requires_token` is set and it has no valid token.
fn authorize(state: &AppState, req: &HttpRequest) -> Result<(), ApiError> {
    if !state.config.api.ready_requires_token {
        return Ok(());
    }
    match super::token_refusal(state, req.headers()) {
        None => Ok(()),
        Some(message) => {
            tracing::warn!(path = %req.path(), peer = ?req.peer_addr(), "refused a readiness check without a valid token");
            Err(ApiError::unauthorized(message))
        }
    }
}

/// The 503 of a daemon that has not made its first decisions yet.
fn starting(state: &AppState) -> ApiError {
    let mut error = ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "starting",
        "ballast has not made its first decisions yet: no assessment has reached the scaler since it started",
    );
    error.body_mut()["started_at"] = json!(state.live.started_at());
    error
}

/// `GET /ready`: 200 once the daemon is up and its first decisions are made (the scaler took in
/// its first assessment, after the start-up plan enabled the plugins), 503 `starting` before.
pub async fn ready(state: web::Data<AppState>, req: HttpRequest) -> Result<HttpResponse, ApiError> {
    authorize(&state, &req)?;
    let readiness = scaler_readiness(&state).await?;
    let Some(assessed_at) = readiness.assessed_at else {
        return Err(starting(&state));
    };
    let ready = state
        .plugin_host
        .statuses()
        .iter()
        .filter(|status| {
            let wake = readiness
                .plugins
                .iter()
                .find(|(name, _)| *name == status.name)
                .map(|(_, check)| check);
            readiness::plugin((*status).into(), Some(assessed_at), wake).is_ok()
        })
        .map(|status| status.name.clone())
        .collect::<Vec<_>>();
    Ok(HttpResponse::Ok().json(json!({
        "status": "ready",
        "version": env!("CARGO_PKG_VERSION"),
        "assessed_at": assessed_at,
        "plugins_ready": ready,
    })))
}

/// `GET|HEAD /plugins/{name}/ready`: 200 while the plugin takes calls (enabled at any level, or
/// idle with a call able to wake it), 503 with `{plugin, state, reason, since}` while a call would
/// be refused (or `no_room` for an idle plugin that would not fit), 404 for a name that is not
/// loaded.
pub async fn plugin_ready(
    state: web::Data<AppState>,
    name: web::Path<String>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    authorize(&state, &req)?;
    let name = name.into_inner();
    let status = state
        .plugin_host
        .status(&name)
        .map_err(|_| ApiError::unknown_plugin(&name))?;
    let readiness = scaler_readiness(&state).await?;
    let wake = readiness
        .plugins
        .iter()
        .find(|(plugin, _)| *plugin == name)
        .map(|(_, check)| check);
    match readiness::plugin((&status).into(), readiness.assessed_at, wake) {
        Ok(ready) => Ok(HttpResponse::Ok().json(json!({
            "plugin": name,
            "ready": true,
            "state": ready.state,
            "level": ready.level.0,
            "since": ready.since,
        }))),
        Err(NotReady::Starting) => Err(starting(&state)),
        Err(NotReady::NoRoom(no_room)) => Err(ApiError::no_room(&no_room)),
        Err(NotReady::Degraded(error)) => Err(ApiError::from_call(error)),
    }
}
