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

use crate::model::generate::{LeftPadded, left_pad};
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

/// An item as token ids: its context, each option's continuation, and the divisor of each
/// option's summed log-probability (1 in `options`, the continuation's bytes in `cloze`).
pub struct ItemTokens {
    pub context: Vec<u32>,
    pub choices: Vec<Vec<u32>>,
    pub divisors: Vec<f64>,
}

/// The tokens of `item` in `format` (module doc).
pub fn item_tokens(tok: &ChatTokenizer, item: &McItem, format: McFormat) -> Result<ItemTokens> {
    Ok(match format {
        McFormat::Options => ItemTokens {
            context: tok.encode_prompt(&[Message::new("user", mc_prompt(item))])?,
            choices: item.choices.iter().map(|c| tok.encode(c.trim())).collect::<Result<_>>()?,
            divisors: vec![1.0; item.choices.len()],
        },
        McFormat::Cloze => {
            let texts: Vec<String> = item.choices.iter().map(|c| cloze_continuation(c)).collect();
            ItemTokens {
                context: tok.encode(&cloze_context(item))?,
                choices: texts.iter().map(|c| tok.encode(c)).collect::<Result<_>>()?,
                divisors: texts.iter().map(|t| t.len().max(1) as f64).collect(),
            }
        }
    })
}

/// Each option's score in `format`: the summed log-probability (`options`), or the summed
/// log-probability per byte of the continuation (`cloze`). One item at a time; the reference
/// that [`mc_accuracy_in`]'s batched scoring is tested against.
pub fn item_scores(model: &Llama, tok: &ChatTokenizer, item: &McItem, format: McFormat) -> Result<Vec<f64>> {
    let t = item_tokens(tok, item, format)?;
    Ok(choice_scores(model, &t.context, &t.choices).iter().zip(&t.divisors).map(|(s, d)| s.0 / d).collect())
}

/// `(sum, mean)` log-probability of every option of every item, as [`choice_scores`] gives
/// them one item at a time, computed `batch` items at a time (items sorted by context length):
/// the contexts left-padded in one cached pass (padded keys masked, positions counting real
/// tokens only, as in generation), then every (item, option) row continuing from a copy of its
/// item's cache, options right-padded (the padding comes after every scored position, so
/// causal attention never sees it). The head is applied only to the scored positions.
pub fn batch_choice_scores(model: &Llama, items: &[(Vec<u32>, Vec<Vec<u32>>)], batch: usize) -> Vec<Vec<(f64, f64)>> {
    let m = model.untracked();
    let mut order: Vec<usize> = (0..items.len()).collect();
    order.sort_by_key(|&i| (items[i].0.len(), i));
    let mut out = vec![vec![]; items.len()];
    for chunk in order.chunks(batch.max(1)) {
        let part: Vec<&(Vec<u32>, Vec<Vec<u32>>)> = chunk.iter().map(|&i| &items[i]).collect();
        for (&i, scores) in chunk.iter().zip(chunk_scores(&m, &part)) {
            out[i] = scores;
        }
    }
    out
}

/// [`batch_choice_scores`] of one batch (`m` untracked).
fn chunk_scores(m: &Llama, items: &[&(Vec<u32>, Vec<Vec<u32>>)]) -> Vec<Vec<(f64, f64)>> {
    let device = m.device();
    let b = items.len();
    assert!(items.iter().all(|it| !it.0.is_empty()), "multiple choice needs a non-empty context");
    let contexts: Vec<&[u32]> = items.iter().map(|it| it.0.as_slice()).collect();
    let LeftPadded { ids, positions, key_valid, len: p } = left_pad(&contexts, 0);
    let mut cache = KvCache::default();
    let h = m.forward_cached_hidden(int_tensor(ids, [b, p], &device), &positions, &key_valid, &mut cache); // (B, P, d)
    let d = h.dims()[2];
    let last = h.narrow(1, p - 1, 1).reshape([b, d]); // (B, d): predicts each option's first token
    // One row per (item, non-empty option); `l` continuation steps feed all but the last token.
    let rows: Vec<(usize, usize)> = items
        .iter()
        .enumerate()
        .flat_map(|(i, it)| it.1.iter().enumerate().filter(|(_, c)| !c.is_empty()).map(move |(c, _)| (i, c)))
        .collect();
    let r = rows.len();
    let l = rows.iter().map(|&(i, c)| items[i].1[c].len() - 1).max().unwrap_or(0);
    let states = if l > 0 {
        let mut rc = cache.select_rows(&int_tensor(rows.iter().map(|&(i, _)| i as i64).collect(), [r], &device)); // (R, KV, P, hd)
        let (mut ids, mut pos, mut valid) = (Vec::with_capacity(r * l), vec![], vec![]);
        for &(i, c) in &rows {
            let toks = &items[i].1[c];
            let n = toks.len() - 1;
            ids.extend((0..l).map(|j| if j < n { toks[j] as i64 } else { 0 }));
            pos.push((0..l).map(|j| items[i].0.len() + j).collect::<Vec<_>>());
            valid.push(key_valid[i].iter().copied().chain((0..l).map(|j| j < n)).collect::<Vec<_>>());
        }
        let hc = m.forward_cached_hidden(int_tensor(ids, [r, l], &device), &pos, &valid, &mut rc); // (R, L, d)
        Tensor::cat(vec![last, hc.reshape([r * l, d])], 0) // (B + R*L, d)
    } else {
        last
    };
    // Scored position of token j of row k: the context's last state (j = 0), else step j - 1.
    let (mut at, mut targets) = (vec![], vec![]);
    for (k, &(i, c)) in rows.iter().enumerate() {
        for (j, &t) in items[i].1[c].iter().enumerate() {
            at.push(if j == 0 { i } else { b + k * l + j - 1 } as i64);
            targets.push(t as i64);
        }
    }
    let head = m.head_weight().transpose(); // (d, V)
    let mut picked = Vec::with_capacity(at.len());
    const ROWS: usize = 256; // bounds the (rows, V) log-softmax in memory
    for (a, t) in at.chunks(ROWS).zip(targets.chunks(ROWS)) {
        let n = a.len();
        let sel = states.clone().select(0, int_tensor(a.to_vec(), [n], &device)); // (n, d)
        let logp = crate::model::fixed::log_softmax(sel.matmul(head.clone())); // (n, V)
        let got = logp.gather(1, int_tensor(t.to_vec(), [n, 1], &device)).reshape([n]); // (n,)
        picked.extend(to_vec_f32(got).into_iter().map(|x| x as f64));
    }
    let mut out: Vec<Vec<(f64, f64)>> = items.iter().map(|it| vec![(0.0, 0.0); it.1.len()]).collect();
    let mut next = picked.into_iter();
    for &(i, c) in &rows {
        let n = items[i].1[c].len();
        let sum: f64 = next.by_ref().take(n).sum();
        out[i][c] = (sum, sum / n as f64);
    }
    out
}

/// Accuracy over `items` in `format` (argmax of each item's scores, as [`item_scores`] gives
/// them; ties: the first option), scored `batch` items at a time ([`batch_choice_scores`]).
pub fn mc_accuracy_in(
    model: &Llama,
    tok: &ChatTokenizer,
    items: &[McItem],
    format: McFormat,
    batch: usize,
) -> Result<f64> {
    let hits = mc_hits_in(model, tok, items, format, batch)?;
    Ok(hits.iter().filter(|&&h| h).count() as f64 / items.len().max(1) as f64)
}

/// Per item of `items`: the best-scoring option is the answer ([`mc_accuracy_in`]'s items).
pub fn mc_hits_in(
    model: &Llama,
    tok: &ChatTokenizer,
    items: &[McItem],
    format: McFormat,
    batch: usize,
) -> Result<Vec<bool>> {
    let mut hits = Vec::with_capacity(items.len());
    for chunk in items.chunks(batch.max(1) * 4) {
        let toks: Vec<ItemTokens> = chunk.iter().map(|it| item_tokens(tok, it, format)).collect::<Result<_>>()?;
        let pairs: Vec<(Vec<u32>, Vec<Vec<u32>>)> =
            toks.iter().map(|t| (t.context.clone(), t.choices.clone())).collect();
        for ((item, t), scores) in chunk.iter().zip(&toks).zip(batch_choice_scores(model, &pairs, batch)) {
            let scores: Vec<f64> = scores.iter().zip(&t.divisors).map(|(s, d)| s.0 / d).collect();
            hits.push(best_option(&scores) == item.answer);
        }
        crate::train::progress::advance(chunk.len(), "multiple choice");
    }
    Ok(hits)
}

/// The index of the highest score (ties: the first option; none: 0).
pub fn best_option(scores: &[f64]) -> usize {
    scores.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1).then(b.0.cmp(&a.0))).map_or(0, |b| b.0)
}

/// Accuracy over `items` in the `options` format.
pub fn mc_accuracy(model: &Llama, tok: &ChatTokenizer, items: &[McItem]) -> Result<f64> {
    mc_accuracy_in(model, tok, items, McFormat::Options, 16)
}

/// The standard error of an accuracy `p` over `n` items, `sqrt(p (1 - p) / n)`.
pub fn accuracy_se(p: f64, n: usize) -> f64 {
    if n == 0 { f64::NAN } else { (p * (1.0 - p) / n as f64).sqrt() }
}
