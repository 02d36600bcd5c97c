//! Benchmarks of streamed calls into a native plugin in-process: how many chunks a second go from
//! the `stubs` example through `call_stream` to a sink, and how long a plugin takes to stop once
//! its call is cancelled from another thread.

use std::hint::black_box;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use ballast_host::{
    CallIo, CancelReason, CancelToken, NativeInstance, PluginLibrary, system_clock,
};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

/// Chunks per streamed call in the throughput benchmark.
const CHUNKS: u64 = 10_000;

/// The Rust `stubs` example plugin, built in release mode.
fn stubs_plugin() -> PathBuf {
    let target = ballast_testkit::plugins::target_dir().join("plugin-bench/target");
    ballast_testkit::plugins::build_rust(&target, &["ballast-plugin-stubs"], true);
    target.join("release/libstubs.so")
}

fn stubs() -> NativeInstance {
    let library = Arc::new(PluginLibrary::load(&stubs_plugin(), None).expect("stubs loads"));
    assert!(library.streams(), "stubs streams");
    let config = br#"{ "workload": { "working_set_mb": [1], "cpu_duty": 0.0 } }"#;
    NativeInstance::start(library, config, system_clock()).expect("stubs starts")
}

fn chunks_per_second(c: &mut Criterion) {
    let stubs = stubs();
    let request = format!("stream:{CHUNKS}:16");
    let mut group = c.benchmark_group("stream_chunks");
    group.throughput(Throughput::Elements(CHUNKS));
    group.sample_size(20);
    group.bench_function("stubs_10k_16_byte_chunks", |b| {
        b.iter(|| {
            let seen = Arc::new(AtomicU64::new(0));
            let sink_seen = Arc::clone(&seen);
            let sink = Box::new(move |chunk: Vec<u8>| {
                sink_seen.fetch_add(black_box(chunk).len() as u64, Ordering::Relaxed);
                true
            });
            let mut io = CallIo::new(Some(sink), CancelToken::new(), None);
            let last = stubs
                .call_stream(request.as_bytes(), &mut io)
                .expect("the stream ends");
            assert_eq!(io.chunks(), CHUNKS);
            black_box((last, seen.load(Ordering::Relaxed)))
        })
    });
    group.finish();
}

/// What the canceller thread is handed for one call: the token to cancel and where to put the
/// moment it cancelled.
type Job = (CancelToken, Arc<Mutex<Option<Instant>>>);

/// From a cancellation on another thread to `call_stream` returning, for a stream waiting between
/// chunks (it looks every millisecond of the wait) and one sending as fast as it can (it learns it
/// from the next `send`).
fn cancellation_latency(c: &mut Criterion) {
    let stubs = stubs();
    let (jobs, canceller_jobs) = mpsc::channel::<Job>();
    let canceller = std::thread::spawn(move || {
        for (n, (token, at)) in canceller_jobs.into_iter().enumerate() {
            // Let the stream get going (a paced one into its wait) before cancelling, at a moment
            // that moves through the plugin's millisecond of waiting from one call to the next,
            // so that the figure is not a lucky (or unlucky) phase of two timers.
            let spread = Duration::from_micros((n as u64 * 379) % 1000);
            std::thread::sleep(Duration::from_millis(2) + spread);
            *at.lock().unwrap() = Some(Instant::now());
            token.cancel(CancelReason::Caller);
        }
    });
    let mut group = c.benchmark_group("stream_cancel_latency");
    group
        .sample_size(20)
        .measurement_time(Duration::from_secs(3));
    for (name, request) in [
        ("paced_waiting", "stream:1000000:16:10000"),
        ("busy_sending", "stream:10000000:16"),
    ] {
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let token = CancelToken::new();
                    let at = Arc::new(Mutex::new(None));
                    let mut io = CallIo::new(
                        Some(Box::new(|chunk| {
                            black_box(chunk);
                            true
                        })),
                        token.clone(),
                        None,
                    );
                    jobs.send((token, Arc::clone(&at)))
                        .expect("the canceller runs");
                    let fault = stubs
                        .call_stream(request.as_bytes(), &mut io)
                        .expect_err("the stream is cancelled");
                    let returned = Instant::now();
                    assert!(fault.is_cancelled(), "{fault}");
                    let cancelled = at.lock().unwrap().expect("the canceller cancelled");
                    total += returned.saturating_duration_since(cancelled);
                }
                total
            })
        });
    }
    group.finish();
    drop(jobs);
    canceller.join().expect("the canceller ends");
}

criterion_group!(benches, chunks_per_second, cancellation_latency);
criterion_main!(benches);
