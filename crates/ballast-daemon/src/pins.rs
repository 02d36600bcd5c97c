//! Operator pins on disk (`pins.json` in the data directory): the one place that reads and
//! writes them.
//!
//! The scaler holds the pins; this file is their durable copy. [`PinWriter`] runs on the disk
//! arbiter and handles one [`PersistPins`] at a time: it asks the scaler for its pins and replaces
//! the file atomically, so the last write always holds the latest pins, whoever asked (an API pin
//! request, which waits for the write before it answers, or a pin that ran out).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use actix::prelude::*;
use ballast_core::{Level, Timestamp};
use ballast_scaler::actor::GetPluginsMsg;
use ballast_scaler::{PinTarget, ScalerActor};
use serde::{Deserialize, Serialize};

use crate::store;

/// An operator pin as stored in `pins.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StoredPin {
    /// `None` pins the plugin off, a level pins it on at that level.
    pub level: Option<u32>,
    /// When the pin runs out, if it does.
    pub until: Option<Timestamp>,
}

impl StoredPin {
    /// The pin as the scaler takes it, with the time it has left at `now`; `None` when it ran
    /// out while the daemon was down.
    pub fn to_scaler(&self, now: Timestamp) -> Option<(PinTarget, Option<std::time::Duration>)> {
        let duration = match self.until {
            Some(until) if until <= now => return None,
            Some(until) => Some(until - now),
            None => None,
        };
        let target = match self.level {
            Some(level) => PinTarget::On {
                level: Level(level),
            },
            None => PinTarget::Off,
        };
        Some((target, duration))
    }
}

/// Where the pins are kept.
pub fn path(data_dir: &Path) -> PathBuf {
    data_dir.join("pins.json")
}

/// The pins stored in `data_dir`; none when there is no file, and none (with a warning naming
/// the file) when it cannot be read.
pub fn load(data_dir: &Path) -> BTreeMap<String, StoredPin> {
    match store::read_json(&path(data_dir)) {
        Ok(pins) => pins.unwrap_or_default(),
        Err(error) => {
            tracing::warn!(error = %crate::error_chain(&error), "ignoring the stored pins");
            BTreeMap::new()
        }
    }
}

/// The pins in the scaler's view of its plugins.
pub fn of_scaler(plugins: &[ballast_scaler::PluginStatus]) -> BTreeMap<String, StoredPin> {
    plugins
        .iter()
        .filter_map(|p| {
            let (target, until) = p.pin?;
            let level = match target {
                PinTarget::On { level } => Some(level.0),
                PinTarget::Off => None,
            };
            Some((p.name.clone(), StoredPin { level, until }))
        })
        .collect()
}

/// Store the scaler's pins now; answered once they are on disk (or the write failed and was
/// logged).
#[derive(Clone, Copy, Debug, Message)]
#[rtype(result = "()")]
pub struct PersistPins;

/// Writes the scaler's pins to `pins.json`, one write at a time.
pub struct PinWriter {
    data_dir: PathBuf,
    scaler: Addr<ScalerActor>,
}

impl PinWriter {
    /// A writer of `data_dir`'s pins, asking `scaler` for them.
    pub fn new(data_dir: PathBuf, scaler: Addr<ScalerActor>) -> Self {
        PinWriter { data_dir, scaler }
    }
}

impl Actor for PinWriter {
    type Context = Context<Self>;
}

impl Handler<PersistPins> for PinWriter {
    // Atomic: the next request waits until this one has written, so writes never interleave.
    type Result = AtomicResponse<Self, ()>;

    fn handle(&mut self, _msg: PersistPins, _ctx: &mut Self::Context) -> Self::Result {
        let scaler = self.scaler.clone();
        AtomicResponse::new(Box::pin(
            async move { scaler.send(GetPluginsMsg).await }
                .into_actor(self)
                .map(|plugins, writer, _ctx| {
                    let Ok(plugins) = plugins else {
                        tracing::warn!("the scaler is not answering; the pins were not stored");
                        return;
                    };
                    let pins = of_scaler(&plugins);
                    if let Err(error) = store::write_json(&path(&writer.data_dir), &pins) {
                        tracing::warn!(error = %crate::error_chain(&error), "cannot store the operator pins");
                    }
                }),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stored_pin_gives_the_scaler_the_time_it_has_left() {
        let now = Timestamp::from_secs(1000);
        let on = StoredPin {
            level: Some(1),
            until: Some(Timestamp::from_secs(1600)),
        };
        assert_eq!(
            on.to_scaler(now),
            Some((
                PinTarget::On { level: Level(1) },
                Some(std::time::Duration::from_secs(600))
            ))
        );
        let off = StoredPin {
            level: None,
            until: None,
        };
        assert_eq!(off.to_scaler(now), Some((PinTarget::Off, None)));
        let ran_out = StoredPin {
            level: None,
            until: Some(Timestamp::from_secs(999)),
        };
        assert_eq!(ran_out.to_scaler(now), None);
    }

    #[test]
    fn unreadable_pins_are_ignored_and_a_missing_file_is_no_pins() {
        let dir = tempfile::tempdir().unwrap();
        assert!(load(dir.path()).is_empty());
        std::fs::write(path(dir.path()), "{ not json").unwrap();
        assert!(load(dir.path()).is_empty());
        let pins = BTreeMap::from([(
            "voice".to_owned(),
            StoredPin {
                level: Some(0),
                until: None,
            },
        )]);
        store::write_json(&path(dir.path()), &pins).unwrap();
        assert_eq!(load(dir.path()), pins);
    }
}
