//! `GET /plugins/{name}/logs`: the log of a plugin that runs in a process (its stdout, stderr,
//! `log` messages and the host's notes: started, signalled, exited), as plain text lines.
//!
//! `?tail=N` (default 100, at most 10000) gives the last N lines across the rotated files;
//! `?follow=true` sends them and then every line appended, as it comes, until the client goes
//! away (a rotation is followed into the new file).

use std::path::PathBuf;
use std::time::Duration;

use actix_web::HttpResponse;
use actix_web::http::{StatusCode, header};
use actix_web::web::{self, Bytes};
use ballast_process::logfile;
use futures_util::{StreamExt as _, stream};
use serde::Deserialize;

use super::errors::ApiError;
use crate::state::AppState;

/// Lines sent without `tail`.
const DEFAULT_TAIL: usize = 100;
/// The most lines `tail` may ask for.
const MAX_TAIL: usize = 10_000;
/// How often a followed log is checked for new lines.
const POLL: Duration = Duration::from_millis(200);

/// The query of `GET /plugins/{name}/logs`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogsQuery {
    /// How many of the last lines.
    tail: Option<usize>,
    /// Keep sending new lines.
    follow: Option<bool>,
}

fn text(lines: &[String]) -> Bytes {
    let mut out = String::with_capacity(lines.iter().map(|l| l.len() + 1).sum());
    for line in lines {
        out.push_str(line);
        out.push('\n');
    }
    Bytes::from(out)
}

/// `GET /plugins/{name}/logs?tail=N&follow=true`.
pub async fn logs(
    state: web::Data<AppState>,
    name: web::Path<String>,
    query: web::Query<LogsQuery>,
) -> Result<HttpResponse, ApiError> {
    let status = state
        .plugin_host
        .status(&name)
        .map_err(|_| ApiError::unknown_plugin(&name))?;
    let tail = query.tail.unwrap_or(DEFAULT_TAIL);
    if tail > MAX_TAIL {
        return Err(ApiError::bad_request(format!(
            "`tail` may be at most {MAX_TAIL}, got {tail}"
        )));
    }
    let Some(path): Option<PathBuf> = status.process.and_then(|p| p.log_file) else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "no_log",
            format!(
                "plugin `{name}` runs inside the daemon, so it has no log file of its own: its lines are in the daemon's log, marked plugin={name}"
            ),
        ));
    };
    let read_path = path.clone();
    let (lines, offset) = web::block(move || {
        let lines = logfile::tail(&read_path, tail)?;
        let offset = std::fs::metadata(&read_path).map_or(0, |m| m.len());
        Ok::<_, std::io::Error>((lines, offset))
    })
    .await
    .map_err(|e| ApiError::unavailable("log reader", e))?
    .map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            format!("cannot read {}: {e}", path.display()),
        )
    })?;
    let response = HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, "text/plain; charset=utf-8"))
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .take();
    if query.follow != Some(true) {
        let mut response = response;
        return Ok(response.body(text(&lines)));
    }
    let opening = stream::once(async move { Ok::<_, actix_web::Error>(text(&lines)) });
    let body = stream::unfold((path, offset), |(path, offset)| async move {
        loop {
            tokio::time::sleep(POLL).await;
            let read = path.clone();
            let appended = web::block(move || logfile::read_from(&read, offset)).await;
            match appended {
                Ok(Ok(a)) if !a.lines.is_empty() => {
                    return Some((Ok(text(&a.lines)), (path, a.offset)));
                }
                Ok(Ok(a)) if a.offset != offset => {
                    // Rotated: continue in the new file.
                    return Some((Ok(Bytes::new()), (path, a.offset)));
                }
                Ok(Ok(_)) => continue,
                Ok(Err(error)) => {
                    tracing::debug!(file = %path.display(), %error, "cannot follow a plugin log");
                    return None;
                }
                Err(_) => return None,
            }
        }
    });
    let mut response = response;
    Ok(response.streaming(opening.chain(body)))
}
