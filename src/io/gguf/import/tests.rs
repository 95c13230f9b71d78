//! Unit tests of the GGUF -> Hugging Face import on tiny synthetic llama files.

use std::collections::BTreeMap;

use super::*;
use crate::io::gguf::GgufValue;
use crate::io::gguf::test_writer::Writer;
use crate::io::gguf::tokenizer::tests::tiny_tokenizer;

/// llama.cpp's forward permutation (HF -> GGUF): GGUF row `2j + s` of head `h` is HF row
/// `s * half + j`.
fn permute(w: &[f32], rows: usize, cols: usize, n_head: usize) -> Vec<f32> {
    let half = rows / n_head / 2;
    let mut out = vec![0.0; w.len()];
    for h in 0..n_head {
        for s in 0..2 {
            for j in 0..half {
                let (g, hf) = (h * 2 * half + 2 * j + s, h * 2 * half + s * half + j);
                out[g * cols..(g + 1) * cols].copy_from_slice(&w[hf * cols..(hf + 1) * cols]);
            }
        }
    }
    out
}

#[test]
fn unpermute_matches_the_index_formula_and_inverts_permute() {
    let (n_head, head_dim, cols) = (3, 6, 5);
    let rows = n_head * head_dim;
    let w: Vec<f32> = (0..rows * cols).map(|i| i as f32).collect();
    let u = unpermute_qk(&w, rows, cols, n_head);
    for h in 0..n_head {
        for s in 0..2 {
            for j in 0..head_dim / 2 {
                let hf_row = h * head_dim + s * (head_dim / 2) + j;
                let gguf_row = h * head_dim + 2 * j + s;
                for c in 0..cols {
                    assert_eq!(u[hf_row * cols + c], w[gguf_row * cols + c]);
                }
            }
        }
    }
    assert_eq!(permute(&u, rows, cols, n_head), w);
    assert_eq!(unpermute_qk(&permute(&w, rows, cols, n_head), rows, cols, n_head), w);
    // Bias: one column.
    assert_eq!(unpermute_qk(&[0., 1., 2., 3.], 4, 1, 1), [0., 2., 1., 3.]);
}

const VOCAB: usize = 263; // tiny_tokenizer's vocabulary
const E: usize = 8;
const FF: usize = 12;
const HEADS: usize = 2;
const KV_HEADS: usize = 1;
const HD: usize = 4;

type Tensors = BTreeMap<String, (Vec<usize>, Vec<f32>)>;

/// A 2-layer llama GGUF (F32 tensors, q/k stored permuted) and the HF tensors it must import to.
fn tiny_llama(untied: bool) -> (Writer, Tensors) {
    let mut w = Writer::new();
    w.str("general.architecture", "llama")
        .u32("llama.block_count", 2)
        .u32("llama.context_length", 64)
        .u32("llama.embedding_length", E as u32)
        .u32("llama.feed_forward_length", FF as u32)
        .u32("llama.attention.head_count", HEADS as u32)
        .u32("llama.attention.head_count_kv", KV_HEADS as u32)
        .u32("llama.rope.dimension_count", HD as u32)
        .f32("llama.attention.layer_norm_rms_epsilon", 1e-5)
        .f32("llama.rope.freq_base", 100000.0);
    tiny_tokenizer(&mut w, "smollm");
    let mut want = Tensors::new();
    let mut seed = 0.0f32;
    let mut add = |w: &mut Writer, gguf: &str, hf: &str, shape: Vec<usize>, heads: Option<usize>| {
        let n: usize = shape.iter().product();
        let data: Vec<f32> = (0..n).map(|i| seed + i as f32 * 0.001).collect();
        seed += 1.0;
        let stored = match heads {
            Some(h) => permute(&data, shape[0], shape.get(1).copied().unwrap_or(1), h),
            None => data.clone(),
        };
        w.tensor_f32(gguf, &shape, &stored);
        want.insert(hf.to_string(), (shape, data));
    };
    add(&mut w, "token_embd.weight", "model.embed_tokens.weight", vec![VOCAB, E], None);
    for l in 0..2 {
        let hf = |s: &str| format!("model.layers.{l}.{s}");
        let g = |s: &str| format!("blk.{l}.{s}");
        add(&mut w, &g("attn_norm.weight"), &hf("input_layernorm.weight"), vec![E], None);
        let q = HEADS * HD;
        let kv = KV_HEADS * HD;
        add(&mut w, &g("attn_q.weight"), &hf("self_attn.q_proj.weight"), vec![q, E], Some(HEADS));
        add(&mut w, &g("attn_k.weight"), &hf("self_attn.k_proj.weight"), vec![kv, E], Some(KV_HEADS));
        add(&mut w, &g("attn_v.weight"), &hf("self_attn.v_proj.weight"), vec![kv, E], None);
        add(&mut w, &g("attn_output.weight"), &hf("self_attn.o_proj.weight"), vec![E, q], None);
        add(&mut w, &g("ffn_norm.weight"), &hf("post_attention_layernorm.weight"), vec![E], None);
        add(&mut w, &g("ffn_gate.weight"), &hf("mlp.gate_proj.weight"), vec![FF, E], None);
        add(&mut w, &g("ffn_up.weight"), &hf("mlp.up_proj.weight"), vec![FF, E], None);
        add(&mut w, &g("ffn_down.weight"), &hf("mlp.down_proj.weight"), vec![E, FF], None);
    }
    add(&mut w, "output_norm.weight", "model.norm.weight", vec![E], None);
    if untied {
        add(&mut w, "output.weight", "lm_head.weight", vec![VOCAB, E], None);
    }
    (w, want)
}

/// A temporary directory removed on drop.
#[derive(Debug)]
struct TestDir(PathBuf);

impl Drop for TestDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Write `w` to a temporary file and import it; returns the output directory and the guard
/// that removes everything.
fn import(w: &Writer, name: &str) -> Result<(ImportSummary, PathBuf, TestDir), GgufError> {
    let dir = std::env::temp_dir().join(format!("patcher-gguf-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let guard = TestDir(dir.clone());
    let file = dir.join("model.gguf");
    std::fs::write(&file, w.to_bytes()).unwrap();
    let out = dir.join("hf");
    import_gguf(&file, &out).map(|s| (s, out, guard))
}

fn read_json(p: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap()
}

#[test]
fn imports_tiny_llama_with_unpermuted_qk() {
    for untied in [false, true] {
        let (w, want) = tiny_llama(untied);
        let (summary, out, _dir) = import(&w, &format!("llama-{untied}")).unwrap();
        assert_eq!(summary.n_tensors, want.len());
        assert_eq!(summary.tied_embeddings, !untied);
        let params: usize = want.values().map(|(_, d)| d.len()).sum();
        assert_eq!(summary.n_params, params as u64);
        assert_eq!(summary.by_type, BTreeMap::from([("F32".to_string(), want.len())]));

        let bytes = std::fs::read(out.join("model.safetensors")).unwrap();
        let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
        let format = meta.metadata().as_ref().and_then(|m| m.get("format").cloned());
        assert_eq!(format.as_deref(), Some("pt"));
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        assert_eq!(st.len(), want.len());
        for (name, (shape, data)) in &want {
            let t = st.tensor(name).unwrap();
            assert_eq!(t.dtype(), safetensors::Dtype::F32);
            assert_eq!(t.shape(), shape.as_slice(), "{name}");
            let got: Vec<f32> =
                t.data().chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
            assert_eq!(&got, data, "{name}");
        }

        let c = read_json(&out.join("config.json"));
        assert_eq!(c["architectures"], json!(["LlamaForCausalLM"]));
        assert_eq!(c["hidden_size"], E);
        assert_eq!(c["intermediate_size"], FF);
        assert_eq!(c["num_attention_heads"], HEADS);
        assert_eq!(c["num_key_value_heads"], KV_HEADS);
        assert_eq!(c["head_dim"], HD);
        assert_eq!(c["vocab_size"], VOCAB);
        assert_eq!(c["rms_norm_eps"], 1e-5);
        assert_eq!(c["rope_theta"], 100000.0);
        assert_eq!(c["max_position_embeddings"], 64);
        assert_eq!(c["tie_word_embeddings"], !untied);
        assert_eq!((c["bos_token_id"].clone(), c["eos_token_id"].clone()), (json!(1), json!(2)));
        assert_eq!(c["attention_bias"], false);

        let tc = read_json(&out.join("tokenizer_config.json"));
        assert_eq!(tc["eos_token"], "<|im_end|>");
        assert_eq!(tc["unk_token"], "<|endoftext|>");
        assert_eq!(tc["chat_template"], "{{ messages }}");
        assert_eq!(tc["add_bos_token"], false);
        let g = read_json(&out.join("generation_config.json"));
        assert_eq!(g["pad_token_id"], 2);
        let tok = tokenizers::Tokenizer::from_file(out.join("tokenizer.json")).unwrap();
        assert_eq!(tok.encode("<|im_end|> the", false).unwrap().get_ids(), [2, 261]);
    }
}

#[test]
fn import_errors_name_the_problem() {
    let err = |w: &Writer, name: &str| import(w, name).unwrap_err().to_string();

    let (mut w, _) = tiny_llama(false);
    w.tensor_f32("rope_freqs.weight", &[2], &[1.0, 1.0]);
    assert!(err(&w, "rope").contains("rope_freqs.weight"));

    let mut w = Writer::new();
    w.str("general.architecture", "falcon");
    let e = err(&w, "arch");
    assert!(e.contains("\"falcon\"") && e.contains("llama, qwen2"), "{e}");

    let (mut w, _) = tiny_llama(false);
    w.tensor_f32("blk.0.attn_q.bias", &[HEADS * HD], &[0.0; HEADS * HD]);
    assert!(err(&w, "bias").contains("blk.0.attn_k.bias"));

    let (mut w, _) = tiny_llama(false);
    w.tensor_f32("blk.1.ffn_up.extra", &[1], &[0.0]);
    assert!(err(&w, "extra").contains("blk.1.ffn_up.extra"));

    let (mut w, _) = tiny_llama(false);
    w.set("llama.feed_forward_length", GgufValue::U32(10));
    let e = err(&w, "shape");
    assert!(e.contains("blk.0.ffn_gate.weight") && e.contains("[12, 8]"), "{e}");
    assert!(e.contains("expected [10, 8]"), "{e}");

    let (mut w, _) = tiny_llama(false);
    w.set("tokenizer.ggml.pre", GgufValue::String("deepseek-llm".into()));
    let e = err(&w, "pre");
    assert!(e.contains("\"deepseek-llm\"") && e.contains("smollm"), "{e}");

    let (mut w, _) = tiny_llama(false);
    w.set("llama.attention.head_count", GgufValue::String("2".into()));
    let e = err(&w, "heads");
    assert!(e.contains("llama.attention.head_count") && e.contains("string"), "{e}");
}

#[test]
fn qwen2_keeps_rows_and_needs_biases() {
    let (w, want) = tiny_llama(true);
    // Re-label the same file as qwen2: q/k must then be copied as stored (permuted here).
    let bytes = w.to_bytes();
    let f = GgufFile::from_bytes("x", bytes).unwrap();
    let mut q = Writer::new();
    for (k, v) in f.metadata() {
        let k = k.replace("llama.", "qwen2.");
        let v = if k == "general.architecture" { GgufValue::String("qwen2".into()) } else { v.clone() };
        q.kv(&k, v);
    }
    for t in f.tensors() {
        q.tensor(&t.name, &t.dims, t.ggml_type, f.tensor_bytes(&t.name).unwrap().to_vec());
    }
    assert!(import(&q, "qwen-nobias").unwrap_err().to_string().contains("attn_q.bias"));
    for l in 0..2 {
        for (p, n) in [("q", HEADS * HD), ("k", KV_HEADS * HD), ("v", KV_HEADS * HD)] {
            let b: Vec<f32> = (0..n).map(|i| i as f32).collect();
            q.tensor_f32(&format!("blk.{l}.attn_{p}.bias"), &[n], &b);
        }
    }
    let (s, out, _dir) = import(&q, "qwen").unwrap();
    assert_eq!(s.architecture, "qwen2");
    let c = read_json(&out.join("config.json"));
    assert_eq!(c["architectures"], json!(["Qwen2ForCausalLM"]));
    let bytes = std::fs::read(out.join("model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let qw = st.tensor("model.layers.0.self_attn.q_proj.weight").unwrap();
    let (shape, hf) = &want["model.layers.0.self_attn.q_proj.weight"];
    let stored = permute(hf, shape[0], shape[1], HEADS);
    let got: Vec<f32> = qw.data().chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
    assert_eq!(got, stored);
    let qb = st.tensor("model.layers.1.self_attn.k_proj.bias").unwrap();
    assert_eq!(qb.shape(), [KV_HEADS * HD]);
}

/// A Gemma 3 GGUF of `layers` blocks (F32 tensors, norms stored as `1 + w` as llama.cpp's
/// converter writes them) over the tiny SentencePiece vocabulary, and the HF tensors it must
/// import to.
fn tiny_gemma3(layers: usize) -> (Writer, Tensors) {
    use crate::io::gguf::tokenizer::tests::tiny_sentencepiece;
    const V: usize = 272; // tiny_sentencepiece's vocabulary
    let mut w = Writer::new();
    tiny_sentencepiece(&mut w);
    w.u32("gemma3.block_count", layers as u32)
        .u32("gemma3.context_length", 64)
        .u32("gemma3.embedding_length", E as u32)
        .u32("gemma3.feed_forward_length", FF as u32)
        .u32("gemma3.attention.head_count", HEADS as u32)
        .u32("gemma3.attention.head_count_kv", KV_HEADS as u32)
        .u32("gemma3.attention.key_length", HD as u32)
        .u32("gemma3.attention.value_length", HD as u32)
        .u32("gemma3.attention.sliding_window", 16)
        .f32("gemma3.attention.layer_norm_rms_epsilon", 1e-6)
        .f32("gemma3.rope.freq_base", 1e6);
    let mut want = Tensors::new();
    let mut seed = 0.0f32;
    let mut add = |w: &mut Writer, gguf: &str, hf: &str, shape: Vec<usize>| {
        let n: usize = shape.iter().product();
        let data: Vec<f32> = (0..n).map(|i| seed + i as f32 * 0.001 - 0.5).collect();
        seed += 0.25;
        let stored: Vec<f32> =
            if gguf.ends_with("norm.weight") { data.iter().map(|x| x + 1.0).collect() } else { data };
        // The expected value is what f32 arithmetic gives back, as transformers computes it.
        let back =
            if gguf.ends_with("norm.weight") { stored.iter().map(|x| x - 1.0).collect() } else { stored.clone() };
        w.tensor_f32(gguf, &shape, &stored);
        want.insert(hf.to_string(), (shape, back));
    };
    add(&mut w, "token_embd.weight", "model.embed_tokens.weight", vec![V, E]);
    let (q, kv) = (HEADS * HD, KV_HEADS * HD);
    for l in 0..layers {
        let hf = |s: &str| format!("model.layers.{l}.{s}");
        let g = |s: &str| format!("blk.{l}.{s}");
        add(&mut w, &g("attn_norm.weight"), &hf("input_layernorm.weight"), vec![E]);
        add(&mut w, &g("attn_q.weight"), &hf("self_attn.q_proj.weight"), vec![q, E]);
        add(&mut w, &g("attn_k.weight"), &hf("self_attn.k_proj.weight"), vec![kv, E]);
        add(&mut w, &g("attn_v.weight"), &hf("self_attn.v_proj.weight"), vec![kv, E]);
        add(&mut w, &g("attn_output.weight"), &hf("self_attn.o_proj.weight"), vec![E, q]);
        add(&mut w, &g("attn_q_norm.weight"), &hf("self_attn.q_norm.weight"), vec![HD]);
        add(&mut w, &g("attn_k_norm.weight"), &hf("self_attn.k_norm.weight"), vec![HD]);
        add(&mut w, &g("post_attention_norm.weight"), &hf("post_attention_layernorm.weight"), vec![E]);
        add(&mut w, &g("ffn_norm.weight"), &hf("pre_feedforward_layernorm.weight"), vec![E]);
        add(&mut w, &g("ffn_gate.weight"), &hf("mlp.gate_proj.weight"), vec![FF, E]);
        add(&mut w, &g("ffn_up.weight"), &hf("mlp.up_proj.weight"), vec![FF, E]);
        add(&mut w, &g("ffn_down.weight"), &hf("mlp.down_proj.weight"), vec![E, FF]);
        add(&mut w, &g("post_ffw_norm.weight"), &hf("post_feedforward_layernorm.weight"), vec![E]);
    }
    add(&mut w, "output_norm.weight", "model.norm.weight", vec![E]);
    (w, want)
}

#[test]
fn imports_gemma3_with_norms_shifted_back_and_its_layer_pattern() {
    let (w, want) = tiny_gemma3(7);
    let (summary, out, _dir) = import(&w, "gemma3").unwrap();
    assert_eq!((summary.architecture.as_str(), summary.n_tensors, summary.n_layers), ("gemma3", 2 + 7 * 13, 7));
    assert!(summary.tied_embeddings);
    assert_eq!(summary.chat_template, ChatTemplateSource::GemmaDefault);
    assert!(summary.to_string().contains("Gemma's turn format"), "{summary}");
    let bytes = std::fs::read(out.join("model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    assert_eq!(st.len(), want.len());
    for (name, (shape, data)) in &want {
        let t = st.tensor(name).unwrap();
        assert_eq!(t.shape(), shape.as_slice(), "{name}");
        let got: Vec<f32> = t.data().chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
        assert_eq!(&got, data, "{name}");
    }

    let c = read_json(&out.join("config.json"));
    assert_eq!(
        (c["architectures"].clone(), c["model_type"].clone()),
        (json!(["Gemma3ForCausalLM"]), json!("gemma3_text"))
    );
    assert_eq!((c["head_dim"].clone(), c["query_pre_attn_scalar"].clone()), (json!(HD), json!(HD)));
    let mut layer_types = vec!["sliding_attention"; 7];
    layer_types[5] = "full_attention"; // every sixth layer attends globally
    assert_eq!(c["layer_types"], json!(layer_types));
    assert_eq!(c["sliding_window"], 16);
    assert_eq!(c["rope_parameters"]["full_attention"], json!({ "rope_type": "default", "rope_theta": 1e6 }));
    assert_eq!(c["rope_parameters"]["sliding_attention"], json!({ "rope_type": "default", "rope_theta": 1e4 }));
    assert_eq!((c["rope_theta"].clone(), c["rope_local_base_freq"].clone()), (json!(1e6), json!(1e4)));
    assert_eq!((c["rms_norm_eps"].clone(), c["hidden_activation"].clone()), (json!(1e-6), json!("gelu_pytorch_tanh")));
    assert_eq!(c["final_logit_softcapping"], Value::Null);
    assert_eq!(
        (c["bos_token_id"].clone(), c["eos_token_id"].clone(), c["pad_token_id"].clone()),
        (json!(2), json!(1), json!(0))
    );
    let g = read_json(&out.join("generation_config.json"));
    assert_eq!(g["eos_token_id"], json!([1, 5]), "generation stops at <eos> and <end_of_turn>");
    let tc = read_json(&out.join("tokenizer_config.json"));
    assert_eq!(tc["chat_template"], crate::io::gguf::tokenizer::GEMMA_CHAT_TEMPLATE);
    assert_eq!((tc["bos_token"].clone(), tc["add_bos_token"].clone()), (json!("<bos>"), json!(true)));

    // Without a sliding window every layer is global (llama.cpp's gemma3 loader).
    let (mut w, _) = tiny_gemma3(2);
    w.set("gemma3.attention.sliding_window", GgufValue::U32(0));
    let (_, out, _dir) = import(&w, "gemma3-noswa").unwrap();
    let c = read_json(&out.join("config.json"));
    assert_eq!(c["layer_types"], json!(["full_attention", "full_attention"]));
}

#[test]
fn gemma3_errors_name_the_tensor() {
    let err = |w: &Writer, name: &str| import(w, name).unwrap_err().to_string();
    // A block without its post-feed-forward norm.
    let (w, _) = tiny_gemma3(2);
    let f = GgufFile::from_bytes("x", w.to_bytes()).unwrap();
    let mut short = Writer::new();
    for (k, v) in f.metadata() {
        short.kv(k, v.clone());
    }
    for t in f.tensors().iter().filter(|t| t.name != "blk.1.post_ffw_norm.weight") {
        short.tensor(&t.name, &t.dims, t.ggml_type, f.tensor_bytes(&t.name).unwrap().to_vec());
    }
    assert!(err(&short, "gemma3-missing").contains("\"blk.1.post_ffw_norm.weight\""));
    // A q norm sized by the hidden size instead of the head size.
    let (mut w, _) = tiny_gemma3(1);
    w.set("gemma3.attention.key_length", GgufValue::U32(2));
    w.set("gemma3.attention.value_length", GgufValue::U32(2));
    let e = err(&w, "gemma3-shape");
    assert!(e.contains("blk.0.attn_q.weight") && e.contains("expected [4, 8]"), "{e}");
    // q/k biases have no Gemma 3 equivalent.
    let (mut w, _) = tiny_gemma3(1);
    w.tensor_f32("blk.0.attn_q.bias", &[HEADS * HD], &[0.0; HEADS * HD]);
    let e = err(&w, "gemma3-bias");
    assert!(e.contains("blk.0.attn_q.bias") && e.contains("gemma3"), "{e}");
    // Rope scaling (Gemma 3 4B and up): the engine has none, so the import refuses it
    // instead of writing a directory that would not load.
    let (mut w, _) = tiny_gemma3(1);
    w.str("gemma3.rope.scaling.type", "linear").f32("gemma3.rope.scaling.factor", 8.0);
    let e = err(&w, "gemma3-rope-scaling");
    assert!(e.contains("rope scaling (linear, factor 8)") && e.contains("not implemented"), "{e}");
}
