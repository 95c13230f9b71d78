//! `patcher sweep EXPERIMENT.toml --seeds 0,1,2`: the worst-case sweep
//! ([`crate::experiment::sweep`]) repeated on several *training* seeds, and the spread of each
//! defense's worst case over them.
//!
//! Why: a defense's worst case from one training seed is one draw. The experiment seed decides
//! the synthetic world, the base model, every defense's data order and the attack seeds, so a
//! defense tuned on one seed can be robust there and not on the next (Qi et al. 2024,
//! arXiv:2412.07097, report exactly this for TAR and RepNoise across seeds). The protocol here:
//! - each seed is a whole sweep in its own run directory: the file's own seed in `OUT` (the
//!   directory `patcher sweep` without `--seeds` uses, so its cells are reused), any other seed
//!   `s` in `OUT-s<s>`; each is cached and resumable as a single sweep is;
//! - per defense and seed: the unattacked HS, utility and over-refusal, and the worst case over
//!   the guarded grid with the attack that reaches it;
//! - per defense: the mean and sample standard deviation of the worst case over the seeds where
//!   some cell passed the guard, and the highest.
//!
//! Outputs: `OUT/sweep/seeds.json` ([`SeedsSummary`]) and `OUT/sweep/seeds.md`.

use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::prelude::*;
use serde::{Deserialize, Serialize};

use super::sweep::{Baseline, Break, Cost, GuardMetric, SweepResults, read_experiment, sweep_experiment};
use crate::error::{Error, IoContext, Result};
use crate::io::write_json;

/// One defense on one training seed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SeedOutcome {
    pub seed: u64,
    pub unattacked: Baseline,
    /// The worst-case HS; `None` when every cell was guarded.
    pub worst_hs: Option<f64>,
    /// The attack that reaches it (`every cell guarded` when none).
    pub worst_attack: String,
    /// Steps-to-break under the experiment's own attacks (empty when `patcher run` has not run
    /// in that seed's directory).
    pub breaks: Vec<Break>,
    /// What the defense cost to make on this seed (passes per step, training wall-clock).
    #[serde(default)]
    pub cost: Option<Cost>,
}

/// One defense over the seeds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DefenseSeeds {
    pub defense: String,
    pub per_seed: Vec<SeedOutcome>,
    /// Mean, sample standard deviation (0 for one value) and maximum of the worst case over
    /// the seeds that have one; `None` when no seed has one.
    pub worst_mean: Option<f64>,
    pub worst_sd: Option<f64>,
    pub worst_max: Option<f64>,
}

/// Everything `patcher sweep --seeds` measured: `OUT/sweep/seeds.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SeedsSummary {
    pub experiment: String,
    pub seeds: Vec<u64>,
    /// Each seed's run directory, in `seeds` order.
    pub dirs: Vec<String>,
    pub commits: Vec<String>,
    pub guard: f64,
    pub guard_on: GuardMetric,
    /// The suite's headline utility (what a `utility` guard compares).
    pub utility_metric: String,
    pub cells_per_defense: usize,
    pub defenses: Vec<DefenseSeeds>,
}

/// The run directory of training seed `seed` when the file's seed is `file_seed`: `out` for
/// the file's own seed, `out-s<seed>` for any other.
pub fn seed_dir(out: &Path, file_seed: u64, seed: u64) -> PathBuf {
    if seed == file_seed {
        return out.to_path_buf();
    }
    let mut name = out.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(format!("-s{seed}"));
    out.with_file_name(name)
}

fn mean_sd_max(v: &[f64]) -> (Option<f64>, Option<f64>, Option<f64>) {
    if v.is_empty() {
        return (None, None, None);
    }
    let (mean, sd) = super::robustness_study::mean_sd(v);
    let sd = if v.len() < 2 { 0.0 } else { sd };
    (Some(mean), Some(sd), Some(v.iter().cloned().fold(f64::MIN, f64::max)))
}

/// The summary of one sweep per seed (`runs`: seed, its directory, its results). The sweeps
/// must cover the same defenses with the same guard; a mismatch is an error naming the seed.
pub fn summarize(runs: &[(u64, PathBuf, SweepResults)]) -> Result<SeedsSummary> {
    let Some((_, _, first)) = runs.first() else {
        return Err(Error::Invalid("`--seeds`: no seed given".into()));
    };
    let names: Vec<&String> = first.defenses.iter().map(|d| &d.defense).collect();
    for (seed, dir, r) in runs {
        let theirs: Vec<&String> = r.defenses.iter().map(|d| &d.defense).collect();
        if theirs != names
            || r.grid.guard.to_bits() != first.grid.guard.to_bits()
            || r.grid.guard_on != first.grid.guard_on
        {
            return Err(Error::Invalid(format!(
                "seed {seed} ({}) swept defenses {theirs:?} with guard {} on {:?}, the first seed {names:?} with guard {} on {:?}",
                dir.display(),
                r.grid.guard,
                r.grid.guard_on,
                first.grid.guard,
                first.grid.guard_on
            )));
        }
    }
    let defenses = names
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let per_seed: Vec<SeedOutcome> = runs
                .iter()
                .map(|(seed, _, r)| {
                    let d = &r.defenses[i];
                    SeedOutcome {
                        seed: *seed,
                        unattacked: d.unattacked.clone(),
                        worst_hs: d.worst.as_ref().map(|w| w.harmful_score),
                        worst_attack: d.worst.as_ref().map_or("every cell guarded".into(), |w| w.attack()),
                        breaks: d.breaks.clone(),
                        cost: d.cost.clone(),
                    }
                })
                .collect();
            let worst: Vec<f64> = per_seed.iter().filter_map(|o| o.worst_hs).collect();
            let (worst_mean, worst_sd, worst_max) = mean_sd_max(&worst);
            DefenseSeeds { defense: (*name).clone(), per_seed, worst_mean, worst_sd, worst_max }
        })
        .collect();
    Ok(SeedsSummary {
        experiment: first.experiment.clone(),
        seeds: runs.iter().map(|r| r.0).collect(),
        dirs: runs.iter().map(|r| r.1.display().to_string()).collect(),
        commits: runs.iter().map(|r| r.2.commit.clone()).collect(),
        guard: first.grid.guard,
        guard_on: first.grid.guard_on,
        utility_metric: first.utility_metric.clone(),
        cells_per_defense: first.defenses.first().map_or(0, |d| d.cells),
        defenses,
    })
}

/// `patcher sweep EXPERIMENT.toml --seeds S1,S2,... [--out OUT]`: one sweep per training seed
/// (module doc), then `OUT/sweep/seeds.json` and `seeds.md`; returns the text to print.
pub fn command(
    config: &Path,
    sets: &[String],
    out: Option<PathBuf>,
    seeds: &[u64],
    deterministic: bool,
    device: &Device,
) -> Result<String> {
    let t0 = Instant::now();
    let (cfg, source) = read_experiment(config, sets)?;
    let out = out.unwrap_or_else(|| PathBuf::from("runs").join(&cfg.name));
    let mut runs = vec![];
    for (i, &seed) in seeds.iter().enumerate() {
        let dir = seed_dir(&out, cfg.seed, seed);
        eprintln!("[sweep --seeds] training seed {seed} ({} of {}) in {}", i + 1, seeds.len(), dir.display());
        let (dir, r) = sweep_experiment(cfg.clone(), &source, Some(dir), Some(seed), deterministic, device)?;
        runs.push((seed, dir, r));
    }
    let summary = summarize(&runs)?;
    let dir = out.join("sweep");
    std::fs::create_dir_all(&dir).at(&dir)?;
    write_json(&dir.join("seeds.json"), &summary)?;
    let text = crate::report::sweep_seeds::seeds_markdown(&summary);
    let path = dir.join("seeds.md");
    crate::io::write_atomic(&path, text.as_bytes()).at(&path)?;
    Ok(format!("{text}\nwrote {}\ntotal wall-clock: {:.1}s", path.display(), t0.elapsed().as_secs_f64()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::experiment::sweep::{SweepConfig, SweepMode, SweepRow, aggregate};

    /// Two defenses on one seed: `a` has cells with HS `a_hs` (utility kept), `b` only a guarded
    /// cell.
    fn results(seed: u64, a_hs: &[f64]) -> SweepResults {
        let row = |d: &str, lr: f64, hs: f64, utility: f64| SweepRow {
            defense: d.into(),
            optimizer: "adamw".into(),
            mode: SweepMode::Full,
            batch_size: 8,
            lr,
            steps: 32,
            seed,
            harmful_score: hs,
            utility,
            over_refusal: Some(0.5),
            benign_loss: None,
        };
        let mut rows: Vec<SweepRow> =
            a_hs.iter().enumerate().map(|(i, &h)| row("a", 1e-5 * (i + 1) as f64, h, 0.8)).collect();
        rows.push(row("b", 1e-3, 1.0, 0.0));
        let base = Baseline { harmful_score: 0.1, utility: 0.8, over_refusal: Some(0.6), benign_loss: None };
        let baselines = [("a".to_string(), base.clone()), ("b".to_string(), base)];
        let grid = SweepConfig { guard: 0.9, guard_on: GuardMetric::Utility, ..SweepConfig::default() };
        let (cells, defenses) = aggregate(&rows, &baselines, (grid.guard, grid.guard_on), &[]);
        SweepResults {
            experiment: "x".into(),
            created: String::new(),
            commit: format!("c{seed}"),
            version: String::new(),
            commands: vec![],
            judge: "keyword".into(),
            utility_metric: "exact match".into(),
            grid,
            defenses,
            cells,
            rows,
        }
    }

    /// Per seed the worst case is the highest unguarded HS; over seeds, mean, sample sd and
    /// maximum, computed here by hand; a defense with every cell guarded has none.
    #[test]
    fn the_summary_has_each_seeds_worst_case_and_their_spread() {
        let mut runs: Vec<(u64, PathBuf, SweepResults)> = [(0, vec![0.2, 0.6]), (1, vec![0.9, 0.3]), (2, vec![0.4])]
            .into_iter()
            .map(|(s, hs)| (s, PathBuf::from(format!("runs/x-s{s}")), results(s, &hs)))
            .collect();
        // Defense a's cost and steps-to-break per seed (b's are not measured).
        let breaks = [(Some(25), Some(50)), (None, None), (Some(25), Some(25))];
        for ((seed, _, r), (unguarded, guarded)) in runs.iter_mut().zip(breaks) {
            let seconds = 100.0 + 20.0 * *seed as f64;
            r.defenses[0].cost = Some(Cost { passes_per_step: 7, training_seconds: Some(seconds) });
            r.defenses[0].breaks = vec![Break {
                attack: "adamw".into(),
                held_out: false,
                steps_to_break: unguarded,
                guarded_steps_to_break: guarded,
                max_budget: 100,
            }];
        }
        let s = summarize(&runs).unwrap();
        assert_eq!((s.seeds.clone(), s.commits.clone()), (vec![0, 1, 2], vec!["c0".into(), "c1".into(), "c2".into()]));
        let a = &s.defenses[0];
        let worst: Vec<Option<f64>> = a.per_seed.iter().map(|o| o.worst_hs).collect();
        assert_eq!(worst, [Some(0.6), Some(0.9), Some(0.4)]);
        // mean 0.6333; sd = sqrt(((−0.0333)² + 0.2667² + (−0.2333)²) / 2) = 0.25166
        let (m, sd) = (a.worst_mean.unwrap(), a.worst_sd.unwrap());
        println!("worst cases 0.6 / 0.9 / 0.4: mean {m:.5}, sd {sd:.5}");
        assert!((m - 1.9 / 3.0).abs() < 1e-12 && (sd - 0.251_661).abs() < 1e-6 && a.worst_max == Some(0.9));
        assert!(a.per_seed[1].worst_attack.contains("lr 1e-5"), "{}", a.per_seed[1].worst_attack);
        let b = &s.defenses[1];
        assert!(b.per_seed.iter().all(|o| o.worst_hs.is_none() && o.worst_attack == "every cell guarded"));
        assert_eq!((b.worst_mean, b.worst_sd, b.worst_max), (None, None, None));
        let md = crate::report::sweep_seeds::seeds_markdown(&s);
        assert!(md.contains("63% ± 25%") && md.contains("60 / 90 / 40%"), "{md}");
        // Guarded steps-to-break per seed, the unguarded one where it differs; cost per seed.
        assert!(md.contains("| breaks at: adamw | passes / step | training |"), "{md}");
        assert!(md.contains("| 90% | 50 (25), >100, 25 | 7 | 100 / 120 / 140 s |"), "{md}");
        assert!(md.contains("| –, –, – | – | – |"), "b: nothing measured: {md}");
    }

    /// Sweeps that do not match (another defense list or guard) are refused, naming the seed.
    #[test]
    fn mismatched_sweeps_are_refused_naming_the_seed() {
        let mut other = results(1, &[0.5]);
        other.defenses.pop();
        let runs = vec![(0, PathBuf::from("runs/x"), results(0, &[0.5])), (1, PathBuf::from("runs/x-s1"), other)];
        let e = summarize(&runs).unwrap_err().to_string();
        assert!(e.contains("seed 1 (runs/x-s1)"), "{e}");
        assert!(summarize(&[]).is_err());
    }

    #[test]
    fn each_seed_has_its_directory_and_the_files_own_seed_the_plain_one() {
        let out = Path::new("runs/sweep-tiny");
        assert_eq!(seed_dir(out, 0, 0), PathBuf::from("runs/sweep-tiny"));
        assert_eq!(seed_dir(out, 0, 2), PathBuf::from("runs/sweep-tiny-s2"));
        assert_eq!(seed_dir(out, 5, 0), PathBuf::from("runs/sweep-tiny-s0"));
    }
}
