//! The PredictorActor's message round trip: samples in, assessments out to subscribers.

use std::sync::{Arc, Mutex};

use ballast_core::{CpuReading, Metric, Resource, Sample, Timestamp};
use ballast_predict::{
    AssessSample, Predictor, PredictorActor, PredictorConfig, SampleMsg, SubscribeAssessments,
};

use actix::Actor;

fn cpu_sample(seconds: u64, utilization: f64) -> Sample {
    let mut sample = Sample::unavailable(Timestamp::from_secs(seconds), "test");
    sample.cpu = Metric::available(CpuReading {
        utilization,
        load_average: [0.0; 3],
        cores: 4,
    });
    sample
}

#[actix::test]
async fn samples_in_assessments_out_in_order() {
    let actor = PredictorActor::new(Predictor::new(PredictorConfig::default())).start();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&seen);
    actor.do_send(SubscribeAssessments::callback(move |a| {
        sink.lock().expect("not poisoned").push(a.clone());
        true
    }));
    for second in 0..5 {
        actor.do_send(SampleMsg::from(cpu_sample(second, 0.5)));
    }
    // The mailbox is ordered: once this answer arrives, every sample before it was assessed.
    let last = actor
        .send(AssessSample(cpu_sample(5, 0.8)))
        .await
        .expect("the actor is running");
    assert_eq!(last.at, Timestamp::from_secs(5));
    let cpu = last.get(Resource::Cpu).expect("cpu was measured");
    assert_eq!(cpu.value, 0.8);
    assert!((cpu.smoothed - 0.71).abs() < 1e-12);
    assert!(last.get(Resource::Memory).is_none());

    let seen = seen.lock().expect("not poisoned");
    let times: Vec<u64> = seen.iter().map(|a| a.at.as_millis() / 1000).collect();
    assert_eq!(times, vec![0, 1, 2, 3, 4, 5]);
    assert_eq!(seen.last(), Some(&last));
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
    for second in 0..3 {
        actor
            .send(AssessSample(cpu_sample(second, 0.1)))
            .await
            .expect("the actor is running");
    }
    assert_eq!(*calls.lock().expect("not poisoned"), 1);
}
