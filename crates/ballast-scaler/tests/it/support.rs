//! Helpers shared by the tests: plugin specs, assessments and a harness that prints timelines.

use std::fmt::Write as _;
use std::time::Duration;

use ballast_core::decision::Decision;
use ballast_core::{
    Assessment, Command, Forecast, Level, LevelHints, PluginSpec, Resource, ResourceAssessment,
    ResourceHints, Timestamp,
};
use ballast_scaler::{Scaler, ScalerConfig};

/// A plugin with `levels` levels and no declared needs.
pub fn spec(name: &str, priority: i32, levels: usize) -> PluginSpec {
    PluginSpec {
        name: name.to_owned(),
        priority,
        essential: false,
        hints: ResourceHints {
            levels: vec![LevelHints::default(); levels],
            cpu_share: 0.0,
            needs_gpu: false,
        },
        can_suspend: false,
        ..Default::default()
    }
}

/// An essential plugin.
pub fn essential(name: &str, priority: i32) -> PluginSpec {
    PluginSpec {
        essential: true,
        ..spec(name, priority, 1)
    }
}

/// The usual three plugins: discord (10, one level), voice (20, two levels), android (30).
pub fn plugins() -> Vec<PluginSpec> {
    vec![
        spec("voice", 20, 2),
        spec("discord", 10, 1),
        spec("android", 30, 1),
        essential("core", 100),
    ]
}

/// An assessment at `secs` where each resource's value and smoothed value are as given.
pub fn assessment(secs: u64, values: &[(Resource, f64)]) -> Assessment {
    Assessment {
        at: Timestamp::from_secs(secs),
        resources: values
            .iter()
            .map(|&(resource, v)| ResourceAssessment {
                resource,
                value: v,
                smoothed: v,
                forecast: None,
                trend: Default::default(),
                anomaly: Default::default(),
            })
            .collect(),
    }
}

/// An assessment of memory alone with a forecast.
pub fn with_forecast(secs: u64, smoothed: f64, forecast: f64, confidence: f64) -> Assessment {
    let mut a = assessment(secs, &[(Resource::Memory, smoothed)]);
    a.resources[0].forecast = Some(Forecast {
        value: forecast,
        horizon: Duration::from_secs(300),
        confidence,
        model: "test".into(),
        error: None,
    });
    a
}

/// A scaler with the default configuration but short, round timings: cool-down 30 s,
/// stabilization 300 s.
pub fn scaler(plugins: Vec<PluginSpec>) -> Scaler {
    Scaler::new(ScalerConfig::default(), plugins).unwrap()
}

/// One line per decision: `t kind plugin (action) [rule] applied`.
pub fn line(d: &Decision) -> String {
    let mut s = format!("{}s {}", d.at.as_millis() / 1000, d.kind);
    if let Some(p) = &d.plugin {
        let _ = write!(s, " {p}");
    }
    if d.action != ballast_core::decision::Action::None {
        let _ = write!(s, " ({})", d.action);
    }
    let _ = write!(s, " [{}]", d.rule);
    if !d.applied && d.action != ballast_core::decision::Action::None {
        s.push_str(" not applied");
    }
    s
}

/// One line per command.
pub fn command_line(c: &Command) -> String {
    match c {
        Command::Enable { plugin, level, .. } => format!("enable {plugin} {level}"),
        Command::Disable { plugin, .. } => format!("disable {plugin}"),
        Command::Unload { plugin, .. } => format!("unload {plugin}"),
        Command::SetLevel { plugin, level, .. } => format!("set_level {plugin} {level}"),
        Command::Suspend { plugin, .. } => format!("suspend {plugin}"),
        Command::Resume { plugin, .. } => format!("resume {plugin}"),
        Command::SetConcurrency { plugin, limit, .. } => {
            format!("set_concurrency {plugin} {limit:?}")
        }
    }
}

/// Drives a scaler on a virtual clock and keeps a printable log.
pub struct Harness {
    /// The scaler under test.
    pub scaler: Scaler,
    /// Every decision so far.
    pub decisions: Vec<Decision>,
    /// Every command so far.
    pub commands: Vec<Command>,
    /// Every warning so far.
    pub warnings: Vec<Decision>,
}

impl Harness {
    pub fn new(scaler: Scaler) -> Self {
        Harness {
            scaler,
            decisions: Vec::new(),
            commands: Vec::new(),
            warnings: Vec::new(),
        }
    }

    /// Collects what the scaler has to say: decisions, commands and warnings.
    pub fn drain(&mut self) {
        while let Some(d) = self.scaler.poll_decision() {
            self.decisions.push(d);
        }
        while let Some(c) = self.scaler.poll_command() {
            self.commands.push(c);
        }
        while let Some(w) = self.scaler.poll_warning() {
            self.warnings.push(w);
        }
    }

    /// Fires every timeout due up to `at`, then hands in the assessment.
    pub fn feed(&mut self, a: &Assessment) {
        self.run_timers_until(a.at);
        self.scaler.handle_assessment(a.at, a);
        self.drain();
    }

    /// Feeds memory at `value` every `step` seconds over `[from, to)`.
    pub fn memory(&mut self, from: u64, to: u64, step: u64, value: f64) {
        let mut t = from;
        while t < to {
            self.feed(&assessment(t, &[(Resource::Memory, value)]));
            t += step;
        }
    }

    /// Fires the scaler's timeouts that fall at or before `until`.
    pub fn run_timers_until(&mut self, until: Timestamp) {
        for _ in 0..10_000 {
            match self.scaler.poll_timeout() {
                Some(t) if t <= until => {
                    self.scaler.handle_timeout(t);
                    self.drain();
                }
                _ => return,
            }
        }
        panic!("timeouts did not settle");
    }

    /// The decision timeline, one line each.
    pub fn timeline(&self) -> String {
        self.decisions.iter().map(|d| line(d) + "\n").collect()
    }

    /// The commands, one line each.
    pub fn command_lines(&self) -> String {
        self.commands
            .iter()
            .map(|c| command_line(c) + "\n")
            .collect()
    }
}

/// Level shorthand.
pub fn level(n: u32) -> Level {
    Level(n)
}
