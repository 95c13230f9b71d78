//! Vanilla SFT safety alignment: supervised fine-tuning on a mixture of refusals (harmful
//! prompt → refusal) and benign instruction data. This is the baseline Patcher must beat.

use serde::{Deserialize, Serialize};

use crate::data::Conversation;
use crate::error::Result;
use crate::model::Llama;
use crate::tokenizer::ChatTokenizer;
use crate::train::batches::mixture_of;
use crate::train::engine::{RunOptions, TrainConfig, TrainState, run};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AlignConfig {
    pub train: TrainConfig,
    pub refusal_weight: f64,
    pub benign_weight: f64,
}

impl Default for AlignConfig {
    fn default() -> Self {
        Self {
            train: TrainConfig { steps: 200, lr: 2e-5, ..TrainConfig::default() },
            refusal_weight: 0.5,
            benign_weight: 0.5,
        }
    }
}

impl AlignConfig {
    pub fn validate(&self) -> Result<()> {
        self.train.validate("train.")
    }
}

/// SFT-align `model` on `refusals` + `benign`; `opts` carries the output dir (checkpoints,
/// metrics, resume) and progress settings.
pub fn align(
    model: &Llama,
    tok: &ChatTokenizer,
    cfg: &AlignConfig,
    refusals: &[Conversation],
    benign: &[Conversation],
    opts: RunOptions,
) -> Result<Llama> {
    cfg.validate()?;
    let sets = [("refusals", refusals, cfg.refusal_weight), ("benign", benign, cfg.benign_weight)];
    let mix = mixture_of(tok, &sets, cfg.train.batch.clone(), cfg.train.seed)?;
    let state = run(TrainState::new(model.clone(), &cfg.train)?, &cfg.train, &mix, tok.pad_id, opts)?;
    Ok(state.merged())
}
