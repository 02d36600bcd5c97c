//! GPU memory as a measured, per-plugin resource and plugins loaded on demand, with the real
//! binary, real process plugins and a fake NVML library whose GPU and process list the test sets:
//! measured GPU memory charged to the right plugin and counted by the scaler, an idle unload after
//! `keep_alive`, a call that wakes an idle plugin and gets its answer, room made by taking a
//! lower-priority plugin down, the 503 that names need and headroom when there is none, and no
//! idle unload while a call is in flight.

use std::path::Path;
use std::time::Duration;

use ballast_testkit::nvml::{FakeGpu, FakeNvml, ProcessEntry};
use serde_json::Value;

use crate::support;
use crate::support::Daemon;

const GIB: u64 = 1 << 30;

/// A process plugin speaking the protocol: it answers a call with `<name>: <request>` after
/// sleeping the seconds the request asks for (`sleep:N`), changes level, drains and exits at the
/// end of its input.
const ECHO: &str = r#"#!/usr/bin/env python3
import base64, json, os, sys, time
name = os.environ.get("BALLAST_PLUGIN", "?")
def send(message):
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()
for line in sys.stdin:
    message = json.loads(line)
    kind = message.get("type")
    if kind == "init":
        send({"type": "hello", "name": name, "version": "1", "protocol": 1})
    elif kind == "call":
        request = base64.b64decode(message["data"]).decode()
        if request.startswith("sleep:"):
            time.sleep(float(request[6:]))
        answer = f"{name}: {request}".encode()
        send({"type": "response", "id": message["id"], "data": base64.b64encode(answer).decode()})
    elif "id" in message:
        send({"type": "response", "id": message["id"]})
"#;

/// GPU memory is what is acted on (80 GiB, shed 0.80): voice (priority 30, on-demand, needs
/// 24 GiB), vision (priority 20, declares 4 GiB), translate (priority 10, kept alive 2 s after
/// its last call, 8 GiB), and the essential stubs.
fn config(echo: &Path, nvml: &Path) -> String {
    let echo = echo.display();
    let nvml = nvml.display();
    format!(
        r#"
[default]
use_tier_thresholds = false

[default.monitor]
interval = "200ms"
psi_trigger = false
nvml_library = "{nvml}"
resources = ["gpu_memory"]

[default.scaler]
mode = "enforce"
cooldown = "1s"
stabilization = "2s"

[default.scaler.thresholds.default]
shed = 0.80
restore = 0.65

[[default.plugins]]
name = "voice"
kind = "process"
command = "{echo}"
protocol = "json-lines"
priority = 30
needs_gpu = true
start = "on-demand"
load_timeout = "20s"
levels = [{{ name = "large", memory_mb = 16, gpu_memory_mb = 24576 }}]

[[default.plugins]]
name = "vision"
kind = "process"
command = "{echo}"
protocol = "json-lines"
priority = 20
needs_gpu = true
levels = [{{ name = "full", memory_mb = 16, gpu_memory_mb = 4096 }}]

[[default.plugins]]
name = "translate"
kind = "process"
command = "{echo}"
protocol = "json-lines"
priority = 10
needs_gpu = true
keep_alive = "2s"
call_timeout = "30s"
levels = [{{ name = "full", memory_mb = 16, gpu_memory_mb = 8192 }}]

[[default.plugins]]
name = "stubs"
path = "libstubs.so"
priority = 100
essential = true
config = {{ workload = {{ working_set_mb = [1], cpu_duty = 0.0 }} }}
"#
    )
}

fn echo_plugin(dir: &Path) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join("echo.py");
    std::fs::write(&path, ECHO).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

fn plugin(daemon: &Daemon, name: &str) -> Value {
    daemon.json(&format!("/plugins/{name}"))
}

fn state(daemon: &Daemon, name: &str) -> String {
    plugin(daemon, name)["state"]
        .as_str()
        .unwrap_or("")
        .to_owned()
}

fn pid(daemon: &Daemon, name: &str) -> u32 {
    plugin(daemon, name)["process"]["pid"]
        .as_u64()
        .unwrap_or_else(|| panic!("{name} has no process: {}", plugin(daemon, name))) as u32
}

fn call(daemon: &Daemon, name: &str, body: &str) -> (u16, String) {
    daemon
        .post(&format!("/plugins/{name}/call"), body)
        .expect("the daemon answers")
}

fn decisions(daemon: &Daemon) -> Vec<Value> {
    daemon
        .json("/decisions?tail=200")
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn decided(daemon: &Daemon, kind: &str, plugin: &str, rule: &str) -> Option<Value> {
    decisions(daemon)
        .into_iter()
        .find(|d| d["kind"] == kind && d["plugin"] == plugin && d["rule"] == rule)
}

/// Waits until the smoothed GPU memory utilization has settled at `value`.
fn smoothed_at(daemon: &mut Daemon, value: f64) {
    daemon.wait_until(
        Duration::from_secs(30),
        &format!("GPU memory smoothed at {value}"),
        |d| {
            d.json("/status")["resources"].as_array().is_some_and(|rs| {
                rs.iter().any(|r| {
                    r["resource"] == "gpu_memory"
                        && r["smoothed"]
                            .as_f64()
                            .is_some_and(|s| (s - value).abs() < 1e-4)
                })
            })
        },
    );
}

#[test]
fn gpu_memory_is_charged_counted_and_plugins_come_and_go_with_demand() {
    let dir = tempfile::tempdir().unwrap();
    let echo = echo_plugin(dir.path());
    let gpu_dir = dir.path().join("gpu");
    std::fs::create_dir_all(&gpu_dir).unwrap();
    let nvml = FakeNvml::new(&gpu_dir, &[FakeGpu::new("Fake GPU 80GB", 80 * GIB)]);
    nvml.set_memory_used(0, 0);
    let mut daemon = support::start(dir.path(), &config(&echo, nvml.library()));
    daemon.wait_until(Duration::from_secs(30), "vision and translate up", |d| {
        state(d, "vision") == "enabled" && state(d, "translate") == "enabled"
    });
    assert_eq!(state(&daemon, "voice"), "idle", "on-demand: idle at start");

    // translate, called once and then left alone, is unloaded 2 s after the end of its call.
    assert_eq!(call(&daemon, "translate", "hi").0, 200);
    daemon.wait_until(Duration::from_secs(30), "translate unloaded as idle", |d| {
        state(d, "translate") == "idle"
    });
    let unload = decided(&daemon, "unload", "translate", "keep_alive").expect("an unload");
    assert!(
        unload["reason"]
            .as_str()
            .unwrap()
            .ends_with("(keep_alive 2s)"),
        "{unload}"
    );
    assert_eq!(plugin(&daemon, "translate")["scaler"]["placement"], "idle");

    // A call wakes it and gets its answer.
    let (status, body) = call(&daemon, "translate", "again");
    assert_eq!((status, body.as_str()), (200, "translate: again"));
    assert!(decided(&daemon, "wake", "translate", "on_demand").is_some());

    // A call in flight longer than the keep-alive: never unloaded meanwhile.
    let slow = {
        let url = daemon.url.clone();
        std::thread::spawn(move || {
            ballast_testkit::http::post(&format!("{url}/plugins/translate/call"), "sleep:5")
        })
    };
    daemon.wait_until(Duration::from_secs(10), "the slow call in flight", |d| {
        plugin(d, "translate")["stats"]["in_flight"] == 1
    });
    for _ in 0..20 {
        assert_eq!(state(&daemon, "translate"), "enabled", "unloaded mid-call");
        std::thread::sleep(Duration::from_millis(200));
    }
    let (status, body) = slow.join().unwrap().unwrap();
    assert_eq!((status, body.as_str()), (200, "translate: sleep:5"));
    // Once it ends, the keep-alive counts from its end.
    daemon.wait_until(
        Duration::from_secs(30),
        "translate idle after its call",
        |d| state(d, "translate") == "idle",
    );

    // Measured GPU memory: vision declares 4 GiB but its process holds 40; the device has 56 GiB
    // in use (0.70, under the shed threshold).
    let vision = pid(&daemon, "vision");
    nvml.set_processes(&[ProcessEntry::compute(0, vision, Some(40 * GIB))]);
    nvml.set_memory_used(0, 56 * GIB);
    daemon.wait_until(
        Duration::from_secs(20),
        "vision's GPU memory measured",
        |d| {
            d.json("/status")["sample"]["plugins"]
                .as_array()
                .is_some_and(|ps| {
                    ps.iter().any(|p| {
                        p["plugin"] == "vision" && p["gpu_memory_bytes"].as_u64() == Some(40 * GIB)
                    })
                })
        },
    );
    let metrics = daemon.get("/metrics").unwrap().1;
    assert!(
        metrics.contains(&format!(
            "ballast_plugin_gpu_memory_bytes{{plugin=\"vision\"}} {}",
            40 * GIB
        )),
        "{metrics}"
    );
    daemon.wait_until(Duration::from_secs(20), "the scaler counts it", |d| {
        plugin(d, "vision")["scaler"]["measured_gpu_memory_bytes"].as_u64() == Some(40 * GIB)
    });
    smoothed_at(&mut daemon, 0.70);

    // No room: voice needs 24 GiB; 8 GiB is free under 0.80, vision is pinned on by the
    // operator and translate (idle) holds nothing. Its pre-flight says so; a call gets the 503.
    assert_eq!(daemon.post("/plugins/vision/enable", "").unwrap().0, 200);
    let preflight = daemon.json("/plugins/voice/preflight");
    assert_eq!(preflight["fits"], false, "{preflight}");
    assert_eq!(preflight["fits_with_room"], false, "{preflight}");
    let (status, body) = call(&daemon, "voice", "hello");
    assert_eq!(status, 503, "{body}");
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["error"], "no_room", "{body}");
    assert_eq!(
        body["message"],
        "voice needs 24 GiB of GPU memory at level 0; 8 GiB is free and lower-priority plugins hold 0 B"
    );
    assert_eq!(state(&daemon, "voice"), "idle");

    // Room by priority: without the pin, vision (priority 20, no call in flight, 40 GiB
    // measured) is taken down for voice, and voice answers.
    assert_eq!(daemon.post("/plugins/vision/release", "").unwrap().0, 200);
    let (status, body) = call(&daemon, "voice", "hello");
    assert_eq!((status, body.as_str()), (200, "voice: hello"));
    let made = decided(&daemon, "shed", "vision", "make_room").expect("room made");
    assert!(
        made["reason"]
            .as_str()
            .unwrap()
            .starts_with("to make room for voice (needs 24 GiB of GPU memory"),
        "{made}"
    );
    daemon.wait_until(Duration::from_secs(20), "vision taken down", |d| {
        state(d, "vision") == "disabled"
    });

    // The GPU now holds voice's 24 GiB and the 16 not vision's: 0.50. vision is not restored
    // into the pressure it causes: its 40 GiB measured would take it to 1.0, whatever it
    // declares (4 GiB would have fitted).
    let voice = pid(&daemon, "voice");
    nvml.set_processes(&[ProcessEntry::compute(0, voice, Some(24 * GIB))]);
    nvml.set_memory_used(0, 40 * GIB);
    smoothed_at(&mut daemon, 0.50);
    std::thread::sleep(Duration::from_secs(6));
    assert_eq!(state(&daemon, "vision"), "disabled");
    assert!(
        decided(&daemon, "restore", "vision", "stabilized").is_none(),
        "{:#?}",
        decisions(&daemon)
    );
    let up = daemon.json("/plugins/vision/preflight");
    let gpu = up["resources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["resource"] == "gpu_memory")
        .cloned()
        .unwrap();
    assert_eq!(gpu["declared"].as_f64(), Some((4 * GIB) as f64), "{up}");
    assert_eq!(gpu["measured"].as_f64(), Some((40 * GIB) as f64), "{up}");
    assert_eq!(up["fits"], false, "{up}");
}
