//! Booster: alignment with an attenuated harmful perturbation (Huang et al., 2024, "Booster:
//! Tackling Harmful Fine-tuning for Large Language Models via Attenuating Harmful
//! Perturbation", ICLR 2025).
//!
//! The loss, with `f` the alignment loss (`L_ret + ρ·L_ref` on benign and refusal data) and
//! `h` the harmful loss on the defender's harmful pairs:
//!
//! `min_θ f(θ) + λ·[h(θ) − h(θ − α·∇h(θ)/‖∇h(θ)‖)]`
//!
//! The bracket is how much one normalised harmful step of length α lowers the harmful loss;
//! minimising it flattens the harmful loss around θ, so that a fine-tuning attack's first
//! steps make less progress. As in the paper's implementation the gradient is first-order:
//! the perturbed point θ̃ = θ − α·∇h/‖∇h‖ is treated as a constant offset, giving
//! `∇f(θ) + λ·[∇h(θ) − ∇h(θ̃)]`. Cost: three forward/backward passes per step.
//!
//! Booster is an alignment-stage defense; here, as every defense in this crate, it continues
//! from the SFT-aligned model.

use std::time::Instant;

use burn::prelude::*;
use serde::{Deserialize, Serialize};

use crate::defense::{DefenseData, Hardening, HardenOptions, Outer, check_data};
use crate::error::{Error, Result};
use crate::model::Llama;
use crate::train::batches::Mixture;
use crate::train::driver;
use crate::train::engine::TrainState;
use crate::train::optim;
use crate::train::step::{Batch, add_scaled, loss_and_grads};

/// Booster's settings (`settings` of a `kind = "booster"` defense).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BoosterConfig {
    pub train: Outer,
    /// λ: weight of the harmful-loss reduction term (the paper's default 5).
    pub lambda: f64,
    /// α: length of the simulated normalised harmful step (the paper's default 0.1).
    pub alpha: f64,
    /// ρ: weight of the refusal loss in the alignment loss `L_ret + ρ·L_ref`.
    pub refusal_weight: f64,
}

impl Default for BoosterConfig {
    fn default() -> Self {
        Self { train: Outer::default(), lambda: 5.0, alpha: 0.1, refusal_weight: 1.0 }
    }
}

/// What one Booster step measured.
#[derive(Debug, Clone, Serialize)]
pub struct BoosterStats {
    pub step: usize,
    /// f(θ).
    pub align_loss: f64,
    /// h(θ).
    pub harmful_loss: f64,
    /// h(θ̃) after the simulated normalised harmful step.
    pub harmful_loss_perturbed: f64,
    pub grad_norm: f64,
    pub lr: f64,
    pub seconds: f64,
}

/// The three batch streams of a Booster run.
pub struct Streams {
    pub retain: Mixture,
    pub refusal: Mixture,
    pub harmful: Mixture,
}

impl Streams {
    pub fn new(cfg: &BoosterConfig, data: &DefenseData) -> Self {
        Self {
            retain: cfg.train.stream("retain", &data.retain),
            refusal: cfg.train.stream("refusal", &data.refusal),
            harmful: cfg.train.stream("harmful", &data.harmful),
        }
    }
}

/// The losses `(f(θ), h(θ), h(θ̃))` and Booster's gradient `∇f(θ) + λ·[∇h(θ) − ∇h(θ̃)]` at
/// `model` on the batches of step `t`.
pub fn booster_grads(
    model: &Llama,
    cfg: &BoosterConfig,
    s: &Streams,
    data: &DefenseData,
    t: usize,
) -> ([f64; 3], Vec<Option<Tensor<2>>>) {
    let max_len = cfg.train.batch.max_len;
    let (ret, refu) = (s.retain.batch(t), s.refusal.batch(t));
    let align = Batch::weighted(&[(&ret, 1.0), (&refu, cfg.refusal_weight)], data.pad_id, max_len, model);
    let (f, mut g) = loss_and_grads(model, &align);
    let harm = Batch::new(&s.harmful.batch(t), data.pad_id, max_len, model);
    let (h, gh) = loss_and_grads(model, &harm);
    // θ̃ = θ − α·∇h/‖∇h‖.
    let norm = optim::grad_norm(&gh);
    let mut perturbed = model.clone();
    let scale = if norm > 0.0 { cfg.alpha / norm } else { 0.0 };
    for (p, gp) in perturbed.params.iter_mut().zip(&gh) {
        if let Some(gp) = gp {
            *p = p.clone() - gp.clone().mul_scalar(scale);
        }
    }
    let (h_tilde, gh_tilde) = loss_and_grads(&perturbed, &harm);
    add_scaled(&mut g, &gh, cfg.lambda);
    add_scaled(&mut g, &gh_tilde, -cfg.lambda);
    ([f, h, h_tilde], g)
}

struct Stepper<'a> {
    cfg: &'a BoosterConfig,
    data: &'a DefenseData,
    streams: Streams,
}

impl driver::Method for Stepper<'_> {
    type Stats = BoosterStats;

    fn step(&mut self, state: &mut TrainState) -> Result<BoosterStats> {
        let t0 = Instant::now();
        let ([f, h, h_tilde], g) = booster_grads(&state.model, self.cfg, &self.streams, self.data, state.step);
        let losses = [("alignment", f), ("harmful", h), ("harmful at the perturbed weights", h_tilde)];
        let (grad_norm, lr) = self.cfg.train.update(state, g, &losses)?;
        Ok(BoosterStats {
            step: state.step,
            align_loss: f,
            harmful_loss: h,
            harmful_loss_perturbed: h_tilde,
            grad_norm,
            lr,
            seconds: t0.elapsed().as_secs_f64(),
        })
    }

    fn describe(&self, st: &BoosterStats) -> String {
        format!(
            "align {:.3} | harm {:.3} -> {:.3} | {:.2}s/step",
            st.align_loss, st.harmful_loss, st.harmful_loss_perturbed, st.seconds
        )
    }
}

impl Hardening for BoosterConfig {
    fn validate(&self) -> Result<()> {
        self.train.validate()?;
        if !(self.alpha.is_finite() && self.alpha >= 0.0) {
            return Err(Error::Invalid(format!("field `alpha`: {} must be a length >= 0", self.alpha)));
        }
        if !self.lambda.is_finite() {
            return Err(Error::Invalid(format!("field `lambda`: {} is not finite", self.lambda)));
        }
        Ok(())
    }

    fn passes_per_step(&self) -> usize {
        3
    }

    fn harden(&self, model: &Llama, data: &DefenseData, opts: HardenOptions) -> Result<Llama> {
        self.validate()?;
        check_data("Booster", data)?;
        let mut stepper = Stepper { cfg: self, data, streams: Streams::new(self, data) };
        crate::defense::run(model, &self.train, self, "booster", &mut stepper, opts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{max_diff, micro_data};
    use crate::train::optim::OptimizerConfig;

    fn cfg() -> BoosterConfig {
        let mut c = BoosterConfig { lambda: 2.5, alpha: 0.3, refusal_weight: 0.7, ..Default::default() };
        c.train.batch.batch_size = 4;
        c.train.batch.max_len = 32;
        c.train.seed = 3;
        c
    }

    /// Booster's gradient against a direct computation: the alignment gradient of a weighted
    /// batch, plus λ times the harmful gradient at θ, minus λ times the harmful gradient at
    /// θ − α·g/‖g‖ computed from separately built weights.
    #[test]
    fn booster_gradient_equals_the_direct_computation() {
        let (model, data, c) = (crate::testing::micro_model(7), micro_data(), cfg());
        let s = Streams::new(&c, &data);
        let ([f, h, h_tilde], g) = booster_grads(&model, &c, &s, &data, 2);
        // Direct: the same batches, built again.
        let (ret, refu, harm) = (s.retain.batch(2), s.refusal.batch(2), s.harmful.batch(2));
        let align = Batch::weighted(&[(&ret, 1.0), (&refu, 0.7)], 0, 32, &model);
        let (f2, ga) = loss_and_grads(&model, &align);
        let hb = Batch::new(&harm, 0, 32, &model);
        let (h2, gh) = loss_and_grads(&model, &hb);
        let norm: f64 = gh.iter().flatten().map(|x| x.clone().square().sum().into_scalar::<f32>() as f64).sum::<f64>().sqrt();
        let moved: Vec<Tensor<2>> =
            model.params.iter().zip(&gh).map(|(p, x)| p.clone() - x.clone().unwrap().mul_scalar(0.3 / norm)).collect();
        let step_len: f64 = model
            .params
            .iter()
            .zip(&moved)
            .map(|(a, b)| (a.clone() - b.clone()).square().sum().into_scalar::<f32>() as f64)
            .sum::<f64>()
            .sqrt();
        assert!((step_len - 0.3).abs() < 1e-4, "the simulated step has length α: {step_len}");
        let (h3, gt) = loss_and_grads(&Llama { cfg: model.cfg.clone(), params: moved }, &hb);
        assert!((f - f2).abs() < 1e-6 && (h - h2).abs() < 1e-6 && (h_tilde - h3).abs() < 1e-6);
        assert!(h_tilde < h, "a normalised descent step lowers the harmful loss: {h} -> {h_tilde}");
        let direct: Vec<Tensor<2>> = (0..g.len())
            .map(|i| {
                let (a, b, c2) = (ga[i].clone().unwrap(), gh[i].clone().unwrap(), gt[i].clone().unwrap());
                a + (b - c2).mul_scalar(2.5)
            })
            .collect();
        let d = max_diff(&g, &direct);
        println!("Booster gradient vs direct: max |diff| = {d:.3e}");
        assert!(d < 1e-5, "max diff {d}");
    }

    /// One Booster step with SGD (no momentum, no clipping) moves θ by −lr·(Booster's gradient).
    #[test]
    fn a_booster_step_applies_its_gradient() {
        let (model, data) = (crate::testing::micro_model(7), micro_data());
        let mut c = cfg();
        c.train.optimizer = OptimizerConfig::sgd(0.0);
        c.train.lr = 0.05;
        c.train.clip_norm = 0.0;
        c.train.steps = 1;
        let (_, g) = booster_grads(&model, &c, &Streams::new(&c, &data), &data, 0);
        let hardened = c.harden(&model, &data, HardenOptions::default()).unwrap();
        let expected: Vec<Tensor<2>> =
            model.params.iter().zip(&g).map(|(p, x)| p.clone() - x.clone().unwrap().mul_scalar(0.05)).collect();
        let d = max_diff(&hardened.params.iter().cloned().map(Some).collect::<Vec<_>>(), &expected);
        println!("Booster SGD step vs θ − lr·g: max |diff| = {d:.3e}");
        assert!(d < 1e-6, "max diff {d}");
    }

    /// A run stopped after 2 steps and resumed ends at the uninterrupted run's weights.
    #[test]
    fn a_stopped_and_resumed_booster_run_equals_the_uninterrupted_run() {
        let (model, data) = (crate::testing::micro_model(7), micro_data());
        let mut c = cfg();
        c.train.steps = 4;
        c.train.lr = 1e-2;
        c.train.checkpoint_every = 1;
        crate::testing::assert_resumes("booster", &model, 4, 2, 1e-3, |o| c.harden(&model, &data, o).unwrap());
    }
}
