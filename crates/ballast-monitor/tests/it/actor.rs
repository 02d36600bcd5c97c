//! The MonitorActor on tokio's paused clock: the tick, the pressure trigger (which must not
//! wait for the tick), plugin usage carried by the next sample and the fallback when triggers
//! are not permitted.

use std::time::Duration;

use actix::{Actor, Message};
use ballast_core::{PluginUsage, Sample, Timestamp};
use ballast_monitor::{
    ManualTrigger, Monitor, MonitorActor, PsiTrigger, ReportPluginUsage, Subscribe,
};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::machine::FakeMachine;

/// A subscriber's own message type, as another crate would define it.
#[derive(Message)]
#[rtype(result = "()")]
struct Observed(Sample);

impl From<Sample> for Observed {
    fn from(sample: Sample) -> Self {
        Observed(sample)
    }
}

struct Collector(mpsc::UnboundedSender<Sample>);

impl Actor for Collector {
    type Context = actix::Context<Self>;
}

impl actix::Handler<Observed> for Collector {
    type Result = ();
    fn handle(&mut self, msg: Observed, _ctx: &mut Self::Context) {
        let _ = self.0.send(msg.0);
    }
}

fn channel_subscriber() -> (Subscribe, mpsc::UnboundedReceiver<Sample>) {
    let (tx, rx) = mpsc::unbounded_channel();
    (Subscribe::callback(move |s| tx.send(s.clone()).is_ok()), rx)
}

fn fixed_clock() -> Timestamp {
    Timestamp::from_secs(1_000)
}

#[actix::test]
async fn publishes_a_sample_at_start_and_on_every_tick() {
    tokio::time::pause();
    let machine = FakeMachine::new();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let collector = Collector(tx).start();
    let actor = MonitorActor::new(Monitor::new(machine.config()))
        .with_interval(Duration::from_secs(1))
        .with_trigger(ballast_monitor::NoTrigger)
        .with_clock(fixed_clock)
        .with_subscriber(Subscribe::new(collector.recipient::<Observed>()));
    let _addr = actor.start();
    let start = Instant::now();
    for _ in 0..4 {
        let sample = rx.recv().await.unwrap();
        assert_eq!(sample.at, fixed_clock());
    }
    // One sample at start, then one per tick: three ticks, three (virtual) seconds. The paused
    // clock rounds timers up to the next millisecond, hence the range.
    let elapsed = Instant::now() - start;
    assert!(
        elapsed >= Duration::from_secs(3) && elapsed < Duration::from_secs(4),
        "{elapsed:?}"
    );
}

#[actix::test]
async fn a_pressure_trigger_publishes_without_waiting_for_the_tick() {
    tokio::time::pause();
    let machine = FakeMachine::new();
    let (trigger, handle) = ManualTrigger::new();
    let (subscribe, mut rx) = channel_subscriber();
    let interval = Duration::from_secs(3600);
    let _addr = MonitorActor::new(Monitor::new(machine.config()))
        .with_interval(interval)
        .with_trigger(trigger)
        .with_clock(fixed_clock)
        .with_subscriber(subscribe)
        .start();
    let start = Instant::now();
    // The first sample is published after the trigger was armed.
    rx.recv().await.unwrap();
    machine.write(
        "proc/pressure/memory",
        "some avg10=80.00 avg60=20.00 avg300=5.00 total=99999\nfull avg10=60.00 avg60=10.00 avg300=2.00 total=5000\n",
    );
    assert!(handle.fire());
    let sample = rx.recv().await.unwrap();
    assert_eq!(sample.psi.memory.value().unwrap().some.avg10, 80.0);
    // The clock is paused and advances only when everything waits: had the sample come from the
    // tick, an hour would have passed.
    assert!(Instant::now() - start < interval);
}

#[actix::test]
async fn reported_plugin_usage_is_carried_by_the_next_sample() {
    tokio::time::pause();
    let machine = FakeMachine::new();
    let (subscribe, mut rx) = channel_subscriber();
    let addr = MonitorActor::new(Monitor::new(machine.config()))
        .with_interval(Duration::from_secs(1))
        .with_trigger(ballast_monitor::NoTrigger)
        .with_clock(fixed_clock)
        .with_subscriber(subscribe)
        .start();
    let first = rx.recv().await.unwrap();
    assert!(first.plugins.is_empty(), "{:?}", first.plugins);
    // The report is handled before the next tick: the paused clock advances only once the
    // actor waits for its timer.
    for (plugin, live_bytes) in [("voice", 10), ("android", 5), ("voice", 30)] {
        addr.send(ReportPluginUsage(PluginUsage {
            plugin: plugin.into(),
            live_bytes,
            peak_bytes: 40,
            ..PluginUsage::default()
        }))
        .await
        .unwrap();
    }
    let next = rx.recv().await.unwrap();
    // One entry per plugin, the latest report of each, in name order.
    let seen: Vec<(&str, u64)> = next
        .plugins
        .iter()
        .map(|p| (p.plugin.as_str(), p.live_bytes))
        .collect();
    assert_eq!(seen, [("android", 5), ("voice", 30)]);
    assert!(next.plugins.iter().all(|p| p.peak_bytes == 40));
}

#[actix::test]
async fn falls_back_to_the_tick_where_triggers_are_not_permitted() {
    tokio::time::pause();
    let machine = FakeMachine::new();
    let (subscribe, mut rx) = channel_subscriber();
    // No such file: the trigger cannot be armed, and the monitor keeps its tick.
    let trigger = PsiTrigger::memory(machine.path("proc/pressure/missing"));
    let _addr = MonitorActor::new(Monitor::new(machine.config()))
        .with_interval(Duration::from_secs(2))
        .with_trigger(trigger)
        .with_clock(fixed_clock)
        .with_subscriber(subscribe)
        .start();
    let start = Instant::now();
    rx.recv().await.unwrap();
    rx.recv().await.unwrap();
    let elapsed = Instant::now() - start;
    assert!(
        elapsed >= Duration::from_secs(2) && elapsed < Duration::from_secs(3),
        "{elapsed:?}"
    );
}
