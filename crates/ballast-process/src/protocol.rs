//! The control protocol between the host and a process plugin: one JSON object per line, the
//! host's messages on the plugin's stdin, the plugin's on its stdout. Parsing is a pure function
//! of the line's bytes that never panics; the [`LineBuffer`] cuts a byte stream into lines and
//! refuses over-long ones.
//!
//! The crate documentation describes the protocol for plugin authors.

use serde::{Deserialize, Serialize};

/// The protocol version this ballast speaks; a plugin's `hello` must name it.
pub const PROTOCOL_VERSION: u32 = 1;

/// The longest line either side may send, newline excluded (a call's request or answer is
/// base64 in one line, so this bounds them at 6 MiB of payload).
pub const MAX_LINE_BYTES: usize = 8 << 20;

/// The most bytes of an over-long line a [`LineBuffer`] keeps (its start), so that the request
/// it answers can still be read from it (see [`request_id`]).
pub const LINE_HEAD_BYTES: usize = 256;

/// A message from the host to the plugin (on its stdin). Fields it does not know are ignored,
/// as the protocol asks of every plugin, so a newer host can add optional ones.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum HostMessage {
    /// Sent once, right after the process starts: who it is, its level, its settings and the
    /// checkpoint its previous instance left.
    Init {
        /// The plugin's name in the config.
        name: String,
        /// The level to run at (0 is full); also in `BALLAST_LEVEL`.
        level: u32,
        /// The plugin's `config` table from the ballast config.
        config: serde_json::Value,
        /// The last checkpoint, if there is one.
        #[serde(
            default,
            skip_serializing_if = "Option::is_none",
            with = "base64_option"
        )]
        checkpoint: Option<Vec<u8>>,
    },
    /// Move to another level. Answer with `response` (or `error`) carrying the same id.
    SetLevel {
        /// The request's id.
        id: u64,
        /// The new level.
        level: u32,
    },
    /// A call: the request bytes. Answer with `response` carrying the answer bytes, after any
    /// number of `chunk`s carrying its parts as they are ready.
    Call {
        /// The request's id.
        id: u64,
        /// The request.
        #[serde(with = "base64_bytes")]
        data: Vec<u8>,
        /// Milliseconds left until the call's deadline when the host sent it (relative, so the
        /// two clocks need not agree); none when the call has no deadline.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        deadline_ms: Option<u64>,
    },
    /// The call `id` is cancelled (its caller went away, or its deadline passed): stop working
    /// on it. The host no longer waits for it and drops whatever still comes for it; nothing
    /// answers a cancel.
    Cancel {
        /// The call's id.
        id: u64,
    },
    /// Take no new work and finish what is running within `deadline_ms`; answer when done.
    Drain {
        /// The request's id.
        id: u64,
        /// How long the host waits for the answer, in milliseconds.
        deadline_ms: u64,
    },
    /// Answer with `response` whose `data` is the state to hand to the next instance (or none).
    Checkpoint {
        /// The request's id.
        id: u64,
    },
}

/// The health a plugin reports of itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HealthStatus {
    /// Working.
    Ok,
    /// Working, with reduced service (the host reports it, changes nothing).
    Degraded,
    /// Not working: the host marks the plugin failed.
    Unhealthy,
}

/// One level as a native plugin run in a worker describes it in its `hello`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DescribedLevel {
    /// The level's name.
    pub name: String,
    /// Memory needed at least, in bytes.
    pub memory_min_bytes: u64,
    /// Memory wanted, in bytes.
    pub memory_preferred_bytes: u64,
    /// GPU memory used, in bytes.
    pub gpu_memory_bytes: u64,
}

/// What a native plugin run in a worker process declares (its descriptor), sent in `hello`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Described {
    /// The SDK or header version it was built with.
    pub sdk_version: String,
    /// The ABI version, "major.minor".
    pub abi: String,
    /// The file's sha256, when a pin was checked.
    #[serde(default)]
    pub sha256: Option<String>,
    /// The file's size in bytes.
    pub size_bytes: u64,
    /// Capability names.
    pub capabilities: Vec<String>,
    /// Share of one core used at full level.
    pub cpu_share: f64,
    /// Whether it uses a GPU.
    pub needs_gpu: bool,
    /// Its levels, full first.
    pub levels: Vec<DescribedLevel>,
}

/// A message from the plugin to the host (on its stdout).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum PluginMessage {
    /// The first message: the plugin is up and speaks the protocol.
    Hello {
        /// Its name (should equal the configured one).
        name: String,
        /// Its version, for status pages.
        #[serde(default)]
        version: Option<String>,
        /// The protocol version it speaks.
        protocol: u32,
        /// A native plugin's descriptor, sent by `ballast worker`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        describe: Option<Box<Described>>,
    },
    /// "Still alive": resets the stall timer. Any output line does too.
    Heartbeat,
    /// How far a long task has got; a phase that does not advance for the stuck threshold
    /// raises `stuck`. A percent of 100, or no phase, ends the tracking.
    Progress {
        /// Percent done, 0 to 100.
        #[serde(default)]
        percent: Option<f64>,
        /// What it is doing.
        #[serde(default)]
        phase: Option<String>,
    },
    /// A part of the answer to the call `id`, sent before its `response`; the caller gets the
    /// parts in order as they arrive.
    Chunk {
        /// The call's id.
        id: u64,
        /// The part's bytes.
        #[serde(with = "base64_bytes")]
        data: Vec<u8>,
    },
    /// The answer to the host's request `id` (call, set_level, drain, checkpoint). For a call it
    /// ends the answer: its data (if any) is the answer's last part.
    Response {
        /// The request's id.
        id: u64,
        /// The answer's bytes (a call's answer, a checkpoint); none for the others.
        #[serde(
            default,
            skip_serializing_if = "Option::is_none",
            with = "base64_option"
        )]
        data: Option<Vec<u8>>,
    },
    /// The request `id` failed, or (without an id) something the operator should read.
    Error {
        /// The request's id, if it answers one.
        #[serde(default)]
        id: Option<u64>,
        /// What went wrong.
        message: String,
    },
    /// A log line for the plugin's log file.
    Log {
        /// error, warn, info, debug or trace (info when absent).
        #[serde(default)]
        level: Option<String>,
        /// The text.
        message: String,
    },
    /// The plugin's own figures (a native plugin's counting allocator, in a worker).
    Stats {
        /// Bytes allocated and not yet freed.
        #[serde(default)]
        live_bytes: u64,
        /// Highest `live_bytes` seen.
        #[serde(default)]
        peak_bytes: u64,
        /// Allocations made.
        #[serde(default)]
        allocations: u64,
    },
    /// The plugin's health, as it sees it.
    Health {
        /// ok, degraded or unhealthy.
        status: HealthStatus,
        /// Why.
        #[serde(default)]
        message: Option<String>,
    },
    /// A gauge the plugin wants shown on its status page (latest value wins).
    Gauge {
        /// The gauge's name.
        name: String,
        /// Its value.
        value: f64,
    },
}

/// Why a line is not a valid message. The host logs it and goes on; it never panics.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    /// Longer than [`MAX_LINE_BYTES`].
    #[error("line of {len} bytes is longer than the limit of {MAX_LINE_BYTES} bytes")]
    TooLong {
        /// Its length.
        len: usize,
    },
    /// Not UTF-8.
    #[error("line is not UTF-8")]
    NotUtf8,
    /// Not a JSON object of a known type with the right fields.
    #[error("not a valid message: {reason}")]
    Invalid {
        /// serde's explanation, or what is wrong with a field.
        reason: String,
    },
}

/// Parses one line the plugin wrote (without its newline; a trailing `\r` is allowed).
pub fn parse_plugin_message(line: &[u8]) -> Result<PluginMessage, ProtocolError> {
    let message: PluginMessage = parse(line)?;
    check(&message)?;
    Ok(message)
}

/// Parses one line the host wrote (what `ballast worker` reads).
pub fn parse_host_message(line: &[u8]) -> Result<HostMessage, ProtocolError> {
    parse(line)
}

fn parse<T: serde::de::DeserializeOwned>(line: &[u8]) -> Result<T, ProtocolError> {
    if line.len() > MAX_LINE_BYTES {
        return Err(ProtocolError::TooLong { len: line.len() });
    }
    let text = std::str::from_utf8(line).map_err(|_| ProtocolError::NotUtf8)?;
    let text = text.strip_suffix('\r').unwrap_or(text);
    serde_json::from_str(text).map_err(|e| ProtocolError::Invalid {
        reason: e.to_string(),
    })
}

/// Field checks serde cannot express.
fn check(message: &PluginMessage) -> Result<(), ProtocolError> {
    let invalid = |reason: String| Err(ProtocolError::Invalid { reason });
    match message {
        PluginMessage::Progress {
            percent: Some(p), ..
        } if !(p.is_finite() && (0.0..=100.0).contains(p)) => {
            invalid(format!("progress percent must be 0 to 100, got {p}"))
        }
        PluginMessage::Gauge { value, .. } if !value.is_finite() => {
            invalid(format!("gauge value must be a finite number, got {value}"))
        }
        PluginMessage::Gauge { name, .. } if name.is_empty() || name.len() > 128 => {
            invalid("gauge name must be 1 to 128 bytes".to_owned())
        }
        _ => Ok(()),
    }
}

/// A message as one line, newline included.
pub fn encode_line<T: Serialize>(message: &T) -> Vec<u8> {
    // Serializing these types cannot fail: every field is a string, a number, a bool or JSON.
    let mut line = serde_json::to_vec(message).unwrap_or_else(|_| b"{}".to_vec());
    line.push(b'\n');
    line
}

/// One item out of a [`LineBuffer`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Line {
    /// A complete line, without its newline.
    Complete(Vec<u8>),
    /// A line longer than the limit was skipped; `len` bytes of it were seen.
    TooLong {
        /// How many bytes were dropped (at least the limit).
        len: usize,
        /// Its first [`LINE_HEAD_BYTES`] bytes (all of it when shorter), to tell which request
        /// it answered.
        head: Vec<u8>,
    },
}

/// Cuts a byte stream into lines, whatever the chunks it arrives in. A line longer than `max`
/// is dropped (reported once as [`Line::TooLong`], with its start) and reading resumes after its
/// newline, so a runaway writer cannot make the host buffer without bound.
#[derive(Debug)]
pub struct LineBuffer {
    max: usize,
    buffer: Vec<u8>,
    /// Bytes of an over-long line dropped so far, and its start, while skipping to its end.
    skipping: Option<(usize, Vec<u8>)>,
}

impl LineBuffer {
    /// A buffer for lines of at most `max` bytes.
    pub fn new(max: usize) -> LineBuffer {
        LineBuffer {
            max,
            buffer: Vec::new(),
            skipping: None,
        }
    }

    /// Takes in `chunk` and appends every line it completes to `out`.
    pub fn push(&mut self, mut chunk: &[u8], out: &mut Vec<Line>) {
        while !chunk.is_empty() {
            let newline = chunk.iter().position(|b| *b == b'\n');
            let (part, rest) = match newline {
                Some(i) => (&chunk[..i], Some(&chunk[i + 1..])),
                None => (chunk, None),
            };
            if let Some((skipped, head)) = &mut self.skipping {
                *skipped += part.len();
                keep_head(head, part);
            } else if self.buffer.len() + part.len() > self.max {
                let mut head = Vec::with_capacity(LINE_HEAD_BYTES);
                keep_head(&mut head, &self.buffer);
                keep_head(&mut head, part);
                self.skipping = Some((self.buffer.len() + part.len(), head));
                self.buffer.clear();
            } else {
                self.buffer.extend_from_slice(part);
            }
            match rest {
                Some(rest) => {
                    match self.skipping.take() {
                        Some((len, head)) => out.push(Line::TooLong { len, head }),
                        None => out.push(Line::Complete(std::mem::take(&mut self.buffer))),
                    }
                    chunk = rest;
                }
                None => chunk = &[],
            }
        }
    }

    /// At the end of the stream: the last line if it had no newline.
    pub fn finish(&mut self, out: &mut Vec<Line>) {
        match self.skipping.take() {
            Some((len, head)) => out.push(Line::TooLong { len, head }),
            None if !self.buffer.is_empty() => {
                out.push(Line::Complete(std::mem::take(&mut self.buffer)))
            }
            None => {}
        }
    }
}

/// Appends to `head` as much of `bytes` as fits in [`LINE_HEAD_BYTES`].
fn keep_head(head: &mut Vec<u8>, bytes: &[u8]) {
    let room = LINE_HEAD_BYTES.saturating_sub(head.len());
    head.extend_from_slice(&bytes[..room.min(bytes.len())]);
}

/// The id of the request a plugin's line answers, read from as much of the line as there is
/// (a line that is not a valid message, or the start of an over-long one), so that a bad answer
/// fails that one request instead of leaving it waiting. It is the top-level `id` of a `chunk`,
/// `response` or `error`, or of a line whose type cannot be read; `None` when there is no
/// complete id, or the line is of another type. Never panics, whatever the bytes.
pub fn request_id(line: &[u8]) -> Option<u64> {
    let (kind, id) = scan_type_and_id(line);
    match kind.as_deref() {
        None | Some(b"chunk" | b"response" | b"error") => id,
        Some(_) => None,
    }
}

/// Reads the top-level `type` (a string without escapes) and `id` (an integer followed by
/// something that ends it) of a JSON object, stopping at the first thing that is not JSON or
/// at the end of the bytes.
fn scan_type_and_id(line: &[u8]) -> (Option<Vec<u8>>, Option<u64>) {
    let mut scanner = Scanner { bytes: line, at: 0 };
    let mut kind = None;
    let mut id = None;
    scanner.skip_space();
    if !scanner.eat(b'{') {
        return (None, None);
    }
    loop {
        scanner.skip_space();
        let Some(key) = scanner.string() else {
            break;
        };
        scanner.skip_space();
        if !scanner.eat(b':') {
            break;
        }
        scanner.skip_space();
        match key {
            Some(b"type") if kind.is_none() && scanner.peek() == Some(b'"') => {
                match scanner.string() {
                    Some(Some(text)) => kind = Some(text.to_vec()),
                    Some(None) => kind = Some(Vec::new()),
                    None => break,
                }
            }
            Some(b"id") if id.is_none() => match scanner.integer() {
                Some(number) => id = Some(number),
                None => break,
            },
            _ => {
                if !scanner.skip_value() {
                    break;
                }
            }
        }
        if kind.is_some() && id.is_some() {
            break;
        }
        scanner.skip_space();
        if !scanner.eat(b',') {
            break;
        }
    }
    (kind, id)
}

/// A cursor over the bytes of a JSON text, for [`scan_type_and_id`].
struct Scanner<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Scanner<'a> {
    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.at).copied()
    }

    fn eat(&mut self, byte: u8) -> bool {
        if self.peek() == Some(byte) {
            self.at += 1;
            true
        } else {
            false
        }
    }

    fn skip_space(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\r' | b'\n')) {
            self.at += 1;
        }
    }

    /// A complete string: `Some(Some(text))` without escapes, `Some(None)` with some; `None`
    /// when there is no string here or it does not end.
    fn string(&mut self) -> Option<Option<&'a [u8]>> {
        if !self.eat(b'"') {
            return None;
        }
        let start = self.at;
        let mut escaped = false;
        while let Some(byte) = self.peek() {
            self.at += 1;
            match byte {
                b'\\' => {
                    escaped = true;
                    // The escaped byte cannot end the string.
                    self.peek()?;
                    self.at += 1;
                }
                b'"' => {
                    let text = &self.bytes[start..self.at - 1];
                    return Some((!escaped).then_some(text));
                }
                _ => {}
            }
        }
        None
    }

    /// A non-negative integer that fits a `u64` and is followed by a byte that ends it.
    fn integer(&mut self) -> Option<u64> {
        let start = self.at;
        while self.peek().is_some_and(|b| b.is_ascii_digit()) {
            self.at += 1;
        }
        let digits = &self.bytes[start..self.at];
        let ended = matches!(
            self.peek(),
            Some(b',' | b'}' | b' ' | b'\t' | b'\r' | b'\n')
        );
        if digits.is_empty() || !ended {
            return None;
        }
        std::str::from_utf8(digits).ok()?.parse().ok()
    }

    /// Skips one value (a string, an object or array with whatever is inside, or a number or
    /// literal); false when it does not end within the bytes.
    fn skip_value(&mut self) -> bool {
        match self.peek() {
            Some(b'"') => self.string().is_some(),
            Some(b'{' | b'[') => {
                let mut depth = 0usize;
                while let Some(byte) = self.peek() {
                    match byte {
                        b'"' => {
                            if self.string().is_none() {
                                return false;
                            }
                            continue;
                        }
                        b'{' | b'[' => depth += 1,
                        b'}' | b']' => {
                            depth = depth.saturating_sub(1);
                            if depth == 0 {
                                self.at += 1;
                                return true;
                            }
                        }
                        _ => {}
                    }
                    self.at += 1;
                }
                false
            }
            Some(_) => {
                let start = self.at;
                while self.peek().is_some_and(|b| {
                    !matches!(b, b',' | b'}' | b']' | b' ' | b'\t' | b'\r' | b'\n')
                }) {
                    self.at += 1;
                }
                self.at > start && self.peek().is_some()
            }
            None => false,
        }
    }
}

mod base64_bytes {
    use base64::Engine as _;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        base64::engine::general_purpose::STANDARD
            .decode(text.as_bytes())
            .map_err(|e| serde::de::Error::custom(format!("data is not base64: {e}")))
    }
}

mod base64_option {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &Option<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
        match bytes {
            Some(b) => super::base64_bytes::serialize(b, s),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<u8>>, D::Error> {
        #[derive(Deserialize)]
        struct Wrapped(#[serde(with = "super::base64_bytes")] Vec<u8>);
        Ok(Option::<Wrapped>::deserialize(d)?.map(|w| w.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_messages_of_the_crate_docs_parse() {
        let hello = parse_plugin_message(
            br#"{"type":"hello","name":"indexer","version":"1.2","protocol":1}"#,
        )
        .unwrap();
        assert_eq!(
            hello,
            PluginMessage::Hello {
                name: "indexer".into(),
                version: Some("1.2".into()),
                protocol: 1,
                describe: None
            }
        );
        assert_eq!(
            parse_plugin_message(b"{\"type\":\"heartbeat\"}\r").unwrap(),
            PluginMessage::Heartbeat
        );
        assert_eq!(
            parse_plugin_message(br#"{"type":"response","id":7,"data":"aGk="}"#).unwrap(),
            PluginMessage::Response {
                id: 7,
                data: Some(b"hi".to_vec())
            }
        );
        assert_eq!(
            parse_plugin_message(br#"{"type":"response","id":8}"#).unwrap(),
            PluginMessage::Response { id: 8, data: None }
        );
    }

    #[test]
    fn host_messages_round_trip() {
        for message in [
            HostMessage::Init {
                name: "x".into(),
                level: 1,
                config: serde_json::json!({"a": 1}),
                checkpoint: Some(vec![0, 255, 7]),
            },
            HostMessage::Init {
                name: "x".into(),
                level: 0,
                config: serde_json::json!({}),
                checkpoint: None,
            },
            HostMessage::Call {
                id: 3,
                data: b"\x00binary\xff".to_vec(),
                deadline_ms: None,
            },
            HostMessage::Drain {
                id: 4,
                deadline_ms: 5000,
            },
            HostMessage::Call {
                id: 5,
                data: Vec::new(),
                deadline_ms: Some(250),
            },
            HostMessage::Cancel { id: 5 },
        ] {
            let line = encode_line(&message);
            assert_eq!(line.last(), Some(&b'\n'));
            let parsed = parse_host_message(&line[..line.len() - 1]).unwrap();
            assert_eq!(parsed, message);
        }
    }

    #[test]
    fn bad_lines_are_errors_that_say_why() {
        let cases: [(&[u8], &str); 6] = [
            (b"hello world", "not a valid message"),
            (br#"{"type":"launch"}"#, "unknown variant `launch`"),
            (br#"{"type":"response"}"#, "missing field `id`"),
            (br#"{"type":"response","id":1,"data":"***"}"#, "not base64"),
            (
                br#"{"type":"progress","percent":140}"#,
                "percent must be 0 to 100",
            ),
            (b"\xff\xfe", "not UTF-8"),
        ];
        for (line, expected) in cases {
            let error = parse_plugin_message(line).unwrap_err().to_string();
            assert!(error.contains(expected), "{error}");
        }
        let long = vec![b'a'; MAX_LINE_BYTES + 1];
        assert!(matches!(
            parse_plugin_message(&long),
            Err(ProtocolError::TooLong { .. })
        ));
    }

    #[test]
    fn lines_are_cut_whatever_the_chunks_and_long_ones_are_skipped() {
        let mut buffer = LineBuffer::new(8);
        let mut out = Vec::new();
        buffer.push(b"ab", &mut out);
        buffer.push(b"c\nde", &mut out);
        buffer.push(b"f\n0123456789", &mut out);
        buffer.push(b"abc\nok\nlast", &mut out);
        buffer.finish(&mut out);
        assert_eq!(
            out,
            vec![
                Line::Complete(b"abc".to_vec()),
                Line::Complete(b"def".to_vec()),
                Line::TooLong {
                    len: 13,
                    head: b"0123456789abc".to_vec()
                },
                Line::Complete(b"ok".to_vec()),
                Line::Complete(b"last".to_vec()),
            ]
        );
    }

    #[test]
    fn a_call_without_a_deadline_has_no_field_and_unknown_fields_are_ignored() {
        let line = encode_line(&HostMessage::Call {
            id: 1,
            data: b"q".to_vec(),
            deadline_ms: None,
        });
        assert_eq!(line, b"{\"type\":\"call\",\"id\":1,\"data\":\"cQ==\"}\n");
        let line = encode_line(&HostMessage::Call {
            id: 1,
            data: b"q".to_vec(),
            deadline_ms: Some(1500),
        });
        assert_eq!(
            line,
            b"{\"type\":\"call\",\"id\":1,\"data\":\"cQ==\",\"deadline_ms\":1500}\n"
        );
        // A worker reads a newer host's fields it does not know as the protocol asks of plugins.
        assert_eq!(
            parse_host_message(br#"{"type":"cancel","id":9,"reason":"caller"}"#).unwrap(),
            HostMessage::Cancel { id: 9 }
        );
    }

    #[test]
    fn plugin_messages_round_trip() {
        for message in [
            PluginMessage::Chunk {
                id: 7,
                data: b"part \x00\xff".to_vec(),
            },
            PluginMessage::Chunk {
                id: 8,
                data: Vec::new(),
            },
            PluginMessage::Response {
                id: 7,
                data: Some(Vec::new()),
            },
            PluginMessage::Response { id: 7, data: None },
            PluginMessage::Error {
                id: Some(7),
                message: "no".into(),
            },
        ] {
            let line = encode_line(&message);
            let parsed = parse_plugin_message(&line[..line.len() - 1]).unwrap();
            assert_eq!(parsed, message);
        }
        assert_eq!(
            parse_plugin_message(br#"{"type":"chunk","id":3,"data":"aGk="}"#).unwrap(),
            PluginMessage::Chunk {
                id: 3,
                data: b"hi".to_vec()
            }
        );
    }

    #[test]
    fn bad_chunks_are_errors_that_say_why() {
        let cases: [(&[u8], &str); 5] = [
            (br#"{"type":"chunk","id":1}"#, "missing field `data`"),
            (br#"{"type":"chunk","data":"aGk="}"#, "missing field `id`"),
            (br#"{"type":"chunk","id":1,"data":"a*b"}"#, "not base64"),
            (br#"{"type":"chunk","id":-1,"data":""}"#, "invalid value"),
            (
                br#"{"type":"chunk","id":1,"data":"","more":1}"#,
                "unknown field `more`",
            ),
        ];
        for (line, expected) in cases {
            let error = parse_plugin_message(line).unwrap_err().to_string();
            assert!(error.contains(expected), "{error}");
        }
        let cases: [(&[u8], &str); 3] = [
            (br#"{"type":"cancel"}"#, "missing field `id`"),
            (
                br#"{"type":"call","id":1,"data":"","deadline_ms":-5}"#,
                "invalid value",
            ),
            (
                br#"{"type":"call","id":1,"data":"","deadline_ms":"soon"}"#,
                "invalid type",
            ),
        ];
        for (line, expected) in cases {
            let error = parse_host_message(line).unwrap_err().to_string();
            assert!(error.contains(expected), "{error}");
        }
    }

    #[test]
    fn the_request_a_bad_line_answers_is_read_when_it_can_be() {
        let cases: [(&[u8], Option<u64>); 17] = [
            (br#"{"type":"chunk","id":7,"data":"***"}"#, Some(7)),
            (br#"{"type":"response","id":8,"data":"***"}"#, Some(8)),
            (br#"{"type":"error","id":9}"#, Some(9)),
            (
                br#" { "id" : 10 , "type" : "chunk" , "data": 5 }"#,
                Some(10),
            ),
            // The start of an over-long line.
            (br#"{"type":"chunk","id":11,"data":"QUFBQUFB"#, Some(11)),
            (br#"{"id":12,"data":"QUFB"#, Some(12)),
            // Values before the id are skipped, whatever is inside them.
            (
                br#"{"data":{"a":["}",{"id":1}]},"x":"\"id\":2","id":13}"#,
                Some(13),
            ),
            (br#"{"x":true,"y":-1.5e3,"id":14}"#, Some(14)),
            // An id cut off, or not a plain integer, is not an id.
            (br#"{"type":"chunk","id":15"#, None),
            (br#"{"type":"chunk","id":1.5}"#, None),
            (br#"{"type":"chunk","id":"16"}"#, None),
            (br#"{"type":"chunk","id":99999999999999999999}"#, None),
            // Lines of other types answer no request.
            (br#"{"type":"progress","id":17}"#, None),
            (
                br#"{"type":"log","message":"{\"type\":\"chunk\",\"id\":18}"}"#,
                None,
            ),
            (br#"{"message":"\"id\":19"}"#, None),
            (b"not json", None),
            (b"\xff\xfe{", None),
        ];
        for (line, expected) in cases {
            assert_eq!(
                request_id(line),
                expected,
                "{}",
                String::from_utf8_lossy(line)
            );
        }
    }

    #[test]
    fn an_over_long_line_keeps_its_start() {
        let mut buffer = LineBuffer::new(16);
        let mut out = Vec::new();
        let mut line = br#"{"type":"chunk","id":42,"data":""#.to_vec();
        line.extend(std::iter::repeat_n(b'A', 1000));
        // In small pieces, so the start is gathered across them.
        for piece in line.chunks(5) {
            buffer.push(piece, &mut out);
        }
        buffer.push(b"\"}\n", &mut out);
        let [Line::TooLong { len, head }] = out.as_slice() else {
            panic!("{out:?}");
        };
        assert_eq!(*len, line.len() + 2);
        assert_eq!(head.as_slice(), &line[..LINE_HEAD_BYTES]);
        assert_eq!(request_id(head), Some(42));
    }
}
