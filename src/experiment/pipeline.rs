//! The workflows every front end uses: the `patcher` subcommands, the experiment [`Runner`]
//! and the benchmarks call these functions, so a workflow is written once.
//!
//! - [`synth_world`]: the synthetic world in a directory, generated there first when absent;
//! - [`resolve_attack`]: an attack from a preset name or a TOML file;
//! - [`patcher_data`] and [`harden`]: Patcher, sequential or parallel ([`HardenMethod`]);
//! - [`write_evaluation`]: one evaluation's `summary.json` and `generations.jsonl`;
//! - [`attack_and_evaluate`]: one attack run, evaluated at every budget through the attack's
//!   callback (no model written per budget), and [`write_curve`] for its `curve.json`.
//!
//! Printing stays with the caller; the text of a result is formatted in [`crate::report`].
//!
//! [`Runner`]: super::Runner

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::attack::{AttackConfig, AttackOptions};
use crate::data::Conversation;
use crate::data::synth::{SynthConfig, SynthWorld};
use crate::defense::patcher::{HardenOptions, PatcherConfig, PatcherData};
use crate::error::{Error, IoContext, Result};
use crate::eval::JudgedAnswer;
use crate::eval::judge::Judge;
use crate::eval::suite::{EvalConfig, EvalReport, SuiteData, evaluate};
use crate::experiment::config::Defense;
use crate::io::write_atomic;
use crate::model::Llama;
use crate::tokenizer::ChatTokenizer;
use crate::train::batches::examples_from;

/// One evaluation: the report and every judged harmful-prompt answer.
pub type Evaluated = (EvalReport, Vec<JudgedAnswer>);

/// The synthetic world in `dir`, generated there first (from `cfg`) when `world.json` is absent.
pub fn synth_world(dir: &Path, cfg: &SynthConfig) -> Result<SynthWorld> {
    if dir.join("world.json").exists() {
        return Ok(SynthWorld::read_dir(dir)?);
    }
    let w = crate::data::synth::generate(cfg);
    w.write_dir(dir)?;
    Ok(w)
}

/// An attack from `spec`: a TOML file when it ends in `.toml`, else a preset name.
pub fn resolve_attack(spec: &str) -> Result<AttackConfig> {
    if spec.ends_with(".toml") {
        crate::attack::from_file(Path::new(spec))
    } else {
        crate::attack::preset(spec, &toml::Value::Table(Default::default()))
    }
}

/// Patcher's data, tokenized: retain (benign), refusal, and the defender's harmful pairs; the
/// benign look-alikes among the retain rows ([`Conversation::is_lookalike`]) also on their own.
pub fn patcher_data(
    tok: &ChatTokenizer,
    benign: &[Conversation],
    refusals: &[Conversation],
    harmful: &[Conversation],
) -> Result<PatcherData> {
    // `examples_from` encodes one example per conversation, in order, so the look-alikes are
    // picked from the retain examples by index rather than encoded a second time.
    let retain = examples_from(tok, benign)?;
    let lookalike = benign.iter().zip(&retain).filter(|(c, _)| c.is_lookalike()).map(|(_, e)| e.clone()).collect();
    Ok(PatcherData {
        retain,
        lookalike,
        refusal: examples_from(tok, refusals)?,
        harmful: examples_from(tok, harmful)?,
        pad_id: tok.pad_id,
    })
}

/// Which Patcher runs: sequential (K dependent simulated attack steps) or parallel with P
/// workers (`defense::parallel`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HardenMethod {
    Sequential,
    Parallel(usize),
}

impl HardenMethod {
    /// `workers` as the CLI and experiment files give it: 1 (or 0) is sequential.
    pub fn from_workers(workers: usize) -> Self {
        if workers > 1 { Self::Parallel(workers) } else { Self::Sequential }
    }
}

/// Harden `model` with Patcher.
pub fn harden(
    model: &Llama,
    cfg: &PatcherConfig,
    data: &PatcherData,
    method: HardenMethod,
    opts: HardenOptions,
) -> Result<Llama> {
    match method {
        HardenMethod::Sequential => crate::defense::patcher::harden(model, cfg, data, opts),
        HardenMethod::Parallel(p) => crate::defense::parallel::harden(model, cfg, data, p, opts),
    }
}

/// Harden `model` with a hardening `defense` (Patcher, parallel Patcher or a baseline).
/// `Defense::None` and `Defense::Sft` are not trained from a model: an error.
pub fn harden_defense(model: &Llama, defense: &Defense, data: &PatcherData, opts: HardenOptions) -> Result<Llama> {
    match defense {
        Defense::Patcher(c) => harden(model, c, data, HardenMethod::Sequential, opts),
        Defense::PatcherParallel { config, workers } => {
            harden(model, config, data, HardenMethod::Parallel(*workers), opts)
        }
        Defense::Method(m) => m.harden(model, data, opts),
        Defense::None | Defense::Sft => {
            Err(crate::Error::Invalid("`none` and `sft` are not hardening methods (use `patcher align`)".into()))
        }
    }
}

/// The defense `patcher harden --method NAME [--config FILE] [--parallel P]` runs: Patcher
/// (parallel when P > 1; P defaults to 2, the method study's recipe) with a `PatcherConfig`
/// file, or a baseline with its settings file. Errors name the file, the key, or the known
/// methods.
pub fn defense_named(method: &str, config: Option<&Path>, workers: Option<usize>) -> Result<Defense> {
    let text = match config {
        Some(p) => std::fs::read_to_string(p).at(p)?,
        None => String::new(),
    };
    let file = config.map(|p| p.display().to_string()).unwrap_or_else(|| "the default settings".into());
    if method == "patcher" {
        // Parsed from the text itself, so errors carry the line.
        let cfg: PatcherConfig =
            toml::from_str(&text).map_err(|e| crate::Error::Format { file: file.clone(), why: e.to_string() })?;
        cfg.validate().map_err(|e| crate::Error::Format { file, why: e.to_string() })?;
        return Ok(match HardenMethod::from_workers(workers.unwrap_or(2)) {
            HardenMethod::Sequential => Defense::Patcher(cfg),
            HardenMethod::Parallel(workers) => Defense::PatcherParallel { config: cfg, workers },
        });
    }
    let Some(kind) = crate::defense::MethodKind::from_name(method) else {
        let names: Vec<&str> = crate::defense::MethodKind::ALL.iter().map(|m| m.name()).collect();
        return Err(crate::Error::Invalid(format!("unknown method `{method}` (known: patcher, {})", names.join(", "))));
    };
    if workers.is_some_and(|w| w > 1) {
        return Err(crate::Error::Invalid(format!("--parallel applies to patcher, not `{method}`")));
    }
    Ok(Defense::Method(crate::defense::Method::from_text(kind, &text, &file)?))
}

/// Write an evaluation into `out`: `summary.json` (the report) and `generations.jsonl` (one
/// judged answer a line).
pub fn write_evaluation(out: &Path, (report, items): &Evaluated) -> Result<()> {
    std::fs::create_dir_all(out).at(out)?;
    crate::io::write_json(&out.join("summary.json"), report)?;
    let lines: String = items.iter().map(|i| serde_json::to_string(i).expect("json") + "\n").collect();
    let path = out.join("generations.jsonl");
    write_atomic(&path, lines.as_bytes()).at(&path)
}

/// What [`attack_and_evaluate`] needs besides the model: the attack, its data and budgets, and
/// the evaluation.
pub struct AttackEval<'a> {
    pub attack: &'a AttackConfig,
    pub harmful: &'a [Conversation],
    pub benign: &'a [Conversation],
    /// Harmful-phase steps to evaluate at; the attack runs to the largest (at least 1 step).
    pub budgets: &'a [usize],
    pub suite: &'a SuiteData,
    pub judge: &'a dyn Judge,
    pub eval: &'a EvalConfig,
    pub progress: bool,
    /// Where the attack keeps its checkpoints and its evaluated budgets (`points.json`) until
    /// the caller has written its result; a rerun resumes from them ([`PartialAttack`]).
    pub partial: Option<&'a Path>,
}

/// One evaluation saved in an attack's `partial` directory ([`PartialAttack`]).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PartialPoint {
    pub budget: usize,
    pub report: EvalReport,
    pub items: Vec<JudgedAnswer>,
}

/// An interrupted attack's saved state, in its `partial` directory: the attack's checkpoints
/// (`benign/`, `harmful/`) and `points.json`, every budget evaluated so far with its judged
/// answers, rewritten atomically after each evaluation. A rerun replays the saved points and
/// evaluates only the budgets after them; the caller removes the directory
/// ([`PartialAttack::clear`]) once it has written its own result.
pub struct PartialAttack;

impl PartialAttack {
    fn points_file(dir: &Path) -> PathBuf {
        dir.join("points.json")
    }

    /// The partial directory of the attack whose result is written to `result`
    /// (`<its directory>/.partial/<its name without .json>`).
    pub fn beside(result: &Path) -> PathBuf {
        let stem = result.file_name().map(|n| n.to_string_lossy().trim_end_matches(".json").to_string());
        result.with_file_name(".partial").join(stem.unwrap_or_default())
    }

    /// The saved points in budget order (none when the directory or file is absent).
    pub fn points(dir: &Path) -> Result<Vec<PartialPoint>> {
        let path = Self::points_file(dir);
        if !path.exists() {
            return Ok(vec![]);
        }
        let mut points: Vec<PartialPoint> = super::load_json(&path)?;
        points.sort_by_key(|p| p.budget);
        Ok(points)
    }

    fn save(dir: &Path, points: &[PartialPoint]) -> Result<()> {
        crate::io::write_json(&Self::points_file(dir), points)
    }

    /// Remove the directory (and its parent when that is left empty, as the runner's
    /// `.partial/` is): its attack's result is written.
    pub fn clear(dir: &Path) -> Result<()> {
        if let Err(e) = std::fs::remove_dir_all(dir)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            return Err(e).at(dir);
        }
        if let Some(parent) = dir.parent() {
            let _ = std::fs::remove_dir(parent); // fails, as it should, while not empty
        }
        Ok(())
    }
}

/// Attack `model` once and evaluate it at every budget. `on_point(budget, evaluated)` is called
/// once per budget, in budget order; `evaluated` is `None` where `evaluate_at(budget)` is false
/// (the caller has that point already, e.g. the unattacked model at budget 0).
///
/// With `ae.partial`, the attack checkpoints at every budget and saves each evaluation there; a
/// call after an interruption resumes the attack from its last checkpoint and hands the saved
/// evaluations to `on_point` instead of evaluating again (the weights at a budget are those a
/// run without the interruption has: resume is exact).
pub fn attack_and_evaluate(
    model: &Llama,
    tok: &ChatTokenizer,
    ae: &AttackEval,
    evaluate_at: &dyn Fn(usize) -> bool,
    on_point: &mut dyn FnMut(usize, Option<Evaluated>) -> Result<()>,
) -> Result<Llama> {
    attack_and_evaluate_until(model, tok, ae, evaluate_at, on_point, None)
}

/// [`attack_and_evaluate`], the harmful phase stopped after `stop_after` steps as a killed run
/// would be (for tests of resume): `on_point` then sees only the budgets reached.
pub fn attack_and_evaluate_until(
    model: &Llama,
    tok: &ChatTokenizer,
    ae: &AttackEval,
    evaluate_at: &dyn Fn(usize) -> bool,
    on_point: &mut dyn FnMut(usize, Option<Evaluated>) -> Result<()>,
    stop_after: Option<usize>,
) -> Result<Llama> {
    let mut acfg = ae.attack.clone();
    acfg.train.steps = ae.budgets.iter().copied().max().unwrap_or(0).max(1);
    let mut saved = match ae.partial {
        Some(dir) => PartialAttack::points(dir)?,
        None => vec![],
    };
    let mut replay: std::collections::VecDeque<PartialPoint> = saved.clone().into();
    if ae.progress && !replay.is_empty() {
        let b: Vec<String> = replay.iter().map(|p| p.budget.to_string()).collect();
        eprintln!(
            "[attack] resuming: evaluations at {} steps saved in {}",
            b.join(", "),
            ae.partial.unwrap().display()
        );
    }
    let mut delivered = vec![];
    let mut deliver = |b: usize, e: Option<Evaluated>, delivered: &mut Vec<usize>| {
        delivered.push(b);
        on_point(b, e)
    };
    let mut on_budget = |b: usize, m: &Llama| -> Result<()> {
        // Saved points below this budget were reached before the checkpoint the attack resumed
        // from; a saved point at this budget is this very evaluation.
        while replay.front().is_some_and(|p| p.budget < b) {
            let p = replay.pop_front().expect("front");
            deliver(p.budget, Some((p.report, p.items)), &mut delivered)?;
        }
        if replay.front().is_some_and(|p| p.budget == b) {
            let p = replay.pop_front().expect("front");
            return deliver(b, Some((p.report, p.items)), &mut delivered);
        }
        let label = format!("eval after {b} attack steps");
        let attacked = ae.eval.for_attacked();
        let cfg = if b == 0 { ae.eval } else { &attacked };
        let run = || evaluate(m, tok, ae.suite, ae.judge, cfg);
        let label = ae.progress.then_some(label.as_str());
        let e = if evaluate_at(b) { Some(crate::train::progress::maybe_labelled(label, run)?) } else { None };
        if let (Some(dir), Some((report, items))) = (ae.partial, &e) {
            saved.push(PartialPoint { budget: b, report: report.clone(), items: items.clone() });
            PartialAttack::save(dir, &saved)?;
        }
        deliver(b, e, &mut delivered)
    };
    let opts = AttackOptions { progress: ae.progress, checkpoints: ae.partial.map(Path::to_path_buf), stop_after };
    let attacked = crate::attack::attack(model, tok, &acfg, ae.harmful, ae.benign, ae.budgets, &mut on_budget, &opts)?;
    // Killed after its last evaluation and checkpoint: nothing was left to run.
    for p in replay {
        deliver(p.budget, Some((p.report, p.items)), &mut delivered)?;
    }
    let reached = |b: usize| stop_after.is_none_or(|s| b <= s);
    if let Some(b) = ae.budgets.iter().find(|&&b| reached(b) && !delivered.contains(&b)) {
        let dir = ae.partial.map(|d| d.display().to_string()).unwrap_or_default();
        return Err(Error::Invalid(format!(
            "the attack resumed past budget {b} but {dir}/points.json has no evaluation at it; remove {dir} to rerun the attack"
        )));
    }
    Ok(attacked)
}

/// Write `out/curve.json`: the attack's name and the report at every budget.
pub fn write_curve(out: &Path, attack: &str, points: &[(usize, EvalReport)]) -> Result<()> {
    std::fs::create_dir_all(out).at(out)?;
    let json = serde_json::json!({
        "attack": attack,
        "points": points.iter().map(|(b, r)| serde_json::json!({"budget": b, "report": r})).collect::<Vec<_>>(),
    });
    crate::io::write_json(&out.join("curve.json"), &json)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A saved evaluation reads back bit for bit, so a resumed attack's figures are the
    /// uninterrupted run's: 1.8376221313751002 is a refusal loss that serde_json's default
    /// float parser read back one unit in the last place off (docs/results.md section 42).
    #[test]
    fn saved_points_read_back_exactly() {
        let dir = std::env::temp_dir().join(format!("patcher-partial-points-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let values = [1.8376221313751002, 0.1 + 0.2, 2.0f64.sqrt(), 1.0 / 3.0, 6.02214076e23, 5e-324];
        let points: Vec<PartialPoint> = values
            .iter()
            .enumerate()
            .map(|(i, &v)| PartialPoint {
                budget: 10 - i,
                report: EvalReport {
                    refusal_loss: Some(v),
                    benign_loss: Some(-v),
                    utility: v / 7.0,
                    ..Default::default()
                },
                items: vec![],
            })
            .collect();
        PartialAttack::save(&dir, &points).unwrap();
        let back = PartialAttack::points(&dir).unwrap();
        assert_eq!(back.iter().map(|p| p.budget).collect::<Vec<_>>(), [5, 6, 7, 8, 9, 10], "in budget order");
        for p in &points {
            let q = back.iter().find(|q| q.budget == p.budget).unwrap();
            let bits = |r: &EvalReport| {
                [r.refusal_loss.unwrap().to_bits(), r.benign_loss.unwrap().to_bits(), r.utility.to_bits()]
            };
            assert_eq!(bits(&q.report), bits(&p.report), "budget {}", p.budget);
        }
        PartialAttack::clear(&dir).unwrap();
        assert!(!dir.exists());
    }

    /// The look-alikes that `patcher_data` picks from the retain examples by index are exactly
    /// the look-alike conversations encoded on their own, in order.
    #[test]
    fn lookalikes_are_picked_from_the_retain_examples() {
        let world = crate::data::synth::generate(&SynthConfig::default());
        let dir = std::env::temp_dir().join(format!("patcher-pipeline-look-{}", std::process::id()));
        let tok = crate::tiny::write_tokenizer(&world, 512, &dir).unwrap();
        let data = patcher_data(&tok, &world.benign_train, &world.refuse_train, &world.harm_train).unwrap();
        let looks: Vec<Conversation> = world.benign_train.iter().filter(|c| c.is_lookalike()).cloned().collect();
        assert_eq!(data.lookalike.len(), 40);
        assert_eq!(data.lookalike, examples_from(&tok, &looks).unwrap());
        assert_eq!(data.retain.len(), world.benign_train.len());
        std::fs::remove_dir_all(&dir).ok();
    }
}
