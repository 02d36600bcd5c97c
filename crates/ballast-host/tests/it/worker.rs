//! `ballast worker` run in this process on pipes, with a small C plugin whose calls can wait for
//! a file: calls go out as chunks and a response, `cancel` is read and reaches a call while it
//! runs (and the reading thread takes other calls meanwhile, also while a drain waits for the
//! running call), and `deadline_ms` cancels a call that outlives it. Every wait is bounded; none
//! is a timing assertion.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use ballast_host::worker::{WorkerOptions, run};
use ballast_process::{HostMessage, PluginMessage, encode_line, parse_plugin_message};

use crate::support::c_library;

/// A plugin whose call answers its request; a request `wait PATH` first creates `PATH.started`
/// and waits for `PATH` to exist.
const WAITER: &str = r#"
#define _POSIX_C_SOURCE 200809L
#include "ballast_plugin.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
static int instance;
static BallastStatus ok(void *i, BallastMessageBuf *e) { (void)i; (void)e; return BALLAST_STATUS_OK; }
static BallastStatus create(const BallastHostApi *h, BallastBytes c, BallastBytes k, void **o, BallastMessageBuf *e) {
    (void)h; (void)c; (void)k; (void)e; *o = &instance; return BALLAST_STATUS_OK; }
static BallastStatus level(void *i, uint32_t l, BallastMessageBuf *e) { (void)i; (void)l; (void)e; return BALLAST_STATUS_OK; }
static BallastStatus drain(void *i, uint64_t d, BallastMessageBuf *e) { (void)i; (void)d; (void)e; return BALLAST_STATUS_OK; }
static BallastStatus call(void *i, BallastBytes r, BallastBuffer *o, BallastMessageBuf *e) {
    (void)i; (void)e;
    char text[1024];
    size_t n = r.len < sizeof(text) - 1 ? r.len : sizeof(text) - 1;
    memcpy(text, r.ptr, n);
    text[n] = 0;
    if (strncmp(text, "wait ", 5) == 0) {
        char started[1100];
        snprintf(started, sizeof(started), "%s.started", text + 5);
        FILE *f = fopen(started, "w");
        if (f) fclose(f);
        struct timespec pause = { 0, 1000000 };
        while (access(text + 5, F_OK) != 0) nanosleep(&pause, NULL);
    }
    uint8_t *copy = malloc(n ? n : 1);
    memcpy(copy, text, n);
    o->ptr = copy; o->len = n; o->owner = 0;
    return BALLAST_STATUS_OK;
}
static void release(BallastBuffer b) { free(b.ptr); }
static BallastStatus health(void *i, BallastMessageBuf *m) { (void)i; (void)m; return BALLAST_STATUS_OK; }
static BallastStatus stats(void *i, BallastStats *s) { (void)i; (void)s; return BALLAST_STATUS_OK; }
static const BallastPluginVTable VT = { .struct_size = sizeof(BallastPluginVTable), .create = create, .start = ok,
    .set_level = level, .drain = drain, .stop = ok, .destroy = ok, .call = call, .free_buffer = release,
    .health = health, .stats = stats };
static const BallastLevelHints LEVELS[1] = { { .name = { (const uint8_t *)"full", 4 } } };
static const BallastPluginDescriptor D = {
    .header = { .magic = BALLAST_PLUGIN_MAGIC, .abi_major = 1, .abi_minor = 0,
                .struct_size = sizeof(BallastPluginDescriptor), .name = { (const uint8_t *)"waiter", 6 } },
    .version = { (const uint8_t *)"1", 1 }, .sdk_version = { (const uint8_t *)"c", 1 },
    .capabilities = BALLAST_CAP_THREAD_SAFE_CALLS, .hints = { .n_levels = 1, .levels = LEVELS }, .vtable = &VT };
const BallastPluginDescriptor *ballast_plugin_entry_v1(void) { return &D; }
"#;

/// A worker running on pipes: the host's side of them.
struct Worker {
    input: std::io::PipeWriter,
    messages: mpsc::Receiver<PluginMessage>,
    dir: tempfile::TempDir,
}

impl Worker {
    fn start() -> Worker {
        let options = WorkerOptions {
            plugin: c_library("waiter", WAITER),
            sha256: None,
            threads: 2,
            heartbeat: Duration::from_secs(3600),
            describe: false,
        };
        let (input_reader, input) = std::io::pipe().unwrap();
        let (output_reader, output) = std::io::pipe().unwrap();
        std::thread::spawn(move || {
            if let Err(error) = run(&options, input_reader, output) {
                eprintln!("the worker failed: {error}");
            }
        });
        // What the worker writes, as messages; heartbeats and figures are left out.
        let (tx, messages) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(output_reader).lines() {
                let Ok(line) = line else { return };
                let message = parse_plugin_message(line.as_bytes()).unwrap();
                if matches!(
                    message,
                    PluginMessage::Heartbeat
                        | PluginMessage::Stats { .. }
                        | PluginMessage::Health { .. }
                ) {
                    continue;
                }
                if tx.send(message).is_err() {
                    return;
                }
            }
        });
        let mut worker = Worker {
            input,
            messages,
            dir: tempfile::tempdir().unwrap(),
        };
        worker.send(&HostMessage::Init {
            name: "waiter".into(),
            level: 0,
            config: serde_json::json!({}),
            checkpoint: None,
        });
        assert!(matches!(worker.next(), PluginMessage::Hello { .. }));
        worker
    }

    fn send(&mut self, message: &HostMessage) {
        self.input.write_all(&encode_line(message)).unwrap();
    }

    fn call(&mut self, id: u64, request: &str, deadline_ms: Option<u64>) {
        self.send(&HostMessage::Call {
            id,
            data: request.as_bytes().to_vec(),
            deadline_ms,
        });
    }

    /// The next message (at most 30 s away).
    fn next(&self) -> PluginMessage {
        self.messages
            .recv_timeout(Duration::from_secs(30))
            .expect("the worker's next message")
    }

    /// The messages up to the end of the call `id` (its response or error); the others' are
    /// kept in `others`.
    fn until_end_of(&self, id: u64, others: &mut Vec<PluginMessage>) -> Vec<PluginMessage> {
        let mut mine = Vec::new();
        loop {
            let message = self.next();
            let (of, end) = match &message {
                PluginMessage::Chunk { id, .. } => (Some(*id), false),
                PluginMessage::Response { id, .. } => (Some(*id), true),
                PluginMessage::Error { id, .. } => (*id, true),
                _ => (None, false),
            };
            if of == Some(id) {
                mine.push(message);
                if end {
                    return mine;
                }
            } else {
                others.push(message);
            }
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

/// Waits (at most 30 s) for `path` to exist.
fn wait_for_file(path: &Path) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !path.exists() {
        assert!(
            Instant::now() < deadline,
            "{} never appeared",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// The answer the host makes of a call's messages: the chunks joined, then the response's data.
fn answer(messages: &[PluginMessage]) -> Result<String, String> {
    let mut answer = Vec::new();
    for message in messages {
        match message {
            PluginMessage::Chunk { data, .. } => answer.extend_from_slice(data),
            PluginMessage::Response { data, .. } => {
                answer.extend_from_slice(data.as_deref().unwrap_or_default())
            }
            PluginMessage::Error { message, .. } => return Err(message.clone()),
            other => panic!("{other:?}"),
        }
    }
    Ok(String::from_utf8(answer).unwrap())
}

#[test]
fn a_call_is_answered_in_chunks_then_a_response() {
    let mut worker = Worker::start();
    worker.call(1, "hello", Some(10_000));
    let messages = worker.until_end_of(1, &mut Vec::new());
    assert!(
        matches!(messages.last(), Some(PluginMessage::Response { id: 1, .. })),
        "{messages:?}"
    );
    assert_eq!(answer(&messages).unwrap(), "hello");
    // A call without a deadline too.
    worker.call(2, "again", None);
    assert_eq!(
        answer(&worker.until_end_of(2, &mut Vec::new())).unwrap(),
        "again"
    );
}

#[test]
fn cancel_reaches_a_running_call_while_other_calls_are_answered() {
    let mut worker = Worker::start();
    let go = worker.path("go");
    worker.call(1, &format!("wait {}", go.display()), Some(60_000));
    wait_for_file(&worker.path("go.started"));
    worker.send(&HostMessage::Cancel { id: 1 });
    // Read after the cancel: once it is answered, the cancel was read too.
    worker.call(2, "meanwhile", Some(60_000));
    let mut others = Vec::new();
    assert_eq!(
        answer(&worker.until_end_of(2, &mut others)).unwrap(),
        "meanwhile"
    );
    assert!(others.is_empty(), "{others:?}");
    std::fs::write(&go, b"").unwrap();
    let messages = worker.until_end_of(1, &mut others);
    // The cancelled call sends no chunk: it ends with an error saying why.
    match messages.as_slice() {
        [PluginMessage::Error { message, .. }] => {
            assert!(message.contains("cancelled (caller)"), "{message}")
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_call_that_outlives_its_deadline_is_cancelled() {
    let mut worker = Worker::start();
    let go = worker.path("late");
    worker.call(1, &format!("wait {}", go.display()), Some(10));
    wait_for_file(&worker.path("late.started"));
    // The call's deadline was set when the worker read it, before the call started: 20 ms after
    // the start it has passed.
    std::thread::sleep(Duration::from_millis(20));
    std::fs::write(&go, b"").unwrap();
    match worker.until_end_of(1, &mut Vec::new()).as_slice() {
        [PluginMessage::Error { message, .. }] => {
            assert!(message.contains("cancelled (deadline)"), "{message}")
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn cancel_is_read_while_a_drain_waits_for_the_running_call() {
    let mut worker = Worker::start();
    let go = worker.path("go");
    worker.call(1, &format!("wait {}", go.display()), Some(60_000));
    wait_for_file(&worker.path("go.started"));
    // The drain waits for the running call; the reading thread goes on reading.
    worker.send(&HostMessage::Drain {
        id: 2,
        deadline_ms: 60_000,
    });
    worker.send(&HostMessage::Cancel { id: 1 });
    // The reading thread answers a second init itself: once it has, the cancel was read.
    worker.send(&HostMessage::Init {
        name: "waiter".into(),
        level: 0,
        config: serde_json::json!({}),
        checkpoint: None,
    });
    match worker.next() {
        PluginMessage::Error { id: None, message } => {
            assert!(message.contains("init was sent twice"), "{message}")
        }
        other => panic!("{other:?}"),
    }
    std::fs::write(&go, b"").unwrap();
    let mut others = Vec::new();
    match worker.until_end_of(1, &mut others).as_slice() {
        [PluginMessage::Error { message, .. }] => {
            assert!(message.contains("cancelled (caller)"), "{message}")
        }
        other => panic!("{other:?}"),
    }
    let drained = worker.until_end_of(2, &mut others);
    assert!(
        matches!(
            drained.as_slice(),
            [PluginMessage::Response { id: 2, data: None }]
        ),
        "{drained:?}"
    );
}
