//! The [`MonitorActor`]: samples on a tick and on a pressure trigger, and publishes each sample
//! to its subscribers.

use std::time::{Duration, SystemTime};

use actix::{Actor, AsyncContext, Context, Handler, Message, Recipient};
use ballast_core::{PluginUsage, Sample, Timestamp};

use crate::monitor::Monitor;
use crate::trigger::{PsiTrigger, TriggerSource, Wake, WakeSink};

/// A trigger's wake-up is a message to the actor: sampling stays on the actor's thread.
impl Message for Wake {
    type Result = ();
}

/// The actor's own address is where its trigger delivers.
impl WakeSink for Recipient<Wake> {
    fn wake(&self, wake: Wake) {
        self.do_send(wake);
    }

    fn is_listening(&self) -> bool {
        self.connected()
    }
}

/// What the host measured of one plugin; later samples carry the latest figures of every plugin.
#[derive(Clone, Debug, Message)]
#[rtype(result = "()")]
pub struct ReportPluginUsage(pub PluginUsage);

type Subscriber = Box<dyn Fn(&Sample) -> bool + Send>;

/// Subscribes to every published sample.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Subscribe(Subscriber);

impl Subscribe {
    /// Delivers each sample to `recipient` as its own message type `M` (made with
    /// `M::from(sample)`), so that the receiving crate needs nothing from this one. A recipient
    /// whose actor stopped is dropped.
    pub fn new<M>(recipient: Recipient<M>) -> Self
    where
        M: Message<Result = ()> + From<Sample> + Send + 'static,
    {
        Subscribe(Box::new(move |sample: &Sample| {
            if !recipient.connected() {
                return false;
            }
            recipient.do_send(M::from(sample.clone()));
            true
        }))
    }

    /// Calls `callback` with each sample until it returns `false`.
    pub fn callback(callback: impl Fn(&Sample) -> bool + Send + 'static) -> Self {
        Subscribe(Box::new(callback))
    }
}

impl std::fmt::Debug for Subscribe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Subscribe(..)")
    }
}

/// Samples the machine every `interval` (1 s by default) and immediately when the pressure
/// trigger fires, and publishes each sample to its subscribers.
///
/// Sampling runs inline on the actor's thread: it costs tens of microseconds without a GPU. With
/// NVML it may take milliseconds per device.
pub struct MonitorActor {
    monitor: Monitor,
    interval: Duration,
    trigger: Option<Box<dyn TriggerSource>>,
    clock: Box<dyn Fn() -> Timestamp>,
    subscribers: Vec<Subscriber>,
}

impl MonitorActor {
    /// An actor around `monitor` with the defaults: a 1 s tick, the PSI memory trigger on the
    /// monitor's `pressure/memory`, and the system clock.
    pub fn new(monitor: Monitor) -> Self {
        let trigger = PsiTrigger::memory(monitor.config().proc_root.join("pressure/memory"));
        MonitorActor {
            monitor,
            interval: Duration::from_secs(1),
            trigger: Some(Box::new(trigger)),
            clock: Box::new(system_now),
            subscribers: Vec::new(),
        }
    }

    /// Samples every `interval` instead.
    pub fn with_interval(mut self, interval: Duration) -> Self {
        self.interval = interval.max(Duration::from_millis(1));
        self
    }

    /// Uses `trigger` for out-of-tick wake-ups instead of the PSI memory trigger.
    pub fn with_trigger(mut self, trigger: impl TriggerSource) -> Self {
        self.trigger = Some(Box::new(trigger));
        self
    }

    /// Stamps samples with `clock` instead of the system clock.
    pub fn with_clock(mut self, clock: impl Fn() -> Timestamp + 'static) -> Self {
        self.clock = Box::new(clock);
        self
    }

    /// Adds a subscriber before the actor starts, so that it also gets the first sample.
    pub fn with_subscriber(mut self, subscribe: Subscribe) -> Self {
        self.subscribers.push(subscribe.0);
        self
    }

    fn take_and_publish(&mut self) {
        let sample = self.monitor.sample((self.clock)());
        self.subscribers.retain(|deliver| deliver(&sample));
    }
}

/// Milliseconds since the epoch by the system clock.
fn system_now() -> Timestamp {
    let millis = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    Timestamp::from_millis(millis)
}

impl Actor for MonitorActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        if let Some(trigger) = self.trigger.take() {
            let sink: Recipient<Wake> = ctx.address().recipient();
            match trigger.start(Box::new(sink)) {
                Ok(()) => tracing::info!("memory pressure trigger armed"),
                Err(reason) => {
                    tracing::info!(%reason, "no memory pressure trigger; sampling on the tick only");
                }
            }
        }
        self.take_and_publish();
        ctx.run_interval(self.interval, |actor, _ctx| {
            actor.take_and_publish();
        });
    }
}

impl Handler<Wake> for MonitorActor {
    type Result = ();

    fn handle(&mut self, wake: Wake, _ctx: &mut Self::Context) {
        tracing::debug!(?wake, "woken outside the tick");
        self.take_and_publish();
    }
}

impl Handler<ReportPluginUsage> for MonitorActor {
    type Result = ();

    fn handle(&mut self, msg: ReportPluginUsage, _ctx: &mut Self::Context) {
        self.monitor.report_plugin_usage(msg.0);
    }
}

impl Handler<Subscribe> for MonitorActor {
    type Result = ();

    fn handle(&mut self, msg: Subscribe, _ctx: &mut Self::Context) {
        self.subscribers.push(msg.0);
    }
}
