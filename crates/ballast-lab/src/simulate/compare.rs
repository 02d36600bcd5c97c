//! `ballast simulate --compare A.toml B.toml ...`: the same trace through several configs, one
//! replay per config in parallel, and their summaries side by side.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use crate::trace::Trace;
use ballast_core::Resource;
use rayon::prelude::*;

use super::engine::{Sim, Summary};
use super::{EX_CONFIG, Scale, SimulateArgs, guess_resource, load_config, load_trace, replay};

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
    let trace = load_trace(args)?;
    let name = args.trace.display().to_string();
    if trace.points.is_empty() {
        anyhow::bail!(
            "{name}: column `{}` has no readings to replay",
            trace.column
        );
    }
    let scale = Scale::choose(&args.scale, &trace)?;
    let results: Vec<Result<Compared, Vec<String>>> = configs
        .par_iter()
        .map(|(path, config)| {
            let resource = args
                .resource
                .or_else(|| trace.column.parse::<Resource>().ok())
                .or(config.resource)
                .unwrap_or_else(|| guess_resource(&trace.column));
            let mut sim = Sim::new(config, resource)?;
            replay(&mut sim, &trace, scale.factor, args.repeat.max(1));
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
        let json = serde_json::json!({
            "trace": name,
            "column": trace.column,
            "scale": scale.factor,
            "configs": configs,
        });
        println!("{}", serde_json::to_string_pretty(&json)?);
    } else {
        print!("{}", to_text(&name, &trace, &scale, &compared));
    }
    Ok(ExitCode::SUCCESS)
}

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
pub(crate) fn to_text(name: &str, trace: &Trace, scale: &Scale, compared: &[Compared]) -> String {
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
    let _ = writeln!(
        out,
        "comparing {} configs on {name} (column `{}`, {} readings, scale {}: {})\n",
        compared.len(),
        trace.column,
        trace.points.len(),
        scale.factor,
        scale.why
    );
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
