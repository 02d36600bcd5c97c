//! Benchmarks of the plugin call path (raw vtable, host worker, actor round trip) and of loading
//! a plugin (file checks + dlopen + validation + create + start).

use std::ffi::c_void;
use std::hint::black_box;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ballast_abi::{
    BALLAST_STATUS_OK, BallastBuffer, BallastBytes, BallastHostApi, BallastMessageBuf,
    BallastStatus, BallastStr,
};
use ballast_core::{Level, Timestamp};
use ballast_host::{PluginConfig, PluginHost, PluginLibrary};
use criterion::{Criterion, criterion_group, criterion_main};

/// The no-op C plugin, compiled with optimisations.
fn nop_plugin() -> PathBuf {
    ballast_testkit::plugins::nop_plugin()
}

/// The Rust `stubs` example plugin, built in release mode.
fn stubs_plugin() -> PathBuf {
    let target = ballast_testkit::plugins::target_dir().join("plugin-bench/target");
    ballast_testkit::plugins::build_rust(&target, &["ballast-plugin-stubs"], true);
    target.join("release/libstubs.so")
}

#[inline(never)]
extern "C" fn rust_nop_call(
    instance: *mut c_void,
    request: BallastBytes,
    out: *mut BallastBuffer,
    err: *mut BallastMessageBuf,
) -> BallastStatus {
    let _ = (instance, request, err);
    // SAFETY: the benchmark passes a valid out-pointer.
    unsafe { *out = BallastBuffer::EMPTY };
    BALLAST_STATUS_OK
}

unsafe extern "C" fn log(_: *mut c_void, _: u32, _: BallastStr, _: BallastStr) {}
unsafe extern "C" fn now(_: *mut c_void) -> u64 {
    0
}
unsafe extern "C" fn metric(_: *mut c_void, _: BallastStr, _: f64) {}
unsafe extern "C" fn report(_: *mut c_void, _: u32, _: BallastStr) {}

fn call_overhead(c: &mut Criterion) {
    let library = PluginLibrary::load(&nop_plugin(), None).expect("nop plugin loads");
    let vtable = *library.vtable();
    let host = BallastHostApi {
        struct_size: size_of::<BallastHostApi>() as u32,
        abi_minor: 0,
        host_data: std::ptr::null_mut(),
        log,
        now_ms: now,
        emit_metric: metric,
        report_state: report,
    };
    let mut instance = std::ptr::null_mut();
    let mut message = [0u8; 256];
    let mut err = BallastMessageBuf {
        ptr: message.as_mut_ptr(),
        cap: message.len(),
        len: 0,
    };
    let create = vtable.create.expect("create");
    // SAFETY: a validated plugin's create with valid arguments.
    let status = unsafe {
        create(
            &host,
            BallastBytes::EMPTY,
            BallastBytes::EMPTY,
            &mut instance,
            &mut err,
        )
    };
    assert_eq!(status, BALLAST_STATUS_OK);
    let call = vtable.call.expect("call");
    let request = b"ping";
    let mut out = BallastBuffer::EMPTY;

    let mut group = c.benchmark_group("call_raw");
    group.bench_function("direct_rust_fn", |b| {
        b.iter(|| {
            rust_nop_call(
                black_box(instance),
                BallastBytes::new(request),
                &mut out,
                &mut err,
            )
        })
    });
    let pointer: extern "C" fn(
        *mut c_void,
        BallastBytes,
        *mut BallastBuffer,
        *mut BallastMessageBuf,
    ) -> BallastStatus = rust_nop_call;
    group.bench_function("rust_fn_pointer", |b| {
        b.iter(|| {
            black_box(pointer)(
                black_box(instance),
                BallastBytes::new(request),
                &mut out,
                &mut err,
            )
        })
    });
    group.bench_function("plugin_vtable", |b| {
        // SAFETY: the plugin's own call on its live instance with valid pointers.
        b.iter(|| unsafe {
            black_box(call)(
                black_box(instance),
                BallastBytes::new(request),
                &mut out,
                &mut err,
            )
        })
    });
    group.finish();

    let plugin_host = Arc::new(PluginHost::default());
    plugin_host
        .load(PluginConfig::new("nop", library.info().file.clone()))
        .expect("load into host");
    plugin_host
        .enable("nop", Level::FULL, "bench")
        .expect("enable");
    let stubs = stubs_plugin();
    let mut stubs_config = PluginConfig::new("stubs", &stubs);
    stubs_config.config =
        serde_json::json!({ "workload": { "working_set_mb": [1], "cpu_duty": 0.0 } });
    plugin_host.load(stubs_config).expect("load stubs");
    plugin_host
        .enable("stubs", Level::FULL, "bench")
        .expect("enable stubs");

    let mut group = c.benchmark_group("call_host");
    group.bench_function("worker_nop", |b| {
        b.iter(|| plugin_host.call("nop", black_box(request)))
    });
    group.bench_function("worker_stubs", |b| {
        b.iter(|| plugin_host.call("stubs", black_box(request)))
    });
    #[cfg(feature = "actor")]
    actor_call(&mut group, plugin_host, request);
    group.finish();
}

/// The full host path: a message to the host actor, the call on a worker, the answer back.
#[cfg(feature = "actor")]
fn actor_call(
    group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    plugin_host: Arc<PluginHost>,
    request: &[u8],
) {
    use ballast_host::{Call, PluginHostActor};

    let system = actix::System::new();
    let owned = Arc::into_inner(plugin_host).unwrap_or_else(|| panic!("the host is still shared"));
    let actor = system.block_on(async move {
        use actix::Actor;
        PluginHostActor::new(move |_sink| owned, Duration::from_secs(3600)).start()
    });
    group.bench_function("actor_nop", |b| {
        b.iter_custom(|iters| {
            system.block_on(async {
                let start = Instant::now();
                for _ in 0..iters {
                    let answer = actor
                        .send(Call {
                            plugin: "nop".into(),
                            request: request.to_vec(),
                            options: None,
                        })
                        .await;
                    black_box(answer.ok());
                }
                start.elapsed()
            })
        })
    });
}

fn load(c: &mut Criterion) {
    let stubs = stubs_plugin();
    let dir = tempfile::tempdir().expect("temp dir");
    let mut n = 0u64;
    let mut group = c.benchmark_group("load");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_millis(10))
        .measurement_time(Duration::from_millis(200));
    // Each iteration loads a fresh copy: dlopen of an already-loaded path only bumps a count.
    group.bench_function("stubs_load_validate_create_start", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                n += 1;
                let path = dir.path().join(format!("libstubs-{n}.so"));
                std::fs::copy(&stubs, &path).expect("copy plugin");
                let host = PluginHost::new(Arc::new(|| Timestamp::ZERO), Arc::new(|_| {}));
                let mut config = PluginConfig::new("stubs", &path);
                config.max_concurrent_calls = 1;
                config.config =
                    serde_json::json!({ "workload": { "working_set_mb": [0], "cpu_duty": 0.0 } });
                let start = Instant::now();
                host.load(config).expect("load");
                host.enable("stubs", Level::FULL, "bench").expect("enable");
                total += start.elapsed();
            }
            total
        })
    });
    group.finish();
}

criterion_group!(benches, call_overhead, load);
criterion_main!(benches);
