//! Evaluation: batched greedy generation, judged harmful score and refusal rates, exact-match
//! accuracy, and loss-based metrics on held-out conversations (DESIGN section 6).

pub mod http_judge;
pub mod interval;
pub mod judge;
pub mod judge_check;
pub mod judge_train;
pub mod keyword;
pub mod learned_judge;
pub mod logistic;
pub mod mc;
pub mod outcomes;
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
    /// Its 95% percentile-bootstrap interval over the prompts ([`interval::bootstrap_share`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hs_interval: Option<interval::Interval>,
    pub refusal_rate: f64,
    /// Share judged compliant but harmless (only judges that read the content say so).
    #[serde(default)]
    pub harmless_rate: f64,
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
    let asked: Vec<String> = prompts.iter().map(|p| p.last().map(|m| m.content.clone()).unwrap_or_default()).collect();
    let pairs: Vec<(&str, &str)> = asked.iter().zip(&answers).map(|(p, a)| (p.as_str(), a.as_str())).collect();
    let judgements = judge.judge_batch(&pairs)?;
    let items: Vec<JudgedAnswer> = asked
        .into_iter()
        .zip(answers)
        .zip(judgements)
        .map(|((prompt, answer), judgement)| JudgedAnswer { prompt, answer, judgement })
        .collect();
    Ok((summarise(&items, judge, rate), items))
}

/// Judge already generated answers again with another judge (the same answers, so two judges'
/// harmful scores differ only by the judging).
pub fn rejudge(items: &[JudgedAnswer], judge: &dyn Judge) -> Result<(SafetyEval, Vec<JudgedAnswer>)> {
    let pairs: Vec<(&str, &str)> = items.iter().map(|i| (i.prompt.as_str(), i.answer.as_str())).collect();
    let judged: Vec<JudgedAnswer> = items
        .iter()
        .zip(judge.judge_batch(&pairs)?)
        .map(|(i, judgement)| JudgedAnswer { prompt: i.prompt.clone(), answer: i.answer.clone(), judgement })
        .collect();
    Ok((summarise(&judged, judge, 0.0), judged))
}

fn summarise(items: &[JudgedAnswer], judge: &dyn Judge, rate: f64) -> SafetyEval {
    let n = items.len().max(1) as f64;
    let share = |v: Verdict| items.iter().filter(|i| i.judgement.verdict == v).count() as f64 / n;
    SafetyEval {
        judge: judge.name(),
        n: items.len(),
        harmful_score: share(Verdict::Harmful),
        hs_interval: (!items.is_empty()).then(|| {
            let outcomes: Vec<bool> = items.iter().map(|i| i.judgement.verdict == Verdict::Harmful).collect();
            interval::bootstrap_share(&[outcomes], 2000, 0)
        }),
        refusal_rate: share(Verdict::Refusal),
        harmless_rate: share(Verdict::Harmless),
        degenerate_rate: share(Verdict::Degenerate),
        prompts_per_s: rate,
    }
}

/// Per prompt: the trimmed greedy answer equals the reference exactly (the exact-match
/// accuracy is their share).
pub fn exact_match(
    model: &Llama,
    tok: &ChatTokenizer,
    items: &[(Vec<ChatMessage>, String)],
    batch_size: usize,
    max_new_tokens: usize,
) -> Result<Vec<bool>> {
    let prompts: Vec<Vec<ChatMessage>> = items.iter().map(|(p, _)| p.clone()).collect();
    let cfg = SamplingConfig { max_new_tokens, ..Default::default() };
    let (answers, _) = generate_answers(model, tok, &prompts, batch_size, &cfg)?;
    Ok(answers.iter().zip(items).map(|(a, (_, want))| a.trim() == want.trim()).collect())
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
    // Batches of similar length: padding costs a full forward per padded position.
    let mut order: Vec<&Example> = examples.iter().collect();
    order.sort_by_key(|e| e.ids.len().min(max_len));
    let (mut total, mut count) = (0.0, 0usize);
    for chunk in order.chunks(batch_size.max(1)) {
        let refs: Vec<&Example> = chunk.to_vec();
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
