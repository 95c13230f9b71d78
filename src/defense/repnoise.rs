//! RepNoise: Representation Noising (Rosati et al., 2024, "Representation Noising: A Defence
//! Mechanism Against Harmful Finetuning", NeurIPS 2024; reference code
//! `representation_noising/loss.py`).
//!
//! The loss, with `L_ret` the retain loss (`L_benign + ρ·L_ref` on benign and refusal data),
//! `h_l(x)` the residual stream after decoder layer `l` of `L`, read at the positions of the
//! answer tokens of the defender's harmful pairs, and `z_l` as many samples of `N(0, I)`:
//!
//! `min_θ L_ret(θ) − α·log(1 + H(θ)) + β·(1/L)·Σ_l MMD²(h_l(x_harm), z_l)`
//!
//! - `H = (1/L)·Σ_l CE(head(norm(h_l)))`: the harmful answers' cross-entropy read through the
//!   final norm and head at every layer (the "logit lens"; at `l = L` it is the model's own
//!   loss), as the reference code ascends the harmful loss of every layer's prediction. The
//!   ascent is bounded in the paper's way, by the log: the term falls only logarithmically
//!   and its gradient `−α·∇H/(1 + H)` fades as `H` grows, so the harmful loss is pushed up
//!   without the runaway of plain gradient ascent (no `log(1 − p)` or cap is used). The
//!   reference code takes the log of
//!   `(CE_out + Σ_{l=0..L} CE_l)/(L + 1) + 1` over Hugging Face's `L + 1` hidden states (the
//!   embeddings included, the last layer counted twice); here the mean runs over the `L`
//!   decoder layers once.
//! - `MMD²` is the biased (V-statistic) estimate with the reference code's multi-bandwidth
//!   Gaussian kernel `k(a, b) = Σ_{i=0..4} exp(−‖a − b‖²/(σ̄·2^{i−2}))`, `σ̄` the mean squared
//!   distance between distinct points of the pooled sample (treated as a constant):
//!   `mean K_xx + mean K_yy − 2·mean K_xy`, diagonals included ([`mmd`]). The rows are those
//!   whose input token is an answer token ([`answer_token_rows`]), the reference code's mask
//!   (where the harmful and the paired harmless sequences differ): the last prompt position,
//!   where the model decides whether to refuse, is not noised. Each such position is one
//!   sample in `R^d` (the reference code flattens each masked sequence into one sample of
//!   dimension `T·d`, so a batch of B gives B samples; per-position samples give a usable
//!   estimate at the small batches of the tiny tier). The noise is seeded by
//!   (`train.seed`, step, layer), so a resumed run draws the same noise. The reference code
//!   hooks each layer's MLP output; this reads the residual stream after the layer.
//!
//! Defaults are the reference code's `alpha = 1`, `beta = 0.001`. With `β = 0.001` the noise
//! term is inert on the tiny tier (the MMD² stays near its start, about 2.4 of at most 10);
//! `β = 1` moves it and is the setting used there. Cost: two forward/backward passes per step
//! (the retain batch; the harmful batch, whose one pass carries both the ascent and the noise
//! terms). RepNoise is an alignment-stage defense; here, as every defense
//! in this crate, it continues from the SFT-aligned model.

use std::time::Instant;

use burn::prelude::*;
use serde::{Deserialize, Serialize};

use crate::defense::{DefenseData, HardenOptions, Hardening, Outer, check_data};
use crate::error::{Error, Result};
use crate::model::Llama;
use crate::model::fixed;
use crate::model::llama::{Probe, float_like, int_tensor, to_vec_f32};
use crate::rng::Rng;
use crate::train::batches::Mixture;
use crate::train::driver;
use crate::train::engine::TrainState;
use crate::train::step::{Batch, add_scaled, grads_of, loss_and_grads};

/// Number of Gaussian kernels in [`mmd`] (the reference code's `kernel_num`).
pub const KERNELS: usize = 5;
/// Ratio of consecutive bandwidths in [`mmd`] (the reference code's `kernel_mul`).
pub const KERNEL_MUL: f64 = 2.0;

/// RepNoise's settings (`settings` of a `kind = "repnoise"` defense).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RepNoiseConfig {
    pub train: Outer,
    /// α: weight of the bounded harmful ascent `−α·log(1 + H)` (the reference code's 1).
    pub alpha: f64,
    /// β: weight of the noise term `(1/L)·Σ_l MMD²` (the reference code's 0.001).
    pub beta: f64,
    /// ρ: weight of the refusal loss in the retain loss `L_benign + ρ·L_ref`.
    pub refusal_weight: f64,
}

impl Default for RepNoiseConfig {
    fn default() -> Self {
        Self { train: Outer::default(), alpha: 1.0, beta: 0.001, refusal_weight: 1.0 }
    }
}

/// What one RepNoise step measured.
#[derive(Debug, Clone, Serialize)]
pub struct RepNoiseStats {
    pub step: usize,
    /// L_ret(θ).
    pub retain_loss: f64,
    /// H(θ): the harmful cross-entropy averaged over the layers' logit-lens predictions.
    pub harmful_loss: f64,
    /// The harmful cross-entropy of the model's own output (the last layer's term of H).
    pub harmful_loss_output: f64,
    /// (1/L)·Σ_l MMD²(h_l, z_l).
    pub mmd: f64,
    /// The whole objective `L_ret − α·log(1 + H) + β·MMD`.
    pub loss: f64,
    pub grad_norm: f64,
    pub lr: f64,
    pub seconds: f64,
}

/// The losses of one step, as [`repnoise_grads`] measured them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Losses {
    pub retain: f64,
    pub harmful: f64,
    pub harmful_output: f64,
    pub mmd: f64,
    pub total: f64,
}

/// The three batch streams of a RepNoise run.
pub struct Streams {
    pub retain: Mixture,
    pub refusal: Mixture,
    pub harmful: Mixture,
}

impl Streams {
    pub fn new(cfg: &RepNoiseConfig, data: &DefenseData) -> Self {
        Self {
            retain: cfg.train.stream("retain", &data.retain),
            refusal: cfg.train.stream("refusal", &data.refusal),
            harmful: cfg.train.stream("harmful", &data.harmful),
        }
    }
}

/// The biased estimate of the squared maximum mean discrepancy between the samples `x`
/// `[n, d]` and `y` `[m, d]` (rows are points) under the multi-bandwidth Gaussian kernel
/// `k(a, b) = Σ_{i<KERNELS} exp(−‖a − b‖²/(σ̄·KERNEL_MUL^{i − KERNELS/2}))`, `σ̄` the mean
/// squared distance between distinct points of the pooled sample (detached):
/// `MMD² = (1/n²)·Σ k(x_i, x_j) + (1/m²)·Σ k(y_i, y_j) − (2/(nm))·Σ k(x_i, y_j)`.
/// A one-element tensor, differentiable in `x` and `y`; reductions in fixed order.
pub fn mmd(x: Tensor<2>, y: Tensor<2>) -> Tensor<1> {
    let (n, m) = (x.dims()[0], y.dims()[0]);
    let s = n + m;
    let like = x.clone().inner();
    let z = Tensor::cat(vec![x, y], 0); // (S, d)
    let sq = fixed::row_sums(z.clone().square()).reshape([s, 1]); // (S, 1)
    let gram = z.clone().matmul(z.transpose()); // (S, S)
    let dist = (fixed::broadcast_cols(sq.clone(), s) + fixed::broadcast_rows(sq.transpose(), s) - gram.mul_scalar(2.0))
        .clamp_min(0.0); // (S, S): ‖z_i − z_j‖²
    let total = fixed::sum(dist.clone().detach()).inner().into_scalar::<f32>() as f64;
    let mean_sq = if s > 1 { total / (s * s - s) as f64 } else { 0.0 };
    let base = mean_sq.max(1e-12) / KERNEL_MUL.powi((KERNELS / 2) as i32);
    let mut kernel: Option<Tensor<2>> = None;
    for i in 0..KERNELS {
        let bw = base * KERNEL_MUL.powi(i as i32);
        let k = dist.clone().mul_scalar(-1.0 / bw).exp(); // (S, S)
        kernel = Some(match kernel {
            Some(acc) => acc + k,
            None => k,
        });
    }
    // The V-statistic's weights: 1/n² within x, 1/m² within y, −1/(nm) across.
    let w: Vec<f32> = (0..s * s)
        .map(|ij| {
            let (xi, xj) = (ij / s < n, ij % s < n);
            match (xi, xj) {
                (true, true) => 1.0 / (n * n) as f32,
                (false, false) => 1.0 / (m * m) as f32,
                _ => -1.0 / (n * m) as f32,
            }
        })
        .collect();
    let w = float_like(w, [s, s], &like);
    fixed::sum(kernel.expect("KERNELS > 0") * w)
}

/// `n` samples of `N(0, I_d)` `[n, d]` for `layer` at 1-based `step`, seeded by `seed` (the
/// same on a resumed run), on the device and in the dtype of `like`.
pub fn noise(seed: u64, step: usize, layer: usize, n: usize, d: usize, like: &Tensor<2>) -> Tensor<2> {
    let mut r = Rng::derive(seed, &format!("repnoise-noise/{step}/{layer}"));
    let v: Vec<f32> = (0..n * d).map(|_| r.normal() as f32).collect();
    float_like(v, [n, d], like)
}

/// The rows of `h` `[B, T, d]` at the positions whose input token is an answer token (the
/// position after each loss-carrying one: `weights[b, i − 1] > 0`), `[N, d]`; `None` when
/// there are none.
pub fn answer_token_rows(batch: &Batch, h: Tensor<3>) -> Option<Tensor<2>> {
    let [b, t, d] = h.dims();
    let w = to_vec_f32(batch.weights.clone());
    let idx: Vec<i64> = (0..b * t).filter(|&p| p % t >= 1 && w[p - 1] != 0.0).map(|p| p as i64).collect();
    if idx.is_empty() {
        return None;
    }
    let n = idx.len();
    Some(h.reshape([b * t, d]).select(0, int_tensor(idx, [n], &batch.targets.device())))
}

/// The harmful terms at `tracked` (a [`Llama::tracked`] model) on `harm`, for 1-based `step`:
/// `(H, CE of the output, (1/L)·Σ_l MMD²(h_l, z_l))` as one-element tensors.
pub fn harmful_terms(
    tracked: &Llama,
    harm: &Batch,
    seed: u64,
    step: usize,
) -> (Tensor<1>, Tensor<1>, Option<Tensor<1>>) {
    let mut probe = Probe::keeping();
    let out = tracked.hidden_probed(harm.inputs.clone(), &mut probe);
    let layers = probe.layers.len();
    let d = tracked.cfg.hidden_size;
    let mut ce: Option<Tensor<1>> = None;
    let mut noise_term: Option<Tensor<1>> = None;
    for (l, h) in probe.layers.into_iter().enumerate() {
        let lens = harm.loss_from_hidden(tracked, tracked.apply_final_norm(h.clone()));
        ce = Some(match ce {
            Some(acc) => acc + lens,
            None => lens,
        });
        if let Some(rows) = answer_token_rows(harm, h) {
            let n = rows.dims()[0];
            let z = noise(seed, step, l, n, d, &tracked.params[0]);
            let m = mmd(rows, z);
            noise_term = Some(match noise_term {
                Some(acc) => acc + m,
                None => m,
            });
        }
    }
    let h = ce.expect("at least one layer").div_scalar(layers as f64);
    let output = harm.loss_from_hidden(tracked, out);
    (h, output, noise_term.map(|m| m.div_scalar(layers as f64)))
}

fn value(t: &Tensor<1>) -> f64 {
    t.clone().inner().into_scalar::<f32>() as f64
}

/// The losses and RepNoise's gradient `∇L_ret − α·∇H/(1 + H) + β·∇MMD` at `model` on the
/// batches of step `t` (0-based; the noise is that of step `t + 1`).
pub fn repnoise_grads(
    model: &Llama,
    cfg: &RepNoiseConfig,
    s: &Streams,
    data: &DefenseData,
    t: usize,
) -> (Losses, Vec<Option<Tensor<2>>>) {
    let max_len = cfg.train.batch.max_len;
    let (ret, refu) = (s.retain.batch(t), s.refusal.batch(t));
    let retain = Batch::weighted(&[(&ret, 1.0), (&refu, cfg.refusal_weight)], data.pad_id, max_len, model);
    let (r, mut g) = loss_and_grads(model, &retain);
    let harm = Batch::new(&s.harmful.batch(t), data.pad_id, max_len, model);
    let tracked = model.tracked();
    let (h, output, m) = harmful_terms(&tracked, &harm, cfg.train.seed, t + 1);
    let (hv, ov) = (value(&h), value(&output));
    let mv = m.as_ref().map(value).unwrap_or(0.0);
    let mut objective = h.add_scalar(1.0).log().mul_scalar(-cfg.alpha);
    if let Some(m) = m {
        objective = objective + m.mul_scalar(cfg.beta);
    }
    let (o, gh) = grads_of(&tracked, objective);
    add_scaled(&mut g, &gh, 1.0);
    (Losses { retain: r, harmful: hv, harmful_output: ov, mmd: mv, total: r + o }, g)
}

struct Stepper<'a> {
    cfg: &'a RepNoiseConfig,
    data: &'a DefenseData,
    streams: Streams,
}

impl driver::Method for Stepper<'_> {
    type Stats = RepNoiseStats;

    fn step(&mut self, state: &mut TrainState) -> Result<RepNoiseStats> {
        let t0 = Instant::now();
        let (l, g) = repnoise_grads(&state.model, self.cfg, &self.streams, self.data, state.step);
        let losses = [("retain", l.retain), ("harmful", l.harmful), ("MMD", l.mmd), ("RepNoise objective", l.total)];
        let (grad_norm, lr) = self.cfg.train.update(state, g, &losses)?;
        Ok(RepNoiseStats {
            step: state.step,
            retain_loss: l.retain,
            harmful_loss: l.harmful,
            harmful_loss_output: l.harmful_output,
            mmd: l.mmd,
            loss: l.total,
            grad_norm,
            lr,
            seconds: t0.elapsed().as_secs_f64(),
        })
    }

    fn describe(&self, st: &RepNoiseStats) -> String {
        format!(
            "retain {:.3} | harm {:.3} (out {:.3}) | mmd {:.4} | {:.2}s/step",
            st.retain_loss, st.harmful_loss, st.harmful_loss_output, st.mmd, st.seconds
        )
    }
}

impl Hardening for RepNoiseConfig {
    fn validate(&self) -> Result<()> {
        self.train.validate()?;
        for (name, v) in [("alpha", self.alpha), ("beta", self.beta), ("refusal_weight", self.refusal_weight)] {
            if !(v.is_finite() && v >= 0.0) {
                return Err(Error::Invalid(format!("field `{name}`: {v} must be a weight >= 0")));
            }
        }
        Ok(())
    }

    fn passes_per_step(&self) -> usize {
        2
    }

    fn harden(&self, model: &Llama, data: &DefenseData, opts: HardenOptions) -> Result<Llama> {
        self.validate()?;
        check_data("RepNoise", data)?;
        let mut stepper = Stepper { cfg: self, data, streams: Streams::new(self, data) };
        crate::defense::run(model, &self.train, self, "repnoise", &mut stepper, opts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::llama::{linear, rms_norm};
    use crate::testing::{max_diff, micro_data, micro_model};

    fn cfg() -> RepNoiseConfig {
        let mut c = RepNoiseConfig { alpha: 0.8, beta: 0.3, refusal_weight: 0.7, ..Default::default() };
        c.train.batch.batch_size = 4;
        c.train.batch.max_len = 32;
        c.train.seed = 3;
        c
    }

    fn sample(seed: u64, n: usize, d: usize, shift: f64) -> Vec<f64> {
        let mut r = Rng::new(seed);
        (0..n * d).map(|_| r.normal() + shift).collect()
    }

    fn tensor(v: &[f64], n: usize, d: usize) -> Tensor<2> {
        float_like(v.iter().map(|&x| x as f32).collect(), [n, d], &micro_model(0).params[0])
    }

    /// The biased MMD² of the multi-bandwidth kernel, in f64 on the host from the definition:
    /// pairwise distances by subtraction, σ̄ over distinct pairs, the three block means.
    fn mmd_direct(x: &[f64], y: &[f64], d: usize) -> f64 {
        let pts: Vec<&[f64]> = x.chunks(d).chain(y.chunks(d)).collect();
        let (n, s) = (x.len() / d, pts.len());
        let dist = |i: usize, j: usize| pts[i].iter().zip(pts[j]).map(|(a, b)| (a - b) * (a - b)).sum::<f64>();
        let mut total = 0.0;
        for i in 0..s {
            for j in 0..s {
                if i != j {
                    total += dist(i, j);
                }
            }
        }
        let base = total / (s * s - s) as f64 / 4.0;
        let k = |i: usize, j: usize| (0..5).map(|e| (-dist(i, j) / (base * 2f64.powi(e))).exp()).sum::<f64>();
        let block = |a: std::ops::Range<usize>, b: std::ops::Range<usize>| {
            let len = (a.len() * b.len()) as f64;
            a.flat_map(|i| b.clone().map(move |j| (i, j))).map(|(i, j)| k(i, j)).sum::<f64>() / len
        };
        block(0..n, 0..n) + block(n..s, n..s) - 2.0 * block(0..n, n..s)
    }

    /// [`mmd`] equals the biased MMD² computed in f64 on the host (unequal sample sizes).
    #[test]
    fn mmd_equals_the_direct_f64_computation() {
        let d = 6;
        let (x, y) = (sample(1, 13, d, 0.0), sample(2, 9, d, 0.4));
        let got = value(&mmd(tensor(&x, 13, d), tensor(&y, 9, d)));
        let want = mmd_direct(&x, &y, d);
        let diff = (got - want).abs();
        println!("MMD² {got:.6} vs direct f64 {want:.6}: |diff| = {diff:.3e}");
        assert!(diff < 1e-5, "|diff| {diff}");
    }

    /// Two samples of one distribution are close in MMD²; a shifted sample is far.
    #[test]
    fn mmd_is_small_for_one_distribution_and_larger_for_a_shifted_one() {
        let d = 8;
        let x = tensor(&sample(1, 64, d, 0.0), 64, d);
        let same = value(&mmd(x.clone(), tensor(&sample(2, 64, d, 0.0), 64, d)));
        let shifted = value(&mmd(x, tensor(&sample(2, 64, d, 1.0), 64, d)));
        println!("MMD² same distribution {same:.4}, shifted by 1 per coordinate {shifted:.4}");
        assert!(same < 0.25 * shifted, "same {same}, shifted {shifted}");
    }

    /// RepNoise's gradient against a direct composition of separately computed parts: the
    /// retain gradient of a weighted batch, `−α/(1 + H)` times the gradient of `H` (each layer's
    /// logit-lens loss built from full logits), and `β` times the gradient of the mean MMD² (rows
    /// picked from the examples' answer masks).
    #[test]
    fn repnoise_gradient_equals_the_direct_composition() {
        let (model, data, c) = (micro_model(7), micro_data(), cfg());
        let s = Streams::new(&c, &data);
        let (l, g) = repnoise_grads(&model, &c, &s, &data, 2);
        let (ret, refu, harm) = (s.retain.batch(2), s.refusal.batch(2), s.harmful.batch(2));
        let retain = Batch::weighted(&[(&ret, 1.0), (&refu, 0.7)], 0, 32, &model);
        let (r, gr) = loss_and_grads(&model, &retain);
        let hb = Batch::new(&harm, 0, 32, &model);
        let layers = model.cfg.num_layers;
        // H from full logits of every layer through the final norm and the head.
        let lens = |tracked: &Llama| {
            let mut probe = Probe::keeping();
            tracked.hidden_probed(hb.inputs.clone(), &mut probe);
            let ni = tracked.specs().iter().position(|s| s.name == "model.norm.weight").unwrap();
            let norm = tracked.params[ni].clone();
            let terms: Vec<Tensor<1>> = probe
                .layers
                .iter()
                .map(|h| {
                    let normed = rms_norm(h.clone(), norm.clone(), tracked.cfg.rms_norm_eps);
                    let logits = linear(normed, tracked.params[0].clone()); // tied head: the embedding
                    hb.loss_of(logits)
                })
                .collect();
            (terms, probe.layers)
        };
        let tracked = model.tracked();
        let (terms, _) = lens(&tracked);
        let h = terms.into_iter().reduce(|a, b| a + b).unwrap().div_scalar(layers as f64);
        let (hv, gh) = grads_of(&tracked, h);
        // The noise term at the answer tokens' positions, read off the examples' masks.
        let tracked = model.tracked();
        let (_, hidden) = lens(&tracked);
        let t = hb.inputs.dims()[1];
        let idx: Vec<i64> = harm
            .iter()
            .enumerate()
            .flat_map(|(b, e)| {
                let n = e.ids.len().min(32);
                (0..t).filter(move |&i| i < n && e.mask[i] > 0).map(move |i| (b * t + i) as i64)
            })
            .collect();
        let n = idx.len();
        let index = int_tensor(idx, [n], &model.device());
        let m = hidden
            .into_iter()
            .enumerate()
            .map(|(li, hl)| {
                let [b, t, d] = hl.dims();
                let rows = hl.reshape([b * t, d]).select(0, index.clone());
                mmd(rows, noise(3, 3, li, n, d, &model.params[0]))
            })
            .reduce(|a, b| a + b)
            .unwrap()
            .div_scalar(layers as f64);
        let (mv, gm) = grads_of(&tracked, m);
        assert!((l.retain - r).abs() < 1e-6 && (l.harmful - hv).abs() < 1e-5 && (l.mmd - mv).abs() < 1e-5, "{l:?}");
        let total = r - 0.8 * (1.0 + hv).ln() + 0.3 * mv;
        assert!((l.total - total).abs() < 1e-5, "objective {} vs {total}", l.total);
        let direct: Vec<Tensor<2>> = (0..g.len())
            .map(|i| {
                let (a, b, c2) = (gr[i].clone().unwrap(), gh[i].clone().unwrap(), gm[i].clone().unwrap());
                a + b.mul_scalar(-0.8 / (1.0 + hv)) + c2.mul_scalar(0.3)
            })
            .collect();
        let d = max_diff(&g, &direct);
        println!("RepNoise gradient vs direct composition: max |diff| = {d:.3e} (H {hv:.4}, MMD² {mv:.4})");
        assert!(d < 1e-5, "max diff {d}");
    }

    /// A run stopped after 2 steps and resumed ends at the uninterrupted run's weights: the
    /// batches and the noise depend only on the step.
    #[test]
    fn a_stopped_and_resumed_run_equals_the_uninterrupted_run() {
        let (model, data) = (micro_model(7), micro_data());
        let mut c = cfg();
        c.train.steps = 4;
        c.train.lr = 1e-2;
        c.train.checkpoint_every = 1;
        crate::testing::assert_resumes("repnoise", &model, 4, 2, 1e-3, |o| c.harden(&model, &data, o).unwrap());
    }
}
