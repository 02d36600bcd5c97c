//! Project automation for ballast (`cargo xtask ...`): CI, plugin builds, the C header,
//! benchmarks, and the hardening tools (fuzzing, crash and soak runs).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};

mod bench;
mod disk;
mod fuzz;
mod gpu_check;
mod hardening;
mod measure;
mod package;

/// ballast's project automation.
#[derive(Debug, Parser)]
#[command(name = "cargo xtask")]
struct Cli {
    #[command(subcommand)]
    command: Task,
}

#[derive(Debug, Subcommand)]
enum Task {
    /// Run everything CI runs: formatting, lints, docs, header check, plugin builds, the
    /// conformance check of every example plugin (`ballast plugin check`), the Debian package
    /// (built, installed, checked and purged), the Kubernetes manifests and all tests.
    Ci,
    /// Build the example plugins and run ballast on its built-in default config with them.
    Run {
        /// Extra arguments for `ballast run`.
        #[arg(trailing_var_arg = true)]
        args: Vec<String>,
    },
    /// Build the example plugins (Rust and C) into target/<profile>/ and install the script ones
    /// (Python, shell) there.
    Plugins {
        /// Build with the release profile.
        #[arg(long)]
        release: bool,
    },
    /// Build the Debian package (release build, cargo-deb installed under target/tools at the
    /// version it pins) into target/debian/ and check its file list.
    Package {
        /// CI's step instead: package the debug build and, as root where ballast is not
        /// installed, install it, check its config and plugins, run the daemon as its user,
        /// remove and purge it.
        #[arg(long)]
        install_check: bool,
    },
    /// Validate the Kubernetes manifests under deploy/kubernetes with kubernetes-validate
    /// (pinned, in a virtual environment under target/tools) against a pinned Kubernetes
    /// version, and their ConfigMap's config with `ballast config check` (a step of `ci`).
    Kubernetes,
    /// Regenerate crates/ballast-abi/include/ballast_plugin.h from the ABI crate.
    Header {
        /// Fail if the checked-in header differs from a fresh generation instead of writing it.
        #[arg(long)]
        check: bool,
    },
    /// Write the Rust and C plugin templates with `ballast plugin new` outside the workspace,
    /// build them and run their own tests (a step of `ci`).
    Templates,
    /// Measure an idle daemon (release build, example plugins at small working sets): CPU share
    /// of one core and RSS excluding the plugins' working sets.
    Idle {
        /// How long to measure, in seconds.
        #[arg(long, default_value_t = 60)]
        seconds: u64,
    },
    /// Measure the closed loop under real pressure (stress-ng): reaction latency by path, the
    /// stall path (a memory stall in a small memory cgroup, which needs root and cgroup v1 with
    /// a v2 hierarchy beside it), the daemon's overhead idle and under load, and flaps under an
    /// oscillating load.
    Measure {
        /// Latency rounds per path.
        #[arg(long, default_value_t = 5)]
        rounds: u32,
        /// Seconds of the overhead and flap measurements.
        #[arg(long, default_value_t = 60)]
        seconds: u64,
        /// Only this part: latency (thresholds crossed), stall (the PSI trigger on a memory
        /// stall) or overhead (overhead and flaps).
        #[arg(long, value_enum)]
        only: Option<measure::Part>,
    },
    /// Measure the control loop under disk pressure: the largest gap between samples while
    /// stress-ng floods the data directory's disk with fsyncs and a plugin's drain takes its
    /// whole deadline.
    MeasureDisk {
        /// Seconds to measure.
        #[arg(long, default_value_t = 60)]
        seconds: u64,
        /// The `ballast` binary to measure (default: a release build of this checkout), e.g. an
        /// older build to compare with.
        #[arg(long)]
        binary: Option<PathBuf>,
    },
    /// On a machine with an NVIDIA GPU (40 GiB or more) and PyTorch for CUDA: process plugins
    /// holding GPU memory through PyTorch, charged, shed, woken, unloaded and refused for want of
    /// room, with the timeline printed.
    GpuCheck,
    /// Time `ballast tune` (release build) on every shared trace against its goal of a minute.
    Tune,
    /// Run the fuzz targets (cargo fuzz on nightly, installed if missing), one after another at
    /// the lowest CPU priority, and print each campaign's figures.
    Fuzz {
        /// Only this target (config, descriptor, trace_csv, telemetry_jsonl, api_request, psi,
        /// cgroup, proc, protocol).
        target: Option<String>,
        /// How long to run each target.
        #[arg(long, default_value_t = 600)]
        seconds: u64,
    },
    /// Kill -9 the daemon at random moments while it writes decisions and telemetry hard, restart
    /// it, and check its state files and logs after every round.
    Crash {
        /// How many kill-and-restart rounds.
        #[arg(long, default_value_t = 100)]
        rounds: u32,
    },
    /// Run the daemon for a long time under a load oscillating around its thresholds, with
    /// plugins failing and panicking at random; report RSS, flaps and contained failures.
    Soak {
        /// How long to run.
        #[arg(long, default_value_t = 30)]
        minutes: u64,
    },
    /// Run every benchmark behind a figure of the README's performance table (short runs) and
    /// print the table's figure next to today's, flagging rows more than 1.5x off; or, with
    /// `--package`, that package's criterion benchmarks in full.
    Bench {
        /// Only this package's benchmarks, in full, e.g. ballast-host.
        #[arg(long, short)]
        package: Option<String>,
    },
}

/// The Rust example plugins, by package.
const RUST_PLUGINS: [&str; 5] = [
    "ballast-plugin-voice",
    "ballast-plugin-android",
    "ballast-plugin-discord",
    "ballast-plugin-stubs",
    "ballast-plugin-faulty",
];

fn main() -> std::process::ExitCode {
    match run_task() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run_task() -> Result<()> {
    let cli = Cli::parse();
    let root = workspace_root();
    std::env::set_current_dir(&root).with_context(|| format!("cannot enter {}", root.display()))?;
    match cli.command {
        Task::Ci => ci(&root),
        Task::Run { args } => run(&root, &args),
        Task::Plugins { release } => build_plugins(&root, release),
        Task::Package {
            install_check: false,
        } => package::package_task(&root),
        Task::Package {
            install_check: true,
        } => package::ci_package(&root),
        Task::Kubernetes => {
            step("build ballast", cargo().args(["build", "-p", "ballast"]))?;
            package::kubernetes(&root, &target_dir(&root).join("debug/ballast"))
        }
        Task::Header { check } => header(&root, check),
        Task::Templates => plugin_templates(&root),
        Task::Bench { package: None } => bench::bench(&root, &target_dir(&root)),
        Task::Bench {
            package: Some(package),
        } => step("cargo bench", cargo().args(["bench", "-p", &package])),
        Task::Idle { seconds } => idle(&root, seconds),
        Task::Measure {
            rounds,
            seconds,
            only,
        } => {
            install_system_packages()?;
            build_plugins(&root, true)?;
            step(
                "build ballast (release)",
                cargo().args(["build", "--release", "-p", "ballast"]),
            )?;
            measure::measure(
                &target_dir(&root).join("release"),
                &measure::Options {
                    rounds,
                    seconds,
                    only,
                },
            )
        }
        Task::MeasureDisk { seconds, binary } => {
            install_system_packages()?;
            build_plugins(&root, true)?;
            let release = target_dir(&root).join("release");
            let binary = match binary {
                Some(binary) => binary,
                None => {
                    step(
                        "build ballast (release)",
                        cargo().args(["build", "--release", "-p", "ballast"]),
                    )?;
                    release.join("ballast")
                }
            };
            disk::measure_disk(&binary, &release, seconds)
        }
        Task::GpuCheck => {
            let total_gib = gpu_check::prerequisites()?;
            build_plugins(&root, true)?;
            step(
                "build ballast (release)",
                cargo().args(["build", "--release", "-p", "ballast"]),
            )?;
            gpu_check::gpu_check(&target_dir(&root).join("release"), total_gib)
        }
        Task::Tune => tune(&root),
        Task::Fuzz { target, seconds } => fuzz::fuzz(&root, target.as_deref(), seconds),
        Task::Crash { rounds } => hardening::crash(&root, rounds),
        Task::Soak { minutes } => hardening::soak(&root, minutes),
    }
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

fn cargo() -> Command {
    Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned()))
}

/// Runs `command`, failing with its description if it does not succeed.
fn step(what: &str, command: &mut Command) -> Result<()> {
    eprintln!("==> {what}");
    let status = command
        .status()
        .with_context(|| format!("cannot start: {what}"))?;
    if !status.success() {
        bail!("failed: {what} ({status})");
    }
    Ok(())
}

/// What a test run counted.
#[derive(Clone, Copy, Debug, Default)]
struct Counts {
    passed: u64,
    failed: u64,
    skipped: u64,
}

impl std::ops::AddAssign for Counts {
    fn add_assign(&mut self, other: Counts) {
        self.passed += other.passed;
        self.failed += other.failed;
        self.skipped += other.skipped;
    }
}

/// Runs a `cargo test` command, passing its output through, and adds up its `test result` lines
/// (an ignored test counts as skipped, and so does a test that passed after printing a
/// `SKIPPED: ...` line because the machine cannot run it, e.g. real cgroups without root).
fn tests(what: &str, command: &mut Command) -> Result<Counts> {
    use std::io::BufRead;
    eprintln!("==> {what}");
    let mut child = command
        .stdout(std::process::Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot start: {what}"))?;
    let mut counts = Counts::default();
    let mut printed_skips = 0;
    if let Some(stdout) = child.stdout.take() {
        for line in std::io::BufReader::new(stdout).lines() {
            let line = line.with_context(|| format!("cannot read the output of {what}"))?;
            println!("{line}");
            if line.starts_with("SKIPPED: ") {
                printed_skips += 1;
            }
            if let Some(rest) = line.strip_prefix("test result: ") {
                let count = |label: &str| {
                    rest.split(';')
                        .find_map(|part| {
                            part.trim()
                                .strip_suffix(label)?
                                .trim()
                                .rsplit(' ')
                                .next()?
                                .parse::<u64>()
                                .ok()
                        })
                        .unwrap_or(0)
                };
                counts.passed += count("passed");
                counts.failed += count("failed");
                counts.skipped += count("ignored");
            }
        }
    }
    counts.passed = counts.passed.saturating_sub(printed_skips);
    counts.skipped += printed_skips;
    let status = child
        .wait()
        .with_context(|| format!("cannot wait for: {what}"))?;
    if !status.success() {
        bail!("failed: {what} ({status})");
    }
    Ok(counts)
}

/// Runs the Python SDK's tests (`sdk/python/tests`, the standard library's unittest),
/// passing their output through, and counts them from unittest's closing lines.
fn python_tests(root: &Path) -> Result<Counts> {
    use std::io::BufRead;
    let what = "python3 -m unittest (sdk/python)";
    eprintln!("==> {what}");
    let mut child = Command::new("python3")
        .args([
            "-m",
            "unittest",
            "discover",
            "-s",
            "sdk/python/tests",
            "-t",
            "sdk/python",
        ])
        .current_dir(root)
        // No byte-code caches in the source tree.
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot start: {what}"))?;
    let mut summary = Vec::new();
    if let Some(stderr) = child.stderr.take() {
        for line in std::io::BufReader::new(stderr).lines() {
            let line = line.with_context(|| format!("cannot read the output of {what}"))?;
            eprintln!("{line}");
            if line.starts_with("Ran ") || line.starts_with("OK") || line.starts_with("FAILED") {
                summary.push(line);
            }
        }
    }
    let status = child
        .wait()
        .with_context(|| format!("cannot wait for: {what}"))?;
    let counts = unittest_counts(&summary)
        .with_context(|| format!("{what} printed no summary: {summary:?}"))?;
    if !status.success() {
        bail!(
            "failed: {what} ({status}): {} failed of {}",
            counts.failed,
            counts.passed + counts.failed + counts.skipped
        );
    }
    Ok(counts)
}

/// The counts in unittest's closing lines: `Ran N tests in Ts`, then `OK` or `FAILED`, each
/// with details in parentheses (`failures=`, `errors=`, `skipped=`, `expected failures=`,
/// `unexpected successes=`).
fn unittest_counts(lines: &[String]) -> Option<Counts> {
    let ran: u64 = lines
        .iter()
        .find_map(|l| l.strip_prefix("Ran ")?.split(' ').next()?.parse().ok())?;
    let verdict = lines
        .iter()
        .find(|l| l.starts_with("OK") || l.starts_with("FAILED"))?;
    let detail = |label: &str| -> u64 {
        verdict
            .split(['(', ')', ','])
            .filter_map(|part| part.trim().strip_prefix(label)?.strip_prefix('='))
            .filter_map(|n| n.parse::<u64>().ok())
            .sum()
    };
    let failed = detail("failures") + detail("errors") + detail("unexpected successes");
    let skipped = detail("skipped");
    Some(Counts {
        passed: ran.saturating_sub(failed + skipped),
        failed,
        skipped,
    })
}

/// The real traces the tests replay, beside the checkout.
fn shared_traces(root: &Path) -> Result<()> {
    let traces = root.join("../shared/traces");
    if !traces.join("README.md").is_file() {
        bail!(
            "the shared traces are missing: the tests read real traces from {} (a `shared/traces` folder beside the checkout); CI always has them, so a run without them would only pretend to test",
            traces.display()
        );
    }
    Ok(())
}

fn ci(root: &Path) -> Result<()> {
    shared_traces(root)?;
    install_system_packages()?;
    step(
        "cargo fmt --check",
        cargo().args(["fmt", "--all", "--check"]),
    )?;
    step(
        "cargo clippy -D warnings",
        cargo().args([
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ]),
    )?;
    pure_cores()?;
    step(
        "cargo doc -D warnings",
        cargo()
            .args([
                "doc",
                "--workspace",
                "--no-deps",
                "--document-private-items",
            ])
            .env("RUSTDOCFLAGS", "-D warnings"),
    )?;
    build_plugins(root, false)?;
    check_plugins(root)?;
    // The Debian package of the build just checked: installed, run and purged.
    package::ci_package(root)?;
    package::kubernetes(root, &target_dir(root).join("debug/ballast"))?;
    plugin_templates(root)?;
    let mut counts = python_tests(root)?;
    counts += tests(
        "cargo test",
        // Every test binary runs even when one fails, so that a failure's report is complete.
        cargo().args(["test", "--workspace", "--all-targets", "--no-fail-fast"]),
    )?;
    counts += tests(
        "cargo test --doc",
        cargo().args(["test", "--workspace", "--doc"]),
    )?;
    eprintln!("==> all checks passed");
    println!(
        "tests: {} passed, {} failed, {} skipped",
        counts.passed, counts.failed, counts.skipped
    );
    Ok(())
}

/// Writes the Rust, C and Python plugin templates with `ballast plugin new` into a temporary
/// directory outside the workspace, as an author would, builds them, runs their own tests and
/// loads the libraries with `ballast plugin inspect`; the Python one answers a call on the SDK
/// copy it was written with. The Rust project builds into `target/templates`, so
/// that a second run reuses its dependencies, and with the workspace's lock file, so that it
/// builds the versions CI builds and needs no registry look-up.
fn plugin_templates(root: &Path) -> Result<()> {
    step(
        "build ballast (for `ballast plugin new`)",
        cargo().args(["build", "-p", "ballast"]),
    )?;
    let ballast = target_dir(root).join("debug/ballast");
    let scratch = tempfile::Builder::new()
        .prefix("ballast-templates-")
        .tempdir()
        .context("cannot make a temporary directory for the plugin templates")?;
    if scratch.path().starts_with(root) {
        bail!(
            "the temporary directory {} is inside the workspace; set TMPDIR to a directory outside it",
            scratch.path().display()
        );
    }
    let rust = scratch.path().join("hello-rust");
    let c = scratch.path().join("hello-c");
    let python = scratch.path().join("hello-python");
    for (lang, dir) in [("rust", &rust), ("c", &c), ("python", &python)] {
        step(
            &format!("ballast plugin new --lang {lang} into {}", dir.display()),
            Command::new(&ballast)
                .args([
                    "plugin",
                    "new",
                    &format!("hello-{lang}"),
                    "--lang",
                    lang,
                    "--dir",
                ])
                .arg(dir),
        )?;
    }

    std::fs::copy(root.join("Cargo.lock"), rust.join("Cargo.lock"))
        .context("cannot copy Cargo.lock into the Rust template")?;
    let template_target = target_dir(root).join("templates");
    let in_rust = |args: &[&str]| {
        let mut command = cargo();
        command
            .args(args)
            .current_dir(&rust)
            .env("CARGO_TARGET_DIR", &template_target);
        command
    };
    step(
        "the Rust template's tests (cargo test)",
        &mut in_rust(&["test", "--quiet"]),
    )?;
    step(
        "build the Rust template",
        &mut in_rust(&["build", "--quiet"]),
    )?;
    let rust_library = template_target.join("debug/libhello_rust.so");

    let make = |target: &str| {
        let mut command = Command::new("make");
        command
            .arg("--quiet")
            .arg("WARNINGS=-Wall -Wextra -Werror")
            .arg(target)
            .current_dir(&c);
        command
    };
    step("the C template's tests (make test)", &mut make("test"))?;
    step("build the C template (make)", &mut make("libhello_c.so"))?;
    let c_library = c.join("libhello_c.so");

    for library in [&rust_library, &c_library] {
        step(
            &format!("ballast plugin inspect {}", library.display()),
            Command::new(&ballast)
                .args(["plugin", "inspect"])
                .arg(library)
                .stdout(std::process::Stdio::null()),
        )?;
        step(
            &format!("ballast plugin check {}", library.display()),
            Command::new(&ballast)
                .args(["plugin", "check"])
                .arg(library),
        )?;
    }
    python_template_answers(&python)?;
    // The Python plugin as its own `ballast.toml` describes it (levels, process, protocol), run
    // from its directory on the SDK copy beside it, nothing of the workspace on its path.
    step(
        "ballast plugin check of the Python template, as its ballast.toml describes it",
        Command::new(&ballast)
            .args([
                "plugin",
                "check",
                "--plugin",
                "hello-python",
                "--config",
                "ballast.toml",
            ])
            .current_dir(&python)
            .env_remove("PYTHONPATH")
            .env("PYTHONDONTWRITEBYTECODE", "1"),
    )?;
    // Last, what the author's guide ends with: each project's own `ballast.toml` under a daemon.
    let rust_dir = template_target.join("debug");
    for (name, dir, plugin_dir) in [
        ("hello-rust", &rust, Some(rust_dir.as_path())),
        ("hello-c", &c, None),
        ("hello-python", &python, None),
    ] {
        template_runs(&ballast, name, dir, plugin_dir)?;
    }
    Ok(())
}

/// Runs `ballast run --config ballast.toml` in a generated project's directory, on a free port
/// (and, for the Rust project, with its library where this build put it), calls the plugin
/// with the CLI until it answers its greeting (the daemon may still be enabling it), and stops
/// the daemon with SIGTERM.
fn template_runs(ballast: &Path, name: &str, dir: &Path, plugin_dir: Option<&Path>) -> Result<()> {
    let what = format!("{name} answers under `ballast run --config ballast.toml`");
    eprintln!("==> {what}");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .context("no free port")?;
    let api = format!("http://127.0.0.1:{port}");
    let log_path = dir.join("ballast-run.log");
    let log = std::fs::File::create(&log_path)
        .with_context(|| format!("cannot create {}", log_path.display()))?;
    let mut run = Command::new(ballast);
    run.args(["run", "--config", "ballast.toml", "--listen"])
        .arg(format!("127.0.0.1:{port}"))
        .current_dir(dir)
        .env_remove("BALLAST_CONFIG")
        .env_remove("PYTHONPATH")
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .stdout(log.try_clone().context("cannot share the log file")?)
        .stderr(log);
    if let Some(plugin_dir) = plugin_dir {
        run.env("BALLAST_PLUGIN_DIR", plugin_dir);
    }
    let mut daemon = run
        .spawn()
        .with_context(|| format!("cannot start: {what}"))?;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let mut last = String::new();
    let answered = loop {
        if let Ok(Some(status)) = daemon.try_wait() {
            last = format!("the daemon exited ({status})");
            break false;
        }
        let out = Command::new(ballast)
            .args(["plugin", name, "call", "world"])
            .env("BALLAST_API", &api)
            .output()
            .with_context(|| format!("cannot run the CLI for: {what}"))?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        if out.status.success() && stdout.contains("hello, world!") {
            break true;
        }
        last = format!("{stdout}{}", String::from_utf8_lossy(&out.stderr));
        if std::time::Instant::now() > deadline {
            break false;
        }
        std::thread::sleep(std::time::Duration::from_millis(250));
    };
    terminate(daemon.id());
    let stop_deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let stopped = loop {
        match daemon.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if std::time::Instant::now() < stop_deadline => {
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
            _ => {
                let _ = daemon.kill();
                let _ = daemon.wait();
                break None;
            }
        }
    };
    let log = std::fs::read_to_string(&log_path).unwrap_or_default();
    if !answered {
        bail!("failed: {what}: the last call said: {last}\nthe daemon's log:\n{log}");
    }
    match stopped {
        Some(status) if status.success() => Ok(()),
        other => bail!(
            "failed: {what}: the daemon did not stop cleanly on SIGTERM ({other:?}); its log:\n{log}"
        ),
    }
}

/// Runs the Python template's `plugin.py` as ballast would, on the copy of the SDK beside it
/// (nothing from the workspace on its path): init, a call and a drain on its stdin; its answer
/// must be the greeting, and it must exit at the end of its input.
fn python_template_answers(dir: &Path) -> Result<()> {
    use std::io::Write;
    let what = format!("the Python template answers a call ({})", dir.display());
    eprintln!("==> {what}");
    let mut child = Command::new("python3")
        .arg("plugin.py")
        .current_dir(dir)
        .env_remove("PYTHONPATH")
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot start: {what}"))?;
    // The call's data is "world"; the drain answers once the call has.
    let host_says = concat!(
        r#"{"type":"init","name":"hello-python","level":0,"config":{}}"#,
        "\n",
        r#"{"type":"call","id":1,"data":"d29ybGQ="}"#,
        "\n",
        r#"{"type":"drain","id":2,"deadline_ms":10000}"#,
        "\n",
    );
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(host_says.as_bytes())
            .with_context(|| format!("cannot write to: {what}"))?;
    }
    let output = child
        .wait_with_output()
        .with_context(|| format!("cannot wait for: {what}"))?;
    if !output.status.success() {
        bail!("failed: {what} ({})", output.status);
    }
    let answer = String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .find(|message| message["id"] == 1);
    // "hello, world! (call 1, level 0)" in base64.
    let greeting = "aGVsbG8sIHdvcmxkISAoY2FsbCAxLCBsZXZlbCAwKQ==";
    match answer {
        Some(message) if message["type"] == "response" && message["data"] == greeting => Ok(()),
        other => bail!(
            "failed: {what}: call 1 was answered with {other:?}; its whole output: {}",
            String::from_utf8_lossy(&output.stdout)
        ),
    }
}

/// The crates whose actor is a cargo feature: without it, nothing of actix or tokio may be in
/// their dependency tree, so "the core never reads a clock or runs a runtime" is a fact the
/// build checks rather than a convention.
const PURE_CORES: [&str; 5] = [
    "ballast-scaler",
    "ballast-predict",
    "ballast-tier",
    "ballast-monitor",
    "ballast-host",
];

/// Fails if any of [`PURE_CORES`] depends on actix or tokio without its `actor` feature.
fn pure_cores() -> Result<()> {
    eprintln!("==> the pure cores depend on no actor runtime without their `actor` feature");
    for krate in PURE_CORES {
        let output = cargo()
            .args(["tree", "-p", krate, "--no-default-features", "-e", "normal"])
            .args(["--prefix", "none", "--format", "{p}"])
            .output()
            .with_context(|| format!("cannot run cargo tree -p {krate}"))?;
        if !output.status.success() {
            bail!(
                "cargo tree -p {krate} failed: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        let tree = String::from_utf8_lossy(&output.stdout);
        let runtime: Vec<&str> = tree
            .lines()
            .filter(|line| {
                let name = line.split_whitespace().next().unwrap_or("");
                name.starts_with("actix") || name.starts_with("tokio")
            })
            .collect();
        if !runtime.is_empty() {
            bail!(
                "{krate} without its `actor` feature still depends on {}",
                runtime.join(", ")
            );
        }
    }
    Ok(())
}

/// Debian packages the test suite uses. Installed only where missing, and only as root.
const SYSTEM_PACKAGES: [(&str, &str); 7] = [
    ("cc", "gcc"),
    // The C plugin template is built with its own Makefile, as its author would.
    ("make", "make"),
    // The Python process plugin (`plugins/python/indexer`) and its tests.
    ("python3", "python3"),
    // The closed-loop tests load the machine with real memory and CPU pressure.
    ("stress-ng", "stress-ng"),
    // `promtool check metrics` validates the daemon's /metrics output, `promtool test rules`
    // the rules of deploy/prometheus, and the fleet test runs a real Prometheus server.
    ("promtool", "prometheus"),
    // The fleet test puts three nodes behind a real HAProxy.
    ("haproxy", "haproxy"),
    // `systemd-analyze verify` checks config/ballast.service.
    ("systemd-analyze", "systemd"),
];

/// Python modules the test suite uses beyond python3's own, by Debian package: `venv` (with
/// `ensurepip`) for the virtual environment kubernetes-validate is installed into.
const PYTHON_MODULES: [(&str, &str); 1] = [("ensurepip", "python3-venv")];

fn install_system_packages() -> Result<()> {
    let python_module = |module: &str| {
        Command::new("python3")
            .args(["-c", &format!("import {module}")])
            .output()
            .is_ok_and(|out| out.status.success())
    };
    let mut missing: Vec<&str> = SYSTEM_PACKAGES
        .iter()
        .filter(|(program, _)| !on_path(program))
        .map(|(_, package)| *package)
        .collect();
    missing.extend(
        PYTHON_MODULES
            .iter()
            .filter(|(module, _)| !python_module(module))
            .map(|(_, package)| *package),
    );
    if missing.is_empty() {
        return Ok(());
    }
    step(
        "apt-get update",
        Command::new("apt-get")
            .arg("update")
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )?;
    step(
        &format!("apt-get install {}", missing.join(" ")),
        Command::new("apt-get")
            .args(["install", "-y", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )
}

/// Sends SIGTERM to `pid` (a daemon this task started), without a `kill` program, which a
/// minimal machine may lack.
fn terminate(pid: u32) {
    if let Ok(pid) = i32::try_from(pid) {
        // SAFETY: kill(2) has no memory-safety preconditions.
        unsafe {
            libc::kill(pid, libc::SIGTERM);
        }
    }
}

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(program).is_file()))
}

fn run(root: &Path, args: &[String]) -> Result<()> {
    build_plugins(root, false)?;
    step(
        "ballast run",
        cargo()
            .args(["run", "--quiet", "-p", "ballast", "--", "run"])
            .args(args),
    )
}

fn target_dir(root: &Path) -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), PathBuf::from)
}

fn build_plugins(root: &Path, release: bool) -> Result<()> {
    let mut build = cargo();
    build.arg("build");
    for p in RUST_PLUGINS {
        build.args(["-p", p]);
    }
    if release {
        build.arg("--release");
    }
    step("build the Rust example plugins", &mut build)?;
    let out = target_dir(root).join(if release { "release" } else { "debug" });
    std::fs::create_dir_all(&out).with_context(|| format!("cannot create {}", out.display()))?;
    let include = root.join("crates/ballast-abi/include");
    let source = root.join("plugins/c/clock/clock.c");
    let library = out.join("libclock.so");
    step(
        "build the C example plugin (plugins/c/clock)",
        Command::new(std::env::var("CC").unwrap_or_else(|_| "cc".to_owned()))
            .args([
                "-std=c11", "-shared", "-fPIC", "-O2", "-Wall", "-Wextra", "-Werror", "-pthread",
            ])
            .arg("-I")
            .arg(&include)
            .arg("-o")
            .arg(&library)
            .arg(&source),
    )?;
    install_script_plugins(root, &out)?;
    eprintln!("==> plugins are in {}", out.display());
    Ok(())
}

/// The request each example plugin's conformance check streams: one that streams several
/// chunks over some time, so that the check can cancel it midway. A plugin not listed streams
/// `ping`.
const STREAM_REQUESTS: [(&str, &str); 7] = [
    ("voice", "stream:20:8:5"),
    ("android", "stream:20:8:5"),
    ("discord", "stream:20:8:5"),
    ("stubs", "stream:20:8:5"),
    ("faulty", "stream 20 5"),
    ("clock", "tick:20:5"),
    ("indexer", "ping"),
];

/// Runs `ballast plugin check` on every example plugin just built: each plugin of the default
/// config as that config describes it, and the faulty test plugin as a file. Every plugin is
/// checked; the step fails naming those that did not pass.
fn check_plugins(root: &Path) -> Result<()> {
    step("build ballast", cargo().args(["build", "-p", "ballast"]))?;
    let dir = target_dir(root).join("debug");
    let ballast = dir.join("ballast");
    let run = |args: &[&str]| {
        let mut command = Command::new(&ballast);
        command
            .args(args)
            .env("BALLAST_PLUGIN_DIR", &dir)
            .env_remove("BALLAST_CONFIG")
            .env_remove("BALLAST_PROFILE");
        command
    };
    let config = run(&["config", "show", "--json"])
        .output()
        .context("cannot run ballast config show")?;
    if !config.status.success() {
        bail!(
            "ballast config show failed: {}",
            String::from_utf8_lossy(&config.stderr)
        );
    }
    let config: serde_json::Value =
        serde_json::from_slice(&config.stdout).context("ballast config show --json")?;
    let names: Vec<String> = config["plugins"]
        .as_array()
        .context("the default config lists no plugins")?
        .iter()
        .filter_map(|p| p["name"].as_str().map(str::to_owned))
        .collect();
    let stream = |name: &str| {
        STREAM_REQUESTS
            .iter()
            .find(|(n, _)| *n == name)
            .map_or("ping", |(_, request)| request)
    };
    let mut failed = Vec::new();
    for name in &names {
        let mut command = run(&[
            "plugin",
            "check",
            "--plugin",
            name,
            "--stream-request",
            stream(name),
        ]);
        if step(
            &format!("ballast plugin check --plugin {name}"),
            &mut command,
        )
        .is_err()
        {
            failed.push(name.clone());
        }
    }
    let faulty = dir.join("libfaulty.so");
    let mut command = run(&["plugin", "check", "--stream-request", stream("faulty")]);
    command.arg(&faulty);
    if step("ballast plugin check libfaulty.so", &mut command).is_err() {
        failed.push("faulty".to_owned());
    }
    if !failed.is_empty() {
        bail!(
            "ballast plugin check failed for {} (its table above names the steps)",
            failed.join(", ")
        );
    }
    Ok(())
}

/// Copies the process plugins written in scripting languages (`plugins/python/NAME/`,
/// `plugins/shell/NAME/`) next to the built ones, as `NAME/...`, where the default config
/// looks for them. Links are followed, so a Python plugin's `ballast_plugin` (a link to the
/// SDK in `sdk/python`) is installed as a copy of the SDK beside its script.
fn install_script_plugins(root: &Path, out: &Path) -> Result<()> {
    for language in ["python", "shell"] {
        let Ok(entries) = std::fs::read_dir(root.join("plugins").join(language)) else {
            continue;
        };
        for entry in entries.flatten() {
            let source = entry.path();
            if !source.is_dir() {
                continue;
            }
            let target = out.join(entry.file_name());
            copy_tree(&source, &target)?;
            eprintln!(
                "==> installed {} into {}",
                source.display(),
                target.display()
            );
        }
    }
    Ok(())
}

/// Copies the files and folders under `source` into `target` (created if missing), following
/// links and leaving out Python's byte-code caches.
fn copy_tree(source: &Path, target: &Path) -> Result<()> {
    std::fs::create_dir_all(target)
        .with_context(|| format!("cannot create {}", target.display()))?;
    for entry in std::fs::read_dir(source)
        .with_context(|| format!("cannot read {}", source.display()))?
        .flatten()
    {
        let path = entry.path();
        if entry.file_name() == "__pycache__" {
            continue;
        }
        if path.is_dir() {
            copy_tree(&path, &target.join(entry.file_name()))?;
        } else if path.is_file() {
            // std::fs::copy keeps the permissions, so scripts stay executable.
            std::fs::copy(&path, target.join(entry.file_name())).with_context(|| {
                format!("cannot copy {} to {}", path.display(), target.display())
            })?;
        }
    }
    Ok(())
}

fn header(root: &Path, check: bool) -> Result<()> {
    let path = root.join(xtask::HEADER_PATH);
    let fresh = xtask::generate_header(root)?;
    if check {
        eprintln!("==> check that {} is current", xtask::HEADER_PATH);
        let current =
            std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
        if current != fresh {
            bail!(
                "{} is out of date with crates/ballast-abi/src/lib.rs; run `cargo xtask header` and commit the result",
                path.display()
            );
        }
        return Ok(());
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    std::fs::write(&path, fresh).with_context(|| format!("cannot write {}", path.display()))?;
    eprintln!("wrote {}", path.display());
    Ok(())
}

/// How long `ballast tune` may take on all the shared traces.
const TUNE_GOAL: std::time::Duration = std::time::Duration::from_secs(60);

/// Runs `ballast tune` on every CSV under `../shared/traces` and checks it meets [`TUNE_GOAL`].
fn tune(root: &Path) -> Result<()> {
    step(
        "build ballast (release)",
        cargo().args(["build", "--release", "-p", "ballast"]),
    )?;
    let traces_dir = root.join("../shared/traces");
    let mut traces = Vec::new();
    let mut stack = vec![traces_dir.clone()];
    while let Some(dir) = stack.pop() {
        let entries = std::fs::read_dir(&dir)
            .with_context(|| format!("cannot list {} (the shared traces)", dir.display()))?;
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "csv") {
                traces.push(path);
            }
        }
    }
    traces.sort();
    let started = std::time::Instant::now();
    step(
        &format!("ballast tune on {} shared traces", traces.len()),
        Command::new(target_dir(root).join("release/ballast"))
            .args([
                "tune",
                "--config",
                "config/simulate-example.toml",
                "--trace",
            ])
            .args(&traces),
    )?;
    let elapsed = started.elapsed();
    eprintln!(
        "ballast tune took {:.1} s (goal: under {} s)",
        elapsed.as_secs_f64(),
        TUNE_GOAL.as_secs()
    );
    if elapsed > TUNE_GOAL {
        bail!("ballast tune missed its goal");
    }
    Ok(())
}

/// The config `cargo xtask idle` runs the daemon with: every example plugin at a small working
/// set and no CPU duty, so that what is measured is ballast itself.
const IDLE_CONFIG: &str = r#"
[default.monitor]
interval = "1s"

[[default.plugins]]
name = "voice"
path = "libvoice.so"
priority = 10
config = { workload = { working_set_mb = [4, 1], cpu_duty = 0.0 } }

[[default.plugins]]
name = "android"
path = "libandroid.so"
priority = 20
config = { workload = { working_set_mb = [4, 1], cpu_duty = 0.0 } }

[[default.plugins]]
name = "discord"
path = "libdiscord.so"
priority = 30
config = { workload = { working_set_mb = [4], cpu_duty = 0.0 } }

[[default.plugins]]
name = "clock"
path = "libclock.so"
priority = 40
config = { working_set_mb = [1, 1] }

[[default.plugins]]
name = "stubs"
path = "libstubs.so"
priority = 100
essential = true
config = { workload = { working_set_mb = [1], cpu_duty = 0.0 } }
"#;

/// utime + stime of `pid` in clock ticks, and its RSS in bytes.
fn proc_figures(pid: u32) -> Result<(u64, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .context("cannot read the daemon's stat")?;
    let after = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .context("malformed stat")?;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = fields
        .get(11)
        .and_then(|u| u.parse::<u64>().ok())
        .unwrap_or(0)
        + fields
            .get(12)
            .and_then(|s| s.parse::<u64>().ok())
            .unwrap_or(0);
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .context("cannot read the daemon's status")?;
    let rss_kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0);
    Ok((ticks, rss_kib * 1024))
}

fn idle(root: &Path, seconds: u64) -> Result<()> {
    build_plugins(root, true)?;
    step(
        "build ballast (release)",
        cargo().args(["build", "--release", "-p", "ballast"]),
    )?;
    let dir = std::env::temp_dir().join(format!("ballast-idle-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let config = dir.join("idle.toml");
    std::fs::write(&config, IDLE_CONFIG).context("cannot write the idle config")?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .context("no free port")?;
    let release = target_dir(root).join("release");
    let mut child = Command::new(release.join("ballast"))
        .args(["run", "--config"])
        .arg(&config)
        .arg("--data-dir")
        .arg(dir.join("data"))
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .env("BALLAST_PLUGIN_DIR", &release)
        .env("BALLAST_LOG", "warn")
        .spawn()
        .context("cannot start ballast")?;
    let pid = child.id();
    // Let start-up finish (plugins created, first samples taken) before measuring.
    std::thread::sleep(std::time::Duration::from_secs(5));
    let (ticks_before, _) = proc_figures(pid)?;
    let started = std::time::Instant::now();
    std::thread::sleep(std::time::Duration::from_secs(seconds));
    let (ticks_after, rss) = proc_figures(pid)?;
    let elapsed = started.elapsed().as_secs_f64();
    // Linux reports CPU times in USER_HZ, which is 100 on every architecture ballast runs on.
    let hz = 100.0;
    let cpu = (ticks_after - ticks_before) as f64 / hz / elapsed;
    let plugins: u64 = 4 + 4 + 4 + 1 + 1;
    let rss_without_plugins = rss.saturating_sub(plugins << 20);
    terminate(pid);
    let _ = child.wait();
    println!("idle daemon over {elapsed:.0} s, 1 s sampling, 5 example plugins enabled:");
    println!("  cpu  {:.3}% of one core (goal < 0.2%)", cpu * 100.0);
    println!(
        "  rss  {:.1} MiB, {:.1} MiB without the plugins' {} MiB of working sets (goal < 20 MiB)",
        rss as f64 / 1048576.0,
        rss_without_plugins as f64 / 1048576.0,
        plugins
    );
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(lines: &[&str]) -> Option<(u64, u64, u64)> {
        let lines: Vec<String> = lines.iter().map(|l| (*l).to_owned()).collect();
        unittest_counts(&lines).map(|c| (c.passed, c.failed, c.skipped))
    }

    #[test]
    fn unittest_summaries_are_counted() {
        assert_eq!(counts(&["Ran 49 tests in 1.995s", "OK"]), Some((49, 0, 0)));
        assert_eq!(
            counts(&[
                "Ran 10 tests in 0.1s",
                "OK (skipped=3, expected failures=1)"
            ]),
            Some((7, 0, 3))
        );
        assert_eq!(
            counts(&[
                "Ran 12 tests in 2s",
                "FAILED (failures=2, errors=1, skipped=1)"
            ]),
            Some((8, 3, 1))
        );
        assert_eq!(
            counts(&["Ran 4 tests in 2s", "FAILED (unexpected successes=1)"]),
            Some((3, 1, 0))
        );
        assert_eq!(counts(&["Ran 1 test in 0.001s", "OK"]), Some((1, 0, 0)));
        assert_eq!(counts(&["OK"]), None, "no count");
        assert_eq!(counts(&["Ran 3 tests in 1s"]), None, "no verdict");
    }

    #[test]
    fn script_plugins_are_copied_with_their_links_followed_and_no_caches() {
        use std::os::unix::fs::{PermissionsExt, symlink};
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        let sdk = root.join("sdk/python/ballast_plugin");
        std::fs::create_dir_all(sdk.join("__pycache__")).unwrap();
        std::fs::write(sdk.join("__init__.py"), "sdk").unwrap();
        std::fs::write(sdk.join("__pycache__/x.pyc"), "cache").unwrap();
        let plugin = root.join("plugins/python/notes");
        std::fs::create_dir_all(&plugin).unwrap();
        std::fs::write(plugin.join("notes.py"), "script").unwrap();
        std::fs::set_permissions(
            plugin.join("notes.py"),
            std::fs::Permissions::from_mode(0o755),
        )
        .unwrap();
        symlink(
            "../../../sdk/python/ballast_plugin",
            plugin.join("ballast_plugin"),
        )
        .unwrap();
        let out = dir.path().join("out");
        install_script_plugins(&root, &out).unwrap();
        let installed = out.join("notes");
        let mode = std::fs::metadata(installed.join("notes.py"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o111, 0o111, "still executable");
        let sdk_copy = installed.join("ballast_plugin");
        assert!(!sdk_copy.is_symlink(), "a copy, not a link");
        assert_eq!(
            std::fs::read_to_string(sdk_copy.join("__init__.py")).unwrap(),
            "sdk"
        );
        assert!(!sdk_copy.join("__pycache__").exists());
    }
}
