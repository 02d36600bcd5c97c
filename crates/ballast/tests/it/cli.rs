//! The CLI clients as a user runs them, without a daemon: the message that says it is not
//! running, and the help that says how to act on a plugin. (The clients against a running API
//! server are tested in `src/cmd/client/tests.rs`, where the server can be started in-process.)

use std::process::Command;

use crate::dead_address;

fn ballast(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_ballast"))
        .args(args)
        .env_remove("BALLAST_API")
        .env_remove("BALLAST_TOKEN_FILE")
        .output()
        .expect("the ballast binary runs")
}

#[test]
fn every_client_says_when_the_daemon_is_not_running() {
    let url = dead_address();
    for args in [
        vec!["status"],
        vec!["plugins", "--json"],
        vec!["decisions", "--tail", "5"],
        vec!["events"],
        vec!["plugin", "voice", "disable", "--for", "10m"],
    ] {
        let mut args = args.clone();
        args.extend(["--api", &url]);
        let output = ballast(&args);
        assert_eq!(output.status.code(), Some(1), "{args:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(
            stderr.trim_end(),
            format!(
                "error: cannot reach the ballast daemon at {url} (connection refused): is `ballast run` running?"
            ),
            "{args:?}"
        );
    }
}

#[test]
fn plugin_help_shows_the_actions_and_inspect() {
    let output = ballast(&["plugin", "--help"]);
    assert!(output.status.success());
    let help = String::from_utf8_lossy(&output.stdout);
    for expected in [
        "inspect",
        "ballast plugin NAME disable [--for DURATION]",
        "ballast plugin NAME level N [--for DURATION]",
        "ballast plugin NAME release",
        "--token-file PATH (env BALLAST_TOKEN_FILE)",
    ] {
        assert!(help.contains(expected), "missing {expected:?} in\n{help}");
    }
    let output = ballast(&["plugin", "voice", "--help"]);
    assert!(output.status.success());
    let help = String::from_utf8_lossy(&output.stdout);
    assert!(
        help.contains("Usage: ballast plugin [OPTIONS] <NAME> <COMMAND>"),
        "{help}"
    );
}

#[test]
fn a_bad_duration_is_a_usage_error() {
    let output = ballast(&["plugin", "voice", "disable", "--for", "soon"]);
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("write it like 90s, 10m or 2h"), "{stderr}");
}
