//! The PluginHostActor: commands in, events out, calls answered through the actor.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix::prelude::*;
use ballast_core::plugin::{Command, PluginEventKind};
use ballast_core::{Level, Timestamp};
use ballast_host::{
    Call, CallError, Execute, HostEvent, PluginHost, PluginHostActor, Status, Subscribe,
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
    )
    .start();
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
        })
        .await
        .unwrap()
        .unwrap();
    assert!(
        String::from_utf8(answer)
            .unwrap()
            .contains("\"echo\":\"hi\"")
    );

    // Sent back to back: the disable must not overtake the enable's successor.
    let disable = actor.send(Execute(Command::Disable {
        plugin: "stubs".into(),
        reason: "shed".into(),
    }));
    let status = actor.send(Status {
        plugin: Some("stubs".into()),
    });
    disable.await.unwrap().unwrap();
    assert!(status.await.unwrap().is_ok());

    let refused = actor
        .send(Call {
            plugin: "stubs".into(),
            request: b"hi".to_vec(),
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
        })
        .await
        .unwrap();
    assert_eq!(
        unknown,
        Err(CallError::UnknownPlugin {
            plugin: "nobody".into()
        })
    );

    // Let the subscriber drain its mailbox.
    tokio::task::yield_now().await;
    actix::clock::sleep(Duration::from_millis(10)).await;
    let states: Vec<String> = seen
        .lock()
        .unwrap()
        .iter()
        .filter_map(|HostEvent(e)| match &e.kind {
            PluginEventKind::StateChanged { to, .. } => Some(to.name().to_owned()),
            _ => None,
        })
        .collect();
    assert_eq!(states, ["enabled", "draining", "disabled"]);
}
