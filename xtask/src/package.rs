//! The Debian package (`cargo xtask package`, made with cargo-deb) and CI's check of it: built,
//! its file list checked, installed with dpkg, its config and plugins checked, the daemon run
//! as the package's user, then removed and purged with nothing left behind. Also the check of
//! the Kubernetes manifests under `deploy/kubernetes` (kubernetes-validate, pinned).

use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use super::{build_plugins, cargo, step, target_dir, terminate};

/// The cargo-deb release the package is built with, installed under `target/tools`.
pub const CARGO_DEB_VERSION: &str = "3.8.0";

/// The Kubernetes version the manifests are validated against.
pub const KUBERNETES_VERSION: &str = "1.35.0";

/// Where the installed config says the plugins and the data are.
const PLUGIN_DIR: &str = "/usr/lib/ballast/plugins";
const DATA_DIR: &str = "/var/lib/ballast";
const CONFIG: &str = "/etc/ballast/ballast.toml";

/// Every file the package holds, as `dpkg-deb -c` names it, with its mode. Anything more (a
/// test plugin, a byte-code cache) or less fails the check.
const PACKAGE_FILES: [(&str, u32); 14] = [
    ("./etc/ballast/ballast.toml", 0o644),
    ("./usr/bin/ballast", 0o755),
    (
        "./usr/lib/ballast/plugins/indexer/ballast_plugin/__init__.py",
        0o644,
    ),
    (
        "./usr/lib/ballast/plugins/indexer/ballast_plugin/py.typed",
        0o644,
    ),
    ("./usr/lib/ballast/plugins/indexer/indexer.py", 0o755),
    ("./usr/lib/ballast/plugins/libandroid.so", 0o644),
    ("./usr/lib/ballast/plugins/libclock.so", 0o644),
    ("./usr/lib/ballast/plugins/libdiscord.so", 0o644),
    ("./usr/lib/ballast/plugins/libstubs.so", 0o644),
    ("./usr/lib/ballast/plugins/libvoice.so", 0o644),
    ("./usr/lib/ballast/plugins/loadwatch/loadwatch.sh", 0o755),
    ("./usr/lib/systemd/system/ballast.service", 0o644),
    ("./usr/share/doc/ballast/README.md", 0o644),
    ("./usr/share/doc/ballast/copyright", 0o644),
];

/// The shipped config (`config/ballast.toml`) as the package installs it: the same file with
/// the plugin and data directories of the package set in its `default` profile.
pub fn packaged_config(shipped: &str) -> Result<String> {
    let mut out = String::with_capacity(shipped.len() + 256);
    let mut inserted = false;
    for line in shipped.lines() {
        let key = line.split('=').next().unwrap_or("").trim();
        if key == "plugin_dir" || key == "data_dir" {
            bail!(
                "config/ballast.toml sets `{key}` itself; the package sets it in the installed copy"
            );
        }
        out.push_str(line);
        out.push('\n');
        if line.trim() == "[default]" && !inserted {
            out.push_str(&format!(
                "# Installed by the Debian package: the example plugins are in {PLUGIN_DIR}, and the\n\
                 # data (telemetry, decisions, pins, checkpoints) in {DATA_DIR}, owned by the\n\
                 # `ballast` user the package made.\n\
                 plugin_dir = \"{PLUGIN_DIR}\"\n\
                 data_dir = \"{DATA_DIR}\"\n"
            ));
            inserted = true;
        }
    }
    if !inserted {
        bail!("config/ballast.toml has no `[default]` table to set the package's directories in");
    }
    Ok(out)
}

/// cargo-deb at [`CARGO_DEB_VERSION`], installed under `target/tools` when missing (a minute or
/// several: it is compiled from crates.io).
fn cargo_deb(root: &Path) -> Result<PathBuf> {
    let tools = target_dir(root).join("tools");
    let program = tools.join("bin/cargo-deb");
    let installed = Command::new(&program)
        .arg("--version")
        .output()
        .ok()
        .filter(|out| out.status.success())
        .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_owned());
    if installed.as_deref() != Some(&format!("cargo-deb {CARGO_DEB_VERSION}")) {
        step(
            &format!("cargo install cargo-deb {CARGO_DEB_VERSION}"),
            cargo()
                .args(["install", "cargo-deb", "--locked", "--version"])
                .arg(CARGO_DEB_VERSION)
                .arg("--root")
                .arg(&tools)
                // Its own build, not this workspace's target directory.
                .env_remove("CARGO_TARGET_DIR"),
        )?;
    }
    Ok(program)
}

/// Which build the package holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Build {
    /// A release build: the package a user installs (`cargo xtask package`).
    Release,
    /// The debug build CI has just made and tested, so that checking the packaging costs no
    /// second build of the workspace; the package is the same but for its binaries.
    Debug,
}

/// Builds the package (the binary, the example plugins, the installed config) and returns the
/// path of the `.deb`.
pub fn package(root: &Path, build: Build) -> Result<PathBuf> {
    let cargo_deb = cargo_deb(root)?;
    let release = build == Build::Release;
    build_plugins(root, release)?;
    let mut ballast = cargo();
    ballast.args(["build", "-p", "ballast"]);
    if release {
        ballast.arg("--release");
    }
    step("build ballast", &mut ballast)?;
    let out = target_dir(root).join(if release { "release" } else { "debug" });
    let shipped = std::fs::read_to_string(root.join("config/ballast.toml"))
        .context("cannot read config/ballast.toml")?;
    let config_dir = out.join("package");
    std::fs::create_dir_all(&config_dir)
        .with_context(|| format!("cannot create {}", config_dir.display()))?;
    std::fs::write(config_dir.join("ballast.toml"), packaged_config(&shipped)?)
        .with_context(|| format!("cannot write {}", config_dir.display()))?;
    // CI's package beside, not over, a release one of the same name.
    let debian = match build {
        Build::Release => target_dir(root).join("debian"),
        Build::Debug => target_dir(root).join("debian/ci"),
    };
    std::fs::create_dir_all(&debian)
        .with_context(|| format!("cannot create {}", debian.display()))?;
    let mut deb = Command::new(&cargo_deb);
    deb.args(["-p", "ballast", "--no-build", "--strip", "--output"])
        .arg(&debian);
    if !release {
        // cargo-deb warns that a package of a dev build is not for release, which it is not:
        // CI installs it and throws it away. Light compression: nobody downloads it.
        deb.args(["--profile", "dev", "--fast"]);
    }
    eprintln!("==> cargo deb");
    let output = deb
        .stderr(std::process::Stdio::inherit())
        .output()
        .context("cannot start cargo-deb")?;
    if !output.status.success() {
        bail!("failed: cargo deb ({})", output.status);
    }
    // cargo-deb prints the path of the package it wrote.
    let stdout = String::from_utf8_lossy(&output.stdout);
    let path = stdout
        .lines()
        .map(str::trim)
        .rfind(|line| line.ends_with(".deb"))
        .map(PathBuf::from)
        .with_context(|| format!("cargo deb named no .deb: {stdout}"))?;
    eprintln!("==> the package is {}", path.display());
    Ok(path)
}

/// `cargo xtask package`: the release package, its file list checked.
pub fn package_task(root: &Path) -> Result<()> {
    let deb = package(root, Build::Release)?;
    check_contents(&deb)?;
    println!("{}", deb.display());
    println!("install it with: sudo dpkg -i {}", deb.display());
    Ok(())
}

/// CI's step: the package of the debug build, its file list checked and, as root on a machine
/// where ballast is not installed, installed, checked, run, removed and purged.
pub fn ci_package(root: &Path) -> Result<()> {
    let started = Instant::now();
    let deb = package(root, Build::Debug)?;
    check_contents(&deb)?;
    // SAFETY: geteuid(2) has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("==> SKIPPED installing the package: dpkg -i needs root");
        return Ok(());
    }
    if installed_version()?.is_some() {
        bail!(
            "ballast is installed on this machine (dpkg-query -W ballast): the package check installs and purges it, so it runs only where it is not installed"
        );
    }
    let checked = install_and_check(&deb);
    if checked.is_err() && installed_version().ok().flatten().is_some() {
        // Leave the machine as it was, whatever failed.
        let _ = Command::new("dpkg").args(["--purge", "ballast"]).status();
    }
    checked?;
    eprintln!(
        "==> the package installed, ran and was removed cleanly ({:.0} s)",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// The installed version of the `ballast` package, if any.
fn installed_version() -> Result<Option<String>> {
    let out = Command::new("dpkg-query")
        .args(["-W", "-f", "${Status} ${Version}", "ballast"])
        .output()
        .context("cannot run dpkg-query")?;
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(text
        .strip_prefix("install ok installed ")
        .map(str::to_owned))
}

/// The lines of `dpkg-deb -c`, as (mode string, owner/group, path).
fn listing(deb: &Path) -> Result<Vec<(String, String, String)>> {
    let out = Command::new("dpkg-deb")
        .arg("-c")
        .arg(deb)
        .output()
        .context("cannot run dpkg-deb -c")?;
    if !out.status.success() {
        bail!(
            "dpkg-deb -c {} failed: {}",
            deb.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            // mode owner/group size date time path (and `-> target` for a link)
            (fields.len() >= 6).then(|| {
                (
                    fields[0].to_owned(),
                    fields[1].to_owned(),
                    fields[5].to_owned(),
                )
            })
        })
        .collect())
}

/// The mode bits of a `ls -l` style mode string (`-rwxr-xr-x`).
fn mode_bits(mode: &str) -> u32 {
    mode.chars()
        .skip(1)
        .take(9)
        .fold(0, |bits, c| (bits << 1) | u32::from(c != '-'))
}

/// Checks the package's file list (exactly [`PACKAGE_FILES`], each with its mode, owned by
/// root), its conffiles and its control fields.
fn check_contents(deb: &Path) -> Result<()> {
    eprintln!("==> the package's files (dpkg-deb -c)");
    let entries = listing(deb)?;
    let mut problems = Vec::new();
    let mut files = Vec::new();
    for (mode, owner, path) in &entries {
        if owner != "root/root" && owner != "0/0" {
            problems.push(format!("{path} is owned by {owner}, not root"));
        }
        if mode_bits(mode) & 0o022 != 0 {
            problems.push(format!("{path} is writable by others than root ({mode})"));
        }
        if mode.starts_with('d') {
            continue;
        }
        if !mode.starts_with('-') {
            problems.push(format!("{path} is not a plain file ({mode})"));
        }
        match PACKAGE_FILES.iter().find(|(p, _)| p == path) {
            Some((_, want)) if mode_bits(mode) != *want => {
                problems.push(format!("{path} has mode {mode}, want {want:o}"))
            }
            Some(_) => {}
            None => problems.push(format!("{path} is in the package but not expected")),
        }
        files.push(path.as_str());
    }
    for (path, _) in PACKAGE_FILES {
        if !files.contains(&path) {
            problems.push(format!("{path} is missing from the package"));
        }
    }
    let field = |name: &str| -> Result<String> {
        let out = Command::new("dpkg-deb")
            .arg("-f")
            .arg(deb)
            .arg(name)
            .output()
            .context("cannot run dpkg-deb -f")?;
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    };
    let depends = field("Depends")?;
    if !depends.contains("libc6") || !depends.contains("adduser | passwd") {
        problems.push(format!(
            "Depends is `{depends}`: it should name libc6 and adduser | passwd"
        ));
    }
    let conffiles = Command::new("dpkg-deb")
        .arg("--info")
        .arg(deb)
        .arg("conffiles")
        .output()
        .context("cannot run dpkg-deb --info")?;
    let conffiles = String::from_utf8_lossy(&conffiles.stdout);
    if conffiles.lines().map(str::trim).collect::<Vec<_>>() != [CONFIG] {
        problems.push(format!(
            "the conffiles are {conffiles:?}; the config {CONFIG} should be the only one"
        ));
    }
    if !problems.is_empty() {
        bail!(
            "the package {} is not as it should be:\n  - {}",
            deb.display(),
            problems.join("\n  - ")
        );
    }
    eprintln!(
        "{} files, owned by root, modes as expected; Depends: {depends}; conffile {CONFIG}",
        files.len()
    );
    Ok(())
}

/// The uid, gid and home of a user, from `getent passwd`.
fn user(name: &str) -> Option<(u32, u32, String)> {
    let out = Command::new("getent")
        .args(["passwd", name])
        .output()
        .ok()?;
    let line = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let fields: Vec<&str> = line.split(':').collect();
    (out.status.success() && fields.len() >= 7).then(|| {
        (
            fields[2].parse().unwrap_or(u32::MAX),
            fields[3].parse().unwrap_or(u32::MAX),
            fields[5].to_owned(),
        )
    })
}

fn group_exists(name: &str) -> bool {
    Command::new("getent")
        .args(["group", name])
        .output()
        .is_ok_and(|out| out.status.success())
}

fn install_and_check(deb: &Path) -> Result<()> {
    step(
        &format!("dpkg -i {}", deb.display()),
        Command::new("dpkg")
            .arg("-i")
            .arg(deb)
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )?;
    let Some((uid, gid, home)) = user("ballast") else {
        bail!("the package made no `ballast` user");
    };
    if home != DATA_DIR {
        bail!("the ballast user's home is {home}, not {DATA_DIR}");
    }
    let data = std::fs::metadata(DATA_DIR).with_context(|| format!("{DATA_DIR} is missing"))?;
    if data.uid() != uid || data.gid() != gid || data.permissions().mode() & 0o7777 != 0o750 {
        bail!(
            "{DATA_DIR} is owned by {}:{} with mode {:o}; want the ballast user ({uid}:{gid}) and 750",
            data.uid(),
            data.gid(),
            data.permissions().mode() & 0o7777
        );
    }
    eprintln!("the user ballast ({uid}:{gid}) owns {DATA_DIR}");
    let ballast = Path::new("/usr/bin/ballast");
    for profile in ["balanced", "production", "dev"] {
        step(
            &format!("ballast config check --config {CONFIG} --profile {profile}"),
            clean_env(Command::new(ballast).args([
                "config",
                "check",
                "--config",
                CONFIG,
                "--profile",
                profile,
            ])),
        )?;
    }
    check_installed_plugins(ballast)?;
    if Path::new("/run/systemd/system").is_dir() {
        // Where systemd runs, the package started the unit: it must be up, and it must stop
        // before a second daemon may take the data directory.
        step(
            "systemctl is-active ballast (the package started it)",
            Command::new("systemctl").args(["is-active", "ballast"]),
        )?;
        step(
            "systemctl stop ballast",
            Command::new("systemctl").args(["stop", "ballast"]),
        )?;
    }
    run_as_ballast(ballast, uid, gid)?;

    step(
        "dpkg -r ballast",
        Command::new("dpkg")
            .args(["-r", "ballast"])
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )?;
    let left: Vec<&str> = [
        "/usr/bin/ballast",
        "/usr/lib/ballast",
        "/usr/lib/systemd/system/ballast.service",
        "/usr/share/doc/ballast",
    ]
    .into_iter()
    .filter(|p| Path::new(p).symlink_metadata().is_ok())
    .collect();
    if !left.is_empty() {
        bail!("dpkg -r left {}", left.join(", "));
    }
    // A remove keeps the config, the data and the user, for a later install.
    if !Path::new(CONFIG).is_file() || !Path::new(DATA_DIR).is_dir() || user("ballast").is_none() {
        bail!("dpkg -r removed the config, the data directory or the user, which only a purge may");
    }
    eprintln!("removed: the files are gone; the config, data and user stay");

    step(
        "dpkg --purge ballast",
        Command::new("dpkg")
            .args(["--purge", "ballast"])
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )?;
    let mut left: Vec<String> = ["/etc/ballast", DATA_DIR]
        .into_iter()
        .filter(|p| Path::new(p).symlink_metadata().is_ok())
        .map(str::to_owned)
        .collect();
    if user("ballast").is_some() {
        left.push("the user ballast".to_owned());
    }
    if group_exists("ballast") {
        left.push("the group ballast".to_owned());
    }
    if installed_version()?.is_some() {
        left.push("the package itself".to_owned());
    }
    // The unit's enablement (links under /etc/systemd, deb-systemd-helper's state).
    for dir in [
        "/etc/systemd/system",
        "/var/lib/systemd/deb-systemd-helper-enabled",
        "/var/lib/systemd/deb-systemd-helper-masked",
    ] {
        left.extend(
            files_under(Path::new(dir))
                .into_iter()
                .filter(|p| p.to_string_lossy().contains("ballast"))
                .map(|p| p.display().to_string()),
        );
    }
    if !left.is_empty() {
        bail!("dpkg --purge left {}", left.join(", "));
    }
    eprintln!("purged: nothing of ballast is left");
    Ok(())
}

/// Every file and link under `dir`, links not followed.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(path);
            } else {
                found.push(path);
            }
        }
    }
    found
}

/// A `ballast` command without the environment that would override the installed config.
fn clean_env(command: &mut Command) -> &mut Command {
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("BALLAST_") {
            command.env_remove(key);
        }
    }
    command
}

/// Checks that every plugin of the installed config is installed where the config says:
/// `ballast plugin inspect` loads and validates each native one, and each process plugin's
/// program is an executable file.
fn check_installed_plugins(ballast: &Path) -> Result<()> {
    let out =
        clean_env(Command::new(ballast).args(["config", "show", "--json", "--config", CONFIG]))
            .output()
            .context("cannot run ballast config show")?;
    if !out.status.success() {
        bail!(
            "ballast config show --config {CONFIG} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let config: serde_json::Value =
        serde_json::from_slice(&out.stdout).context("ballast config show --json")?;
    if config["plugin_dir"] != PLUGIN_DIR || config["data_dir"] != DATA_DIR {
        bail!(
            "the installed config has plugin_dir {} and data_dir {}; want {PLUGIN_DIR} and {DATA_DIR}",
            config["plugin_dir"],
            config["data_dir"]
        );
    }
    let plugins = config["plugins"]
        .as_array()
        .context("the installed config lists no plugins")?;
    let dir = Path::new(PLUGIN_DIR);
    for plugin in plugins {
        let name = plugin["name"].as_str().unwrap_or("?");
        if plugin["kind"] == "process" {
            let command = plugin["command"].as_str().unwrap_or("");
            let program = dir.join(command);
            let mode = std::fs::metadata(&program)
                .with_context(|| {
                    format!(
                        "plugin `{name}`: its program {} is missing",
                        program.display()
                    )
                })?
                .permissions()
                .mode();
            if mode & 0o111 == 0 {
                bail!("plugin `{name}`: {} is not executable", program.display());
            }
            eprintln!("plugin `{name}`: {} is installed", program.display());
        } else {
            let library = dir.join(plugin["path"].as_str().unwrap_or(""));
            step(
                &format!("ballast plugin inspect {} (`{name}`)", library.display()),
                Command::new(ballast)
                    .args(["plugin", "inspect"])
                    .arg(&library)
                    .stdout(std::process::Stdio::null()),
            )?;
        }
    }
    Ok(())
}

/// Runs `ballast run --config /etc/ballast/ballast.toml` as the ballast user, as the unit
/// would, on a free port; waits until the essential `stubs` plugin answers a call, and stops
/// the daemon with SIGTERM. It must exit 0 and have written its telemetry in the data
/// directory.
fn run_as_ballast(ballast: &Path, uid: u32, gid: u32) -> Result<()> {
    let what = format!("ballast run --config {CONFIG} as the ballast user");
    eprintln!("==> {what}");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .context("no free port")?;
    let api = format!("http://127.0.0.1:{port}");
    let log = tempfile::NamedTempFile::new().context("cannot make a log file")?;
    let mut daemon = clean_env(
        Command::new(ballast)
            .args(["run", "--config", CONFIG, "--listen"])
            .arg(format!("127.0.0.1:{port}")),
    )
    .uid(uid)
    .gid(gid)
    .current_dir("/")
    .env("HOME", DATA_DIR)
    .env("BALLAST_LOG", "info")
    .env("PYTHONDONTWRITEBYTECODE", "1")
    .stdout(log.reopen().context("cannot share the log file")?)
    .stderr(log.reopen().context("cannot share the log file")?)
    .spawn()
    .with_context(|| format!("cannot start: {what}"))?;
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last = String::new();
    let answered = loop {
        if let Ok(Some(status)) = daemon.try_wait() {
            last = format!("the daemon exited ({status})");
            break false;
        }
        let out = clean_env(&mut Command::new(ballast))
            .args(["plugin", "stubs", "call", "hello"])
            .env("BALLAST_API", &api)
            .output()
            .context("cannot run the CLI")?;
        if out.status.success() {
            eprintln!(
                "the stubs plugin answered: {}",
                String::from_utf8_lossy(&out.stdout).trim()
            );
            break true;
        }
        last = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        if Instant::now() > deadline {
            break false;
        }
        std::thread::sleep(Duration::from_millis(250));
    };
    terminate(daemon.id());
    let stop_deadline = Instant::now() + Duration::from_secs(30);
    let stopped = loop {
        match daemon.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if Instant::now() < stop_deadline => {
                std::thread::sleep(Duration::from_millis(100));
            }
            _ => {
                let _ = daemon.kill();
                let _ = daemon.wait();
                break None;
            }
        }
    };
    let text = std::fs::read_to_string(log.path()).unwrap_or_default();
    if !answered {
        bail!("failed: {what}: the last call said: {last}\nthe daemon's log:\n{text}");
    }
    match stopped {
        Some(status) if status.success() => {}
        other => bail!(
            "failed: {what}: the daemon did not stop cleanly on SIGTERM ({other:?}); its log:\n{text}"
        ),
    }
    let owned_by_ballast = std::fs::read_dir(DATA_DIR)
        .with_context(|| format!("cannot read {DATA_DIR}"))?
        .flatten()
        .filter(|entry| {
            entry
                .file_name()
                .to_string_lossy()
                .starts_with("telemetry-")
        })
        .filter_map(|entry| entry.metadata().ok())
        .any(|metadata| metadata.uid() == uid);
    if !owned_by_ballast {
        bail!("failed: {what}: no telemetry of the ballast user's in {DATA_DIR}; its log:\n{text}");
    }
    eprintln!(
        "the daemon ran as the ballast user, wrote its telemetry in {DATA_DIR} and stopped cleanly"
    );
    Ok(())
}

/// The pinned requirements of kubernetes-validate, installed into a virtual environment under
/// `target/tools` when missing.
const KUBERNETES_REQUIREMENTS: &str = "deploy/kubernetes/requirements.txt";

/// Validates every manifest under `deploy/kubernetes` with kubernetes-validate against
/// [`KUBERNETES_VERSION`] (strict: an unknown field fails), checks that the kustomization
/// lists them all, and checks the ConfigMap's ballast config with `ballast config check` and
/// that its plugins are those of `config/ballast.toml`.
pub fn kubernetes(root: &Path, ballast: &Path) -> Result<()> {
    let venv = target_dir(root).join("tools/kubernetes-validate");
    let validate = venv.join("bin/kubernetes-validate");
    let python = venv.join("bin/python");
    let requirements = root.join(KUBERNETES_REQUIREMENTS);
    let wanted = std::fs::read_to_string(&requirements)
        .with_context(|| format!("cannot read {KUBERNETES_REQUIREMENTS}"))?;
    let stamp = venv.join("requirements.txt");
    if std::fs::read_to_string(&stamp).ok().as_deref() != Some(wanted.as_str())
        || !validate.is_file()
    {
        let _ = std::fs::remove_dir_all(&venv);
        step(
            "python3 -m venv (for kubernetes-validate)",
            Command::new("python3").args(["-m", "venv"]).arg(&venv),
        )
        .context("python3 -m venv failed: on Debian it needs the python3-venv package")?;
        step(
            &format!("pip install -r {KUBERNETES_REQUIREMENTS}"),
            Command::new(&python)
                .args([
                    "-m",
                    "pip",
                    "install",
                    "--quiet",
                    "--disable-pip-version-check",
                    "--no-deps",
                    "-r",
                ])
                .arg(&requirements),
        )?;
        std::fs::write(&stamp, &wanted)
            .with_context(|| format!("cannot write {}", stamp.display()))?;
    }
    let dir = root.join("deploy/kubernetes");
    let mut manifests: Vec<PathBuf> = std::fs::read_dir(&dir)
        .with_context(|| format!("cannot read {}", dir.display()))?
        .flatten()
        .map(|entry| entry.path())
        .filter(|path| {
            path.extension().is_some_and(|e| e == "yaml")
                && path.file_name().is_some_and(|n| n != "kustomization.yaml")
        })
        .collect();
    manifests.sort();
    step(
        &format!("kubernetes-validate -k {KUBERNETES_VERSION} --strict deploy/kubernetes/*.yaml"),
        Command::new(&validate)
            .args(["-k", KUBERNETES_VERSION, "--strict"])
            .args(&manifests),
    )?;
    // The kustomization names every manifest, and the ConfigMap's config is valid.
    let scratch = tempfile::tempdir().context("cannot make a temporary directory")?;
    let config = scratch.path().join("ballast.toml");
    step(
        "deploy/kubernetes: the kustomization lists every manifest; the ConfigMap's ballast.toml",
        Command::new(&python)
            .arg("-c")
            .arg(KUBERNETES_CHECK)
            .arg(&dir)
            .arg(&config),
    )?;
    step(
        "ballast config check of the ConfigMap's ballast.toml",
        clean_env(
            Command::new(ballast)
                .args(["config", "check", "--profile", "production", "--config"])
                .arg(&config),
        ),
    )?;
    eprintln!("==> the ConfigMap's plugins are config/ballast.toml's");
    let plugins = |file: &Path| -> Result<serde_json::Value> {
        let out = clean_env(
            Command::new(ballast)
                .args([
                    "config",
                    "show",
                    "--json",
                    "--profile",
                    "production",
                    "--config",
                ])
                .arg(file),
        )
        .output()
        .context("cannot run ballast config show")?;
        if !out.status.success() {
            bail!(
                "ballast config show --config {} failed: {}",
                file.display(),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let config: serde_json::Value =
            serde_json::from_slice(&out.stdout).context("ballast config show --json")?;
        Ok(config["plugins"].clone())
    };
    if plugins(&config)? != plugins(&root.join("config/ballast.toml"))? {
        bail!(
            "the plugins of deploy/kubernetes/configmap.yaml differ from config/ballast.toml's: make them the same"
        );
    }
    Ok(())
}

/// Run by the venv's Python (which has PyYAML): argv[1] is deploy/kubernetes, argv[2] where to
/// write the ConfigMap's `ballast.toml`.
const KUBERNETES_CHECK: &str = r#"
import os, sys, yaml
folder, out = sys.argv[1], sys.argv[2]
with open(os.path.join(folder, "kustomization.yaml")) as f:
    listed = set(yaml.safe_load(f).get("resources", []))
present = {n for n in os.listdir(folder) if n.endswith(".yaml") and n != "kustomization.yaml"}
if listed != present:
    sys.exit(f"kustomization.yaml lists {sorted(listed)}, the folder has {sorted(present)}")
maps = []
for name in sorted(present):
    with open(os.path.join(folder, name)) as f:
        for doc in yaml.safe_load_all(f):
            if doc and doc.get("kind") == "ConfigMap" and "ballast.toml" in doc.get("data", {}):
                maps.append(doc["data"]["ballast.toml"])
if len(maps) != 1:
    sys.exit(f"want one ConfigMap with a ballast.toml, found {len(maps)}")
with open(out, "w") as f:
    f.write(maps[0])
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_packaged_config_sets_the_package_directories_in_the_default_profile() {
        let shipped =
            "# header\n[default]\nshutdown_timeout = \"10s\"\n\n[dev.monitor]\ninterval = \"1s\"\n";
        let packaged = packaged_config(shipped).unwrap();
        let parsed: toml::Table = packaged.parse().unwrap();
        let default = parsed["default"].as_table().unwrap();
        assert_eq!(default["plugin_dir"].as_str(), Some(PLUGIN_DIR));
        assert_eq!(default["data_dir"].as_str(), Some(DATA_DIR));
        assert_eq!(default["shutdown_timeout"].as_str(), Some("10s"));
        assert!(parsed["dev"]["monitor"].is_table());
        assert!(packaged.starts_with("# header\n[default]\n"));
    }

    #[test]
    fn the_packaged_config_refuses_a_file_it_cannot_place_its_directories_in() {
        let error = packaged_config("[dev]\nx = 1\n").unwrap_err().to_string();
        assert!(error.contains("no `[default]` table"), "{error}");
        let error = packaged_config("[default]\ndata_dir = \"/x\"\n")
            .unwrap_err()
            .to_string();
        assert!(error.contains("sets `data_dir` itself"), "{error}");
    }

    #[test]
    fn the_shipped_config_makes_a_valid_packaged_one() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let shipped = std::fs::read_to_string(root.join("config/ballast.toml")).unwrap();
        let packaged: toml::Table = packaged_config(&shipped).unwrap().parse().unwrap();
        assert_eq!(packaged["default"]["plugin_dir"].as_str(), Some(PLUGIN_DIR));
    }

    #[test]
    fn modes_are_read_from_listings() {
        assert_eq!(mode_bits("-rwxr-xr-x"), 0o755);
        assert_eq!(mode_bits("-rw-r--r--"), 0o644);
        assert_eq!(mode_bits("drwxr-x---"), 0o750);
    }
}
