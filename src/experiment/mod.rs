//! The experiment runner: `patcher run EXPERIMENT.toml` and `patcher demo`.
//!
//! Stages, each writing into the run directory and skipped when its output already exists (a
//! killed run resumes; the stage that was interrupted restarts, resuming from its own
//! checkpoints where it has them):
//! 1. `world/` (tiny tier): the synthetic safety world;
//! 2. `models/base/`: the tiny model trained from scratch, a GGUF import, or a given directory;
//! 3. `models/<defense>/`: SFT alignment from the base; Patcher variants from the SFT model;
//! 4. `evals/<defense>__<attack>.json`: the attack run once per (defense, attack), evaluated
//!    at every budget through the attack's callback (no model written per budget); with
//!    `attack_seeds` (or an attack's own `seeds`), once per seed (`__s<seed>.json`, seed 0
//!    keeping the plain name), and the report averages the seeds with intervals
//!    ([`crate::report::aggregate`]);
//! 5. `report.md` / `report.html` / `results.json`.
//!
//! A stage that is done already is skipped before any model is loaded. The resolved config is
//! written to `config.json`; rerunning a directory with a different config is an error, so
//! results never mix. The workflows themselves (hardening, attack-and-evaluate, the synthetic
//! world) live in [`pipeline`], shared with the CLI and the benchmarks.

pub mod config;
pub mod export;
pub mod overrides;
pub mod pipeline;
pub mod robustness_study;
pub mod segments;
pub mod sweep;
pub mod sweep_seeds;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use burn::prelude::*;
use serde::{Deserialize, Serialize};

pub use config::{BaseKind, Defense, DefenseKind, ExperimentConfig};

use crate::data::Conversation;
use crate::data::split::Split;
use crate::data::synth::{SynthConfig, SynthWorld};
use crate::defense::patcher::{HardenOptions, KScheduleKind};
use crate::error::{Error, IoContext, Result};
use crate::eval::suite::{EvalReport, SuiteData, evaluate};
use crate::io::write_json;
use crate::model::Llama;
use crate::report::{Curve, KPoint, Provenance, Results, Row, Sample, Stage};
use crate::tokenizer::ChatTokenizer;
use crate::train::engine::RunOptions;
use pipeline::AttackEval;

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

/// The stage (in `stages.json`) that makes every SFT-kind defense's model: one alignment.
pub const SFT_STAGE: &str = "defense sft (alignment)";

/// The stage that trains the model of defense `name`: `None` for the undefended model,
/// [`SFT_STAGE`] for SFT, `defense <name>` for the rest (trained from the SFT model).
pub fn defense_stage(name: &str, defense: &Defense) -> Option<String> {
    match defense {
        Defense::None => None,
        Defense::Sft => Some(SFT_STAGE.into()),
        _ => Some(format!("defense {name}")),
    }
}

/// The defender's and the attacker's harmful data with no prompt in common (`[data]
/// disjoint_harmful`): one shared set (same prompts, same order) is split, even-indexed
/// conversations to the defender and odd-indexed ones to the attacker; distinct sets keep the
/// attacker's whole and drop from the defender's every prompt the attacker's has.
pub fn disjoint_harmful(
    defender: &[Conversation],
    attacker: &[Conversation],
) -> (Vec<Conversation>, Vec<Conversation>) {
    let same = defender.len() == attacker.len() && defender.iter().zip(attacker).all(|(a, b)| a.prompt() == b.prompt());
    if same {
        let half = |parity: usize| defender.iter().skip(parity).step_by(2).cloned().collect::<Vec<_>>();
        return (half(0), half(1));
    }
    let theirs: std::collections::HashSet<&str> = attacker.iter().map(|c| c.prompt()).collect();
    (defender.iter().filter(|c| !theirs.contains(c.prompt())).cloned().collect(), attacker.to_vec())
}

/// A run in progress: its directory, config and device.
pub struct Runner {
    pub dir: PathBuf,
    pub cfg: ExperimentConfig,
    pub device: Device,
    pub progress: bool,
    stages: Vec<Stage>,
    /// How often a running stage records its wall-clock so far ([`STAGE_CLOCK`]), and the
    /// segment log its heartbeat.
    stage_clock_every: Duration,
    /// This invocation's entry in `segments.json`, inside [`Runner::run`] and [`Runner::sweep`].
    segment: Option<segments::SegmentLog>,
}

/// The running stage's wall-clock so far, over all its segments: a stage finished across
/// several runs of the same directory (killed, resumed from its checkpoints) records the sum in
/// `stages.json`, with its number of segments as the stage's detail.
const STAGE_CLOCK: &str = "stages-running.json";

#[derive(Debug, Serialize, Deserialize)]
struct RunningStage {
    name: String,
    seconds: f64,
    segments: usize,
}

fn load_json<T: for<'a> Deserialize<'a>>(path: &Path) -> Result<T> {
    let text = std::fs::read_to_string(path).at(path)?;
    serde_json::from_str(&text).map_err(|e| Error::Format { file: path.display().to_string(), why: e.to_string() })
}

fn limit(v: Vec<Conversation>, n: usize) -> Vec<Conversation> {
    if n == 0 { v } else { v.into_iter().take(n).collect() }
}

/// A saved config (`config.json`, a study's `protocol.json`) in the form written before the
/// tiny recipe's additions became Patcher's defaults (docs/results.md section 39), for
/// comparing saved against resolved configs: that form omitted `lookalike_weight` when it was
/// 0, `attack.benign_first` when it was off and its `prepend` when it was false, so those
/// entries are dropped (at any depth: a defense's `patcher` overrides too) on both sides. A
/// config that turns them on keeps them.
pub fn legacy_identity(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::Object(o) => {
            if o.get("lookalike_weight").and_then(|w| w.as_f64()) == Some(0.0) {
                o.remove("lookalike_weight");
            }
            let off = |b: &serde_json::Value| b.get("share").and_then(|s| s.as_f64()) == Some(0.0);
            if o.get("benign_first").is_some_and(off) {
                o.remove("benign_first");
            }
            if let Some(b) = o.get_mut("benign_first").and_then(|b| b.as_object_mut())
                && b.get("prepend").and_then(|p| p.as_bool()) == Some(false)
            {
                b.remove("prepend");
            }
            o.values_mut().for_each(legacy_identity);
        }
        serde_json::Value::Array(a) => a.iter_mut().for_each(legacy_identity),
        _ => {}
    }
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
            // The sweep grid and the attack seeds (`attack_seeds`, each attack's `seeds`) are
            // not part of a run's identity: each sweep cell and each seed's attack is cached
            // under its own name, so both can grow on the same models (`config.json` is
            // rewritten with them). Nor is the report's guard,
            // which only reads the rows. Defenses are cached under their names too, so a run can
            // gain (or drop) a defense; one that keeps its name must keep its settings.
            let core = |v: &serde_json::Value| {
                let mut v = v.clone();
                legacy_identity(&mut v);
                let mut defenses = std::collections::BTreeMap::new();
                if let Some(o) = v.as_object_mut() {
                    o.remove("sweep");
                    o.remove("attack_seeds");
                    o.remove("guard");
                    if let Some(serde_json::Value::Array(attacks)) = o.get_mut("attacks") {
                        attacks.iter_mut().filter_map(|a| a.as_object_mut()).for_each(|a| {
                            a.remove("seeds");
                        });
                    }
                    if let Some(serde_json::Value::Array(ds)) = o.remove("defenses") {
                        for d in ds {
                            defenses.insert(d["name"].as_str().unwrap_or_default().to_string(), d);
                        }
                    }
                }
                (v, defenses)
            };
            let ((old_core, old_defenses), (new_core, new_defenses)) = (core(&old), core(&resolved));
            let changed = new_defenses.iter().find(|(name, d)| old_defenses.get(*name).is_some_and(|o| o != *d));
            if old_core != new_core || changed.is_some() {
                let what = changed.map(|(name, _)| format!(" (defense `{name}` changed)")).unwrap_or_default();
                return Err(Error::Invalid(format!(
                    "{} holds a run of a different config{what}; use another --out directory (or delete it)",
                    dir.display()
                )));
            }
        }
        let stages = load_json(&dir.join("stages.json")).unwrap_or_default();
        Ok(Self {
            dir: dir.to_path_buf(),
            cfg,
            device,
            progress,
            stages,
            stage_clock_every: Duration::from_secs(30),
            segment: None,
        })
    }

    /// Record the resolved config in the run directory (before the first stage writes; again
    /// when the parts outside its identity, the sweep grid, the attack seeds or the guard, changed).
    fn record_config(&self) -> Result<()> {
        let path = self.dir.join("config.json");
        let resolved = serde_json::to_value(&self.cfg).expect("json");
        if path.exists() && load_json::<serde_json::Value>(&path).is_ok_and(|old| old == resolved) {
            return Ok(());
        }
        std::fs::create_dir_all(&self.dir).at(&self.dir)?;
        write_json(&path, &resolved)
    }

    /// The seeds to run attack `a` with: its `seeds`, else `attack_seeds`, else the one run of
    /// seed 0.
    fn attack_seeds(&self, a: &crate::experiment::config::AttackSpec) -> Vec<u64> {
        match a.seeds(&self.cfg.attack_seeds) {
            [] => vec![0],
            s => s.to_vec(),
        }
    }

    fn log(&self, msg: &str) {
        if self.progress {
            eprintln!("[{}] {msg}", self.cfg.name);
        }
    }

    /// Run `f` as stage `name` unless `done` exists; record its wall-clock.
    fn stage<T>(&mut self, name: &str, done: &Path, f: impl FnOnce(&mut Self) -> Result<T>) -> Result<()> {
        self.stage_with(name, done, |_| Ok(()), |r, ()| f(r))
    }

    /// Run stage `name` unless `done` exists: `load` its inputs (a model), then `f` on them.
    /// A done stage loads nothing; a stage whose inputs fail to load writes nothing.
    fn stage_with<I, T>(
        &mut self,
        name: &str,
        done: &Path,
        load: impl FnOnce(&Self) -> Result<I>,
        f: impl FnOnce(&mut Self, I) -> Result<T>,
    ) -> Result<()> {
        if done.exists() {
            self.log(&format!("{name}: done already, skipped"));
            return Ok(());
        }
        let inputs = load(self)?;
        self.record_config()?;
        self.begin_segment()?;
        self.log(&format!("{name} ..."));
        // The wall-clock of earlier segments of this stage (a killed run, resumed).
        let clock = self.dir.join(STAGE_CLOCK);
        let (before, segments) = match load_json::<RunningStage>(&clock) {
            Ok(r) if r.name == name => (r.seconds, r.segments + 1),
            _ => (0.0, 1),
        };
        if segments > 1 {
            self.log(&format!("{name}: resumed after {before:.0}s in {} earlier segment(s)", segments - 1));
        }
        let t0 = Instant::now();
        let record = |seconds: f64| write_json(&clock, &RunningStage { name: name.into(), seconds, segments });
        let every = self.stage_clock_every;
        let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
        let result = std::thread::scope(|scope| {
            // Record the time so far every `every`, so that a kill loses at most that much of
            // it; the stage's end (the sender dropped) wakes the thread at once.
            scope.spawn(move || {
                while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = done_rx.recv_timeout(every) {
                    let _ = record(before + t0.elapsed().as_secs_f64());
                }
            });
            let r = f(self, inputs);
            drop(done_tx);
            r
        });
        let seconds = before + t0.elapsed().as_secs_f64();
        if let Err(e) = result {
            record(seconds)?;
            return Err(e);
        }
        self.log(&format!("{name}: {seconds:.1}s"));
        self.stages.retain(|s| s.name != name);
        let detail = if segments > 1 { format!("{segments} segments") } else { String::new() };
        self.stages.push(Stage { name: name.into(), seconds, detail });
        write_json(&self.dir.join("stages.json"), &self.stages)?;
        match std::fs::remove_file(&clock) {
            // A stage shorter than `every` never wrote one.
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e).at(&clock),
            _ => Ok(()),
        }
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
            self.stage("world", &wd.join("world.json"), |_| pipeline::synth_world(&wd, &synth).map(|_| ()))?;
            let w = SynthWorld::read_dir(&wd)?;
            let (defender_harmful, attacker_harmful) = if self.cfg.data.disjoint_harmful {
                disjoint_harmful(&w.harm_train, &w.harm_train)
            } else {
                (w.harm_train.clone(), w.harm_train.clone())
            };
            return Ok(TierData {
                refusals: w.refuse_train.clone(),
                benign: w.benign_train.clone(),
                defender_harmful,
                attacker_harmful,
                suite: SuiteData::synth(&w),
            });
        }
        let d = &self.cfg.data;
        let load = |specs: &[String]| -> Result<Vec<Conversation>> {
            Ok(limit(crate::data::source::load_all(specs, Split::Train)?, d.limit))
        };
        let (mut defender_harmful, mut attacker_harmful) = (load(&d.defender_harmful)?, load(&d.attacker_harmful)?);
        if d.disjoint_harmful {
            (defender_harmful, attacker_harmful) = disjoint_harmful(&defender_harmful, &attacker_harmful);
        }
        Ok(TierData {
            refusals: load(&d.refusals)?,
            benign: load(&d.benign)?,
            defender_harmful,
            attacker_harmful,
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
                    Ok(crate::io::gguf::import::import_gguf(&src, &out)?)
                })?;
                Ok(out)
            }
            BaseKind::Tiny => {
                let out = self.model_dir("base");
                let mut tc = self.cfg.tiny.clone();
                tc.train.seed = self.cfg.seed;
                let wd = self.world_dir();
                let device = self.device.clone();
                let progress = self.progress;
                self.stage("base (tiny pre-train)", &out.join("config.json"), |_| {
                    crate::tiny::build(&SynthWorld::read_dir(&wd)?, &tc, &out, &device, progress).map(|_| ())
                })?;
                Ok(out)
            }
        }
    }

    fn load(&self, dir: &Path) -> Result<(Llama, ChatTokenizer)> {
        Ok((crate::io::hf::load_model(dir, &self.device)?, ChatTokenizer::from_dir(dir)?))
    }

    /// The model in `dir`, read into `cache` by the first stage that needs it (a clone shares
    /// the weights).
    fn load_cached(&self, cache: &mut Option<(Llama, ChatTokenizer)>, dir: &Path) -> Result<(Llama, ChatTokenizer)> {
        if cache.is_none() {
            *cache = Some(self.load(dir)?);
        }
        Ok(cache.clone().expect("loaded above"))
    }

    /// Build the model of every defense that `wanted` names (stages named by [`defense_stage`]);
    /// returns (name, directory) for those, in the config's order.
    pub fn defenses(
        &mut self,
        base: &Path,
        data: &TierData,
        wanted: &dyn Fn(&str) -> bool,
    ) -> Result<Vec<(String, PathBuf)>> {
        let mut out = vec![];
        let sft_dir = self.model_dir("sft");
        let chosen: Vec<config::DefenseSpec> = self.cfg.defenses.iter().filter(|d| wanted(&d.name)).cloned().collect();
        let needs_sft = chosen.iter().any(|d| d.kind != DefenseKind::None);
        if needs_sft {
            let cfg = self.cfg.align.clone();
            let progress = self.progress;
            let (dir, base) = (sft_dir.clone(), base.to_path_buf());
            let load = |r: &Self| r.load(&base);
            self.stage_with(SFT_STAGE, &sft_dir.join("config.json"), load, |_, (m, tok)| {
                let opts = RunOptions {
                    out_dir: Some(dir.join("train")),
                    progress,
                    name: "align".into(),
                    ..Default::default()
                };
                let aligned = crate::align::align(&m, &tok, &cfg, &data.refusals, &data.benign, opts)?;
                crate::align::finish_dir(&dir.join("train"), &base)?;
                crate::io::hf::save_model(&aligned, &dir, Some(&base))
            })?;
        }
        for d in chosen {
            let dir = match self.cfg.defense(&d)? {
                Defense::None => base.to_path_buf(),
                Defense::Sft => sft_dir.clone(),
                hardened => {
                    // Every other defense trains from the SFT model.
                    let dir = self.model_dir(&d.name);
                    let (progress, sft) = (self.progress, sft_dir.clone());
                    let d2 = dir.clone();
                    let load = |r: &Self| r.load(&sft);
                    let stage = defense_stage(&d.name, &hardened).expect("a trained defense");
                    self.stage_with(&stage, &dir.join("config.json"), load, |_, (m, tok)| {
                        let pdata = pipeline::patcher_data(&tok, &data.benign, &data.refusals, &data.defender_harmful)?;
                        let opts = HardenOptions { out_dir: Some(d2.join("train")), progress, ..Default::default() };
                        let out = pipeline::harden_defense(&m, &hardened, &pdata, opts)?;
                        crate::io::hf::save_model(&out, &d2, Some(&sft))
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
            also_hs: r.also_safety.iter().map(|s| (s.judge.clone(), s.harmful_score)).collect(),
            refusal_rate: r.safety.refusal_rate,
            degenerate_rate: r.safety.degenerate_rate,
            utility: r.table_utility(),
            over_refusal: r.over_refusal,
            benign_loss: r.benign_loss,
            refusal_loss: r.refusal_loss,
            harmful_loss: r.harmful_loss,
            outcomes: r.outcomes.clone(),
            ..Default::default()
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

    /// The defense `name` (model in `dir`, read into `model` when needed) evaluated unattacked:
    /// `evals/<name>__none.json`, written by the `eval <name>` stage unless it exists. Shared by
    /// the attack grid ([`Self::evaluations`]) and the sweep.
    fn unattacked(
        &mut self,
        name: &str,
        dir: &Path,
        data: &TierData,
        judge: &dyn crate::eval::judge::Judge,
        model: &mut Option<(Llama, ChatTokenizer)>,
    ) -> Result<PairResult> {
        std::fs::create_dir_all(self.dir.join("evals")).at(self.dir.join("evals"))?;
        let path = self.dir.join("evals").join(format!("{name}__none.json"));
        let ecfg = self.cfg.eval.clone();
        let load = |r: &Self| r.load_cached(model, dir);
        self.stage_with(&format!("eval {name}"), &path, load, |r, (m, tok)| {
            let t0 = Instant::now();
            let label = format!("eval {name}");
            let (rep, items) = crate::train::progress::maybe_labelled(r.progress.then_some(label.as_str()), || {
                evaluate(&m, &tok, &data.suite, judge, &ecfg)
            })?;
            let pr = PairResult {
                rows: vec![Self::row(name, "none", false, 0, &rep)],
                samples: r.samples(name, "none", 0, &items),
                seconds: t0.elapsed().as_secs_f64(),
            };
            write_json(&path, &pr)
        })?;
        load_json(&path)
    }

    /// Evaluate every defense unattacked and under every attack at every budget.
    pub fn evaluations(&mut self, defenses: &[(String, PathBuf)], data: &TierData) -> Result<Vec<PairResult>> {
        let mut all = vec![];
        std::fs::create_dir_all(self.dir.join("evals")).at(self.dir.join("evals"))?;
        // The judge of every harmful score of the run; the report names it from the same value.
        let judge = self.cfg.eval.judge.build()?;
        for (name, dir) in defenses {
            let attacked = self.cfg.defenses.iter().find(|d| &d.name == name).is_none_or(|d| d.attacked);
            let mut model = None;
            let unattacked = self.unattacked(name, dir, data, judge.as_ref(), &mut model)?;
            let zero = unattacked.rows[0].clone();
            all.push(unattacked);
            if !attacked {
                continue;
            }
            for a in self.cfg.attacks.clone() {
                for seed in self.attack_seeds(&a) {
                    all.push(self.attacked(name, dir, &a, seed, data, judge.as_ref(), &zero, &mut model)?);
                }
            }
        }
        Ok(all)
    }

    /// The defense `name` (model in `dir`) under attack `a` with attack seed `seed`, evaluated at
    /// every budget: `evals/<name>__<attack>.json` (seed 0) or `..__s<seed>.json`, written by the
    /// `attack <a> on <name>` stage unless it exists. `zero` is the unattacked row (budget 0).
    #[allow(clippy::too_many_arguments)]
    fn attacked(
        &mut self,
        name: &str,
        dir: &Path,
        a: &crate::experiment::config::AttackSpec,
        seed: u64,
        data: &TierData,
        judge: &dyn crate::eval::judge::Judge,
        zero: &Row,
        model: &mut Option<(Llama, ChatTokenizer)>,
    ) -> Result<PairResult> {
        let (file, stage) = match seed {
            0 => (format!("{name}__{}.json", a.name), format!("attack {} on {name}", a.name)),
            s => (format!("{name}__{}__s{s}.json", a.name), format!("attack {} on {name} (seed {s})", a.name)),
        };
        let path = self.dir.join("evals").join(file);
        // The attack's checkpoints and evaluations so far, until the stage's file is written.
        let partial = pipeline::PartialAttack::beside(&path);
        if path.exists() {
            // Killed between writing the stage's file and removing its partial directory.
            pipeline::PartialAttack::clear(&partial)?;
        }
        let mut acfg = self.cfg.attack_for(a)?;
        // Seed 0 is the run a config without `attack_seeds` makes.
        acfg.train.seed ^= self.cfg.seed ^ seed.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let budgets = a.budgets.clone().unwrap_or_else(|| self.cfg.budgets.clone());
        let top = budgets.iter().copied().max().unwrap_or(0);
        let (progress, ecfg) = (self.progress, self.cfg.eval.clone());
        let load = |r: &Self| r.load_cached(model, dir);
        self.stage_with(&stage, &path, load, |r, (m, tok)| {
            let t0 = Instant::now();
            let mut rows = vec![];
            let mut samples = vec![];
            let ae = AttackEval {
                attack: &acfg,
                harmful: &data.attacker_harmful,
                benign: &data.benign,
                budgets: &budgets,
                suite: &data.suite,
                judge,
                eval: &ecfg,
                progress,
                partial: Some(&partial),
            };
            // Budget 0 is the unattacked model, evaluated above with the same suite and seed.
            let evaluate_at = |b: usize| b != 0 || b == top;
            let mut on_point = |b: usize, e: Option<pipeline::Evaluated>| -> Result<()> {
                let Some((rep, items)) = e else {
                    rows.push(Row { attack: a.name.clone(), held_out: a.held_out, ..zero.clone() });
                    return Ok(());
                };
                rows.push(Self::row(name, &a.name, a.held_out, b, &rep));
                if b == top {
                    samples = r.samples(name, &a.name, b, &items);
                }
                Ok(())
            };
            pipeline::attack_and_evaluate(&m, &tok, &ae, &evaluate_at, &mut on_point)?;
            write_json(&path, &PairResult { rows, samples, seconds: t0.elapsed().as_secs_f64() })?;
            pipeline::PartialAttack::clear(&partial)
        })?;
        let mut pair: PairResult = load_json(&path)?;
        let seeds = a.seeds(&self.cfg.attack_seeds);
        if !seeds.is_empty() {
            for row in &mut pair.rows {
                row.seeds = vec![seed];
            }
            // One set of sample answers per pair, the first seed's; and one budget-0 row: it is
            // the unattacked model's evaluation whatever the seed, and copies of it would count
            // as independent seeds and narrow its interval.
            if Some(&seed) != seeds.first() {
                pair.samples.clear();
                pair.rows.retain(|r| r.budget != 0);
            }
        }
        Ok(pair)
    }

    /// Training curves of the trained defenses, from their `metrics.jsonl`: Patcher's three
    /// losses, and every `*loss*` field a baseline's steps report.
    fn curves(&self) -> Vec<Curve> {
        let mut out = vec![];
        for d in &self.cfg.defenses {
            if matches!(d.kind, DefenseKind::None | DefenseKind::Sft) {
                continue;
            }
            let path = self.model_dir(&d.name).join("train/metrics.jsonl");
            let Ok(text) = std::fs::read_to_string(&path) else { continue };
            let rows: Vec<serde_json::Value> = text.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
            let keys: Vec<(String, String)> = if d.kind.is_patcher() {
                [
                    ("tr_loss", "refusal loss at attacked weights"),
                    ("harmful_loss_end", "attacker loss at the end of the simulated attack"),
                    ("retain_loss", "retain + α·refusal loss"),
                ]
                .iter()
                .map(|(k, m)| (k.to_string(), m.to_string()))
                .collect()
            } else {
                let first = rows.first().and_then(|r| r.as_object()).cloned().unwrap_or_default();
                first.keys().filter(|k| k.contains("loss")).map(|k| (k.clone(), k.replace('_', " "))).collect()
            };
            for (key, metric) in keys {
                let points = rows
                    .iter()
                    .filter_map(|r| Some((r["step"].as_f64()?, r[&key].as_f64().unwrap_or(f64::NAN))))
                    .collect();
                out.push(Curve { name: d.name.clone(), metric, points });
            }
        }
        out
    }

    /// K-scaling points: every sequential Patcher defense with a constant K, at the largest
    /// budget of each attack.
    fn k_points(&self, rows: &[Row]) -> Vec<KPoint> {
        let mut out = vec![];
        for d in &self.cfg.defenses {
            let Ok(Defense::Patcher(pc)) = self.cfg.defense(d) else { continue };
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

    /// Start this invocation's entry in `segments.json` (once; only inside `run` and `sweep`).
    fn begin_segment(&mut self) -> Result<()> {
        match &mut self.segment {
            Some(log) => log.begin(),
            None => Ok(()),
        }
    }

    /// Run `f` as one segment of work in the directory ([`segments`]): its entry is written
    /// when its first stage or cell starts and ended with `f`'s outcome.
    fn in_segment<T>(
        &mut self,
        provenance: Provenance,
        f: impl FnOnce(&mut Self, Provenance) -> Result<T>,
    ) -> Result<T> {
        self.segment = Some(segments::SegmentLog::new(&self.dir, provenance.clone(), self.stage_clock_every));
        let result = f(self, provenance);
        let mut log = self.segment.take().expect("set above");
        let outcome = match &result {
            Ok(_) => "done".to_string(),
            Err(e) => format!("failed: {e}"),
        };
        log.end(&outcome)?;
        result
    }

    /// Run every stage and write the report, recording `provenance` (commands, time, commit)
    /// in it and this invocation in `segments.json`. Returns the results.
    pub fn run(&mut self, provenance: Provenance) -> Result<Results> {
        self.in_segment(provenance, Self::run_stages)
    }

    fn run_stages(&mut self, provenance: Provenance) -> Result<Results> {
        self.cfg.check_inputs("experiment config")?;
        let data = self.tier_data()?;
        let base = self.base_model()?;
        let defenses = self.defenses(&base, &data, &|_| true)?;
        let pairs = self.evaluations(&defenses, &data)?;
        self.record_config()?;
        let rows = crate::report::aggregate::average_seeds(pairs.iter().flat_map(|p| p.rows.clone()).collect());
        let samples = pairs.iter().flat_map(|p| p.samples.clone()).collect();
        let mut results = Results {
            experiment: self.cfg.name.clone(),
            created: provenance.created,
            commit: provenance.commit,
            version: env!("CARGO_PKG_VERSION").into(),
            commands: provenance.commands,
            judge: self.cfg.eval.judge.build()?.name(),
            utility_metric: data.suite.utility_metric(self.cfg.eval.headline_mc()),
            stages: self.stages.clone(),
            k_scaling: self.k_points(&rows),
            training_curves: self.curves(),
            rows,
            samples,
            notes: vec![],
            passes_per_step: self
                .cfg
                .defenses
                .iter()
                .filter(|d| d.kind != DefenseKind::None)
                .map(|d| Ok((d.name.clone(), self.cfg.defense(d)?.passes_per_step())))
                .collect::<Result<_>>()?,
            guard: self.cfg.guard.unwrap_or_default(),
        };
        results.notes = crate::report::notes(&results);
        crate::report::write_report(&self.dir, &results).at(&self.dir)?;
        Ok(results)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::defense::patcher::PatcherConfig;

    fn convs(prompts: &[&str]) -> Vec<Conversation> {
        prompts.iter().map(|p| Conversation::prompt_only_from(*p)).collect()
    }

    /// A stage that fails (as a killed one stops) keeps its time so far, which the periodic
    /// record also writes while it runs; finished in a later run of the same directory, it
    /// records the sum of both segments.
    #[test]
    fn a_stage_finished_in_two_segments_records_the_sum_of_both() {
        let dir = std::env::temp_dir().join(format!("patcher-stage-clock-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let clock = dir.join(STAGE_CLOCK);
        let runner = || {
            let mut r = Runner::new(&dir, ExperimentConfig::default(), Device::flex(), false).unwrap();
            r.stage_clock_every = Duration::from_millis(50);
            r
        };
        let done = dir.join("done");
        let pause = Duration::from_millis(400);
        // The first segment, as `patcher run` makes one: it fails in its stage.
        let provenance = Provenance { commands: vec!["first".into()], ..Default::default() };
        let first = runner().in_segment(provenance, |r, _| {
            r.stage("s", &done, |_| -> Result<()> {
                std::thread::sleep(pause);
                // Written by the periodic record while the stage runs.
                let mid: RunningStage = load_json(&clock)?;
                assert!(mid.name == "s" && mid.segments == 1 && mid.seconds > 0.0, "{mid:?}");
                Err(Error::Invalid("stopped".into()))
            })
        });
        assert!(first.unwrap_err().to_string().contains("stopped"));
        let log = segments::read(&dir).unwrap();
        assert_eq!((log.len(), log[0].command.as_str(), log[0].commit.as_str()), (1, "first", "unknown"));
        assert!(log[0].outcome.starts_with("failed: ") && log[0].outcome.contains("stopped"), "{log:?}");
        assert!(log[0].seconds >= 0.4, "{log:?}");
        let kept: RunningStage = load_json(&clock).unwrap();
        assert!(kept.seconds >= 0.4 && kept.segments == 1, "{kept:?}");
        assert!(!dir.join("stages.json").exists(), "an unfinished stage was recorded as done");
        runner()
            .stage("s", &done, |_| -> Result<()> {
                std::thread::sleep(pause);
                Ok(())
            })
            .unwrap();
        let stages: Vec<Stage> = load_json(&dir.join("stages.json")).unwrap();
        let s = &stages[0];
        println!("two segments of 0.4 s: recorded {:.3} s ({})", s.seconds, s.detail);
        assert!(s.seconds >= kept.seconds + 0.4 && s.seconds < 2.0, "{s:?}");
        assert_eq!((s.name.as_str(), s.detail.as_str()), ("s", "2 segments"));
        assert!(!clock.exists(), "the running record outlived its stage");
        // Another stage starts its own count.
        runner().stage("t", &done, |_| -> Result<()> { Ok(()) }).unwrap();
        let stages: Vec<Stage> = load_json(&dir.join("stages.json")).unwrap();
        assert_eq!((stages[1].name.as_str(), stages[1].detail.as_str()), ("t", ""));
        assert!(stages[1].seconds < 0.4);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn harmful_data_made_disjoint_shares_no_prompt() {
        let prompts = |v: &[Conversation]| v.iter().map(|c| c.prompt().to_string()).collect::<Vec<_>>();
        // One shared set: halves.
        let shared = convs(&["a", "b", "c", "d", "e"]);
        let (d, a) = disjoint_harmful(&shared, &shared);
        assert_eq!(
            (prompts(&d), prompts(&a)),
            (vec!["a".into(), "c".into(), "e".into()], vec!["b".into(), "d".into()])
        );
        // Distinct sets: the attacker keeps its own, the defender loses the overlap.
        let (d, a) = disjoint_harmful(&convs(&["a", "b", "c"]), &convs(&["c", "x"]));
        assert_eq!((prompts(&d), prompts(&a)), (vec!["a".into(), "b".into()], vec!["c".into(), "x".into()]));
        // The setting parses, and is written to config.json only when on.
        let on = ExperimentConfig::from_toml("[data]\ndisjoint_harmful = true\n", "t.toml").unwrap();
        assert!(on.data.disjoint_harmful);
        assert!(!serde_json::to_string(&ExperimentConfig::default()).unwrap().contains("disjoint_harmful"));
    }

    /// A run directory whose `config.json` was written before the look-alike term and the
    /// benign phases became defaults (without `lookalike_weight` when 0, without
    /// `benign_first` when off, without `prepend` when false) still matches the config that pins
    /// them off, and not the new defaults.
    #[test]
    fn a_config_json_of_the_legacy_form_matches_the_config_that_pins_the_old_settings() {
        let dir = std::env::temp_dir().join(format!("patcher-legacy-identity-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let pinned = ExperimentConfig::from_toml(
            "[patcher]\nlookalike_weight = 0.0\n[patcher.attack]\nbenign_first = { share = 0.0 }\n\n\
             [[defenses]]\nname = \"p\"\nkind = \"patcher\"\n\
             patcher = { attack = { benign_first = { share = 0.5, steps = [4], prepend = false } } }\n",
            "t.toml",
        )
        .unwrap();
        let mut legacy = serde_json::to_value(&pinned).unwrap();
        let text = legacy.to_string();
        assert!(text.contains("\"lookalike_weight\":0.0") && text.contains("\"prepend\":false"), "{text}");
        let patcher = legacy["patcher"].as_object_mut().unwrap();
        patcher.remove("lookalike_weight");
        patcher["attack"].as_object_mut().unwrap().remove("benign_first");
        let d = &mut legacy["defenses"][0]["patcher"]["attack"]["benign_first"];
        d.as_object_mut().unwrap().remove("prepend");
        std::fs::write(dir.join("config.json"), legacy.to_string()).unwrap();
        Runner::new(&dir, pinned.clone(), Device::flex(), false).expect("the legacy form of the pinned config");
        // The defaults (ω = 4, prepended phases), or the defense's phases prepended, differ.
        let defaults = ExperimentConfig { patcher: PatcherConfig::default(), ..pinned.clone() };
        assert!(Runner::new(&dir, defaults, Device::flex(), false).is_err());
        let mut prepended = pinned.clone();
        prepended.defenses[0].patcher =
            Some(toml::from_str("attack = { benign_first = { share = 0.5, steps = [4], prepend = true } }").unwrap());
        assert!(Runner::new(&dir, prepended, Device::flex(), false).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
