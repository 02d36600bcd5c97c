//! Handler tests against a real `AppState`: the example plugins in a real `PluginHostActor`, a
//! real `ScalerActor` and a `LiveView`, through `actix_web::test`.

use std::io::Write as _;
use std::time::Duration;

use actix_web::body::MessageBody;
use actix_web::dev::ServiceResponse;
use actix_web::http::{Method, StatusCode, header};
use actix_web::{App, test, web};
use ballast_host::Call;
use serde_json::Value;

use super::routes;
use crate::testing::{
    Options, app_state, plugin, publish_figures, slow_faulty, talker, wait_for_state,
};

/// The API's service around `state`, for `test::call_service`.
macro_rules! service {
    ($state:expr) => {
        test::init_service(
            App::new()
                .app_data(web::Data::new($state.clone()))
                .configure(routes),
        )
    };
}

fn post(path: &str, body: impl Into<Vec<u8>>) -> test::TestRequest {
    test::TestRequest::post().uri(path).set_payload(body.into())
}

async fn json_of(response: ServiceResponse) -> (StatusCode, Value) {
    let status = response.status();
    let bytes = test::read_body(response).await;
    let value = serde_json::from_slice(&bytes)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&bytes)));
    (status, value)
}

#[actix_web::test]
async fn health_status_and_plugins_answer_json() {
    let state = app_state(Options::default()).await;
    publish_figures(&state).await;
    let app = service!(state).await;

    let (status, health) = json_of(
        test::call_service(&app, test::TestRequest::get().uri("/healthz").to_request()).await,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(health["status"], "ok");

    let (status, body) = json_of(
        test::call_service(&app, test::TestRequest::get().uri("/status").to_request()).await,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["mode"], "enforce");
    let memory = &body["resources"][0];
    assert_eq!(memory["resource"], "memory");
    assert_eq!(memory["value"], 0.375);
    // The predictor smoothed the start's 0.25 and this 0.375 with weight 0.7 on the newest.
    assert!(
        (memory["smoothed"].as_f64().unwrap() - 0.3375).abs() < 1e-9,
        "{memory}"
    );
    // The forecast and its confidence are the predictor's latest.
    let assessed = state.live.assessment().unwrap();
    let forecast = assessed
        .get(ballast_core::Resource::Memory)
        .unwrap()
        .forecast
        .clone()
        .expect("a forecast, if only the fallback");
    assert_eq!(memory["forecast"], forecast.value);
    assert_eq!(memory["confidence"], forecast.confidence);
    let names: Vec<&str> = body["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["stubs", "voice"]);

    let (status, list) = json_of(
        test::call_service(&app, test::TestRequest::get().uri("/plugins").to_request()).await,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let voice = list
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "voice")
        .unwrap();
    assert_eq!(voice["state"], "enabled");
    assert_eq!(voice["level"], 0);
    assert_eq!(voice["scaler"]["placement"], "on");
    assert!(voice.get("info").is_none());

    let (status, one) = json_of(
        test::call_service(
            &app,
            test::TestRequest::get().uri("/plugins/voice").to_request(),
        )
        .await,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(one["info"]["name"], "voice");
    assert!(one["stats"]["latency_p95_us"].is_u64());
    assert_eq!(one["scaler"]["pin"], Value::Null);
}

#[actix_web::test]
async fn a_disabled_plugin_answers_503_with_its_state_reason_and_since() {
    let state = app_state(Options::default()).await;
    let app = service!(state).await;

    let response = test::call_service(
        &app,
        post("/plugins/voice/call", "hello")
            .insert_header(("X-Ballast-Caller", "app"))
            .to_request(),
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    let answer = test::read_body(response).await;
    assert!(
        String::from_utf8_lossy(&answer).contains("hello"),
        "{answer:?}"
    );

    let (status, pinned) = json_of(
        test::call_service(
            &app,
            post("/plugins/voice/disable", r#"{"for": "10m"}"#).to_request(),
        )
        .await,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{pinned}");
    assert_eq!(pinned["action"], "disable");
    assert_eq!(pinned["duration"], "10m");
    assert_eq!(pinned["plugin_view"]["scaler"]["pin"]["target"], "off");
    assert!(pinned["plugin_view"]["scaler"]["pin"]["until"].is_u64());
    wait_for_state(&state, "voice", "disabled").await;

    let response = test::call_service(
        &app,
        post("/plugins/voice/call?caller=app", "hello").to_request(),
    )
    .await;
    let (status, body) = json_of(response).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body["error"], "degraded");
    assert_eq!(body["plugin"], "voice");
    assert_eq!(body["state"], "disabled");
    assert!(
        body["reason"]
            .as_str()
            .unwrap()
            .contains("operator pinned it off"),
        "{body}"
    );
    assert!(body["since"].as_u64().unwrap() > 0);
    assert!(
        body["since_rfc3339"].as_str().unwrap().ends_with('Z'),
        "{body}"
    );
    assert!(body["message"].as_str().unwrap().contains("voice"));

    // Both calls were tallied for the caller, one of them degraded.
    let tallies = state.live.take_calls();
    let app_calls = tallies.iter().find(|t| t.caller == "app").unwrap();
    assert_eq!((app_calls.calls, app_calls.degraded), (2, 1));

    // The pin is a decision; releasing it is another; enabling pins it back on.
    let (status, released) =
        json_of(test::call_service(&app, post("/plugins/voice/release", "").to_request()).await)
            .await;
    assert_eq!(status, StatusCode::OK, "{released}");
    assert_eq!(released["plugin_view"]["scaler"]["pin"], Value::Null);
    let (_, decisions) = json_of(
        test::call_service(
            &app,
            test::TestRequest::get()
                .uri("/decisions?tail=2")
                .to_request(),
        )
        .await,
    )
    .await;
    let rules: Vec<&str> = decisions
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["rule"].as_str().unwrap())
        .collect();
    assert_eq!(rules, ["pinned", "released"]);
    let (_, last) = json_of(
        test::call_service(
            &app,
            test::TestRequest::get()
                .uri("/decisions?tail=1")
                .to_request(),
        )
        .await,
    )
    .await;
    assert_eq!(last.as_array().unwrap().len(), 1);

    let (status, enabled) =
        json_of(test::call_service(&app, post("/plugins/voice/enable", "").to_request()).await)
            .await;
    assert_eq!(status, StatusCode::OK, "{enabled}");
    assert_eq!(enabled["plugin_view"]["scaler"]["pin"]["target"], "on");
    assert_eq!(enabled["plugin_view"]["scaler"]["pin"]["level"], 0);
    wait_for_state(&state, "voice", "enabled").await;
    let response =
        test::call_service(&app, post("/plugins/voice/call", "again").to_request()).await;
    assert_eq!(response.status(), StatusCode::OK);
}

#[actix_web::test]
async fn a_level_pin_moves_the_plugin_and_a_missing_level_is_refused() {
    let state = app_state(Options::default()).await;
    let app = service!(state).await;
    let (status, body) = json_of(
        test::call_service(
            &app,
            post("/plugins/voice/level", r#"{"level": 1, "for": "5m"}"#).to_request(),
        )
        .await,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["plugin_view"]["scaler"]["pin"]["level"], 1);
    for _ in 0..2000 {
        if state.plugin_host.status("voice").unwrap().state
            == (ballast_core::PluginState::Enabled {
                level: ballast_core::Level(1),
            })
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let (_, voice) = json_of(
        test::call_service(
            &app,
            test::TestRequest::get().uri("/plugins/voice").to_request(),
        )
        .await,
    )
    .await;
    assert_eq!(voice["level"], 1);

    let (status, body) =
        json_of(test::call_service(&app, post("/plugins/voice/level", "{}").to_request()).await)
            .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("missing `level`"),
        "{body}"
    );

    let (status, body) = json_of(
        test::call_service(
            &app,
            post("/plugins/voice/level", r#"{"level": 7}"#).to_request(),
        )
        .await,
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        body["message"].as_str().unwrap().contains("no level 7"),
        "{body}"
    );

    // The duration may also come in the query string.
    let (status, body) = json_of(
        test::call_service(&app, post("/plugins/voice/enable?for=90s", "").to_request()).await,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["duration"], "90s");
    assert_eq!(body["message"], "pinned `voice` on at level 0 for 90s");
}

#[actix_web::test]
async fn suspend_and_resume_go_to_the_host() {
    let state = app_state(Options::default()).await;
    let app = service!(state).await;
    let (status, body) =
        json_of(test::call_service(&app, post("/plugins/voice/suspend", "").to_request()).await)
            .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["plugin_view"]["state"], "suspended");
    assert_eq!(
        body["message"],
        "suspended `voice`: its calls answer 503 until it is resumed"
    );
    let (status, body) =
        json_of(test::call_service(&app, post("/plugins/voice/call", "x").to_request()).await)
            .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body["state"], "suspended");
    let (status, body) =
        json_of(test::call_service(&app, post("/plugins/voice/resume", "").to_request()).await)
            .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["plugin_view"]["state"], "enabled");
}

#[actix_web::test]
async fn a_full_plugin_answers_429_with_retry_after() {
    let state = app_state(Options {
        plugins: vec![slow_faulty(3000)],
        ..Options::default()
    })
    .await;
    let app = service!(state).await;
    // The first call is queued at the host actor before the API's call, and holds the only
    // permit for seconds; the queue is zero, so the API's call is refused at once.
    let first = state.host.send(Call {
        plugin: "faulty".into(),
        request: b"slow".to_vec(),
        options: None,
    });
    let response = test::call_service(&app, post("/plugins/faulty/call", "x").to_request()).await;
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(response.headers().get(header::RETRY_AFTER).unwrap(), "1");
    let (_, body) = json_of(response).await;
    assert_eq!(body["error"], "busy");
    assert_eq!(
        (body["limit"].as_u64(), body["queue"].as_u64()),
        (Some(1), Some(0))
    );
    assert!(first.await.unwrap().is_ok());
}

#[actix_web::test]
async fn a_call_past_its_timeout_answers_504() {
    let mut faulty = slow_faulty(2000);
    faulty.call_timeout = Duration::from_millis(50);
    let state = app_state(Options {
        plugins: vec![faulty],
        ..Options::default()
    })
    .await;
    let app = service!(state).await;
    let (status, body) = json_of(
        test::call_service(
            &app,
            post("/plugins/faulty/call?caller=app", "x").to_request(),
        )
        .await,
    )
    .await;
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT, "{body}");
    assert_eq!(body["error"], "timeout");
    assert_eq!(body["timeout_ms"], 50);
    let tallies = state.live.take_calls();
    assert_eq!((tallies[0].calls, tallies[0].failures), (1, 1));
}

#[actix_web::test]
async fn unknown_plugins_and_paths_answer_404() {
    let state = app_state(Options::default()).await;
    let app = service!(state).await;
    for request in [
        test::TestRequest::get().uri("/plugins/nope"),
        post("/plugins/nope/call", "x"),
        post("/plugins/nope/disable", ""),
        post("/plugins/nope/suspend", ""),
        post("/plugins/nope/level", r#"{"level": 0}"#),
    ] {
        let (status, body) = json_of(test::call_service(&app, request.to_request()).await).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
        assert_eq!(body["error"], "unknown_plugin");
        assert_eq!(body["plugin"], "nope");
    }
    let (status, body) =
        json_of(test::call_service(&app, test::TestRequest::get().uri("/nope").to_request()).await)
            .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["error"], "not_found");
    for (request, allowed) in [
        (
            test::TestRequest::get().uri("/plugins/voice/disable"),
            "use POST",
        ),
        (test::TestRequest::post().uri("/plugins"), "use GET"),
        (test::TestRequest::delete().uri("/plugins/voice"), "use GET"),
    ] {
        let (status, body) = json_of(test::call_service(&app, request.to_request()).await).await;
        assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED, "{body}");
        assert!(
            body["message"].as_str().unwrap().ends_with(allowed),
            "{body}"
        );
    }
}

#[actix_web::test]
async fn bad_bodies_and_queries_answer_400_saying_what_is_wrong() {
    let state = app_state(Options::default()).await;
    let app = service!(state).await;
    let cases: [(test::TestRequest, &str); 8] = [
        (
            post("/plugins/voice/disable", "{not json"),
            "invalid JSON body",
        ),
        (
            post("/plugins/voice/disable", r#"{"for": "soon"}"#),
            "invalid duration `soon`",
        ),
        (
            post("/plugins/voice/disable", r#"{"bogus": 1}"#),
            "unknown field `bogus`",
        ),
        (
            post("/plugins/voice/disable", r#"{"level": 1}"#),
            "`level` is not accepted",
        ),
        (
            post("/plugins/voice/release", r#"{"for": "1m"}"#),
            "`for` is not accepted",
        ),
        (
            post("/plugins/voice/call?caller=a%20b", "x"),
            "invalid caller name",
        ),
        (
            test::TestRequest::get().uri("/decisions?tail=many"),
            "invalid query string",
        ),
        (
            test::TestRequest::get().uri("/events?types=gossip"),
            "unknown event type `gossip`",
        ),
    ];
    for (request, expected) in cases {
        let (status, body) = json_of(test::call_service(&app, request.to_request()).await).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(body["error"], "bad_request");
        let message = body["message"].as_str().unwrap();
        assert!(message.contains(expected), "{message:?} lacks {expected:?}");
    }
}

#[actix_web::test]
async fn bodies_over_the_limit_answer_413() {
    let state = app_state(Options {
        max_body_bytes: 64,
        ..Options::default()
    })
    .await;
    let app = service!(state).await;
    for path in ["/plugins/voice/call", "/plugins/voice/disable"] {
        let (status, body) =
            json_of(test::call_service(&app, post(path, vec![b' '; 65]).to_request()).await).await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{path}: {body}");
        assert_eq!(body["error"], "payload_too_large");
        assert!(body["message"].as_str().unwrap().contains("64 bytes"));
    }
    let response = test::call_service(
        &app,
        post("/plugins/voice/call", vec![b'x'; 64]).to_request(),
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
}

/// Every endpoint, with a body that it would accept.
fn every_endpoint() -> Vec<(Method, &'static str, &'static str)> {
    vec![
        (Method::GET, "/status", ""),
        (Method::GET, "/plugins", ""),
        (Method::GET, "/plugins/voice", ""),
        (Method::POST, "/plugins/voice/enable", ""),
        (Method::POST, "/plugins/voice/disable", ""),
        (Method::POST, "/plugins/voice/release", ""),
        (Method::POST, "/plugins/voice/level", r#"{"level": 0}"#),
        (Method::POST, "/plugins/voice/suspend", ""),
        (Method::POST, "/plugins/voice/resume", ""),
        (Method::POST, "/plugins/stubs/call", "x"),
        (Method::GET, "/plugins/voice/preflight?level=1", ""),
        (Method::GET, "/plugins/talker/logs?tail=3", ""),
        (Method::GET, "/decisions?tail=5", ""),
        (Method::GET, "/events", ""),
        (Method::GET, "/metrics", ""),
        (Method::GET, "/no-such-endpoint", ""),
    ]
}

#[actix_web::test]
async fn with_a_token_every_endpoint_but_healthz_needs_it() {
    let dir = tempfile::tempdir().unwrap();
    let state = app_state(Options {
        token: Some("correct-horse".into()),
        plugins: vec![
            plugin("voice", 10),
            plugin("stubs", 100),
            talker(dir.path()),
        ],
        data_dir: Some(dir.path().to_owned()),
        ..Options::default()
    })
    .await;
    let app = service!(state).await;
    let request = |method: &Method, path: &str, body: &str| {
        test::TestRequest::default()
            .method(method.clone())
            .uri(path)
            .set_payload(body.to_owned())
    };
    for (method, path, body) in every_endpoint() {
        for auth in [
            None,
            Some("Bearer wrong-horse"),
            Some("Basic correct-horse"),
            Some("Bearer "),
        ] {
            let mut r = request(&method, path, body);
            if let Some(auth) = auth {
                r = r.insert_header((header::AUTHORIZATION, auth));
            }
            let response = test::call_service(&app, r.to_request()).await;
            assert!(response.headers().contains_key(header::WWW_AUTHENTICATE));
            let (status, body) = json_of(response).await;
            assert_eq!(
                status,
                StatusCode::UNAUTHORIZED,
                "{method} {path} with {auth:?}"
            );
            assert_eq!(body["error"], "unauthorized");
        }
        let response = test::call_service(
            &app,
            request(&method, path, body)
                .insert_header((header::AUTHORIZATION, "Bearer correct-horse"))
                .to_request(),
        )
        .await;
        let expected = if path == "/no-such-endpoint" {
            StatusCode::NOT_FOUND
        } else {
            StatusCode::OK
        };
        assert_eq!(
            response.status(),
            expected,
            "{method} {path} with the token"
        );
    }
    let response =
        test::call_service(&app, test::TestRequest::get().uri("/healthz").to_request()).await;
    assert_eq!(response.status(), StatusCode::OK);
}

/// The next chunk of a streaming body, waiting at most a few seconds.
async fn next_chunk(body: &mut (impl MessageBody + Unpin)) -> String {
    let chunk = tokio::time::timeout(
        Duration::from_secs(10),
        std::future::poll_fn(|cx| std::pin::Pin::new(&mut *body).poll_next(cx)),
    )
    .await
    .expect("an event arrives")
    .expect("the stream goes on")
    .unwrap_or_else(|_| panic!("the stream fails"));
    String::from_utf8_lossy(&chunk).into_owned()
}

#[actix_web::test]
async fn the_event_stream_delivers_published_events() {
    let state = app_state(Options::default()).await;
    let app = service!(state).await;
    let response = test::call_service(
        &app,
        test::TestRequest::get()
            .uri("/events?types=sample,decision")
            .to_request(),
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers().get(header::CONTENT_TYPE).unwrap(),
        "text/event-stream"
    );
    let mut body = response.into_body();
    assert_eq!(next_chunk(&mut body).await, ": connected\n\n");
    // An assessment is filtered out; the sample comes through.
    publish_figures(&state).await;
    let chunk = next_chunk(&mut body).await;
    assert!(chunk.starts_with("event: sample\ndata: {"), "{chunk}");
    assert!(chunk.ends_with("}\n\n"), "{chunk}");
    let data: Value = serde_json::from_str(
        chunk
            .trim_end()
            .strip_prefix("event: sample\ndata: ")
            .unwrap(),
    )
    .unwrap();
    assert_eq!(data["type"], "sample");
    assert_eq!(data["cpu"]["value"]["cores"], 8);
}

fn promtool(text: &str) -> std::process::Output {
    let mut child = match std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
    {
        Ok(child) => child,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
            "promtool is not on PATH: install the `prometheus` package (apt-get install prometheus) to run this test"
        ),
        Err(e) => panic!("cannot run promtool: {e}"),
    };
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

#[actix_web::test]
async fn metrics_pass_promtool_and_cover_resources_plugins_and_decisions() {
    let dir = tempfile::tempdir().unwrap();
    let state = app_state(Options {
        plugins: vec![
            plugin("voice", 10),
            plugin("stubs", 100),
            talker(dir.path()),
        ],
        ..Options::default()
    })
    .await;
    publish_figures(&state).await;
    // The process plugin's tree has been measured: its figures are in the metrics below.
    let measured = || {
        state.plugin_host.status("talker").is_ok_and(|s| {
            s.stats
                .process
                .is_some_and(|p| p.processes >= 1 && p.rss_bytes > 0 && p.threads >= 1)
        })
    };
    for _ in 0..4000 {
        if measured() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(measured(), "the talker's process was never measured");
    let app = service!(state).await;
    // A call, a degraded call and a pin, so that every family has samples.
    let _ = test::call_service(&app, post("/plugins/voice/call", "hi").to_request()).await;
    let _ = test::call_service(&app, post("/plugins/voice/disable", "").to_request()).await;
    wait_for_state(&state, "voice", "disabled").await;
    let _ = test::call_service(&app, post("/plugins/voice/call", "hi").to_request()).await;
    for _ in 0..2000 {
        if !state.live.decisions(1).is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }

    let response = test::call_service(
        &app,
        test::TestRequest::get()
            .uri("/metrics")
            .insert_header((header::ACCEPT, "text/plain"))
            .to_request(),
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(
        response
            .headers()
            .get(header::CONTENT_TYPE)
            .unwrap()
            .to_str()
            .unwrap()
            .starts_with("text/plain; version=0.0.4")
    );
    let text = String::from_utf8(test::read_body(response).await.to_vec()).unwrap();
    let output = promtool(&text);
    assert!(
        output.status.success(),
        "promtool check metrics failed:\n{}{}\n--- metrics ---\n{text}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    // The smoothed value and the forecast are the predictor's, of the start's 0.25 and 0.375.
    let memory = state
        .live
        .assessment()
        .unwrap()
        .get(ballast_core::Resource::Memory)
        .cloned()
        .unwrap();
    let forecast = memory
        .forecast
        .clone()
        .expect("a forecast, if only the fallback");
    for expected in [
        r#"ballast_resource_utilization_ratio{resource="memory"} 0.375"#,
        r#"ballast_resource_smoothed_ratio{resource="memory"} 0.3375"#,
        &format!(
            r#"ballast_resource_forecast_ratio{{resource="memory"}} {}"#,
            forecast.value
        ),
        &format!(
            r#"ballast_resource_forecast_confidence_ratio{{resource="memory"}} {}"#,
            forecast.confidence
        ),
        r#"ballast_psi_stall_ratio{resource="memory",kind="some",window="10s"} 0.015"#,
        r#"ballast_plugin_state{plugin="voice",state="disabled"} 1"#,
        r#"ballast_plugin_level{plugin="stubs"} 0"#,
        r#"ballast_plugin_calls_total{plugin="voice"} 1"#,
        r#"ballast_plugin_call_duration_seconds_count{plugin="voice",outcome="degraded"} 1"#,
        r#"ballast_caller_calls_total{caller="-",outcome="ok"} 1"#,
        r#"ballast_caller_calls_total{caller="-",outcome="refused"} 1"#,
        r#"ballast_decisions_total{kind="override",action="disable",rule="pinned",applied="true"} 1"#,
        r#"ballast_scaler_mode{mode="enforce"} 1"#,
        "# TYPE ballast_plugin_live_bytes gauge",
        "# TYPE ballast_plugin_errors_total counter",
        "# TYPE ballast_plugin_timeouts_total counter",
        "# TYPE ballast_psi_stall_seconds_total counter",
        r#"ballast_plugin_state{plugin="talker",state="enabled"} 1"#,
        r#"ballast_plugin_restarts_total{plugin="talker"} 0"#,
        "ballast_plugin_process_threads{plugin=\"talker\"} ",
        "ballast_plugin_process_resident_memory_bytes{plugin=\"talker\"} ",
        "ballast_plugin_process_open_fds{plugin=\"talker\"} ",
        "# TYPE ballast_plugin_process_cpu_seconds_total counter",
        "# TYPE ballast_plugin_process_storage_read_bytes_total counter",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in\n{text}");
    }

    // Without asking for the classic format, the answer is OpenMetrics.
    let response =
        test::call_service(&app, test::TestRequest::get().uri("/metrics").to_request()).await;
    assert_eq!(
        response.headers().get(header::CONTENT_TYPE).unwrap(),
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    );
    let text = String::from_utf8(test::read_body(response).await.to_vec()).unwrap();
    assert!(text.ends_with("# EOF\n"));
    assert!(text.contains("# TYPE ballast_plugin_calls counter"));
}

/// Waits until `test` holds for the text at `path` (bounded).
async fn wait_for_file(path: &std::path::Path, what: &str, test: impl Fn(&str) -> bool) {
    for _ in 0..4000 {
        if test(&std::fs::read_to_string(path).unwrap_or_default()) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("timed out waiting for {what} in {}", path.display());
}

#[actix_web::test]
async fn a_process_plugins_log_is_served_tailed_and_followed() {
    let dir = tempfile::tempdir().unwrap();
    let state = app_state(Options {
        plugins: vec![plugin("stubs", 100), talker(dir.path())],
        data_dir: Some(dir.path().to_owned()),
        ..Options::default()
    })
    .await;
    let app = service!(state).await;
    let log = dir.path().join("logs/talker.log");
    wait_for_file(&log, "five lines", |t| t.contains("stdout line 5\n")).await;

    let response = test::call_service(
        &app,
        test::TestRequest::get()
            .uri("/plugins/talker/logs?tail=2")
            .to_request(),
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers().get(header::CONTENT_TYPE).unwrap(),
        "text/plain; charset=utf-8"
    );
    let text = String::from_utf8(test::read_body(response).await.to_vec()).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert!(
        lines[0].ends_with(" stdout line 4") && lines[1].ends_with(" stdout line 5"),
        "{text}"
    );

    // The plugin's view says where the log is and what runs.
    let (_, view) = json_of(
        test::call_service(
            &app,
            test::TestRequest::get().uri("/plugins/talker").to_request(),
        )
        .await,
    )
    .await;
    assert_eq!(view["kind"], "process");
    assert_eq!(view["process"]["protocol"], "none");
    assert_eq!(view["process"]["log_file"], log.display().to_string());
    assert!(view["process"]["pid"].is_number(), "{view}");

    // Following sends the tail, then what is appended.
    let response = test::call_service(
        &app,
        test::TestRequest::get()
            .uri("/plugins/talker/logs?tail=1&follow=true")
            .to_request(),
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    let mut body = response.into_body();
    assert!(next_chunk(&mut body).await.ends_with(" stdout line 5\n"));
    std::fs::write(dir.path().join("go"), "").unwrap();
    let mut more = String::new();
    while !more.contains("stdout later\n") {
        more.push_str(&next_chunk(&mut body).await);
    }

    // A plugin inside the daemon has no log of its own; bad queries are refused.
    let (status, body) = json_of(
        test::call_service(
            &app,
            test::TestRequest::get()
                .uri("/plugins/stubs/logs")
                .to_request(),
        )
        .await,
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["error"], "no_log");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("runs inside the daemon"),
        "{body}"
    );
    let (status, body) = json_of(
        test::call_service(
            &app,
            test::TestRequest::get()
                .uri("/plugins/talker/logs?tail=100000")
                .to_request(),
        )
        .await,
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let (status, _) =
        json_of(test::call_service(&app, post("/plugins/talker/logs", "").to_request()).await)
            .await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
}

/// Tests that need no actix runtime.
mod plain {
    use super::super::constant_time_eq;

    #[test]
    fn tokens_compare_equal_only_when_equal() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
        assert!(!constant_time_eq(b"", b"a"));
        assert!(!constant_time_eq(b"a", b""));
    }
}

#[actix_web::test]
async fn preflight_answers_what_fits_without_changing_anything() {
    let state = app_state(Options::default()).await;
    publish_figures(&state).await;
    let app = service!(state).await;
    let decisions = state.live.decisions(1000).len();
    let (status, body) = json_of(
        test::call_service(
            &app,
            test::TestRequest::get()
                .uri("/plugins/voice/preflight?level=0")
                .to_request(),
        )
        .await,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["plugin"], "voice");
    assert_eq!(body["level"], 0);
    // voice runs at level 0 already: nothing is added, it fits.
    assert_eq!(body["fits"], true);
    let memory = body["resources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["resource"] == "memory")
        .expect("memory is acted on");
    assert_eq!(memory["need"], 0.0);
    // The fixture machine is of the `performance` tier, whose memory shed threshold is 0.85.
    assert_eq!(memory["shed"], 0.85);
    assert!(
        (memory["pressure"].as_f64().unwrap() - 0.3375).abs() < 1e-9,
        "{memory}"
    );
    assert!(body["would_take_down"].as_array().unwrap().is_empty());
    assert_eq!(
        state.live.decisions(1000).len(),
        decisions,
        "asking decides nothing"
    );

    for (uri, status, error) in [
        (
            "/plugins/voice/preflight?level=7",
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            "/plugins/nope/preflight",
            StatusCode::NOT_FOUND,
            "unknown_plugin",
        ),
        (
            "/plugins/voice/preflight?level=-1",
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
    ] {
        let (got, body) =
            json_of(test::call_service(&app, test::TestRequest::get().uri(uri).to_request()).await)
                .await;
        assert_eq!(got, status, "{uri}: {body}");
        assert_eq!(body["error"], error, "{uri}: {body}");
    }
}

/// `method` on `path` without a token.
macro_rules! probe {
    ($app:expr, $method:expr, $path:expr) => {
        test::call_service(
            $app,
            test::TestRequest::default()
                .method($method)
                .uri($path)
                .to_request(),
        )
    };
}

#[actix_web::test]
async fn readiness_says_200_while_a_plugin_takes_calls_and_503_with_the_call_paths_answer_when_not()
{
    let mut clock = ballast_host::PluginConfig::new("clock", crate::testing::plugin_dir());
    clock.start = ballast_core::StartMode::OnDemand;
    clock.priority = 40;
    let state = app_state(Options {
        plugins: vec![plugin("voice", 10), plugin("stubs", 100), clock],
        ..Options::default()
    })
    .await;
    publish_figures(&state).await;
    let app = service!(state).await;

    let (status, daemon) = json_of(probe!(&app, Method::GET, "/ready").await).await;
    assert_eq!(status, StatusCode::OK, "{daemon}");
    assert_eq!(daemon["status"], "ready");
    assert!(daemon["assessed_at"].as_u64().unwrap() > 0);
    assert_eq!(
        daemon["plugins_ready"],
        serde_json::json!(["clock", "stubs", "voice"])
    );

    let (status, voice) = json_of(probe!(&app, Method::GET, "/plugins/voice/ready").await).await;
    assert_eq!(status, StatusCode::OK, "{voice}");
    assert_eq!(voice["plugin"], "voice");
    assert_eq!(voice["state"], "enabled");
    assert_eq!(voice["level"], 0);
    // HEAD answers the same status without a body, for checks that send HEAD.
    let head = probe!(&app, Method::HEAD, "/plugins/voice/ready").await;
    assert_eq!(head.status(), StatusCode::OK);
    // An idle on-demand plugin is ready: a call would wake it.
    let (status, idle) = json_of(probe!(&app, Method::GET, "/plugins/clock/ready").await).await;
    assert_eq!(status, StatusCode::OK, "{idle}");
    assert_eq!(idle["state"], "idle");
    assert_eq!(
        state.plugin_host.status("clock").unwrap().state.name(),
        "idle"
    );
    // Unknown names are 404, other methods 405.
    let (status, unknown) = json_of(probe!(&app, Method::GET, "/plugins/nobody/ready").await).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(unknown["error"], "unknown_plugin");
    let (status, wrong) = json_of(probe!(&app, Method::POST, "/plugins/voice/ready").await).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert!(
        wrong["message"].as_str().unwrap().ends_with("use GET"),
        "{wrong}"
    );

    // Off: 503 with the very body a call gets.
    let _ = test::call_service(&app, post("/plugins/voice/disable", "").to_request()).await;
    wait_for_state(&state, "voice", "disabled").await;
    let (status, not_ready) =
        json_of(probe!(&app, Method::GET, "/plugins/voice/ready").await).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{not_ready}");
    let (call_status, refused) =
        json_of(test::call_service(&app, post("/plugins/voice/call", "hi").to_request()).await)
            .await;
    assert_eq!(call_status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(not_ready, refused);
    assert_eq!(not_ready["state"], "disabled");
    assert!(
        not_ready["reason"]
            .as_str()
            .unwrap()
            .contains("operator pinned it off"),
        "{not_ready}"
    );
    let head = probe!(&app, Method::HEAD, "/plugins/voice/ready").await;
    assert_eq!(head.status(), StatusCode::SERVICE_UNAVAILABLE);
    // The daemon stays ready; voice is no longer among its ready plugins.
    let (status, daemon) = json_of(probe!(&app, Method::GET, "/ready").await).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        daemon["plugins_ready"],
        serde_json::json!(["clock", "stubs"])
    );

    // Suspended: not ready either, with its reason.
    let _ = test::call_service(&app, post("/plugins/stubs/suspend", "").to_request()).await;
    wait_for_state(&state, "stubs", "suspended").await;
    let (status, suspended) =
        json_of(probe!(&app, Method::GET, "/plugins/stubs/ready").await).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(suspended["state"], "suspended");
    assert_eq!(suspended["reason"], "operator suspended it through the API");

    // The metric says the same as the endpoints.
    let response = test::call_service(
        &app,
        test::TestRequest::get()
            .uri("/metrics")
            .insert_header((header::ACCEPT, "text/plain"))
            .to_request(),
    )
    .await;
    let text = String::from_utf8(test::read_body(response).await.to_vec()).unwrap();
    for line in [
        r#"ballast_plugin_ready{plugin="voice"} 0"#,
        r#"ballast_plugin_ready{plugin="stubs"} 0"#,
        r#"ballast_plugin_ready{plugin="clock"} 1"#,
        // Pinned off is not shed: the calm would not bring it back.
        r#"ballast_plugin_shed{plugin="voice"} 0"#,
        r#"ballast_plugin_flaps{plugin="voice"} 0"#,
        "ballast_ready 1",
    ] {
        assert!(text.contains(line), "missing {line:?} in\n{text}");
    }
    // The thresholds in force, as the scaler has them (the tier's profile here).
    let thresholds = state
        .scaler
        .send(ballast_scaler::actor::GetThresholdsMsg)
        .await
        .unwrap();
    let (_, memory) = thresholds
        .iter()
        .find(|(r, _)| *r == ballast_core::Resource::Memory)
        .unwrap();
    for line in [
        format!(
            r#"ballast_resource_shed_threshold_ratio{{resource="memory"}} {:?}"#,
            memory.shed
        ),
        format!(
            r#"ballast_resource_restore_threshold_ratio{{resource="memory"}} {:?}"#,
            memory.restore
        ),
    ] {
        assert!(text.contains(&line), "missing {line:?} in\n{text}");
    }
    assert!(text.contains("ballast_last_sample_time_seconds "), "{text}");
}

#[actix_web::test]
async fn readiness_needs_no_token_unless_configured() {
    for requires in [false, true] {
        let state = app_state(Options {
            token: Some("correct-horse".into()),
            ready_requires_token: requires,
            ..Options::default()
        })
        .await;
        publish_figures(&state).await;
        let app = service!(state).await;
        for path in ["/ready", "/plugins/voice/ready"] {
            let response = probe!(&app, Method::GET, path).await;
            let expected = if requires {
                StatusCode::UNAUTHORIZED
            } else {
                StatusCode::OK
            };
            assert_eq!(
                response.status(),
                expected,
                "{path}, token required: {requires}"
            );
            let with_token = test::call_service(
                &app,
                test::TestRequest::get()
                    .uri(path)
                    .insert_header((header::AUTHORIZATION, "Bearer correct-horse"))
                    .to_request(),
            )
            .await;
            assert_eq!(with_token.status(), StatusCode::OK, "{path}");
        }
        // Everything else still needs it.
        let response = probe!(&app, Method::GET, "/status").await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    }
}
