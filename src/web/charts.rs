//! SVG charts for the pages, drawn with plotters' SVG backend: pure functions from numbers to an
//! SVG string.
//!
//! Invariant: no IO, no HTML around the SVG, and no `style=` attributes (the CSP allows no inline
//! style; plotters writes presentation attributes only). Every category has one colour here, the
//! same as in `static/app.css`. Text reaches the SVG only through plotters, which escapes `<`,
//! `>` and `&`; the output is the only thing a template may mark `|safe`.

use collector::category::Category;
use plotters::coord::Shift;
use plotters::prelude::*;

/// The category colours (Tableau 10, readable on light and dark backgrounds). `static/app.css`
/// repeats them as `--db`, `--cache`, ...; a test keeps the two in step.
pub const CATEGORY_COLORS: [(Category, RGBColor); Category::COUNT] = [
    (Category::Db, RGBColor(0x4e, 0x79, 0xa7)),
    (Category::Cache, RGBColor(0x76, 0xb7, 0xb2)),
    (Category::Network, RGBColor(0xf2, 0x8e, 0x2b)),
    (Category::Messaging, RGBColor(0xb0, 0x7a, 0xa1)),
    (Category::Cpu, RGBColor(0xe1, 0x57, 0x59)),
    (Category::Wait, RGBColor(0xba, 0xb0, 0xac)),
    (Category::Untraced, RGBColor(0xed, 0xc9, 0x48)),
];

/// The percentile lines: neutral, amber and magenta, so they never read as a category.
const P50_COLOR: RGBColor = RGBColor(0x8b, 0x95, 0xa1);
const P95_COLOR: RGBColor = RGBColor(0xd4, 0xa0, 0x17);
const P99_COLOR: RGBColor = RGBColor(0xc2, 0x18, 0x5b);

/// Text and axes are drawn in this colour and then turned into `currentColor`, so the charts
/// follow the page's light or dark text colour.
const INK: RGBColor = RGBColor(0, 0, 0);

/// Chart size in SVG user units; the page scales it to its column width.
const WIDTH: u32 = 600;
const HEIGHT: u32 = 250;
/// Room on the right for the legend.
const LEGEND_WIDTH: u32 = 92;

/// The colour of a category.
pub fn category_color(category: Category) -> RGBColor {
    CATEGORY_COLORS
        .iter()
        .find(|(c, _)| *c == category)
        .map(|(_, color)| *color)
        .expect("every category has a colour")
}

/// One point of the breakdown-over-time chart: bucket start (unix ms) and ms per category in
/// `Category::ALL` order.
#[derive(Debug, Clone, PartialEq)]
pub struct BreakdownPoint {
    pub t_ms: f64,
    pub ms: [f64; Category::COUNT],
}

/// One point of the percentile chart.
#[derive(Debug, Clone, PartialEq)]
pub struct LatencyPoint {
    pub t_ms: f64,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
}

/// A line of the percentile chart: its legend, colour and value.
type PercentileLine = (&'static str, RGBColor, fn(&LatencyPoint) -> f64);

/// One bar of the latency histogram.
#[derive(Debug, Clone, PartialEq)]
pub struct HistogramBar {
    pub from_ms: f64,
    pub to_ms: f64,
    pub requests: u64,
}

/// `12 ms`, `1.5 ms`, `2.3 s`: axis labels.
pub fn short_ms(ms: f64) -> String {
    if ms >= 10_000.0 {
        format!("{:.0} s", ms / 1000.0)
    } else if ms >= 1000.0 {
        format!("{:.1} s", ms / 1000.0)
    } else if ms >= 10.0 || ms == 0.0 {
        format!("{ms:.0} ms")
    } else if ms >= 1.0 {
        format!("{ms:.1} ms")
    } else {
        format!("{ms:.2} ms")
    }
}

/// How much of a timestamp an axis label shows.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Clock {
    /// `14:05:30`, for windows under an hour.
    Seconds,
    /// `14:05`.
    Minutes,
    /// `05-01 14:05`, for windows over a day.
    Date,
}

impl Clock {
    fn for_span(span_ms: f64) -> Self {
        if span_ms > 86_400_000.0 {
            Clock::Date
        } else if span_ms < 3_600_000.0 {
            Clock::Seconds
        } else {
            Clock::Minutes
        }
    }
}

/// An axis label (UTC) from unix milliseconds.
fn clock(t_ms: f64, precision: Clock) -> String {
    let text = crate::time::rfc3339((t_ms.max(0.0) * 1e6) as u64);
    match precision {
        Clock::Seconds => text[11..19].to_owned(),
        Clock::Minutes => text[11..16].to_owned(),
        Clock::Date => format!("{} {}", &text[5..10], &text[11..16]),
    }
}

/// Makes plotters' output fit the page: no fixed size (the CSS sizes it from the viewBox), text
/// and axes in the page's text colour, an accessible name.
fn finish(svg: String, label: &str) -> String {
    let fixed = format!(r#"<svg width="{WIDTH}" height="{HEIGHT}" "#);
    let named = format!(
        r#"<svg class="chart" role="img" aria-label="{}" "#,
        label
            .replace('&', "&amp;")
            .replace('"', "&quot;")
            .replace('<', "&lt;")
    );
    svg.replacen(&fixed, &named, 1)
        .replace("\"#000000\"", "\"currentColor\"")
}

fn empty(label: &str, message: &str) -> String {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, HEIGHT)).into_drawing_area();
        let style = ("sans-serif", 16).into_font().color(&INK);
        let _ = root.draw(&Text::new(
            message.to_owned(),
            (WIDTH as i32 / 2 - 110, HEIGHT as i32 / 2),
            style,
        ));
        let _ = root.present();
    }
    finish(svg, label)
}

/// Draws the legend: a swatch and a label per entry, top to bottom.
fn legend(area: &DrawingArea<SVGBackend<'_>, Shift>, entries: &[(String, RGBColor)]) {
    for (idx, (label, color)) in entries.iter().enumerate() {
        let y = 40 + idx as i32 * 22;
        let _ = area.draw(&Rectangle::new([(8, y - 6), (20, y + 6)], color.filled()));
        let _ = area.draw(&Text::new(
            label.clone(),
            (26, y - 7),
            ("sans-serif", 15).into_font().color(&INK),
        ));
    }
}

fn time_range(first: f64, last: f64) -> std::ops::Range<f64> {
    if last > first {
        first..last
    } else {
        first - 30_000.0..first + 30_000.0
    }
}

/// The mean breakdown per request over time, as a stacked area chart (ms per request).
pub fn breakdown_area_chart(points: &[BreakdownPoint]) -> String {
    let label = "Breakdown over time, ms per request";
    if points.is_empty() {
        return empty(label, "No requests in this window");
    }
    // One bucket has no area: draw it as a band a bucket wide.
    let widened;
    let points = if let [only] = points {
        widened = [
            BreakdownPoint {
                t_ms: only.t_ms - 30_000.0,
                ..only.clone()
            },
            BreakdownPoint {
                t_ms: only.t_ms + 30_000.0,
                ..only.clone()
            },
        ];
        &widened[..]
    } else {
        points
    };
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, HEIGHT)).into_drawing_area();
        let (plot, side) = root.split_horizontally(WIDTH - LEGEND_WIDTH);
        let first = points.first().map_or(0.0, |p| p.t_ms);
        let last = points.last().map_or(0.0, |p| p.t_ms);
        let precision = Clock::for_span(last - first);
        let top = points
            .iter()
            .map(|p| p.ms.iter().sum::<f64>())
            .fold(0.0f64, f64::max)
            .max(0.001)
            * 1.1;
        let chart = ChartBuilder::on(&plot)
            .margin(8)
            .x_label_area_size(28)
            .y_label_area_size(64)
            .build_cartesian_2d(time_range(first, last), 0.0..top);
        let Ok(mut chart) = chart else {
            return empty(label, "Chart could not be drawn");
        };
        let _ = chart
            .configure_mesh()
            .light_line_style(INK.mix(0.06))
            .bold_line_style(INK.mix(0.12))
            .axis_style(INK.mix(0.5))
            .x_labels(6)
            .y_labels(5)
            .x_label_formatter(&|t| clock(*t, precision))
            .y_label_formatter(&|v| short_ms(*v))
            .label_style(("sans-serif", 15).into_font().color(&INK))
            .draw();
        // Stacked by drawing each cumulative sum from the top down, each hiding the next.
        for depth in (0..Category::ALL.len()).rev() {
            let color = category_color(Category::ALL[depth]);
            let series = points
                .iter()
                .map(|p| (p.t_ms, p.ms[..=depth].iter().sum::<f64>()));
            let _ = chart.draw_series(AreaSeries::new(series, 0.0, color.filled()));
        }
        let entries: Vec<(String, RGBColor)> = Category::ALL
            .iter()
            .rev()
            .map(|c| (c.as_str().to_owned(), category_color(*c)))
            .collect();
        legend(&side, &entries);
        let _ = root.present();
    }
    finish(svg, label)
}

/// p50, p95 and p99 over time.
pub fn percentile_chart(points: &[LatencyPoint]) -> String {
    let label = "Latency percentiles over time";
    if points.is_empty() {
        return empty(label, "No requests in this window");
    }
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, HEIGHT)).into_drawing_area();
        let (plot, side) = root.split_horizontally(WIDTH - LEGEND_WIDTH);
        let first = points.first().map_or(0.0, |p| p.t_ms);
        let last = points.last().map_or(0.0, |p| p.t_ms);
        let precision = Clock::for_span(last - first);
        let top = points
            .iter()
            .map(|p| p.p99_ms.max(p.p95_ms).max(p.p50_ms))
            .fold(0.0f64, f64::max)
            .max(0.001)
            * 1.1;
        let chart = ChartBuilder::on(&plot)
            .margin(8)
            .x_label_area_size(28)
            .y_label_area_size(64)
            .build_cartesian_2d(time_range(first, last), 0.0..top);
        let Ok(mut chart) = chart else {
            return empty(label, "Chart could not be drawn");
        };
        let _ = chart
            .configure_mesh()
            .light_line_style(INK.mix(0.06))
            .bold_line_style(INK.mix(0.12))
            .axis_style(INK.mix(0.5))
            .x_labels(6)
            .y_labels(5)
            .x_label_formatter(&|t| clock(*t, precision))
            .y_label_formatter(&|v| short_ms(*v))
            .label_style(("sans-serif", 15).into_font().color(&INK))
            .draw();
        let lines: [PercentileLine; 3] = [
            ("p99", P99_COLOR, |p| p.p99_ms),
            ("p95", P95_COLOR, |p| p.p95_ms),
            ("p50", P50_COLOR, |p| p.p50_ms),
        ];
        for (_, color, value) in lines {
            let style = color.stroke_width(2);
            let _ = chart.draw_series(LineSeries::new(
                points.iter().map(|p| (p.t_ms, value(p))),
                style,
            ));
            if points.len() == 1 {
                let _ = chart.draw_series(
                    points
                        .iter()
                        .map(|p| Circle::new((p.t_ms, value(p)), 3, color.filled())),
                );
            }
        }
        let entries: Vec<(String, RGBColor)> = lines
            .iter()
            .map(|(name, color, _)| ((*name).to_owned(), *color))
            .collect();
        legend(&side, &entries);
        let _ = root.present();
    }
    finish(svg, label)
}

/// The latency distribution: one bar per log-spaced bucket, labelled with its upper bound.
pub fn latency_histogram(bars: &[HistogramBar]) -> String {
    let label = "Latency distribution, requests per duration bucket";
    if bars.is_empty() {
        return empty(label, "No requests in this window");
    }
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, HEIGHT)).into_drawing_area();
        let (plot, side) = root.split_horizontally(WIDTH - LEGEND_WIDTH);
        let top = bars.iter().map(|b| b.requests).max().unwrap_or(1).max(1) as f64 * 1.1;
        let n = bars.len();
        let chart = ChartBuilder::on(&plot)
            .margin(8)
            .x_label_area_size(28)
            .y_label_area_size(64)
            .build_cartesian_2d(0.0..n as f64, 0.0..top);
        let Ok(mut chart) = chart else {
            return empty(label, "Chart could not be drawn");
        };
        let _ = chart
            .configure_mesh()
            .disable_x_mesh()
            .light_line_style(INK.mix(0.06))
            .bold_line_style(INK.mix(0.12))
            .axis_style(INK.mix(0.5))
            .x_labels(n.min(8))
            .y_labels(5)
            .x_label_formatter(&|x| {
                let idx = (x.round() as usize).min(n - 1);
                short_ms(bars[idx].from_ms)
            })
            .y_label_formatter(&|v| format!("{v:.0}"))
            .label_style(("sans-serif", 15).into_font().color(&INK))
            .draw();
        let bar_color = category_color(Category::Db);
        let _ = chart.draw_series(bars.iter().enumerate().map(|(idx, bar)| {
            Rectangle::new(
                [
                    (idx as f64 + 0.08, 0.0),
                    (idx as f64 + 0.92, bar.requests as f64),
                ],
                bar_color.filled(),
            )
        }));
        legend(&side, &[("requests".to_owned(), bar_color)]);
        let _ = root.present();
    }
    finish(svg, label)
}

/// One bucket of two overlaid latency distributions.
#[derive(Debug, Clone, PartialEq)]
pub struct CompareBar {
    pub from_ms: f64,
    pub to_ms: f64,
    pub baseline: u64,
    pub candidate: u64,
}

/// The baseline in a comparison: a light neutral grey, the "before".
const BASELINE_COLOR: RGBColor = RGBColor(0xb4, 0xbb, 0xc4);
/// The candidate: a blue no category uses, the "after".
const CANDIDATE_COLOR: RGBColor = RGBColor(0x2f, 0x6f, 0xdb);

/// Two latency distributions in one chart: per log-spaced bucket, the share of each side's
/// requests, the baseline as a wide grey bar and the candidate as a narrower blue bar in front,
/// so a shift to the right reads at a glance. Shares, not counts, so sides of different sizes
/// compare. The labels name the two sides (escaped by plotters).
pub fn compare_histogram(
    bars: &[CompareBar],
    baseline_label: &str,
    candidate_label: &str,
) -> String {
    let label = "Latency distribution of the baseline and the candidate, share of requests per duration bucket";
    if bars.is_empty() {
        return empty(label, "No requests on either side");
    }
    let total = |side: fn(&CompareBar) -> u64| bars.iter().map(side).sum::<u64>().max(1) as f64;
    let (baseline_total, candidate_total) = (total(|b| b.baseline), total(|b| b.candidate));
    let shares: Vec<(f64, f64)> = bars
        .iter()
        .map(|b| {
            (
                b.baseline as f64 / baseline_total * 100.0,
                b.candidate as f64 / candidate_total * 100.0,
            )
        })
        .collect();
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, HEIGHT)).into_drawing_area();
        let (plot, side) = root.split_horizontally(WIDTH - LEGEND_WIDTH - 40);
        let top = shares
            .iter()
            .map(|(a, b)| a.max(*b))
            .fold(0.0f64, f64::max)
            .max(1.0)
            * 1.1;
        let n = bars.len();
        let chart = ChartBuilder::on(&plot)
            .margin(8)
            .x_label_area_size(28)
            .y_label_area_size(52)
            .build_cartesian_2d(0.0..n as f64, 0.0..top);
        let Ok(mut chart) = chart else {
            return empty(label, "Chart could not be drawn");
        };
        let _ = chart
            .configure_mesh()
            .disable_x_mesh()
            .light_line_style(INK.mix(0.06))
            .bold_line_style(INK.mix(0.12))
            .axis_style(INK.mix(0.5))
            .x_labels(n.min(8))
            .y_labels(5)
            .x_label_formatter(&|x| {
                let idx = (x.round() as usize).min(n - 1);
                short_ms(bars[idx].from_ms)
            })
            .y_label_formatter(&|v| format!("{v:.0}%"))
            .label_style(("sans-serif", 15).into_font().color(&INK))
            .draw();
        let _ = chart.draw_series(shares.iter().enumerate().map(|(idx, (share, _))| {
            Rectangle::new(
                [(idx as f64 + 0.06, 0.0), (idx as f64 + 0.94, *share)],
                BASELINE_COLOR.filled(),
            )
        }));
        let _ = chart.draw_series(shares.iter().enumerate().map(|(idx, (_, share))| {
            Rectangle::new(
                [(idx as f64 + 0.28, 0.0), (idx as f64 + 0.72, *share)],
                CANDIDATE_COLOR.filled(),
            )
        }));
        legend(
            &side,
            &[
                (truncate(baseline_label), BASELINE_COLOR),
                (truncate(candidate_label), CANDIDATE_COLOR),
            ],
        );
        let _ = root.present();
    }
    finish(svg, label)
}

/// A legend label short enough for the legend column.
fn truncate(text: &str) -> String {
    const MAX: usize = 14;
    if text.chars().count() > MAX {
        text.chars().take(MAX - 1).chain(['…']).collect()
    } else {
        text.to_owned()
    }
}

/// A segment of a horizontal stacked bar, in a viewBox 1000 units wide.
#[derive(Debug, Clone, PartialEq)]
pub struct BarSegment {
    /// The category name, also the CSS class suffix (`cat-db`).
    pub category: &'static str,
    /// Start, 0..1000.
    pub x: String,
    /// Width, 0..1000.
    pub width: String,
    /// Tooltip: `db 140 ms (47%)`.
    pub title: String,
}

/// The segments of a stacked bar for a breakdown (ms per category in `Category::ALL` order),
/// scaled so that `scale_ms` fills the bar. Zero categories are left out.
pub fn bar_segments(ms: &[f64; Category::COUNT], scale_ms: f64) -> Vec<BarSegment> {
    let total: f64 = ms.iter().sum();
    let scale = if scale_ms > 0.0 { scale_ms } else { total };
    let mut x = 0.0;
    let mut out = Vec::new();
    for (category, value) in Category::ALL.iter().zip(ms) {
        if *value <= 0.0 || scale <= 0.0 {
            continue;
        }
        let width = value / scale * 1000.0;
        out.push(BarSegment {
            category: category.as_str(),
            x: format!("{x:.1}"),
            width: format!("{width:.1}"),
            title: format!(
                "{} {} ({:.0}%)",
                category.as_str(),
                short_ms(*value),
                if total > 0.0 {
                    value / total * 100.0
                } else {
                    0.0
                }
            ),
        });
        x += width;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn points() -> Vec<BreakdownPoint> {
        (0..5)
            .map(|i| BreakdownPoint {
                t_ms: 1_700_000_000_000.0 + f64::from(i) * 60_000.0,
                ms: [140.0, 5.0, 100.0, 0.0, 55.0, 1.0, 0.0],
            })
            .collect()
    }

    #[test]
    fn charts_are_svg_without_style_attributes() {
        let latency: Vec<LatencyPoint> = (0..5)
            .map(|i| LatencyPoint {
                t_ms: 1_700_000_000_000.0 + f64::from(i) * 60_000.0,
                p50_ms: 300.0,
                p95_ms: 420.0,
                p99_ms: 600.0,
            })
            .collect();
        let bars = vec![
            HistogramBar {
                from_ms: 200.0,
                to_ms: 300.0,
                requests: 4,
            },
            HistogramBar {
                from_ms: 300.0,
                to_ms: 450.0,
                requests: 1,
            },
        ];
        for svg in [
            breakdown_area_chart(&points()),
            percentile_chart(&latency),
            latency_histogram(&bars),
            breakdown_area_chart(&[]),
            compare_histogram(
                &[CompareBar {
                    from_ms: 200.0,
                    to_ms: 300.0,
                    baseline: 4,
                    candidate: 1,
                }],
                "version:1.0",
                "version:1.1",
            ),
            compare_histogram(&[], "a", "b"),
        ] {
            assert!(svg.starts_with("<svg class=\"chart\""), "{svg:.200}");
            assert!(svg.contains("viewBox"));
            assert!(!svg.contains("style="), "inline style in {svg}");
            assert!(!svg.contains("#000000"));
        }
    }

    #[test]
    fn category_colours_match_the_stylesheet() {
        let css = include_str!("../../static/app.css");
        for (category, color) in CATEGORY_COLORS {
            let declaration = format!(
                "--{}: #{:02x}{:02x}{:02x};",
                category.as_str(),
                color.0,
                color.1,
                color.2
            );
            assert!(css.contains(&declaration), "app.css lacks {declaration}");
        }
    }

    #[test]
    fn text_is_escaped() {
        let svg = empty("<script>&", "<script>alert(1)</script>&");
        assert!(!svg.contains("<script>"));
        assert!(svg.contains("&lt;script&gt;alert(1)&lt;/script&gt;&amp;"));
    }

    #[test]
    fn comparison_labels_are_escaped_and_shortened() {
        let bar = CompareBar {
            from_ms: 1.0,
            to_ms: 2.0,
            baseline: 1,
            candidate: 1,
        };
        let svg = compare_histogram(&[bar], "<b>&", "host.name:a-very-long-host-name");
        assert!(!svg.contains("<b>"));
        assert!(svg.contains("&lt;b&gt;&amp;"));
        assert!(svg.contains("host.name:a-v…"));
    }

    #[test]
    fn bar_segments_fill_the_scale() {
        let segments = bar_segments(&[150.0, 0.0, 100.0, 0.0, 50.0, 0.0, 0.0], 300.0);
        assert_eq!(segments.len(), 3);
        assert_eq!(segments[0].width, "500.0");
        assert_eq!(segments[1].x, "500.0");
        assert_eq!(segments[2].title, "cpu 50 ms (17%)");
    }
}
