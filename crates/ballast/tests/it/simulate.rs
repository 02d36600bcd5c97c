//! `ballast simulate --compare`, `--reference` and `--plot` as a user runs them.

use std::fmt::Write as _;
use std::process::Command;

fn ballast(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_ballast"))
        .args(args)
        .output()
        .expect("the ballast binary runs")
}

#[test]
fn compare_puts_the_configs_side_by_side() {
    let dir = tempfile::tempdir().unwrap();
    let example = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../config/simulate-example.toml"
    );
    let text = std::fs::read_to_string(example).unwrap();
    // The same policy with a long stabilization keeps plugins shed longer.
    let slow = dir.path().join("slow.toml");
    std::fs::write(
        &slow,
        text.replace("stabilization = \"5m\"", "stabilization = \"30m\""),
    )
    .unwrap();
    let mut trace = String::from("timestamp,value\n");
    for i in 0..720_u64 {
        let v = if (100..130).contains(&i) { 0.95 } else { 0.40 };
        let _ = writeln!(trace, "{},{v}", i * 10);
    }
    let trace_path = dir.path().join("t.csv");
    std::fs::write(&trace_path, trace).unwrap();
    let slow = slow.to_str().unwrap();
    let trace_path = trace_path.to_str().unwrap();
    let output = ballast(&[
        "simulate",
        "--compare",
        example,
        slow,
        "--trace",
        trace_path,
    ]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let header = stdout.lines().nth(2).unwrap();
    assert!(
        header.contains("simulate-example.toml") && header.contains("slow.toml"),
        "{stdout}"
    );
    let row = |label: &str| {
        stdout
            .lines()
            .find(|l| l.starts_with(label))
            .unwrap_or_else(|| panic!("no {label} row in {stdout}"))
            .split_whitespace()
            .rev()
            .take(2)
            .collect::<Vec<_>>()
    };
    // Both shed the same plugins; the slow one brings them back later.
    assert_eq!(row("sheds")[0], row("sheds")[1], "{stdout}");
    assert_ne!(row("  discord")[0], row("  discord")[1], "{stdout}");
    let json = ballast(&[
        "simulate",
        "--json",
        "--compare",
        example,
        slow,
        "--trace",
        trace_path,
    ]);
    let json: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    let shed = |i: usize| {
        json["configs"][i]["summary"]["seconds_shed"]["discord"]
            .as_f64()
            .unwrap()
    };
    assert!(shed(1) > shed(0), "{json:#}");
    // --plot draws a PNG; a bad extension is refused.
    let png = dir.path().join("plot.png");
    let output = ballast(&[
        "simulate",
        "--config",
        example,
        "--trace",
        trace_path,
        "--plot",
        png.to_str().unwrap(),
    ]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(std::fs::read(&png).unwrap().starts_with(b"\x89PNG"));
    let output = ballast(&[
        "simulate", "--config", example, "--trace", trace_path, "--plot", "x.jpg",
    ]);
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("must end in .svg or .png"));
}

#[test]
fn reference_policies_replay_next_to_the_config_on_several_traces() {
    let dir = tempfile::tempdir().unwrap();
    let example = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../config/simulate-example.toml"
    );
    // Two traces: a burst, and a load that comes back a quarter of an hour after it fell.
    let mut paths = Vec::new();
    for (name, high) in [("a.csv", 100..130_u64), ("b.csv", 300..320_u64)] {
        let mut trace = String::from("timestamp,value\n");
        for i in 0..720_u64 {
            let v = if high.contains(&i) || (name == "b.csv" && (410..430).contains(&i)) {
                0.95
            } else {
                0.40
            };
            let _ = writeln!(trace, "{},{v}", i * 10);
        }
        let path = dir.path().join(name);
        std::fs::write(&path, trace).unwrap();
        paths.push(path.to_str().unwrap().to_owned());
    }
    let args = |extra: &[&'static str]| -> Vec<String> {
        let mut args = vec!["simulate", "--config", example];
        args.extend_from_slice(extra);
        args.extend(["--trace", &paths[0], &paths[1]]);
        args.into_iter().map(str::to_owned).collect()
    };
    let run = |args: Vec<String>| ballast(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let output = run(args(&["--reference"]));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.starts_with("comparing 4 configs on 2 traces (1440 readings"),
        "{stdout}"
    );
    let header: Vec<&str> = stdout.lines().nth(2).unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        ["simulate-example.toml", "naive", "seed", "no-forecast"],
        "{stdout}"
    );
    // The summaries are added up over both traces, per config and per trace in JSON.
    let json = run(args(&["--json", "--reference", "seed,no-forecast"]));
    assert!(json.status.success());
    let json: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    let configs = json["configs"].as_array().unwrap();
    assert_eq!(configs.len(), 3, "{json:#}");
    assert_eq!(configs[1]["reference"], "seed");
    assert_eq!(configs[2]["reference"], "no-forecast");
    assert_eq!(json["traces"].as_array().unwrap().len(), 2);
    for c in configs {
        let per_trace = c["per_trace"].as_array().unwrap();
        let sheds: u64 = per_trace.iter().map(|s| s["sheds"].as_u64().unwrap()).sum();
        assert_eq!(c["summary"]["sheds"].as_u64(), Some(sheds), "{c:#}");
        assert!(sheds > 0, "{c:#}");
    }
    // Several traces are for comparisons only.
    let output = ballast(&[
        "simulate", "--config", example, "--trace", &paths[0], &paths[1],
    ]);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("--trace takes one file here"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}
