//! The control API (actix-web, loopback by default): status, plugins, pins, calls routed to
//! plugins, decisions, the event stream and Prometheus metrics.
//!
//! Every endpoint answers JSON (except a call's answer, the event stream and the metrics), and
//! every error is `{"error": "<kind>", "message": "<sentence>"}` with more fields where they help
//! (a degraded plugin names its state, reason and since when). When a token is configured, every
//! endpoint but `/healthz` and the readiness checks (`/ready`, `/plugins/{name}/ready`, unless
//! `api.ready_requires_token`) requires `Authorization: Bearer <token>`. No endpoint loads a
//! plugin from a path: the plugins are the ones the config names.

mod calls;
mod errors;
mod events;
mod handlers;
mod logs;
mod ready;
pub mod requests;
mod views;

#[cfg(test)]
mod tests;

use std::net::TcpListener;
use std::time::Duration;

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{Server, ServiceRequest, ServiceResponse};
use actix_web::http::header::{self, HeaderMap};
use actix_web::middleware::{Next, from_fn};
use actix_web::{App, HttpServer, ResponseError, web};
use anyhow::Context as _;

pub use errors::ApiError;

use crate::state::AppState;

/// How long a graceful stop waits for open requests (event streams included) before closing them.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(2);

/// The API server on `state.config.api.listen`, not yet running: the caller awaits it on the
/// daemon's actix System and stops it through its handle. It installs no signal handlers.
pub fn server(state: AppState) -> anyhow::Result<Server> {
    let listen = state.config.api.listen;
    let listener = TcpListener::bind(listen)
        .with_context(|| format!("cannot listen on {listen} for the control API"))?;
    server_on(listener, state)
}

/// How many connections the API holds open at most: a quarter of the file descriptors the daemon
/// may open (a connection holds two, its socket and the duplicate a call watches for its client
/// hanging up, and a third while a call runs), between 16 and 4096. Past it the API stops accepting (clients wait in the kernel's
/// backlog) instead of running the daemon out of descriptors, which its logs, state files and
/// plugins need too. Idle connections are closed after actix-web's 5 s request timeout.
pub fn max_connections() -> usize {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit(2) writes one rlimit into the struct it is given.
    let soft = if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0 {
        usize::try_from(limit.rlim_cur).unwrap_or(usize::MAX)
    } else {
        1024
    };
    (soft / 4).clamp(16, 4096)
}

/// The API server on an already bound `listener` (tests bind `127.0.0.1:0`).
pub fn server_on(listener: TcpListener, state: AppState) -> anyhow::Result<Server> {
    let address = listener
        .local_addr()
        .context("cannot read the control API's listening address")?;
    let data = web::Data::new(state);
    let server = HttpServer::new(move || App::new().app_data(data.clone()).configure(routes))
        .on_connect(calls::remember_peer)
        .workers(1)
        .max_connections(max_connections())
        .disable_signals()
        .shutdown_timeout(SHUTDOWN_TIMEOUT.as_secs())
        .listen(listener)
        .with_context(|| format!("cannot serve the control API on {address}"))?
        .run();
    tracing::info!(%address, "control API listening");
    Ok(server)
}

/// Registers every endpoint. The app must hold a `web::Data<AppState>`.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.app_data(web::QueryConfig::default().error_handler(|error, _req| {
        ApiError::bad_request(format!("invalid query string: {error}")).into()
    }))
    .app_data(web::PathConfig::default().error_handler(|error, _req| {
        ApiError::bad_request(format!("invalid path: {error}")).into()
    }))
    .service(resource("/healthz", web::get().to(handlers::healthz)))
    // Readiness checks: outside the token scope; they check the token themselves when
    // `api.ready_requires_token` asks for it.
    .service(
        web::resource("/ready")
            .route(web::get().to(ready::ready))
            .route(web::head().to(ready::ready))
            .default_service(web::to(handlers::method_not_allowed)),
    )
    .service(
        web::resource("/plugins/{name}/ready")
            .route(web::get().to(ready::plugin_ready))
            .route(web::head().to(ready::plugin_ready))
            .default_service(web::to(handlers::method_not_allowed)),
    )
    .service(
        web::scope("")
            .wrap(from_fn(require_token))
            .service(resource("/status", web::get().to(handlers::status)))
            .service(resource("/plugins", web::get().to(handlers::plugins)))
            .service(resource("/plugins/{name}", web::get().to(handlers::plugin)))
            .service(resource(
                "/plugins/{name}/{action:enable|disable|release|level}",
                web::post().to(handlers::pin),
            ))
            .service(resource(
                "/plugins/{name}/{action:suspend|resume}",
                web::post().to(handlers::lifecycle),
            ))
            .service(resource(
                "/plugins/{name}/call",
                web::post().to(calls::call),
            ))
            .service(resource(
                "/plugins/{name}/preflight",
                web::get().to(handlers::preflight),
            ))
            .service(resource("/plugins/{name}/logs", web::get().to(logs::logs)))
            .service(resource("/decisions", web::get().to(handlers::decisions)))
            .service(resource("/events", web::get().to(events::events)))
            .service(resource("/metrics", web::get().to(handlers::metrics)))
            .default_service(web::to(handlers::not_found)),
    );
}

/// A resource answering `route`, and a JSON 405 for any other method.
fn resource(path: &str, route: actix_web::Route) -> actix_web::Resource {
    web::resource(path)
        .route(route)
        .default_service(web::to(handlers::method_not_allowed))
}

/// Refuses a request without the configured bearer token (when one is configured).
async fn require_token(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, actix_web::Error> {
    let Some(state) = req.app_data::<web::Data<AppState>>() else {
        // Without the state there is no way to know whether a token is required: fail closed.
        let response = ApiError::new(
            actix_web::http::StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "the control API was set up without its state",
        )
        .error_response();
        return Ok(req.into_response(response).map_into_right_body());
    };
    if let Some(message) = token_refusal(state, req.headers()) {
        tracing::warn!(path = %req.path(), peer = ?req.peer_addr(), "refused an API request without a valid token");
        let response = ApiError::unauthorized(message).error_response();
        return Ok(req.into_response(response).map_into_right_body());
    }
    next.call(req)
        .await
        .map(ServiceResponse::map_into_left_body)
}

/// Why a request with `headers` is refused for want of the configured bearer token, or `None`
/// when it may go on (it presents the token, or none is configured).
fn token_refusal(state: &AppState, headers: &HeaderMap) -> Option<&'static str> {
    let token = state.token.as_ref()?;
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .map(str::trim);
    match presented {
        None => Some("this endpoint requires `Authorization: Bearer <token>`"),
        Some(presented) if !constant_time_eq(presented.as_bytes(), token.as_bytes()) => {
            Some("the bearer token is not the one configured")
        }
        Some(_) => None,
    }
}

/// Compares two byte strings in time that depends only on their lengths.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut difference = u8::from(a.len() != b.len());
    for (i, x) in a.iter().enumerate() {
        let y = b.get(i % b.len().max(1)).copied().unwrap_or(0);
        difference |= x ^ y;
    }
    difference == 0
}
