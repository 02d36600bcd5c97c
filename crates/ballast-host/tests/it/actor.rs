//! The PluginHostActor: commands in, events out, calls answered through the actor.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix::prelude::*;
use ballast_core::plugin::{Command, PluginEventKind};
use ballast_core::{Level, Timestamp};
use ballast_host::{
    Call, CallError, CallOptions, CancelReason, CancelToken, Execute, HostEvent, PluginHost,
    PluginHostActor, Subscribe,
};

use crate::support::rust_plugin;

struct Recorder(Arc<Mutex<Vec<HostEvent>>>);

impl Actor for Recorder {
    type Context = Context<Self>;
}

impl Handler<HostEvent> for Recorder {
    type Result = ();
    fn handle(&mut self, msg: HostEvent, _ctx: &mut Self::Context) {
        self.0.lock().unwrap().push(msg);
    }
}

#[actix::test]
async fn commands_run_in_order_and_events_reach_subscribers() {
    let config = rust_plugin("stubs");
    let actor = PluginHostActor::new(
        |sink| {
            let host = PluginHost::new(Arc::new(|| Timestamp::from_secs(5)), sink);
            host.load(config).unwrap();
            host
        },
        Duration::from_secs(3600),
    );
    let host = actor.host();
    let actor = actor.start();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let recorder = Recorder(Arc::clone(&seen)).start();
    actor.send(Subscribe(recorder.recipient())).await.unwrap();

    let enable = Command::Enable {
        plugin: "stubs".into(),
        level: Level::FULL,
        reason: "start".into(),
    };
    actor.send(Execute(enable)).await.unwrap().unwrap();
    let answer = actor
        .send(Call {
            plugin: "stubs".into(),
            request: b"hi".to_vec(),
            options: None,
        })
        .await
        .unwrap()
        .unwrap();
    assert!(
        String::from_utf8(answer)
            .unwrap()
            .contains("\"echo\":\"hi\"")
    );

    // Sent back to back and awaited last first: the lifecycle thread still runs them in the order
    // they were sent, so the plugin goes off and on five times and ends up enabled.
    let mut sent = Vec::new();
    for round in 0..5 {
        sent.push(actor.send(Execute(Command::Disable {
            plugin: "stubs".into(),
            reason: format!("off {round}"),
        })));
        sent.push(actor.send(Execute(Command::Enable {
            plugin: "stubs".into(),
            level: Level::FULL,
            reason: format!("on {round}"),
        })));
    }
    while let Some(answer) = sent.pop() {
        answer.await.unwrap().unwrap();
    }
    assert_eq!(host.status("stubs").unwrap().reason, "on 4");

    actor
        .send(Execute(Command::Disable {
            plugin: "stubs".into(),
            reason: "shed".into(),
        }))
        .await
        .unwrap()
        .unwrap();
    let refused = actor
        .send(Call {
            plugin: "stubs".into(),
            request: b"hi".to_vec(),
            options: None,
        })
        .await
        .unwrap();
    assert!(
        matches!(refused, Err(CallError::Degraded { .. })),
        "{refused:?}"
    );
    let unknown = actor
        .send(Call {
            plugin: "nobody".into(),
            request: vec![],
            options: None,
        })
        .await
        .unwrap();
    assert_eq!(
        unknown,
        Err(CallError::UnknownPlugin {
            plugin: "nobody".into()
        })
    );

    let mut expected = vec!["enabled"];
    for _ in 0..5 {
        expected.extend(["draining", "disabled", "enabled"]);
    }
    expected.extend(["draining", "disabled"]);
    assert_eq!(state_changes(&seen, expected.len()).await, expected);
}

/// The state changes `seen` holds once it holds `n` of them; fails the test after 5 s.
async fn state_changes(seen: &Mutex<Vec<HostEvent>>, n: usize) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let states: Vec<String> = seen
            .lock()
            .unwrap()
            .iter()
            .filter_map(|HostEvent(e)| match &e.kind {
                PluginEventKind::StateChanged { to, .. } => Some(to.name().to_owned()),
                _ => None,
            })
            .collect();
        if states.len() >= n {
            return states;
        }
        assert!(
            Instant::now() < deadline,
            "the subscriber got only {states:?} within 5 s; expected {n} state changes"
        );
        // The recorder runs on this thread: let it take its messages.
        actix::clock::sleep(Duration::from_millis(1)).await;
    }
}

/// An actor around a host with the faulty plugin enabled, its calls taking `sleep_ms`.
fn slow_plugin_actor(sleep_ms: u64) -> Addr<PluginHostActor> {
    let mut config = crate::support::faulty(serde_json::json!({ "call_sleep_ms": sleep_ms }));
    config.call_timeout = Duration::from_secs(120);
    PluginHostActor::new(
        |sink| {
            let host = PluginHost::new(Arc::new(|| Timestamp::from_secs(5)), sink);
            host.load(config).unwrap();
            host.enable("faulty", Level::FULL, "test").unwrap();
            host
        },
        Duration::from_secs(3600),
    )
    .start()
}

#[actix::test]
async fn a_cancelled_call_answers_at_once_though_the_plugin_does_not_look() {
    // The plugin sleeps a minute and never looks at its context: the answer must not wait for it.
    let actor = slow_plugin_actor(60_000);
    let cancel = CancelToken::new();
    let call = actor.send(Call {
        plugin: "faulty".into(),
        request: b"x".to_vec(),
        options: Some(CallOptions {
            cancel: cancel.clone(),
            ..CallOptions::default()
        }),
    });
    let canceller = cancel.clone();
    actix::spawn(async move {
        tokio::time::sleep(Duration::from_millis(50)).await;
        canceller.cancel(CancelReason::Caller);
    });
    let answer = tokio::time::timeout(Duration::from_secs(30), call)
        .await
        .expect("the cancelled call was answered")
        .unwrap();
    assert_eq!(
        answer,
        Err(CallError::Cancelled {
            plugin: "faulty".into(),
            reason: CancelReason::Caller
        })
    );
}

#[actix::test]
async fn a_deadline_answers_a_timeout_and_cancels_the_call_for_the_plugin() {
    let actor = slow_plugin_actor(60_000);
    let cancel = CancelToken::new();
    let answer = tokio::time::timeout(
        Duration::from_secs(30),
        actor.send(Call {
            plugin: "faulty".into(),
            request: b"x".to_vec(),
            options: Some(CallOptions {
                deadline: Some(Duration::from_millis(100)),
                cancel: cancel.clone(),
                sink: None,
            }),
        }),
    )
    .await
    .expect("the deadline answered")
    .unwrap();
    assert_eq!(
        answer,
        Err(CallError::Timeout {
            plugin: "faulty".into(),
            timeout_ms: 100
        })
    );
    assert_eq!(
        cancel.reason(),
        Some(CancelReason::Deadline),
        "the plugin's side sees the deadline"
    );
}
