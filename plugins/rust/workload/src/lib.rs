//! The real work the example integrations do: a resident working set sized by config and level,
//! and a worker thread that spends a configured share of a core on it.
//!
//! The examples are integrations in miniature. Their memory and CPU cost must be real, so that
//! enabling, lowering or shedding one changes the process's RSS and CPU measurably: the end-to-end
//! load tests shed them to relieve real pressure.
//!
//! # Requests
//!
//! Every example built on [`Example`] (voice, android, discord, stubs) answers the same requests:
//!
//! * `stream:N[:BYTES[:DELAY_MS]]` streams `N` chunks (at most 10,000,000): chunk `i` is `i` in
//!   decimal followed by a newline, or with `BYTES` (at most 1 MiB) exactly that many bytes, `i`
//!   padded with dots and ended by a newline. With `DELAY_MS` (at most 60,000) it waits that long
//!   between two chunks. It looks for cancellation before every chunk and every millisecond of a
//!   wait, and stops as cancelled when it sees it. The last piece is the usual answer (below) with
//!   `"chunks": N`. Called without streaming, the chunks and the last piece come as one answer.
//! * `sleep-ignore:MS` sleeps `MS` milliseconds (at most 600,000) without ever looking at
//!   cancellation, then answers as usual: a plugin the host must stop waiting for.
//! * Anything else is answered at once with JSON naming the plugin, its level, the request echoed
//!   back (`echo`), the calls served and the working set's size (plus what the integration adds).

use std::marker::PhantomData;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use ballast_sdk::{CallContext, Cancelled, CreateContext, Health, Plugin, PluginError, PluginInfo};
use serde::{Deserialize, Serialize};

/// Page size used to touch memory so that it becomes resident.
const PAGE: usize = 4096;

/// How an example integration's work is sized. Every field is optional in the JSON config.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WorkloadConfig {
    /// Working set in MiB for each level, level 0 first. Levels beyond the list use the last entry.
    pub working_set_mb: Vec<u64>,
    /// Share of one core the worker spends at level 0, in `0..=1`; level `n` spends
    /// `cpu_duty / (n + 1)`.
    pub cpu_duty: f64,
    /// The worker's period in milliseconds.
    pub tick_ms: u64,
}

impl WorkloadConfig {
    /// A config with these per-level working sets, a duty of 2% and a 100 ms tick.
    pub fn with_working_sets(working_set_mb: &[u64]) -> Self {
        WorkloadConfig {
            working_set_mb: working_set_mb.to_vec(),
            cpu_duty: 0.02,
            tick_ms: 100,
        }
    }

    /// Parses the `workload` object of a plugin's JSON config over `defaults`; a missing object
    /// keeps the defaults. Errors name the field.
    pub fn from_plugin_config(config_json: &str, defaults: WorkloadConfig) -> Result<Self, String> {
        let value: serde_json::Value = serde_json::from_str(config_json)
            .map_err(|e| format!("config is not valid JSON: {e}"))?;
        let mut merged = serde_json::to_value(DefaultsView::from(&defaults))
            .map_err(|e| format!("internal: cannot encode defaults: {e}"))?;
        if let Some(overrides) = value.get("workload") {
            let Some(overrides) = overrides.as_object() else {
                return Err("config key `workload` must be a table".to_owned());
            };
            if let Some(target) = merged.as_object_mut() {
                for (k, v) in overrides {
                    target.insert(k.clone(), v.clone());
                }
            }
        }
        let config: WorkloadConfig =
            serde_json::from_value(merged).map_err(|e| format!("config key `workload`: {e}"))?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), String> {
        if !(0.0..=1.0).contains(&self.cpu_duty) {
            return Err(format!(
                "config key `workload.cpu_duty` must be between 0 and 1, got {}",
                self.cpu_duty
            ));
        }
        if self.tick_ms == 0 || self.tick_ms > 60_000 {
            return Err(format!(
                "config key `workload.tick_ms` must be 1..=60000, got {}",
                self.tick_ms
            ));
        }
        if let Some(mb) = self.working_set_mb.iter().find(|&&mb| mb > 1 << 20) {
            return Err(format!(
                "config key `workload.working_set_mb` entry {mb} is larger than 1 TiB"
            ));
        }
        Ok(())
    }

    /// The working set in bytes at `level`.
    pub fn working_set_bytes(&self, level: u32) -> u64 {
        let mb = self
            .working_set_mb
            .get(level as usize)
            .or(self.working_set_mb.last())
            .copied()
            .unwrap_or(0);
        mb << 20
    }

    fn duty(&self, level: u32) -> f64 {
        self.cpu_duty / f64::from(level + 1)
    }
}

impl Default for WorkloadConfig {
    fn default() -> Self {
        WorkloadConfig::with_working_sets(&[16])
    }
}

#[derive(Serialize)]
struct DefaultsView {
    working_set_mb: Vec<u64>,
    cpu_duty: f64,
    tick_ms: u64,
}

impl From<&WorkloadConfig> for DefaultsView {
    fn from(c: &WorkloadConfig) -> Self {
        DefaultsView {
            working_set_mb: c.working_set_mb.clone(),
            cpu_duty: c.cpu_duty,
            tick_ms: c.tick_ms,
        }
    }
}

/// State shared between the plugin and its worker thread.
struct Shared {
    working_set: Mutex<Vec<u8>>,
    duty_millis: AtomicU64,
    stop: AtomicBool,
    ticks: AtomicU64,
    checksum: AtomicU64,
}

/// A resident working set plus a worker thread with a CPU duty cycle.
pub struct Workload {
    config: WorkloadConfig,
    shared: Arc<Shared>,
    worker: Option<JoinHandle<()>>,
    level: u32,
}

impl Workload {
    /// Allocates and touches the working set of `level`; the worker starts with [`Workload::start`].
    pub fn new(config: WorkloadConfig, level: u32) -> Workload {
        let bytes = config.working_set_bytes(level);
        let shared = Arc::new(Shared {
            working_set: Mutex::new(resident(bytes)),
            duty_millis: AtomicU64::new((config.duty(level) * 1000.0) as u64),
            stop: AtomicBool::new(false),
            ticks: AtomicU64::new(0),
            checksum: AtomicU64::new(0),
        });
        Workload {
            config,
            shared,
            worker: None,
            level,
        }
    }

    /// Starts the worker thread (idempotent).
    pub fn start(&mut self, thread_name: &str) -> std::io::Result<()> {
        if self.worker.is_some() {
            return Ok(());
        }
        self.shared.stop.store(false, Ordering::SeqCst);
        let shared = Arc::clone(&self.shared);
        let tick = Duration::from_millis(self.config.tick_ms);
        let handle = std::thread::Builder::new()
            .name(thread_name.to_owned())
            .spawn(move || worker(&shared, tick))?;
        self.worker = Some(handle);
        Ok(())
    }

    /// Resizes the working set for `level` and changes the duty; memory no longer needed is given
    /// back to the operating system.
    pub fn set_level(&mut self, level: u32) {
        if level == self.level {
            return;
        }
        let bytes = self.config.working_set_bytes(level);
        let mut set = self
            .shared
            .working_set
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        // Drop the old set before allocating the new one so the peak is the larger of the two.
        *set = Vec::new();
        release_free_memory();
        *set = resident(bytes);
        drop(set);
        self.shared
            .duty_millis
            .store((self.config.duty(level) * 1000.0) as u64, Ordering::SeqCst);
        self.level = level;
        if let Some(handle) = &self.worker {
            handle.thread().unpark();
        }
    }

    /// Stops and joins the worker thread (idempotent).
    pub fn stop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        if let Some(handle) = self.worker.take() {
            handle.thread().unpark();
            let _ = handle.join();
        }
    }

    /// The current level.
    pub fn level(&self) -> u32 {
        self.level
    }

    /// Bytes in the working set now.
    pub fn working_set_bytes(&self) -> u64 {
        let set = self
            .shared
            .working_set
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        set.len() as u64
    }

    /// Worker ticks done so far.
    pub fn ticks(&self) -> u64 {
        self.shared.ticks.load(Ordering::Relaxed)
    }

    /// Whether the worker thread runs.
    pub fn running(&self) -> bool {
        self.worker.as_ref().is_some_and(|h| !h.is_finished())
    }

    /// Threads this workload runs (0 or 1).
    pub fn threads(&self) -> u32 {
        u32::from(self.running())
    }
}

impl Drop for Workload {
    fn drop(&mut self) {
        self.stop();
        let mut set = self
            .shared
            .working_set
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        *set = Vec::new();
        drop(set);
        release_free_memory();
    }
}

/// A vector of `bytes` bytes with every page written, so that it is resident.
fn resident(bytes: u64) -> Vec<u8> {
    let Ok(bytes) = usize::try_from(bytes) else {
        return Vec::new();
    };
    let mut v = vec![0u8; bytes];
    for (i, chunk) in v.chunks_mut(PAGE).enumerate() {
        chunk[0] = (i % 251) as u8 + 1;
    }
    v
}

/// Gives freed heap memory back to the operating system where the allocator supports it.
fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks glibc's own free lists; it has no preconditions.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// The worker: each tick, spend `duty` of it walking the working set, then sleep the rest. With
/// no duty it sleeps until it is woken (by a level change or by stop), costing nothing.
fn worker(shared: &Shared, tick: Duration) {
    let mut cursor = 0usize;
    while !shared.stop.load(Ordering::Relaxed) {
        let started = Instant::now();
        let duty = shared.duty_millis.load(Ordering::Relaxed) as f64 / 1000.0;
        if duty <= 0.0 {
            std::thread::park();
            continue;
        }
        let busy = tick.mul_f64(duty);
        let mut sum = shared.checksum.load(Ordering::Relaxed);
        {
            let mut set = shared.working_set.lock().unwrap_or_else(|e| e.into_inner());
            let len = set.len();
            while started.elapsed() < busy && len > 0 {
                for _ in 0..64 {
                    cursor = (cursor + PAGE) % len;
                    set[cursor] = set[cursor].wrapping_add(1);
                    sum = sum.wrapping_mul(31).wrapping_add(u64::from(set[cursor]));
                }
            }
        }
        shared.checksum.store(sum, Ordering::Relaxed);
        shared.ticks.fetch_add(1, Ordering::Relaxed);
        // Sleep the rest of the tick; stop and level changes unpark the thread early.
        if let Some(rest) = tick.checked_sub(started.elapsed()) {
            std::thread::park_timeout(rest);
        }
    }
}

/// State an example integration keeps across shed/restore cycles through its checkpoint.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    /// Requests answered over the integration's life, across instances.
    pub calls_served: u64,
    /// Instances created so far (1 for the first).
    pub generation: u64,
}

impl Counters {
    /// Restores counters from a checkpoint blob (empty or unreadable: start fresh), and counts
    /// this instance.
    pub fn restore(checkpoint: &[u8]) -> Counters {
        let mut c: Counters = serde_json::from_slice(checkpoint).unwrap_or_default();
        c.generation += 1;
        c
    }

    /// The checkpoint blob.
    pub fn to_checkpoint(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }
}

/// One MiB, for level declarations.
pub const MIB: u64 = 1 << 20;

/// What makes one example integration itself; [`Example`] does the rest.
pub trait Integration: Send + Sync + 'static {
    /// Name, version, levels and resource needs.
    const INFO: PluginInfo;
    /// The default working set of each level in MiB; the plugin config's `workload` table
    /// overrides it.
    const WORKING_SETS_MB: &'static [u64];

    /// Extra fields of the answer to a call at `level` (e.g. which model voice runs).
    fn describe(level: u32) -> serde_json::Map<String, serde_json::Value> {
        let _ = level;
        serde_json::Map::new()
    }
}

/// What a request asks of an example (see the crate docs' list of requests).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Request {
    /// `stream:N[:BYTES[:DELAY_MS]]`.
    Stream {
        /// How many chunks.
        chunks: u64,
        /// Each chunk's size; `None`: the index and a newline.
        bytes: Option<usize>,
        /// The wait between two chunks.
        delay: Duration,
    },
    /// `sleep-ignore:MS`.
    SleepIgnoringCancellation(Duration),
    /// Anything else: answered at once.
    Echo,
}

impl Request {
    /// Reads a request; `Err` names the request and what is wrong with it.
    pub fn parse(request: &[u8]) -> Result<Request, String> {
        let Ok(text) = std::str::from_utf8(request) else {
            return Ok(Request::Echo);
        };
        let text = text.trim();
        let number = |field: &str, value: &str, max: u64| -> Result<u64, String> {
            match value.parse::<u64>() {
                Ok(n) if n <= max => Ok(n),
                Ok(n) => Err(format!(
                    "request `{text}`: {field} is {n}, the most is {max}"
                )),
                Err(_) => Err(format!(
                    "request `{text}`: {field} `{value}` is not a whole number"
                )),
            }
        };
        if let Some(spec) = text.strip_prefix("stream:") {
            let fields: Vec<&str> = spec.split(':').collect();
            if fields.len() > 3 {
                return Err(format!(
                    "request `{text}` has too many fields; it is stream:N[:BYTES[:DELAY_MS]]"
                ));
            }
            let chunks = number("N", fields[0], 10_000_000)?;
            let bytes = fields
                .get(1)
                .map(|b| number("BYTES", b, 1 << 20))
                .transpose()?
                .map(|b| b as usize);
            let delay = fields
                .get(2)
                .map(|d| number("DELAY_MS", d, 60_000))
                .transpose()?
                .unwrap_or(0);
            return Ok(Request::Stream {
                chunks,
                bytes,
                delay: Duration::from_millis(delay),
            });
        }
        if let Some(ms) = text.strip_prefix("sleep-ignore:") {
            let ms = number("MS", ms, 600_000)?;
            return Ok(Request::SleepIgnoringCancellation(Duration::from_millis(
                ms,
            )));
        }
        Ok(Request::Echo)
    }
}

/// Chunk `index` of a stream: the index and a newline, or `bytes` bytes of the index padded with
/// dots and ended by a newline.
pub fn chunk(index: u64, bytes: Option<usize>) -> Vec<u8> {
    let mut chunk = index.to_string().into_bytes();
    match bytes {
        None => chunk.push(b'\n'),
        Some(0) => chunk.clear(),
        Some(n) => {
            chunk.resize(n, b'.');
            chunk[n - 1] = b'\n';
        }
    }
    chunk
}

/// Where a served request's chunks go: the host's call context, or (for a call that does not
/// stream) the one answer.
trait Chunks {
    /// Hands on one chunk; `Err` once the call is cancelled.
    fn send(&mut self, chunk: &[u8]) -> Result<(), Cancelled>;
    /// Whether the call was cancelled.
    fn cancelled(&self) -> bool;
}

impl Chunks for CallContext<'_> {
    fn send(&mut self, chunk: &[u8]) -> Result<(), Cancelled> {
        CallContext::send(self, chunk)
    }

    fn cancelled(&self) -> bool {
        self.is_cancelled()
    }
}

impl Chunks for Vec<u8> {
    fn send(&mut self, chunk: &[u8]) -> Result<(), Cancelled> {
        self.extend_from_slice(chunk);
        Ok(())
    }

    fn cancelled(&self) -> bool {
        false
    }
}

/// Waits `delay`, looking for cancellation every millisecond.
fn wait(delay: Duration, out: &dyn Chunks) -> Result<(), Cancelled> {
    let until = Instant::now() + delay;
    loop {
        if out.cancelled() {
            return Err(Cancelled);
        }
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(());
        }
        std::thread::sleep(left.min(Duration::from_millis(1)));
    }
}

/// An example integration as a plugin: the workload sized by config and level, counters that
/// survive a checkpoint, and a JSON answer naming the plugin, its level, the request echoed back
/// and the calls served; it streams on request (see the crate docs' list of requests). Export
/// one with `export_plugin!(Example<MyIntegration>)`.
pub struct Example<I: Integration> {
    workload: Workload,
    counters: Mutex<Counters>,
    started: bool,
    _integration: PhantomData<fn() -> I>,
}

impl<I: Integration> Example<I> {
    /// Serves `request`, handing streamed chunks to `out`; returns the last piece.
    fn serve(&self, request: &[u8], out: &mut dyn Chunks) -> Result<Vec<u8>, PluginError> {
        let name = I::INFO.name;
        let parsed =
            Request::parse(request).map_err(|e| PluginError::invalid(format!("{name}: {e}")))?;
        let mut extra = serde_json::Map::new();
        match parsed {
            Request::Stream {
                chunks,
                bytes,
                delay,
            } => {
                for i in 0..chunks {
                    if i > 0 && !delay.is_zero() {
                        wait(delay, out).map_err(|c| stopped(name, i, chunks, c))?;
                    }
                    if out.cancelled() {
                        return Err(stopped(name, i, chunks, Cancelled));
                    }
                    out.send(&chunk(i, bytes))
                        .map_err(|c| stopped(name, i, chunks, c))?;
                }
                extra.insert("chunks".into(), chunks.into());
            }
            Request::SleepIgnoringCancellation(time) => std::thread::sleep(time),
            Request::Echo => {}
        }
        self.answer(request, extra)
    }

    /// The JSON answer to `request`, counting the call.
    fn answer(
        &self,
        request: &[u8],
        extra: serde_json::Map<String, serde_json::Value>,
    ) -> Result<Vec<u8>, PluginError> {
        let calls_served = {
            let mut c = self.counters.lock().unwrap_or_else(|e| e.into_inner());
            c.calls_served += 1;
            c.calls_served
        };
        let level = self.workload.level();
        let mut body = serde_json::Map::new();
        body.insert("plugin".into(), I::INFO.name.into());
        body.insert("level".into(), level.into());
        body.insert(
            "echo".into(),
            String::from_utf8_lossy(request).into_owned().into(),
        );
        body.insert("calls_served".into(), calls_served.into());
        body.insert(
            "working_set_bytes".into(),
            self.workload.working_set_bytes().into(),
        );
        body.extend(extra);
        body.extend(I::describe(level));
        serde_json::to_vec(&body).map_err(|e| PluginError::new(format!("{}: {e}", I::INFO.name)))
    }
}

/// The error of a stream stopped as cancelled before chunk `at` of `of`.
fn stopped(name: &str, at: u64, of: u64, _: Cancelled) -> PluginError {
    PluginError::cancelled(format!("{name}: stream stopped after {at} of {of} chunks"))
}

impl<I: Integration> Plugin for Example<I> {
    const INFO: PluginInfo = I::INFO;

    fn create(ctx: CreateContext<'_>) -> Result<Self, PluginError> {
        let name = I::INFO.name;
        let defaults = WorkloadConfig::with_working_sets(I::WORKING_SETS_MB);
        let config = WorkloadConfig::from_plugin_config(ctx.config_json(), defaults)
            .map_err(|e| PluginError::invalid(format!("{name}: {e}")))?;
        let counters = Counters::restore(ctx.checkpoint());
        log::info!(
            "{name}: creating instance {} with a {} MiB working set ({} calls served before)",
            counters.generation,
            config.working_set_bytes(ctx.level()) >> 20,
            counters.calls_served
        );
        Ok(Example {
            workload: Workload::new(config, ctx.level()),
            counters: Mutex::new(counters),
            started: false,
            _integration: PhantomData,
        })
    }

    fn start(&mut self) -> Result<(), PluginError> {
        let name = I::INFO.name;
        self.workload
            .start(&format!("{name}-worker"))
            .map_err(|e| {
                PluginError::new(format!("{name}: cannot start the worker thread: {e}"))
            })?;
        self.started = true;
        Ok(())
    }

    fn set_level(&mut self, level: u32) -> Result<(), PluginError> {
        self.workload.set_level(level);
        Ok(())
    }

    fn stop(&mut self) -> Result<(), PluginError> {
        self.workload.stop();
        self.started = false;
        Ok(())
    }

    fn call(&self, request: &[u8]) -> Result<Vec<u8>, PluginError> {
        let mut whole = Vec::new();
        let last = self.serve(request, &mut whole)?;
        whole.extend_from_slice(&last);
        Ok(whole)
    }

    fn call_stream(
        &self,
        request: &[u8],
        ctx: &mut CallContext<'_>,
    ) -> Result<Vec<u8>, PluginError> {
        self.serve(request, ctx)
    }

    fn health(&self) -> Health {
        if self.started && !self.workload.running() {
            Health::Unhealthy(format!(
                "{}: the worker thread is not running",
                I::INFO.name
            ))
        } else {
            Health::Healthy
        }
    }

    fn threads(&self) -> u32 {
        self.workload.threads()
    }

    fn checkpoint(&self) -> Result<Option<Vec<u8>>, PluginError> {
        Ok(Some(
            self.counters
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .to_checkpoint(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_overrides_defaults_field_by_field() {
        let defaults = WorkloadConfig::with_working_sets(&[64, 8]);
        let c = WorkloadConfig::from_plugin_config(
            r#"{"workload":{"cpu_duty":0.5}}"#,
            defaults.clone(),
        )
        .unwrap();
        assert_eq!(c.working_set_mb, vec![64, 8]);
        assert_eq!(c.cpu_duty, 0.5);
        assert_eq!(
            WorkloadConfig::from_plugin_config("{}", defaults.clone()).unwrap(),
            defaults
        );
        assert_eq!(c.working_set_bytes(1), 8 << 20);
        assert_eq!(c.working_set_bytes(5), 8 << 20);
    }

    #[test]
    fn bad_config_names_the_field() {
        let d = WorkloadConfig::default();
        let e = WorkloadConfig::from_plugin_config(r#"{"workload":{"cpu_duty":2}}"#, d.clone())
            .unwrap_err();
        assert!(e.contains("workload.cpu_duty"), "{e}");
        let e = WorkloadConfig::from_plugin_config(r#"{"workload":{"colour":1}}"#, d.clone())
            .unwrap_err();
        assert!(e.contains("unknown field `colour`"), "{e}");
        let e = WorkloadConfig::from_plugin_config("not json", d).unwrap_err();
        assert!(e.contains("not valid JSON"), "{e}");
    }

    #[test]
    fn levels_resize_the_working_set_and_the_worker_runs() {
        let mut w = Workload::new(WorkloadConfig::with_working_sets(&[2, 1]), 0);
        assert_eq!(w.working_set_bytes(), 2 << 20);
        w.start("test-worker").unwrap();
        w.set_level(1);
        assert_eq!(w.working_set_bytes(), 1 << 20);
        let deadline = Instant::now() + Duration::from_secs(10);
        while w.ticks() == 0 {
            assert!(
                Instant::now() < deadline,
                "the worker started but did not tick within 10 s"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(w.threads(), 1);
        w.stop();
        assert_eq!(w.threads(), 0);
    }

    #[test]
    fn requests_parse_and_bad_ones_name_the_field() {
        assert_eq!(
            Request::parse(b"stream:3"),
            Ok(Request::Stream {
                chunks: 3,
                bytes: None,
                delay: Duration::ZERO
            })
        );
        assert_eq!(
            Request::parse(b"stream:10000:64:5\n"),
            Ok(Request::Stream {
                chunks: 10_000,
                bytes: Some(64),
                delay: Duration::from_millis(5)
            })
        );
        assert_eq!(
            Request::parse(b"sleep-ignore:250"),
            Ok(Request::SleepIgnoringCancellation(Duration::from_millis(
                250
            )))
        );
        assert_eq!(Request::parse(b"hello"), Ok(Request::Echo));
        assert_eq!(Request::parse(&[0xff, 0xfe]), Ok(Request::Echo));
        assert_eq!(
            Request::parse(b"stream:x").unwrap_err(),
            "request `stream:x`: N `x` is not a whole number"
        );
        assert_eq!(
            Request::parse(b"stream:1:2097152").unwrap_err(),
            "request `stream:1:2097152`: BYTES is 2097152, the most is 1048576"
        );
        assert!(
            Request::parse(b"stream:1:2:3:4")
                .unwrap_err()
                .contains("too many fields")
        );
        assert!(Request::parse(b"sleep-ignore:").unwrap_err().contains("MS"));
    }

    #[test]
    fn chunks_carry_their_index_at_the_size_asked() {
        assert_eq!(chunk(12, None), b"12\n");
        assert_eq!(chunk(12, Some(6)), b"12...\n");
        assert_eq!(chunk(12345, Some(3)), b"12\n");
        assert_eq!(chunk(7, Some(1)), b"\n");
        assert!(chunk(7, Some(0)).is_empty());
    }

    #[test]
    fn a_wait_ends_early_when_cancelled() {
        /// A call cancelled from the start.
        struct Gone;
        impl Chunks for Gone {
            fn send(&mut self, _: &[u8]) -> Result<(), Cancelled> {
                Err(Cancelled)
            }
            fn cancelled(&self) -> bool {
                true
            }
        }
        // The hour-long wait returns at once with the cancellation.
        assert_eq!(wait(Duration::from_secs(3600), &Gone), Err(Cancelled));
        assert_eq!(wait(Duration::ZERO, &Vec::new()), Ok(()));
    }

    #[test]
    fn counters_survive_a_checkpoint() {
        let mut c = Counters::restore(&[]);
        assert_eq!(c.generation, 1);
        c.calls_served = 7;
        let again = Counters::restore(&c.to_checkpoint());
        assert_eq!(
            again,
            Counters {
                calls_served: 7,
                generation: 2
            }
        );
        assert_eq!(Counters::restore(b"garbage").generation, 1);
    }
}
