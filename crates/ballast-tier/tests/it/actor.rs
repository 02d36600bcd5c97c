//! The TierActor: detects at start, publishes, and detects again on request.

use std::sync::{Arc, Mutex};

use actix::Actor;
use ballast_core::Timestamp;
use ballast_core::tier::Tier;
use ballast_tier::{CurrentTier, Redetect, SubscribeTier, TierActor, TierConfig};
use tokio::sync::mpsc;

use crate::classify::facts;

#[actix::test]
async fn detects_at_start_and_again_when_a_gpu_appears() {
    tokio::time::pause();
    let gpu = Arc::new(Mutex::new(None));
    let detector_gpu = Arc::clone(&gpu);
    let detector = move || Ok(facts(32, 8, *detector_gpu.lock().unwrap()));
    let (tx, mut rx) = mpsc::unbounded_channel::<Tier>();
    let addr = TierActor::new(TierConfig::default(), detector)
        .with_clock(|| Timestamp::from_secs(5))
        .with_subscriber(SubscribeTier::callback(move |t| tx.send(t.clone()).is_ok()))
        .start();
    let first = rx.recv().await.unwrap();
    assert_eq!(first.name, "performance");
    assert_eq!(first.detected_at, Timestamp::from_secs(5));

    // Nothing changed: the tier is returned but not published again.
    let same = addr.send(Redetect).await.unwrap().unwrap();
    assert_eq!(same.name, "performance");
    assert!(rx.try_recv().is_err());

    *gpu.lock().unwrap() = Some(24);
    let tier = addr.send(Redetect).await.unwrap().unwrap();
    assert_eq!(tier.name, "gpu");
    assert_eq!(rx.recv().await.unwrap().name, "gpu");
    let current = addr.send(CurrentTier).await.unwrap().unwrap();
    assert_eq!(current.name, "gpu");
}

#[actix::test]
async fn a_failed_detection_keeps_the_current_tier() {
    let fail = Arc::new(Mutex::new(false));
    let detector_fail = Arc::clone(&fail);
    let detector = move || {
        if *detector_fail.lock().unwrap() {
            Err("cannot read /proc/meminfo".to_owned())
        } else {
            Ok(facts(8, 4, None))
        }
    };
    let addr = TierActor::new(TierConfig::default(), detector).start();
    // The first message is handled after `started`, which detected successfully.
    let first = addr.send(CurrentTier).await.unwrap().unwrap();
    assert_eq!(first.name, "standard");
    *fail.lock().unwrap() = true;
    let error = addr.send(Redetect).await.unwrap().unwrap_err();
    assert_eq!(error, "cannot read /proc/meminfo");
    let current = addr.send(CurrentTier).await.unwrap().unwrap();
    assert_eq!(current.name, "standard");
}
