//! Vanilla SFT safety alignment: supervised fine-tuning on a mixture of refusals (harmful
//! prompt → refusal) and benign instruction data. This is the baseline Patcher must beat.
//! With `[align.select] every > 0` the released model is the checkpoint chosen on validation
//! sets rather than the last step ([`select`]). With `[align.soup]` the recipe runs once per
//! seed and releases the average of the models, optionally interpolated toward the starting
//! model ([`soup`]).

pub mod select;
pub mod soup;

use serde::{Deserialize, Serialize};

use crate::data::Conversation;
use crate::error::Result;
use crate::model::Llama;
use crate::tokenizer::ChatTokenizer;
use crate::train::batches::mixture_of;
use crate::train::engine::{RunOptions, StepStats, TrainConfig, TrainState, run};
use select::{SelectConfig, Validator};
use soup::SoupConfig;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AlignConfig {
    pub train: TrainConfig,
    pub refusal_weight: f64,
    pub benign_weight: f64,
    /// End-point selection on validation sets (off by default).
    pub select: SelectConfig,
    /// Several seeds averaged, and interpolation toward the start (off by default).
    pub soup: SoupConfig,
}

impl Default for AlignConfig {
    fn default() -> Self {
        Self {
            train: TrainConfig { steps: 200, lr: 2e-5, ..TrainConfig::default() },
            refusal_weight: 0.5,
            benign_weight: 0.5,
            select: SelectConfig::default(),
            soup: SoupConfig::default(),
        }
    }
}

impl AlignConfig {
    pub fn validate(&self) -> Result<()> {
        self.train.validate("train.")?;
        self.select.validate("select.")?;
        self.soup.validate("soup.")
    }
}

/// SFT-align `model` on `refusals` + `benign`; `opts` carries the output dir (checkpoints,
/// metrics, resume) and progress settings. With end-point selection on, the returned model is
/// the chosen checkpoint (its scores are in `select.jsonl` and `select.json` of the output dir).
/// With `[align.soup]` on, it is the soup of one such run per seed ([`soup`]).
pub fn align(
    model: &Llama,
    tok: &ChatTokenizer,
    cfg: &AlignConfig,
    refusals: &[Conversation],
    benign: &[Conversation],
    opts: RunOptions,
) -> Result<Llama> {
    cfg.validate()?;
    if cfg.soup.enabled() {
        return soup::align_soup(model, tok, cfg, refusals, benign, opts);
    }
    Ok(align_one(model, tok, cfg, refusals, benign, opts)?.0)
}

/// One alignment run (with its end-point selection): the released model, and whether the run
/// reached its last step (false when `stop_after` stopped it early).
fn align_one(
    model: &Llama,
    tok: &ChatTokenizer,
    cfg: &AlignConfig,
    refusals: &[Conversation],
    benign: &[Conversation],
    opts: RunOptions,
) -> Result<(Llama, bool)> {
    let sets = [("refusals", refusals, cfg.refusal_weight), ("benign", benign, cfg.benign_weight)];
    let mix = mixture_of(tok, &sets, cfg.train.batch.clone(), cfg.train.seed)?;
    let start = TrainState::new(model.clone(), &cfg.train)?;
    if cfg.select.every == 0 {
        let state = run(start, &cfg.train, &mix, tok.pad_id, opts)?;
        return Ok((state.merged(), state.step >= cfg.train.steps));
    }
    let dir = opts.out_dir.clone();
    let mut validator = Validator::new(&cfg.select, dir.as_deref())?;
    let total = cfg.train.steps;
    let RunOptions { out_dir, progress, name, on_step: mut outer, stop_after, checkpoint_at } = opts;
    let state = {
        let mut on_step = |state: &TrainState, stats: &StepStats| -> Result<()> {
            if let Some(cb) = outer.as_mut() {
                cb(state, stats)?;
            }
            if validator.due(state.step, total) {
                let r = validator.validate(&state.merged(), tok, state.step, state.step == total)?;
                eprintln!(
                    "[align] step {}: refuses {:.1}% of harmful and {:.1}% of safe validation prompts ({:.0}s)",
                    r.step,
                    100.0 * r.harmful_refusal,
                    100.0 * r.over_refusal,
                    r.seconds
                );
            }
            Ok(())
        };
        let opts = RunOptions { out_dir, progress, name, on_step: Some(&mut on_step), stop_after, checkpoint_at };
        run(start, &cfg.train, &mix, tok.pad_id, opts)?
    };
    if state.step < total {
        // Stopped early on purpose: no choice to make yet.
        return Ok((state.merged(), false));
    }
    if !validator.records().iter().any(|r| r.step == total) {
        // Resumed from the final checkpoint: the last step was not validated in this process.
        validator.validate(&state.merged(), tok, total, true)?;
    }
    let (chosen, rec) = validator.finish(state.merged())?;
    eprintln!(
        "[align] end point: step {} of {total} (harmful refused {:.1}%, safe refused {:.1}%)",
        rec.step,
        100.0 * rec.harmful_refusal,
        100.0 * rec.over_refusal
    );
    if let Some(d) = &dir {
        crate::io::write_json(&d.join("select.json"), &rec)?;
    }
    Ok((chosen, true))
}

/// Make the models that end-point selection kept (`<train dir>/select/last/`, and every
/// `select/step-N/` with `keep_all`) complete Hugging Face directories: copy `base`'s tokenizer
/// files into them. A soup's members keep theirs under `<train dir>/seed-<s>/`. Nothing to do
/// when selection was off.
pub fn finish_dir(train_dir: &std::path::Path, base: &std::path::Path) -> Result<()> {
    let subdirs = |d: &std::path::Path, prefix: &str| -> Vec<std::path::PathBuf> {
        let Ok(entries) = std::fs::read_dir(d) else { return vec![] };
        let mut v: Vec<_> = entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.is_dir() && p.file_name().is_some_and(|n| n.to_string_lossy().starts_with(prefix)))
            .collect();
        v.sort();
        v
    };
    let mut runs = vec![train_dir.to_path_buf()];
    runs.extend(subdirs(train_dir, "seed-"));
    for run in runs {
        for kept in subdirs(&run.join("select"), "") {
            if kept.join("config.json").exists() {
                crate::io::hf::copy_tokenizer_files(base, &kept)?;
            }
        }
    }
    Ok(())
}
