//! Deterministic batch streams: a mixture of example sets drawn by ratio, shuffled per epoch
//! from a seed, with optional length bucketing.
//!
//! Batch `t` is a pure function of `(seed, t)`, so a resumed run sees exactly the batches an
//! uninterrupted run would, with no stream state to checkpoint. Draw `g = t*B + j` (slot `j` of
//! batch `t`) picks a source by the mixture ratios, then takes position `g` of that source's
//! epoch-wise permutation. With bucketing, a window of `W` consecutive batches is drawn, sorted
//! by length, cut into `W` batches of similar length, and the window's batch order shuffled.

use serde::{Deserialize, Serialize};

use crate::data::Conversation;
use crate::error::{Error, Result};
use crate::rng::Rng;
use crate::tokenizer::ChatTokenizer;
use crate::train::step::Example;

/// Tokenize conversations with the chat template; the loss mask marks assistant tokens.
pub fn examples_from(tok: &ChatTokenizer, conversations: &[Conversation]) -> Result<Vec<Example>> {
    conversations.iter().map(|c| tok.encode_chat(&c.messages).map(|(ids, mask)| Example { ids, mask })).collect()
}

/// A mixture of conversation sets `(name, conversations, weight)`, tokenized with the chat
/// template; a set with weight 0 is not part of the mix (and is not tokenized).
pub fn mixture_of(
    tok: &ChatTokenizer,
    sets: &[(&str, &[Conversation], f64)],
    batch: BatchConfig,
    seed: u64,
) -> Result<Mixture> {
    let mut sources = Vec::new();
    for (name, convs, weight) in sets {
        if !(weight.is_finite() && *weight >= 0.0) {
            return Err(Error::Invalid(format!("the `{name}` data set has weight {weight}; weights must be >= 0")));
        }
        if *weight > 0.0 {
            sources.push(Source { name: name.to_string(), examples: examples_from(tok, convs)?, weight: *weight });
        }
    }
    Mixture::try_new(sources, batch, seed)
}

/// One named set of examples and its share of the mixture.
#[derive(Debug, Clone)]
pub struct Source {
    pub name: String,
    pub examples: Vec<Example>,
    pub weight: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BatchConfig {
    pub batch_size: usize,
    /// Tokens per example after truncation.
    pub max_len: usize,
    /// Window (in batches) for length bucketing; 1 disables it.
    pub bucket_window: usize,
}

impl Default for BatchConfig {
    fn default() -> Self {
        Self { batch_size: 8, max_len: 256, bucket_window: 1 }
    }
}

/// A mixture of sources: the stream of batches of a training run.
#[derive(Debug, Clone)]
pub struct Mixture {
    pub sources: Vec<Source>,
    pub cfg: BatchConfig,
    pub seed: u64,
}

impl Mixture {
    /// A mixture of `sources`; panics where [`Mixture::try_new`] errs (for callers whose sets
    /// cannot be empty).
    pub fn new(sources: Vec<Source>, cfg: BatchConfig, seed: u64) -> Self {
        Self::try_new(sources, cfg, seed).unwrap_or_else(|e| panic!("{e}"))
    }

    /// A mixture of `sources`, or an error naming the empty set, the bad weight or the zero
    /// batch size (what a user's data or config can get wrong).
    pub fn try_new(sources: Vec<Source>, cfg: BatchConfig, seed: u64) -> Result<Self> {
        let bad = |why: String| Err(Error::Invalid(why));
        if sources.is_empty() {
            return bad("the training mixture is empty: every data set has weight 0".into());
        }
        for s in &sources {
            if s.examples.is_empty() {
                return bad(format!(
                    "the `{}` data set is empty (weight {}): give it data, or set its weight to 0",
                    s.name, s.weight
                ));
            }
            if !(s.weight > 0.0 && s.weight.is_finite()) {
                return bad(format!("the `{}` data set has weight {}; weights must be positive", s.name, s.weight));
            }
        }
        if cfg.batch_size == 0 {
            return bad("batch.batch_size is 0; it must be at least 1".into());
        }
        Ok(Self { sources, cfg, seed })
    }

    /// A single-source stream.
    pub fn single(name: &str, examples: Vec<Example>, cfg: BatchConfig, seed: u64) -> Self {
        Self::new(vec![Source { name: name.into(), examples, weight: 1.0 }], cfg, seed)
    }

    /// A single-source stream, or the error of [`Mixture::try_new`].
    pub fn try_single(name: &str, examples: Vec<Example>, cfg: BatchConfig, seed: u64) -> Result<Self> {
        Self::try_new(vec![Source { name: name.into(), examples, weight: 1.0 }], cfg, seed)
    }

    /// (source, index) of global draw `g`.
    fn draw(&self, g: u64) -> (usize, usize) {
        let total: f64 = self.sources.iter().map(|s| s.weight).sum();
        let mut r = Rng::new(self.seed ^ g.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        r.next_u64();
        let mut u = r.uniform() * total;
        let mut src = self.sources.len() - 1;
        for (i, s) in self.sources.iter().enumerate() {
            if u < s.weight {
                src = i;
                break;
            }
            u -= s.weight;
        }
        let n = self.sources[src].examples.len() as u64;
        let (epoch, pos) = (g / n, g % n);
        (src, self.permutation(src, epoch)[pos as usize])
    }

    fn permutation(&self, src: usize, epoch: u64) -> Vec<usize> {
        let n = self.sources[src].examples.len();
        let mut idx: Vec<usize> = (0..n).collect();
        Rng::derive(self.seed, &format!("perm/{src}/{epoch}")).shuffle(&mut idx);
        idx
    }

    /// The examples of batch `t`.
    pub fn batch(&self, t: usize) -> Vec<&Example> {
        let b = self.cfg.batch_size as u64;
        let w = self.cfg.bucket_window.max(1);
        let pick = |g: u64| {
            let (s, i) = self.draw(g);
            &self.sources[s].examples[i]
        };
        if w == 1 {
            return (0..b).map(|j| pick(t as u64 * b + j)).collect();
        }
        let window = t / w;
        let start = (window * w) as u64 * b;
        let mut items: Vec<(u64, &Example)> = (0..w as u64 * b).map(|j| (start + j, pick(start + j))).collect();
        items.sort_by_key(|(g, e)| (e.ids.len(), *g));
        let mut order: Vec<usize> = (0..w).collect();
        Rng::derive(self.seed, &format!("bucket/{window}")).shuffle(&mut order);
        let k = order[t % w];
        items[k * b as usize..(k + 1) * b as usize].iter().map(|(_, e)| *e).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ex(n: usize, tag: u32) -> Example {
        Example { ids: vec![tag; n], mask: vec![1; n] }
    }

    #[test]
    fn batches_are_a_pure_function_of_seed_and_step_and_follow_the_ratio() {
        let a: Vec<Example> = (0..50).map(|i| ex(3 + i % 7, 1)).collect();
        let b: Vec<Example> = (0..30).map(|i| ex(2 + i % 5, 2)).collect();
        let mk = |seed| {
            Mixture::new(
                vec![
                    Source { name: "a".into(), examples: a.clone(), weight: 0.9 },
                    Source { name: "b".into(), examples: b.clone(), weight: 0.1 },
                ],
                BatchConfig { batch_size: 10, max_len: 64, bucket_window: 4 },
                seed,
            )
        };
        let m = mk(5);
        assert_eq!(m.batch(17), mk(5).batch(17));
        assert_ne!(m.batch(17), mk(6).batch(17));
        let draws: Vec<u32> = (0..400).flat_map(|t| m.batch(t).into_iter().map(|e| e.ids[0])).collect();
        let share_b = draws.iter().filter(|&&x| x == 2).count() as f64 / draws.len() as f64;
        assert!((share_b - 0.1).abs() < 0.02, "share of source b {share_b}");
        // Bucketing: batches within a window have a smaller length spread than random ones.
        let spread = |bt: Vec<&Example>| {
            let l: Vec<usize> = bt.iter().map(|e| e.ids.len()).collect();
            l.iter().max().unwrap() - l.iter().min().unwrap()
        };
        let bucketed: usize = (0..40).map(|t| spread(m.batch(t))).sum();
        let plain = Mixture { cfg: BatchConfig { bucket_window: 1, ..m.cfg.clone() }, ..m.clone() };
        let unbucketed: usize = (0..40).map(|t| spread(plain.batch(t))).sum();
        assert!(bucketed < unbucketed, "bucketed spread {bucketed} >= unbucketed {unbucketed}");
    }

    #[test]
    fn every_example_is_seen_once_per_epoch_of_a_single_source() {
        let a: Vec<Example> = (0..12).map(|i| ex(1, i)).collect();
        let m = Mixture::single("a", a, BatchConfig { batch_size: 4, max_len: 8, bucket_window: 1 }, 3);
        let mut seen: Vec<u32> = (0..3).flat_map(|t| m.batch(t).into_iter().map(|e| e.ids[0])).collect();
        seen.sort();
        assert_eq!(seen, (0..12).collect::<Vec<_>>());
    }
}
