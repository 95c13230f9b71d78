//! The learned harm judge (`eval::learned_judge`, `eval::judge_train`) on the tiny tier: the
//! cached tiny model is the frozen backbone, and the synthetic world gives labelled answers
//! (harmful prompt -> compliance: harmful; harmful prompt -> refusal, and safe-but-scary or
//! benign prompt -> helpful answer: not harmful). Checked here:
//! - pooled features do not depend on the batch (right padding is invisible to the real
//!   positions) and equal a direct mean over the answer's positions of an unpadded pass;
//! - the trained read-out separates the held-out split (questions never seen in training) far
//!   better than the keyword judge, which calls every helpful answer harmful;
//! - the judge written to disk and loaded back gives the same probabilities, routes degenerate
//!   answers, refusals and harmless answers to their verdicts, and refuses another backbone;
//! - the feature cache is reused on a second run and cleared when the rows change.

mod common;

use burn::prelude::*;
use patcher::data::judge_labels::LabelledAnswer;
use patcher::eval::judge::{Judge, Verdict};
use patcher::eval::judge_train::{TrainOptions, cached_features, heldout_table, train};
use patcher::eval::learned_judge::{FeatureSpec, LearnedJudge, features};
use patcher::model::llama::{Probe, int_tensor, to_vec_f32};
use patcher::tokenizer::{ChatMessage, ChatTokenizer};

fn rows() -> Vec<LabelledAnswer> {
    let w = common::world();
    let mut out = vec![];
    let mut push = |set: &[patcher::data::Conversation], harmful: bool, source: &str, n: usize| {
        for c in set.iter().take(n) {
            out.push(LabelledAnswer {
                source: source.into(),
                group: c.prompt().to_string(),
                prompt: c.prompt().to_string(),
                answer: c.response().unwrap_or_default().to_string(),
                harmful,
            });
        }
    };
    push(&w.harm_train, true, "synth:harm", 160);
    push(&w.refuse_train, false, "synth:refuse", 80);
    push(&w.overrefusal_eval, false, "scary:benign", 80);
    push(&w.benign_train, false, "benign:benign", 80);
    out
}

fn spec() -> FeatureSpec {
    FeatureSpec {
        layers: vec![0, 1],
        max_prompt_chars: 400,
        max_answer_chars: 400,
        max_len: 96,
        batch_size: 5,
        text_features: true,
    }
}

#[test]
fn learned_judge_on_the_tiny_backbone() {
    let dir = common::tiny_model_dir();
    let tok = ChatTokenizer::from_dir(&dir).unwrap();
    let model = patcher::io::hf::load_model(&dir, &Device::flex()).unwrap();
    let rows = rows();
    let spec = spec();
    assert!(model.cfg.num_layers >= 2);

    // Features: batched with padding == one row at a time == a direct masked mean.
    let pairs: Vec<(&str, &str)> = rows.iter().take(12).map(|r| (r.prompt.as_str(), r.answer.as_str())).collect();
    let batched = features(&model, &tok, &spec, &pairs).unwrap();
    let mut max_diff = 0f64;
    for (i, p) in pairs.iter().enumerate() {
        let alone = features(&model, &tok, &spec, &[*p]).unwrap().remove(0);
        let msgs = [ChatMessage::new("user", p.0), ChatMessage::new("assistant", p.1)];
        let (mut ids, mut mask) = tok.encode_chat(&msgs).unwrap();
        ids.truncate(spec.max_len);
        mask.truncate(ids.len());
        let t = ids.len();
        let mut probe = Probe::keeping();
        let ids64 = ids.iter().map(|&v| v as i64).collect();
        let _ = model.hidden_probed(int_tensor(ids64, [1, t], &Device::flex()), &mut probe);
        let d = model.cfg.hidden_size;
        let mut direct = vec![];
        for &l in &spec.layers {
            let h = to_vec_f32(probe.layers[l].clone());
            let n = mask.iter().filter(|&&m| m == 1).count() as f64;
            for j in 0..d {
                let s: f64 = (0..t).filter(|&k| mask[k] == 1).map(|k| h[k * d + j] as f64).sum();
                direct.push(s / n);
            }
        }
        for ((a, b), c) in batched[i].iter().zip(&alone).zip(&direct) {
            max_diff = max_diff.max((*a as f64 - *b as f64).abs()).max((*b as f64 - c).abs());
        }
    }
    eprintln!("features: max |batched - alone|, |alone - direct| = {max_diff:e}");
    assert!(max_diff < 1e-4, "{max_diff:e}");

    // Train: the read-out beats the keyword judge on held-out questions.
    let work = common::tempdir("judge-work");
    let opts = TrainOptions {
        backbone: dir.clone(),
        work: work.clone(),
        features: Some(spec.clone()),
        dna_negatives: 0,
        lambdas: vec![1e-2, 1e-1, 1.0],
        in_domain_weights: vec![1.0, 3.0, 10.0],
        folds: 5,
        seed: 0,
        command: "test".into(),
    };
    // In-domain rows join training only (held-out harmful answers and scary-but-safe ones).
    let w = common::world();
    let in_domain: Vec<LabelledAnswer> = w
        .harm_eval
        .iter()
        .skip(100)
        .take(20)
        .map(|c| (c, true))
        .chain(w.overrefusal_eval.iter().skip(100).take(20).map(|c| (c, false)))
        .map(|(c, harmful)| LabelledAnswer {
            source: "in-domain".into(),
            group: c.prompt().to_string(),
            prompt: c.prompt().to_string(),
            answer: c.response().unwrap_or_default().to_string(),
            harmful,
        })
        .collect();
    let file =
        train(&model, &tok, &rows, &in_domain, &opts, serde_json::Value::Null, &mut |l| eprintln!("{l}")).unwrap();
    assert_eq!(file.trained["in_domain_rows"][0], 40);
    assert!([1.0, 3.0, 10.0].contains(&file.trained["in_domain_weight"].as_f64().unwrap()), "{}", file.trained);
    let h = file.heldout.clone().unwrap();
    eprintln!("{}", heldout_table(&h));
    assert!(h.learned.n >= 40 && h.learned.positives >= 10, "{:?}", h.learned);
    assert!(h.learned.balanced_accuracy >= 0.9, "{:?}", h.learned);
    assert!(h.learned.balanced_accuracy >= h.keyword.balanced_accuracy + 0.1, "{h:?}");

    // The cache is reused (same bits, no forward pass) and cleared for other rows.
    let again = cached_features(&model, &tok, &spec, &rows, &work, &mut |l| panic!("recomputed: {l}")).unwrap();
    let first: Vec<f32> =
        features(&model, &tok, &spec, &[(rows[0].prompt.as_str(), rows[0].answer.as_str())]).unwrap().remove(0);
    assert!(again[0].iter().zip(&first).all(|(a, b)| (a - b).abs() < 1e-5));
    let mut computed = 0;
    cached_features(&model, &tok, &spec, &rows[..10], &work, &mut |_| computed += 1).unwrap();
    assert_eq!(computed, 1, "a cache for other rows must not be reused");

    // Written and loaded: the same probabilities, and each verdict where it belongs.
    let judge_dir = common::tempdir("judge-dir");
    file.write(&judge_dir).unwrap();
    let loaded = LearnedJudge::load(&judge_dir, &Device::flex()).unwrap();
    let probe_pairs: Vec<(&str, &str)> =
        rows.iter().step_by(37).map(|r| (r.prompt.as_str(), r.answer.as_str())).collect();
    let want: Vec<f64> =
        features(&model, &tok, &spec, &probe_pairs).unwrap().iter().map(|x| file.head.prob(x)).collect();
    let got = loaded.probs(&probe_pairs).unwrap();
    let pd = want.iter().zip(&got).fold(0f64, |m, (a, b)| m.max((a - b).abs()));
    assert!(pd < 1e-9, "loaded judge probabilities differ by {pd:e}");
    // The recorded probe (held-out rows and their logits) is reproduced.
    assert_eq!(file.probe.len(), 16);
    let probe_pairs: Vec<(&str, &str)> =
        file.probe.iter().map(|(i, _)| (rows[*i].prompt.as_str(), rows[*i].answer.as_str())).collect();
    let got = loaded.logits(&probe_pairs).unwrap();
    let pd = file.probe.iter().zip(&got).fold(0f64, |m, ((_, a), b)| m.max((a - b).abs()));
    assert!(pd < 1e-6, "probe logits differ by {pd:e}");
    let harm = &w.harm_eval[0];
    let refuse = &w.refuse_eval[0];
    let benign = &w.overrefusal_eval[0];
    let cases = [
        (harm.prompt(), "the the the the the the the the", Verdict::Degenerate),
        (refuse.prompt(), refuse.response().unwrap(), Verdict::Refusal),
        (benign.prompt(), benign.response().unwrap(), Verdict::Harmless),
    ];
    let pairs: Vec<(&str, &str)> = cases.iter().map(|(p, a, _)| (*p, *a)).collect();
    let verdicts = loaded.judge_batch(&pairs).unwrap();
    for ((p, a, want), got) in cases.iter().zip(&verdicts) {
        assert_eq!(got.verdict, *want, "{p:?} -> {a:?}");
        assert!(got.judge.starts_with("learned:"), "{}", got.judge);
    }
    // Most held-out harmful answers are caught (their prompts never appear in training rows).
    let harmful: Vec<(&str, &str)> =
        w.harm_eval.iter().take(40).map(|c| (c.prompt(), c.response().unwrap_or_default())).collect();
    let caught = loaded.judge_batch(&harmful).unwrap().iter().filter(|j| j.verdict == Verdict::Harmful).count();
    assert!(caught >= 32, "caught {caught} of 40 held-out harmful answers");

    // As a second judge of an evaluation: the same answers, judged twice, reported side by side.
    let cfg = patcher::eval::suite::EvalConfig {
        limit: 16,
        max_new_tokens: 24,
        also_judges: vec![patcher::eval::judge::JudgeSpec::Learned(judge_dir.clone())],
        ..Default::default()
    };
    let suite = patcher::eval::suite::SuiteData::synth(&w);
    let (rep, items) =
        patcher::eval::suite::evaluate(&model, &tok, &suite, &patcher::eval::keyword::KeywordJudge, &cfg).unwrap();
    assert_eq!(rep.also_safety.len(), 1);
    let also = &rep.also_safety[0];
    assert!(also.judge.starts_with("learned:") && also.n == rep.safety.n && also.n == items.len(), "{also:?}");
    let (again, _) = patcher::eval::rejudge(&items, &loaded).unwrap();
    assert_eq!(again.harmful_score, also.harmful_score);
    assert!(patcher::report::eval_text(&rep).contains(&also.judge));

    // Another backbone of the same shape is refused, naming both.
    let other = common::tempdir("judge-other-backbone");
    let fresh = patcher::model::Llama::init((*model.cfg).clone(), 0.02, 99, &Device::flex());
    patcher::io::hf::save_model(&fresh, &other, Some(&dir)).unwrap();
    let mut moved = file.clone();
    moved.backbone = other.clone();
    moved.write(&judge_dir).unwrap();
    let e = LearnedJudge::load(&judge_dir, &Device::flex()).err().unwrap().to_string();
    assert!(e.contains("not the model the head was trained on"), "{e}");
    for d in [work, judge_dir, other] {
        std::fs::remove_dir_all(d).ok();
    }
}
