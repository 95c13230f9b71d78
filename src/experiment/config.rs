//! The declarative experiment file (`patcher run EXPERIMENT.toml`): a base model, data, the
//! defenses to compare, the attack grid and the evaluation settings. Unknown keys are errors.

use serde::{Deserialize, Serialize};

use crate::align::AlignConfig;
use crate::data::synth::SynthConfig;
use crate::defense::patcher::PatcherConfig;
use crate::defense::{Method, MethodKind};
use crate::error::{Error, Result};
use crate::eval::suite::EvalConfig;
use crate::tiny::TinyConfig;

/// Where the base model comes from (`base.kind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BaseKind {
    /// `tiny`: trained from scratch on the synthetic world.
    Tiny,
    /// `hf`: a Hugging Face directory.
    Hf,
    /// `gguf`: a GGUF file, imported first.
    Gguf,
}

/// Where the base model comes from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BaseConfig {
    pub kind: BaseKind,
    /// Directory (`hf`) or file (`gguf`); for `tiny`, an optional directory holding a tiny model
    /// already trained on the same world (skips pre-training).
    pub path: String,
}

impl Default for BaseConfig {
    fn default() -> Self {
        Self { kind: BaseKind::Tiny, path: String::new() }
    }
}

/// Data of the real tier (ignored by the tiny tier, which uses its synthetic world, except for
/// `disjoint_harmful`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DataConfig {
    /// Refusal data for alignment and Patcher (`D_refuse`): files or `preset:NAME`. The default
    /// is AdvBench's goals with refusals the project writes (`preset:refusals-advbench`) and
    /// Safe-Tuned LLaMAs' (`preset:refusals-stl`). Llama-2-7b-chat's refusals
    /// (`preset:refusals-llama2`), the default until docs/results.md §27, are for evaluation
    /// only: Llama 2's licence forbids training other models on its outputs.
    pub refusals: Vec<String>,
    /// Benign data (`D_benign`). The default includes PHTest's pseudo-harmful prompts with
    /// compliant answers (`preset:benign-phtest`, docs/results.md §17-18) and the project's
    /// look-alikes repeated 16 times (`preset:benign-lookalike*16`, 46% of the benign rows):
    /// with them the SFT baseline over-refuses 19%, 12% and 12% of XSTest's safe prompts on
    /// three alignment seeds instead of 60%, 57% and 33%, at 0.5%, 0% and 9% keyword HS
    /// (learned 0-3%) instead of 0.5-2% (§28).
    pub benign: Vec<String>,
    /// The defender's harmful data for simulated attacks.
    pub defender_harmful: Vec<String>,
    /// The attacker's harmful data.
    pub attacker_harmful: Vec<String>,
    /// Evaluation suite: `real[:limit][,part=limit ...]` ([`crate::eval::suite::RealLimits`];
    /// tiny tier: always its world). The default takes 200 harmful prompts, all 250 of
    /// XSTest's safe prompts and 100 items of every other set.
    pub suite: String,
    /// Keep at most this many training conversations per role (0 = all).
    pub limit: usize,
    /// Keep the defender's harmful data disjoint from the attacker's ([`super::disjoint_harmful`]):
    /// on the tiny tier, whose defender and attacker share one harmful training set, the
    /// defender simulates attacks on its even-indexed conversations and the attacker fine-tunes
    /// on the odd-indexed ones; on the real tier the defender drops any prompt the attacker's
    /// data also has. Off by default (written only when on, so older run directories resume).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub disjoint_harmful: bool,
}

impl Default for DataConfig {
    fn default() -> Self {
        Self {
            refusals: vec!["preset:refusals-advbench".into(), "preset:refusals-stl".into()],
            benign: vec![
                "preset:benign-alpaca".into(),
                "preset:benign-dolly".into(),
                "preset:benign-phtest".into(),
                "preset:benign-lookalike*16".into(),
            ],
            defender_harmful: vec!["preset:harmful-advbench".into(), "preset:harmful-jbb".into()],
            attacker_harmful: vec!["preset:harmful-beavertails".into(), "preset:harmful-dna".into()],
            suite: "real:100,harmful=200,xstest=all".into(),
            limit: 0,
            disjoint_harmful: false,
        }
    }
}

/// Which method a defense runs (`defenses[].kind`): the base model, SFT, Patcher, or one of
/// the registered baselines ([`crate::defense::MethodKind`]). Unknown names are errors that
/// list the known ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DefenseKind {
    /// `none`: the base model as it is.
    None,
    /// `sft`: SFT alignment of the base model.
    Sft,
    /// `patcher`: sequential Patcher from the SFT model.
    Patcher,
    /// `patcher-parallel`: parallel Patcher from the SFT model.
    PatcherParallel,
    /// A baseline defense from the SFT model (`tar`, `booster`, ...).
    Method(MethodKind),
}

impl DefenseKind {
    const BUILT_IN: [(&str, DefenseKind); 4] = [
        ("none", Self::None),
        ("sft", Self::Sft),
        ("patcher", Self::Patcher),
        ("patcher-parallel", Self::PatcherParallel),
    ];

    /// Either Patcher variant (trains from the SFT model and writes Patcher metrics).
    pub fn is_patcher(self) -> bool {
        matches!(self, Self::Patcher | Self::PatcherParallel)
    }

    /// The name in experiment files.
    pub fn name(self) -> &'static str {
        match self {
            Self::Method(m) => m.name(),
            k => Self::BUILT_IN.iter().find(|(_, b)| *b == k).map(|(n, _)| *n).expect("built-in kind"),
        }
    }

    /// The kind called `name`.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::BUILT_IN
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, k)| *k)
            .or_else(|| MethodKind::from_name(name).map(Self::Method))
    }

    /// Every name, built-in first.
    pub fn names() -> Vec<&'static str> {
        Self::BUILT_IN.iter().map(|(n, _)| *n).chain(MethodKind::ALL.iter().map(|m| m.name())).collect()
    }
}

impl Serialize for DefenseKind {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

impl<'de> Deserialize<'de> for DefenseKind {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let name = String::deserialize(d)?;
        Self::from_name(&name).ok_or_else(|| {
            let known: Vec<String> = Self::names().iter().map(|n| format!("`{n}`")).collect();
            serde::de::Error::custom(format!("unknown variant `{name}`, expected one of {}", known.join(", ")))
        })
    }
}

/// One defense to compare.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DefenseSpec {
    pub name: String,
    pub kind: DefenseKind,
    /// Overrides merged over the experiment's `[patcher]` table.
    #[serde(default)]
    pub patcher: Option<toml::Value>,
    /// Workers for `patcher-parallel` (default 2, the method study's recipe).
    #[serde(default)]
    pub parallel: Option<usize>,
    /// The settings of a baseline defense (its config table, e.g. `{ lambda = 5.0, train =
    /// { steps = 60 } }`); absent = its defaults.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub settings: Option<toml::Value>,
    /// Run the attack grid on this defense (false: evaluate it unattacked only, e.g. for the
    /// base model that complies already).
    #[serde(default = "yes")]
    pub attacked: bool,
}

fn yes() -> bool {
    true
}

/// A defense resolved from its [`DefenseSpec`]: one variant per method, carrying the method's
/// own settings. A new baseline is a file in `src/defense/` and a line in its registry
/// (`crate::defense::methods!`); it arrives here as [`Defense::Method`].
#[derive(Debug, Clone, PartialEq)]
pub enum Defense {
    /// The base model as it is.
    None,
    /// SFT alignment of the base model (the `[align]` settings).
    Sft,
    /// Sequential Patcher from the SFT model.
    Patcher(PatcherConfig),
    /// Parallel Patcher from the SFT model with `workers` workers.
    PatcherParallel { config: PatcherConfig, workers: usize },
    /// A baseline defense from the SFT model, with its settings.
    Method(Method),
}

impl Defense {
    /// Forward/backward passes per training step on the critical path (the cost column):
    /// Patcher `K + Σ_{k∈S} (tr_passes + min(meta_steps, k)) + 1` (+1 with `retain_kl`) at its
    /// largest K (K + b with a prepended benign phase of b steps); parallel Patcher's slowest
    /// worker `1 + tr_passes + 1`; a baseline's own count; SFT 1; none 0.
    pub fn passes_per_step(&self) -> usize {
        match self {
            Self::None => 0,
            Self::Sft => 1,
            Self::Patcher(c) => {
                let k = c.k.max();
                let per_selected: usize =
                    c.inner.steps(k).iter().map(|(s, _)| c.tr_passes() + c.meta_steps.min(*s)).sum();
                c.max_attack_len() + per_selected + 1 + usize::from(c.retain_kl > 0.0)
            }
            Self::PatcherParallel { config, .. } => 1 + config.tr_passes() + 1,
            Self::Method(m) => m.passes_per_step(),
        }
    }

    /// The Patcher settings of either Patcher variant.
    pub fn patcher(&self) -> Option<&PatcherConfig> {
        match self {
            Self::Patcher(c) | Self::PatcherParallel { config: c, .. } => Some(c),
            Self::None | Self::Sft | Self::Method(_) => None,
        }
    }
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
    /// This attack's seeds (default: the experiment's `attack_seeds`), e.g. three seeds for the
    /// train-time attack and one for each held-out attack where compute is short. Like
    /// `attack_seeds`, not part of a run's identity: each seed's attack is cached on its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seeds: Option<Vec<u64>>,
}

impl AttackSpec {
    /// The seeds set for this attack: its own `seeds`, else `attack_seeds` (empty: the one
    /// run of seed 0 that a config without seeds makes).
    pub fn seeds<'a>(&'a self, attack_seeds: &'a [u64]) -> &'a [u64] {
        self.seeds.as_deref().unwrap_or(attack_seeds)
    }
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
    /// Attack seeds: every (defense, attack) is run once per seed (`evals/<defense>__<attack>__s<seed>.json`)
    /// and the report shows the mean with a 95% interval over prompts and seeds. Empty (the
    /// default): one run per pair, in `evals/<defense>__<attack>.json`, the same run as seed 0.
    /// Not part of a run's identity: seeds can be added to a finished run and only the new
    /// ones run (written only when given, so older run directories still resume).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attack_seeds: Vec<u64>,
    pub eval: EvalConfig,
    /// Number of sample generations per (defense, attack) kept for the report.
    pub samples: usize,
    /// Fixed-order reductions (`--deterministic`): the run gives the same bits on any x86-64
    /// CPU with FMA and the same L1 data cache geometry. Recorded in `config.json`, so a run is
    /// never resumed in the other mode (written only when on, so run directories made before
    /// the option still resume).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub deterministic: bool,
    /// The worst-case attack grid of `patcher sweep` (absent: its defaults; written only when
    /// given, so run directories made before the sweep still resume).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sweep: Option<crate::experiment::sweep::SweepConfig>,
    /// The report's capability guard (`[guard] on = "benign-loss", ratio = 0.9`; absent: utility
    /// at 0.8). Not part of a run's identity: it changes how the rows are read, not the rows
    /// (written only when given).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guard: Option<crate::report::Guard>,
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
            attack_seeds: vec![],
            eval: EvalConfig::default(),
            samples: 2,
            deterministic: false,
            sweep: None,
            guard: None,
        }
    }
}

impl ExperimentConfig {
    /// Parse and validate an experiment file; every error names `source` (a misspelt setting
    /// such as `weight = "Linear"` shows its line, or its key inside a defense's overrides,
    /// and the allowed values).
    pub fn from_toml(text: &str, source: &str) -> Result<Self> {
        Self::checked(toml::from_str(text), source)
    }

    /// A parsed config, validated; either error becomes a format error of `file`.
    fn checked(parsed: std::result::Result<Self, toml::de::Error>, file: &str) -> Result<Self> {
        let cfg = parsed.map_err(|e| Error::Format { file: file.into(), why: e.to_string() })?;
        cfg.validate().map_err(|e| Error::Format { file: file.into(), why: e.to_string() })?;
        Ok(cfg)
    }

    /// [`Self::from_toml`] with command-line overrides (`KEY=VALUE`, [`super::overrides`])
    /// applied first; errors name `source` followed by the flags.
    pub fn from_toml_with(text: &str, source: &str, sets: &[String]) -> Result<Self> {
        if sets.is_empty() {
            return Self::from_toml(text, source);
        }
        super::overrides::parse(text, source, sets, Self::validate)
    }

    /// Check the inputs the config names, before a run writes anything: the base model (a
    /// directory's `config.json`, a GGUF file's header). Errors name `source` and the field.
    pub fn check_inputs(&self, source: &str) -> Result<()> {
        let path = std::path::Path::new(&self.base.path);
        let field = |e: Error| Error::Config { file: source.into(), field: "base.path".into(), why: e.to_string() };
        match self.base.kind {
            BaseKind::Tiny if self.base.path.is_empty() => Ok(()),
            BaseKind::Tiny | BaseKind::Hf => crate::io::hf::load_config(path).map(|_| ()).map_err(field),
            BaseKind::Gguf => crate::io::gguf::GgufFile::open(path).map(|_| ()).map_err(|e| field(e.into())),
        }
    }

    pub fn validate(&self) -> Result<()> {
        self.align.train.validate("align.train.")?;
        self.tiny.train.validate("tiny.train.")?;
        let mut names = std::collections::HashSet::new();
        for d in &self.defenses {
            if !names.insert(d.name.clone()) {
                return Err(Error::Invalid(format!("defense name `{}` is used twice", d.name)));
            }
            if let Some(pc) = self.defense(d)?.patcher() {
                pc.validate()?;
            }
        }
        let mut seeds = std::collections::HashSet::new();
        if let Some(s) = self.attack_seeds.iter().find(|&&s| !seeds.insert(s)) {
            return Err(Error::Invalid(format!("attack_seeds: seed {s} is listed twice")));
        }
        for a in &self.attacks {
            if let Some(seeds) = &a.seeds {
                let mut seen = std::collections::HashSet::new();
                if seeds.is_empty() {
                    return Err(Error::Invalid(format!("attack `{}`: `seeds` is empty", a.name)));
                }
                if let Some(s) = seeds.iter().find(|&&s| !seen.insert(s)) {
                    return Err(Error::Invalid(format!("attack `{}`: seed {s} is listed twice", a.name)));
                }
            }
            crate::attack::preset(&a.preset, a.overrides.as_ref().unwrap_or(&toml::Value::Table(Default::default())))?;
        }
        if let Some(g) = &self.guard {
            g.validate().map_err(Error::Invalid)?;
        }
        if self.base.kind != BaseKind::Tiny {
            let real = crate::eval::suite::real_limits_of(&self.data.suite)
                .map_err(|e| Error::Invalid(format!("data.suite: {e}")))?;
            if real.is_some() {
                self.check_attacked_mc()?;
            }
        }
        Ok(())
    }

    /// With `[eval] attacked_mc = false` an attacked row of the real suite has no utility, so
    /// a capability guard on utility would never trip: both guards must compare the benign
    /// loss instead.
    fn check_attacked_mc(&self) -> Result<()> {
        use crate::experiment::sweep::GuardMetric;
        if self.eval.attacked_mc {
            return Ok(());
        }
        let why = |key: &str| {
            Err(Error::Invalid(format!(
                "eval.attacked_mc = false leaves attacked models without a utility: set {key} = \"benign-loss\""
            )))
        };
        if self.guard.is_none_or(|g| g.on != GuardMetric::BenignLoss) {
            return why("guard.on");
        }
        if self.sweep.as_ref().is_some_and(|s| s.guard_on != GuardMetric::BenignLoss) {
            return why("sweep.guard_on");
        }
        Ok(())
    }

    /// The typed defense of `d`. Settings that belong to another method are errors naming the
    /// defense and the key (`parallel` on a sequential Patcher, `patcher` overrides on `sft`).
    pub fn defense(&self, d: &DefenseSpec) -> Result<Defense> {
        let stray = |key: &str, belongs: &str| {
            Err(Error::Invalid(format!(
                "defense `{}`: `{key}` applies to kind {belongs}, not `{}`",
                d.name,
                d.kind.name()
            )))
        };
        let method = matches!(d.kind, DefenseKind::Method(_));
        match d.kind {
            _ if !d.kind.is_patcher() && d.patcher.is_some() => stray("patcher", "patcher or patcher-parallel"),
            k if k != DefenseKind::PatcherParallel && d.parallel.is_some() => stray("parallel", "patcher-parallel"),
            _ if !method && d.settings.is_some() => {
                let names: Vec<&str> = MethodKind::ALL.iter().map(|m| m.name()).collect();
                stray("settings", &names.join(" / "))
            }
            DefenseKind::Method(kind) => {
                let origin = format!("defense `{}` settings", d.name);
                Ok(Defense::Method(Method::from_settings(kind, d.settings.as_ref(), &origin)?))
            }
            DefenseKind::None => Ok(Defense::None),
            DefenseKind::Sft => Ok(Defense::Sft),
            DefenseKind::Patcher => Ok(Defense::Patcher(self.patcher_for(d)?)),
            DefenseKind::PatcherParallel => {
                let workers = d.parallel.unwrap_or(2);
                if let Some(what) = self.patcher_for(d)?.sequential_only() {
                    return Err(Error::Invalid(format!(
                        "defense `{}`: {what} is implemented for kind patcher only, not patcher-parallel",
                        d.name
                    )));
                }
                if workers == 0 {
                    return Err(Error::Invalid(format!("defense `{}`: `parallel` must be at least 1", d.name)));
                }
                Ok(Defense::PatcherParallel { config: self.patcher_for(d)?, workers })
            }
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::defense::patcher::{InnerKind, InnerWeight, KScheduleKind};

    /// An experiment file that spells out every typed setting.
    const FULL: &str = r#"
name = "typed"

[base]
kind = "hf"
path = "models/x"

[patcher.k]
kind = "linear"
start = 2
end = 8

[patcher.inner]
kind = "every"
n = 2
weight = "uniform"

[[defenses]]
name = "none"
kind = "none"

[[defenses]]
name = "sft"
kind = "sft"

[[defenses]]
name = "patcher"
kind = "patcher"
patcher = { k = { kind = "step", start = 1, end = 4 }, inner = { kind = "all", weight = "linear" } }

[[defenses]]
name = "parallel"
kind = "patcher-parallel"
parallel = 2
patcher = { k = { kind = "constant", start = 3, end = 3 }, inner = { kind = "last" } }

[[defenses]]
name = "booster"
kind = "booster"
settings = { lambda = 2.0, train = { steps = 5, lr = 1e-4 } }
"#;

    fn parse(text: &str) -> Result<ExperimentConfig> {
        ExperimentConfig::from_toml(text, "typed.toml")
    }

    /// `FULL` with the first `from` replaced by `to`, parsed; must fail. Returns the message.
    fn misspelt(from: &str, to: &str) -> String {
        assert!(FULL.contains(from), "{from} is not in the test file");
        match parse(&FULL.replacen(from, to, 1)) {
            Ok(_) => panic!("{to} was accepted"),
            Err(e) => e.to_string(),
        }
    }

    fn assert_names(msg: &str, want: &[&str]) {
        for w in want {
            assert!(msg.contains(w), "the message does not name {w}:\n{msg}");
        }
    }

    #[test]
    fn every_spelling_parses_to_its_variant() {
        let c = parse(FULL).unwrap();
        assert_eq!(c.base.kind, BaseKind::Hf);
        assert_eq!(c.patcher.k.kind, KScheduleKind::Linear);
        assert_eq!((c.patcher.inner.kind, c.patcher.inner.weight), (InnerKind::Every, InnerWeight::Uniform));
        let kinds: Vec<DefenseKind> = c.defenses.iter().map(|d| d.kind).collect();
        let booster = DefenseKind::Method(MethodKind::Booster);
        assert_eq!(
            kinds,
            [DefenseKind::None, DefenseKind::Sft, DefenseKind::Patcher, DefenseKind::PatcherParallel, booster]
        );
        let Defense::Method(Method::Booster(b)) = c.defense(&c.defenses[4]).unwrap() else { panic!("not booster") };
        assert_eq!((b.lambda, b.train.steps, b.train.lr, b.alpha), (2.0, 5, 1e-4, 0.1));
        let p = c.patcher_for(&c.defenses[2]).unwrap();
        assert_eq!(
            (p.k.kind, p.inner.kind, p.inner.weight),
            (KScheduleKind::Step, InnerKind::All, InnerWeight::Linear)
        );
        let q = c.patcher_for(&c.defenses[3]).unwrap();
        assert_eq!(
            (q.k.kind, q.inner.kind, q.inner.weight),
            (KScheduleKind::Constant, InnerKind::Last, InnerWeight::Uniform)
        );
        for (text, kind) in [("tiny", BaseKind::Tiny), ("gguf", BaseKind::Gguf)] {
            assert_eq!(parse(&FULL.replacen("\"hf\"", &format!("\"{text}\""), 1)).unwrap().base.kind, kind);
        }
        let d = ExperimentConfig::default();
        assert_eq!((d.base.kind, d.patcher.k.kind), (BaseKind::Tiny, KScheduleKind::Constant));
        // The default `[patcher]` is the method study's recipe (issue 14): K = 64 at every inner
        // step, linear weights, β = 2, γ = 1, c = 4; parallel Patcher with 2 workers.
        assert_eq!((d.patcher.inner.kind, d.patcher.inner.weight), (InnerKind::All, InnerWeight::Linear));
        assert_eq!((d.patcher.k.max(), d.patcher.beta, d.patcher.gamma, d.patcher.cap), (64, 2.0, 1.0, 4.0));
        let two = parse(&FULL.replacen("parallel = 2\n", "", 1)).unwrap();
        let Defense::PatcherParallel { workers, .. } = two.defense(&two.defenses[3]).unwrap() else { panic!() };
        assert_eq!(workers, 2);
    }

    /// A real-tier suite spec is checked when the file is read, naming the file and field.
    #[test]
    fn a_bad_real_suite_spec_is_an_error_naming_the_field() {
        let text = "[base]\nkind = \"hf\"\npath = \"m\"\n[data]\nsuite = \"real:100,mcq=all\"\n";
        let e = ExperimentConfig::from_toml(text, "x.toml").unwrap_err().to_string();
        assert!(e.contains("x.toml") && e.contains("data.suite") && e.contains("mcq"), "{e}");
        let ok = text.replace("mcq=all", "mc=all");
        assert_eq!(ExperimentConfig::from_toml(&ok, "x.toml").unwrap().data.suite, "real:100,mc=all");
        // A synthetic world's suite stays allowed beside an HF base (tests/cli.rs uses it).
        let synth = text.replace("real:100,mcq=all", "synth:some/world");
        assert_eq!(ExperimentConfig::from_toml(&synth, "x.toml").unwrap().data.suite, "synth:some/world");
        let other = text.replace("real:100,mcq=all", "reel:5");
        assert!(ExperimentConfig::from_toml(&other, "x.toml").unwrap_err().to_string().contains("unknown suite"));
    }

    /// An attack's own `seeds` replaces `attack_seeds` for it; an empty or repeated list is an
    /// error naming the attack.
    #[test]
    fn an_attack_s_own_seeds_replace_the_experiment_s() {
        let text = "attack_seeds = [0, 1, 2]\n[[attacks]]\nname = \"a\"\npreset = \"full-adamw-5e-5\"\n\
                    [[attacks]]\nname = \"b\"\npreset = \"full-sgd-momentum\"\nseeds = [5]\n";
        let c = ExperimentConfig::from_toml(text, "x.toml").unwrap();
        assert_eq!(c.attacks[0].seeds(&c.attack_seeds), [0, 1, 2]);
        assert_eq!(c.attacks[1].seeds(&c.attack_seeds), [5]);
        for (bad, why) in [("seeds = [5]", "seeds = []"), ("seeds = [5]", "seeds = [5, 5]")] {
            let e = ExperimentConfig::from_toml(&text.replace(bad, why), "x.toml").unwrap_err().to_string();
            assert!(e.contains("x.toml") && e.contains("attack `b`"), "{e}");
        }
    }

    /// `[eval] attacked_mc = false` on the real suite needs both guards on the benign loss
    /// (attacked rows have no utility); the synthetic suite's utility is exact match.
    #[test]
    fn skipping_attacked_multiple_choice_needs_a_benign_loss_guard() {
        let base = "[base]\nkind = \"hf\"\npath = \"m\"\n[data]\nsuite = \"real:100\"\n[eval]\nattacked_mc = false\n";
        let e = ExperimentConfig::from_toml(base, "x.toml").unwrap_err().to_string();
        assert!(e.contains("x.toml") && e.contains("guard.on") && e.contains("benign-loss"), "{e}");
        let guarded = format!("{base}[guard]\non = \"benign-loss\"\n");
        let c = ExperimentConfig::from_toml(&guarded, "x.toml").unwrap();
        assert!(!c.eval.attacked_mc);
        let sweep = format!("{guarded}[sweep]\nlrs = [1e-5]\nsteps = [10]\n");
        let e = ExperimentConfig::from_toml(&sweep, "x.toml").unwrap_err().to_string();
        assert!(e.contains("sweep.guard_on"), "{e}");
        let both = format!("{guarded}[sweep]\nlrs = [1e-5]\nsteps = [10]\nguard_on = \"benign-loss\"\n");
        ExperimentConfig::from_toml(&both, "x.toml").unwrap();
        let synth = base.replace("real:100", "synth:some/world");
        ExperimentConfig::from_toml(&synth, "x.toml").unwrap();
        // The default is not written, so older run directories keep their identity.
        let default = ExperimentConfig::from_toml(&guarded.replace("attacked_mc = false\n", ""), "x.toml").unwrap();
        assert!(!serde_json::to_string(&default).unwrap().contains("attacked_mc"));
        assert!(serde_json::to_string(&c).unwrap().contains("\"attacked_mc\":false"));
    }

    #[test]
    fn a_misspelt_value_is_an_error_naming_the_file_the_key_and_the_allowed_values() {
        let allowed_k = ["`constant`", "`linear`", "`step`"];
        let cases: Vec<(&str, &str, Vec<&str>)> = vec![
            ("kind = \"hf\"", "kind = \"HF\"", vec!["kind = \"HF\"", "`HF`", "`tiny`", "`hf`", "`gguf`"]),
            ("kind = \"linear\"", "kind = \"linaer\"", [&["kind = \"linaer\"", "`linaer`"][..], &allowed_k].concat()),
            ("kind = \"every\"", "kind = \"evry\"", vec!["kind = \"evry\"", "`evry`", "`last`", "`every`", "`all`"]),
            (
                "weight = \"uniform\"",
                "weight = \"Linear\"",
                vec!["weight = \"Linear\"", "`Linear`", "`uniform`", "`linear`"],
            ),
            (
                "kind = \"patcher-parallel\"",
                "kind = \"patcher_parallel\"",
                vec![
                    "kind = \"patcher_parallel\"",
                    "`patcher_parallel`",
                    "`none`",
                    "`sft`",
                    "`patcher`",
                    "`patcher-parallel`",
                    "`booster`",
                ],
            ),
            // A baseline's settings: a misspelt key names the defense and the key.
            ("lambda = 2.0", "lamda = 2.0", vec!["defense `booster` settings", "`lamda`", "`lambda`"]),
            // Settings on a defense that has none.
            (
                "name = \"sft\"\nkind = \"sft\"\n",
                "name = \"sft\"\nkind = \"sft\"\nsettings = { lambda = 1.0 }\n",
                vec!["`sft`", "`settings`", "booster"],
            ),
            // Inside a defense's overrides (read as a TOML value, without line numbers): the
            // message names the defense and the key.
            (
                "inner = { kind = \"all\", weight = \"linear\" }",
                "inner = { kind = \"all\", weight = \"Linear\" }",
                vec!["defense `patcher` patcher overrides", "inner.weight", "`Linear`", "`uniform`", "`linear`"],
            ),
            (
                "inner = { kind = \"last\" }",
                "inner = { kind = \"evry\" }",
                vec!["defense `parallel` patcher overrides", "inner.kind", "`evry`", "`last`", "`every`", "`all`"],
            ),
            (
                "k = { kind = \"step\"",
                "k = { kind = \"Step\"",
                [&["defense `patcher` patcher overrides", "k.kind", "`Step`"][..], &allowed_k].concat(),
            ),
        ];
        for (from, to, want) in cases {
            let msg = misspelt(from, to);
            assert!(msg.starts_with("typed.toml: "), "the message does not name the file:\n{msg}");
            assert_names(&msg, &want);
        }
    }

    #[test]
    fn each_defense_resolves_to_its_method_with_its_own_settings() {
        let c = parse(FULL).unwrap();
        let ds: Vec<Defense> = c.defenses.iter().map(|d| c.defense(d).unwrap()).collect();
        assert_eq!(ds[0], Defense::None);
        assert_eq!(ds[1], Defense::Sft);
        let Defense::Patcher(p) = &ds[2] else { panic!("{:?}", ds[2]) };
        assert_eq!((p.k.kind, p.k.end), (KScheduleKind::Step, 4));
        let Defense::PatcherParallel { config, workers } = &ds[3] else { panic!("{:?}", ds[3]) };
        assert_eq!((config.k.start, *workers), (3, 2));
        // The `[patcher]` table itself is untouched by a defense's overrides.
        assert_eq!(c.patcher.k.kind, KScheduleKind::Linear);
    }

    #[test]
    fn a_setting_of_another_method_is_an_error_naming_the_defense_and_the_key() {
        let cases = [
            // `parallel` on a sequential Patcher.
            (
                "kind = \"patcher\"\n",
                "kind = \"patcher\"\nparallel = 4\n",
                vec!["typed.toml", "`patcher`", "`parallel`"],
            ),
            // Patcher overrides on SFT.
            (
                "kind = \"sft\"\n",
                "kind = \"sft\"\npatcher = { beta = 2.0 }\n",
                vec!["typed.toml", "`sft`", "`patcher`"],
            ),
            // Zero workers.
            ("parallel = 2", "parallel = 0", vec!["typed.toml", "`parallel`", "at least 1"]),
        ];
        for (from, to, want) in cases {
            assert_names(&misspelt(from, to), &want);
        }
    }

    #[test]
    fn a_config_survives_a_round_trip_through_toml() {
        let c = parse(FULL).unwrap();
        let text = toml::to_string(&c).unwrap();
        assert_eq!(parse(&text).unwrap(), c, "after a round trip through\n{text}");
        for spelling in ["kind = \"hf\"", "kind = \"patcher-parallel\"", "kind = \"every\"", "weight = \"uniform\""] {
            assert!(text.contains(spelling), "{spelling} is not written as it is read:\n{text}");
        }
        let d = ExperimentConfig::default();
        assert_eq!(parse(&toml::to_string(&d).unwrap()).unwrap(), d);
        // `config.json` and checkpoints record the config as JSON with the strings the
        // string-typed fields held, so run directories made before the enums still resume.
        let json = serde_json::to_string(&c).unwrap();
        for s in [r#""kind":"hf""#, r#""kind":"patcher-parallel""#, r#""kind":"linear""#, r#""weight":"uniform""#] {
            assert!(json.contains(s), "{s} is not in {json}");
        }
    }

    /// Every experiment, attack, alignment and Patcher file shipped in `configs/` parses and
    /// validates as what it is, and every experiment's defenses resolve.
    #[test]
    fn every_shipped_config_parses() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("configs");
        let mut seen = 0;
        for entry in std::fs::read_dir(&dir).unwrap().chain(std::fs::read_dir(dir.join("attacks")).unwrap()) {
            let path = entry.unwrap().path();
            if path.extension().is_none_or(|e| e != "toml") {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            let name = path.file_name().unwrap().to_string_lossy().to_string();
            let what = if path.parent().unwrap().ends_with("attacks") || name.starts_with("attack-") {
                crate::attack::from_file(&path).map(|_| "attack")
            } else if name.starts_with("align-") {
                toml::from_str::<crate::align::AlignConfig>(&text)
                    .map_err(|e| Error::Format { file: name.clone(), why: e.to_string() })
                    .and_then(|c| c.train.validate("train."))
                    .map(|_| "alignment")
            } else if name.starts_with("patcher-") {
                toml::from_str::<PatcherConfig>(&text)
                    .map_err(|e| Error::Format { file: name.clone(), why: e.to_string() })
                    .and_then(|c| c.validate())
                    .map(|_| "patcher")
            } else {
                ExperimentConfig::from_toml(&text, &name)
                    .and_then(|c| {
                        c.defenses.iter().try_for_each(|d| c.defense(d).map(|_| ()))?;
                        c.sweep.as_ref().map_or(Ok(()), |g| g.validate(&c))
                    })
                    .map(|_| "experiment")
            };
            match what {
                Ok(kind) => println!("{name}: {kind}"),
                Err(e) => panic!("{name}: {e}"),
            }
            seen += 1;
        }
        assert!(seen >= 15, "only {seen} files under configs/");
    }
}
