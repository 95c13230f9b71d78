//! Batched text generation with a KV cache: greedy or seeded temperature / top-p sampling,
//! prompts left-padded to a common length, each row stopping at its end-of-turn tokens and
//! leaving the batch soon after (finished rows are dropped from the cache).
//!
//! Left padding needs two things to give the same tokens as unpadded generation: padded keys
//! are masked out, and positions count only real tokens (`position = #real tokens before`),
//! which is what transformers does with `position_ids = cumsum(attention_mask) - 1`.

use crate::model::llama::{KvCache, Llama, int_tensor, to_vec_f32};
use crate::rng::Rng;

/// How to pick the next token.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SamplingConfig {
    pub max_new_tokens: usize,
    /// 0 means greedy.
    pub temperature: f64,
    pub top_p: f64,
    pub seed: u64,
}

impl Default for SamplingConfig {
    fn default() -> Self {
        Self { max_new_tokens: 128, temperature: 0.0, top_p: 1.0, seed: 0 }
    }
}

/// Generated ids per prompt (without the prompt, without the stop token).
pub fn generate(
    model: &Llama,
    prompts: &[Vec<u32>],
    stop_ids: &[u32],
    pad_id: u32,
    cfg: &SamplingConfig,
) -> Vec<Vec<u32>> {
    let model = model.untracked();
    let device = model.device();
    let b = prompts.len();
    if b == 0 {
        return vec![];
    }
    let mut rng = Rng::derive(cfg.seed, "sampling");
    let LeftPadded { ids, positions, mut key_valid, len: longest } = left_pad(prompts, pad_id);
    assert!(longest > 0, "generation needs a non-empty prompt");
    let mut next_pos: Vec<usize> = prompts.iter().map(|p| p.len()).collect();
    let mut cache = KvCache::default();
    // The prompt pass needs the logits of its last position only: the head (`d x V`, the
    // largest matrix product at SmolLM2's 49k vocabulary) runs on those `B` rows alone.
    let h = model.forward_cached_hidden(int_tensor(ids, [b, longest], &device), &positions, &key_valid, &mut cache); // (B, P, d)
    let d = h.dims()[2];
    let head = model.head_weight().transpose(); // (d, V)
    let mut logits = h.narrow(1, longest - 1, 1).reshape([b, d]).matmul(head).reshape([b, 1, model.cfg.vocab_size]); // (B, 1, V)
    let mut out = vec![Vec::new(); b];
    let mut done = vec![false; b];
    // The original rows still in the batch, in batch order; `key_valid` and `next_pos` follow
    // the batch order.
    let mut live: Vec<usize> = (0..b).collect();
    for _ in 0..cfg.max_new_tokens {
        let (n, v) = (live.len(), logits.dims()[2]);
        let last = to_vec_f32(logits.reshape([n, v]));
        let mut step = Vec::with_capacity(n);
        for (&row, chunk) in live.iter().zip(last.chunks(v)) {
            let tok = if done[row] { pad_id } else { pick(chunk, cfg, &mut rng) };
            if !done[row] {
                if stop_ids.contains(&tok) {
                    done[row] = true;
                } else {
                    out[row].push(tok);
                }
            }
            step.push(tok as i64);
        }
        if done.iter().all(|d| *d) {
            break;
        }
        // Finished rows leave the batch once they are a quarter of it (their cache rows are
        // dropped, a copy of the rest); until then they are fed padding and ignored. Rows never
        // attend across, so the others' tokens do not change.
        let finished = live.iter().filter(|&&r| done[r]).count();
        if finished > 0 && finished * 4 >= n {
            let keep: Vec<usize> = (0..n).filter(|&k| !done[live[k]]).collect();
            cache = cache.select_rows(&int_tensor(keep.iter().map(|&k| k as i64).collect(), [keep.len()], &device));
            step = keep.iter().map(|&k| step[k]).collect();
            key_valid = keep.iter().map(|&k| std::mem::take(&mut key_valid[k])).collect();
            next_pos = keep.iter().map(|&k| next_pos[k]).collect();
            live = keep.iter().map(|&k| live[k]).collect();
        }
        let pos: Vec<Vec<usize>> = next_pos.iter().map(|&p| vec![p]).collect();
        for (valid, p) in key_valid.iter_mut().zip(next_pos.iter_mut()) {
            valid.push(true);
            *p += 1;
        }
        let n = live.len();
        logits = model.forward_cached(int_tensor(step, [n, 1], &device), &pos, &key_valid, &mut cache); // (n, 1, V)
    }
    out
}

/// Prompts left-padded to a common length `len`: `ids` `[B, len]` (row-major), each row's
/// positions counting its real tokens only, and which keys are real.
pub struct LeftPadded {
    pub ids: Vec<i64>,
    pub positions: Vec<Vec<usize>>,
    pub key_valid: Vec<Vec<bool>>,
    pub len: usize,
}

/// Left-pad `prompts` with `pad_id` (module doc).
pub fn left_pad<P: AsRef<[u32]>>(prompts: &[P], pad_id: u32) -> LeftPadded {
    let len = prompts.iter().map(|p| p.as_ref().len()).max().unwrap_or(0);
    let mut out =
        LeftPadded { ids: Vec::with_capacity(prompts.len() * len), positions: vec![], key_valid: vec![], len };
    for p in prompts {
        let p = p.as_ref();
        let pad = len - p.len();
        out.ids.extend(std::iter::repeat_n(pad_id as i64, pad).chain(p.iter().map(|&x| x as i64)));
        out.positions.push((0..len).map(|i| i.saturating_sub(pad)).collect());
        out.key_valid.push((0..len).map(|i| i >= pad).collect());
    }
    out
}

/// Greedy generation for one prompt without a KV cache: re-runs the full forward each step.
/// Slow; the reference that the cached path is tested against.
pub fn generate_uncached(model: &Llama, prompt: &[u32], stop_ids: &[u32], max_new_tokens: usize) -> Vec<u32> {
    let model = model.untracked();
    let device = model.device();
    let mut seq: Vec<u32> = prompt.to_vec();
    let mut out = Vec::new();
    for _ in 0..max_new_tokens {
        let t = seq.len();
        let logits = model.forward(int_tensor(seq.iter().map(|&x| x as i64).collect(), [1, t], &device));
        let v = logits.dims()[2];
        let last = to_vec_f32(logits.narrow(1, t - 1, 1).reshape([v]));
        let tok = argmax(&last);
        if stop_ids.contains(&tok) {
            break;
        }
        out.push(tok);
        seq.push(tok);
    }
    out
}

fn argmax(xs: &[f32]) -> u32 {
    let mut best = 0;
    for (i, x) in xs.iter().enumerate() {
        if *x > xs[best] {
            best = i;
        }
    }
    best as u32
}

/// Greedy when temperature is 0, otherwise nucleus sampling (Holtzman et al., 2020).
fn pick(logits: &[f32], cfg: &SamplingConfig, rng: &mut Rng) -> u32 {
    if cfg.temperature <= 0.0 {
        return argmax(logits);
    }
    let max = logits.iter().cloned().fold(f32::NEG_INFINITY, f32::max) as f64;
    let mut probs: Vec<(usize, f64)> =
        logits.iter().enumerate().map(|(i, &l)| (i, ((l as f64 - max) / cfg.temperature).exp())).collect();
    let z: f64 = probs.iter().map(|p| p.1).sum();
    probs.iter_mut().for_each(|p| p.1 /= z);
    probs.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    let mut kept = 0.0;
    let mut cut = probs.len();
    for (i, p) in probs.iter().enumerate() {
        kept += p.1;
        if kept >= cfg.top_p {
            cut = i + 1;
            break;
        }
    }
    let probs = &probs[..cut];
    let mut r = rng.uniform() * probs.iter().map(|p| p.1).sum::<f64>();
    for p in probs {
        r -= p.1;
        if r <= 0.0 {
            return p.0 as u32;
        }
    }
    probs[probs.len() - 1].0 as u32
}
