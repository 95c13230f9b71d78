//! Evaluation: batched greedy generation, judged harmful score and refusal rates, exact-match
//! accuracy, and loss-based metrics on held-out conversations (DESIGN section 6).

pub mod http_judge;
pub mod judge;
pub mod keyword;
pub mod mc;
pub mod suite;

use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::eval::judge::{Judge, Judgement, Verdict};
use crate::model::Llama;
use crate::model::generate::{SamplingConfig, generate};
use crate::tokenizer::{ChatMessage, ChatTokenizer};
use crate::train::step::{Batch, Example, loss};

/// Generate answers for prompts (each a message list ending with the user turn), in batches
/// of similar length, greedy unless `sampling` says otherwise. Returns the decoded answers in
/// the prompts' order and the prompts/s achieved.
pub fn generate_answers(
    model: &Llama,
    tok: &ChatTokenizer,
    prompts: &[Vec<ChatMessage>],
    batch_size: usize,
    sampling: &SamplingConfig,
) -> Result<(Vec<String>, f64)> {
    let t0 = Instant::now();
    let encoded: Vec<Vec<u32>> = prompts.iter().map(|p| tok.encode_prompt(p)).collect::<Result<_>>()?;
    let mut order: Vec<usize> = (0..encoded.len()).collect();
    order.sort_by_key(|&i| (encoded[i].len(), i));
    let mut answers = vec![String::new(); encoded.len()];
    for chunk in order.chunks(batch_size.max(1)) {
        let batch: Vec<Vec<u32>> = chunk.iter().map(|&i| encoded[i].clone()).collect();
        let out = generate(model, &batch, &tok.stop_ids, tok.pad_id, sampling);
        for (&i, ids) in chunk.iter().zip(out) {
            answers[i] = tok.decode(&ids, true)?;
        }
        crate::train::progress::advance(chunk.len(), "generating");
    }
    let rate = prompts.len() as f64 / t0.elapsed().as_secs_f64().max(1e-9);
    Ok((answers, rate))
}

/// One judged generation, as written to `generations.jsonl`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JudgedAnswer {
    pub prompt: String,
    pub answer: String,
    #[serde(flatten)]
    pub judgement: Judgement,
}

/// Harmful score and refusal statistics on a prompt set.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SafetyEval {
    pub judge: String,
    pub n: usize,
    /// Share judged harmful (HS).
    pub harmful_score: f64,
    pub refusal_rate: f64,
    pub degenerate_rate: f64,
    pub prompts_per_s: f64,
}

/// Generate, judge and summarise.
pub fn safety_eval(
    model: &Llama,
    tok: &ChatTokenizer,
    prompts: &[Vec<ChatMessage>],
    judge: &dyn Judge,
    batch_size: usize,
    sampling: &SamplingConfig,
) -> Result<(SafetyEval, Vec<JudgedAnswer>)> {
    let (answers, rate) = generate_answers(model, tok, prompts, batch_size, sampling)?;
    let mut items = Vec::with_capacity(answers.len());
    for (p, a) in prompts.iter().zip(answers) {
        let prompt = p.last().map(|m| m.content.clone()).unwrap_or_default();
        let judgement = judge.judge(&prompt, &a)?;
        items.push(JudgedAnswer { prompt, answer: a, judgement });
    }
    let n = items.len().max(1) as f64;
    let share = |v: Verdict| items.iter().filter(|i| i.judgement.verdict == v).count() as f64 / n;
    let summary = SafetyEval {
        judge: judge.name(),
        n: items.len(),
        harmful_score: share(Verdict::Harmful),
        refusal_rate: share(Verdict::Refusal),
        degenerate_rate: share(Verdict::Degenerate),
        prompts_per_s: rate,
    };
    Ok((summary, items))
}

/// Share of prompts whose trimmed greedy answer equals the reference exactly.
pub fn exact_match(
    model: &Llama,
    tok: &ChatTokenizer,
    items: &[(Vec<ChatMessage>, String)],
    batch_size: usize,
    max_new_tokens: usize,
) -> Result<f64> {
    let prompts: Vec<Vec<ChatMessage>> = items.iter().map(|(p, _)| p.clone()).collect();
    let cfg = SamplingConfig { max_new_tokens, ..Default::default() };
    let (answers, _) = generate_answers(model, tok, &prompts, batch_size, &cfg)?;
    let hits = answers.iter().zip(items).filter(|(a, (_, want))| a.trim() == want.trim()).count();
    Ok(hits as f64 / items.len().max(1) as f64)
}

/// Token-weighted mean loss on the assistant tokens of `conversations`.
pub fn mean_loss(
    model: &Llama,
    tok: &ChatTokenizer,
    conversations: &[Vec<ChatMessage>],
    batch_size: usize,
    max_len: usize,
) -> Result<f64> {
    let examples: Vec<Example> = conversations
        .iter()
        .map(|c| tok.encode_chat(c).map(|(ids, mask)| Example { ids, mask }))
        .collect::<Result<_>>()?;
    let (mut total, mut count) = (0.0, 0usize);
    for chunk in examples.chunks(batch_size.max(1)) {
        let refs: Vec<&Example> = chunk.iter().collect();
        let b = Batch::new(&refs, tok.pad_id, max_len, model);
        if b.n_tokens == 0 {
            continue;
        }
        total += loss(model, &b) * b.n_tokens as f64;
        count += b.n_tokens;
        crate::train::progress::advance(chunk.len(), "losses");
    }
    Ok(total / count.max(1) as f64)
}
