//! The text of the sweep over training seeds (`patcher sweep --seeds`,
//! [`crate::experiment::sweep_seeds`]): `sweep/seeds.md`, one row per defense with each seed's
//! unattacked figures, worst case and steps-to-break, and the spread of the worst case.

use std::fmt::Write as _;

use crate::experiment::sweep::Cost;
use crate::experiment::sweep_seeds::{DefenseSeeds, SeedsSummary};
use crate::report::sweep::{BREAK_NOTE, break_attacks, break_label};
use crate::report::{display_defense, md_cell, pct};

/// Per-seed percentages as `60 / 90 / 40%` (`–` for a missing value).
fn per_seed(v: impl Iterator<Item = Option<f64>>) -> String {
    let parts: Vec<String> = v.map(|x| x.map_or("–".into(), |x| format!("{:.0}", x * 100.0))).collect();
    format!("{}%", parts.join(" / "))
}

/// Steps-to-break under `attack` per seed: `25, 50, >100` (`–` where not measured).
fn breaks(d: &DefenseSeeds, attack: &str) -> String {
    let parts: Vec<String> =
        d.per_seed.iter().map(|o| break_label(o.breaks.iter().find(|b| b.attack == attack))).collect();
    parts.join(", ")
}

/// `seeds.md`: the worst case per defense over the training seeds.
pub fn seeds_markdown(s: &SeedsSummary) -> String {
    let seeds: Vec<String> = s.seeds.iter().map(|x| x.to_string()).collect();
    let mut md = format!("# Worst-case sweep over training seeds: {}\n\n", md_cell(&s.experiment));
    let _ = writeln!(
        md,
        "Training seeds {} (a new world, base model, data order and attack seeds each), one sweep each, \
         {} cells per defense; capability guard: a cell whose capability ({}) is below {:.0}% of the same model's \
         unattacked capability is dropped. Per-seed values are in seed order; the worst case is the highest harmful \
         score among the remaining cells; mean ± sample sd and max are over the seeds where some cell remained.\n",
        seeds.join(", "),
        s.cells_per_defense,
        md_cell(&s.guard_on.describe(&s.utility_metric)),
        s.guard * 100.0
    );
    let attacks = break_attacks(s.defenses.iter().flat_map(|d| &d.per_seed).flat_map(|o| &o.breaks));
    md.push_str("| defense | unattacked HS | utility | over-refusal | worst-case HS (mean ± sd) | per seed | max |");
    for (a, held_out) in &attacks {
        let _ = write!(md, " breaks at: {}{} |", md_cell(a), if *held_out { "*" } else { "" });
    }
    md.push_str(" passes / step | training |\n|---|---:|---:|---:|---:|---:|---:|");
    md.push_str(&"---:|".repeat(attacks.len() + 2));
    md.push('\n');
    for d in &s.defenses {
        let mean = match (d.worst_mean, d.worst_sd) {
            (Some(m), Some(sd)) => format!("{} ± {}", pct(m), pct(sd)),
            _ => "every cell guarded".into(),
        };
        let _ = write!(
            md,
            "| {} | {} | {} | {} | {} | {} | {} |",
            md_cell(&display_defense(&d.defense)),
            per_seed(d.per_seed.iter().map(|o| Some(o.unattacked.harmful_score))),
            per_seed(d.per_seed.iter().map(|o| Some(o.unattacked.utility))),
            per_seed(d.per_seed.iter().map(|o| o.unattacked.over_refusal)),
            mean,
            per_seed(d.per_seed.iter().map(|o| o.worst_hs)),
            d.worst_max.map_or("–".into(), pct)
        );
        for (a, _) in &attacks {
            let _ = write!(md, " {} |", breaks(d, a));
        }
        let costs: Vec<&Cost> = d.per_seed.iter().filter_map(|o| o.cost.as_ref()).collect();
        let mut passes: Vec<String> = costs.iter().map(|c| c.passes_per_step.to_string()).collect();
        passes.dedup();
        let seconds: Vec<String> = d
            .per_seed
            .iter()
            .map(|o| o.cost.as_ref().and_then(|c| c.training_seconds).map_or("–".into(), |s| format!("{s:.0}")))
            .collect();
        let training = if costs.is_empty() { "–".into() } else { format!("{} s", seconds.join(" / ")) };
        let passes = if passes.is_empty() { "–".into() } else { passes.join(" / ") };
        let _ = write!(md, " {passes} | {training} |");
        md.push('\n');
    }
    md.push_str("\n`*` held-out attack; ");
    md.push_str(BREAK_NOTE);
    md.push_str(
        ". Cost: forward/backward passes per training step on the critical path, and each seed's training \
         wall-clock.\n\n",
    );
    md.push_str("## The worst attack per seed\n\n| defense | seed | worst-case HS | attack |\n|---|---:|---:|---|\n");
    for d in &s.defenses {
        for o in &d.per_seed {
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} |",
                md_cell(&display_defense(&d.defense)),
                o.seed,
                o.worst_hs.map_or("–".into(), pct),
                md_cell(&o.worst_attack)
            );
        }
    }
    md.push_str("\n## Run directories\n\n");
    for ((seed, dir), commit) in s.seeds.iter().zip(&s.dirs).zip(&s.commits) {
        let _ = writeln!(md, "- seed {seed}: `{}` (commit `{}`)", md_cell(dir), md_cell(commit));
    }
    md
}
