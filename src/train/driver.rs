//! The one training driver: every run that updates weights step by step (SFT alignment,
//! fine-tuning attacks, tiny pre-training, sequential and parallel Patcher) is a [`Method`]
//! driven by [`drive`], which owns what they share: resume from the latest checkpoint,
//! stop-after, progress, `metrics.jsonl`, the per-step callback and atomic checkpoints.
//!
//! A method owns its step (and in it the NaN/Inf guard, which must refuse a non-finite loss
//! before the update is applied) and any state of its own that a checkpoint must carry
//! ([`Method::save`] / [`Method::restore`], e.g. parallel Patcher's trajectories).

use std::path::PathBuf;

use serde::Serialize;

use crate::error::{IoContext, Result};
use crate::train::checkpoint::{self, Extra};
use crate::train::engine::{TrainState, append_jsonl};
use crate::train::progress::Progress;

/// One way of taking a training step.
pub trait Method {
    /// What a step reports (one line of `metrics.jsonl`).
    type Stats: Serialize;
    /// Take step `state.step + 1`, advancing `state.step`.
    fn step(&mut self, state: &mut TrainState) -> Result<Self::Stats>;
    /// The figures shown with the progress (loss, rate, ...).
    fn describe(&self, stats: &Self::Stats) -> String;
    /// Method-specific state for a checkpoint (none by default).
    fn save(&self) -> Extra {
        Extra::default()
    }
    /// Restore what [`Method::save`] wrote.
    fn restore(&mut self, _extra: Extra) -> Result<()> {
        Ok(())
    }
}

/// The shape of a run: its length, checkpoint cadence, the config that identifies it in
/// checkpoints (resuming under another one is refused) and its label.
pub struct Plan<'a, K: Serialize> {
    pub total: usize,
    /// Checkpoint every this many steps (0: only at the end).
    pub checkpoint_every: usize,
    pub run_key: &'a K,
    pub label: &'a str,
}

/// Called after every step with the state and the step's report.
pub type OnStep<'a, S> = dyn FnMut(&TrainState, &S) -> Result<()> + 'a;

/// Where and how a run reports: all optional.
pub struct Options<'a, S> {
    /// Checkpoints and `metrics.jsonl` go here; an existing checkpoint is resumed.
    pub out_dir: Option<PathBuf>,
    pub progress: bool,
    /// Stop after this many steps in total without a final checkpoint, as a killed run would.
    pub stop_after: Option<usize>,
    pub on_step: Option<&'a mut OnStep<'a, S>>,
}

impl<S> Default for Options<'_, S> {
    fn default() -> Self {
        Self { out_dir: None, progress: false, stop_after: None, on_step: None }
    }
}

/// Run `method` from `state` for `plan.total` steps (or until `stop_after`), resuming from the
/// latest checkpoint in `opts.out_dir` when there is one.
pub fn drive<K: Serialize, M: Method>(
    mut state: TrainState,
    plan: &Plan<K>,
    method: &mut M,
    mut opts: Options<M::Stats>,
) -> Result<TrainState> {
    if let Some(dir) = &opts.out_dir {
        std::fs::create_dir_all(dir).at(dir)?;
        if let Some((resumed, extra)) = checkpoint::load_latest(dir, &state, plan.run_key)? {
            method.restore(extra)?;
            state = resumed;
        }
    }
    let end = opts.stop_after.unwrap_or(plan.total).min(plan.total);
    let mut bar = opts.progress.then(|| Progress::new(plan.total, state.step, plan.label));
    let metrics = opts.out_dir.as_ref().map(|d| d.join("metrics.jsonl"));
    while state.step < end {
        let stats = method.step(&mut state)?;
        if let Some(b) = &mut bar {
            b.update(state.step, &method.describe(&stats));
        }
        if let Some(path) = &metrics {
            append_jsonl(path, &stats)?;
        }
        if let Some(cb) = opts.on_step.as_mut() {
            cb(&state, &stats)?;
        }
        let due = plan.checkpoint_every > 0 && state.step.is_multiple_of(plan.checkpoint_every);
        if let Some(dir) = &opts.out_dir
            && (due || state.step == plan.total)
        {
            checkpoint::save(dir, &state, plan.run_key, &method.save())?;
        }
    }
    if let Some(b) = bar {
        b.finish();
    }
    Ok(state)
}
