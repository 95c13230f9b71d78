//! Multiple-choice accuracy by answer log-likelihood (as in the EleutherAI evaluation harness):
//! the question and its lettered options are the user turn; each option's text is scored as
//! the assistant's continuation, and the option with the highest summed log-probability wins.

use burn::tensor::activation::log_softmax;

use crate::data::Message;
use crate::data::presets::McItem;
use crate::error::Result;
use crate::model::Llama;
use crate::model::llama::to_vec_f32;
use crate::tokenizer::ChatTokenizer;
use crate::train::step::{Batch, Example};

/// Per-row sum of log-probabilities of the tokens where `batch.weights` is 1.
pub fn row_logprob_sums(model: &Llama, batch: &Batch) -> Vec<f64> {
    let m = model.untracked();
    let logits = m.forward(batch.inputs.clone());
    let [b, t, _] = logits.dims();
    let logp = log_softmax(logits, 2); // (B, T, V)
    let picked = logp.gather(2, batch.targets.clone().reshape([b, t, 1])).reshape([b, t]);
    let sums = (picked * batch.weights.clone()).sum_dim(1).reshape([b]); // (B,)
    to_vec_f32(sums).into_iter().map(|x| x as f64).collect()
}

/// The user message for an item: the question and options lettered A, B, C, ...
pub fn mc_prompt(item: &McItem) -> String {
    let mut s = item.question.trim().to_string();
    for (i, c) in item.choices.iter().enumerate() {
        s.push_str(&format!("\n{}. {}", (b'A' + i as u8) as char, c.trim()));
    }
    s
}

/// `(sum, mean)` log-probability of each choice's text after the chat-formatted prompt.
pub fn choice_scores(model: &Llama, tok: &ChatTokenizer, prompt_ids: &[u32], choices: &[Vec<u32>]) -> Vec<(f64, f64)> {
    let examples: Vec<Example> = choices
        .iter()
        .map(|c| {
            let mut ids = prompt_ids.to_vec();
            ids.extend(c);
            let mut mask = vec![0u8; prompt_ids.len()];
            mask.extend(std::iter::repeat_n(1u8, c.len()));
            Example { ids, mask }
        })
        .collect();
    let refs: Vec<&Example> = examples.iter().collect();
    let max_len = examples.iter().map(|e| e.ids.len()).max().unwrap_or(1);
    let batch = Batch::new(&refs, tok.pad_id, max_len, model);
    row_logprob_sums(model, &batch).into_iter().zip(choices).map(|(s, c)| (s, s / c.len().max(1) as f64)).collect()
}

/// Accuracy over `items` (argmax of the summed log-probability).
pub fn mc_accuracy(model: &Llama, tok: &ChatTokenizer, items: &[McItem]) -> Result<f64> {
    let mut correct = 0;
    for item in items {
        let prompt = tok.encode_prompt(&[Message::new("user", mc_prompt(item))])?;
        let choices: Vec<Vec<u32>> = item.choices.iter().map(|c| tok.encode(c.trim())).collect::<Result<_>>()?;
        let scores = choice_scores(model, tok, &prompt, &choices);
        let best = scores.iter().enumerate().max_by(|a, b| a.1.0.total_cmp(&b.1.0)).map(|(i, _)| i).unwrap_or(0);
        correct += usize::from(best == item.answer);
    }
    Ok(correct as f64 / items.len().max(1) as f64)
}
