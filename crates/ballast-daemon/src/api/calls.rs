//! `POST /plugins/{name}/call`: a call to a plugin, answered whole, or streamed as the plugin
//! sends its chunks (server-sent events, or a chunked `application/octet-stream`), with the
//! caller's deadline and a cancellation when the caller goes away.
//!
//! A streamed answer holds its headers until the first chunk or the outcome, at most
//! [`HEADER_WAIT`], so a call refused at once keeps its status code (503 shed, 429 busy). After
//! that, the outcome comes as the stream's last event (`end`, with `done`, `error`,
//! `deadline`, `cancelled` or `shed`); a chunked octet stream that does not end `done` is cut
//! without its last chunk, which every HTTP client reports as a truncated body, never silently.

use std::any::Any;
use std::os::fd::{AsFd as _, AsRawFd, OwnedFd, RawFd};
use std::rc::Rc;
use std::time::{Duration, Instant};

use actix_web::dev::Extensions;
use actix_web::http::header::{self, HeaderValue};
use actix_web::web::{self, Bytes};
use actix_web::{HttpRequest, HttpResponse};
use ballast_host::{Call, CallError, CallOptions, CallWhenReady, CancelReason, CancelToken};
use ballast_scaler::WakeError;
use ballast_scaler::actor::WakeMsg;
use base64::Engine as _;
use serde::Deserialize;
use serde_json::json;
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use tokio::sync::mpsc;

use super::errors::ApiError;
use super::handlers::read_body;
use crate::live::CallOutcome;
use crate::state::AppState;

/// The header that names the caller of a plugin call.
pub const CALLER_HEADER: &str = "x-ballast-caller";

/// The header that gives a call's deadline: a duration (`500ms`, `2s`) or a number of
/// milliseconds, capped by the plugin's `call_timeout`.
pub const DEADLINE_HEADER: &str = "x-ballast-deadline";

/// How many chunks wait between a plugin and a slow client before the plugin's `send` waits.
const CHUNK_BUFFER: usize = 256;

/// How long a streamed answer's headers wait for the first chunk or the outcome: a call refused
/// at once keeps its status; a slow one gets its stream, and its outcome in the last event.
const HEADER_WAIT: Duration = Duration::from_millis(100);

/// How often an event stream without chunks gets a comment line: proxies keep a connection that
/// carries bytes, and a client whose hang-up the socket does not show (one behind a proxy that
/// keeps its side open) is found out by the write.
const KEEPALIVE: Duration = Duration::from_millis(250);

/// A connection's socket, duplicated when the connection is accepted, so that a call can watch
/// for its client hanging up while nothing is written to it.
#[derive(Clone)]
pub(super) struct PeerSocket(Rc<OwnedFd>);

impl AsRawFd for PeerSocket {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }
}

/// The API server's `on_connect` hook: keeps a [`PeerSocket`] with the connection's data. A
/// connection whose socket cannot be duplicated (out of descriptors) is served without one: its
/// calls learn that their client went away when they next write to it.
pub(super) fn remember_peer(connection: &dyn Any, data: &mut Extensions) {
    if let Some(stream) = connection.downcast_ref::<actix_web::rt::net::TcpStream>()
        && let Ok(socket) = stream.as_fd().try_clone_to_owned()
    {
        data.insert(PeerSocket(Rc::new(socket)));
    }
}

/// Resolves when the client of a call hangs up: its end of the connection is closed (or
/// half-closed: like nginx and Go's net/http, the server takes a client that stopped sending as
/// gone). Never resolves for a connection that cannot be watched.
async fn hung_up(socket: Option<PeerSocket>) {
    let watch = socket.and_then(|socket| {
        // SAFETY: a `PeerSocket` owns its descriptor (shared through an `Rc`, closed only when
        // the last clone goes), so it stays open and the same for as long as the `AsyncFd`
        // holds the clone.
        unsafe { AsyncFd::register_with_interest(socket, Interest::READABLE) }.ok()
    });
    let Some(watch) = watch else {
        return std::future::pending().await;
    };
    loop {
        let Ok(mut ready) = watch.readable().await else {
            return std::future::pending().await;
        };
        if ready.ready().is_read_closed() {
            return;
        }
        // Bytes of a next request: not a hang-up. Wait for the next change.
        ready.clear_ready();
    }
}

/// The query of `POST /plugins/{name}/call`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CallQuery {
    /// Who is calling, for the per-caller tallies.
    pub(super) caller: Option<String>,
    /// The call's deadline, as the X-Ballast-Deadline header gives it (the header wins).
    pub(super) timeout: Option<String>,
}

fn valid_caller(caller: &str) -> bool {
    !caller.is_empty()
        && caller.len() <= 64
        && caller
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.:@/".contains(c))
}

/// The caller of a plugin call: the X-Ballast-Caller header, else the `caller` query parameter,
/// else `-`.
pub(super) fn caller_name(
    header: Option<&HeaderValue>,
    query: Option<&str>,
) -> Result<String, ApiError> {
    let caller = match header {
        Some(value) => Some(value.to_str().map_err(|_| {
            ApiError::bad_request("the X-Ballast-Caller header must be plain ASCII")
        })?),
        None => query,
    };
    if let Some(caller) = caller
        && !valid_caller(caller)
    {
        return Err(ApiError::bad_request(format!(
            "invalid caller name `{caller}`: use 1 to 64 letters, digits or -_.:@/"
        )));
    }
    Ok(caller.unwrap_or("-").to_owned())
}

/// The deadline of a call: the X-Ballast-Deadline header, else the `timeout` query parameter;
/// a duration such as `500ms` or `2s`, or a bare number of milliseconds.
pub(super) fn deadline(
    header: Option<&HeaderValue>,
    query: Option<&str>,
) -> Result<Option<Duration>, ApiError> {
    let (text, source) = match header {
        Some(value) => (
            value.to_str().map_err(|_| {
                ApiError::bad_request("the X-Ballast-Deadline header must be plain ASCII")
            })?,
            "the X-Ballast-Deadline header",
        ),
        None => match query {
            Some(text) => (text, "the `timeout` query parameter"),
            None => return Ok(None),
        },
    };
    let text = text.trim();
    let parsed = if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        text.parse::<u64>().ok().map(Duration::from_millis)
    } else {
        humantime::parse_duration(text).ok()
    };
    match parsed {
        Some(d) if !d.is_zero() => Ok(Some(d)),
        _ => Err(ApiError::bad_request(format!(
            "invalid deadline `{text}` in {source}: use a duration above zero such as 500ms \
             or 2s, or a number of milliseconds"
        ))),
    }
}

/// How the client asked for the answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Delivery {
    /// The whole answer at the end.
    Whole,
    /// Server-sent events: one `chunk` event per chunk, then `end`.
    Events,
    /// The chunks' bytes as they come, in a chunked body.
    Octets,
}

/// What the `Accept` header asks for: events for `text/event-stream`, a chunked stream for an
/// explicit `application/octet-stream`, else the whole answer.
pub(super) fn delivery(accept: Option<&HeaderValue>) -> Delivery {
    let accept = accept
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_ascii_lowercase();
    if accept.contains("text/event-stream") {
        Delivery::Events
    } else if accept.contains("application/octet-stream") {
        Delivery::Octets
    } else {
        Delivery::Whole
    }
}

/// Cancels a call for its caller when its client hangs up (a task watches the connection) or
/// when dropped before [`CallerGuard::finish`] (the response stream is dropped when a write to a
/// client that went away fails).
struct CallerGuard {
    token: Option<CancelToken>,
    watch: actix_web::rt::task::JoinHandle<()>,
}

impl CallerGuard {
    fn new(token: CancelToken, socket: Option<PeerSocket>) -> CallerGuard {
        let watched = token.clone();
        let watch = actix_web::rt::spawn(async move {
            hung_up(socket).await;
            watched.cancel(CancelReason::Caller);
        });
        CallerGuard {
            token: Some(token),
            watch,
        }
    }

    fn finish(&mut self) {
        self.token = None;
        self.watch.abort();
    }
}

impl Drop for CallerGuard {
    fn drop(&mut self) {
        self.watch.abort();
        if let Some(token) = self.token.take() {
            token.cancel(CancelReason::Caller);
        }
    }
}

/// The sink that hands a plugin's chunks to the response: it waits while the client is slow
/// (the plugin's `send` blocks, so a fast plugin cannot fill the daemon's memory), and answers
/// `false` once the response is gone or the call is cancelled.
fn chunk_sink(tx: mpsc::Sender<Vec<u8>>, cancel: CancelToken) -> ballast_host::ChunkSink {
    Box::new(move |chunk| {
        let mut chunk = chunk;
        let mut wait = Duration::from_micros(50);
        loop {
            match tx.try_send(chunk) {
                Ok(()) => return true,
                Err(mpsc::error::TrySendError::Closed(_)) => return false,
                Err(mpsc::error::TrySendError::Full(back)) => {
                    if cancel.is_cancelled() {
                        return false;
                    }
                    chunk = back;
                    std::thread::sleep(wait);
                    wait = (wait * 2).min(Duration::from_millis(5));
                }
            }
        }
    })
}

type Outcome = Result<Result<Vec<u8>, CallError>, ApiError>;

/// `POST /plugins/{name}/call`: the body goes to the plugin, its answer comes back, whole or
/// streamed as the `Accept` header asks.
pub async fn call(
    state: web::Data<AppState>,
    name: web::Path<String>,
    query: web::Query<CallQuery>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let name = name.into_inner();
    let caller = caller_name(req.headers().get(CALLER_HEADER), query.caller.as_deref())?;
    let deadline = deadline(req.headers().get(DEADLINE_HEADER), query.timeout.as_deref())?;
    let delivery = delivery(req.headers().get(header::ACCEPT));
    let body = read_body(&req, payload, state.config.api.max_body_bytes).await?;
    let arrived = Instant::now();
    let cancel = CancelToken::new();
    let mut guard = CallerGuard::new(cancel.clone(), req.conn_data::<PeerSocket>().cloned());
    let (tx, rx) = match delivery {
        Delivery::Whole => (None, None),
        Delivery::Events | Delivery::Octets => {
            let (tx, rx) = mpsc::channel(CHUNK_BUFFER);
            (Some(tx), Some(rx))
        }
    };
    let request = CallRequest {
        name: name.clone(),
        caller,
        body: body.to_vec(),
        deadline,
        cancel: cancel.clone(),
        tx,
    };
    // The call runs on a task of its own, so its outcome is tallied even when the client goes.
    let mut task = actix_web::rt::spawn(run_call(state.clone(), request));
    let Some(mut rx) = rx else {
        let outcome = task.await.unwrap_or_else(|e| Err(task_failed(&e)));
        guard.finish();
        return match outcome? {
            Ok(answer) => Ok(HttpResponse::Ok()
                .content_type("application/octet-stream")
                .body(answer)),
            Err(error) => Err(ApiError::from_call(error)),
        };
    };
    // The headers wait for the first chunk or the outcome, a moment at most: a call refused at
    // once answers with its own status.
    let mut finished: Option<Outcome> = None;
    let mut waited = false;
    let first = tokio::select! {
        biased;
        chunk = rx.recv() => chunk,
        outcome = &mut task => {
            finished = Some(outcome.unwrap_or_else(|e| Err(task_failed(&e))));
            None
        }
        () = tokio::time::sleep(HEADER_WAIT) => {
            waited = true;
            None
        }
    };
    let mut body = Body {
        rx,
        task: None,
        outcome: None,
        delivery,
        guard,
        chunks: 0,
        bytes: 0,
        ended: false,
        state: state.clone(),
        plugin: name,
        arrived,
    };
    if first.is_some() || waited {
        body.task = Some(task);
        return Ok(respond(delivery, body, first));
    }
    let outcome = match finished {
        Some(outcome) => outcome,
        None => task.await.unwrap_or_else(|e| Err(task_failed(&e))),
    };
    match outcome? {
        Err(error) if body.rx.is_empty() => {
            body.guard.finish();
            Err(ApiError::from_call(error))
        }
        outcome => {
            body.guard.finish();
            body.outcome = Some(Ok(outcome));
            Ok(respond(delivery, body, None))
        }
    }
}

fn task_failed(error: &impl std::fmt::Display) -> ApiError {
    ApiError::unavailable("call task", error)
}

/// The streamed response, its first chunk (if one came before the headers) first.
fn respond(delivery: Delivery, body: Body, first: Option<Vec<u8>>) -> HttpResponse {
    let mut builder = HttpResponse::Ok();
    match delivery {
        Delivery::Events => {
            builder
                .content_type("text/event-stream")
                .insert_header((header::CACHE_CONTROL, "no-cache"))
                // Proxies such as nginx buffer a response unless told not to.
                .insert_header(("x-accel-buffering", "no"));
        }
        Delivery::Octets | Delivery::Whole => {
            builder.content_type("application/octet-stream");
        }
    }
    let stream = futures_util::stream::unfold((body, first), |(mut body, first)| async move {
        if let Some(chunk) = first {
            let item = body.chunk(chunk);
            return Some((item, (body, None)));
        }
        body.next().await.map(|item| (item, (body, None)))
    });
    builder.streaming(stream)
}

/// A streamed answer: the chunks as they come, then the outcome.
struct Body {
    rx: mpsc::Receiver<Vec<u8>>,
    task: Option<actix_web::rt::task::JoinHandle<Outcome>>,
    outcome: Option<Outcome>,
    delivery: Delivery,
    guard: CallerGuard,
    chunks: u64,
    bytes: u64,
    ended: bool,
    state: web::Data<AppState>,
    plugin: String,
    /// When the call arrived, for the time to its first chunk.
    arrived: Instant,
}

/// What the stream yields: bytes, or an error that cuts the connection.
type Item = Result<Bytes, std::io::Error>;

impl Body {
    /// The next piece of the response; `None` once the outcome went out.
    async fn next(&mut self) -> Option<Item> {
        if self.ended {
            return None;
        }
        if self.outcome.is_none() {
            let task = self.task.as_mut()?;
            let keepalive = async {
                match self.delivery {
                    Delivery::Events => tokio::time::sleep(KEEPALIVE).await,
                    Delivery::Octets | Delivery::Whole => std::future::pending().await,
                }
            };
            tokio::select! {
                biased;
                chunk = self.rx.recv() => {
                    if let Some(chunk) = chunk {
                        return Some(self.chunk(chunk));
                    }
                    let outcome = task.await.unwrap_or_else(|e| Err(task_failed(&e)));
                    self.outcome = Some(outcome);
                }
                outcome = &mut *task => {
                    self.outcome = Some(outcome.unwrap_or_else(|e| Err(task_failed(&e))));
                }
                () = keepalive => return Some(Ok(Bytes::from_static(b":\n\n"))),
            }
        }
        // Chunks sent before the outcome are in the channel: they go first.
        if let Ok(chunk) = self.rx.try_recv() {
            return Some(self.chunk(chunk));
        }
        self.ended = true;
        self.guard.finish();
        let outcome = self.outcome.take()?;
        Some(self.end(outcome))
    }

    fn chunk(&mut self, chunk: Vec<u8>) -> Item {
        if self.chunks == 0 {
            self.state
                .metrics
                .observe_first_chunk(&self.plugin, self.arrived.elapsed());
        }
        self.chunks += 1;
        self.bytes += chunk.len() as u64;
        Ok(match self.delivery {
            Delivery::Events => Bytes::from(chunk_event(self.chunks, &chunk)),
            Delivery::Octets | Delivery::Whole => Bytes::from(chunk),
        })
    }

    /// The last event, or for an octet stream the end of the body (or a cut, if the call did
    /// not end well).
    fn end(&mut self, outcome: Outcome) -> Item {
        let (end, why) = end_of(&outcome, &self.state, &self.plugin);
        match self.delivery {
            Delivery::Events => {
                let mut data = json!({
                    "outcome": end,
                    "chunks": self.chunks,
                    "bytes": self.bytes,
                });
                if let Some(why) = why {
                    data["error"] = why;
                }
                Ok(Bytes::from(format!("event: end\ndata: {data}\n\n")))
            }
            Delivery::Octets | Delivery::Whole if end == "done" => Ok(Bytes::new()),
            Delivery::Octets | Delivery::Whole => Err(std::io::Error::other(format!(
                "the call to `{}` ended {end} after {} chunks",
                self.plugin, self.chunks
            ))),
        }
    }
}

/// The outcome's word for the last event (`done`, `error`, `deadline`, `cancelled`, `shed`),
/// and the error body for one that did not end well.
fn end_of(
    outcome: &Outcome,
    state: &AppState,
    plugin: &str,
) -> (&'static str, Option<serde_json::Value>) {
    let error = match outcome {
        Ok(Ok(_)) => return ("done", None),
        Ok(Err(error)) => error,
        Err(api) => return ("error", Some(api.body().clone())),
    };
    let end = match error {
        CallError::Timeout { .. }
        | CallError::Cancelled {
            reason: CancelReason::Deadline,
            ..
        } => "deadline",
        CallError::Cancelled {
            reason: CancelReason::Caller,
            ..
        } => "cancelled",
        CallError::Cancelled {
            reason: CancelReason::Shed,
            ..
        } => "shed",
        _ => "error",
    };
    let mut body = ApiError::from_call(error.clone()).body().clone();
    if end == "shed" {
        // Why the plugin was shed: the reason of its state now.
        if let Ok(status) = state.plugin_host.status(plugin) {
            body["state"] = json!(status.state.name());
            body["state_reason"] = json!(status.reason);
        }
    }
    (end, Some(body))
}

/// One chunk as a server-sent event: its text as `data` lines, or, for bytes that are not text
/// an event stream can carry (not UTF-8, or with a carriage return), base64 in a
/// `chunk-base64` event.
pub(super) fn chunk_event(seq: u64, chunk: &[u8]) -> String {
    match std::str::from_utf8(chunk) {
        Ok(text) if !text.contains('\r') => {
            let mut event = format!("id: {seq}\nevent: chunk\n");
            for line in text.split('\n') {
                event.push_str("data: ");
                event.push_str(line);
                event.push('\n');
            }
            event.push('\n');
            event
        }
        _ => format!(
            "id: {seq}\nevent: chunk-base64\ndata: {}\n\n",
            base64::engine::general_purpose::STANDARD.encode(chunk)
        ),
    }
}

/// A call as the handler hands it to its task.
struct CallRequest {
    name: String,
    caller: String,
    body: Vec<u8>,
    deadline: Option<Duration>,
    cancel: CancelToken,
    /// Where the chunks go, for a streamed answer.
    tx: Option<mpsc::Sender<Vec<u8>>>,
}

impl CallRequest {
    /// The call's options, with what is left of its deadline after `spent`.
    fn options(&self, spent: Duration) -> CallOptions {
        CallOptions {
            deadline: self
                .deadline
                .map(|d| d.saturating_sub(spent).max(Duration::from_millis(1))),
            cancel: self.cancel.clone(),
            sink: self
                .tx
                .clone()
                .map(|tx| chunk_sink(tx, self.cancel.clone())),
        }
    }
}

/// Runs the call (waking its plugin if it must) and tallies it.
async fn run_call(state: web::Data<AppState>, request: CallRequest) -> Outcome {
    let started = Instant::now();
    let result = call_waking(&state, &request, started).await;
    let elapsed = started.elapsed();
    let outcome = match &result {
        Ok(Ok(_)) => "ok",
        Ok(Err(CallError::UnknownPlugin { .. })) => "unknown",
        Ok(Err(CallError::Degraded { .. } | CallError::Idle { .. })) | Err(_) => "degraded",
        Ok(Err(CallError::Busy { .. } | CallError::WakeQueueFull { .. })) => "busy",
        Ok(Err(
            CallError::Timeout { .. }
            | CallError::LoadTimeout { .. }
            | CallError::Cancelled {
                reason: CancelReason::Deadline,
                ..
            },
        )) => "timeout",
        Ok(Err(CallError::Cancelled {
            reason: CancelReason::Caller,
            ..
        })) => "cancelled",
        Ok(Err(CallError::Cancelled {
            reason: CancelReason::Shed,
            ..
        })) => "shed",
        Ok(Err(CallError::Failed { .. })) => "failed",
        Ok(Err(CallError::Panicked { .. })) => "panicked",
    };
    // Calls to names that are not loaded are not tallied: the names come from outside and
    // would grow the tallies and the metrics without bound.
    if outcome != "unknown" {
        state.live.record_call(
            state.now(),
            &CallOutcome {
                plugin: request.name.clone(),
                caller: request.caller.clone(),
                ok: matches!(result, Ok(Ok(_))),
                degraded: matches!(outcome, "degraded" | "shed"),
                latency_us: u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX),
            },
        );
        state
            .metrics
            .observe_call(&request.name, &request.caller, outcome, elapsed);
    }
    if let Ok(Err(error)) = &result {
        tracing::debug!(plugin = %request.name, caller = %request.caller, %error, "call refused or failed");
    }
    result
}

/// Calls the plugin; when it is idle, asks the scaler to wake it (making room by priority if it
/// must) and waits for it to load, at most its `load_timeout` (and the caller's deadline). A
/// call never waits on a plugin that is shed for pressure: that stays the fast degraded answer.
/// `Err` is an answer of the daemon's own (no room, an actor not answering).
async fn call_waking(state: &AppState, request: &CallRequest, started: Instant) -> Outcome {
    let name = &request.name;
    let first = state
        .host
        .send(Call {
            plugin: name.clone(),
            request: request.body.clone(),
            // The whole deadline: the call is on its way within microseconds of its arrival.
            options: Some(request.options(Duration::ZERO)),
        })
        .await
        .map_err(|e| ApiError::unavailable("plugin host", e))?;
    let Err(CallError::Idle { .. }) = &first else {
        return Ok(first);
    };
    match state
        .scaler
        .send(WakeMsg(name.clone()))
        .await
        .map_err(|e| ApiError::unavailable("scaler", e))?
    {
        Ok(_) => {}
        Err(WakeError::NoRoom(no_room)) => return Err(ApiError::no_room(&no_room)),
        Err(WakeError::UnknownPlugin(_)) => return Ok(first),
        Err(WakeError::NotIdle { why, .. }) => {
            tracing::debug!(plugin = %name, %why, "an idle plugin was not woken");
            return Ok(first);
        }
    }
    state
        .host
        .send(CallWhenReady {
            plugin: name.clone(),
            request: request.body.clone(),
            options: Some(request.options(started.elapsed())),
        })
        .await
        .map_err(|e| ApiError::unavailable("plugin host", e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_chunks_are_data_lines_and_other_bytes_are_base64() {
        assert_eq!(chunk_event(1, b"hi"), "id: 1\nevent: chunk\ndata: hi\n\n");
        assert_eq!(
            chunk_event(2, b"a\nb"),
            "id: 2\nevent: chunk\ndata: a\ndata: b\n\n"
        );
        assert_eq!(
            chunk_event(3, b"a\r\nb"),
            "id: 3\nevent: chunk-base64\ndata: YQ0KYg==\n\n"
        );
        assert_eq!(
            chunk_event(4, &[0xff, 0x00]),
            "id: 4\nevent: chunk-base64\ndata: /wA=\n\n"
        );
    }

    #[test]
    fn deadlines_are_durations_or_milliseconds_and_the_header_wins() {
        let header = HeaderValue::from_static("2s");
        assert_eq!(
            deadline(Some(&header), Some("5s")).unwrap(),
            Some(Duration::from_secs(2))
        );
        assert_eq!(
            deadline(None, Some("250")).unwrap(),
            Some(Duration::from_millis(250))
        );
        assert_eq!(deadline(None, None).unwrap(), None);
        for bad in ["0", "0s", "soon", "", "-1"] {
            let error = deadline(None, Some(bad)).unwrap_err();
            assert!(
                error.to_string().contains("`timeout` query parameter"),
                "{bad}: {error}"
            );
        }
        let header = HeaderValue::from_static("later");
        let error = deadline(Some(&header), None).unwrap_err();
        assert!(error.to_string().contains("X-Ballast-Deadline"), "{error}");
    }

    #[test]
    fn the_accept_header_picks_the_delivery() {
        let pick = |v: &'static str| delivery(Some(&HeaderValue::from_static(v)));
        assert_eq!(pick("text/event-stream"), Delivery::Events);
        assert_eq!(pick("application/octet-stream"), Delivery::Octets);
        assert_eq!(pick("*/*"), Delivery::Whole);
        assert_eq!(pick("application/json"), Delivery::Whole);
        assert_eq!(delivery(None), Delivery::Whole);
    }
}
