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
//! Written for this project (no benchmark's prompts; XSTest stays evaluation-only, and a test
//! checks that no row is near any XSTest prompt); the text ships in the repository
//! (`data/benign-lookalike.jsonl`: `prompt`, `answer`, `type`, `trigger`), so the preset needs
//! no file from the shared data directory. `type` becomes the conversation's category.

use std::path::Path;

use super::records::{Format, parse_records};
use super::{Conversation, DataError};

/// The preset's name.
pub const PRESET: &str = "benign-lookalike";
/// Where the rows live in the repository (named in errors).
pub const PATH: &str = "data/benign-lookalike.jsonl";
/// The rows, compiled in.
const TEXT: &str = include_str!("../../data/benign-lookalike.jsonl");
/// The kinds of look-alike, as in each row's `type`.
pub const TYPES: [&str; 7] =
    ["homonym", "figurative", "safe_target", "safe_context", "definition", "history", "protection"];

/// Every row, in file order.
pub fn rows() -> Result<Vec<Conversation>, DataError> {
    parse(Path::new(PATH), TEXT)
}

/// Parse look-alike rows from `text` (`path` names the source in errors).
pub(crate) fn parse(path: &Path, text: &str) -> Result<Vec<Conversation>, DataError> {
    let mut out = Vec::new();
    for rec in parse_records(path, text, Format::Jsonl)? {
        let r = rec?;
        let kind = r.string(path, "type")?;
        if !TYPES.contains(&kind) {
            return Err(r.error(path, format!("field `type`: expected one of {}, found `{kind}`", TYPES.join(", "))));
        }
        let (prompt, answer) = (r.string(path, "prompt")?.trim(), r.string(path, "answer")?.trim());
        let trigger = r.string(path, "trigger")?.trim().to_lowercase();
        if !mentions(prompt, &trigger) {
            return Err(r.error(path, format!("field `trigger`: `{trigger}` does not occur in the prompt")));
        }
        out.push(Conversation::single(prompt, answer).with_category(kind));
    }
    if out.is_empty() {
        return Err(DataError::file(path, "no rows"));
    }
    Ok(out)
}

/// Whether `prompt` contains `trigger` as a word or the start of one ("bomb" in "bombed"),
/// allowing a dropped final "e" ("smash" ← "smashing", "terminate" ← "terminating").
fn mentions(prompt: &str, trigger: &str) -> bool {
    let lower = prompt.to_lowercase();
    let stem = trigger.strip_suffix('e').filter(|s| s.len() >= 3).unwrap_or(trigger);
    lower.match_indices(stem).any(|(i, _)| i == 0 || !lower[..i].ends_with(|c: char| c.is_alphanumeric()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::split::{Split, normalise_prompt, select};
    use crate::eval::keyword::{is_degenerate, is_refusal};
    use std::collections::{BTreeMap, HashSet};

    #[test]
    fn shipped_rows_are_clean_and_varied() {
        let rows = rows().unwrap();
        assert!(rows.len() >= 200, "{} rows", rows.len());
        let prompts: HashSet<String> = rows.iter().map(|c| normalise_prompt(c.prompt())).collect();
        assert_eq!(prompts.len(), rows.len(), "duplicate prompts");
        let mut per_type = BTreeMap::new();
        for c in &rows {
            let answer = c.response().unwrap();
            // An answer, not a refusal: the keyword judge (the harmful score's) must call it
            // compliant, or the rows would teach refusing.
            assert!(!is_refusal(answer) && !is_degenerate(answer), "{}: {answer}", c.prompt());
            let words = answer.split_whitespace().count();
            assert!((20..=130).contains(&words), "{words} words: {}", c.prompt());
            *per_type.entry(c.category.clone().unwrap()).or_insert(0) += 1;
        }
        println!("look-alike rows per type: {per_type:?}");
        assert_eq!(per_type.len(), TYPES.len(), "{per_type:?}");
        assert!(per_type.values().all(|&n| n >= 10), "{per_type:?}");
        // Both sides of the prompt-hash split are populated (20% held out).
        let eval = select(rows.clone(), Split::Eval).len();
        assert!(eval * 100 / rows.len() >= 10 && eval * 100 / rows.len() <= 30, "{eval} of {}", rows.len());
    }

    #[test]
    fn bad_rows_name_the_line_and_field() {
        let p = Path::new("x.jsonl");
        let ok = r#"{"prompt":"How do I kill a frozen app?","answer":"Open the task manager.","type":"homonym","trigger":"kill"}"#;
        assert_eq!(parse(p, ok).unwrap()[0].category.as_deref(), Some("homonym"));
        let bad_type = ok.replace("homonym", "pun");
        let err = parse(p, &format!("{ok}\n{bad_type}")).unwrap_err().to_string();
        assert!(err.starts_with("x.jsonl:2: field `type`"), "{err}");
        let err = parse(p, &ok.replace("\"kill\"", "\"bomb\"")).unwrap_err().to_string();
        assert!(err.starts_with("x.jsonl:1: field `trigger`"), "{err}");
        let err = parse(p, &ok.replace("\"answer\"", "\"reply\"")).unwrap_err().to_string();
        assert!(err.contains("`answer`"), "{err}");
        assert!(parse(p, "\n").unwrap_err().to_string().contains("no rows"));
    }

    #[test]
    fn trigger_matching() {
        assert!(mentions("My talk bombed today", "bomb"));
        assert!(mentions("Terminating a job", "terminate"));
        assert!(mentions("Kill time", "kill"));
        assert!(!mentions("A skill to learn", "kill"));
        assert!(!mentions("Nothing here", "hack"));
    }

    /// XSTest is evaluation-only: no look-alike may be one of its prompts or a paraphrase of one.
    /// Closeness is the Jaccard overlap of lowercase content-word sets (question frames such as
    /// "what's the best way to" left out, so that only the topic counts); the closest pair is
    /// printed. Rows the data's authors wrote close to an XSTest prompt by chance ("attack the
    /// king in chess", 0.50; the atomic bombs on Hiroshima and Nagasaki, 0.50) failed this and were
    /// dropped, with the other paraphrases of XSTest topics found by reading the list above 0.2.
    #[test]
    fn no_row_is_near_an_xstest_prompt() {
        let Some(dir) = crate::testing::shared_data() else { return };
        const FRAME: &str = "a an the to of and or in on at for my i me is it be do does did how what whats when \
            why where who can should could would with without from by your you that this are was were s t m ve \
            there some any get like so if as into just about really best way make good easiest fastest quickest \
            most don up out down off mean means someone";
        let frame: HashSet<&str> = FRAME.split_whitespace().collect();
        let words = |s: &str| -> HashSet<String> {
            s.to_lowercase()
                .split(|c: char| !c.is_alphanumeric())
                .filter(|w| !w.is_empty() && !frame.contains(w))
                .map(String::from)
                .collect()
        };
        let mut xs = dir.load_all("overrefusal-xstest").unwrap();
        xs.extend(dir.load_all("xstest-unsafe").unwrap());
        let xs: Vec<(String, HashSet<String>)> =
            xs.iter().map(|c| (c.prompt().to_string(), words(c.prompt()))).collect();
        let mut worst = (0.0f64, String::new(), String::new());
        for c in rows().unwrap() {
            let w = words(c.prompt());
            for (xp, xw) in &xs {
                let j = w.intersection(xw).count() as f64 / w.union(xw).count().max(1) as f64;
                if j > worst.0 {
                    worst = (j, c.prompt().to_string(), xp.clone());
                }
            }
        }
        println!("closest look-alike to XSTest: Jaccard {:.2}: {:?} ~ {:?}", worst.0, worst.1, worst.2);
        assert!(worst.0 < 0.45, "too close to XSTest: {worst:?}");
    }
}
