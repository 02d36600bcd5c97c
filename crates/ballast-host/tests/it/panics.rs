//! Panic containment at scale: a plugin that panics in every entry point, a thousand times in
//! all, never takes the host down, and a well-behaved plugin beside it keeps answering.

use std::fmt::Debug;
use std::sync::{Arc, Mutex};

use ballast_core::Level;
use ballast_host::CallError;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Metadata, Subscriber};

use crate::support::{faulty, host, rust_plugin};

/// Panics per entry point: 8 entry points x 125 = 1000.
const ROUNDS: usize = 125;

/// Collects the warnings logged on this thread (the host logs the faults it cannot return, such
/// as a panic in drain, stop or destroy), each as its message and fields on one line.
#[derive(Clone, Default)]
struct Warnings(Arc<Mutex<Vec<String>>>);

struct Line(String);

impl Visit for Line {
    fn record_debug(&mut self, field: &Field, value: &dyn Debug) {
        self.0.push_str(&format!(" {}={value:?}", field.name()));
    }
}

impl Subscriber for Warnings {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        *metadata.level() <= tracing::Level::WARN
    }
    fn new_span(&self, _: &Attributes<'_>) -> Id {
        Id::from_u64(1)
    }
    fn record(&self, _: &Id, _: &Record<'_>) {}
    fn record_follows_from(&self, _: &Id, _: &Id) {}
    fn event(&self, event: &Event<'_>) {
        let mut line = Line(String::new());
        event.record(&mut line);
        self.0.lock().unwrap().push(line.0);
    }
    fn enter(&self, _: &Id) {}
    fn exit(&self, _: &Id) {}
}

impl Warnings {
    /// How many warnings so far mention `text`.
    fn count(&self, text: &str) -> usize {
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains(text))
            .count()
    }
}

#[test]
fn a_plugin_panicking_in_every_entry_point_a_thousand_times_never_takes_the_host_down() {
    let warnings = Warnings::default();
    let _guard = tracing::subscriber::set_default(warnings.clone());
    let (neighbour, _) = host();
    neighbour.load(rust_plugin("stubs")).unwrap();
    neighbour.enable("stubs", Level::FULL, "test").unwrap();
    let mut panics = 0;
    for function in [
        "create",
        "start",
        "set_level",
        "health",
        "drain",
        "checkpoint",
        "stop",
        "destroy",
    ] {
        let (host, _) = host();
        host.load(faulty(serde_json::json!({ "panic_in": function })))
            .unwrap();
        let panicked = format!("configured to panic in {function}");
        // What the host logs for a fault it cannot return (the plugin's own panic report, which
        // its log bridge forwards, says "panicked at" instead).
        let contained = format!("fault=panic: plugin panicked: faulty: {panicked}");
        let logged_before = warnings.count(&contained);
        for round in 0..ROUNDS {
            let enabled = host.enable("faulty", Level::FULL, "test");
            match function {
                "create" | "start" => {
                    let error = enabled.unwrap_err().to_string();
                    assert!(error.contains(&panicked), "{error}");
                    assert_eq!(host.status("faulty").unwrap().state.name(), "failed");
                }
                "set_level" => {
                    enabled.unwrap();
                    let error = host
                        .set_level("faulty", Level(1), "test")
                        .unwrap_err()
                        .to_string();
                    assert!(error.contains(&panicked), "{error}");
                    assert_eq!(host.status("faulty").unwrap().state.name(), "failed");
                }
                "health" => {
                    enabled.unwrap();
                    let error = host.check_health("faulty").unwrap_err().to_string();
                    assert!(error.contains(&panicked), "{error}");
                    assert_eq!(host.status("faulty").unwrap().state.name(), "failed");
                    assert!(matches!(
                        host.call("faulty", b"x"),
                        Err(CallError::Degraded { .. })
                    ));
                }
                _ => {
                    // drain, checkpoint, stop and destroy: the fault is logged and the plugin
                    // is disabled all the same.
                    enabled.unwrap();
                    assert!(
                        host.call("faulty", b"x")
                            .unwrap()
                            .starts_with(b"generation ")
                    );
                    host.disable("faulty", "test").unwrap();
                    assert_eq!(host.status("faulty").unwrap().state.name(), "disabled");
                    assert_eq!(
                        warnings.count(&contained) - logged_before,
                        round + 1,
                        "the panic in {function} was not contained and logged"
                    );
                }
            }
            panics += 1;
            // The well-behaved plugin in the same process is untouched.
            assert!(neighbour.call("stubs", b"ping").is_ok());
        }
    }
    // Calls: each panics once and fails the plugin; the next enable brings it back.
    let (host, _) = host();
    host.load(faulty(serde_json::json!({}))).unwrap();
    for _ in 0..ROUNDS {
        host.enable("faulty", Level::FULL, "test").unwrap();
        let error = host.call("faulty", b"panic").unwrap_err();
        assert!(matches!(error, CallError::Panicked { .. }), "{error:?}");
        panics += 1;
    }
    assert_eq!(panics, 9 * ROUNDS);
    assert!(neighbour.call("stubs", b"ping").is_ok());
    assert_eq!(neighbour.status("stubs").unwrap().state.name(), "enabled");
}
