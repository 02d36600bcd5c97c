//! The plugin's handle on the host: log, clock, metrics and state reports, plus the `log` bridge.

#[cfg(feature = "testing")]
use std::cell::Cell;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicPtr, Ordering};

use ballast_abi::{
    BALLAST_LOG_DEBUG, BALLAST_LOG_ERROR, BALLAST_LOG_INFO, BALLAST_LOG_TRACE, BALLAST_LOG_WARN,
    BallastHostApi, BallastStr,
};

/// Set once a test host (the `testing` module) exists in this process: the panic hook then
/// passes panics on to the hook it replaced, so a failing test still prints its message. It
/// lives here, beside the hook that reads it, so that the host module does not depend on the
/// test host built on it.
#[cfg(feature = "testing")]
pub(crate) static TEST_HOST_ACTIVE: std::sync::atomic::AtomicBool =
    std::sync::atomic::AtomicBool::new(false);

/// The host's functions, as handed to `create`. Cheap to clone, usable from any thread.
#[derive(Clone, Copy)]
pub struct Host {
    api: *const BallastHostApi,
}

// SAFETY: the host guarantees that the api table and every function in it stay valid for the life
// of the process and are thread-safe (ABI rule, see ballast-abi's `BallastHostApi`).
unsafe impl Send for Host {}
// SAFETY: as above.
unsafe impl Sync for Host {}

impl std::fmt::Debug for Host {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Host").finish_non_exhaustive()
    }
}

impl Host {
    /// Wraps the table the host passed to `create`. Null yields `None`.
    pub(crate) fn from_raw(api: *const BallastHostApi) -> Option<Host> {
        (!api.is_null()).then_some(Host { api })
    }

    fn api(&self) -> &BallastHostApi {
        // SAFETY: non-null (checked in `from_raw`) and valid for the process's life (ABI rule).
        unsafe { &*self.api }
    }

    /// Write a log record at `level` (a `BALLAST_LOG_*` constant).
    pub fn log(&self, level: u32, target: &str, message: &str) {
        let api = self.api();
        // SAFETY: a host function called with its own data and borrowed strings valid for the call.
        unsafe {
            (api.log)(
                api.host_data,
                level,
                BallastStr::new(target),
                BallastStr::new(message),
            )
        }
    }

    /// Log at info level.
    pub fn info(&self, message: &str) {
        self.log(BALLAST_LOG_INFO, "", message);
    }

    /// Log at warn level.
    pub fn warn(&self, message: &str) {
        self.log(BALLAST_LOG_WARN, "", message);
    }

    /// The host's clock in milliseconds since the Unix epoch.
    pub fn now_ms(&self) -> u64 {
        let api = self.api();
        // SAFETY: a host function called with its own data.
        unsafe { (api.now_ms)(api.host_data) }
    }

    /// Record a gauge `name` = `value` for this plugin.
    pub fn emit_metric(&self, name: &str, value: f64) {
        let api = self.api();
        // SAFETY: a host function called with its own data and a borrowed string.
        unsafe { (api.emit_metric)(api.host_data, BallastStr::new(name), value) }
    }

    /// Tell the host the plugin's own state changed, e.g. it lost its connection.
    pub fn report_state(&self, healthy: bool, message: &str) {
        let api = self.api();
        // SAFETY: a host function called with its own data and a borrowed string.
        unsafe { (api.report_state)(api.host_data, u32::from(healthy), BallastStr::new(message)) }
    }
}

/// The host of the newest instance: where `log` records and panic messages go.
static CURRENT_HOST: AtomicPtr<BallastHostApi> = AtomicPtr::new(std::ptr::null_mut());

/// Makes `host` the destination of this library's `log` records and panic messages, installing
/// the bridge and the panic hook on first use.
pub(crate) fn install(host: &Host, plugin_name: &'static str) {
    CURRENT_HOST.store(host.api.cast_mut(), Ordering::Release);
    static INSTALLED: OnceLock<()> = OnceLock::new();
    INSTALLED.get_or_init(|| {
        static LOGGER: HostLogger = HostLogger;
        if log::set_logger(&LOGGER).is_ok() {
            log::set_max_level(log::LevelFilter::Debug);
        }
        // Replace the default hook, which prints to the daemon's stderr without context, with one
        // that reports through the host log under the plugin's name. Under a test host the one it
        // replaced runs too, so that a failing test still prints why.
        #[cfg(feature = "testing")]
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if let Some(host) = current_host() {
                host.log(BALLAST_LOG_ERROR, plugin_name, &format!("panic: {info}"));
            }
            #[cfg(feature = "testing")]
            if TEST_HOST_ACTIVE.load(Ordering::SeqCst) {
                previous(info);
            }
        }));
    });
}

#[cfg(feature = "testing")]
thread_local! {
    /// The host table of the test host whose call runs on this thread (null when none).
    static TEST_HOST: Cell<*const BallastHostApi> = const { Cell::new(std::ptr::null()) };
}

/// Runs `f` with `api` as the destination of the `log` records and panic messages made on this
/// thread, so that each test host captures what its own calls log while tests run in parallel.
#[cfg(feature = "testing")]
pub(crate) fn with_test_host<R>(api: &'static BallastHostApi, f: impl FnOnce() -> R) -> R {
    struct Restore(*const BallastHostApi);
    impl Drop for Restore {
        fn drop(&mut self) {
            TEST_HOST.with(|t| t.set(self.0));
        }
    }
    let _restore = Restore(TEST_HOST.with(|t| t.replace(api)));
    f()
}

fn current_host() -> Option<Host> {
    #[cfg(feature = "testing")]
    if let Some(host) = TEST_HOST
        .try_with(|t| Host::from_raw(t.get()))
        .ok()
        .flatten()
    {
        return Some(host);
    }
    Host::from_raw(CURRENT_HOST.load(Ordering::Acquire))
}

struct HostLogger;

impl log::Log for HostLogger {
    fn enabled(&self, _metadata: &log::Metadata<'_>) -> bool {
        true
    }

    fn log(&self, record: &log::Record<'_>) {
        let Some(host) = current_host() else { return };
        let level = match record.level() {
            log::Level::Error => BALLAST_LOG_ERROR,
            log::Level::Warn => BALLAST_LOG_WARN,
            log::Level::Info => BALLAST_LOG_INFO,
            log::Level::Debug => BALLAST_LOG_DEBUG,
            log::Level::Trace => BALLAST_LOG_TRACE,
        };
        host.log(level, record.target(), &record.args().to_string());
    }

    fn flush(&self) {}
}
