//! `ballast run`: locks the data directory, builds the [`Topology`] on the real machine, serves
//! the control API, talks to systemd and shuts down cleanly on SIGTERM or SIGINT.

use std::sync::Arc;

use anyhow::{Context as _, Result};

use crate::config::Config;
use crate::lock::{self, LockError};
use crate::topology::{Environment, Topology};

/// How `run` ended without an error of its own.
#[derive(Debug)]
pub enum Outcome {
    /// Stopped by a signal after a clean shutdown.
    Stopped,
    /// Another daemon holds the data directory; nothing was started. The message names the
    /// directory and the other daemon's pid.
    DataDirInUse(String),
}

/// Runs the daemon until SIGTERM or SIGINT. Must run inside an actix System.
pub async fn run(config: Config) -> Result<Outcome> {
    let config = Arc::new(config);
    let env = Environment::system(&config)?;
    std::fs::create_dir_all(&env.data_dir).with_context(|| {
        format!(
            "cannot create the data directory {}",
            env.data_dir.display()
        )
    })?;
    let _lock = match lock::lock(&env.data_dir) {
        Ok(lock) => lock,
        Err(error @ LockError::InUse { .. }) => {
            return Ok(Outcome::DataDirInUse(error.to_string()));
        }
        Err(error) => return Err(error.into()),
    };
    raise_file_limit();
    tracing::info!(data_dir = %env.data_dir.display(), listen = %config.api.listen, mode = %config.scaler.mode, "ballast starting");
    let token = match &config.api.token_file {
        Some(path) => Some(Arc::<str>::from(ballast_api::load_token(path)?)),
        None => None,
    };
    let topology = Topology::build(Arc::clone(&config), env).await?;

    let server = crate::api::server(topology.app_state(token))?;
    let server_handle = server.handle();
    actix::spawn(async move {
        if let Err(error) = server.await {
            tracing::error!(%error, "the control API stopped");
        }
    });
    tracing::info!(listen = %config.api.listen, "control API listening");

    notify_systemd();

    let mut signals = Signals::install()?;
    signals.next().await;
    tracing::info!("shutting down: no more decisions, draining plugins");
    // A second signal exits at once.
    actix::spawn(async move {
        signals.next().await;
        tracing::warn!("second signal: exiting without draining");
        std::process::exit(130);
    });
    server_handle.stop(true).await;
    topology.shutdown().await;
    tracing::info!("ballast stopped");
    Ok(Outcome::Stopped)
}

/// Raises the soft limit on open files to the hard limit (at most 65536), as most daemons do:
/// the default soft limit of 1024 is low for a process holding API connections, logs and
/// plugins. The API's connection cap follows from the limit (see `api::max_connections`).
fn raise_file_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit(2) writes one rlimit into the struct it is given.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return;
    }
    let wanted = limit.rlim_max.min(65536);
    if limit.rlim_cur >= wanted {
        return;
    }
    let raised = libc::rlimit {
        rlim_cur: wanted,
        rlim_max: limit.rlim_max,
    };
    // SAFETY: setrlimit(2) reads one rlimit; raising the soft limit up to the hard one is always
    // permitted.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
        tracing::debug!(
            from = limit.rlim_cur,
            to = wanted,
            "raised the open files limit"
        );
    }
}

/// Tells systemd the daemon is ready and keeps its watchdog fed, when run under systemd.
fn notify_systemd() {
    if std::env::var_os("NOTIFY_SOCKET").is_none() {
        return;
    }
    if let Err(error) = sd_notify::notify(&[sd_notify::NotifyState::Ready]) {
        tracing::warn!(%error, "cannot notify systemd");
    }
    if let Some(timeout) = sd_notify::watchdog_enabled().filter(|t| !t.is_zero()) {
        let period = timeout / 2;
        actix::spawn(async move {
            let mut tick = tokio::time::interval(period);
            loop {
                tick.tick().await;
                let _ = sd_notify::notify(&[sd_notify::NotifyState::Watchdog]);
            }
        });
    }
}

/// SIGTERM and SIGINT, installed once so that a second signal is told from the first.
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> Result<Signals> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Signals {
            term: signal(SignalKind::terminate()).context("cannot handle SIGTERM")?,
            int: signal(SignalKind::interrupt()).context("cannot handle SIGINT")?,
        })
    }

    /// Waits for the next SIGTERM or SIGINT.
    async fn next(&mut self) {
        tokio::select! {
            _ = self.term.recv() => {}
            _ = self.int.recv() => {}
        }
    }
}
