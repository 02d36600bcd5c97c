//! `cargo xtask fuzz`: installs what cargo fuzz needs (the nightly toolchain, cargo-fuzz), seeds
//! each target's corpus from the repository's fixtures, runs the targets one after another at the
//! lowest CPU priority, and prints each campaign's figures (executions, coverage, corpus).
//!
//! The fuzz crate lives in `fuzz/`, a workspace of its own; the corpora grow in `fuzz/corpus/`,
//! crashes land in `fuzz/artifacts/`, and libFuzzer's logs in `fuzz/logs/` (all ignored by git).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

/// Every fuzz target, with the files and directories (relative to the workspace root) its corpus
/// starts from. Paths that do not exist are skipped.
pub const TARGETS: [(&str, &[&str]); 9] = [
    ("config", &["config", "fuzz/seeds/config"]),
    ("descriptor", &[]),
    ("trace_csv", &["fuzz/seeds/trace_csv", "../shared/traces"]),
    ("telemetry_jsonl", &["fuzz/seeds/telemetry_jsonl"]),
    ("api_request", &[]),
    ("psi", &["crates/ballast-monitor/tests/fixtures/psi"]),
    ("cgroup", &["crates/ballast-monitor/tests/fixtures/cgroup"]),
    (
        "proc",
        &[
            "crates/ballast-monitor/tests/fixtures/meminfo",
            "crates/ballast-monitor/tests/fixtures/stat",
            "fuzz/seeds/proc",
        ],
    ),
    ("protocol", &["fuzz/seeds/protocol"]),
];

/// Seed files larger than this are cut to their first this many bytes (a trace's first rows
/// teach the fuzzer its layout; the rest only slows each execution).
const SEED_BYTES: usize = 4096;

/// What one campaign measured.
#[derive(Debug, Default)]
struct Figures {
    runs: u64,
    execs_per_sec: u64,
    coverage: u64,
    features: u64,
    corpus_units: u64,
    corpus_bytes: String,
    peak_rss_mb: u64,
    new_units: u64,
}

/// Runs `target` (or every target) for `seconds` each.
pub fn fuzz(root: &Path, target: Option<&str>, seconds: u64) -> Result<()> {
    let targets: Vec<&(&str, &[&str])> = match target {
        None => TARGETS.iter().collect(),
        Some(name) => {
            let found = TARGETS.iter().find(|(t, _)| *t == name).with_context(|| {
                format!(
                    "no fuzz target `{name}`; the targets are: {}",
                    TARGETS.map(|(t, _)| t).join(", ")
                )
            })?;
            vec![found]
        }
    };
    install_tools()?;
    let fuzz_dir = root.join("fuzz");
    let names: Vec<&str> = targets.iter().map(|(t, _)| *t).collect();
    let mut build = Command::new("nice");
    build
        .args([
            "-n",
            "19",
            "cargo",
            "+nightly",
            "fuzz",
            "build",
            "--fuzz-dir",
        ])
        .arg(&fuzz_dir);
    if names.len() == 1 {
        build.arg(names[0]);
    }
    crate::step(
        "build the fuzz targets (nightly, AddressSanitizer)",
        &mut build,
    )?;
    let mut rows = Vec::new();
    for (name, seeds) in targets {
        let corpus = fuzz_dir.join("corpus").join(name);
        seed_corpus(root, &corpus, seeds)?;
        let logs = fuzz_dir.join("logs").join(name);
        std::fs::create_dir_all(&logs)
            .with_context(|| format!("cannot create {}", logs.display()))?;
        let log = logs.join("fuzz-0.log");
        let _ = std::fs::remove_file(&log);
        let artifacts = fuzz_dir.join("artifacts").join(name);
        let crashes_before = count_files(&artifacts);
        eprintln!("==> fuzz {name} for {seconds} s (log: {})", log.display());
        let status = Command::new("nice")
            .args(["-n", "19", "cargo", "+nightly", "fuzz", "run", "--fuzz-dir"])
            .arg(&fuzz_dir)
            .arg(name)
            .arg(&corpus)
            .arg("--")
            .arg(format!("-max_total_time={seconds}"))
            .args(["-jobs=1", "-workers=1", "-print_final_stats=1"])
            .arg("-rss_limit_mb=2048")
            .arg("-timeout=10")
            .current_dir(&logs)
            .status()
            .context("cannot start cargo fuzz")?;
        let text = std::fs::read_to_string(&log)
            .with_context(|| format!("cannot read {}", log.display()))?;
        let crashes = count_files(&artifacts).saturating_sub(crashes_before);
        let figures = parse_log(&text);
        rows.push((name, figures, crashes, status.success()));
    }
    println!(
        "target           seconds  runs          execs/s  cov    ft      corpus             new    rss MB  crashes"
    );
    let mut failed = Vec::new();
    for (name, f, crashes, ok) in &rows {
        println!(
            "{name:<16} {seconds:<8} {:<13} {:<8} {:<6} {:<7} {:<18} {:<6} {:<7} {crashes}",
            f.runs,
            f.execs_per_sec,
            f.coverage,
            f.features,
            format!("{}/{}", f.corpus_units, f.corpus_bytes),
            f.new_units,
            f.peak_rss_mb,
        );
        if *crashes > 0 || !ok {
            failed.push(**name);
        }
    }
    if !failed.is_empty() {
        bail!(
            "fuzzing found problems in: {} (inputs in fuzz/artifacts/, logs in fuzz/logs/)",
            failed.join(", ")
        );
    }
    Ok(())
}

/// Installs the nightly toolchain and cargo-fuzz where missing.
fn install_tools() -> Result<()> {
    let nightly = Command::new("cargo")
        .args(["+nightly", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !nightly {
        crate::step(
            "rustup toolchain install nightly",
            Command::new("rustup").args([
                "toolchain",
                "install",
                "nightly",
                "--profile",
                "minimal",
            ]),
        )?;
    }
    let cargo_fuzz = Command::new("cargo")
        .args(["+nightly", "fuzz", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !cargo_fuzz {
        crate::step(
            "cargo install cargo-fuzz",
            Command::new("cargo").args(["install", "cargo-fuzz", "--locked"]),
        )?;
    }
    Ok(())
}

/// Copies the seed files into an empty corpus directory (cut to [`SEED_BYTES`]); a corpus that
/// already holds inputs is left as it is, so campaigns build on each other.
fn seed_corpus(root: &Path, corpus: &Path, seeds: &[&str]) -> Result<()> {
    std::fs::create_dir_all(corpus)
        .with_context(|| format!("cannot create {}", corpus.display()))?;
    if count_files(corpus) > 0 {
        return Ok(());
    }
    let mut files = Vec::new();
    for seed in seeds {
        collect_files(&root.join(seed), &mut files);
    }
    for (i, file) in files.iter().enumerate() {
        let Ok(mut bytes) = std::fs::read(file) else {
            continue;
        };
        bytes.truncate(SEED_BYTES);
        let name = file.file_name().map_or_else(
            || format!("seed-{i}"),
            |n| format!("seed-{i}-{}", n.to_string_lossy()),
        );
        std::fs::write(corpus.join(name), bytes)
            .with_context(|| format!("cannot write into {}", corpus.display()))?;
    }
    eprintln!("==> seeded {} with {} files", corpus.display(), files.len());
    Ok(())
}

fn collect_files(path: &Path, out: &mut Vec<PathBuf>) {
    if path.is_file() {
        out.push(path.to_owned());
    } else if let Ok(entries) = std::fs::read_dir(path) {
        let mut entries: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
        entries.sort();
        for entry in entries {
            collect_files(&entry, out);
        }
    }
}

fn count_files(dir: &Path) -> usize {
    std::fs::read_dir(dir).map_or(0, |entries| entries.flatten().count())
}

/// The figures of a libFuzzer log: its last status line and its final stats.
fn parse_log(text: &str) -> Figures {
    let mut figures = Figures::default();
    let field = |line: &str, key: &str| -> Option<String> {
        let mut words = line.split_whitespace();
        words.find(|w| *w == key)?;
        words.next().map(str::to_owned)
    };
    if let Some(status) = text
        .lines()
        .rfind(|l| l.starts_with('#') && l.contains(" cov: "))
    {
        let number = |key: &str| field(status, key).and_then(|v| v.parse().ok()).unwrap_or(0);
        figures.coverage = number("cov:");
        figures.features = number("ft:");
        if let Some((units, bytes)) = field(status, "corp:").and_then(|c| {
            c.split_once('/')
                .map(|(u, b)| (u.parse().unwrap_or(0), b.to_owned()))
        }) {
            figures.corpus_units = units;
            figures.corpus_bytes = bytes;
        }
    }
    for line in text.lines() {
        let stat = |key: &str| {
            line.strip_prefix(key)
                .and_then(|v| v.trim().parse::<u64>().ok())
        };
        if let Some(v) = stat("stat::number_of_executed_units:") {
            figures.runs = v;
        } else if let Some(v) = stat("stat::average_exec_per_sec:") {
            figures.execs_per_sec = v;
        } else if let Some(v) = stat("stat::new_units_added:") {
            figures.new_units = v;
        } else if let Some(v) = stat("stat::peak_rss_mb:") {
            figures.peak_rss_mb = v;
        }
    }
    figures
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_libfuzzer_log_gives_its_figures() {
        let log = "\
#605784\tREDUCE cov: 215 ft: 581 corp: 229/4795b lim: 3414 exec/s: 60578 rss: 234Mb L: 21/194 MS: 2 ChangeByte-EraseBytes-
#607565\tDONE   cov: 215 ft: 581 corp: 229/4794b lim: 3425 exec/s: 55233 rss: 235Mb
Done 607565 runs in 11 second(s)
stat::number_of_executed_units: 607565
stat::average_exec_per_sec:     55233
stat::new_units_added:          914
stat::slowest_unit_time_sec:    0
stat::peak_rss_mb:              235
";
        let f = parse_log(log);
        assert_eq!(
            (
                f.runs,
                f.execs_per_sec,
                f.coverage,
                f.features,
                f.corpus_units
            ),
            (607_565, 55_233, 215, 581, 229)
        );
        assert_eq!(f.corpus_bytes, "4794b");
        assert_eq!((f.new_units, f.peak_rss_mb), (914, 235));
    }
}
