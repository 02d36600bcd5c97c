//! The search on hand-made traces: the objective's order, the limit that does not move with the
//! candidates, a search that finds a setting no worse than the config's own, and one that finds
//! strictly better settings than bad ones.

use std::cmp::Ordering;
use std::fmt::Write as _;

use crate::trace::parse_trace;

use super::*;

const CONFIG: &str = r#"
resource = "memory"

[scaler]
min_confidence = 1.0
cooldown = "30s"
stabilization = "5m"

[scaler.concurrency]
enabled = false

[[plugins]]
name = "discord"
priority = 10
levels = [0.10]

[[plugins]]
name = "voice"
priority = 20
levels = [0.15, 0.05]

[[plugins]]
name = "core"
priority = 100
essential = true
levels = [0.05]
"#;

/// Memory that climbs to 0.99 in two bursts and oscillates around 0.78 in between.
fn bursty() -> TuneTrace {
    let mut text = String::from("timestamp,value\n");
    for i in 0..1440_u64 {
        let t = i * 10;
        let v = match i {
            100..=130 | 700..=720 => 0.99,
            300..=600 => 0.72 + 0.12 * ((i / 20) % 2) as f64,
            _ => 0.50,
        };
        let _ = writeln!(text, "{t},{v}");
    }
    TuneTrace {
        name: "bursty.csv".to_owned(),
        trace: parse_trace("bursty.csv", &text, &TraceOptions::default()).unwrap(),
        factor: 1.0,
        resource: Resource::Memory,
        limit: 0.95,
    }
}

fn config() -> SimConfig {
    toml::from_str(CONFIG).unwrap()
}

#[test]
fn the_objective_puts_time_over_the_limit_first_then_flaps_then_time_shed() {
    let score = |over: f64, flaps: u64, shed: f64| Score {
        seconds_over_limit: over,
        flaps,
        plugin_seconds_shed: shed,
        sheds: 0,
    };
    assert_eq!(
        score(10.0, 0, 0.0).objective_cmp(&score(20.0, 9, 9e9)),
        Ordering::Less
    );
    assert_eq!(
        score(10.0, 1, 0.0).objective_cmp(&score(10.0, 2, 0.0)),
        Ordering::Less
    );
    assert_eq!(
        score(10.0, 1, 5.0).objective_cmp(&score(10.0, 1, 50.0)),
        Ordering::Less
    );
    // Less than half a second apart is a tie, whatever floating point did.
    assert_eq!(
        score(10.2, 1, 5.0).objective_cmp(&score(9.9, 1, 5.0)),
        Ordering::Equal
    );
}

#[test]
fn the_limit_stays_where_it_is_when_the_thresholds_move() {
    let traces = [bursty()];
    let config = config();
    let current = Settings::of(&config, Resource::Memory);
    let low = Settings {
        shed: 0.60,
        restore: 0.50,
        ..current
    };
    let high = Settings {
        shed: 0.95,
        restore: 0.85,
        ..current
    };
    let low = total(&score(&config, &low, &traces).unwrap());
    let high = total(&score(&config, &high, &traces).unwrap());
    // Shedding later sheds less but spends more time above the same fixed limit.
    assert!(
        high.plugin_seconds_shed < low.plugin_seconds_shed,
        "{high:?} {low:?}"
    );
    assert!(
        high.seconds_over_limit >= low.seconds_over_limit,
        "{high:?} {low:?}"
    );
    // Invalid settings (restore above shed) are not replayed.
    let inverted = Settings {
        shed: 0.70,
        restore: 0.80,
        ..current
    };
    assert!(score(&config, &inverted, &traces).is_none());
}

#[test]
fn the_search_never_ends_worse_than_the_current_settings() {
    let traces = [bursty()];
    let config = config();
    let tuned = search(&config, &traces).unwrap();
    let (current, suggested) = (total(&tuned.current_scores), total(&tuned.suggested_scores));
    assert_ne!(
        suggested.objective_cmp(&current),
        Ordering::Greater,
        "{current:?} {suggested:?}"
    );
    assert!(tuned.evaluated > 10 && tuned.passes >= 1, "{tuned:?}");
    // The suggestion replays to exactly the score reported for it.
    let again = score(&config, &tuned.suggested, &traces).unwrap();
    assert_eq!(again, tuned.suggested_scores);
    // Its TOML snippet is a valid simulate config once the plugins are added.
    let snippet = toml_snippet(&config, &tuned.suggested);
    let mut text = format!("resource = \"memory\"\n{snippet}");
    text.push_str(&CONFIG[CONFIG.find("[[plugins]]").unwrap()..]);
    let parsed: SimConfig = toml::from_str(&text).unwrap();
    assert!(parsed.problems().is_empty(), "{:?}", parsed.problems());
    assert_eq!(Settings::of(&parsed, Resource::Memory), tuned.suggested);
}

#[test]
fn the_search_finds_strictly_better_settings_than_bad_ones() {
    // The bursts replayed as CPU, which has no emergency threshold: only the policy's own sheds
    // bring the two bursts to 0.99 below the limit of 0.95.
    let mut trace = bursty();
    trace.resource = Resource::Cpu;
    let traces = [trace];
    // Bad on purpose: shedding only at the limit itself, on a sluggish smoothed value, with a
    // long cool-down between steps.
    let bad = Settings {
        shed: 0.95,
        restore: 0.90,
        ema_weight: 0.2,
        cooldown: Duration::from_secs(300),
        stabilization: Duration::from_secs(60),
    };
    let config = bad.apply(&config()).expect("the bad settings are valid");
    let tuned = search(&config, &traces).unwrap();
    assert_eq!(tuned.current, bad);
    let (current, suggested) = (total(&tuned.current_scores), total(&tuned.suggested_scores));
    // The bad settings leave the bursts above the limit for a while...
    assert!(current.seconds_over_limit >= 60.0, "{current:?}");
    // ...and the search finds settings that do strictly better on the first criterion.
    assert_ne!(tuned.suggested, bad);
    assert_eq!(
        suggested.objective_cmp(&current),
        Ordering::Less,
        "{current:?} {suggested:?}"
    );
    assert!(
        suggested.seconds_over_limit < current.seconds_over_limit,
        "{:?}: {current:?} -> {suggested:?}",
        tuned.suggested
    );
    // The scores are what those settings replay to, not figures of the search's own.
    assert_eq!(score(&config, &bad, &traces).unwrap(), tuned.current_scores);
    assert_eq!(
        score(&config, &tuned.suggested, &traces).unwrap(),
        tuned.suggested_scores
    );
}
