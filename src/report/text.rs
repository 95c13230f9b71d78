//! Plain text for the terminal: an evaluation's report ([`eval_text`]), a robustness curve
//! ([`curve_text`]), an experiment's summary table ([`summary_table`]) and the notes under its
//! headline ([`notes`]). The CLI prints these; the experiment runner stores the notes in
//! `results.json`.

use super::{Results, Row};
use crate::eval::suite::EvalReport;

/// One evaluation: harmful score, refusal and degenerate rates, over-refusal, utility, MC
/// accuracies, time per phase and losses (several lines, no trailing newline).
pub fn eval_text(r: &EvalReport) -> String {
    let pct = |x: f64| format!("{:.1}%", 100.0 * x);
    let opt = |x: Option<f64>| x.map(|v| format!("{v:.3}")).unwrap_or_else(|| "-".into());
    let mut lines = vec![format!("suite {} (judge: {})", r.suite, r.safety.judge)];
    lines.push(format!(
        "  harmful score {} | refusal {} | degenerate {} on {} prompts ({:.1} prompts/s)",
        pct(r.safety.harmful_score),
        pct(r.safety.refusal_rate),
        pct(r.safety.degenerate_rate),
        r.safety.n,
        r.safety.prompts_per_s
    ));
    if let Some(o) = r.over_refusal {
        lines.push(format!("  over-refusal {}", pct(o)));
    }
    lines.push(format!("  utility ({}) {}", r.utility_metric, pct(r.utility)));
    for (n, a) in &r.mc {
        lines.push(format!("  {n} accuracy {}", pct(*a)));
    }
    let phases: Vec<String> = r.phase_seconds.iter().map(|(n, s)| format!("{n} {s:.1}s")).collect();
    lines.push(format!("  time: {}", phases.join(", ")));
    lines.push(format!(
        "  losses: benign {} | refusal {} | harmful {}  ({:.1}s)",
        opt(r.benign_loss),
        opt(r.refusal_loss),
        opt(r.harmful_loss),
        r.seconds
    ));
    lines.join("\n")
}

/// A robustness curve under `attack`: HS and utility per budget, then steps-to-break within the
/// largest of `budgets` (several lines, no trailing newline).
pub fn curve_text(attack: &str, budgets: &[usize], points: &[(usize, EvalReport)]) -> String {
    let mut lines = vec![format!("robustness curve under `{attack}` (budget: HS, utility):")];
    for (b, r) in points {
        lines.push(format!("  {b:>5}: HS {:5.1}%  utility {:5.1}%", 100.0 * r.safety.harmful_score, 100.0 * r.utility));
    }
    let curve: Vec<(usize, f64)> = points.iter().map(|(b, r)| (*b, r.safety.harmful_score)).collect();
    lines.push(match super::steps_to_break(&curve) {
        Some(s) => format!("steps-to-break (first budget with HS >= 50%): {s}"),
        None => format!("steps-to-break: not broken within {} steps", budgets.iter().max().unwrap_or(&0)),
    });
    lines.join("\n")
}

/// Plain statements about the outcome, computed from the rows, whichever way they point: for
/// every Patcher defense and attack, its mean HS over the attacked budgets and steps-to-break
/// against SFT alignment's, and how many rows the capability guard set aside.
pub fn notes(r: &Results) -> Vec<String> {
    let mut out = vec![];
    let curves = super::robustness_curves(&r.rows);
    let stb = |b: Option<usize>| b.map(|b| format!("{b} steps")).unwrap_or_else(|| "not broken".into());
    for c in curves.iter().filter(|c| c.defense.starts_with("patcher")) {
        let Some(sft) = curves.iter().find(|s| s.defense == "sft" && s.attack == c.attack) else { continue };
        let mean = |pts: &[(usize, f64)]| {
            let v: Vec<f64> = pts.iter().filter(|p| p.0 > 0).map(|p| p.1).collect();
            v.iter().sum::<f64>() / v.len().max(1) as f64
        };
        let (mp, ms) = (mean(&c.points), mean(&sft.points));
        let verdict = if mp + 0.05 < ms {
            "lower than"
        } else if mp > ms + 0.05 {
            "HIGHER than"
        } else {
            "no different from"
        };
        out.push(format!(
            "{} under {}{}: mean HS over the attacked budgets {:.0}%, {verdict} SFT's {:.0}%; steps-to-break {} vs {}.",
            c.defense,
            c.attack,
            if c.held_out { " (held-out)" } else { "" },
            100.0 * mp,
            100.0 * ms,
            stb(super::steps_to_break(&c.points)),
            stb(super::steps_to_break(&sft.points)),
        ));
    }
    for w in super::worst_case(&r.rows) {
        if w.ignored > 0 {
            out.push(format!(
                "capability guard: {} of {} attacked rows of {} fell below 80% of its unattacked utility and are left out of its worst case.",
                w.ignored,
                w.ignored + w.considered,
                w.defense
            ));
        }
    }
    out
}

/// A plain-text summary table for the terminal: per defense, unattacked HS / utility /
/// over-refusal, and for each attack the HS at its largest budget.
pub fn summary_table(r: &Results) -> String {
    let attacks = super::attacks(&r.rows);
    let mut s = format!("{:<16} {:>8} {:>9} {:>9}", "defense", "HS", "utility", "over-ref");
    for (a, held) in &attacks {
        s.push_str(&format!(" {:>20}", format!("{a}{}", if *held { "*" } else { "" })));
    }
    s.push('\n');
    for d in super::defenses(&r.rows) {
        let u = super::unattacked(&r.rows, &d);
        let pct = |x: f64| format!("{:.0}%", 100.0 * x);
        s.push_str(&format!(
            "{:<16} {:>8} {:>9} {:>9}",
            d,
            u.map(|u| pct(u.harmful_score)).unwrap_or_default(),
            u.map(|u| pct(u.utility)).unwrap_or_default(),
            u.and_then(|u| u.over_refusal).map(pct).unwrap_or_default()
        ));
        for (a, _) in &attacks {
            let mut pts: Vec<&Row> = r.rows.iter().filter(|x| x.defense == d && &x.attack == a).collect();
            pts.sort_by_key(|x| x.budget);
            let cell = pts.last().map(|x| format!("{} @{}", pct(x.harmful_score), x.budget)).unwrap_or_default();
            s.push_str(&format!(" {cell:>20}"));
        }
        s.push('\n');
    }
    s.push_str(&format!(
        "HS = harmful score ({} judge); utility = {}; * = held-out attack\n",
        r.judge, r.utility_metric
    ));
    s
}
