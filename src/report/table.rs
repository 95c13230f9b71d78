//! The main table as data, shared by the markdown and HTML writers: one row per defense, column
//! groups for the unattacked model, the capability-guarded worst case, and each attack (HS after
//! each budget, then steps-to-break). The best cell of each column is flagged when the column's
//! values differ.

use super::fmt::{loss, pct};
use super::summary::{
    BREAK_THRESHOLD, attacks, defenses, guard_trips, hs_at_max_budget, robustness_curves, unattacked, worst_case,
};
use super::{Results, Row};

/// Which direction is better in a column.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Better {
    Lower,
    Higher,
    /// Not compared (text).
    Neither,
}

/// What a cell holds, for styling.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Measure {
    /// A harmful score: shown on a green-to-red scale.
    Hs,
    /// Another rate or count.
    Plain,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Cell {
    pub text: String,
    /// The value compared for "best" and used for colour; `None` for an empty cell.
    pub value: Option<f64>,
    pub best: bool,
    /// The capability guard ignores this measurement (utility fell below 80% of unattacked).
    pub guarded: bool,
    /// A longer explanation (HTML `title`).
    pub note: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Column {
    pub header: String,
    pub better: Better,
    pub measure: Measure,
    /// One cell per defense, in [`MainTable::defenses`] order.
    pub cells: Vec<Cell>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Group {
    pub title: String,
    /// Set for attack groups: the attack's name.
    pub attack: Option<String>,
    pub held_out: bool,
    pub columns: Vec<Column>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct MainTable {
    pub defenses: Vec<String>,
    pub groups: Vec<Group>,
}

fn cell(text: String, value: Option<f64>) -> Cell {
    Cell { text, value, best: false, guarded: false, note: String::new() }
}

fn empty() -> Cell {
    cell("–".into(), None)
}

fn column(header: &str, better: Better, measure: Measure, cells: Vec<Cell>) -> Column {
    Column { header: header.into(), better, measure, cells }
}

/// Builds the table from the rows.
pub fn main_table(results: &Results) -> MainTable {
    let rows = &results.rows;
    let ds = defenses(rows);
    let base: Vec<Option<&Row>> = ds.iter().map(|d| unattacked(rows, d)).collect();
    let rate = |f: fn(&Row) -> Option<f64>| -> Vec<Cell> {
        base.iter().map(|r| r.and_then(f).map_or_else(empty, |v| cell(pct(v), Some(v)))).collect()
    };
    let mut unattacked_cols = vec![column("HS", Better::Lower, Measure::Hs, rate(|r| Some(r.harmful_score)))];
    // The same answers under every other judge, one column each.
    let mut others: Vec<&str> = base.iter().flatten().flat_map(|r| r.also_hs.iter().map(|(j, _)| j.as_str())).collect();
    others.sort();
    others.dedup();
    for j in others {
        let cells = base
            .iter()
            .map(|r| {
                r.and_then(|r| r.also_hs.iter().find(|(n, _)| n == j))
                    .map_or_else(empty, |(_, v)| cell(pct(*v), Some(*v)))
            })
            .collect();
        unattacked_cols.push(column(&format!("HS ({j})"), Better::Lower, Measure::Hs, cells));
    }
    unattacked_cols.extend([
        column("Refusal", Better::Higher, Measure::Plain, rate(|r| Some(r.refusal_rate))),
        column("Utility", Better::Higher, Measure::Plain, rate(|r| Some(r.utility))),
    ]);
    if base.iter().any(|r| r.is_some_and(|r| r.over_refusal.is_some())) {
        unattacked_cols.push(column("Over-refusal", Better::Lower, Measure::Plain, rate(|r| r.over_refusal)));
    }
    let mut groups =
        vec![Group { title: "Unattacked".into(), attack: None, held_out: false, columns: unattacked_cols }];

    if rows.iter().any(|r| r.attack != "none") {
        let worst = worst_case(rows);
        let (mut hs, mut at, mut ignored) = (Vec::new(), Vec::new(), Vec::new());
        for w in &worst {
            match &w.worst {
                Some(c) => {
                    let mut h = cell(pct(c.harmful_score), Some(c.harmful_score));
                    h.note = format!("{} after {} steps, utility {}", c.attack, c.budget, pct(c.utility));
                    hs.push(h);
                    at.push(cell(format!("{} @ {}", c.attack, c.budget), None));
                }
                None => {
                    hs.push(empty());
                    at.push(empty());
                }
            }
            let mut n = cell(format!("{} of {}", w.ignored, w.ignored + w.considered), Some(w.ignored as f64));
            if w.unattacked_utility.is_none() {
                n.note = "no unattacked row: the guard could not be applied".into();
            }
            ignored.push(n);
        }
        groups.push(Group {
            title: "Worst case (capability-guarded)".into(),
            attack: None,
            held_out: false,
            columns: vec![
                column("HS", Better::Lower, Measure::Hs, hs),
                column("Where", Better::Neither, Measure::Plain, at),
                column("Ignored", Better::Neither, Measure::Plain, ignored),
            ],
        });
    }

    let curves = robustness_curves(rows);
    for (attack, held_out) in attacks(rows) {
        let mut budgets: Vec<usize> =
            rows.iter().filter(|r| r.attack == attack && r.budget > 0).map(|r| r.budget).collect();
        budgets.sort_unstable();
        budgets.dedup();
        let mut columns = Vec::new();
        for b in &budgets {
            let cells = ds
                .iter()
                .zip(&base)
                .map(|(d, base)| {
                    let curve = curves.iter().find(|c| &c.defense == d && c.attack == attack);
                    let hs = curve.and_then(|c| c.points.iter().find(|p| p.0 == *b)).map(|p| p.1);
                    let Some(hs) = hs else { return empty() };
                    let mut c = cell(pct(hs), Some(hs));
                    let base_utility = base.map(|r| r.utility);
                    let measured = rows.iter().filter(|r| &r.defense == d && r.attack == attack && r.budget == *b);
                    if let Some(r) = measured.into_iter().find(|r| guard_trips(r, base_utility)) {
                        c.guarded = true;
                        c.note = format!(
                            "utility {} fell below 80% of unattacked: ignored in the worst case",
                            pct(r.utility)
                        );
                    }
                    c
                })
                .collect();
            columns.push(column(&b.to_string(), Better::Lower, Measure::Hs, cells));
        }
        let breaks = ds
            .iter()
            .map(|d| match curves.iter().find(|c| &c.defense == d && c.attack == attack) {
                None => empty(),
                Some(c) => match (c.steps_to_break, hs_at_max_budget(&c.points)) {
                    (Some(0), _) => {
                        let mut n = cell("0".into(), Some(0.0));
                        n.note = format!("HS was already at least {} before any attack", pct(BREAK_THRESHOLD));
                        n
                    }
                    (Some(s), _) => cell(s.to_string(), Some(s as f64)),
                    (None, max) => {
                        let most = max.map_or(0, |m| m.0);
                        let mut n = cell(format!("> {most}"), Some(f64::INFINITY));
                        n.note = format!("HS stayed below {} up to {most} steps", pct(BREAK_THRESHOLD));
                        n
                    }
                },
            })
            .collect();
        columns.push(column("Breaks at", Better::Higher, Measure::Plain, breaks));
        let title = format!("HS after N steps of {attack}");
        groups.push(Group { title, attack: Some(attack), held_out, columns });
    }
    for g in &mut groups {
        for c in &mut g.columns {
            mark_best(c);
        }
    }
    MainTable { defenses: ds, groups }
}

/// An optional column of the all-measurements table: header, getter, formatter.
type Extra = (&'static str, fn(&Row) -> Option<f64>, fn(f64) -> String);

/// Every row as text, for the folded "all measurements" table: headers and one line per row. Loss
/// columns appear only when some row has them.
pub fn all_rows(results: &Results) -> (Vec<String>, Vec<Vec<String>>) {
    let rows = &results.rows;
    let opt = |v: Option<f64>, f: fn(f64) -> String| v.map_or_else(|| "–".to_string(), f);
    let has = |f: fn(&Row) -> Option<f64>| rows.iter().any(|r| f(r).is_some());
    let extras: Vec<Extra> = vec![
        ("Over-refusal", |r| r.over_refusal, pct),
        ("Benign loss", |r| r.benign_loss, loss),
        ("Refusal loss", |r| r.refusal_loss, loss),
        ("Harmful loss", |r| r.harmful_loss, loss),
    ];
    let extras: Vec<_> = extras.into_iter().filter(|(_, f, _)| has(*f)).collect();
    let mut headers: Vec<String> = ["Defense", "Attack", "Steps", "HS", "Refusal", "Degenerate", "Utility"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    headers.extend(extras.iter().map(|(h, _, _)| h.to_string()));
    let lines = rows
        .iter()
        .map(|r| {
            let held = if r.held_out { " (held-out)" } else { "" };
            let mut line = vec![
                r.defense.clone(),
                format!("{}{held}", r.attack),
                r.budget.to_string(),
                pct(r.harmful_score),
                pct(r.refusal_rate),
                pct(r.degenerate_rate),
                pct(r.utility),
            ];
            line.extend(extras.iter().map(|(_, f, fmt)| opt(f(r), *fmt)));
            line
        })
        .collect();
    (headers, lines)
}

/// Flags the best cells of a column: those that read the same as the best value, so cells that
/// print alike are treated alike. Nothing is flagged when fewer than two cells have values or all
/// of them read the same. Guarded cells never count.
fn mark_best(col: &mut Column) {
    let candidates = || col.cells.iter().filter(|c| !c.guarded && c.value.is_some());
    let pick = |a: &&Cell, b: &&Cell| {
        let (a, b) = (a.value.unwrap_or(f64::NAN), b.value.unwrap_or(f64::NAN));
        a.total_cmp(&b)
    };
    let best = match col.better {
        Better::Lower => candidates().min_by(pick),
        Better::Higher => candidates().max_by(pick),
        Better::Neither => return,
    };
    let Some(best) = best.map(|c| c.text.clone()) else { return };
    if candidates().count() < 2 || candidates().all(|c| c.text == best) {
        return;
    }
    for c in col.cells.iter_mut().filter(|c| !c.guarded && c.value.is_some()) {
        c.best = c.text == best;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn col(values: &[Option<f64>], better: Better) -> Column {
        let cells = values.iter().map(|v| v.map_or_else(empty, |v| cell(pct(v), Some(v)))).collect();
        column("x", better, Measure::Hs, cells)
    }

    #[test]
    fn best_is_flagged_only_when_values_differ() {
        let mut c = col(&[Some(0.2), Some(0.1), None, Some(0.1)], Better::Lower);
        mark_best(&mut c);
        let flags: Vec<bool> = c.cells.iter().map(|c| c.best).collect();
        assert_eq!(flags, vec![false, true, false, true]);
        let mut alike = col(&[Some(0.161), Some(0.164), Some(0.2)], Better::Lower);
        mark_best(&mut alike);
        assert!(alike.cells[0].best && alike.cells[1].best, "both read 16%");
        let mut same = col(&[Some(0.3), Some(0.3)], Better::Lower);
        mark_best(&mut same);
        assert!(same.cells.iter().all(|c| !c.best));
        let mut never = col(&[Some(50.0), Some(f64::INFINITY)], Better::Higher);
        mark_best(&mut never);
        assert!(never.cells[1].best && !never.cells[0].best);
    }
}
