//! Multiple-choice accuracy by answer log-likelihood (as in the EleutherAI evaluation harness):
//! the question and its lettered options are the user turn; each option's text is scored as
//! the assistant's continuation, and the option with the highest summed log-probability wins.

use crate::data::Message;
use crate::data::presets::McItem;
use crate::error::Result;
use crate::model::Llama;
use burn::prelude::*;

use crate::model::llama::{KvCache, int_tensor, to_vec_f32};
use crate::tokenizer::ChatTokenizer;

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

/// Accuracy over `items` (argmax of the summed log-probability).
pub fn mc_accuracy(model: &Llama, tok: &ChatTokenizer, items: &[McItem]) -> Result<f64> {
    let mut correct = 0;
    for item in items {
        let prompt = tok.encode_prompt(&[Message::new("user", mc_prompt(item))])?;
        let choices: Vec<Vec<u32>> = item.choices.iter().map(|c| tok.encode(c.trim())).collect::<Result<_>>()?;
        let scores = choice_scores(model, &prompt, &choices);
        let best = scores.iter().enumerate().max_by(|a, b| a.1.0.total_cmp(&b.1.0)).map(|(i, _)| i).unwrap_or(0);
        correct += usize::from(best == item.answer);
        crate::train::progress::advance(1, "multiple choice");
    }
    Ok(correct as f64 / items.len().max(1) as f64)
}
