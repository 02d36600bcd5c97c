//! Streamed calls into native plugins: a plugin built against the frozen ABI 1.0 header still
//! loads and answers (one chunk per streamed call), and the streaming examples hand their chunks
//! over while they run (a listener that leaves, or a canceller that waits for the first chunk,
//! stops them mid-stream) and stop when the call is cancelled or its deadline passes.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock, mpsc};
use std::time::{Duration, Instant};

use ballast_core::{Level, Timestamp};
use ballast_host::{
    CallIo, CancelReason, CancelToken, NativeInstance, PluginConfig, PluginLibrary, system_clock,
};

use crate::support::{clock_plugin, host, rust_plugins};

/// The 1.0 fixture, compiled against the frozen 1.0 header beside it.
fn legacy_plugin() -> PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let source = ballast_testkit::plugins::workspace_root()
            .join("crates/ballast-abi/tests/abi-1.0/plugin.c");
        let library = ballast_testkit::plugins::target_dir().join("plugin-tests/c/liblegacy.so");
        ballast_testkit::plugins::compile_c(&source, &library);
        library
    })
    .clone()
}

fn instance(path: &std::path::Path) -> NativeInstance {
    let library = Arc::new(PluginLibrary::load(path, None).expect("the plugin loads"));
    NativeInstance::start(library, b"{}", system_clock()).expect("the plugin starts")
}

fn stubs() -> NativeInstance {
    instance(&rust_plugins().join("libstubs.so"))
}

/// The chunks a sink saw, in order.
type Seen = Arc<Mutex<Vec<String>>>;

/// A call's side channel recording its chunks.
fn recording(token: &CancelToken) -> (CallIo, Seen) {
    let seen: Seen = Arc::default();
    let sink_seen = Arc::clone(&seen);
    let sink = Box::new(move |chunk: Vec<u8>| {
        let text = String::from_utf8_lossy(&chunk).into_owned();
        sink_seen.lock().unwrap().push(text);
        true
    });
    (CallIo::new(Some(sink), token.clone(), None), seen)
}

#[test]
fn a_plugin_built_against_the_1_0_header_loads_answers_and_streams_as_one_chunk() {
    let path = legacy_plugin();
    let library = PluginLibrary::load(&path, None).unwrap();
    assert_eq!(library.info().abi, "1.0");
    assert!(!library.streams());
    assert_eq!(library.info().capabilities, ["thread_safe_calls"]);
    assert!(library.vtable().call_stream.is_none());

    // Through the host, as the daemon calls it.
    let (host, _) = host();
    host.load(PluginConfig::new("legacy", &path)).unwrap();
    host.enable("legacy", Level::FULL, "test").unwrap();
    assert_eq!(host.call("legacy", b"hi").unwrap(), b"legacy:hi");

    // Streamed: the whole answer is one chunk, and nothing is left for a last piece.
    let legacy = instance(&path);
    assert_eq!(legacy.call(b"plain").unwrap(), b"legacy:plain");
    let (mut io, seen) = recording(&CancelToken::new());
    assert_eq!(legacy.call_stream(b"streamed", &mut io).unwrap(), b"");
    assert_eq!(*seen.lock().unwrap(), ["legacy:streamed"]);
}

#[test]
fn the_workload_streams_its_chunks_in_order_while_it_runs() {
    let stubs = stubs();
    let (mut io, seen) = recording(&CancelToken::new());
    let last = stubs.call_stream(b"stream:4:6:1", &mut io).unwrap();
    let last: serde_json::Value = serde_json::from_slice(&last).unwrap();
    assert_eq!(last["chunks"], 4);
    assert_eq!(last["plugin"], "stubs");
    assert_eq!(
        *seen.lock().unwrap(),
        ["0....\n", "1....\n", "2....\n", "3....\n"]
    );
    // A plain call gets the chunks and the last piece as one answer.
    let whole = stubs.call(b"stream:2").unwrap();
    assert!(
        whole.starts_with(b"0\n1\n{"),
        "{}",
        String::from_utf8_lossy(&whole)
    );
}

#[test]
fn a_listener_that_leaves_mid_stream_stops_the_plugin_at_once() {
    let stubs = stubs();
    let token = CancelToken::new();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink_seen = Arc::clone(&seen);
    // The listener leaves after the third chunk: the plugin learns it from `send` while it runs.
    let sink = Box::new(move |chunk: Vec<u8>| {
        let mut seen = sink_seen.lock().unwrap();
        seen.push(chunk);
        seen.len() < 3
    });
    let mut io = CallIo::new(Some(sink), token.clone(), None);
    let fault = stubs.call_stream(b"stream:1000", &mut io).unwrap_err();
    assert!(fault.is_cancelled(), "{fault}");
    assert_eq!(
        fault.message,
        "the call was cancelled because the caller went away; the plugin says: stubs: stream stopped after 2 of 1000 chunks"
    );
    assert_eq!(seen.lock().unwrap().len(), 3);
    assert_eq!(token.reason(), Some(CancelReason::Caller));
}

#[test]
fn a_token_cancelled_from_another_thread_stops_a_paced_stream() {
    let stubs = stubs();
    let token = CancelToken::new();
    let (first, first_seen) = mpsc::channel();
    let sink = Box::new(move |_chunk: Vec<u8>| {
        let _ = first.send(());
        true
    });
    // A stream that would run for almost three hours unless cancelled.
    let mut io = CallIo::new(Some(sink), token.clone(), None);
    let canceller = token.clone();
    std::thread::scope(|scope| {
        scope.spawn(move || {
            first_seen.recv().unwrap();
            canceller.cancel(CancelReason::Caller);
        });
        let fault = stubs
            .call_stream(b"stream:1000:16:10000", &mut io)
            .unwrap_err();
        assert!(fault.is_cancelled(), "{fault}");
        assert!(
            fault
                .message
                .starts_with("the call was cancelled because the caller went away"),
            "{fault}"
        );
    });
    assert_eq!(io.chunks(), 1);
}

#[test]
fn a_passed_deadline_stops_a_paced_stream() {
    let stubs = stubs();
    let deadline = Instant::now() + Duration::from_millis(50);
    let at = Timestamp::from_millis(1_700_000_000_050);
    let mut io = CallIo::new(None, CancelToken::new(), Some((deadline, at)));
    let fault = stubs
        .call_stream(b"stream:1000:16:10000", &mut io)
        .unwrap_err();
    assert!(fault.is_cancelled(), "{fault}");
    assert!(
        fault
            .message
            .starts_with("the call was cancelled because its deadline passed"),
        "{fault}"
    );
    assert_eq!(io.cancel_reason(), Some(CancelReason::Deadline));
}

#[test]
fn sleep_ignore_answers_after_its_sleep_even_when_cancelled() {
    let stubs = stubs();
    let token = CancelToken::new();
    token.cancel(CancelReason::Caller);
    let mut io = CallIo::new(None, token, None);
    let last = stubs.call_stream(b"sleep-ignore:20", &mut io).unwrap();
    let last: serde_json::Value = serde_json::from_slice(&last).unwrap();
    assert_eq!(last["echo"], "sleep-ignore:20");
}

#[test]
fn the_c_clock_streams_ticks_and_stops_when_cancelled() {
    let library = PluginLibrary::load(&clock_plugin(), None).unwrap();
    assert!(library.streams());
    assert!(library.info().capabilities.contains(&"streaming"));
    let clock = instance(&clock_plugin());
    let (mut io, seen) = recording(&CancelToken::new());
    let last = clock.call_stream(b"tick:3", &mut io).unwrap();
    let last: serde_json::Value = serde_json::from_slice(&last).unwrap();
    assert_eq!(last["echo"], "tick:3");
    let ticks: Vec<u64> = seen
        .lock()
        .unwrap()
        .iter()
        .map(|line| {
            let tick: serde_json::Value = serde_json::from_str(line).unwrap();
            tick["tick"].as_u64().unwrap()
        })
        .collect();
    assert_eq!(ticks, [0, 1, 2]);

    // Cancelled (for a shed) while the first tick goes out: the clock sees it through
    // `is_cancelled` during its ten-second wait for the second, and stops.
    let token = CancelToken::new();
    let shed = token.clone();
    let sink = Box::new(move |_tick: Vec<u8>| {
        shed.cancel(CancelReason::Shed);
        true
    });
    let mut io = CallIo::new(Some(sink), token, None);
    let fault = clock.call_stream(b"tick:1000:10000", &mut io).unwrap_err();
    assert_eq!(
        fault.message,
        "the call was cancelled because the plugin is being shed; the plugin says: clock: saw the call cancelled, ticking stopped"
    );
    assert_eq!(io.chunks(), 1);
}
