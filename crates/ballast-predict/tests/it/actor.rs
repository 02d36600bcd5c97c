//! The PredictorActor's message round trip: samples in, assessments out to subscribers.

use std::sync::{Arc, Mutex};

use ballast_core::{Assessment, CpuReading, Metric, Resource, Sample, Timestamp};
use ballast_predict::{
    Predictor, PredictorActor, PredictorConfig, SampleMsg, SubscribeAssessments,
};
use tokio::sync::mpsc;

use actix::Actor;

fn cpu_sample(seconds: u64, utilization: f64) -> Sample {
    let mut sample = Sample::unavailable(Timestamp::from_secs(seconds), "test");
    sample.cpu = Metric::available(CpuReading {
        utilization,
        load_average: [0.0; 3],
        cores: 4,
        quota: None,
    });
    sample
}

fn channel_subscriber() -> (SubscribeAssessments, mpsc::UnboundedReceiver<Assessment>) {
    let (tx, rx) = mpsc::unbounded_channel();
    (
        SubscribeAssessments::callback(move |a| tx.send(a.clone()).is_ok()),
        rx,
    )
}

#[actix::test]
async fn samples_in_assessments_out_in_order() {
    let actor = PredictorActor::new(Predictor::new(PredictorConfig::default())).start();
    let (subscribe, mut rx) = channel_subscriber();
    actor.do_send(subscribe);
    for second in 0..5 {
        actor.do_send(SampleMsg::from(cpu_sample(second, 0.5)));
    }
    actor.do_send(SampleMsg::from(cpu_sample(5, 0.8)));
    let mut seen = Vec::new();
    for _ in 0..6 {
        seen.push(rx.recv().await.expect("the actor is running"));
    }
    let times: Vec<u64> = seen.iter().map(|a| a.at.as_millis() / 1000).collect();
    assert_eq!(times, vec![0, 1, 2, 3, 4, 5]);

    let last = seen.last().expect("six assessments");
    let cpu = last.get(Resource::Cpu).expect("cpu was measured");
    assert_eq!(cpu.value, 0.8);
    // EMA with weight 0.7 on the newest value: 0.5 + 0.7 * (0.8 - 0.5).
    assert!((cpu.smoothed - 0.71).abs() < 1e-12);
    assert!(last.get(Resource::Memory).is_none());
}

#[actix::test]
async fn a_subscriber_that_declines_is_dropped() {
    let actor = PredictorActor::new(Predictor::new(PredictorConfig::default())).start();
    let calls = Arc::new(Mutex::new(0));
    let counter = Arc::clone(&calls);
    actor.do_send(SubscribeAssessments::callback(move |_| {
        *counter.lock().expect("not poisoned") += 1;
        false
    }));
    // A second subscriber says when each assessment has been delivered.
    let (subscribe, mut rx) = channel_subscriber();
    actor.do_send(subscribe);
    for second in 0..3 {
        actor.do_send(SampleMsg::from(cpu_sample(second, 0.1)));
    }
    for _ in 0..3 {
        rx.recv().await.expect("the actor is running");
    }
    assert_eq!(*calls.lock().expect("not poisoned"), 1);
}
