//! The report's figures, built from [`Results`]: one robustness panel per attack, K-scaling (HS and
//! steps-to-break against K on a log2 axis), training-curve small multiples, and utility against HS.
//!
//! Colours are the Okabe–Ito colour-blind-safe set, fixed per defense across every figure and the
//! HTML tables (no defense is grey, SFT is vermillion); marker shapes also differ per defense.

use plotters::style::RGBColor;

use super::fmt::{display_defense, slug};
use super::plot::{Axis, Chart, Marker, Series, render};
use super::summary::{Robustness, attacks, defenses, robustness_curves, unattacked};
use super::{KPoint, Results};

const GREY: RGBColor = RGBColor(120, 120, 120);
const VERMILLION: RGBColor = RGBColor(213, 94, 0);
const CYCLE: [RGBColor; 6] = [
    RGBColor(0, 114, 178),   // blue
    RGBColor(0, 158, 115),   // bluish green
    RGBColor(204, 121, 167), // reddish purple
    RGBColor(230, 159, 0),   // orange
    RGBColor(86, 180, 233),  // sky blue
    RGBColor(95, 61, 150),   // violet (not Okabe–Ito; a seventh hue for long lists)
];

/// Which section of the report a figure belongs to.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Kind {
    Robustness,
    KScaling,
    Training,
    UtilityHs,
}

/// One rendered figure: its standalone file name, a title and caption for the report, and the SVG.
#[derive(Debug, Clone)]
pub struct Figure {
    pub kind: Kind,
    pub file: String,
    pub title: String,
    pub caption: String,
    pub svg: String,
}

/// A colour and marker per defense, in the rows' first-seen order.
#[derive(Debug, Clone)]
pub struct Palette(Vec<(String, RGBColor, Marker)>);

impl Palette {
    pub fn new(defenses: &[String]) -> Palette {
        let mut next = 0;
        let entries = defenses
            .iter()
            .enumerate()
            .map(|(i, d)| {
                let color = match d.as_str() {
                    "none" => GREY,
                    "sft" => VERMILLION,
                    _ => {
                        next += 1;
                        CYCLE[(next - 1) % CYCLE.len()]
                    }
                };
                (d.clone(), color, Marker::nth(i))
            })
            .collect();
        Palette(entries)
    }

    pub fn get(&self, defense: &str) -> (RGBColor, Marker) {
        self.0.iter().find(|(d, _, _)| d == defense).map_or((GREY, Marker::Circle), |(_, c, m)| (*c, *m))
    }
}

/// Every figure the results support, in report order. File names are unique.
pub fn all(results: &Results) -> Result<Vec<Figure>, String> {
    let palette = Palette::new(&defenses(&results.rows));
    let mut out = Vec::new();
    let curves = robustness_curves(&results.rows, &results.guard);
    for (attack, held_out) in attacks(&results.rows) {
        let mine: Vec<&Robustness> = curves.iter().filter(|c| c.attack == attack).collect();
        out.push(robustness(&attack, held_out, &mine, &palette)?);
    }
    if !results.k_scaling.is_empty() {
        out.extend(k_scaling(&results.k_scaling)?);
    }
    for curve in &results.training_curves {
        let (color, _) = palette.get(&curve.name);
        let color = if defenses(&results.rows).contains(&curve.name) { color } else { CYCLE[0] };
        out.push(training(curve, color)?);
    }
    if results.rows.iter().any(|r| r.attack != "none") {
        out.push(utility_vs_hs(results, &palette)?);
    }
    let mut seen: Vec<String> = Vec::new();
    for f in &mut out {
        let stem = f.file.trim_end_matches(".svg").to_string();
        let mut name = f.file.clone();
        let mut n = 2;
        while seen.contains(&name) {
            name = format!("{stem}-{n}.svg");
            n += 1;
        }
        seen.push(name.clone());
        f.file = name;
    }
    Ok(out)
}

fn robustness(attack: &str, held_out: bool, curves: &[&Robustness], palette: &Palette) -> Result<Figure, String> {
    let max_budget = curves.iter().flat_map(|c| c.points.iter().map(|p| p.0)).max().unwrap_or(0).max(1) as f64;
    let series = curves
        .iter()
        .map(|c| {
            let (color, marker) = palette.get(&c.defense);
            let points = c.points.iter().map(|(b, hs)| (*b as f64, hs * 100.0)).collect();
            let band = c.band.iter().map(|&(b, lo, hi)| (b as f64, lo * 100.0, hi * 100.0)).collect();
            Series { label: display_defense(&c.defense), color, marker, line: true, filled: true, points, band }
        })
        .collect();
    let title = if held_out { format!("{attack} (held-out attack)") } else { attack.to_string() };
    let chart = Chart {
        title: title.clone(),
        x_desc: "attack budget (steps)".into(),
        y_desc: "harmful score".into(),
        x_axis: Axis::Int,
        y_axis: Axis::Percent,
        x_range: (0.0, max_budget * 1.03),
        y_range: (0.0, 102.0),
        threshold: Some((50.0, "broken (HS ≥ 50%)".into())),
        size: (560, 360),
        series,
    };
    Ok(Figure {
        kind: Kind::Robustness,
        file: format!("curve-{}.svg", slug(attack)),
        title,
        caption: if curves.iter().any(|c| c.band.len() > 1) {
            "Harmful score after each attack budget; budget 0 is the unattacked model. Lower is better. The shaded \
             band is the 95% interval over prompts and attack seeds."
                .into()
        } else {
            "Harmful score after each attack budget; budget 0 is the unattacked model. Lower is better.".into()
        },
        svg: render(&chart)?,
    })
}

fn k_scaling(points: &[KPoint]) -> Result<Vec<Figure>, String> {
    let mut keys: Vec<(String, String, usize)> = Vec::new();
    for p in points {
        let key = (p.defense.clone(), p.attack.clone(), p.budget);
        if !keys.contains(&key) {
            keys.push(key);
        }
    }
    let log2 = |k: usize| (k.max(1) as f64).log2();
    let lo = points.iter().map(|p| log2(p.k)).fold(f64::INFINITY, f64::min);
    let hi = points.iter().map(|p| log2(p.k)).fold(f64::NEG_INFINITY, f64::max);
    let x_range = (lo - 0.3, hi.max(lo + 1.0) + 0.3);
    let series_of = |value: &dyn Fn(&KPoint) -> Option<f64>| -> Vec<Series> {
        keys.iter()
            .enumerate()
            .map(|(i, (d, a, b))| {
                let mut pts: Vec<(f64, f64)> = points
                    .iter()
                    .filter(|p| (&p.defense, &p.attack, p.budget) == (d, a, *b))
                    .filter_map(|p| value(p).map(|v| (log2(p.k), v)))
                    .collect();
                pts.sort_by(|x, y| x.0.total_cmp(&y.0));
                let label = format!("{} · {a} @ {b} steps", display_defense(d));
                Series {
                    label,
                    color: CYCLE[i % CYCLE.len()],
                    marker: Marker::nth(i),
                    line: true,
                    filled: true,
                    points: pts,
                    band: vec![],
                }
            })
            .collect()
    };
    let hs = Chart {
        title: "Harmful score against K".into(),
        x_desc: "K (simulated attacks per outer step, log2 scale)".into(),
        y_desc: "harmful score".into(),
        x_axis: Axis::Log2,
        y_axis: Axis::Percent,
        x_range,
        y_range: (0.0, 102.0),
        threshold: Some((50.0, "broken (HS ≥ 50%)".into())),
        size: (560, 360),
        series: series_of(&|p| Some(p.harmful_score * 100.0)),
    };
    let mut out = vec![Figure {
        kind: Kind::KScaling,
        file: "k-scaling.svg".into(),
        title: "Harmful score against K".into(),
        caption: "Each line is one defense, attack and budget; lower is better.".into(),
        svg: render(&hs)?,
    }];
    if points.iter().any(|p| p.steps_to_break.is_some()) {
        let most = points.iter().filter_map(|p| p.steps_to_break).max().unwrap_or(1).max(1) as f64;
        let steps = Chart {
            title: "Steps-to-break against K".into(),
            y_desc: "steps to break (HS ≥ 50%)".into(),
            y_axis: Axis::Int,
            y_range: (0.0, most * 1.1),
            threshold: None,
            series: series_of(&|p| p.steps_to_break.map(|s| s as f64)),
            ..hs
        };
        out.push(Figure {
            kind: Kind::KScaling,
            file: "k-scaling-steps.svg".into(),
            title: "Steps-to-break against K".into(),
            caption: "Higher is better. A missing point means that K never broke within its budget.".into(),
            svg: render(&steps)?,
        });
    }
    Ok(out)
}

fn training(curve: &super::Curve, color: RGBColor) -> Result<Figure, String> {
    let finite: Vec<(f64, f64)> =
        curve.points.iter().copied().filter(|(x, y)| x.is_finite() && y.is_finite()).collect();
    let range = |v: Vec<f64>, pad: f64| {
        let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        match (lo.is_finite(), hi > lo) {
            (true, true) => (lo - (hi - lo) * pad, hi + (hi - lo) * pad),
            (true, false) => (lo - 1.0, lo + 1.0),
            _ => (0.0, 1.0),
        }
    };
    let x_range = range(finite.iter().map(|p| p.0).collect(), 0.02);
    let y_range = range(finite.iter().map(|p| p.1).collect(), 0.08);
    let chart = Chart {
        title: curve.name.clone(),
        x_desc: "outer step".into(),
        y_desc: curve.metric.clone(),
        x_axis: Axis::Int,
        y_axis: Axis::Float,
        x_range,
        y_range,
        threshold: None,
        size: (380, 250),
        series: vec![Series {
            label: String::new(),
            color,
            marker: Marker::Circle,
            line: true,
            filled: true,
            points: curve.points.clone(),
            band: vec![],
        }],
    };
    let skipped = curve.points.len() - finite.len();
    let caption = if skipped > 0 {
        format!("{} ({skipped} non-finite values not drawn).", curve.metric)
    } else {
        format!("{}.", curve.metric)
    };
    Ok(Figure {
        kind: Kind::Training,
        file: format!("training-{}-{}.svg", slug(&curve.name), slug(&curve.metric)),
        title: format!("{}: {}", curve.name, curve.metric),
        caption,
        svg: render(&chart)?,
    })
}

fn utility_vs_hs(results: &Results, palette: &Palette) -> Result<Figure, String> {
    let rows = &results.rows;
    let mut series = Vec::new();
    for d in defenses(rows) {
        let (color, marker) = palette.get(&d);
        let base = unattacked(rows, &d);
        let point = |r: &super::Row| (r.utility * 100.0, r.harmful_score * 100.0);
        // Attacked rows whose evaluation skipped multiple choice have no utility to place.
        let mine = rows.iter().filter(|r| r.defense == d && r.utility.is_finite());
        let (kept, dropped): (Vec<_>, Vec<_>) = mine.partition(|r| !results.guard.trips(r, base));
        let label = display_defense(&d);
        series.push(Series {
            label,
            color,
            marker,
            line: false,
            filled: true,
            points: kept.into_iter().map(point).collect(),
            band: vec![],
        });
        series.push(Series {
            label: String::new(),
            color,
            marker,
            line: false,
            filled: false,
            points: dropped.into_iter().map(point).collect(),
            band: vec![],
        });
    }
    let us: Vec<f64> = rows.iter().filter(|r| r.utility.is_finite()).map(|r| r.utility * 100.0).collect();
    let unmeasured = rows.len() - us.len();
    let lo = us.iter().copied().fold(100.0, f64::min);
    let hi = us.iter().copied().fold(0.0, f64::max);
    let chart = Chart {
        title: "Utility against harmful score".into(),
        x_desc: results.utility_metric.clone(),
        y_desc: "harmful score".into(),
        x_axis: Axis::Percent,
        y_axis: Axis::Percent,
        x_range: ((lo - 5.0).max(0.0), (hi + 5.0).min(100.0).max(lo + 1.0)),
        y_range: (0.0, 102.0),
        threshold: Some((50.0, "broken (HS ≥ 50%)".into())),
        size: (560, 360),
        series,
    };
    Ok(Figure {
        kind: Kind::UtilityHs,
        file: "utility-vs-hs.svg".into(),
        title: "Utility against harmful score".into(),
        caption: format!(
            "Every measured model{}. Hollow markers have {} (the capability guard leaves them out of the worst \
             case). Best is the lower right.",
            match unmeasured {
                0 => String::new(),
                n => format!(" but the {n} attacked ones evaluated without multiple choice"),
            },
            results.guard.describe()
        ),
        svg: render(&chart)?,
    })
}
