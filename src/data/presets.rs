//! Named dataset presets over the shared data directory (`../shared/data`, or
//! `PATCHER_DATA_DIR`), each serving one role of DESIGN.md §2 with a fixed train/eval split.
//!
//! Split rule (see [`super::split`]): presets marked [`Scope::Split`] divide their rows by a
//! stable hash of the normalised prompt (20% evaluation), so a prompt that occurs in several
//! datasets sits on the same side in all of them. Presets marked [`Scope::EvalOnly`] are
//! evaluation sets as a whole. A training split is always decontaminated: rows whose
//! normalised prompt occurs in any evaluation-only preset (or any multiple-choice evaluation
//! question) are dropped. Multiple-choice presets use their own dev (train) and test (eval)
//! files instead of the hash.
//!
//! The row logic of each dataset lives in `loaders.rs`; this file is the registry and
//! the directory handle.

use super::split::{PromptSet, Split, decontaminate, select};
use super::{Conversation, DataError};
use super::{loaders, lookalike, misinfo};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// Environment variable that overrides the shared data directory.
pub const DATA_DIR_ENV: &str = "PATCHER_DATA_DIR";
/// The shared data directory, relative to the working directory.
pub const DEFAULT_DATA_DIR: &str = "../shared/data";

/// What a preset's conversations are for (DESIGN.md §2).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// Harmful prompt → refusal (`D_refuse`).
    Refusal,
    /// Benign instruction → helpful answer (`D_benign`).
    Benign,
    /// Harmful prompt → harmful answer (`D_harm`, the attacker's data).
    Harmful,
    /// Harmful prompts without answers, for the harmful score.
    HarmfulEval,
    /// Safe prompts that look unsafe, for the over-refusal rate.
    OverRefusal,
    /// Multiple-choice questions ([`McItem`]), for utility.
    MultipleChoice,
}

/// How a preset divides into train and eval.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Scope {
    /// By prompt hash: 80% train, 20% eval.
    Split,
    /// Everything is evaluation; a training split is an error.
    EvalOnly,
    /// Multiple choice: the dev file is train, the test file eval.
    DevTest,
}

/// A registry entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PresetInfo {
    pub name: &'static str,
    pub role: Role,
    pub scope: Scope,
    /// Files it reads, relative to the data directory; none for a preset whose rows ship with
    /// patcher (`benign-lookalike`, `refusals-misinfo`, `benign-persuasion`: [`shipped`](super::shipped)).
    pub files: &'static [&'static str],
    pub description: &'static str,
}

const STL: &str = "safety-tuned-llamas/safety_only_data_Instructions.json";
const LLAMA2: &str = "llama2-refusals-safety-short/SFT_aligned_llama2-7b-chat-hf_train_short.csv";
const ALPACA: &str = "alpaca-1k/alpaca_data_1k.json";
const DOLLY: &str = "dolly-1k/dolly_subset_1000.jsonl";
const ALPACA_EVAL: &str = "alpaca-eval/gpt4_1106_preview_model_outputs.json";
const PHTEST: &str = "phtest/phtest_mistral-7b-v0.3_responses.csv";
const BEAVERTAILS: &str = "beavertails-unsafe-subset/beavertails_30k_train_unsafe_200.jsonl";
const JBB: &str = "jailbreakbench-artifacts/jbb_artifacts.jsonl";
const DNA: &str = "do-not-answer/data_en.csv";
const ADVBENCH: &str = "advbench/harmful_behaviors.csv";
const HARMBENCH: &str = "harmbench/harmbench_behaviors_text_all.csv";
const XSTEST: &str = "xstest/xstest_prompts.csv";
const ARC_DEV: &str = "arc-easy/ARC-Easy-Dev.jsonl";
const ARC_TEST: &str = "arc-easy/ARC-Easy-Test.jsonl";
const MMLU_DEV: &str = "mmlu/mmlu_dev.csv";
const MMLU_TEST: &str = "mmlu/mmlu_test_first20_per_subject.csv";

const fn p(
    name: &'static str,
    role: Role,
    scope: Scope,
    files: &'static [&'static str],
    description: &'static str,
) -> PresetInfo {
    PresetInfo { name, role, scope, files, description }
}

/// Every preset. Names are stable: configs refer to them.
pub const PRESETS: &[PresetInfo] = &[
    p(
        "refusals-stl",
        Role::Refusal,
        Scope::Split,
        &[STL],
        "Safety-Tuned LLaMAs: 2,483 harmful instructions with safe responses",
    ),
    p(
        "refusals-llama2",
        Role::Refusal,
        Scope::Split,
        &[LLAMA2],
        "AdvBench goals with Llama-2-7b-chat refusals (1,015 rows, 361 goals)",
    ),
    p(
        "refusals-dna",
        Role::Refusal,
        Scope::Split,
        &[DNA],
        "Do-Not-Answer: GPT-4, ChatGPT and Claude answers human-labelled as a refusal (action 0) and not harmful (1,011 rows, 453 prompts; a third are the one sentence \"Sorry, but I can't assist with that.\"); not Llama-2 outputs",
    ),
    p(
        "refusals-advbench",
        Role::Refusal,
        Scope::Split,
        &[ADVBENCH],
        "AdvBench's 520 goals, each with two refusals written by the project from templates that restate the request (1,040 rows; `data::written_refusals`): AdvBench prompts without Llama-2's text",
    ),
    p(
        misinfo::PRESET,
        Role::Refusal,
        Scope::Split,
        &[],
        "Requests to write misinformation, disinformation and hateful content (false health and science claims, atrocity denial, group hatred, election disinformation, fabricated news and evidence), each with a specific refusal that names what is wrong and offers a truthful alternative, written by the project and shipped with it (`data/refusals-misinfo.jsonl`; `data::misinfo`)",
    ),
    p("benign-alpaca", Role::Benign, Scope::Split, &[ALPACA], "Alpaca 1k subset: instruction (+ input) -> output"),
    p(
        "benign-dolly",
        Role::Benign,
        Scope::Split,
        &[DOLLY],
        "Dolly 1k subset: instruction (+ context) -> response, category = Dolly task",
    ),
    p(
        "benign-alpaca-eval",
        Role::Benign,
        Scope::Split,
        &[ALPACA_EVAL],
        "AlpacaEval 805 instructions with GPT-4 (1106-preview) outputs",
    ),
    p(
        "benign-phtest",
        Role::Benign,
        Scope::Split,
        &[PHTEST],
        "PHTest pseudo-harmful prompts (look unsafe, are harmless) with Mistral-7B-Instruct-v0.3's full-compliance answers (1,840 rows); teaches a safety-aligned model not to over-refuse",
    ),
    p(
        lookalike::PRESET,
        Role::Benign,
        Scope::Split,
        &[],
        "Safe questions built around harmful requests' words (homonyms, figurative language, safe targets and contexts, definitions, history, self-protection) with helpful answers, written by the project and shipped with it (`data/benign-lookalike.jsonl`; `data::lookalike`); teaches that the words alone do not call for a refusal",
    ),
    p(
        misinfo::COUNTERPART_PRESET,
        Role::Benign,
        Scope::Split,
        &[],
        "Safe requests that look like propaganda requests: persuasive writing for a defensible position and debunking a false claim, with the piece or the facts as answers, written by the project and shipped with it (`data/benign-persuasion.jsonl`; `data::misinfo`); the counterpart of `refusals-misinfo`",
    ),
    p(
        "harmful-beavertails",
        Role::Harmful,
        Scope::Split,
        &[BEAVERTAILS],
        "BeaverTails unsafe subset: 200 harmful questions with harmful answers",
    ),
    p(
        "harmful-jbb",
        Role::Harmful,
        Scope::Split,
        &[JBB],
        "JailbreakBench artifacts judged jailbroken: goal -> model response",
    ),
    p(
        "harmful-dna",
        Role::Harmful,
        Scope::Split,
        &[DNA],
        "Do-Not-Answer responses human-labelled harmful: question -> that model's response",
    ),
    p(
        "harmful-advbench",
        Role::Harmful,
        Scope::Split,
        &[ADVBENCH],
        "AdvBench 520 goals -> 'Sure, here is ...' targets",
    ),
    p(
        "eval-harmbench",
        Role::HarmfulEval,
        Scope::EvalOnly,
        &[HARMBENCH],
        "HarmBench 200 standard behaviours (prompt only), category = semantic category",
    ),
    p(
        "eval-advbench",
        Role::HarmfulEval,
        Scope::Split,
        &[ADVBENCH],
        "AdvBench goals, prompt only (use the eval split: held-out AdvBench)",
    ),
    p(
        "overrefusal-xstest",
        Role::OverRefusal,
        Scope::EvalOnly,
        &[XSTEST],
        "XSTest 250 safe prompts that look unsafe, category = XSTest type",
    ),
    p(
        "xstest-unsafe",
        Role::HarmfulEval,
        Scope::EvalOnly,
        &[XSTEST],
        "XSTest 200 unsafe contrast prompts (prompt only)",
    ),
    p(
        "mc-arc-easy",
        Role::MultipleChoice,
        Scope::DevTest,
        &[ARC_DEV, ARC_TEST],
        "ARC-Easy multiple choice: dev 570 (train), test 2,376 (eval)",
    ),
    p(
        "mc-mmlu",
        Role::MultipleChoice,
        Scope::DevTest,
        &[MMLU_DEV, MMLU_TEST],
        "MMLU subset: dev 285 (train), first 20 test rows of 57 subjects = 1,140 (eval)",
    ),
];

/// The registry, for listing (`patcher data list`).
pub fn list_presets() -> &'static [PresetInfo] {
    PRESETS
}

/// Look a preset up by name.
pub fn find_preset(name: &str) -> Result<&'static PresetInfo, DataError> {
    PRESETS.iter().find(|p| p.name == name).ok_or_else(|| DataError::UnknownPreset {
        name: name.to_string(),
        known: PRESETS.iter().map(|p| p.name).collect::<Vec<_>>().join(", "),
    })
}

/// A multiple-choice question; `answer` indexes `choices`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct McItem {
    pub question: String,
    pub choices: Vec<String>,
    pub answer: usize,
}

/// A handle on the shared data directory. Caches the evaluation prompt set used to
/// decontaminate training splits.
#[derive(Debug)]
pub struct DataDir {
    root: PathBuf,
    eval_prompts: OnceLock<PromptSet>,
}

impl DataDir {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into(), eval_prompts: OnceLock::new() }
    }

    /// `$PATCHER_DATA_DIR` if set, else `../shared/data` relative to the working directory.
    pub fn from_env() -> Self {
        match std::env::var_os(DATA_DIR_ENV) {
            Some(dir) if !dir.is_empty() => Self::new(dir),
            _ => Self::new(DEFAULT_DATA_DIR),
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn exists(&self) -> bool {
        self.root.is_dir()
    }

    /// The absolute-or-relative path of a preset file, checked to exist.
    pub(crate) fn file(&self, preset: &str, rel: &str) -> Result<PathBuf, DataError> {
        if !self.exists() {
            return Err(DataError::MissingData { preset: preset.into(), path: self.root.clone() });
        }
        let path = self.root.join(rel);
        if !path.is_file() {
            return Err(DataError::MissingData { preset: preset.into(), path });
        }
        Ok(path)
    }

    /// Every row of a conversation preset, before any split, in file order.
    pub fn load_all(&self, name: &str) -> Result<Vec<Conversation>, DataError> {
        let info = find_preset(name)?;
        if info.role == Role::MultipleChoice {
            return Err(DataError::Preset {
                preset: name.into(),
                message: "multiple-choice preset: use load_mc".into(),
            });
        }
        let rows = loaders::load_conversations(self, info)?;
        Ok(rows.into_iter().map(|c| c.with_source(name)).collect())
    }

    /// One split of a conversation preset. Training splits are decontaminated against every
    /// evaluation prompt (see the module docs).
    pub fn load(&self, name: &str, split: Split) -> Result<Vec<Conversation>, DataError> {
        let info = find_preset(name)?;
        let rows = self.load_all(name)?;
        match (info.scope, split) {
            (Scope::EvalOnly, Split::Train) => Err(DataError::Preset {
                preset: name.into(),
                message: "evaluation-only preset has no training split".into(),
            }),
            (Scope::EvalOnly, _) => Ok(rows),
            (_, Split::Train) => Ok(decontaminate(select(rows, Split::Train), self.eval_prompts()?).0),
            (_, split) => Ok(select(rows, split)),
        }
    }

    /// One split of a multiple-choice preset (dev file = train, test file = eval).
    pub fn load_mc(&self, name: &str, split: Split) -> Result<Vec<McItem>, DataError> {
        let info = find_preset(name)?;
        if info.role != Role::MultipleChoice {
            return Err(DataError::Preset {
                preset: name.into(),
                message: "not a multiple-choice preset: use load".into(),
            });
        }
        let (dev, test) = (info.files[0], info.files[1]);
        let mut out = Vec::new();
        if split != Split::Eval {
            out.extend(loaders::load_mc_file(self, name, dev)?);
        }
        if split != Split::Train {
            out.extend(loaders::load_mc_file(self, name, test)?);
        }
        Ok(out)
    }

    /// The prompts training splits are decontaminated against: every row of every
    /// evaluation-only preset and every multiple-choice evaluation question. (Hash-split
    /// evaluation prompts need no listing: the hash keeps them off every training side.)
    pub fn eval_prompts(&self) -> Result<&PromptSet, DataError> {
        if let Some(set) = self.eval_prompts.get() {
            return Ok(set);
        }
        let mut set = PromptSet::new();
        for info in PRESETS {
            match info.scope {
                Scope::EvalOnly => set.extend_from(&self.load_all(info.name)?),
                Scope::DevTest => {
                    for item in self.load_mc(info.name, Split::Eval)? {
                        set.insert(&item.question);
                    }
                }
                Scope::Split => {}
            }
        }
        Ok(self.eval_prompts.get_or_init(|| set))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::split::side_of;
    use std::collections::HashSet;

    use crate::testing::shared_data as shared;

    #[test]
    fn registry_is_consistent() {
        let names: HashSet<&str> = PRESETS.iter().map(|p| p.name).collect();
        assert_eq!(names.len(), PRESETS.len(), "duplicate preset names");
        for p in PRESETS {
            assert_eq!(p.scope == Scope::DevTest, p.role == Role::MultipleChoice, "{}", p.name);
            assert_eq!(p.files.is_empty(), crate::data::shipped::find(p.name).is_some(), "{}", p.name);
            assert!(!p.description.is_empty(), "{}", p.name);
        }
        let err = find_preset("nope").unwrap_err().to_string();
        assert!(err.contains("unknown preset `nope`") && err.contains("benign-alpaca"), "{err}");
    }

    #[test]
    fn missing_directory_is_a_clear_error() {
        let dir = DataDir::new("/nonexistent/patcher/shared/data");
        let err = dir.load("benign-alpaca", Split::Train).unwrap_err().to_string();
        assert!(err.starts_with("/nonexistent/patcher/shared/data: not found"), "{err}");
        assert!(err.contains("preset `benign-alpaca`") && err.contains("../shared/data"), "{err}");
        let tmp = std::env::temp_dir().join(format!("patcher-presets-{}", std::process::id()));
        std::fs::create_dir_all(&tmp).unwrap();
        let err = DataDir::new(&tmp).load_all("harmful-advbench").unwrap_err().to_string();
        assert!(err.contains("advbench/harmful_behaviors.csv: not found"), "{err}");
        std::fs::remove_dir_all(&tmp).unwrap();
    }

    #[test]
    fn real_data_presets_have_documented_counts() {
        let Some(dir) = shared() else { return };
        let expected = [
            ("refusals-stl", 2483),
            ("refusals-llama2", 1015),
            ("refusals-dna", 1011),
            ("refusals-advbench", 1040),
            ("benign-alpaca", 1000),
            ("benign-dolly", 1000),
            ("benign-alpaca-eval", 805),
            ("benign-phtest", 1840),
            (lookalike::PRESET, 221),
            (misinfo::PRESET, 153),
            (misinfo::COUNTERPART_PRESET, 60),
            ("harmful-beavertails", 200),
            ("harmful-jbb", 937),
            ("harmful-dna", 193),
            ("harmful-advbench", 520),
            ("eval-harmbench", 200),
            ("eval-advbench", 520),
            ("overrefusal-xstest", 250),
            ("xstest-unsafe", 200),
        ];
        for (name, n) in expected {
            let rows = dir.load_all(name).unwrap();
            assert_eq!(rows.len(), n, "{name}");
            let info = find_preset(name).unwrap();
            let has_answers = matches!(info.role, Role::Refusal | Role::Benign | Role::Harmful);
            assert!(rows.iter().all(|c| c.response().is_some() == has_answers), "{name}");
            assert!(rows.iter().all(|c| !c.prompt().trim().is_empty()), "{name}");
        }
        let arc = dir.load_mc("mc-arc-easy", Split::Eval).unwrap();
        assert_eq!(arc.len(), 2376);
        assert_eq!(dir.load_mc("mc-arc-easy", Split::Train).unwrap().len(), 570);
        assert_eq!(dir.load_mc("mc-mmlu", Split::All).unwrap().len(), 285 + 1140);
        assert!(arc.iter().all(|m| m.answer < m.choices.len() && m.choices.len() >= 3));
        let llama = dir.load_all("refusals-llama2").unwrap();
        assert!(!llama[0].prompt().contains("[INST]") && !llama[0].prompt().starts_with(' '));
    }

    #[test]
    fn real_data_splits_keep_eval_prompts_out_of_training() {
        let Some(dir) = shared() else { return };
        let mut eval = PromptSet::new();
        let mut train_sets = Vec::new();
        for info in PRESETS.iter().filter(|p| p.role != Role::MultipleChoice) {
            eval.extend_from(&dir.load(info.name, Split::Eval).unwrap());
            if info.scope == Scope::Split {
                let train = dir.load(info.name, Split::Train).unwrap();
                let eval_side = dir.load(info.name, Split::Eval).unwrap();
                let all = dir.load_all(info.name).unwrap();
                assert!(train.len() + eval_side.len() <= all.len(), "{}", info.name);
                assert!(!train.is_empty() && !eval_side.is_empty(), "{}", info.name);
                train_sets.push((info.name, train));
            } else {
                assert!(dir.load(info.name, Split::Train).is_err(), "{}", info.name);
            }
        }
        for (name, train) in &train_sets {
            for c in train {
                assert!(!eval.contains(c.prompt()), "{name}: eval prompt in train: {:.60}", c.prompt());
                assert_eq!(side_of(c.prompt()), Split::Train);
            }
        }
        // The same AdvBench goal sits on the same side in the refusal and harmful sets.
        let adv_eval = dir.load("harmful-advbench", Split::Eval).unwrap();
        let mut set = PromptSet::new();
        set.extend_from(&adv_eval);
        let llama_train = dir.load("refusals-llama2", Split::Train).unwrap();
        assert!(llama_train.iter().all(|c| !set.contains(c.prompt())));
    }

    #[test]
    fn real_data_decontamination_drops_eval_only_prompts() {
        let Some(dir) = shared() else { return };
        let evals = dir.eval_prompts().unwrap();
        assert!(evals.len() > 200 + 250 + 200, "eval prompt set {}", evals.len());
        // Plant an XSTest prompt in a training list: decontamination must drop it.
        let xs = dir.load("overrefusal-xstest", Split::Eval).unwrap();
        let mut train = dir.load("benign-alpaca", Split::Train).unwrap();
        let n = train.len();
        train.push(Conversation::single(xs[0].prompt().to_uppercase(), "ok"));
        let (kept, dropped) = decontaminate(train, evals);
        assert_eq!((kept.len(), dropped), (n, 1));
    }
}
