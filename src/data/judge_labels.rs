//! Human-labelled (prompt, answer, harmful?) rows for training and testing a harm judge, read
//! from the shared data directory:
//! - Do-Not-Answer `data_en.csv` (Wang et al., 2023): six models' answers to 939 risky
//!   questions, each with a human 0/1 `*_harmful` label (5,634 rows, 193 harmful);
//! - JailbreakBench artifacts (Chao et al., 2024): 18 attack x target files of 100 behaviours,
//!   the target's response and JailbreakBench's `jailbroken` label (1,637 rows with a response);
//!   the judge sees the behaviour's `goal`, not the jailbreak prompt, as it will see plain
//!   requests at evaluation;
//! - BeaverTails (Ji et al., 2023): 200 unsafe answers, all positives.
//!
//! Every row carries a `group` (the question, behaviour or prompt it answers): splits are by
//! group, never by row, so no held-out answer shares its question with a training answer.

use std::path::Path;

use serde_json::Value;

use super::DataError;
use super::loaders::map_rows;
use super::presets::DataDir;
use super::split::stable_hash;

/// One labelled answer.
#[derive(Debug, Clone, PartialEq)]
pub struct LabelledAnswer {
    /// `dna:<model>`, `jbb:<method>/<target>` or `beavertails`.
    pub source: String,
    /// The split key: rows with the same group are always on the same side.
    pub group: String,
    pub prompt: String,
    pub answer: String,
    pub harmful: bool,
}

const DNA: &str = "do-not-answer/data_en.csv";
const JBB: &str = "jailbreakbench-artifacts/jbb_artifacts.jsonl";
const BEAVERTAILS: &str = "beavertails-unsafe-subset/beavertails_30k_train_unsafe_200.jsonl";
const DNA_MODELS: [&str; 6] = ["GPT4", "ChatGPT", "Claude", "ChatGLM2", "llama2-7b-chat", "vicuna-7b"];

/// Every labelled row of the three sources, in file order (DNA, JBB, BeaverTails).
pub fn load(dir: &DataDir) -> Result<Vec<LabelledAnswer>, DataError> {
    let mut out = dna(&dir.file("judge-dna", DNA)?)?;
    out.extend(jbb(&dir.file("judge-jbb", JBB)?)?);
    out.extend(beavertails(&dir.file("judge-beavertails", BEAVERTAILS)?)?);
    Ok(out)
}

fn dna(path: &Path) -> Result<Vec<LabelledAnswer>, DataError> {
    map_rows(path, |r| {
        let question = r.string(path, "question")?;
        let id = r.string(path, "id")?;
        let mut out = vec![];
        for m in DNA_MODELS {
            let harmful = match r.string(path, &format!("{m}_harmful"))?.trim() {
                "1" => true,
                "0" => false,
                other => {
                    return Err(r.error(path, format!("field `{m}_harmful`: expected 0 or 1, found `{other}`")));
                }
            };
            let answer = r.opt_string(path, &format!("{m}_response"))?.unwrap_or("");
            out.push(LabelledAnswer {
                source: format!("dna:{m}"),
                group: format!("dna:{}", id.trim()),
                prompt: question.to_string(),
                answer: answer.to_string(),
                harmful,
            });
        }
        Ok(out)
    })
}

fn jbb(path: &Path) -> Result<Vec<LabelledAnswer>, DataError> {
    map_rows(path, |r| {
        // Rows where the attack produced no submission have a null response: nothing to judge.
        let Some(answer) = r.opt_string(path, "response").ok().flatten() else {
            if matches!(r.fields.get("response"), None | Some(Value::Null)) {
                return Ok(vec![]);
            }
            return Err(r.error(path, "field `response`: expected a string or null"));
        };
        let harmful = match r.fields.get("jailbroken") {
            Some(Value::Bool(b)) => *b,
            _ => return Err(r.error(path, "field `jailbroken`: expected a boolean")),
        };
        let behaviour = match r.fields.get("behavior") {
            Some(Value::String(s)) if !s.trim().is_empty() => s.trim().to_string(),
            _ => return Err(r.error(path, "field `behavior`: expected a non-empty string")),
        };
        let source = format!(
            "jbb:{}/{}",
            r.opt_string(path, "method")?.unwrap_or("?"),
            r.opt_string(path, "target_model")?.unwrap_or("?")
        );
        Ok(vec![LabelledAnswer {
            source,
            group: format!("jbb:{behaviour}"),
            prompt: r.string(path, "goal")?.to_string(),
            answer: answer.to_string(),
            harmful,
        }])
    })
}

fn beavertails(path: &Path) -> Result<Vec<LabelledAnswer>, DataError> {
    map_rows(path, |r| {
        let prompt = r.string(path, "prompt")?;
        Ok(vec![LabelledAnswer {
            source: "beavertails".into(),
            group: format!("bt:{}", prompt.trim().to_lowercase()),
            prompt: prompt.to_string(),
            answer: r.string(path, "response")?.to_string(),
            harmful: true,
        }])
    })
}

/// Whether `group` falls in fold `fold` of `folds`: its stable hash ([`stable_hash`], not the
/// standard library's randomised hasher) modulo `folds`.
pub fn in_fold(group: &str, folds: u64, fold: u64) -> bool {
    stable_hash(group) % folds == fold
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_of_each_source_are_read_and_split_by_group() {
        let root = std::env::temp_dir().join(format!("patcher-judge-labels-{}", std::process::id()));
        let w = |rel: &str, text: &str| {
            let p = root.join(rel);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
        };
        let models = DNA_MODELS.iter().flat_map(|m| [format!("{m}_response"), format!("{m}_harmful")]);
        let header = ["id", "question"].map(String::from).into_iter().chain(models).collect::<Vec<_>>().join(",");
        w(DNA, &format!("{header}\n7,q?,a,1,b,0,c,0,d,0,e,0,f,0\n"));
        w(
            JBB,
            "{\"goal\":\"g\",\"behavior\":\"B\",\"method\":\"PAIR\",\"target_model\":\"t\",\"response\":\"r\",\"jailbroken\":false}\n\
             {\"goal\":\"g\",\"behavior\":\"B\",\"response\":null,\"jailbroken\":false}\n",
        );
        w(BEAVERTAILS, "{\"prompt\":\"p\",\"response\":\"bad\",\"is_safe\":false}\n");
        let rows = load(&DataDir::new(&root)).unwrap();
        assert_eq!(rows.len(), 6 + 1 + 1);
        assert_eq!((rows[0].source.as_str(), rows[0].harmful, rows[0].group.as_str()), ("dna:GPT4", true, "dna:7"));
        assert!(rows[1..6].iter().all(|r| !r.harmful && r.group == "dna:7"));
        assert_eq!((rows[6].source.as_str(), rows[6].prompt.as_str(), rows[6].harmful), ("jbb:PAIR/t", "g", false));
        assert!(rows[7].harmful && rows[7].source == "beavertails");
        // A bad label names the file and line.
        w(DNA, &format!("{header}\n7,q?,a,yes,b,0,c,0,d,0,e,0,f,0\n"));
        let e = load(&DataDir::new(&root)).unwrap_err().to_string();
        assert!(e.contains("data_en.csv") && e.contains(":2") && e.contains("GPT4_harmful"), "{e}");
        std::fs::remove_dir_all(&root).ok();
        // Folds partition the groups, and a group is always on one side.
        let groups: Vec<String> = (0..1000).map(|i| format!("g{i}")).collect();
        let held: usize = groups.iter().filter(|g| in_fold(g, 5, 0)).count();
        assert!((150..250).contains(&held), "{held}");
        let per_fold: usize = (0..5).map(|f| groups.iter().filter(|g| in_fold(g, 5, f)).count()).sum();
        assert_eq!(per_fold, 1000);
    }
}
