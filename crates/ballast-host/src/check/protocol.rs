//! What the protocol record of a plugin's processes says: when each said hello and sent
//! heartbeats, whether every request was answered exactly once, which chunks a call got, and
//! whether each process exited on the end of its stdin. Pure functions of the record.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use ballast_process::PluginMessage;

use crate::tap::{Observed, Seen};

/// When process `generation` said hello.
pub(crate) fn hello(seen: &[Seen], generation: u64) -> Option<Instant> {
    seen.iter()
        .find(|s| {
            s.generation == generation
                && matches!(s.what, Observed::Message(PluginMessage::Hello { .. }))
        })
        .map(|s| s.at)
}

/// When process `generation` sent its heartbeats.
pub(crate) fn heartbeats(seen: &[Seen], generation: u64) -> Vec<Instant> {
    seen.iter()
        .filter(|s| {
            s.generation == generation
                && matches!(s.what, Observed::Message(PluginMessage::Heartbeat))
        })
        .map(|s| s.at)
        .collect()
}

/// When process `generation` exited, if it did.
pub(crate) fn exited(seen: &[Seen], generation: u64) -> Option<(Instant, ballast_process::Exit)> {
    seen.iter().find_map(|s| match s.what {
        Observed::Exited { exit } if s.generation == generation => Some((s.at, exit)),
        _ => None,
    })
}

/// One request that was not answered exactly once.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Miscount {
    /// The process.
    pub(crate) generation: u64,
    /// The request's id.
    pub(crate) id: u64,
    /// Its type (`call`, `set_level`, ...), or `?` for an id the host never sent.
    pub(crate) kind: &'static str,
    /// How many answers (`response` or `error`) it got.
    pub(crate) answers: usize,
}

/// Whether every request got exactly one answer.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Answers {
    /// Requests the host sent.
    pub(crate) requests: usize,
    /// Of which cancelled (they may go unanswered).
    pub(crate) cancelled: usize,
    /// Requests answered more than once.
    pub(crate) duplicates: Vec<Miscount>,
    /// Requests never answered (and not cancelled).
    pub(crate) unanswered: Vec<Miscount>,
    /// Answers to ids the host never sent.
    pub(crate) strays: Vec<Miscount>,
}

impl Answers {
    /// Whether every request was answered exactly once.
    pub(crate) fn hold(&self) -> bool {
        self.duplicates.is_empty() && self.unanswered.is_empty() && self.strays.is_empty()
    }

    /// What was wrong, in a sentence.
    pub(crate) fn problems(&self) -> String {
        let list = |what: &str, items: &[Miscount]| {
            let mut shown: Vec<String> = items
                .iter()
                .take(5)
                .map(|m| match (what, m.kind) {
                    ("stray", _) => format!("id {} ({} answers)", m.id, m.answers),
                    (_, kind) => format!("{kind} {} ({} answers)", m.id, m.answers),
                })
                .collect();
            if items.len() > 5 {
                shown.push(format!("and {} more", items.len() - 5));
            }
            shown.join(", ")
        };
        let mut parts = Vec::new();
        if !self.duplicates.is_empty() {
            parts.push(format!(
                "{} answered more than once: {}",
                count(self.duplicates.len(), "request"),
                list("duplicate", &self.duplicates)
            ));
        }
        if !self.unanswered.is_empty() {
            parts.push(format!(
                "{} never answered: {}",
                count(self.unanswered.len(), "request"),
                list("unanswered", &self.unanswered)
            ));
        }
        if !self.strays.is_empty() {
            parts.push(format!(
                "{} for ids the host never sent: {}",
                count(self.strays.len(), "answer"),
                list("stray", &self.strays)
            ));
        }
        parts.join("; ")
    }
}

/// `n` things, with the plural when it takes one.
pub(crate) fn count(n: usize, thing: &str) -> String {
    match n {
        1 => format!("1 {thing}"),
        _ if thing.ends_with('s') => format!("{n} {thing}es"),
        _ => format!("{n} {thing}s"),
    }
}

/// Counts the answers of every request of every process (the describing worker's aside).
pub(crate) fn answers(seen: &[Seen]) -> Answers {
    let mut requests: BTreeMap<(u64, u64), &'static str> = BTreeMap::new();
    let mut cancelled: BTreeSet<(u64, u64)> = BTreeSet::new();
    let mut answered: BTreeMap<(u64, u64), usize> = BTreeMap::new();
    for s in seen.iter().filter(|s| s.generation > 0) {
        let key = |id| (s.generation, id);
        match &s.what {
            Observed::Request { id, kind } => {
                requests.insert(key(*id), kind);
            }
            Observed::Cancel { id } => {
                cancelled.insert(key(*id));
            }
            Observed::Message(PluginMessage::Response { id, .. })
            | Observed::Message(PluginMessage::Error { id: Some(id), .. }) => {
                *answered.entry(key(*id)).or_insert(0) += 1;
            }
            _ => {}
        }
    }
    let miscount = |(generation, id): (u64, u64), kind, answers| Miscount {
        generation,
        id,
        kind,
        answers,
    };
    let mut result = Answers {
        requests: requests.len(),
        cancelled: cancelled.len(),
        ..Answers::default()
    };
    for (&key, &kind) in &requests {
        let n = answered.get(&key).copied().unwrap_or(0);
        if n > 1 {
            result.duplicates.push(miscount(key, kind, n));
        } else if n == 0 && !cancelled.contains(&key) {
            result.unanswered.push(miscount(key, kind, n));
        }
    }
    for (&key, &n) in &answered {
        if !requests.contains_key(&key) {
            result.strays.push(miscount(key, "?", n));
        }
    }
    result
}

/// The calls the host sent since `since`, as (process, id).
pub(crate) fn calls_since(seen: &[Seen], since: Instant) -> Vec<(u64, u64)> {
    seen.iter()
        .filter(|s| s.at >= since && s.generation > 0)
        .filter_map(|s| match s.what {
            Observed::Request { id, kind: "call" } => Some((s.generation, id)),
            _ => None,
        })
        .collect()
}

/// The most calls outstanding at once (sent, not yet answered or cancelled) since `since`.
pub(crate) fn most_outstanding(seen: &[Seen], since: Instant) -> usize {
    let mut open: BTreeSet<(u64, u64)> = BTreeSet::new();
    let mut most = 0;
    for s in seen.iter().filter(|s| s.at >= since && s.generation > 0) {
        match &s.what {
            Observed::Request { id, kind: "call" } => {
                open.insert((s.generation, *id));
                most = most.max(open.len());
            }
            Observed::Cancel { id }
            | Observed::Message(PluginMessage::Response { id, .. })
            | Observed::Message(PluginMessage::Error { id: Some(id), .. }) => {
                open.remove(&(s.generation, *id));
            }
            _ => {}
        }
    }
    most
}

/// What the plugin sent for call `id` of process `generation`: its chunks, in order, and the
/// data of its response (if it answered with one).
pub(crate) fn answer_parts(
    seen: &[Seen],
    generation: u64,
    id: u64,
) -> (Vec<Vec<u8>>, Option<Vec<u8>>) {
    let mut chunks = Vec::new();
    let mut last = None;
    for s in seen.iter().filter(|s| s.generation == generation) {
        match &s.what {
            Observed::Message(PluginMessage::Chunk { id: i, data }) if *i == id => {
                chunks.push(data.clone())
            }
            Observed::Message(PluginMessage::Response { id: i, data }) if *i == id => {
                last = Some(data.clone().unwrap_or_default());
            }
            _ => {}
        }
    }
    (chunks, last)
}

/// When the host cancelled call `id` of process `generation`, and when the plugin last sent
/// anything for it.
pub(crate) fn after_cancel(
    seen: &[Seen],
    generation: u64,
    id: u64,
) -> Option<(Instant, Option<Instant>, usize)> {
    let cancel = seen.iter().find_map(|s| match s.what {
        Observed::Cancel { id: i } if i == id && s.generation == generation => Some(s.at),
        _ => None,
    })?;
    let after: Vec<Instant> = seen
        .iter()
        .filter(|s| s.generation == generation && s.at > cancel)
        .filter(|s| match &s.what {
            Observed::Message(PluginMessage::Chunk { id: i, .. })
            | Observed::Message(PluginMessage::Response { id: i, .. })
            | Observed::Message(PluginMessage::Error { id: Some(i), .. }) => *i == id,
            _ => false,
        })
        .map(|s| s.at)
        .collect();
    Some((cancel, after.last().copied(), after.len()))
}

/// How one process ended after the host closed its stdin.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct EofExit {
    /// The process.
    pub(crate) generation: u64,
    /// How long after its stdin closed it exited, if it did before the host signalled it.
    pub(crate) exited_after: Option<Duration>,
    /// Whether it had to be killed with SIGKILL at last.
    pub(crate) killed: bool,
}

/// For every process whose stdin the host closed: whether it exited before the host's wait
/// ran out, and whether it had to be killed in the end.
pub(crate) fn eof_exits(seen: &[Seen]) -> Vec<EofExit> {
    seen.iter()
        .filter(|s| s.generation > 0)
        .filter_map(|s| match s.what {
            Observed::EndOfInput { exited_after } => Some(EofExit {
                generation: s.generation,
                exited_after,
                killed: stop_of(seen, s.generation).is_some_and(|(_, killed)| killed),
            }),
            _ => None,
        })
        .collect()
}

/// How the host's stop of process `generation` ended: how it exited, and whether it was
/// killed.
pub(crate) fn stop_of(
    seen: &[Seen],
    generation: u64,
) -> Option<(Option<ballast_process::Exit>, bool)> {
    seen.iter().find_map(|s| match s.what {
        Observed::Stopped { exit, killed } if s.generation == generation => Some((exit, killed)),
        _ => None,
    })
}

/// How many stops of a process ended with SIGKILL, of how many stops.
pub(crate) fn killed(seen: &[Seen]) -> (usize, usize) {
    let stops: Vec<bool> = seen
        .iter()
        .filter(|s| s.generation > 0)
        .filter_map(|s| match s.what {
            Observed::Stopped { killed, .. } => Some(killed),
            _ => None,
        })
        .collect();
    (stops.iter().filter(|k| **k).count(), stops.len())
}

/// Whether the plugin answered call `id` of process `generation` (a response or an error).
pub(crate) fn answered(seen: &[Seen], generation: u64, id: u64) -> bool {
    seen.iter().any(|s| {
        s.generation == generation
            && match &s.what {
                Observed::Message(PluginMessage::Response { id: i, .. })
                | Observed::Message(PluginMessage::Error { id: Some(i), .. }) => *i == id,
                _ => false,
            }
    })
}

/// The lines the plugin sent that were not valid messages: their start and what is wrong.
pub(crate) fn bad_lines(seen: &[Seen]) -> Vec<(String, String)> {
    seen.iter()
        .filter(|s| s.generation > 0)
        .filter_map(|s| match &s.what {
            Observed::BadLine { error, excerpt } => Some((excerpt.clone(), error.to_string())),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A record built from (milliseconds after the start, generation, line).
    fn record(lines: Vec<(u64, u64, Observed)>) -> (Instant, Vec<Seen>) {
        let start = Instant::now();
        let seen = lines
            .into_iter()
            .map(|(ms, generation, what)| Seen {
                at: start + Duration::from_millis(ms),
                generation,
                what,
            })
            .collect();
        (start, seen)
    }

    fn response(id: u64) -> Observed {
        Observed::Message(PluginMessage::Response { id, data: None })
    }

    fn call(id: u64) -> Observed {
        Observed::Request { id, kind: "call" }
    }

    #[test]
    fn every_request_answered_once_holds_and_a_cancelled_one_may_go_unanswered() {
        let (_, seen) = record(vec![
            (0, 1, call(1)),
            (1, 1, call(2)),
            (2, 1, response(2)),
            (3, 1, response(1)),
            (4, 1, call(3)),
            (5, 1, Observed::Cancel { id: 3 }),
            // A second process numbers its requests afresh.
            (
                6,
                2,
                Observed::Request {
                    id: 1,
                    kind: "drain",
                },
            ),
            (
                7,
                2,
                Observed::Message(PluginMessage::Error {
                    id: Some(1),
                    message: "no".into(),
                }),
            ),
        ]);
        let answers = answers(&seen);
        assert!(answers.hold(), "{answers:?}");
        assert_eq!((answers.requests, answers.cancelled), (4, 1));
    }

    #[test]
    fn twice_never_and_stray_answers_are_each_named() {
        let (_, seen) = record(vec![
            (0, 1, call(1)),
            (1, 1, response(1)),
            (2, 1, response(1)),
            (
                3,
                1,
                Observed::Request {
                    id: 2,
                    kind: "checkpoint",
                },
            ),
            (4, 1, response(9)),
        ]);
        let answers = answers(&seen);
        assert!(!answers.hold());
        assert_eq!(
            answers.problems(),
            "1 request answered more than once: call 1 (2 answers); \
             1 request never answered: checkpoint 2 (0 answers); \
             1 answer for ids the host never sent: id 9 (1 answers)"
        );
    }

    #[test]
    fn outstanding_calls_are_counted_from_the_record() {
        let (start, seen) = record(vec![
            (0, 1, call(1)),
            (1, 1, call(2)),
            (2, 1, call(3)),
            (3, 1, response(1)),
            (4, 1, call(4)),
            (5, 1, Observed::Cancel { id: 2 }),
        ]);
        assert_eq!(most_outstanding(&seen, start), 3);
        assert_eq!(most_outstanding(&seen, start + Duration::from_millis(3)), 1);
        assert_eq!(
            calls_since(&seen, start + Duration::from_millis(2)),
            [(1, 3), (1, 4)]
        );
    }

    #[test]
    fn a_call_is_answered_in_chunks_then_its_response() {
        let chunk = |id, data: &[u8]| {
            Observed::Message(PluginMessage::Chunk {
                id,
                data: data.to_vec(),
            })
        };
        let (_, seen) = record(vec![
            (0, 1, call(4)),
            (1, 1, chunk(4, b"a")),
            (2, 1, chunk(5, b"other")),
            (3, 1, chunk(4, b"b")),
            (
                4,
                1,
                Observed::Message(PluginMessage::Response {
                    id: 4,
                    data: Some(b"end".to_vec()),
                }),
            ),
        ]);
        assert_eq!(
            answer_parts(&seen, 1, 4),
            (vec![b"a".to_vec(), b"b".to_vec()], Some(b"end".to_vec()))
        );
    }

    #[test]
    fn what_comes_after_a_cancel_is_counted() {
        let chunk = |id| Observed::Message(PluginMessage::Chunk { id, data: vec![] });
        let (start, seen) = record(vec![
            (0, 1, call(1)),
            (1, 1, chunk(1)),
            (2, 1, Observed::Cancel { id: 1 }),
            (3, 1, chunk(1)),
            (900, 1, chunk(1)),
        ]);
        let (cancel, last, n) = after_cancel(&seen, 1, 1).unwrap();
        assert_eq!(cancel, start + Duration::from_millis(2));
        assert_eq!(last, Some(start + Duration::from_millis(900)));
        assert_eq!(n, 2);
        assert!(after_cancel(&seen, 1, 2).is_none());
        assert!(!answered(&seen, 1, 1));
    }

    #[test]
    fn a_process_exits_on_the_end_of_its_input_or_it_does_not() {
        let exit = Some(ballast_process::Exit::Status { code: 0 });
        let (_, seen) = record(vec![
            (
                5,
                1,
                Observed::EndOfInput {
                    exited_after: Some(Duration::from_millis(5)),
                },
            ),
            (
                6,
                1,
                Observed::Stopped {
                    exit,
                    killed: false,
                },
            ),
            (1010, 2, Observed::EndOfInput { exited_after: None }),
            (2011, 2, Observed::Stopped { exit, killed: true }),
            (
                3000,
                3,
                Observed::Stopped {
                    exit,
                    killed: false,
                },
            ),
        ]);
        assert_eq!(
            eof_exits(&seen),
            [
                EofExit {
                    generation: 1,
                    exited_after: Some(Duration::from_millis(5)),
                    killed: false
                },
                EofExit {
                    generation: 2,
                    exited_after: None,
                    killed: true
                }
            ]
        );
        assert_eq!(killed(&seen), (1, 3));
        assert_eq!(stop_of(&seen, 2), Some((exit, true)));
    }

    #[test]
    fn bad_lines_are_listed_with_why() {
        let (_, seen) = record(vec![(
            0,
            1,
            Observed::BadLine {
                error: ballast_process::ProtocolError::NotUtf8,
                excerpt: "\u{fffd}".into(),
            },
        )]);
        assert_eq!(
            bad_lines(&seen),
            [("\u{fffd}".to_owned(), "line is not UTF-8".to_owned())]
        );
    }

    #[test]
    fn hello_and_heartbeats_are_found_per_process() {
        let hello_line = Observed::Message(PluginMessage::Hello {
            name: "x".into(),
            version: None,
            protocol: 1,
            describe: None,
        });
        let (start, seen) = record(vec![
            (0, 1, hello_line.clone()),
            (100, 1, Observed::Message(PluginMessage::Heartbeat)),
            (150, 2, hello_line),
            (200, 1, Observed::Message(PluginMessage::Heartbeat)),
        ]);
        assert_eq!(hello(&seen, 2), Some(start + Duration::from_millis(150)));
        assert_eq!(heartbeats(&seen, 1).len(), 2);
        assert!(heartbeats(&seen, 2).is_empty());
    }
}
