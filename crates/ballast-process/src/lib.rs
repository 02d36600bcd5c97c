//! Process plugins for ballast: integrations in any language, run as supervised child processes.
//!
//! This crate holds what supervision needs and nothing of the plugin host's lifecycle:
//!
//! * [`protocol`]: the JSON-lines control protocol (described below), with a parser that is a
//!   pure function of a line's bytes and a [`LineBuffer`] that refuses over-long lines.
//! * [`restart`] and [`detect`] (with [`leak`]): the restart policy and the detectors (stall,
//!   busy stall, stuck progress, suspected leak, memory limits) as sans-IO state machines that
//!   take `now` as an argument, tested on virtual time.
//! * [`procfs`]: what a process and its descendants use (RSS, VSZ, CPU, file descriptors,
//!   threads, disk IO), as pure parsers of `/proc` text plus a thin reader.
//! * [`cgroup`]: a cgroup per plugin process, so that the kernel enforces its memory limit,
//!   throttling point and CPU quota: which files to write for a layout and limits, the parsers of
//!   what the kernel reports (memory events, peak, CPU) and the alerts they make, the clean-up
//!   of a dead daemon's cgroups, as pure functions, and a thin IO shell under an injectable root.
//! * [`child`] and [`logfile`]: the IO shell: spawning in a process group (and in the process's
//!   cgroup, joined before exec), reading stdout and stderr on threads into per-plugin rotated
//!   log files, signals, stop with a grace period.
//!
//! `ballast-host` builds process plugins (and native plugins isolated in a worker process) on
//! these parts.
//!
//! # The control protocol
//!
//! A process plugin is any executable. Without the protocol (`protocol = "none"` in its config)
//! it is supervised for its lifecycle only: started, stopped with SIGTERM then SIGKILL,
//! restarted when it crashes, suspended with SIGSTOP, measured, its output logged. It learns its
//! level from the environment and is restarted when the level changes.
//!
//! With `protocol = "json-lines"` it also answers calls, changes level in place, drains and
//! hands over a checkpoint, like a native plugin. Each message is one JSON object on one line
//! (UTF-8, at most 8 MiB, `\n`-terminated): the host writes to the plugin's **stdin**, the
//! plugin writes to its **stdout** (and should flush after each line). Anything else the plugin
//! wants logged goes to **stderr** or in `log` messages; both end up in the plugin's log file.
//! Byte payloads (`data`, `checkpoint`) are standard base64. A plugin ignores message types and
//! fields it does not know, and should exit when its stdin reaches end-of-file.
//!
//! Environment: `BALLAST_PLUGIN` (its name), `BALLAST_LEVEL` (the level to start at),
//! `BALLAST_PROTOCOL` (`1`, or `none`).
//!
//! From the host (stdin):
//!
//! ```text
//! {"type":"init","name":"indexer","level":0,"config":{...},"checkpoint":"<base64>"}  first, once
//! {"type":"call","id":7,"data":"<base64 request>","deadline_ms":30000}
//!                                                  answer: chunks (optional), then response
//! {"type":"cancel","id":7}                                 stop call 7; nothing answers it
//! {"type":"set_level","id":8,"level":1}                    answer: response
//! {"type":"drain","id":9,"deadline_ms":5000}              answer: response when idle
//! {"type":"checkpoint","id":10}                           answer: response with data (optional)
//! ```
//!
//! From the plugin (stdout):
//!
//! ```text
//! {"type":"hello","name":"indexer","version":"1.0","protocol":1}   first: the plugin is up
//! {"type":"heartbeat"}                                     at least every stall threshold
//! {"type":"progress","percent":40,"phase":"indexing"}     optional, for long tasks
//! {"type":"chunk","id":7,"data":"<base64 part>"}          a part of call 7's answer
//! {"type":"response","id":7,"data":"<base64 answer>"}
//! {"type":"error","id":7,"message":"no such document"}    the request failed
//! {"type":"log","level":"info","message":"indexed 120 files"}
//! {"type":"health","status":"degraded","message":"index is stale"}
//! {"type":"gauge","name":"documents","value":120}
//! ```
//!
//! The plugin is enabled once `hello` arrives (within `start_timeout`). Every request with an
//! `id` (`cancel` aside) gets exactly one `response` or `error` with that id, unless it was
//! cancelled; calls may be answered in any order.
//! A `progress` whose phase and percent stay the same for the stuck threshold raises `stuck`;
//! `percent` 100 or no phase ends the tracking. `health` `unhealthy` marks the plugin failed,
//! like a native plugin's failed health check.
//!
//! **Streaming.** A call's answer may come in parts: any number of `chunk`s with the call's id,
//! in order, then its `response`, whose `data` (optional, may be empty) is the last part. The
//! caller gets each part as it arrives, before the call ends; a caller that does not stream
//! gets the parts joined. A plugin that answers with one `response` (protocol 1 before
//! streaming) still works: its answer is one part.
//!
//! **Deadlines and cancellation.** A call may carry `deadline_ms`: how many milliseconds were
//! left until its deadline when the host sent it (relative, so the clocks need not agree; absent
//! when the call has none; a call that is not streamed has its `call_timeout`). When the caller goes away or the deadline passes, the host sends
//! `cancel` with the call's id and stops waiting at once: the call fails for its caller, and
//! whatever still comes for that id (chunks, its response or error) is dropped. A plugin should
//! stop the work and may send nothing more for it; one that ignores `cancel` (and
//! `deadline_ms`) keeps working, it is just not waited for.
//!
//! **Bad lines.** A line that is not a valid message is written to the plugin's log and
//! reported once per process. When it answers a request whose id can still be read from it (a
//! malformed `chunk` or `response`, or the start of a line over the limit), that request fails
//! with the reason; the process and its other requests go on.

pub mod cgroup;
pub mod child;
pub mod detect;
pub mod exit;
pub mod leak;
pub mod logfile;
pub mod procfs;
pub mod protocol;
pub mod restart;

pub use child::{CgroupJoinError, Child, ChildEvent, Clock, EventSink, Spawn, spawn};
pub use detect::{DetectorConfig, Detectors, Progress};
pub use exit::{Exit, signal_name};
pub use leak::{LeakConfig, LeakDetector, LeakFinding};
pub use logfile::{LogFile, Rotation, Stream};
pub use procfs::{ProcError, ProcReader, TreeReading, UsageMeter};
pub use protocol::{
    HealthStatus, HostMessage, Line, LineBuffer, PROTOCOL_VERSION, PluginMessage, ProtocolError,
    encode_line, parse_host_message, parse_plugin_message,
};
pub use restart::{RestartDecision, RestartMode, RestartPolicy, RestartTracker};
