//! `ballast simulate --compare A.toml B.toml ...` and `--reference`: the same traces (and calls,
//! with `--calls`) through several configs, and through reference policies built from the first
//! config ([`super::reference`]), one replay per config and trace in parallel, and their
//! summaries, added up over the traces, side by side.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use rayon::prelude::*;

use super::engine::{CallSummary, SimConfig, Summary};
use super::reference::Reference;
use super::{EX_CONFIG, Inputs, Scale, SimulateArgs, load_config, replay};

/// Where a column's policy comes from.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Source {
    /// A config file.
    Config(PathBuf),
    /// A reference policy built from a config file.
    Reference(Reference, PathBuf),
}

/// One config's replays.
#[derive(Debug)]
pub(crate) struct Compared {
    /// Its column header: the config's file name, or the reference's name.
    pub header: String,
    /// Where it comes from.
    pub source: Source,
    /// Its summary, added up over the traces.
    pub summary: Summary,
    /// Its summary on each trace, in order.
    pub per_trace: Vec<Summary>,
}

impl Compared {
    /// A column replayed on one trace.
    #[cfg(test)]
    pub(crate) fn one(path: &str, summary: Summary) -> Compared {
        Compared {
            header: header(Path::new(path)),
            source: Source::Config(PathBuf::from(path)),
            per_trace: vec![summary.clone()],
            summary,
        }
    }
}

/// A policy to replay: its header, where it comes from, its config, and the window within which
/// a shed after a restore is a flap (`None`: its own stabilization).
struct Column {
    header: String,
    source: Source,
    config: SimConfig,
    flap_window: Option<Duration>,
}

/// The configs `args` names as columns: `--compare`'s, else `--config`'s, then the references
/// of `--reference` built from the first. `Err` with the exit code when a config has problems
/// (they are printed).
fn columns(args: &SimulateArgs) -> anyhow::Result<Result<Vec<Column>, ExitCode>> {
    let paths: Vec<PathBuf> = if args.compare.is_empty() {
        args.config.iter().cloned().collect()
    } else {
        args.compare.clone()
    };
    let mut columns = Vec::new();
    let mut bad = false;
    for path in &paths {
        match load_config(path)? {
            Ok(config) => columns.push(Column {
                header: header(path),
                source: Source::Config(path.clone()),
                config,
                flap_window: None,
            }),
            Err(problems) => {
                bad = true;
                for problem in problems {
                    eprintln!("error: {}: {problem}", path.display());
                }
            }
        }
    }
    if bad {
        return Ok(Err(ExitCode::from(EX_CONFIG)));
    }
    if let (Some(named), Some(base)) = (&args.reference, columns.first()) {
        let references: Vec<Reference> = if named.is_empty() {
            Reference::ALL.to_vec()
        } else {
            Reference::ALL
                .into_iter()
                .filter(|r| named.contains(r))
                .collect()
        };
        let base_path = paths[0].clone();
        let window = base.config.scaler.stabilization;
        let built: Vec<Column> = references
            .into_iter()
            .map(|r| Column {
                header: r.name().to_owned(),
                source: Source::Reference(r, base_path.clone()),
                config: r.config(&base.config),
                flap_window: Some(window),
            })
            .collect();
        columns.extend(built);
    }
    Ok(Ok(columns))
}

/// Runs `ballast simulate --compare` or `--reference`.
pub fn run(args: &SimulateArgs) -> anyhow::Result<ExitCode> {
    let columns = match columns(args)? {
        Ok(columns) => columns,
        Err(code) => return Ok(code),
    };
    let inputs = Inputs::load_all(args)?;
    let scales = inputs
        .iter()
        .map(|i| i.scale(&args.scale))
        .collect::<anyhow::Result<Vec<Scale>>>()?;
    let jobs: Vec<(usize, usize)> = (0..columns.len())
        .flat_map(|c| (0..inputs.len()).map(move |t| (c, t)))
        .collect();
    let results: Vec<Result<Summary, Vec<String>>> = jobs
        .par_iter()
        .map(|&(c, t)| {
            let column = &columns[c];
            replay_one(
                &column.config,
                column.flap_window,
                &inputs[t],
                scales[t].factor,
                args.resource,
                args.repeat.max(1),
            )
        })
        .collect();
    let mut per_column: Vec<Vec<Summary>> = columns.iter().map(|_| Vec::new()).collect();
    for (result, &(c, _)) in results.into_iter().zip(&jobs) {
        match result {
            Ok(summary) => per_column[c].push(summary),
            Err(problems) => {
                let name = match &columns[c].source {
                    Source::Config(path) | Source::Reference(_, path) => path.display(),
                };
                for problem in problems {
                    eprintln!("error: {name}: {problem}");
                }
                return Ok(ExitCode::from(EX_CONFIG));
            }
        }
    }
    let compared: Vec<Compared> = columns
        .into_iter()
        .zip(per_column)
        .map(|(column, per_trace)| Compared {
            header: column.header,
            source: column.source,
            summary: total(&per_trace),
            per_trace,
        })
        .collect();
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&to_json(&inputs, &scales, &compared))?
        );
    } else {
        print!("{}", to_text(&inputs, &scales, &compared));
    }
    Ok(ExitCode::SUCCESS)
}

/// One replay of `input` under `config`, its readings scaled by `factor`, as `resource` (else as
/// the trace and config say), `repeat` times; a shed within `flap_window` after a restore is a
/// flap (`None`: within the config's stabilization).
pub(crate) fn replay_one(
    config: &SimConfig,
    flap_window: Option<Duration>,
    input: &Inputs,
    factor: f64,
    resource: Option<ballast_core::Resource>,
    repeat: u32,
) -> Result<Summary, Vec<String>> {
    let resource = input.resource(resource, config);
    let mut sim = input.sim(config, resource)?;
    if let Some(window) = flap_window {
        sim.count_flaps_within(window);
    }
    replay(&mut sim, &input.trace, factor, repeat);
    Ok(sim.finish().summary)
}

/// The JSON document: one trace as `trace`, `column` and `scale`, several as `traces`; one entry
/// per config in `configs` (a reference has `reference` and the `config` it was built from), its
/// `summary` added up over the traces and, with several, `per_trace` summaries.
fn to_json(inputs: &[Inputs], scales: &[Scale], compared: &[Compared]) -> serde_json::Value {
    let several = inputs.len() > 1;
    let configs: Vec<serde_json::Value> = compared
        .iter()
        .map(|c| {
            let mut entry = match &c.source {
                Source::Config(path) => serde_json::json!({"config": path.display().to_string()}),
                Source::Reference(r, path) => serde_json::json!({
                    "reference": r.name(), "config": path.display().to_string(),
                }),
            };
            entry["summary"] = serde_json::json!(c.summary);
            if several {
                entry["per_trace"] = serde_json::json!(c.per_trace);
            }
            entry
        })
        .collect();
    let mut json = if several {
        let traces: Vec<serde_json::Value> = inputs
            .iter()
            .zip(scales)
            .map(|(i, s)| {
                serde_json::json!({
                    "trace": i.name, "column": i.trace.column, "scale": s.factor,
                    "readings": i.trace.points.len(),
                })
            })
            .collect();
        serde_json::json!({ "traces": traces })
    } else {
        serde_json::json!({
            "trace": inputs[0].name,
            "column": inputs[0].trace.column,
            "scale": scales[0].factor,
        })
    };
    json["configs"] = serde_json::json!(configs);
    if let Some(first) = inputs.first()
        && !first.calls.is_empty()
    {
        json["calls"] = first.calls_json();
        json["calls_shift_seconds"] = serde_json::json!(first.shift_ms as f64 / 1000.0);
    }
    json
}

/// Summaries added up: counts and times summed (per plugin for the time shed), peaks the highest,
/// the resource the first's. Calls are replayed against one trace, so they are the first's.
/// No summaries add up to an empty one.
pub(crate) fn total(summaries: &[Summary]) -> Summary {
    let Some((first, rest)) = summaries.split_first() else {
        return Summary::empty(ballast_core::Resource::Cpu);
    };
    rest.iter().fold(first.clone(), |mut sum, s| {
        sum.add(s);
        sum
    })
}

/// One figure of a calls summary, as a cell.
type CallFigure = dyn Fn(&CallSummary) -> String;

/// A config's column header: its file name.
fn header(path: &Path) -> String {
    path.file_name().map_or_else(
        || path.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    )
}

/// Under a day as `2h 5m 10s`, longer in hours (`650.3 h`), so that long totals compare at a
/// glance (as `ballast tune` shows them).
fn duration(seconds: f64) -> String {
    if seconds >= 86_400.0 {
        return format!("{:.1} h", seconds / 3600.0);
    }
    humantime::format_duration(std::time::Duration::from_secs(
        seconds.round().max(0.0) as u64
    ))
    .to_string()
}

/// The summaries side by side: one row per figure, one column per config.
pub(crate) fn to_text(inputs: &[Inputs], scales: &[Scale], compared: &[Compared]) -> String {
    let mut rows: Vec<(String, Vec<String>)> = Vec::new();
    let mut row = |label: &str, value: &dyn Fn(&Summary) -> String| {
        rows.push((
            label.to_owned(),
            compared.iter().map(|c| value(&c.summary)).collect(),
        ));
    };
    row("resource", &|s| s.resource.to_string());
    row("sheds", &|s| s.sheds.to_string());
    row("restores", &|s| s.restores.to_string());
    row("flaps", &|s| s.flaps.to_string());
    row("throttles", &|s| s.throttles.to_string());
    row("warnings", &|s| s.warnings.to_string());
    row("over shed threshold", &|s| duration(s.seconds_over_high));
    row("in emergency", &|s| duration(s.seconds_in_emergency));
    row("peak replayed", &|s| format!("{:.3}", s.peak_replayed));
    let plugins: BTreeSet<&String> = compared
        .iter()
        .flat_map(|c| c.summary.seconds_shed.keys())
        .collect();
    let mut plugin_rows = Vec::new();
    for plugin in plugins {
        plugin_rows.push((
            format!("  {plugin}"),
            compared
                .iter()
                .map(|c| {
                    c.summary
                        .seconds_shed
                        .get(plugin)
                        .map_or_else(|| "-".to_owned(), |s| duration(*s))
                })
                .collect(),
        ));
    }
    let mut total_row = vec![];
    for c in compared {
        total_row.push(duration(c.summary.seconds_shed.values().sum()));
    }
    rows.push(("time shed, all plugins".to_owned(), total_row));
    rows.extend(plugin_rows);
    // What the callers of each plugin replayed with calls saw.
    let called: BTreeSet<&String> = compared
        .iter()
        .flat_map(|c| c.summary.calls.keys())
        .collect();
    for plugin in called {
        let calls_to = format!("calls to {plugin}");
        let figures: [(&str, &CallFigure); 8] = [
            (&calls_to, &|c| c.calls.to_string()),
            ("  cold starts", &|c| c.cold_starts.to_string()),
            ("  waited", &|c| c.waited.to_string()),
            ("  wait mean/p95/max", &|c| {
                format!(
                    "{:.1}/{:.1}/{:.1}s",
                    c.wait_mean_seconds, c.wait_p95_seconds, c.wait_max_seconds
                )
            }),
            ("  refused", &|c| c.refused.to_string()),
            ("  unloads", &|c| c.unloads.to_string()),
            ("  loaded", &|c| duration(c.seconds_loaded)),
            ("  GPU memory GB-hours", &|c| {
                c.gpu_memory_gb_hours
                    .map_or_else(|| "-".to_owned(), |h| format!("{h:.2}"))
            }),
        ];
        for (label, value) in figures {
            rows.push((
                label.to_owned(),
                compared
                    .iter()
                    .map(|c| {
                        c.summary
                            .calls
                            .get(plugin)
                            .map_or_else(|| "-".to_owned(), value)
                    })
                    .collect(),
            ));
        }
    }

    let headers: Vec<String> = compared.iter().map(|c| c.header.clone()).collect();
    let label_width = rows.iter().map(|r| r.0.len()).max().unwrap_or(0).max(6);
    let widths: Vec<usize> = (0..compared.len())
        .map(|i| {
            rows.iter()
                .map(|r| r.1[i].len())
                .chain(std::iter::once(headers[i].len()))
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    match (inputs, scales) {
        ([inputs], _) if inputs.calm => {
            let _ = writeln!(
                out,
                "comparing {} configs, the resource calm over the calls' time span ({} readings)",
                compared.len(),
                inputs.trace.points.len(),
            );
        }
        ([inputs], [scale]) => {
            let _ = writeln!(
                out,
                "comparing {} configs on {} (column `{}`, {} readings, scale {}: {})",
                compared.len(),
                inputs.name,
                inputs.trace.column,
                inputs.trace.points.len(),
                scale.factor,
                scale.why
            );
        }
        _ => {
            let readings: usize = inputs.iter().map(|i| i.trace.points.len()).sum();
            let _ = writeln!(
                out,
                "comparing {} configs on {} traces ({readings} readings, each scaled as --scale \
                 says), figures added up over the traces",
                compared.len(),
                inputs.len(),
            );
        }
    }
    if let Some(first) = inputs.first() {
        out.push_str(&first.calls_text());
    }
    let _ = writeln!(out);
    let _ = write!(out, "{:<label_width$}", "");
    for (h, w) in headers.iter().zip(&widths) {
        let _ = write!(out, "  {h:>w$}");
    }
    let _ = writeln!(out);
    for (label, values) in &rows {
        let _ = write!(out, "{label:<label_width$}");
        for (v, w) in values.iter().zip(&widths) {
            let _ = write!(out, "  {v:>w$}");
        }
        let _ = writeln!(out);
    }
    out
}
