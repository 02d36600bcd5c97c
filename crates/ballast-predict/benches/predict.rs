//! Criterion benchmarks of the predictor: one step for three resources (as the daemon calls it,
//! once a second with 30 s buckets, and the worst case where every step closes a bucket), the
//! single-series forecaster alone, and observe throughput in samples per second.

use std::hint::black_box;
use std::time::Duration;

use ballast_core::{Resource, Timestamp};
use ballast_predict::{ForecastConfig, Predictor, PredictorConfig, SeriesPredictor};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

/// A plausible, deterministic load: slow waves plus a little jitter, per resource.
fn load(second: u64, phase: f64) -> f64 {
    let t = second as f64;
    let jitter = ((second.wrapping_mul(2_654_435_761) >> 7) % 1000) as f64 / 20_000.0;
    (0.5 + 0.3 * (t / 900.0 + phase).sin() + jitter).clamp(0.0, 1.0)
}

fn values(second: u64) -> [(Resource, f64); 3] {
    [
        (Resource::Cpu, load(second, 0.0)),
        (Resource::Memory, load(second, 1.0)),
        (Resource::Gpu, load(second, 2.0)),
    ]
}

/// A predictor that has already seen `seconds` of one-second samples.
fn warmed(config: PredictorConfig, seconds: u64) -> Predictor {
    let mut predictor = Predictor::new(config);
    for second in 0..seconds {
        predictor.observe(Timestamp::from_secs(second), &values(second));
    }
    predictor
}

fn step(c: &mut Criterion) {
    let mut group = c.benchmark_group("predictor_step_3_resources");
    // The daemon's shape: a sample a second, 30 s buckets, so one step in 30 closes a bucket.
    let mut predictor = warmed(PredictorConfig::default(), 7_200);
    let mut second = 7_200;
    group.bench_function("sample_1s_bucket_30s", |b| {
        b.iter(|| {
            second += 1;
            black_box(predictor.observe(Timestamp::from_secs(second), &values(second)))
        });
    });
    // Worst case: every step closes a bucket and runs the forecaster.
    let config = PredictorConfig {
        bucket: Duration::from_secs(1),
        season: Some(Duration::from_secs(3_600)),
        ..PredictorConfig::default()
    };
    let mut predictor = warmed(config, 7_200);
    let mut second = 7_200;
    group.bench_function("every_step_closes_a_bucket", |b| {
        b.iter(|| {
            second += 1;
            black_box(predictor.observe(Timestamp::from_secs(second), &values(second)))
        });
    });
    group.finish();
}

fn series(c: &mut Criterion) {
    let mut predictor = SeriesPredictor::new(ForecastConfig {
        season: Some(288),
        ..ForecastConfig::default()
    });
    let mut second = 0;
    for _ in 0..5_000 {
        second += 1;
        predictor.push(load(second, 0.0));
    }
    c.bench_function("series_predictor_push", |b| {
        b.iter(|| {
            second += 1;
            black_box(predictor.push(load(second, 0.0)))
        });
    });
}

fn throughput(c: &mut Criterion) {
    const SAMPLES: u64 = 10_000;
    let mut group = c.benchmark_group("observe_throughput");
    group.throughput(Throughput::Elements(SAMPLES));
    group.sample_size(20);
    group.bench_function("3_resources_1s_samples", |b| {
        b.iter(|| {
            let mut predictor = Predictor::new(PredictorConfig::default());
            for second in 0..SAMPLES {
                black_box(predictor.observe(Timestamp::from_secs(second), &values(second)));
            }
        });
    });
    group.finish();
}

criterion_group!(benches, step, series, throughput);
criterion_main!(benches);
