//! The CLI clients against a real API server on an ephemeral port (in-process, in its own
//! thread), and against no server at all.

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use super::*;
use ballast_daemon::testing::{Options, TestDaemon, plugin, talker};

fn api(daemon: &TestDaemon) -> ApiArgs {
    ApiArgs {
        api: daemon.url.clone(),
        token_file: None,
    }
}

fn text(out: Vec<u8>) -> String {
    String::from_utf8(out).expect("the CLI prints UTF-8")
}

/// `ballast plugin ARGS...` against `daemon`.
fn plugin_action(daemon: &TestDaemon, args: &[&str]) -> anyhow::Result<String> {
    let mut args: Vec<String> = args.iter().map(|s| (*s).to_owned()).collect();
    args.extend(["--api".to_owned(), daemon.url.clone()]);
    let mut out = Vec::new();
    crate::cmd::plugin::run_action(args, &mut out)?;
    Ok(text(out))
}

/// An address where nothing listens.
fn dead_address() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    drop(listener);
    format!("http://{address}")
}

#[test]
fn plugins_status_and_pins_print_tables_and_json() {
    let daemon = TestDaemon::start(Options::default());
    daemon.publish_figures();

    let mut out = Vec::new();
    let code = run_plugins(
        &PluginsArgs {
            api: api(&daemon),
            json: false,
        },
        &mut out,
    )
    .unwrap();
    assert_eq!(code, ExitCode::SUCCESS);
    let table = text(out);
    let lines: Vec<&str> = table.lines().collect();
    assert!(
        lines[0].starts_with("NAME   STATE    LEVEL  PRIORITY  ESSENTIAL  SINCE"),
        "{table}"
    );
    assert!(lines[0].ends_with("CALLS  ERRORS  P95"), "{table}");
    assert!(
        lines[1].starts_with("stubs  enabled  0      100       no"),
        "{table}"
    );
    assert!(
        lines[2].starts_with("voice  enabled  0      10        no"),
        "{table}"
    );

    let mut out = Vec::new();
    run_plugins(
        &PluginsArgs {
            api: api(&daemon),
            json: true,
        },
        &mut out,
    )
    .unwrap();
    let json: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(json[1]["name"], "voice");

    let mut out = Vec::new();
    run_status(
        &StatusArgs {
            api: api(&daemon),
            json: false,
        },
        &mut out,
    )
    .unwrap();
    let status = text(out);
    assert!(status.contains(", mode enforce\n"), "{status}");
    // The tier of the fixture machine: 16 GiB and 8 cores.
    assert!(
        status.contains("tier     performance (rank 2): `performance` because memory 16 GiB >= 15 GiB and cores 8 >= 8"),
        "{status}"
    );
    assert!(
        status.contains("memory   6 GiB used of 16 GiB\n"),
        "{status}"
    );
    assert!(
        status.contains("RESOURCE         VALUE  SMOOTHED  FORECAST  CONFIDENCE\n"),
        "{status}"
    );
    assert!(
        // The start's 0.25 then 0.375, smoothed with weight 0.7; two samples are too few for
        // anything but the low-confidence fallback forecast.
        status.contains("memory           0.38   0.34      0.34      0.00\n"),
        "{status}"
    );
    assert!(
        status.contains("plugins  2 enabled (stubs, voice)\n"),
        "{status}"
    );

    let pinned = plugin_action(&daemon, &["voice", "disable", "--for", "10m"]).unwrap();
    assert!(
        pinned.starts_with("pinned `voice` off for 10m\nNAME"),
        "{pinned}"
    );
    assert!(pinned.contains("(pinned off)"), "{pinned}");
    let level = plugin_action(&daemon, &["voice", "level", "1"]).unwrap();
    assert!(
        level.starts_with("pinned `voice` on at level 1 until released\n"),
        "{level}"
    );
    let released = plugin_action(&daemon, &["voice", "release", "--json"]).unwrap();
    let released: serde_json::Value = serde_json::from_str(&released).unwrap();
    assert_eq!(released["action"], "release");
    let shown = plugin_action(&daemon, &["voice", "show"]).unwrap();
    assert!(shown.starts_with("plugin       voice\n"), "{shown}");
    assert!(
        shown.contains("scaler       on (level 1), not pinned"),
        "{shown}"
    );

    let mut out = Vec::new();
    run_decisions(
        &DecisionsArgs {
            api: api(&daemon),
            json: false,
            tail: 3,
            follow: false,
        },
        &mut out,
    )
    .unwrap();
    let decisions = text(out);
    let lines: Vec<&str> = decisions.lines().collect();
    assert_eq!(lines.len(), 3, "{decisions}");
    assert!(
        lines[0].contains(
            "  override   voice      disable        [pinned] operator pinned it off until"
        ),
        "{decisions}"
    );
    assert!(
        lines[1].contains(
            "  override   voice      enable at 1    [pinned] operator pinned it on at level 1"
        ),
        "{decisions}"
    );
    assert!(
        lines[2].contains(
            "  override   voice      none           [released] operator released its pin"
        ),
        "{decisions}"
    );
}

#[test]
fn a_process_plugin_shows_its_process_and_its_log() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = TestDaemon::start(Options {
        plugins: vec![plugin("stubs", 100), talker(dir.path())],
        data_dir: Some(dir.path().to_owned()),
        ..Options::default()
    });
    let log = dir.path().join("logs/talker.log");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !std::fs::read_to_string(&log)
        .unwrap_or_default()
        .contains("line 5\n")
        || daemon
            .state
            .plugin_host
            .status("talker")
            .is_ok_and(|s| s.stats.process.is_none())
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the talker never wrote its lines"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let logs = plugin_action(&daemon, &["talker", "logs", "--tail", "3"]).unwrap();
    let lines: Vec<&str> = logs.lines().collect();
    assert_eq!(lines.len(), 3, "{logs}");
    assert!(lines[2].ends_with(" stdout line 5"), "{logs}");
    let show = plugin_action(&daemon, &["talker", "show"]).unwrap();
    assert!(
        show.contains("\ncommand      sh -c for i in 1 2 3 4 5;"),
        "{show}"
    );
    assert!(show.contains("(protocol none)"), "{show}");
    assert!(show.contains("\nsupervision  0 restarts\n"), "{show}");
    assert!(show.contains("\nprocess      pid "), "{show}");
    assert!(
        show.contains(&format!(
            "\nlog          {} (ballast plugin talker logs)",
            log.display()
        )),
        "{show}"
    );
    let error = plugin_action(&daemon, &["stubs", "logs"])
        .unwrap_err()
        .to_string();
    assert!(error.contains("GET /plugins/stubs/logs?tail=100 failed with 404: plugin `stubs` runs inside the daemon"), "{error}");
}

#[test]
fn usage_errors_of_plugin_actions_come_from_clap_and_bad_requests_from_the_daemon() {
    let daemon = TestDaemon::start(Options::default());
    let error = plugin_action(&daemon, &["voice", "disable", "--for", "soon"]).unwrap_err();
    let error = error.downcast::<clap::Error>().unwrap().to_string();
    assert!(error.contains("write it like 90s, 10m or 2h"), "{error}");
    let error = plugin_action(&daemon, &["nope", "disable"])
        .unwrap_err()
        .to_string();
    assert_eq!(
        error,
        "POST /plugins/nope/disable failed with 404: no plugin named `nope` is loaded"
    );
    let error = plugin_action(&daemon, &["voice", "level", "9"])
        .unwrap_err()
        .to_string();
    assert!(
        error.starts_with("POST /plugins/voice/level failed with 400: "),
        "{error}"
    );
}

#[test]
fn events_are_printed_as_they_arrive() {
    let daemon = TestDaemon::start(Options::default());
    // Publish until the client has read one: it subscribes only when its request arrives.
    let done = Arc::new(AtomicBool::new(false));
    let publisher = {
        let done = Arc::clone(&done);
        let daemon = daemon.handle();
        std::thread::spawn(move || {
            for _ in 0..1000 {
                if done.load(Ordering::Relaxed) {
                    break;
                }
                daemon.publish_figures();
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };
    let mut out = Vec::new();
    run_events(
        &EventsArgs {
            api: api(&daemon),
            json: false,
            types: vec!["assessment".into()],
        },
        &mut out,
        |printed| printed < 1,
    )
    .unwrap();
    done.store(true, Ordering::Relaxed);
    publisher.join().unwrap();
    let events = text(out);
    assert!(events.starts_with("assessment "), "{events}");
    // `memory SMOOTHED -> FORECAST (CONFIDENCE%)`: the predictor's figures of samples at 0.375
    // after the start's 0.25.
    let memory = events
        .trim_end()
        .split_once("memory ")
        .map(|(_, m)| m)
        .unwrap_or_else(|| panic!("no memory in {events}"));
    let (smoothed, forecast) = memory
        .split_once(" -> ")
        .unwrap_or_else(|| panic!("no forecast in {events}"));
    let smoothed: f64 = smoothed.parse().unwrap();
    assert!((0.33..=0.38).contains(&smoothed), "{events}");
    let (forecast, confidence) = forecast.split_once(" (").unwrap();
    assert!(forecast.parse::<f64>().is_ok(), "{events}");
    assert!(confidence.ends_with("%)"), "{events}");
}

#[test]
fn a_token_is_sent_from_the_token_file() {
    let daemon = TestDaemon::start(Options {
        token: Some("correct-horse".into()),
        ..Options::default()
    });
    let args = |token_file: Option<PathBuf>| PluginsArgs {
        api: ApiArgs {
            api: daemon.url.clone(),
            token_file,
        },
        json: true,
    };
    let error = run_plugins(&args(None), &mut Vec::new())
        .unwrap_err()
        .to_string();
    assert!(
        error.starts_with("GET /plugins failed with 401: "),
        "{error}"
    );
    assert!(error.contains("--token-file"), "{error}");

    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "correct-horse\n").unwrap();
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o600)).unwrap();
    let mut out = Vec::new();
    run_plugins(&args(Some(token)), &mut out).unwrap();
    assert!(text(out).contains("\"voice\""));
}

#[test]
fn a_daemon_that_is_not_running_is_named_with_a_hint() {
    let url = dead_address();
    let error = run_status(
        &StatusArgs {
            api: ApiArgs {
                api: url.clone(),
                token_file: None,
            },
            json: false,
        },
        &mut Vec::new(),
    )
    .unwrap_err()
    .to_string();
    assert_eq!(
        error,
        format!(
            "cannot reach the ballast daemon at {url} (connection refused): is `ballast run` running?"
        )
    );
}

/// The `ballast` binary next to this test binary (`cargo test -p ballast` builds it because the
/// crate has integration tests).
fn ballast_binary() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    // target/<profile>/deps/ballast-<hash> -> target/<profile>/ballast
    let binary = exe.parent().unwrap().parent().unwrap().join("ballast");
    assert!(
        binary.is_file(),
        "{} is missing: run the tests with `cargo test -p ballast`, which builds it",
        binary.display()
    );
    binary
}

#[test]
fn the_binary_talks_to_the_daemon() {
    let daemon = TestDaemon::start(Options::default());
    let run = |args: &[&str]| {
        std::process::Command::new(ballast_binary())
            .args(args)
            .env("BALLAST_API", &daemon.url)
            .env_remove("BALLAST_TOKEN_FILE")
            .output()
            .unwrap()
    };
    let output = run(&["plugins"]);
    assert!(output.status.success(), "{output:?}");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.starts_with("NAME "), "{stdout}");
    assert!(stdout.contains("\nvoice  enabled"), "{stdout}");

    let output = run(&["plugin", "voice", "disable", "--for", "1h"]);
    assert!(output.status.success(), "{output:?}");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.starts_with("pinned `voice` off for 1h\n"),
        "{stdout}"
    );

    let output = run(&["decisions", "--tail", "1", "--json"]);
    assert!(output.status.success(), "{output:?}");
    let decisions: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(decisions[0]["rule"], "pinned");

    let output = run(&["plugin", "nope", "enable"]);
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(
            "error: POST /plugins/nope/enable failed with 404: no plugin named `nope` is loaded"
        ),
        "{stderr}"
    );

    let output = std::process::Command::new(ballast_binary())
        .args(["status", "--api", &dead_address()])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("cannot reach the ballast daemon at http://127.0.0.1:"),
        "{stderr}"
    );
    assert!(
        stderr.contains("(connection refused): is `ballast run` running?"),
        "{stderr}"
    );

    let output = std::process::Command::new(ballast_binary())
        .args(["plugin", "--help"])
        .output()
        .unwrap();
    assert!(output.status.success());
    let help = String::from_utf8_lossy(&output.stdout);
    assert!(
        help.contains("ballast plugin NAME disable [--for DURATION]"),
        "{help}"
    );
    assert!(help.contains("inspect"), "{help}");
}

#[test]
fn preflight_prints_the_need_and_headroom_and_exits_by_the_answer() {
    let daemon = TestDaemon::start(Options::default());
    daemon.publish_figures();
    let text = plugin_action(&daemon, &["voice", "preflight", "--level", "1"]).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "plugin     voice at level 1", "{text}");
    assert_eq!(lines[1], "fits       yes", "{text}");
    assert!(
        lines[3].starts_with("RESOURCE  ") && lines[3].contains("HEADROOM"),
        "{text}"
    );
    let memory = lines
        .iter()
        .find(|l| l.starts_with("memory "))
        .unwrap_or_else(|| panic!("no memory row in {text}"));
    // voice declares 1 MiB at level 1 (its small working set) and goes down to it: nothing
    // is added; the pressure is the predictor's 0.3375 under the shed threshold 0.85.
    assert!(memory.contains("0.34      0.85  0.51"), "{memory}");
    let mut out = Vec::new();
    let args = |level: &str| {
        vec![
            "voice".to_owned(),
            "preflight".to_owned(),
            "--level".to_owned(),
            level.to_owned(),
            "--json".to_owned(),
            "--api".to_owned(),
            daemon.url.clone(),
        ]
    };
    let code = crate::cmd::plugin::run_action(args("0"), &mut out).unwrap();
    assert_eq!(code, ExitCode::SUCCESS);
    let json: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(json["fits"], true);
    let error = crate::cmd::plugin::run_action(args("9"), &mut Vec::new()).unwrap_err();
    assert!(error.to_string().contains("has no level 9"), "{error}");
}
