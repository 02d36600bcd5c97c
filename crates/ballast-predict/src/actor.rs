//! The [`PredictorActor`]: the thin actix shell around [`Predictor`]. A sample in, the
//! assessment out to every subscriber. It reads no clock: time is each sample's own timestamp.

use actix::{Actor, Context, Handler, Message, Recipient};
use ballast_core::{Assessment, Sample};

use crate::predictor::Predictor;

/// A sample from the monitor. `From<Sample>`, so the monitor can deliver straight to
/// `PredictorActor::recipient::<SampleMsg>()`.
#[derive(Clone, Debug, Message)]
#[rtype(result = "()")]
pub struct SampleMsg(pub Sample);

impl From<Sample> for SampleMsg {
    fn from(sample: Sample) -> Self {
        SampleMsg(sample)
    }
}

type Subscriber = Box<dyn Fn(&Assessment) -> bool + Send>;

/// Subscribes to every assessment the actor makes.
#[derive(Message)]
#[rtype(result = "()")]
pub struct SubscribeAssessments(Subscriber);

impl SubscribeAssessments {
    /// Delivers each assessment to `recipient` as its own message type `M` (made with
    /// `M::from(assessment)`), so that the receiving crate needs nothing from this one. A
    /// recipient whose actor stopped is dropped.
    pub fn new<M>(recipient: Recipient<M>) -> Self
    where
        M: Message<Result = ()> + From<Assessment> + Send + 'static,
    {
        SubscribeAssessments(Box::new(move |assessment: &Assessment| {
            if !recipient.connected() {
                return false;
            }
            recipient.do_send(M::from(assessment.clone()));
            true
        }))
    }

    /// Calls `callback` with each assessment until it returns `false` (for wiring a message type
    /// that does not implement `From<Assessment>`).
    pub fn callback(callback: impl Fn(&Assessment) -> bool + Send + 'static) -> Self {
        SubscribeAssessments(Box::new(callback))
    }
}

impl std::fmt::Debug for SubscribeAssessments {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SubscribeAssessments(..)")
    }
}

/// Runs a [`Predictor`]: every [`SampleMsg`] is assessed and the [`Assessment`] published to
/// the subscribers, in order. The work per sample is a few microseconds, so it runs inline.
pub struct PredictorActor {
    predictor: Predictor,
    subscribers: Vec<Subscriber>,
}

impl PredictorActor {
    /// An actor around `predictor`, with no subscribers yet.
    pub fn new(predictor: Predictor) -> Self {
        PredictorActor {
            predictor,
            subscribers: Vec::new(),
        }
    }

    fn assess(&mut self, sample: &Sample) {
        let assessment = self.predictor.handle_sample(sample);
        self.subscribers.retain(|deliver| deliver(&assessment));
    }
}

impl Actor for PredictorActor {
    type Context = Context<Self>;
}

impl Handler<SampleMsg> for PredictorActor {
    type Result = ();

    fn handle(&mut self, message: SampleMsg, _: &mut Context<Self>) {
        self.assess(&message.0);
    }
}

impl Handler<SubscribeAssessments> for PredictorActor {
    type Result = ();

    fn handle(&mut self, message: SubscribeAssessments, _: &mut Context<Self>) {
        self.subscribers.push(message.0);
    }
}
