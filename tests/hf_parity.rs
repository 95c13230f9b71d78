//! Parity with Hugging Face transformers on tiny random checkpoints made by
//! `scripts/make_fixtures.py`: logits (Llama with an untied head; Qwen2 with q/k/v bias and a
//! tied head; Gemma 3 with sliding and global layers, q/k norms and multi-query attention), greedy generation with and without the KV cache, batched left-padded
//! generation, save/load round trips, and precise errors for broken checkpoints.

use std::path::{Path, PathBuf};

use burn::prelude::*;
use patcher::io::hf::{load_model, read_model_tensors, safetensors_bytes, save_model};
use patcher::model::generate::{SamplingConfig, generate, generate_uncached};
use patcher::model::llama::{int_tensor, to_vec_f32};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn check_logits(dir: &Path, expected_file: &Path) -> f32 {
    let device = Device::flex();
    let model = load_model(dir, &device).unwrap();
    let exp = json(expected_file);
    let ids: Vec<Vec<i64>> = serde_json::from_value(exp["input_ids"].clone()).unwrap();
    let want: Vec<Vec<Vec<f32>>> = serde_json::from_value(exp["logits"].clone()).unwrap();
    let (b, t) = (ids.len(), ids[0].len());
    let logits = model.forward(int_tensor(ids.concat(), [b, t], &device));
    let got = to_vec_f32(logits);
    let want: Vec<f32> = want.into_iter().flatten().flatten().collect();
    assert_eq!(got.len(), want.len());
    let max = got.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
    println!("{}: max |logit difference| vs transformers = {max:.3e} over {} values", dir.display(), got.len());
    max
}

#[test]
fn llama_logits_match_transformers() {
    let d = fixture("tiny-llama");
    assert!(check_logits(&d, &d.join("expected_logits.json")) < 1e-4);
}

#[test]
fn qwen2_with_bias_logits_match_transformers() {
    let d = fixture("tiny-qwen2");
    assert!(check_logits(&d, &d.join("expected_logits.json")) < 1e-4);
}

#[test]
fn gemma3_logits_match_transformers() {
    let d = fixture("tiny-gemma3");
    let cfg = patcher::io::hf::load_config(&d).unwrap();
    let g = cfg.gemma.as_ref().expect("a Gemma 3 config");
    assert_eq!((g.sliding.as_slice(), g.sliding_window, cfg.num_kv_heads), ([true, false, true].as_slice(), 4, 1));
    assert!(check_logits(&d, &d.join("expected_logits.json")) < 1e-4);
}

fn greedy_case(dir: &Path) {
    let device = Device::flex();
    let model = load_model(dir, &device).unwrap();
    let exp = json(&dir.join("expected_greedy.json"));
    let prompt: Vec<u32> = serde_json::from_value(exp["prompt_ids"].clone()).unwrap();
    let want: Vec<u32> = serde_json::from_value(exp["generated_ids"].clone()).unwrap();
    let n = want.len();
    let cfg = SamplingConfig { max_new_tokens: n, ..Default::default() };
    // No stop ids: the reference was generated without stopping at eos.
    let cached = generate(&model, std::slice::from_ref(&prompt), &[], 2, &cfg);
    let uncached = generate_uncached(&model, &prompt, &[], n);
    assert_eq!(uncached, want, "uncached greedy differs from transformers");
    assert_eq!(cached[0], want, "cached greedy differs from transformers");
    // Batched with left padding: a shorter prompt beside it must not change either result.
    let short: Vec<u32> = prompt[..prompt.len() - 3].to_vec();
    let batch = generate(&model, &[short.clone(), prompt.clone()], &[], 2, &cfg);
    assert_eq!(batch[1], want, "left padding changed the long prompt's tokens");
    assert_eq!(batch[0], generate_uncached(&model, &short, &[], n), "left padding changed the short prompt's tokens");
}

#[test]
fn greedy_generation_matches_transformers_with_and_without_cache() {
    greedy_case(&fixture("tiny-llama"));
    greedy_case(&fixture("tiny-qwen2"));
    // 8 prompt + 16 new tokens against a 4-token window: the cache must mask by window too.
    greedy_case(&fixture("tiny-gemma3"));
}

/// Batched greedy generation (left padding, rows stopping at different steps and leaving the
/// batch) gives, for every prompt, exactly the tokens of one-prompt-at-a-time generation
/// without a cache, at batch sizes 1, 3 and 8.
#[test]
fn batched_greedy_with_rows_stopping_at_different_steps_equals_one_prompt_at_a_time() {
    let dir = fixture("tiny-llama");
    let model = load_model(&dir, &Device::flex()).unwrap();
    let exp = json(&dir.join("expected_greedy.json"));
    let prompt: Vec<u32> = serde_json::from_value(exp["prompt_ids"].clone()).unwrap();
    let vocab = model.cfg.vocab_size as u32;
    // Eight prompts of different lengths and contents.
    let prompts: Vec<Vec<u32>> = (0..8u32)
        .map(|i| {
            let mut p = prompt[..prompt.len() - (i as usize % 4)].to_vec();
            p[0] = (p[0] + 7 * i) % vocab;
            p
        })
        .collect();
    let n = 12;
    // Stop tokens taken from the free-running outputs at different steps, so rows stop apart.
    let free: Vec<Vec<u32>> = prompts.iter().map(|p| generate_uncached(&model, p, &[], n)).collect();
    let stops: Vec<u32> = free.iter().enumerate().map(|(i, f)| f[2 + 3 * i % (n - 2)]).take(3).collect();
    let want: Vec<Vec<u32>> = prompts.iter().map(|p| generate_uncached(&model, p, &stops, n)).collect();
    let lens: std::collections::BTreeSet<usize> = want.iter().map(|w| w.len()).collect();
    println!("stop ids {stops:?}: answer lengths {:?}", want.iter().map(|w| w.len()).collect::<Vec<_>>());
    assert!(lens.len() >= 3, "rows must stop at different steps: lengths {lens:?}");
    let cfg = SamplingConfig { max_new_tokens: n, ..Default::default() };
    for batch in [1, 3, 8] {
        let got: Vec<Vec<u32>> = prompts.chunks(batch).flat_map(|c| generate(&model, c, &stops, 2, &cfg)).collect();
        assert_eq!(got, want, "batch size {batch}");
    }
}

#[test]
fn save_then_load_round_trips_bit_exactly() {
    let device = Device::flex();
    for name in ["tiny-llama", "tiny-qwen2", "tiny-gemma3"] {
        let src = fixture(name);
        let model = load_model(&src, &device).unwrap();
        let out = tempdir(name);
        save_model(&model, &out, Some(&src)).unwrap();
        let back = load_model(&out, &device).unwrap();
        for (a, b) in model.params.iter().zip(&back.params) {
            let (a, b) = (to_vec_f32(a.clone()), to_vec_f32(b.clone()));
            assert!(a.iter().zip(&b).all(|(x, y)| x.to_bits() == y.to_bits()));
        }
        assert_eq!(*model.cfg, *back.cfg);
        assert_eq!(out.join("tokenizer.json").exists(), src.join("tokenizer.json").exists());
        // The original checkpoint's tensors are reproduced too (same names, shapes, values).
        let orig = read_model_tensors(&src).unwrap();
        let mine = read_model_tensors(&out).unwrap();
        assert_eq!(orig.keys().collect::<Vec<_>>(), mine.keys().collect::<Vec<_>>());
        for (k, (s, v, _)) in &orig {
            assert_eq!(&mine[k].0, s, "{k}");
            assert!(mine[k].1.iter().zip(v).all(|(x, y)| x.to_bits() == y.to_bits()), "{k}");
        }
    }
}

fn tempdir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("patcher-test-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Write a copy of tiny-llama whose tensors are edited by `edit`, return the load error.
fn broken(tag: &str, edit: impl Fn(&mut Vec<(String, Vec<usize>, Vec<f32>)>)) -> String {
    let src = fixture("tiny-llama");
    let dir = tempdir(tag);
    std::fs::copy(src.join("config.json"), dir.join("config.json")).unwrap();
    let mut named: Vec<(String, Vec<usize>, Vec<f32>)> =
        read_model_tensors(&src).unwrap().into_iter().map(|(k, (s, v, _))| (k, s, v)).collect();
    edit(&mut named);
    std::fs::write(dir.join("model.safetensors"), safetensors_bytes(&named).unwrap()).unwrap();
    load_model(&dir, &Device::flex()).unwrap_err().to_string()
}

#[test]
fn broken_checkpoints_fail_naming_the_tensor() {
    let e = broken("missing", |n| n.retain(|(k, _, _)| k != "model.layers.1.mlp.up_proj.weight"));
    assert!(e.contains("model.layers.1.mlp.up_proj.weight") && e.contains("missing"), "{e}");
    let e = broken("extra", |n| n.push(("model.layers.9.foo.weight".into(), vec![2], vec![0.0, 1.0])));
    assert!(e.contains("model.layers.9.foo.weight") && e.contains("unexpected"), "{e}");
    let e = broken("shape", |n| {
        let t = n.iter_mut().find(|(k, _, _)| k == "model.layers.0.self_attn.k_proj.weight").unwrap();
        t.1 = vec![t.1[1], t.1[0]];
    });
    assert!(e.contains("model.layers.0.self_attn.k_proj.weight") && e.contains("shape"), "{e}");
    let e = broken("nan", |n| n[0].2[3] = f32::NAN);
    assert!(e.contains("non-finite"), "{e}");
}

#[test]
fn multiple_choice_log_likelihoods_match_transformers() {
    use patcher::eval::mc::choice_scores;
    use patcher::tokenizer::ChatTokenizer;
    let dir = fixture("tiny-llama");
    let model = load_model(&dir, &Device::flex()).unwrap();
    let tok = ChatTokenizer::from_dir(&dir).unwrap();
    let exp = json(&dir.join("expected_mc.json"));
    let mut worst = 0.0f64;
    for item in exp["items"].as_array().unwrap() {
        let prompt: Vec<u32> = serde_json::from_value(item["prompt_ids"].clone()).unwrap();
        // The chat template renders the same prompt ids as transformers' apply_chat_template.
        let q = item["question"].as_str().unwrap();
        assert_eq!(tok.encode_prompt(&[patcher::data::Message::new("user", q)]).unwrap(), prompt);
        let choices: Vec<Vec<u32>> = item["choices"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| serde_json::from_value(c["ids"].clone()).unwrap())
            .collect();
        let scores = choice_scores(&model, &prompt, &choices);
        for (c, (sum, mean)) in item["choices"].as_array().unwrap().iter().zip(&scores) {
            worst = worst.max((sum - c["logprob_sum"].as_f64().unwrap()).abs());
            worst = worst.max((mean - c["logprob_mean"].as_f64().unwrap()).abs());
        }
        let best = scores.iter().enumerate().max_by(|a, b| a.1.0.total_cmp(&b.1.0)).unwrap().0;
        assert_eq!(best as u64, item["best_by_sum"].as_u64().unwrap());
    }
    println!("MC log-likelihoods vs transformers: max |difference| {worst:.2e}");
    assert!(worst < 1e-3, "{worst}");
}
