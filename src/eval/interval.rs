//! 95% intervals for a share (HS, refusal rate, accuracy) by the percentile bootstrap (Efron &
//! Tibshirani, *An Introduction to the Bootstrap*, 1993, ch. 13), over prompts and, when there
//! are several, over seeds: a two-stage (cluster) bootstrap that first resamples the seeds and
//! then the prompts within each, so that seed-to-seed spread widens the interval.

use serde::{Deserialize, Serialize};

use crate::rng::Rng;

/// A point estimate with its interval.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Interval {
    pub mean: f64,
    pub lo: f64,
    pub hi: f64,
}

/// Percentile-bootstrap 95% interval of the mean share over `groups` (one outcome vector per
/// seed; a single group is the plain bootstrap over prompts). `reps` resamples, seeded.
pub fn bootstrap_share(groups: &[Vec<bool>], reps: usize, seed: u64) -> Interval {
    let strata: Vec<Vec<&[bool]>> = groups.iter().map(|g| vec![g.as_slice()]).collect();
    bootstrap_strata(&strata, reps, seed)
}

/// Percentile-bootstrap 95% interval of a statistic that averages strata within a seed and seeds
/// within the whole: `groups[seed][stratum]` holds one outcome per item. The statistic is the
/// mean over seeds of the mean over strata of each stratum's share (a headline utility that
/// averages ARC-Easy and MMLU accuracies is two strata). Each resample draws the seeds with
/// replacement, then the items of every stratum within each drawn seed (a stratified cluster
/// bootstrap). Empty strata and seeds without strata are left out; none left gives NaN.
pub fn bootstrap_strata(groups: &[Vec<&[bool]>], reps: usize, seed: u64) -> Interval {
    let groups: Vec<Vec<&[bool]>> = groups
        .iter()
        .map(|g| g.iter().copied().filter(|s| !s.is_empty()).collect::<Vec<_>>())
        .filter(|g| !g.is_empty())
        .collect();
    if groups.is_empty() {
        return Interval { mean: f64::NAN, lo: f64::NAN, hi: f64::NAN };
    }
    let share = |s: &[bool]| s.iter().filter(|&&v| v).count() as f64 / s.len() as f64;
    let of_seed = |g: &[&[bool]]| g.iter().map(|s| share(s)).sum::<f64>() / g.len() as f64;
    let mean = groups.iter().map(|g| of_seed(g)).sum::<f64>() / groups.len() as f64;
    let mut rng = Rng::derive(seed, "bootstrap");
    let mut stats = Vec::with_capacity(reps.max(1));
    for _ in 0..reps.max(1) {
        let mut total = 0.0;
        for _ in 0..groups.len() {
            let g = &groups[rng.below(groups.len())];
            let mut within = 0.0;
            for s in g {
                let hits = (0..s.len()).filter(|_| s[rng.below(s.len())]).count();
                within += hits as f64 / s.len() as f64;
            }
            total += within / g.len() as f64;
        }
        stats.push(total / groups.len() as f64);
    }
    stats.sort_by(f64::total_cmp);
    let at = |q: f64| stats[((q * (stats.len() - 1) as f64).round() as usize).min(stats.len() - 1)];
    Interval { mean, lo: at(0.025), hi: at(0.975) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_group_matches_the_normal_approximation() {
        // 2,000 prompts, 600 harmful: the closed form is 0.3 +- 1.96 sqrt(0.3 x 0.7 / 2000).
        let g: Vec<bool> = (0..2000).map(|i| i % 10 < 3).collect();
        let iv = bootstrap_share(&[g], 4000, 7);
        let half = 1.96 * (0.3f64 * 0.7 / 2000.0).sqrt();
        assert!((iv.mean - 0.3).abs() < 1e-12);
        let (dlo, dhi) = ((iv.lo - (0.3 - half)).abs(), (iv.hi - (0.3 + half)).abs());
        assert!(dlo < 0.003 && dhi < 0.003, "{iv:?} vs 0.3 +- {half:.4} (off by {dlo:.4}, {dhi:.4})");
    }

    #[test]
    fn spread_between_seeds_widens_the_interval() {
        let same: Vec<Vec<bool>> = (0..4).map(|_| (0..200).map(|i| i % 2 == 0).collect()).collect();
        let apart: Vec<Vec<bool>> =
            [0.1, 0.9, 0.2, 0.8].iter().map(|&p| (0..200).map(|i| (i as f64) < p * 200.0).collect()).collect();
        let (a, b) = (bootstrap_share(&same, 2000, 1), bootstrap_share(&apart, 2000, 1));
        assert!((a.mean - 0.5).abs() < 1e-12 && (b.mean - 0.5).abs() < 1e-12);
        assert!(b.hi - b.lo > 4.0 * (a.hi - a.lo), "{a:?} {b:?}");
        // All-or-nothing outcomes have a zero-width interval; no groups give NaN.
        let iv = bootstrap_share(&[vec![true; 50]], 100, 0);
        assert_eq!((iv.lo, iv.hi), (1.0, 1.0));
        assert!(bootstrap_share(&[], 10, 0).mean.is_nan());
    }

    #[test]
    fn strata_match_the_closed_form_of_a_mean_of_two_shares() {
        // Two sets of 800 and 400 items at 60% and 25%: the statistic is their plain mean, 0.425,
        // with standard error sqrt(p1 q1 / n1 + p2 q2 / n2) / 2.
        let a: Vec<bool> = (0..800).map(|i| i % 5 < 3).collect();
        let b: Vec<bool> = (0..400).map(|i| i % 4 == 0).collect();
        let iv = bootstrap_strata(&[vec![&a, &b]], 4000, 3);
        let se = (0.6f64 * 0.4 / 800.0 + 0.25 * 0.75 / 400.0).sqrt() / 2.0;
        assert!((iv.mean - 0.425).abs() < 1e-12, "{iv:?}");
        let (dlo, dhi) = ((iv.lo - (0.425 - 1.96 * se)).abs(), (iv.hi - (0.425 + 1.96 * se)).abs());
        assert!(dlo < 0.003 && dhi < 0.003, "{iv:?} vs 0.425 +- {:.4} (off by {dlo:.4}, {dhi:.4})", 1.96 * se);
        // One stratum is the plain bootstrap, draw for draw.
        assert_eq!(bootstrap_strata(&[vec![&a]], 500, 9), bootstrap_share(std::slice::from_ref(&a), 500, 9));
    }
}
