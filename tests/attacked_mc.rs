//! `[eval] attacked_mc = false` (issue 16's CPU-sized run): an attack's evaluations skip
//! multiple choice, the unattacked model's does not, and nothing else of the evaluation changes.
//! On the tiny tier with a suite whose utility is multiple choice (the synthetic suite's
//! exact-match tasks removed, a small four-option set added), the same attack is run with
//! `attacked_mc` true and false.

mod common;

use burn::prelude::*;
use patcher::attack::AttackConfig;
use patcher::data::presets::McItem;
use patcher::eval::keyword::KeywordJudge;
use patcher::eval::mc::McFormat;
use patcher::eval::suite::{EvalConfig, EvalReport, SuiteData};
use patcher::experiment::pipeline::{AttackEval, attack_and_evaluate};
use patcher::io::hf::load_model;
use patcher::tokenizer::ChatTokenizer;
use patcher::train::batches::BatchConfig;
use patcher::train::engine::TrainConfig;

const BUDGETS: [usize; 2] = [0, 4];

/// Twelve four-option questions; which is right does not matter here.
fn mc_items() -> Vec<McItem> {
    let colours = ["red", "blue", "green", "yellow"];
    (0..12)
        .map(|i| McItem {
            question: format!("Which colour is number {i}?"),
            choices: colours.iter().map(|c| c.to_string()).collect(),
            answer: i % 4,
        })
        .collect()
}

/// Every budget's evaluation of the same attack, with `attacked_mc` as given.
fn evaluations(attacked_mc: bool) -> Vec<(usize, EvalReport)> {
    let dir = common::tiny_model_dir();
    let model = load_model(&dir, &Device::flex()).unwrap();
    let tok = ChatTokenizer::from_dir(&dir).unwrap();
    let w = common::world();
    let suite = SuiteData { exact: vec![], mc: vec![("colours".into(), mc_items())], ..SuiteData::synth(&w) };
    let eval = EvalConfig {
        max_new_tokens: 12,
        batch_size: 16,
        limit: 16,
        max_len: 96,
        mc_formats: vec![McFormat::Cloze, McFormat::Options],
        attacked_mc,
        ..Default::default()
    };
    let batch = BatchConfig { batch_size: 8, max_len: 64, bucket_window: 1 };
    let attack =
        AttackConfig { train: TrainConfig { steps: 4, lr: 5e-4, batch, ..Default::default() }, ..Default::default() };
    let ae = AttackEval {
        attack: &attack,
        harmful: &w.harm_train,
        benign: &w.benign_train,
        budgets: &BUDGETS,
        suite: &suite,
        judge: &KeywordJudge,
        eval: &eval,
        progress: false,
        partial: None,
    };
    let mut out = vec![];
    attack_and_evaluate(&model, &tok, &ae, &|_| true, &mut |b, e| {
        out.push((b, e.expect("every budget is evaluated").0));
        Ok(())
    })
    .unwrap();
    out
}

#[test]
fn attacked_models_skip_multiple_choice_and_nothing_else_changes() {
    let with = evaluations(true);
    let without = evaluations(false);
    assert_eq!(with.iter().map(|p| p.0).collect::<Vec<_>>(), BUDGETS);
    assert_eq!(without.iter().map(|p| p.0).collect::<Vec<_>>(), BUDGETS);
    let entries = ["colours cloze", "colours"];
    for ((b, w), (_, wo)) in with.iter().zip(&without) {
        let names = |r: &EvalReport| r.mc.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>();
        assert_eq!(names(w), entries, "budget {b}: attacked_mc = true scores every format");
        assert!(w.utility.is_finite() && !w.mc_skipped);
        if *b == 0 {
            // The unattacked model is scored in full either way, to the same numbers.
            assert_eq!(names(wo), entries);
            assert!(!wo.mc_skipped);
            assert!((wo.utility - w.utility).abs() < 1e-12, "{} vs {}", wo.utility, w.utility);
        } else {
            assert!(wo.mc.is_empty() && wo.mc_items.is_empty(), "budget {b}: {:?}", wo.mc);
            assert!(wo.mc_skipped && wo.utility.is_nan() && wo.table_utility().is_nan());
            let outcomes = wo.outcomes.as_ref().expect("outcomes");
            assert!(outcomes.utility.is_empty(), "no utility outcomes, so no utility interval");
        }
        // Generation, judging and losses are the same evaluation.
        assert_eq!(wo.safety.harmful_score, w.safety.harmful_score, "budget {b}");
        assert_eq!(wo.over_refusal, w.over_refusal, "budget {b}");
        for (x, y) in [(wo.benign_loss, w.benign_loss), (wo.refusal_loss, w.refusal_loss)] {
            let (x, y) = (x.expect("loss"), y.expect("loss"));
            assert!((x - y).abs() < 1e-9 * y.abs().max(1.0), "budget {b}: {x} vs {y}");
        }
    }

    // The skipped utility is written as null and read back as NaN.
    let attacked = &without[1].1;
    let json = serde_json::to_string(attacked).unwrap();
    assert!(json.contains("\"utility\":null") && json.contains("\"mc_skipped\":true"), "{json}");
    let back: EvalReport = serde_json::from_str(&json).unwrap();
    assert!(back.utility.is_nan() && back.mc_skipped);
    // A report that scored multiple choice does not write the flag.
    assert!(!serde_json::to_string(&with[1].1).unwrap().contains("mc_skipped"));
}
