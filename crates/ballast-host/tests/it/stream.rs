//! Calls with options in the host, whatever the backend: a plain plugin's answer as one chunk,
//! a deadline that passes while the call waits, a drain past its deadline that cuts the calls it
//! can with the reason, and the counts of streamed calls, chunks and cancellations.

use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ballast_core::Level;
use ballast_host::{CallError, CallOptions, CancelReason, CancelToken, ChunkSink};

use crate::support::{faulty, host, rust_plugin};

type Answer = Result<Vec<u8>, CallError>;

/// Generous bounds for things that must happen, so a broken build fails instead of hanging.
const WAIT: Duration = Duration::from_secs(30);

fn recording_sink() -> (ChunkSink, Arc<Mutex<Vec<Vec<u8>>>>) {
    let got = Arc::new(Mutex::new(Vec::new()));
    let sink_got = Arc::clone(&got);
    (
        Box::new(move |chunk| {
            sink_got.lock().unwrap().push(chunk);
            true
        }),
        got,
    )
}

#[test]
fn a_plugin_that_does_not_stream_answers_a_streamed_call_with_one_chunk_and_a_plain_one_whole() {
    let (host, _) = host();
    host.load(rust_plugin("stubs")).unwrap();
    host.enable("stubs", Level::FULL, "test").unwrap();
    let plain = host.call("stubs", b"hi").unwrap();

    let (sink, got) = recording_sink();
    let (tx, rx) = mpsc::channel::<Answer>();
    host.submit_with(
        "stubs",
        b"hi".to_vec(),
        CallOptions {
            sink: Some(sink),
            ..CallOptions::default()
        },
        Box::new(move |a| tx.send(a).unwrap()),
    )
    .unwrap();
    assert_eq!(
        rx.recv_timeout(WAIT).unwrap().unwrap(),
        b"",
        "it all went to the sink"
    );
    let chunks = got.lock().unwrap().clone();
    assert_eq!(chunks.len(), 1, "{chunks:?}");
    let as_json = |b: &[u8]| {
        let mut v: serde_json::Value = serde_json::from_slice(b).unwrap();
        v.as_object_mut().unwrap().remove("calls_served");
        v
    };
    assert_eq!(as_json(&chunks[0]), as_json(&plain));

    // Options without a sink: the chunks are joined into the answer.
    let (tx, rx) = mpsc::channel::<Answer>();
    host.submit_with(
        "stubs",
        b"hi".to_vec(),
        CallOptions::default(),
        Box::new(move |a| tx.send(a).unwrap()),
    )
    .unwrap();
    assert_eq!(
        as_json(&rx.recv_timeout(WAIT).unwrap().unwrap()),
        as_json(&plain)
    );

    let stats = host.status("stubs").unwrap().stats;
    assert_eq!(
        stats.streamed_calls, 1,
        "only the call with a sink streamed"
    );
    assert_eq!(stats.chunks, 1);
    assert_eq!(stats.cancellations.total(), 0);
    assert!(stats.first_chunk_p50_us > 0);
}

#[test]
fn a_call_whose_deadline_passes_while_it_waits_for_a_worker_is_cancelled_for_it() {
    let (host, _) = host();
    let mut config = faulty(serde_json::json!({ "call_sleep_ms": 300 }));
    config.max_concurrent_calls = 1;
    host.load(config).unwrap();
    host.enable("faulty", Level::FULL, "test").unwrap();
    let (tx, rx) = mpsc::channel::<(&str, Answer)>();
    let first = tx.clone();
    host.submit(
        "faulty",
        b"first".to_vec(),
        Box::new(move |a| first.send(("first", a)).unwrap()),
    )
    .unwrap();
    host.submit_with(
        "faulty",
        b"second".to_vec(),
        CallOptions {
            deadline: Some(Duration::from_millis(20)),
            ..CallOptions::default()
        },
        Box::new(move |a| tx.send(("second", a)).unwrap()),
    )
    .unwrap();
    let mut answers = [
        rx.recv_timeout(WAIT).unwrap(),
        rx.recv_timeout(WAIT).unwrap(),
    ];
    answers.sort_by_key(|(which, _)| *which);
    assert!(answers[0].1.is_ok(), "{:?}", answers[0]);
    assert_eq!(
        answers[1].1,
        Err(CallError::Cancelled {
            plugin: "faulty".into(),
            reason: CancelReason::Deadline
        })
    );
    let stats = host.status("faulty").unwrap().stats;
    assert_eq!(stats.cancellations.deadline, 1);
}

#[test]
fn a_drain_past_its_deadline_cuts_the_calls_it_can_and_says_it_was_a_shed() {
    let (host, _) = host();
    let mut config = faulty(serde_json::json!({ "call_sleep_ms": 1500 }));
    config.drain_timeout = Duration::from_millis(50);
    host.load(config).unwrap();
    host.enable("faulty", Level::FULL, "test").unwrap();
    let cancel = CancelToken::new();
    let (heard_tx, heard) = mpsc::channel();
    let reason_of = cancel.clone();
    let _hook = cancel.on_cancel(move || heard_tx.send(reason_of.reason().unwrap()).unwrap());
    let (sink, _) = recording_sink();
    let (tx, rx) = mpsc::channel::<Answer>();
    host.submit_with(
        "faulty",
        b"slow".to_vec(),
        CallOptions {
            cancel: cancel.clone(),
            sink: Some(sink),
            ..CallOptions::default()
        },
        Box::new(move |a| tx.send(a).unwrap()),
    )
    .unwrap();
    // A plain call is not cut: it has nothing to be cut through.
    let (plain_tx, plain_rx) = mpsc::channel::<Answer>();
    host.submit(
        "faulty",
        b"plain".to_vec(),
        Box::new(move |a| plain_tx.send(a).unwrap()),
    )
    .unwrap();
    // Both calls are running before the shed.
    while host.status("faulty").unwrap().stats.in_flight < 2 {
        std::thread::sleep(Duration::from_millis(5));
    }
    host.disable("faulty", "memory pressure").unwrap();
    // The caller hears of the cut as soon as the drain deadline passes, while the plugin (which
    // does not look at its context) still runs.
    assert_eq!(heard.recv_timeout(WAIT).unwrap(), CancelReason::Shed);
    assert_eq!(
        rx.recv_timeout(WAIT).unwrap(),
        Err(CallError::Cancelled {
            plugin: "faulty".into(),
            reason: CancelReason::Shed
        })
    );
    assert!(plain_rx.recv_timeout(WAIT).unwrap().is_ok());
    let stats = host.status("faulty").unwrap().stats;
    assert_eq!(stats.cancellations.shed, 1);
    assert_eq!(stats.cancellations.total(), 1);
}
