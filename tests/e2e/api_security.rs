//! The control API under hostile clients, on the real daemon: every endpoint but `/healthz`
//! refuses a missing or wrong token with 401 and changes nothing; request bodies are limited
//! however they are sent; and a bounded flood of requests and idle connections on loopback leaves
//! the daemon answering, sampling and deciding.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use ballast_testkit::now_ms;

use crate::support;
use crate::support::Daemon;

const TOKEN: &str = "correct-horse-battery-staple";

/// A daemon with a bearer token (on loopback: a token, once configured, is required there too),
/// a small body limit, fast sampling and two plugins.
fn config(token_file: &std::path::Path) -> String {
    format!(
        r#"
[default]
use_tier_thresholds = false

[default.api]
token_file = "{}"
max_body_bytes = 1024

[default.monitor]
interval = "200ms"
resources = ["memory"]

[default.scaler.thresholds.memory]
shed = 0.99
restore = 0.98
emergency = 0.995

[[default.plugins]]
name = "faulty"
path = "libfaulty.so"
priority = 10

[[default.plugins]]
name = "stubs"
path = "libstubs.so"
priority = 100
essential = true
config = {{ workload = {{ working_set_mb = [1], cpu_duty = 0.0 }} }}
"#,
        token_file.display()
    )
}

fn start(dir: &std::path::Path) -> Daemon {
    let token_file = dir.join("token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
    std::fs::set_permissions(&token_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let mut daemon = support::start(dir, &config(&token_file));
    daemon.wait_until(Duration::from_secs(30), "faulty enabled", |d| {
        plugin_state(d, "faulty") == "enabled"
    });
    daemon
}

/// An HTTP answer: status, head and body.
struct Answer {
    status: u16,
    head: String,
    body: String,
}

/// How a request's body is sent.
enum Body<'a> {
    None,
    /// With its Content-Length.
    Plain(&'a [u8]),
    /// With a Content-Length but no bytes after the head.
    DeclaredOnly(u64),
    /// In chunks of this many bytes, this many of them.
    Chunked {
        chunk: usize,
        chunks: usize,
    },
}

/// One request over its own connection. For `/events`, only the head is read (the stream goes
/// on forever).
fn request(
    daemon: &Daemon,
    method: &str,
    path: &str,
    auth: Option<&str>,
    body: Body<'_>,
) -> Result<Answer, String> {
    let host = daemon.url.trim_start_matches("http://");
    let mut stream = TcpStream::connect(host).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .map_err(|e| e.to_string())?;
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n");
    if let Some(auth) = auth {
        head.push_str(&format!("Authorization: {auth}\r\n"));
    }
    match &body {
        Body::None => head.push_str("Content-Length: 0\r\n"),
        Body::Plain(bytes) => head.push_str(&format!("Content-Length: {}\r\n", bytes.len())),
        Body::DeclaredOnly(n) => head.push_str(&format!("Content-Length: {n}\r\n")),
        Body::Chunked { .. } => head.push_str("Transfer-Encoding: chunked\r\n"),
    }
    head.push_str("\r\n");
    stream
        .write_all(head.as_bytes())
        .map_err(|e| e.to_string())?;
    // The daemon may answer (413) and close before it has read the whole body: a failed write
    // is no failure as long as the answer can be read.
    let _ = match body {
        Body::Plain(bytes) => stream.write_all(bytes),
        Body::Chunked { chunk, chunks } => (0..chunks).try_for_each(|_| {
            stream.write_all(format!("{chunk:x}\r\n").as_bytes())?;
            stream.write_all(&vec![b'x'; chunk])?;
            stream.write_all(b"\r\n")
        }),
        Body::None | Body::DeclaredOnly(_) => Ok(()),
    }
    .and_then(|()| {
        if matches!(body, Body::Chunked { .. }) {
            stream.write_all(b"0\r\n\r\n")
        } else {
            Ok(())
        }
    });
    let mut response = Vec::new();
    let mut buffer = [0u8; 8192];
    loop {
        match stream.read(&mut buffer) {
            Ok(0) => break,
            Ok(n) => response.extend_from_slice(&buffer[..n]),
            Err(e) if response.is_empty() => return Err(e.to_string()),
            Err(_) => break,
        }
        if path.starts_with("/events") && response.windows(4).any(|w| w == b"\r\n\r\n") {
            break;
        }
    }
    let text = String::from_utf8_lossy(&response).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").ok_or("no HTTP head")?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or("no status")?;
    Ok(Answer {
        status,
        head: head.to_ascii_lowercase(),
        body: body.to_owned(),
    })
}

fn bearer() -> String {
    format!("Bearer {TOKEN}")
}

fn json_with_token(daemon: &Daemon, path: &str) -> serde_json::Value {
    let answer = request(daemon, "GET", path, Some(&bearer()), Body::None).unwrap();
    assert_eq!(answer.status, 200, "GET {path}: {}", answer.body);
    serde_json::from_str(answer.body.trim()).unwrap_or_else(|e| panic!("{e}: {}", answer.body))
}

fn plugin_state(daemon: &Daemon, plugin: &str) -> String {
    request(
        daemon,
        "GET",
        &format!("/plugins/{plugin}"),
        Some(&bearer()),
        Body::None,
    )
    .ok()
    .and_then(|a| serde_json::from_str::<serde_json::Value>(&a.body).ok())
    .and_then(|v| v["state"].as_str().map(str::to_owned))
    .unwrap_or_default()
}

/// Every endpoint, reading and mutating, with a body it would accept.
const ENDPOINTS: [(&str, &str, &str); 15] = [
    ("GET", "/status", ""),
    ("GET", "/plugins", ""),
    ("GET", "/plugins/faulty", ""),
    ("GET", "/decisions?tail=5", ""),
    ("GET", "/events", ""),
    ("GET", "/metrics", ""),
    ("POST", "/plugins/faulty/enable", ""),
    ("POST", "/plugins/faulty/disable", r#"{"for": "1h"}"#),
    ("POST", "/plugins/faulty/release", ""),
    ("POST", "/plugins/faulty/level", r#"{"level": 1}"#),
    ("POST", "/plugins/faulty/suspend", ""),
    ("POST", "/plugins/faulty/resume", ""),
    ("POST", "/plugins/faulty/call", "hello"),
    ("POST", "/plugins/nobody/call", "hello"),
    ("GET", "/no-such-endpoint", ""),
];

#[test]
fn without_the_right_token_every_endpoint_but_healthz_answers_401_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = start(dir.path());
    let decisions_before = json_with_token(&daemon, "/decisions?tail=1000")
        .as_array()
        .map_or(0, Vec::len);
    let wrong = [
        None,
        Some("Bearer wrong-horse".to_owned()),
        Some(format!("Bearer {}", TOKEN.to_uppercase())),
        Some(format!("Bearer {TOKEN}x")),
        Some(format!("Bearer {}", &TOKEN[..TOKEN.len() - 1])),
        Some(format!("Basic {TOKEN}")),
        Some(format!("bearer{TOKEN}")),
        Some("Bearer ".to_owned()),
        Some(TOKEN.to_owned()),
    ];
    for (method, path, body) in ENDPOINTS {
        for auth in &wrong {
            let answer = request(
                &daemon,
                method,
                path,
                auth.as_deref(),
                Body::Plain(body.as_bytes()),
            )
            .unwrap();
            assert_eq!(
                answer.status, 401,
                "{method} {path} with {auth:?}: {}",
                answer.body
            );
            assert!(
                answer.head.contains("www-authenticate: bearer"),
                "{method} {path}: {}",
                answer.head
            );
            let error: serde_json::Value = serde_json::from_str(&answer.body).unwrap();
            assert_eq!(error["error"], "unauthorized", "{method} {path}");
        }
    }
    // Nothing the refused requests asked for happened.
    assert_eq!(plugin_state(&daemon, "faulty"), "enabled");
    let plugin = json_with_token(&daemon, "/plugins/faulty");
    assert_eq!(plugin["level"], 0, "{plugin}");
    assert!(plugin["scaler"]["pin"].is_null(), "{plugin}");
    assert_eq!(
        plugin["stats"]["calls"], 0,
        "a refused call reached the plugin"
    );
    let decisions_after = json_with_token(&daemon, "/decisions?tail=1000")
        .as_array()
        .map_or(0, Vec::len);
    assert_eq!(
        decisions_before, decisions_after,
        "a refused request made a decision"
    );
    assert!(!daemon.data_dir.join("pins.json").exists());

    // The health check needs no token; with the token every endpoint answers.
    assert_eq!(
        request(&daemon, "GET", "/healthz", None, Body::None)
            .unwrap()
            .status,
        200
    );
    for (method, path, body) in ENDPOINTS {
        let answer = request(
            &daemon,
            method,
            path,
            Some(&bearer()),
            Body::Plain(body.as_bytes()),
        )
        .unwrap();
        let expected = if path.contains("nobody") || path == "/no-such-endpoint" {
            404
        } else {
            200
        };
        assert_eq!(answer.status, expected, "{method} {path}: {}", answer.body);
    }
}

#[test]
fn request_bodies_are_limited_however_they_are_sent() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = start(dir.path());
    let auth = Some(bearer());
    let auth = auth.as_deref();
    let too_large = |answer: Answer, what: &str| {
        assert_eq!(answer.status, 413, "{what}: {}", answer.body);
        assert!(
            answer.body.contains("larger than 1024 bytes"),
            "{what}: {}",
            answer.body
        );
    };
    for path in [
        "/plugins/faulty/call",
        "/plugins/faulty/disable",
        "/plugins/faulty/level",
    ] {
        // One byte over the limit, with its length declared.
        too_large(
            request(&daemon, "POST", path, auth, Body::Plain(&[b' '; 1025])).unwrap(),
            path,
        );
        // A length of a terabyte declared and nothing sent: refused from the head alone,
        // without waiting for the body.
        too_large(
            request(&daemon, "POST", path, auth, Body::DeclaredOnly(1 << 40)).unwrap(),
            path,
        );
        // Chunked, so no length is declared: refused once the chunks pass the limit.
        too_large(
            request(
                &daemon,
                "POST",
                path,
                auth,
                Body::Chunked {
                    chunk: 512,
                    chunks: 64,
                },
            )
            .unwrap(),
            path,
        );
    }
    // At the limit, a call goes through.
    let answer = request(
        &daemon,
        "POST",
        "/plugins/faulty/call",
        auth,
        Body::Plain(&[b'x'; 1024]),
    )
    .unwrap();
    assert_eq!(answer.status, 200, "{}", answer.body);
    // A JSON body nested past the parser's depth limit is a 400, not a stack overflow.
    let deep = "[".repeat(1000);
    let answer = request(
        &daemon,
        "POST",
        "/plugins/faulty/level",
        auth,
        Body::Plain(deep.as_bytes()),
    )
    .unwrap();
    assert_eq!(answer.status, 400, "{}", answer.body);
    // A head far larger than any client needs is refused and the daemon goes on.
    let host = daemon.url.trim_start_matches("http://");
    let mut stream = TcpStream::connect(host).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let huge = format!(
        "GET /status HTTP/1.1\r\nHost: {host}\r\nX-Padding: {}\r\nConnection: close\r\n\r\n",
        "p".repeat(256 * 1024)
    );
    let _ = stream.write_all(huge.as_bytes());
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    assert!(
        !response.starts_with("HTTP/1.1 200"),
        "a 256 KiB header was accepted"
    );
    assert_eq!(plugin_state(&daemon, "faulty"), "enabled");
    assert_eq!(
        request(&daemon, "GET", "/healthz", None, Body::None)
            .unwrap()
            .status,
        200
    );
}

/// The `at` of every sample in the daemon's telemetry logs, in milliseconds, in order.
fn sample_times(daemon: &Daemon) -> Vec<u64> {
    let mut times: Vec<u64> = daemon
        .log_records("telemetry-")
        .iter()
        .filter(|record| record["type"] == "sample")
        .filter_map(|record| record["at"].as_u64())
        .collect();
    times.sort_unstable();
    times
}

/// The requests of the flood, each with the status it must get: the authenticated ones their
/// real answer (a call, a malformed level, a read), the one without a token 401.
const FLOOD: [(&str, &str, bool, &[u8], u16); 6] = [
    ("GET", "/status", true, b"", 200),
    ("GET", "/metrics", true, b"", 200),
    ("POST", "/plugins/stubs/call", true, b"hi", 200),
    ("POST", "/plugins/stubs/call", false, b"hi", 401),
    ("POST", "/plugins/stubs/level", true, b"{", 400),
    ("GET", "/plugins", true, b"", 200),
];

/// The monitor's interval in the config of these tests.
const SAMPLE_INTERVAL_MS: u64 = 200;

#[test]
fn a_flood_of_requests_leaves_the_daemon_answering_sampling_and_deciding() {
    const CLIENTS: usize = 8;
    const REQUESTS_PER_CLIENT: usize = 750;
    const IDLE_CONNECTIONS: usize = 200;
    // The flood goes on at least this long, so that a monitor that stops sampling under it
    // leaves a gap far larger than the bound below, whatever the machine's speed.
    const FLOOD_AT_LEAST: Duration = Duration::from_secs(6);
    // Bounds generous enough for a loaded machine (the largest gap is typically under 1 s):
    // the monitor samples every 200 ms, so 15 missed ticks in a row is a monitor that stopped;
    // a health check that waits seconds is a daemon that stopped answering.
    const MAX_SAMPLE_GAP_MS: u64 = 15 * SAMPLE_INTERVAL_MS;
    const MAX_HEALTHZ_LATENCY: Duration = Duration::from_secs(5);
    let dir = tempfile::tempdir().unwrap();
    let mut daemon = start(dir.path());
    // Idle connections that never send a request, held through the flood.
    let host = daemon.url.trim_start_matches("http://").to_owned();
    let idle: Vec<TcpStream> = (0..IDLE_CONNECTIONS)
        .filter_map(|_| TcpStream::connect(&host).ok())
        .collect();
    assert_eq!(idle.len(), IDLE_CONNECTIONS);
    let flood_started = now_ms();
    let started = Instant::now();
    let mut latencies: Vec<Duration> = Vec::new();
    // Per request kind (an index into FLOOD), how many got each status.
    let mut statuses = vec![std::collections::BTreeMap::<u16, usize>::new(); FLOOD.len()];
    std::thread::scope(|scope| {
        let flooders: Vec<_> = (0..CLIENTS)
            .map(|client| {
                let daemon = &daemon;
                scope.spawn(move || {
                    let token = bearer();
                    let mut seen = Vec::new();
                    let mut i = 0;
                    while i < REQUESTS_PER_CLIENT || started.elapsed() < FLOOD_AT_LEAST {
                        let kind = (client + i) % FLOOD.len();
                        let (method, path, authenticated, body, _) = FLOOD[kind];
                        let auth = authenticated.then_some(token.as_str());
                        let answer = request(daemon, method, path, auth, Body::Plain(body))
                            .unwrap_or_else(|e| panic!("{method} {path} got no answer: {e}"));
                        seen.push((kind, answer.status));
                        i += 1;
                    }
                    seen
                })
            })
            .collect();
        // Meanwhile: the health check answers, and an operator's pin is applied.
        let mut pinned = false;
        while flooders.iter().any(|f| !f.is_finished()) {
            let asked = Instant::now();
            let answer = request(&daemon, "GET", "/healthz", None, Body::None)
                .unwrap_or_else(|e| panic!("/healthz got no answer during the flood: {e}"));
            assert_eq!(answer.status, 200, "/healthz: {}", answer.body);
            latencies.push(asked.elapsed());
            if !pinned && started.elapsed() > Duration::from_millis(300) {
                let answer = request(
                    &daemon,
                    "POST",
                    "/plugins/faulty/disable",
                    Some(&bearer()),
                    Body::None,
                )
                .unwrap();
                assert_eq!(answer.status, 200, "{}", answer.body);
                pinned = true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        for flooder in flooders {
            for (kind, status) in flooder.join().unwrap() {
                *statuses[kind].entry(status).or_default() += 1;
            }
        }
    });
    let flood = started.elapsed();
    let flood_ended = now_ms();
    drop(idle);
    // Every flood request was answered with what it asked for: per kind, only its status.
    let total: usize = statuses.iter().flat_map(|s| s.values()).sum();
    assert!(total >= CLIENTS * REQUESTS_PER_CLIENT, "{total} requests");
    for (kind, (method, path, authenticated, _, expected)) in FLOOD.iter().enumerate() {
        let got = &statuses[kind];
        assert!(
            got.keys().all(|s| s == expected) && got.get(expected).is_some_and(|n| *n > 0),
            "{method} {path} (token: {authenticated}) must answer {expected}; got {got:?}"
        );
    }
    // The operator's pin, sent in the middle of the flood, was applied.
    daemon.wait_until(Duration::from_secs(30), "faulty pinned off", |d| {
        plugin_state(d, "faulty") == "disabled"
    });
    // The monitor kept sampling through the flood: no long gap between the flood's start, the
    // samples taken during it and its end.
    daemon.wait_until(Duration::from_secs(10), "telemetry written", |d| {
        sample_times(d).iter().any(|t| *t > flood_ended)
    });
    let during: Vec<u64> = sample_times(&daemon)
        .into_iter()
        .filter(|t| (flood_started..=flood_ended).contains(t))
        .collect();
    let max_gap = std::iter::once(flood_started)
        .chain(during.iter().copied())
        .chain(std::iter::once(flood_ended))
        .collect::<Vec<_>>()
        .windows(2)
        .map(|w| w[1] - w[0])
        .max()
        .unwrap_or(0);
    latencies.sort();
    let p = |q: f64| latencies[((latencies.len() - 1) as f64 * q) as usize];
    println!(
        "flood: {total} requests from {CLIENTS} clients and {IDLE_CONNECTIONS} idle connections in {flood:.2?} ({:.0} req/s); statuses {statuses:?}; /healthz during it: {} answers, p50 {:.1?}, max {:.1?}; {} samples during it, largest gap {max_gap} ms (interval {SAMPLE_INTERVAL_MS} ms)",
        total as f64 / flood.as_secs_f64(),
        latencies.len(),
        p(0.5),
        p(1.0),
        during.len(),
    );
    assert!(
        max_gap <= MAX_SAMPLE_GAP_MS,
        "the monitor stalled during a {flood:?} flood: a gap of {max_gap} ms between samples (at most {MAX_SAMPLE_GAP_MS} ms allowed); samples {during:?}"
    );
    assert!(
        p(1.0) <= MAX_HEALTHZ_LATENCY,
        "/healthz took {:?} to answer during the flood (at most {MAX_HEALTHZ_LATENCY:?} allowed)",
        p(1.0)
    );
}

#[test]
fn idle_connections_cannot_run_the_daemon_out_of_file_descriptors() {
    use std::os::unix::process::CommandExt;
    const FILE_LIMIT: u64 = 256;
    const IDLE_CONNECTIONS: usize = 600;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("ballast.toml");
    // Small log segments, so that the daemon opens new files while the connections are held.
    std::fs::write(
        &config,
        r#"
[default]
use_tier_thresholds = false
[default.monitor]
interval = "200ms"
resources = ["memory"]
[default.telemetry]
segment_bytes = 4096
segments = 1000
[[default.plugins]]
name = "stubs"
path = "libstubs.so"
essential = true
config = { workload = { working_set_mb = [1], cpu_duty = 0.0 } }
"#,
    )
    .unwrap();
    let port = crate::support::free_port();
    let log = dir.path().join("daemon.log");
    let data_dir = dir.path().join("data");
    let mut command = crate::support::ballast();
    command
        .args(["run", "--config"])
        .arg(&config)
        .arg("--data-dir")
        .arg(&data_dir)
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .env("BALLAST_PLUGIN_DIR", crate::support::plugin_dir())
        .env("BALLAST_LOG", "info")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap());
    // SAFETY: setrlimit(2) is async-signal-safe and touches only the child about to exec.
    unsafe {
        command.pre_exec(|| {
            let limit = libc::rlimit {
                rlim_cur: FILE_LIMIT,
                rlim_max: FILE_LIMIT,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = command.spawn().unwrap();
    struct Kill<'a>(&'a mut std::process::Child);
    impl Drop for Kill<'_> {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let child = Kill(&mut child);
    let address = format!("127.0.0.1:{port}");
    let healthz = || -> bool {
        TcpStream::connect(&address)
            .and_then(|mut s| {
                s.set_read_timeout(Some(Duration::from_secs(30)))?;
                s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")?;
                let mut answer = String::new();
                s.read_to_string(&mut answer)?;
                Ok(answer.starts_with("HTTP/1.1 200"))
            })
            .unwrap_or(false)
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while !healthz() {
        assert!(Instant::now() < deadline, "the daemon did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    let segments = |dir: &std::path::Path| {
        std::fs::read_dir(dir)
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with("telemetry-"))
            .count()
    };
    let idle: Vec<TcpStream> = (0..IDLE_CONNECTIONS)
        .filter_map(|_| TcpStream::connect(&address).ok())
        .collect();
    // Every one of them was opened (those past the API's cap wait in the kernel's backlog), so
    // the daemon holds as many as it will take.
    assert_eq!(
        idle.len(),
        IDLE_CONNECTIONS,
        "only {} of {IDLE_CONNECTIONS} idle connections could be opened",
        idle.len()
    );
    // While they are held, the daemon must open files: wait until it has opened two new log
    // segments (one every second or so at this segment size).
    let segments_before = segments(&data_dir);
    let mut segments_during = segments_before;
    let opened = ballast_testkit::wait_for(
        "two new log segments while the connections are held",
        Duration::from_secs(30),
        Duration::from_millis(50),
        || {
            segments_during = segments(&data_dir);
            segments_during >= segments_before + 2
        },
    );
    drop(idle);
    let deadline = Instant::now() + Duration::from_secs(60);
    while !healthz() {
        assert!(
            Instant::now() < deadline,
            "the API did not recover once the idle connections closed"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(child);
    let log = std::fs::read_to_string(&log).unwrap();
    assert!(
        !log.contains("Too many open files"),
        "{IDLE_CONNECTIONS} idle connections ran a daemon limited to {FILE_LIMIT} files out of descriptors:\n{}",
        log.lines()
            .filter(|l| l.contains("Too many open files"))
            .take(3)
            .collect::<Vec<_>>()
            .join("\n")
    );
    if let Err(error) = opened {
        panic!(
            "{error}: no new log segment was opened while the connections were held ({segments_before} -> {segments_during}); log:\n{log}"
        );
    }
}
