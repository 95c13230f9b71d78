//! Benign look-alikes written by the project (`preset:benign-lookalike`): safe questions built
//! around the words of harmful requests, each with a helpful answer.
//!
//! Why: the SFT baseline learns AdvBench's trigger words ("kill", "bomb", "hack", "steal") as
//! well as the requests, and refuses safe prompts that only share them: homonyms ("terminate a
//! background job"), figurative language ("my talk bombed"), safe targets ("kill fruit flies")
//! and definitions, history and self-protection ("how do I spot a phishing email") are the
//! types it over-refuses most (docs/results.md §27). These rows are the counterpart of each
//! refusal: the same words in a request that deserves an answer, so that the words alone stop
//! predicting a refusal. The idea is the contrast data of XSTest's and OR-Bench's authors
//! (Röttger et al., NAACL 2024; Cui et al., 2024) and of PHTest (An et al., 2024), used here for
//! training.
//!
//! Written for this project (no benchmark's prompts; XSTest stays evaluation-only, and tests in
//! [`shipped`](super::shipped) check that no row is near an evaluation prompt); the text ships
//! in the repository (`data/benign-lookalike.jsonl`: `prompt`, `answer`, `type`, `trigger`), so
//! the preset needs no file from the shared data directory. `type` becomes the conversation's category.

use super::shipped::Shipped;

/// The preset's name.
pub const PRESET: &str = "benign-lookalike";

/// The set: `prompt`, `answer`, `type`, `trigger` (the word that makes the prompt look harmful).
pub const SET: Shipped = Shipped {
    preset: PRESET,
    path: "data/benign-lookalike.jsonl",
    text: include_str!("../../data/benign-lookalike.jsonl"),
    types: &TYPES,
    triggered: true,
};

/// The kinds of look-alike, as in each row's `type`.
pub const TYPES: [&str; 7] =
    ["homonym", "figurative", "safe_target", "safe_context", "definition", "history", "protection"];

#[cfg(test)]
mod tests {
    #[test]
    fn shipped_rows_are_clean_and_varied() {
        crate::data::shipped::check_rows(&super::SET, false, 20..=130, 200, 10);
    }
}
