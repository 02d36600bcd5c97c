//! The actor shell on tokio's paused clock: messages in, commands and decisions out, timers.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix::prelude::*;
use ballast_core::Resource;
use ballast_scaler::ScalerActor;
use ballast_scaler::actor::{
    AssessmentMsg, CommandMsg, DecisionMsg, GetPluginsMsg, PinMsg, ReleaseMsg, ScalerOutputs,
    SetModeMsg,
};
use ballast_scaler::{PinTarget, Placement};

use crate::support::*;

/// Collects what it receives.
#[derive(Default)]
struct Sink {
    lines: Arc<Mutex<Vec<String>>>,
}

impl Actor for Sink {
    type Context = Context<Self>;
}

impl Handler<CommandMsg> for Sink {
    type Result = ();
    fn handle(&mut self, msg: CommandMsg, _: &mut Context<Self>) {
        self.lines.lock().unwrap().push(command_line(&msg.0));
    }
}

impl Handler<DecisionMsg> for Sink {
    type Result = ();
    fn handle(&mut self, msg: DecisionMsg, _: &mut Context<Self>) {
        self.lines.lock().unwrap().push(line(&msg.0));
    }
}

async fn settle() {
    // Let queued messages be delivered; no time passes on the paused clock.
    for _ in 0..20 {
        tokio::task::yield_now().await;
    }
}

#[actix::test]
async fn sheds_on_assessments_and_restores_on_its_own_timer() {
    tokio::time::pause();
    let commands = Arc::new(Mutex::new(Vec::new()));
    let decisions = Arc::new(Mutex::new(Vec::new()));
    let command_sink = Sink {
        lines: commands.clone(),
    }
    .start();
    let decision_sink = Sink {
        lines: decisions.clone(),
    }
    .start();
    let actor = ScalerActor::new(
        scaler(vec![spec("discord", 10, 1), spec("voice", 20, 2)]),
        ScalerOutputs {
            commands: command_sink.recipient(),
            decisions: Some(decision_sink.recipient()),
            warnings: None,
        },
    )
    .start();
    actor
        .send(AssessmentMsg(assessment(1000, &[(Resource::Memory, 0.9)])))
        .await
        .unwrap();
    actor
        .send(AssessmentMsg(assessment(1001, &[(Resource::Memory, 0.3)])))
        .await
        .unwrap();
    settle().await;
    assert_eq!(*commands.lock().unwrap(), vec!["disable discord"]);
    // Nothing more arrives; the actor's own timer brings discord back after 5 minutes.
    tokio::time::sleep(Duration::from_secs(299)).await;
    settle().await;
    assert_eq!(commands.lock().unwrap().len(), 1);
    tokio::time::sleep(Duration::from_secs(2)).await;
    settle().await;
    assert_eq!(
        *commands.lock().unwrap(),
        vec!["disable discord", "enable discord 0"]
    );
    let log = decisions.lock().unwrap().clone();
    assert_eq!(
        log,
        vec![
            "1000s shed discord (disable) [high_pressure]",
            "1301s restore discord (enable at level 0) [stabilized]",
        ]
    );
}

#[actix::test]
async fn pins_expire_on_the_timer_and_modes_and_status_answer() {
    tokio::time::pause();
    let commands = Arc::new(Mutex::new(Vec::new()));
    let sink = Sink {
        lines: commands.clone(),
    }
    .start();
    let actor = ScalerActor::new(
        scaler(vec![spec("discord", 10, 1)]),
        ScalerOutputs {
            commands: sink.recipient(),
            decisions: None,
            warnings: None,
        },
    )
    .start();
    actor
        .send(AssessmentMsg(assessment(50, &[(Resource::Memory, 0.3)])))
        .await
        .unwrap();
    actor
        .send(PinMsg {
            plugin: "discord".into(),
            target: PinTarget::Off,
            duration: Some(Duration::from_secs(60)),
        })
        .await
        .unwrap()
        .unwrap();
    let status = actor.send(GetPluginsMsg).await.unwrap();
    assert!(status[0].pin.is_some());
    tokio::time::sleep(Duration::from_secs(61)).await;
    settle().await;
    let status = actor.send(GetPluginsMsg).await.unwrap();
    assert!(status[0].pin.is_none(), "the pin ran out on the timer");
    // Calm since t=50 and the pin step at t=50: the restore is due at t=350.
    tokio::time::sleep(Duration::from_secs(240)).await;
    settle().await;
    assert_eq!(
        *commands.lock().unwrap(),
        vec!["disable discord", "enable discord 0"]
    );
    assert!(
        actor
            .send(ReleaseMsg {
                plugin: "ghost".into()
            })
            .await
            .unwrap()
            .is_err()
    );
    actor
        .send(SetModeMsg(ballast_core::decision::Mode::Observe))
        .await
        .unwrap();
    let status = actor.send(GetPluginsMsg).await.unwrap();
    assert_eq!(
        status[0].placement,
        Placement::On {
            level: ballast_core::Level(0)
        }
    );
}
