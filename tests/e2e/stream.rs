//! Calls over HTTP with the real binary: a plugin that does not stream answers an event stream
//! with one chunk and a closing `end`; a deadline answers 504; a client that disconnects cancels
//! its call, streamed or answered whole (counted as a caller cancellation); a plugin shed while a call runs past the drain
//! deadline cuts the call with the reason; the CLI client prints the answer and says how a
//! streamed call ended.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::Duration;

use serde_json::Value;

use crate::support;
use crate::support::Daemon;

/// A process plugin that answers one `response` per call (it does not stream), after sleeping
/// the seconds a `sleep:N` request asks for.
const ECHO: &str = r#"#!/usr/bin/env python3
import base64, json, os, sys, time
def send(message):
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()
for line in sys.stdin:
    message = json.loads(line)
    kind = message.get("type")
    if kind == "init":
        send({"type": "hello", "name": "echo", "version": "1", "protocol": 1})
    elif kind == "call":
        request = base64.b64decode(message["data"]).decode()
        if request.startswith("sleep:"):
            time.sleep(float(request[6:]))
        answer = f"echo: {request}".encode()
        send({"type": "response", "id": message["id"], "data": base64.b64encode(answer).decode()})
    elif "id" in message:
        send({"type": "response", "id": message["id"]})
"#;

fn config(echo: &Path) -> String {
    format!(
        r#"
[default]
use_tier_thresholds = false

[default.monitor]
interval = "200ms"
psi_trigger = false
resources = []

[default.scaler]
mode = "enforce"

[[default.plugins]]
name = "echo"
kind = "process"
command = "{}"
protocol = "json-lines"
priority = 10
call_timeout = "20s"
drain_timeout = "300ms"
max_concurrent_calls = 4

[[default.plugins]]
name = "stubs"
path = "libstubs.so"
priority = 100
essential = true
config = {{ workload = {{ working_set_mb = [1], cpu_duty = 0.0 }} }}
"#,
        echo.display()
    )
}

fn start() -> (tempfile::TempDir, Daemon) {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let echo = dir.path().join("echo.py");
    std::fs::write(&echo, ECHO).unwrap();
    std::fs::set_permissions(&echo, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut daemon = support::start(dir.path(), &config(&echo));
    daemon.wait_until(Duration::from_secs(30), "echo and stubs up", |d| {
        d.json("/plugins/echo")["state"] == "enabled"
            && d.json("/plugins/stubs")["state"] == "enabled"
    });
    (dir, daemon)
}

/// A raw HTTP/1.1 POST, so a test can read a streamed answer as it comes and hang up at will.
fn post_raw(daemon: &Daemon, path: &str, body: &str, headers: &[(&str, &str)]) -> TcpStream {
    let mut stream = TcpStream::connect(("127.0.0.1", daemon.port)).unwrap();
    let mut request = format!(
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    request.push_str(body);
    stream.write_all(request.as_bytes()).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    stream
}

fn read_all(mut stream: TcpStream) -> String {
    let mut text = String::new();
    stream.read_to_string(&mut text).unwrap();
    text
}

fn stats(daemon: &Daemon) -> Value {
    daemon.json("/plugins/echo")["stats"].clone()
}

#[test]
fn calls_stream_end_with_their_outcome_and_are_cancelled_by_deadlines_disconnects_and_sheds() {
    let (_dir, mut daemon) = start();

    // A plugin that does not stream: one chunk, then the end event saying it went well.
    let text = read_all(post_raw(
        &daemon,
        "/plugins/echo/call",
        "hi",
        &[("Accept", "text/event-stream")],
    ));
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.contains("content-type: text/event-stream"), "{text}");
    let events = &text[text.find("\r\n\r\n").unwrap()..];
    let chunk = events
        .find("event: chunk\ndata: echo: hi\n\n")
        .expect(events);
    let end = events.find("event: end\ndata: ").expect(events);
    assert!(chunk < end, "{events}");
    assert!(events.contains(r#""outcome":"done""#), "{events}");
    assert_eq!(stats(&daemon)["chunks"], 1);
    assert_eq!(stats(&daemon)["streamed_calls"], 1);

    // A deadline that passes before any chunk: the status says so.
    let (status, body) = ballast_testkit::http::request(
        "POST",
        &format!("{}/plugins/echo/call", daemon.url),
        b"sleep:3",
        &[("X-Ballast-Deadline", "300ms")],
    )
    .unwrap();
    assert_eq!(status, 504, "{body}");
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["error"], "timeout");
    assert_eq!(body["timeout_ms"], 300);
    // A bad deadline is refused by name.
    let (status, body) = daemon.post("/plugins/echo/call?timeout=soon", "x").unwrap();
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("`timeout` query parameter"), "{body}");

    // A client that hangs up cancels its call for the caller.
    let stream = post_raw(
        &daemon,
        "/plugins/echo/call",
        "sleep:1",
        &[("Accept", "text/event-stream")],
    );
    std::thread::sleep(Duration::from_millis(200));
    drop(stream);
    daemon.wait_until(
        Duration::from_secs(30),
        "the disconnect counted as a cancellation",
        |d| stats(d)["cancellations"]["caller"] == 1,
    );
    // So does one that hangs up on a call answered whole, where nothing is written to it until
    // the answer: the daemon watches the connection, not only its writes.
    let stream = post_raw(&daemon, "/plugins/echo/call", "sleep:5", &[]);
    daemon.wait_until(Duration::from_secs(30), "the whole call running", |d| {
        stats(d)["in_flight"] == 1
    });
    drop(stream);
    daemon.wait_until(
        Duration::from_secs(30),
        "the hang-up on a whole call counted as a cancellation",
        |d| stats(d)["cancellations"]["caller"] == 2,
    );

    // A plugin shed while a streamed call runs: past the drain deadline the call is cut, and the
    // stream's last event says it was a shed, and why the plugin was shed.
    let call = post_raw(
        &daemon,
        "/plugins/echo/call",
        "sleep:5",
        &[("Accept", "text/event-stream")],
    );
    daemon.wait_until(Duration::from_secs(30), "the call running", |d| {
        stats(d)["in_flight"] == 1
    });
    let (status, body) = daemon.post("/plugins/echo/disable", "{}").unwrap();
    assert_eq!(status, 200, "{body}");
    let text = read_all(call);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    let end = &text[text.find("event: end\ndata: ").expect(&text)..];
    assert!(end.contains(r#""outcome":"shed""#), "{end}");
    assert!(
        end.contains(r#""state_reason":"operator pinned it off""#),
        "{end}"
    );
    daemon.wait_until(Duration::from_secs(30), "the cut counted as a shed", |d| {
        stats(d)["cancellations"]["shed"] == 1
    });
}

#[test]
fn the_cli_calls_a_plugin_whole_and_streamed() {
    let (_dir, daemon) = start();
    let output = support::ballast()
        .args(["plugin", "echo", "call", "hello", "--api", &daemon.url])
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    assert_eq!(String::from_utf8_lossy(&output.stdout), "echo: hello");

    let output = support::ballast()
        .args([
            "plugin",
            "echo",
            "call",
            "-",
            "--stream",
            "--api",
            &daemon.url,
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            child.stdin.take().unwrap().write_all(b"from stdin")?;
            child.wait_with_output()
        })
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    assert_eq!(String::from_utf8_lossy(&output.stdout), "echo: from stdin");

    let output = support::ballast()
        .args([
            "plugin",
            "echo",
            "call",
            "sleep:3",
            "--stream",
            "--timeout",
            "300ms",
            "--api",
            &daemon.url,
        ])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(124), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("ended deadline"), "{stderr}");
}

#[test]
fn a_plugin_that_streams_sends_its_chunks_in_order_and_a_deadline_stops_it_mid_stream() {
    let (_dir, mut daemon) = start();
    // Three chunks 100 ms apart, then the last piece (the usual answer), as events in order.
    let text = read_all(post_raw(
        &daemon,
        "/plugins/stubs/call",
        "stream:3:4:100",
        &[("Accept", "text/event-stream")],
    ));
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    let positions: Vec<usize> = [
        "data: 0..",
        "data: 1..",
        "data: 2..",
        r#""chunks":3"#,
        "event: end",
    ]
    .iter()
    .map(|needle| {
        text.find(needle)
            .unwrap_or_else(|| panic!("{needle} in {text}"))
    })
    .collect();
    assert!(positions.windows(2).all(|w| w[0] < w[1]), "{text}");
    assert!(text.contains(r#""outcome":"done""#), "{text}");

    // As a chunked byte stream: the chunks' bytes, then the last piece.
    let text = read_all(post_raw(
        &daemon,
        "/plugins/stubs/call",
        "stream:3:4",
        &[("Accept", "application/octet-stream")],
    ));
    assert!(text.contains("transfer-encoding: chunked"), "{text}");
    assert!(text.contains("0..\n"), "{text}");

    // A deadline mid-stream: the chunks so far, then `deadline`; the plugin saw the cancellation
    // (it stopped, so the call is counted as cancelled for its deadline).
    let text = read_all(post_raw(
        &daemon,
        "/plugins/stubs/call",
        "stream:1000:4:50",
        &[
            ("Accept", "text/event-stream"),
            ("X-Ballast-Deadline", "400ms"),
        ],
    ));
    assert!(text.contains("data: 0.."), "{text}");
    assert!(text.contains(r#""outcome":"deadline""#), "{text}");
    daemon.wait_until(Duration::from_secs(30), "the deadline counted", |d| {
        d.json("/plugins/stubs")["stats"]["cancellations"]["deadline"] == 1
    });
    assert_eq!(daemon.json("/plugins/stubs")["state"], "enabled");
}
