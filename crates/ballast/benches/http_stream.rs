//! Streamed calls through the control API over loopback HTTP, on the production topology of an
//! in-process daemon with the `stubs` example plugin: what streaming adds to the first chunk over
//! a plain call, how many chunks a second reach an HTTP client (server-sent events and a chunked
//! byte stream), and how long after a client hangs up the plugin sees its call cancelled.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use ballast_daemon::testing::{Options, TestDaemon, plugin};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

/// Chunks per streamed call in the throughput benchmarks.
const CHUNKS: u64 = 10_000;

fn daemon() -> TestDaemon {
    let mut stubs = plugin("stubs", 100);
    // The cancellation benchmark keeps a few calls running; leave room for them.
    stubs.max_concurrent_calls = 16;
    let daemon = TestDaemon::start(Options {
        plugins: vec![stubs],
        ..Options::default()
    });
    daemon.publish_figures();
    daemon
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .into()
}

/// A plain call: the whole answer in one body.
fn plain_call(agent: &ureq::Agent, url: &str, request: &str) -> Vec<u8> {
    let mut response = agent
        .post(&format!("{url}/plugins/stubs/call"))
        .send(request.as_bytes())
        .expect("the daemon answers");
    assert_eq!(response.status(), 200, "the call is answered");
    response.body_mut().read_to_vec().expect("the body")
}

/// A streamed call as server-sent events: the time from sending it to the first `chunk` event,
/// and how many chunk events came in all (the rest of the stream is read, so that the
/// connection goes back to the agent's pool).
fn streamed_call(agent: &ureq::Agent, url: &str, request: &str) -> (Duration, u64) {
    let started = Instant::now();
    let response = agent
        .post(&format!("{url}/plugins/stubs/call"))
        .header("Accept", "text/event-stream")
        .send(request.as_bytes())
        .expect("the daemon answers");
    assert_eq!(response.status(), 200, "the call streams");
    let mut reader = BufReader::new(response.into_body().into_reader());
    let mut first = None;
    let mut chunks = 0;
    let mut line = String::new();
    let mut ended = false;
    loop {
        line.clear();
        if reader.read_line(&mut line).expect("the stream reads") == 0 {
            break;
        }
        if line.starts_with("event: chunk") {
            first.get_or_insert_with(|| started.elapsed());
            chunks += 1;
        } else if line.starts_with("event: end") {
            ended = true;
        } else if ended && line.starts_with("data:") {
            assert!(line.contains("\"done\""), "the stream ends done: {line}");
        }
    }
    assert!(ended, "the stream has its end event");
    (first.expect("a chunk came"), chunks)
}

/// The same call as a chunked byte stream: how many bytes came.
fn octet_call(agent: &ureq::Agent, url: &str, request: &str) -> usize {
    let response = agent
        .post(&format!("{url}/plugins/stubs/call"))
        .header("Accept", "application/octet-stream")
        .send(request.as_bytes())
        .expect("the daemon answers");
    assert_eq!(response.status(), 200, "the call streams");
    let mut reader = response.into_body().into_reader();
    let mut buffer = [0u8; 64 * 1024];
    let mut total = 0;
    loop {
        let n = reader.read(&mut buffer).expect("the stream reads");
        if n == 0 {
            return total;
        }
        total += n;
    }
}

fn first_chunk(c: &mut Criterion) {
    let daemon = daemon();
    let agent = agent();
    let url = daemon.url.clone();
    // One chunk of 16 bytes and the plugin's closing summary either way, so that the difference
    // is the streaming path's.
    let request = "stream:1:16";
    assert!(plain_call(&agent, &url, request).len() > 16);
    let mut group = c.benchmark_group("first_chunk_http");
    group.sample_size(50);
    group.bench_function("plain_call", |b| {
        b.iter(|| plain_call(&agent, &url, request))
    });
    group.bench_function("streamed_first_chunk", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let (first, chunks) = streamed_call(&agent, &url, request);
                // The chunk, then the summary as the last one.
                assert_eq!(chunks, 2);
                total += first;
            }
            total
        })
    });
    group.finish();
}

fn chunks_per_second(c: &mut Criterion) {
    let daemon = daemon();
    let agent = agent();
    let url = daemon.url.clone();
    let request = format!("stream:{CHUNKS}:16");
    let mut group = c.benchmark_group("http_chunks");
    group.throughput(Throughput::Elements(CHUNKS));
    group.sample_size(10);
    group.bench_function("sse_10k_16_byte_chunks", |b| {
        b.iter(|| {
            let (_, chunks) = streamed_call(&agent, &url, &request);
            assert_eq!(chunks, CHUNKS + 1, "the chunks and the summary");
        })
    });
    group.bench_function("octet_10k_16_byte_chunks", |b| {
        b.iter(|| assert!(octet_call(&agent, &url, &request) > 16 * CHUNKS as usize))
    });
    group.finish();
}

/// Caller cancellations the host has counted for `stubs`.
fn caller_cancellations(daemon: &TestDaemon) -> u64 {
    daemon
        .state
        .plugin_host
        .refresh_stats("stubs")
        .expect("stubs is loaded")
        .cancellations
        .caller
}

/// Opens a streamed call of `request` on a connection of its own and reads until its first chunk
/// has come, so that the call is running in the plugin.
fn open_stream(address: &str, request: &str) -> TcpStream {
    let mut stream = TcpStream::connect(address).expect("connect");
    write!(
        stream,
        "POST /plugins/stubs/call HTTP/1.1\r\nHost: {address}\r\nAccept: text/event-stream\r\nContent-Length: {}\r\n\r\n{request}",
        request.len()
    )
    .expect("send the call");
    let mut reader = BufReader::new(stream.try_clone().expect("clone the socket"));
    let mut line = String::new();
    loop {
        line.clear();
        assert!(
            reader.read_line(&mut line).expect("the stream reads") > 0,
            "the stream ended before its first chunk"
        );
        if line.starts_with("event: chunk") {
            return stream;
        }
    }
}

fn disconnect_cancel(c: &mut Criterion) {
    let daemon = daemon();
    let address = daemon.url.trim_start_matches("http://").to_owned();
    let mut group = c.benchmark_group("disconnect_cancel");
    group.sample_size(20);
    // A chunk every 10 ms (a token rate) and every 100 ms (a slow producer): the server learns
    // that its client left when it next writes, a chunk or the keep-alive comment.
    for (name, request) in [
        ("chunk_every_10ms", "stream:100000:16:10"),
        ("chunk_every_100ms", "stream:100000:16:100"),
    ] {
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let stream = open_stream(&address, request);
                    let before = caller_cancellations(&daemon);
                    let hung_up = Instant::now();
                    stream.shutdown(std::net::Shutdown::Both).expect("hang up");
                    drop(stream);
                    let deadline = hung_up + Duration::from_secs(10);
                    while caller_cancellations(&daemon) == before {
                        assert!(Instant::now() < deadline, "the call was never cancelled");
                        std::thread::sleep(Duration::from_micros(100));
                    }
                    total += hung_up.elapsed();
                }
                total
            })
        });
    }
    group.finish();
}

criterion_group!(benches, first_chunk, chunks_per_second, disconnect_cancel);
criterion_main!(benches);
