//! LoRA: low-rank adapters on chosen linear layers (Hu et al., 2021, "LoRA: Low-Rank
//! Adaptation of Large Language Models").
//!
//! For a targeted weight `W [out, in]`, the adapted weight is `W + (alpha / r) · B A` with
//! `A [r, in]` (Kaiming-uniform-like random init) and `B [out, r]` (zeros), so training starts
//! at the base model. We form the adapted weight inside the autodiff graph and run the plain
//! forward on it: gradients reach only `A` and `B`, the base weights stay frozen, and merging
//! is the same expression evaluated once. Forming `B A` costs one `[out, r] x [r, in]` matmul
//! per target per step, negligible next to the activations' matmuls.
//!
//! Dropout on the adapter input is not implemented (it cannot be expressed on a merged
//! weight); a non-zero `dropout` is rejected by [`LoraConfig::validate`].

use burn::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::model::Llama;
use crate::rng::Rng;
use crate::train::step::Batch;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LoraConfig {
    pub rank: usize,
    pub alpha: f64,
    pub dropout: f64,
    /// Module names whose weights get adapters: any of q_proj, k_proj, v_proj, o_proj,
    /// gate_proj, up_proj, down_proj.
    pub targets: Vec<String>,
}

impl Default for LoraConfig {
    fn default() -> Self {
        Self { rank: 8, alpha: 16.0, dropout: 0.0, targets: vec!["q_proj".into(), "v_proj".into()] }
    }
}

const MODULES: &[&str] = &["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"];

impl LoraConfig {
    pub fn validate(&self) -> Result<()> {
        if self.rank == 0 {
            return Err(Error::Invalid("lora.rank must be > 0".into()));
        }
        if self.dropout != 0.0 {
            return Err(Error::Invalid(format!(
                "lora.dropout = {} is not supported (adapters are merged into the weight each step); use 0",
                self.dropout
            )));
        }
        for t in &self.targets {
            if !MODULES.contains(&t.as_str()) {
                return Err(Error::Invalid(format!("lora.targets: unknown module `{t}` (known: {MODULES:?})")));
            }
        }
        if self.targets.is_empty() {
            return Err(Error::Invalid("lora.targets is empty".into()));
        }
        Ok(())
    }
}

/// Adapters of one model: for each targeted parameter index, `(A, B)`.
#[derive(Debug, Clone)]
pub struct Lora {
    pub cfg: LoraConfig,
    pub targets: Vec<usize>,
    /// `[A_0, B_0, A_1, B_1, ...]`, so the optimizer sees one flat list.
    pub params: Vec<Tensor<2>>,
}

impl Lora {
    pub fn new(model: &Llama, cfg: LoraConfig, seed: u64) -> Result<Self> {
        cfg.validate()?;
        let specs = model.specs();
        let mut rng = Rng::derive(seed, "lora");
        let device = model.device().without_autodiff();
        let mut targets = Vec::new();
        let mut params = Vec::new();
        for (i, s) in specs.iter().enumerate() {
            let module = s.name.rsplit('.').nth(1).unwrap_or("");
            if !s.name.ends_with(".weight") || !cfg.targets.iter().any(|t| t == module) {
                continue;
            }
            let [out, inp] = s.shape2();
            let bound = 1.0 / (inp as f64).sqrt();
            let a: Vec<f32> = (0..cfg.rank * inp).map(|_| ((rng.uniform() * 2.0 - 1.0) * bound) as f32).collect();
            targets.push(i);
            params.push(Tensor::<2>::from_data(TensorData::new(a, [cfg.rank, inp]), &device));
            params.push(Tensor::<2>::zeros([out, cfg.rank], &device));
        }
        Ok(Self { cfg, targets, params })
    }

    pub fn scale(&self) -> f64 {
        self.cfg.alpha / self.cfg.rank as f64
    }

    /// The model with adapted weights `W + scale · B A` (in the graph of `adapters`, if tracked).
    pub fn apply(&self, base: &Llama, adapters: &[Tensor<2>]) -> Llama {
        let mut m = base.untracked();
        for (k, &i) in self.targets.iter().enumerate() {
            let (a, b) = (adapters[2 * k].clone(), adapters[2 * k + 1].clone());
            m.params[i] = m.params[i].clone() + b.matmul(a).mul_scalar(self.scale());
        }
        m
    }

    /// Loss on `batch` and gradients of the adapters (`[A_0, B_0, ...]`), the base frozen.
    pub fn loss_and_grads(&self, base: &Llama, batch: &Batch) -> (f64, Vec<Option<Tensor<2>>>) {
        let tracked: Vec<Tensor<2>> = self.params.iter().map(|p| p.clone().inner().autodiff().require_grad()).collect();
        let m = self.apply(base, &tracked);
        let loss = batch.loss_for(&m);
        let grads = loss.backward();
        let value = loss.inner().into_scalar::<f32>() as f64;
        let g =
            tracked.iter().map(|p| Some(p.grad(&grads).unwrap_or_else(|| p.clone().inner().zeros_like()))).collect();
        (value, g)
    }

    /// Merge the adapters into a plain model (what `save` writes).
    pub fn merge(&self, base: &Llama) -> Llama {
        self.apply(base, &self.params).untracked()
    }
}
