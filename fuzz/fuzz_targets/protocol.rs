//! Fuzz target: the process-plugin control protocol, as the host reads a plugin's stdout and a
//! worker reads the host's stdin. The input is the bytes on the pipe (so the seeds are real
//! protocol lines); its first two bytes also choose the buffer's line limit and the chunk sizes
//! it arrives in. The chunks are fed to a `LineBuffer`, and the lines must be exactly those of a
//! plain split (whatever the chunking, over-long lines reported with their length and start),
//! every line parses or is refused with a reason, the request a line answers is read without a
//! panic (and, from an answer ballast encodes, is its id), and every accepted message encodes to
//! a line that parses back to the same message.

#![no_main]

use ballast_process::protocol::{
    LINE_HEAD_BYTES, Line, LineBuffer, PluginMessage, encode_line, parse_host_message,
    parse_plugin_message, request_id,
};
use libfuzzer_sys::fuzz_target;
use serde::Serialize;

/// What a plain split of the whole stream gives.
fn reference(stream: &[u8], max: usize) -> Vec<Line> {
    let mut lines = Vec::new();
    let mut parts: Vec<&[u8]> = stream.split(|b| *b == b'\n').collect();
    // The part after the last newline is a line only if it is not empty.
    let last = parts.pop().unwrap_or(&[]);
    let mut emit = |part: &[u8]| {
        if part.len() > max {
            lines.push(Line::TooLong {
                len: part.len(),
                head: part[..part.len().min(LINE_HEAD_BYTES)].to_vec(),
            });
        } else {
            lines.push(Line::Complete(part.to_vec()));
        }
    };
    for part in parts {
        emit(part);
    }
    if !last.is_empty() {
        emit(last);
    }
    lines
}

/// Two JSON trees are the same message: equal, with numbers equal to within float rounding
/// (serde_json's default float parsing may differ from the printed value in the last bit).
fn same(a: &serde_json::Value, b: &serde_json::Value) -> bool {
    use serde_json::Value;
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => match (x.as_f64(), y.as_f64()) {
            (Some(x), Some(y)) if x.is_finite() && y.is_finite() => {
                x == y || (x - y).abs() <= 1e-12 * x.abs().max(y.abs())
            }
            _ => x == y,
        },
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| same(x, y))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| same(v, w)))
        }
        _ => a == b,
    }
}

/// Encodes `message`, checks the line parses back to the same message, and returns the line.
fn round_trips<T: Serialize + std::fmt::Debug>(
    message: &T,
    parse: impl Fn(&[u8]) -> Result<T, ballast_process::protocol::ProtocolError>,
) -> Vec<u8> {
    let line = encode_line(message);
    assert_eq!(line.last(), Some(&b'\n'));
    assert!(
        !line[..line.len() - 1].contains(&b'\n'),
        "an encoded message is one line: {line:?}"
    );
    let again = parse(&line[..line.len() - 1])
        .unwrap_or_else(|e| panic!("{message:?} encodes to a line that does not parse: {e}"));
    let a = serde_json::to_value(message).expect("a message is JSON");
    let b = serde_json::to_value(&again).expect("a message is JSON");
    assert!(same(&a, &b), "{a} read back as {b}");
    line
}

/// The request an answer ballast encodes is read back from its line, and from its start no
/// other request is.
fn answers(message: &PluginMessage, line: &[u8]) {
    let line = &line[..line.len() - 1];
    let id = match message {
        PluginMessage::Chunk { id, .. }
        | PluginMessage::Response { id, .. }
        | PluginMessage::Error { id: Some(id), .. } => *id,
        _ => return,
    };
    assert_eq!(request_id(line), Some(id), "{message:?}");
    for cut in [line.len() / 2, LINE_HEAD_BYTES.min(line.len())] {
        let read = request_id(&line[..cut]);
        assert!(
            read.is_none() || read == Some(id),
            "{read:?} from a start of {message:?}"
        );
    }
}

fuzz_target!(|stream: &[u8]| {
    // The longest line the buffer keeps (up to 1020 bytes, so the over-long path is reached) and
    // the sizes of the chunks the stream arrives in (1 to 256 bytes, varying).
    let max = usize::from(stream.first().copied().unwrap_or(0)) * 4;
    let step = usize::from(stream.get(1).copied().unwrap_or(0));
    let mut buffer = LineBuffer::new(max);
    let mut lines = Vec::new();
    let mut rest = stream;
    let mut turn = 0usize;
    while !rest.is_empty() {
        let n = ((step + turn * 7) % 256 + 1).min(rest.len());
        buffer.push(&rest[..n], &mut lines);
        rest = &rest[n..];
        turn += 1;
    }
    buffer.finish(&mut lines);
    assert_eq!(lines, reference(stream, max), "max {max}, step {step}");

    // Each line as the host reads it from a plugin, and as a worker reads it from the host.
    for line in stream.split(|b| *b == b'\n') {
        // Whatever the line, reading the request it answers never panics.
        let _ = request_id(line);
        match parse_plugin_message(line) {
            Ok(message) => {
                let encoded = round_trips(&message, parse_plugin_message);
                answers(&message, &encoded);
            }
            Err(e) => assert!(!e.to_string().is_empty()),
        }
        match parse_host_message(line) {
            Ok(message) => {
                round_trips(&message, parse_host_message);
            }
            Err(e) => assert!(!e.to_string().is_empty()),
        }
    }
});
