//! The API's answers built from what the host and the scaler report: the daemon's side of the
//! wire types in `ballast-api`.

use ballast_api::views::{
    PinView, PluginView, PreflightResourceView, PreflightStepView, PreflightView, ScalerView,
};
use ballast_core::Timestamp;
use ballast_core::plugin::PluginState;
use ballast_scaler::{PinTarget, Placement};

/// The view of one plugin from the host's status and the scaler's.
pub fn plugin_view(
    status: &ballast_host::PluginStatus,
    scaler: Option<&ballast_scaler::PluginStatus>,
    detail: bool,
) -> PluginView {
    let (level, failure) = match &status.state {
        PluginState::Enabled { level } => (Some(level.0), None),
        PluginState::Failed { reason } => (None, Some(reason.clone())),
        _ => (None, None),
    };
    PluginView {
        name: status.name.clone(),
        state: status.state.name().to_owned(),
        level,
        since: status.since,
        reason: status.reason.clone(),
        failure,
        priority: status.priority,
        essential: status.essential,
        concurrency_limit: status.concurrency_limit,
        stats: status.stats.clone(),
        last_error: status.last_error.clone(),
        scaler: scaler.map(scaler_view),
        gauges: status.gauges.clone(),
        info: detail
            .then(|| serde_json::to_value(&status.info).ok())
            .flatten(),
        kind: status.kind.to_owned(),
        process: status.process.clone(),
    }
}

/// The view of the scaler's status of a plugin.
pub fn scaler_view(status: &ballast_scaler::PluginStatus) -> ScalerView {
    let (placement, placement_level) = match status.placement {
        Placement::Off { level, .. } if status.idle => ("idle", level.0),
        Placement::On { level } => ("on", level.0),
        Placement::Off {
            suspended: true,
            level,
        } => ("suspended", level.0),
        Placement::Off {
            suspended: false,
            level,
        } => ("off", level.0),
    };
    ScalerView {
        placement: placement.to_owned(),
        placement_level,
        pin: status.pin.map(|(target, until)| pin_view(target, until)),
        throttled: status.throttled,
        failed: status.failed,
        flaps: status.flaps,
        stabilization_ms: u64::try_from(status.stabilization.as_millis()).unwrap_or(u64::MAX),
        measured_memory_bytes: status.measured.map(|m| m.0),
        measured_cpu_cores: status.measured.map(|m| m.1),
        measured_gpu_memory_bytes: status.measured_gpu_memory,
        idle_since: status.idle_since,
    }
}

fn pin_view(target: PinTarget, until: Option<Timestamp>) -> PinView {
    let (target, level) = match target {
        PinTarget::On { level } => ("on", Some(level.0)),
        PinTarget::Off => ("off", None),
    };
    PinView {
        target: target.to_owned(),
        level,
        until,
    }
}

/// The wire view of the scaler's pre-flight answer.
pub fn preflight_view(p: &ballast_scaler::Preflight) -> PreflightView {
    PreflightView {
        plugin: p.plugin.clone(),
        level: p.level.0,
        fits: p.fits,
        fits_with_room: p.fits_with_room,
        resources: p
            .resources
            .iter()
            .map(|r| PreflightResourceView {
                resource: r.resource,
                need: r.need,
                declared: r.declared,
                measured: r.measured,
                pressure: r.pressure,
                shed: r.shed,
                headroom: r.headroom,
                fits: r.fits,
            })
            .collect(),
        would_take_down: p
            .would_take_down
            .iter()
            .map(|s| PreflightStepView {
                plugin: s.plugin.clone(),
                action: s.action.to_string(),
            })
            .collect(),
        no_room: p.no_room.clone(),
    }
}
