//! `ballast plugin NAME call`: a call to a running daemon's plugin, its answer written to
//! standard output whole, or chunk by chunk as the plugin streams it (`--stream`).

use std::io::{BufRead, BufReader, Read, Write};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use base64::Engine as _;
use serde_json::Value;

use crate::cmd::client::Client;

/// The exit status of a call that ran out of time, as `timeout(1)` has it.
const EXIT_DEADLINE: u8 = 124;

/// The options of `ballast plugin NAME call`.
#[derive(Debug, clap::Args)]
pub struct CallArgs {
    /// The request: this text, or `-` to read it from standard input; empty when left out.
    pub data: Option<String>,
    /// Write each chunk as the plugin sends it, instead of the whole answer at the end.
    #[arg(long)]
    pub stream: bool,
    /// The call's deadline (e.g. 500ms, 5s), capped by the plugin's `call_timeout`; past it the
    /// call is cancelled and the command exits 124.
    #[arg(long, value_name = "DURATION", value_parser = parse_timeout)]
    pub timeout: Option<Duration>,
    /// Who is calling, for the per-caller tallies (1 to 64 letters, digits or -_.:@/).
    #[arg(long)]
    pub caller: Option<String>,
}

fn parse_timeout(text: &str) -> Result<Duration, String> {
    match humantime::parse_duration(text) {
        Ok(d) if d.is_zero() => Err("the timeout must be longer than zero".to_owned()),
        Ok(d) => Ok(d),
        Err(e) => Err(format!("{e}; write it like 500ms, 5s or 1m")),
    }
}

/// Runs the call: the request from `args` (or `input` for `-`), the answer to `out`, what went
/// wrong after the answer began to `err`. With `json`, a streamed answer is written as one JSON
/// object per event instead of its bytes.
pub fn run(
    client: &Client,
    name: &str,
    args: &CallArgs,
    json: bool,
    input: &mut dyn Read,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> anyhow::Result<ExitCode> {
    let request = match args.data.as_deref() {
        Some("-") => {
            let mut bytes = Vec::new();
            input
                .read_to_end(&mut bytes)
                .context("cannot read the request from standard input")?;
            bytes
        }
        Some(text) => text.as_bytes().to_vec(),
        None => Vec::new(),
    };
    let mut headers = Vec::new();
    if let Some(timeout) = args.timeout {
        headers.push((
            ballast_api::DEADLINE_HEADER,
            timeout.as_millis().to_string(),
        ));
    }
    if let Some(caller) = &args.caller {
        headers.push((ballast_api::CALLER_HEADER, caller.clone()));
    }
    // The daemon answers within the deadline; a little more for the answer to travel.
    let wait = args.timeout.map(|t| t + Duration::from_secs(5));
    let path = format!("/plugins/{name}/call");
    let accept = if args.stream {
        "text/event-stream"
    } else {
        "*/*"
    };
    let body = match client.call(&path, &request, accept, &headers, wait) {
        Ok(body) => body,
        // A deadline that passed before the answer began is a 504: the same exit as after.
        Err(error) if error.to_string().contains(" failed with 504: ") => {
            writeln!(err, "error: {error:#}")?;
            return Ok(ExitCode::from(EXIT_DEADLINE));
        }
        Err(error) => return Err(error),
    };
    if !args.stream {
        let mut reader = body.into_reader();
        std::io::copy(&mut reader, out).context("the daemon's answer broke off")?;
        out.flush()?;
        return Ok(ExitCode::SUCCESS);
    }
    let mut events = Events::new(BufReader::new(body.into_reader()));
    let mut chunks = 0u64;
    while let Some(event) = events.next().context("the call's stream broke off")? {
        match event.kind.as_str() {
            "chunk" | "chunk-base64" => {
                let bytes = if event.kind == "chunk" {
                    event.data.into_bytes()
                } else {
                    base64::engine::general_purpose::STANDARD
                        .decode(event.data.trim())
                        .context("the daemon sent a chunk that is not base64")?
                };
                chunks += 1;
                if json {
                    let line = match String::from_utf8(bytes) {
                        Ok(text) => serde_json::json!({ "event": "chunk", "text": text }),
                        Err(e) => serde_json::json!({
                            "event": "chunk",
                            "base64": base64::engine::general_purpose::STANDARD.encode(e.as_bytes()),
                        }),
                    };
                    writeln!(out, "{line}")?;
                } else {
                    out.write_all(&bytes)?;
                }
                out.flush()?;
            }
            "end" => {
                let end: Value = serde_json::from_str(&event.data)
                    .context("the daemon's end event is not JSON")?;
                if json {
                    let mut line = end.clone();
                    line["event"] = "end".into();
                    writeln!(out, "{line}")?;
                    out.flush()?;
                }
                let outcome = end["outcome"].as_str().unwrap_or("error");
                if outcome == "done" {
                    return Ok(ExitCode::SUCCESS);
                }
                let message = end["error"]["message"]
                    .as_str()
                    .unwrap_or("no reason given");
                writeln!(
                    err,
                    "ballast: the call to `{name}` ended {outcome} after {chunks} chunks: {message}"
                )?;
                return Ok(ExitCode::from(if outcome == "deadline" {
                    EXIT_DEADLINE
                } else {
                    1
                }));
            }
            // Comments and events of later versions are skipped.
            _ => {}
        }
    }
    anyhow::bail!("the call's stream ended after {chunks} chunks without saying how the call ended")
}

/// One server-sent event.
#[derive(Debug, PartialEq, Eq)]
struct Event {
    kind: String,
    data: String,
}

/// Server-sent events read from a stream, as the event-stream format has them: `field: value`
/// lines (one space after the colon dropped), `data` lines joined with newlines, a blank line
/// ends an event.
struct Events<R> {
    reader: R,
}

impl<R: BufRead> Events<R> {
    fn new(reader: R) -> Self {
        Events { reader }
    }

    fn next(&mut self) -> std::io::Result<Option<Event>> {
        let mut kind = String::new();
        let mut data: Option<String> = None;
        let mut line = Vec::new();
        loop {
            line.clear();
            if self.reader.read_until(b'\n', &mut line)? == 0 {
                return Ok(None);
            }
            let text = String::from_utf8_lossy(&line);
            let text = text.strip_suffix('\n').unwrap_or(&text);
            let text = text.strip_suffix('\r').unwrap_or(text);
            if text.is_empty() {
                if let Some(data) = data.take() {
                    let kind = if kind.is_empty() {
                        "message".to_owned()
                    } else {
                        kind
                    };
                    return Ok(Some(Event { kind, data }));
                }
                kind.clear();
                continue;
            }
            let (field, value) = text.split_once(':').unwrap_or((text, ""));
            let value = value.strip_prefix(' ').unwrap_or(value);
            match field {
                "event" => kind = value.to_owned(),
                "data" => match &mut data {
                    Some(data) => {
                        data.push('\n');
                        data.push_str(value);
                    }
                    None => data = Some(value.to_owned()),
                },
                _ => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_keep_their_spaces_and_join_their_data_lines() {
        let text = ": comment\nid: 1\nevent: chunk\ndata:  two spaces\ndata: b\n\nevent: end\ndata: {}\n\n";
        let mut events = Events::new(text.as_bytes());
        assert_eq!(
            events.next().unwrap(),
            Some(Event {
                kind: "chunk".into(),
                data: " two spaces\nb".into()
            })
        );
        assert_eq!(
            events.next().unwrap(),
            Some(Event {
                kind: "end".into(),
                data: "{}".into()
            })
        );
        assert_eq!(events.next().unwrap(), None);
    }

    #[test]
    fn an_empty_data_line_is_an_empty_chunk() {
        let mut events = Events::new("event: chunk\ndata: \n\n".as_bytes());
        assert_eq!(
            events.next().unwrap(),
            Some(Event {
                kind: "chunk".into(),
                data: String::new()
            })
        );
    }
}
