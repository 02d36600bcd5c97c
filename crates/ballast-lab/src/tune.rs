//! `ballast tune`: searches the shed and restore thresholds, the smoothing, the cool-down and the
//! stabilization for the settings that, replayed over the given traces through the real predictor
//! and scaler (`simulate`'s engine), keep the time above a fixed limit at its minimum, then have
//! the fewest flaps, then the fewest plugin-seconds shed.
//!
//! The search is a coordinate descent over a grid per parameter: starting from the config's own
//! settings, each parameter in turn takes the value of its grid that scores best with the others
//! held, until a whole pass changes nothing. Every setting's replays over all traces run in
//! parallel (rayon), and each setting is replayed once (scores are remembered). The limit does not
//! move with the candidate thresholds, or a candidate could "improve" by raising it: it is the
//! resource's emergency threshold in the given config, else [`DEFAULT_LIMIT`], else `--limit`.

use std::cmp::Ordering;
use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use crate::trace::{Trace, TraceOptions, read_trace};
use anyhow::Context as _;
use ballast_core::Resource;
use rayon::prelude::*;
use serde::Serialize;

use crate::simulate::engine::{Sim, SimConfig};
use crate::simulate::{EX_CONFIG, Scale, guess_resource, load_config, replay};

/// The limit for a resource without an emergency threshold: the design's memory emergency.
pub const DEFAULT_LIMIT: f64 = 0.95;

/// Arguments of `ballast tune`.
#[derive(Debug, clap::Args)]
pub struct TuneArgs {
    /// The simulation config to start from (as for `ballast simulate`): its plugins and costs
    /// stay, its thresholds, smoothing, cool-down and stabilization are searched.
    #[arg(long, value_name = "FILE")]
    config: PathBuf,
    /// The traces to tune on (as for `ballast simulate`; each is scaled with `--scale auto`).
    #[arg(long, value_name = "FILE", num_args = 1.., required = true)]
    trace: Vec<PathBuf>,
    /// The utilization whose time above is minimized first; default: each trace's resource's
    /// emergency threshold in the config, else 0.95.
    #[arg(long, value_name = "FRACTION")]
    limit: Option<f64>,
    /// Print one JSON document instead of text.
    #[arg(long)]
    json: bool,
}

/// The settings `tune` searches.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Settings {
    /// The shed threshold (every resource).
    pub shed: f64,
    /// The restore threshold (every resource).
    pub restore: f64,
    /// The weight of the newest reading in the smoothed value.
    pub ema_weight: f64,
    /// The wait after each shed step.
    #[serde(with = "humantime_serde")]
    pub cooldown: Duration,
    /// The calm time before each restore step.
    #[serde(with = "humantime_serde")]
    pub stabilization: Duration,
}

impl Settings {
    /// The settings of `config` for `resource` (its own thresholds, else the default ones).
    fn of(config: &SimConfig, resource: Resource) -> Settings {
        let t = config.scaler.profile().thresholds(resource);
        Settings {
            shed: t.shed,
            restore: t.restore,
            ema_weight: config.predictor.ema_weight,
            cooldown: config.scaler.cooldown,
            stabilization: config.scaler.stabilization,
        }
    }

    /// `config` with these settings: the thresholds of every resource (each keeping its
    /// emergency threshold), the timings and the smoothing. `None` when they are not valid.
    fn apply(&self, config: &SimConfig) -> Option<SimConfig> {
        let mut config = config.clone();
        let thresholds = &mut config.scaler.thresholds;
        for t in std::iter::once(&mut thresholds.default).chain(thresholds.resources.values_mut()) {
            t.shed = self.shed;
            t.restore = self.restore;
        }
        config.scaler.cooldown = self.cooldown;
        config.scaler.stabilization = self.stabilization;
        config.predictor.ema_weight = self.ema_weight;
        config.problems().is_empty().then_some(config)
    }

    /// A key for remembering scores (the grids hold exact values).
    fn key(&self) -> [u64; 5] {
        [
            self.shed.to_bits(),
            self.restore.to_bits(),
            self.ema_weight.to_bits(),
            self.cooldown.as_millis() as u64,
            self.stabilization.as_millis() as u64,
        ]
    }
}

/// What one setting did on one trace, or on all of them added up.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct Score {
    /// Seconds the replayed utilization spent at or above the limit.
    pub seconds_over_limit: f64,
    /// Restores followed by a shed of the same plugin within the stabilization period (its end
    /// included).
    pub flaps: u64,
    /// Seconds shed, added over plugins.
    pub plugin_seconds_shed: f64,
    /// Shed steps.
    pub sheds: u64,
}

impl Score {
    fn add(&mut self, other: &Score) {
        self.seconds_over_limit += other.seconds_over_limit;
        self.flaps += other.flaps;
        self.plugin_seconds_shed += other.plugin_seconds_shed;
        self.sheds += other.sheds;
    }

    /// The objective, in order: time over the limit (whole seconds), flaps, plugin-seconds shed.
    pub fn objective_cmp(&self, other: &Score) -> Ordering {
        let whole = |s: f64| s.round() as u64;
        whole(self.seconds_over_limit)
            .cmp(&whole(other.seconds_over_limit))
            .then(self.flaps.cmp(&other.flaps))
            .then(whole(self.plugin_seconds_shed).cmp(&whole(other.plugin_seconds_shed)))
    }
}

/// One trace, read and scaled, with the resource it is replayed as and its limit.
pub struct TuneTrace {
    /// Its name.
    pub name: String,
    /// Its readings.
    pub trace: Trace,
    /// The factor that turns them into utilizations.
    pub factor: f64,
    /// The resource it stands for.
    pub resource: Resource,
    /// The utilization whose time above is minimized.
    pub limit: f64,
}

/// Replays every trace with `settings` (in parallel) and scores each; `None` for settings that
/// are not a valid config.
pub fn score(config: &SimConfig, settings: &Settings, traces: &[TuneTrace]) -> Option<Vec<Score>> {
    let config = settings.apply(config)?;
    traces
        .par_iter()
        .map(|t| {
            let mut sim = Sim::new(&config, t.resource).ok()?;
            sim.watch(t.limit);
            replay(&mut sim, &t.trace, t.factor, 1);
            let over = sim.seconds_over_watch();
            let summary = sim.finish().summary;
            Some(Score {
                seconds_over_limit: over,
                flaps: summary.flaps,
                plugin_seconds_shed: summary.seconds_shed.values().sum(),
                sheds: summary.sheds,
            })
        })
        .collect()
}

fn total(scores: &[Score]) -> Score {
    let mut sum = Score::default();
    for s in scores {
        sum.add(s);
    }
    sum
}

/// The grids searched, per parameter.
const SHED: [f64; 8] = [0.60, 0.65, 0.70, 0.75, 0.80, 0.85, 0.90, 0.95];
const RESTORE_GAP: [f64; 5] = [0.05, 0.10, 0.15, 0.20, 0.30];
const EMA_WEIGHT: [f64; 6] = [0.2, 0.3, 0.5, 0.7, 0.9, 1.0];
const COOLDOWN_SECONDS: [u64; 5] = [10, 30, 60, 120, 300];
const STABILIZATION_SECONDS: [u64; 6] = [60, 120, 300, 600, 1200, 1800];
/// Passes of the coordinate descent, at most.
const MAX_PASSES: usize = 6;

/// The result of a search.
#[derive(Debug, Serialize)]
pub struct Tuned {
    /// The config's own settings.
    pub current: Settings,
    /// Their score, per trace.
    pub current_scores: Vec<Score>,
    /// The best settings found.
    pub suggested: Settings,
    /// Their score, per trace.
    pub suggested_scores: Vec<Score>,
    /// Passes of the coordinate descent.
    pub passes: usize,
    /// Distinct settings replayed.
    pub evaluated: usize,
}

/// Searches from the config's own settings (those of the first trace's resource).
pub fn search(config: &SimConfig, traces: &[TuneTrace]) -> anyhow::Result<Tuned> {
    let resource = traces.first().map_or(Resource::Cpu, |t| t.resource);
    let current = Settings::of(config, resource);
    let mut memo: HashMap<[u64; 5], Option<Vec<Score>>> = HashMap::new();
    let current_scores =
        score(config, &current, traces).context("the config's own settings do not replay")?;
    memo.insert(current.key(), Some(current_scores.clone()));
    let (mut best, mut best_scores) = (current, current_scores.clone());
    let mut passes = 0;
    for _ in 0..MAX_PASSES {
        passes += 1;
        let before = best;
        // Each parameter's candidates are built from the best so far when its turn comes.
        for parameter in 0..5 {
            let base = best;
            let candidates: Vec<Settings> = match parameter {
                0 => SHED
                    .iter()
                    .map(|&shed| Settings {
                        shed,
                        restore: round2(shed - (base.shed - base.restore)),
                        ..base
                    })
                    .collect(),
                1 => RESTORE_GAP
                    .iter()
                    .map(|&gap| Settings {
                        restore: round2(base.shed - gap),
                        ..base
                    })
                    .collect(),
                2 => EMA_WEIGHT
                    .iter()
                    .map(|&ema_weight| Settings { ema_weight, ..base })
                    .collect(),
                3 => COOLDOWN_SECONDS
                    .iter()
                    .map(|&s| Settings {
                        cooldown: Duration::from_secs(s),
                        ..base
                    })
                    .collect(),
                _ => STABILIZATION_SECONDS
                    .iter()
                    .map(|&s| Settings {
                        stabilization: Duration::from_secs(s),
                        ..base
                    })
                    .collect(),
            };
            // Replay the candidates not seen yet together, so both cores stay busy.
            let fresh: Vec<Settings> = candidates
                .iter()
                .filter(|c| !memo.contains_key(&c.key()))
                .copied()
                .collect();
            let scored: Vec<(Settings, Option<Vec<Score>>)> = fresh
                .par_iter()
                .map(|c| (*c, score(config, c, traces)))
                .collect();
            for (c, s) in scored {
                memo.insert(c.key(), s);
            }
            for c in &candidates {
                if let Some(Some(scores)) = memo.get(&c.key())
                    && total(scores).objective_cmp(&total(&best_scores)) == Ordering::Less
                {
                    best = *c;
                    best_scores = scores.clone();
                }
            }
        }
        if best == before {
            break;
        }
    }
    Ok(Tuned {
        current,
        current_scores,
        suggested: best,
        suggested_scores: best_scores,
        passes,
        evaluated: memo.len(),
    })
}

fn round2(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}

/// Runs `ballast tune`.
pub fn run(args: TuneArgs) -> anyhow::Result<ExitCode> {
    let config_name = args.config.display().to_string();
    let config = match load_config(&args.config)? {
        Ok(config) => config,
        Err(problems) => {
            for problem in problems {
                eprintln!("error: {config_name}: {problem}");
            }
            return Ok(ExitCode::from(EX_CONFIG));
        }
    };
    if let Some(limit) = args.limit
        && !(limit > 0.0 && limit <= 1.0)
    {
        anyhow::bail!("--limit must be a utilization in (0, 1], got {limit}");
    }
    let mut traces = Vec::new();
    for path in &args.trace {
        let name = path.display().to_string();
        let file =
            std::fs::File::open(path).with_context(|| format!("cannot open trace {name}"))?;
        let trace = read_trace(
            &name,
            std::io::BufReader::new(file),
            &TraceOptions::default(),
        )?;
        if trace.points.is_empty() {
            anyhow::bail!(
                "{name}: column `{}` has no readings to replay",
                trace.column
            );
        }
        let resource = trace
            .column
            .parse::<Resource>()
            .ok()
            .or(config.resource)
            .unwrap_or_else(|| guess_resource(&trace.column));
        let limit = args.limit.unwrap_or_else(|| {
            config
                .scaler
                .profile()
                .thresholds(resource)
                .emergency
                .unwrap_or(DEFAULT_LIMIT)
        });
        let factor = Scale::choose("auto", &trace)?.factor;
        traces.push(TuneTrace {
            name,
            trace,
            factor,
            resource,
            limit,
        });
    }
    let started = Instant::now();
    let tuned = search(&config, &traces)?;
    let elapsed = started.elapsed();
    if args.json {
        let per_trace: Vec<serde_json::Value> = traces
            .iter()
            .zip(tuned.current_scores.iter().zip(&tuned.suggested_scores))
            .map(|(t, (c, s))| {
                serde_json::json!({
                    "trace": t.name, "resource": t.resource, "limit": t.limit,
                    "current": c, "suggested": s,
                })
            })
            .collect();
        let json = serde_json::json!({
            "current": tuned.current,
            "suggested": tuned.suggested,
            "current_total": total(&tuned.current_scores),
            "suggested_total": total(&tuned.suggested_scores),
            "traces": per_trace,
            "passes": tuned.passes,
            "settings_evaluated": tuned.evaluated,
            "seconds": elapsed.as_secs_f64(),
            "toml": toml_snippet(&config, &tuned.suggested),
        });
        println!("{}", serde_json::to_string_pretty(&json)?);
    } else {
        print!("{}", to_text(&config, &traces, &tuned, elapsed));
    }
    Ok(ExitCode::SUCCESS)
}

/// Under a day as `2h 5m`, longer in hours (`53.4 h`) so that long totals compare at a glance.
fn duration(seconds: f64) -> String {
    if seconds < 86_400.0 {
        let minutes = if seconds >= 3600.0 {
            (seconds / 60.0).round() * 60.0
        } else {
            seconds.round()
        };
        humantime::format_duration(Duration::from_secs(minutes.max(0.0) as u64)).to_string()
    } else {
        format!("{:.1} h", seconds / 3600.0)
    }
}

/// The suggested settings as TOML for a simulate config (the daemon's `[scaler]` and
/// `[predictor]` tables take the same keys).
pub fn toml_snippet(config: &SimConfig, s: &Settings) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "[scaler]");
    let _ = writeln!(
        out,
        "cooldown = \"{}\"",
        humantime::format_duration(s.cooldown)
    );
    let _ = writeln!(
        out,
        "stabilization = \"{}\"",
        humantime::format_duration(s.stabilization)
    );
    let _ = writeln!(out, "\n[scaler.thresholds.default]");
    let _ = writeln!(out, "shed = {:.2}\nrestore = {:.2}", s.shed, s.restore);
    if let Some(e) = config.scaler.thresholds.default.emergency {
        let _ = writeln!(out, "emergency = {e:.2}");
    }
    for (resource, t) in &config.scaler.thresholds.resources {
        let _ = writeln!(out, "\n[scaler.thresholds.{resource}]");
        let _ = writeln!(out, "shed = {:.2}\nrestore = {:.2}", s.shed, s.restore);
        if let Some(e) = t.emergency {
            let _ = writeln!(out, "emergency = {e:.2}");
        }
    }
    let _ = writeln!(out, "\n[predictor]\nema_weight = {}", s.ema_weight);
    out
}

fn to_text(config: &SimConfig, traces: &[TuneTrace], tuned: &Tuned, elapsed: Duration) -> String {
    let mut out = String::new();
    let readings: usize = traces.iter().map(|t| t.trace.points.len()).sum();
    let _ = writeln!(
        out,
        "tuned on {} traces ({readings} readings): {} passes of coordinate descent, {} settings \
         replayed in {:.1} s",
        traces.len(),
        tuned.passes,
        tuned.evaluated,
        elapsed.as_secs_f64()
    );
    let _ = writeln!(
        out,
        "objective, in order: time above the limit (the resource's emergency threshold, else \
         {DEFAULT_LIMIT}), flaps, plugin time shed\n"
    );
    let (c, s) = (tuned.current, tuned.suggested);
    let (ct, st) = (total(&tuned.current_scores), total(&tuned.suggested_scores));
    let rows: Vec<(&str, String, String)> = vec![
        ("shed", format!("{:.2}", c.shed), format!("{:.2}", s.shed)),
        (
            "restore",
            format!("{:.2}", c.restore),
            format!("{:.2}", s.restore),
        ),
        (
            "ema_weight",
            format!("{}", c.ema_weight),
            format!("{}", s.ema_weight),
        ),
        (
            "cooldown",
            humantime::format_duration(c.cooldown).to_string(),
            humantime::format_duration(s.cooldown).to_string(),
        ),
        (
            "stabilization",
            humantime::format_duration(c.stabilization).to_string(),
            humantime::format_duration(s.stabilization).to_string(),
        ),
        (
            "time above the limit",
            duration(ct.seconds_over_limit),
            duration(st.seconds_over_limit),
        ),
        ("flaps", ct.flaps.to_string(), st.flaps.to_string()),
        (
            "plugin time shed",
            duration(ct.plugin_seconds_shed),
            duration(st.plugin_seconds_shed),
        ),
        ("sheds", ct.sheds.to_string(), st.sheds.to_string()),
    ];
    let _ = writeln!(out, "{:<22}{:>22}  {:>22}", "", "current", "suggested");
    for (label, a, b) in &rows {
        let _ = writeln!(out, "{label:<22}{a:>22}  {b:>22}");
    }
    let verdict = match st.objective_cmp(&ct) {
        Ordering::Less => "the suggested settings do better than the current ones",
        _ => "the current settings are already the best the search found",
    };
    let _ = writeln!(out, "\n{verdict}\n");
    let _ = writeln!(
        out,
        "per trace (current -> suggested): time above the limit, flaps, plugin time shed"
    );
    for (t, (a, b)) in traces
        .iter()
        .zip(tuned.current_scores.iter().zip(&tuned.suggested_scores))
    {
        let name = std::path::Path::new(&t.name)
            .file_name()
            .map_or_else(|| t.name.clone(), |n| n.to_string_lossy().into_owned());
        let _ = writeln!(
            out,
            "  {name:<45} {} -> {}, {} -> {}, {} -> {}",
            duration(a.seconds_over_limit),
            duration(b.seconds_over_limit),
            a.flaps,
            b.flaps,
            duration(a.plugin_seconds_shed),
            duration(b.plugin_seconds_shed)
        );
    }
    let _ = writeln!(out, "\n# suggested settings\n{}", toml_snippet(config, &s));
    out
}

#[cfg(test)]
mod tests;
