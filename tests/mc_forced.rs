//! Multiple-choice scoring (`eval::mc`) on a tiny model whose right answers are forced.
//!
//! A small world of 24 four-option questions ("Which colour does the zorbin like best?"), the
//! right answers' positions balanced; a byte-level BPE tokenizer trained on it (every option is
//! one token); a two-layer Llama (~100k parameters). Training it briefly on (question with its
//! options in a random order → right answer) forces the answers. Checked here:
//! - the forced model scores 100% with `mc_accuracy`, every right answer by a clear margin;
//! - the same architecture freshly initialised (five seeds) is near chance (25%);
//! - rotating the options moves the predicted position with the right answer: the scorer
//!   follows the answer, not a position;
//! - `choice_scores` (one prompt pass, KV-cache copies per choice, head only on the scored
//!   positions) equals the summed / mean answer-token log-probabilities computed directly from
//!   full-sequence `Llama::forward` logits with a log-softmax in f64 (max difference printed);
//! - the cloze format (`item_scores` with `McFormat::Cloze`: plain `Question: ...\nAnswer:`
//!   context, each option ` <text>` scored per byte) equals the same direct computation on
//!   those token sequences divided by the continuation's byte length;
//! - `batch_choice_scores` (what `mc_accuracy_in` uses: contexts of different lengths
//!   left-padded in one pass, options continuing from copies of their item's cache) equals the
//!   same direct computation at batch sizes 1, 3 and 16.

use burn::prelude::*;
use patcher::data::Message;
use patcher::data::presets::McItem;
use patcher::data::tiny_tokenizer::{TINY_CHAT_TEMPLATE, train_tiny_tokenizer};
use patcher::eval::mc::{
    McFormat, batch_choice_scores, choice_scores, cloze_context, item_scores, mc_accuracy, mc_accuracy_in, mc_prompt,
};
use patcher::model::LlamaConfig;
use patcher::model::llama::{Llama, int_tensor, to_vec_f32};
use patcher::rng::Rng;
use patcher::tiny::TinyConfig;
use patcher::tokenizer::ChatTokenizer;
use patcher::train::batches::{BatchConfig, Mixture};
use patcher::train::engine::{RunOptions, TrainConfig, TrainState, run};
use patcher::train::step::Example;

const NAMES: [&str; 24] = [
    "zorbin", "plimmet", "quandle", "frobisk", "glimber", "snorvel", "tarnick", "wubbet", "yorrel", "blenkin",
    "crudwick", "drimsel", "fenwock", "gorplin", "hustrel", "jibbon", "klomper", "larvish", "mudgett", "nobbler",
    "pewtrin", "rumbold", "skivver", "thornap",
];
const COLOURS: [&str; 8] = ["red", "blue", "green", "yellow", "black", "white", "pink", "brown"];

/// The questions: four distinct colours each drawn at random; the right answer's position is
/// balanced (six items per position) and shuffled over the items.
fn items() -> Vec<McItem> {
    let mut r = Rng::new(11);
    let mut answers: Vec<usize> = (0..NAMES.len()).map(|i| i % 4).collect();
    r.shuffle(&mut answers);
    NAMES
        .iter()
        .zip(answers)
        .map(|(name, answer)| {
            let mut pool: Vec<&str> = COLOURS.to_vec();
            r.shuffle(&mut pool);
            McItem {
                question: format!("Which colour does the {name} like best?"),
                choices: pool[..4].iter().map(|c| c.to_string()).collect(),
                answer,
            }
        })
        .collect()
}

/// The item with its options rotated left by `k` (the right answer moves with its text).
fn rotated(item: &McItem, k: usize) -> McItem {
    let n = item.choices.len();
    McItem {
        question: item.question.clone(),
        choices: (0..n).map(|i| item.choices[(i + k) % n].clone()).collect(),
        answer: (item.answer + n - k % n) % n,
    }
}

fn tokenizer(items: &[McItem]) -> ChatTokenizer {
    let mut corpus: Vec<String> = items.iter().flat_map(|it| (0..4).map(|k| mc_prompt(&rotated(it, k)))).collect();
    corpus.extend(COLOURS.iter().flat_map(|c| std::iter::repeat_n(c.to_string(), 20)));
    let tok = train_tiny_tokenizer(&corpus, 400).unwrap();
    ChatTokenizer::new(
        tok,
        Some(TINY_CHAT_TEMPLATE.into()),
        Some("<|im_start|>".into()),
        Some("<|im_end|>".into()),
        Some("<|im_end|>".into()),
    )
}

/// A two-layer tiny-tier decoder (`patcher::tiny`'s recipe at a smaller width).
fn llama_cfg(vocab: usize) -> LlamaConfig {
    TinyConfig {
        vocab_size: vocab,
        hidden_size: 64,
        intermediate_size: 128,
        num_layers: 2,
        num_heads: 4,
        num_kv_heads: 2,
        ..Default::default()
    }
    .llama()
}

fn prompt_ids(tok: &ChatTokenizer, item: &McItem) -> Vec<u32> {
    tok.encode_prompt(&[Message::new("user", mc_prompt(item))]).unwrap()
}

fn choice_ids(tok: &ChatTokenizer, item: &McItem) -> Vec<Vec<u32>> {
    item.choices.iter().map(|c| tok.encode(c.trim()).unwrap()).collect()
}

/// Force the right answers: fine-tune on (prompt with options in a random order → right
/// answer's tokens), the loss on the answer tokens only, exactly as `mc_accuracy` scores them.
fn forced(model: &Llama, tok: &ChatTokenizer, items: &[McItem]) -> Llama {
    let mut r = Rng::new(5);
    let mut examples = vec![];
    for it in items {
        for _ in 0..8 {
            let mut order: Vec<usize> = (0..it.choices.len()).collect();
            r.shuffle(&mut order);
            let shuffled = McItem {
                question: it.question.clone(),
                choices: order.iter().map(|&i| it.choices[i].clone()).collect(),
                answer: order.iter().position(|&i| i == it.answer).unwrap(),
            };
            let mut ids = prompt_ids(tok, &shuffled);
            let p = ids.len();
            ids.extend(tok.encode(&it.choices[it.answer]).unwrap());
            let mask = (0..ids.len()).map(|i| u8::from(i >= p)).collect();
            examples.push(Example { ids, mask });
        }
    }
    let tc = TrainConfig {
        steps: 150,
        lr: 3e-3,
        batch: BatchConfig { batch_size: 16, max_len: 128, bucket_window: 1 },
        seed: 3,
        ..Default::default()
    };
    let mix = Mixture::single("mc", examples, tc.batch.clone(), tc.seed);
    run(TrainState::new(model.clone(), &tc).unwrap(), &tc, &mix, tok.pad_id, RunOptions::default()).unwrap().model
}

/// `(sum, mean)` log-probability of each choice after `prompt`, computed directly: one full
/// forward pass over `prompt ++ choice`, log-softmax in f64 at every position that predicts a
/// choice token.
fn direct_scores(model: &Llama, prompt: &[u32], choices: &[Vec<u32>]) -> Vec<(f64, f64)> {
    let device = model.device();
    let v = model.cfg.vocab_size;
    choices
        .iter()
        .map(|c| {
            let ids: Vec<i64> = prompt.iter().chain(c).map(|&x| x as i64).collect();
            let t = ids.len();
            let logits = to_vec_f32(model.forward(int_tensor(ids, [1, t], &device)));
            let mut sum = 0.0f64;
            for (j, &target) in c.iter().enumerate() {
                let row = &logits[(prompt.len() - 1 + j) * v..(prompt.len() + j) * v];
                let max = row.iter().fold(f64::NEG_INFINITY, |m, &x| m.max(x as f64));
                let lse = max + row.iter().map(|&x| (x as f64 - max).exp()).sum::<f64>().ln();
                sum += row[target as usize] as f64 - lse;
            }
            (sum, sum / c.len() as f64)
        })
        .collect()
}

/// [`direct_scores`], with an empty option scored `(0, 0)`.
fn direct_or_empty(model: &Llama, prompt: &[u32], choices: &[Vec<u32>]) -> Vec<(f64, f64)> {
    choices
        .iter()
        .map(|c| if c.is_empty() { (0.0, 0.0) } else { direct_scores(model, prompt, std::slice::from_ref(c))[0] })
        .collect()
}

fn argmax(scores: &[(f64, f64)]) -> usize {
    scores.iter().enumerate().max_by(|a, b| a.1.0.total_cmp(&b.1.0)).unwrap().0
}

#[test]
fn mc_scoring_picks_forced_answers_follows_them_when_options_move_and_matches_direct_log_probs() {
    let t0 = std::time::Instant::now();
    let items = items();
    let tok = tokenizer(&items);
    let cfg = llama_cfg(tok.tokenizer.get_vocab_size(true));
    let device = Device::flex();
    // Every colour is one token, so an untrained model has no length preference among options.
    for c in COLOURS {
        assert_eq!(tok.encode(c).unwrap().len(), 1, "{c} is not a single token");
    }
    // The right answers are spread evenly over the positions (a position-only scorer gets 25%).
    let per_pos: Vec<usize> = (0..4).map(|p| items.iter().filter(|it| it.answer == p).count()).collect();
    assert_eq!(per_pos, vec![6; 4]);

    // Untrained models: near chance (25%). Five initialisations x 24 items = 120 trials;
    // under chance their mean has standard deviation ~0.04, so 0.25 ± 0.15 is > 3 sd.
    let mut random_acc = vec![];
    for seed in 0..5 {
        let m = Llama::init(cfg.clone(), 0.02, seed, &device);
        random_acc.push(mc_accuracy(&m, &tok, &items).unwrap());
    }
    let random_mean = random_acc.iter().sum::<f64>() / random_acc.len() as f64;
    println!("untrained accuracy per seed {random_acc:?}, mean {random_mean:.3} (chance 0.25)");
    assert!((random_mean - 0.25).abs() <= 0.15, "untrained models are not near chance: {random_mean}");

    // The forced model.
    let init = Llama::init(cfg.clone(), 0.02, 0, &device);
    let t1 = std::time::Instant::now();
    let model = forced(&init, &tok, &items);
    println!("forcing the answers: {:.1}s", t1.elapsed().as_secs_f64());
    let acc = mc_accuracy(&model, &tok, &items).unwrap();
    println!("forced model accuracy (mc_accuracy): {acc:.3}");
    assert_eq!(acc, 1.0, "the forced model misses a forced answer");

    // Rotations: the argmax moves with the right answer; the winning text stays the same.
    let mut min_margin = f64::INFINITY;
    let mut positions = std::collections::BTreeSet::new();
    for it in &items {
        for k in 0..4 {
            let rot = rotated(it, k);
            let scores = choice_scores(&model, &prompt_ids(&tok, &rot), &choice_ids(&tok, &rot));
            let best = argmax(&scores);
            assert_eq!(
                best, rot.answer,
                "{}: options rotated by {k}: picked {best}, answer {}",
                it.question, rot.answer
            );
            assert_eq!(rot.choices[best], it.choices[it.answer]);
            positions.insert(best);
            let right = scores[rot.answer].0;
            let wrong = scores.iter().enumerate().filter(|(i, _)| *i != rot.answer).map(|(_, s)| s.0);
            min_margin = min_margin.min(right - wrong.fold(f64::NEG_INFINITY, f64::max));
        }
    }
    println!("rotations: 96/96 follow the answer; smallest log-prob margin of the right answer {min_margin:.2} nats");
    assert_eq!(positions.len(), 4, "the prediction visits every position as the answer moves");
    assert!(min_margin > 0.5, "a forced answer wins by only {min_margin} nats");

    // Scores vs the direct computation, for the forced and an untrained model, on the items'
    // one-token options and on multi-token continuations (which go through the KV-cache copy).
    let extra: Vec<Vec<u32>> = ["red and blue", "I do not know.", "the zorbin likes green best", "pink"]
        .iter()
        .map(|s| tok.encode(s).unwrap())
        .collect();
    assert!(extra.iter().any(|c| c.len() >= 4));
    let mut worst = 0.0f64;
    let mut n = 0;
    for m in [&model, &init] {
        for it in items.iter().take(8) {
            let prompt = prompt_ids(&tok, it);
            let mut choices = choice_ids(&tok, it);
            choices.extend(extra.iter().cloned());
            let got = choice_scores(m, &prompt, &choices);
            let want = direct_scores(m, &prompt, &choices);
            for ((gs, gm), (ws, wm)) in got.iter().zip(&want) {
                worst = worst.max((gs - ws).abs()).max((gm - wm).abs());
                n += 1;
            }
        }
    }
    println!("choice_scores vs direct forward + log-softmax: max |difference| {worst:.2e} over {n} choices");
    assert!(worst < 1e-4, "{worst}");

    // Cloze: the context without options or chat template, each option after a space, the sum
    // divided by the option's bytes (a space and the colour); directly from full forwards.
    let mut worst_cloze = 0.0f64;
    for m in [&model, &init] {
        for it in items.iter().take(8) {
            let context = tok.encode(&cloze_context(it)).unwrap();
            assert!(tok.decode(&context, false).unwrap().starts_with("Question: Which colour"));
            let texts: Vec<String> = it.choices.iter().map(|c| format!(" {c}")).collect();
            let conts: Vec<Vec<u32>> = texts.iter().map(|t| tok.encode(t).unwrap()).collect();
            let want: Vec<f64> =
                direct_scores(m, &context, &conts).iter().zip(&texts).map(|(s, t)| s.0 / t.len() as f64).collect();
            let got = item_scores(m, &tok, it, McFormat::Cloze).unwrap();
            for (g, w) in got.iter().zip(&want) {
                worst_cloze = worst_cloze.max((g - w).abs());
            }
        }
    }
    // Batched scoring (what `mc_accuracy_in` uses): contexts of different lengths left-padded
    // in one pass, options continuing from copies of their item's cache, right-padded; every
    // score equals the direct computation, whatever the batch size. The batch mixes lettered
    // prompts and cloze contexts (different lengths), one-token and multi-token options, and an
    // empty option (scored 0, as `choice_scores` does).
    let mut batch_items: Vec<(Vec<u32>, Vec<Vec<u32>>)> = vec![];
    for (n, it) in items.iter().take(10).enumerate() {
        let context = if n % 2 == 0 { prompt_ids(&tok, it) } else { tok.encode(&cloze_context(it)).unwrap() };
        let mut choices = choice_ids(&tok, it);
        choices.push(extra[n % extra.len()].clone());
        if n == 3 {
            choices.push(vec![]);
        }
        batch_items.push((context, choices));
    }
    let lens: std::collections::BTreeSet<usize> = batch_items.iter().map(|b| b.0.len()).collect();
    assert!(lens.len() >= 2, "the batch must mix context lengths");
    let mut worst_batched = 0.0f64;
    for m in [&model, &init] {
        let want: Vec<Vec<(f64, f64)>> = batch_items.iter().map(|(c, ch)| direct_or_empty(m, c, ch)).collect();
        for batch in [1, 3, 16] {
            let got = batch_choice_scores(m, &batch_items, batch);
            for (g, w) in got.iter().zip(&want) {
                assert_eq!(g.len(), w.len());
                for ((gs, gm), (ws, wm)) in g.iter().zip(w) {
                    worst_batched = worst_batched.max((gs - ws).abs()).max((gm - wm).abs());
                }
            }
        }
    }
    println!("batch_choice_scores (batches of 1, 3, 16) vs direct: max |difference| {worst_batched:.2e}");
    assert!(worst_batched < 1e-4, "{worst_batched}");
    let cloze_acc = mc_accuracy_in(&model, &tok, &items, McFormat::Cloze, 5).unwrap();
    println!(
        "cloze item_scores vs direct per-byte log-probs: max |difference| {worst_cloze:.2e}; \
         the options-forced model's cloze accuracy {cloze_acc:.3}"
    );
    assert!(worst_cloze < 1e-4, "{worst_cloze}");
    println!("total {:.1}s", t0.elapsed().as_secs_f64());
}
