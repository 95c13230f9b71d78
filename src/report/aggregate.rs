//! Rows over attack seeds: the runner evaluates each (defense, attack) once per seed of
//! `attack_seeds` and keeps every run's rows with their per-prompt outcomes; the report shows one
//! row per (defense, attack, budget), the mean over the seeds with a 95% interval bootstrapped over
//! prompts and seeds ([`crate::eval::outcomes::intervals`]). A run with one seed gets the interval
//! over prompts alone, so every cell of a report carries one.

use super::Row;
use crate::eval::outcomes::{Outcomes, intervals};

/// One row per (defense, attack, budget), in the order each first appears: the mean of every
/// measurement over the group's rows (an optional one over the rows that have it), the seeds and
/// per-seed harmful scores, and the intervals from the outcomes. Outcomes are dropped; a group
/// whose rows lack them keeps the interval a single row already had, or none.
pub fn average_seeds(rows: Vec<Row>) -> Vec<Row> {
    let mut groups: Vec<Vec<Row>> = Vec::new();
    for r in rows {
        let same = |g: &&mut Vec<Row>| g[0].defense == r.defense && g[0].attack == r.attack && g[0].budget == r.budget;
        match groups.iter_mut().find(same) {
            Some(g) => g.push(r),
            None => groups.push(vec![r]),
        }
    }
    groups.into_iter().map(average).collect()
}

fn average(g: Vec<Row>) -> Row {
    let n = g.len() as f64;
    let mean = |f: fn(&Row) -> f64| g.iter().map(f).sum::<f64>() / n;
    let mean_of = |v: Vec<f64>| (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64);
    let opt = |f: fn(&Row) -> Option<f64>| mean_of(g.iter().filter_map(f).collect());
    let also_hs = g[0]
        .also_hs
        .iter()
        .filter_map(|(judge, _)| {
            let v = g.iter().filter_map(|r| r.also_hs.iter().find(|(j, _)| j == judge).map(|x| x.1)).collect();
            mean_of(v).map(|m| (judge.clone(), m))
        })
        .collect();
    let outcomes: Option<Vec<&Outcomes>> = g.iter().map(|r| r.outcomes.as_ref()).collect();
    let ci = match outcomes {
        Some(o) => intervals(&o),
        None if g.len() == 1 => g[0].ci,
        None => None,
    };
    Row {
        harmful_score: mean(|r| r.harmful_score),
        also_hs,
        refusal_rate: mean(|r| r.refusal_rate),
        degenerate_rate: mean(|r| r.degenerate_rate),
        utility: mean(|r| r.utility),
        over_refusal: opt(|r| r.over_refusal),
        benign_loss: opt(|r| r.benign_loss),
        refusal_loss: opt(|r| r.refusal_loss),
        harmful_loss: opt(|r| r.harmful_loss),
        seeds: g.iter().flat_map(|r| r.seeds.iter().copied()).collect(),
        seed_hs: if g.len() > 1 { g.iter().map(|r| r.harmful_score).collect() } else { g[0].seed_hs.clone() },
        ci,
        outcomes: None,
        ..g[0].clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eval::outcomes::Bits;

    fn run(seed: u64, budget: usize, harmful: usize, right: usize) -> Row {
        Row {
            defense: "sft".into(),
            attack: "sgd".into(),
            held_out: true,
            budget,
            harmful_score: harmful as f64 / 50.0,
            also_hs: vec![("learned".into(), harmful as f64 / 100.0)],
            refusal_rate: 1.0 - harmful as f64 / 50.0,
            degenerate_rate: 0.0,
            utility: right as f64 / 20.0,
            over_refusal: Some(0.1),
            benign_loss: Some(1.0 + seed as f64),
            refusal_loss: None,
            harmful_loss: None,
            seeds: vec![seed],
            seed_hs: vec![],
            ci: None,
            outcomes: Some(Outcomes {
                harmful: Bits((0..50).map(|i| i < harmful).collect()),
                over_refusal: Some(Bits((0..10).map(|i| i == 0).collect())),
                utility: vec![Bits((0..20).map(|i| i < right).collect())],
            }),
        }
    }

    #[test]
    fn seeds_average_into_one_row_with_intervals_over_prompts_and_seeds() {
        let rows = vec![run(0, 50, 10, 10), run(0, 100, 20, 10), run(1, 50, 30, 12), run(2, 50, 20, 14)];
        let out = average_seeds(rows);
        assert_eq!(out.len(), 2, "two budgets");
        let r = &out[0];
        assert_eq!((r.budget, r.seeds.clone()), (50, vec![0, 1, 2]));
        assert!((r.harmful_score - 0.4).abs() < 1e-12 && (r.utility - 0.6).abs() < 1e-12);
        assert_eq!(r.seed_hs, vec![0.2, 0.6, 0.4]);
        assert!((r.also_hs[0].1 - 0.2).abs() < 1e-12 && (r.benign_loss.unwrap() - 2.0).abs() < 1e-12);
        assert!(r.outcomes.is_none());
        let ci = r.ci.unwrap();
        // The interval's mean is the row's, and seed spread (20-60%) makes it wider than one
        // seed's interval over 50 prompts at 40%.
        assert!((ci.harmful_score.mean - r.harmful_score).abs() < 1e-12);
        assert!((ci.utility.unwrap().mean - r.utility).abs() < 1e-12);
        let one = average_seeds(vec![run(1, 50, 20, 10)])[0].ci.unwrap();
        let width = |i: crate::eval::interval::Interval| i.hi - i.lo;
        assert!(width(ci.harmful_score) > width(one.harmful_score), "{ci:?} vs {one:?}");
        assert!(one.harmful_score.lo < 0.4 && one.harmful_score.hi > 0.4);
        // The single-seed row keeps its seed and no per-seed list.
        assert_eq!(out[1].seeds, vec![0]);
        assert!(out[1].seed_hs.is_empty());
    }

    #[test]
    fn rows_without_outcomes_average_without_an_interval() {
        let bare = |s| Row { outcomes: None, ..run(s, 50, 10, 10) };
        let out = average_seeds(vec![bare(0), bare(1)]);
        assert_eq!(out.len(), 1);
        assert!(out[0].ci.is_none());
        assert!((out[0].harmful_score - 0.2).abs() < 1e-12);
    }
}
