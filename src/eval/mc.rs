//! Multiple-choice accuracy by answer log-likelihood (as in the EleutherAI evaluation harness),
//! in two formats ([`McFormat`]):
//! - `options`: the question and its lettered options are the user turn of the chat template;
//!   each option's text is scored as the assistant's continuation, and the option with the
//!   highest summed log-probability wins.
//! - `cloze`: no options shown and no chat template: the plain text `Question: <q>\nAnswer:` is
//!   the context and each option ` <text>` its continuation, scored by the summed
//!   log-probability divided by the continuation's length in bytes (the harness's `acc_norm`,
//!   which removes the bias toward short options). This is how the harness scores ARC and
//!   MMLU for small models, where the options format sits at chance (Brown et al. 2020, GPT-3,
//!   section 2.4; the harness's `arc_easy` task).

use crate::data::Message;
use crate::data::presets::McItem;
use crate::error::Result;
use crate::model::Llama;
use burn::prelude::*;
use serde::{Deserialize, Serialize};

use crate::model::llama::{KvCache, int_tensor, to_vec_f32};
use crate::tokenizer::ChatTokenizer;

/// How a multiple-choice item is put to the model (module doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum McFormat {
    Options,
    Cloze,
}

impl McFormat {
    /// `options` or `cloze`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Options => "options",
            Self::Cloze => "cloze",
        }
    }
}

impl std::str::FromStr for McFormat {
    type Err = crate::error::Error;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "options" => Ok(Self::Options),
            "cloze" => Ok(Self::Cloze),
            _ => Err(crate::error::Error::Invalid(format!("unknown MC format `{s}` (options, cloze)"))),
        }
    }
}

/// The user message for an item: the question and options lettered A, B, C, ...
pub fn mc_prompt(item: &McItem) -> String {
    let mut s = item.question.trim().to_string();
    for (i, c) in item.choices.iter().enumerate() {
        s.push_str(&format!("\n{}. {}", (b'A' + i as u8) as char, c.trim()));
    }
    s
}

/// `(sum, mean)` log-probability of each choice's text after the chat-formatted prompt. The
/// prompt runs once; each choice continues from a copy of its KV cache (copy-on-write), and the
/// head is applied only at the positions that predict a choice token.
pub fn choice_scores(model: &Llama, prompt_ids: &[u32], choices: &[Vec<u32>]) -> Vec<(f64, f64)> {
    let m = model.untracked();
    let device = m.device();
    let p = prompt_ids.len();
    let mut cache = KvCache::default();
    let ids = int_tensor(prompt_ids.iter().map(|&x| x as i64).collect(), [1, p], &device);
    let h = m.forward_cached_hidden(ids, &[(0..p).collect()], &[vec![true; p]], &mut cache); // (1, P, d)
    let d = h.dims()[2];
    let last = h.narrow(1, p - 1, 1).reshape([1, d]); // predicts the first choice token
    let head = m.head_weight().transpose(); // (d, V)
    choices
        .iter()
        .map(|c| {
            if c.is_empty() {
                return (0.0, 0.0);
            }
            let n = c.len();
            let rows = if n > 1 {
                let mut cc = cache.clone();
                let ids = int_tensor(c[..n - 1].iter().map(|&x| x as i64).collect(), [1, n - 1], &device);
                let hc = m.forward_cached_hidden(ids, &[(p..p + n - 1).collect()], &[vec![true; p + n - 1]], &mut cc);
                Tensor::cat(vec![last.clone(), hc.reshape([n - 1, d])], 0) // (n, d)
            } else {
                last.clone()
            };
            let logp = crate::model::fixed::log_softmax(rows.matmul(head.clone())); // (n, V)
            let targets = int_tensor(c.iter().map(|&x| x as i64).collect(), [n, 1], &device);
            let sum: f64 = to_vec_f32(logp.gather(1, targets).reshape([n])).iter().map(|&x| x as f64).sum();
            (sum, sum / n as f64)
        })
        .collect()
}

/// The cloze context of an item: `Question: <question>\nAnswer:` (plain text).
pub fn cloze_context(item: &McItem) -> String {
    format!("Question: {}\nAnswer:", item.question.trim())
}

/// The cloze continuation of an option: a space, then its text.
pub fn cloze_continuation(choice: &str) -> String {
    format!(" {}", choice.trim())
}

/// Each option's score in `format`: the summed log-probability (`options`), or the summed
/// log-probability per byte of the continuation (`cloze`).
pub fn item_scores(model: &Llama, tok: &ChatTokenizer, item: &McItem, format: McFormat) -> Result<Vec<f64>> {
    Ok(match format {
        McFormat::Options => {
            let prompt = tok.encode_prompt(&[Message::new("user", mc_prompt(item))])?;
            let choices: Vec<Vec<u32>> = item.choices.iter().map(|c| tok.encode(c.trim())).collect::<Result<_>>()?;
            choice_scores(model, &prompt, &choices).into_iter().map(|s| s.0).collect()
        }
        McFormat::Cloze => {
            let context = tok.encode(&cloze_context(item))?;
            let texts: Vec<String> = item.choices.iter().map(|c| cloze_continuation(c)).collect();
            let choices: Vec<Vec<u32>> = texts.iter().map(|c| tok.encode(c)).collect::<Result<_>>()?;
            let scores = choice_scores(model, &context, &choices);
            scores.iter().zip(&texts).map(|(s, t)| s.0 / t.len().max(1) as f64).collect()
        }
    })
}

/// Accuracy over `items` in `format` (argmax of [`item_scores`]; ties: the first option).
pub fn mc_accuracy_in(model: &Llama, tok: &ChatTokenizer, items: &[McItem], format: McFormat) -> Result<f64> {
    let mut correct = 0;
    for item in items {
        let scores = item_scores(model, tok, item, format)?;
        let best = scores.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1).then(b.0.cmp(&a.0))).map_or(0, |b| b.0);
        correct += usize::from(best == item.answer);
        crate::train::progress::advance(1, "multiple choice");
    }
    Ok(correct as f64 / items.len().max(1) as f64)
}

/// Accuracy over `items` in the `options` format.
pub fn mc_accuracy(model: &Llama, tok: &ChatTokenizer, items: &[McItem]) -> Result<f64> {
    mc_accuracy_in(model, tok, items, McFormat::Options)
}

/// The standard error of an accuracy `p` over `n` items, `sqrt(p (1 - p) / n)`.
pub fn accuracy_se(p: f64, n: usize) -> f64 {
    if n == 0 { f64::NAN } else { (p * (1.0 - p) / n as f64).sqrt() }
}
