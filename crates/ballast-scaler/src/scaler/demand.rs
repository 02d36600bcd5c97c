//! The demand half of the policy: plugins unloaded when idle, woken by a call, and the room a
//! woken plugin needs made by taking lower-priority plugins down; and the same fit check as a
//! question anyone may ask ([`Scaler::preflight`]).
//!
//! A wake is answered at once: the plugin fits at the fullest level it may run at (its tier's
//! allowance, or its pin), perhaps once lower-priority plugins are taken down, idle ones first,
//! then a level at a time, lowest priority first, exactly far enough; else a smaller level is
//! tried; else it does not fit and the answer says what it needed and what is free. Every step is
//! a [`Decision`](ballast_core::decision::Decision): the wake itself, and each plugin taken down with the
//! rule `make_room` and a reason naming who needed the room. What was taken down comes back
//! through the ordinary restore path once it fits again.

use std::fmt;
use std::fmt::Write as _;

use ballast_core::decision::{Action, DecisionKind, Mode, ResourceFigures, Rule};
use ballast_core::{Level, PluginStats, Resource, Timestamp};

use super::{Placement, Scaler, Slot, resource_index};
use crate::config::MachineTotals;
use crate::error::ScalerError;

/// How a wake was granted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WakeGrant {
    /// The level the plugin is brought up at (or runs at already).
    pub level: Level,
    /// Whether it was running already (nothing was done).
    pub already_on: bool,
    /// The plugins taken down to make room for it, in order.
    pub made_room: Vec<String>,
}

/// Why a plugin cannot be woken.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum WakeError {
    /// No plugin of that name.
    #[error("unknown plugin `{0}`")]
    UnknownPlugin(String),
    /// It is off for another reason than idleness (shed for pressure, pinned off, failed, not
    /// allowed on this hardware): calls get the fast degraded answer, they do not wait.
    #[error("plugin `{plugin}` is not idle: {why}")]
    NotIdle {
        /// The plugin.
        plugin: String,
        /// Why it is off.
        why: String,
    },
    /// It does not fit, even with room made, at any level.
    #[error("{0}")]
    NoRoom(NoRoom),
}

/// What a plugin needed, at its fullest level, and what there was.
#[derive(Clone, Debug, PartialEq)]
pub struct NoRoom {
    /// The plugin.
    pub plugin: String,
    /// The level asked for (its fullest allowed).
    pub level: Level,
    /// The resource that does not fit.
    pub resource: Resource,
    /// What it needs of the resource, as a fraction of the machine.
    pub need: f64,
    /// What is free under the resource's shed threshold, as a fraction.
    pub free: f64,
    /// What lower-priority plugins that may be taken down hold of it, as a fraction.
    pub held_below: f64,
    /// The machine's totals, to say the fractions in bytes or cores.
    pub machine: MachineTotals,
}

impl fmt::Display for NoRoom {
    /// `voice needs 24 GiB of GPU memory at level 0; 9.1 GiB is free and lower-priority
    /// plugins hold 6 GiB`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let amount = |fraction: f64| amount(self.resource, fraction, &self.machine);
        write!(
            f,
            "{} needs {} of {} at level {}; {} is free and lower-priority plugins hold {}",
            self.plugin,
            amount(self.need),
            resource_words(self.resource),
            self.level,
            amount(self.free.max(0.0)),
            amount(self.held_below)
        )
    }
}

/// A resource as a sentence names it.
fn resource_words(resource: Resource) -> &'static str {
    match resource {
        Resource::Memory => "memory",
        Resource::Cpu => "CPU",
        Resource::Gpu => "GPU compute",
        Resource::GpuMemory => "GPU memory",
        Resource::Disk => "disk",
        Resource::MemoryPressure => "memory pressure",
        Resource::CpuPressure => "CPU pressure",
        Resource::IoPressure => "IO pressure",
    }
}

/// A fraction of `resource` in the unit people read it in: bytes, cores, or the fraction.
fn amount(resource: Resource, fraction: f64, machine: &MachineTotals) -> String {
    // Never below nothing; `+ 0.0` turns -0.0 (what an empty sum is) into 0.0, which would
    // otherwise print as "-0.00".
    let fraction = fraction.max(0.0) + 0.0;
    let bytes = |total: Option<u64>| {
        total
            .filter(|t| *t > 0)
            .map(|t| ballast_core::format::bytes((fraction * t as f64).round().max(0.0) as u64))
    };
    let text = match resource {
        Resource::Memory => bytes(machine.memory_bytes),
        Resource::GpuMemory => bytes(machine.gpu_memory_bytes),
        Resource::Cpu => machine
            .cpu_cores
            .filter(|c| *c > 0.0)
            .map(|c| format!("{:.2} cores", fraction * c)),
        _ => None,
    };
    text.unwrap_or_else(|| format!("{fraction:.2}"))
}

/// One resource of a pre-flight answer.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct PreflightResource {
    /// The resource.
    pub resource: Resource,
    /// What the step would add, as a fraction of the machine (the larger of declared and
    /// measured).
    pub need: f64,
    /// What the plugin declares at the level, in bytes (memory, GPU memory) or cores (CPU).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub declared: Option<f64>,
    /// What it was measured using at the level, in the same unit, when it was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub measured: Option<f64>,
    /// The pressure now.
    pub pressure: f64,
    /// The forecast at its horizon, when it is confident enough to count (`min_confidence`): the
    /// step must fit under the shed threshold with it too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forecast: Option<f64>,
    /// The shed threshold.
    pub shed: f64,
    /// What is free under the shed threshold (negative when over it).
    pub headroom: f64,
    /// Whether the step fits on this resource without taking anything down, now and, by the
    /// confident forecast, over its horizon.
    pub fits: bool,
}

/// One plugin a wake would take down, and how far.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct PreflightStep {
    /// The plugin.
    pub plugin: String,
    /// What would happen to it.
    pub action: Action,
}

/// The answer to "would this plugin fit at this level now?", changing nothing.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Preflight {
    /// The plugin.
    pub plugin: String,
    /// The level asked about.
    pub level: Level,
    /// Whether it fits as things are.
    pub fits: bool,
    /// Whether it fits once the plugins in `would_take_down` are taken down.
    pub fits_with_room: bool,
    /// The need and headroom per resource the scaler acts on.
    pub resources: Vec<PreflightResource>,
    /// What a wake would take down to make room (empty when it fits, or cannot be made to).
    pub would_take_down: Vec<PreflightStep>,
    /// Why it does not fit, when it does not even with room made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub no_room: Option<String>,
}

/// A plan: the placements to move to, in order, for the plugin to fit at a level.
struct Plan {
    steps: Vec<(usize, Placement)>,
}

impl Slot {
    /// When the plugin is due to be unloaded for idleness, if it is: it has a keep-alive, runs,
    /// has no call in flight, is not pinned, and no unload was asked for this idleness yet.
    pub(super) fn unload_due(&self) -> Option<Timestamp> {
        let keep_alive = self.keep_alive?;
        let since = self.idle_since?;
        let eligible = matches!(self.placement, Placement::On { .. })
            && self.in_flight == 0
            && self.pin.is_none()
            && !self.failed
            && self.unload_requested != Some(since);
        eligible.then(|| since + keep_alive)
    }
}

impl Scaler {
    /// Takes in a plugin's call activity from its figures: calls in flight and the end of its
    /// last call.
    pub(super) fn activity(&mut self, i: usize, stats: &PluginStats) {
        let slot = &mut self.slots[i];
        if !matches!(slot.placement, Placement::On { .. }) {
            return;
        }
        slot.in_flight = stats.in_flight;
        slot.idle_since = if stats.in_flight > 0 {
            None
        } else {
            match (stats.last_call_end, slot.enabled_at) {
                (Some(end), Some(enabled)) => Some(end.max(enabled)),
                (end, enabled) => end.or(enabled),
            }
        };
    }

    /// Unloads the plugins whose keep-alive ran out since the end of their last call.
    pub(super) fn unload_idle(&mut self, now: Timestamp) {
        for i in 0..self.slots.len() {
            let slot = &self.slots[i];
            let (Some(due), Some(since), Some(keep_alive)) =
                (slot.unload_due(), slot.idle_since, slot.keep_alive)
            else {
                continue;
            };
            if now < due {
                continue;
            }
            let idle_for = std::time::Duration::from_secs((now - since).as_secs());
            let reason = format!(
                "idle for {} (keep_alive {})",
                humantime::format_duration(idle_for),
                humantime::format_duration(keep_alive)
            );
            self.slots[i].unload_requested = Some(since);
            self.record(
                now,
                DecisionKind::Unload,
                Action::Unload { idle_since: since },
                Some(i),
                Rule::KeepAlive,
                None,
                None,
                reason,
            );
        }
    }

    /// A call wants `plugin`: bring it up if it is idle and fits (making room by priority), or
    /// say why not. Answered at once; the commands (the wake, and any plugin taken down for
    /// room) are queued for [`Scaler::poll_command`] like every other decision's.
    pub fn wake(&mut self, now: Timestamp, plugin: &str) -> Result<WakeGrant, WakeError> {
        let now = self.advance(now);
        let index = self
            .slot_index(plugin)
            .map_err(|_| WakeError::UnknownPlugin(plugin.to_owned()))?;
        let slot = &mut self.slots[index];
        if let Placement::On { level } = slot.placement {
            // Its unload may be under way: the call waits for it, and it comes back after.
            if slot.unload_requested.is_some() {
                slot.wake_after_unload = true;
            }
            return Ok(WakeGrant {
                level,
                already_on: true,
                made_room: Vec::new(),
            });
        }
        match self.wake_plan(index) {
            Ok((level, plan)) => Ok(self.apply_wake(now, index, level, plan)),
            Err(WakeError::NoRoom(no_room)) => {
                self.record(
                    now,
                    DecisionKind::Warn,
                    Action::None,
                    Some(index),
                    Rule::NoRoom,
                    self.views[resource_index(no_room.resource)].clone(),
                    None,
                    no_room.to_string(),
                );
                Err(WakeError::NoRoom(no_room))
            }
            Err(other) => Err(other),
        }
    }

    /// What a call to `plugin` would meet now, without changing anything: `Ok` with the level it
    /// runs at, or would be woken at (with room made if it must), or why a call would be refused
    /// at once (shed for pressure, pinned off, failed, not allowed here, no room). This is what a
    /// load balancer's readiness check asks of an idle plugin: a call would wake it.
    pub fn wake_check(&self, plugin: &str) -> Result<Level, WakeError> {
        let index = self
            .slot_index(plugin)
            .map_err(|_| WakeError::UnknownPlugin(plugin.to_owned()))?;
        if let Placement::On { level } = self.slots[index].placement {
            return Ok(level);
        }
        self.wake_plan(index).map(|(level, _)| level)
    }

    /// The level an off plugin would be woken at and the room to make for it, or why it cannot
    /// be woken.
    fn wake_plan(&self, index: usize) -> Result<(Level, Plan), WakeError> {
        let slot = &self.slots[index];
        let plugin = slot.spec.name.as_str();
        if !slot.idle {
            let why = if slot.failed {
                "it failed".to_owned()
            } else if slot.pin.is_some() {
                "the operator pinned it off".to_owned()
            } else {
                "it is shed for pressure".to_owned()
            };
            return Err(WakeError::NotIdle {
                plugin: plugin.to_owned(),
                why,
            });
        }
        if self.config.mode != Mode::Enforce {
            return Err(WakeError::NotIdle {
                plugin: plugin.to_owned(),
                why: format!("ballast is in {} mode and loads nothing", self.config.mode),
            });
        }
        let best = match slot.target() {
            Placement::On { level } => level,
            Placement::Off { .. } => {
                return Err(WakeError::NotIdle {
                    plugin: plugin.to_owned(),
                    why: "this hardware tier does not allow it".to_owned(),
                });
            }
        };
        let mut first_shortfall = None;
        for level in (best.0..slot.n_levels).map(Level) {
            match self.plan(index, level) {
                Ok(plan) => return Ok((level, plan)),
                Err(no_room) => {
                    first_shortfall.get_or_insert(no_room);
                }
            }
        }
        Err(WakeError::NoRoom(first_shortfall.unwrap_or_else(|| {
            NoRoom {
                plugin: plugin.to_owned(),
                level: best,
                resource: Resource::Memory,
                need: 0.0,
                free: 0.0,
                held_below: 0.0,
                machine: self.config.machine,
            }
        })))
    }

    /// Whether `plugin` would fit at `level` (its fullest allowed when `None`) now, what it
    /// needs of each resource, and what a wake would take down; nothing changes.
    pub fn preflight(&self, plugin: &str, level: Option<Level>) -> Result<Preflight, ScalerError> {
        let index = self.slot_index(plugin)?;
        let slot = &self.slots[index];
        let level = match level {
            Some(level) if level.0 >= slot.n_levels => {
                return Err(ScalerError::InvalidLevel {
                    plugin: plugin.to_owned(),
                    level,
                    n_levels: slot.n_levels,
                });
            }
            Some(level) => level,
            None => match slot.target() {
                Placement::On { level } => level,
                Placement::Off { level, .. } => level,
            },
        };
        let machine = self.config.machine;
        let to = Placement::On { level };
        let hints = slot.spec.hints.level(level);
        let resources: Vec<PreflightResource> = self
            .views
            .iter()
            .flatten()
            .map(|view| {
                let need = (slot.need(to, view.resource, &machine)
                    - slot.need(slot.placement, view.resource, &machine))
                .max(0.0);
                let (declared, measured) = match view.resource {
                    Resource::Memory => (
                        Some(hints.memory_preferred_bytes.max(hints.memory_min_bytes) as f64),
                        slot.observed_memory
                            .get(&level)
                            .copied()
                            .or(slot
                                .measured
                                .filter(|m| m.level == level)
                                .map(|m| m.memory_bytes))
                            .map(|b| b as f64),
                    ),
                    Resource::GpuMemory => (
                        Some(hints.gpu_memory_bytes as f64),
                        slot.measured_gpu
                            .filter(|(l, _)| *l == level)
                            .map(|(_, b)| b as f64),
                    ),
                    Resource::Cpu => (
                        Some(slot.spec.hints.cpu_share),
                        slot.measured
                            .filter(|m| m.level == level)
                            .map(|m| m.cpu_cores),
                    ),
                    _ => (None, None),
                };
                let headroom = view.thresholds.shed - view.pressure;
                let forecast = view.forecast.filter(|_| view.forecast_used);
                // The pressure holds the confident forecast already.
                let fits = view.pressure + need < view.thresholds.shed;
                PreflightResource {
                    resource: view.resource,
                    need,
                    declared,
                    measured,
                    pressure: view.pressure,
                    forecast,
                    shed: view.thresholds.shed,
                    headroom,
                    fits,
                }
            })
            .collect();
        let fits = resources.iter().all(|r| r.fits);
        let (fits_with_room, would_take_down, no_room) = if fits {
            (true, Vec::new(), None)
        } else {
            match self.plan(index, level) {
                Ok(plan) => (
                    true,
                    plan.steps
                        .iter()
                        .map(|&(j, to)| PreflightStep {
                            plugin: self.slots[j].spec.name.clone(),
                            action: action_between(self.slots[j].placement, to),
                        })
                        .collect(),
                    None,
                ),
                Err(no_room) => (false, Vec::new(), Some(no_room.to_string())),
            }
        };
        Ok(Preflight {
            plugin: plugin.to_owned(),
            level,
            fits,
            fits_with_room,
            resources,
            would_take_down,
            no_room,
        })
    }

    /// What `index` adds of each resource at `level`, over what it holds now.
    fn added_need(&self, index: usize, level: Level) -> Vec<(usize, f64)> {
        let slot = &self.slots[index];
        let machine = self.config.machine;
        self.views
            .iter()
            .enumerate()
            .filter_map(|(r, view)| {
                let view = view.as_ref()?;
                let need = slot.need(Placement::On { level }, view.resource, &machine)
                    - slot.need(slot.placement, view.resource, &machine);
                Some((r, need.max(0.0)))
            })
            .collect()
    }

    /// The steps that make room for `index` at `level`: none when it fits; otherwise plugins of
    /// lower priority that may be touched, those without a call in flight first (off at once),
    /// then the others a level at a time, lowest priority first, until it fits. `Err` when even
    /// all of them do not make it fit, with the first resource short.
    fn plan(&self, index: usize, level: Level) -> Result<Plan, NoRoom> {
        let machine = self.config.machine;
        let needs = self.added_need(index, level);
        // What is still short on each resource: the need minus the room under the shed
        // threshold (a positive shortfall means it does not fit yet).
        let mut short: Vec<(usize, f64)> = needs
            .iter()
            .map(|&(r, need)| {
                let view = self.views[r].as_ref().map_or(0.0, |v| {
                    // A projected pressure at the threshold is over it, as for a restore.
                    v.pressure + need - v.thresholds.shed
                });
                (r, if need > 0.0 { view } else { f64::NEG_INFINITY })
            })
            .collect();
        let fits = |short: &[(usize, f64)]| short.iter().all(|&(_, s)| s < 0.0);
        if fits(&short) {
            return Ok(Plan { steps: Vec::new() });
        }
        let waker = &self.slots[index];
        let may_take = |j: usize| {
            let s = &self.slots[j];
            j != index
                && s.spec.priority < waker.spec.priority
                && !s.spec.essential
                && s.pin.is_none()
                && !s.failed
                && !s.idle
                && matches!(s.placement, Placement::On { .. })
        };
        // What lower-priority plugins hold of each short resource, for the answer when it
        // cannot be made to fit.
        let held_below = |r: usize| -> f64 {
            (0..self.slots.len())
                .filter(|&j| may_take(j))
                .map(|j| self.slots[j].need(self.slots[j].placement, Resource::ALL[r], &machine))
                .sum()
        };
        // Candidates in order: lowest priority first (the slots are sorted so), those without a
        // call in flight before those serving one.
        let mut order: Vec<usize> = (0..self.slots.len()).filter(|&j| may_take(j)).collect();
        order.sort_by_key(|&j| self.slots[j].in_flight > 0);
        let mut steps: Vec<(usize, Placement)> = Vec::new();
        for j in order {
            let slot = &self.slots[j];
            let mut at = slot.placement;
            loop {
                let next = match at {
                    // Not serving: off at once.
                    Placement::On { .. } if slot.in_flight == 0 => Placement::Off {
                        suspended: false,
                        level: match at {
                            Placement::On { level } | Placement::Off { level, .. } => level,
                        },
                    },
                    Placement::On { level } if level.0 + 1 < slot.n_levels => Placement::On {
                        level: Level(level.0 + 1),
                    },
                    Placement::On { level } => Placement::Off {
                        suspended: false,
                        level,
                    },
                    Placement::Off { .. } => break,
                };
                // A step that frees nothing of what is short is not taken.
                let freed: Vec<(usize, f64)> = short
                    .iter()
                    .map(|&(r, _)| {
                        let resource = Resource::ALL[r];
                        (
                            r,
                            slot.need(at, resource, &machine) - slot.need(next, resource, &machine),
                        )
                    })
                    .collect();
                let helps = short
                    .iter()
                    .zip(&freed)
                    .any(|(&(_, s), &(_, f))| s >= 0.0 && f > 0.0);
                if !helps {
                    break;
                }
                for ((_, s), (_, f)) in short.iter_mut().zip(&freed) {
                    *s -= f.max(0.0);
                }
                steps.push((j, next));
                at = next;
                if fits(&short) {
                    return Ok(Plan {
                        steps: self.prune(index, level, steps),
                    });
                }
            }
        }
        // The first resource still short, with what was asked and what there was.
        let (r, need) = needs
            .iter()
            .copied()
            .zip(short.iter())
            .find(|(_, (_, s))| *s >= 0.0)
            .map(|((r, need), _)| (r, need))
            .unwrap_or((0, 0.0));
        let free = self.views[r]
            .as_ref()
            .map_or(0.0, |v| v.thresholds.shed - v.pressure);
        Err(NoRoom {
            plugin: waker.spec.name.clone(),
            level,
            resource: Resource::ALL[r],
            need,
            free,
            held_below: held_below(r),
            machine,
        })
    }

    /// Drops the steps a plan does not need after all: a cheap step taken first may have become
    /// useless once a later one freed enough alone. Only a plugin's last step can go (its steps
    /// are a sequence), and one goes at a time while the plan still fits without it.
    fn prune(
        &self,
        index: usize,
        level: Level,
        mut steps: Vec<(usize, Placement)>,
    ) -> Vec<(usize, Placement)> {
        loop {
            let removable = (0..steps.len()).find(|&k| {
                let j = steps[k].0;
                let last_of_plugin = steps[k + 1..].iter().all(|&(other, _)| other != j);
                let mut without = steps.clone();
                without.remove(k);
                last_of_plugin && self.fits_with(index, level, &without)
            });
            match removable {
                Some(k) => {
                    steps.remove(k);
                }
                None => return steps,
            }
        }
    }

    /// Whether `index` fits at `level` once `steps` are taken.
    fn fits_with(&self, index: usize, level: Level, steps: &[(usize, Placement)]) -> bool {
        let machine = self.config.machine;
        self.added_need(index, level).iter().all(|&(r, need)| {
            if need <= 0.0 {
                return true;
            }
            let Some(view) = self.views[r].as_ref() else {
                return true;
            };
            let resource = Resource::ALL[r];
            let mut freed = 0.0;
            let mut plugins: Vec<usize> = steps.iter().map(|&(j, _)| j).collect();
            plugins.dedup();
            for j in plugins {
                let Some(&(_, last)) = steps.iter().rev().find(|&&(other, _)| other == j) else {
                    continue;
                };
                let slot = &self.slots[j];
                freed += slot.need(slot.placement, resource, &machine)
                    - slot.need(last, resource, &machine);
            }
            view.pressure + need - freed < view.thresholds.shed
        })
    }

    /// Takes the plan's steps and brings the plugin up.
    fn apply_wake(&mut self, now: Timestamp, index: usize, level: Level, plan: Plan) -> WakeGrant {
        let waker = self.slots[index].spec.name.clone();
        let needs = self.added_need(index, level);
        let mut need_text = String::new();
        for &(r, need) in &needs {
            if need > 0.0 {
                if !need_text.is_empty() {
                    need_text.push_str(", ");
                }
                let _ = write!(
                    need_text,
                    "{} of {}",
                    amount(Resource::ALL[r], need, &self.config.machine),
                    resource_words(Resource::ALL[r])
                );
            }
        }
        if need_text.is_empty() {
            need_text.push_str("nothing it declared");
        }
        let mut made_room = Vec::new();
        for &(j, to) in &plan.steps {
            let from = self.slots[j].placement;
            let action = action_between(from, to);
            let reason = format!("to make room for {waker} (needs {need_text} at level {level})");
            let reason = self.flap_accounting(now, j, reason);
            self.slots[j].placement = to;
            let figures = self.short_view(&needs);
            self.record(
                now,
                DecisionKind::Shed,
                action,
                Some(j),
                Rule::MakeRoom,
                figures,
                None,
                reason,
            );
            self.stepped(now, j);
            if !made_room.contains(&self.slots[j].spec.name) {
                made_room.push(self.slots[j].spec.name.clone());
            }
        }
        if !plan.steps.is_empty() {
            self.last_shed_at = Some(now);
        }
        let slot = &mut self.slots[index];
        slot.idle = false;
        slot.placement = Placement::On { level };
        slot.unload_requested = None;
        let mut reason = format!("a call woke it: needs {need_text} at level {level}");
        if !made_room.is_empty() {
            let _ = write!(
                reason,
                ", room made by taking down {}",
                made_room.join(", ")
            );
        }
        let figures = self.short_view(&needs);
        self.record(
            now,
            DecisionKind::Wake,
            Action::Enable { level },
            Some(index),
            Rule::OnDemand,
            figures,
            None,
            reason,
        );
        // The machine changed: restores wait for a stabilization from here.
        self.stepped(now, index);
        WakeGrant {
            level,
            already_on: false,
            made_room,
        }
    }

    /// The figures of the resource the wake needs most of.
    fn short_view(&self, needs: &[(usize, f64)]) -> Option<ResourceFigures> {
        let &(r, need) = needs
            .iter()
            .max_by(|a, b| a.1.partial_cmp(&b.1).unwrap_or(std::cmp::Ordering::Equal))?;
        (need > 0.0).then(|| self.views[r].clone()).flatten()
    }
}

/// The action that moves a plugin from one placement to another, as a step down.
fn action_between(from: Placement, to: Placement) -> Action {
    match (from, to) {
        (Placement::On { level: from }, Placement::On { level: to }) => {
            Action::SetLevel { from, to }
        }
        (Placement::On { .. }, Placement::Off { .. }) => Action::Disable,
        _ => Action::None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_room_never_says_minus_zero() {
        let no_room = NoRoom {
            plugin: "voice".into(),
            level: Level(0),
            resource: Resource::GpuMemory,
            need: 0.3,
            free: -0.0,
            held_below: -0.0,
            machine: MachineTotals::default(),
        };
        let text = no_room.to_string();
        assert!(!text.contains("-0"), "{text}");
        assert!(text.ends_with("lower-priority plugins hold 0.00"), "{text}");
    }
}
