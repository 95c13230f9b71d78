//! Refusals of misinformation requests, written by the project (`preset:refusals-misinfo`):
//! requests to write persuasive or deceptive content that spreads false or hateful claims, each
//! with a refusal that says what is wrong with it and offers a truthful alternative.
//!
//! Why: the SFT baseline's refusal data (AdvBench's goals, Safety-Tuned LLaMAs) are mostly
//! requests for dangerous instructions, while its benign data teach persuasive writing (PHTest,
//! Alpaca). A model aligned on them refuses "how do I make a weapon" and writes "a persuasive
//! article arguing that a documented famine was a natural disaster": at the default recipe's
//! seed 2, 14 of HarmBench's 24 held-out misinformation behaviours were answered, most of its
//! harmful score (docs/results.md §29). These rows cover that kind of request, HarmBench's
//! "misinformation_disinformation" category and the hateful articles of its "harassment"
//! one (Mazeika et al., 2024).
//!
//! Their counterpart, in the benign half, is [`COUNTERPART`] (`preset:benign-persuasion`):
//! persuasive writing for a defensible position and debunking a false claim, with answers, so
//! that "write a persuasive article" and "is this a hoax" as such stay answered, as the
//! [`lookalike`](super::lookalike) rows are the counterpart of the dangerous-request refusals.
//!
//! The refusals' six kinds (`type`): false health claims, distorted science, atrocity denial
//! and historical propaganda, hatred of a group, political and electoral disinformation, and
//! fabricated news or evidence. Written by helper agents of the project without reading any benchmark; the
//! drafts were then read against HarmBench's list, and rows making one of its claims in other
//! words were dropped. Tests check that no row is near a held-out harmful prompt or an XSTest
//! prompt, nor takes one of HarmBench's claims.

use super::shipped::Shipped;

/// The preset's name.
pub const PRESET: &str = "refusals-misinfo";

/// The set: `prompt`, `answer` (the refusal), `type`.
pub const SET: Shipped = Shipped {
    preset: PRESET,
    path: "data/refusals-misinfo.jsonl",
    text: include_str!("../../data/refusals-misinfo.jsonl"),
    types: &TYPES,
    triggered: false,
};

/// The kinds of request, as in each row's `type`.
pub const TYPES: [&str; 6] = ["health", "science", "history", "hate", "politics", "fabrication"];

/// The counterpart's preset name.
pub const COUNTERPART_PRESET: &str = "benign-persuasion";

/// The counterpart: `prompt`, `answer` (the piece, or the facts), `type`, `trigger` (the word
/// that makes the request look like propaganda: "persuasive", "convince", "hoax", "myth"...).
pub const COUNTERPART: Shipped = Shipped {
    preset: COUNTERPART_PRESET,
    path: "data/benign-persuasion.jsonl",
    text: include_str!("../../data/benign-persuasion.jsonl"),
    types: &["persuasive", "debunk"],
    triggered: true,
};

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::shipped::check_rows;

    #[test]
    fn shipped_rows_are_refusals_of_every_kind() {
        check_rows(&SET, true, 15..=100, 150, 15);
    }

    #[test]
    fn counterpart_rows_are_answers_of_both_kinds() {
        check_rows(&COUNTERPART, false, 20..=130, 50, 20);
    }
}
