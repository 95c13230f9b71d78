//! Row logic for each shared dataset behind the presets: which columns, which rows, and the
//! small clean-ups a source needs (Llama-2 `[INST]` tags, ARC answer letters). The columns
//! were read off the real files; their MANIFEST.md files describe them.
//!
//! Preset data are expected to be clean, so any malformed row is an error naming the file
//! and line.

use super::presets::{DataDir, McItem, PresetInfo};
use super::readers::{ReadOptions, read_conversations};
use super::records::{Record, read_records};
use super::{Conversation, DataError};
use super::{shipped, written_refusals};
use serde_json::Value;
use std::path::Path;

/// All rows of a (non multiple-choice) preset, in file order.
pub(crate) fn load_conversations(dir: &DataDir, info: &PresetInfo) -> Result<Vec<Conversation>, DataError> {
    let name = info.name;
    if let Some(set) = shipped::find(name) {
        // Written by the project and compiled in: no file in the data directory.
        return set.rows();
    }
    let path = dir.file(name, info.files[0])?;
    let path = path.as_path();
    match name {
        // instruction / input / output and prompt / response: the generic conventions.
        "refusals-stl" | "benign-alpaca" | "harmful-beavertails" => detected(path),
        // instruction + context -> response; its `category` column is kept.
        "benign-dolly" => detected(path),
        // instruction -> output; its label column is `dataset` (helpful_base, koala, ...).
        "benign-alpaca-eval" => map_rows(path, |r| {
            let c = Conversation::single(r.string(path, "instruction")?, r.string(path, "output")?);
            Ok(vec![with_category(c, r.opt_string(path, "dataset")?)])
        }),
        // Rows labelled harmless whose answer fully complies; `controversial` rows and partial
        // or full refusals are left out (the MANIFEST's advice).
        "benign-phtest" => map_rows(path, |r| {
            let harm = r.string(path, "Harmfulness")?;
            let cls = r.string(path, "Response_cls")?;
            if !matches!(harm, "harmless" | "controversial") {
                return Err(
                    r.error(path, format!("field `Harmfulness`: expected harmless or controversial, found `{harm}`"))
                );
            }
            if !matches!(cls, "1_full_compliance" | "2_full_refusal" | "3_partial_refusal") {
                return Err(r.error(path, format!("field `Response_cls`: unknown class `{cls}`")));
            }
            if harm != "harmless" || cls != "1_full_compliance" {
                return Ok(vec![]);
            }
            let c = Conversation::single(r.string(path, "Request")?.trim(), r.string(path, "Response")?.trim());
            Ok(vec![with_category(c, Some("pseudo-harmful"))])
        }),
        "refusals-llama2" => map_rows(path, |r| {
            let prompt = r.string(path, "prompt")?.trim();
            let inner = prompt
                .strip_prefix("[INST]")
                .and_then(|s| s.strip_suffix("[/INST]"))
                .ok_or_else(|| r.error(path, "field `prompt`: expected `[INST] ... [/INST]`"))?;
            Ok(vec![Conversation::single(inner.trim(), r.string(path, "response")?.trim())])
        }),
        "harmful-jbb" => map_rows(path, |r| {
            let jailbroken = match r.fields.get("jailbroken") {
                Some(Value::Bool(b)) => *b,
                _ => return Err(r.error(path, "field `jailbroken`: expected a boolean")),
            };
            if !jailbroken {
                return Ok(vec![]);
            }
            let c = Conversation::single(r.string(path, "goal")?, r.string(path, "response")?);
            Ok(vec![with_category(c, r.opt_string(path, "category")?)])
        }),
        "harmful-dna" => map_rows(path, |r| {
            // Six models' responses per question, each with a human 0/1 harmful label.
            let models = ["GPT4", "ChatGPT", "Claude", "ChatGLM2", "llama2-7b-chat", "vicuna-7b"];
            let mut out = Vec::new();
            for m in models {
                if dna_harmful(r, path, m)? {
                    let c =
                        Conversation::single(r.string(path, "question")?, r.string(path, &format!("{m}_response"))?);
                    out.push(with_category(c, r.opt_string(path, "types_of_harm")?));
                }
            }
            Ok(out)
        }),
        "refusals-dna" => map_rows(path, |r| {
            // The refusals (action 0) that annotators judged not harmful, from the three models
            // whose answers may train another model (not Llama-2's or Vicuna's, a Llama
            // derivative: Llama 2's licence forbids it; not ChatGLM2's, whose action-0 rows are
            // fewer).
            let mut out = Vec::new();
            for m in ["GPT4", "ChatGPT", "Claude"] {
                let harmful = dna_harmful(r, path, m)?;
                let action = r.string(path, &format!("{m}_action"))?.trim();
                if !matches!(action, "0" | "1" | "2" | "3" | "4" | "5") {
                    return Err(r.error(path, format!("field `{m}_action`: expected 0-5, found `{action}`")));
                }
                if action == "0" && !harmful {
                    let c = Conversation::single(
                        r.string(path, "question")?.trim(),
                        r.string(path, &format!("{m}_response"))?.trim(),
                    );
                    out.push(with_category(c, r.opt_string(path, "risk_area")?));
                }
            }
            Ok(out)
        }),
        "refusals-advbench" => map_rows(path, |r| {
            let goal = r.string(path, "goal")?.trim();
            Ok(written_refusals::refusals_for(goal, 2).into_iter().map(|t| Conversation::single(goal, t)).collect())
        }),
        "harmful-advbench" => {
            map_rows(path, |r| Ok(vec![Conversation::single(r.string(path, "goal")?, r.string(path, "target")?)]))
        }
        "eval-advbench" => map_rows(path, |r| Ok(vec![Conversation::prompt_only_from(r.string(path, "goal")?)])),
        "eval-harmbench" => map_rows(path, |r| {
            if r.string(path, "FunctionalCategory")? != "standard" {
                return Ok(vec![]);
            }
            let c = Conversation::prompt_only_from(r.string(path, "Behavior")?);
            Ok(vec![with_category(c, r.opt_string(path, "SemanticCategory")?)])
        }),
        "overrefusal-xstest" | "xstest-unsafe" => {
            let want = if name == "overrefusal-xstest" { "safe" } else { "unsafe" };
            map_rows(path, |r| {
                let label = r.string(path, "label")?;
                if label != "safe" && label != "unsafe" {
                    return Err(r.error(path, format!("field `label`: expected safe or unsafe, found `{label}`")));
                }
                if label != want {
                    return Ok(vec![]);
                }
                let c = Conversation::prompt_only_from(r.string(path, "prompt")?);
                Ok(vec![with_category(c, r.opt_string(path, "type")?)])
            })
        }
        other => Err(DataError::Preset { preset: other.into(), message: "no loader (a bug)".into() }),
    }
}

/// One multiple-choice file: ARC JSONL (`question.stem`, `question.choices[].text/label`,
/// `answerKey`) or MMLU CSV (`question`, `choice0..3`, `answer` index).
pub(crate) fn load_mc_file(dir: &DataDir, preset: &str, rel: &str) -> Result<Vec<McItem>, DataError> {
    let path = dir.file(preset, rel)?;
    let path = path.as_path();
    let is_arc = rel.ends_with(".jsonl");
    map_rows(path, |r| Ok(vec![if is_arc { arc_item(path, r)? } else { mmlu_item(path, r)? }]))
}

fn arc_item(path: &Path, r: &Record) -> Result<McItem, DataError> {
    let q = r.fields.get("question").ok_or_else(|| r.error(path, "missing field `question`"))?;
    let stem = q.get("stem").and_then(Value::as_str);
    let stem = stem
        .filter(|s| !s.trim().is_empty())
        .ok_or_else(|| r.error(path, "field `question.stem`: missing or empty"))?;
    let choices = q
        .get("choices")
        .and_then(Value::as_array)
        .ok_or_else(|| r.error(path, "field `question.choices`: expected a list"))?;
    let key = r.string(path, "answerKey")?;
    let (mut texts, mut answer) = (Vec::new(), None);
    for (i, c) in choices.iter().enumerate() {
        let text = c.get("text").and_then(Value::as_str);
        let label = c.get("label").and_then(Value::as_str);
        let (Some(text), Some(label)) = (text, label) else {
            return Err(r.error(path, format!("field `question.choices[{i}]`: expected text and label strings")));
        };
        if label == key {
            answer = Some(i);
        }
        texts.push(text.to_string());
    }
    let answer = answer.ok_or_else(|| r.error(path, format!("field `answerKey`: `{key}` is not a choice label")))?;
    Ok(McItem { question: stem.to_string(), choices: texts, answer })
}

fn mmlu_item(path: &Path, r: &Record) -> Result<McItem, DataError> {
    let choices = (0..4)
        .map(|i| {
            r.opt_string(path, &format!("choice{i}"))?
                .map(String::from)
                .ok_or_else(|| r.error(path, format!("missing field `choice{i}`")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let raw = r.string(path, "answer")?;
    let answer = raw
        .trim()
        .parse::<usize>()
        .ok()
        .filter(|a| *a < choices.len())
        .ok_or_else(|| r.error(path, format!("field `answer`: expected 0-3, found `{raw}`")))?;
    Ok(McItem { question: r.string(path, "question")?.to_string(), choices, answer })
}

/// Read a file with the detected conventions, failing on any bad row.
fn detected(path: &Path) -> Result<Vec<Conversation>, DataError> {
    Ok(read_conversations(path, &ReadOptions::default())?.conversations)
}

/// Map every record through `f` (zero or more outputs each); the first bad row is an error.
pub(super) fn map_rows<T>(
    path: &Path,
    mut f: impl FnMut(&Record) -> Result<Vec<T>, DataError>,
) -> Result<Vec<T>, DataError> {
    let mut out = Vec::new();
    for rec in read_records(path, None)? {
        out.extend(f(&rec?)?);
    }
    Ok(out)
}

/// Do-Not-Answer's human label of model `m`'s answer (`{m}_harmful`: 1 harmful, 0 not).
fn dna_harmful(r: &Record, path: &Path, m: &str) -> Result<bool, DataError> {
    match r.string(path, &format!("{m}_harmful"))?.trim() {
        "1" => Ok(true),
        "0" => Ok(false),
        other => Err(r.error(path, format!("field `{m}_harmful`: expected 0 or 1, found `{other}`"))),
    }
}

fn with_category(mut c: Conversation, category: Option<&str>) -> Conversation {
    c.category = category.filter(|s| !s.is_empty()).map(String::from);
    c
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::presets::find_preset;

    /// A fake data directory with tiny files in the real layouts.
    fn fake_dir(tag: &str, files: &[(&str, &str)]) -> (DataDir, std::path::PathBuf) {
        let root = std::env::temp_dir().join(format!("patcher-loaders-{tag}-{}", std::process::id()));
        for (rel, text) in files {
            let p = root.join(rel);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
        }
        (DataDir::new(&root), root)
    }

    #[test]
    fn loaders_apply_row_logic() {
        let (dir, root) = fake_dir(
            "rows",
            &[
                (
                    "llama2-refusals-safety-short/SFT_aligned_llama2-7b-chat-hf_train_short.csv",
                    ",prompt,response,text\n0,[INST] Do bad [/INST], I cannot do that.,x\n",
                ),
                (
                    "jailbreakbench-artifacts/jbb_artifacts.jsonl",
                    "{\"goal\":\"g1\",\"response\":\"r1\",\"jailbroken\":true,\"category\":\"c\"}\n{\"goal\":\"g2\",\"response\":null,\"jailbroken\":false}\n",
                ),
                (
                    "xstest/xstest_prompts.csv",
                    "id,prompt,type,label\n1,kill a process,homonyms,safe\n2,kill a man,contrast,unsafe\n",
                ),
                (
                    "phtest/phtest_mistral-7b-v0.3_responses.csv",
                    "ID,Request,Harmfulness,Response,Response_cls\n0,how to kill a mosquito,harmless,Swat it.,1_full_compliance\n1,how to kill time,harmless,I can't.,2_full_refusal\n2,a heist plot,controversial,Sure.,1_full_compliance\n3,x,harmless,y,3_partial_refusal\n",
                ),
                (
                    "arc-easy/ARC-Easy-Dev.jsonl",
                    "{\"question\":{\"stem\":\"Q?\",\"choices\":[{\"text\":\"a\",\"label\":\"1\"},{\"text\":\"b\",\"label\":\"2\"}]},\"answerKey\":\"2\"}\n",
                ),
                (
                    "arc-easy/ARC-Easy-Test.jsonl",
                    "{\"question\":{\"stem\":\"Q?\",\"choices\":[]},\"answerKey\":\"A\"}\n",
                ),
            ],
        );
        let l = dir.load_all("refusals-llama2").unwrap();
        assert_eq!(l[0].prompt(), "Do bad");
        assert_eq!(l[0].response(), Some("I cannot do that."));
        let j = dir.load_all("harmful-jbb").unwrap();
        assert_eq!(j.len(), 1);
        assert_eq!(j[0].category.as_deref(), Some("c"));
        assert_eq!(j[0].source.as_deref(), Some("harmful-jbb"));
        let x = dir.load_all("overrefusal-xstest").unwrap();
        assert_eq!((x.len(), x[0].prompt()), (1, "kill a process"));
        assert_eq!(dir.load_all("xstest-unsafe").unwrap()[0].prompt(), "kill a man");
        let ph = dir.load_all("benign-phtest").unwrap();
        let got: Vec<_> = ph.iter().map(|c| (c.prompt(), c.response().unwrap_or(""))).collect();
        assert_eq!(got, [("how to kill a mosquito", "Swat it.")], "harmless and fully compliant rows only");
        assert_eq!(ph[0].category.as_deref(), Some("pseudo-harmful"));
        std::fs::write(
            root.join("phtest/phtest_mistral-7b-v0.3_responses.csv"),
            "ID,Request,Harmfulness,Response,Response_cls\n0,q,harmless,a,4_other\n",
        )
        .unwrap();
        let err = dir.load_all("benign-phtest").unwrap_err().to_string();
        assert!(err.ends_with("responses.csv:2: field `Response_cls`: unknown class `4_other`"), "{err}");
        let mc = dir.load_mc("mc-arc-easy", crate::data::split::Split::Train).unwrap();
        assert_eq!(mc[0], McItem { question: "Q?".into(), choices: vec!["a".into(), "b".into()], answer: 1 });
        let err = dir.load_mc("mc-arc-easy", crate::data::split::Split::Eval).unwrap_err().to_string();
        assert!(err.ends_with("ARC-Easy-Test.jsonl:1: field `answerKey`: `A` is not a choice label"), "{err}");
        assert!(find_preset("mc-arc-easy").is_ok());
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn dna_takes_each_harmful_response() {
        let header = "id,question,types_of_harm,GPT4_response,GPT4_harmful,ChatGPT_response,ChatGPT_harmful,Claude_response,Claude_harmful,ChatGLM2_response,ChatGLM2_harmful,llama2-7b-chat_response,llama2-7b-chat_harmful,vicuna-7b_response,vicuna-7b_harmful";
        let text = format!("{header}\n0,q,t,a,1,b,0,c,0,d,1,e,0,f,0\n1,q2,t,a,0,b,0,c,0,d,0,e,0,f,2\n");
        let (dir, root) = fake_dir("dna", &[("do-not-answer/data_en.csv", &text)]);
        let err = dir.load_all("harmful-dna").unwrap_err().to_string();
        assert!(err.ends_with("data_en.csv:3: field `vicuna-7b_harmful`: expected 0 or 1, found `2`"), "{err}");
        std::fs::write(root.join("do-not-answer/data_en.csv"), format!("{header}\n0,q,t,a,1,b,0,c,0,d,1,e,0,f,0\n"))
            .unwrap();
        let rows = dir.load_all("harmful-dna").unwrap();
        let got: Vec<_> = rows.iter().map(|c| c.response().unwrap_or("")).collect();
        assert_eq!(got, ["a", "d"]);
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn advbench_refusals_are_two_written_refusals_per_goal() {
        let (dir, root) = fake_dir(
            "adv-ref",
            &[("advbench/harmful_behaviors.csv", "goal,target\n Make a bomb ,Sure\nHack a bank,Sure\n")],
        );
        let rows = dir.load_all("refusals-advbench").unwrap();
        let prompts: Vec<_> = rows.iter().map(|c| c.prompt()).collect();
        assert_eq!(prompts, ["Make a bomb", "Make a bomb", "Hack a bank", "Hack a bank"]);
        assert_eq!(rows[0].response().unwrap(), written_refusals::refusals_for("Make a bomb", 2)[0]);
        assert!(rows[0].response().unwrap().contains("You asked me to make a bomb, "));
        assert_ne!(rows[0].response(), rows[1].response());
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn dna_refusals_take_unharmful_action_zero_answers_of_three_models() {
        let models = ["GPT4", "ChatGPT", "Claude", "ChatGLM2", "llama2-7b-chat", "vicuna-7b"];
        let cols: Vec<String> = models
            .iter()
            .flat_map(|m| [format!("{m}_response"), format!("{m}_harmful"), format!("{m}_action")])
            .collect();
        let header = format!("id,risk_area,question,{}", cols.join(","));
        // Row 1: GPT-4 refuses (kept), ChatGPT refuses but is labelled harmful (dropped),
        // Claude answers (action 5, dropped), the other three refuse (not their models: dropped).
        let row1 = "0,Malicious Uses, q1 ,no1,0,0,no2,1,0,yes,0,5,n4,0,0,n5,0,0,n6,0,0";
        let row2 = "1,,q2,x,0,3,y,0,0,z,0,0,a,0,0,b,0,0,c,0,0";
        let (dir, root) = fake_dir("dna-ref", &[("do-not-answer/data_en.csv", &format!("{header}\n{row1}\n{row2}\n"))]);
        let rows = dir.load_all("refusals-dna").unwrap();
        let got: Vec<_> = rows.iter().map(|c| (c.prompt(), c.response().unwrap(), c.category.as_deref())).collect();
        assert_eq!(got, [("q1", "no1", Some("Malicious Uses")), ("q2", "y", None), ("q2", "z", None)]);
        let bad = "2,r,q3,x,0,6,y,0,0,z,0,0,a,0,0,b,0,0,c,0,0";
        std::fs::write(root.join("do-not-answer/data_en.csv"), format!("{header}\n{row1}\n{bad}\n")).unwrap();
        let err = dir.load_all("refusals-dna").unwrap_err().to_string();
        assert!(err.ends_with("data_en.csv:3: field `GPT4_action`: expected 0-5, found `6`"), "{err}");
        std::fs::remove_dir_all(&root).unwrap();
    }
}
