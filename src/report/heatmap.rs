//! A heatmap on a categorical grid as a standalone SVG (the sweep's learning rate × steps maps):
//! one labelled rectangle per cell, coloured on a sequential white → red scale, with cells that
//! have no value shown hatched grey and marked `×` (e.g. every attack there was dropped by the
//! capability guard) and one cell optionally outlined (e.g. the worst case).
//!
//! Written as SVG text directly, in the style of the other figures (`plot.rs`): sans-serif
//! `<text>` elements for the browser to render, the same text colour and title size; no font
//! files are read. Every string is escaped.

use std::fmt::Write;

use plotters::style::RGBColor;

use super::fmt::html;
use super::plot::{TEXT, hex};

/// One cell of the grid.
#[derive(Debug, Clone, PartialEq)]
pub enum HeatCell {
    /// A value in 0..1 (the colour) with its label (e.g. `42%`); `outline` draws a heavy border.
    Value { value: f64, label: String, outline: bool },
    /// Measured, but not counted (hatched grey, `×`).
    Dropped,
    /// Not measured.
    Empty,
}

/// A grid to render: `cells[row][column]`, rows listed bottom to top.
#[derive(Debug, Clone, PartialEq)]
pub struct Heatmap {
    pub title: String,
    pub x_desc: String,
    pub y_desc: String,
    pub x_labels: Vec<String>,
    pub y_labels: Vec<String>,
    pub cells: Vec<Vec<HeatCell>>,
    /// What the colour means, e.g. `harmful score`.
    pub value_desc: String,
    /// What a dropped cell means, for the legend.
    pub dropped_desc: String,
    /// What an outlined cell means, for the legend (empty: no legend entry).
    pub outline_desc: String,
}

const CELL_W: i64 = 78;
const CELL_H: i64 = 42;
const LEFT: i64 = 92;
const TOP: i64 = 44;
const BOTTOM: i64 = 56;
const LEGEND_H: i64 = 88;
const MIN_WIDTH: i64 = 520;
const GRID: RGBColor = RGBColor(255, 255, 255);
const DROPPED: RGBColor = RGBColor(221, 221, 221);
/// ColorBrewer OrRd stops (sequential, readable in grey scale).
const STOPS: [(f64, RGBColor); 4] = [
    (0.0, RGBColor(255, 247, 236)),
    (0.35, RGBColor(253, 187, 132)),
    (0.7, RGBColor(239, 101, 72)),
    (1.0, RGBColor(153, 0, 0)),
];

/// The colour of `v` (clamped to 0..1) on the sequential scale.
pub fn color(v: f64) -> RGBColor {
    let v = if v.is_finite() { v.clamp(0.0, 1.0) } else { 0.0 };
    for w in STOPS.windows(2) {
        let ((a, ca), (b, cb)) = (w[0], w[1]);
        if v <= b {
            let t = (v - a) / (b - a);
            let mix = |x: u8, y: u8| (x as f64 + (y as f64 - x as f64) * t).round() as u8;
            return RGBColor(mix(ca.0, cb.0), mix(ca.1, cb.1), mix(ca.2, cb.2));
        }
    }
    STOPS[STOPS.len() - 1].1
}

/// Dark cells get white labels.
fn label_color(v: f64) -> RGBColor {
    if v > 0.62 { RGBColor(255, 255, 255) } else { TEXT }
}

fn text(svg: &mut String, x: i64, y: i64, size: f64, anchor: &str, extra: &str, s: &str) {
    let _ = writeln!(
        svg,
        r#"<text x="{x}" y="{y}" font-family="sans-serif" font-size="{size}" fill="{}" text-anchor="{anchor}" dominant-baseline="middle"{extra}>{}</text>"#,
        hex(TEXT),
        html(s)
    );
}

/// A heavy outline readable on light and dark fills: dark outside, white inside.
fn outline(svg: &mut String, x: i64, y: i64, w: i64, h: i64) {
    let _ = writeln!(
        svg,
        r#"<rect x="{x}" y="{y}" width="{w}" height="{h}" fill="none" stroke="{}" stroke-width="3"/>"#,
        hex(TEXT)
    );
    let _ = writeln!(
        svg,
        r#"<rect x="{}" y="{}" width="{}" height="{}" fill="none" stroke="white" stroke-width="1.5"/>"#,
        x + 3,
        y + 3,
        w - 6,
        h - 6
    );
}

/// Renders the heatmap as an SVG document (a string starting with `<svg`).
pub fn render(h: &Heatmap) -> String {
    let (cols, rows) = (h.x_labels.len() as i64, h.y_labels.len() as i64);
    let grid_w = cols * CELL_W;
    let width = (LEFT + grid_w + 24).max(MIN_WIDTH);
    // The grid block is centred; `left` is the grid's left edge.
    let left = (width - (LEFT + grid_w + 24)) / 2 + LEFT;
    let height = TOP + rows * CELL_H + BOTTOM + LEGEND_H;
    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<svg width="{width}" height="{height}" viewBox="0 0 {width} {height}" xmlns="http://www.w3.org/2000/svg">"#
    );
    svg.push_str(
        "<defs><pattern id=\"dropped\" width=\"6\" height=\"6\" patternUnits=\"userSpaceOnUse\" \
         patternTransform=\"rotate(45)\"><rect width=\"6\" height=\"6\" fill=\"#eeeeee\"/>\
         <line x1=\"0\" y1=\"0\" x2=\"0\" y2=\"6\" stroke=\"#c4c4c4\" stroke-width=\"2\"/></pattern></defs>\n",
    );
    let _ = writeln!(svg, r#"<rect width="{width}" height="{height}" fill="white"/>"#);
    text(&mut svg, width / 2, 20, 15.0, "middle", r#" font-weight="bold""#, &h.title);
    // Cells: row 0 at the bottom.
    let mut outlines = vec![];
    for (r, row) in h.cells.iter().enumerate() {
        let y = TOP + (rows - 1 - r as i64) * CELL_H;
        for (c, cell) in row.iter().enumerate() {
            let x = left + c as i64 * CELL_W;
            let (cx, cy) = (x + CELL_W / 2, y + CELL_H / 2);
            let rect = |svg: &mut String, fill: &str| {
                let _ = writeln!(
                    svg,
                    r#"<rect x="{x}" y="{y}" width="{CELL_W}" height="{CELL_H}" fill="{fill}" stroke="{}" stroke-width="2"/>"#,
                    hex(GRID)
                );
            };
            match cell {
                HeatCell::Value { value, label, outline } => {
                    rect(&mut svg, &hex(color(*value)));
                    let _ = writeln!(
                        svg,
                        r#"<text x="{cx}" y="{cy}" font-family="sans-serif" font-size="13" fill="{}" text-anchor="middle" dominant-baseline="middle">{}</text>"#,
                        hex(label_color(*value)),
                        html(label)
                    );
                    if *outline {
                        outlines.push((x, y));
                    }
                }
                HeatCell::Dropped => {
                    rect(&mut svg, "url(#dropped)");
                    text(&mut svg, cx, cy, 16.0, "middle", "", "×");
                }
                HeatCell::Empty => {
                    rect(&mut svg, "#fafafa");
                    text(&mut svg, cx, cy, 13.0, "middle", "", "–");
                }
            }
        }
    }
    for (x, y) in outlines {
        outline(&mut svg, x + 2, y + 2, CELL_W - 4, CELL_H - 4);
    }
    // Axis labels and descriptions.
    for (r, l) in h.y_labels.iter().enumerate() {
        let y = TOP + (rows - 1 - r as i64) * CELL_H + CELL_H / 2;
        text(&mut svg, left - 8, y, 11.5, "end", "", l);
    }
    for (c, l) in h.x_labels.iter().enumerate() {
        text(&mut svg, left + c as i64 * CELL_W + CELL_W / 2, TOP + rows * CELL_H + 14, 11.5, "middle", "", l);
    }
    let mid_y = TOP + rows * CELL_H / 2;
    let yx = left - LEFT + 18;
    let rotate = format!(r#" transform="rotate(-90 {yx} {mid_y})""#);
    text(&mut svg, yx, mid_y, 12.5, "middle", &rotate, &h.y_desc);
    text(&mut svg, left + grid_w / 2, TOP + rows * CELL_H + 38, 12.5, "middle", "", &h.x_desc);
    // Legend: the colour scale, then the dropped and outlined marks.
    let ly = TOP + rows * CELL_H + BOTTOM + 6;
    let (bar_x, bar_w) = (24i64, 160i64);
    for i in 0..bar_w {
        let c = color(i as f64 / (bar_w - 1) as f64);
        let _ = writeln!(svg, r#"<rect x="{}" y="{ly}" width="1.5" height="12" fill="{}"/>"#, bar_x + i, hex(c));
    }
    text(&mut svg, bar_x, ly + 22, 11.0, "start", "", "0%");
    text(&mut svg, bar_x + bar_w, ly + 22, 11.0, "end", "", "100%");
    text(&mut svg, bar_x + bar_w + 10, ly + 6, 12.0, "start", "", &h.value_desc);
    let ly2 = ly + 40;
    let _ = writeln!(
        svg,
        "<rect x=\"{bar_x}\" y=\"{}\" width=\"22\" height=\"14\" fill=\"url(#dropped)\" stroke=\"{}\"/>",
        ly2 - 7,
        hex(DROPPED)
    );
    text(&mut svg, bar_x + 30, ly2, 12.0, "start", "", &format!("× {}", h.dropped_desc));
    if !h.outline_desc.is_empty() {
        let ly3 = ly2 + 22;
        let _ =
            writeln!(svg, r#"<rect x="{bar_x}" y="{}" width="22" height="14" fill="{}"/>"#, ly3 - 7, hex(color(0.8)));
        outline(&mut svg, bar_x, ly3 - 7, 22, 14);
        text(&mut svg, bar_x + 30, ly3, 12.0, "start", "", &h.outline_desc);
    }
    svg.push_str("</svg>\n");
    svg
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map() -> Heatmap {
        Heatmap {
            title: "sft <b>".into(),
            x_desc: "learning rate".into(),
            y_desc: "steps".into(),
            x_labels: vec!["1e-5".into(), "1e-4".into()],
            y_labels: vec!["32".into(), "128".into()],
            cells: vec![
                vec![HeatCell::Value { value: 0.1, label: "10%".into(), outline: false }, HeatCell::Dropped],
                vec![HeatCell::Value { value: 0.9, label: "90%".into(), outline: true }, HeatCell::Empty],
            ],
            value_desc: "harmful score".into(),
            dropped_desc: "every attack guarded".into(),
            outline_desc: "worst case".into(),
        }
    }

    #[test]
    fn renders_every_cell_escaped_with_marks() {
        let svg = render(&map());
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert!(svg.contains("sft &lt;b&gt;") && !svg.contains("<b>"));
        assert!(svg.contains(">10%<") && svg.contains(">90%<"));
        assert_eq!(svg.matches(">×<").count(), 1, "one dropped cell");
        assert!(svg.contains("url(#dropped)"));
        assert!(svg.contains(r#"stroke-width="3""#), "the worst case is outlined");
        // The 90% cell sits in the top row (rows are listed bottom to top).
        let top = svg.find(">90%<").unwrap();
        let bottom = svg.find(">10%<").unwrap();
        assert!(top > bottom, "rows are drawn in order, bottom row first");
    }

    #[test]
    fn the_scale_runs_light_to_dark() {
        let lum = |c: RGBColor| c.0 as u32 + c.1 as u32 + c.2 as u32;
        let (a, b, c) = (color(0.0), color(0.5), color(1.0));
        assert!(lum(a) > lum(b) && lum(b) > lum(c));
        assert_eq!(color(2.0), color(1.0));
        assert_eq!(color(f64::NAN), color(0.0));
    }
}
