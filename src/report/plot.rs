//! A small line/scatter chart on `plotters`' SVG backend: coloured series with markers, a legend
//! laid out below the plot (so it never covers data), and an optional dashed threshold line with a
//! shaded zone above it (labelled in the legend, for the same reason).
//!
//! `plotters` is built without its `ttf` feature, so it reads no font files: text sizes come from its
//! built-in estimate and the SVG carries `<text font-family="sans-serif">` elements for the browser
//! to render. The estimate is only used to place the legend, which leaves generous gaps for it.

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

/// Marker shapes, cycled per defense so lines stay apart without colour.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Marker {
    Circle,
    Triangle,
    Square,
    Diamond,
}

impl Marker {
    pub fn nth(i: usize) -> Marker {
        [Marker::Circle, Marker::Triangle, Marker::Square, Marker::Diamond][i % 4]
    }
}

/// How an axis' tick labels read.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Axis {
    /// Values already in 0..100, labelled `40%`.
    Percent,
    /// Whole numbers (steps, budgets).
    Int,
    /// Values are log2(K); labels show K at whole powers of two and nothing between.
    Log2,
    /// Anything else, with up to three decimals.
    Float,
}

/// One legend entry and its points; an empty label keeps it out of the legend.
#[derive(Debug, Clone)]
pub struct Series {
    pub label: String,
    pub color: RGBColor,
    pub marker: Marker,
    /// Join the points with a line (points are drawn in the given order).
    pub line: bool,
    /// Filled markers; hollow ones mark points that need a caveat (e.g. failed the capability guard).
    pub filled: bool,
    pub points: Vec<(f64, f64)>,
    /// (x, lo, hi): a shaded interval band drawn under the line (empty: none).
    pub band: Vec<(f64, f64, f64)>,
}

/// A chart to render. Ranges are in data units.
#[derive(Debug, Clone)]
pub struct Chart {
    pub title: String,
    pub x_desc: String,
    pub y_desc: String,
    pub x_axis: Axis,
    pub y_axis: Axis,
    pub x_range: (f64, f64),
    pub y_range: (f64, f64),
    /// A dashed horizontal line at this y, labelled in the legend; the zone above it is shaded.
    pub threshold: Option<(f64, String)>,
    /// Width and height of the plot part, without the legend.
    pub size: (u32, u32),
    pub series: Vec<Series>,
}

pub const TEXT: RGBColor = RGBColor(51, 51, 51);
const GRID: RGBColor = RGBColor(232, 232, 232);
const AXIS: RGBColor = RGBColor(150, 150, 150);
pub const BROKEN: RGBColor = RGBColor(192, 57, 43);
const LEGEND_ROW: u32 = 22;
/// Lines with more points than this are drawn without markers, which would only blur them.
const DENSE: usize = 24;

/// A `plotters` font whose SVG `font-size` comes out as `px` (its SVG backend divides by 1.24).
fn font(px: f64) -> TextStyle<'static> {
    ("sans-serif", px * 1.24).into_font().color(&TEXT)
}

/// Rough rendered width of `text` at 12 px sans-serif.
fn text_width(text: &str) -> u32 {
    (text.chars().count() as f64 * 6.4).ceil() as u32
}

/// `#rrggbb` for CSS.
pub fn hex(c: RGBColor) -> String {
    format!("#{:02x}{:02x}{:02x}", c.0, c.1, c.2)
}

fn tick(axis: Axis, v: f64) -> String {
    match axis {
        Axis::Percent => format!("{v:.0}%"),
        Axis::Int => format!("{v:.0}"),
        Axis::Log2 if (v - v.round()).abs() < 1e-6 => format!("{}", 2f64.powi(v.round() as i32)),
        Axis::Log2 => String::new(),
        Axis::Float => {
            let s = format!("{v:.3}");
            s.trim_end_matches('0').trim_end_matches('.').to_string()
        }
    }
}

/// Runs `$body` with `$make` bound to a closure that builds the marker shape in pixel offsets around
/// its anchor. A macro, not a `DynElement`, because `plotters` only draws `'static` dynamic
/// elements and the string-backed SVG backend borrows its string.
macro_rules! with_marker {
    ($m:expr, $color:expr, $filled:expr, |$make:ident| $body:expr) => {{
        let style = if $filled { $color.filled() } else { $color.stroke_width(2) };
        match $m {
            Marker::Circle => {
                let $make = move || Circle::new((0, 0), 4, style);
                $body
            }
            Marker::Triangle => {
                let $make = move || Polygon::new(vec![(0, -5), (5, 4), (-5, 4)], style);
                $body
            }
            Marker::Square => {
                let $make = move || Rectangle::new([(-4, -4), (4, 4)], style);
                $body
            }
            Marker::Diamond => {
                let $make = move || Polygon::new(vec![(0, -5), (5, 0), (0, 5), (-5, 0)], style);
                $body
            }
        }
    }};
}

/// A legend entry: a series, or the threshold line (no marker, dashed).
struct Entry<'a> {
    label: &'a str,
    color: RGBColor,
    marker: Option<(Marker, bool)>,
    line: bool,
}

const LEGEND_LEFT: u32 = 24;

/// Legend positions: entries flow left to right and wrap at `width`.
fn legend_layout(entries: &[Entry], width: u32) -> Vec<(u32, u32)> {
    let (mut x, mut row, mut out) = (0u32, 0u32, Vec::new());
    for e in entries {
        let w = 32 + text_width(e.label) + 14;
        if x > 0 && x + w > width {
            x = 0;
            row += 1;
        }
        out.push((x, row));
        x += w;
    }
    out
}

/// Renders the chart as an SVG document (a string starting with `<svg`). The legend lists each
/// labelled series once, then the threshold line.
pub fn render(chart: &Chart) -> Result<String, String> {
    let (w, h) = chart.size;
    let mut entries: Vec<Entry> = Vec::new();
    for s in chart.series.iter().filter(|s| !s.label.is_empty()) {
        if !entries.iter().any(|e| e.label == s.label) {
            let marker = Some((s.marker, s.filled));
            entries.push(Entry { label: &s.label, color: s.color, marker, line: s.line });
        }
    }
    if let Some((_, label)) = &chart.threshold {
        entries.push(Entry { label, color: BROKEN, marker: None, line: true });
    }
    let layout = legend_layout(&entries, w.saturating_sub(LEGEND_LEFT + 10));
    let legend_h = layout.last().map_or(0, |(_, row)| (row + 1) * LEGEND_ROW + 6);
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (w, h + legend_h)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| e.to_string())?;
        let (plot, legend) = root.split_vertically(h);
        draw_plot(&plot, chart)?;
        draw_legend(&legend, &entries, &layout)?;
        root.present().map_err(|e| e.to_string())?;
    }
    Ok(svg)
}

fn draw_plot<DB: DrawingBackend>(area: &DrawingArea<DB, Shift>, chart: &Chart) -> Result<(), String> {
    let err = |e: DrawingAreaErrorKind<DB::ErrorType>| e.to_string();
    let (x0, x1) = chart.x_range;
    let (y0, y1) = chart.y_range;
    let mut ctx = ChartBuilder::on(area)
        .caption(&chart.title, ("sans-serif", 15.0 * 1.24, FontStyle::Bold).into_font().color(&TEXT))
        .margin_left(8)
        .margin_right(22)
        .margin_top(6)
        .x_label_area_size(44)
        .y_label_area_size(58)
        .build_cartesian_2d(x0..x1, y0..y1)
        .map_err(err)?;
    let (xa, ya) = (chart.x_axis, chart.y_axis);
    let x_fmt = move |v: &f64| tick(xa, *v);
    let y_fmt = move |v: &f64| tick(ya, *v);
    let x_labels = if xa == Axis::Log2 { ((x1 - x0).ceil() as usize * 2).max(2) } else { 8 };
    ctx.configure_mesh()
        .x_desc(chart.x_desc.as_str())
        .y_desc(chart.y_desc.as_str())
        .axis_desc_style(font(12.5))
        .label_style(font(11.5))
        .x_labels(x_labels)
        .y_labels(6)
        .x_label_formatter(&x_fmt)
        .y_label_formatter(&y_fmt)
        .light_line_style(WHITE)
        .bold_line_style(GRID)
        .axis_style(AXIS)
        .draw()
        .map_err(err)?;
    if let Some((t, _)) = &chart.threshold {
        ctx.draw_series(std::iter::once(Rectangle::new([(x0, *t), (x1, y1)], BROKEN.mix(0.05).filled())))
            .map_err(err)?;
        ctx.draw_series(DashedLineSeries::new(vec![(x0, *t), (x1, *t)], 7, 5, BROKEN.mix(0.8).stroke_width(1)))
            .map_err(err)?;
    }
    // Bands first, so every line and marker stays on top of every band.
    for s in chart.series.iter().filter(|s| s.band.len() > 1) {
        let mut outline: Vec<(f64, f64)> = s.band.iter().map(|&(x, _, hi)| (x, hi)).collect();
        outline.extend(s.band.iter().rev().map(|&(x, lo, _)| (x, lo)));
        ctx.draw_series(std::iter::once(Polygon::new(outline, s.color.mix(0.15).filled()))).map_err(err)?;
    }
    for s in &chart.series {
        if s.line {
            for run in s.points.split(|(x, y)| !(x.is_finite() && y.is_finite())) {
                if run.len() > 1 {
                    ctx.draw_series(LineSeries::new(run.iter().copied(), s.color.stroke_width(2))).map_err(err)?;
                }
            }
        }
        let finite: Vec<(f64, f64)> =
            s.points.iter().copied().filter(|(x, y)| x.is_finite() && y.is_finite()).collect();
        if s.line && finite.len() > DENSE {
            continue;
        }
        let finite = finite.into_iter();
        with_marker!(s.marker, s.color, s.filled, |make| {
            ctx.draw_series(finite.map(|p| EmptyElement::at(p) + make())).map_err(err)?
        });
    }
    Ok(())
}

fn draw_legend<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    entries: &[Entry],
    layout: &[(u32, u32)],
) -> Result<(), String> {
    let err = |e: DrawingAreaErrorKind<DB::ErrorType>| e.to_string();
    for (e, (x, row)) in entries.iter().zip(layout) {
        let (x, y) = ((LEGEND_LEFT + x) as i32, (row * LEGEND_ROW) as i32 + 12);
        match (e.line, e.marker) {
            (true, None) => {
                let dashes = [(x, x + 7), (x + 11, x + 17), (x + 21, x + 26)];
                for (a, b) in dashes {
                    area.draw(&PathElement::new(vec![(a, y), (b, y)], e.color.stroke_width(1))).map_err(err)?;
                }
            }
            (true, Some(_)) => {
                area.draw(&PathElement::new(vec![(x, y), (x + 26, y)], e.color.stroke_width(2))).map_err(err)?;
            }
            (false, _) => {}
        }
        if let Some((m, filled)) = e.marker {
            with_marker!(m, e.color, filled, |make| area
                .draw(&(EmptyElement::at((x + 13, y)) + make()))
                .map_err(err)?);
        }
        let style = font(12.0).pos(Pos::new(HPos::Left, VPos::Center));
        area.draw(&Text::new(e.label.to_string(), (x + 32, y), style)).map_err(err)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_text_as_svg_text_and_escapes_it() {
        let chart = Chart {
            title: "a <b> & c".into(),
            x_desc: "steps".into(),
            y_desc: "HS".into(),
            x_axis: Axis::Int,
            y_axis: Axis::Percent,
            x_range: (0.0, 100.0),
            y_range: (0.0, 100.0),
            threshold: Some((50.0, "broken".into())),
            size: (400, 300),
            series: vec![Series {
                label: "<script>".into(),
                color: RGBColor(0, 0, 255),
                marker: Marker::Diamond,
                line: true,
                filled: true,
                points: vec![(0.0, 1.0), (50.0, f64::NAN), (60.0, 70.0), (100.0, 90.0)],
                band: vec![],
            }],
        };
        let svg = render(&chart).expect("renders");
        assert!(svg.starts_with("<svg"), "{}", &svg[..40]);
        assert!(svg.contains("<text"));
        assert!(svg.contains("a &lt;b&gt; &amp; c"));
        assert!(!svg.contains("<script>"));
        assert!(svg.contains("<polyline"), "a line was drawn");
    }

    #[test]
    fn log2_ticks_only_at_powers_of_two() {
        assert_eq!(tick(Axis::Log2, 4.0), "16");
        assert_eq!(tick(Axis::Log2, 4.5), "");
        assert_eq!(tick(Axis::Float, 0.25), "0.25");
    }
}
