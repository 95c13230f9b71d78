//! Defenses, one file per method: [`patcher`] (sequential reference) and [`parallel`] (the
//! parallel algorithm over [`collective`] all-reduces), and the field's other defenses as
//! baselines: [`tar`], [`booster`], [`repnoise`] and [`vaccine`].
//!
//! Every defense trains from the SFT-aligned model on the same [`DefenseData`] (retain =
//! benign, refusal, and the defender's harmful pairs) through the one training driver
//! ([`crate::train::driver`]), so checkpoints, resume, progress and `metrics.jsonl` behave the
//! same for all. The baselines are registered in one list, [`methods!`] below: adding one is a
//! file here implementing [`Hardening`] and one line in that list; the experiment files
//! (`kind = "NAME"`, settings under `settings`), `patcher harden --method NAME` and the runner
//! then know it.

pub mod collective;
pub mod parallel;
pub mod patcher;

use std::fmt::Debug;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::model::Llama;
use crate::rng::Rng;
use crate::train::batches::{BatchConfig, Mixture};
use crate::train::driver;
use crate::train::engine::TrainState;
use crate::train::optim::{self, OptimState, OptimizerConfig};
use crate::train::schedule::ScheduleConfig;
use crate::train::step::Example;

pub use patcher::HardenOptions;

/// The data every defense trains on: `retain` (benign), `refusal` (harmful prompts with
/// refusals) and `harmful` (the defender's harmful pairs), tokenized.
pub type DefenseData = patcher::PatcherData;

/// A hardening method: its settings (a typed config with defaults; unknown keys are errors)
/// and how it trains a model from the SFT-aligned one.
pub trait Hardening: Debug + Clone + PartialEq + Default + Serialize + DeserializeOwned {
    /// Check settings a file can get wrong, naming the field.
    fn validate(&self) -> Result<()>;
    /// Forward/backward passes per training step (the report's cost column).
    fn passes_per_step(&self) -> usize;
    /// Harden `model` on `data`; checkpoints and `metrics.jsonl` go to `opts.out_dir` (an
    /// existing checkpoint is resumed). `opts.on_step` is Patcher's and is not called.
    fn harden(&self, model: &Llama, data: &DefenseData, opts: HardenOptions) -> Result<Llama>;
}

/// The registry of baseline defenses: `Variant = "name" => module::Config`. Generates the
/// modules, [`MethodKind`] (the names experiment files and the CLI use) and [`Method`] (a
/// resolved defense with its settings).
macro_rules! methods {
    ($($(#[doc = $doc:literal])* $variant:ident = $name:literal => $module:ident::$cfg:ident,)*) => {
        $(pub mod $module;)*

        /// A baseline defense's name (`kind = "..."` in an experiment file, `--method`).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum MethodKind {
            $($(#[doc = $doc])* $variant,)*
        }

        impl MethodKind {
            /// Every registered method, in registry order.
            pub const ALL: &[MethodKind] = &[$(Self::$variant),*];

            /// The name in files and on the command line.
            pub fn name(self) -> &'static str {
                match self {
                    $(Self::$variant => $name,)*
                }
            }

            /// The method called `name`, if one is.
            pub fn from_name(name: &str) -> Option<Self> {
                Self::ALL.iter().copied().find(|k| k.name() == name)
            }
        }

        /// A baseline defense resolved with its settings.
        #[derive(Debug, Clone, PartialEq)]
        pub enum Method {
            $($variant($module::$cfg),)*
        }

        impl Method {
            /// The method `kind` with `settings` (a TOML table; absent = the defaults). Errors
            /// name `origin`, the key and the allowed values.
            pub fn from_settings(kind: MethodKind, settings: Option<&toml::Value>, origin: &str) -> Result<Self> {
                let v = settings.cloned().unwrap_or_else(|| toml::Value::Table(Default::default()));
                Self::read(kind, v, origin)
            }

            /// The method `kind` with its settings read from TOML `text` (a settings file):
            /// errors name `origin` and the line, key and allowed values.
            pub fn from_text(kind: MethodKind, text: &str, origin: &str) -> Result<Self> {
                Self::read(kind, toml::Deserializer::new(text), origin)
            }

            /// The settings of `kind` from a TOML deserializer (a value or a text), validated.
            fn read<'de, D: serde::Deserializer<'de, Error = toml::de::Error>>(
                kind: MethodKind,
                from: D,
                origin: &str,
            ) -> Result<Self> {
                let format = |why: String| Error::Format { file: origin.into(), why };
                let m = match kind {
                    $(MethodKind::$variant => Self::$variant(
                        <$module::$cfg as serde::Deserialize>::deserialize(from).map_err(|e| format(e.to_string()))?,
                    ),)*
                };
                m.validate().map_err(|e| format(e.to_string()))?;
                Ok(m)
            }

            pub fn kind(&self) -> MethodKind {
                match self {
                    $(Self::$variant(_) => MethodKind::$variant,)*
                }
            }

            pub fn validate(&self) -> Result<()> {
                match self {
                    $(Self::$variant(c) => c.validate(),)*
                }
            }

            pub fn passes_per_step(&self) -> usize {
                match self {
                    $(Self::$variant(c) => c.passes_per_step(),)*
                }
            }

            /// The resolved settings (recorded with the run).
            pub fn settings(&self) -> serde_json::Value {
                match self {
                    $(Self::$variant(c) => serde_json::to_value(c).expect("json"),)*
                }
            }

            pub fn harden(&self, model: &Llama, data: &DefenseData, opts: HardenOptions) -> Result<Llama> {
                match self {
                    $(Self::$variant(c) => c.harden(model, data, opts),)*
                }
            }
        }
    };
}

methods! {
    /// `tar`: TAR-style tamper-resistance training (Tamirisa et al., 2024).
    Tar = "tar" => tar::TarConfig,
    /// `booster`: Booster's attenuated harmful perturbation (Huang et al., 2024).
    Booster = "booster" => booster::BoosterConfig,
    /// `repnoise`: Representation Noising (Rosati et al., 2024).
    RepNoise = "repnoise" => repnoise::RepNoiseConfig,
    /// `vaccine`: perturbation-aware alignment (Huang et al., 2024).
    Vaccine = "vaccine" => vaccine::VaccineConfig,
}

/// The outer training loop's settings, shared by the baselines (`train` in their settings).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Outer {
    pub steps: usize,
    pub lr: f64,
    pub optimizer: OptimizerConfig,
    pub schedule: ScheduleConfig,
    pub clip_norm: f64,
    /// Batch of every data stream.
    pub batch: BatchConfig,
    pub seed: u64,
    /// Checkpoint every this many steps (0: only at the end).
    pub checkpoint_every: usize,
}

impl Default for Outer {
    fn default() -> Self {
        Self {
            steps: 100,
            lr: 1e-5,
            optimizer: OptimizerConfig::adamw(),
            schedule: ScheduleConfig::default(),
            clip_norm: 1.0,
            batch: BatchConfig { batch_size: 8, max_len: 256, bucket_window: 1 },
            seed: 0,
            checkpoint_every: 0,
        }
    }
}

impl Outer {
    pub fn validate(&self) -> Result<()> {
        if self.batch.batch_size == 0 {
            return Err(Error::Invalid("field `train.batch.batch_size`: is 0; it must be at least 1".into()));
        }
        if !(self.lr.is_finite() && self.lr >= 0.0) {
            return Err(Error::Invalid(format!("field `train.lr`: {} is not a learning rate", self.lr)));
        }
        Ok(())
    }

    /// A deterministic batch stream over `examples` named `name` (independent per name).
    pub fn stream(&self, name: &str, examples: &[Example]) -> Mixture {
        Mixture::single(name, examples.to_vec(), self.batch.clone(), Rng::derive(self.seed, name).next_u64())
    }

    /// Refuse non-finite `losses` (naming the step and each loss), clip `grads` to
    /// `clip_norm`, take the optimizer step at the scheduled lr and advance `state.step`.
    /// Returns (gradient norm before clipping, lr).
    pub fn update(
        &self,
        state: &mut TrainState,
        mut grads: Vec<Option<burn::prelude::Tensor<2>>>,
        losses: &[(&str, f64)],
    ) -> Result<(f64, f64)> {
        let step = state.step + 1;
        if losses.iter().any(|(_, l)| !l.is_finite()) {
            let what = losses.iter().map(|(n, l)| format!("{n} {l}")).collect::<Vec<_>>().join(", ");
            return Err(Error::NonFinite { step, what: format!("a loss ({what})") });
        }
        let grad_norm = optim::clip_grad_norm(&mut grads, self.clip_norm);
        if !grad_norm.is_finite() {
            return Err(Error::NonFinite { step, what: "the gradient norm".into() });
        }
        let lr = self.schedule.lr_at(self.lr, state.step, self.steps);
        optim::step(&self.optimizer, &mut state.opt, &mut state.model.params, &grads, lr);
        state.step += 1;
        Ok((grad_norm, lr))
    }
}

/// Every set of `data` must hold examples: an error naming the defense and the set.
pub fn check_data(method: &str, data: &DefenseData) -> Result<()> {
    for (name, set) in [("benign (retain)", &data.retain), ("refusal", &data.refusal), ("harmful", &data.harmful)] {
        if set.is_empty() {
            return Err(Error::Invalid(format!("{method}'s {name} data set is empty")));
        }
    }
    Ok(())
}

/// Run `method`'s steps from `model` for `total` steps through the one training driver
/// (resume, checkpoints identified by `run_key` every `checkpoint_every` steps, progress
/// labelled `label`, metrics, the per-step callback), with a fresh outer optimizer state.
pub fn drive_from<C: Serialize, M: driver::Method>(
    model: &Llama,
    (total, checkpoint_every): (usize, usize),
    run_key: &C,
    label: &str,
    method: &mut M,
    options: driver::Options<M::Stats>,
) -> Result<Llama> {
    let state = TrainState { model: model.clone(), lora: None, opt: OptimState::new(model.params.len()), step: 0 };
    let plan = driver::Plan { total, checkpoint_every, run_key, label };
    Ok(driver::drive(state, &plan, method, options)?.model)
}

/// Run a baseline's `method` for `outer.steps` steps ([`drive_from`]); `opts.on_step`
/// (Patcher's callback type) is not called.
pub fn run<C: Serialize, M: driver::Method>(
    model: &Llama,
    outer: &Outer,
    run_key: &C,
    label: &str,
    method: &mut M,
    opts: HardenOptions,
) -> Result<Llama> {
    let options = driver::Options {
        out_dir: opts.out_dir,
        progress: opts.progress,
        stop_after: opts.stop_after,
        ..Default::default()
    };
    drive_from(model, (outer.steps, outer.checkpoint_every), run_key, label, method, options)
}
