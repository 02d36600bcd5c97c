//! Streamed calls to a process plugin over the control protocol, with a small Python plugin:
//! chunks reach the caller in order before the response; a cancelled call sends `cancel` and
//! returns without waiting, also when the plugin ignores it; a gone listener cancels; the
//! deadline travels as `deadline_ms`; a malformed or over-long chunk fails its call only; a
//! plugin that only sends `response` still answers. Every wait is bounded; none is a timing
//! assertion.

use std::path::{Path, PathBuf};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use ballast_abi::BALLAST_STATUS_CANCELLED;
use ballast_core::Timestamp;
use ballast_host::{
    CallIo, CancelReason, CancelToken, PluginConfig, PluginFault, ProcessOptions, Protocol,
    StandaloneProcess,
};

/// The test plugin. Each call runs on a thread of its own, so `cancel` is read while it runs.
/// The request's first word says what to do:
///
/// * `chunks N`: N chunks `part I;`, then, once the file `release-ID` exists (the test's sink
///   writes it when it has seen every chunk), the response `end`;
/// * `hang`: the chunk `started ID`, then nothing;
/// * `wait`: writes the file `waiting-ID`, then the response `waited` once the file `go` exists;
/// * `deadline`: the response is the call's `deadline_ms` as JSON (`null` when absent);
/// * `bad`: a chunk whose data is not base64, then a response (dropped by the host);
/// * `long`: a chunk line of 9 MiB, over the limit, then a response (dropped by the host);
/// * `whole`: only a response, `whole answer`, as a plugin written before streaming does.
///
/// On `cancel` it writes the file `cancelled-ID`, unless its config says `ignore_cancel`.
const PLUGIN: &str = r#"
import base64, json, os, sys, threading, time

OUT = threading.Lock()
config = {}

def send(message):
    line = json.dumps(message, separators=(",", ":"))
    with OUT:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()

def data(text):
    return base64.b64encode(text.encode()).decode()

def wait_for(name):
    path = os.path.join(config["dir"], name)
    while not os.path.exists(path):
        time.sleep(0.002)

def run(id, request, deadline_ms):
    verb, _, argument = request.partition(" ")
    if verb == "chunks":
        for i in range(int(argument)):
            send({"type": "chunk", "id": id, "data": data("part %d;" % i)})
        wait_for("release-%d" % id)
        send({"type": "response", "id": id, "data": data("end")})
    elif verb == "hang":
        send({"type": "chunk", "id": id, "data": data("started %d" % id)})
    elif verb == "wait":
        open(os.path.join(config["dir"], "waiting-%d" % id), "w").close()
        wait_for("go")
        send({"type": "response", "id": id, "data": data("waited")})
    elif verb == "deadline":
        send({"type": "response", "id": id, "data": data(json.dumps(deadline_ms))})
    elif verb == "bad":
        send({"type": "chunk", "id": id, "data": "***"})
        send({"type": "response", "id": id, "data": data("late")})
    elif verb == "long":
        line = '{"type":"chunk","id":%d,"data":"%s"}\n' % (id, "A" * (9 << 20))
        with OUT:
            sys.stdout.write(line)
            sys.stdout.flush()
        send({"type": "response", "id": id, "data": data("late")})
    elif verb == "whole":
        send({"type": "response", "id": id, "data": data("whole answer")})

for line in sys.stdin:
    message = json.loads(line)
    kind = message.get("type")
    if kind == "init":
        config = message["config"]
        send({"type": "hello", "name": message["name"], "protocol": 1})
    elif kind == "call":
        request = base64.b64decode(message["data"]).decode()
        threading.Thread(
            target=run, args=(message["id"], request, message.get("deadline_ms")), daemon=True
        ).start()
    elif kind == "cancel" and not config.get("ignore_cancel"):
        open(os.path.join(config["dir"], "cancelled-%d" % message["id"]), "w").close()
"#;

struct Fixture {
    process: StandaloneProcess,
    dir: tempfile::TempDir,
}

fn start(ignore_cancel: bool) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let mut config = PluginConfig::process("streamer", "python3");
    config.args = vec!["-c".into(), PLUGIN.into()];
    config.protocol = Protocol::JsonLines;
    config.call_timeout = Duration::from_secs(30);
    config.stop_timeout = Duration::from_secs(5);
    config.config = serde_json::json!({ "dir": dir.path(), "ignore_cancel": ignore_cancel });
    let options = ProcessOptions {
        log_dir: Some(dir.path().join("logs")),
        ..ProcessOptions::default()
    };
    let process = StandaloneProcess::start(config, options).unwrap();
    Fixture { process, dir }
}

/// Waits (at most 30 s) for the file `name` in `dir`.
fn wait_for_file(dir: &Path, name: &str) -> PathBuf {
    let path = dir.join(name);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !path.exists() {
        assert!(
            Instant::now() < deadline,
            "{} never appeared",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    path
}

/// A deadline `after` from now, as a call's side channel takes it.
fn deadline(after: Duration) -> Option<(Instant, Timestamp)> {
    Some((Instant::now() + after, Timestamp::ZERO))
}

/// A call's side channel whose chunks go, as text, to the returned receiver.
fn streamed(
    cancel: CancelToken,
    deadline: Option<(Instant, Timestamp)>,
) -> (CallIo, mpsc::Receiver<String>) {
    let (tx, rx) = mpsc::channel();
    let sink = Box::new(move |chunk: Vec<u8>| tx.send(String::from_utf8(chunk).unwrap()).is_ok());
    (CallIo::new(Some(sink), cancel, deadline), rx)
}

/// The chunks the caller of a streamed call gets: those sent during the call, then the answer
/// it returns when that is not empty, as the host sends it.
fn stream_call(process: &StandaloneProcess, request: &str) -> Result<Vec<String>, PluginFault> {
    let (mut io, chunks) = streamed(CancelToken::new(), deadline(Duration::from_secs(30)));
    let last = process.call_stream(request.as_bytes(), &mut io)?;
    let mut got: Vec<String> = chunks.try_iter().collect();
    if !last.is_empty() {
        got.push(String::from_utf8(last).unwrap());
    }
    Ok(got)
}

fn assert_cancelled(result: Result<Vec<u8>, PluginFault>, why: &str) {
    match result {
        Err(fault) => {
            assert_eq!(fault.status, BALLAST_STATUS_CANCELLED, "{fault}");
            assert!(fault.message.contains(why), "{fault}");
        }
        Ok(answer) => panic!("the call answered {answer:?}"),
    }
}

#[test]
fn chunks_reach_the_caller_in_order_before_the_response() {
    let f = start(false);
    let dir = f.dir.path().to_owned();
    let (tx, rx) = mpsc::channel();
    // The sink releases the plugin's response only once it has seen the fifth chunk: were the
    // chunks held back until the response, the call could only end by its deadline.
    let mut io = CallIo::new(
        Some(Box::new(move |chunk: Vec<u8>| {
            let text = String::from_utf8(chunk).unwrap();
            if text == "part 4;" {
                // The plugin numbers its calls' files by id: this is the fixture's first call.
                std::fs::write(dir.join("release-1"), b"").unwrap();
            }
            tx.send(text).is_ok()
        })),
        CancelToken::new(),
        deadline(Duration::from_secs(30)),
    );
    let last = f.process.call_stream(b"chunks 5", &mut io).unwrap();
    assert_eq!(last, b"end", "the response's data comes back as the answer");
    let chunks: Vec<String> = rx.try_iter().collect();
    assert_eq!(
        chunks,
        ["part 0;", "part 1;", "part 2;", "part 3;", "part 4;"]
    );
    assert_eq!(io.chunks(), 5);
}

#[test]
fn a_plain_call_joins_the_chunks_into_its_answer() {
    let f = start(false);
    // The plain call is the fixture's first: its response waits for `release-1`.
    std::fs::write(f.dir.path().join("release-1"), b"").unwrap();
    let answer = f.process.call(b"chunks 3").unwrap();
    assert_eq!(answer, b"part 0;part 1;part 2;end");
}

/// Starts `hang` (a call without a deadline that the plugin never answers) on a thread of its
/// own, cancels it for `reason` once the plugin has it, and returns how it ended: only the cancel
/// can end it (within 30 s, or the test fails).
fn cancel_hanging_call(
    process: &Arc<StandaloneProcess>,
    reason: CancelReason,
) -> Result<Vec<u8>, PluginFault> {
    let cancel = CancelToken::new();
    let (mut io, chunks) = streamed(cancel.clone(), None);
    let (done, ended) = mpsc::channel();
    let (thread_id, caller_thread) = mpsc::channel();
    let caller = Arc::clone(process);
    std::thread::spawn(move || {
        let _ = thread_id.send(nix::unistd::gettid());
        let _ = done.send(caller.call_stream(b"hang", &mut io));
    });
    let started = chunks.recv_timeout(Duration::from_secs(30)).unwrap();
    assert!(started.starts_with("started "), "{started}");
    // Once the calling thread sleeps, it waits for the plugin, which sends nothing more: only a
    // wake from the cancel can end the wait.
    let stat = format!("/proc/self/task/{}/stat", caller_thread.recv().unwrap());
    let deadline = Instant::now() + Duration::from_secs(30);
    while !std::fs::read_to_string(&stat)
        .unwrap()
        .rsplit_once(") ")
        .is_some_and(|(_, rest)| rest.starts_with('S'))
    {
        assert!(Instant::now() < deadline, "the calling thread never slept");
        std::thread::sleep(Duration::from_millis(1));
    }
    cancel.cancel(reason);
    ended
        .recv_timeout(Duration::from_secs(30))
        .expect("the cancelled call returned")
}

#[test]
fn a_cancelled_call_sends_cancel_and_returns_without_its_answer() {
    let Fixture { process, dir } = start(false);
    let process = Arc::new(process);
    assert_cancelled(
        cancel_hanging_call(&process, CancelReason::Caller),
        "its caller went away",
    );
    wait_for_file(dir.path(), "cancelled-1");
    // The process goes on.
    assert_eq!(process.call(b"whole").unwrap(), b"whole answer");
}

#[test]
fn a_plugin_that_ignores_cancel_is_not_waited_for() {
    let Fixture { process, dir } = start(true);
    let process = Arc::new(process);
    assert_cancelled(
        cancel_hanging_call(&process, CancelReason::Shed),
        "the plugin is being shed",
    );
    assert_eq!(process.call(b"whole").unwrap(), b"whole answer");
    assert!(
        !dir.path().join("cancelled-1").exists(),
        "this plugin ignores cancel"
    );
}

#[test]
fn a_listener_that_goes_away_cancels_the_call() {
    let f = start(false);
    let (tx, rx) = mpsc::channel::<String>();
    drop(rx);
    let mut io = CallIo::new(
        Some(Box::new(move |chunk: Vec<u8>| {
            tx.send(String::from_utf8(chunk).unwrap()).is_ok()
        })),
        CancelToken::new(),
        deadline(Duration::from_secs(30)),
    );
    assert_cancelled(
        f.process.call_stream(b"hang", &mut io),
        "its caller went away",
    );
    assert_eq!(io.cancel_reason(), Some(CancelReason::Caller));
    wait_for_file(f.dir.path(), "cancelled-1");
}

#[test]
fn the_deadline_travels_as_deadline_ms_and_cancels_when_it_passes() {
    let f = start(false);
    let (mut io, _chunks) = streamed(CancelToken::new(), deadline(Duration::from_secs(60)));
    let left: u64 = serde_json::from_slice(&f.process.call_stream(b"deadline", &mut io).unwrap())
        .expect("a number of milliseconds");
    assert!(left > 0 && left <= 60_000, "{left}");
    // Without a deadline, the field is absent.
    let (mut io, _chunks) = streamed(CancelToken::new(), None);
    assert_eq!(
        f.process.call_stream(b"deadline", &mut io).unwrap(),
        b"null"
    );
    // A plain call's deadline is its call timeout.
    let left: u64 = serde_json::from_slice(&f.process.call(b"deadline").unwrap()).unwrap();
    assert!(left > 0 && left <= 30_000, "{left}");
    // A call that outlives its deadline is cancelled, and the plugin told.
    let (mut io, _chunks) = streamed(CancelToken::new(), deadline(Duration::from_millis(200)));
    assert_cancelled(
        f.process.call_stream(b"hang", &mut io),
        "its deadline passed",
    );
    assert_eq!(io.cancel_reason(), Some(CancelReason::Deadline));
    wait_for_file(f.dir.path(), "cancelled-4");
}

#[test]
fn a_bad_chunk_fails_its_call_only() {
    let f = start(false);
    std::thread::scope(|scope| {
        // A call in flight (the first) while the others break the protocol.
        let waiting = scope.spawn(|| f.process.call(b"wait"));
        wait_for_file(f.dir.path(), "waiting-1");
        for (request, why) in [
            ("bad", "not base64"),
            ("long", "is longer than the limit of 8388608 bytes"),
        ] {
            match stream_call(&f.process, request) {
                Err(fault) => {
                    assert!(
                        fault
                            .message
                            .contains("plugin `streamer` sent a bad line for this request"),
                        "{fault}"
                    );
                    assert!(fault.message.contains(why), "{fault}");
                }
                Ok(chunks) => panic!("{request} answered {chunks:?}"),
            }
            // The next call is answered.
            assert_eq!(stream_call(&f.process, "whole").unwrap(), ["whole answer"]);
        }
        std::fs::write(f.dir.path().join("go"), b"").unwrap();
        assert_eq!(waiting.join().unwrap().unwrap(), b"waited");
    });
    // The plugin was told to stop the calls the host gave up (`bad` and `long`).
    wait_for_file(f.dir.path(), "cancelled-2");
    wait_for_file(f.dir.path(), "cancelled-4");
}

#[test]
fn a_plugin_that_only_responds_gives_one_chunk() {
    let f = start(false);
    let (mut io, chunks) = streamed(CancelToken::new(), deadline(Duration::from_secs(30)));
    let last = f.process.call_stream(b"whole", &mut io).unwrap();
    assert_eq!(last, b"whole answer");
    assert_eq!(io.chunks(), 0, "nothing was streamed");
    assert!(chunks.try_iter().next().is_none());
    assert_eq!(
        stream_call(&f.process, "whole").unwrap(),
        ["whole answer"],
        "the caller sends the answer as the one chunk"
    );
}
