//! Example ballast integration `voice`: speech in and out; level 0 runs the large model, level 1 the small one.

use ballast_example_workload::{Example, Integration, MIB};
use ballast_sdk::{LevelInfo, PluginInfo, export_plugin};

/// The `voice` integration.
pub struct Voice;

impl Integration for Voice {
    const INFO: PluginInfo = PluginInfo {
        name: "voice",
        version: env!("CARGO_PKG_VERSION"),
        levels: &[
            LevelInfo::new("large-model", 256 * MIB),
            LevelInfo::new("small-model", 32 * MIB),
        ],
        cpu_share: 0.5,
        needs_gpu: false,
    };
    const WORKING_SETS_MB: &'static [u64] = &[256, 32];

    fn describe(level: u32) -> serde_json::Map<String, serde_json::Value> {
        let (model, quality) = if level == 0 {
            ("large", "high")
        } else {
            ("small", "reduced")
        };
        let mut extra = serde_json::Map::new();
        extra.insert("model".into(), model.into());
        extra.insert("quality".into(), quality.into());
        extra
    }
}

export_plugin!(Example<Voice>);

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use ballast_sdk::testing::{FailureKind, StreamCall, TestHost};

    use super::*;

    /// Working sets of 2 MiB and 1 MiB and no CPU duty, so that the tests stay small.
    const SMALL: &str = r#"{"workload":{"working_set_mb":[2,1],"cpu_duty":0.0}}"#;

    fn json(answer: &[u8]) -> serde_json::Value {
        serde_json::from_slice(answer).expect("voice answers JSON")
    }

    #[test]
    fn each_level_runs_its_own_model() {
        let mut host = TestHost::<Example<Voice>>::new().with_config(SMALL);
        host.create().unwrap();
        let full = json(&host.call("hello").unwrap());
        assert_eq!(
            (&full["model"], &full["quality"], &full["level"]),
            (&"large".into(), &"high".into(), &0.into())
        );
        assert_eq!(full["working_set_bytes"], 2 * MIB);

        host.set_level(1).unwrap();
        let small = json(&host.call("hello").unwrap());
        assert_eq!(
            (&small["model"], &small["quality"], &small["level"]),
            (&"small".into(), &"reduced".into(), &1.into())
        );
        assert_eq!(small["working_set_bytes"], MIB);

        // Voice declares two levels: a third is refused before it reaches the plugin.
        assert_eq!(
            host.set_level(2).unwrap_err().kind,
            FailureKind::Unsupported
        );
        assert_eq!(host.level(), Some(1));
    }

    #[test]
    fn a_voice_brought_up_small_holds_its_small_working_set_and_runs_its_worker() {
        let mut host = TestHost::<Example<Voice>>::new()
            .with_config(SMALL)
            .with_level(1);
        host.create().unwrap();
        assert_eq!(json(&host.call("hi").unwrap())["model"], "small");
        let stats = host.stats().unwrap();
        assert_eq!(stats.threads, 1);
        // The counting allocator counts the whole test process: at least the working set.
        let alloc = stats
            .alloc
            .expect("export_plugin! installs the counting allocator");
        assert!(alloc.live_bytes >= MIB, "{alloc:?}");
    }

    #[test]
    fn a_shed_voice_comes_back_with_its_counters() {
        let mut host = TestHost::<Example<Voice>>::new().with_config(SMALL);
        host.create().unwrap();
        for _ in 0..3 {
            host.call("hello").unwrap();
        }
        let checkpoint = host.shed(Duration::from_secs(5)).unwrap();
        assert!(!host.is_alive());

        host.create_from(&checkpoint).unwrap();
        assert_eq!(json(&host.call("hello").unwrap())["calls_served"], 4);
        let messages: Vec<String> = host.logs().into_iter().map(|r| r.message).collect();
        assert_eq!(
            messages,
            [
                "voice: creating instance 1 with a 2 MiB working set (0 calls served before)",
                "voice: creating instance 2 with a 2 MiB working set (3 calls served before)",
            ]
        );
    }

    #[test]
    fn a_stream_stops_when_its_caller_goes_away() {
        let mut host = TestHost::<Example<Voice>>::new().with_config(SMALL);
        host.create().unwrap();
        let whole = host.call_stream("stream:3", &StreamCall::new());
        assert_eq!(whole.chunks, [b"0\n", b"1\n", b"2\n"]);
        assert_eq!(json(whole.result.as_ref().unwrap())["chunks"], 3);

        let cut = host.call_stream("stream:5", &StreamCall::new().cancel_after(2));
        assert_eq!(cut.chunks, [b"0\n", b"1\n"]);
        let failure = cut.result.unwrap_err();
        assert_eq!(failure.kind, FailureKind::Cancelled);
        assert_eq!(failure.message, "voice: stream stopped after 2 of 5 chunks");
        // It looked before sending, so it never sent into a cancelled call.
        assert_eq!(cut.refused, 0);
    }

    #[test]
    fn a_bad_config_fails_create_naming_the_key() {
        let mut host =
            TestHost::<Example<Voice>>::new().with_config(r#"{"workload":{"cpu_duty":2}}"#);
        let failure = host.create().unwrap_err();
        assert_eq!(failure.operation, "create");
        assert_eq!(failure.kind, FailureKind::InvalidArgument);
        assert_eq!(
            failure.message,
            "voice: config key `workload.cpu_duty` must be between 0 and 1, got 2"
        );
    }
}
