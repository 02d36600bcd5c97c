//! The functions the host hands each plugin (log, clock, metrics, state reports), backed by a
//! per-plugin context that lives for the rest of the process.

use std::collections::BTreeMap;
use std::ffi::c_void;
use std::sync::{Arc, Mutex};

use ballast_abi::{
    BALLAST_ABI_MINOR, BALLAST_LOG_DEBUG, BALLAST_LOG_ERROR, BALLAST_LOG_INFO, BALLAST_LOG_WARN,
    BallastHostApi, BallastStr,
};
use ballast_core::Timestamp;

/// The host's clock, injectable for tests.
pub type Clock = Arc<dyn Fn() -> Timestamp + Send + Sync>;

/// The system clock.
pub fn system_clock() -> Clock {
    Arc::new(|| {
        let since_epoch = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        Timestamp::from_millis(u64::try_from(since_epoch.as_millis()).unwrap_or(u64::MAX))
    })
}

/// A plugin telling the host about itself through the host API.
#[derive(Clone, Debug, PartialEq)]
pub struct StateReport {
    /// The plugin.
    pub plugin: String,
    /// Whether it says it is healthy.
    pub healthy: bool,
    /// Its message.
    pub message: String,
}

/// What the host API of one plugin writes to.
pub(crate) struct HostContext {
    plugin: String,
    clock: Clock,
    reports: Arc<dyn Fn(StateReport) + Send + Sync>,
    gauges: Mutex<BTreeMap<String, f64>>,
}

impl HostContext {
    /// The gauges the plugin emitted, latest value each.
    pub(crate) fn gauges(&self) -> BTreeMap<String, f64> {
        self.gauges
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// A host API table that lives for the rest of the process.
#[derive(Clone, Copy)]
pub(crate) struct HostApiRef(pub(crate) &'static BallastHostApi);

// SAFETY: the table is immutable, and every function in it is thread-safe; `host_data` points to
// a leaked `HostContext`, which is `Sync`.
unsafe impl Send for HostApiRef {}
// SAFETY: as above.
unsafe impl Sync for HostApiRef {}

/// Builds the host API table for `plugin`. Both the table and its context are leaked on purpose:
/// plugin threads may call into them at any time until the process exits, as the ABI promises,
/// and plugin libraries are never unloaded either.
pub(crate) fn leak_host_api(
    plugin: &str,
    clock: Clock,
    reports: Arc<dyn Fn(StateReport) + Send + Sync>,
) -> (HostApiRef, &'static HostContext) {
    let context: &'static HostContext = Box::leak(Box::new(HostContext {
        plugin: plugin.to_owned(),
        clock,
        reports,
        gauges: Mutex::new(BTreeMap::new()),
    }));
    let api: &'static BallastHostApi = Box::leak(Box::new(BallastHostApi {
        struct_size: size_of::<BallastHostApi>() as u32,
        abi_minor: BALLAST_ABI_MINOR,
        host_data: std::ptr::from_ref(context).cast_mut().cast(),
        log: host_log,
        now_ms: host_now_ms,
        emit_metric: host_emit_metric,
        report_state: host_report_state,
    }));
    (HostApiRef(api), context)
}

fn context<'a>(host_data: *mut c_void) -> Option<&'a HostContext> {
    // SAFETY: `host_data` is the leaked context this table was built with (or null if a plugin
    // passes garbage, which is ignored).
    (!host_data.is_null()).then(|| unsafe { &*host_data.cast::<HostContext>() })
}

fn text(s: BallastStr) -> String {
    if s.ptr.is_null() || s.len == 0 {
        return String::new();
    }
    // Refuse absurd lengths rather than read megabytes from a confused plugin.
    let len = s.len.min(64 * 1024);
    // SAFETY: the plugin passes a string valid for the call; reading is bounded above.
    let bytes = unsafe { std::slice::from_raw_parts(s.ptr, len) };
    String::from_utf8_lossy(bytes).into_owned()
}

unsafe extern "C" fn host_log(
    host_data: *mut c_void,
    level: u32,
    target: BallastStr,
    message: BallastStr,
) {
    // Nothing may unwind into the plugin: a panic in the subscriber is caught here.
    let _ = std::panic::catch_unwind(|| {
        let Some(ctx) = context(host_data) else {
            return;
        };
        let plugin = ctx.plugin.as_str();
        let target = text(target);
        let message = text(message);
        match level {
            BALLAST_LOG_ERROR => tracing::error!(plugin, plugin_target = %target, "{message}"),
            BALLAST_LOG_WARN => tracing::warn!(plugin, plugin_target = %target, "{message}"),
            BALLAST_LOG_INFO => tracing::info!(plugin, plugin_target = %target, "{message}"),
            BALLAST_LOG_DEBUG => tracing::debug!(plugin, plugin_target = %target, "{message}"),
            _ => tracing::trace!(plugin, plugin_target = %target, "{message}"),
        }
    });
}

unsafe extern "C" fn host_now_ms(host_data: *mut c_void) -> u64 {
    std::panic::catch_unwind(|| context(host_data).map_or(0, |ctx| (ctx.clock)().as_millis()))
        .unwrap_or(0)
}

unsafe extern "C" fn host_emit_metric(host_data: *mut c_void, name: BallastStr, value: f64) {
    let _ = std::panic::catch_unwind(|| {
        let Some(ctx) = context(host_data) else {
            return;
        };
        let name = text(name);
        if name.is_empty() || !value.is_finite() {
            return;
        }
        let mut gauges = ctx.gauges.lock().unwrap_or_else(|p| p.into_inner());
        // Bound the number of series a plugin can create.
        if gauges.len() < 256 || gauges.contains_key(&name) {
            gauges.insert(name, value);
        }
    });
}

unsafe extern "C" fn host_report_state(host_data: *mut c_void, healthy: u32, message: BallastStr) {
    let _ = std::panic::catch_unwind(|| {
        let Some(ctx) = context(host_data) else {
            return;
        };
        (ctx.reports)(StateReport {
            plugin: ctx.plugin.clone(),
            healthy: healthy != 0,
            message: text(message),
        });
    });
}
