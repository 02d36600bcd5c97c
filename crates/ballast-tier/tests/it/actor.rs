//! The TierActor: detects once at start, publishes to the subscribers it started with, answers
//! for the tier and hands it to later subscribers at once.

use std::sync::{Arc, Mutex};

use actix::Actor;
use ballast_core::Timestamp;
use ballast_core::tier::Tier;
use ballast_tier::{CurrentTier, SubscribeTier, TierActor, TierConfig};
use tokio::sync::mpsc;

use crate::classify::facts;

#[actix::test]
async fn detects_at_start_and_tells_every_subscriber() {
    let detections = Arc::new(Mutex::new(0));
    let counter = Arc::clone(&detections);
    let detector = move || {
        *counter.lock().unwrap() += 1;
        Ok(facts(32, 8, Some(24)))
    };
    let (tx, mut rx) = mpsc::unbounded_channel::<Tier>();
    let addr = TierActor::new(TierConfig::default(), detector)
        .with_clock(|| Timestamp::from_secs(5))
        .with_subscriber(SubscribeTier::callback(move |t| tx.send(t.clone()).is_ok()))
        .start();
    let first = rx.recv().await.unwrap();
    assert_eq!(first.name, "gpu");
    assert_eq!(first.detected_at, Timestamp::from_secs(5));

    let current = addr.send(CurrentTier).await.unwrap().unwrap();
    assert_eq!(current, first);

    // A subscriber that comes later gets the tier at once, without a second detection.
    let (late_tx, mut late_rx) = mpsc::unbounded_channel::<Tier>();
    addr.send(SubscribeTier::callback(move |t| {
        late_tx.send(t.clone()).is_ok()
    }))
    .await
    .unwrap();
    assert_eq!(late_rx.try_recv().unwrap(), first);
    assert_eq!(*detections.lock().unwrap(), 1);
    assert!(rx.try_recv().is_err(), "the tier is published once");
}

#[actix::test]
async fn a_failed_detection_leaves_no_tier() {
    let detector = || Err("cannot read /proc/meminfo".to_owned());
    let (tx, mut rx) = mpsc::unbounded_channel::<Tier>();
    let addr = TierActor::new(TierConfig::default(), detector)
        .with_subscriber(SubscribeTier::callback(move |t| tx.send(t.clone()).is_ok()))
        .start();
    // The first message is handled after `started`, which tried to detect.
    assert_eq!(addr.send(CurrentTier).await.unwrap(), None);
    assert!(rx.try_recv().is_err(), "no tier is published");
}
