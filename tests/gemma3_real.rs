//! The real Gemma 3 270M (`patcher fetch gemma3-270m`; `.ci/run` fetches it) against
//! transformers: `tests/fixtures/gemma3-270m/expected.json` holds, for three texts, the ten
//! largest logits at every position and 16 greedy tokens, computed by transformers from the
//! same GGUF file (its own dequantizer and Gemma 3 code; `scripts/make_fixtures.py
//! --gemma3-gguf`). Checked here: those logits (max difference printed), the argmax wherever
//! the reference's top two are apart, the greedy tokens with the KV cache, and the published
//! parameter count. 18 layers with a 262,144-token head. And `patcher chat --raw`: its prompt
//! is transformers' tokenization of the text (BOS first) and it prints the same continuation.
//!
//! Without the model this test is skipped, and fails when `CI` is set.

use std::path::Path;

use burn::prelude::*;
use patcher::io::hf::load_model;
use patcher::model::generate::{SamplingConfig, generate};
use patcher::model::llama::{int_tensor, to_vec_f32};
use patcher::testing::require;
use patcher::tokenizer::ChatTokenizer;

const MODEL: &str = "models/gemma3-270m";

/// Logit tolerance. The reference's logits reach 20-30; measured here: 6.5e-5 (Intel Sapphire
/// Rapids), 6.1e-5 (AMD EPYC), AVX2 kernels.
const TOL: f32 = 1e-3;

#[test]
fn gemma3_270m_matches_transformers() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join(MODEL);
    if require(dir.join("config.json").is_file().then_some(()), MODEL, ".ci/run runs `patcher fetch gemma3-270m`")
        .is_none()
    {
        return;
    }
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/gemma3-270m/expected.json");
    let exp: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(fixture).unwrap()).unwrap();
    let device = Device::flex();
    let model = load_model(&dir, &device).unwrap();
    assert!(model.cfg.gemma.is_some(), "{MODEL} is not read as Gemma 3");
    assert_eq!(model.cfg.num_params(), 268_098_176);
    let v = model.cfg.vocab_size;
    let tok = ChatTokenizer::from_dir(&dir).unwrap();
    let mut worst = 0.0f32;
    for case in exp["cases"].as_array().unwrap() {
        let ids: Vec<u32> = serde_json::from_value(case["ids"].clone()).unwrap();
        let top_ids: Vec<Vec<usize>> = serde_json::from_value(case["top_ids"].clone()).unwrap();
        let top_logits: Vec<Vec<f32>> = serde_json::from_value(case["top_logits"].clone()).unwrap();
        let text = case["text"].as_str().unwrap();
        assert_eq!(tok.encode_text(text).unwrap(), ids, "{text:?}: plain-text ids differ from transformers'");
        let t = ids.len();
        let logits = to_vec_f32(model.forward(int_tensor(ids.iter().map(|&i| i as i64).collect(), [1, t], &device)));
        for (pos, (want_ids, want)) in top_ids.iter().zip(&top_logits).enumerate() {
            let row = &logits[pos * v..(pos + 1) * v];
            for (&id, &w) in want_ids.iter().zip(want) {
                worst = worst.max((row[id] - w).abs());
            }
            if want[0] - want[1] > 2.0 * TOL {
                let argmax = (0..v).max_by(|&a, &b| row[a].total_cmp(&row[b])).unwrap();
                assert_eq!(argmax, want_ids[0], "{:?}: argmax at position {pos}", case["text"]);
            }
        }
        let want: Vec<u32> = serde_json::from_value(case["greedy_ids"].clone()).unwrap();
        let cfg = SamplingConfig { max_new_tokens: want.len(), ..Default::default() };
        let got = generate(&model, std::slice::from_ref(&ids), &[], 0, &cfg);
        assert_eq!(got[0], want, "{:?}: greedy tokens differ from transformers", case["text"]);
    }
    println!("Gemma 3 270M: max |logit difference| vs transformers over the top-10 logits = {worst:.3e}");
    assert!(worst < TOL, "max |logit difference| {worst:.3e} >= {TOL:.0e}");

    // The command line: `patcher chat --raw` continues the text as transformers does.
    let case = &exp["cases"][0];
    let (text, greedy): (String, Vec<u32>) = (
        serde_json::from_value(case["text"].clone()).unwrap(),
        serde_json::from_value(case["greedy_ids"].clone()).unwrap(),
    );
    assert!(!greedy.iter().any(|id| tok.stop_ids.contains(id)), "the reference continuation stops early");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_patcher"))
        .args(["chat", "--raw", "--max-new-tokens", &greedy.len().to_string(), "--model"])
        .arg(&dir)
        .arg(&text)
        .output()
        .unwrap();
    assert!(out.status.success(), "patcher chat --raw failed: {}", String::from_utf8_lossy(&out.stderr));
    let want = format!("{text}{}\n", tok.decode(&greedy, true).unwrap());
    assert_eq!(String::from_utf8_lossy(&out.stdout), want);
}
