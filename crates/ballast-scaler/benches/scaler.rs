//! Criterion benchmarks of one scaler step: an assessment of three resources in, outputs drained.

use std::hint::black_box;
use std::time::Duration;

use ballast_core::{
    Assessment, Forecast, LevelHints, PluginSpec, Resource, ResourceAssessment, ResourceHints,
    Timestamp,
};
use ballast_scaler::{Scaler, ScalerConfig};
use criterion::{Criterion, criterion_group, criterion_main};

fn plugins() -> Vec<PluginSpec> {
    (0..6)
        .map(|i| PluginSpec {
            name: format!("plugin{i}"),
            priority: i * 10,
            essential: i == 5,
            hints: ResourceHints {
                levels: vec![LevelHints::default(); 1 + (i as usize % 3)],
                cpu_share: 0.1,
                needs_gpu: i % 2 == 0,
            },
            can_suspend: false,
            ..Default::default()
        })
        .collect()
}

fn assessment(at: Timestamp, memory: f64, cpu: f64, gpu: f64) -> Assessment {
    let entry = |resource, v: f64| ResourceAssessment {
        resource,
        value: v,
        smoothed: v,
        forecast: Some(Forecast {
            value: v + 0.02,
            horizon: Duration::from_secs(300),
            confidence: 0.7,
            model: String::new(),
            error: None,
        }),
        trend: Default::default(),
        anomaly: Default::default(),
    };
    Assessment {
        at,
        resources: vec![
            entry(Resource::Memory, memory),
            entry(Resource::Cpu, cpu),
            entry(Resource::GpuMemory, gpu),
        ],
    }
}

fn step(scaler: &mut Scaler, a: &Assessment) -> usize {
    scaler.handle_assessment(a.at, a);
    let mut n = 0;
    while scaler.poll_command().is_some() {
        n += 1;
    }
    while scaler.poll_decision().is_some() {
        n += 1;
    }
    while scaler.poll_warning().is_some() {
        n += 1;
    }
    n + scaler.poll_timeout().map_or(0, |_| 1)
}

fn bench(c: &mut Criterion) {
    // The common case: a calm machine, nothing to decide.
    c.bench_function("scaler step, 3 resources, calm", |b| {
        let mut scaler = Scaler::new(ScalerConfig::default(), plugins()).unwrap();
        let mut t = 0u64;
        b.iter(|| {
            t += 1000;
            let a = assessment(Timestamp::from_millis(t), 0.4, 0.3, 0.2);
            black_box(step(&mut scaler, black_box(&a)))
        });
    });
    // A load that swings across every threshold, so sheds, restores and warnings happen.
    c.bench_function("scaler step, 3 resources, swinging load", |b| {
        let mut scaler = Scaler::new(ScalerConfig::default(), plugins()).unwrap();
        let mut t = 0u64;
        b.iter(|| {
            t += 1000;
            let phase = (t / 1000) % 1200;
            let memory = if phase < 600 { 0.3 } else { 0.9 };
            let a = assessment(Timestamp::from_millis(t), memory, 0.75, 0.5);
            black_box(step(&mut scaler, black_box(&a)))
        });
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
