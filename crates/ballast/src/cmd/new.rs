//! `ballast plugin new NAME --lang rust|c|python`: writes a standalone plugin project from the
//! templates under `crates/ballast/templates/`, which are embedded in the binary (with the C
//! header and the Python SDK package), so that it works anywhere, outside this repository too.
//!
//! A template is text with `{{key}}` placeholders: `name` (the plugin's name as the config
//! names it), `package` and `ident` (a Cargo package name and an identifier derived from it),
//! `type` (a Rust type name), `sdk_source` and `sdk_note` (where the Rust project's `ballast-sdk`
//! comes from, and a README paragraph saying so), `abi` and `version`. Any other text, `{{` in a
//! Python f-string for one, is left alone.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};

/// Arguments of `ballast plugin new`.
#[derive(Debug, clap::Args)]
pub struct NewArgs {
    /// The plugin's name, as the ballast config will name it: letters, digits, `-` and `_`.
    name: String,
    /// The project's language.
    #[arg(long, value_enum)]
    lang: Lang,
    /// The directory to write the project into (default: ./NAME). It must not exist yet, or be
    /// empty.
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
    /// For `--lang rust`: the ballast-sdk crate to depend on by path (the directory holding its
    /// Cargo.toml). Default: the source this `ballast` was built from when it is still there,
    /// else the registry version.
    #[arg(long, value_name = "PATH")]
    sdk: Option<PathBuf>,
}

/// A project's language.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Lang {
    /// A `cdylib` on ballast-sdk.
    Rust,
    /// A shared library on the C header.
    C,
    /// A process plugin on the `ballast_plugin` package.
    Python,
}

impl Lang {
    fn as_str(self) -> &'static str {
        match self {
            Lang::Rust => "rust",
            Lang::C => "c",
            Lang::Python => "python",
        }
    }
}

/// One file of a template: where it goes in the project, its text, and whether placeholders in
/// it are filled in (the C header and the SDK package are copied as they are).
struct TemplateFile {
    path: &'static str,
    text: &'static str,
    render: bool,
}

const fn rendered(path: &'static str, text: &'static str) -> TemplateFile {
    TemplateFile {
        path,
        text,
        render: true,
    }
}

const fn verbatim(path: &'static str, text: &'static str) -> TemplateFile {
    TemplateFile {
        path,
        text,
        render: false,
    }
}

const RUST: &[TemplateFile] = &[
    rendered(
        "Cargo.toml",
        include_str!("../../templates/rust/Cargo.toml.tmpl"),
    ),
    rendered(
        "src/lib.rs",
        include_str!("../../templates/rust/src/lib.rs"),
    ),
    rendered(
        "ballast.toml",
        include_str!("../../templates/rust/ballast.toml"),
    ),
    rendered("README.md", include_str!("../../templates/rust/README.md")),
    rendered(".gitignore", include_str!("../../templates/rust/gitignore")),
];

const C: &[TemplateFile] = &[
    rendered("plugin.c", include_str!("../../templates/c/plugin.c")),
    rendered("test.c", include_str!("../../templates/c/test.c")),
    verbatim(
        "ballast_plugin.h",
        include_str!("../../../ballast-abi/include/ballast_plugin.h"),
    ),
    rendered("Makefile", include_str!("../../templates/c/Makefile")),
    rendered(
        "ballast.toml",
        include_str!("../../templates/c/ballast.toml"),
    ),
    rendered("README.md", include_str!("../../templates/c/README.md")),
    rendered(".gitignore", include_str!("../../templates/c/gitignore")),
];

/// The files of the Python SDK package, copied into every Python project (a test checks that
/// this list is the package's whole directory).
const PYTHON_SDK: &[TemplateFile] = &[
    verbatim(
        "ballast_plugin/__init__.py",
        include_str!("../../../../sdk/python/ballast_plugin/__init__.py"),
    ),
    verbatim(
        "ballast_plugin/py.typed",
        include_str!("../../../../sdk/python/ballast_plugin/py.typed"),
    ),
];

const PYTHON: &[TemplateFile] = &[
    rendered(
        "plugin.py",
        include_str!("../../templates/python/plugin.py"),
    ),
    rendered(
        "ballast.toml",
        include_str!("../../templates/python/ballast.toml"),
    ),
    rendered(
        "README.md",
        include_str!("../../templates/python/README.md"),
    ),
];

/// The subcommands of `ballast plugin`: a plugin named like one could not be reached by
/// `ballast plugin NAME ACTION`.
const PLUGIN_SUBCOMMANDS: [&str; 4] = ["inspect", "new", "check", "help"];

/// The longest plugin name the daemon accepts.
const MAX_NAME_LEN: usize = 64;

/// Rust's keywords (strict, reserved and 2024's `gen`) and the crate names Cargo refuses.
const RUST_RESERVED: [&str; 56] = [
    "as",
    "async",
    "await",
    "break",
    "const",
    "continue",
    "crate",
    "dyn",
    "else",
    "enum",
    "extern",
    "false",
    "fn",
    "for",
    "if",
    "impl",
    "in",
    "let",
    "loop",
    "match",
    "mod",
    "move",
    "mut",
    "pub",
    "ref",
    "return",
    "self",
    "static",
    "struct",
    "super",
    "trait",
    "true",
    "type",
    "unsafe",
    "use",
    "where",
    "while",
    "abstract",
    "become",
    "box",
    "do",
    "final",
    "macro",
    "override",
    "priv",
    "typeof",
    "unsized",
    "virtual",
    "yield",
    "try",
    "gen",
    "std",
    "core",
    "alloc",
    "proc_macro",
    "test",
];

/// Names the Rust template already uses, which the plugin's type must not take.
const RUST_TEMPLATE_NAMES: [&str; 12] = [
    "Plugin",
    "PluginInfo",
    "PluginError",
    "CreateContext",
    "CallContext",
    "LevelInfo",
    "VecDeque",
    "Mutex",
    "AtomicU64",
    "Ordering",
    "Duration",
    "Self",
];

/// Checks `name` as the daemon checks a plugin's name, and that `ballast plugin NAME ...` can
/// reach it.
fn check_name(name: &str) -> anyhow::Result<()> {
    if name.is_empty() {
        bail!("the plugin name is empty");
    }
    if name.len() > MAX_NAME_LEN {
        bail!(
            "the plugin name `{name}` is {} bytes long; the most is {MAX_NAME_LEN}",
            name.len()
        );
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_'))
    {
        bail!("`{name}` is not a plugin name: it contains `{c}`; use letters, digits, `-` and `_`");
    }
    if PLUGIN_SUBCOMMANDS.contains(&name) {
        bail!(
            "`{name}` is a subcommand of `ballast plugin`, so `ballast plugin {name} ...` could not reach a plugin of that name; choose another name"
        );
    }
    Ok(())
}

/// The identifiers derived from a valid plugin name.
#[derive(Debug, PartialEq, Eq)]
struct Names {
    /// The Cargo package name.
    package: String,
    /// The library's name (`lib<ident>.so`) and Rust crate name: letters, digits and `_`,
    /// starting with a letter, no keyword.
    ident: String,
    /// The Rust type of the plugin: CamelCase, starting with a letter, not a name the template
    /// uses.
    type_name: String,
}

fn names(name: &str) -> Names {
    let mut ident = name.replace('-', "_");
    if !ident.starts_with(|c: char| c.is_ascii_alphabetic()) {
        ident.insert_str(0, "plugin_");
    }
    if RUST_RESERVED.contains(&ident.as_str()) {
        ident.push_str("_plugin");
    }
    let package = if name.starts_with(|c: char| c.is_ascii_alphabetic())
        && !RUST_RESERVED.contains(&name.replace('-', "_").as_str())
    {
        name.to_owned()
    } else {
        ident.clone()
    };
    let mut type_name: String = name
        .split(['-', '_'])
        .filter(|part| !part.is_empty())
        .map(|part| {
            let mut chars = part.chars();
            chars
                .next()
                .map(|first| first.to_ascii_uppercase().to_string() + chars.as_str())
                .unwrap_or_default()
        })
        .collect();
    if !type_name.starts_with(|c: char| c.is_ascii_alphabetic()) {
        type_name.insert_str(0, "Plugin");
    }
    if RUST_TEMPLATE_NAMES.contains(&type_name.as_str()) {
        type_name.push_str("Plugin");
    }
    Names {
        package,
        ident,
        type_name,
    }
}

/// Where a Rust project's `ballast-sdk` comes from.
#[derive(Debug, PartialEq, Eq)]
enum Sdk {
    /// A path dependency: the source this binary was built from, or `--sdk`.
    Path { path: PathBuf, given: bool },
    /// The registry version, because the source this binary was built from is gone.
    Registry { looked_at: PathBuf },
}

/// The SDK source this binary was built from, where it was at build time.
fn built_from() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../ballast-sdk")
}

/// Whether `dir` holds the ballast-sdk crate.
fn is_sdk(dir: &Path) -> bool {
    std::fs::read_to_string(dir.join("Cargo.toml")).is_ok_and(|manifest| {
        manifest
            .lines()
            .any(|line| line.replace(' ', "") == "name=\"ballast-sdk\"")
    })
}

/// Chooses the SDK: `--sdk` when given (it must hold the crate), else the source this binary
/// was built from when it is still at `built_from`, else the registry.
fn choose_sdk(given: Option<&Path>, built_from: &Path) -> anyhow::Result<Sdk> {
    if let Some(path) = given {
        let path = std::fs::canonicalize(path)
            .with_context(|| format!("--sdk {}: cannot read it", path.display()))?;
        if !is_sdk(&path) {
            bail!(
                "--sdk {}: no ballast-sdk crate there (its Cargo.toml should say name = \"ballast-sdk\"); give the directory crates/ballast-sdk of a ballast checkout",
                path.display()
            );
        }
        return Ok(Sdk::Path { path, given: true });
    }
    match std::fs::canonicalize(built_from) {
        Ok(path) if is_sdk(&path) => Ok(Sdk::Path { path, given: false }),
        _ => Ok(Sdk::Registry {
            looked_at: built_from.to_owned(),
        }),
    }
}

/// `text` as a TOML basic string.
fn toml_string(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

impl Sdk {
    /// The dependency's source, as the inside of an inline table.
    fn source(&self) -> anyhow::Result<String> {
        match self {
            Sdk::Path { path, .. } => {
                let Some(text) = path.to_str() else {
                    bail!(
                        "the ballast-sdk path {} is not UTF-8, which Cargo.toml cannot hold; move it or pass --sdk",
                        path.display()
                    );
                };
                Ok(format!("path = {}", toml_string(text)))
            }
            Sdk::Registry { .. } => Ok(format!("version = \"{}\"", env!("CARGO_PKG_VERSION"))),
        }
    }

    /// The README's paragraph about it.
    fn note(&self) -> String {
        let version = env!("CARGO_PKG_VERSION");
        match self {
            Sdk::Path { path, given: false } => format!(
                "`Cargo.toml` depends on ballast-sdk by path, on the source this `ballast` was built from:\n`{}`. The SDK is not published on a registry yet: to build this project elsewhere, point\nboth `ballast-sdk` entries at a checkout of ballast's `crates/ballast-sdk`, or generate it again\nthere with `ballast plugin new --sdk PATH`.",
                path.display()
            ),
            Sdk::Path { path, given: true } => format!(
                "`Cargo.toml` depends on ballast-sdk by path, on `{}` (chosen with `--sdk`).",
                path.display()
            ),
            Sdk::Registry { looked_at } => format!(
                "`Cargo.toml` depends on ballast-sdk {version} from the registry, because the source this\n`ballast` was built from is no longer at `{}`. The SDK is not published yet: until it is,\npoint both `ballast-sdk` entries at a checkout of ballast,\n`ballast-sdk = {{ path = \".../crates/ballast-sdk\" }}`, or generate the project again with\n`ballast plugin new --sdk PATH`.",
                looked_at.display()
            ),
        }
    }

    /// One line for the terminal.
    fn summary(&self) -> String {
        match self {
            Sdk::Path { path, given: false } => format!(
                "by path, {} (the source this ballast was built from)",
                path.display()
            ),
            Sdk::Path { path, given: true } => format!("by path, {} (--sdk)", path.display()),
            Sdk::Registry { looked_at } => format!(
                "version {} from the registry (no source at {}; it is not published yet, see README.md)",
                env!("CARGO_PKG_VERSION"),
                looked_at.display()
            ),
        }
    }
}

/// Fills in `{{key}}` for every key of `vars`, leaving any other text as it is.
fn render(text: &str, vars: &[(&str, &str)]) -> String {
    let mut out = text.to_owned();
    for (key, value) in vars {
        out = out.replace(&format!("{{{{{key}}}}}"), value);
    }
    out
}

/// The files of a `lang` project for the plugin `name`, rendered: paths relative to the
/// project's directory, and their contents.
fn project(
    name: &str,
    lang: Lang,
    sdk: Option<&Sdk>,
) -> anyhow::Result<Vec<(&'static str, String)>> {
    check_name(name)?;
    let names = names(name);
    let (sdk_source, sdk_note) = match sdk {
        Some(sdk) => (sdk.source()?, sdk.note()),
        None => (String::new(), String::new()),
    };
    let abi = format!(
        "{}.{}",
        ballast_abi::BALLAST_ABI_MAJOR,
        ballast_abi::BALLAST_ABI_MINOR
    );
    let vars = [
        ("name", name),
        ("package", names.package.as_str()),
        ("ident", names.ident.as_str()),
        ("type", names.type_name.as_str()),
        ("sdk_source", sdk_source.as_str()),
        ("sdk_note", sdk_note.as_str()),
        ("abi", abi.as_str()),
        ("version", env!("CARGO_PKG_VERSION")),
    ];
    let files: Vec<&TemplateFile> = match lang {
        Lang::Rust => RUST.iter().collect(),
        Lang::C => C.iter().collect(),
        Lang::Python => PYTHON.iter().chain(PYTHON_SDK).collect(),
    };
    Ok(files
        .into_iter()
        .map(|file| {
            let text = if file.render {
                render(file.text, &vars)
            } else {
                file.text.to_owned()
            };
            (file.path, text)
        })
        .collect())
}

/// Makes `dir` for a new project: it must not exist, or be an empty directory. Returns whether
/// it was created (and may be removed again if writing fails).
fn prepare_dir(dir: &Path) -> anyhow::Result<bool> {
    match std::fs::read_dir(dir) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                bail!(
                    "{} already exists and is not empty; choose another --dir, or remove it",
                    dir.display()
                );
            }
            Ok(false)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
            Ok(true)
        }
        Err(_) if dir.exists() => bail!(
            "{} already exists and is not a directory; choose another --dir",
            dir.display()
        ),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", dir.display())),
    }
}

/// Writes `files` under `dir`.
fn write_files(dir: &Path, files: &[(&str, String)]) -> anyhow::Result<()> {
    for (path, text) in files {
        let target = dir.join(path);
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("cannot create {}", parent.display()))?;
        }
        std::fs::write(&target, text)
            .with_context(|| format!("cannot write {}", target.display()))?;
    }
    Ok(())
}

/// Runs `ballast plugin new`, telling `out` what it wrote and what to run next.
pub fn run(args: NewArgs, out: &mut dyn Write) -> anyhow::Result<ExitCode> {
    check_name(&args.name)?;
    if args.sdk.is_some() && args.lang != Lang::Rust {
        bail!(
            "--sdk is for --lang rust; a {} project needs no SDK crate",
            args.lang.as_str()
        );
    }
    let sdk = match args.lang {
        Lang::Rust => Some(choose_sdk(args.sdk.as_deref(), &built_from())?),
        Lang::C | Lang::Python => None,
    };
    let files = project(&args.name, args.lang, sdk.as_ref())?;
    let dir = args.dir.unwrap_or_else(|| PathBuf::from(&args.name));
    let created = prepare_dir(&dir)?;
    if let Err(error) = write_files(&dir, &files) {
        if created {
            let _ = std::fs::remove_dir_all(&dir);
        }
        return Err(error);
    }
    let name = &args.name;
    let ident = names(name).ident;
    let shown = dir.display();
    writeln!(
        out,
        "created the {} plugin `{name}` in {shown}",
        args.lang.as_str()
    )?;
    let paths: Vec<&str> = files.iter().map(|(path, _)| *path).collect();
    writeln!(out, "  {}", paths.join("  "))?;
    if let Some(sdk) = &sdk {
        writeln!(out, "ballast-sdk: {}", sdk.summary())?;
    }
    writeln!(out, "next, in {shown}:")?;
    let steps: &[String] = &match args.lang {
        Lang::Rust => vec![
            "cargo test                     # its unit tests, on the SDK's TestHost".to_owned(),
            "cargo build".to_owned(),
            format!("ballast plugin inspect target/debug/lib{ident}.so"),
            "ballast run --config ballast.toml".to_owned(),
        ],
        Lang::C => vec![
            "make test                      # its tests, through its entry point".to_owned(),
            "make".to_owned(),
            format!("ballast plugin inspect lib{ident}.so"),
            "ballast run --config ballast.toml".to_owned(),
        ],
        Lang::Python => vec!["ballast run --config ballast.toml".to_owned()],
    };
    for step in steps {
        writeln!(out, "  {step}")?;
    }
    writeln!(
        out,
        "  ballast plugin {name} call world   # from another terminal"
    )?;
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registry() -> Sdk {
        Sdk::Registry {
            looked_at: PathBuf::from("/gone/crates/ballast-sdk"),
        }
    }

    #[test]
    fn names_that_the_daemon_or_the_cli_would_refuse_are_refused() {
        let error = |name: &str| check_name(name).unwrap_err().to_string();
        assert_eq!(error(""), "the plugin name is empty");
        assert_eq!(
            error("my plugin"),
            "`my plugin` is not a plugin name: it contains ` `; use letters, digits, `-` and `_`"
        );
        assert_eq!(
            error("wetter.de"),
            "`wetter.de` is not a plugin name: it contains `.`; use letters, digits, `-` and `_`"
        );
        assert!(error(&"x".repeat(65)).contains("is 65 bytes long; the most is 64"));
        assert!(error("new").starts_with("`new` is a subcommand of `ballast plugin`"));
        for good in ["weather", "my-plugin", "a_b", "42", "x"] {
            check_name(good).unwrap();
        }
    }

    #[test]
    fn identifiers_are_derived_for_every_valid_name() {
        let check = |name: &str, package: &str, ident: &str, type_name: &str| {
            assert_eq!(
                names(name),
                Names {
                    package: package.to_owned(),
                    ident: ident.to_owned(),
                    type_name: type_name.to_owned(),
                },
                "{name}"
            );
        };
        check("weather", "weather", "weather", "Weather");
        check("my-plugin", "my-plugin", "my_plugin", "MyPlugin");
        check(
            "home_assistant",
            "home_assistant",
            "home_assistant",
            "HomeAssistant",
        );
        check("42", "plugin_42", "plugin_42", "Plugin42");
        check("-x", "plugin__x", "plugin__x", "X");
        check("fn", "fn_plugin", "fn_plugin", "Fn");
        check("test", "test_plugin", "test_plugin", "Test");
        check("self", "self_plugin", "self_plugin", "SelfPlugin");
        check("plugin", "plugin", "plugin", "PluginPlugin");
        check("mutex", "mutex", "mutex", "MutexPlugin");
    }

    #[test]
    fn rust_and_c_templates_leave_no_placeholder_behind() {
        for lang in [Lang::Rust, Lang::C] {
            for (path, text) in project("my-plugin", lang, Some(&registry())).unwrap() {
                assert!(!text.contains("{{"), "{lang:?} {path}: {text}");
            }
        }
        for (path, text) in project("my-plugin", Lang::Python, None).unwrap() {
            assert!(!text.contains("{{name}}"), "python {path}");
        }
    }

    #[test]
    fn a_rust_project_names_its_sdk_and_its_library() {
        let sdk = Sdk::Path {
            path: PathBuf::from("/src/ballast \"x\"/crates/ballast-sdk"),
            given: true,
        };
        let files = project("my-plugin", Lang::Rust, Some(&sdk)).unwrap();
        let file = |name: &str| &files.iter().find(|(path, _)| *path == name).unwrap().1;
        let manifest = file("Cargo.toml");
        assert!(manifest.contains("name = \"my-plugin\""));
        assert!(manifest.contains("name = \"my_plugin\"\n"));
        assert!(manifest.contains("crate-type = [\"cdylib\"]"));
        assert!(manifest.contains("\n[workspace]\n"));
        assert!(
            manifest.contains(
                r#"ballast-sdk = { path = "/src/ballast \"x\"/crates/ballast-sdk", features = ["testing"] }"#
            ),
            "{manifest}"
        );
        let lib = file("src/lib.rs");
        assert!(lib.contains("pub struct MyPlugin {"));
        assert!(lib.contains("name: \"my-plugin\","));
        assert!(lib.contains("export_plugin!(MyPlugin);"));
        assert!(file("ballast.toml").contains("path = \"libmy_plugin.so\""));
        assert!(file("README.md").contains("(chosen with `--sdk`)"));

        let files = project("my-plugin", Lang::Rust, Some(&registry())).unwrap();
        let file = |name: &str| &files.iter().find(|(path, _)| *path == name).unwrap().1;
        assert!(file("Cargo.toml").contains(&format!(
            "ballast-sdk = {{ version = \"{}\" }}",
            env!("CARGO_PKG_VERSION")
        )));
        assert!(file("README.md").contains("from the registry"));
    }

    #[test]
    fn a_c_project_carries_the_header_as_it_is() {
        let files = project("clock2", Lang::C, None).unwrap();
        let header = &files
            .iter()
            .find(|(path, _)| *path == "ballast_plugin.h")
            .unwrap()
            .1;
        let source =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../ballast-abi/include/ballast_plugin.h");
        assert_eq!(header, &std::fs::read_to_string(source).unwrap());
        let plugin = &files
            .iter()
            .find(|(path, _)| *path == "plugin.c")
            .unwrap()
            .1;
        assert!(plugin.contains("#define PLUGIN_NAME \"clock2\""));
        let abi = format!(
            "c-header-{}.{}",
            ballast_abi::BALLAST_ABI_MAJOR,
            ballast_abi::BALLAST_ABI_MINOR
        );
        assert!(plugin.contains(&abi));
    }

    #[test]
    fn the_python_project_carries_the_whole_sdk_package() {
        let package = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../sdk/python/ballast_plugin");
        let mut on_disk: Vec<String> = std::fs::read_dir(&package)
            .unwrap()
            .flatten()
            .filter(|e| e.path().is_file())
            .map(|e| format!("ballast_plugin/{}", e.file_name().to_string_lossy()))
            .filter(|name| !name.ends_with(".pyc"))
            .collect();
        on_disk.sort();
        let mut embedded: Vec<String> = PYTHON_SDK.iter().map(|f| f.path.to_owned()).collect();
        embedded.sort();
        assert_eq!(
            embedded, on_disk,
            "PYTHON_SDK in cmd/new.rs must list every file of sdk/python/ballast_plugin"
        );
    }

    #[test]
    fn the_sdk_is_the_given_path_the_built_from_source_or_the_registry() {
        let built_from = built_from();
        assert!(
            matches!(
                choose_sdk(None, &built_from).unwrap(),
                Sdk::Path { given: false, .. }
            ),
            "this checkout has the SDK's source"
        );
        let gone = Path::new("/nonexistent/crates/ballast-sdk");
        assert_eq!(
            choose_sdk(None, gone).unwrap(),
            Sdk::Registry {
                looked_at: gone.to_owned()
            }
        );
        let given = choose_sdk(Some(&built_from), gone).unwrap();
        assert!(matches!(given, Sdk::Path { given: true, .. }), "{given:?}");

        let elsewhere = tempfile::tempdir().unwrap();
        let error = choose_sdk(Some(elsewhere.path()), gone)
            .unwrap_err()
            .to_string();
        assert!(error.contains("no ballast-sdk crate there"), "{error}");
        let error = choose_sdk(Some(Path::new("/nonexistent")), gone)
            .unwrap_err()
            .to_string();
        assert_eq!(error, "--sdk /nonexistent: cannot read it");
    }

    #[test]
    fn a_project_goes_only_into_a_new_or_empty_directory() {
        let parent = tempfile::tempdir().unwrap();
        let run_in = |dir: &Path, lang: Lang| {
            let args = NewArgs {
                name: "weather".to_owned(),
                lang,
                dir: Some(dir.to_owned()),
                sdk: None,
            };
            let mut out = Vec::new();
            run(args, &mut out).map(|_| String::from_utf8(out).unwrap())
        };
        let fresh = parent.path().join("a/weather");
        let told = run_in(&fresh, Lang::C).unwrap();
        assert!(told.starts_with(&format!(
            "created the c plugin `weather` in {}\n",
            fresh.display()
        )));
        assert!(
            told.contains("ballast plugin inspect libweather.so"),
            "{told}"
        );
        for file in [
            "plugin.c",
            "test.c",
            "ballast_plugin.h",
            "Makefile",
            "ballast.toml",
            ".gitignore",
        ] {
            assert!(fresh.join(file).is_file(), "{file}");
        }

        let error = run_in(&fresh, Lang::Rust).unwrap_err().to_string();
        assert_eq!(
            error,
            format!(
                "{} already exists and is not empty; choose another --dir, or remove it",
                fresh.display()
            )
        );
        // Nothing was overwritten.
        assert!(!fresh.join("Cargo.toml").exists());

        let empty = parent.path().join("empty");
        std::fs::create_dir(&empty).unwrap();
        let told = run_in(&empty, Lang::Rust).unwrap();
        assert!(told.contains("ballast-sdk: by path"), "{told}");
        assert!(empty.join("src/lib.rs").is_file());

        let file = parent.path().join("file");
        std::fs::write(&file, "").unwrap();
        let error = run_in(&file, Lang::Python).unwrap_err().to_string();
        assert!(error.ends_with("already exists and is not a directory; choose another --dir"));
    }

    #[test]
    fn sdk_is_only_for_rust() {
        let args = NewArgs {
            name: "weather".to_owned(),
            lang: Lang::C,
            dir: Some(PathBuf::from("/nonexistent/weather")),
            sdk: Some(PathBuf::from("/somewhere")),
        };
        let error = run(args, &mut Vec::new()).unwrap_err().to_string();
        assert_eq!(
            error,
            "--sdk is for --lang rust; a c project needs no SDK crate"
        );
    }

    #[test]
    fn toml_strings_are_escaped() {
        assert_eq!(toml_string(r#"a"b\c"#), r#""a\"b\\c""#);
        assert_eq!(toml_string("tab\there"), r#""tab\u0009here""#);
    }
}
