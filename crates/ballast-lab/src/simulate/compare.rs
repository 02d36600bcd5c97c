//! `ballast simulate --compare A.toml B.toml ...`: the same trace (and calls, with `--calls`)
//! through several configs, one replay per config in parallel, and their summaries side by side.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use rayon::prelude::*;

use super::engine::{CallSummary, Summary};
use super::{EX_CONFIG, Inputs, Scale, SimulateArgs, load_config, replay};

/// One config's replay.
#[derive(Debug)]
pub(crate) struct Compared {
    /// The config file.
    pub config: PathBuf,
    /// Its summary.
    pub summary: Summary,
}

/// Runs `ballast simulate --compare`.
pub fn run(args: &SimulateArgs) -> anyhow::Result<ExitCode> {
    let mut configs = Vec::new();
    let mut bad = false;
    for path in &args.compare {
        match load_config(path)? {
            Ok(config) => configs.push((path.clone(), config)),
            Err(problems) => {
                bad = true;
                for problem in problems {
                    eprintln!("error: {}: {problem}", path.display());
                }
            }
        }
    }
    if bad {
        return Ok(ExitCode::from(EX_CONFIG));
    }
    let inputs = Inputs::load(args)?;
    let (trace, name) = (&inputs.trace, &inputs.name);
    let scale = inputs.scale(&args.scale)?;
    let results: Vec<Result<Compared, Vec<String>>> = configs
        .par_iter()
        .map(|(path, config)| {
            let resource = inputs.resource(args.resource, config);
            let mut sim = inputs.sim(config, resource)?;
            replay(&mut sim, trace, scale.factor, args.repeat.max(1));
            Ok(Compared {
                config: path.clone(),
                summary: sim.finish().summary,
            })
        })
        .collect();
    let mut compared = Vec::new();
    for (result, (path, _)) in results.into_iter().zip(&configs) {
        match result {
            Ok(c) => compared.push(c),
            Err(problems) => {
                for problem in problems {
                    eprintln!("error: {}: {problem}", path.display());
                }
                return Ok(ExitCode::from(EX_CONFIG));
            }
        }
    }
    if args.json {
        let configs: Vec<serde_json::Value> = compared
            .iter()
            .map(|c| serde_json::json!({"config": c.config.display().to_string(), "summary": c.summary}))
            .collect();
        let mut json = serde_json::json!({
            "trace": name,
            "column": trace.column,
            "scale": scale.factor,
            "configs": configs,
        });
        if !inputs.calls.is_empty() {
            json["calls"] = inputs.calls_json();
            json["calls_shift_seconds"] = serde_json::json!(inputs.shift_ms as f64 / 1000.0);
        }
        println!("{}", serde_json::to_string_pretty(&json)?);
    } else {
        print!("{}", to_text(&inputs, &scale, &compared));
    }
    Ok(ExitCode::SUCCESS)
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

fn duration(seconds: f64) -> String {
    humantime::format_duration(std::time::Duration::from_secs(
        seconds.round().max(0.0) as u64
    ))
    .to_string()
}

/// The summaries side by side: one row per figure, one column per config.
pub(crate) fn to_text(inputs: &Inputs, scale: &Scale, compared: &[Compared]) -> String {
    let (name, trace) = (&inputs.name, &inputs.trace);
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

    let headers: Vec<String> = compared.iter().map(|c| header(&c.config)).collect();
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
    if inputs.calm {
        let _ = writeln!(
            out,
            "comparing {} configs, the resource calm over the calls' time span ({} readings)",
            compared.len(),
            trace.points.len(),
        );
    } else {
        let _ = writeln!(
            out,
            "comparing {} configs on {name} (column `{}`, {} readings, scale {}: {})",
            compared.len(),
            trace.column,
            trace.points.len(),
            scale.factor,
            scale.why
        );
    }
    out.push_str(&inputs.calls_text());
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
