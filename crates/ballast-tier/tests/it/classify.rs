//! Classification of the fixture machines under `tests/fixtures/facts` by the default rules.

use std::fmt::Write as _;
use std::path::Path;

use ballast_core::tier::{GpuFact, HardwareFacts};
use ballast_core::{Level, MemoryScope, Metric, Timestamp};
use ballast_tier::{ByteSize, TierConfig, classify};
use expect_test::expect;

pub fn facts(memory_gib: u64, cores: u32, gpu_gib: Option<u64>) -> HardwareFacts {
    HardwareFacts {
        memory_total_bytes: ByteSize::gib(memory_gib).0,
        memory_scope: MemoryScope::Host,
        cores,
        cpu_limit_cores: None,
        physical_cores: None,
        cpu_arch: None,
        gpus: match gpu_gib {
            Some(gib) => Metric::available(vec![GpuFact {
                index: 0,
                name: "fake".into(),
                memory_total_bytes: ByteSize::gib(gib).0,
            }]),
            None => Metric::unavailable("no NVIDIA driver"),
        },
    }
}

#[test]
fn fixture_machines_by_the_default_rules() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/facts");
    let mut names: Vec<_> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    let config = TierConfig::default();
    let mut out = String::new();
    for name in names {
        let text = std::fs::read_to_string(root.join(&name)).unwrap();
        let facts: HardwareFacts = serde_json::from_str(&text).unwrap();
        let tier = classify(&facts, &config, Timestamp::from_secs(7));
        assert_eq!(tier.detected_at, Timestamp::from_secs(7));
        assert_eq!(tier.facts, facts);
        writeln!(out, "{name}: {} (rank {})", tier.name, tier.rank).unwrap();
        writeln!(out, "  rule: {}", tier.rule).unwrap();
        for (plugin, allowance) in &tier.plugins {
            let level = allowance
                .best_level()
                .map_or("forbidden".to_owned(), |l| format!("level {l}"));
            writeln!(out, "  {plugin}: {level}: {}", allowance.reason()).unwrap();
        }
    }
    expect![[r#"
        build-box-24gb-2-cores.json: standard (rank 1)
          rule: `standard` because memory 23.5 GiB >= 3.5 GiB and cores 2 >= 2; not `gpu`: GPUs 0 < 1 and largest GPU memory 0 B < 7.5 GiB; not `performance`: cores 2 < 8
          voice: level 1: not level 0: tier `standard` is below `gpu`, nor tier `standard` is below `performance` and memory 23.5 GiB < 30 GiB; level 1: tier `standard` is at least `standard`
        container-limited-2gb.json: constrained (rank 0)
          rule: `constrained` has no conditions; not `gpu`: memory 2 GiB < 15 GiB and GPUs 0 < 1 and largest GPU memory 0 B < 7.5 GiB; not `performance`: memory 2 GiB < 15 GiB; not `standard`: memory 2 GiB < 3.5 GiB
          voice: level 2: not level 0: tier `constrained` is below `gpu`, nor tier `constrained` is below `performance` and memory 2 GiB < 30 GiB; not level 1: tier `constrained` is below `standard`; level 2 has no requirement
        desktop-32gb-small-gpu.json: performance (rank 2)
          rule: `performance` because memory 31.2 GiB >= 15 GiB and cores 12 >= 8; not `gpu`: largest GPU memory 4 GiB < 7.5 GiB
          voice: level 0: level 0: tier `performance` is at least `performance` and memory 31.2 GiB >= 30 GiB
        laptop-16gb-8-cores.json: performance (rank 2)
          rule: `performance` because memory 15.3 GiB >= 15 GiB and cores 8 >= 8; not `gpu`: GPUs 0 < 1 and largest GPU memory 0 B < 7.5 GiB
          voice: level 1: not level 0: tier `performance` is below `gpu`, nor memory 15.3 GiB < 30 GiB; level 1: tier `performance` is at least `standard`
        raspberry-pi-4gb.json: standard (rank 1)
          rule: `standard` because memory 3.7 GiB >= 3.5 GiB and cores 4 >= 2; not `gpu`: memory 3.7 GiB < 15 GiB and GPUs 0 < 1 and largest GPU memory 0 B < 7.5 GiB; not `performance`: memory 3.7 GiB < 15 GiB and cores 4 < 8
          voice: level 1: not level 0: tier `standard` is below `gpu`, nor tier `standard` is below `performance` and memory 3.7 GiB < 30 GiB; level 1: tier `standard` is at least `standard`
        small-vps-1gb.json: constrained (rank 0)
          rule: `constrained` has no conditions; not `gpu`: memory 967.8 MiB < 15 GiB and GPUs 0 < 1 and largest GPU memory 0 B < 7.5 GiB; not `performance`: memory 967.8 MiB < 15 GiB and cores 1 < 8; not `standard`: memory 967.8 MiB < 3.5 GiB and cores 1 < 2
          voice: level 2: not level 0: tier `constrained` is below `gpu`, nor tier `constrained` is below `performance` and memory 967.8 MiB < 30 GiB; not level 1: tier `constrained` is below `standard`; level 2 has no requirement
        workstation-64gb-rtx4090.json: gpu (rank 3)
          rule: `gpu` because memory 62.7 GiB >= 15 GiB and GPUs 1 >= 1 and largest GPU memory 24 GiB >= 7.5 GiB
          voice: level 0: level 0: tier `gpu` is at least `gpu`
    "#]]
    .assert_eq(&out);
}

#[test]
fn classification_is_monotonic_in_memory_and_cores() {
    let config = TierConfig::default();
    let mut previous = 0;
    for (memory, cores) in [(1, 1), (4, 2), (8, 4), (16, 8), (64, 64)] {
        let tier = classify(&facts(memory, cores, None), &config, Timestamp::ZERO);
        assert!(
            tier.rank >= previous,
            "{memory} GiB, {cores} cores: {}",
            tier.name
        );
        previous = tier.rank;
    }
}

#[test]
fn each_tier_selects_its_profile() {
    let config = TierConfig::default();
    let tier = classify(&facts(64, 16, Some(24)), &config, Timestamp::ZERO);
    assert_eq!(tier.name, "gpu");
    assert_eq!(tier.profile, config.tiers[3].profile);
    assert_eq!(tier.best_level("voice"), Some(Level::FULL));
    assert_eq!(tier.best_level("discord"), Some(Level::FULL));
    let tier = classify(&facts(1, 1, None), &config, Timestamp::ZERO);
    assert_eq!(tier.name, "constrained");
    assert_eq!(tier.profile, config.tiers[0].profile);
    assert_eq!(tier.best_level("voice"), Some(Level(2)));
}

#[test]
fn a_cpu_quota_counts_against_the_cores() {
    let config = TierConfig::default();
    let mut f = facts(64, 32, None);
    assert_eq!(classify(&f, &config, Timestamp::ZERO).name, "performance");
    f.cpu_limit_cores = Some(2.0);
    let tier = classify(&f, &config, Timestamp::ZERO);
    assert_eq!(tier.name, "standard");
    assert!(
        tier.rule.contains("not `performance`: cores 2 < 8"),
        "{}",
        tier.rule
    );
}

#[test]
fn an_empty_configuration_still_gives_an_answer() {
    let config = TierConfig {
        tiers: Vec::new(),
        plugins: Default::default(),
    };
    let tier = classify(&facts(8, 4, None), &config, Timestamp::ZERO);
    assert_eq!(tier.name, "unclassified");
}

mod props {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #[test]
        fn every_machine_gets_a_valid_tier_of_the_default_rules(
            memory in 0u64..(1 << 40),
            cores in 0u32..512,
            gpu in proptest::option::of(0u64..(1 << 36)),
        ) {
            let mut f = facts(0, cores, None);
            f.memory_total_bytes = memory;
            if let Some(bytes) = gpu {
                f.gpus = Metric::available(vec![GpuFact { index: 0, name: "g".into(), memory_total_bytes: bytes }]);
            }
            let config = TierConfig::default();
            let tier = classify(&f, &config, Timestamp::ZERO);
            prop_assert!(config.rank(&tier.name).is_some());
            prop_assert!(tier.best_level("voice").is_some());
        }
    }
}
