//! `ballast simulate --calls`: calls replayed against the demand half of the policy, on a
//! hand-made arrival list whose figures are worked out here, on hand-made pressure, and on the
//! real Azure `code` request log (which must be present in `../shared/traces`).

use std::fmt::Write as _;
use std::time::Duration;

use ballast_core::decision::{Action, DecisionKind};
use ballast_core::{Resource, Timestamp};
use expect_test::expect;

use super::engine::{CallSummary, Report, SimConfig};
use super::{Calls, Inputs, calls_arg, replay};
use crate::trace::{TraceOptions, parse_arrivals, parse_trace};
use ballast_core::format::trace_time;

/// One on-demand GPU plugin: 0.30 of the GPU's memory (24 GB), a 60 s keep-alive, a 20 s load
/// and 1 s calls; forecasts count only at full confidence, so pressure is the smoothed value.
const CONFIG: &str = r#"
resource = "gpu_memory"

[scaler]
mode = "enforce"
min_confidence = 1.0
cooldown = "30s"
stabilization = "5m"

[scaler.concurrency]
enabled = false

[[plugins]]
name = "llm"
priority = 20
levels = [0.30]
start = "on-demand"
keep_alive = "60s"
load_time = "20s"
call_time = "1s"
gpu_memory_gb = 24
"#;

fn config(text: &str) -> SimConfig {
    let config: SimConfig = toml::from_str(text).unwrap();
    assert_eq!(config.problems(), Vec::<String>::new());
    config
}

fn calls(plugin: &str, secs: &[u64]) -> Calls {
    Calls {
        plugin: plugin.to_owned(),
        log: "calls.csv".to_owned(),
        arrivals: secs.iter().map(|s| Timestamp::from_secs(*s)).collect(),
    }
}

/// Replays `inputs` under `config` as `ballast simulate` does (`--scale 1`).
fn simulate(config: &SimConfig, inputs: &Inputs) -> Report {
    let resource = inputs.resource(None, config);
    let mut sim = inputs.sim(config, resource).unwrap();
    replay(&mut sim, &inputs.trace, 1.0, 1);
    sim.finish()
}

/// The decision timeline, one line each.
fn timeline(report: &Report) -> String {
    let mut out = String::new();
    for d in &report.decisions {
        let action = if d.action == Action::None {
            String::new()
        } else {
            format!(" ({})", d.action)
        };
        let _ = writeln!(
            out,
            "{} {} {}{action} [{}]",
            trace_time(d.at),
            d.kind,
            d.plugin.as_deref().unwrap_or("-"),
            d.rule
        );
    }
    out
}

fn called<'a>(report: &'a Report, plugin: &str) -> &'a CallSummary {
    report
        .summary
        .calls
        .get(plugin)
        .unwrap_or_else(|| panic!("no calls summary for {plugin}: {:?}", report.summary))
}

/// A `timestamp,value` CSV with readings every 10 s from `from` to `to` (exclusive) at `value`.
fn readings(text: &mut String, from: u64, to: u64, value: f64) {
    if text.is_empty() {
        text.push_str("timestamp,value\n");
    }
    for t in (from..to).step_by(10) {
        let _ = writeln!(text, "{t},{value}");
    }
}

/// Worked out by hand, load 20 s, call 1 s, keep-alive 60 s:
///
/// | call | the plugin is | waits | runs |
/// |---|---|---|---|
/// | 1000 | idle: wake 1 (ready at 1020) | 20 s | 1020-1021 |
/// | 1005 | loading | 15 s | 1020-1021 |
/// | 1030 | loaded | - | 1030-1031 |
/// | 1031 | loaded | - | 1031-1032 |
/// | - | no call from 1032: unloaded at 1092 | | |
/// | 1100 | idle: wake 2 (ready at 1120) | 20 s | 1120-1121 |
/// | 1170 | loaded | - | 1170-1171 |
/// | - | no call from 1171: unloaded at 1231 | | |
/// | 1300 | idle: wake 3 (ready at 1320) | 20 s | 1320-1321 |
///
/// Loaded 1000-1092, 1100-1231 and 1300-1321 (the end): 92 + 131 + 21 = 244 s, times 24 GB is
/// 1.6267 GB-hours. Four calls waited: 20, 15, 20, 20 s (mean 18.75 s, p95 and max 20 s).
#[test]
fn hand_made_calls_give_the_cold_starts_waits_and_hours_worked_out_by_hand() {
    let inputs = Inputs::calm(vec![calls(
        "llm",
        &[1000, 1005, 1030, 1031, 1100, 1170, 1300],
    )]);
    // The calm stand-in: a reading of 0 every 10 s from the first call to the last.
    assert_eq!(inputs.trace.points.len(), 31);
    assert!(inputs.trace.points.iter().all(|p| p.value == 0.0));
    let report = simulate(&config(CONFIG), &inputs);
    expect![[r#"
        +0d 00:16:40 wake llm (enable at level 0) [on_demand]
        +0d 00:18:12 unload llm (unload) [keep_alive]
        +0d 00:18:20 wake llm (enable at level 0) [on_demand]
        +0d 00:20:31 unload llm (unload) [keep_alive]
        +0d 00:21:40 wake llm (enable at level 0) [on_demand]
    "#]]
    .assert_eq(&timeline(&report));
    let c = called(&report, "llm");
    assert_eq!(
        (c.calls, c.cold_starts, c.waited, c.refused, c.unloads),
        (7, 3, 4, 0, 2)
    );
    assert_eq!(
        (c.wait_mean_seconds, c.wait_p95_seconds, c.wait_max_seconds),
        (18.75, 20.0, 20.0)
    );
    assert_eq!(c.seconds_loaded, 244.0);
    let hours = c.gpu_memory_gb_hours.unwrap();
    assert!((hours - 244.0 * 24.0 / 3600.0).abs() < 1e-12, "{hours}");
    // The replay ends when the last call has ended, at 1321 s.
    assert_eq!(report.summary.duration_seconds, 321.0);
    // Idle is not shed.
    assert_eq!(report.summary.seconds_shed["llm"], 0.0);
}

/// A call that finds no room under the shed threshold is refused (the scaler's no_room warning
/// says why); once the pressure is gone the next call wakes the plugin and waits for its load.
#[test]
fn a_wake_without_room_is_a_refused_call() {
    // The trace counts llm at full level (0.30): 0.85 leaves 0.55 with it idle, and 0.55 + 0.30
    // is over the shed threshold 0.80. From 600 s the trace is 0.30: llm fits.
    let mut trace = String::new();
    readings(&mut trace, 0, 600, 0.85);
    readings(&mut trace, 600, 1000, 0.30);
    let trace = parse_trace("gpu.csv", &trace, &TraceOptions::default()).unwrap();
    let inputs = Inputs::with_trace(trace, "gpu.csv".into(), vec![calls("llm", &[300, 700])]);
    assert_eq!(inputs.shift_ms, 0, "the calls overlap the trace");
    let report = simulate(&config(CONFIG), &inputs);
    expect![[r#"
        +0d 00:05:00 warn llm [no_room]
        +0d 00:11:40 wake llm (enable at level 0) [on_demand]
        +0d 00:13:01 unload llm (unload) [keep_alive]
    "#]]
    .assert_eq(&timeline(&report));
    let c = called(&report, "llm");
    assert_eq!(
        (c.calls, c.refused, c.cold_starts, c.waited, c.unloads),
        (2, 1, 1, 1, 1)
    );
    assert_eq!(c.wait_max_seconds, 20.0);
    // Loaded from the wake at 700 s; the call runs from 720 s to 721 s, and the plugin is
    // unloaded a keep-alive later, at 781 s.
    assert_eq!(c.seconds_loaded, 81.0);
}

/// A preloaded plugin shed for pressure refuses the calls that come while it is off: they do not
/// wake it.
#[test]
fn calls_to_a_plugin_shed_for_pressure_are_refused() {
    let text = r#"
[scaler]
mode = "enforce"
min_confidence = 1.0
cooldown = "30s"
stabilization = "5m"

[scaler.concurrency]
enabled = false

[[plugins]]
name = "tts"
priority = 10
levels = [0.20]
gpu_memory_gb = 4
"#;
    let mut trace = String::new();
    readings(&mut trace, 0, 300, 0.50);
    readings(&mut trace, 300, 900, 0.95);
    let trace = parse_trace("gpu.csv", &trace, &TraceOptions::default()).unwrap();
    let inputs = Inputs::with_trace(trace, "gpu.csv".into(), vec![calls("tts", &[100, 800])]);
    let report = simulate(&config(text), &inputs);
    let shed = report
        .decisions
        .iter()
        .find(|d| d.kind == DecisionKind::Shed)
        .unwrap_or_else(|| panic!("tts was not shed:\n{}", timeline(&report)));
    assert_eq!(shed.action, Action::Disable);
    assert!(shed.at < Timestamp::from_secs(800), "{}", timeline(&report));
    let c = called(&report, "tts");
    // Preloaded: the first call runs at once; the second finds it shed.
    assert_eq!(
        (c.calls, c.refused, c.cold_starts, c.waited, c.unloads),
        (2, 1, 0, 0, 0)
    );
    // It held its memory from the start to the shed.
    assert_eq!(c.seconds_loaded, shed.at.as_secs_f64());
    assert!(
        report
            .decisions
            .iter()
            .all(|d| d.kind != DecisionKind::Wake)
    );
}

/// A preloaded plugin with a keep-alive and no calls at all is unloaded a keep-alive after the
/// replay starts, as the daemon would: its keep-alive counts from its load.
#[test]
fn a_keep_alive_without_calls_unloads_the_plugin_once() {
    let text = CONFIG.replace("start = \"on-demand\"\n", "");
    let mut trace = String::new();
    readings(&mut trace, 0, 600, 0.40);
    let trace = parse_trace("gpu.csv", &trace, &TraceOptions::default()).unwrap();
    let inputs = Inputs::with_trace(trace, "gpu.csv".into(), Vec::new());
    let report = simulate(&config(&text), &inputs);
    expect![[r#"
        +0d 00:01:00 unload llm (unload) [keep_alive]
    "#]]
    .assert_eq(&timeline(&report));
    // Without calls there is no calls summary, and the JSON has no `calls` key.
    assert!(report.summary.calls.is_empty());
    let json = serde_json::to_value(&report).unwrap();
    assert!(json["summary"].get("calls").is_none(), "{json}");
    // Unloaded is not shed.
    assert_eq!(report.summary.seconds_shed["llm"], 0.0);
}

/// A wake that needs room takes a lower-priority plugin down; calls to it are refused while it
/// is off. Once the woken plugin is unloaded the machine is calm, the plugin taken down is
/// restored by the ordinary path, and a call that comes while it loads waits for it.
#[test]
fn room_made_for_a_wake_refuses_the_plugin_taken_down_until_its_restore_has_loaded() {
    let text = format!(
        "{CONFIG}\n[[plugins]]\nname = \"tts\"\npriority = 10\nlevels = [0.20]\n\
         load_time = \"5s\"\ngpu_memory_gb = 4\n"
    );
    // The trace counts both at full level: 0.87 leaves 0.57 with llm idle, too little room for
    // its 0.30 under the shed threshold 0.80 until tts (0.20) is off. Then 0.67 is not calm
    // (over the restore threshold 0.65) once the smoothed value gets there, at 120 s. With llm
    // unloaded (at 181 s) and tts off, 0.37 is calm again from the reading at 190 s: tts comes
    // back a stabilization (5 min) later, at 490 s, and loads in 5 s.
    let mut trace = String::new();
    readings(&mut trace, 0, 1000, 0.87);
    let trace = parse_trace("gpu.csv", &trace, &TraceOptions::default()).unwrap();
    let inputs = Inputs::with_trace(
        trace,
        "gpu.csv".into(),
        vec![calls("llm", &[100]), calls("tts", &[50, 150, 492, 600])],
    );
    let report = simulate(&config(&text), &inputs);
    expect![[r#"
        +0d 00:01:40 shed tts (disable) [make_room]
        +0d 00:01:40 wake llm (enable at level 0) [on_demand]
        +0d 00:03:01 unload llm (unload) [keep_alive]
        +0d 00:08:10 restore tts (enable at level 0) [stabilized]
    "#]]
    .assert_eq(&timeline(&report));
    let tts = called(&report, "tts");
    // 50 s runs at once; 150 s is refused (tts is off); 492 s waits 3 s for the restore's load;
    // 600 s runs at once.
    assert_eq!(
        (
            tts.calls,
            tts.refused,
            tts.cold_starts,
            tts.waited,
            tts.unloads
        ),
        (4, 1, 0, 1, 0)
    );
    assert_eq!(tts.wait_max_seconds, 3.0);
    // Held from the start to 100 s, and from its restore at 490 s to the end at 990 s.
    assert_eq!(tts.seconds_loaded, 100.0 + 500.0);
    let llm = called(&report, "llm");
    assert_eq!((llm.calls, llm.cold_starts, llm.refused), (1, 1, 0));
}

#[test]
fn calls_that_do_not_overlap_the_trace_are_moved_to_start_with_it() {
    let mut text = String::new();
    readings(&mut text, 5000, 5100, 0.1);
    let trace = parse_trace("gpu.csv", &text, &TraceOptions::default()).unwrap();
    let moved = Inputs::with_trace(
        trace.clone(),
        "gpu.csv".into(),
        vec![calls("llm", &[100, 130])],
    );
    assert_eq!(moved.shift_ms, 4_900_000);
    assert_eq!(
        moved.calls[0].arrivals,
        [Timestamp::from_secs(5000), Timestamp::from_secs(5030)]
    );
    assert!(
        moved.calls_text().contains("moved 1h 21m 40s later"),
        "{}",
        moved.calls_text()
    );
    let kept = Inputs::with_trace(trace, "gpu.csv".into(), vec![calls("llm", &[4000, 5050])]);
    assert_eq!(kept.shift_ms, 0);
    assert_eq!(kept.calls[0].arrivals[0], Timestamp::from_secs(4000));
}

#[test]
fn calls_flags_and_config_problems_are_named() {
    let arg = calls_arg("llm=logs/code.csv").unwrap();
    assert_eq!(arg.plugin, "llm");
    assert_eq!(arg.log, std::path::Path::new("logs/code.csv"));
    assert_eq!(
        calls_arg("logs/code.csv").unwrap_err(),
        "expected PLUGIN=LOG (a plugin of the config and a request log), got `logs/code.csv`"
    );
    assert!(calls_arg("=code.csv").is_err());
    // A call to a plugin the config does not have.
    let inputs = Inputs::calm(vec![calls("voice", &[1, 2])]);
    let config = config(CONFIG);
    let problems = inputs.sim(&config, Resource::GpuMemory).unwrap_err();
    assert_eq!(
        problems,
        ["--calls voice=calls.csv: no plugin `voice` to call; the plugins are: llm"]
    );
    let mut sim = super::Sim::new(&config, Resource::GpuMemory).unwrap();
    sim.step(Timestamp::from_secs(0), 0.0);
    assert_eq!(
        sim.add_calls("llm", &[Timestamp::from_secs(1)])
            .unwrap_err()
            .to_string(),
        "calls to `llm` must be added before the replay begins"
    );
    let bad: SimConfig = toml::from_str(
        &CONFIG
            .replace("keep_alive = \"60s\"", "keep_alive = \"0s\"")
            .replace("gpu_memory_gb = 24", "gpu_memory_gb = -1"),
    )
    .unwrap();
    expect![[r#"
        [
            "plugin `llm`: keep_alive must be longer than zero (leave it out to never unload the plugin for idleness)",
            "plugin `llm`: gpu_memory_gb must be a number of GB at least 0, got -1",
        ]
    "#]]
    .assert_debug_eq(&bad.problems());
    // The defaults the docs give.
    let plain: SimConfig =
        toml::from_str("[[plugins]]\nname = \"a\"\npriority = 1\nlevels = [0.1]\n").unwrap();
    assert_eq!(plain.plugins[0].load_time, Duration::from_secs(10));
    assert_eq!(plain.plugins[0].call_time, Duration::from_secs(1));
    assert_eq!(plain.plugins[0].keep_alive, None);
}

/// The example config of `ballast simulate --calls`, as shipped.
fn example_config() -> SimConfig {
    config(include_str!("../../../../config/simulate-calls.toml"))
}

/// The example config with `keep_alive` set to `keep_alive` (`None`: left out, never).
fn with_keep_alive(keep_alive: Option<&str>) -> SimConfig {
    let mut config = example_config();
    config.plugins[0].keep_alive = keep_alive.map(|k| humantime::parse_duration(k).unwrap());
    config
}

/// The real Azure `code` request log (bursty: twelve gaps over a minute in its hour) replayed as
/// calls alone: the shorter the keep-alive, the more cold starts and waits and the fewer
/// GPU-memory hours; without one, one cold start and the most hours.
#[test]
fn the_keep_alive_trade_on_the_azure_code_requests() {
    let path = super::tests::shared_traces().join("azure_llm_2023/AzureLLMInferenceTrace_code.csv");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let arrivals = parse_arrivals(&path.display().to_string(), &text).unwrap();
    assert_eq!(arrivals.len(), 8819);
    let inputs = Inputs::calm(vec![Calls {
        plugin: "llm".into(),
        log: "code.csv".into(),
        arrivals,
    }]);
    let settings = [Some("10s"), Some("1m"), Some("5m"), Some("30m"), None];
    let summaries: Vec<CallSummary> = settings
        .iter()
        .map(|k| called(&simulate(&with_keep_alive(*k), &inputs), "llm").clone())
        .collect();
    let hours = |c: &CallSummary| c.gpu_memory_gb_hours.unwrap();
    for (c, k) in summaries.iter().zip(&settings) {
        assert_eq!((c.calls, c.refused), (8819, 0), "{k:?}: {c:?}");
    }
    for (pair, k) in summaries.windows(2).zip(settings.windows(2)) {
        let (shorter, longer) = (&pair[0], &pair[1]);
        assert!(shorter.cold_starts >= longer.cold_starts, "{k:?}");
        assert!(shorter.waited >= longer.waited, "{k:?}");
        assert!(shorter.unloads >= longer.unloads, "{k:?}");
        assert!(hours(shorter) <= hours(longer), "{k:?}");
    }
    let (shortest, never) = (&summaries[0], &summaries[4]);
    assert!(shortest.cold_starts > never.cold_starts);
    assert!(shortest.waited > never.waited);
    assert!(hours(shortest) < hours(never));
    assert!(never.cold_starts <= 1 && never.unloads == 0, "{never:?}");
    assert!(summaries.iter().all(|c| hours(c) <= hours(never)));
    // One setting in full: a minute's keep-alive unloads it after each of the twelve long gaps.
    let c = &summaries[1];
    expect![[r#"
        calls 8819 cold_starts 13 waited 1681 wait mean 10.090 p95 19.301 max 20.000 refused 0
        unloads 12 loaded 2744.629s gpu 18.2975 GB-hours
    "#]]
    .assert_eq(&format!(
        "calls {} cold_starts {} waited {} wait mean {:.3} p95 {:.3} max {:.3} refused {}\n\
         unloads {} loaded {}s gpu {:.4} GB-hours\n",
        c.calls,
        c.cold_starts,
        c.waited,
        c.wait_mean_seconds,
        c.wait_p95_seconds,
        c.wait_max_seconds,
        c.refused,
        c.unloads,
        c.seconds_loaded,
        hours(c)
    ));
}

/// The text `ballast simulate` prints with calls: the calls' origin, the plugin's demand
/// settings, and what its callers saw; `--compare` puts the same figures side by side.
#[test]
fn the_text_output_says_what_the_callers_saw() {
    let inputs = Inputs::calm(vec![calls(
        "llm",
        &[1000, 1005, 1030, 1031, 1100, 1170, 1300],
    )]);
    let shipped = config(CONFIG);
    let report = simulate(&shipped, &inputs);
    let scale = inputs.scale("auto").unwrap();
    let text = super::to_text(&inputs, &shipped, &scale, &report, 1);
    let lines: Vec<&str> = text.lines().collect();
    expect![[r#"
        simulating gpu_memory calm over the calls' time span (no --trace: a reading of 0 every 10s, 31 readings)
        calls: llm from calls.csv (7 calls, +0d 00:16:40 to +0d 00:21:40)
        plugins: llm (priority 20, cost 0.3, on-demand, keep_alive 1m, load 20s, call 1s, 24 GB)
    "#]]
    .assert_eq(&format!("{}\n", lines[..3].join("\n")));
    // Each line after a `|`, so that the indentation shows.
    let calls_section: String = text
        .find("  calls to llm\n")
        .map(|at| &text[at..])
        .unwrap_or_else(|| panic!("no calls section in\n{text}"))
        .lines()
        .map(|line| format!("|{line}\n"))
        .collect();
    expect![[r#"
        |  calls to llm
        |    calls               7
        |    cold starts         3
        |    waited              4 (mean 18.8s, p95 20.0s, max 20.0s)
        |    refused             0
        |    unloads             2
        |    loaded              4m 4s, 1.63 GB-hours of GPU memory
    "#]]
    .assert_eq(&calls_section);
    let compared = [
        super::compare::Compared::one("a.toml", report.summary.clone()),
        super::compare::Compared::one(
            "never.toml",
            simulate(
                &config(&CONFIG.replace("keep_alive = \"60s\"\n", "")),
                &inputs,
            )
            .summary,
        ),
    ];
    let table = super::compare::to_text(
        std::slice::from_ref(&inputs),
        std::slice::from_ref(&scale),
        &compared,
    );
    let rows = table
        .split_once("calls to llm")
        .map(|(_, rest)| format!("calls to llm{rest}"))
        .unwrap_or_else(|| panic!("no calls rows in\n{table}"));
    expect![[r#"
        calls to llm                          7                7
          cold starts                         3                1
          waited                              4                2
          wait mean/p95/max     18.8/20.0/20.0s  17.5/20.0/20.0s
          refused                             0                0
          unloads                             2                0
          loaded                          4m 4s            5m 1s
          GPU memory GB-hours              1.63             2.01
    "#]]
    .assert_eq(&rows);
}
