//! The protocol's parser and line buffer against arbitrary input: no panics, the lines do not
//! depend on how the stream was cut into chunks, and the request a line answers is read right
//! from any start of it, or not at all.

use ballast_process::protocol::request_id;
use ballast_process::{
    Line, LineBuffer, PluginMessage, encode_line, parse_host_message, parse_plugin_message,
};
use proptest::prelude::*;

proptest! {
    #[test]
    fn any_bytes_parse_to_a_message_or_an_error(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = parse_plugin_message(&bytes);
        let _ = parse_host_message(&bytes);
        let _ = request_id(&bytes);
    }

    #[test]
    fn the_request_of_an_answer_or_of_its_start_is_its_id_or_none(
        id in any::<u64>(),
        data in proptest::collection::vec(any::<u8>(), 0..64),
        kind in 0u8..3,
        cut in 0usize..200,
    ) {
        let message = match kind {
            0 => PluginMessage::Chunk { id, data },
            1 => PluginMessage::Response { id, data: Some(data) },
            _ => PluginMessage::Error {
                id: Some(id),
                message: String::from_utf8_lossy(&data).into_owned(),
            },
        };
        let line = encode_line(&message);
        let line = &line[..line.len() - 1];
        prop_assert_eq!(request_id(line), Some(id));
        let start = &line[..cut.min(line.len())];
        let read = request_id(start);
        prop_assert!(read.is_none() || read == Some(id), "{:?} from {:?}", read, start);
    }

    #[test]
    fn json_shaped_input_never_panics(
        kind in "(hello|heartbeat|progress|response|error|log|stats|health|gauge|call|x)",
        field in "(id|data|percent|phase|name|value|status|protocol|message)",
        value in prop_oneof![
            Just("null".to_owned()), Just("-1".to_owned()), Just("1e400".to_owned()),
            Just("\"aGk=\"".to_owned()), Just("\"%%%\"".to_owned()), Just("[]".to_owned()),
            any::<i64>().prop_map(|n| n.to_string()), "\"[a-z]{0,8}\"",
        ],
    ) {
        let line = format!(r#"{{"type":"{kind}","{field}":{value}}}"#);
        if let Ok(PluginMessage::Progress { percent: Some(p), .. }) = parse_plugin_message(line.as_bytes()) {
            prop_assert!((0.0..=100.0).contains(&p));
        }
    }

    #[test]
    fn lines_do_not_depend_on_the_chunking(
        text in proptest::collection::vec(prop_oneof![Just(b'\n'), Just(b'a'), Just(b'b')], 0..200),
        cuts in proptest::collection::vec(0usize..200, 0..10),
        max in 1usize..20,
    ) {
        let mut whole = LineBuffer::new(max);
        let mut expected = Vec::new();
        whole.push(&text, &mut expected);
        whole.finish(&mut expected);

        let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(text.len())).collect();
        cuts.sort_unstable();
        let mut chunked = LineBuffer::new(max);
        let mut got = Vec::new();
        let mut start = 0;
        for cut in cuts.into_iter().chain([text.len()]) {
            chunked.push(&text[start..cut], &mut got);
            start = cut;
        }
        chunked.finish(&mut got);
        prop_assert_eq!(&got, &expected);
        for line in &got {
            if let Line::Complete(bytes) = line {
                prop_assert!(bytes.len() <= max && !bytes.contains(&b'\n'));
            }
        }
    }
}
