//! The SFT recipe as a model soup (`[align.soup]`): align once per seed, average the aligned
//! models, and optionally interpolate the average back toward the starting model.
//!
//! With seeds s_1..s_n, each member θ_i is a complete run of `[align.train]` with `seed = s_i`
//! (the seed orders the batches), and the released model is
//!
//! ```text
//! θ = b · θ_start + (1 − b) · (1/n) Σ_i θ_i          (b = base_weight, 0 ≤ b < 1)
//! ```
//!
//! The uniform average is the "uniform soup" of Wortsman et al. (ICML 2022, *Model soups*);
//! the interpolation toward the start is WiSE-FT (Wortsman et al., CVPR 2022, *Robust
//! fine-tuning of zero-shot models*), whose mixing coefficient is α = 1 − b. Why here: the SFT
//! recipe's end point moves with the seed by tens of points of over-refusal (docs/results.md
//! sections 18 and 25), and interpolating toward the shipped model trades refusals for
//! compliance smoothly (section 26). Each member runs in `<train dir>/seed-<s>/` with its own
//! checkpoints, so a killed soup resumes member by member; `soup.json` in the train dir records
//! the seeds and weights. `patcher merge` makes the same average from model directories.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::data::Conversation;
use crate::error::{Error, Result};
use crate::model::Llama;
use crate::model::soup::average_models;
use crate::tokenizer::ChatTokenizer;
use crate::train::engine::RunOptions;

use super::AlignConfig;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SoupConfig {
    /// Align once per seed and average the models; empty: one run with `train.seed`.
    pub seeds: Vec<u64>,
    /// The starting model's weight b in the final average (WiSE-FT's 1 − α); 0 = none.
    pub base_weight: f64,
}

impl SoupConfig {
    /// Whether the recipe is a soup (several seeds, or an interpolation toward the start).
    pub fn enabled(&self) -> bool {
        !self.seeds.is_empty() || self.base_weight > 0.0
    }

    pub fn validate(&self, prefix: &str) -> Result<()> {
        if !(self.base_weight.is_finite() && (0.0..1.0).contains(&self.base_weight)) {
            return Err(Error::Invalid(format!(
                "field `{prefix}base_weight`: is {}; it must be at least 0 and below 1",
                self.base_weight
            )));
        }
        let mut seen = std::collections::BTreeSet::new();
        if let Some(s) = self.seeds.iter().find(|s| !seen.insert(**s)) {
            return Err(Error::Invalid(format!("field `{prefix}seeds`: seed {s} is listed twice")));
        }
        Ok(())
    }

    /// The members' seeds: `seeds`, or the run's own seed when none are listed.
    pub fn member_seeds(&self, train_seed: u64) -> Vec<u64> {
        if self.seeds.is_empty() { vec![train_seed] } else { self.seeds.clone() }
    }

    /// Weights of [start, member 1, ..., member n] in the average.
    pub fn weights(&self, members: usize) -> Vec<f64> {
        let mut w = vec![self.base_weight];
        w.extend(std::iter::repeat_n((1.0 - self.base_weight) / members as f64, members));
        w
    }
}

/// The directory of the member with seed `seed` under a train directory.
pub fn member_dir(train_dir: &Path, seed: u64) -> PathBuf {
    train_dir.join(format!("seed-{seed}"))
}

/// What `soup.json` records.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SoupRecord {
    pub seeds: Vec<u64>,
    pub base_weight: f64,
    /// Weights of [start, members...], summing to 1.
    pub weights: Vec<f64>,
}

/// Align `model` once per member seed (each resumable in its own directory) and return the
/// soup. A run stopped early on purpose (`opts.stop_after`) returns that member's model as it
/// stands, with no soup made. A per-step callback cannot follow several runs and is refused.
pub(super) fn align_soup(
    model: &Llama,
    tok: &ChatTokenizer,
    cfg: &AlignConfig,
    refusals: &[Conversation],
    benign: &[Conversation],
    opts: RunOptions,
) -> Result<Llama> {
    let RunOptions { out_dir, progress, name, on_step, stop_after, checkpoint_at } = opts;
    if on_step.is_some() {
        return Err(Error::Invalid(
            "[align.soup] runs several alignments; a per-step callback is not supported".into(),
        ));
    }
    let seeds = cfg.soup.member_seeds(cfg.train.seed);
    let mut members = Vec::with_capacity(seeds.len());
    for (i, &seed) in seeds.iter().enumerate() {
        let mut member = cfg.clone();
        member.train.seed = seed;
        member.soup = SoupConfig::default();
        let opts = RunOptions {
            out_dir: out_dir.as_deref().map(|d| member_dir(d, seed)),
            progress,
            name: format!("{name} seed {seed} ({}/{})", i + 1, seeds.len()),
            on_step: None,
            stop_after,
            checkpoint_at: checkpoint_at.clone(),
        };
        let (m, finished) = super::align_one(model, tok, &member, refusals, benign, opts)?;
        if !finished {
            return Ok(m);
        }
        members.push(m);
    }
    let weights = cfg.soup.weights(members.len());
    let mut all = vec![model];
    all.extend(members.iter());
    let device = model.params[0].device();
    let soup = average_models(&all, &weights, &device)?;
    if let Some(d) = &out_dir {
        let rec = SoupRecord { seeds, base_weight: cfg.soup.base_weight, weights };
        crate::io::write_json(&d.join("soup.json"), &rec)?;
    }
    if progress {
        eprintln!("[align] soup of {} seed(s), starting model weighted {}", members.len(), cfg.soup.base_weight);
    }
    Ok(soup)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_are_checked_and_weights_sum_to_one() {
        assert!(!SoupConfig::default().enabled());
        let c = SoupConfig { seeds: vec![3, 4, 5], base_weight: 0.25 };
        assert!(c.enabled());
        c.validate("align.soup.").unwrap();
        assert_eq!(c.weights(3), vec![0.25, 0.25, 0.25, 0.25]);
        assert_eq!(c.member_seeds(9), vec![3, 4, 5]);
        let single = SoupConfig { seeds: vec![], base_weight: 0.5 };
        assert_eq!(single.member_seeds(9), vec![9]);
        assert_eq!(single.weights(1), vec![0.5, 0.5]);
        let e = SoupConfig { seeds: vec![1, 1], base_weight: 0.0 }.validate("align.soup.").unwrap_err();
        assert!(e.to_string().contains("field `align.soup.seeds`: seed 1 is listed twice"), "{e}");
        for b in [1.0, -0.1, f64::NAN] {
            let e = SoupConfig { seeds: vec![], base_weight: b }.validate("align.soup.").unwrap_err();
            assert!(e.to_string().contains("field `align.soup.base_weight`"), "{e}");
        }
    }
}
