//! TAR: tamper-resistance training by first-order meta-learning against simulated fine-tuning
//! attacks (Tamirisa et al., 2024, "Tamper-Resistant Safeguards for Open-Weight LLMs",
//! arXiv 2408.00761, ICLR 2025).
//!
//! Each outer step `t` samples an adversary `a` (an optimizer from `adversary_optimizers` and a
//! learning rate from `adversary_lrs`, uniformly) and runs it from a copy of θ with a fresh
//! optimizer state for K steps of harmful SFT on the defender's harmful pairs:
//! `θ'_0 = θ`, `θ'_k = Opt_a(θ'_{k-1}, ∇L_harm(θ'_{k-1}))`. At the points
//! `S = {k ≤ K : k mod tr_every = 0} ∪ {K}` it takes the tamper-resistance loss at the attacked
//! weights on one harmful batch `x_TR` (drawn once per outer step, as in the paper's
//! Algorithm 1):
//!
//! `L_TR(θ'_k) = −H(θ'_k; x_TR)`, with `H` the mean entropy (nats) of the next-token
//! distribution at the harmful answers' loss-carrying positions ([`answer_entropy`]):
//! minimising it keeps the attacked model uncertain on harmful answers, which flattens the
//! attacker's loss at a high value (the paper's weaponization-knowledge objective).
//!
//! The retain loss at θ, on a benign batch `x_r` and a refusal batch `x_ref`:
//!
//! `L_retain(θ) = CE(θ; x_r) + ρ·CE(θ; x_ref) + λ_rep·Rep(θ; x_r)`, where
//! `Rep(θ; x) = 1/(L·N·d) · Σ_{l=1..L} Σ_{p∈P} ‖h_l(θ; x)_p − h_l(θ0; x)_p‖²`
//!
//! is the mean squared distance between θ's and the starting model θ0's residual stream after
//! each of the L decoder layers ([`Llama::hidden_probed`]), averaged over layers, over the N
//! non-pad input positions P of the benign rows (prompt and answer tokens alike, padding
//! excluded) and over the hidden dimension d. θ0's hidden states are computed without a graph.
//! The refusal term `ρ·CE(θ; x_ref)` is an addition to the paper (whose refusal variant trains
//! refusal through a DPO tamper-resistance loss): it keeps the SFT-aligned model refusing
//! while the entropy term works on the harmful answers.
//!
//! The outer gradient is first-order, as in the paper: gradients taken at θ'_k are applied to
//! θ, nothing is back-propagated through the attack trajectory,
//!
//! `g = λ_retain·∇L_retain(θ) + λ_TR·(1/|S|)·Σ_{k∈S} ∇_{θ'}L_TR(θ'_k)`,
//!
//! then `θ ← Opt_outer(θ, g)` (clipped, scheduled; [`Outer::update`]). The paper's defaults are
//! K = 64, λ_TR = 4, λ_retain = 1, the TR loss every 4th inner step and adversary learning rates
//! {2e-6, 2e-5, 4e-5}. Not reproduced: the paper's initial random-mapping safeguard, its mix of
//! adversary data (retain/forget switching attacks) and its optional exponential weighting of
//! the inner steps (S is weighted uniformly here).
//!
//! Cost of one outer step: `K + |S| + 2` passes: K forward/backward passes of the attack, |S|
//! forward/backward passes of the entropy at θ'_k, one forward/backward pass of `L_retain` at θ
//! (CE and the representation term share it) and one forward-only pass of θ0 on the same batch.

use std::time::Instant;

use burn::prelude::*;
use serde::{Deserialize, Serialize};

use crate::defense::{DefenseData, HardenOptions, Hardening, Outer, check_data};
use crate::error::{Error, Result};
use crate::model::Llama;
use crate::model::llama::{Probe, int_tensor};
use crate::rng::Rng;
use crate::train::batches::{BatchConfig, Mixture};
use crate::train::driver;
use crate::train::engine::TrainState;
use crate::train::optim::{self, OptimState, OptimizerConfig};
use crate::train::step::{Batch, Example, add_scaled, answer_entropy, grads_of, loss_and_grads};

/// TAR's settings (`settings` of a `kind = "tar"` defense).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TarConfig {
    /// The outer loop; its batch is that of the retain, refusal and `x_TR` batches.
    pub train: Outer,
    /// K: steps of every simulated attack (the paper's 64).
    pub k: usize,
    /// The entropy is taken at every `tr_every`-th inner step and always at K (the paper's 4).
    pub tr_every: usize,
    /// The adversary's learning rate is sampled uniformly from these per outer step.
    pub adversary_lrs: Vec<f64>,
    /// The adversary's optimizer is sampled uniformly from these per outer step.
    pub adversary_optimizers: Vec<OptimizerConfig>,
    /// Batch of the simulated attack's harmful SFT.
    pub adversary_batch: BatchConfig,
    /// λ_TR: weight of the tamper-resistance gradient (the paper's 4).
    pub lambda_tr: f64,
    /// λ_retain: weight of the retain gradient (the paper's 1).
    pub lambda_retain: f64,
    /// λ_rep: weight of the representation term in the retain loss.
    pub lambda_rep: f64,
    /// ρ: weight of the refusal CE in the retain loss (an addition to the paper).
    pub refusal_weight: f64,
}

impl Default for TarConfig {
    fn default() -> Self {
        Self {
            train: Outer::default(),
            k: 64,
            tr_every: 4,
            adversary_lrs: vec![2e-6, 2e-5, 4e-5],
            adversary_optimizers: vec![OptimizerConfig::adamw()],
            adversary_batch: BatchConfig { batch_size: 8, max_len: 256, bucket_window: 1 },
            lambda_tr: 4.0,
            lambda_retain: 1.0,
            lambda_rep: 1.0,
            refusal_weight: 1.0,
        }
    }
}

impl TarConfig {
    /// S: the inner steps (1-based) at which the entropy is taken.
    pub fn tr_points(&self) -> Vec<usize> {
        (1..=self.k).filter(|k| k % self.tr_every.max(1) == 0 || *k == self.k).collect()
    }
}

/// What one TAR step measured.
#[derive(Debug, Clone, Serialize)]
pub struct TarStats {
    pub step: usize,
    /// `L_retain(θ)`.
    pub retain_loss: f64,
    /// `CE(θ; x_r) + ρ·CE(θ; x_ref)`.
    pub lm_loss: f64,
    /// `Rep(θ; x_r)` (before λ_rep).
    pub rep_loss: f64,
    /// The tamper-resistance loss: `−H` averaged over S.
    pub tr_loss: f64,
    /// The entropy on harmful answers at the attacked weights θ'_K.
    pub entropy_end: f64,
    /// The attacker's harmful loss at its last simulated step (at θ'_{K−1}).
    pub harmful_loss_end: f64,
    pub adversary_optimizer: String,
    pub adversary_lr: f64,
    pub grad_norm: f64,
    pub lr: f64,
    /// Passes of this step (`K + |S| + 2`).
    pub passes: usize,
    pub seconds: f64,
}

/// The batch streams of a TAR run (independent seeds per name).
pub struct Streams {
    pub retain: Mixture,
    pub refusal: Mixture,
    /// `x_TR`: one harmful batch per outer step.
    pub harmful_tr: Mixture,
    /// The simulated attack's harmful batches: step k of outer step t draws batch `t·K + k − 1`.
    pub adversary: Mixture,
}

impl Streams {
    pub fn new(cfg: &TarConfig, data: &DefenseData) -> Self {
        let seed = Rng::derive(cfg.train.seed, "adversary").next_u64();
        Self {
            retain: cfg.train.stream("retain", &data.retain),
            refusal: cfg.train.stream("refusal", &data.refusal),
            harmful_tr: cfg.train.stream("harmful_tr", &data.harmful),
            adversary: Mixture::single("adversary", data.harmful.clone(), cfg.adversary_batch.clone(), seed),
        }
    }
}

/// One sampled adversary.
#[derive(Debug, Clone, PartialEq)]
pub struct Adversary {
    pub optimizer: OptimizerConfig,
    pub lr: f64,
}

/// The adversary of outer step `t` (0-based; a pure function of the seed and `t`).
pub fn sample_adversary(cfg: &TarConfig, t: usize) -> Adversary {
    let mut r = Rng::derive(cfg.train.seed, &format!("tar-adversary/{t}"));
    let optimizer = r.choose(&cfg.adversary_optimizers).clone();
    Adversary { optimizer, lr: *r.choose(&cfg.adversary_lrs) }
}

/// The mean entropy `H` on `batch`'s loss-carrying positions at `at`, and the gradient of
/// `L_TR = −H` there.
pub fn entropy_grads(at: &Llama, batch: &Batch) -> (f64, Vec<Option<Tensor<2>>>) {
    let tracked = at.tracked();
    let h = tracked.hidden(batch.inputs.clone());
    let Some(rows) = batch.answer_rows(h) else {
        let zero = tracked.params[0].clone().sum().mul_scalar(0.0);
        return grads_of(&tracked, zero);
    };
    let (neg_h, g) = grads_of(&tracked, answer_entropy(&tracked, &rows).neg());
    (-neg_h, g)
}

/// The retain pass's batch: benign rows first, then refusal rows (`Batch::weighted`, CE =
/// `CE(x_r) + ρ·CE(x_ref)`), and the flat indices `b·T + i` of the benign rows' non-pad inputs
/// (the positions P of the representation term).
pub struct RetainBatch {
    pub batch: Batch,
    pub positions: Tensor<1, Int>,
    /// N = |P|.
    pub n_positions: usize,
}

impl RetainBatch {
    pub fn new(benign: &[&Example], refusal: &[&Example], cfg: &TarConfig, pad_id: u32, model: &Llama) -> Self {
        let max_len = cfg.train.batch.max_len;
        let batch = Batch::weighted(&[(benign, 1.0), (refusal, cfg.refusal_weight)], pad_id, max_len, model);
        let t = batch.inputs.dims()[1];
        let idx: Vec<i64> = benign
            .iter()
            .enumerate()
            .flat_map(|(b, e)| (0..e.ids.len().min(max_len).min(t)).map(move |i| (b * t + i) as i64))
            .collect();
        let n = idx.len();
        Self { batch, positions: int_tensor(idx, [n], &model.device()), n_positions: n }
    }

    /// Each decoder layer's output `[B, T, d]` of `model` on this batch, and its final hidden
    /// states.
    pub fn layers(&self, model: &Llama) -> (Vec<Tensor<3>>, Tensor<3>) {
        let mut probe = Probe::keeping();
        let h = model.hidden_probed(self.batch.inputs.clone(), &mut probe);
        (probe.layers, h)
    }

    /// `Rep = 1/(L·N·d) · Σ_l Σ_{p∈P} ‖layers_l[p] − base_l[p]‖²`.
    pub fn rep_distance(&self, layers: &[Tensor<3>], base: &[Tensor<3>]) -> Tensor<1> {
        assert_eq!(layers.len(), base.len(), "one base layer per layer");
        let mut total: Option<Tensor<1>> = None;
        let mut d = 1;
        for (h, h0) in layers.iter().zip(base) {
            let [b, t, dim] = h.dims();
            d = dim;
            let diff = (h.clone() - h0.clone()).reshape([b * t, dim]).select(0, self.positions.clone());
            let s = crate::model::fixed::sum(diff.square());
            total = Some(match total {
                Some(x) => x + s,
                None => s,
            });
        }
        let total = total.expect("a model with at least one layer");
        total.div_scalar((layers.len() * self.n_positions.max(1) * d) as f64)
    }
}

/// The retain losses `(L_retain, CE part, Rep)` and `∇L_retain` at `model`, with θ0 = `theta0`
/// (its hidden states untracked), on the batches of outer step `t`.
pub fn retain_grads(
    model: &Llama,
    theta0: &Llama,
    cfg: &TarConfig,
    s: &Streams,
    data: &DefenseData,
    t: usize,
) -> ([f64; 3], Vec<Option<Tensor<2>>>) {
    let (ret, refu) = (s.retain.batch(t), s.refusal.batch(t));
    let rb = RetainBatch::new(&ret, &refu, cfg, data.pad_id, model);
    let (base, _) = rb.layers(&theta0.untracked());
    let tracked = model.tracked();
    let (layers, h) = rb.layers(&tracked);
    let ce = rb.batch.loss_from_hidden(&tracked, h);
    let rep = rb.rep_distance(&layers, &base);
    let (ce_v, rep_v) = (scalar(&ce), scalar(&rep));
    let (total, g) = grads_of(&tracked, ce + rep.mul_scalar(cfg.lambda_rep));
    ([total, ce_v, rep_v], g)
}

fn scalar(x: &Tensor<1>) -> f64 {
    x.clone().inner().into_scalar::<f32>() as f64
}

/// What [`tar_grads`] measured.
#[derive(Debug, Clone)]
pub struct TarLosses {
    /// `[L_retain, CE part, Rep]`.
    pub retain: [f64; 3],
    /// `−H` averaged over S.
    pub tr: f64,
    /// H at θ'_K.
    pub entropy_end: f64,
    /// The attacker's loss at its last step.
    pub harmful_end: f64,
    pub adversary: Adversary,
}

/// TAR's outer gradient `λ_retain·∇L_retain(θ) + λ_TR·(1/|S|)·Σ_{k∈S} ∇L_TR(θ'_k)` at `model`
/// (θ) for outer step `t` (0-based), with the starting model `theta0`.
pub fn tar_grads(
    model: &Llama,
    theta0: &Llama,
    cfg: &TarConfig,
    s: &Streams,
    data: &DefenseData,
    t: usize,
) -> (TarLosses, Vec<Option<Tensor<2>>>) {
    let (retain, g_ret) = retain_grads(model, theta0, cfg, s, data, t);
    let mut g: Vec<Option<Tensor<2>>> = vec![None; g_ret.len()];
    add_scaled(&mut g, &g_ret, cfg.lambda_retain);
    let adversary = sample_adversary(cfg, t);
    let points = cfg.tr_points();
    let w = cfg.lambda_tr / points.len() as f64;
    let x_tr = Batch::new(&s.harmful_tr.batch(t), data.pad_id, cfg.train.batch.max_len, model);
    let mut attacked = model.clone();
    let mut opt = OptimState::new(attacked.params.len());
    let (mut tr, mut entropy_end, mut harmful_end) = (0.0, f64::NAN, f64::NAN);
    for k in 1..=cfg.k {
        let b = Batch::new(&s.adversary.batch(t * cfg.k + k - 1), data.pad_id, cfg.adversary_batch.max_len, model);
        let (l, gk) = loss_and_grads(&attacked, &b);
        optim::step(&adversary.optimizer, &mut opt, &mut attacked.params, &gk, adversary.lr);
        harmful_end = l;
        if points.contains(&k) {
            let (ent, gt) = entropy_grads(&attacked, &x_tr);
            tr -= ent / points.len() as f64;
            entropy_end = ent;
            add_scaled(&mut g, &gt, w);
        }
    }
    (TarLosses { retain, tr, entropy_end, harmful_end, adversary }, g)
}

struct Stepper<'a> {
    cfg: &'a TarConfig,
    data: &'a DefenseData,
    theta0: Llama,
    streams: Streams,
}

impl driver::Method for Stepper<'_> {
    type Stats = TarStats;

    fn step(&mut self, state: &mut TrainState) -> Result<TarStats> {
        let t0 = Instant::now();
        let (l, g) = tar_grads(&state.model, &self.theta0, self.cfg, &self.streams, self.data, state.step);
        let losses = [
            ("retain", l.retain[0]),
            ("tamper-resistance (−entropy)", l.tr),
            ("harmful at the end of the attack", l.harmful_end),
        ];
        let (grad_norm, lr) = self.cfg.train.update(state, g, &losses)?;
        Ok(TarStats {
            step: state.step,
            retain_loss: l.retain[0],
            lm_loss: l.retain[1],
            rep_loss: l.retain[2],
            tr_loss: l.tr,
            entropy_end: l.entropy_end,
            harmful_loss_end: l.harmful_end,
            adversary_optimizer: l.adversary.optimizer.kind.to_string(),
            adversary_lr: l.adversary.lr,
            grad_norm,
            lr,
            passes: self.cfg.passes_per_step(),
            seconds: t0.elapsed().as_secs_f64(),
        })
    }

    fn describe(&self, st: &TarStats) -> String {
        format!(
            "retain {:.3} (rep {:.2e}) | H {:.3} | harm {:.3} @ lr {:.0e} | {:.2}s/step",
            st.retain_loss, st.rep_loss, st.entropy_end, st.harmful_loss_end, st.adversary_lr, st.seconds
        )
    }
}

impl Hardening for TarConfig {
    fn validate(&self) -> Result<()> {
        self.train.validate()?;
        let bad = |why: String| Err(Error::Invalid(why));
        if self.k == 0 {
            return bad("field `k`: is 0; the simulated attack needs at least 1 step".into());
        }
        if self.tr_every == 0 {
            return bad("field `tr_every`: is 0; it must be at least 1".into());
        }
        if self.adversary_lrs.is_empty() {
            return bad("field `adversary_lrs`: is empty; give at least one learning rate".into());
        }
        if let Some(lr) = self.adversary_lrs.iter().find(|lr| !(lr.is_finite() && **lr >= 0.0)) {
            return bad(format!("field `adversary_lrs`: {lr} is not a learning rate"));
        }
        if self.adversary_optimizers.is_empty() {
            return bad("field `adversary_optimizers`: is empty; give at least one optimizer".into());
        }
        if self.adversary_batch.batch_size == 0 {
            return bad("field `adversary_batch.batch_size`: is 0; it must be at least 1".into());
        }
        for (name, v) in [
            ("lambda_tr", self.lambda_tr),
            ("lambda_retain", self.lambda_retain),
            ("lambda_rep", self.lambda_rep),
            ("refusal_weight", self.refusal_weight),
        ] {
            if !(v.is_finite() && v >= 0.0) {
                return bad(format!("field `{name}`: {v} must be a finite weight >= 0"));
            }
        }
        Ok(())
    }

    fn passes_per_step(&self) -> usize {
        self.k + self.tr_points().len() + 2
    }

    fn harden(&self, model: &Llama, data: &DefenseData, opts: HardenOptions) -> Result<Llama> {
        self.validate()?;
        check_data("TAR", data)?;
        let mut stepper = Stepper { cfg: self, data, theta0: model.untracked(), streams: Streams::new(self, data) };
        crate::defense::run(model, &self.train, self, "tar", &mut stepper, opts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::llama::to_vec_f32;
    use crate::testing::{max_diff, micro_data, micro_model};

    fn cfg() -> TarConfig {
        let mut c = TarConfig {
            k: 3,
            tr_every: 2,
            adversary_lrs: vec![1e-2, 3e-2],
            adversary_optimizers: vec![OptimizerConfig::adamw(), OptimizerConfig::sgd(0.9)],
            adversary_batch: BatchConfig { batch_size: 4, max_len: 32, bucket_window: 1 },
            lambda_tr: 2.5,
            lambda_retain: 0.8,
            lambda_rep: 3.0,
            refusal_weight: 0.7,
            ..Default::default()
        };
        c.train.batch = BatchConfig { batch_size: 4, max_len: 32, bucket_window: 1 };
        c.train.seed = 5;
        c
    }

    /// θ0 + noise of standard deviation `std` (seeded).
    fn perturbed(model: &Llama, std: f64, seed: u64) -> Llama {
        let noise = Llama::init((*model.cfg).clone(), std, seed, &model.device());
        let params = model.params.iter().zip(&noise.params).map(|(p, n)| p.clone() + n.clone()).collect();
        Llama { cfg: model.cfg.clone(), params }
    }

    /// H computed on the host in f64 from full logits: `Σ_i w_i·H(softmax(logits_i)) / Σ w_i`
    /// over the positions with weight w_i ≠ 0.
    fn host_entropy(model: &Llama, b: &Batch) -> f64 {
        let logits = to_vec_f32(model.untracked().forward(b.inputs.clone()));
        let w = to_vec_f32(b.weights.clone());
        let v = model.cfg.vocab_size;
        let (mut num, mut den) = (0.0f64, 0.0f64);
        for (i, &wi) in w.iter().enumerate().filter(|(_, w)| **w != 0.0) {
            let row: Vec<f64> = logits[i * v..(i + 1) * v].iter().map(|&x| x as f64).collect();
            let m = row.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let z: f64 = row.iter().map(|x| (x - m).exp()).sum();
            let h: f64 = row.iter().map(|x| (x - m).exp() / z).map(|p| if p > 0.0 { -p * p.ln() } else { 0.0 }).sum();
            num += wi as f64 * h;
            den += wi as f64;
        }
        num / den
    }

    /// `answer_entropy` (head applied to the selected hidden rows) equals the entropy computed
    /// in f64 on the host from `model.forward`'s full logits at the loss-carrying positions.
    #[test]
    fn answer_entropy_equals_the_host_entropy_of_the_full_logits() {
        let (model, data) = (micro_model(7), micro_data());
        let s = Streams::new(&cfg(), &data);
        let b = Batch::new(&s.harmful_tr.batch(1), 0, 32, &model);
        let m = model.untracked();
        let rows = b.answer_rows(m.hidden(b.inputs.clone())).unwrap();
        let ours = scalar(&answer_entropy(&m, &rows));
        let direct = host_entropy(&model, &b);
        let d = (ours - direct).abs();
        println!("answer_entropy {ours:.6} vs host f64 {direct:.6}: |diff| = {d:.3e}");
        assert!(d < 1e-5, "diff {d}");
        assert!(direct > 0.0 && direct < (24f64).ln(), "an entropy over 24 tokens: {direct}");
    }

    /// TAR's outer gradient against a direct computation: the simulated attack reproduced by
    /// hand (same batches, `optim::step` with the sampled adversary, fresh state), −∇H at each
    /// θ'_k in S from full logits, the CE and representation gradients taken separately, all
    /// combined by hand; equal to 1e-6 of the largest gradient entry (f32 sums in another order).
    #[test]
    fn tar_gradient_equals_the_direct_computation() {
        let (theta0, data, c) = (micro_model(7), micro_data(), cfg());
        let model = perturbed(&theta0, 0.02, 11);
        let s = Streams::new(&c, &data);
        let t = 2;
        let (l, g) = tar_grads(&model, &theta0, &c, &s, &data, t);
        assert_eq!(c.tr_points(), [2, 3]);
        // Direct: the adversary, then the attack by hand.
        let adv = sample_adversary(&c, t);
        assert!(c.adversary_lrs.contains(&adv.lr) && c.adversary_optimizers.contains(&adv.optimizer));
        let x_tr = Batch::new(&s.harmful_tr.batch(t), 0, 32, &model);
        let mut at = model.clone();
        let mut opt = OptimState::new(at.params.len());
        let mut tr_grads: Vec<Vec<Tensor<2>>> = vec![];
        let mut entropies = vec![];
        for k in 1..=3 {
            let b = Batch::new(&s.adversary.batch(t * 3 + k - 1), 0, 32, &at);
            let (_, gk) = loss_and_grads(&at, &b);
            optim::step(&adv.optimizer, &mut opt, &mut at.params, &gk, adv.lr);
            if k >= 2 {
                // −H from the full logits, masked by the loss weights.
                let tr = at.tracked();
                let logp = burn::tensor::activation::log_softmax(tr.forward(x_tr.inputs.clone()), 2);
                let [bb, tt, _] = logp.dims();
                let ent = (logp.clone().exp() * logp).sum_dim(2).reshape([bb, tt]).neg(); // (B, T)
                let w = x_tr.weights.clone();
                let h = (ent * w.clone()).sum().div_scalar(w.sum().into_scalar::<f32>() as f64);
                let (hv, gh) = grads_of(&tr, h.neg());
                entropies.push(-hv);
                tr_grads.push(gh.into_iter().map(|x| x.unwrap()).collect());
            }
        }
        assert!(
            at.params
                .iter()
                .zip(&model.params)
                .any(|(a, b)| max_diff(&[Some(a.clone())], std::slice::from_ref(b)) > 1e-4)
        );
        // Retain: CE of the weighted batch and the representation term, separately.
        let (ret, refu) = (s.retain.batch(t), s.refusal.batch(t));
        let align = Batch::weighted(&[(&ret, 1.0), (&refu, 0.7)], 0, 32, &model);
        let (ce, g_ce) = loss_and_grads(&model, &align);
        let rb = RetainBatch::new(&ret, &refu, &c, 0, &model);
        let (base, _) = rb.layers(&theta0.untracked());
        let tr = model.tracked();
        let (layers, _) = rb.layers(&tr);
        // Rep by a separate route: per layer, per benign row, the real positions' squared error.
        let tt = align.inputs.dims()[1];
        let mut rep = tr.params[0].clone().sum().mul_scalar(0.0);
        let mut n = 0;
        for (h, h0) in layers.iter().zip(&base) {
            for (b, e) in ret.iter().enumerate() {
                let len = e.ids.len().min(32).min(tt);
                n += len;
                let d = h.clone().slice([b..b + 1, 0..len]) - h0.clone().slice([b..b + 1, 0..len]);
                rep = rep + d.square().sum();
            }
        }
        let rep = rep.div_scalar((n * 16) as f64);
        let (rep_v, g_rep) = grads_of(&tr, rep);
        assert!(rep_v > 0.0);
        let direct: Vec<Tensor<2>> = (0..g.len())
            .map(|i| {
                let retain = g_ce[i].clone().unwrap() + g_rep[i].clone().unwrap().mul_scalar(3.0);
                let trg = tr_grads[0][i].clone() + tr_grads[1][i].clone();
                retain.mul_scalar(0.8) + trg.mul_scalar(2.5 / 2.0)
            })
            .collect();
        let (dl, dr) = ((l.retain[1] - ce).abs(), (l.retain[2] - rep_v).abs());
        let de = (l.tr + (entropies[0] + entropies[1]) / 2.0).abs();
        println!("losses: |CE diff| {dl:.2e}, |Rep diff| {dr:.2e}, |TR diff| {de:.2e}");
        assert!(dl < 1e-5 && dr < 1e-6 && de < 1e-5);
        let d = max_diff(&g, &direct);
        let zeros: Vec<Tensor<2>> = direct.iter().map(|x| x.zeros_like()).collect();
        let scale = max_diff(&direct.iter().cloned().map(Some).collect::<Vec<_>>(), &zeros);
        println!("TAR outer gradient vs direct: max |diff| = {d:.3e}, max |g| = {scale:.3e} (adversary {adv:?})");
        // f32 sums in another order: relative 1e-6 of the largest entry.
        assert!(d < 1e-6 * scale.max(1.0), "max diff {d}");
    }

    /// The representation term is 0 with zero gradient at θ = θ0 (to f32 rounding: Rep < 1e-12,
    /// max |∇Rep| < 1e-6); at a perturbed θ its gradient matches central finite differences
    /// (ε = 1e-2) on a few parameter entries to 2% relative error.
    #[test]
    fn representation_term_is_zero_at_theta0_and_its_gradient_matches_finite_differences() {
        let (theta0, data, c) = (micro_model(7), micro_data(), cfg());
        let s = Streams::new(&c, &data);
        let (ret, refu) = (s.retain.batch(0), s.refusal.batch(0));
        let rb = RetainBatch::new(&ret, &refu, &c, 0, &theta0);
        let (base, _) = rb.layers(&theta0.untracked());
        let rep_of = |m: &Llama| -> (f64, Vec<Option<Tensor<2>>>) {
            let tr = m.tracked();
            let (layers, _) = rb.layers(&tr);
            grads_of(&tr, rb.rep_distance(&layers, &base))
        };
        let (r0, g0) = rep_of(&theta0);
        let zeros: Vec<Tensor<2>> = theta0.params.iter().map(|p| p.zeros_like()).collect();
        let gmax = max_diff(&g0, &zeros);
        let model = perturbed(&theta0, 0.05, 13);
        let (r, g) = rep_of(&model);
        let gscale = max_diff(&g, &zeros);
        // θ's graph-recording forward and θ0's untracked one round differently in f32, so
        // "zero" is f32 rounding: Rep ~ (1e-7)², the gradient ~1e-6 of its size at θ0 + noise.
        println!(
            "at θ0: Rep = {r0:.3e}, max |∇Rep| = {gmax:.3e}; at θ0 + noise: Rep = {r:.3e}, max |∇Rep| = {gscale:.3e}"
        );
        assert!(r0.abs() < 1e-12 && gmax < 1e-6 && gmax < 1e-4 * gscale, "Rep {r0}, gradient {gmax}");
        assert!(r > 0.0);
        let value = |m: &Llama| -> f64 {
            let (layers, _) = rb.layers(&m.untracked());
            scalar(&rb.rep_distance(&layers, &base))
        };
        let eps = 1e-2;
        let mut worst: f64 = 0.0;
        // (parameter, flat entry): the embedding, layer 0's q and input norm, layer 1's down.
        for (pi, e) in [(0usize, 37usize), (2, 5), (1, 3), (9 + 9, 50)] {
            let shape = model.params[pi].dims();
            let bump = |delta: f32| {
                let mut v = to_vec_f32(model.params[pi].clone());
                v[e] += delta;
                let mut m = model.clone();
                m.params[pi] = Tensor::<2>::from_data(TensorData::new(v, shape), &model.device());
                value(&m)
            };
            let fd = (bump(eps as f32) - bump(-eps as f32)) / (2.0 * eps);
            let an = to_vec_f32(g[pi].clone().unwrap())[e] as f64;
            let err = (fd - an).abs() / an.abs().max(1e-3);
            println!("param {pi} entry {e}: analytic {an:.5e}, central FD {fd:.5e}, relative error {err:.2e}");
            worst = worst.max(err);
        }
        assert!(worst < 2e-2, "worst relative error {worst}");
    }

    /// A run stopped after 2 steps and resumed gives the weights of an uninterrupted run.
    #[test]
    fn killed_and_resumed_tar_equals_an_uninterrupted_run() {
        let (model, data) = (micro_model(7), micro_data());
        let mut c = cfg();
        c.k = 2;
        c.tr_every = 1;
        c.train.steps = 3;
        c.train.lr = 1e-2;
        c.train.checkpoint_every = 1;
        crate::testing::assert_resumes("tar", &model, 3, 2, 1e-4, |o| c.harden(&model, &data, o).unwrap());
    }

    /// Settings: defaults are the paper's; misspelt keys and bad values name the field.
    #[test]
    fn tar_settings_name_the_field_and_count_passes() {
        let c = TarConfig::default();
        assert_eq!((c.k, c.tr_every, c.lambda_tr, c.lambda_retain), (64, 4, 4.0, 1.0));
        assert_eq!(c.passes_per_step(), 64 + 16 + 2);
        assert_eq!(TarConfig { k: 10, tr_every: 4, ..Default::default() }.tr_points(), [4, 8, 10]);
        let err = toml::from_str::<TarConfig>("lamda_tr = 1.0").unwrap_err().to_string();
        assert!(err.contains("lamda_tr"), "{err}");
        for (c, field) in [
            (TarConfig { k: 0, ..Default::default() }, "`k`"),
            (TarConfig { tr_every: 0, ..Default::default() }, "`tr_every`"),
            (TarConfig { adversary_lrs: vec![], ..Default::default() }, "`adversary_lrs`"),
            (TarConfig { lambda_rep: f64::NAN, ..Default::default() }, "`lambda_rep`"),
        ] {
            let e = c.validate().unwrap_err().to_string();
            assert!(e.contains(field), "{e}");
        }
    }
}
