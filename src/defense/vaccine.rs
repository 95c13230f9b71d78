//! Vaccine: perturbation-aware alignment (Huang et al., 2024, "Vaccine: Perturbation-aware
//! Alignment for Large Language Models against Harmful Fine-tuning Attack", NeurIPS 2024;
//! reference code `VaccineTrainer` in git-disl/Vaccine).
//!
//! With `f` the alignment loss (`L_ret + ρ_ref·L_ref` on benign and refusal data) written as a
//! function of the weights θ and of additive perturbations `ε = (ε_1, …, ε_L)` of the decoder
//! layers' outputs (the residual stream after layer `l`, `[B, T, d]` each):
//!
//! `min_θ max_{‖ε‖ ≤ ρ} f(θ, ε)`
//!
//! solved as the paper does with one linearised inner step, two passes per step:
//! 1. `g_l = ∂f/∂ε_l (θ, 0)` for every layer (a pass with zero perturbations as autodiff
//!    leaves), and `ε_l = ρ·g_l/‖g‖` with `‖g‖² = Σ_l ‖g_l‖²`, the norm over all layers together
//!    (so `‖ε‖ = ρ`): the hidden-state drift that raises the alignment loss most;
//! 2. `∇_θ f(θ, ε)` with those perturbations added as constants, and the optimizer step.
//!
//! The aligned model is then one whose alignment loss stays low when its representations
//! drift, which is what a harmful fine-tune does to them. The reference code hooks the output
//! of every attention block (and adds 1e-7 to the norm); this perturbs each decoder layer's
//! output, the paper's formulation. The paper's ρ is 2 (LoRA on Llama-2-7B, batch 5);
//! `ρ` is a norm over the whole batch, so its effect depends on the batch's token count and
//! the model's hidden-state scale. On the
//! tiny tier (full-parameter, batch 16 of up to 96 tokens, `d` = 128, 4 layers) `‖g‖` is about
//! 0.005, so ρ = 2 raises the alignment loss by only 0.01 (Vaccine is then SFT); ρ = 400
//! raises it by about 1.8 at the start of training and is the setting used there.
//! Vaccine is an alignment-stage defense; here, as every defense in this crate, it continues
//! from the SFT-aligned model.

use std::time::Instant;

use burn::prelude::*;
use serde::{Deserialize, Serialize};

use crate::defense::{DefenseData, HardenOptions, Hardening, Outer, check_data};
use crate::error::{Error, Result};
use crate::model::Llama;
use crate::model::fixed;
use crate::model::llama::Probe;
use crate::train::batches::Mixture;
use crate::train::driver;
use crate::train::engine::TrainState;
use crate::train::step::{Batch, grads_of};

/// Vaccine's settings (`settings` of a `kind = "vaccine"` defense).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct VaccineConfig {
    pub train: Outer,
    /// ρ: total norm of the hidden-state perturbation over all layers and the batch (the
    /// paper's 2).
    pub rho: f64,
    /// Weight of the refusal loss in the alignment loss `L_ret + w·L_ref`.
    pub refusal_weight: f64,
}

impl Default for VaccineConfig {
    fn default() -> Self {
        Self { train: Outer::default(), rho: 2.0, refusal_weight: 1.0 }
    }
}

/// What one Vaccine step measured.
#[derive(Debug, Clone, Serialize)]
pub struct VaccineStats {
    pub step: usize,
    /// f(θ, 0).
    pub align_loss: f64,
    /// f(θ, ε) under the perturbation.
    pub align_loss_perturbed: f64,
    /// ‖g‖: the norm of the hidden-state gradient over all layers.
    pub hidden_grad_norm: f64,
    pub grad_norm: f64,
    pub lr: f64,
    pub seconds: f64,
}

/// The two batch streams of a Vaccine run.
pub struct Streams {
    pub retain: Mixture,
    pub refusal: Mixture,
}

impl Streams {
    pub fn new(cfg: &VaccineConfig, data: &DefenseData) -> Self {
        Self { retain: cfg.train.stream("retain", &data.retain), refusal: cfg.train.stream("refusal", &data.refusal) }
    }
}

/// The first pass's result: the loss `f(θ, 0)`, the perturbation `ε_l = ρ·g_l/‖g‖` per layer
/// (`[B, T, d]`, plain tensors) and `‖g‖`.
pub struct Perturbation {
    pub loss: f64,
    pub eps: Vec<Tensor<3>>,
    pub grad_norm: f64,
}

/// The alignment loss of `model` on `batch` with `probe`'s perturbations (a one-element tensor).
pub fn loss_with(model: &Llama, batch: &Batch, probe: &mut Probe) -> Tensor<1> {
    let h = model.hidden_probed(batch.inputs.clone(), probe);
    batch.loss_from_hidden(model, h)
}

/// Pass 1: the gradient of the loss on `batch` with respect to zero perturbations of every
/// layer's output (autodiff leaves; the weights are not differentiated), scaled to total norm
/// `rho` (zero when the gradient is).
pub fn perturbation(model: &Llama, batch: &Batch, rho: f64) -> Perturbation {
    let [b, t] = batch.inputs.dims();
    let d = model.cfg.hidden_size;
    let device = model.device().without_autodiff();
    let dtype = model.params[0].dtype();
    let leaves: Vec<Tensor<3>> = (0..model.cfg.num_layers)
        .map(|_| Tensor::<3>::zeros([b, t, d], (&device, dtype)).autodiff().require_grad())
        .collect();
    let net =
        Llama { cfg: model.cfg.clone(), params: model.params.iter().map(|p| p.clone().inner().autodiff()).collect() };
    let mut probe = Probe { add: leaves.iter().cloned().map(Some).collect(), ..Probe::default() };
    let loss = loss_with(&net, batch, &mut probe);
    let grads = loss.backward();
    let value = loss.inner().into_scalar::<f32>() as f64;
    let g: Vec<Tensor<3>> =
        leaves.iter().map(|e| e.grad(&grads).unwrap_or_else(|| e.clone().inner().zeros_like())).collect();
    let norm = g.iter().map(|x| fixed::sum(x.clone().square()).into_scalar::<f32>() as f64).sum::<f64>().sqrt();
    let scale = if norm > 0.0 { rho / norm } else { 0.0 };
    Perturbation { loss: value, eps: g.into_iter().map(|x| x.mul_scalar(scale)).collect(), grad_norm: norm }
}

/// The alignment batch of step `t`: `L_ret + w·L_ref` in one weighted batch.
pub fn align_batch(model: &Llama, cfg: &VaccineConfig, s: &Streams, data: &DefenseData, t: usize) -> Batch {
    let (ret, refu) = (s.retain.batch(t), s.refusal.batch(t));
    Batch::weighted(&[(&ret, 1.0), (&refu, cfg.refusal_weight)], data.pad_id, cfg.train.batch.max_len, model)
}

/// Both passes of step `t`: the perturbation (pass 1), the perturbed loss `f(θ, ε)` and its
/// gradient `∇_θ f(θ, ε)` (pass 2).
pub fn vaccine_grads(
    model: &Llama,
    cfg: &VaccineConfig,
    s: &Streams,
    data: &DefenseData,
    t: usize,
) -> (Perturbation, f64, Vec<Option<Tensor<2>>>) {
    let batch = align_batch(model, cfg, s, data, t);
    let p = perturbation(model, &batch, cfg.rho);
    let tracked = model.tracked();
    let mut probe = Probe { add: p.eps.iter().cloned().map(Some).collect(), ..Probe::default() };
    let loss = loss_with(&tracked, &batch, &mut probe);
    let (perturbed, g) = grads_of(&tracked, loss);
    (p, perturbed, g)
}

struct Stepper<'a> {
    cfg: &'a VaccineConfig,
    data: &'a DefenseData,
    streams: Streams,
}

impl driver::Method for Stepper<'_> {
    type Stats = VaccineStats;

    fn step(&mut self, state: &mut TrainState) -> Result<VaccineStats> {
        let t0 = Instant::now();
        let (p, perturbed, g) = vaccine_grads(&state.model, self.cfg, &self.streams, self.data, state.step);
        let losses = [
            ("alignment", p.loss),
            ("alignment under the perturbation", perturbed),
            ("hidden gradient norm", p.grad_norm),
        ];
        let (grad_norm, lr) = self.cfg.train.update(state, g, &losses)?;
        Ok(VaccineStats {
            step: state.step,
            align_loss: p.loss,
            align_loss_perturbed: perturbed,
            hidden_grad_norm: p.grad_norm,
            grad_norm,
            lr,
            seconds: t0.elapsed().as_secs_f64(),
        })
    }

    fn describe(&self, st: &VaccineStats) -> String {
        format!(
            "align {:.3} -> {:.3} perturbed | ‖g_h‖ {:.3} | {:.2}s/step",
            st.align_loss, st.align_loss_perturbed, st.hidden_grad_norm, st.seconds
        )
    }
}

impl Hardening for VaccineConfig {
    fn validate(&self) -> Result<()> {
        self.train.validate()?;
        if !(self.rho.is_finite() && self.rho >= 0.0) {
            return Err(Error::Invalid(format!("field `rho`: {} must be a norm >= 0", self.rho)));
        }
        if !(self.refusal_weight.is_finite() && self.refusal_weight >= 0.0) {
            return Err(Error::Invalid(format!(
                "field `refusal_weight`: {} must be a weight >= 0",
                self.refusal_weight
            )));
        }
        Ok(())
    }

    fn passes_per_step(&self) -> usize {
        2
    }

    fn harden(&self, model: &Llama, data: &DefenseData, opts: HardenOptions) -> Result<Llama> {
        self.validate()?;
        check_data("Vaccine", data)?;
        let mut stepper = Stepper { cfg: self, data, streams: Streams::new(self, data) };
        crate::defense::run(model, &self.train, self, "vaccine", &mut stepper, opts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::llama::to_vec_f32;
    use crate::testing::{max_diff, micro_data, micro_model};
    use crate::train::optim::OptimizerConfig;
    use crate::train::step::loss_and_grads;

    fn cfg(rho: f64) -> VaccineConfig {
        let mut c = VaccineConfig { rho, refusal_weight: 0.7, ..Default::default() };
        c.train.batch.batch_size = 4;
        c.train.batch.max_len = 32;
        c.train.seed = 3;
        c
    }

    fn probed_loss(model: &Llama, batch: &Batch, add: Vec<Tensor<3>>) -> f64 {
        let mut probe = Probe { add: add.into_iter().map(Some).collect(), ..Probe::default() };
        loss_with(&model.untracked(), batch, &mut probe).into_scalar::<f32>() as f64
    }

    /// The perturbation against a direct computation: hidden-state gradients from leaves built
    /// here (through `Llama::tracked`), scaled on the host in f64; its total norm is ρ; and a
    /// central finite difference of the loss along ε/ρ equals ‖g‖ (the directional derivative
    /// along a unit vector reaches ‖g‖ only when the vector is parallel to g).
    #[test]
    fn the_perturbation_has_norm_rho_along_the_hidden_state_gradient() {
        let (model, data, c) = (micro_model(7), micro_data(), cfg(1.5));
        let s = Streams::new(&c, &data);
        let batch = align_batch(&model, &c, &s, &data, 1);
        let p = perturbation(&model, &batch, 1.5);
        // Direct: leaves on a tracked model, the gradient read per layer.
        let [b, t] = batch.inputs.dims();
        let tracked = model.tracked();
        let dev = model.device().without_autodiff();
        let leaves: Vec<Tensor<3>> =
            (0..2).map(|_| Tensor::<3>::zeros([b, t, 16], &dev).autodiff().require_grad()).collect();
        let mut probe = Probe { add: leaves.iter().cloned().map(Some).collect(), ..Probe::default() };
        let grads = loss_with(&tracked, &batch, &mut probe).backward();
        let g: Vec<Vec<f32>> = leaves.iter().map(|e| to_vec_f32(e.grad(&grads).unwrap())).collect();
        let norm = g.iter().flatten().map(|&x| (x as f64).powi(2)).sum::<f64>().sqrt();
        let mut diff = 0.0f64;
        let mut eps_norm = 0.0;
        for (e, gl) in p.eps.iter().zip(&g) {
            for (a, b) in to_vec_f32(e.clone()).iter().zip(gl) {
                diff = diff.max((*a as f64 - 1.5 * *b as f64 / norm).abs());
                eps_norm += (*a as f64).powi(2);
            }
        }
        let eps_norm = eps_norm.sqrt();
        let h = 1e-2;
        let along = |sign: f64| p.eps.iter().map(|e| e.clone().mul_scalar(sign * h / 1.5)).collect::<Vec<_>>();
        let fd = (probed_loss(&model, &batch, along(1.0)) - probed_loss(&model, &batch, along(-1.0))) / (2.0 * h);
        let rel = (fd - norm).abs() / norm;
        println!(
            "ε vs direct ρ·g/‖g‖: max |diff| = {diff:.3e}; ‖ε‖ = {eps_norm:.6} (ρ 1.5); \
             finite difference along ε/ρ {fd:.6} vs ‖g‖ {norm:.6} (relative {rel:.2e})"
        );
        assert!((p.grad_norm - norm).abs() < 1e-6 * norm.max(1.0), "{} vs {norm}", p.grad_norm);
        assert!(diff < 1e-6 && (eps_norm - 1.5).abs() < 1e-5 && rel < 1e-3);
        assert!(p.eps.iter().all(|e| e.clone().abs().max().into_scalar::<f32>() > 0.0), "every layer is perturbed");
    }

    /// Vaccine's gradient equals the alignment loss's gradient computed with a hand-built probe
    /// carrying the same perturbations; the perturbation raises the loss.
    #[test]
    fn the_vaccine_gradient_is_the_alignment_gradient_under_the_perturbation() {
        let (model, data, c) = (micro_model(7), micro_data(), cfg(1.5));
        let s = Streams::new(&c, &data);
        let (p, perturbed, g) = vaccine_grads(&model, &c, &s, &data, 2);
        let (ret, refu) = (s.retain.batch(2), s.refusal.batch(2));
        let batch = Batch::weighted(&[(&ret, 1.0), (&refu, 0.7)], 0, 32, &model);
        let tracked = model.tracked();
        let mut probe = Probe { add: p.eps.iter().map(|e| Some(e.clone())).collect(), keep: false, layers: vec![] };
        let h = tracked.hidden_probed(batch.inputs.clone(), &mut probe);
        let (l2, direct) = grads_of(&tracked, batch.loss_from_hidden(&tracked, h));
        let direct: Vec<Tensor<2>> = direct.into_iter().map(Option::unwrap).collect();
        let d = max_diff(&g, &direct);
        println!("Vaccine gradient vs hand-built probe: max |diff| = {d:.3e} (loss {:.4} -> {perturbed:.4})", p.loss);
        assert!((perturbed - l2).abs() < 1e-6 && perturbed > p.loss, "{} -> {perturbed}", p.loss);
        assert!(d < 1e-6, "max diff {d}");
    }

    /// With ρ = 0 Vaccine is plain SFT: its gradient is the alignment batch's, and one SGD step
    /// through `harden` moves θ by −lr times it.
    #[test]
    fn with_rho_zero_a_vaccine_step_is_an_sft_step() {
        let (model, data) = (micro_model(7), micro_data());
        let mut c = cfg(0.0);
        c.train.optimizer = OptimizerConfig::sgd(0.0);
        c.train.lr = 0.05;
        c.train.clip_norm = 0.0;
        c.train.steps = 1;
        let s = Streams::new(&c, &data);
        let (_, _, g) = vaccine_grads(&model, &c, &s, &data, 0);
        let (ret, refu) = (s.retain.batch(0), s.refusal.batch(0));
        let (_, sft) = loss_and_grads(&model, &Batch::weighted(&[(&ret, 1.0), (&refu, 0.7)], 0, 32, &model));
        let sft: Vec<Tensor<2>> = sft.into_iter().map(Option::unwrap).collect();
        let dg = max_diff(&g, &sft);
        let hardened = c.harden(&model, &data, HardenOptions::default()).unwrap();
        let expected: Vec<Tensor<2>> =
            model.params.iter().zip(&sft).map(|(p, x)| p.clone() - x.clone().mul_scalar(0.05)).collect();
        let dw = max_diff(&hardened.params.iter().cloned().map(Some).collect::<Vec<_>>(), &expected);
        println!("ρ = 0: Vaccine gradient vs SFT gradient max |diff| = {dg:.3e}; step vs SFT step {dw:.3e}");
        assert!(dg < 1e-6 && dw < 1e-6, "{dg} {dw}");
    }

    /// A run stopped after 2 steps and resumed ends at the uninterrupted run's weights.
    #[test]
    fn a_stopped_and_resumed_vaccine_run_equals_the_uninterrupted_run() {
        let (model, data) = (micro_model(7), micro_data());
        let mut c = cfg(1.5);
        c.train.steps = 4;
        c.train.lr = 1e-2;
        c.train.checkpoint_every = 1;
        crate::testing::assert_resumes("vaccine", &model, 4, 2, 1e-3, |o| c.harden(&model, &data, o).unwrap());
    }
}
