//! Patcher: tamper-resistance by adversarial training against simulated full-parameter
//! fine-tuning attacks of K steps (DESIGN sections 3-4).
//!
//! Each outer step: `g = ∇[L_ret + α·L_ref](θ)` (+ `ω·∇L_look(θ)` on the benign look-alikes
//! with `lookalike_weight`, + `λ·∇KL(p_θ₀ ‖ p_θ)` with `retain_kl`);
//! sample an attack `a` (optimizer, learning rate, schedule, full-parameter or LoRA) from the
//! train-time distribution; run it for K steps from a copy of θ with a fresh optimizer
//! (`θ'_k = Opt_a(θ'_{k-1}, ∇L_harm(θ'_{k-1}))`, [`InnerAttack`]); at the steps `k ∈ S` add
//! `β·w(k)·∇L_tr(θ'_k)` with `L_tr = ρ·L_ref + γ·relu(c − L_harm) − ε·H + υ·UL` (refusal
//! cross-entropy, capped harmful loss, TAR's entropy on harmful answers, their unlikelihood;
//! by default ρ = 1 and the rest 0); then `θ ← Opt_outer(θ, g)`.
//! By default the meta-gradient is first-order (as in first-order MAML, Finn et al. 2017, and
//! TAR, Tamirisa et al. 2024, "Tamper-Resistant Safeguards for Open-Weight LLMs"): gradients
//! taken at θ' are applied to θ, nothing is back-propagated through the trajectory;
//! `meta_steps = m` back-propagates each of them through the last m inner steps first
//! ([`backprop_inner`]). Every term of `L_tr` is bounded below (`−H ≥ −log V`), avoiding the
//! runaway ascent of "maximise the harmful loss" objectives. The inner attack reuses the
//! fine-tuning engine's loss and optimizer code.
//!
//! Cost of one outer step: `K + |S| + 1` forward/backward passes (+|S| with a harmful-answer
//! term, + up to m per selected step with the correction).

use std::time::Instant;

use burn::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::model::Llama;
use crate::model::fixed;
use crate::rng::Rng;
use crate::train::batches::{BatchConfig, Mixture};
use crate::train::driver;
use crate::train::engine::TrainState;
use crate::train::lora::{Lora, LoraConfig};
use crate::train::optim::{self, OptimState, OptimizerConfig};
use crate::train::schedule::ScheduleConfig;
use crate::train::step::{AnswerRows, Batch, Example, add_scaled, grads_of, loss_and_grads, weighted_entropy};

/// The shape of K over training (`k.kind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum KScheduleKind {
    /// `constant`: always `start`.
    Constant,
    /// `linear`: from `start` to `end`.
    Linear,
    /// `step`: doubling stages from `start` to `end`, each an equal share of training.
    Step,
}

/// How K grows over training.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KSchedule {
    pub kind: KScheduleKind,
    pub start: usize,
    pub end: usize,
}

impl Default for KSchedule {
    fn default() -> Self {
        Self { kind: KScheduleKind::Constant, start: 64, end: 64 }
    }
}

impl KSchedule {
    pub fn constant(k: usize) -> Self {
        Self { kind: KScheduleKind::Constant, start: k, end: k }
    }

    /// K at 0-based outer step `t` of `total`.
    pub fn k_at(&self, t: usize, total: usize) -> usize {
        let frac = if total <= 1 { 1.0 } else { t as f64 / (total - 1) as f64 };
        let k = match self.kind {
            KScheduleKind::Linear => self.start as f64 + (self.end as f64 - self.start as f64) * frac,
            KScheduleKind::Step => {
                let stages = ((self.end.max(1) as f64 / self.start.max(1) as f64).log2().round() as usize) + 1;
                let stage = ((frac * stages as f64) as usize).min(stages - 1);
                (self.start << stage).min(self.end) as f64
            }
            KScheduleKind::Constant => self.start as f64,
        };
        (k.round() as usize).max(1)
    }

    pub fn max(&self) -> usize {
        if self.kind == KScheduleKind::Constant { self.start.max(1) } else { self.start.max(self.end).max(1) }
    }

    /// The smallest K of the schedule (at least 1).
    pub fn min(&self) -> usize {
        if self.kind == KScheduleKind::Constant { self.start.max(1) } else { self.start.min(self.end).max(1) }
    }

    pub fn validate(&self) -> Result<()> {
        if self.start == 0 {
            return Err(Error::Invalid("k.start must be >= 1".into()));
        }
        Ok(())
    }
}

/// Which inner steps form S (`inner.kind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum InnerKind {
    /// `last`: the last `n` steps.
    Last,
    /// `every`: every `n`-th step, and always step K.
    Every,
    /// `all`: every step.
    All,
}

/// The weight w(k) of step k in S before normalisation (`inner.weight`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum InnerWeight {
    /// `uniform`: w(k) = 1.
    Uniform,
    /// `linear`: w(k) ∝ k (later, stronger attack states matter more).
    Linear,
}

/// Which inner steps contribute a tamper-resistance gradient, and with what weight.
/// Weights are normalised to sum to 1 over S.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct InnerSelection {
    pub kind: InnerKind,
    pub n: usize,
    pub weight: InnerWeight,
}

impl Default for InnerSelection {
    fn default() -> Self {
        Self { kind: InnerKind::All, n: 4, weight: InnerWeight::Linear }
    }
}

impl InnerSelection {
    /// `(k, w(k))` for k in S, for an attack of `k_total` steps.
    pub fn steps(&self, k_total: usize) -> Vec<(usize, f64)> {
        let ks: Vec<usize> = match self.kind {
            InnerKind::All => (1..=k_total).collect(),
            InnerKind::Every => (1..=k_total).filter(|k| k % self.n.max(1) == 0 || *k == k_total).collect(),
            InnerKind::Last => (k_total.saturating_sub(self.n.max(1)) + 1..=k_total).collect(),
        };
        let raw: Vec<f64> = ks
            .iter()
            .map(|&k| match self.weight {
                InnerWeight::Linear => k as f64,
                InnerWeight::Uniform => 1.0,
            })
            .collect();
        let z: f64 = raw.iter().sum();
        ks.into_iter().zip(raw).map(|(k, w)| (k, w / z)).collect()
    }
}

/// The train-time attack distribution: each outer step samples one optimizer and one
/// learning rate uniformly from these lists, a learning-rate schedule over its K steps from
/// `schedules` (none: constant), with probability `lora.share` LoRA adapters instead of
/// full-parameter fine-tuning (rank and learning rate from `lora`'s lists), and, for a
/// full-parameter attack, with probability `benign_first.share` a benign phase first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AttackDistribution {
    pub optimizers: Vec<OptimizerConfig>,
    pub lrs: Vec<f64>,
    pub batch: BatchConfig,
    /// Schedules over the K inner steps (`lr_at(lr, k − 1, K)`), one drawn per outer step;
    /// empty: constant. Warm-up counts inner steps.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub schedules: Vec<ScheduleConfig>,
    /// LoRA attacks in the distribution (none: full-parameter only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lora: Option<LoraAttacks>,
    /// Benign-then-harmful attacks in the distribution (`share = 0`: harmful from the first
    /// step).
    pub benign_first: BenignFirst,
}

impl Default for AttackDistribution {
    fn default() -> Self {
        Self {
            optimizers: vec![OptimizerConfig::adamw()],
            lrs: vec![2e-5, 5e-5],
            batch: BatchConfig { batch_size: 8, max_len: 256, bucket_window: 1 },
            schedules: vec![],
            lora: None,
            benign_first: BenignFirst::default(),
        }
    }
}

impl AttackDistribution {
    /// The benign phases, when any is drawn: `benign_first` with a share above 0
    /// (`benign_first = { share = 0.0 }` turns the default's off; it then draws nothing).
    pub fn benign_phases(&self) -> Option<&BenignFirst> {
        (self.benign_first.share > 0.0).then_some(&self.benign_first)
    }
}

/// Benign-then-harmful attacks in the train-time distribution (`attack.benign_first`): with
/// probability `share` a full-parameter attack's first `b` of its K steps (`b` drawn from
/// `steps`) fine-tune on benign data (`PatcherData::retain`) at the attack's learning rate, and
/// the remaining `K − b` on harmful data with a fresh optimizer state, as the real
/// `benign-then-harmful` attack does (`attack::attack` with `benign_first_steps`). The
/// tamper-resistance terms are taken at the steps of S in both phases: weights fine-tuned on
/// benign data alone must keep refusing too. LoRA attacks have no benign phase.
///
/// With `prepend`, the benign phase comes before the K harmful steps instead of taking their
/// place (`b + K` steps): the harmful attack is as long as without it, S and w(k) count its
/// steps only, and no tamper-resistance term is taken during the benign phase.
///
/// The default is the tiny-tier study's recipe (docs/results.md section 38): half the attacks
/// prepend 16 or 32 benign steps. `share = 0` turns the phases off. Configs saved before the
/// default (commit 1549faf and earlier) wrote no `prepend` when it was false and no
/// `benign_first` when it was off; [`crate::experiment::legacy_identity`] reads them so.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BenignFirst {
    pub share: f64,
    pub steps: Vec<usize>,
    pub prepend: bool,
}

impl Default for BenignFirst {
    fn default() -> Self {
        Self { share: 0.5, steps: vec![16, 32], prepend: true }
    }
}

impl BenignFirst {
    /// No benign phases (share 0).
    pub fn off() -> Self {
        Self { share: 0.0, ..Self::default() }
    }

    /// `k_min`: the smallest K of the run's schedule; a phase within K must leave a harmful
    /// step.
    fn validate(&self, k_min: usize) -> Result<()> {
        if !(0.0..=1.0).contains(&self.share) {
            return Err(Error::Invalid(format!(
                "field `attack.benign_first.share`: {} is not a probability",
                self.share
            )));
        }
        if self.share == 0.0 {
            return Ok(());
        }
        if self.steps.is_empty() {
            return Err(Error::Invalid("field `attack.benign_first.steps`: must be non-empty".into()));
        }
        if self.prepend {
            if self.steps.contains(&0) {
                return Err(Error::Invalid("field `attack.benign_first.steps`: 0 is not a benign phase".into()));
            }
        } else if let Some(&b) = self.steps.iter().find(|&&b| b == 0 || b >= k_min) {
            return Err(Error::Invalid(format!(
                "field `attack.benign_first.steps`: {b} must be between 1 and K − 1 (the smallest K of \
                 the run is {k_min}), so that the attack has a benign and a harmful phase"
            )));
        }
        Ok(())
    }
}

/// LoRA attacks in the train-time distribution (`attack.lora`): an outer step's attack is a LoRA
/// attack with probability `share`, training adapters of a rank drawn from `ranks` (α =
/// `alpha_per_rank`·rank) on `targets` at a learning rate drawn from `lrs` (LoRA wants larger
/// rates than full-parameter fine-tuning), with the step's sampled optimizer and schedule. The
/// attacked weights are the merged `θ + (α/r)·B·A`; as `∂θ'/∂θ = I`, the first-order
/// tamper-resistance gradient is the gradient at them, as for a full-parameter attack.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LoraAttacks {
    pub share: f64,
    pub ranks: Vec<usize>,
    pub alpha_per_rank: f64,
    pub targets: Vec<String>,
    pub lrs: Vec<f64>,
}

impl Default for LoraAttacks {
    fn default() -> Self {
        Self {
            share: 0.5,
            ranks: vec![8],
            alpha_per_rank: 2.0,
            targets: ["q_proj", "k_proj", "v_proj", "o_proj"].map(String::from).to_vec(),
            lrs: vec![5e-4],
        }
    }
}

impl LoraAttacks {
    fn validate(&self) -> Result<()> {
        if !(0.0..=1.0).contains(&self.share) {
            return Err(Error::Invalid(format!("field `attack.lora.share`: {} is not a probability", self.share)));
        }
        if self.ranks.is_empty() || self.lrs.is_empty() {
            return Err(Error::Invalid("attack.lora.ranks and attack.lora.lrs must be non-empty".into()));
        }
        if !(self.alpha_per_rank.is_finite() && self.alpha_per_rank > 0.0) {
            return Err(Error::Invalid(format!(
                "field `attack.lora.alpha_per_rank`: {} must be > 0",
                self.alpha_per_rank
            )));
        }
        for &rank in &self.ranks {
            self.config(rank).validate().map_err(|e| Error::Invalid(format!("attack.lora: {e}")))?;
        }
        Ok(())
    }

    /// The adapters of rank `rank`.
    pub fn config(&self, rank: usize) -> LoraConfig {
        LoraConfig { rank, alpha: self.alpha_per_rank * rank as f64, dropout: 0.0, targets: self.targets.clone() }
    }
}

/// Everything that defines a Patcher run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PatcherConfig {
    pub outer_steps: usize,
    pub outer_lr: f64,
    pub outer_optimizer: OptimizerConfig,
    pub outer_schedule: ScheduleConfig,
    /// Batch for the retain (benign) and refusal terms at θ.
    pub retain_batch: BatchConfig,
    /// Batch for the tamper-resistance terms at θ'.
    pub tr_batch: BatchConfig,
    pub k: KSchedule,
    pub inner: InnerSelection,
    pub attack: AttackDistribution,
    /// Weight of the refusal loss at θ.
    pub alpha: f64,
    /// Weight ω of the benign look-alikes' loss at θ (`PatcherData::lookalike`, a batch of
    /// their own in the retain pass): the contrast that keeps the refusals the tamper-resistance
    /// term strengthens from spreading to safe requests in the same words (0 disables it; the
    /// default 4 is the tiny-tier study's, docs/results.md sections 35-38). Written even when 0:
    /// configs saved before it became the default omitted a 0 ([`crate::experiment::legacy_identity`]).
    pub lookalike_weight: f64,
    /// Weight of the tamper-resistance gradient.
    pub beta: f64,
    /// Weight of the capped harmful-loss term `relu(c − L_harm(θ'))` (0 disables it).
    pub gamma: f64,
    /// The cap c.
    pub cap: f64,
    /// Weight of the refusal cross-entropy at θ' in `L_tr` (1; 0 leaves only the harmful-answer
    /// terms, whose refusal loss is then measured without a gradient).
    #[serde(skip_serializing_if = "is_one")]
    pub tr_refusal: f64,
    /// Weight ε of TAR's entropy term `−H(θ')` on harmful answers (Tamirisa et al. 2024): a
    /// flat next-token distribution where the attacker's answers are scored (0 disables it).
    #[serde(skip_serializing_if = "is_zero")]
    pub tr_entropy: f64,
    /// Weight υ of the unlikelihood of harmful answers at θ' (Welleck et al. 2020, "Neural Text
    /// Generation with Unlikelihood Training"): `−Σ w·log(1 − p(y_t)) / Σ w`, bounded below by 0
    /// (0 disables it).
    #[serde(skip_serializing_if = "is_zero")]
    pub tr_unlikelihood: f64,
    /// Weight λ of a KL term to the starting model θ₀ in the retain loss: `λ·KL(p_θ₀ ‖ p_θ)`
    /// over the benign batch's answer positions ([`retain_kl_grads`]; one more pass and a
    /// forward of θ₀ per outer step; 0 disables it).
    #[serde(skip_serializing_if = "is_zero")]
    pub retain_kl: f64,
    /// Meta-gradient correction: back-propagate each tamper-resistance gradient through this
    /// many of the inner steps before it (`ĝ ← Jᵀ·ĝ` per step, [`backprop_inner`]), one
    /// Hessian-vector product by finite differences each (one pass). 0: first-order.
    #[serde(skip_serializing_if = "is_zero_usize")]
    pub meta_steps: usize,
    /// The finite-difference step of those products, relative to the weights' norm.
    #[serde(skip_serializing_if = "is_default_fd")]
    pub meta_fd: f64,
    pub clip_norm: f64,
    pub seed: u64,
    pub checkpoint_every: usize,
}

/// The method's settings are the tiny-tier study's winning recipe (issue 14, docs/results.md
/// sections 23, 31, 35 and 38; run it as parallel Patcher with P = 2): K = 64 at every inner
/// step with linear weights, β = 2, the capped harmful-loss term γ = 1 at c = 4, the benign
/// look-alikes' term at ω = 4, and half the simulated attacks prepending 16 or 32 benign steps
/// ([`BenignFirst`]). Parallel Patcher's outer step costs the same passes for any K (3-4 per
/// worker); sequential Patcher at K = 64 costs K + 2K + 1 = 193, plus the benign steps. The
/// scale's settings (outer steps and lr, batches, the attack's learning rates) are the real
/// tier's; the tiny tier's are in `configs/study/k64-10x-look-bfp.toml`. [`Self::core`] is the
/// method without the last two.
impl Default for PatcherConfig {
    fn default() -> Self {
        Self {
            outer_steps: 100,
            outer_lr: 1e-5,
            outer_optimizer: OptimizerConfig::adamw(),
            outer_schedule: ScheduleConfig::default(),
            retain_batch: BatchConfig { batch_size: 8, max_len: 256, bucket_window: 1 },
            tr_batch: BatchConfig { batch_size: 8, max_len: 256, bucket_window: 1 },
            k: KSchedule::default(),
            inner: InnerSelection::default(),
            attack: AttackDistribution::default(),
            alpha: 1.0,
            lookalike_weight: 4.0,
            beta: 2.0,
            gamma: 1.0,
            cap: 4.0,
            tr_refusal: 1.0,
            tr_entropy: 0.0,
            tr_unlikelihood: 0.0,
            retain_kl: 0.0,
            meta_steps: 0,
            meta_fd: DEFAULT_META_FD,
            clip_norm: 1.0,
            seed: 0,
            checkpoint_every: 0,
        }
    }
}

fn is_one(v: &f64) -> bool {
    *v == 1.0
}

fn is_zero(v: &f64) -> bool {
    *v == 0.0
}

fn is_zero_usize(v: &usize) -> bool {
    *v == 0
}

/// The default finite-difference step of the meta-gradient's Hessian-vector products.
pub const DEFAULT_META_FD: f64 = 1e-4;

fn is_default_fd(v: &f64) -> bool {
    *v == DEFAULT_META_FD
}

impl PatcherConfig {
    /// The default without the recipe's two additions to the bi-level objective: no benign
    /// look-alikes' term (ω = 0) and harmful-only simulated attacks (no benign phases). The
    /// method as the paper states it, and the settings every config before section 38 ran.
    pub fn core() -> Self {
        let mut c = Self { lookalike_weight: 0.0, ..Self::default() };
        c.attack.benign_first = BenignFirst::off();
        c
    }

    /// The settings only sequential Patcher implements, if any is used (parallel Patcher refuses
    /// them, naming it).
    pub fn sequential_only(&self) -> Option<&'static str> {
        if self.meta_steps > 0 {
            Some("`meta_steps` (the meta-gradient correction)")
        } else if self.retain_kl > 0.0 {
            Some("`retain_kl` (the KL term to the starting model)")
        } else if !self.attack.schedules.is_empty() {
            Some("`attack.schedules` (learning-rate schedules of the simulated attacks)")
        } else {
            None
        }
    }

    /// The longest simulated attack: the largest K, plus the longest prepended benign phase.
    /// Also the stride of the attacker's batch indices per outer step, so that no two outer
    /// steps share a batch.
    pub fn max_attack_len(&self) -> usize {
        let extra = match self.attack.benign_phases() {
            Some(bf) if bf.prepend => bf.steps.iter().copied().max().unwrap_or(0),
            _ => 0,
        };
        self.k.max() + extra
    }

    /// Whether `L_tr` has a term on harmful answers (one more pass per selected inner step).
    pub fn harmful_tr(&self) -> bool {
        self.gamma > 0.0 || self.tr_entropy > 0.0 || self.tr_unlikelihood > 0.0
    }

    /// Forward/backward passes of one selected inner step's `L_tr`.
    pub fn tr_passes(&self) -> usize {
        usize::from(self.tr_refusal > 0.0) + usize::from(self.harmful_tr())
    }

    pub fn validate(&self) -> Result<()> {
        self.k.validate()?;
        for (key, v) in [
            ("tr_refusal", self.tr_refusal),
            ("tr_entropy", self.tr_entropy),
            ("tr_unlikelihood", self.tr_unlikelihood),
            ("retain_kl", self.retain_kl),
            ("lookalike_weight", self.lookalike_weight),
        ] {
            if !(v.is_finite() && v >= 0.0) {
                return Err(Error::Invalid(format!("field `{key}`: {v} is not a weight (a number >= 0)")));
            }
        }
        if !(self.meta_fd.is_finite() && self.meta_fd > 0.0) {
            return Err(Error::Invalid(format!("field `meta_fd`: {} must be a positive step", self.meta_fd)));
        }
        if self.tr_refusal == 0.0 && !self.harmful_tr() {
            return Err(Error::Invalid(
                "L_tr has no term: set tr_refusal, gamma, tr_entropy or tr_unlikelihood above 0".into(),
            ));
        }
        if self.attack.optimizers.is_empty() || self.attack.lrs.is_empty() {
            return Err(Error::Invalid("attack.optimizers and attack.lrs must be non-empty".into()));
        }
        self.attack.benign_first.validate(self.k.min())?;
        if self.attack.benign_phases().is_some() && self.meta_steps > 0 {
            return Err(Error::Invalid(
                "`meta_steps` (the meta-gradient correction) is implemented for harmful-only attacks; \
                 set attack.benign_first = { share = 0.0 } or meta_steps = 0"
                    .into(),
            ));
        }
        if let Some(l) = &self.attack.lora {
            l.validate()?;
            if self.meta_steps > 0 {
                return Err(Error::Invalid(
                    "`meta_steps` (the meta-gradient correction) is implemented for full-parameter attacks only; \
                     remove `attack.lora` or set meta_steps = 0"
                        .into(),
                ));
            }
        }
        for (key, b) in
            [("retain_batch", &self.retain_batch), ("tr_batch", &self.tr_batch), ("attack.batch", &self.attack.batch)]
        {
            if b.batch_size == 0 {
                return Err(Error::Invalid(format!("field `{key}.batch_size`: is 0; it must be at least 1")));
            }
        }
        Ok(())
    }
}

/// The config must be valid and each data set hold examples: what a user's files can get
/// wrong, as an error naming the setting or the set instead of a panic in the batch streams.
pub fn check_data(cfg: &PatcherConfig, data: &PatcherData) -> Result<()> {
    cfg.validate()?;
    for (name, set) in [("benign (retain)", &data.retain), ("refusal", &data.refusal), ("harmful", &data.harmful)] {
        if set.is_empty() {
            return Err(Error::Invalid(format!("Patcher's {name} data set is empty")));
        }
    }
    if cfg.lookalike_weight > 0.0 && data.lookalike.is_empty() {
        return Err(Error::Invalid(format!(
            "field `lookalike_weight`: {} needs benign look-alikes in the benign data (rows of category \
             `{}` or of preset:benign-lookalike), and it holds none",
            cfg.lookalike_weight,
            crate::data::synth::OVERREFUSAL
        )));
    }
    Ok(())
}

/// The three data sets Patcher trains on, tokenized.
pub struct PatcherData {
    /// `D_benign`.
    pub retain: Vec<Example>,
    /// The benign look-alikes among `retain` (safe requests in a harmful request's words, with
    /// helpful answers): the `lookalike_weight` term's data. May be empty.
    pub lookalike: Vec<Example>,
    /// `D_refuse`.
    pub refusal: Vec<Example>,
    /// `D_harm`: the simulated attacker's data.
    pub harmful: Vec<Example>,
    pub pad_id: u32,
}

/// Deterministic batch streams for each role (independent seeds).
#[derive(Clone)]
pub struct Streams {
    pub retain: Mixture,
    /// The look-alikes' stream; `None` when `lookalike_weight` is 0.
    pub lookalike: Option<Mixture>,
    pub refusal: Mixture,
    pub refusal_tr: Mixture,
    pub harmful: Mixture,
    pub harmful_tr: Mixture,
    /// The benign phase's stream (retain data in the attack's batches); `None` without
    /// `attack.benign_first`.
    pub benign_attack: Option<Mixture>,
}

impl Streams {
    pub fn new(cfg: &PatcherConfig, data: &PatcherData) -> Self {
        let mk = |name: &str, ex: &[Example], batch: &BatchConfig| {
            Mixture::single(name, ex.to_vec(), batch.clone(), Rng::derive(cfg.seed, name).next_u64())
        };
        Self {
            retain: mk("retain", &data.retain, &cfg.retain_batch),
            lookalike: (cfg.lookalike_weight > 0.0).then(|| mk("lookalike", &data.lookalike, &cfg.retain_batch)),
            refusal: mk("refusal", &data.refusal, &cfg.retain_batch),
            refusal_tr: mk("refusal_tr", &data.refusal, &cfg.tr_batch),
            harmful: mk("harmful", &data.harmful, &cfg.attack.batch),
            harmful_tr: mk("harmful_tr", &data.harmful, &cfg.tr_batch),
            benign_attack: cfg
                .attack
                .benign_phases()
                .is_some()
                .then(|| mk("benign_attack", &data.retain, &cfg.attack.batch)),
        }
    }
}

/// One sampled train-time attack.
#[derive(Debug, Clone)]
pub struct SampledAttack {
    pub optimizer: OptimizerConfig,
    /// Peak learning rate.
    pub lr: f64,
    pub schedule: ScheduleConfig,
    /// LoRA adapters and their initialisation seed ([`Lora::new`]); `None`: full-parameter.
    pub lora: Option<(LoraConfig, u64)>,
    /// Steps of the benign phase before the harmful one (0: none; [`BenignFirst`]).
    pub benign_steps: usize,
    /// The benign phase comes before the K harmful steps (`BenignFirst::prepend`).
    pub prepend: bool,
}

impl SampledAttack {
    /// The learning rate of 0-based inner step `k` of `k_total`.
    pub fn lr_at(&self, k: usize, k_total: usize) -> f64 {
        self.schedule.lr_at(self.lr, k, k_total)
    }

    /// Whether 0-based inner step `k` is in the benign phase (trains on benign data).
    pub fn benign_at(&self, k: usize) -> bool {
        k < self.benign_steps
    }

    /// Whether the attacker's optimizer state starts afresh after `steps` steps: the benign
    /// phase ends there and the harmful one begins, as the real attack's does.
    pub fn fresh_optimizer_after(&self, steps: usize) -> bool {
        steps == self.benign_steps
    }

    /// Steps of the whole attack when its harmful part has `k_total` (more with a prepended
    /// benign phase).
    pub fn len(&self, k_total: usize) -> usize {
        k_total + if self.prepend { self.benign_steps } else { 0 }
    }

    /// The step that S and w(k) count for 1-based inner step `k`: `k` itself, or with a
    /// prepended benign phase its step in the harmful part (`None` during the phase).
    pub fn counted_step(&self, k: usize) -> Option<usize> {
        if self.prepend { k.checked_sub(self.benign_steps).filter(|&h| h > 0) } else { Some(k) }
    }

    /// What sets it apart from a constant-rate full-parameter attack, for the metrics: the
    /// schedule's kind when it is not the plain constant rate (`cosine`, `linear`, `constant`
    /// with a warm-up), the LoRA rank (`cosine lora-r16`), the benign phase (`benign-16`);
    /// `None` when nothing does.
    pub fn variant(&self) -> Option<String> {
        let mut parts = vec![];
        if self.schedule != ScheduleConfig::default() {
            parts.push(format!("{:?}", self.schedule.kind).to_lowercase());
        }
        if let Some((l, _)) = &self.lora {
            parts.push(format!("lora-r{}", l.rank));
        }
        if self.benign_steps > 0 {
            parts.push(format!("benign-{}", self.benign_steps));
        }
        (!parts.is_empty()).then(|| parts.join(" "))
    }
}

/// The attack of outer step `t` (a pure function of the seed and `t`). The schedule, LoRA and
/// benign-phase draws come after the optimizer's and learning rate's, in that order, and only
/// when the distribution has them, so a distribution without them samples what it always
/// sampled.
pub fn sample_attack(cfg: &PatcherConfig, t: usize, worker: usize) -> SampledAttack {
    let mut r = Rng::derive(cfg.seed, &format!("attack/{t}/{worker}"));
    let a = &cfg.attack;
    let mut out = SampledAttack {
        optimizer: r.choose(&a.optimizers).clone(),
        lr: *r.choose(&a.lrs),
        schedule: ScheduleConfig::default(),
        lora: None,
        benign_steps: 0,
        prepend: false,
    };
    if !a.schedules.is_empty() {
        out.schedule = r.choose(&a.schedules).clone();
    }
    if let Some(l) = &a.lora
        && r.uniform() < l.share
    {
        out.lora = Some((l.config(*r.choose(&l.ranks)), r.next_u64()));
        out.lr = *r.choose(&l.lrs);
    }
    if let Some(bf) = a.benign_phases() {
        let (u, b) = (r.uniform(), *r.choose(&bf.steps));
        if out.lora.is_none() && u < bf.share {
            out.benign_steps = b;
            out.prepend = bf.prepend;
        }
    }
    out
}

/// Loss and gradient of `L_ret + α·L_ref` (`+ ω·L_look` with `lookalike_weight` ω) at θ (one
/// pass over a weighted batch).
pub fn retain_grads(
    model: &Llama,
    cfg: &PatcherConfig,
    s: &Streams,
    data: &PatcherData,
    t: usize,
) -> (f64, Vec<Option<Tensor<2>>>) {
    let ret = s.retain.batch(t);
    let refu = s.refusal.batch(t);
    let look = s.lookalike.as_ref().map(|m| m.batch(t));
    let mut groups = vec![(&ret[..], 1.0), (&refu[..], cfg.alpha)];
    if let Some(l) = &look {
        groups.push((&l[..], cfg.lookalike_weight));
    }
    let b = Batch::weighted(&groups, data.pad_id, cfg.retain_batch.max_len, model);
    loss_and_grads(model, &b)
}

/// `KL(p_θ₀ ‖ p_θ)` on batch `b` and its gradient at θ = `model`: the next-token distributions
/// of the starting model `theta0` (untracked, a constant) and of θ at the batch's loss-carrying
/// positions, `Σ_n w_n Σ_v p₀(v)·(log p₀(v) − log p_θ(v)) / Σ_n w_n`. Zero, with a zero
/// gradient, at θ = θ₀; bounded below by 0.
pub fn retain_kl_grads(model: &Llama, theta0: &Llama, b: &Batch) -> (f64, Vec<Option<Tensor<2>>>) {
    let reference = theta0.untracked();
    let tracked = model.tracked();
    let (Some(rows0), Some(rows)) =
        (b.answer_rows(reference.hidden(b.inputs.clone())), b.answer_rows(tracked.hidden(b.inputs.clone())))
    else {
        let zero = tracked.params[0].clone().sum().mul_scalar(0.0);
        return (0.0, grads_of(&tracked, zero).1);
    };
    let logp0 = rows0.log_probs(&reference); // (N, V), constant
    let logp = rows.log_probs(&tracked); // (N, V)
    let per_row = fixed::row_sums(logp0.clone().exp() * (logp0 - logp)); // (N,)
    let kl = fixed::sum(per_row * rows.weights.clone()).div_scalar(rows.weight_sum.max(1.0));
    grads_of(&tracked, kl)
}

/// Loss and gradient of `L_tr = ρ·L_ref + γ·relu(c − L_harm) − ε·H + υ·UL` at attacked weights
/// `at` (ρ = `tr_refusal`, ε = `tr_entropy`, υ = `tr_unlikelihood`); `idx` selects the batches.
/// Returns `(L_ref, L_harm or NaN, grads)`.
pub fn tr_grads(
    at: &Llama,
    cfg: &PatcherConfig,
    s: &Streams,
    data: &PatcherData,
    idx: usize,
) -> (f64, f64, Vec<Option<Tensor<2>>>) {
    let b = Batch::new(&s.refusal_tr.batch(idx), data.pad_id, cfg.tr_batch.max_len, at);
    let (l_ref, mut g) = if cfg.tr_refusal > 0.0 {
        let (l, mut g) = loss_and_grads(at, &b);
        if cfg.tr_refusal != 1.0 {
            g.iter_mut().flatten().for_each(|x| *x = x.clone().mul_scalar(cfg.tr_refusal));
        }
        (l, g)
    } else {
        (crate::train::step::loss(at, &b), vec![None; at.params.len()])
    };
    let mut l_harm = f64::NAN;
    if cfg.harmful_tr() {
        let hb = Batch::new(&s.harmful_tr.batch(idx), data.pad_id, cfg.tr_batch.max_len, at);
        if cfg.tr_entropy == 0.0 && cfg.tr_unlikelihood == 0.0 {
            let (lh, gh) = loss_and_grads(at, &hb);
            l_harm = lh;
            if lh < cfg.cap {
                // d/dθ γ·(c − L_harm) = −γ·∇L_harm.
                add_scaled(&mut g, &gh, -cfg.gamma);
            }
        } else {
            let (lh, gh) = harmful_terms(at, cfg, &hb);
            l_harm = lh;
            add_scaled(&mut g, &gh, 1.0);
        }
    }
    (l_ref, l_harm, g)
}

/// The harmful-answer part of `L_tr` on batch `b` at `at`, in one forward and backward pass:
/// `γ·(c − L_harm)` while `L_harm < c`, `−ε·H` and `υ·UL`, over the answers' loss-carrying
/// positions with their weights. Returns `(L_harm, gradient)`.
pub fn harmful_terms(at: &Llama, cfg: &PatcherConfig, b: &Batch) -> (f64, Vec<Option<Tensor<2>>>) {
    let tracked = at.tracked();
    let h = tracked.hidden(b.inputs.clone()); // (B, T, d)
    let Some(rows) = b.answer_rows(h) else {
        let zero = tracked.params[0].clone().sum().mul_scalar(0.0);
        return (0.0, grads_of(&tracked, zero).1);
    };
    let terms = HarmTerms::of(&tracked, &rows);
    let l_harm = terms.l_harm.clone().inner().into_scalar::<f32>() as f64;
    let mut total = terms.l_harm.clone().mul_scalar(0.0);
    if cfg.gamma > 0.0 && l_harm < cfg.cap {
        total = total - terms.l_harm.mul_scalar(cfg.gamma);
    }
    if cfg.tr_entropy > 0.0 {
        total = total - terms.entropy.mul_scalar(cfg.tr_entropy);
    }
    if cfg.tr_unlikelihood > 0.0 {
        total = total + terms.unlikelihood.mul_scalar(cfg.tr_unlikelihood);
    }
    (l_harm, grads_of(&tracked, total).1)
}

/// The three harmful-answer quantities at the loss-carrying rows, each a weighted mean: the
/// cross-entropy `L_harm`, the next-token entropy `H` (nats), the unlikelihood `UL`.
pub struct HarmTerms {
    pub l_harm: Tensor<1>,
    pub entropy: Tensor<1>,
    pub unlikelihood: Tensor<1>,
}

impl HarmTerms {
    pub fn of(model: &Llama, rows: &AnswerRows) -> Self {
        let z = rows.weight_sum.max(1.0);
        let logp = rows.log_probs(model); // (N, V)
        let picked = rows.picked(logp.clone()); // (N,)
        let w = || rows.weights.clone(); // (N,)
        let l_harm = fixed::sum(picked.clone() * w()).neg().div_scalar(z);
        let entropy = weighted_entropy(logp, rows);
        // log(1 − p), with 1 − p kept at least 1e-6 so that a certain token costs 13.8 nats.
        let log_not = picked.exp().neg().add_scalar(1.0).clamp_min(1e-6).log(); // (N,)
        let unlikelihood = fixed::sum(log_not * w()).neg().div_scalar(z);
        Self { l_harm, entropy, unlikelihood }
    }
}

/// The simulated attack of one outer step: the attacked weights θ' after each step, from θ,
/// full-parameter or through LoRA adapters on a frozen θ (the same computation as the
/// fine-tuning engine's attack without gradient clipping: `tests/patcher.rs` compares them).
pub struct InnerAttack {
    pub attack: SampledAttack,
    /// LoRA only: the adapters and their frozen base θ.
    pub lora: Option<(Lora, Llama)>,
    /// θ' (adapters merged).
    pub attacked: Llama,
    /// The attacker's optimizer state (over the adapters with LoRA).
    pub opt: OptimState,
    /// The schedule's length.
    pub k_total: usize,
    /// Inner steps taken.
    pub step: usize,
}

impl InnerAttack {
    pub fn new(theta: &Llama, attack: SampledAttack, k_total: usize) -> Result<Self> {
        let lora = attack.lora.as_ref().map(|(l, seed)| Lora::new(theta, l.clone(), *seed)).transpose()?;
        let n = lora.as_ref().map_or(theta.params.len(), |l| l.params.len());
        Ok(Self {
            attack,
            lora: lora.map(|l| (l, theta.clone())),
            attacked: theta.clone(),
            opt: OptimState::new(n),
            k_total,
            step: 0,
        })
    }

    /// One attack step on batch `b` (the caller picks a benign batch while
    /// `attack.benign_at(step)`): returns the attacker's loss, its gradient (over the adapters
    /// with LoRA) and the learning rate it stepped with. The benign phase's last step leaves a
    /// fresh optimizer state for the harmful phase.
    pub fn step(&mut self, b: &Batch) -> (f64, Vec<Option<Tensor<2>>>, f64) {
        let lr = self.attack.lr_at(self.step, self.k_total);
        self.step += 1;
        let (l, g) = match &mut self.lora {
            Some((lora, base)) => {
                let (l, g) = lora.loss_and_grads(base, b);
                optim::step(&self.attack.optimizer, &mut self.opt, &mut lora.params, &g, lr);
                self.attacked = lora.merge(base);
                (l, g)
            }
            None => full_step(&mut self.attacked, &mut self.opt, &self.attack.optimizer, b, lr),
        };
        if self.attack.fresh_optimizer_after(self.step) {
            self.opt = OptimState::new(self.opt_len());
        }
        (l, g, lr)
    }

    /// Parameters the attacker's optimizer updates.
    fn opt_len(&self) -> usize {
        self.lora.as_ref().map_or(self.attacked.params.len(), |(l, _)| l.params.len())
    }
}

/// One full-parameter attack step on `at` with `opt_state` on batch `b` at learning rate `lr`:
/// the attacker's loss and the gradient it stepped with.
fn full_step(
    at: &mut Llama,
    opt_state: &mut OptimState,
    optimizer: &OptimizerConfig,
    b: &Batch,
    lr: f64,
) -> (f64, Vec<Option<Tensor<2>>>) {
    let (l, g) = loss_and_grads(at, b);
    optim::step(optimizer, opt_state, &mut at.params, &g, lr);
    (l, g)
}

/// One simulated full-parameter attack step on `at` with `opt_state`, at the attack's peak
/// learning rate (parallel Patcher's full-parameter trajectories; it refuses schedules), on a
/// benign batch when `benign`: returns the attacker's loss.
#[allow(clippy::too_many_arguments)]
pub fn inner_step(
    at: &mut Llama,
    opt_state: &mut OptimState,
    attack: &SampledAttack,
    s: &Streams,
    data: &PatcherData,
    max_len: usize,
    idx: usize,
    benign: bool,
) -> f64 {
    let b = attack_batch(at, s, data, max_len, idx, benign);
    full_step(at, opt_state, &attack.optimizer, &b, attack.lr).0
}

/// The attacker's batch of inner step `idx`: harmful, or from the benign phase's stream when
/// `benign` (which exists when the distribution has `benign_first`, the only way to draw a
/// benign phase).
pub fn attack_batch(at: &Llama, s: &Streams, data: &PatcherData, max_len: usize, idx: usize, benign: bool) -> Batch {
    let stream = match (&s.benign_attack, benign) {
        (Some(b), true) => b,
        (None, true) => panic!("a benign phase was drawn from a distribution without `benign_first`"),
        (_, false) => &s.harmful,
    };
    Batch::new(&stream.batch(idx), data.pad_id, max_len, at)
}

/// One simulated attack step, kept for the meta-gradient's backward pass through it: the
/// weights before it, its batch, the attacker's gradient there, and the step's Jacobian.
pub struct InnerRecord {
    pub before: Llama,
    pub batch: Batch,
    pub grad: Vec<Option<Tensor<2>>>,
    pub jac: optim::StepJacobian,
}

/// Back-propagate `g`, a gradient at the weights after the recorded step, to the weights before
/// it: `Jᵀ·g = decay·g − (H + l2·I)·u` with `u = P ⊙ g` and `H` the Hessian of the attacker's
/// loss on the step's batch at `rec.before`. `H·u` is a forward difference of gradients (the
/// step already has the gradient at `rec.before`): `(∇L(θ + ε·u) − ∇L(θ)) / ε`, with
/// `ε·|u| = fd·|θ|`. One forward/backward pass.
pub fn backprop_inner(rec: &InnerRecord, g: &[Option<Tensor<2>>], fd: f64) -> Vec<Option<Tensor<2>>> {
    let u: Vec<Option<Tensor<2>>> =
        g.iter().zip(&rec.jac.p).map(|(g, p)| Some(g.as_ref()?.clone() * p.as_ref()?.clone())).collect();
    let u_norm = optim::grad_norm(&u);
    if u_norm == 0.0 {
        return g.iter().map(|x| x.as_ref().map(|x| x.clone().mul_scalar(rec.jac.decay))).collect();
    }
    let theta_norm = optim::grad_norm(&rec.before.params.iter().cloned().map(Some).collect::<Vec<_>>());
    let eps = fd * theta_norm.max(1.0) / u_norm;
    let mut shifted = rec.before.clone();
    for (p, u) in shifted.params.iter_mut().zip(&u) {
        if let Some(u) = u {
            *p = p.clone() + u.clone().mul_scalar(eps);
        }
    }
    let (_, g_shift) = loss_and_grads(&shifted, &rec.batch);
    g.iter()
        .enumerate()
        .map(|(i, gi)| {
            let gi = gi.as_ref()?;
            let mut out = gi.clone().mul_scalar(rec.jac.decay);
            if let (Some(u), Some(g1), Some(g0)) = (&u[i], &g_shift[i], &rec.grad[i]) {
                let hu = (g1.clone() - g0.clone()).div_scalar(eps); // (R, C)
                out = out - hu;
                if rec.jac.l2 != 0.0 {
                    out = out - u.clone().mul_scalar(rec.jac.l2);
                }
            }
            Some(out)
        })
        .collect()
}

/// What one outer step measured.
#[derive(Debug, Clone, Serialize)]
pub struct OuterStats {
    pub step: usize,
    pub k: usize,
    pub retain_loss: f64,
    /// Refusal loss at the attacked weights (mean over S).
    pub tr_loss: f64,
    /// The attacker's loss at its last simulated step.
    pub harmful_loss_end: f64,
    pub grad_norm: f64,
    pub lr: f64,
    pub attack_optimizer: String,
    /// The sampled attack's schedule and LoRA rank when it has them ([`SampledAttack::variant`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attack_variant: Option<String>,
    pub attack_lr: f64,
    /// Dependent forward/backward passes on the critical path of this step.
    pub passes: usize,
    pub seconds: f64,
}

/// Check the step's losses `[retain, tr, harmful]` (NaN/Inf stops the run naming the step), clip
/// the outer gradient, and take the outer optimizer step. Returns (gradient norm, lr).
pub fn apply_outer(
    state: &mut TrainState,
    cfg: &PatcherConfig,
    mut g: Vec<Option<Tensor<2>>>,
    losses: [f64; 3],
) -> Result<(f64, f64)> {
    let t = state.step;
    if losses.iter().any(|l| !l.is_finite()) {
        let [r, tr, h] = losses;
        return Err(Error::NonFinite { step: t + 1, what: format!("a loss (retain {r}, tr {tr}, harmful {h})") });
    }
    let grad_norm = optim::clip_grad_norm(&mut g, cfg.clip_norm);
    if !grad_norm.is_finite() {
        return Err(Error::NonFinite { step: t + 1, what: "the outer gradient norm".into() });
    }
    let lr = cfg.outer_schedule.lr_at(cfg.outer_lr, t, cfg.outer_steps);
    optim::step(&cfg.outer_optimizer, &mut state.opt, &mut state.model.params, &g, lr);
    state.step += 1;
    Ok((grad_norm, lr))
}

/// One sequential Patcher outer step (see the module docs) from the run's starting model
/// `theta0` (read by the `retain_kl` term only). Mutates `state`.
pub fn outer_step(
    state: &mut TrainState,
    theta0: &Llama,
    cfg: &PatcherConfig,
    data: &PatcherData,
    streams: &Streams,
) -> Result<OuterStats> {
    let t0 = Instant::now();
    let t = state.step;
    let k_total = cfg.k.k_at(t, cfg.outer_steps);
    let stride = cfg.max_attack_len();
    let (mut retain_loss, mut g) = retain_grads(&state.model, cfg, streams, data, t);
    let kl_pass = usize::from(cfg.retain_kl > 0.0);
    if cfg.retain_kl > 0.0 {
        let b = Batch::new(&streams.retain.batch(t), data.pad_id, cfg.retain_batch.max_len, &state.model);
        let (kl, gk) = retain_kl_grads(&state.model, theta0, &b);
        retain_loss += cfg.retain_kl * kl;
        add_scaled(&mut g, &gk, cfg.retain_kl);
    }
    let attack = sample_attack(cfg, t, 0);
    let attack_variant = attack.variant();
    let selected = cfg.inner.steps(k_total);
    let len = attack.len(k_total);
    let mut sim = InnerAttack::new(&state.model, attack, len)?;
    let (mut tr_sum, mut harm_end) = (0.0, f64::NAN);
    // The last `meta_steps` inner steps, oldest first, for the meta-gradient correction.
    let mut records: std::collections::VecDeque<InnerRecord> = Default::default();
    let mut meta_passes = 0;
    for k in 1..=len {
        let idx = t * stride + k - 1;
        let before = (cfg.meta_steps > 0).then(|| sim.attacked.clone());
        let benign = sim.attack.benign_at(k - 1);
        let batch = attack_batch(&sim.attacked, streams, data, cfg.attack.batch.max_len, idx, benign);
        let (l, gh, lr) = sim.step(&batch);
        harm_end = l;
        if let Some(before) = before {
            let jac = optim::step_jacobian(&sim.attack.optimizer, &sim.opt, &gh, &before.params, lr);
            records.push_back(InnerRecord { before, batch, grad: gh, jac });
            if records.len() > cfg.meta_steps {
                records.pop_front();
            }
        }
        if let Some(&(_, w)) = sim.attack.counted_step(k).and_then(|h| selected.iter().find(|(kk, _)| *kk == h)) {
            let (l_ref, _, mut gt) = tr_grads(&sim.attacked, cfg, streams, data, idx);
            for rec in records.iter().rev() {
                gt = backprop_inner(rec, &gt, cfg.meta_fd);
                meta_passes += 1;
            }
            tr_sum += w * l_ref;
            add_scaled(&mut g, &gt, cfg.beta * w);
        }
    }
    let (grad_norm, lr) = apply_outer(state, cfg, g, [retain_loss, tr_sum, harm_end])?;
    Ok(OuterStats {
        step: state.step,
        k: k_total,
        retain_loss,
        tr_loss: tr_sum,
        harmful_loss_end: harm_end,
        grad_norm,
        lr,
        attack_optimizer: sim.attack.optimizer.kind.to_string(),
        attack_lr: sim.attack.lr,
        attack_variant,
        passes: len + selected.len() * cfg.tr_passes() + meta_passes + 1 + kl_pass,
        seconds: t0.elapsed().as_secs_f64(),
    })
}

/// Called after every outer step.
pub type OuterCallback<'a> = dyn FnMut(&OuterStats) -> Result<()> + 'a;

/// Options of a hardening run.
#[derive(Default)]
pub struct HardenOptions<'a> {
    /// Checkpoints and `metrics.jsonl` go here; an existing checkpoint is resumed.
    pub out_dir: Option<std::path::PathBuf>,
    pub progress: bool,
    /// Stop after this many outer steps without a final checkpoint (as a killed run would).
    pub stop_after: Option<usize>,
    pub on_step: Option<&'a mut OuterCallback<'a>>,
}

/// The progress line of an outer step.
pub fn describe(st: &OuterStats) -> String {
    format!(
        "K {} | retain {:.3} | tr {:.3} | harm {:.3} | {:.1}s/step",
        st.k, st.retain_loss, st.tr_loss, st.harmful_loss_end, st.seconds
    )
}

/// Run a Patcher method (sequential or parallel: a [`driver::Method`] whose steps are outer
/// steps) from `model` through the one training driver. `run_key` identifies the run's config
/// in checkpoints (resuming with a different one is refused).
pub fn drive<C: Serialize, M: driver::Method<Stats = OuterStats>>(
    model: &Llama,
    cfg: &PatcherConfig,
    run_key: &C,
    label: &str,
    method: &mut M,
    opts: HardenOptions,
) -> Result<Llama> {
    let HardenOptions { out_dir, progress, stop_after, on_step } = opts;
    let mut forward = on_step.map(|cb| move |_: &TrainState, st: &OuterStats| cb(st));
    let options = driver::Options {
        out_dir,
        progress,
        stop_after,
        on_step: forward.as_mut().map(|f| f as &mut driver::OnStep<OuterStats>),
        ..Default::default()
    };
    crate::defense::drive_from(model, (cfg.outer_steps, cfg.checkpoint_every), run_key, label, method, options)
}

struct Sequential<'a> {
    theta0: Llama,
    cfg: &'a PatcherConfig,
    data: &'a PatcherData,
    streams: Streams,
}

impl driver::Method for Sequential<'_> {
    type Stats = OuterStats;

    fn step(&mut self, state: &mut TrainState) -> Result<OuterStats> {
        outer_step(state, &self.theta0, self.cfg, self.data, &self.streams)
    }

    fn describe(&self, st: &OuterStats) -> String {
        describe(st)
    }
}

/// Harden `model` with sequential Patcher. Returns the hardened model.
pub fn harden(model: &Llama, cfg: &PatcherConfig, data: &PatcherData, opts: HardenOptions) -> Result<Llama> {
    check_data(cfg, data)?;
    let mut method = Sequential { theta0: model.untracked(), cfg, data, streams: Streams::new(cfg, data) };
    drive(model, cfg, cfg, "patcher", &mut method, opts)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ks(kind: KScheduleKind, start: usize, end: usize, total: usize) -> Vec<usize> {
        let s = KSchedule { kind, start, end };
        (0..total).map(|t| s.k_at(t, total)).collect()
    }

    /// The values the string-typed schedule gave (`constant`, `linear`, `step`).
    #[test]
    fn k_schedules_give_the_values_they_always_gave() {
        assert_eq!(ks(KScheduleKind::Constant, 3, 9, 5), [3, 3, 3, 3, 3]);
        assert_eq!(ks(KScheduleKind::Linear, 2, 8, 5), [2, 4, 5, 7, 8]);
        assert_eq!(ks(KScheduleKind::Step, 2, 8, 5), [2, 2, 4, 8, 8]);
        assert_eq!(KSchedule { kind: KScheduleKind::Constant, start: 3, end: 9 }.max(), 3);
        assert_eq!(KSchedule { kind: KScheduleKind::Linear, start: 3, end: 9 }.max(), 9);
        assert_eq!(KSchedule { kind: KScheduleKind::Step, start: 9, end: 3 }.max(), 9);
    }

    /// The values the string-typed selection gave (`last`, `every`, `all` × `uniform`, `linear`).
    #[test]
    fn inner_selections_give_the_steps_and_weights_they_always_gave() {
        let sel = |kind, weight| InnerSelection { kind, n: 2, weight }.steps(5);
        assert_eq!(sel(InnerKind::Last, InnerWeight::Linear), [(4, 4.0 / 9.0), (5, 5.0 / 9.0)]);
        assert_eq!(sel(InnerKind::Last, InnerWeight::Uniform), [(4, 0.5), (5, 0.5)]);
        assert_eq!(sel(InnerKind::Every, InnerWeight::Linear), [(2, 2.0 / 11.0), (4, 4.0 / 11.0), (5, 5.0 / 11.0)]);
        let all: Vec<usize> = sel(InnerKind::All, InnerWeight::Uniform).iter().map(|p| p.0).collect();
        assert_eq!(all, [1, 2, 3, 4, 5]);
    }

    /// A NaN injected into one batch of the simulated attacker's data (the poisoned token in
    /// one harmful example) stops Patcher at the outer step whose inner attack draws it.
    #[test]
    fn a_nan_in_one_attack_batch_stops_patcher_at_that_outer_step() {
        use crate::train::engine::tests::{POISON, examples, poisoned_model};
        let b = BatchConfig { batch_size: 4, max_len: 32, bucket_window: 1 };
        let data = PatcherData {
            retain: examples(20, 2, None),
            lookalike: vec![],
            refusal: examples(20, 3, None),
            harmful: examples(40, 4, Some(9)),
            pad_id: 0,
        };
        let cfg_for = |seed| PatcherConfig {
            outer_steps: 12,
            outer_lr: 1e-3,
            retain_batch: b.clone(),
            tr_batch: b.clone(),
            k: KSchedule::constant(2),
            inner: InnerSelection { kind: InnerKind::Last, n: 1, weight: InnerWeight::Uniform },
            attack: AttackDistribution { lrs: vec![1e-3], batch: b.clone(), ..PatcherConfig::core().attack },
            seed,
            checkpoint_every: 1,
            ..PatcherConfig::core()
        };
        // The first outer step t whose inner attack (batches t*K .. t*K+K-1) meets the poison,
        // for the first seed that puts it past outer step 2.
        let first = |cfg: &PatcherConfig| {
            let s = Streams::new(cfg, &data);
            (0..cfg.outer_steps)
                .find(|t| (0..2).any(|k| s.harmful.batch(t * 2 + k).iter().any(|e| e.ids.contains(&POISON))))
        };
        let (cfg, t) = (0..).map(cfg_for).find_map(|c| first(&c).filter(|&t| t >= 2).map(|t| (c, t))).unwrap();
        let dir = std::env::temp_dir().join(format!("patcher-nan-attack-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let opts = HardenOptions { out_dir: Some(dir.clone()), ..Default::default() };
        let err = harden(&poisoned_model(), &cfg, &data, opts).unwrap_err();
        println!("NaN in the attack batch of outer step {}: {err}", t + 1);
        assert!(matches!(err, Error::NonFinite { step, .. } if step == t + 1), "{err}");
        let latest = std::fs::read_to_string(dir.join("latest.json")).unwrap();
        assert!(latest.contains(&format!("\"step\":{t}")), "{latest}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// The look-alike term: the retain pass's loss with ω > 0 is `L_ret + α·L_ref + ω·L_look`,
    /// each the mean NLL of its own batch, checked against three separate passes; ω = 0 adds
    /// no stream and no term; ω > 0 with no look-alikes is an error naming the field.
    #[test]
    fn the_lookalike_term_adds_its_weighted_mean_nll() {
        use crate::testing::{micro_examples, micro_model};
        let b = BatchConfig { batch_size: 3, max_len: 32, bucket_window: 1 };
        let data = PatcherData {
            retain: micro_examples(1, 0),
            lookalike: micro_examples(4, 7),
            refusal: micro_examples(2, 5),
            harmful: micro_examples(3, 11),
            pad_id: 0,
        };
        let model = micro_model(5);
        let mean_nll = |ex: Vec<&Example>| loss_and_grads(&model, &Batch::new(&ex, 0, 32, &model)).0;
        for (omega, t) in [(0.0, 3), (2.5, 3), (2.5, 8)] {
            let cfg =
                PatcherConfig { retain_batch: b.clone(), alpha: 0.7, lookalike_weight: omega, ..PatcherConfig::core() };
            let s = Streams::new(&cfg, &data);
            assert_eq!(s.lookalike.is_some(), omega > 0.0);
            let (got, _) = retain_grads(&model, &cfg, &s, &data, t);
            let mut want = mean_nll(s.retain.batch(t)) + 0.7 * mean_nll(s.refusal.batch(t));
            if let Some(l) = &s.lookalike {
                want += omega * mean_nll(l.batch(t));
            }
            println!("ω = {omega}, step {t}: retain pass {got:.6}, separate passes {want:.6}");
            assert!((got - want).abs() < 1e-5 * want.abs().max(1.0), "ω = {omega}: {got} against {want}");
        }
        let cfg = PatcherConfig { lookalike_weight: 1.0, ..PatcherConfig::core() };
        let err = check_data(&cfg, &PatcherData { lookalike: vec![], ..data }).unwrap_err().to_string();
        assert!(err.contains("lookalike_weight") && err.contains("holds none"), "{err}");
        let bad = PatcherConfig { lookalike_weight: -1.0, ..Default::default() };
        assert!(bad.validate().unwrap_err().to_string().contains("lookalike_weight"));
    }

    /// A Patcher config file (`patcher harden --config`) rejects misspelt settings, naming the
    /// line and the allowed values; the existing spellings parse and survive a round trip.
    #[test]
    fn a_patcher_file_rejects_misspelt_settings_and_round_trips() {
        let text = "[k]\nkind = \"step\"\nstart = 2\nend = 8\n[inner]\nkind = \"every\"\nweight = \"uniform\"\n";
        let c: PatcherConfig = toml::from_str(text).unwrap();
        assert_eq!(
            (c.k.kind, c.inner.kind, c.inner.weight),
            (KScheduleKind::Step, InnerKind::Every, InnerWeight::Uniform)
        );
        assert_eq!(toml::from_str::<PatcherConfig>(&toml::to_string(&c).unwrap()).unwrap(), c);
        for (from, to, allowed) in [
            ("\"step\"", "\"steps\"", "`constant`, `linear`, `step`"),
            ("\"every\"", "\"evry\"", "`last`, `every`, `all`"),
            ("\"uniform\"", "\"Linear\"", "`uniform` or `linear`"),
        ] {
            let msg = toml::from_str::<PatcherConfig>(&text.replacen(from, to, 1)).unwrap_err().to_string();
            assert!(msg.contains(&format!("= {to}")) && msg.contains(allowed), "{to}:\n{msg}");
        }
    }
}
