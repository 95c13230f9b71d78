//! Per-item outcomes behind an evaluation's shares: which harmful prompts were answered
//! harmfully, which safe prompts were refused, which utility items were right. The runner keeps
//! them in every `evals/*.json` row so that a table cell's 95% interval can be bootstrapped over
//! prompts and over attack seeds ([`crate::eval::interval::bootstrap_strata`]), and two models
//! can be compared on the same prompts.

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::eval::interval::{Interval, bootstrap_strata};

/// Bootstrap resamples behind every interval of a report.
pub const BOOTSTRAP_REPS: usize = 2000;

/// A vector of yes/no outcomes, written in JSON as a string of `0` and `1` (200 prompts take
/// 202 bytes instead of a 1 KB array).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Bits(pub Vec<bool>);

impl Bits {
    pub fn share(&self) -> f64 {
        self.0.iter().filter(|&&b| b).count() as f64 / self.0.len().max(1) as f64
    }
}

impl Serialize for Bits {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0.iter().map(|&b| if b { '1' } else { '0' }).collect::<String>())
    }
}

impl<'de> Deserialize<'de> for Bits {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.chars()
            .enumerate()
            .map(|(i, c)| match c {
                '0' => Ok(false),
                '1' => Ok(true),
                _ => Err(serde::de::Error::custom(format!("outcome {i} is `{c}`, not 0 or 1"))),
            })
            .collect::<Result<Vec<bool>, _>>()
            .map(Bits)
    }
}

/// The outcomes of one evaluation.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Outcomes {
    /// Per harmful prompt: judged harmful (by the run's judge).
    pub harmful: Bits,
    /// Per over-refusal prompt: refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub over_refusal: Option<Bits>,
    /// The headline utility's strata, per item: right. One stratum for exact match, one per MC
    /// set for an MC headline (whose utility is the mean of the sets' accuracies).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub utility: Vec<Bits>,
}

/// The 95% intervals of a table row, over prompts and (when several) attack seeds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RowIntervals {
    pub harmful_score: Interval,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub over_refusal: Option<Interval>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub utility: Option<Interval>,
}

/// The intervals of the mean over `seeds` (one [`Outcomes`] per seed; one for a single run).
/// A part is left out when some seed lacks it or the seeds disagree on its strata.
pub fn intervals(seeds: &[&Outcomes]) -> Option<RowIntervals> {
    if seeds.is_empty() {
        return None;
    }
    let iv = |groups: Vec<Vec<&[bool]>>| bootstrap_strata(&groups, BOOTSTRAP_REPS, 0);
    let harmful_score = iv(seeds.iter().map(|o| vec![o.harmful.0.as_slice()]).collect());
    let over_refusal =
        seeds.iter().map(|o| o.over_refusal.as_ref().map(|b| vec![b.0.as_slice()])).collect::<Option<Vec<_>>>().map(iv);
    let strata = seeds[0].utility.len();
    let utility = (strata > 0 && seeds.iter().all(|o| o.utility.len() == strata))
        .then(|| iv(seeds.iter().map(|o| o.utility.iter().map(|b| b.0.as_slice()).collect()).collect()));
    Some(RowIntervals { harmful_score, over_refusal, utility })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bits_read_back_and_name_a_bad_character() {
        let b = Bits(vec![true, false, false, true]);
        let json = serde_json::to_string(&b).unwrap();
        assert_eq!(json, "\"1001\"");
        assert_eq!(serde_json::from_str::<Bits>(&json).unwrap(), b);
        let e = serde_json::from_str::<Bits>("\"10x1\"").unwrap_err().to_string();
        assert!(e.contains("outcome 2 is `x`"), "{e}");
        assert!((b.share() - 0.5).abs() < 1e-12);
    }

    #[test]
    fn intervals_cover_each_part_and_skip_what_a_seed_lacks() {
        let o = |h: usize, u: usize, over: bool| Outcomes {
            harmful: Bits((0..100).map(|i| i < h).collect()),
            over_refusal: over.then(|| Bits((0..50).map(|i| i < 5).collect())),
            utility: vec![Bits((0..40).map(|i| i < u).collect()), Bits((0..60).map(|i| i < 30).collect())],
        };
        let (a, b) = (o(20, 10, true), o(40, 30, true));
        let iv = intervals(&[&a, &b]).unwrap();
        // Means: HS (0.2 + 0.4) / 2; utility ((0.25 + 0.5) / 2 + (0.75 + 0.5) / 2) / 2.
        assert!((iv.harmful_score.mean - 0.3).abs() < 1e-12 && (iv.utility.unwrap().mean - 0.5).abs() < 1e-12);
        assert!(iv.harmful_score.lo < 0.3 && iv.harmful_score.hi > 0.3, "{iv:?}");
        assert!((iv.over_refusal.unwrap().mean - 0.1).abs() < 1e-12);
        let no_over = intervals(&[&a, &o(30, 10, false)]).unwrap();
        assert!(no_over.over_refusal.is_none() && no_over.utility.is_some());
        assert!(intervals(&[]).is_none());
    }
}
