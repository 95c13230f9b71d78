//! The one training driver: every run that updates weights step by step (SFT alignment,
//! fine-tuning attacks, tiny pre-training, sequential and parallel Patcher) is a [`Method`]
//! driven by [`drive`], which owns what they share: resume from the latest checkpoint,
//! stop-after, progress, `metrics.jsonl`, the per-step callback and atomic checkpoints.
//!
//! Checkpoints are written every `checkpoint_every` steps, at the end, and, in any run that
//! writes to a directory, once [`CHECKPOINT_AFTER`] has passed since the last one: a killed
//! multi-hour stage (a Patcher run on a real model) loses at most that much work whatever its
//! config says. Writing a checkpoint does not change the run (resume is exact).
//!
//! A method owns its step (and in it the NaN/Inf guard, which must refuse a non-finite loss
//! before the update is applied) and any state of its own that a checkpoint must carry
//! ([`Method::save`] / [`Method::restore`], e.g. parallel Patcher's trajectories).

use std::path::PathBuf;
use std::time::{Duration, Instant};

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

/// A run writing to a directory checkpoints once this long has passed since its last checkpoint
/// (or its start), besides its own `checkpoint_every`.
pub const CHECKPOINT_AFTER: Duration = Duration::from_secs(600);

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
    /// Also checkpoint once this long has passed since the last checkpoint ([`CHECKPOINT_AFTER`]
    /// by default; `None`: by step count only).
    pub checkpoint_after: Option<Duration>,
    /// Also checkpoint after each of these steps (an attack's evaluation budgets, so that a
    /// killed attack resumes from its last evaluated budget).
    pub checkpoint_at: Vec<usize>,
}

impl<S> Default for Options<'_, S> {
    fn default() -> Self {
        Self {
            out_dir: None,
            progress: false,
            stop_after: None,
            on_step: None,
            checkpoint_after: Some(CHECKPOINT_AFTER),
            checkpoint_at: vec![],
        }
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
    let mut last_saved = Instant::now();
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
        let overdue = opts.checkpoint_after.is_some_and(|d| last_saved.elapsed() >= d);
        let listed = opts.checkpoint_at.contains(&state.step);
        if let Some(dir) = &opts.out_dir
            && (due || overdue || listed || state.step == plan.total)
        {
            checkpoint::save(dir, &state, plan.run_key, &method.save())?;
            last_saved = Instant::now();
        }
    }
    if let Some(b) = bar {
        b.finish();
    }
    Ok(state)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::engine::TrainConfig;

    /// A method whose step only counts: the run's step, and the steps this instance took.
    #[derive(Default)]
    struct Count(usize);

    impl Method for Count {
        type Stats = usize;
        fn step(&mut self, state: &mut TrainState) -> Result<usize> {
            state.step += 1;
            self.0 += 1;
            Ok(state.step)
        }
        fn describe(&self, _: &usize) -> String {
            String::new()
        }
    }

    fn latest_step(dir: &std::path::Path) -> Option<u64> {
        let text = std::fs::read_to_string(dir.join("latest.json")).ok()?;
        serde_json::from_str::<serde_json::Value>(&text).ok()?["step"].as_u64()
    }

    /// With no step cadence, a run stopped before its end leaves a checkpoint only when the
    /// time-based one is due (here at once), and resuming starts from it.
    #[test]
    fn time_based_checkpoints_happen_without_a_step_cadence() {
        let cfg = TrainConfig::default();
        let state = || TrainState::new(crate::testing::micro_model(1), &cfg).unwrap();
        let plan = Plan { total: 5, checkpoint_every: 0, run_key: &cfg, label: "count" };
        let root = std::env::temp_dir().join(format!("driver-ckpt-{}", std::process::id()));
        let (timed, stepped) = (root.join("timed"), root.join("stepped"));
        let opts = |dir: &PathBuf, after: Option<Duration>| Options::<usize> {
            out_dir: Some(dir.clone()),
            stop_after: Some(3),
            checkpoint_after: after,
            ..Default::default()
        };
        drive(state(), &plan, &mut Count::default(), opts(&timed, Some(Duration::ZERO))).unwrap();
        drive(state(), &plan, &mut Count::default(), opts(&stepped, None)).unwrap();
        assert_eq!(latest_step(&timed), Some(3));
        assert_eq!(latest_step(&stepped), None);
        // The default waits CHECKPOINT_AFTER, far longer than this run.
        let default = root.join("default");
        drive(state(), &plan, &mut Count::default(), opts(&default, Options::<usize>::default().checkpoint_after))
            .unwrap();
        assert_eq!(latest_step(&default), None);
        // Resuming starts at the saved step 3: two more steps, not five.
        let mut count = Count::default();
        let resumed = drive(state(), &plan, &mut count, Options { out_dir: Some(timed.clone()), ..Default::default() });
        assert_eq!((resumed.unwrap().step, count.0), (5, 2));
        assert_eq!(latest_step(&timed), Some(5));
        let _ = std::fs::remove_dir_all(&root);
    }
}
