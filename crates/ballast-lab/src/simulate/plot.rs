//! `ballast simulate --plot FILE.svg|FILE.png`: one picture of a replay, drawn with plotters.
//!
//! The upper chart shows the resource over time: the trace as recorded (every plugin at full
//! level), the utilization replayed with the policy's sheds, the predictor's smoothed value and
//! forecast, the shed, restore and emergency thresholds, and a marker at every shed and restore.
//! Below it, one band per plugin shows when it ran at full level, at a cheaper level, or was shed,
//! with a tick at each decision about it. A legend and the summary sit on the right.
//!
//! Text is laid out and drawn with ab_glyph from the DejaVu Sans font embedded in the binary
//! (`assets/DejaVuSans.ttf`, Bitstream Vera licence), so neither format needs a font library or
//! font files on the machine.

use std::path::Path;
use std::sync::Once;
use std::time::Duration;

use anyhow::Context as _;
use ballast_core::decision::{DecisionKind, Rule};
use ballast_core::{Resource, Thresholds, Timestamp};
use plotters::coord::Shift;
use plotters::coord::ranged1d::SegmentValue;
use plotters::prelude::*;

use super::engine::{Recording, Report, SeriesPoint};

/// The picture's size in pixels.
pub const SIZE: (u32, u32) = (1200, 600);
/// Width of the legend column on the right.
const LEGEND_WIDTH: u32 = 270;
/// Width of the label area left of both charts (the plugin names), so that their x axes align.
const Y_LABEL_WIDTH: u32 = 90;
/// At most this many points per line: a long trace is reduced to each bucket's low and high.
const MAX_BUCKETS: usize = 1000;

const FONT: &str = "sans-serif";
const TRACE: RGBColor = RGBColor(185, 185, 185);
const REPLAYED: RGBColor = RGBColor(31, 119, 180);
const SMOOTHED: RGBColor = RGBColor(255, 127, 14);
const FORECAST: RGBColor = RGBColor(148, 103, 189);
const SHED_LINE: RGBColor = RGBColor(214, 39, 40);
const RESTORE_LINE: RGBColor = RGBColor(44, 160, 44);
const EMERGENCY_LINE: RGBColor = RGBColor(120, 0, 0);
const FULL: RGBColor = RGBColor(120, 190, 120);
const REDUCED: RGBColor = RGBColor(245, 190, 80);
const REDUCED_MORE: RGBColor = RGBColor(230, 140, 40);
const OFF: RGBColor = RGBColor(215, 80, 70);

/// What the picture is of.
pub struct PlotInput<'a> {
    /// The trace's name, for the title.
    pub trace_name: &'a str,
    /// The resource it was replayed as.
    pub resource: Resource,
    /// The thresholds in force for it.
    pub thresholds: Thresholds,
    /// How far ahead the forecast looks.
    pub horizon: Duration,
    /// The replay's report (decisions, summary).
    pub report: &'a Report,
    /// The recorded readings and level changes.
    pub recording: &'a Recording,
}

/// Registers the embedded font with plotters, once.
fn register_font() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // The embedded file is a valid font (a test draws with it), so this cannot fail.
        let _ = plotters::style::register_font(
            FONT,
            FontStyle::Normal,
            include_bytes!("../../assets/DejaVuSans.ttf"),
        );
    });
}

/// Draws the picture into `path`: SVG or PNG by its extension.
pub fn plot_to_file(path: &Path, input: &PlotInput<'_>) -> anyhow::Result<()> {
    let extension = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    let name = path.display();
    match extension.as_deref() {
        Some("svg") => {
            let svg = plot_svg(input)?;
            std::fs::write(path, svg).with_context(|| format!("cannot write {name}"))
        }
        Some("png") => {
            register_font();
            let root = BitMapBackend::new(path, SIZE).into_drawing_area();
            draw(&root, input).map_err(|e| anyhow::anyhow!("cannot draw {name}: {e}"))?;
            root.present()
                .map_err(|e| anyhow::anyhow!("cannot write {name}: {e}"))
        }
        _ => anyhow::bail!("--plot {name}: the file name must end in .svg or .png"),
    }
}

/// The picture as an SVG document.
pub fn plot_svg(input: &PlotInput<'_>) -> anyhow::Result<String> {
    register_font();
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, SIZE).into_drawing_area();
        draw(&root, input).map_err(|e| anyhow::anyhow!("cannot draw the plot: {e}"))?;
        root.present()
            .map_err(|e| anyhow::anyhow!("cannot draw the plot: {e}"))?;
    }
    Ok(svg)
}

type DrawResult<DB> = Result<(), DrawingAreaErrorKind<<DB as DrawingBackend>::ErrorType>>;

/// The x axis counts hours from midnight (UTC) of the trace's first day, so that the axis picks
/// round clock times for its labels.
#[derive(Clone, Copy)]
struct Axis {
    origin: f64,
}

impl Axis {
    fn new(first: Timestamp) -> Axis {
        let s = first.as_secs_f64();
        Axis {
            origin: s - s.rem_euclid(86_400.0),
        }
    }

    fn x(self, t: Timestamp) -> f64 {
        (t.as_secs_f64() - self.origin) / 3600.0
    }

    fn seconds(self, x: f64) -> f64 {
        self.origin + x * 3600.0
    }
}

/// Utilizations stay on the chart (a forecast can overshoot).
fn clamp(v: f64) -> f64 {
    v.clamp(0.0, 1.05)
}

/// A time axis label: clock time, with the date when the trace spans more than a day, or an
/// offset for traces without dates.
fn time_label(x: f64, span: f64) -> String {
    let t = Timestamp::from_millis((x.max(0.0) * 1000.0) as u64);
    let c = t.civil();
    if x < 946_684_800.0 {
        let s = x.max(0.0) as u64;
        return format!("+{}d {:02}:{:02}", s / 86_400, s / 3600 % 24, s / 60 % 60);
    }
    if span > 86_400.0 {
        format!("{:02}-{:02} {:02}:{:02}", c.month, c.day, c.hour, c.minute)
    } else {
        format!("{:02}:{:02}", c.hour, c.minute)
    }
}

/// Each bucket's low and high (in time order) of `value`, so that a long series keeps its
/// spikes in `2 * MAX_BUCKETS` points.
fn envelope(
    axis: Axis,
    points: &[SeriesPoint],
    value: impl Fn(&SeriesPoint) -> Option<f64>,
) -> Vec<(f64, f64)> {
    let values: Vec<(f64, f64)> = points
        .iter()
        .filter_map(|p| value(p).map(|v| (axis.x(p.at), clamp(v))))
        .collect();
    if values.len() <= 2 * MAX_BUCKETS {
        return values;
    }
    let per = values.len().div_ceil(MAX_BUCKETS);
    let mut out = Vec::with_capacity(2 * MAX_BUCKETS + 2);
    for chunk in values.chunks(per) {
        let low = chunk.iter().min_by(|a, b| a.1.total_cmp(&b.1));
        let high = chunk.iter().max_by(|a, b| a.1.total_cmp(&b.1));
        if let (Some(low), Some(high)) = (low, high) {
            if low.0 <= high.0 {
                out.extend([*low, *high]);
            } else {
                out.extend([*high, *low]);
            }
        }
    }
    out
}

/// The replayed utilization at `at` (the latest reading at or before it).
fn replayed_at(points: &[SeriesPoint], at: Timestamp) -> f64 {
    let i = points.partition_point(|p| p.at <= at);
    points.get(i.saturating_sub(1)).map_or(0.0, |p| p.replayed)
}

fn draw<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    input: &PlotInput<'_>,
) -> DrawResult<DB> {
    root.fill(&WHITE)?;
    let points = &input.recording.points;
    let (Some(first), Some(last)) = (points.first(), points.last()) else {
        root.draw_text(
            "no readings to plot",
            &(FONT, 20).into_text_style(root),
            (20, 20),
        )?;
        return Ok(());
    };
    let axis = Axis::new(first.at);
    let x0 = axis.x(first.at);
    let x1 = axis.x(last.at).max(x0 + 1.0 / 60.0);
    let span = (x1 - x0) * 3600.0;
    let title = format!(
        "ballast simulate: {} replayed as {}",
        input.trace_name, input.resource
    );
    let root = root.titled(&title, (FONT, 22))?;
    let (main, side) = root.split_horizontally(SIZE.0 - LEGEND_WIDTH);
    let (upper, lower) = main.split_vertically(330);

    // The resource over time.
    let mut chart = ChartBuilder::on(&upper)
        .margin_left(8)
        .margin_right(12)
        .margin_top(8)
        .x_label_area_size(6)
        .y_label_area_size(Y_LABEL_WIDTH)
        .build_cartesian_2d(x0..x1, 0.0..1.05)?;
    chart
        .configure_mesh()
        .x_labels(0)
        .y_labels(6)
        .y_label_formatter(&|y| format!("{:.0}%", y * 100.0))
        .y_desc(format!("{} utilization", input.resource))
        .label_style((FONT, 14))
        .axis_desc_style((FONT, 15))
        .light_line_style(RGBColor(240, 240, 240))
        .bold_line_style(RGBColor(225, 225, 225))
        .draw()?;
    let t = input.thresholds;
    let mut lines = vec![(t.shed, SHED_LINE, 2), (t.restore, RESTORE_LINE, 2)];
    if let Some(e) = t.emergency {
        lines.push((e, EMERGENCY_LINE, 2));
    }
    for (y, color, width) in &lines {
        chart.draw_series(DashedLineSeries::new(
            [(x0, *y), (x1, *y)],
            8,
            5,
            color.stroke_width(*width),
        ))?;
    }
    chart.draw_series(LineSeries::new(
        envelope(axis, points, |p| Some(p.trace)),
        TRACE.stroke_width(1),
    ))?;
    chart.draw_series(LineSeries::new(
        envelope(axis, points, |p| p.forecast.map(|f| f.0)),
        FORECAST.mix(0.8).stroke_width(1),
    ))?;
    chart.draw_series(LineSeries::new(
        envelope(axis, points, |p| Some(p.replayed)),
        REPLAYED.stroke_width(2),
    ))?;
    chart.draw_series(LineSeries::new(
        envelope(axis, points, |p| Some(p.smoothed)),
        SMOOTHED.stroke_width(2),
    ))?;
    let decisions = &input.report.decisions;
    let marker_at =
        |d: &ballast_core::decision::Decision| (axis.x(d.at), clamp(replayed_at(points, d.at)));
    chart.draw_series(
        decisions
            .iter()
            .filter(|d| d.kind == DecisionKind::Shed)
            .map(|d| {
                let color = if d.rule == Rule::Emergency {
                    EMERGENCY_LINE
                } else {
                    SHED_LINE
                };
                EmptyElement::at(marker_at(d))
                    + Polygon::new(TRIANGLE_DOWN.to_vec(), color.filled())
            }),
    )?;
    chart.draw_series(
        decisions
            .iter()
            .filter(|d| d.kind == DecisionKind::Restore)
            .map(|d| TriangleMarker::new(marker_at(d), 7, RESTORE_LINE.filled())),
    )?;

    // One band per plugin.
    let levels = &input.recording.levels;
    let n = levels.len() as u32;
    let names: Vec<&str> = levels.iter().map(|(name, _)| name.as_str()).collect();
    let mut bands = ChartBuilder::on(&lower)
        .margin_left(8)
        .margin_right(12)
        .margin_top(6)
        .x_label_area_size(44)
        .y_label_area_size(Y_LABEL_WIDTH)
        .build_cartesian_2d(x0..x1, (0..n.max(1) - 1).into_segmented())?;
    let name_of = |v: &SegmentValue<u32>| match v {
        SegmentValue::CenterOf(i) => names
            .get(*i as usize)
            .map_or(String::new(), |s| (*s).to_owned()),
        _ => String::new(),
    };
    bands
        .configure_mesh()
        .disable_y_mesh()
        .x_labels(8)
        .x_label_formatter(&|x| time_label(axis.seconds(*x), span))
        .y_labels(n.max(1) as usize)
        .y_label_formatter(&name_of)
        .x_desc(if axis.origin < 946_684_800.0 {
            "time since the start of the trace"
        } else {
            "time (UTC)"
        })
        .label_style((FONT, 14))
        .axis_desc_style((FONT, 15))
        .light_line_style(RGBColor(240, 240, 240))
        .bold_line_style(RGBColor(225, 225, 225))
        .draw()?;
    for (row, (name, changes)) in levels.iter().enumerate() {
        let row = row as u32;
        let mut rects = Vec::new();
        for (i, (at, level)) in changes.iter().enumerate() {
            let from = axis.x(*at).max(x0);
            let to = changes.get(i + 1).map_or(x1, |next| axis.x(next.0)).min(x1);
            if to <= from {
                continue;
            }
            let color = match level {
                Some(0) => FULL,
                Some(1) => REDUCED,
                Some(_) => REDUCED_MORE,
                None => OFF,
            };
            rects.push(Rectangle::new(
                [
                    (from, SegmentValue::Exact(row)),
                    (to, SegmentValue::Exact(row + 1)),
                ],
                color.filled(),
            ));
        }
        bands.draw_series(rects)?;
        // A tick at each decision about the plugin.
        let ticks = decisions.iter().filter(|d| {
            d.plugin.as_deref() == Some(name.as_str())
                && matches!(d.kind, DecisionKind::Shed | DecisionKind::Restore)
        });
        bands.draw_series(ticks.map(|d| {
            PathElement::new(
                vec![
                    (axis.x(d.at), SegmentValue::Exact(row)),
                    (axis.x(d.at), SegmentValue::Exact(row + 1)),
                ],
                BLACK.stroke_width(2),
            )
        }))?;
        // A thin white gap between bands.
        bands.draw_series(std::iter::once(PathElement::new(
            vec![
                (x0, SegmentValue::Exact(row)),
                (x1, SegmentValue::Exact(row)),
            ],
            WHITE.stroke_width(3),
        )))?;
    }

    draw_legend(&side, input)
}

/// The legend and the summary, in the right-hand column.
fn draw_legend<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    input: &PlotInput<'_>,
) -> DrawResult<DB> {
    let text = (FONT, 14).into_font().color(&BLACK);
    let bold = (FONT, 15).into_font().color(&BLACK);
    let mut y = 14;
    let line =
        |area: &DrawingArea<DB, Shift>, y: i32, color: RGBColor, width: u32, dashed: bool| {
            if dashed {
                for x in (10..40).step_by(10) {
                    area.draw(&PathElement::new(
                        vec![(x, y), (x + 6, y)],
                        color.stroke_width(width),
                    ))?;
                }
                Ok(())
            } else {
                area.draw(&PathElement::new(
                    vec![(10, y), (40, y)],
                    color.stroke_width(width),
                ))
            }
        };
    area.draw_text("utilization", &bold, (10, y))?;
    y += 22;
    let horizon = humantime::format_duration(input.horizon);
    let t = input.thresholds;
    let mut entries: Vec<(String, RGBColor, u32, bool)> = vec![
        (
            "trace (every plugin at full level)".to_owned(),
            TRACE,
            1,
            false,
        ),
        ("replayed with the sheds".to_owned(), REPLAYED, 2, false),
        (
            "smoothed (what the policy sees)".to_owned(),
            SMOOTHED,
            2,
            false,
        ),
        (format!("forecast {horizon} ahead"), FORECAST, 1, false),
        (
            format!("shed at {:.0}%", t.shed * 100.0),
            SHED_LINE,
            2,
            true,
        ),
        (
            format!("restore below {:.0}%", t.restore * 100.0),
            RESTORE_LINE,
            2,
            true,
        ),
    ];
    if let Some(e) = t.emergency {
        entries.push((
            format!("emergency at {:.0}%", e * 100.0),
            EMERGENCY_LINE,
            2,
            true,
        ));
    }
    for (label, color, width, dashed) in &entries {
        line(area, y + 8, *color, *width, *dashed)?;
        area.draw_text(label, &text, (48, y))?;
        y += 20;
    }
    area.draw(
        &(EmptyElement::at((25, y + 8)) + Polygon::new(TRIANGLE_DOWN.to_vec(), SHED_LINE.filled())),
    )?;
    area.draw_text("shed (dark: emergency)", &text, (48, y))?;
    y += 20;
    area.draw(&TriangleMarker::new((25, y + 8), 7, RESTORE_LINE.filled()))?;
    area.draw_text("restore", &text, (48, y))?;
    y += 30;
    area.draw_text("plugins", &bold, (10, y))?;
    y += 22;
    for (label, color) in [
        ("full level", FULL),
        ("cheaper level 1", REDUCED),
        ("cheaper level 2+", REDUCED_MORE),
        ("shed (off)", OFF),
    ] {
        area.draw(&Rectangle::new([(10, y + 2), (40, y + 14)], color.filled()))?;
        area.draw_text(label, &text, (48, y))?;
        y += 20;
    }
    area.draw(&PathElement::new(
        vec![(25, y + 1), (25, y + 15)],
        BLACK.stroke_width(2),
    ))?;
    area.draw_text("decision about it", &text, (48, y))?;
    y += 30;
    let s = &input.report.summary;
    let minutes = |seconds: f64| {
        humantime::format_duration(Duration::from_secs((seconds / 60.0).round() as u64 * 60))
            .to_string()
    };
    let shed_total: f64 = s.seconds_shed.values().sum();
    area.draw_text("summary", &bold, (10, y))?;
    y += 22;
    for row in [
        format!(
            "{} sheds, {} restores, {} flaps",
            s.sheds, s.restores, s.flaps
        ),
        format!("over shed threshold: {}", minutes(s.seconds_over_high)),
        format!("in emergency: {}", minutes(s.seconds_in_emergency)),
        format!("plugin time shed: {}", minutes(shed_total)),
    ] {
        area.draw_text(&row, &text, (10, y))?;
        y += 20;
    }
    Ok(())
}

/// A triangle pointing down, in pixels around its point (plotters has only the upward one).
const TRIANGLE_DOWN: [(i32, i32); 3] = [(-7, -6), (7, -6), (0, 6)];

#[cfg(test)]
mod tests;
