//! Shared domain and message types of ballast: pure data, serde, no IO, no clock.
//!
//! Every other ballast crate speaks in these types. The monitor produces [`Sample`]s, the
//! predictor turns them into [`Assessment`]s, the scaler turns those into [`Command`]s for the
//! plugin host, and the host answers with [`PluginEvent`]s. Nothing here reads the machine or the
//! clock: time always comes in as a [`Timestamp`] argument.

pub mod assessment;
pub mod decision;
pub mod format;
pub mod plugin;
pub mod policy;
pub mod resource;
pub mod sample;
pub mod telemetry;
pub mod tier;
pub mod time;

pub use assessment::{Anomaly, Assessment, Forecast, ResourceAssessment, TrendStats};
pub use plugin::{
    CgroupStatus, Command, Level, LevelHints, MemoryEventCounts, PluginAlert, PluginEvent,
    PluginEventKind, PluginSpec, PluginState, PluginStats, ProcessStatus, ProcessUsage,
    ProgressStatus, ResourceHints, StartMode,
};
pub use policy::{ThresholdProfile, Thresholds};
pub use resource::{Resource, UnknownResource};
pub use sample::{
    CpuQuota, CpuReading, DiskReading, GpuMemoryHolder, GpuMemoryUnattributed, GpuProcess,
    GpuReading, MemoryReading, MemoryScope, Metric, PluginUsage, ProcessReading, PsiLine,
    PsiReading, PsiReadings, Sample,
};
pub use time::{Civil, Timestamp};
