//! `PluginHostActor`: the actix shell around [`PluginHost`]. Commands in, plugin events out.
//!
//! Lifecycle work (create, drain, stop) can take seconds, so it never runs on the actor's thread:
//! each plugin has its own lifecycle thread that executes its commands in the order they arrived.
//! Calls run on the plugin's call workers; the actor looks for the answer for a few microseconds
//! (a fast plugin has answered by then, and no thread sleeps and wakes on the way) and otherwise
//! awaits it with a timeout.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use actix::prelude::*;
use ballast_core::plugin::{Command, PluginEvent};
use tokio::sync::oneshot::error::TryRecvError;

use crate::error::{CallError, HostError};
use crate::host::PluginHost;
use crate::slot::EventSink;
use crate::stream::{CallOptions, CancelReason, CancelToken};

/// A plugin event, as sent to subscribers.
#[derive(Clone, Debug, Message)]
#[rtype(result = "()")]
pub struct HostEvent(pub PluginEvent);

/// Subscribe to plugin events.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Subscribe(pub Recipient<HostEvent>);

/// Execute a scaler or operator command (enable, disable, set a level or a concurrency limit,
/// suspend, resume), on the plugin's lifecycle thread; the reply says whether it worked.
#[derive(Debug, Message)]
#[rtype(result = "Result<(), HostError>")]
pub struct Execute(pub Command);

/// Take a checkpoint of a running plugin without stopping it ([`PluginHost::take_checkpoint`]),
/// on its lifecycle thread, after the commands queued before it; the reply is when the kept
/// checkpoint was taken, or `None` when there was none to take.
#[derive(Debug, Message)]
#[rtype(result = "Result<Option<ballast_core::Timestamp>, HostError>")]
pub struct TakeCheckpoint(pub String);

/// Call a plugin. The answer comes within the call's deadline (its options' `deadline`, capped
/// by the plugin's `call_timeout`), or [`CallError::Timeout`] does and the call is cancelled for
/// the plugin; a call cancelled through its options' token answers [`CallError::Cancelled`] at
/// once, whether the plugin stops or not.
#[derive(Debug, Message)]
#[rtype(result = "Result<Vec<u8>, CallError>")]
pub struct Call {
    /// The plugin.
    pub plugin: String,
    /// The request bytes.
    pub request: Vec<u8>,
    /// A deadline, a cancellation, where the chunks go; `None` for a plain call (the plugin's
    /// plain entry, no deadline or cancellation for it to see).
    pub options: Option<CallOptions>,
}

/// Call a plugin that may have to load first: a call that woke an idle plugin waits in its
/// wake queue, at most its `load_timeout`, then as long as any call (its `call_timeout`); a
/// deadline in its options counts from the submission, the load included.
#[derive(Debug, Message)]
#[rtype(result = "Result<Vec<u8>, CallError>")]
pub struct CallWhenReady {
    /// The plugin.
    pub plugin: String,
    /// The request bytes.
    pub request: Vec<u8>,
    /// As for [`Call`].
    pub options: Option<CallOptions>,
}

type LifecycleJob = Box<dyn FnOnce() + Send>;

/// The actor around a [`PluginHost`].
pub struct PluginHostActor {
    host: Arc<PluginHost>,
    subscribers: Arc<RwLock<Vec<Recipient<HostEvent>>>>,
    lifecycles: HashMap<String, crossbeam_channel::Sender<LifecycleJob>>,
    stats_interval: Duration,
}

impl PluginHostActor {
    /// An actor around a host built by `make_host`, which receives the event sink to pass to
    /// [`PluginHost::new`]. Stats and health are polled every `stats_interval`.
    pub fn new(make_host: impl FnOnce(EventSink) -> PluginHost, stats_interval: Duration) -> Self {
        let subscribers: Arc<RwLock<Vec<Recipient<HostEvent>>>> = Arc::default();
        let sink_subscribers = Arc::clone(&subscribers);
        let host = make_host(Arc::new(move |event: PluginEvent| {
            for s in sink_subscribers
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .iter()
            {
                s.do_send(HostEvent(event.clone()));
            }
        }));
        PluginHostActor {
            host: Arc::new(host),
            subscribers,
            lifecycles: HashMap::new(),
            stats_interval,
        }
    }

    /// The host, for read-only use by the daemon (status pages).
    pub fn host(&self) -> Arc<PluginHost> {
        Arc::clone(&self.host)
    }

    /// Runs `job` on `plugin`'s lifecycle thread, after every job queued before it.
    fn on_lifecycle<T: Send + 'static>(
        &mut self,
        plugin: &str,
        job: impl FnOnce(&PluginHost) -> Result<T, HostError> + Send + 'static,
    ) -> ResponseFuture<Result<T, HostError>> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let host = Arc::clone(&self.host);
        let boxed: LifecycleJob = Box::new(move || {
            let _ = tx.send(job(&host));
        });
        let sender = self.lifecycles.entry(plugin.to_owned()).or_insert_with(|| {
            let (sender, receiver) = crossbeam_channel::unbounded::<LifecycleJob>();
            let spawned = std::thread::Builder::new()
                .name(format!("lifecycle-{plugin}"))
                .spawn(move || {
                    while let Ok(job) = receiver.recv() {
                        job();
                    }
                });
            if let Err(error) = spawned {
                tracing::error!(%plugin, %error, "cannot start lifecycle thread");
            }
            sender
        });
        let plugin = plugin.to_owned();
        if sender.send(boxed).is_err() {
            return Box::pin(async move {
                Err(HostError::Config {
                    problems: vec![format!(
                        "plugin `{plugin}`: lifecycle thread is not running"
                    )],
                })
            });
        }
        Box::pin(async move {
            rx.await.unwrap_or_else(|_| {
                Err(HostError::Config {
                    problems: vec![format!("plugin `{plugin}`: lifecycle job was dropped")],
                })
            })
        })
    }
}

impl Actor for PluginHostActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.run_interval(self.stats_interval, |actor, _ctx| {
            let host = Arc::clone(&actor.host);
            // Health and stats call into plugins: keep them off the actor's thread.
            tokio::task::spawn_blocking(move || {
                for name in host.names() {
                    if let Err(error) = host.check_health(&name) {
                        tracing::warn!(plugin = %name, %error, "health check failed");
                    }
                    let _ = host.refresh_stats(&name);
                }
            });
        });
    }
}

impl Handler<Subscribe> for PluginHostActor {
    type Result = ();

    fn handle(&mut self, msg: Subscribe, _ctx: &mut Self::Context) {
        self.subscribers
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .push(msg.0);
    }
}

impl Handler<Execute> for PluginHostActor {
    type Result = ResponseFuture<Result<(), HostError>>;

    fn handle(&mut self, msg: Execute, _ctx: &mut Self::Context) -> Self::Result {
        let plugin = msg.0.plugin().to_owned();
        self.on_lifecycle(&plugin, move |host| match msg.0 {
            Command::Enable {
                plugin,
                level,
                reason,
            } => host.enable(&plugin, level, &reason),
            Command::Disable { plugin, reason } => host.disable(&plugin, &reason),
            Command::Unload {
                plugin,
                idle_since,
                reason,
            } => host.unload(&plugin, &reason, idle_since),
            Command::SetLevel {
                plugin,
                level,
                reason,
            } => host.set_level(&plugin, level, &reason),
            Command::Suspend { plugin, reason } => host.suspend(&plugin, &reason),
            Command::Resume { plugin, reason } => host.resume(&plugin, &reason),
            Command::SetConcurrency {
                plugin,
                limit,
                reason,
            } => {
                let applied = host.set_concurrency(&plugin, limit)?;
                tracing::info!(%plugin, limit = applied, %reason, "concurrency limit changed");
                Ok(())
            }
        })
    }
}

impl Handler<TakeCheckpoint> for PluginHostActor {
    type Result = ResponseFuture<Result<Option<ballast_core::Timestamp>, HostError>>;

    fn handle(&mut self, msg: TakeCheckpoint, _ctx: &mut Self::Context) -> Self::Result {
        let plugin = msg.0;
        let name = plugin.clone();
        self.on_lifecycle(&name, move |host| host.take_checkpoint(&plugin))
    }
}

impl Handler<Call> for PluginHostActor {
    type Result = ResponseFuture<Result<Vec<u8>, CallError>>;

    fn handle(&mut self, msg: Call, _ctx: &mut Self::Context) -> Self::Result {
        let (tx, mut rx) = tokio::sync::oneshot::channel();
        let reply: crate::slot::Reply = Box::new(move |result| {
            let _ = tx.send(result);
        });
        let call_timeout = self
            .host
            .call_timeout(&msg.plugin)
            .unwrap_or(Duration::from_secs(5));
        let (submitted, cancel, timeout) = match msg.options {
            None => (
                self.host.submit(&msg.plugin, msg.request, reply),
                None,
                call_timeout,
            ),
            Some(options) => {
                let cancel = options.cancel.clone();
                let timeout = options
                    .deadline
                    .map_or(call_timeout, |d| d.min(call_timeout));
                (
                    self.host
                        .submit_with(&msg.plugin, msg.request, options, reply),
                    Some(cancel),
                    timeout,
                )
            }
        };
        if let Err(refused) = submitted {
            return Box::pin(std::future::ready(Err(refused)));
        }
        if let Some(answer) = answer_within(&mut rx, ANSWER_WAIT) {
            return Box::pin(std::future::ready(
                answer.unwrap_or_else(|_| Err(worker_stopped(msg.plugin))),
            ));
        }
        let host = Arc::clone(&self.host);
        Box::pin(async move {
            match await_answer(rx, cancel.as_ref(), timeout).await {
                Awaited::Answer(result) => result,
                Awaited::WorkerStopped => Err(worker_stopped(msg.plugin)),
                Awaited::TimedOut => Err(host.timed_out(&msg.plugin, timeout)),
                Awaited::Cancelled(reason) => Err(CallError::Cancelled {
                    plugin: msg.plugin,
                    reason,
                }),
            }
        })
    }
}

impl Handler<CallWhenReady> for PluginHostActor {
    type Result = ResponseFuture<Result<Vec<u8>, CallError>>;

    fn handle(&mut self, msg: CallWhenReady, _ctx: &mut Self::Context) -> Self::Result {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let reply: crate::slot::Reply = Box::new(move |result| {
            let _ = tx.send(result);
        });
        let deadline = msg.options.as_ref().and_then(|o| o.deadline);
        let cancel = msg.options.as_ref().map(|o| o.cancel.clone());
        let submitted = match msg.options {
            None => self.host.submit_when_ready(&msg.plugin, msg.request, reply),
            Some(options) => {
                self.host
                    .submit_when_ready_with(&msg.plugin, msg.request, options, reply)
            }
        };
        let host = Arc::clone(&self.host);
        Box::pin(async move {
            let waiting = submitted?;
            let call_timeout = host
                .call_timeout(&msg.plugin)
                .unwrap_or(Duration::from_secs(5));
            let load_timeout = host
                .load_timeout(&msg.plugin)
                .unwrap_or(Duration::from_secs(60));
            let wait = match waiting {
                None => call_timeout,
                Some(_) => load_timeout + call_timeout,
            };
            let wait = deadline.map_or(wait, |d| d.min(wait));
            match await_answer(rx, cancel.as_ref(), wait).await {
                Awaited::Answer(result) => result,
                Awaited::WorkerStopped => Err(worker_stopped(msg.plugin)),
                Awaited::Cancelled(reason) => {
                    if let Some(id) = waiting {
                        host.cancel_waiting(&msg.plugin, id);
                    }
                    Err(CallError::Cancelled {
                        plugin: msg.plugin,
                        reason,
                    })
                }
                // Still in the wake queue: the plugin never came up in time.
                Awaited::TimedOut
                    if waiting.is_some_and(|id| host.cancel_waiting(&msg.plugin, id))
                        && deadline.is_none_or(|d| d >= load_timeout) =>
                {
                    Err(CallError::LoadTimeout {
                        plugin: msg.plugin,
                        timeout_ms: u64::try_from(load_timeout.as_millis()).unwrap_or(u64::MAX),
                    })
                }
                Awaited::TimedOut => Err(host.timed_out(&msg.plugin, wait)),
            }
        })
    }
}

/// How a wait for a call's answer ended.
enum Awaited {
    /// The worker answered.
    Answer(Result<Vec<u8>, CallError>),
    /// The worker dropped the reply without answering.
    WorkerStopped,
    /// The wait ran out; the call was cancelled for its deadline.
    TimedOut,
    /// The call was cancelled (by its caller, or by a drain past its deadline) before it
    /// answered; whatever it answers later is dropped.
    Cancelled(CancelReason),
}

/// Waits for the answer in `rx`, at most `timeout`, or until `cancel` is cancelled. A wait that
/// runs out cancels the call for its deadline, so the plugin learns of it.
async fn await_answer(
    rx: tokio::sync::oneshot::Receiver<Answer>,
    cancel: Option<&CancelToken>,
    timeout: Duration,
) -> Awaited {
    let (cancelled_tx, cancelled_rx) = tokio::sync::oneshot::channel();
    // Held while waiting; dropped with this future, it takes its wake off the token.
    let _hook = cancel.map(|token| {
        let reason_of = token.clone();
        token.on_cancel(move || {
            if let Some(reason) = reason_of.reason() {
                let _ = cancelled_tx.send(reason);
            }
        })
    });
    let cancelled = async move {
        match cancelled_rx.await {
            Ok(reason) => reason,
            // No token: never cancelled.
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        biased;
        answer = rx => match answer {
            // The plugin's side saw the deadline first: the same end as the wait's.
            Ok(Err(CallError::Cancelled {
                reason: CancelReason::Deadline,
                ..
            })) => Awaited::TimedOut,
            Ok(result) => Awaited::Answer(result),
            Err(_) => Awaited::WorkerStopped,
        },
        reason = cancelled => match reason {
            CancelReason::Deadline => Awaited::TimedOut,
            reason => Awaited::Cancelled(reason),
        },
        () = tokio::time::sleep(timeout) => {
            if let Some(token) = cancel {
                token.cancel(CancelReason::Deadline);
            }
            Awaited::TimedOut
        }
    }
}

/// How long the actor looks for a call's answer on its own thread before it awaits it. A fast
/// plugin answers within a few microseconds; parking the actor's thread and waking it again when
/// the answer comes (an epoll wait, an eventfd write, a timer set and cancelled) costs several
/// times that on a busy machine. A slow call holds the actor's thread this long, no longer.
const ANSWER_WAIT: Duration = Duration::from_micros(20);

type Answer = Result<Vec<u8>, CallError>;

/// The answer, or [`TryRecvError::Closed`] if the worker dropped it, if either comes within
/// `wait`.
fn answer_within(
    rx: &mut tokio::sync::oneshot::Receiver<Answer>,
    wait: Duration,
) -> Option<Result<Answer, TryRecvError>> {
    let until = Instant::now() + wait;
    loop {
        match rx.try_recv() {
            Ok(answer) => return Some(Ok(answer)),
            Err(TryRecvError::Closed) => return Some(Err(TryRecvError::Closed)),
            Err(TryRecvError::Empty) => {}
        }
        if Instant::now() >= until {
            return None;
        }
        // The worker may be waiting for this CPU (see `queue.rs`).
        std::thread::yield_now();
    }
}

fn worker_stopped(plugin: String) -> CallError {
    CallError::Failed {
        plugin,
        message: "the call worker stopped before answering".to_owned(),
    }
}
