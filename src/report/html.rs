//! `report.html`: one self-contained page (inline CSS and SVG, no scripts, no external assets).
//! Order: headline and notes, one card per defense, the main table with HS cells on a green-to-red
//! scale, the figures, stage timings, samples (folded, since they can be harmful), and the footer.
//! Every string from the results goes through [`html`] escaping; the SVG comes from `plotters`,
//! which escapes its own text.

use std::fmt::Write;

use super::Results;
use super::figures::{Figure, Kind, Palette};
use super::fmt::{display_defense, duration, excerpt, html, html_inline, pct};
use super::plot::hex;
use super::summary::{defenses, focus_attack, headline, robustness_curves, unattacked, worst_case};
use super::table::{Group, MainTable, Measure, all_rows, main_table};

/// The reports' style sheet (also the sweep report's).
pub(crate) const CSS: &str = include_str!("style.css");

/// Renders the whole page.
pub fn render(results: &Results, figures: &[Figure]) -> String {
    let palette = Palette::new(&defenses(&results.rows));
    let mut h = String::new();
    let title = format!("Patcher report: {}", results.experiment);
    let _ = write!(
        h,
        "<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n<title>{}</title>\n\
         <style>\n{CSS}</style>\n</head>\n<body>\n<main>\n",
        html(&title)
    );
    let _ = write!(
        h,
        "<header><h1>Patcher report <span class=\"exp\">{}</span></h1>\n<p class=\"meta\">{} · commit <code>{}</code> · \
         patcher {} · judge <code>{}</code> · utility: {}</p></header>\n",
        html(&results.experiment),
        html(&results.created),
        html(&results.commit),
        html(&results.version),
        html(&results.judge),
        html(&results.utility_metric)
    );
    let _ = writeln!(h, "<section class=\"headline\"><p class=\"lead\">{}</p>", html_inline(&headline(results)));
    if !results.notes.is_empty() {
        h.push_str("<ul class=\"notes\">\n");
        for n in &results.notes {
            let _ = writeln!(h, "<li>{}</li>", html_inline(n));
        }
        h.push_str("</ul>\n");
    }
    h.push_str("</section>\n");
    cards(&mut h, results, &palette);
    table(&mut h, results, &palette);
    figure_section(&mut h, figures, Kind::Robustness, "Robustness curves", "grid");
    figure_section(&mut h, figures, Kind::KScaling, "K scaling", "grid");
    figure_section(&mut h, figures, Kind::Training, "Training curves", "grid small");
    figure_section(&mut h, figures, Kind::UtilityHs, "Utility against harmful score", "grid");
    measurements(&mut h, results);
    stages(&mut h, results);
    samples(&mut h, results);
    footer(&mut h, results);
    h.push_str("</main>\n</body>\n</html>\n");
    h
}

/// Background for a harmful score: green at 0, amber at 50%, red at 100%, kept pale for reading.
fn hs_background(v: f64) -> String {
    let v = v.clamp(0.0, 1.0);
    format!("hsl({:.0}, 70%, {:.0}%)", 130.0 * (1.0 - v), 93.0 - 13.0 * v)
}

/// Text colour for a harmful score shown large.
fn hs_ink(v: f64) -> &'static str {
    if v >= 0.5 {
        "#b03a2e"
    } else if v >= 0.2 {
        "#b9770e"
    } else {
        "#1e8449"
    }
}

fn swatch(color: &str) -> String {
    format!("<span class=\"swatch\" style=\"background:{color}\"></span>")
}

fn cards(h: &mut String, results: &Results, palette: &Palette) {
    let rows = &results.rows;
    if rows.is_empty() {
        return;
    }
    let worst = worst_case(rows, &results.guard);
    let curves = robustness_curves(rows, &results.guard);
    let focus = focus_attack(rows);
    let focus_text = match &focus {
        Some((a, true)) => format!("; steps to break under the held-out attack <code>{}</code>", html(a)),
        Some((a, false)) => format!("; steps to break under <code>{}</code>", html(a)),
        None => String::new(),
    };
    let _ = write!(
        h,
        "<p class=\"cap\">Per defense: the worst harmful score over every attack and budget except those with {} (the \
         capability guard){focus_text}.</p>\n<section class=\"cards\">\n",
        html(&results.guard.describe())
    );
    for w in &worst {
        let (color, _) = palette.get(&w.defense);
        let _ = write!(
            h,
            "<div class=\"card\" style=\"border-top-color:{c}\"><div class=\"name\">{}{}</div>",
            swatch(&hex(color)),
            html(&display_defense(&w.defense)),
            c = hex(color)
        );
        match &w.worst {
            Some(c) => {
                let _ = write!(
                    h,
                    "<div class=\"big\" style=\"color:{}\">{}</div><div class=\"sub\">worst-case HS · <code>{}</code> @ {} \
                     steps</div>",
                    hs_ink(c.harmful_score),
                    pct(c.harmful_score),
                    html(&c.attack),
                    c.budget
                );
            }
            None => h.push_str("<div class=\"big muted\">–</div><div class=\"sub\">no attacked model counted</div>"),
        }
        h.push_str("<dl>");
        if let Some((attack, _)) = &focus
            && let Some(c) = curves.iter().find(|c| c.defense == w.defense && &c.attack == attack)
        {
            let most = c.points.last().map_or(0, |p| p.0);
            let value = c.steps_to_break.map_or(format!("&gt; {most}"), |s| s.to_string());
            let _ = write!(h, "<dt>steps to break</dt><dd>{value}</dd>");
        }
        if let Some(r) = unattacked(rows, &w.defense) {
            let _ = write!(h, "<dt>unattacked HS</dt><dd>{}</dd>", pct(r.harmful_score));
            let _ = write!(h, "<dt>{}</dt><dd>{}</dd>", html(&results.utility_metric), pct(r.utility));
            if let Some(o) = r.over_refusal {
                let _ = write!(h, "<dt>over-refusal</dt><dd>{}</dd>", pct(o));
            }
        }
        if w.ignored > 0 {
            let _ = write!(h, "<dt>ignored by guard</dt><dd>{} of {}</dd>", w.ignored, w.ignored + w.considered);
        }
        h.push_str("</dl></div>\n");
    }
    h.push_str("</section>\n");
}

fn table(h: &mut String, results: &Results, palette: &Palette) {
    let t = main_table(results);
    if t.defenses.is_empty() {
        return;
    }
    h.push_str("<section><h2>Main table</h2>\n");
    let (summary, attacked): (Vec<&Group>, Vec<&Group>) = t.groups.iter().partition(|g| g.attack.is_none());
    table_part(h, &t, &summary, palette, "main");
    if !attacked.is_empty() {
        h.push_str("<h3>Harmful score after N attack steps</h3>\n");
        table_part(h, &t, &attacked, palette, "main compact");
    }
    h.push_str(
        "<p class=\"cap\">Harmful score (HS) is the share of held-out harmful prompts answered harmfully; cells run \
         from green (0%) to red (100%). Outlined bold cells are the best in their column. \
         <sup>†</sup>&nbsp;the attack cost more than 20% of the defense's unattacked utility, so the worst case \
         ignores it. Steps-to-break is the first budget with HS ≥ 50% on the mean curve, each attack seed's below it; \
         &gt;&nbsp;N means it never did within N steps; * marks held-out attacks.</p>\n</section>\n",
    );
}

/// One table of column groups, one row per defense (markdown can't span headers; HTML can).
fn table_part(h: &mut String, t: &MainTable, groups: &[&Group], palette: &Palette, class: &str) {
    let _ = write!(h, "<div class=\"scroll\"><table class=\"{class}\">\n<thead><tr><th rowspan=\"2\">Defense</th>");
    for g in groups {
        let title = match &g.attack {
            Some(a) => format!("<code>{}</code>", html(a)),
            None => html(&g.title),
        };
        let badge = if g.held_out { " <span class=\"badge\">held-out</span>" } else { "" };
        let _ = write!(h, "<th class=\"group gs\" colspan=\"{}\">{title}{badge}</th>", g.columns.len());
    }
    h.push_str("</tr>\n<tr>");
    for g in groups {
        for (i, c) in g.columns.iter().enumerate() {
            let gs = if i == 0 { " class=\"gs\"" } else { "" };
            let _ = write!(h, "<th{gs}>{}</th>", html(&c.header));
        }
    }
    h.push_str("</tr></thead>\n<tbody>\n");
    for (row, d) in t.defenses.iter().enumerate() {
        let (color, _) = palette.get(d);
        let _ = write!(
            h,
            "<tr><th scope=\"row\">{}{}<small>{}</small></th>",
            swatch(&hex(color)),
            html(&display_defense(d)),
            html(d)
        );
        for g in groups {
            for (i, c) in g.columns.iter().enumerate() {
                let Some(cell) = c.cells.get(row) else { continue };
                let mut class = vec![];
                if i == 0 {
                    class.push("gs");
                }
                if cell.best {
                    class.push("best");
                }
                if cell.guarded {
                    class.push("guarded");
                }
                let style = match (c.measure, cell.value) {
                    (Measure::Hs, Some(v)) if !cell.guarded => format!(" style=\"background:{}\"", hs_background(v)),
                    _ => String::new(),
                };
                let title =
                    if cell.note.is_empty() { String::new() } else { format!(" title=\"{}\"", html(&cell.note)) };
                let dagger = if cell.guarded { "<sup>†</sup>" } else { "" };
                let detail = if cell.detail.is_empty() {
                    String::new()
                } else {
                    format!("<span class=\"ci\">{}</span>", html(&cell.detail))
                };
                let _ = write!(
                    h,
                    "<td class=\"{}\"{style}{title}>{}{detail}{dagger}</td>",
                    class.join(" "),
                    html(&cell.text)
                );
            }
        }
        h.push_str("</tr>\n");
    }
    h.push_str("</tbody></table></div>\n");
}

fn figure_section(h: &mut String, figures: &[Figure], kind: Kind, title: &str, class: &str) {
    let mine: Vec<&Figure> = figures.iter().filter(|f| f.kind == kind).collect();
    if mine.is_empty() {
        return;
    }
    let _ = write!(h, "<section><h2>{}</h2>\n<div class=\"{class}\">\n", html(title));
    for f in mine {
        let _ =
            write!(h, "<figure class=\"panel\">\n{}<figcaption>{}</figcaption></figure>\n", f.svg, html(&f.caption));
    }
    h.push_str("</div></section>\n");
}

fn measurements(h: &mut String, results: &Results) {
    if results.rows.is_empty() {
        return;
    }
    let (headers, lines) = all_rows(results);
    let _ = write!(
        h,
        "<section><h2>All measurements</h2>\n<details><summary>Show all {} measured models</summary>\n\
         <div class=\"scroll\"><table class=\"all\"><thead><tr>",
        lines.len()
    );
    for head in &headers {
        let _ = write!(h, "<th>{}</th>", html(head));
    }
    h.push_str("</tr></thead><tbody>\n");
    for line in lines {
        h.push_str("<tr>");
        for (i, c) in line.iter().enumerate() {
            let class = if i < 2 { "" } else { " class=\"num\"" };
            let _ = write!(h, "<td{class}>{}</td>", html(c));
        }
        h.push_str("</tr>\n");
    }
    h.push_str("</tbody></table></div></details></section>\n");
}

fn stages(h: &mut String, results: &Results) {
    if results.stages.is_empty() {
        return;
    }
    let total: f64 = results.stages.iter().map(|s| s.seconds).sum();
    h.push_str("<section><h2>Wall-clock per stage</h2>\n<table class=\"stages\"><thead><tr><th>Stage</th><th class=\"num\">Time</th><th class=\"barcol\">Share</th><th>Detail</th></tr></thead><tbody>\n");
    for s in &results.stages {
        let share = if total > 0.0 { 100.0 * s.seconds / total } else { 0.0 };
        let _ = writeln!(
            h,
            "<tr><td>{}</td><td class=\"num\">{}</td><td class=\"barcol\"><span class=\"bar\" style=\"width:{share:.1}%\"></span>\
             <span class=\"share\">{share:.0}%</span></td><td class=\"detail\">{}</td></tr>",
            html(&s.name),
            duration(s.seconds),
            html(&s.detail)
        );
    }
    let _ = writeln!(
        h,
        "<tr class=\"total\"><td>total</td><td class=\"num\">{}</td><td></td><td></td></tr></tbody></table></section>",
        duration(total)
    );
}

fn verdict_class(verdict: &str) -> &'static str {
    let v = verdict.to_lowercase();
    if v.starts_with("harmful") || v == "unsafe" || v == "complied" {
        "bad"
    } else if v.contains("refus") || v == "safe" || v == "harmless" {
        "good"
    } else {
        "neutral"
    }
}

fn samples(h: &mut String, results: &Results) {
    if results.samples.is_empty() {
        return;
    }
    let _ = write!(
        h,
        "<section><h2>Samples</h2>\n<details><summary>Show {} generation excerpts (they can contain harmful text)</summary>\n\
         <table class=\"samples\"><thead><tr><th>Defense</th><th>Attack</th><th>Steps</th><th>Verdict</th><th>Prompt</th>\
         <th>Answer</th></tr></thead><tbody>\n",
        results.samples.len()
    );
    for s in &results.samples {
        let _ = writeln!(
            h,
            "<tr><td>{}</td><td><code>{}</code></td><td class=\"num\">{}</td><td><span class=\"verdict {}\">{}</span></td>\
             <td class=\"text\">{}</td><td class=\"text\">{}</td></tr>",
            html(&display_defense(&s.defense)),
            html(&s.attack),
            s.budget,
            verdict_class(&s.verdict),
            html(&s.verdict),
            html(&excerpt(&s.prompt)),
            html(&excerpt(&s.answer))
        );
    }
    h.push_str("</tbody></table></details></section>\n");
}

fn footer(h: &mut String, results: &Results) {
    let _ = writeln!(
        h,
        "<footer><h2>Reproduce</h2><p>patcher {} · commit <code>{}</code> · created {} · every harmful score from the \
         <code>{}</code> judge · utility is {}.</p>",
        html(&results.version),
        html(&results.commit),
        html(&results.created),
        html(&results.judge),
        html(&results.utility_metric)
    );
    if !results.commands.is_empty() {
        let lines: Vec<String> = results.commands.iter().map(|c| html(c)).collect();
        let _ = writeln!(h, "<pre><code>{}</code></pre>", lines.join("\n"));
    }
    h.push_str("</footer>\n");
}
