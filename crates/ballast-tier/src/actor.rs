//! The [`TierActor`]: detects the facts at start, classifies them, answers for the tier and
//! publishes it to its subscribers.

use std::time::SystemTime;

use actix::{Actor, Context, Handler, Message, MessageResult, Recipient};
use ballast_core::Timestamp;
use ballast_core::tier::{HardwareFacts, Tier};

use crate::classify::classify;
use crate::config::TierConfig;

/// Something that detects the machine's facts (the daemon wires the monitor's detection in;
/// tests use fixed facts).
pub trait DetectFacts: 'static {
    /// Detects the facts now, or says why it could not.
    fn detect(&mut self) -> Result<HardwareFacts, String>;
}

impl<F> DetectFacts for F
where
    F: FnMut() -> Result<HardwareFacts, String> + 'static,
{
    fn detect(&mut self) -> Result<HardwareFacts, String> {
        self()
    }
}

/// Asks for the tier (`None` when detection failed at start).
#[derive(Clone, Copy, Debug, Default, Message)]
#[rtype(result = "Option<Tier>")]
pub struct CurrentTier;

type Subscriber = Box<dyn Fn(&Tier) -> bool + Send>;

/// Subscribes to the tier, which is delivered at once when it is known. Detection runs once, when
/// the actor starts: a subscriber added with [`TierActor::with_subscriber`] gets the tier then,
/// one subscribed later gets it with this message, and none gets one when detection failed.
#[derive(Message)]
#[rtype(result = "()")]
pub struct SubscribeTier(Subscriber);

impl SubscribeTier {
    /// Delivers each tier to `recipient` as its own message type `M`, made with `M::from(tier)`.
    pub fn new<M>(recipient: Recipient<M>) -> Self
    where
        M: Message<Result = ()> + From<Tier> + Send + 'static,
    {
        SubscribeTier(Box::new(move |tier: &Tier| {
            if !recipient.connected() {
                return false;
            }
            recipient.do_send(M::from(tier.clone()));
            true
        }))
    }

    /// Calls `callback` with each tier until it returns `false`.
    pub fn callback(callback: impl Fn(&Tier) -> bool + Send + 'static) -> Self {
        SubscribeTier(Box::new(callback))
    }
}

impl std::fmt::Debug for SubscribeTier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SubscribeTier(..)")
    }
}

/// Detects and classifies the machine once, at start, and holds the tier.
pub struct TierActor {
    config: TierConfig,
    detector: Box<dyn DetectFacts>,
    clock: Box<dyn Fn() -> Timestamp>,
    current: Option<Tier>,
    subscribers: Vec<Subscriber>,
}

impl TierActor {
    /// An actor classifying by `config` (which should be valid) what `detector` finds.
    pub fn new(config: TierConfig, detector: impl DetectFacts) -> Self {
        TierActor {
            config,
            detector: Box::new(detector),
            clock: Box::new(system_now),
            current: None,
            subscribers: Vec::new(),
        }
    }

    /// Stamps detections with `clock` instead of the system clock.
    pub fn with_clock(mut self, clock: impl Fn() -> Timestamp + 'static) -> Self {
        self.clock = Box::new(clock);
        self
    }

    /// Adds a subscriber before the actor starts, so that it gets the tier as soon as it is
    /// detected.
    pub fn with_subscriber(mut self, subscribe: SubscribeTier) -> Self {
        self.subscribers.push(subscribe.0);
        self
    }

    fn detect(&mut self) {
        let facts = match self.detector.detect() {
            Ok(facts) => facts,
            Err(reason) => {
                tracing::warn!(%reason, "hardware detection failed; no tier");
                return;
            }
        };
        let tier = classify(&facts, &self.config, (self.clock)());
        tracing::info!(tier = %tier.name, rule = %tier.rule, "hardware tier");
        self.subscribers.retain(|deliver| deliver(&tier));
        self.current = Some(tier);
    }
}

fn system_now() -> Timestamp {
    let millis = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    Timestamp::from_millis(millis)
}

impl Actor for TierActor {
    type Context = Context<Self>;

    fn started(&mut self, _ctx: &mut Self::Context) {
        self.detect();
    }
}

impl Handler<CurrentTier> for TierActor {
    type Result = MessageResult<CurrentTier>;

    fn handle(&mut self, _msg: CurrentTier, _ctx: &mut Self::Context) -> Self::Result {
        MessageResult(self.current.clone())
    }
}

impl Handler<SubscribeTier> for TierActor {
    type Result = ();

    fn handle(&mut self, msg: SubscribeTier, _ctx: &mut Self::Context) {
        if let Some(tier) = &self.current
            && !(msg.0)(tier)
        {
            return;
        }
        self.subscribers.push(msg.0);
    }
}
