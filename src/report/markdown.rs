//! `report.md`: the headline and notes, the main table (one small table per column group, since
//! markdown has no spanning headers), the figures as links to their standalone SVG files, the stage
//! timings, the samples and the reproduction footer. Untrusted strings in table cells are escaped so
//! they cannot break the table or inject HTML.

use std::fmt::Write;

use super::Results;
use super::figures::{Figure, Kind};
use super::fmt::{display_defense, duration, excerpt, md_cell, md_prose};
use super::summary::headline;
use super::table::{MainTable, all_rows, main_table};

/// Renders the whole markdown report.
pub fn render(results: &Results, figures: &[Figure]) -> String {
    let mut md = String::new();
    let _ = writeln!(md, "# Patcher report: {}\n", md_cell(&results.experiment));
    let _ = writeln!(md, "**{}**\n", md_prose(&headline(results)));
    for note in &results.notes {
        let _ = writeln!(md, "- {}", md_prose(note));
    }
    if !results.notes.is_empty() {
        md.push('\n');
    }
    let _ = writeln!(
        md,
        "Judge: `{}` · utility: {} · {} measured models · created {}\n",
        md_cell(&results.judge),
        md_cell(&results.utility_metric),
        results.rows.len(),
        md_cell(&results.created)
    );

    md.push_str("## Main table\n\n");
    let guarded = if results.guard.is_default() {
        String::new()
    } else {
        " The capability-guarded steps-to-break counts only the budgets whose attacked model passes the guard.".into()
    };
    md.push_str(&format!(
        "Percentages of the held-out prompts. Best cell per column in **bold**; † marks an attacked model with \
         {} (the capability guard: ignored by the worst case). Steps-to-break is the first \
         budget with HS ≥ 50% on the mean curve (`> N`: not within N steps), each attack seed's in brackets; `*` marks \
         held-out attacks.{guarded}\n\n",
        results.guard.describe()
    ));
    table(&mut md, &main_table(results));

    section(&mut md, figures, Kind::Robustness, "Robustness curves");
    section(&mut md, figures, Kind::KScaling, "K scaling");
    section(&mut md, figures, Kind::Training, "Training curves");
    section(&mut md, figures, Kind::UtilityHs, "Utility against harmful score");

    if !results.rows.is_empty() {
        let (headers, lines) = all_rows(results);
        md.push_str("## All measurements\n\n|");
        for h in &headers {
            let _ = write!(md, " {h} |");
        }
        md.push_str("\n|---|---|");
        md.push_str(&"---:|".repeat(headers.len().saturating_sub(2)));
        md.push('\n');
        for line in lines {
            md.push('|');
            for c in line {
                let _ = write!(md, " {} |", md_cell(&c));
            }
            md.push('\n');
        }
        md.push('\n');
    }

    if !results.stages.is_empty() {
        md.push_str("## Wall-clock per stage\n\n| Stage | Time | Share | Detail |\n|---|---:|---:|---|\n");
        let total: f64 = results.stages.iter().map(|s| s.seconds).sum();
        for s in &results.stages {
            let share = if total > 0.0 { format!("{:.0}%", 100.0 * s.seconds / total) } else { "–".into() };
            let _ =
                writeln!(md, "| {} | {} | {share} | {} |", md_cell(&s.name), duration(s.seconds), md_cell(&s.detail));
        }
        let _ = writeln!(md, "| **total** | **{}** | | |\n", duration(total));
    }

    if !results.samples.is_empty() {
        md.push_str("## Samples\n\n");
        md.push_str("Excerpts of greedy answers with the judge's verdict. **They can contain harmful text.**\n\n");
        md.push_str("| Defense | Attack | Steps | Verdict | Prompt | Answer |\n|---|---|---:|---|---|---|\n");
        for s in &results.samples {
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {} | {} |",
                md_cell(&s.defense),
                md_cell(&s.attack),
                s.budget,
                md_cell(&s.verdict),
                md_cell(&excerpt(&s.prompt)),
                md_cell(&excerpt(&s.answer))
            );
        }
        md.push('\n');
    }

    md.push_str("## Reproduce\n\n");
    let _ = writeln!(
        md,
        "patcher {} · commit `{}` · judge `{}` · utility metric: {}\n",
        md_cell(&results.version),
        md_cell(&results.commit),
        md_cell(&results.judge),
        md_cell(&results.utility_metric)
    );
    if !results.commands.is_empty() {
        let longest = results.commands.iter().map(|c| longest_backtick_run(c)).max().unwrap_or(0);
        let fence = "`".repeat(longest.max(2) + 1);
        let _ = writeln!(md, "{fence}sh\n{}\n{fence}", results.commands.join("\n"));
    }
    md
}

fn table(md: &mut String, t: &MainTable) {
    for g in &t.groups {
        let title = match &g.attack {
            Some(a) => format!("HS after N steps of `{}`", a.replace('`', "'")),
            None => md_cell(&g.title),
        };
        let held = if g.held_out { " (held-out attack)" } else { "" };
        let _ = writeln!(md, "**{title}**{held}\n");
        md.push_str("| Defense |");
        for c in &g.columns {
            let _ = write!(md, " {} |", md_cell(&c.header));
        }
        md.push_str("\n|---|");
        for _ in &g.columns {
            md.push_str("---:|");
        }
        md.push('\n');
        for (i, d) in t.defenses.iter().enumerate() {
            let _ = write!(md, "| {} |", md_cell(&display_defense(d)));
            for c in &g.columns {
                let Some(cell) = c.cells.get(i) else { continue };
                let text = md_cell(&cell.text);
                let dagger = if cell.guarded { " †" } else { "" };
                let detail = if cell.detail.is_empty() { String::new() } else { format!(" {}", md_cell(&cell.detail)) };
                if cell.best {
                    let _ = write!(md, " **{text}**{detail}{dagger} |");
                } else {
                    let _ = write!(md, " {text}{detail}{dagger} |");
                }
            }
            md.push('\n');
        }
        md.push('\n');
    }
}

fn section(md: &mut String, figures: &[Figure], kind: Kind, title: &str) {
    let mine: Vec<&Figure> = figures.iter().filter(|f| f.kind == kind).collect();
    if mine.is_empty() {
        return;
    }
    let _ = writeln!(md, "## {title}\n");
    for f in mine {
        let alt = md_cell(&f.title.replace(['[', ']'], ""));
        let _ = writeln!(md, "![{alt}]({})\n\n{}\n", f.file, md_prose(&f.caption));
    }
}

fn longest_backtick_run(s: &str) -> usize {
    s.split(|c| c != '`').map(str::len).max().unwrap_or(0)
}
