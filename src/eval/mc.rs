//! Multiple-choice accuracy by answer log-likelihood (as in the EleutherAI evaluation harness):
//! the question and its lettered options are the user turn; each option's text is scored as
//! the assistant's continuation, and the option with the highest summed log-probability wins.

use burn::tensor::activation::log_softmax;

use crate::data::Message;
use crate::data::presets::McItem;
use crate::error::Result;
use crate::model::Llama;
use crate::model::llama::{int_tensor, to_vec_f32};
use crate::tokenizer::ChatTokenizer;
use crate::train::step::{Batch, Example};

/// Per-row sum of log-probabilities of the tokens where `batch.weights` is 1.
pub fn row_logprob_sums(model: &Llama, batch: &Batch) -> Vec<f64> {
    // Score only the continuation positions: the head over the whole prompt would cost far
    // more than the model body for a large vocabulary.
    let m = model.untracked();
    let h = m.hidden(batch.inputs.clone()); // (B, T, d)
    let [b, t, d] = h.dims();
    let w = to_vec_f32(batch.weights.clone());
    let targets = batch.targets.clone().into_data().convert::<i64>().try_into_vec::<i64>().expect("int targets");
    let idx: Vec<i64> = (0..b * t).filter(|&i| w[i] > 0.0).map(|i| i as i64).collect();
    if idx.is_empty() {
        return vec![0.0; b];
    }
    let n = idx.len();
    let device = batch.targets.device();
    let sel_t: Vec<i64> = idx.iter().map(|&i| targets[i as usize]).collect();
    let rows = h.reshape([b * t, d]).select(0, int_tensor(idx.clone(), [n], &device)); // (N, d)
    let logp = log_softmax(rows.matmul(m.head_weight().transpose()), 1); // (N, V)
    let picked = to_vec_f32(logp.gather(1, int_tensor(sel_t, [n, 1], &device)).reshape([n]));
    let mut sums = vec![0.0f64; b];
    for (k, &i) in idx.iter().enumerate() {
        sums[i as usize / t] += (picked[k] * w[i as usize]) as f64;
    }
    sums
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
