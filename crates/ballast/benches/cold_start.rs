//! What a call to an idle plugin costs over a call to a running one: the cold start ballast
//! adds on top of the plugin's own `create` (the wake asked of the scaler, the enable on the
//! plugin's lifecycle thread, the call waiting in the wake queue). The plugin is the no-op C
//! plugin, whose `create` costs microseconds, so the difference is ballast's. Both go through
//! the control API over loopback HTTP, on the production topology of an in-process daemon.

use std::time::{Duration, Instant};

use ballast_core::{StartMode, Timestamp};
use ballast_daemon::testing::{Options, TestDaemon, plugin};
use ballast_host::PluginConfig;
use criterion::{Criterion, criterion_group, criterion_main};

fn call(agent: &ureq::Agent, url: &str) {
    let response = agent
        .post(&format!("{url}/plugins/nop/call"))
        .send(b"ping".as_slice())
        .expect("the daemon answers");
    assert_eq!(response.status(), 200, "the call is answered");
}

/// The scaler's placement of `nop` as the API shows it.
fn placement(agent: &ureq::Agent, url: &str) -> String {
    let mut response = agent
        .get(&format!("{url}/plugins/nop"))
        .call()
        .expect("the daemon answers");
    let view: serde_json::Value = response.body_mut().read_json().expect("JSON");
    view["scaler"]["placement"]
        .as_str()
        .unwrap_or("")
        .to_owned()
}

fn cold_start(c: &mut Criterion) {
    let mut nop = PluginConfig::new("nop", ballast_testkit::plugins::nop_plugin());
    nop.start = StartMode::OnDemand;
    nop.priority = 50;
    let daemon = TestDaemon::start(Options {
        plugins: vec![nop, plugin("stubs", 100)],
        ..Options::default()
    });
    // Calm figures, so that the scaler's fit check has resources to look at.
    daemon.publish_figures();
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .into();
    let url = daemon.url.clone();
    call(&agent, &url);

    let mut group = c.benchmark_group("cold_start");
    group.sample_size(20);
    group.bench_function("warm_call_http", |b| b.iter(|| call(&agent, &url)));
    group.bench_function("idle_call_http", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                // Unload it (not timed), and wait until the scaler knows it is idle.
                daemon
                    .state
                    .plugin_host
                    .unload("nop", "bench", Timestamp::from_millis(u64::MAX))
                    .expect("nop unloads");
                let deadline = Instant::now() + Duration::from_secs(10);
                while placement(&agent, &url) != "idle" {
                    assert!(Instant::now() < deadline, "the scaler never saw nop idle");
                    std::thread::sleep(Duration::from_micros(200));
                }
                let started = Instant::now();
                call(&agent, &url);
                total += started.elapsed();
            }
            total
        })
    });
    group.finish();
}

criterion_group!(benches, cold_start);
criterion_main!(benches);
