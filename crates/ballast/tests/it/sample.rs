//! `ballast sample` on a fixture `/proc` and the test kit's fake NVML: the processes on the GPUs
//! with their names and the plugin each is charged to, which it learns from a daemon's
//! `GET /status` (here a small HTTP server that answers like one), and `-` with the reason when
//! no daemon answers.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use crate::dead_address;

use ballast_api::views::StatusView;
use ballast_core::decision::Mode;
use ballast_core::{
    GpuMemoryHolder, GpuProcess, GpuReading, Metric, PluginUsage, Sample, Timestamp,
};
use ballast_testkit::nvml::{FakeGpu, FakeNvml, ProcessEntry};
use ballast_testkit::proc::{FakeProc, GIB};
use expect_test::expect;

const MIB: u64 = 1 << 20;

/// The daemon's pid, indexer's root and its child, and another program.
const DAEMON: u32 = 7000;
const INDEXER: u32 = 5000;
const INDEXER_CHILD: u32 = 5002;
const OTHER: u32 = 6000;

/// A fixture machine with one fake GPU and four processes on it.
struct Machine {
    dir: tempfile::TempDir,
    proc: FakeProc,
    nvml: FakeNvml,
}

impl Machine {
    fn new() -> Machine {
        let dir = tempfile::tempdir().unwrap();
        let proc = FakeProc::new(&dir.path().join("machine"));
        for (pid, ppid, name) in [
            (DAEMON, 1, "ballast"),
            (INDEXER, DAEMON, "python3"),
            (5001, INDEXER, "sh"),
            (INDEXER_CHILD, 5001, "cuda-worker"),
            (OTHER, 1, "Xorg"),
        ] {
            proc.write(
                &format!("{pid}/stat"),
                &format!("{pid} ({name}) S {ppid} 1 1 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 1 2 3\n"),
            );
            proc.write(&format!("{pid}/comm"), &format!("{name}\n"));
        }
        let nvml = FakeNvml::new(
            &dir.path().join("nvml"),
            &[FakeGpu::new("Fake GPU", 16 * GIB)],
        );
        nvml.set_processes(&[
            ProcessEntry::compute(0, DAEMON, Some(4 * GIB)),
            ProcessEntry::compute(0, INDEXER_CHILD, Some(GIB)),
            ProcessEntry::graphics(0, OTHER, Some(512 * MIB)),
            ProcessEntry::graphics(0, 6100, None),
        ]);
        Machine { dir, proc, nvml }
    }

    fn sample(&self, api: &str, extra: &[&str]) -> std::process::Output {
        Command::new(env!("CARGO_BIN_EXE_ballast"))
            .arg("sample")
            .arg("--nvml-library")
            .arg(self.nvml.library())
            .arg("--proc-root")
            .arg(self.proc.proc_root())
            .arg("--sys-root")
            .arg(self.proc.sys_root())
            .arg("--disk")
            .arg(self.dir.path())
            .args(["--api", api])
            .args(extra)
            .env_remove("BALLAST_API")
            .env_remove("BALLAST_TOKEN_FILE")
            .env_remove("BALLAST_NVML_LIBRARY")
            .output()
            .expect("the ballast binary runs")
    }
}

/// The process table of `ballast sample`'s text and the lines after it up to the daemon's line.
fn process_table(output: &std::process::Output) -> String {
    assert!(output.status.success(), "{output:?}");
    let text = String::from_utf8_lossy(&output.stdout);
    let start = text
        .find("\ngpu   pid  process")
        .unwrap_or_else(|| panic!("no process table:\n{text}"))
        + 1;
    let end = text[start..]
        .find("\ndaemon ")
        .map_or(text.len(), |i| start + i + 1);
    text[start..end].to_owned()
}

/// A daemon's `/status` answer whose latest sample holds the plugins and shows the daemon's own
/// process charged to `vision`, the one in-process plugin that declares a GPU.
fn status() -> StatusView {
    let mut sample = Sample::unavailable(Timestamp::from_secs(1), "test");
    sample.gpus = Metric::available(vec![GpuReading {
        index: 0,
        name: "Fake GPU".into(),
        memory_used_bytes: 0,
        memory_total_bytes: 16 * GIB,
        utilization: 0.0,
        temperature_celsius: None,
        power_watts: None,
        processes: Metric::available(vec![GpuProcess {
            pid: DAEMON,
            used_bytes: Some(4 * GIB),
            holder: Some(GpuMemoryHolder::Plugin {
                plugin: "vision".into(),
            }),
        }]),
    }]);
    sample.plugins = vec![
        PluginUsage {
            plugin: "indexer".into(),
            live_bytes: 10 * MIB,
            peak_bytes: 20 * MIB,
            pid: Some(INDEXER),
            ..PluginUsage::default()
        },
        PluginUsage {
            plugin: "vision".into(),
            in_process_gpu: true,
            ..PluginUsage::default()
        },
    ];
    StatusView {
        version: "test".into(),
        started_at: Timestamp::from_secs(0),
        mode: Mode::Enforce,
        tier: None,
        sample_at: Some(sample.at),
        resources: Vec::new(),
        plugins: Vec::new(),
        sample: Some(sample),
    }
}

/// Answers every `GET /status` with `status` (with 401 when `token` is set and not sent), on a
/// thread that lives as long as the test binary; returns its URL.
fn fake_daemon(status: &StatusView, token: Option<&str>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let body = serde_json::to_string(status).unwrap();
    let expected = token.map(|t| format!("authorization: bearer {t}\r\n").to_lowercase());
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut request = Vec::new();
            let mut chunk = [0u8; 1024];
            while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                match stream.read(&mut chunk) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => request.extend_from_slice(&chunk[..n]),
                }
            }
            let request = String::from_utf8_lossy(&request).to_lowercase();
            let allowed = expected
                .as_ref()
                .is_none_or(|t| request.contains(t.as_str()));
            let (status, body) = if !request.starts_with("get /status ") {
                ("404 Not Found", "{}")
            } else if allowed {
                ("200 OK", body.as_str())
            } else {
                (
                    "401 Unauthorized",
                    r#"{"message":"a bearer token is required"}"#,
                )
            };
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
fn without_a_daemon_the_processes_are_listed_with_no_plugin_and_the_reason() {
    let machine = Machine::new();
    let url = dead_address();
    let table = process_table(&machine.sample(&url, &[]));
    expect![[r#"
        gpu   pid  process      gpu memory  plugin
          0  5002  cuda-worker       1 GiB  -
          0  6000  Xorg            512 MiB  -
          0  6100  ?                   n/a  -
          0  7000  ballast           4 GiB  -
        plugins  - (no ballast daemon at URL (connection refused))

    "#]]
    .assert_eq(&table.replace(&url, "URL"));

    // As JSON: the processes are there, charged to no one, and the sample says why.
    let output = machine.sample(&url, &["--json"]);
    assert!(output.status.success(), "{output:?}");
    let sample: Sample = serde_json::from_slice(&output.stdout).unwrap();
    let processes = sample.gpus.value().unwrap()[0].processes.value().unwrap();
    let pids: Vec<u32> = processes.iter().map(|p| p.pid).collect();
    assert_eq!(pids, [INDEXER_CHILD, OTHER, 6100, DAEMON]);
    assert!(
        processes.iter().all(|p| p.holder.is_none()),
        "{processes:?}"
    );
    let reason = sample.gpu_memory_unattributed.unavailable_reason().unwrap();
    assert_eq!(
        reason.replace(&url, "URL"),
        "which plugin holds what is not known: no ballast daemon at URL (connection refused)"
    );
}

#[test]
fn the_daemons_plugins_name_the_processes_they_hold() {
    let machine = Machine::new();
    let url = fake_daemon(&status(), None);
    let output = machine.sample(&url, &[]);
    expect![[r#"
        gpu   pid  process      gpu memory  plugin
          0  5002  cuda-worker       1 GiB  indexer
          0  6000  Xorg            512 MiB  -
          0  6100  ?                   n/a  -
          0  7000  ballast           4 GiB  vision

    "#]]
    .assert_eq(&process_table(&output));
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        text.contains("plugin indexer  live 10 MiB, peak 20 MiB, gpu 1 GiB\n"),
        "{text}"
    );
    assert!(
        text.contains("plugin vision  live 0 B, peak 0 B, gpu 4 GiB\n"),
        "{text}"
    );
    assert!(
        text.contains("gpu memory of no plugin  daemon 0 B, other programs unknown\n"),
        "{text}"
    );

    // The same as JSON: every process with its figure and holder.
    let output = machine.sample(&url, &["--json"]);
    assert!(output.status.success(), "{output:?}");
    let sample: Sample = serde_json::from_slice(&output.stdout).unwrap();
    let processes = sample.gpus.value().unwrap()[0].processes.value().unwrap();
    let holders: Vec<(u32, Option<u64>, Option<&GpuMemoryHolder>)> = processes
        .iter()
        .map(|p| (p.pid, p.used_bytes, p.holder.as_ref()))
        .collect();
    assert_eq!(
        holders,
        [
            (
                INDEXER_CHILD,
                Some(GIB),
                Some(&GpuMemoryHolder::Plugin {
                    plugin: "indexer".into()
                })
            ),
            (OTHER, Some(512 * MIB), Some(&GpuMemoryHolder::Other)),
            (6100, None, Some(&GpuMemoryHolder::Other)),
            (
                DAEMON,
                Some(4 * GIB),
                Some(&GpuMemoryHolder::Plugin {
                    plugin: "vision".into()
                })
            ),
        ]
    );
}

#[test]
fn a_daemon_that_wants_a_token_gets_the_token_file() {
    let machine = Machine::new();
    let url = fake_daemon(&status(), Some("s3cret"));
    let table = process_table(&machine.sample(&url, &[]));
    assert!(
        table.replace(&url, "URL").contains(
            "plugins  - (the ballast daemon at URL answered GET /status with 401 (pass --token-file))\n"
        ),
        "{table}"
    );
    let token_file = machine.dir.path().join("token");
    write_private(&token_file, "s3cret\n");
    let table =
        process_table(&machine.sample(&url, &["--token-file", token_file.to_str().unwrap()]));
    assert!(
        table.contains("cuda-worker       1 GiB  indexer\n"),
        "{table}"
    );
}

fn write_private(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}
