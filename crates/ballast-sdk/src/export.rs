//! The `extern "C"` side of a plugin: the descriptor and the vtable functions that
//! [`crate::export_plugin!`] exports, each behind a panic guard. Not for direct use.

use std::any::Any;
use std::ffi::c_void;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::RwLock;
use std::time::Duration;

use ballast_abi::{
    BALLAST_ABI_MAJOR, BALLAST_ABI_MINOR, BALLAST_CAP_ALLOC_STATS, BALLAST_CAP_CHECKPOINT,
    BALLAST_CAP_DRAIN, BALLAST_CAP_STREAMING, BALLAST_CAP_THREAD_SAFE_CALLS, BALLAST_PLUGIN_MAGIC,
    BALLAST_STATUS_CANCELLED, BALLAST_STATUS_DEGRADED, BALLAST_STATUS_ERROR,
    BALLAST_STATUS_INVALID_ARGUMENT, BALLAST_STATUS_OK, BALLAST_STATUS_PANIC,
    BALLAST_STATUS_UNSUPPORTED, BallastBuffer, BallastBytes, BallastCallContext,
    BallastDescriptorHeader, BallastHostApi, BallastLevelHints, BallastMessageBuf,
    BallastPluginDescriptor, BallastPluginVTable, BallastResourceHints, BallastStats,
    BallastStatus, BallastStr,
};

use crate::{CallContext, CreateContext, ErrorKind, Health, Host, Plugin, PluginError};

/// The descriptor of one plugin type, built once and kept for the life of the library.
pub struct Descriptor {
    descriptor: BallastPluginDescriptor,
    // The descriptor points into these; they are never moved out or dropped while it is used.
    _vtable: Box<BallastPluginVTable>,
    _levels: Box<[BallastLevelHints]>,
}

// SAFETY: the descriptor is immutable after construction and points only to static strings and to
// the boxes it owns.
unsafe impl Send for Descriptor {}
// SAFETY: as above.
unsafe impl Sync for Descriptor {}

impl Descriptor {
    /// Builds the descriptor of `P`. `counting_allocator` says whether the SDK's allocator is the
    /// library's global allocator.
    pub fn new<P: Plugin>(counting_allocator: bool) -> Descriptor {
        let info = P::INFO;
        let levels: Box<[BallastLevelHints]> = info
            .levels
            .iter()
            .map(|l| BallastLevelHints {
                name: BallastStr::from_static(l.name),
                memory_min_bytes: l.memory_min_bytes,
                memory_preferred_bytes: l.memory_preferred_bytes,
                gpu_memory_bytes: l.gpu_memory_bytes,
            })
            .collect();
        let vtable = Box::new(BallastPluginVTable {
            struct_size: size_of::<BallastPluginVTable>() as u32,
            reserved: 0,
            create: Some(create::<P>),
            start: Some(start::<P>),
            set_level: Some(set_level::<P>),
            drain: Some(drain::<P>),
            stop: Some(stop::<P>),
            destroy: Some(destroy::<P>),
            call: Some(call::<P>),
            free_buffer: Some(free_buffer),
            health: Some(health::<P>),
            stats: Some(stats::<P>),
            checkpoint: Some(checkpoint::<P>),
            call_stream: Some(call_stream::<P>),
        });
        let mut capabilities = BALLAST_CAP_THREAD_SAFE_CALLS
            | BALLAST_CAP_CHECKPOINT
            | BALLAST_CAP_DRAIN
            | BALLAST_CAP_STREAMING;
        if counting_allocator {
            capabilities |= BALLAST_CAP_ALLOC_STATS;
        }
        let descriptor = BallastPluginDescriptor {
            header: BallastDescriptorHeader {
                magic: BALLAST_PLUGIN_MAGIC,
                abi_major: BALLAST_ABI_MAJOR,
                abi_minor: BALLAST_ABI_MINOR,
                struct_size: size_of::<BallastPluginDescriptor>() as u32,
                reserved: 0,
                name: BallastStr::from_static(info.name),
            },
            version: BallastStr::from_static(info.version),
            sdk_version: BallastStr::from_static(crate::SDK_VERSION),
            capabilities,
            hints: BallastResourceHints {
                cpu_share_millis: (info.cpu_share * 1000.0)
                    .round()
                    .clamp(0.0, u32::MAX as f64) as u32,
                needs_gpu: u32::from(info.needs_gpu),
                n_levels: levels.len() as u32,
                reserved: 0,
                levels: levels.as_ptr(),
            },
            vtable: &*vtable,
        };
        Descriptor {
            descriptor,
            _vtable: vtable,
            _levels: levels,
        }
    }

    /// The pointer the entry symbol returns.
    pub fn as_ptr(&self) -> *const BallastPluginDescriptor {
        &self.descriptor
    }
}

/// One plugin instance behind the ABI: lifecycle methods take the write lock, calls the read lock.
struct Instance<P> {
    plugin: RwLock<P>,
}

fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        format!("plugin panicked: {s}")
    } else if let Some(s) = payload.downcast_ref::<String>() {
        format!("plugin panicked: {s}")
    } else {
        "plugin panicked".to_owned()
    }
}

/// Writes `message` into the host's buffer, truncated at a character boundary.
fn write_message(buf: *mut BallastMessageBuf, message: &str) {
    if buf.is_null() {
        return;
    }
    // SAFETY: the host passes a valid, exclusive message buffer for the duration of the call.
    let buf = unsafe { &mut *buf };
    if buf.ptr.is_null() {
        buf.len = 0;
        return;
    }
    let mut n = message.len().min(buf.cap);
    while !message.is_char_boundary(n) {
        n -= 1;
    }
    // SAFETY: `ptr` is valid for `cap` bytes and `n <= cap`; the regions cannot overlap.
    unsafe { std::ptr::copy_nonoverlapping(message.as_ptr(), buf.ptr, n) };
    buf.len = n;
}

fn status_of(error: &PluginError) -> BallastStatus {
    match error.kind() {
        ErrorKind::Failed => BALLAST_STATUS_ERROR,
        ErrorKind::Unsupported => BALLAST_STATUS_UNSUPPORTED,
        ErrorKind::InvalidArgument => BALLAST_STATUS_INVALID_ARGUMENT,
        ErrorKind::Cancelled => BALLAST_STATUS_CANCELLED,
    }
}

/// Runs `f` with panics caught; errors and panics are written to `err` as a status.
fn guard(
    err: *mut BallastMessageBuf,
    f: impl FnOnce() -> Result<(), PluginError>,
) -> BallastStatus {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(())) => BALLAST_STATUS_OK,
        Ok(Err(error)) => {
            write_message(err, error.message());
            status_of(&error)
        }
        Err(payload) => {
            write_message(err, &panic_message(payload.as_ref()));
            BALLAST_STATUS_PANIC
        }
    }
}

/// The instance behind a host pointer.
fn instance<'a, P>(ptr: *mut c_void) -> Result<&'a Instance<P>, PluginError> {
    if ptr.is_null() {
        return Err(PluginError::invalid("null instance pointer"));
    }
    // SAFETY: the host passes back the pointer `create` returned, until `destroy`.
    Ok(unsafe { &*ptr.cast::<Instance<P>>() })
}

fn with_mut<P: Plugin>(
    ptr: *mut c_void,
    f: impl FnOnce(&mut P) -> Result<(), PluginError>,
) -> Result<(), PluginError> {
    let instance = instance::<P>(ptr)?;
    let mut plugin = instance
        .plugin
        .write()
        .map_err(|_| PluginError::new("instance is unusable after an earlier panic"))?;
    f(&mut plugin)
}

/// Reads borrowed bytes from the host.
fn bytes<'a>(b: BallastBytes) -> &'a [u8] {
    if b.ptr.is_null() || b.len == 0 {
        &[]
    } else {
        // SAFETY: the host passes a valid slice for the duration of the call.
        unsafe { std::slice::from_raw_parts(b.ptr, b.len) }
    }
}

fn into_buffer(bytes: Vec<u8>) -> BallastBuffer {
    if bytes.capacity() == 0 {
        return BallastBuffer::EMPTY;
    }
    let mut bytes = std::mem::ManuallyDrop::new(bytes);
    BallastBuffer {
        ptr: bytes.as_mut_ptr(),
        len: bytes.len(),
        owner: bytes.capacity(),
    }
}

unsafe extern "C" fn create<P: Plugin>(
    host: *const BallastHostApi,
    config_json: BallastBytes,
    checkpoint: BallastBytes,
    out_instance: *mut *mut c_void,
    err: *mut BallastMessageBuf,
) -> BallastStatus {
    guard(err, || {
        let host = Host::from_raw(host).ok_or_else(|| PluginError::invalid("null host api"))?;
        if out_instance.is_null() {
            return Err(PluginError::invalid("null instance out-pointer"));
        }
        crate::host::install(&host, P::INFO.name);
        let config = std::str::from_utf8(bytes(config_json))
            .map_err(|e| PluginError::invalid(format!("config is not UTF-8: {e}")))?;
        let config = if config.trim().is_empty() {
            "{}"
        } else {
            config
        };
        let ctx = CreateContext {
            host,
            config_json: config,
            checkpoint: bytes(checkpoint),
            level: 0,
        };
        let plugin = P::create(ctx)?;
        let instance = Box::new(Instance {
            plugin: RwLock::new(plugin),
        });
        // SAFETY: checked non-null above; the host owns the pointer until `destroy`.
        unsafe { *out_instance = Box::into_raw(instance).cast() };
        Ok(())
    })
}

unsafe extern "C" fn start<P: Plugin>(
    ptr: *mut c_void,
    err: *mut BallastMessageBuf,
) -> BallastStatus {
    guard(err, || with_mut::<P>(ptr, P::start))
}

unsafe extern "C" fn set_level<P: Plugin>(
    ptr: *mut c_void,
    level: u32,
    err: *mut BallastMessageBuf,
) -> BallastStatus {
    guard(err, || {
        let n = P::INFO.levels.len().max(1);
        if level as usize >= n {
            return Err(PluginError::unsupported(format!(
                "level {level} is not supported ({} has levels 0..={})",
                P::INFO.name,
                n - 1
            )));
        }
        with_mut::<P>(ptr, |p| p.set_level(level))
    })
}

unsafe extern "C" fn drain<P: Plugin>(
    ptr: *mut c_void,
    deadline_ms: u64,
    err: *mut BallastMessageBuf,
) -> BallastStatus {
    guard(err, || {
        with_mut::<P>(ptr, |p| p.drain(Duration::from_millis(deadline_ms)))
    })
}

unsafe extern "C" fn stop<P: Plugin>(
    ptr: *mut c_void,
    err: *mut BallastMessageBuf,
) -> BallastStatus {
    guard(err, || with_mut::<P>(ptr, P::stop))
}

unsafe extern "C" fn destroy<P: Plugin>(
    ptr: *mut c_void,
    err: *mut BallastMessageBuf,
) -> BallastStatus {
    guard(err, || {
        if ptr.is_null() {
            return Err(PluginError::invalid("null instance pointer"));
        }
        // SAFETY: the pointer came from `Box::into_raw` in `create` and the host gives it back once.
        drop(unsafe { Box::from_raw(ptr.cast::<Instance<P>>()) });
        Ok(())
    })
}

unsafe extern "C" fn call<P: Plugin>(
    ptr: *mut c_void,
    request: BallastBytes,
    response: *mut BallastBuffer,
    err: *mut BallastMessageBuf,
) -> BallastStatus {
    guard(err, || {
        if response.is_null() {
            return Err(PluginError::invalid("null response out-pointer"));
        }
        let instance = instance::<P>(ptr)?;
        let plugin = instance
            .plugin
            .read()
            .map_err(|_| PluginError::new("instance is unusable after an earlier panic"))?;
        let answer = plugin.call(bytes(request))?;
        // SAFETY: checked non-null above; the host owns the buffer until it calls `free_buffer`.
        unsafe { *response = into_buffer(answer) };
        Ok(())
    })
}

unsafe extern "C" fn call_stream<P: Plugin>(
    ptr: *mut c_void,
    request: BallastBytes,
    ctx: *const BallastCallContext,
    response: *mut BallastBuffer,
    err: *mut BallastMessageBuf,
) -> BallastStatus {
    guard(err, || {
        if response.is_null() {
            return Err(PluginError::invalid("null response out-pointer"));
        }
        // SAFETY: the host passes a context valid for this call, on this thread, or null.
        let mut ctx = unsafe { CallContext::from_raw(ctx) }
            .ok_or_else(|| PluginError::invalid("null call context"))?;
        let instance = instance::<P>(ptr)?;
        let plugin = instance
            .plugin
            .read()
            .map_err(|_| PluginError::new("instance is unusable after an earlier panic"))?;
        let last = plugin.call_stream(bytes(request), &mut ctx)?;
        let mut answer = ctx.take_pending();
        let answer = if answer.is_empty() {
            last
        } else {
            answer.extend_from_slice(&last);
            answer
        };
        // SAFETY: checked non-null above; the host owns the buffer until it calls `free_buffer`.
        unsafe { *response = into_buffer(answer) };
        Ok(())
    })
}

unsafe extern "C" fn free_buffer(buffer: BallastBuffer) {
    if buffer.ptr.is_null() || buffer.owner == 0 {
        return;
    }
    // SAFETY: the buffer was made by `into_buffer` from a Vec of this length and capacity, and the
    // host frees each buffer once. Dropping a Vec<u8> cannot panic.
    drop(unsafe { Vec::from_raw_parts(buffer.ptr, buffer.len, buffer.owner) });
}

unsafe extern "C" fn health<P: Plugin>(
    ptr: *mut c_void,
    message: *mut BallastMessageBuf,
) -> BallastStatus {
    let result = catch_unwind(AssertUnwindSafe(|| {
        let instance = instance::<P>(ptr)?;
        let plugin = instance
            .plugin
            .read()
            .map_err(|_| PluginError::new("instance is unusable after an earlier panic"))?;
        Ok::<Health, PluginError>(plugin.health())
    }));
    match result {
        Ok(Ok(Health::Healthy)) => {
            write_message(message, "");
            BALLAST_STATUS_OK
        }
        Ok(Ok(Health::Degraded(m))) => {
            write_message(message, &m);
            BALLAST_STATUS_DEGRADED
        }
        Ok(Ok(Health::Unhealthy(m))) => {
            write_message(message, &m);
            BALLAST_STATUS_ERROR
        }
        Ok(Err(error)) => {
            write_message(message, error.message());
            status_of(&error)
        }
        Err(payload) => {
            write_message(message, &panic_message(payload.as_ref()));
            BALLAST_STATUS_PANIC
        }
    }
}

unsafe extern "C" fn stats<P: Plugin>(ptr: *mut c_void, out: *mut BallastStats) -> BallastStatus {
    let result = catch_unwind(AssertUnwindSafe(|| {
        if out.is_null() {
            return BALLAST_STATUS_INVALID_ARGUMENT;
        }
        let threads = match instance::<P>(ptr).map(|i| i.plugin.read()) {
            Ok(Ok(plugin)) => plugin.threads(),
            _ => 0,
        };
        let a = crate::alloc::alloc_stats();
        // SAFETY: checked non-null; the host allocated `struct_size` bytes and we write only the
        // 1.0 fields, which fit in any size the host may declare (it never declares less).
        let out = unsafe { &mut *out };
        if (out.struct_size as usize) < size_of::<BallastStats>() {
            return BALLAST_STATUS_INVALID_ARGUMENT;
        }
        out.threads = threads;
        out.live_bytes = a.live_bytes;
        out.peak_bytes = a.peak_bytes;
        out.allocations = a.allocations;
        BALLAST_STATUS_OK
    }));
    result.unwrap_or(BALLAST_STATUS_PANIC)
}

unsafe extern "C" fn checkpoint<P: Plugin>(
    ptr: *mut c_void,
    out: *mut BallastBuffer,
    err: *mut BallastMessageBuf,
) -> BallastStatus {
    guard(err, || {
        if out.is_null() {
            return Err(PluginError::invalid("null checkpoint out-pointer"));
        }
        let instance = instance::<P>(ptr)?;
        let plugin = instance
            .plugin
            .read()
            .map_err(|_| PluginError::new("instance is unusable after an earlier panic"))?;
        let blob = plugin.checkpoint()?.unwrap_or_default();
        // SAFETY: checked non-null above; the host frees the buffer with `free_buffer`.
        unsafe { *out = into_buffer(blob) };
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{LevelInfo, PluginInfo};

    struct Echo {
        level: u32,
    }

    impl Plugin for Echo {
        const INFO: PluginInfo = PluginInfo {
            name: "echo",
            version: "1.0.0",
            levels: &[LevelInfo::new("full", 1024), LevelInfo::new("small", 16)],
            cpu_share: 0.25,
            needs_gpu: false,
        };

        fn create(ctx: CreateContext<'_>) -> Result<Self, PluginError> {
            if ctx.config_json().contains("fail") {
                return Err(PluginError::invalid("config says fail"));
            }
            if ctx.config_json().contains("panic") {
                panic!("config says panic");
            }
            Ok(Echo { level: 0 })
        }

        fn set_level(&mut self, level: u32) -> Result<(), PluginError> {
            self.level = level;
            Ok(())
        }

        fn call(&self, request: &[u8]) -> Result<Vec<u8>, PluginError> {
            if request == b"boom" {
                panic!("boom requested");
            }
            let mut out = format!("echo@{}:", self.level).into_bytes();
            out.extend_from_slice(request);
            Ok(out)
        }

        fn call_stream(
            &self,
            request: &[u8],
            ctx: &mut CallContext<'_>,
        ) -> Result<Vec<u8>, PluginError> {
            match std::str::from_utf8(request).unwrap_or("") {
                "deadline" => Ok(format!("{:?}", ctx.deadline_ms()).into_bytes()),
                "boom" => {
                    ctx.send(b"before the panic")?;
                    panic!("boom while streaming");
                }
                "watch" => {
                    if ctx.is_cancelled() {
                        return Err(PluginError::cancelled("saw it before the first chunk"));
                    }
                    ctx.send(b"watched")?;
                    Ok(Vec::new())
                }
                count => {
                    let n: usize = count.parse().map_err(|_| PluginError::invalid("a count"))?;
                    for i in 0..n {
                        ctx.send(i.to_string().as_bytes())?;
                    }
                    Ok(b"end".to_vec())
                }
            }
        }
    }

    /// A plugin that keeps the SDK's default `call_stream`.
    struct Plain;

    impl Plugin for Plain {
        const INFO: PluginInfo = PluginInfo {
            name: "plain",
            version: "1.0.0",
            levels: &[LevelInfo::new("full", 1024)],
            cpu_share: 0.0,
            needs_gpu: false,
        };

        fn create(_ctx: CreateContext<'_>) -> Result<Self, PluginError> {
            Ok(Plain)
        }

        fn call(&self, request: &[u8]) -> Result<Vec<u8>, PluginError> {
            Ok([b"plain:".as_slice(), request].concat())
        }
    }

    /// The host's side of a streamed call, faked: records the chunks and cancels the call once
    /// it has `cancel_after` of them.
    struct FakeCall {
        chunks: Vec<Vec<u8>>,
        cancel_after: usize,
        cancelled: bool,
    }

    impl FakeCall {
        /// A call that takes every chunk and is cancelled after `cancel_after` of them.
        fn new(cancel_after: usize) -> FakeCall {
            FakeCall {
                chunks: Vec::new(),
                cancel_after,
                cancelled: false,
            }
        }
    }

    unsafe extern "C" fn fake_send(host_data: *mut c_void, chunk: BallastBytes) -> BallastStatus {
        // SAFETY: the tests pass a live `FakeCall` as host data.
        let call = unsafe { &mut *host_data.cast::<FakeCall>() };
        if call.cancelled {
            return BALLAST_STATUS_CANCELLED;
        }
        call.chunks.push(bytes(chunk).to_vec());
        call.cancelled = call.chunks.len() >= call.cancel_after;
        BALLAST_STATUS_OK
    }

    unsafe extern "C" fn fake_is_cancelled(host_data: *mut c_void) -> u32 {
        // SAFETY: as in `fake_send`.
        u32::from(unsafe { &*host_data.cast::<FakeCall>() }.cancelled)
    }

    fn fake_context(call: &mut FakeCall, deadline_ms: u64) -> BallastCallContext {
        BallastCallContext {
            struct_size: size_of::<BallastCallContext>() as u32,
            abi_minor: BALLAST_ABI_MINOR,
            host_data: (call as *mut FakeCall).cast(),
            send: Some(fake_send),
            is_cancelled: Some(fake_is_cancelled),
            deadline_ms,
        }
    }

    /// Calls the exported `call_stream` of the live instance `inst` with `ctx`; returns the
    /// status, the answer and the message.
    fn stream<P: Plugin>(
        inst: *mut c_void,
        request: &str,
        ctx: &BallastCallContext,
    ) -> (BallastStatus, Vec<u8>, String) {
        let mut msg = Msg::new();
        let mut response = BallastBuffer::EMPTY;
        // SAFETY: a live instance, a context valid for the call, valid out-pointers.
        let status = unsafe {
            call_stream::<P>(
                inst,
                BallastBytes::new(request.as_bytes()),
                ctx,
                &mut response,
                &mut msg.buf,
            )
        };
        let answer = bytes(BallastBytes {
            ptr: response.ptr,
            len: response.len,
        })
        .to_vec();
        // SAFETY: the buffer was handed out by this library and is given back once.
        unsafe { free_buffer(response) };
        (status, answer, msg.text().to_owned())
    }

    fn live<P: Plugin>() -> *mut c_void {
        let mut msg = Msg::new();
        let mut out = std::ptr::null_mut();
        // SAFETY: valid host table, config bytes, out-pointer and message buffer.
        let status = unsafe {
            create::<P>(
                host_api(),
                BallastBytes::EMPTY,
                BallastBytes::EMPTY,
                &mut out,
                &mut msg.buf,
            )
        };
        assert_eq!(status, BALLAST_STATUS_OK, "{}", msg.text());
        out
    }

    fn destroy_live<P: Plugin>(inst: *mut c_void) {
        let mut msg = Msg::new();
        // SAFETY: a live instance from `live`, destroyed once.
        assert_eq!(
            unsafe { destroy::<P>(inst, &mut msg.buf) },
            BALLAST_STATUS_OK
        );
    }

    unsafe extern "C" fn log(_: *mut c_void, _: u32, _: BallastStr, _: BallastStr) {}
    unsafe extern "C" fn now(_: *mut c_void) -> u64 {
        42
    }
    unsafe extern "C" fn metric(_: *mut c_void, _: BallastStr, _: f64) {}
    unsafe extern "C" fn report(_: *mut c_void, _: u32, _: BallastStr) {}

    fn host_api() -> &'static BallastHostApi {
        Box::leak(Box::new(BallastHostApi {
            struct_size: size_of::<BallastHostApi>() as u32,
            abi_minor: 0,
            host_data: std::ptr::null_mut(),
            log,
            now_ms: now,
            emit_metric: metric,
            report_state: report,
        }))
    }

    struct Msg {
        bytes: [u8; 256],
        buf: BallastMessageBuf,
    }

    impl Msg {
        fn new() -> Box<Msg> {
            let mut m = Box::new(Msg {
                bytes: [0; 256],
                buf: BallastMessageBuf {
                    ptr: std::ptr::null_mut(),
                    cap: 256,
                    len: 0,
                },
            });
            m.buf.ptr = m.bytes.as_mut_ptr();
            m
        }
        fn text(&self) -> &str {
            std::str::from_utf8(&self.bytes[..self.buf.len]).unwrap()
        }
    }

    fn create_with(config: &str) -> (BallastStatus, *mut c_void, String) {
        let mut msg = Msg::new();
        let mut out = std::ptr::null_mut();
        // SAFETY: valid host table, config bytes, out-pointer and message buffer.
        let status = unsafe {
            create::<Echo>(
                host_api(),
                BallastBytes::new(config.as_bytes()),
                BallastBytes::EMPTY,
                &mut out,
                &mut msg.buf,
            )
        };
        (status, out, msg.text().to_owned())
    }

    #[test]
    fn descriptor_describes_the_plugin() {
        let d = Descriptor::new::<Echo>(true);
        // SAFETY: the descriptor and its pointers live as long as `d`.
        let desc = unsafe { &*d.as_ptr() };
        assert_eq!(desc.header.magic, BALLAST_PLUGIN_MAGIC);
        assert_eq!(desc.header.abi_major, BALLAST_ABI_MAJOR);
        assert_eq!(desc.hints.n_levels, 2);
        assert_eq!(desc.hints.cpu_share_millis, 250);
        assert_ne!(desc.capabilities & BALLAST_CAP_ALLOC_STATS, 0);
        // SAFETY: `levels` points to `n_levels` entries owned by `d`.
        let small = unsafe { &*desc.hints.levels.add(1) };
        assert_eq!(small.memory_min_bytes, 16);
    }

    #[test]
    fn a_full_lifecycle_through_the_vtable() {
        let (status, inst, _) = create_with("{}");
        assert_eq!(status, BALLAST_STATUS_OK);
        let mut msg = Msg::new();
        // SAFETY: `inst` is a live instance from `create`; buffers are valid for each call.
        unsafe {
            assert_eq!(start::<Echo>(inst, &mut msg.buf), BALLAST_STATUS_OK);
            assert_eq!(set_level::<Echo>(inst, 1, &mut msg.buf), BALLAST_STATUS_OK);
            assert_eq!(
                set_level::<Echo>(inst, 2, &mut msg.buf),
                BALLAST_STATUS_UNSUPPORTED
            );
            assert!(
                msg.text().contains("level 2 is not supported"),
                "{}",
                msg.text()
            );
            let mut response = BallastBuffer::EMPTY;
            assert_eq!(
                call::<Echo>(inst, BallastBytes::new(b"hi"), &mut response, &mut msg.buf),
                BALLAST_STATUS_OK
            );
            assert_eq!(
                std::slice::from_raw_parts(response.ptr, response.len),
                b"echo@1:hi"
            );
            free_buffer(response);

            assert_eq!(
                call::<Echo>(
                    inst,
                    BallastBytes::new(b"boom"),
                    &mut response,
                    &mut msg.buf
                ),
                BALLAST_STATUS_PANIC
            );
            assert!(msg.text().contains("boom requested"), "{}", msg.text());
            // A panic under the read lock does not poison it: the instance still answers.
            assert_eq!(
                call::<Echo>(
                    inst,
                    BallastBytes::new(b"again"),
                    &mut response,
                    &mut msg.buf
                ),
                BALLAST_STATUS_OK
            );
            free_buffer(response);

            let mut figures = BallastStats {
                struct_size: size_of::<BallastStats>() as u32,
                ..Default::default()
            };
            assert_eq!(stats::<Echo>(inst, &mut figures), BALLAST_STATUS_OK);
            assert_eq!(stop::<Echo>(inst, &mut msg.buf), BALLAST_STATUS_OK);
            assert_eq!(destroy::<Echo>(inst, &mut msg.buf), BALLAST_STATUS_OK);
        }
    }

    #[test]
    fn create_errors_and_panics_become_statuses() {
        let (status, inst, message) = create_with(r#"{"mode":"fail"}"#);
        assert_eq!(status, BALLAST_STATUS_INVALID_ARGUMENT);
        assert!(inst.is_null());
        assert_eq!(message, "config says fail");

        let (status, inst, message) = create_with(r#"{"mode":"panic"}"#);
        assert_eq!(status, BALLAST_STATUS_PANIC);
        assert!(inst.is_null());
        assert_eq!(message, "plugin panicked: config says panic");
    }

    #[test]
    fn every_sdk_plugin_streams_through_a_1_1_vtable() {
        let d = Descriptor::new::<Plain>(false);
        // SAFETY: the descriptor and its vtable live as long as `d`.
        let (desc, vtable) = unsafe { (&*d.as_ptr(), &*(*d.as_ptr()).vtable) };
        assert_eq!(desc.header.abi_minor, 1);
        assert_ne!(desc.capabilities & BALLAST_CAP_STREAMING, 0);
        assert_eq!(
            vtable.struct_size as usize,
            ballast_abi::BALLAST_VTABLE_1_1_SIZE
        );
        assert!(vtable.call_stream.is_some());
    }

    #[test]
    fn chunks_go_out_in_order_and_the_last_piece_is_the_answer() {
        let inst = live::<Echo>();
        let mut call = FakeCall::new(usize::MAX);
        let ctx = fake_context(&mut call, 0);
        let (status, answer, _) = stream::<Echo>(inst, "4", &ctx);
        assert_eq!(status, BALLAST_STATUS_OK);
        assert_eq!(answer, b"end");
        assert_eq!(call.chunks, [b"0", b"1", b"2", b"3"]);
        destroy_live::<Echo>(inst);
    }

    #[test]
    fn a_cancelled_send_stops_the_plugin_with_the_cancelled_status() {
        let inst = live::<Echo>();
        let mut call = FakeCall::new(2);
        let ctx = fake_context(&mut call, 0);
        let (status, answer, message) = stream::<Echo>(inst, "100", &ctx);
        assert_eq!(status, BALLAST_STATUS_CANCELLED);
        assert!(answer.is_empty());
        assert_eq!(message, "the call was cancelled");
        assert_eq!(call.chunks, [b"0", b"1"]);

        // `is_cancelled` sees it too.
        let ctx = fake_context(&mut call, 0);
        let (status, _, message) = stream::<Echo>(inst, "watch", &ctx);
        assert_eq!(status, BALLAST_STATUS_CANCELLED);
        assert_eq!(message, "saw it before the first chunk");
        destroy_live::<Echo>(inst);
    }

    #[test]
    fn a_panic_in_call_stream_becomes_the_panic_status() {
        let inst = live::<Echo>();
        let mut call = FakeCall::new(usize::MAX);
        let ctx = fake_context(&mut call, 0);
        let (status, _, message) = stream::<Echo>(inst, "boom", &ctx);
        assert_eq!(status, BALLAST_STATUS_PANIC);
        assert_eq!(message, "plugin panicked: boom while streaming");
        assert_eq!(call.chunks, [b"before the panic"]);
        // The instance still answers.
        let ctx = fake_context(&mut call, 0);
        assert_eq!(stream::<Echo>(inst, "1", &ctx).0, BALLAST_STATUS_OK);
        destroy_live::<Echo>(inst);
    }

    #[test]
    fn the_default_call_stream_answers_with_call() {
        let inst = live::<Plain>();
        let mut call = FakeCall::new(usize::MAX);
        let ctx = fake_context(&mut call, 0);
        let (status, answer, _) = stream::<Plain>(inst, "hi", &ctx);
        assert_eq!(status, BALLAST_STATUS_OK);
        assert_eq!(answer, b"plain:hi");
        assert!(call.chunks.is_empty());
        destroy_live::<Plain>(inst);
    }

    #[test]
    fn the_context_is_read_only_within_the_size_the_host_declares() {
        let inst = live::<Echo>();
        let mut call = FakeCall::new(usize::MAX);
        let ctx = fake_context(&mut call, 1_700_000_000_000);
        let (_, answer, _) = stream::<Echo>(inst, "deadline", &ctx);
        assert_eq!(answer, b"Some(1700000000000)");
        // A host that built the context without `deadline_ms`: there is no deadline.
        let mut short = fake_context(&mut call, 1_700_000_000_000);
        short.struct_size = std::mem::offset_of!(BallastCallContext, deadline_ms) as u32;
        let (_, answer, _) = stream::<Echo>(inst, "deadline", &short);
        assert_eq!(answer, b"None");
        // Nor `send`: the chunks go out with the answer.
        short.struct_size = std::mem::offset_of!(BallastCallContext, send) as u32;
        let (status, answer, _) = stream::<Echo>(inst, "3", &short);
        assert_eq!(status, BALLAST_STATUS_OK);
        assert_eq!(answer, b"012end");
        assert!(call.chunks.is_empty());
        destroy_live::<Echo>(inst);
    }

    #[test]
    fn a_deadline_reads_as_a_system_time() {
        let ctx = BallastCallContext {
            struct_size: size_of::<BallastCallContext>() as u32,
            abi_minor: 1,
            host_data: std::ptr::null_mut(),
            send: None,
            is_cancelled: None,
            deadline_ms: 1_500,
        };
        // SAFETY: a complete context on this stack.
        let ctx = unsafe { CallContext::from_raw(&ctx) }.unwrap();
        assert_eq!(
            ctx.deadline(),
            Some(std::time::SystemTime::UNIX_EPOCH + Duration::from_millis(1_500))
        );
        assert!(!ctx.is_cancelled());
    }

    #[test]
    fn messages_are_truncated_at_a_character_boundary() {
        let mut bytes = [0u8; 4];
        let mut buf = BallastMessageBuf {
            ptr: bytes.as_mut_ptr(),
            cap: 4,
            len: 0,
        };
        write_message(&mut buf, "abcé");
        assert_eq!(buf.len, 3);
        assert_eq!(&bytes[..3], b"abc");
    }
}
