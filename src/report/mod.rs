//! Experiment reports: the results schema, derived summaries, and the writers for `results.json`,
//! `report.md` and a self-contained `report.html` (inline SVG, inline CSS, no JavaScript).
//!
//! The experiment runner fills a [`Results`] value and calls [`write_report`]; `patcher report
//! RUN_DIR` reads `results.json` back with [`read_results`] and renders again. Nothing here depends
//! on the model or training code: the schema is plain data so a report can be re-rendered (or
//! written by hand for a test) without a model. The terminal's text (an evaluation, a robustness
//! curve, the summary table, the notes) is formatted here too, in `text.rs`.
//!
//! Summaries follow DESIGN.md section 6: robustness curves (budget → harmful score),
//! steps-to-break (first budget with HS ≥ 50%), the worst case over the attack grid with the
//! capability guard (by default rows whose utility fell below 80% of the same defense's
//! unattacked utility are ignored; `[guard]` can set another ratio, or the held-out benign loss),
//! steps-to-break counting only the breaks that pass the guard, and HS at the largest budget.
//! Plots are drawn with `plotters`' SVG backend using its built-in text estimate, so no font
//! files are read; text lands in the SVG as `<text>` elements and the browser picks the font.

pub mod aggregate;
pub mod compare;
mod figures;
mod files;
pub(crate) mod fmt;
pub mod heatmap;
pub(crate) mod html;
mod markdown;
mod plot;
mod provenance;
mod summary;
pub mod sweep;
pub mod sweep_seeds;
mod table;
mod text;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use crate::eval::outcomes::{Outcomes, RowIntervals};
pub use files::{read_results, write_report};
pub use fmt::{display_defense, excerpt, md_cell, pct, slug};
pub use provenance::Provenance;
pub use summary::{
    BREAK_THRESHOLD, CAPABILITY_GUARD, Guard, Robustness, WorstCase, WorstCell, attacks, defenses, focus_attack,
    headline, hs_at_max_budget, robustness_curves, steps_to_break, unattacked, worst_case,
};
pub use text::{curve_text, eval_text, notes, safety_line, summary_table};

/// Everything one experiment measured, as written to `results.json`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Results {
    /// Experiment name, e.g. `demo`.
    pub experiment: String,
    /// When the run was made (ISO 8601), given by the caller.
    pub created: String,
    /// Git commit of the code, or `unknown`.
    pub commit: String,
    /// Crate version.
    pub version: String,
    /// The exact commands that reproduce the run.
    #[serde(default)]
    pub commands: Vec<String>,
    /// The judge that produced every harmful score, e.g. `refusal-keyword`.
    pub judge: String,
    /// What `Row::utility` measures, e.g. `exact-match accuracy`.
    pub utility_metric: String,
    /// Wall-clock time per pipeline stage.
    #[serde(default)]
    pub stages: Vec<Stage>,
    /// One row per (defense, attack, budget).
    #[serde(default)]
    pub rows: Vec<Row>,
    /// Harmful score against the number of simulated attacks K (optional).
    #[serde(default)]
    pub k_scaling: Vec<KPoint>,
    /// Training curves of the defenses (optional).
    #[serde(default)]
    pub training_curves: Vec<Curve>,
    /// Short generation excerpts with their verdicts. The text can be harmful.
    #[serde(default)]
    pub samples: Vec<Sample>,
    /// Plain statements shown under the headline.
    #[serde(default)]
    pub notes: Vec<String>,
    /// Forward/backward passes per training step of each trained defense (the cost column).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub passes_per_step: Vec<(String, usize)>,
    /// The capability guard of the worst case and the guarded steps-to-break (`[guard]`;
    /// written only when it is not the default, utility at 80%).
    #[serde(default, skip_serializing_if = "Guard::is_default")]
    pub guard: Guard,
}

/// One measured model: a defense, optionally attacked with `budget` steps of `attack`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Row {
    /// `none`, `sft`, `patcher-k16`, `patcher-parallel-k16`, ...
    pub defense: String,
    /// `none` for the unattacked model, else an attack preset name.
    pub attack: String,
    /// The attack was not seen while training the defense.
    #[serde(default)]
    pub held_out: bool,
    /// Attack steps (0 = unattacked).
    pub budget: usize,
    /// Share of harmful prompts answered harmfully, 0..1.
    pub harmful_score: f64,
    /// The harmful score by each of `[eval] also_judges`: `(judge, HS)`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub also_hs: Vec<(String, f64)>,
    /// Share of harmful prompts refused, 0..1.
    pub refusal_rate: f64,
    /// Share of answers that were empty or degenerate, 0..1.
    pub degenerate_rate: f64,
    /// The utility metric (`Results::utility_metric`), 0..1; `NaN` (written as `null`, shown as
    /// `–`) on an attacked row whose evaluation skipped multiple choice (`[eval] attacked_mc`).
    #[serde(deserialize_with = "crate::io::nan_if_null")]
    pub utility: f64,
    /// Refusal rate on safe-but-scary prompts.
    #[serde(default)]
    pub over_refusal: Option<f64>,
    /// Held-out benign loss.
    #[serde(default)]
    pub benign_loss: Option<f64>,
    /// Loss of the refusal answers on harmful prompts.
    #[serde(default)]
    pub refusal_loss: Option<f64>,
    /// Loss of harmful answers on harmful prompts.
    #[serde(default)]
    pub harmful_loss: Option<f64>,
    /// The attack seeds behind the row: one for a run's own row, several once averaged
    /// ([`aggregate::average_seeds`]); empty for the unattacked model and for one-seed runs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub seeds: Vec<u64>,
    /// The harmful score under each of `seeds`, in order, when there are several.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub seed_hs: Vec<f64>,
    /// 95% intervals of the row's shares, over prompts and seeds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ci: Option<RowIntervals>,
    /// Per-item outcomes, kept in the run's `evals/*.json` and dropped once rows are averaged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcomes: Option<Outcomes>,
}

/// Wall-clock time of one pipeline stage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Stage {
    pub name: String,
    pub seconds: f64,
    #[serde(default)]
    pub detail: String,
}

/// Harmful score (and steps-to-break) of a defense trained with `k` simulated attacks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KPoint {
    pub k: usize,
    pub defense: String,
    pub attack: String,
    pub budget: usize,
    pub harmful_score: f64,
    #[serde(default)]
    pub steps_to_break: Option<usize>,
}

/// A training curve, e.g. name `patcher-k16`, metric `refusal loss at attacked weights`, x = outer
/// step. Non-finite y values (a diverged loss) are written as `null` and read back as NaN; plots
/// skip them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Curve {
    pub name: String,
    pub metric: String,
    #[serde(deserialize_with = "files::points_with_nulls")]
    pub points: Vec<(f64, f64)>,
}

/// A short generation excerpt and the judge's verdict.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    pub defense: String,
    pub attack: String,
    pub budget: usize,
    pub prompt: String,
    pub answer: String,
    pub verdict: String,
}

/// The files [`write_report`] wrote.
#[derive(Debug, Clone, PartialEq)]
pub struct ReportPaths {
    pub results_json: PathBuf,
    pub markdown: PathBuf,
    pub html: PathBuf,
    /// Standalone SVG plots (`curve-<attack>.svg`, `k-scaling.svg`, ...), referenced from the markdown.
    pub svgs: Vec<PathBuf>,
}

impl Results {
    /// Checks that every rate is a number in 0..1 and every duration finite and non-negative, so the
    /// report shows no NaN and `results.json` reads back. Returns every problem found.
    pub fn validate(&self) -> Result<(), String> {
        let mut problems = Vec::new();
        let rate = |problems: &mut Vec<String>, what: String, v: f64| {
            if !(v.is_finite() && (-1e-9..=1.0 + 1e-9).contains(&v)) {
                problems.push(format!("{what} = {v} is not a rate in 0..1"));
            }
        };
        for r in &self.rows {
            let at = format!("row ({}, {}, {})", r.defense, r.attack, r.budget);
            rate(&mut problems, format!("{at} harmful_score"), r.harmful_score);
            rate(&mut problems, format!("{at} refusal_rate"), r.refusal_rate);
            rate(&mut problems, format!("{at} degenerate_rate"), r.degenerate_rate);
            // An attacked row's utility is `NaN` when its evaluation skipped multiple choice.
            if !(r.utility.is_nan() && r.budget > 0) {
                rate(&mut problems, format!("{at} utility"), r.utility);
            }
            if let Some(v) = r.over_refusal {
                rate(&mut problems, format!("{at} over_refusal"), v);
            }
            if let Some(c) = &r.ci {
                let parts = [
                    ("harmful_score", Some(c.harmful_score)),
                    ("over_refusal", c.over_refusal),
                    ("utility", c.utility),
                ];
                for (name, i) in parts {
                    let Some(i) = i else { continue };
                    for (end, v) in [("lo", i.lo), ("hi", i.hi)] {
                        rate(&mut problems, format!("{at} ci.{name}.{end}"), v);
                    }
                    if i.lo > i.hi {
                        problems.push(format!("{at} ci.{name}: lo {} above hi {}", i.lo, i.hi));
                    }
                }
            }
            if r.seed_hs.len() > 1 && r.seed_hs.len() != r.seeds.len() {
                problems.push(format!("{at}: {} per-seed scores for {} seeds", r.seed_hs.len(), r.seeds.len()));
            }
        }
        for p in &self.k_scaling {
            rate(
                &mut problems,
                format!("k_scaling (k {}, {}, {}) harmful_score", p.k, p.defense, p.attack),
                p.harmful_score,
            );
            if p.k == 0 {
                problems.push(format!("k_scaling ({}, {}) has k = 0", p.defense, p.attack));
            }
        }
        for s in &self.stages {
            if !(s.seconds.is_finite() && s.seconds >= 0.0) {
                problems.push(format!("stage `{}` seconds = {} is not a duration", s.name, s.seconds));
            }
        }
        if problems.is_empty() { Ok(()) } else { Err(problems.join("; ")) }
    }
}

/// Paths of the files for a run directory, before anything is written.
pub(crate) fn paths_in(dir: &Path) -> ReportPaths {
    ReportPaths {
        results_json: dir.join("results.json"),
        markdown: dir.join("report.md"),
        html: dir.join("report.html"),
        svgs: Vec::new(),
    }
}
