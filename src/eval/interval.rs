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
    let groups: Vec<&Vec<bool>> = groups.iter().filter(|g| !g.is_empty()).collect();
    let share = |g: &[bool]| g.iter().filter(|&&v| v).count() as f64 / g.len() as f64;
    if groups.is_empty() {
        return Interval { mean: f64::NAN, lo: f64::NAN, hi: f64::NAN };
    }
    let mean = groups.iter().map(|g| share(g)).sum::<f64>() / groups.len() as f64;
    let mut rng = Rng::derive(seed, "bootstrap");
    let mut stats = Vec::with_capacity(reps.max(1));
    for _ in 0..reps.max(1) {
        let mut total = 0.0;
        for _ in 0..groups.len() {
            let g = groups[rng.below(groups.len())];
            let hits = (0..g.len()).filter(|_| g[rng.below(g.len())]).count();
            total += hits as f64 / g.len() as f64;
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
}
