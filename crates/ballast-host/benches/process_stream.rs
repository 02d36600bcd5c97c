//! Benchmarks of streamed calls to a process plugin (Python, over the JSON-lines protocol): how
//! long after a call's token is cancelled the plugin has its `cancel` (goal: under 50 ms) and the
//! call has returned, and how many chunks a second come through.

use std::sync::mpsc;
use std::time::{Duration, Instant};

use ballast_core::Timestamp;
use ballast_host::{
    CallIo, CancelReason, CancelToken, PluginConfig, ProcessOptions, Protocol, StandaloneProcess,
};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

/// The plugin. `ack` sends the chunk `ready` and is answered once the plugin has read a `cancel`
/// (at once if it already has one it did not answer); `hang` sends the chunk `started` and then
/// nothing; `stream N SIZE` sends N chunks of SIZE bytes (one line, written N times) and an
/// empty response.
const PLUGIN: &str = r#"
import base64, json, sys, threading

OUT = threading.Lock()
acks = []
unanswered = 0

def send(message):
    line = json.dumps(message, separators=(",", ":"))
    with OUT:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()

def data(text):
    return base64.b64encode(text.encode()).decode()

for line in sys.stdin:
    message = json.loads(line)
    kind = message.get("type")
    if kind == "init":
        send({"type": "hello", "name": message["name"], "protocol": 1})
    elif kind == "call":
        id = message["id"]
        words = base64.b64decode(message["data"]).decode().split()
        if words[0] == "ack":
            send({"type": "chunk", "id": id, "data": data("ready")})
            if unanswered:
                unanswered -= 1
                send({"type": "response", "id": id, "data": data("cancel seen")})
            else:
                acks.append(id)
        elif words[0] == "hang":
            send({"type": "chunk", "id": id, "data": data("started")})
        elif words[0] == "stream":
            count, size = int(words[1]), int(words[2])
            chunk = json.dumps({"type": "chunk", "id": id, "data": data("x" * size)}) + "\n"
            with OUT:
                for _ in range(count):
                    sys.stdout.write(chunk)
                sys.stdout.flush()
            send({"type": "response", "id": id})
    elif kind == "cancel":
        if acks:
            send({"type": "response", "id": acks.pop(0), "data": data("cancel seen")})
        else:
            unanswered += 1
"#;

fn start() -> StandaloneProcess {
    let mut config = PluginConfig::process("bench", "python3");
    config.args = vec!["-c".into(), PLUGIN.into()];
    config.protocol = Protocol::JsonLines;
    config.call_timeout = Duration::from_secs(30);
    StandaloneProcess::start(config, ProcessOptions::default()).expect("the plugin starts")
}

fn deadline() -> Option<(Instant, Timestamp)> {
    Some((Instant::now() + Duration::from_secs(30), Timestamp::ZERO))
}

/// A side channel whose chunks go to the returned receiver.
fn streamed(cancel: CancelToken) -> (CallIo, mpsc::Receiver<Vec<u8>>) {
    let (tx, rx) = mpsc::channel();
    let sink = Box::new(move |chunk: Vec<u8>| tx.send(chunk).is_ok());
    (CallIo::new(Some(sink), cancel, deadline()), rx)
}

/// One cancellation, cancelled from another thread than the call's as a caller that goes away
/// is: how long from the cancel until the plugin had it (its answer to `ack` arrived, an upper
/// bound), and until the cancelled call returned.
fn cancel_once(process: &StandaloneProcess) -> (Duration, Duration) {
    let wait = Duration::from_secs(30);
    std::thread::scope(|scope| {
        let (mut ack_io, ack_chunks) = streamed(CancelToken::new());
        let ack = scope.spawn(move || {
            let answer = process.call_stream(b"ack", &mut ack_io);
            (Instant::now(), answer)
        });
        assert_eq!(ack_chunks.recv_timeout(wait).expect("ready"), b"ready");
        let token = CancelToken::new();
        let (mut io, chunks) = streamed(token.clone());
        let call = scope.spawn(move || {
            let result = process.call_stream(b"hang", &mut io);
            (Instant::now(), result)
        });
        assert_eq!(chunks.recv_timeout(wait).expect("started"), b"started");
        let cancelled_at = Instant::now();
        token.cancel(CancelReason::Caller);
        let (returned_at, result) = call.join().expect("the call thread");
        assert!(result.is_err(), "the cancelled call failed");
        let (acked_at, answer) = ack.join().expect("the ack thread");
        assert_eq!(answer.expect("the ack"), b"cancel seen");
        (
            acked_at.duration_since(cancelled_at),
            returned_at.duration_since(cancelled_at),
        )
    })
}

fn cancellation(c: &mut Criterion) {
    let process = start();
    let mut group = c.benchmark_group("process_cancel");
    group
        .sample_size(20)
        .warm_up_time(Duration::from_millis(200))
        .measurement_time(Duration::from_secs(3));
    group.bench_function("cancel_to_plugin_ack", |b| {
        b.iter_custom(|iters| (0..iters).map(|_| cancel_once(&process).0).sum())
    });
    group.bench_function("cancel_to_call_return", |b| {
        b.iter_custom(|iters| (0..iters).map(|_| cancel_once(&process).1).sum())
    });
    group.finish();
}

fn chunks(c: &mut Criterion) {
    const COUNT: u64 = 10_000;
    let process = start();
    let mut group = c.benchmark_group("process_chunks");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_millis(200))
        .measurement_time(Duration::from_secs(3))
        .throughput(Throughput::Elements(COUNT));
    for size in [64usize, 4096] {
        let request = format!("stream {COUNT} {size}");
        group.bench_function(format!("{size}_bytes"), |b| {
            b.iter(|| {
                let (mut io, chunks) = streamed(CancelToken::new());
                process
                    .call_stream(request.as_bytes(), &mut io)
                    .expect("the stream");
                assert_eq!(chunks.try_iter().count() as u64, COUNT);
            })
        });
    }
    group.finish();
}

criterion_group!(benches, cancellation, chunks);
criterion_main!(benches);
