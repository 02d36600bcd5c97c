//! `cargo xtask bench`: runs every benchmark behind a figure of the README's performance table,
//! with short measurement times, and prints the table's figure next to today's, flagging any row
//! more than 1.5x off, so the table cannot drift from the code unnoticed.
//!
//! Criterion's results are read from its `target/criterion/**/new/{benchmark,estimates}.json`
//! (the median), the simulator's from its own `readings/s` line. The README's figure is the
//! first number (or range) with a unit in the row's figure cell; a row with several figures
//! separated by ` / ` compares each in order.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, Result, bail};

/// How far today's figure may be from the README's before the row is flagged.
const TOLERANCE: f64 = 1.5;

/// What measures one figure.
#[derive(Clone, Copy, Debug)]
enum Source {
    /// A criterion benchmark: package, bench target, full id (`group/function`).
    Criterion(&'static str, &'static str, &'static str),
    /// `ballast simulate` (release) on a trace with `--repeat`: readings per second.
    Simulate(&'static [&'static str]),
}

/// A row of the README's performance table and what measures each of its figures.
struct Row {
    /// The start of the row's first cell.
    label: &'static str,
    /// One source per figure of the row.
    sources: &'static [Source],
}

const ROWS: &[Row] = &[
    Row {
        label: "call into a plugin through its vtable",
        sources: &[Source::Criterion(
            "ballast-host",
            "host",
            "call_raw/plugin_vtable",
        )],
    },
    Row {
        label: "call through the host (worker thread",
        sources: &[Source::Criterion(
            "ballast-host",
            "host",
            "call_host/worker_nop",
        )],
    },
    Row {
        label: "full host path",
        sources: &[Source::Criterion(
            "ballast-host",
            "host",
            "call_host/actor_nop",
        )],
    },
    Row {
        label: "load + validate + create + start",
        sources: &[Source::Criterion(
            "ballast-host",
            "host",
            "load/stubs_load_validate_create_start",
        )],
    },
    Row {
        label: "one full sample without GPU",
        sources: &[Source::Criterion(
            "ballast-monitor",
            "sample",
            "full_sample_without_gpu",
        )],
    },
    Row {
        label: "predictor step",
        sources: &[Source::Criterion(
            "ballast-predict",
            "predict",
            "predictor_step_3_resources/sample_1s_bucket_30s",
        )],
    },
    Row {
        label: "scaler step",
        sources: &[Source::Criterion(
            "ballast-scaler",
            "scaler",
            "scaler step, 3 resources, swinging load",
        )],
    },
    Row {
        label: "`ballast simulate`, 1 s readings",
        sources: &[Source::Simulate(&[
            "--trace",
            "../shared/traces/azure_llm_2023/AzureLLMInferenceTrace_conv.csv",
            "--bin",
            "1",
            "--repeat",
            "300",
        ])],
    },
    Row {
        label: "`ballast simulate`, 5 min readings",
        sources: &[Source::Simulate(&[
            "--trace",
            "../shared/traces/nab/realAWSCloudwatch/ec2_cpu_utilization_77c1ca.csv",
            "--repeat",
            "50",
        ])],
    },
    Row {
        label: "call through the host, C `clock` plugin",
        sources: &[
            Source::Criterion("ballast", "isolation", "plugin_call/native_in_process"),
            Source::Criterion("ballast", "isolation", "plugin_call/native_isolated_worker"),
            Source::Criterion(
                "ballast",
                "isolation",
                "plugin_call/python_echo_process_plugin",
            ),
            Source::Criterion("ballast", "isolation", "plugin_call/python_process_plugin"),
        ],
    },
];

/// A figure: a value or a range, in nanoseconds for times or readings per second for rates.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Figure {
    low: f64,
    high: f64,
    /// Higher is better (a rate) rather than lower (a time).
    rate: bool,
}

impl Figure {
    /// How far `measured` is off this figure, as a factor of at least 1: 1.0 inside the range.
    fn off_by(&self, measured: f64) -> f64 {
        if measured < self.low {
            self.low / measured.max(f64::MIN_POSITIVE)
        } else if measured > self.high {
            measured / self.high.max(f64::MIN_POSITIVE)
        } else {
            1.0
        }
    }

    /// Whether `measured` is worse than the figure by more than the tolerance, or better by
    /// more than it (the table undersells the code: also worth fixing).
    fn flagged(&self, measured: f64) -> bool {
        self.off_by(measured) > TOLERANCE
    }
}

/// The figures of the first number-and-unit (or range) groups in `cell`, one per ` / ` part.
fn parse_figures(cell: &str) -> Vec<Figure> {
    cell.split(" / ").filter_map(parse_figure).collect()
}

fn parse_figure(text: &str) -> Option<Figure> {
    let number = |s: &str| s.trim().replace(',', "").parse::<f64>().ok();
    let words: Vec<&str> = text.split_whitespace().collect();
    for (i, word) in words.iter().enumerate() {
        let unit = words.get(i + 1).copied().unwrap_or("");
        let unit = unit.trim_end_matches([',', ';', ')']);
        let scale = match unit {
            "ps" => Some((1e-3, false)),
            "ns" => Some((1.0, false)),
            "µs" | "us" => Some((1e3, false)),
            "ms" => Some((1e6, false)),
            "s" => Some((1e9, false)),
            "M" if words
                .get(i + 2)
                .is_some_and(|w| w.starts_with("readings/s")) =>
            {
                Some((1e6, true))
            }
            _ => None,
        };
        let Some((scale, rate)) = scale else {
            continue;
        };
        let word = word.trim_start_matches(['(', '*']);
        let (low, high) = match word.split_once('-') {
            Some((a, b)) => (number(a)?, number(b)?),
            None => {
                let v = number(word)?;
                (v, v)
            }
        };
        return Some(Figure {
            low: low * scale,
            high: high * scale,
            rate,
        });
    }
    None
}

/// The figure cell of every row of the README's performance table, by the row's first cell.
fn readme_rows(readme: &str) -> Vec<(String, String)> {
    let Some(start) = readme.find("## Performance") else {
        return Vec::new();
    };
    readme[start..]
        .lines()
        .skip_while(|l| !l.starts_with('|'))
        .take_while(|l| l.starts_with('|'))
        .filter_map(|l| {
            let cells: Vec<&str> = l.split('|').map(str::trim).collect();
            Some((cells.get(1)?.to_string(), cells.get(2)?.to_string()))
        })
        .collect()
}

/// Every criterion result under `dir`: full id -> median in nanoseconds.
fn criterion_results(dir: &Path) -> BTreeMap<String, f64> {
    let mut results = BTreeMap::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                if path.file_name().is_some_and(|n| n == "new") {
                    let read = |name: &str| -> Option<serde_json::Value> {
                        serde_json::from_str(&std::fs::read_to_string(path.join(name)).ok()?).ok()
                    };
                    if let (Some(benchmark), Some(estimates)) =
                        (read("benchmark.json"), read("estimates.json"))
                        && let (Some(id), Some(median)) = (
                            benchmark["full_id"].as_str(),
                            estimates["median"]["point_estimate"].as_f64(),
                        )
                    {
                        results.insert(id.to_owned(), median);
                    }
                } else {
                    stack.push(path);
                }
            }
        }
    }
    results
}

/// Runs `ballast simulate` with `args` and returns its readings per second.
fn simulate(binary: &Path, args: &[&str]) -> Result<f64> {
    let output = Command::new(binary)
        .args(["simulate", "--config", "config/simulate-example.toml"])
        .args(args)
        .output()
        .context("cannot run ballast simulate")?;
    if !output.status.success() {
        bail!(
            "ballast simulate {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    // The rate is on stderr, beside the progress, so the report on stdout stays the same.
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let line = text
        .lines()
        .find(|l| l.contains("readings/s"))
        .context("ballast simulate printed no readings/s")?;
    let rate = line
        .split('(')
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse::<f64>().ok())
        .with_context(|| format!("cannot read the rate in `{line}`"))?;
    Ok(rate * 1e6)
}

fn show(value: f64, rate: bool) -> String {
    if rate {
        return format!("{:.2} M readings/s", value / 1e6);
    }
    match value {
        v if v < 1e3 => format!("{v:.2} ns"),
        v if v < 1e6 => format!("{:.2} µs", v / 1e3),
        v if v < 1e9 => format!("{:.2} ms", v / 1e6),
        v => format!("{:.2} s", v / 1e9),
    }
}

/// Runs the benchmarks and prints the comparison; fails if a row's figure cannot be found or
/// measured. A flagged row is reported, not an error: the README is what should follow.
pub fn bench(root: &Path, target: &Path) -> Result<()> {
    let readme =
        std::fs::read_to_string(root.join("README.md")).context("cannot read README.md")?;
    let table = readme_rows(&readme);
    let mut targets: Vec<(&str, &str)> = Vec::new();
    for row in ROWS {
        for source in row.sources {
            if let Source::Criterion(package, bench, _) = source
                && !targets.contains(&(package, bench))
            {
                targets.push((package, bench));
            }
        }
    }
    for (package, bench) in &targets {
        crate::step(
            &format!("cargo bench -p {package} --bench {bench} (short)"),
            crate::cargo()
                .args(["bench", "-p", package, "--bench", bench, "--"])
                .args([
                    "--warm-up-time",
                    "0.5",
                    "--measurement-time",
                    "2",
                    "--noplot",
                ]),
        )?;
    }
    crate::step(
        "build ballast (release)",
        crate::cargo().args(["build", "--release", "-p", "ballast"]),
    )?;
    let binary: PathBuf = target.join("release/ballast");
    let results = criterion_results(&target.join("criterion"));
    println!(
        "\n{:<48} {:>28} {:>16} {:>6}",
        "row", "README", "today", "off"
    );
    let mut flagged = 0;
    for row in ROWS {
        let cell = table
            .iter()
            .find(|(label, _)| label.starts_with(row.label))
            .map(|(_, figure)| figure.as_str())
            .with_context(|| format!("no README performance row starts with `{}`", row.label))?;
        let figures = parse_figures(cell);
        if figures.len() < row.sources.len() {
            bail!(
                "the README row `{}` has {} figures, {} expected: `{cell}`",
                row.label,
                figures.len(),
                row.sources.len()
            );
        }
        for (source, figure) in row.sources.iter().zip(&figures) {
            let (name, measured) = match source {
                Source::Criterion(_, _, id) => (
                    (*id).to_owned(),
                    *results
                        .get(*id)
                        .with_context(|| format!("criterion has no result for `{id}`"))?,
                ),
                Source::Simulate(args) => (
                    format!("simulate {}", args.get(1).copied().unwrap_or("")),
                    simulate(&binary, args)?,
                ),
            };
            let off = figure.off_by(measured);
            let mark = if figure.flagged(measured) {
                flagged += 1;
                "  <-- more than 1.5x off"
            } else {
                ""
            };
            let readme_figure = if figure.low == figure.high {
                show(figure.low, figure.rate)
            } else {
                format!(
                    "{}-{}",
                    show(figure.low, figure.rate),
                    show(figure.high, figure.rate)
                )
            };
            let short: String = name.chars().take(48).collect();
            println!(
                "{short:<48} {readme_figure:>28} {:>16} {off:>5.2}x{mark}",
                show(measured, figure.rate)
            );
        }
    }
    println!(
        "\n{flagged} figure(s) more than {TOLERANCE}x off the README (short runs on this machine; confirm with the row's own command before changing the table)"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures_are_read_from_the_table_cells() {
        assert_eq!(
            parse_figures("4.61 µs"),
            [Figure {
                low: 4610.0,
                high: 4610.0,
                rate: false
            }]
        );
        let range = parse_figures("56-106 µs here under load; 41 µs on a quiet 16-core host");
        assert_eq!(range[0].low, 56_000.0);
        assert_eq!(range[0].high, 106_000.0);
        assert_eq!(parse_figures("0.64-0.70 M readings/s")[0].high, 700_000.0);
        assert!(parse_figures("0.64-0.70 M readings/s")[0].rate);
        let three = parse_figures("6.4-15 µs / 58-70 µs / 80-84 µs (under a load average of 4)");
        assert_eq!(three.len(), 3);
        assert_eq!(three[2].low, 80_000.0);
        assert_eq!(
            parse_figures("3.15 ns, vs 2.50 ns through a Rust fn pointer")[0].low,
            3.15
        );
        assert!(parse_figures("no figure here").is_empty());
    }

    #[test]
    fn a_figure_is_flagged_past_the_tolerance_either_way() {
        let figure = parse_figure("4.61 µs").unwrap();
        assert!(!figure.flagged(5_000.0));
        assert!(figure.flagged(37_500.0));
        assert!(figure.flagged(2_000.0));
        let range = parse_figure("56-106 µs").unwrap();
        assert!(!range.flagged(100_000.0));
        assert!(range.flagged(170_000.0));
    }

    #[test]
    fn every_row_is_in_the_readme() {
        let readme =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md")).unwrap();
        let table = readme_rows(&readme);
        for row in ROWS {
            let cell = table
                .iter()
                .find(|(label, _)| label.starts_with(row.label))
                .map(|(_, f)| f)
                .unwrap_or_else(|| panic!("no README row starts with `{}`", row.label));
            assert!(
                parse_figures(cell).len() >= row.sources.len(),
                "row `{}`: `{cell}`",
                row.label
            );
        }
    }
}
