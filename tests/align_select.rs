//! End-point selection for SFT alignment (`[align.select]`, issue 13 item 4) on the tiny tier:
//! the released model is the checkpoint the rule chooses, its scores are what the model does,
//! and a killed run resumes to the same choice and weights.

mod common;

use burn::prelude::*;
use patcher::align::select::{Record, Rule, SelectConfig, choose, read_records};
use patcher::align::{AlignConfig, align};
use patcher::data::write_jsonl;
use patcher::determinism::max_abs_diff as max_diff;
use patcher::eval::generate_answers;
use patcher::eval::keyword::is_refusal;
use patcher::io::hf::load_model;
use patcher::model::Llama;
use patcher::model::generate::SamplingConfig;
use patcher::tokenizer::ChatTokenizer;
use patcher::train::batches::BatchConfig;
use patcher::train::engine::{RunOptions, TrainConfig};

const TOTAL: usize = 20;

fn config(dir: &std::path::Path, w: &patcher::data::synth::SynthWorld) -> AlignConfig {
    // The validation sets are files here: the world's held-out harmful prompts to refuse, and its
    // safe-but-scary prompts to answer.
    let (harmful, safe) = (dir.join("val-harmful.jsonl"), dir.join("val-safe.jsonl"));
    write_jsonl(&harmful, &w.refuse_eval).unwrap();
    write_jsonl(&safe, &w.overrefusal_eval).unwrap();
    AlignConfig {
        train: TrainConfig {
            steps: TOTAL,
            lr: 1e-3,
            checkpoint_every: 5,
            batch: BatchConfig { batch_size: 16, max_len: 96, bucket_window: 1 },
            ..Default::default()
        },
        select: SelectConfig {
            every: 5,
            harmful: harmful.display().to_string(),
            safe: safe.display().to_string(),
            n: 40,
            max_new_tokens: 16,
            batch_size: 40,
            // No refusal floor: the least over-refusal wins. The world's model refuses nothing
            // before step 15 (measured: 0 / 0 / 35 / 80% of the harmful set at steps 5-20, 0 / 0 /
            // 42 / 28% of the safe one), so the rule picks an intermediate checkpoint and the test
            // exercises keeping it, on disk and across the kill.
            min_refusal: 0.0,
            rule: Rule::Floor,
            keep_all: false,
        },
        ..Default::default()
    }
}

fn refusal_share(model: &Llama, tok: &ChatTokenizer, spec: &str, n: usize) -> f64 {
    let mut convs = patcher::data::source::load(spec, patcher::data::split::Split::Eval).unwrap();
    convs.sort_by_key(|c| (patcher::data::split::stable_hash(c.prompt()), c.prompt().to_string()));
    convs.dedup_by(|a, b| a.prompt() == b.prompt());
    convs.truncate(n);
    let prompts: Vec<_> = convs.iter().map(|c| c.prompt_only().messages).collect();
    let sampling = SamplingConfig { max_new_tokens: 16, ..Default::default() };
    let (answers, _) = generate_answers(model, tok, &prompts, 7, &sampling).unwrap();
    answers.iter().filter(|a| is_refusal(a)).count() as f64 / answers.len() as f64
}

/// The run's records in step order (the library's reader: the last record of a step wins).
fn records(dir: &std::path::Path) -> Vec<Record> {
    let mut out = read_records(&dir.join("select.jsonl")).unwrap();
    out.sort_by_key(|r| r.step);
    out
}

#[test]
fn alignment_releases_the_chosen_checkpoint_and_resumes_to_the_same_choice() {
    patcher::model::fixed::set_fixed_order(true);
    let device = Device::flex();
    let mdir = common::tiny_model_dir();
    let base = load_model(&mdir, &device).unwrap();
    let tok = ChatTokenizer::from_dir(&mdir).unwrap();
    let w = common::world();
    let root = common::tempdir("align-select");
    let cfg = config(&root, &w);

    // Uninterrupted run with a directory.
    let full_dir = root.join("full");
    let opts = RunOptions { out_dir: Some(full_dir.clone()), ..Default::default() };
    let chosen = align(&base, &tok, &cfg, &w.refuse_train, &w.benign_train, opts).unwrap();
    let recs = records(&full_dir);
    assert_eq!(recs.iter().map(|r| r.step).collect::<Vec<_>>(), vec![5, 10, 15, 20]);
    let pick = choose(&recs, cfg.select.rule, cfg.select.min_refusal).unwrap().clone();
    let saved: Record = serde_json::from_str(&std::fs::read_to_string(full_dir.join("select.json")).unwrap()).unwrap();
    assert_eq!(saved.step, pick.step);
    for r in &recs {
        println!("step {}: harmful refused {:.3}, safe refused {:.3}", r.step, r.harmful_refusal, r.over_refusal);
    }
    println!("chosen: step {}", pick.step);
    assert!(pick.step < TOTAL, "this setting is meant to choose an intermediate checkpoint (fixed-order reductions)");
    // Only the best checkpoint stays on disk, and the last step's model beside it.
    let mut kept: Vec<String> = std::fs::read_dir(full_dir.join("select"))
        .map(|d| d.map(|e| e.unwrap().file_name().to_string_lossy().to_string()).collect())
        .unwrap_or_default();
    kept.sort();
    assert_eq!(kept, vec!["last".to_string(), format!("step-{}", pick.step)]);

    // The released weights are the run's weights at the chosen step: a plain run stopped there.
    let plain = AlignConfig { select: SelectConfig::default(), ..cfg.clone() };
    let stopped = RunOptions { stop_after: Some(pick.step), ..Default::default() };
    let at_pick = align(&base, &tok, &plain, &w.refuse_train, &w.benign_train, stopped).unwrap();
    let d = max_diff(&chosen, &at_pick);
    println!("max |chosen - plain run at step {}| = {d:.2e}", pick.step);
    assert!(d <= 1e-6, "the released model is not the step-{} model: {d:.2e}", pick.step);
    // The kept last-step model is the plain run's end.
    let plain_end = align(&base, &tok, &plain, &w.refuse_train, &w.benign_train, RunOptions::default()).unwrap();
    let last = load_model(&full_dir.join("select").join("last"), &device).unwrap();
    let d = max_diff(&last, &plain_end);
    println!("max |select/last - plain run's end| = {d:.2e}");
    assert!(d <= 1e-6, "select/last is not the last step's model: {d:.2e}");

    // Its scores are what the released model does, recomputed here (another generation batch
    // size, the same greedy answers).
    let h = refusal_share(&chosen, &tok, &cfg.select.harmful, cfg.select.n);
    let s = refusal_share(&chosen, &tok, &cfg.select.safe, cfg.select.n);
    println!(
        "recomputed: harmful refused {h:.3} (record {:.3}), safe refused {s:.3} (record {:.3})",
        pick.harmful_refusal, pick.over_refusal
    );
    assert!(
        (h - pick.harmful_refusal).abs() <= 1.0 / 40.0 + 1e-9,
        "harmful refusal {h} vs record {}",
        pick.harmful_refusal
    );
    assert!((s - pick.over_refusal).abs() <= 1.0 / 40.0 + 1e-9, "safe refusal {s} vs record {}", pick.over_refusal);

    // Killed after step 12 (last checkpoint at 10), then resumed, keeping every checkpoint this
    // time: the same records and choice, the same weights.
    let keep = AlignConfig { select: SelectConfig { keep_all: true, ..cfg.select.clone() }, ..cfg.clone() };
    let kdir = root.join("killed");
    let killed = RunOptions { out_dir: Some(kdir.clone()), stop_after: Some(12), ..Default::default() };
    align(&base, &tok, &keep, &w.refuse_train, &w.benign_train, killed).unwrap();
    assert!(!kdir.join("select.json").exists(), "no choice before the end");
    let opts = RunOptions { out_dir: Some(kdir.clone()), ..Default::default() };
    let resumed = align(&base, &tok, &keep, &w.refuse_train, &w.benign_train, opts).unwrap();
    let mut kept: Vec<String> = std::fs::read_dir(kdir.join("select"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    kept.sort();
    assert_eq!(kept, ["last", "step-10", "step-15", "step-5"], "keep_all keeps every validated checkpoint");
    // finish_dir makes each kept checkpoint a complete model directory (the tokenizer copied).
    patcher::align::finish_dir(&kdir, &mdir).unwrap();
    for k in &kept {
        assert!(kdir.join("select").join(k).join("tokenizer.json").exists(), "select/{k} has no tokenizer");
    }
    let scores = |v: &[Record]| v.iter().map(|r| (r.step, r.harmful_refusal, r.over_refusal)).collect::<Vec<_>>();
    assert_eq!(scores(&records(&kdir)), scores(&recs), "shares of the same answers");
    let d = max_diff(&resumed, &chosen);
    println!("max |resumed - uninterrupted| = {d:.2e}");
    assert!(d <= 1e-6, "resumed choice differs: {d:.2e}");
    std::fs::remove_dir_all(&root).ok();
}
