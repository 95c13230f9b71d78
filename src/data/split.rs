//! Deterministic train/eval splits by prompt, and decontamination.
//!
//! The split rule: a prompt is *normalised* (lowercased, whitespace runs collapsed to one space,
//! trimmed), hashed with 64-bit FNV-1a, and goes to the evaluation side when
//! `hash % 1000 < EVAL_PER_MILLE` (20%). The rule depends on the prompt text alone, so the same
//! prompt lands on the same side in every dataset that contains it (AdvBench goals reappear in
//! the Llama-2 refusal set, for example), and adding or removing rows never moves others.
//! [`decontaminate`] then drops any training row whose normalised prompt appears in an
//! evaluation set, which covers evaluation-only datasets (HarmBench, XSTest) that the hash rule
//! does not know about.

use super::Conversation;
use serde::{Deserialize, Serialize};
use std::collections::HashSet;

/// Share of prompts, in thousandths, that the hash rule sends to evaluation.
pub const EVAL_PER_MILLE: u64 = 200;

/// Which part of a dataset to load.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[serde(rename_all = "lowercase")]
pub enum Split {
    Train,
    Eval,
    All,
}

impl std::str::FromStr for Split {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "train" => Ok(Split::Train),
            "eval" => Ok(Split::Eval),
            "all" => Ok(Split::All),
            _ => Err(format!("unknown split `{s}` (expected train, eval or all)")),
        }
    }
}

/// Lowercase, collapse whitespace runs to one space, trim.
pub fn normalise_prompt(prompt: &str) -> String {
    prompt.split_whitespace().map(str::to_lowercase).collect::<Vec<_>>().join(" ")
}

/// 64-bit FNV-1a: stable across platforms, versions and runs (unlike `std`'s `DefaultHasher`).
pub fn stable_hash(text: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in text.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// The side of the split a prompt belongs to: `Split::Train` or `Split::Eval`.
pub fn side_of(prompt: &str) -> Split {
    if stable_hash(&normalise_prompt(prompt)) % 1000 < EVAL_PER_MILLE { Split::Eval } else { Split::Train }
}

/// Keep the conversations on the requested side (`All` keeps everything).
pub fn select(conversations: Vec<Conversation>, split: Split) -> Vec<Conversation> {
    match split {
        Split::All => conversations,
        s => conversations.into_iter().filter(|c| side_of(c.prompt()) == s).collect(),
    }
}

/// A set of normalised evaluation prompts, to decontaminate training sets against.
#[derive(Clone, Debug, Default)]
pub struct PromptSet(HashSet<String>);

impl PromptSet {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn insert(&mut self, prompt: &str) {
        self.0.insert(normalise_prompt(prompt));
    }

    pub fn extend_from(&mut self, conversations: &[Conversation]) {
        for c in conversations {
            self.insert(c.prompt());
        }
    }

    pub fn contains(&self, prompt: &str) -> bool {
        self.0.contains(&normalise_prompt(prompt))
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Drop every training conversation whose normalised prompt is in `eval_prompts`. Returns the
/// kept rows and how many were dropped.
pub fn decontaminate(train: Vec<Conversation>, eval_prompts: &PromptSet) -> (Vec<Conversation>, usize) {
    let before = train.len();
    let kept: Vec<Conversation> = train.into_iter().filter(|c| !eval_prompts.contains(c.prompt())).collect();
    let dropped = before - kept.len();
    (kept, dropped)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalisation_and_hash_are_stable() {
        assert_eq!(normalise_prompt("  How DO\tI\n\n kill  a process? "), "how do i kill a process?");
        // FNV-1a reference values (offset basis for "", and the published value for "a").
        assert_eq!(stable_hash(""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(stable_hash("a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(side_of("Write a poem"), side_of("  write A   POEM "));
    }

    #[test]
    fn split_share_is_near_twenty_percent_and_sides_partition() {
        let convs: Vec<Conversation> =
            (0..5000).map(|i| Conversation::single(format!("prompt number {i}"), "x")).collect();
        let train = select(convs.clone(), Split::Train);
        let eval = select(convs.clone(), Split::Eval);
        assert_eq!(train.len() + eval.len(), 5000);
        let share = eval.len() as f64 / 5000.0;
        assert!((share - 0.2).abs() < 0.03, "eval share {share}");
        let mut set = PromptSet::new();
        set.extend_from(&eval);
        assert!(train.iter().all(|c| !set.contains(c.prompt())));
        assert_eq!(select(convs, Split::All).len(), 5000);
    }

    #[test]
    fn decontaminate_drops_normalised_matches() {
        let train = vec![
            Conversation::single("How to bake bread?", "x"),
            Conversation::single("how to  BAKE bread?", "y"),
            Conversation::single("How to fly?", "z"),
        ];
        let mut eval = PromptSet::new();
        eval.insert("HOW TO BAKE BREAD?");
        let (kept, dropped) = decontaminate(train, &eval);
        assert_eq!(dropped, 2);
        assert_eq!(kept[0].prompt(), "How to fly?");
    }
}
