//! A load balancer routes around a shed plugin: three real nodes, each in a memory cgroup of its
//! own, behind a real HAProxy with one backend per plugin, health-checked on that plugin's
//! readiness endpoint, and the same voice backend once more with a plain TCP check. A client
//! calls voice through each throughout; node 2 is pressed (real memory, in its cgroup) until it
//! sheds voice, then released.
//!
//! What is asserted does not depend on timing: node 2 leaves voice's readiness-checked backend
//! while voice is shed and comes back after the restore, stays in stubs' backend (stubs is
//! essential and never shed) and in the TCP-checked one (its port still answers); no call
//! through the readiness-checked backend fails while node 2 is out of it; and calls through the
//! TCP-checked one do fail meanwhile. The figures (failed calls, how long HAProxy took to take
//! node 2 out and put it back) are printed for the README:
//! `cargo test -p ballast --test e2e fleet:: -- --nocapture`. It needs a machine whose cgroups
//! the test may write (root); elsewhere it prints `SKIPPED: ...` and passes.

use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::engines::{Haproxy, Node, start_nodes};

/// The nodes' config: memory alone is acted on (each node reads its own cgroup), sampled every
/// 200 ms, voice (priority 10) sheddable, stubs essential, a short cool-down and stabilization.
pub const NODE_CONFIG: &str = r#"
[default]
use_tier_thresholds = false

[default.monitor]
interval = "200ms"
psi_trigger = false
resources = ["memory"]

[default.scaler]
cooldown = "500ms"
stabilization = "1s"

[default.scaler.thresholds.memory]
shed = 0.50
restore = 0.35

# A node's cgroup is a small machine (the `constrained` tier); voice may run there all the same.
[default.tier.plugins.voice]
levels = [{ level = 0, min_tier = "constrained" }]

[[default.plugins]]
name = "voice"
path = "libvoice.so"
priority = 10
config = { workload = { working_set_mb = [4, 1], cpu_duty = 0.0 } }

[[default.plugins]]
name = "stubs"
path = "libstubs.so"
priority = 100
essential = true
config = { workload = { working_set_mb = [1], cpu_duty = 0.0 } }
"#;

/// How much node 2's load holds: 160 MiB of its cgroup's 256 MiB, well past shed (0.50) with
/// room to spare under the limit.
const PRESS_BYTES: u64 = 160 << 20;

/// HAProxy's config: frontend `calls` routes each plugin's path to that plugin's backend,
/// health-checked on its readiness endpoint; frontend `calls_tcp` sends voice calls to a backend
/// of the same nodes with a plain TCP check. Checks every 100 ms, out after 1 failed check, back
/// after 2 good ones.
fn haproxy_config(dir: &std::path::Path, nodes: &[Node], ready_port: u16, tcp_port: u16) -> String {
    let servers = |check: &str| {
        nodes
            .iter()
            .map(|n| {
                format!(
                    "    server {} 127.0.0.1:{} {check}\n",
                    n.name, n.daemon.port
                )
            })
            .collect::<String>()
    };
    let mut config = format!(
        "global\n    stats socket {socket} mode 600 level admin\n    maxconn 512\n\n\
         defaults\n    mode http\n    timeout connect 2s\n    timeout client 30s\n    timeout server 30s\n    \
         default-server inter 100ms fall 1 rise 2\n\n\
         frontend calls\n    bind 127.0.0.1:{ready_port}\n",
        socket = Haproxy::socket_path(dir).display(),
    );
    for plugin in ["voice", "stubs"] {
        config.push_str(&format!(
            "    use_backend {plugin} if {{ path_beg /plugins/{plugin}/ }}\n"
        ));
    }
    config.push('\n');
    for plugin in ["voice", "stubs"] {
        config.push_str(&format!(
            "backend {plugin}\n    balance roundrobin\n    option httpchk GET /plugins/{plugin}/ready\n    \
             http-check expect status 200\n{}\n",
            servers("check")
        ));
    }
    config.push_str(&format!(
        "frontend calls_tcp\n    bind 127.0.0.1:{tcp_port}\n    default_backend voice_tcp\n\n\
         backend voice_tcp\n    balance roundrobin\n{}",
        servers("check")
    ));
    config
}

/// One call the client made: when it started and ended (ms since the epoch), its status (none
/// when no answer came) and whether it was answered 200.
#[derive(Clone, Copy, Debug)]
struct CallRecord {
    started: u64,
    ended: u64,
    status: Option<u16>,
    ok: bool,
}

/// A client calling voice through one frontend in a loop until stopped.
struct Client {
    records: Arc<Mutex<Vec<CallRecord>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Client {
    fn start(url: String) -> Client {
        let records = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (records, stop) = (Arc::clone(&records), Arc::clone(&stop));
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let started = ballast_testkit::now_ms();
                    let status = ballast_testkit::http::post(&url, "hello")
                        .ok()
                        .map(|(status, _)| status);
                    let ended = ballast_testkit::now_ms();
                    records
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push(CallRecord {
                            started,
                            ended,
                            status,
                            ok: status == Some(200),
                        });
                    std::thread::sleep(Duration::from_millis(5));
                }
            })
        };
        Client {
            records,
            stop,
            thread: Some(thread),
        }
    }

    fn records(&self) -> Vec<CallRecord> {
        self.records
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn failed_since(&self, since: u64) -> usize {
        self.records()
            .iter()
            .filter(|r| r.started >= since && !r.ok)
            .count()
    }

    fn ok_since(&self, since: u64) -> usize {
        self.records()
            .iter()
            .filter(|r| r.started >= since && r.ok)
            .count()
    }

    fn finish(mut self) -> Vec<CallRecord> {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        self.records()
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// `stress-ng` holding `bytes` resident in `node`'s cgroup, in a process group of its own,
/// killed with its workers when dropped.
struct Press(Option<Child>);

impl Press {
    fn start(node: &Node, bytes: u64) -> Press {
        use std::os::unix::process::CommandExt as _;
        let mut command = Command::new("stress-ng");
        command
            .args(["--vm", "1", "--vm-bytes", &format!("{}k", bytes / 1024)])
            .args(["--vm-keep", "--vm-populate", "--vm-hang", "0"])
            .args(["--timeout", "120s", "--quiet"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0);
        node.cgroup
            .as_ref()
            .expect("a node pressed alone has a cgroup of its own")
            .start_in(&mut command);
        Press(Some(command.spawn().unwrap_or_else(|e| {
            panic!("cannot start stress-ng (Debian package stress-ng; `cargo xtask ci` installs it): {e}")
        })))
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.0.take() {
            // SAFETY: kill(2) on the process group this test created.
            unsafe { libc::kill(-(child.id() as i32), libc::SIGKILL) };
            let _ = child.wait();
        }
    }
}

impl Drop for Press {
    fn drop(&mut self) {
        self.stop();
    }
}

/// When node's latest decision on voice with `action` (`disable`, `enable`) was taken.
fn decided_at(node: &Node, kind: &str, action: &str) -> Option<u64> {
    let decisions = node.daemon.json("/decisions?tail=200");
    decisions
        .as_array()?
        .iter()
        .filter(|d| d["plugin"] == "voice" && d["kind"] == kind && d["action"]["kind"] == action)
        .filter_map(|d| d["at"].as_u64())
        .next_back()
}

fn voice_ready(node: &Node) -> bool {
    node.daemon
        .get("/plugins/voice/ready")
        .is_ok_and(|(status, _)| status == 200)
}

const PHASE: Duration = Duration::from_secs(90);

fn wait(what: &str, mut condition: impl FnMut() -> bool) {
    if let Err(error) =
        ballast_testkit::wait_for(what, PHASE, Duration::from_millis(10), &mut condition)
    {
        panic!("{error}");
    }
}

#[test]
fn haproxy_takes_a_node_out_of_a_plugins_backend_while_the_plugin_is_shed_there() {
    if let Err(why) = crate::engines::cgroups_writable() {
        crate::engines::skipped(
            "fleet::haproxy_takes_a_node_out_of_a_plugins_backend_while_the_plugin_is_shed_there",
            &format!("node 2 is pressed alone in a memory cgroup of its own, and {why}"),
        );
        return;
    }
    let nodes = start_nodes(3, NODE_CONFIG, true);
    for node in &nodes {
        assert!(
            voice_ready(node),
            "{}: voice is not ready at start: {:?}",
            node.name,
            node.daemon.get("/plugins/voice/ready")
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let (ready_port, tcp_port) = (crate::support::free_port(), crate::support::free_port());
    let mut haproxy = Haproxy::start(
        dir.path(),
        &haproxy_config(dir.path(), &nodes, ready_port, tcp_port),
    );
    wait("every server UP in every backend", || {
        let states = haproxy.states();
        states.len() == 9 && states.values().all(|s| s == "UP")
    });

    let ready_client = Client::start(format!("http://127.0.0.1:{ready_port}/plugins/voice/call"));
    let tcp_client = Client::start(format!("http://127.0.0.1:{tcp_port}/plugins/voice/call"));
    let warm = ballast_testkit::now_ms();
    wait("both clients' first calls", || {
        ready_client.ok_since(warm) >= 20 && tcp_client.ok_since(warm) >= 20
    });
    assert_eq!(
        ready_client.failed_since(0),
        0,
        "calls failed before any press"
    );
    assert_eq!(
        tcp_client.failed_since(0),
        0,
        "calls failed before any press"
    );

    // Press node 2 until it sheds voice.
    let node2 = &nodes[1];
    let pressed_at = ballast_testkit::now_ms();
    let mut press = Press::start(node2, PRESS_BYTES);
    wait("node 2 to shed voice", || !voice_ready(node2));
    let mut tcp_states = Vec::new();
    wait("HAProxy to take node 2 out of voice's backend", || {
        let states = haproxy.states();
        tcp_states.push(states[&("voice_tcp".to_owned(), "node2".to_owned())].clone());
        states[&("voice".to_owned(), "node2".to_owned())].starts_with("DOWN")
    });
    let out_seen = ballast_testkit::now_ms();
    let shed_at = decided_at(node2, "shed", "disable").expect("node 2's decision to disable voice");
    assert!(
        shed_at >= pressed_at.saturating_sub(1000),
        "a shed before the press"
    );
    // Node 2's metrics say the same: voice shed there, not ready.
    let (_, metrics) = node2.daemon.get("/metrics").unwrap();
    for line in [
        r#"ballast_plugin_shed{plugin="voice"} 1"#,
        r#"ballast_plugin_ready{plugin="voice"} 0"#,
        r#"ballast_plugin_ready{plugin="stubs"} 1"#,
    ] {
        assert!(
            metrics.contains(line),
            "node 2's /metrics lacks {line}:\n{metrics}"
        );
    }
    let states = haproxy.states();
    for (backend, server) in [
        ("voice", "node1"),
        ("voice", "node3"),
        ("stubs", "node1"),
        ("stubs", "node2"),
        ("stubs", "node3"),
        ("voice_tcp", "node2"),
    ] {
        assert!(
            states[&(backend.to_owned(), server.to_owned())].starts_with("UP"),
            "{backend}/{server} is not UP while node 2 sheds voice: {states:?}"
        );
    }
    // Through the plain TCP check, node 2 takes voice calls it refuses: wait until the client
    // has seen some of them fail.
    wait(
        "calls through the TCP-checked backend to fail on node 2",
        || {
            tcp_states.push(haproxy.state("voice_tcp", "node2"));
            tcp_client.failed_since(pressed_at) >= 10
        },
    );
    let released_at = ballast_testkit::now_ms();
    press.stop();

    // Released: node 2 restores voice, and HAProxy puts it back.
    wait("node 2 to restore voice", || voice_ready(node2));
    wait("HAProxy to put node 2 back into voice's backend", || {
        let state = haproxy.state("voice", "node2");
        tcp_states.push(haproxy.state("voice_tcp", "node2"));
        state == "UP"
    });
    let back_seen = ballast_testkit::now_ms();
    let restored_at =
        decided_at(node2, "restore", "enable").expect("node 2's decision to enable voice");
    assert!(
        tcp_states.iter().all(|s| s.starts_with("UP")),
        "the TCP check took node 2 out: {tcp_states:?}"
    );
    let settled = ballast_testkit::now_ms();
    wait("calls after node 2 is back", || {
        ready_client.ok_since(settled) >= 20 && tcp_client.ok_since(settled) >= 20
    });
    let ready_calls = ready_client.finish();
    let tcp_calls = tcp_client.finish();

    // No call through the readiness-checked backend failed while node 2 was out of it (its
    // calls went to nodes 1 and 3), nor after it came back.
    let failed_while_out: Vec<&CallRecord> = ready_calls
        .iter()
        .filter(|r| r.started >= out_seen && !r.ok)
        .collect();
    assert!(
        failed_while_out.is_empty(),
        "calls through the readiness-checked backend failed after node 2 was out of it: {failed_while_out:?}"
    );
    let ready_failed = ready_calls.iter().filter(|r| !r.ok).count();
    let tcp_failed = tcp_calls.iter().filter(|r| !r.ok).count();
    assert!(tcp_failed >= 10);
    let shed_for = restored_at.saturating_sub(shed_at);
    let in_window = |calls: &[CallRecord]| {
        calls
            .iter()
            .filter(|r| !r.ok && r.started >= shed_at && r.ended <= back_seen)
            .count()
    };
    println!(
        "fleet: node 2 shed voice {} ms after the press and restored it {} ms after the release; voice was off there for {} ms",
        shed_at.saturating_sub(pressed_at),
        restored_at.saturating_sub(released_at),
        shed_for
    );
    println!(
        "fleet: readiness check (GET /plugins/voice/ready, inter 100ms fall 1 rise 2): {ready_failed} of {} calls failed ({} while voice was off on node 2); node 2 taken out {} ms after the shed decision, put back {} ms after the restore decision",
        ready_calls.len(),
        in_window(&ready_calls),
        out_seen.saturating_sub(shed_at),
        back_seen.saturating_sub(restored_at)
    );
    let failures = |calls: &[CallRecord]| {
        calls
            .iter()
            .filter(|r| !r.ok)
            .map(|r| {
                format!(
                    "{} at {:+} ms",
                    r.status.map_or("no answer".to_owned(), |s| s.to_string()),
                    r.started as i64 - shed_at as i64
                )
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    println!(
        "fleet: failed calls through the readiness check, by status and start relative to the shed decision: {}",
        failures(&ready_calls)
    );
    println!(
        "fleet: plain TCP check (same inter, fall, rise): {tcp_failed} of {} calls failed ({} while voice was off on node 2); node 2 never taken out",
        tcp_calls.len(),
        in_window(&tcp_calls),
    );
    // HAProxy goes first, then the nodes (each dropped node is killed).
    drop(haproxy);
    drop(nodes);
}
