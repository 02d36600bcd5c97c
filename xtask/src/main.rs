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

/// ballast's project automation.
#[derive(Debug, Parser)]
#[command(name = "cargo xtask")]
struct Cli {
    #[command(subcommand)]
    command: Task,
}

#[derive(Debug, Subcommand)]
enum Task {
    /// Run everything CI runs: formatting, lints, docs, header check, plugin builds and all tests.
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
    /// daemon's overhead idle and under load, and flaps under an oscillating load.
    Measure {
        /// Latency rounds per path.
        #[arg(long, default_value_t = 5)]
        rounds: u32,
        /// Seconds of the overhead and flap measurements.
        #[arg(long, default_value_t = 60)]
        seconds: u64,
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
        Task::Header { check } => header(&root, check),
        Task::Templates => plugin_templates(&root),
        Task::Bench { package: None } => bench::bench(&root, &target_dir(&root)),
        Task::Bench {
            package: Some(package),
        } => step("cargo bench", cargo().args(["bench", "-p", &package])),
        Task::Idle { seconds } => idle(&root, seconds),
        Task::Measure { rounds, seconds } => {
            install_system_packages()?;
            build_plugins(&root, true)?;
            step(
                "build ballast (release)",
                cargo().args(["build", "--release", "-p", "ballast"]),
            )?;
            measure::measure(
                &target_dir(&root).join("release"),
                &measure::Options { rounds, seconds },
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
/// (an ignored test counts as skipped).
fn tests(what: &str, command: &mut Command) -> Result<Counts> {
    use std::io::BufRead;
    eprintln!("==> {what}");
    let mut child = command
        .stdout(std::process::Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot start: {what}"))?;
    let mut counts = Counts::default();
    if let Some(stdout) = child.stdout.take() {
        for line in std::io::BufReader::new(stdout).lines() {
            let line = line.with_context(|| format!("cannot read the output of {what}"))?;
            println!("{line}");
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
    let status = child
        .wait()
        .with_context(|| format!("cannot wait for: {what}"))?;
    if !status.success() {
        bail!("failed: {what} ({status})");
    }
    Ok(counts)
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
    plugin_templates(root)?;
    let mut counts = tests(
        "cargo test",
        cargo().args(["test", "--workspace", "--all-targets"]),
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

/// Writes the Rust and C plugin templates with `ballast plugin new` into a temporary directory
/// outside the workspace, as an author would, builds them, runs their own tests and loads the
/// libraries with `ballast plugin inspect`. The Rust project builds into `target/templates`, so
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
    for (lang, dir) in [("rust", &rust), ("c", &c)] {
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
        // The conformance check goes here once `ballast plugin check` exists: run it on
        // `library` (and on the Python template's plugin), so that every template passes the
        // whole plugin contract as generated.
    }
    Ok(())
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
const SYSTEM_PACKAGES: [(&str, &str); 6] = [
    ("cc", "gcc"),
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

fn install_system_packages() -> Result<()> {
    let missing: Vec<&str> = SYSTEM_PACKAGES
        .iter()
        .filter(|(program, _)| !on_path(program))
        .map(|(_, package)| *package)
        .collect();
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

/// Copies the process plugins written in scripting languages (`plugins/python/NAME/`,
/// `plugins/shell/NAME/`) next to the built ones, as `NAME/...`, where the default config
/// looks for them.
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
            std::fs::create_dir_all(&target)
                .with_context(|| format!("cannot create {}", target.display()))?;
            for file in std::fs::read_dir(&source)
                .with_context(|| format!("cannot read {}", source.display()))?
                .flatten()
            {
                if file.path().is_file() {
                    // std::fs::copy keeps the permissions, so scripts stay executable.
                    std::fs::copy(file.path(), target.join(file.file_name())).with_context(
                        || {
                            format!(
                                "cannot copy {} to {}",
                                file.path().display(),
                                target.display()
                            )
                        },
                    )?;
                }
            }
            eprintln!(
                "==> installed {} into {}",
                source.display(),
                target.display()
            );
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
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(pid.to_string())
        .status();
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
