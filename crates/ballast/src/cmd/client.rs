//! CLI commands that are clients of a running daemon's control API: `ballast status`, `ballast
//! plugins`, `ballast decisions`, `ballast events` (and `ballast plugin NAME ACTION`, in
//! `cmd::plugin`, built on the same [`Client`]).
//!
//! Each prints an aligned table or a few lines for people by default and the API's JSON with
//! `--json`. Each writes to a `dyn Write` so that tests can read what it printed.

pub mod format;
#[cfg(test)]
mod tests;

use std::io::{self, BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use serde::de::DeserializeOwned;
use serde_json::Value;

use ballast_api::views::{PluginView, StatusView};

pub use format::{format_decision, format_event, plugins_table, status_text};

/// The default address of the control API.
pub const DEFAULT_API: &str = "http://127.0.0.1:7878";

/// Where the daemon's control API is and how to authenticate to it.
#[derive(Clone, Debug, clap::Args)]
pub struct ApiArgs {
    /// The daemon's control API.
    #[arg(long, global = true, env = "BALLAST_API", default_value = DEFAULT_API, value_name = "URL")]
    pub api: String,
    /// A file holding the API's bearer token (needed when the daemon has `api.token_file`).
    #[arg(long, global = true, env = "BALLAST_TOKEN_FILE", value_name = "PATH")]
    pub token_file: Option<PathBuf>,
}

/// Arguments of `ballast status`.
#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    #[command(flatten)]
    api: ApiArgs,
    /// Print the API's JSON instead of text.
    #[arg(long)]
    json: bool,
}

/// Arguments of `ballast plugins`.
#[derive(Debug, clap::Args)]
pub struct PluginsArgs {
    #[command(flatten)]
    api: ApiArgs,
    /// Print the API's JSON instead of a table.
    #[arg(long)]
    json: bool,
}

/// Arguments of `ballast decisions`.
#[derive(Debug, clap::Args)]
pub struct DecisionsArgs {
    #[command(flatten)]
    api: ApiArgs,
    /// Print JSON (one decision per line with --follow) instead of text.
    #[arg(long)]
    json: bool,
    /// How many of the latest decisions to show.
    #[arg(long, default_value_t = 20, value_name = "N")]
    tail: usize,
    /// Keep printing new decisions and warnings as they are made (until interrupted).
    #[arg(long, short)]
    follow: bool,
}

/// Arguments of `ballast events`.
#[derive(Debug, clap::Args)]
pub struct EventsArgs {
    #[command(flatten)]
    api: ApiArgs,
    /// Print each event as one line of JSON instead of text.
    #[arg(long)]
    json: bool,
    /// Only these event types (sample, assessment, decision, warning, plugin, tier).
    #[arg(long, value_delimiter = ',', value_name = "TYPE,...")]
    types: Vec<String>,
}

/// A client of the control API.
pub struct Client {
    base: String,
    token: Option<String>,
    agent: ureq::Agent,
    stream_agent: ureq::Agent,
}

impl Client {
    /// A client for `args.api`, with the token from `args.token_file` if given.
    pub fn new(args: &ApiArgs) -> anyhow::Result<Client> {
        let token = match &args.token_file {
            Some(path) => Some(ballast_api::load_token(path)?),
            None => None,
        };
        let base = args.api.trim_end_matches('/').to_owned();
        if !base.starts_with("http://") {
            anyhow::bail!(
                "--api must be an http:// URL like {DEFAULT_API}, got `{}`",
                args.api
            );
        }
        let agent = |timeout: Option<Duration>| -> ureq::Agent {
            ureq::Agent::config_builder()
                .http_status_as_error(false)
                .timeout_connect(Some(Duration::from_secs(5)))
                .timeout_global(timeout)
                .build()
                .into()
        };
        Ok(Client {
            base,
            token,
            agent: agent(Some(Duration::from_secs(30))),
            stream_agent: agent(None),
        })
    }

    fn unreachable(&self, error: ureq::Error) -> anyhow::Error {
        let reason = match &error {
            ureq::Error::Io(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                "connection refused".to_owned()
            }
            ureq::Error::Io(e) => e.to_string(),
            ureq::Error::ConnectionFailed => "connection failed".to_owned(),
            ureq::Error::HostNotFound => "host not found".to_owned(),
            ureq::Error::Timeout(_) => "timed out".to_owned(),
            other => other.to_string(),
        };
        anyhow::anyhow!(
            "cannot reach the ballast daemon at {} ({reason}): is `ballast run` running?",
            self.base
        )
    }

    fn check(
        &self,
        method: &str,
        path: &str,
        response: ureq::http::Response<ureq::Body>,
    ) -> anyhow::Result<ureq::http::Response<ureq::Body>> {
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let text = response.into_body().read_to_string().unwrap_or_default();
        let message = serde_json::from_str::<Value>(&text)
            .ok()
            .and_then(|v| v["message"].as_str().map(str::to_owned))
            .unwrap_or_else(|| text.trim().to_owned());
        let hint = if status.as_u16() == 401 {
            " (pass --token-file or set BALLAST_TOKEN_FILE to the daemon's api.token_file)"
        } else {
            ""
        };
        anyhow::bail!(
            "{method} {path} failed with {}: {message}{hint}",
            status.as_u16()
        )
    }

    fn authorization(&self) -> Option<String> {
        self.token.as_ref().map(|t| format!("Bearer {t}"))
    }

    fn get_request(
        &self,
        agent: &ureq::Agent,
        path: &str,
    ) -> ureq::RequestBuilder<ureq::typestate::WithoutBody> {
        let request = agent.get(format!("{}{path}", self.base));
        match self.authorization() {
            Some(auth) => request.header("Authorization", auth),
            None => request,
        }
    }

    /// `GET path`, decoded from JSON.
    pub fn get<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        let response = self
            .get_request(&self.agent, path)
            .call()
            .map_err(|e| self.unreachable(e))?;
        let response = self.check("GET", path, response)?;
        response.into_body().read_json().with_context(|| {
            format!("the daemon's answer to GET {path} is not what this ballast expects")
        })
    }

    /// `GET path` as text, written to `out` as it arrives (a streaming answer, such as a followed
    /// log, is written until the daemon ends it or `out` fails).
    pub fn copy_text(&self, path: &str, follow: bool, out: &mut dyn Write) -> anyhow::Result<()> {
        let agent = if follow {
            &self.stream_agent
        } else {
            &self.agent
        };
        let response = self
            .get_request(agent, path)
            .call()
            .map_err(|e| self.unreachable(e))?;
        let response = self.check("GET", path, response)?;
        let mut reader = response.into_body().into_reader();
        let mut chunk = vec![0u8; 16 << 10];
        loop {
            let n = match std::io::Read::read(&mut reader, &mut chunk) {
                Ok(0) => return Ok(()),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e).context("the daemon's answer broke off"),
            };
            out.write_all(&chunk[..n])?;
            out.flush()?;
        }
    }

    /// `POST path` with a JSON body, decoded from JSON.
    pub fn post<T: DeserializeOwned>(&self, path: &str, body: &Value) -> anyhow::Result<T> {
        let mut request = self.agent.post(format!("{}{path}", self.base));
        if let Some(auth) = self.authorization() {
            request = request.header("Authorization", auth);
        }
        let response = request.send_json(body).map_err(|e| self.unreachable(e))?;
        let response = self.check("POST", path, response)?;
        response.into_body().read_json().with_context(|| {
            format!("the daemon's answer to POST {path} is not what this ballast expects")
        })
    }

    /// `POST path` with raw bytes (a plugin call), the response's body to read as it comes:
    /// `accept` says how (whole, or as an event stream), `headers` are sent as given, and the
    /// wait is unbounded unless `timeout` is given.
    pub fn call(
        &self,
        path: &str,
        body: &[u8],
        accept: &str,
        headers: &[(&str, String)],
        timeout: Option<Duration>,
    ) -> anyhow::Result<ureq::Body> {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(Duration::from_secs(5)))
            .timeout_global(timeout)
            .build()
            .into();
        let mut request = agent
            .post(format!("{}{path}", self.base))
            .header("Accept", accept)
            .header("Content-Type", "application/octet-stream");
        if let Some(auth) = self.authorization() {
            request = request.header("Authorization", auth);
        }
        for (name, value) in headers {
            request = request.header(*name, value);
        }
        let response = request.send(body).map_err(|e| self.unreachable(e))?;
        Ok(self.check("POST", path, response)?.into_body())
    }

    /// Follows the event stream at `path`, calling `on_event(type, data)` for each event until
    /// the stream ends or `on_event` returns false.
    pub fn follow(
        &self,
        path: &str,
        mut on_event: impl FnMut(&str, &str) -> anyhow::Result<bool>,
    ) -> anyhow::Result<()> {
        let response = self
            .get_request(&self.stream_agent, path)
            .call()
            .map_err(|e| self.unreachable(e))?;
        let response = self.check("GET", path, response)?;
        let reader = BufReader::new(response.into_body().into_reader());
        let mut event = String::new();
        let mut data = String::new();
        for line in reader.lines() {
            let line = line.context("the event stream broke off")?;
            if line.is_empty() {
                if !data.is_empty() && !on_event(&event, &data)? {
                    return Ok(());
                }
                event.clear();
                data.clear();
            } else if let Some(rest) = line.strip_prefix("event:") {
                event = rest.trim().to_owned();
            } else if let Some(rest) = line.strip_prefix("data:") {
                if !data.is_empty() {
                    data.push('\n');
                }
                data.push_str(rest.trim_start());
            }
            // Comment lines (`: keepalive`) and other fields are ignored.
        }
        Ok(())
    }
}

fn print_json(out: &mut dyn Write, value: &impl serde::Serialize) -> anyhow::Result<()> {
    writeln!(out, "{}", serde_json::to_string_pretty(value)?)?;
    Ok(())
}

/// Runs `ballast status`.
pub fn status(args: StatusArgs) -> anyhow::Result<ExitCode> {
    run_status(&args, &mut io::stdout().lock())
}

/// `ballast status`, printing to `out`.
pub fn run_status(args: &StatusArgs, out: &mut dyn Write) -> anyhow::Result<ExitCode> {
    let client = Client::new(&args.api)?;
    if args.json {
        let status: Value = client.get("/status")?;
        print_json(out, &status)?;
    } else {
        let status: StatusView = client.get("/status")?;
        write!(out, "{}", status_text(&status, now_ms()))?;
    }
    Ok(ExitCode::SUCCESS)
}

/// Runs `ballast plugins`.
pub fn plugins(args: PluginsArgs) -> anyhow::Result<ExitCode> {
    run_plugins(&args, &mut io::stdout().lock())
}

/// `ballast plugins`, printing to `out`.
pub fn run_plugins(args: &PluginsArgs, out: &mut dyn Write) -> anyhow::Result<ExitCode> {
    let client = Client::new(&args.api)?;
    if args.json {
        let plugins: Value = client.get("/plugins")?;
        print_json(out, &plugins)?;
    } else {
        let plugins: Vec<PluginView> = client.get("/plugins")?;
        write!(out, "{}", plugins_table(&plugins, now_ms()))?;
    }
    Ok(ExitCode::SUCCESS)
}

/// Runs `ballast decisions`.
pub fn decisions(args: DecisionsArgs) -> anyhow::Result<ExitCode> {
    run_decisions(&args, &mut io::stdout().lock())
}

/// `ballast decisions`, printing to `out`.
pub fn run_decisions(args: &DecisionsArgs, out: &mut dyn Write) -> anyhow::Result<ExitCode> {
    let client = Client::new(&args.api)?;
    let decisions: Vec<Value> = client.get(&format!("/decisions?tail={}", args.tail))?;
    if args.json && !args.follow {
        print_json(out, &decisions)?;
    } else {
        for decision in &decisions {
            if args.json {
                writeln!(out, "{decision}")?;
            } else {
                writeln!(out, "{}", format_decision(decision))?;
            }
        }
        if !args.follow && decisions.is_empty() && !args.json {
            writeln!(out, "no decisions yet")?;
        }
    }
    out.flush()?;
    if args.follow {
        client.follow("/events?types=decision,warning", |_kind, data| {
            if args.json {
                writeln!(out, "{data}")?;
            } else {
                let event: Value = serde_json::from_str(data).with_context(|| {
                    format!("the daemon sent an event that is not JSON: {data}")
                })?;
                writeln!(out, "{}", format_decision(&event))?;
            }
            out.flush()?;
            Ok(true)
        })?;
    }
    Ok(ExitCode::SUCCESS)
}

/// Runs `ballast events`.
pub fn events(args: EventsArgs) -> anyhow::Result<ExitCode> {
    run_events(&args, &mut io::stdout().lock(), |_| true)
}

/// `ballast events`, printing to `out` while `more(events printed so far)` says to go on.
pub fn run_events(
    args: &EventsArgs,
    out: &mut dyn Write,
    mut more: impl FnMut(usize) -> bool,
) -> anyhow::Result<ExitCode> {
    let client = Client::new(&args.api)?;
    let mut path = "/events".to_owned();
    if !args.types.is_empty() {
        path = format!("/events?types={}", args.types.join(","));
    }
    let mut printed = 0;
    client.follow(&path, |kind, data| {
        if args.json {
            writeln!(out, "{data}")?;
        } else {
            let event: Value = serde_json::from_str(data)
                .with_context(|| format!("the daemon sent an event that is not JSON: {data}"))?;
            writeln!(out, "{}", format_event(kind, &event))?;
        }
        out.flush()?;
        printed += 1;
        Ok(more(printed))
    })?;
    Ok(ExitCode::SUCCESS)
}

/// Now in milliseconds since the epoch, for "5m ago".
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}
