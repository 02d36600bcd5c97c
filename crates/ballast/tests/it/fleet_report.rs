//! `ballast forecast report --prometheus` when the Prometheus server cannot give it an answer:
//! nothing listens, it never answers, it answers `"status": "error"`, or an HTTP error without
//! Prometheus's body. Each is a clear message naming the URL and the query, a failing exit and no
//! report. (A real Prometheus, and one with no series for the query, is `tests/e2e/fleet_report.rs`.)

use std::io::{Read as _, Write as _};
use std::net::TcpListener;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

const CALLS_QUERY: &str = r#"sum by (instance, plugin, outcome) (ballast_plugin_call_duration_seconds_count{job="ballast"})"#;

fn report(url: &str, extra: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ballast"))
        .args([
            "forecast",
            "report",
            "--prometheus",
            url,
            "--end",
            "2026-12-06T03:00:00Z",
            "--range",
            "1h",
            "--horizon",
            "20m",
        ])
        .args(extra)
        .output()
        .expect("the ballast binary runs")
}

/// Asserts a failure with no report, whose message names `url`, the calls query and `what`.
fn assert_fails(output: &Output, url: &str, what: &str) {
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(
        output.stdout.is_empty(),
        "a report was printed: {}",
        String::from_utf8_lossy(&output.stdout)
    );
    assert!(stderr.contains(url), "the message names {url}: {stderr}");
    assert!(
        stderr.contains(CALLS_QUERY),
        "the message names the query: {stderr}"
    );
    assert!(stderr.contains(what), "the message says `{what}`: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

/// A server on a thread that answers every request with `status` and `body`.
fn answering(status: &'static str, body: &'static str) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            // Read the request: its headers, then the body they announce.
            let mut request = Vec::new();
            let mut buffer = [0_u8; 4096];
            let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
            while let Ok(n) = stream.read(&mut buffer) {
                if n == 0 {
                    break;
                }
                request.extend_from_slice(&buffer[..n]);
                let text = String::from_utf8_lossy(&request);
                if let Some(end) = text.find("\r\n\r\n") {
                    let length = text[..end]
                        .lines()
                        .find_map(|l| {
                            let (name, value) = l.split_once(':')?;
                            name.eq_ignore_ascii_case("content-length")
                                .then(|| value.trim().parse::<usize>().ok())?
                        })
                        .unwrap_or(0);
                    if request.len() >= end + 4 + length {
                        break;
                    }
                }
            }
            let _ = write!(
                stream,
                "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    url
}

#[test]
fn a_prometheus_that_is_down_is_named_with_the_query() {
    let url = crate::dead_address();
    assert_fails(&report(&url, &[]), &url, "connection refused");
}

#[test]
fn a_prometheus_that_never_answers_times_out() {
    // Connections complete in the kernel's backlog; nothing ever reads or answers them.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let started = Instant::now();
    let output = report(&url, &["--timeout", "500ms"]);
    assert_fails(&output, &url, "did not answer");
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );
    drop(listener);
}

#[test]
fn a_prometheus_error_is_named_with_the_query() {
    let url = answering(
        "422 Unprocessable Entity",
        r#"{"status":"error","errorType":"execution","error":"query processing would load too many samples into memory"}"#,
    );
    let output = report(&url, &[]);
    assert_fails(&output, &url, "refused the query");
    assert_fails(
        &output,
        &url,
        "(execution): query processing would load too many samples",
    );
}

#[test]
fn an_http_error_is_named_with_the_query() {
    let url = answering("503 Service Unavailable", "Service Unavailable");
    assert_fails(&report(&url, &[]), &url, "HTTP 503: Service Unavailable");
}

#[test]
fn an_answer_that_is_not_a_matrix_is_named_with_the_query() {
    let url = answering(
        "200 OK",
        r#"{"status":"success","data":{"resultType":"vector","result":[]}}"#,
    );
    assert_fails(
        &report(&url, &[]),
        &url,
        "where a range query gives a matrix",
    );
}

#[test]
fn too_many_points_or_a_range_within_the_horizon_are_refused_before_asking() {
    let output = report("http://127.0.0.1:9", &["--step", "100ms"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains("Prometheus answers at most 11000"),
        "{stderr}"
    );
    let output = Command::new(env!("CARGO_BIN_EXE_ballast"))
        .args([
            "forecast",
            "report",
            "--prometheus",
            "http://127.0.0.1:9",
            "--range",
            "10m",
            "--horizon",
            "20m",
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(stderr.contains("must be longer than --horizon"), "{stderr}");
}
