//! The experiment runner: `patcher run EXPERIMENT.toml` and `patcher demo`.
//!
//! Stages, each writing into the run directory and skipped when its output already exists (a
//! killed run resumes; the stage that was interrupted restarts, resuming from its own
//! checkpoints where it has them):
//! 1. `world/` (tiny tier): the synthetic safety world;
//! 2. `models/base/`: the tiny model trained from scratch, a GGUF import, or a given directory;
//! 3. `models/<defense>/`: SFT alignment from the base; Patcher variants from the SFT model;
//! 4. `evals/<defense>__<attack>.json`: the attack run once per (defense, attack), evaluated
//!    at every budget through the attack's callback (no model written per budget);
//! 5. `report.md` / `report.html` / `results.json`.
//!
//! The resolved config is written to `config.json`; rerunning a directory with a different
//! config is an error, so results never mix.

pub mod config;
pub mod robustness_study;

use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::prelude::*;
use serde::{Deserialize, Serialize};

pub use config::{BaseKind, DefenseKind, ExperimentConfig};

use crate::data::Conversation;
use crate::data::split::Split;
use crate::data::synth::{SynthConfig, SynthWorld};
use crate::defense::patcher::{HardenOptions, KScheduleKind, PatcherData};
use crate::error::{Error, IoContext, Result};
use crate::eval::judge::Judge;
use crate::eval::keyword::KeywordJudge;
use crate::eval::suite::{EvalReport, SuiteData, evaluate};
use crate::io::write_atomic;
use crate::model::Llama;
use crate::report::{Curve, KPoint, Results, Row, Sample, Stage};
use crate::tokenizer::ChatTokenizer;
use crate::train::batches::examples_from;
use crate::train::engine::RunOptions;

/// The training and evaluation data of a tier.
pub struct TierData {
    pub refusals: Vec<Conversation>,
    pub benign: Vec<Conversation>,
    pub defender_harmful: Vec<Conversation>,
    pub attacker_harmful: Vec<Conversation>,
    pub suite: SuiteData,
}

/// Everything one (defense, attack) pair measured.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PairResult {
    pub rows: Vec<Row>,
    pub samples: Vec<Sample>,
    pub seconds: f64,
}

/// A run in progress: its directory, config and device.
pub struct Runner {
    pub dir: PathBuf,
    pub cfg: ExperimentConfig,
    pub device: Device,
    pub progress: bool,
    stages: Vec<Stage>,
}

/// The judge of every harmful score of a run; the report names it from this same value.
const JUDGE: KeywordJudge = KeywordJudge;

fn save_json<T: Serialize>(path: &Path, v: &T) -> Result<()> {
    write_atomic(path, serde_json::to_string_pretty(v).expect("json").as_bytes()).at(path)
}

fn load_json<T: for<'a> Deserialize<'a>>(path: &Path) -> Result<T> {
    let text = std::fs::read_to_string(path).at(path)?;
    serde_json::from_str(&text).map_err(|e| Error::Format { file: path.display().to_string(), why: e.to_string() })
}

fn limit(v: Vec<Conversation>, n: usize) -> Vec<Conversation> {
    if n == 0 { v } else { v.into_iter().take(n).collect() }
}

impl Runner {
    /// A runner for `cfg` in `dir`. Nothing is written yet: the directory and its `config.json`
    /// are created by the first stage that runs, so a run that fails on its inputs (a missing
    /// model, a malformed data file) leaves no directory behind. A directory that already holds
    /// a different config is refused here.
    pub fn new(dir: &Path, cfg: ExperimentConfig, device: Device, progress: bool) -> Result<Self> {
        if cfg.deterministic {
            crate::model::fixed::set_fixed_order(true);
        }
        let resolved = serde_json::to_value(&cfg).expect("json");
        let path = dir.join("config.json");
        if path.exists() {
            let old: serde_json::Value = load_json(&path)?;
            if old != resolved {
                return Err(Error::Invalid(format!(
                    "{} holds a run of a different config; use another --out directory (or delete it)",
                    dir.display()
                )));
            }
        }
        let stages = load_json(&dir.join("stages.json")).unwrap_or_default();
        Ok(Self { dir: dir.to_path_buf(), cfg, device, progress, stages })
    }

    /// Record the resolved config in the run directory (once, before the first stage writes).
    fn record_config(&self) -> Result<()> {
        let path = self.dir.join("config.json");
        if path.exists() {
            return Ok(());
        }
        std::fs::create_dir_all(&self.dir).at(&self.dir)?;
        save_json(&path, &serde_json::to_value(&self.cfg).expect("json"))
    }

    fn log(&self, msg: &str) {
        if self.progress {
            eprintln!("[{}] {msg}", self.cfg.name);
        }
    }

    /// Run `f` as stage `name` unless `done` exists; record its wall-clock.
    fn stage<T>(&mut self, name: &str, done: &Path, f: impl FnOnce(&mut Self) -> Result<T>) -> Result<()> {
        if done.exists() {
            self.log(&format!("{name}: done already, skipped"));
            return Ok(());
        }
        self.record_config()?;
        self.log(&format!("{name} ..."));
        let t0 = Instant::now();
        f(self)?;
        let seconds = t0.elapsed().as_secs_f64();
        self.log(&format!("{name}: {seconds:.1}s"));
        self.stages.retain(|s| s.name != name);
        self.stages.push(Stage { name: name.into(), seconds, detail: String::new() });
        save_json(&self.dir.join("stages.json"), &self.stages)
    }

    fn world_dir(&self) -> PathBuf {
        self.dir.join("world")
    }

    fn model_dir(&self, name: &str) -> PathBuf {
        self.dir.join("models").join(name)
    }

    /// The tier's data (the synthetic world, or the shared data directory's presets).
    pub fn tier_data(&mut self) -> Result<TierData> {
        if self.cfg.base.kind == BaseKind::Tiny {
            let wd = self.world_dir();
            let synth = SynthConfig { seed: self.cfg.seed, ..self.cfg.synth.clone() };
            self.stage("world", &wd.join("world.json"), |_| {
                crate::data::synth::generate(&synth).write_dir(&wd).map_err(Error::from)
            })?;
            let w = SynthWorld::read_dir(&wd)?;
            return Ok(TierData {
                refusals: w.refuse_train.clone(),
                benign: w.benign_train.clone(),
                defender_harmful: w.harm_train.clone(),
                attacker_harmful: w.harm_train.clone(),
                suite: SuiteData::synth(&w),
            });
        }
        let d = &self.cfg.data;
        let load = |specs: &[String]| -> Result<Vec<Conversation>> {
            Ok(limit(crate::data::source::load_all(specs, Split::Train)?, d.limit))
        };
        Ok(TierData {
            refusals: load(&d.refusals)?,
            benign: load(&d.benign)?,
            defender_harmful: load(&d.defender_harmful)?,
            attacker_harmful: load(&d.attacker_harmful)?,
            suite: SuiteData::from_spec(&d.suite)?,
        })
    }

    /// The base model directory, created by the `base` stage when needed.
    pub fn base_model(&mut self) -> Result<PathBuf> {
        match self.cfg.base.kind {
            BaseKind::Hf => Ok(PathBuf::from(&self.cfg.base.path)),
            // A tiny-tier model trained earlier on the same world (e.g. by another run).
            BaseKind::Tiny if !self.cfg.base.path.is_empty() => Ok(PathBuf::from(&self.cfg.base.path)),
            BaseKind::Gguf => {
                let out = self.model_dir("base");
                let src = PathBuf::from(&self.cfg.base.path);
                self.stage("base (import)", &out.join("config.json"), |_| {
                    Ok(crate::io::gguf_import::import_gguf(&src, &out)?)
                })?;
                Ok(out)
            }
            BaseKind::Tiny => {
                let out = self.model_dir("base");
                let mut tc = self.cfg.tiny.clone();
                tc.train.seed = self.cfg.seed;
                let world = SynthWorld::read_dir(&self.world_dir())?;
                let device = self.device.clone();
                let progress = self.progress;
                self.stage("base (tiny pre-train)", &out.join("config.json"), |_| {
                    crate::tiny::build(&world, &tc, &out, &device, progress).map(|_| ())
                })?;
                Ok(out)
            }
        }
    }

    fn load(&self, dir: &Path) -> Result<(Llama, ChatTokenizer)> {
        Ok((crate::io::hf::load_model(dir, &self.device)?, ChatTokenizer::from_dir(dir)?))
    }

    /// Build every defense's model; returns (name, directory).
    pub fn defenses(&mut self, base: &Path, data: &TierData) -> Result<Vec<(String, PathBuf)>> {
        let mut out = vec![];
        let sft_dir = self.model_dir("sft");
        let needs_sft = self.cfg.defenses.iter().any(|d| d.kind != DefenseKind::None);
        if needs_sft {
            let (m, tok) = self.load(base)?;
            let cfg = self.cfg.align.clone();
            let progress = self.progress;
            let (dir, base) = (sft_dir.clone(), base.to_path_buf());
            self.stage("defense sft (alignment)", &sft_dir.join("config.json"), |_| {
                let opts = RunOptions {
                    out_dir: Some(dir.join("train")),
                    progress,
                    name: "align".into(),
                    ..Default::default()
                };
                let aligned = crate::align::align(&m, &tok, &cfg, &data.refusals, &data.benign, opts)?;
                crate::io::hf::save_model(&aligned, &dir, Some(&base))
            })?;
        }
        for d in self.cfg.defenses.clone() {
            let dir = match d.kind {
                DefenseKind::None => base.to_path_buf(),
                DefenseKind::Sft => sft_dir.clone(),
                DefenseKind::Patcher | DefenseKind::PatcherParallel => {
                    let dir = self.model_dir(&d.name);
                    let pc = self.cfg.patcher_for(&d)?;
                    let (m, tok) = self.load(&sft_dir)?;
                    let pdata = PatcherData {
                        retain: examples_from(&tok, &data.benign)?,
                        refusal: examples_from(&tok, &data.refusals)?,
                        harmful: examples_from(&tok, &data.defender_harmful)?,
                        pad_id: tok.pad_id,
                    };
                    let (progress, sft) = (self.progress, sft_dir.clone());
                    let p = d.parallel.unwrap_or(1);
                    let d2 = dir.clone();
                    self.stage(&format!("defense {}", d.name), &dir.join("config.json"), |_| {
                        let opts = HardenOptions { out_dir: Some(d2.join("train")), progress, ..Default::default() };
                        let hardened = if d.kind == DefenseKind::PatcherParallel {
                            crate::defense::parallel::harden(&m, &pc, &pdata, p, opts)?
                        } else {
                            crate::defense::patcher::harden(&m, &pc, &pdata, opts)?
                        };
                        crate::io::hf::save_model(&hardened, &d2, Some(&sft))
                    })?;
                    dir
                }
            };
            out.push((d.name.clone(), dir));
        }
        Ok(out)
    }

    fn row(defense: &str, attack: &str, held_out: bool, budget: usize, r: &EvalReport) -> Row {
        Row {
            defense: defense.into(),
            attack: attack.into(),
            held_out,
            budget,
            harmful_score: r.safety.harmful_score,
            refusal_rate: r.safety.refusal_rate,
            degenerate_rate: r.safety.degenerate_rate,
            utility: if r.utility.is_finite() { r.utility } else { 0.0 },
            over_refusal: r.over_refusal,
            benign_loss: r.benign_loss,
            refusal_loss: r.refusal_loss,
            harmful_loss: r.harmful_loss,
        }
    }

    fn samples(&self, defense: &str, attack: &str, budget: usize, items: &[crate::eval::JudgedAnswer]) -> Vec<Sample> {
        items
            .iter()
            .take(self.cfg.samples)
            .map(|i| Sample {
                defense: defense.into(),
                attack: attack.into(),
                budget,
                prompt: crate::report::excerpt(&i.prompt),
                answer: crate::report::excerpt(&i.answer),
                verdict: format!("{:?}", i.judgement.verdict).to_lowercase(),
            })
            .collect()
    }

    /// Evaluate every defense unattacked and under every attack at every budget.
    pub fn evaluations(&mut self, defenses: &[(String, PathBuf)], data: &TierData) -> Result<Vec<PairResult>> {
        let mut all = vec![];
        std::fs::create_dir_all(self.dir.join("evals")).at(self.dir.join("evals"))?;
        for (name, dir) in defenses {
            let attacked = self.cfg.defenses.iter().find(|d| &d.name == name).is_none_or(|d| d.attacked);
            let path = self.dir.join("evals").join(format!("{name}__none.json"));
            let (m, tok) = self.load(dir)?;
            let ecfg = self.cfg.eval.clone();
            self.stage(&format!("eval {name}"), &path, |r| {
                let t0 = Instant::now();
                let (rep, items) = evaluate(&m, &tok, &data.suite, &JUDGE, &ecfg)?;
                let pr = PairResult {
                    rows: vec![Self::row(name, "none", false, 0, &rep)],
                    samples: r.samples(name, "none", 0, &items),
                    seconds: t0.elapsed().as_secs_f64(),
                };
                save_json(&path, &pr)
            })?;
            let unattacked: PairResult = load_json(&path)?;
            let zero = unattacked.rows[0].clone();
            all.push(unattacked);
            if !attacked {
                continue;
            }
            for a in self.cfg.attacks.clone() {
                let path = self.dir.join("evals").join(format!("{name}__{}.json", a.name));
                let mut acfg = self.cfg.attack_for(&a)?;
                acfg.train.seed ^= self.cfg.seed;
                let budgets = a.budgets.clone().unwrap_or_else(|| self.cfg.budgets.clone());
                let top = budgets.iter().copied().max().unwrap_or(0);
                acfg.train.steps = top.max(1);
                let (progress, ecfg) = (self.progress, self.cfg.eval.clone());
                self.stage(&format!("attack {} on {name}", a.name), &path, |r| {
                    let t0 = Instant::now();
                    let mut rows = vec![];
                    let mut samples = vec![];
                    let mut on_budget = |b: usize, model: &Llama| -> Result<()> {
                        if b == 0 && b != top {
                            // Budget 0 is the unattacked model, evaluated above with the same suite and seed.
                            rows.push(Row { attack: a.name.clone(), held_out: a.held_out, ..zero.clone() });
                            return Ok(());
                        }
                        let (rep, items) = evaluate(model, &tok, &data.suite, &JUDGE, &ecfg)?;
                        rows.push(Self::row(name, &a.name, a.held_out, b, &rep));
                        if b == top {
                            samples = r.samples(name, &a.name, b, &items);
                        }
                        Ok(())
                    };
                    crate::attack::attack(
                        &m,
                        &tok,
                        &acfg,
                        &data.attacker_harmful,
                        &data.benign,
                        &budgets,
                        &mut on_budget,
                        progress,
                    )?;
                    save_json(&path, &PairResult { rows, samples, seconds: t0.elapsed().as_secs_f64() })
                })?;
                all.push(load_json(&path)?);
            }
        }
        Ok(all)
    }

    /// Training curves of the Patcher defenses, from their `metrics.jsonl`.
    fn curves(&self) -> Vec<Curve> {
        let mut out = vec![];
        for d in &self.cfg.defenses {
            if !d.kind.is_patcher() {
                continue;
            }
            let path = self.model_dir(&d.name).join("train/metrics.jsonl");
            let Ok(text) = std::fs::read_to_string(&path) else { continue };
            let rows: Vec<serde_json::Value> = text.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
            for (key, metric) in [
                ("tr_loss", "refusal loss at attacked weights"),
                ("harmful_loss_end", "attacker loss at the end of the simulated attack"),
                ("retain_loss", "retain + α·refusal loss"),
            ] {
                let points = rows
                    .iter()
                    .filter_map(|r| Some((r["step"].as_f64()?, r[key].as_f64().unwrap_or(f64::NAN))))
                    .collect();
                out.push(Curve { name: d.name.clone(), metric: metric.into(), points });
            }
        }
        out
    }

    /// K-scaling points: every sequential Patcher defense with a constant K, at the largest
    /// budget of each attack.
    fn k_points(&self, rows: &[Row]) -> Vec<KPoint> {
        let mut out = vec![];
        for d in &self.cfg.defenses {
            if d.kind != DefenseKind::Patcher {
                continue;
            }
            let Ok(pc) = self.cfg.patcher_for(d) else { continue };
            if pc.k.kind != KScheduleKind::Constant {
                continue;
            }
            for a in &self.cfg.attacks {
                let mut pts: Vec<(usize, f64)> = rows
                    .iter()
                    .filter(|r| r.defense == d.name && r.attack == a.name)
                    .map(|r| (r.budget, r.harmful_score))
                    .collect();
                pts.sort_by_key(|p| p.0);
                if let Some(&(budget, hs)) = pts.last() {
                    out.push(KPoint {
                        k: pc.k.start,
                        defense: d.name.clone(),
                        attack: a.name.clone(),
                        budget,
                        harmful_score: hs,
                        steps_to_break: crate::report::steps_to_break(&pts),
                    });
                }
            }
        }
        if out.iter().map(|p| p.k).collect::<std::collections::HashSet<_>>().len() < 2 { vec![] } else { out }
    }

    /// Run every stage and write the report. Returns the results.
    pub fn run(&mut self, commands: Vec<String>) -> Result<Results> {
        self.cfg.check_inputs("experiment config")?;
        let data = self.tier_data()?;
        let base = self.base_model()?;
        let defenses = self.defenses(&base, &data)?;
        let pairs = self.evaluations(&defenses, &data)?;
        let rows: Vec<Row> = pairs.iter().flat_map(|p| p.rows.clone()).collect();
        let samples = pairs.iter().flat_map(|p| p.samples.clone()).collect();
        let utility_metric = if self.cfg.base.kind == BaseKind::Tiny {
            "exact-match accuracy"
        } else {
            "mean MC accuracy (ARC-Easy, MMLU subset)"
        };
        let mut results = Results {
            experiment: self.cfg.name.clone(),
            created: now_iso(),
            commit: git_commit(),
            version: env!("CARGO_PKG_VERSION").into(),
            commands,
            judge: JUDGE.name(),
            utility_metric: utility_metric.into(),
            stages: self.stages.clone(),
            k_scaling: self.k_points(&rows),
            training_curves: self.curves(),
            rows,
            samples,
            notes: vec![],
        };
        results.notes = notes(&results);
        crate::report::write_report(&self.dir, &results).at(&self.dir)?;
        Ok(results)
    }
}

/// Plain statements about the outcome, computed from the rows, whichever way they point: for
/// every Patcher defense and attack, its mean HS over the attacked budgets and steps-to-break
/// against SFT alignment's, and how many rows the capability guard set aside.
pub fn notes(r: &Results) -> Vec<String> {
    let mut out = vec![];
    let curves = crate::report::robustness_curves(&r.rows);
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
            stb(crate::report::steps_to_break(&c.points)),
            stb(crate::report::steps_to_break(&sft.points)),
        ));
    }
    for w in crate::report::worst_case(&r.rows) {
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

fn now_iso() -> String {
    let out = std::process::Command::new("date").arg("-u").arg("+%Y-%m-%dT%H:%M:%SZ").output();
    out.ok().map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string()).unwrap_or_else(|| "unknown".into())
}

fn git_commit() -> String {
    let out = std::process::Command::new("git").args(["rev-parse", "--short", "HEAD"]).output();
    match out {
        Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout).trim().to_string(),
        _ => "unknown".into(),
    }
}

/// A plain-text summary table for the terminal: per defense, unattacked HS / utility /
/// over-refusal, and for each attack the HS at its largest budget.
pub fn summary_table(r: &Results) -> String {
    let attacks = crate::report::attacks(&r.rows);
    let mut s = format!("{:<16} {:>8} {:>9} {:>9}", "defense", "HS", "utility", "over-ref");
    for (a, held) in &attacks {
        s.push_str(&format!(" {:>20}", format!("{a}{}", if *held { "*" } else { "" })));
    }
    s.push('\n');
    for d in crate::report::defenses(&r.rows) {
        let u = crate::report::unattacked(&r.rows, &d);
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
