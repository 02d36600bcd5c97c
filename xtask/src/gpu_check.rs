//! `cargo xtask gpu-check`: the demand half on a real NVIDIA GPU. Process plugins hold GPU memory
//! through PyTorch; the daemon reads it through the real NVML, charges it to them, unloads an idle
//! one, wakes one for a call, makes room for it by priority, refuses one it has no room for, and
//! does not restore a plugin that under-declares into the pressure it causes. It prints the
//! timeline with the time each step took.
//!
//! Needs a machine with an NVIDIA GPU of at least 40 GiB, its driver (libnvidia-ml.so.1) and
//! Python with PyTorch built for CUDA (`python3 -c "import torch; torch.cuda.init()"`).

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use ballast_testkit::daemon::{Daemon, Options, free_port};
use serde_json::Value;

/// A process plugin that holds `gib[level]` GiB of GPU memory through PyTorch while it runs, and
/// answers a call with its name and what it holds.
const HOLDER: &str = r#"#!/usr/bin/env python3
import base64, json, os, sys
import torch
name = os.environ.get("BALLAST_PLUGIN", "?")
held = []
def send(message):
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()
def hold(gib):
    held.clear()
    torch.cuda.empty_cache()
    if gib > 0:
        held.append(torch.empty(int(gib * (1 << 30)), dtype=torch.uint8, device="cuda"))
for line in sys.stdin:
    message = json.loads(line)
    kind = message.get("type")
    if kind == "init":
        gib = message["config"]["gib"]
        hold(gib[min(message["level"], len(gib) - 1)])
        send({"type": "hello", "name": name, "version": "1", "protocol": 1})
    elif kind == "set_level":
        hold(gib[min(message["level"], len(gib) - 1)])
        send({"type": "response", "id": message["id"]})
    elif kind == "call":
        answer = f"{name} holds {torch.cuda.memory_allocated() / (1 << 30):.1f} GiB".encode()
        send({"type": "response", "id": message["id"], "data": base64.b64encode(answer).decode()})
    elif "id" in message:
        send({"type": "response", "id": message["id"]})
"#;

/// Another program taking GPU memory (not a plugin): `python3 - GIB`, until killed.
const OTHER: &str = r#"
import sys, time, torch
x = torch.empty(int(float(sys.argv[1]) * (1 << 30)), dtype=torch.uint8, device="cuda")
print("holding", flush=True)
time.sleep(3600)
"#;

fn config(holder: &Path, total_gib: f64) -> String {
    let holder = holder.display();
    // Sizes in proportion to the GPU: voice 30 %, vision 20 %, a greedy plugin that declares
    // 2 % and holds 15 %.
    let gib = |share: f64| (total_gib * share).floor();
    format!(
        r#"
[default]
use_tier_thresholds = false

[default.monitor]
interval = "500ms"
resources = ["gpu_memory"]

[default.scaler]
mode = "enforce"
cooldown = "2s"
stabilization = "10s"

[default.scaler.thresholds.default]
shed = 0.80
restore = 0.65

[[default.plugins]]
name = "voice"
kind = "process"
command = "{holder}"
protocol = "json-lines"
priority = 30
needs_gpu = true
start = "on-demand"
keep_alive = "20s"
load_timeout = "60s"
start_timeout = "60s"
levels = [{{ name = "large", memory_mb = 1024, gpu_memory_mb = {voice_mb} }}]
config = {{ gib = [{voice}] }}

[[default.plugins]]
name = "vision"
kind = "process"
command = "{holder}"
protocol = "json-lines"
priority = 20
needs_gpu = true
start_timeout = "60s"
levels = [{{ name = "full", memory_mb = 1024, gpu_memory_mb = {vision_mb} }}]
config = {{ gib = [{vision}] }}

[[default.plugins]]
name = "greedy"
kind = "process"
command = "{holder}"
protocol = "json-lines"
priority = 10
needs_gpu = true
start_timeout = "60s"
levels = [{{ name = "full", memory_mb = 1024, gpu_memory_mb = {greedy_declared_mb} }}]
config = {{ gib = [{greedy}] }}
"#,
        voice = gib(0.30),
        voice_mb = gib(0.30) as u64 * 1024,
        vision = gib(0.20),
        vision_mb = gib(0.20) as u64 * 1024,
        greedy = gib(0.15),
        greedy_declared_mb = gib(0.02).max(1.0) as u64 * 1024,
    )
}

/// The timeline: each line with the seconds since the start.
struct Timeline(Instant);

impl Timeline {
    fn note(&self, text: &str) {
        println!("{:>7.2}s  {text}", self.0.elapsed().as_secs_f64());
    }
}

fn get(daemon: &Daemon, path: &str) -> Result<Value> {
    ballast_testkit::http::get_json(&format!("{}{path}", daemon.url)).map_err(anyhow::Error::msg)
}

fn state(daemon: &Daemon, plugin: &str) -> String {
    get(daemon, &format!("/plugins/{plugin}"))
        .ok()
        .and_then(|v| v["state"].as_str().map(str::to_owned))
        .unwrap_or_default()
}

fn gpu_charged(daemon: &Daemon) -> String {
    let Ok(status) = get(daemon, "/status") else {
        return "?".into();
    };
    let mut parts: Vec<String> = status["sample"]["plugins"]
        .as_array()
        .map(|ps| {
            ps.iter()
                .filter_map(|p| {
                    Some(format!(
                        "{} {:.1} GiB",
                        p["plugin"].as_str()?,
                        p["gpu_memory_bytes"].as_u64()? as f64 / (1u64 << 30) as f64
                    ))
                })
                .collect()
        })
        .unwrap_or_default();
    if let Some(other) =
        status["sample"]["gpu_memory_unattributed"]["value"]["other_bytes"].as_u64()
    {
        parts.push(format!(
            "other {:.1} GiB",
            other as f64 / (1u64 << 30) as f64
        ));
    }
    parts.join(", ")
}

fn wait(
    daemon: &mut Daemon,
    what: &str,
    timeout: Duration,
    ok: impl FnMut(&mut Daemon) -> bool,
) -> Result<()> {
    daemon.try_wait_until(timeout, what, ok)
}

/// The GPU's memory in GiB, or why this machine cannot run the check (checked before anything
/// is built).
pub fn prerequisites() -> Result<f64> {
    let probe = Command::new("python3")
        .args(["-c", "import torch; torch.cuda.init(); print(torch.cuda.get_device_properties(0).total_memory)"])
        .output()
        .context("cannot run python3")?;
    if !probe.status.success() {
        bail!(
            "this check needs an NVIDIA GPU and PyTorch built for CUDA: {}",
            String::from_utf8_lossy(&probe.stderr).trim()
        );
    }
    let total: f64 = String::from_utf8_lossy(&probe.stdout)
        .trim()
        .parse()
        .context("cannot read the GPU's memory from PyTorch")?;
    let total_gib = total / (1u64 << 30) as f64;
    if total_gib < 40.0 {
        bail!("the GPU has {total_gib:.0} GiB; this check needs at least 40");
    }
    Ok(total_gib)
}

/// Runs the check with the release binary in `release` on a GPU of `total_gib`.
pub fn gpu_check(release: &Path, total_gib: f64) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let holder = dir.path().join("holder.py");
    std::fs::write(&holder, HOLDER)?;
    std::process::Command::new("chmod")
        .arg("755")
        .arg(&holder)
        .status()?;
    let config = dir.path().join("ballast.toml");
    std::fs::write(&config, self::config(&holder, total_gib))?;
    let options = Options::new(release.join("ballast"), release);
    let mut daemon = Daemon::spawn(&options, config, dir.path().join("data"), free_port())?;
    let t = Timeline(Instant::now());
    daemon.wait_healthy(Duration::from_secs(60))?;
    t.note("daemon up");
    wait(
        &mut daemon,
        "vision and greedy up",
        Duration::from_secs(120),
        |d| state(d, "vision") == "enabled" && state(d, "greedy") == "enabled",
    )?;
    t.note(&format!(
        "vision and greedy enabled; voice {}",
        state(&daemon, "voice")
    ));
    wait(
        &mut daemon,
        "GPU memory charged",
        Duration::from_secs(30),
        |d| gpu_charged(d).contains("greedy"),
    )?;
    t.note(&format!("GPU memory charged: {}", gpu_charged(&daemon)));
    let sample = Command::new(release.join("ballast"))
        .args(["sample", "--api", &daemon.url])
        .output()?;
    println!("{}", String::from_utf8_lossy(&sample.stdout));

    // Another program takes GPU memory: the scaler sheds by priority; greedy is counted at what
    // it holds, not what it declares.
    let mut other: Child = Command::new("python3")
        .args(["-c", OTHER, &format!("{:.1}", total_gib * 0.40)])
        .stdout(Stdio::piped())
        .spawn()
        .context("cannot start the other GPU program")?;
    t.note("another program takes 40 % of the GPU");
    wait(&mut daemon, "a shed", Duration::from_secs(60), |d| {
        state(d, "greedy") == "disabled"
    })?;
    t.note(&format!("greedy shed; charged: {}", gpu_charged(&daemon)));
    let _ = other.kill();
    let _ = other.wait();
    t.note("the other program ends");

    // A call wakes voice; room is made by taking lower-priority plugins down if it must.
    let asked = Instant::now();
    let (status, body) =
        ballast_testkit::http::post(&format!("{}/plugins/voice/call", daemon.url), "hi")
            .map_err(anyhow::Error::msg)?;
    t.note(&format!(
        "a call to idle voice answered {status} in {:.2}s: {body}",
        asked.elapsed().as_secs_f64()
    ));
    // Idle unload 20 s after its last call.
    wait(&mut daemon, "voice idle", Duration::from_secs(90), |d| {
        state(d, "voice") == "idle"
    })?;
    t.note("voice unloaded after its keep_alive");

    // No room: another program takes most of the GPU; the call gets the 503 naming the need.
    let mut other: Child = Command::new("python3")
        .args(["-c", OTHER, &format!("{:.1}", total_gib * 0.55)])
        .stdout(Stdio::piped())
        .spawn()?;
    std::thread::sleep(Duration::from_secs(10));
    let (status, body) =
        ballast_testkit::http::post(&format!("{}/plugins/voice/call", daemon.url), "hi")
            .map_err(anyhow::Error::msg)?;
    t.note(&format!(
        "with 55 % taken by another program, a call to voice: {status} {body}"
    ));
    let _ = other.kill();
    let _ = other.wait();

    println!("\ndecisions:");
    if let Ok(decisions) = get(&daemon, "/decisions?tail=200") {
        for d in decisions.as_array().into_iter().flatten() {
            println!(
                "  {} {:<8} {:<8} {:<20} [{}] {}",
                d["at"].as_u64().unwrap_or(0),
                d["kind"].as_str().unwrap_or(""),
                d["plugin"].as_str().unwrap_or("-"),
                d["action"]["kind"].as_str().unwrap_or(""),
                d["rule"].as_str().unwrap_or(""),
                d["reason"].as_str().unwrap_or("")
            );
        }
    }
    daemon.terminate(Duration::from_secs(30));
    Ok(())
}
