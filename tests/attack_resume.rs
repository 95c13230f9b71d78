//! A killed attack resumes mid-way (issue 16, item 2): with a `partial` directory the attack
//! checkpoints at every evaluation budget and saves each evaluation, so a rerun restarts from the
//! last checkpoint, replays the saved evaluations, and ends at the uninterrupted run's weights and
//! figures. Here the kill is the attack's `stop_after` (the harmful phase stops without a final
//! checkpoint, as a killed process does), on the tiny tier with a benign-first phase.

mod common;

use std::cell::Cell;
use std::path::Path;

use burn::prelude::*;
use patcher::attack::AttackConfig;
use patcher::data::synth::SynthWorld;
use patcher::eval::keyword::KeywordJudge;
use patcher::eval::suite::{EvalConfig, EvalReport, SuiteData};
use patcher::experiment::pipeline::{AttackEval, PartialAttack, attack_and_evaluate, attack_and_evaluate_until};
use patcher::io::hf::load_model;
use patcher::model::Llama;
use patcher::testing::max_diff;
use patcher::tokenizer::ChatTokenizer;
use patcher::train::batches::BatchConfig;
use patcher::train::engine::TrainConfig;

const BUDGETS: [usize; 4] = [0, 4, 8, 12];

/// The figures of one evaluation that a resumed run must reproduce.
fn figures(r: &EvalReport) -> Vec<f64> {
    let loss = |l: Option<f64>| l.expect("the tiny suite measures its losses");
    vec![
        r.safety.harmful_score,
        r.safety.refusal_rate,
        r.utility,
        loss(r.benign_loss),
        loss(r.refusal_loss),
        loss(r.harmful_loss),
    ]
}

/// Steps logged in a run's `metrics.jsonl`, in order.
fn logged_steps(path: &Path) -> Vec<u64> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.lines().map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["step"].as_u64().unwrap()).collect()
}

fn latest_step(dir: &Path) -> u64 {
    let text = std::fs::read_to_string(dir.join("latest.json")).expect("latest.json");
    serde_json::from_str::<serde_json::Value>(&text).unwrap()["step"].as_u64().unwrap()
}

/// The cached tiny model, its tokenizer, the synthetic world and its suite, an evaluation of
/// `limit` prompts per set at `new_tokens` tokens, and a small attack batch.
fn fixture(limit: usize, new_tokens: usize) -> (Llama, ChatTokenizer, SynthWorld, SuiteData, EvalConfig, BatchConfig) {
    let dir = common::tiny_model_dir();
    let model = load_model(&dir, &Device::flex()).unwrap();
    let tok = ChatTokenizer::from_dir(&dir).unwrap();
    let w = common::world();
    let suite = SuiteData::synth(&w);
    let ecfg = EvalConfig { max_new_tokens: new_tokens, batch_size: 64, limit, max_len: 96, ..Default::default() };
    (model, tok, w, suite, ecfg, BatchConfig { batch_size: 8, max_len: 64, bucket_window: 1 })
}

#[test]
fn a_stopped_attack_resumes_from_its_last_budget_to_the_uninterrupted_result() {
    let (model, tok, w, suite, ecfg, batch) = fixture(24, 16);
    let attack = AttackConfig {
        train: TrainConfig { steps: 12, lr: 5e-4, batch, ..Default::default() },
        benign_first_steps: 3,
        ..Default::default()
    };
    let evaluations = Cell::new(0usize);
    let count = |_: usize| {
        evaluations.set(evaluations.get() + 1);
        true
    };
    let run = |partial: Option<&Path>, stop: Option<usize>| -> (Llama, Vec<(usize, Vec<f64>)>) {
        let ae = AttackEval {
            attack: &attack,
            harmful: &w.harm_train,
            benign: &w.benign_train,
            budgets: &BUDGETS,
            suite: &suite,
            judge: &KeywordJudge,
            eval: &ecfg,
            progress: false,
            partial,
        };
        let mut points = vec![];
        let m = attack_and_evaluate_until(
            &model,
            &tok,
            &ae,
            &count,
            &mut |b, e| {
                points.push((b, figures(&e.expect("every budget is evaluated").0)));
                Ok(())
            },
            stop,
        )
        .unwrap();
        (m, points)
    };

    let (full, full_points) = run(None, None);
    assert_eq!(evaluations.replace(0), 4);

    let tmp = common::tempdir("attack-resume");
    let partial = tmp.join("partial");
    // Stopped after step 10: the budgets 0, 4 and 8 were evaluated, the last checkpoint is 8's.
    let (_, stopped) = run(Some(&partial), Some(10));
    assert_eq!(stopped.iter().map(|p| p.0).collect::<Vec<_>>(), [0, 4, 8]);
    assert_eq!(evaluations.replace(0), 3);
    assert_eq!(latest_step(&partial.join("harmful")), 8);
    assert_eq!(PartialAttack::points(&partial).unwrap().len(), 3);

    let (resumed, resumed_points) = run(Some(&partial), None);
    // Only budget 12 is evaluated again; 0, 4 and 8 come from points.json, in budget order.
    assert_eq!(evaluations.replace(0), 1, "the resumed attack evaluated saved budgets again");
    assert_eq!(resumed_points.iter().map(|p| p.0).collect::<Vec<_>>(), BUDGETS);
    // The harmful phase ran steps 1-10, then 9-12 from the checkpoint at 8 (not from step 1);
    // the benign phase ran once and was restored from its final checkpoint.
    let harmful_log = logged_steps(&partial.join("harmful/metrics.jsonl"));
    assert_eq!(harmful_log, (1..=10).chain(9..=12).collect::<Vec<u64>>());
    assert_eq!(logged_steps(&partial.join("benign/metrics.jsonl")), [1, 2, 3]);

    let d = max_diff(&full.params.iter().cloned().map(Some).collect::<Vec<_>>(), &resumed.params);
    let moved = max_diff(&full.params.iter().cloned().map(Some).collect::<Vec<_>>(), &model.params);
    let fig = full_points
        .iter()
        .zip(&resumed_points)
        .flat_map(|((_, a), (_, b))| a.iter().zip(b).map(|(x, y)| (x - y).abs()))
        .fold(0.0f64, f64::max);
    println!(
        "stopped after step 10 of 12, resumed from step 8: max |weight diff| to the uninterrupted attack {d:.3e} \
         (the attack moved the weights {moved:.3e}); max figure diff {fig:.3e}; HS {:?}",
        resumed_points.iter().map(|p| p.1[0]).collect::<Vec<_>>()
    );
    assert!(moved > 1e-3, "the attack did not move the weights ({moved:.3e})");
    assert!(d < 1e-6, "the resumed attack ends {d:.3e} from the uninterrupted one");
    assert!(fig < 1e-9, "the resumed figures differ by {fig:.3e}");

    PartialAttack::clear(&partial).unwrap();
    assert!(!partial.exists());
    // Clearing twice is harmless.
    PartialAttack::clear(&partial).unwrap();
    let _ = std::fs::remove_dir_all(&tmp);
}

#[test]
fn a_checkpoint_without_its_evaluations_is_refused_by_name() {
    let (model, tok, w, suite, ecfg, batch) = fixture(8, 8);
    let attack =
        AttackConfig { train: TrainConfig { steps: 6, lr: 5e-4, batch, ..Default::default() }, ..Default::default() };
    let tmp = common::tempdir("attack-resume-missing");
    let partial = tmp.join("partial");
    let ae = AttackEval {
        attack: &attack,
        harmful: &w.harm_train,
        benign: &[],
        budgets: &[3, 6],
        suite: &suite,
        judge: &KeywordJudge,
        eval: &ecfg,
        progress: false,
        partial: Some(&partial),
    };
    attack_and_evaluate_until(&model, &tok, &ae, &|_| true, &mut |_, _| Ok(()), Some(4)).unwrap();
    std::fs::remove_file(partial.join("points.json")).unwrap();
    let e = attack_and_evaluate(&model, &tok, &ae, &|_| true, &mut |_, _| Ok(())).unwrap_err().to_string();
    println!("{e}");
    assert!(e.contains("budget 3") && e.contains("points.json") && e.contains(&partial.display().to_string()), "{e}");
    let _ = std::fs::remove_dir_all(&tmp);
}
