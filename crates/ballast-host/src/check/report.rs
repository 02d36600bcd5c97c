//! The conformance check's report: each step with whether it held, how long it took and what
//! was seen, as a table for people or one JSON document for CI.

use std::time::Duration;

use ballast_core::format::{Table, latency_us};
use serde::Serialize;

/// One step of the check.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Step {
    /// What was checked, e.g. `drain with calls in flight` or `memory at level 1 (small)`.
    pub name: String,
    /// Whether it held (a skipped step holds).
    pub ok: bool,
    /// Whether it did not apply to this plugin, or could not be exercised (the detail says
    /// why).
    pub skipped: bool,
    /// How long it took, in milliseconds; none for a step that only reads what earlier steps
    /// recorded.
    pub duration_ms: Option<f64>,
    /// What was seen, or for a failed step what was wrong.
    pub detail: String,
}

impl Step {
    /// A step that held.
    pub fn pass(
        name: impl Into<String>,
        took: Option<Duration>,
        detail: impl Into<String>,
    ) -> Step {
        Step::new(name, true, false, took, detail)
    }

    /// A step that did not hold.
    pub fn fail(
        name: impl Into<String>,
        took: Option<Duration>,
        detail: impl Into<String>,
    ) -> Step {
        Step::new(name, false, false, took, detail)
    }

    /// A step that did not apply or could not be exercised.
    pub fn skip(name: impl Into<String>, detail: impl Into<String>) -> Step {
        Step::new(name, true, true, None, detail)
    }

    /// A step that held when `ok`.
    pub fn new(
        name: impl Into<String>,
        ok: bool,
        skipped: bool,
        took: Option<Duration>,
        detail: impl Into<String>,
    ) -> Step {
        Step {
            name: name.into(),
            ok,
            skipped,
            duration_ms: took.map(|d| d.as_secs_f64() * 1000.0),
            detail: detail.into(),
        }
    }

    /// The step's result in a word: `ok`, `FAIL` or `skip`.
    pub fn result(&self) -> &'static str {
        match (self.ok, self.skipped) {
            (false, _) => "FAIL",
            (true, true) => "skip",
            (true, false) => "ok",
        }
    }
}

/// Everything the check did to one plugin.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Report {
    /// The plugin's name.
    pub plugin: String,
    /// How it runs: `native, in-process`, `native, isolated in a worker`, `process,
    /// json-lines protocol` or `process, no protocol`.
    pub kind: String,
    /// Its file or program.
    pub target: String,
    /// Whether every step held.
    pub ok: bool,
    /// How long the whole check took, in milliseconds.
    pub duration_ms: f64,
    /// The steps, in the order they ran.
    pub steps: Vec<Step>,
}

impl Report {
    /// The steps that did not hold.
    pub fn failures(&self) -> impl Iterator<Item = &Step> {
        self.steps.iter().filter(|s| !s.ok)
    }

    /// The step named `name`, if it ran.
    pub fn step(&self, name: &str) -> Option<&Step> {
        self.steps.iter().find(|s| s.name == name)
    }

    /// The report as a table with a closing line: what held, or each failed step and why.
    pub fn render(&self) -> String {
        let mut out = format!(
            "checking plugin `{}` ({}): {}\n\n",
            self.plugin, self.kind, self.target
        );
        let mut table = Table::with_header(&["STEP", "RESULT", "TIME", "DETAIL"])
            .right_aligned(&[false, false, true, false]);
        for step in &self.steps {
            table.row([
                step.name.clone(),
                step.result().to_owned(),
                step.duration_ms.map_or_else(
                    || "-".to_owned(),
                    |ms| latency_us((ms * 1000.0).round() as u64),
                ),
                step.detail.clone(),
            ]);
        }
        out.push_str(&table.render());
        out.push('\n');
        let total = latency_us((self.duration_ms * 1000.0).round() as u64);
        let skipped = self.steps.iter().filter(|s| s.skipped).count();
        let failed: Vec<&Step> = self.failures().collect();
        if failed.is_empty() {
            out.push_str(&format!(
                "plugin `{}` holds to the contract: {} steps passed, {skipped} skipped, in {total}\n",
                self.plugin,
                self.steps.len() - skipped
            ));
        } else {
            out.push_str(&format!(
                "plugin `{}` breaks the contract: {} of {} steps failed (in {total}):\n",
                self.plugin,
                failed.len(),
                self.steps.len()
            ));
            for step in failed {
                out.push_str(&format!("  step `{}`: {}\n", step.name, step.detail));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(steps: Vec<Step>) -> Report {
        Report {
            plugin: "clock".into(),
            kind: "native, in-process".into(),
            target: "libclock.so".into(),
            ok: steps.iter().all(|s| s.ok),
            duration_ms: 1520.0,
            steps,
        }
    }

    #[test]
    fn a_passing_report_is_a_table_and_a_line_saying_so() {
        let r = report(vec![
            Step::pass("load", Some(Duration::from_micros(1200)), "clock 1.0"),
            Step::skip("cancel", "it does not stream"),
        ]);
        expect_test::expect![[r#"
            checking plugin `clock` (native, in-process): libclock.so

            STEP    RESULT   TIME  DETAIL
            load    ok      1.2ms  clock 1.0
            cancel  skip        -  it does not stream

            plugin `clock` holds to the contract: 1 steps passed, 1 skipped, in 1.52s
        "#]]
        .assert_eq(&r.render());
    }

    #[test]
    fn a_failing_report_names_each_failed_step_and_what_was_wrong() {
        let r = report(vec![
            Step::pass("load", Some(Duration::from_micros(1200)), "clock 1.0"),
            Step::fail(
                "drain with calls in flight",
                Some(Duration::from_millis(600)),
                "the plugin's drain took 600ms, past its deadline of 300ms",
            ),
        ]);
        assert!(!r.ok);
        let text = r.render();
        assert!(
            text.contains("drain with calls in flight  FAIL"),
            "the table marks the step: {text}"
        );
        assert!(
            text.ends_with(
                "plugin `clock` breaks the contract: 1 of 2 steps failed (in 1.52s):\n  step `drain with calls in flight`: the plugin's drain took 600ms, past its deadline of 300ms\n"
            ),
            "{text}"
        );
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["ok"], false);
        assert_eq!(json["steps"][1]["name"], "drain with calls in flight");
        assert_eq!(json["steps"][1]["duration_ms"], 600.0);
        assert_eq!(json["steps"][1]["ok"], false);
    }
}
