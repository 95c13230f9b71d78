//! The fine-tuning engine: supervised fine-tuning of a model on a batch stream, full-parameter
//! or LoRA, with gradient accumulation, clipping, a learning-rate schedule, NaN/Inf detection,
//! a progress bar, metrics as JSONL, atomic checkpoints and exact resume.
//!
//! SFT safety alignment, every fine-tuning attack and Patcher's simulated attacks are
//! configurations of this one engine. The training state ([`TrainState`]) is an explicit value:
//! parameters, optimizer moments, step; the data order is a pure function of `(seed, step)`
//! (see [`crate::train::batches`]), so a checkpoint needs no data-loader state.

use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::{Error, IoContext, Result};
use crate::model::Llama;
use crate::train::batches::{BatchConfig, Mixture};
use crate::train::checkpoint;
use crate::train::lora::{Lora, LoraConfig};
use crate::train::optim::{self, OptimState, OptimizerConfig};
use crate::train::progress::Progress;
use crate::train::schedule::ScheduleConfig;
use crate::train::step::{Batch, add_scaled, loss_and_grads};

/// Everything that defines a fine-tuning run (alignment or attack).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainConfig {
    pub steps: usize,
    /// Peak learning rate.
    pub lr: f64,
    pub optimizer: OptimizerConfig,
    pub schedule: ScheduleConfig,
    pub batch: BatchConfig,
    /// Micro-batches per optimizer step (gradients averaged).
    pub grad_accum: usize,
    /// Global gradient-norm clip; 0 disables.
    pub clip_norm: f64,
    pub seed: u64,
    /// LoRA adapters instead of full-parameter training.
    pub lora: Option<LoraConfig>,
    /// Write a checkpoint every this many steps (0: only at the end), when an output dir is set.
    pub checkpoint_every: usize,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            steps: 100,
            lr: 5e-5,
            optimizer: OptimizerConfig::default(),
            schedule: ScheduleConfig::default(),
            batch: BatchConfig::default(),
            grad_accum: 1,
            clip_norm: 1.0,
            seed: 0,
            lora: None,
            checkpoint_every: 0,
        }
    }
}

/// Parameters, optimizer state and progress of a run.
#[derive(Debug, Clone)]
pub struct TrainState {
    pub model: Llama,
    pub lora: Option<Lora>,
    pub opt: OptimState,
    pub step: usize,
}

impl TrainState {
    /// A fresh state at `model` (fresh optimizer; fresh adapters when `cfg.lora` is set).
    pub fn new(model: Llama, cfg: &TrainConfig) -> Result<Self> {
        let lora = cfg.lora.clone().map(|l| Lora::new(&model, l, cfg.seed)).transpose()?;
        let n = lora.as_ref().map(|l| l.params.len()).unwrap_or(model.params.len());
        Ok(Self { model, lora, opt: OptimState::new(n), step: 0 })
    }

    /// The model this state stands for (adapters merged).
    pub fn merged(&self) -> Llama {
        match &self.lora {
            Some(l) => l.merge(&self.model),
            None => self.model.clone(),
        }
    }
}

/// What one optimizer step did.
#[derive(Debug, Clone, Serialize)]
pub struct StepStats {
    pub step: usize,
    pub loss: f64,
    pub lr: f64,
    pub grad_norm: f64,
    pub tokens: usize,
    pub seconds: f64,
}

/// Loss and gradients of the trainable parameters of `state` (adapters with LoRA).
fn state_grads(state: &TrainState, batch: &Batch) -> (f64, Vec<Option<Tensor<2>>>) {
    match &state.lora {
        None => loss_and_grads(&state.model, batch),
        Some(lora) => {
            let tracked: Vec<Tensor<2>> =
                lora.params.iter().map(|p| p.clone().inner().autodiff().require_grad()).collect();
            let m = lora.apply(&state.model, &tracked);
            let loss = batch.loss_for(&m);
            let grads = loss.backward();
            let value = loss.inner().into_scalar::<f32>() as f64;
            let g = tracked
                .iter()
                .map(|p| Some(p.grad(&grads).unwrap_or_else(|| p.clone().inner().zeros_like())))
                .collect();
            (value, g)
        }
    }
}

/// One optimizer step (with accumulation and clipping) on batches of `data`.
pub fn train_step(state: &mut TrainState, cfg: &TrainConfig, data: &Mixture, pad_id: u32) -> Result<StepStats> {
    let t0 = Instant::now();
    let accum = cfg.grad_accum.max(1);
    let mut grads: Vec<Option<Tensor<2>>> = Vec::new();
    let (mut loss_sum, mut tokens) = (0.0, 0);
    for micro in 0..accum {
        let examples = data.batch(state.step * accum + micro);
        let batch = Batch::new(&examples, pad_id, cfg.batch.max_len, &state.model);
        let (l, g) = state_grads(state, &batch);
        if !l.is_finite() {
            return Err(Error::NonFinite { step: state.step + 1, what: format!("the loss ({l})") });
        }
        loss_sum += l;
        tokens += batch.n_tokens;
        if grads.is_empty() {
            grads = vec![None; g.len()];
        }
        add_scaled(&mut grads, &g, 1.0 / accum as f64);
    }
    let grad_norm = optim::clip_grad_norm(&mut grads, cfg.clip_norm);
    if !grad_norm.is_finite() {
        return Err(Error::NonFinite { step: state.step + 1, what: format!("the gradient norm ({grad_norm})") });
    }
    let lr = cfg.schedule.lr_at(cfg.lr, state.step, cfg.steps);
    match &mut state.lora {
        None => optim::step(&cfg.optimizer, &mut state.opt, &mut state.model.params, &grads, lr),
        Some(l) => optim::step(&cfg.optimizer, &mut state.opt, &mut l.params, &grads, lr),
    }
    state.step += 1;
    Ok(StepStats {
        step: state.step,
        loss: loss_sum / accum as f64,
        lr,
        grad_norm,
        tokens,
        seconds: t0.elapsed().as_secs_f64(),
    })
}

/// Called after every step with the current state.
pub type StepCallback<'a> = dyn FnMut(&TrainState, &StepStats) -> Result<()> + 'a;

/// Where and how a run reports: all optional.
#[derive(Default)]
pub struct RunOptions<'a> {
    /// Checkpoints, `metrics.jsonl` and the final model go here; an existing checkpoint is
    /// resumed.
    pub out_dir: Option<PathBuf>,
    /// Show a progress bar (stderr).
    pub progress: bool,
    /// Label for the progress bar.
    pub name: String,
    /// Called after every step with the current state (for example to evaluate at budgets).
    pub on_step: Option<&'a mut StepCallback<'a>>,
    /// Stop after this many steps in total without a final checkpoint, as a killed run would
    /// (for tests of resume).
    pub stop_after: Option<usize>,
}

/// Train `state` for `cfg.steps` steps (or until `stop_after`), resuming from `out_dir`'s
/// latest checkpoint when there is one.
pub fn run(
    mut state: TrainState,
    cfg: &TrainConfig,
    data: &Mixture,
    pad_id: u32,
    mut opts: RunOptions,
) -> Result<TrainState> {
    if let Some(dir) = &opts.out_dir {
        std::fs::create_dir_all(dir).at(dir)?;
        if let Some(resumed) = checkpoint::load_latest(dir, &state, cfg)? {
            state = resumed;
        }
    }
    let end = opts.stop_after.unwrap_or(cfg.steps).min(cfg.steps);
    let mut bar = opts.progress.then(|| Progress::new(cfg.steps, state.step, &opts.name));
    let metrics = opts.out_dir.as_ref().map(|d| d.join("metrics.jsonl"));
    while state.step < end {
        let stats = train_step(&mut state, cfg, data, pad_id)?;
        if let Some(bar) = &mut bar {
            bar.update(
                stats.step,
                &format!("loss {:.4} | {:.0} tok/s", stats.loss, stats.tokens as f64 / stats.seconds),
            );
        }
        if let Some(path) = &metrics {
            append_jsonl(path, &stats)?;
        }
        if let Some(cb) = opts.on_step.as_mut() {
            cb(&state, &stats)?;
        }
        let due = cfg.checkpoint_every > 0 && state.step.is_multiple_of(cfg.checkpoint_every);
        if let Some(dir) = &opts.out_dir
            && (due || state.step == cfg.steps)
        {
            checkpoint::save(dir, &state, cfg)?;
        }
    }
    if let Some(bar) = bar {
        bar.finish();
    }
    Ok(state)
}

/// Append one JSON line to `path` (created if missing).
pub fn append_jsonl<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new().create(true).append(true).open(path).at(path)?;
    let line = serde_json::to_string(value).expect("json");
    writeln!(f, "{line}").at(path)
}
