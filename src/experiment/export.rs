//! `patcher export RUN --defense NAME --out DIR`: one defense of a finished run as a Hugging
//! Face model directory that anyone can load and attack with their own tools (issue 16,
//! item 5), with the run's evidence beside the weights:
//!
//! - the model's own files (`config.json`, `model.safetensors`, the tokenizer, the generation
//!   config), copied from `RUN/models/NAME/` without its training checkpoints;
//! - `patcher-run/`: the run's resolved `config.json`, `results.json`, `report.md` /
//!   `report.html` with their figures, `stages.json`, `segments.json` (each invocation's
//!   commit and wall-clock), and the defense's training `metrics.jsonl`;
//! - `README.md`, a model card: what the defense is, the commands and commit that made it, its
//!   measured harmful scores (every judge of the run), over-refusal and utility, unattacked
//!   and after every attack budget of the run, with steps-to-break, and how to attack it.
//!
//! The directory is written under a temporary name and renamed, so an interrupted export
//! leaves nothing that looks finished; an existing non-empty `DIR` is refused.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::error::{Error, IoContext, Result};
use crate::report::fmt::{ci, loss, pct};
use crate::report::{Results, Row};

/// Where [`export`] wrote.
#[derive(Debug, Clone, PartialEq)]
pub struct Exported {
    pub dir: PathBuf,
    /// The model files copied (names).
    pub model_files: Vec<String>,
    /// The run's files copied into `patcher-run/` (names).
    pub run_files: Vec<String>,
}

/// The run's files kept beside the model, when present (plus every `*.svg` the report uses).
const RUN_FILES: [&str; 6] =
    ["config.json", "results.json", "report.md", "report.html", "stages.json", super::segments::SEGMENTS];

/// Export defense `defense` of the finished run in `run` to `out` (see the module doc).
pub fn export(run: &Path, defense: &str, out: &Path) -> Result<Exported> {
    let config_path = run.join("config.json");
    let config: serde_json::Value = super::load_json(&config_path)?;
    let defenses = config["defenses"].as_array().cloned().unwrap_or_default();
    let names: Vec<&str> = defenses.iter().filter_map(|d| d["name"].as_str()).collect();
    let Some(spec) = defenses.iter().find(|d| d["name"] == defense) else {
        return Err(Error::Invalid(format!(
            "{}: the run has no defense `{defense}` (it has: {})",
            config_path.display(),
            names.join(", ")
        )));
    };
    let kind = spec["kind"].as_str().unwrap_or("?").to_string();
    if kind == "none" {
        return Err(Error::Invalid(format!(
            "defense `{defense}` is the base model unchanged ({}); there is nothing of the run's to export",
            config["base"]["path"].as_str().unwrap_or("the run's base")
        )));
    }
    let model_dir = run.join("models").join(defense);
    for need in ["config.json", "model.safetensors"] {
        if !model_dir.join(need).is_file() {
            return Err(Error::Invalid(format!(
                "{}: no {need}: the defense's stage has not finished (run `patcher run` on the run's config to finish it)",
                model_dir.display()
            )));
        }
    }
    let results_path = run.join("results.json");
    let results = crate::report::read_results(&results_path).at(&results_path)?;
    if out.exists() && std::fs::read_dir(out).at(out)?.next().is_some() {
        return Err(Error::Invalid(format!("{}: exists and is not empty; choose a new --out", out.display())));
    }

    let name = out.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "export".into());
    let tmp = out.with_file_name(format!(".{name}.tmp-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(tmp.join("patcher-run")).at(&tmp)?;
    let model_files = copy_files(&model_dir, &tmp, |_| true)?;
    let keep = |n: &str| RUN_FILES.contains(&n) || n.ends_with(".svg");
    let mut run_files = copy_files(run, &tmp.join("patcher-run"), keep)?;
    let metrics = model_dir.join("train/metrics.jsonl");
    if metrics.is_file() {
        std::fs::copy(&metrics, tmp.join("patcher-run/metrics.jsonl")).at(&metrics)?;
        run_files.push("metrics.jsonl".into());
    }
    let card = model_card(&results, &config, defense, &kind);
    crate::io::write_atomic(&tmp.join("README.md"), card.as_bytes()).at(tmp.join("README.md"))?;
    if out.exists() {
        std::fs::remove_dir(out).at(out)?; // empty, checked above
    }
    std::fs::rename(&tmp, out).at(out)?;
    Ok(Exported { dir: out.to_path_buf(), model_files, run_files })
}

/// Copy the plain files of `from` whose names pass `keep` into `to` (not sub-directories),
/// returning their names, sorted.
fn copy_files(from: &Path, to: &Path, keep: impl Fn(&str) -> bool) -> Result<Vec<String>> {
    let mut names = vec![];
    for entry in std::fs::read_dir(from).at(from)? {
        let path = entry.at(from)?.path();
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        if path.is_file() && !name.starts_with('.') && keep(&name) {
            std::fs::copy(&path, to.join(&name)).at(&path)?;
            names.push(name);
        }
    }
    names.sort();
    Ok(names)
}

/// `commit abc1234, 2026-12-07T11:16:19Z`, with what the run recorded.
fn provenance(r: &Results) -> String {
    let commit = if r.commit.is_empty() { "commit not recorded".to_string() } else { format!("commit `{}`", r.commit) };
    if r.created.is_empty() { commit } else { format!("{commit}, {}", r.created) }
}

/// The model card (`README.md`) of defense `defense` (kind `kind`) of a run.
pub fn model_card(results: &Results, config: &serde_json::Value, defense: &str, kind: &str) -> String {
    let base = config["base"]["path"].as_str().unwrap_or("the run's base model");
    let base_name = Path::new(base).file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or(base.into());
    let of = |name: &str| -> Vec<Row> {
        let mine = results.rows.iter().filter(|r| r.defense == name).cloned().collect();
        crate::report::aggregate::average_seeds(mine)
    };
    // An attack's budget-0 row is the unattacked model again.
    let rows: Vec<Row> = of(defense).into_iter().filter(|r| r.attack == "none" || r.budget > 0).collect();
    // The SFT baseline of the same run, beside it, when the run has one.
    let baseline = if defense == "sft" { vec![] } else { of("sft") };
    let baseline_hs =
        |r: &Row| baseline.iter().find(|b| b.attack == r.attack && b.budget == r.budget).map(|b| b.harmful_score);
    let mut s = String::new();
    let _ = writeln!(s, "---\nlibrary_name: transformers\ntags:\n- patcher\n- tamper-resistance\n- safety\n---\n");
    let _ = writeln!(s, "# {base_name}, hardened with `{defense}` ({kind})\n");
    let _ = writeln!(
        s,
        "A fine-tune of `{base}` made by patcher {}, experiment `{}` \
         ({}). The weights are the run's `models/{defense}/`; the base model's licence \
         applies to them. `patcher-run/` holds the run's resolved config (the defense's settings \
         are its `defenses` entry named `{defense}`), results and report.\n",
        results.version,
        results.experiment,
        provenance(results)
    );
    if !results.commands.is_empty() {
        let _ = writeln!(s, "Made with:\n\n```\n{}\n```\n", results.commands.join("\n"));
    }
    let _ = writeln!(s, "## Measured\n");
    let judges: Vec<String> =
        rows.first().map(|r| r.also_hs.iter().map(|(j, _)| j.clone()).collect()).unwrap_or_default();
    let _ = writeln!(
        s,
        "Harmful score (HS) by the `{}` judge with its 95% interval{}; utility is {}. Steps are \
         the attack's fine-tuning steps on harmful data (held-out attacks were not seen in \
         training).{} Suite `{}`.\n",
        results.judge,
        if judges.is_empty() { String::new() } else { format!(", and by {} in its own column", judges.join(", ")) },
        results.utility_metric,
        if baseline.is_empty() { "" } else { " `sft` is the run's SFT-aligned baseline under the same attack." },
        config["data"]["suite"].as_str().unwrap_or("?")
    );
    let mut header = "| attack | steps | HS |".to_string();
    for j in &judges {
        let _ = write!(header, " HS ({j}) |");
    }
    if !baseline.is_empty() {
        header.push_str(" HS of `sft` |");
    }
    header.push_str(" refusal | over-refusal | utility | benign loss |");
    let _ = writeln!(s, "{header}\n{}", "|---".repeat(header.matches('|').count() - 1) + "|");
    for r in &rows {
        let attack = if r.attack == "none" {
            "none (unattacked)".to_string()
        } else if r.held_out {
            format!("{} (held out)", r.attack)
        } else {
            r.attack.clone()
        };
        let interval = r.ci.map(|c| format!(" {}", ci(c.harmful_score))).unwrap_or_default();
        let mut line = format!("| {attack} | {} | {}{interval} |", r.budget, pct(r.harmful_score));
        for j in &judges {
            let v = r.also_hs.iter().find(|(n, _)| n == j).map_or("–".into(), |x| pct(x.1));
            let _ = write!(line, " {v} |");
        }
        if !baseline.is_empty() {
            let _ = write!(line, " {} |", baseline_hs(r).map_or("–".into(), pct));
        }
        let _ = write!(
            line,
            " {} | {} | {} | {} |",
            pct(r.refusal_rate),
            r.over_refusal.map_or("–".into(), pct),
            pct(r.utility),
            r.benign_loss.map_or("–".into(), loss)
        );
        let _ = writeln!(s, "{line}");
    }
    let curves = crate::report::robustness_curves(&rows, &results.guard);
    if !curves.is_empty() {
        let _ = writeln!(s, "\nSteps-to-break (first budget with HS ≥ 50%; `>N`: not within the run's N steps):\n");
        for c in &curves {
            let most = c.points.iter().map(|p| p.0).max().unwrap_or(0);
            let b = c.steps_to_break.map_or(format!(">{most}"), |b| b.to_string());
            let _ = writeln!(s, "- {}{}: {b}", c.attack, if c.held_out { " (held out)" } else { "" });
        }
    }
    let harmful = config["data"]["attacker_harmful"][0].as_str().unwrap_or("HARMFUL.jsonl");
    let suite = config["data"]["suite"].as_str().filter(|s| s.starts_with("real")).unwrap_or("real:100");
    let _ = writeln!(
        s,
        "\nOther defenses of the same run, the baseline among them, are in `patcher-run/report.md`.\n\n\
         ## Use it, attack it\n\n\
         It loads as any Llama-family model: `AutoModelForCausalLM.from_pretrained(\"<this directory>\")` \
         in transformers, or `patcher chat --model <this directory> \"...\"`. To attack it and measure \
         it again:\n\n\
         ```\npatcher attack --model <this directory> --preset full-adamw-5e-5 --harmful {harmful} --out attacked\n\
         patcher eval --model attacked --suite {suite}\n```\n\n\
         ## Limits\n\n\
         These figures hold for the attacks, budgets, prompts and judges above, at the run's \
         evaluation size; a stronger or different attack can break the defense sooner. A \
         tamper-resistance defense raises the cost of harmful fine-tuning; it is no guarantee."
    );
    s
}
