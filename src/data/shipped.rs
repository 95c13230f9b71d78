//! Data sets written by the project and shipped in the repository (`data/*.jsonl`), compiled
//! into the binary so that their presets need no file from the shared data directory:
//! [`lookalike`](super::lookalike) (`preset:benign-lookalike`) and [`misinfo`](super::misinfo)
//! (`preset:refusals-misinfo` and its counterpart `preset:benign-persuasion`).
//!
//! Each row is a JSON object with `prompt`, `answer` and `type` (one of the set's kinds, kept as
//! the conversation's category), and, in sets whose rows look harmful because of one word,
//! `trigger`: that word, checked to occur in the prompt. Errors name the file, the line and the
//! field.
//!
//! The evaluation sets stay unseen: the tests here bound how close a shipped row comes to the
//! held-out harmful prompts (HarmBench, AdvBench's eval split) and to XSTest, by the Jaccard
//! overlap of content words, and keep the persuasion rows off the claims of HarmBench's
//! behaviours.

use std::path::Path;

use super::records::{Format, parse_records};
use super::{Conversation, DataError};

/// One shipped set.
pub struct Shipped {
    /// The preset's name.
    pub preset: &'static str,
    /// Where the rows live in the repository (named in errors).
    pub path: &'static str,
    /// The rows, compiled in.
    pub(crate) text: &'static str,
    /// The kinds a row's `type` may name.
    pub types: &'static [&'static str],
    /// Whether each row names its `trigger` word.
    pub triggered: bool,
}

/// Every shipped set.
pub const SETS: [&Shipped; 3] = [&super::lookalike::SET, &super::misinfo::SET, &super::misinfo::COUNTERPART];

/// The shipped set behind a preset name, if it is one.
pub fn find(preset: &str) -> Option<&'static Shipped> {
    SETS.into_iter().find(|s| s.preset == preset)
}

impl Shipped {
    /// Every row, in file order.
    pub fn rows(&self) -> Result<Vec<Conversation>, DataError> {
        self.parse(Path::new(self.path), self.text)
    }

    /// Parse rows of this set's shape from `text` (`path` names the source in errors).
    pub(crate) fn parse(&self, path: &Path, text: &str) -> Result<Vec<Conversation>, DataError> {
        let mut out = Vec::new();
        for rec in parse_records(path, text, Format::Jsonl)? {
            let r = rec?;
            let kind = r.string(path, "type")?;
            if !self.types.contains(&kind) {
                let expected = self.types.join(", ");
                return Err(r.error(path, format!("field `type`: expected one of {expected}, found `{kind}`")));
            }
            let (prompt, answer) = (r.string(path, "prompt")?.trim(), r.string(path, "answer")?.trim());
            if self.triggered {
                let trigger = r.string(path, "trigger")?.trim().to_lowercase();
                if !mentions(prompt, &trigger) {
                    return Err(r.error(path, format!("field `trigger`: `{trigger}` does not occur in the prompt")));
                }
            }
            out.push(Conversation::single(prompt, answer).with_category(kind));
        }
        if out.is_empty() {
            return Err(DataError::file(path, "no rows"));
        }
        Ok(out)
    }
}

/// Whether `prompt` contains `trigger` as a word or the start of one ("bomb" in "bombed"),
/// allowing a dropped final "e" ("smash" ← "smashing", "terminate" ← "terminating").
fn mentions(prompt: &str, trigger: &str) -> bool {
    let lower = prompt.to_lowercase();
    let stem = trigger.strip_suffix('e').filter(|s| s.len() >= 3).unwrap_or(trigger);
    lower.match_indices(stem).any(|(i, _)| i == 0 || !lower[..i].ends_with(|c: char| c.is_alphanumeric()))
}

/// The checks every shipped set's rows pass: at least `min_rows`, no duplicate prompt, every
/// answer a refusal by the keyword judge (the harmful score's) when `refusals`, else compliant
/// by it (or the rows would teach refusing), none degenerate, `words` long, every kind of
/// [`Shipped::types`] with at least `min_per_type` rows, and both sides of the prompt-hash
/// split populated (10-30% held out).
#[cfg(test)]
pub(crate) fn check_rows(
    set: &Shipped,
    refusals: bool,
    words: std::ops::RangeInclusive<usize>,
    min_rows: usize,
    min_per_type: usize,
) {
    use super::split::{Split, normalise_prompt, select};
    use crate::eval::keyword::{is_degenerate, is_refusal};
    use std::collections::{BTreeMap, HashSet};
    let rows = set.rows().unwrap();
    assert!(rows.len() >= min_rows, "{}: {} rows", set.preset, rows.len());
    let prompts: HashSet<String> = rows.iter().map(|c| normalise_prompt(c.prompt())).collect();
    assert_eq!(prompts.len(), rows.len(), "{}: duplicate prompts", set.preset);
    let mut per_type = BTreeMap::new();
    for c in &rows {
        let answer = c.response().unwrap();
        assert!(is_refusal(answer) == refusals && !is_degenerate(answer), "{}: {answer}", c.prompt());
        let n = answer.split_whitespace().count();
        assert!(words.contains(&n), "{n} words: {}", c.prompt());
        *per_type.entry(c.category.clone().unwrap()).or_insert(0) += 1;
    }
    println!("{} rows per type: {per_type:?}", set.preset);
    assert_eq!(per_type.len(), set.types.len(), "{per_type:?}");
    assert!(per_type.values().all(|&n| n >= min_per_type), "{per_type:?}");
    let eval = select(rows.clone(), Split::Eval).len();
    assert!((10..=30).contains(&(eval * 100 / rows.len())), "{eval} of {} held out", rows.len());
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    /// Request frames and function words, left out of [`content_words`] so that only the topic
    /// counts ("what's the best way to", "write a persuasive article arguing that").
    const FRAME: &str = "a an the to of and or in on at for my i me is it be do does did how what whats when \
        why where who can should could would with without from by your you that this are was were s t m ve \
        there some any get like so if as into just about really best way make good easiest fastest quickest \
        most don up out down off mean means someone write article post blog persuasive arguing argue claiming \
        claims claim explaining explain give create draft compose generate describe detailed list steps";

    /// A prompt's lowercase content words.
    fn content_words(prompt: &str) -> HashSet<String> {
        let frame: HashSet<&str> = FRAME.split_whitespace().collect();
        prompt
            .to_lowercase()
            .split(|c: char| !c.is_alphanumeric())
            .filter(|w| !w.is_empty() && !frame.contains(w))
            .map(String::from)
            .collect()
    }

    /// The closest pair between `rows` and `eval` by the Jaccard overlap of content words:
    /// (overlap, row's prompt, evaluation prompt).
    fn eval_overlap(rows: &[Conversation], eval: &[Conversation]) -> (f64, String, String) {
        let eval: Vec<(&str, HashSet<String>)> = eval.iter().map(|c| (c.prompt(), content_words(c.prompt()))).collect();
        let mut worst = (0.0, String::new(), String::new());
        for c in rows {
            let w = content_words(c.prompt());
            for (ep, ew) in &eval {
                let j = w.intersection(ew).count() as f64 / w.union(ew).count().max(1) as f64;
                if j > worst.0 {
                    worst = (j, c.prompt().to_string(), ep.to_string());
                }
            }
        }
        worst
    }

    /// The held-out prompts a shipped set must stay away from: HarmBench's behaviours, AdvBench's
    /// eval split and XSTest's 450 prompts (safe and unsafe).
    fn eval_prompts(dir: &crate::data::presets::DataDir) -> Vec<Conversation> {
        use crate::data::split::Split;
        let mut eval = dir.load_all("eval-harmbench").unwrap();
        eval.extend(dir.load("eval-advbench", Split::Eval).unwrap());
        eval.extend(dir.load_all("overrefusal-xstest").unwrap());
        eval.extend(dir.load_all("xstest-unsafe").unwrap());
        eval
    }

    const SET: Shipped =
        Shipped { preset: "test-set", path: "x.jsonl", text: "", types: &["homonym", "figurative"], triggered: true };

    #[test]
    fn bad_rows_name_the_line_and_field() {
        let p = Path::new("x.jsonl");
        let ok = r#"{"prompt":"How do I kill a frozen app?","answer":"Open the task manager.","type":"homonym","trigger":"kill"}"#;
        assert_eq!(SET.parse(p, ok).unwrap()[0].category.as_deref(), Some("homonym"));
        let bad_type = ok.replace("homonym", "pun");
        let err = SET.parse(p, &format!("{ok}\n{bad_type}")).unwrap_err().to_string();
        assert!(err.starts_with("x.jsonl:2: field `type`: expected one of homonym, figurative"), "{err}");
        let err = SET.parse(p, &ok.replace("\"kill\"", "\"bomb\"")).unwrap_err().to_string();
        assert!(err.starts_with("x.jsonl:1: field `trigger`"), "{err}");
        let err = SET.parse(p, &ok.replace("\"answer\"", "\"reply\"")).unwrap_err().to_string();
        assert!(err.contains("`answer`"), "{err}");
        assert!(SET.parse(p, "\n").unwrap_err().to_string().contains("no rows"));
        // A set without triggers ignores the field and does not require it.
        let plain = Shipped { triggered: false, ..SET };
        let no_trigger = ok.replace(r#","trigger":"kill""#, "");
        assert_eq!(plain.parse(p, &no_trigger).unwrap().len(), 1);
        assert!(SET.parse(p, &no_trigger).unwrap_err().to_string().contains("`trigger`"));
    }

    #[test]
    fn trigger_matching() {
        assert!(mentions("My talk bombed today", "bomb"));
        assert!(mentions("Terminating a job", "terminate"));
        assert!(mentions("Kill time", "kill"));
        assert!(!mentions("A skill to learn", "kill"));
        assert!(!mentions("Nothing here", "hack"));
    }

    #[test]
    fn every_set_parses_and_is_found_by_name() {
        for set in SETS {
            assert_eq!(find(set.preset).unwrap().path, set.path);
            assert!(!set.rows().unwrap().is_empty(), "{}", set.preset);
        }
        assert!(find("benign-alpaca").is_none());
    }

    #[test]
    fn overlap_finds_the_closest_pair() {
        let rows = [Conversation::single("Write a persuasive article arguing that Atlantis was real", "No.")];
        let eval = [
            Conversation::single("Write a blog post claiming Atlantis sank in 1900", "?"),
            Conversation::single("How do I bake bread", "?"),
        ];
        let o = eval_overlap(&rows, &eval);
        // {atlantis, real} against {atlantis, sank, 1900} (frames and "was" left out): 1 of 4.
        assert!((o.0 - 0.25).abs() < 1e-12, "{o:?}");
        assert_eq!(o.2, "Write a blog post claiming Atlantis sank in 1900");
    }

    fn all_rows() -> Vec<Conversation> {
        SETS.into_iter().flat_map(|s| s.rows().unwrap()).collect()
    }

    /// HarmBench, AdvBench's eval split and XSTest stay unseen: no shipped row within Jaccard
    /// 0.45 of one of their prompts by content words.
    /// Look-alikes the data's authors wrote close to an XSTest prompt by chance ("attack the
    /// king in chess", 0.50; the atomic bombs on Hiroshima and Nagasaki, 0.50) failed this and
    /// were dropped, with the other paraphrases of XSTest topics found by reading the list
    /// above 0.2 (docs/results.md §28).
    #[test]
    fn no_row_is_near_an_evaluation_prompt() {
        let Some(dir) = crate::testing::shared_data() else { return };
        let rows = all_rows();
        let (j, row, eval) = eval_overlap(&rows, &eval_prompts(&dir));
        println!("closest shipped row to an evaluation prompt: Jaccard {j:.2}: {row:?} ~ {eval:?}");
        assert!(j < 0.45, "too close to an evaluation prompt: {row:?} ~ {eval:?} ({j:.2})");
    }

    /// The claims of HarmBench's held-out misinformation, harassment and harmful-persuasion
    /// behaviours, as the words that name them. Reading the drafts against HarmBench's list
    /// found rows that make the same claim in other words (a Facebook post that the MMR vaccine
    /// causes autism, for its Twitter thread that vaccines do; honey for newborns; Holocaust,
    /// Holodomor, Armenian-genocide and Khmer Rouge denial): 43 of 256 were dropped
    /// (docs/results.md §29). No misinformation refusal and no row of their counterpart may
    /// take one of these topics (two look-alikes do, as safe questions: how 9/11 changed
    /// airport security, and a toddler who swallowed bleach).
    const HELD_OUT_TOPICS: [&str; 46] = [
        "holocaust",
        "holodomor",
        "armenian",
        "khmer",
        "great leap",
        "residential school",
        "stolen generation",
        "aboriginal",
        "crimea",
        "korean war",
        "syria",
        "hiroshima",
        "nagasaki",
        "agent orange",
        "5g",
        "covid",
        "autism",
        "honey",
        "mask",
        "cigarette",
        "smoking",
        "fossil fuel",
        "climate",
        "global warming",
        "mail-in",
        "voting machine",
        "voter fraud",
        "dead people",
        "9/11",
        "september 11",
        "jallianwala",
        "amritsar",
        "intelligen",
        "disab",
        "taxes",
        "ivermectin",
        "lab leak",
        "fauci",
        "mexic",
        "bleach",
        "detergent",
        "lilies",
        "anorexi",
        "bulimi",
        "self-harm",
        "consent",
    ];

    #[test]
    fn no_row_takes_a_held_out_claim() {
        let mut rows = super::super::misinfo::SET.rows().unwrap();
        rows.extend(super::super::misinfo::COUNTERPART.rows().unwrap());
        assert!(rows.len() > 200, "{}", rows.len());
        for c in &rows {
            let p = c.prompt().to_lowercase();
            let hits: Vec<&str> = HELD_OUT_TOPICS.into_iter().filter(|t| p.contains(t)).collect();
            assert!(hits.is_empty(), "{hits:?} in {:?}", c.prompt());
        }
    }
}
