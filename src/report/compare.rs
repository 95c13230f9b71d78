//! Several runs side by side (`patcher compare RUN...`): the same experiment on two model sizes
//! (issue 17), two seeds, two recipes. One markdown table per measure group, with one row per
//! (defense, attack, budget) that any run measured and one column per run, so a reader compares
//! along a line; then steps-to-break per (defense, attack). Cells carry the row's 95% interval
//! where the run recorded one. Runs are labelled by their experiment name (or `--labels`), and
//! each run's judge and utility metric are listed above the tables, since a cell is only
//! comparable with another measured the same way.

use std::fmt::Write;

use super::fmt::{ci, display_defense, md_cell, pct};
use super::summary::{attacks, robustness_curves};
use super::{Results, Row};
use crate::eval::interval::Interval;

/// One run to compare: its label and its results.
pub struct Run<'a> {
    pub label: String,
    pub results: &'a Results,
}

/// A (defense, attack, budget) line.
type Key = (String, String, usize);

/// Every line any run measured: defenses and attacks in first-seen order over the runs (the
/// unattacked line first), budgets ascending. An attack's budget-0 row is the unattacked model
/// again (the runner keeps it as each curve's first point), so it gets no line of its own where
/// every run has the defense's unattacked row.
fn keys(runs: &[Run]) -> Vec<Key> {
    let mut out: Vec<Key> = Vec::new();
    let (mut ds, mut atts): (Vec<&str>, Vec<&str>) = (Vec::new(), vec!["none"]);
    let unattacked_everywhere =
        |d: &str| runs.iter().all(|run| run.results.rows.iter().any(|r| r.defense == d && r.attack == "none"));
    for r in runs.iter().flat_map(|run| &run.results.rows) {
        let k = (r.defense.clone(), r.attack.clone(), r.budget);
        let copy = r.attack != "none" && r.budget == 0 && unattacked_everywhere(&r.defense);
        if !copy && !out.contains(&k) {
            out.push(k);
        }
        for (seen, name) in [(&mut ds, r.defense.as_str()), (&mut atts, r.attack.as_str())] {
            if !seen.contains(&name) {
                seen.push(name);
            }
        }
    }
    let at = |v: &[&str], x: &str| v.iter().position(|y| *y == x);
    out.sort_by_key(|(d, a, b)| (at(&ds, d), at(&atts, a), *b));
    out
}

fn find<'a>(run: &Run<'a>, (d, a, b): &Key) -> Option<&'a Row> {
    run.results.rows.iter().find(|r| &r.defense == d && &r.attack == a && r.budget == *b)
}

fn held_out(runs: &[Run], attack: &str) -> bool {
    runs.iter().any(|run| attacks(&run.results.rows).iter().any(|(a, h)| a == attack && *h))
}

fn rate(v: Option<f64>, i: Option<Interval>) -> String {
    match (v, i) {
        (Some(v), Some(i)) => format!("{} {}", pct(v), ci(i)),
        (Some(v), None) => pct(v),
        _ => "–".into(),
    }
}

/// The measure groups: a title and how to read a row's cell.
type Measure = (String, Box<dyn Fn(&Row) -> String>);

fn measures(runs: &[Run]) -> Vec<Measure> {
    let judge = runs.first().map_or(String::new(), |r| r.results.judge.clone());
    let mut out: Vec<Measure> = vec![(
        format!("HS ({judge})"),
        Box::new(|r: &Row| rate(Some(r.harmful_score), r.ci.as_ref().map(|c| c.harmful_score))),
    )];
    let mut others: Vec<String> = runs
        .iter()
        .flat_map(|run| run.results.rows.iter().flat_map(|r| r.also_hs.iter().map(|(j, _)| j.clone())))
        .collect();
    others.sort();
    others.dedup();
    for j in others {
        let title = format!("HS ({j})");
        out.push((
            title,
            Box::new(move |r: &Row| rate(r.also_hs.iter().find(|(n, _)| *n == j).map(|(_, v)| *v), None)),
        ));
    }
    out.push((
        "Over-refusal".into(),
        Box::new(|r: &Row| rate(r.over_refusal, r.ci.as_ref().and_then(|c| c.over_refusal))),
    ));
    out.push(("Utility".into(), Box::new(|r: &Row| rate(Some(r.utility), r.ci.as_ref().and_then(|c| c.utility)))));
    out
}

/// Renders the comparison as markdown.
pub fn render(runs: &[Run]) -> String {
    let mut md = String::new();
    let names: Vec<String> = runs.iter().map(|r| md_cell(&r.label)).collect();
    let _ = writeln!(md, "# Side by side: {}\n", names.join(" · "));
    for run in runs {
        let r = run.results;
        let _ = writeln!(
            md,
            "- **{}**: experiment `{}`, commit `{}`, judge `{}`, utility: {}, {} measured models",
            md_cell(&run.label),
            md_cell(&r.experiment),
            md_cell(&r.commit),
            md_cell(&r.judge),
            md_cell(&r.utility_metric),
            r.rows.len()
        );
    }
    md.push_str(
        "\nPercentages of the held-out prompts, with the 95% interval where the run recorded one; `–`: not \
         measured in that run; `*` marks an attack held out from training.\n",
    );
    let keys = keys(runs);
    let header = |md: &mut String, first: &str| {
        let _ = writeln!(md, "| {first} | {} |", names.join(" | "));
        let _ = writeln!(md, "|---|{}", "---:|".repeat(runs.len()));
    };
    for (title, cell) in measures(runs) {
        let _ = writeln!(md, "\n## {}\n", md_cell(&title));
        header(&mut md, "Defense, attack @ steps");
        for k in &keys {
            let (d, a, b) = k;
            let line = match a.as_str() {
                "none" => display_defense(d),
                _ => format!("{}, {}{} @ {b}", display_defense(d), a, if held_out(runs, a) { "*" } else { "" }),
            };
            let cells: Vec<String> = runs.iter().map(|run| find(run, k).map_or("–".into(), &cell)).collect();
            let _ = writeln!(md, "| {} | {} |", md_cell(&line), cells.join(" | "));
        }
    }
    // Steps-to-break: the first budget with HS >= 50% on each run's own curve.
    let curves: Vec<_> = runs.iter().map(|run| robustness_curves(&run.results.rows, &run.results.guard)).collect();
    let mut pairs: Vec<(&str, &str)> = Vec::new();
    for c in curves.iter().flatten() {
        if !pairs.contains(&(c.defense.as_str(), c.attack.as_str())) {
            pairs.push((&c.defense, &c.attack));
        }
    }
    if !pairs.is_empty() {
        md.push_str(
            "\n## Steps-to-break\n\nThe first budget with HS ≥ 50% (`> N`: not within the N steps measured).\n\n",
        );
        header(&mut md, "Defense, attack");
        for &(d, a) in &pairs {
            let cells: Vec<String> = curves
                .iter()
                .map(|curves| match curves.iter().find(|c| c.defense == d && c.attack == a) {
                    None => "–".into(),
                    Some(c) => match c.steps_to_break {
                        Some(s) => s.to_string(),
                        None => format!("> {}", c.points.last().map_or(0, |p| p.0)),
                    },
                })
                .collect();
            let star = if held_out(runs, a) { "*" } else { "" };
            let _ =
                writeln!(md, "| {} | {} |", md_cell(&format!("{}, {a}{star}", display_defense(d))), cells.join(" | "));
        }
    }
    md
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eval::outcomes::RowIntervals;

    fn row(defense: &str, attack: &str, budget: usize, hs: f64) -> Row {
        Row {
            defense: defense.into(),
            attack: attack.into(),
            held_out: attack == "sgd",
            budget,
            harmful_score: hs,
            utility: 0.4,
            ..Default::default()
        }
    }

    fn results(name: &str, rows: Vec<Row>) -> Results {
        Results {
            experiment: name.into(),
            commit: "abc".into(),
            judge: "refusal-keyword".into(),
            utility_metric: "cloze".into(),
            rows,
            ..Default::default()
        }
    }

    /// Lines are the union of both runs' rows (defenses and attacks in first-seen order, budgets
    /// ascending, an attack's budget-0 copy of the unattacked row left out); a run without a row
    /// shows `–`;
    /// intervals and the other judges' HS appear in their groups; steps-to-break is each run's own.
    #[test]
    fn side_by_side_lines_up_rows_and_marks_missing_cells() {
        let mut base = row("sft", "none", 0, 0.1);
        base.also_hs = vec![("learned:j".into(), 0.03)];
        base.over_refusal = Some(0.25);
        let i = |lo, hi| Interval { mean: 0.0, lo, hi };
        base.ci = Some(RowIntervals { harmful_score: i(0.05, 0.2), over_refusal: Some(i(0.2, 0.3)), utility: None });
        let a = results(
            "small",
            vec![base.clone(), row("sft", "adamw", 0, 0.1), row("sft", "adamw", 25, 0.7), row("sft", "sgd", 100, 0.3)],
        );
        let b = results("large", vec![base, row("sft", "adamw", 25, 0.4), row("sft", "adamw", 50, 0.6)]);
        let md = render(&[Run { label: "small".into(), results: &a }, Run { label: "large".into(), results: &b }]);
        assert!(md.contains("| Defense, attack @ steps | small | large |"), "{md}");
        assert!(md.contains("| SFT alignment | 10% [5.0–20] | 10% [5.0–20] |"), "{md}");
        assert!(md.contains("| SFT alignment, adamw @ 25 | 70% | 40% |"), "{md}");
        // The attack's budget-0 row repeats the unattacked model: no line of its own.
        assert!(!md.contains("adamw @ 0"), "{md}");
        assert!(
            md.contains("| SFT alignment, adamw @ 50 | – | 60% |\n| SFT alignment, sgd\\* @ 100 | 30% | – |"),
            "{md}"
        );
        assert!(md.contains("## HS (learned:j)") && md.contains("| SFT alignment | 3.0% | 3.0% |"), "{md}");
        assert!(md.contains("| SFT alignment | 25% [20–30] | 25% [20–30] |"), "{md}");
        assert!(md.contains("| SFT alignment, adamw | 25 | 50 |"), "{md}");
        assert!(md.contains("| SFT alignment, sgd\\* | > 100 | – |"), "{md}");
    }
}
