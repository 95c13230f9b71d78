//! The declarative experiment file (`patcher run EXPERIMENT.toml`): a base model, data, the
//! defenses to compare, the attack grid and the evaluation settings. Unknown keys are errors.

use serde::{Deserialize, Serialize};

use crate::align::AlignConfig;
use crate::data::synth::SynthConfig;
use crate::defense::patcher::PatcherConfig;
use crate::error::{Error, Result};
use crate::eval::suite::EvalConfig;
use crate::tiny::TinyConfig;

/// Where the base model comes from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BaseConfig {
    /// `tiny` (trained from scratch on the synthetic world), `hf` (a Hugging Face directory)
    /// or `gguf` (a GGUF file imported first).
    pub kind: String,
    /// Directory (`hf`) or file (`gguf`); for `tiny`, an optional directory holding a tiny model
    /// already trained on the same world (skips pre-training).
    pub path: String,
}

impl Default for BaseConfig {
    fn default() -> Self {
        Self { kind: "tiny".into(), path: String::new() }
    }
}

/// Data of the real tier (ignored by the tiny tier, which uses its synthetic world).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DataConfig {
    /// Refusal data for alignment and Patcher (`D_refuse`): files or `preset:NAME`.
    pub refusals: Vec<String>,
    /// Benign data (`D_benign`).
    pub benign: Vec<String>,
    /// The defender's harmful data for simulated attacks.
    pub defender_harmful: Vec<String>,
    /// The attacker's harmful data.
    pub attacker_harmful: Vec<String>,
    /// Evaluation suite: `real[:limit]` (tiny tier: always its world).
    pub suite: String,
    /// Keep at most this many training conversations per role (0 = all).
    pub limit: usize,
}

impl Default for DataConfig {
    fn default() -> Self {
        Self {
            refusals: vec!["preset:refusals-llama2".into(), "preset:refusals-stl".into()],
            benign: vec!["preset:benign-alpaca".into(), "preset:benign-dolly".into()],
            defender_harmful: vec!["preset:harmful-advbench".into(), "preset:harmful-jbb".into()],
            attacker_harmful: vec!["preset:harmful-beavertails".into(), "preset:harmful-dna".into()],
            suite: "real:100".into(),
            limit: 0,
        }
    }
}

/// One defense to compare.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DefenseSpec {
    pub name: String,
    /// `none` (the base model), `sft` (SFT alignment), `patcher`, `patcher-parallel`.
    pub kind: String,
    /// Overrides merged over the experiment's `[patcher]` table.
    #[serde(default)]
    pub patcher: Option<toml::Value>,
    /// Workers for `patcher-parallel`.
    #[serde(default)]
    pub parallel: Option<usize>,
    /// Run the attack grid on this defense (false: evaluate it unattacked only, e.g. for the
    /// base model that complies already).
    #[serde(default = "yes")]
    pub attacked: bool,
}

fn yes() -> bool {
    true
}

/// One attack of the grid.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttackSpec {
    pub name: String,
    pub preset: String,
    /// Overrides merged over the preset (e.g. `{ train = { lr = 1e-3 } }`).
    #[serde(default)]
    pub overrides: Option<toml::Value>,
    /// Not part of the defender's train-time attack distribution.
    #[serde(default)]
    pub held_out: bool,
    /// Step budgets to evaluate at (default: the experiment's `budgets`).
    #[serde(default)]
    pub budgets: Option<Vec<usize>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ExperimentConfig {
    pub name: String,
    pub seed: u64,
    pub base: BaseConfig,
    pub synth: SynthConfig,
    pub tiny: TinyConfig,
    pub data: DataConfig,
    pub align: AlignConfig,
    pub patcher: PatcherConfig,
    pub defenses: Vec<DefenseSpec>,
    pub attacks: Vec<AttackSpec>,
    pub budgets: Vec<usize>,
    pub eval: EvalConfig,
    /// Number of sample generations per (defense, attack) kept for the report.
    pub samples: usize,
    /// Fixed-order reductions (`--deterministic`): the run gives the same bits on any x86-64
    /// CPU with FMA. Recorded in `config.json`, so a run is never resumed in the other mode
    /// (written only when on, so run directories made before the option still resume).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub deterministic: bool,
}

impl Default for ExperimentConfig {
    fn default() -> Self {
        Self {
            name: "experiment".into(),
            seed: 0,
            base: BaseConfig::default(),
            synth: SynthConfig::default(),
            tiny: TinyConfig::default(),
            data: DataConfig::default(),
            align: AlignConfig::default(),
            patcher: PatcherConfig::default(),
            defenses: vec![],
            attacks: vec![],
            budgets: vec![0, 25, 50, 100],
            eval: EvalConfig::default(),
            samples: 2,
            deterministic: false,
        }
    }
}

impl ExperimentConfig {
    pub fn from_toml(text: &str, source: &str) -> Result<Self> {
        let cfg: Self = toml::from_str(text).map_err(|e| Error::Format { file: source.into(), why: e.to_string() })?;
        cfg.validate()?;
        Ok(cfg)
    }

    pub fn validate(&self) -> Result<()> {
        if !matches!(self.base.kind.as_str(), "tiny" | "hf" | "gguf") {
            return Err(Error::Invalid(format!("base.kind `{}`: expected tiny, hf or gguf", self.base.kind)));
        }
        let mut names = std::collections::HashSet::new();
        for d in &self.defenses {
            if !matches!(d.kind.as_str(), "none" | "sft" | "patcher" | "patcher-parallel") {
                return Err(Error::Invalid(format!(
                    "defense `{}`: kind `{}` is not none, sft, patcher or patcher-parallel",
                    d.name, d.kind
                )));
            }
            if !names.insert(d.name.clone()) {
                return Err(Error::Invalid(format!("defense name `{}` is used twice", d.name)));
            }
            self.patcher_for(d)?.validate()?;
        }
        for a in &self.attacks {
            crate::attack::preset(&a.preset, a.overrides.as_ref().unwrap_or(&toml::Value::Table(Default::default())))?;
        }
        Ok(())
    }

    /// The Patcher config of a defense: `[patcher]` with the defense's overrides merged in.
    pub fn patcher_for(&self, d: &DefenseSpec) -> Result<PatcherConfig> {
        let mut v = toml::Value::try_from(&self.patcher).map_err(|e| Error::Invalid(e.to_string()))?;
        if let Some(o) = &d.patcher {
            crate::attack::merge_toml(&mut v, o);
        }
        v.try_into().map_err(|e: toml::de::Error| Error::Format {
            file: format!("defense `{}` patcher overrides", d.name),
            why: e.to_string(),
        })
    }

    /// The attack config of an attack spec.
    pub fn attack_for(&self, a: &AttackSpec) -> Result<crate::attack::AttackConfig> {
        crate::attack::preset(&a.preset, a.overrides.as_ref().unwrap_or(&toml::Value::Table(Default::default())))
    }
}
