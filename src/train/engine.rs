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
use crate::train::driver;
use crate::train::lora::{Lora, LoraConfig};
use crate::train::optim::{self, OptimState, OptimizerConfig};
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

impl TrainConfig {
    /// Values the types allow but a run cannot use, named by their key under `prefix` (e.g.
    /// `train.`), so that a config file's mistake is an error rather than a panic or a
    /// diverged run.
    pub fn validate(&self, prefix: &str) -> Result<()> {
        let bad = |key: &str, why: String| Err(Error::Invalid(format!("field `{prefix}{key}`: {why}")));
        if self.batch.batch_size == 0 {
            return bad("batch.batch_size", "is 0; it must be at least 1".into());
        }
        if !(self.lr.is_finite() && self.lr >= 0.0) {
            return bad("lr", format!("is {}; it must be a finite number >= 0", self.lr));
        }
        if !(self.clip_norm.is_finite() && self.clip_norm >= 0.0) {
            return bad(
                "clip_norm",
                format!("is {}; it must be a finite number >= 0 (0 disables clipping)", self.clip_norm),
            );
        }
        if let Some(l) = &self.lora {
            l.validate().or_else(|e| bad("lora", e.to_string()))?;
        }
        Ok(())
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
        Some(lora) => lora.loss_and_grads(&state.model, batch),
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
    /// Also checkpoint after each of these steps (with `out_dir`).
    pub checkpoint_at: Vec<usize>,
}

/// SFT on a batch stream: the fine-tuning engine's [`driver::Method`].
struct Sft<'a> {
    cfg: &'a TrainConfig,
    data: &'a Mixture,
    pad_id: u32,
}

impl driver::Method for Sft<'_> {
    type Stats = StepStats;

    fn step(&mut self, state: &mut TrainState) -> Result<StepStats> {
        train_step(state, self.cfg, self.data, self.pad_id)
    }

    fn describe(&self, s: &StepStats) -> String {
        format!("loss {:.4} | {:.0} tok/s", s.loss, s.tokens as f64 / s.seconds)
    }
}

/// Train `state` for `cfg.steps` steps (or until `stop_after`), resuming from `out_dir`'s
/// latest checkpoint when there is one (through the one training driver, [`driver::drive`]).
pub fn run(state: TrainState, cfg: &TrainConfig, data: &Mixture, pad_id: u32, opts: RunOptions) -> Result<TrainState> {
    let plan =
        driver::Plan { total: cfg.steps, checkpoint_every: cfg.checkpoint_every, run_key: cfg, label: &opts.name };
    let options = driver::Options {
        out_dir: opts.out_dir,
        progress: opts.progress,
        stop_after: opts.stop_after,
        on_step: opts.on_step,
        checkpoint_at: opts.checkpoint_at,
        ..Default::default()
    };
    driver::drive(state, &plan, &mut Sft { cfg, data, pad_id }, options)
}

/// Append one JSON line to `path` (created if missing).
pub fn append_jsonl<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    use std::io::{Read, Seek, SeekFrom, Write};
    let mut f = std::fs::OpenOptions::new().create(true).read(true).append(true).open(path).at(path)?;
    let mut line = serde_json::to_string(value).expect("json");
    line.push('\n');
    // A run killed between a line and its newline left the file without one: end that line
    // first, so that it and this one both stay whole (a resumed run appends after a kill).
    let len = f.metadata().at(path)?.len();
    if len > 0 {
        let mut last = [0u8];
        f.seek(SeekFrom::Start(len - 1)).at(path)?;
        f.read_exact(&mut last).at(path)?;
        if last[0] != b'\n' {
            line.insert(0, '\n');
        }
    }
    // One write of the whole line (`writeln!` issues two: the line, then its newline).
    f.write_all(line.as_bytes()).at(path)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::model::llama::to_vec_f32;
    use crate::rng::Rng;
    use crate::train::step::Example;

    /// A metrics file a kill left without its last newline: the next appended line stays on
    /// its own line, and both parse (before, they merged into one unparseable line).
    #[test]
    fn appending_after_a_line_without_its_newline_keeps_both_lines() {
        let dir = std::env::temp_dir().join(format!("append-jsonl-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("metrics.jsonl");
        std::fs::write(&path, "{\"step\":5}\n{\"step\":6}").unwrap();
        append_jsonl(&path, &serde_json::json!({ "step": 5 })).unwrap();
        append_jsonl(&path, &serde_json::json!({ "step": 6 })).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let steps: Vec<u64> = text
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["step"].as_u64().unwrap())
            .collect();
        assert_eq!(steps, vec![5, 6, 5, 6], "{text:?}");
        assert!(text.ends_with('\n'));
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// The poisoned token: its (untied) embedding row is NaN, so a NaN enters the computation
    /// exactly at the steps whose batch holds an example with it, and nowhere else (the
    /// embedding is a row lookup; the row's gradient is zero elsewhere).
    pub(crate) const POISON: u32 = 31;

    /// A 2-layer model with untied embeddings whose row [`POISON`] is NaN.
    pub(crate) fn poisoned_model() -> Llama {
        let cfg = crate::testing::micro_config_sized(32, 32, false);
        let device = Device::flex();
        let mut model = Llama::init(cfg, 0.1, 3, &device);
        let [v, d] = model.params[0].dims();
        let mut emb = to_vec_f32(model.params[0].clone());
        emb[POISON as usize * d..(POISON as usize + 1) * d].fill(f32::NAN);
        model.params[0] = Tensor::<2>::from_data(TensorData::new(emb, [v, d]), &device);
        model
    }

    /// `n` examples of random tokens (3..31, never the poison), with the poison token in the
    /// middle of example `poisoned`.
    pub(crate) fn examples(n: usize, seed: u64, poisoned: Option<usize>) -> Vec<Example> {
        let mut r = Rng::new(seed);
        (0..n)
            .map(|i| {
                let mut ids: Vec<u32> = (0..8 + r.below(6)).map(|_| 3 + r.below(28) as u32).collect();
                if poisoned == Some(i) {
                    ids[3] = POISON;
                }
                let mask = (0..ids.len()).map(|j| u8::from(j >= 2)).collect();
                Example { ids, mask }
            })
            .collect()
    }

    /// A NaN injected into one batch (the poisoned token, in one of 40 examples) stops the run
    /// at that batch's step, naming it; every earlier step trained normally and the last
    /// checkpoint is the step before.
    #[test]
    fn a_nan_in_one_batch_stops_the_run_at_that_step() {
        let batch = BatchConfig { batch_size: 4, max_len: 32, bucket_window: 1 };
        let data = examples(40, 1, Some(17));
        // The first batch holding the poisoned example, for the first data seed that puts it
        // past step 3 (so that the steps before it show the run was healthy until then).
        let first = |mix: &Mixture| (0..).find(|&t| mix.batch(t).iter().any(|e| e.ids.contains(&POISON)));
        let (mix, t) = (0..)
            .map(|seed| Mixture::single("x", data.clone(), batch.clone(), seed))
            .find_map(|m| first(&m).filter(|&t| t >= 3).map(|t| (m, t)))
            .unwrap();
        let cfg = TrainConfig { steps: t + 4, lr: 1e-3, batch, checkpoint_every: 1, ..Default::default() };
        let dir = std::env::temp_dir().join(format!("patcher-nan-batch-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let opts = RunOptions { out_dir: Some(dir.clone()), ..Default::default() };
        let err = run(TrainState::new(poisoned_model(), &cfg).unwrap(), &cfg, &mix, 0, opts).unwrap_err();
        println!("NaN in the batch of step {}: {err}", t + 1);
        assert!(matches!(err, Error::NonFinite { step, .. } if step == t + 1), "{err}");
        assert_eq!(err.to_string(), format!("training diverged at step {}: the loss (NaN) is not finite", t + 1));
        let text = std::fs::read_to_string(dir.join("metrics.jsonl")).unwrap();
        let losses: Vec<f64> = text
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["loss"].as_f64().unwrap())
            .collect();
        assert_eq!(losses.len(), t, "steps 1..={t} trained");
        assert!(losses.iter().all(|l| l.is_finite()), "{losses:?}");
        let latest = std::fs::read_to_string(dir.join("latest.json")).unwrap();
        assert!(latest.contains(&format!("\"step\":{t}")), "{latest}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
