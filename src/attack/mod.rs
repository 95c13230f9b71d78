//! The malicious fine-tuning attack suite (DESIGN section 1): supervised fine-tuning on
//! harmful (prompt, harmful answer) pairs, expressed as configurations of the fine-tuning
//! engine. Presets live in `configs/attacks/*.toml` (compiled in), each overridable key by key.
//!
//! Threat-model knobs covered: full-parameter or LoRA; AdamW, Adam or SGD with momentum;
//! learning rate; steps; batch; constant / cosine / warm-up schedules; pure harmful data,
//! harmful mixed into benign at ratio p, or benign fine-tuning first then harmful.
//! An attack reports the attacked model at chosen step budgets through a callback, so the
//! evaluator can measure a robustness curve without writing every model to disk.

use serde::{Deserialize, Serialize};

use crate::data::Conversation;
use crate::error::{Error, Result};
use crate::model::Llama;
use crate::tokenizer::ChatTokenizer;
use crate::train::batches::{Mixture, examples_from, mixture_of};
use crate::train::engine::{RunOptions, StepStats, TrainConfig, TrainState, run};

/// One attack: the fine-tuning run and its data mixture.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AttackConfig {
    pub description: String,
    pub train: TrainConfig,
    /// Mixture weight of harmful pairs (the attacker's data).
    pub harmful_weight: f64,
    /// Mixture weight of benign pairs (0 = pure harmful SFT).
    pub benign_weight: f64,
    /// Steps of benign-only fine-tuning before the harmful phase (fresh optimizer after it).
    pub benign_first_steps: usize,
}

impl Default for AttackConfig {
    fn default() -> Self {
        Self {
            description: String::new(),
            train: TrainConfig::default(),
            harmful_weight: 1.0,
            benign_weight: 0.0,
            benign_first_steps: 0,
        }
    }
}

/// The shipped presets: (name, TOML text).
pub const PRESETS: &[(&str, &str)] = &[
    ("full-adamw-1e-5", include_str!("../../configs/attacks/full-adamw-1e-5.toml")),
    ("full-adamw-5e-5", include_str!("../../configs/attacks/full-adamw-5e-5.toml")),
    ("full-adamw-2e-4", include_str!("../../configs/attacks/full-adamw-2e-4.toml")),
    ("full-sgd-momentum", include_str!("../../configs/attacks/full-sgd-momentum.toml")),
    ("full-adamw-cosine", include_str!("../../configs/attacks/full-adamw-cosine.toml")),
    ("lora-adamw", include_str!("../../configs/attacks/lora-adamw.toml")),
    ("mixed-p10", include_str!("../../configs/attacks/mixed-p10.toml")),
    ("benign-then-harmful", include_str!("../../configs/attacks/benign-then-harmful.toml")),
];

/// Recursively merge `over` into `base` (tables merged key by key, other values replaced).
pub fn merge_toml(base: &mut toml::Value, over: &toml::Value) {
    match (base, over) {
        (toml::Value::Table(b), toml::Value::Table(o)) => {
            for (k, v) in o {
                match b.get_mut(k) {
                    Some(slot) => merge_toml(slot, v),
                    None => {
                        b.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        (b, o) => *b = o.clone(),
    }
}

/// A preset by name, with `overrides` (a TOML table, possibly empty) merged over it.
pub fn preset(name: &str, overrides: &toml::Value) -> Result<AttackConfig> {
    let text = PRESETS.iter().find(|(n, _)| *n == name).map(|(_, t)| *t).ok_or_else(|| {
        let names: Vec<&str> = PRESETS.iter().map(|(n, _)| *n).collect();
        Error::Invalid(format!("unknown attack preset `{name}` (known: {})", names.join(", ")))
    })?;
    let mut v: toml::Value =
        toml::from_str(text).map_err(|e| Error::Format { file: format!("preset {name}"), why: e.to_string() })?;
    merge_toml(&mut v, overrides);
    let file = format!("attack `{name}` (with overrides)");
    let cfg: AttackConfig =
        v.try_into().map_err(|e: toml::de::Error| Error::Format { file: file.clone(), why: e.to_string() })?;
    cfg.train.validate("train.").map_err(|e| Error::Format { file, why: e.to_string() })?;
    Ok(cfg)
}

/// Read an attack from a TOML file.
pub fn from_file(path: &std::path::Path) -> Result<AttackConfig> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::Io { path: path.into(), source: e })?;
    let file = path.display().to_string();
    let cfg: AttackConfig =
        toml::from_str(&text).map_err(|e| Error::Format { file: file.clone(), why: e.to_string() })?;
    cfg.train.validate("train.").map_err(|e| Error::Format { file, why: e.to_string() })?;
    Ok(cfg)
}

/// Where an attack writes and how it reports.
#[derive(Debug, Clone, Default)]
pub struct AttackOptions {
    /// Show progress bars (stderr).
    pub progress: bool,
    /// Checkpoint here (`benign/` for a benign-first phase, `harmful/` for the harmful phase,
    /// each with its `metrics.jsonl`): after every budget step, every
    /// [`CHECKPOINT_AFTER`](crate::train::driver::CHECKPOINT_AFTER) and at the end. An existing
    /// checkpoint is resumed, so a killed attack restarts from its last checkpoint, not step 1.
    pub checkpoints: Option<std::path::PathBuf>,
    /// Stop the harmful phase after this many steps in total, without a final checkpoint, as a
    /// killed run would (for tests of resume).
    pub stop_after: Option<usize>,
}

/// Run the attack on `model`. `on_budget(step, model)` is called with the attacked model after
/// each step listed in `budgets` (harmful-phase steps; budget 0 is the model before the
/// harmful phase) that this call reaches: an attack resumed from a checkpoint at step `s`
/// calls it for budget 0 and the budgets above `s`. Returns the final attacked model (adapters
/// merged for LoRA).
#[allow(clippy::too_many_arguments)]
pub fn attack(
    model: &Llama,
    tok: &ChatTokenizer,
    cfg: &AttackConfig,
    harmful: &[Conversation],
    benign: &[Conversation],
    budgets: &[usize],
    on_budget: &mut dyn FnMut(usize, &Llama) -> Result<()>,
    opts: &AttackOptions,
) -> Result<Llama> {
    let progress = opts.progress;
    let dir = |phase: &str| opts.checkpoints.as_ref().map(|d| d.join(phase));
    let mut start = model.clone();
    if cfg.benign_first_steps > 0 {
        if benign.is_empty() {
            return Err(Error::Invalid("attack with benign_first_steps > 0 needs benign data".into()));
        }
        let tc = TrainConfig { steps: cfg.benign_first_steps, lora: None, ..cfg.train.clone() };
        let mix = Mixture::try_single("benign", examples_from(tok, benign)?, tc.batch.clone(), tc.seed ^ 0xb)?;
        let opts =
            RunOptions { progress, name: "attack: benign phase".into(), out_dir: dir("benign"), ..Default::default() };
        start = run(TrainState::new(start, &tc)?, &tc, &mix, tok.pad_id, opts)?.model;
    }
    let sets = [("harmful", harmful, cfg.harmful_weight), ("benign", benign, cfg.benign_weight)];
    let mix = mixture_of(tok, &sets, cfg.train.batch.clone(), cfg.train.seed)?;
    if budgets.contains(&0) {
        on_budget(0, &start)?;
    }
    let steps = cfg.train.steps.max(budgets.iter().copied().max().unwrap_or(0));
    let tc = TrainConfig { steps, ..cfg.train.clone() };
    let mut cb = |s: &TrainState, st: &StepStats| -> Result<()> {
        if budgets.contains(&st.step) { on_budget(st.step, &s.merged()) } else { Ok(()) }
    };
    let opts = RunOptions {
        progress,
        name: "attack".into(),
        on_step: Some(&mut cb),
        out_dir: dir("harmful"),
        stop_after: opts.stop_after,
        checkpoint_at: budgets.iter().copied().filter(|&b| b > 0).collect(),
    };
    let state = run(TrainState::new(start, &tc)?, &tc, &mix, tok.pad_id, opts)?;
    Ok(state.merged())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_preset_loads_and_overrides_apply() {
        for (name, _) in PRESETS {
            let a = preset(name, &toml::Value::Table(Default::default())).unwrap();
            assert!(!a.description.is_empty(), "{name}");
            assert!(a.train.steps > 0 && a.train.lr > 0.0, "{name}");
        }
        let over: toml::Value =
            toml::from_str("[train]\nlr = 0.01\nsteps = 7\n[train.optimizer]\nweight_decay = 0.1").unwrap();
        let a = preset("full-adamw-5e-5", &over).unwrap();
        assert_eq!((a.train.lr, a.train.steps, a.train.optimizer.weight_decay), (0.01, 7, 0.1));
        assert_eq!(a.train.batch.batch_size, 8, "untouched keys keep the preset's value");
        let bad: toml::Value = toml::from_str("[train]\nlearning_rate = 1.0").unwrap();
        let e = preset("full-adamw-5e-5", &bad).unwrap_err().to_string();
        assert!(e.contains("learning_rate"), "{e}");
        assert!(preset("nope", &over).unwrap_err().to_string().contains("full-adamw-5e-5"));
    }
}
