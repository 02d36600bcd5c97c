//! The `extern "C"` side of a plugin: the descriptor and the vtable functions that
//! [`crate::export_plugin!`] exports, each behind a panic guard. Not for direct use.

use std::any::Any;
use std::ffi::c_void;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::RwLock;
use std::time::Duration;

use ballast_abi::{
    BALLAST_ABI_MAJOR, BALLAST_ABI_MINOR, BALLAST_CAP_ALLOC_STATS, BALLAST_CAP_CHECKPOINT,
    BALLAST_CAP_DRAIN, BALLAST_CAP_THREAD_SAFE_CALLS, BALLAST_PLUGIN_MAGIC,
    BALLAST_STATUS_DEGRADED, BALLAST_STATUS_ERROR, BALLAST_STATUS_INVALID_ARGUMENT,
    BALLAST_STATUS_OK, BALLAST_STATUS_PANIC, BALLAST_STATUS_UNSUPPORTED, BallastBuffer,
    BallastBytes, BallastDescriptorHeader, BallastHostApi, BallastLevelHints, BallastMessageBuf,
    BallastPluginDescriptor, BallastPluginVTable, BallastResourceHints, BallastStats,
    BallastStatus, BallastStr,
};

use crate::{CreateContext, ErrorKind, Health, Host, Plugin, PluginError};

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
            call_stream: None,
        });
        let mut capabilities =
            BALLAST_CAP_THREAD_SAFE_CALLS | BALLAST_CAP_CHECKPOINT | BALLAST_CAP_DRAIN;
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
