//! The plot of a replay: the SVG has its axes, series, thresholds, decision markers and one band
//! per plugin, in the colours of the legend.

use std::time::Duration;

use crate::trace::{TraceOptions, parse_trace};
use ballast_core::Resource;

use super::super::engine::{Sim, SimConfig};
use super::super::replay;
use super::*;

const CONFIG: &str = r#"
[scaler]
min_confidence = 1.0
cooldown = "30s"
stabilization = "5m"

[[plugins]]
name = "discord"
priority = 10
levels = [0.10]

[[plugins]]
name = "voice"
priority = 20
levels = [0.15, 0.05]

[[plugins]]
name = "core"
priority = 100
essential = true
levels = [0.05]
"#;

/// Memory at 0.50, a minute at 0.99 (an emergency: everything non-essential is shed at once),
/// then 0.50 again while the plugins come back one step at a time.
fn spike_svg() -> String {
    let mut text = String::from("timestamp,value\n");
    for t in (0..4800).step_by(10) {
        let v = if (600..660).contains(&t) { 0.99 } else { 0.50 };
        text.push_str(&format!("{},{v}\n", 1_700_000_000 + t));
    }
    let trace = parse_trace("spike.csv", &text, &TraceOptions::default()).unwrap();
    let config: SimConfig = toml::from_str(CONFIG).unwrap();
    let mut sim = Sim::new(&config, Resource::Memory).unwrap();
    sim.record();
    let thresholds = sim.thresholds();
    replay(&mut sim, &trace, 1.0, 1);
    let (report, recording) = sim.finish_recorded();
    let recording = recording.unwrap();
    assert_eq!(recording.points.len(), trace.points.len());
    plot_svg(&PlotInput {
        trace_name: "spike.csv",
        resource: Resource::Memory,
        thresholds,
        horizon: Duration::from_secs(300),
        report: &report,
        recording: &recording,
    })
    .unwrap()
}

/// The SVG's texts, one per line.
fn texts(svg: &str) -> String {
    svg.split("<text")
        .skip(1)
        .filter_map(|t| t.split('>').nth(1))
        .map(|t| t.split('<').next().unwrap_or("").trim())
        .collect::<Vec<_>>()
        .join(" | ")
}

fn count(svg: &str, needle: &str) -> usize {
    svg.matches(needle).count()
}

fn hex(color: RGBColor) -> String {
    format!("#{:02X}{:02X}{:02X}", color.0, color.1, color.2)
}

#[test]
fn the_svg_has_axes_series_thresholds_and_bands() {
    let svg = spike_svg();
    assert!(
        svg.starts_with("<svg width=\"1200\" height=\"600\""),
        "{}",
        &svg[..200]
    );
    // Title and axes.
    for text in [
        "ballast simulate: spike.csv replayed as memory",
        "memory utilization",
        "time (UTC)",
        "100%",
        "60%",
        "22:24",
        "23:00",
    ] {
        assert!(
            svg.contains(text),
            "no {text:?} in the SVG's texts: {}",
            texts(&svg)
        );
    }
    // The four series, each a line in its own colour.
    for color in [TRACE, REPLAYED, SMOOTHED, FORECAST] {
        assert!(
            svg.contains(&format!(
                "<polyline fill=\"none\" opacity=\"{}\" stroke=\"{}\"",
                if color == FORECAST { "0.8" } else { "1" },
                hex(color)
            )),
            "no line in {}",
            hex(color)
        );
    }
    // The thresholds, dashed, with their values in the legend.
    for (color, label) in [
        (SHED_LINE, "shed at 80%"),
        (RESTORE_LINE, "restore below 65%"),
        (EMERGENCY_LINE, "emergency at 95%"),
    ] {
        assert!(
            count(&svg, &format!("stroke=\"{}\"", hex(color))) > 10,
            "{label}"
        );
        assert!(svg.contains(label), "{label}");
    }
    // One band per plugin, named on its axis: discord and voice shed (off), then back at full
    // level, voice through its cheaper level; core (essential) full throughout.
    for name in ["discord", "voice", "core"] {
        assert!(
            svg.contains(&format!("\n{name}\n</text>")),
            "no band label {name}"
        );
    }
    let rects = |color: RGBColor| count(&svg, &format!("fill=\"{}\"", hex(color)));
    // Legend swatch + before, after (discord, voice) + core.
    assert_eq!(rects(FULL), 1 + 2 + 2 + 1);
    assert_eq!(rects(OFF), 1 + 2);
    assert_eq!(rects(REDUCED), 1 + 1);
    // The emergency sheds are dark triangles, the restores green ones (plus the legend's).
    let triangles = |color: RGBColor| {
        count(
            &svg,
            &format!("<polygon opacity=\"1\" fill=\"{}\"", hex(color)),
        )
    };
    assert_eq!(triangles(EMERGENCY_LINE), 2);
    assert_eq!(triangles(RESTORE_LINE), 3 + 1);
    assert_eq!(triangles(SHED_LINE), 1);
    assert!(
        svg.contains("2 sheds, 3 restores, 0 flaps"),
        "summary missing"
    );
}

#[test]
fn plot_files_are_svg_or_png_by_their_name() {
    let dir = tempfile::tempdir().unwrap();
    let config: SimConfig = toml::from_str(CONFIG).unwrap();
    let mut sim = Sim::new(&config, Resource::Cpu).unwrap();
    sim.record();
    let trace = parse_trace(
        "t.csv",
        "timestamp,value\n0,0.5\n60,0.9\n120,0.4\n",
        &TraceOptions::default(),
    )
    .unwrap();
    let thresholds = sim.thresholds();
    replay(&mut sim, &trace, 1.0, 1);
    let (report, recording) = sim.finish_recorded();
    let recording = recording.unwrap();
    let input = PlotInput {
        trace_name: "t.csv",
        resource: Resource::Cpu,
        thresholds,
        horizon: Duration::from_secs(300),
        report: &report,
        recording: &recording,
    };
    let png = dir.path().join("plot.png");
    plot_to_file(&png, &input).unwrap();
    let bytes = std::fs::read(&png).unwrap();
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
    let svg = dir.path().join("plot.SVG");
    plot_to_file(&svg, &input).unwrap();
    assert!(std::fs::read_to_string(&svg).unwrap().contains("+0d 00:0"));
    let error = plot_to_file(&dir.path().join("plot.pdf"), &input).unwrap_err();
    assert!(
        error
            .to_string()
            .ends_with("plot.pdf: the file name must end in .svg or .png"),
        "{error}"
    );
}
