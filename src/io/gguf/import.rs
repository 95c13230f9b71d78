//! `patcher import`: turn a GGUF `llama`, `qwen2` or `gemma3` model into a Hugging Face model
//! directory (`model.safetensors` in f32, `config.json`, `generation_config.json`,
//! `tokenizer.json`, `tokenizer_config.json`) that transformers and patcher's own loader read.
//!
//! Tensor names are mapped back through gguf-py's `tensor_mapping.py` (e.g. `blk.3.attn_q.weight`
//! -> `model.layers.3.self_attn.q_proj.weight`). For `llama`, llama.cpp's converter
//! (`convert_hf_to_gguf.py`, `LlamaModel.permute`) reorders the rows of q and k inside each head
//! so that rotary pairs are adjacent (GPT-J style); Hugging Face uses the half-split (GPT-NeoX)
//! layout, so the import undoes that permutation (see [`unpermute_qk`]). `qwen2` and `gemma3`
//! are stored unpermuted. Hyperparameters come from the `{arch}.*` keys of the GGUF spec.
//!
//! `gemma3` (text-only Gemma 3, `Gemma3ForCausalLM`): four norms per block (`attn_norm`,
//! `post_attention_norm`, `ffn_norm` = HF `pre_feedforward_layernorm`, `post_ffw_norm`) plus
//! per-head `attn_q_norm` / `attn_k_norm`. Gemma's RMSNorm scales by `1 + w` and llama.cpp's
//! converter (`Gemma3Model.modify_tensors`) stores `w + 1`, so the import subtracts 1 from every
//! norm weight. Layers alternate five sliding-window layers and one global one (llama.cpp's
//! `set_swa_pattern(6)`; all global when the file has no `attention.sliding_window`); the
//! sliding ones use rope base 10,000, the global ones `rope.freq_base`. The attention scale
//! (`query_pre_attn_scalar`) is llama.cpp's: the head size, except for the 27B model.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use super::tokenizer::{ChatTemplateSource, GgufTokenizer, TokenRef, tokenizer_from_gguf};
use super::{GgufError, GgufFile};
use crate::io::write_atomic;

/// Files written by [`import_gguf`]; `config.json` is written last, so its presence marks a
/// complete import.
pub const IMPORTED_FILES: [&str; 5] =
    ["tokenizer.json", "tokenizer_config.json", "generation_config.json", "model.safetensors", "config.json"];

/// What [`import_gguf`] did.
#[derive(Debug, Clone, PartialEq)]
pub struct ImportSummary {
    pub out_dir: PathBuf,
    pub architecture: String,
    pub n_tensors: usize,
    pub n_params: u64,
    /// Number of source tensors per GGUF element type, e.g. `{"F32": 61, "Q4_1": 210}`.
    pub by_type: BTreeMap<String, usize>,
    pub tied_embeddings: bool,
    pub n_layers: usize,
    pub vocab_size: usize,
    pub tokenizer_pre: String,
    /// `tokenizer.ggml.model` (`gpt2` or `llama`).
    pub tokenizer_model: String,
    pub chat_template: ChatTemplateSource,
}

impl fmt::Display for ImportSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let types: Vec<String> = self.by_type.iter().map(|(t, n)| format!("{n} {t}")).collect();
        write!(
            f,
            "imported {} model into {}: {} tensors ({}), {} parameters, {} layers, vocab {}{}, \
             tokenizer {} (pre {:?}){}",
            self.architecture,
            self.out_dir.display(),
            self.n_tensors,
            types.join(", "),
            self.n_params,
            self.n_layers,
            self.vocab_size,
            if self.tied_embeddings { ", tied embeddings" } else { "" },
            self.tokenizer_model,
            self.tokenizer_pre,
            match self.chat_template {
                ChatTemplateSource::File => ", chat template from the file",
                ChatTemplateSource::GemmaDefault => ", Gemma's turn format as chat template (the file has none)",
                ChatTemplateSource::Absent => ", no chat template",
            },
        )
    }
}

/// Per-architecture differences.
struct Arch {
    name: &'static str,
    hf_class: &'static str,
    /// q/k rows were permuted by the converter and must be restored.
    permute_qk: bool,
    /// q/k/v biases are required (qwen2) rather than optional (llama).
    qkv_bias: bool,
    /// Gemma 3's block: sandwich norms, q/k norms, norm weights stored as `1 + w`.
    gemma: bool,
}

const ARCHES: [Arch; 3] = [
    Arch { name: "llama", hf_class: "LlamaForCausalLM", permute_qk: true, qkv_bias: false, gemma: false },
    Arch { name: "qwen2", hf_class: "Qwen2ForCausalLM", permute_qk: false, qkv_bias: true, gemma: false },
    Arch { name: "gemma3", hf_class: "Gemma3ForCausalLM", permute_qk: false, qkv_bias: false, gemma: true },
];

/// Gemma 3's layer pattern (llama.cpp `set_swa_pattern(6)`, transformers' `sliding_window_pattern`):
/// every sixth layer attends globally, the others within the sliding window.
const GEMMA3_SWA_PATTERN: usize = 6;
/// Rope base of Gemma 3's sliding-window layers (llama.cpp `rope_freq_base_train_swa`,
/// transformers' `rope_local_base_freq`), unless the file says otherwise.
const GEMMA3_LOCAL_ROPE_THETA: f32 = 10_000.0;

/// Model hyperparameters from the `{arch}.*` metadata keys.
#[derive(Debug, Clone)]
struct HParams {
    n_layer: usize,
    n_embd: usize,
    n_ff: usize,
    n_head: usize,
    n_head_kv: usize,
    head_dim: usize,
    eps: f32,
    rope_theta: f32,
    n_ctx: usize,
    /// Gemma 3 only.
    gemma: Option<GemmaParams>,
}

/// Gemma 3's extra hyperparameters.
#[derive(Debug, Clone)]
struct GemmaParams {
    /// The window (the context length when the file has none: then no layer slides).
    sliding_window: usize,
    /// Per layer: whether it attends within the sliding window (else globally).
    sliding: Vec<bool>,
    rope_local_theta: f32,
    /// Queries are scaled by `query_pre_attn_scalar^-0.5`.
    query_pre_attn_scalar: usize,
    final_logit_softcapping: Option<f64>,
    attn_logit_softcapping: Option<f64>,
}

fn hparams(g: &GgufFile, arch: &Arch) -> Result<HParams, GgufError> {
    let key = |k: &str| format!("{}.{k}", arch.name);
    let u = |k: &str| g.get_u32(&key(k)).map(|v| v as usize);
    let bad = |msg: String| GgufError::Import { path: g.path().to_path_buf(), msg };
    let n_embd = u("embedding_length")?;
    let n_head = u("attention.head_count")?;
    let n_head_kv = g.get_u32_opt(&key("attention.head_count_kv"))?.map_or(n_head, |v| v as usize);
    if n_head == 0 || n_head_kv == 0 || n_head % n_head_kv != 0 {
        return Err(bad(format!("{n_head} attention heads cannot be shared by {n_head_kv} key/value heads")));
    }
    let head_dim = match g.get_u32_opt(&key("attention.key_length"))? {
        Some(k) => k as usize,
        None if n_embd % n_head == 0 => n_embd / n_head,
        None => {
            return Err(bad(format!("hidden size {n_embd} is not a multiple of {n_head} heads")));
        }
    };
    if let Some(v) = g.get_u32_opt(&key("attention.value_length"))?
        && v as usize != head_dim
    {
        return Err(bad(format!("value head size {v} differs from key head size {head_dim}")));
    }
    if let Some(r) = g.get_u32_opt(&key("rope.dimension_count"))?
        && r as usize != head_dim
    {
        return Err(bad(format!("partial rotary embeddings ({r} of {head_dim} dims) are not supported")));
    }
    if arch.permute_qk && head_dim % 2 != 0 {
        return Err(bad(format!("head size {head_dim} is odd")));
    }
    // The engine has no rope scaling (src/model/config.rs refuses it), so a model that needs
    // it is refused here rather than imported into a directory `patcher` cannot load.
    match g.get_str_opt(&key("rope.scaling.type"))? {
        None | Some("none") => {}
        Some(kind) => {
            let factor = g.get_f32_opt(&key("rope.scaling.factor"))?.map_or("?".into(), |f| f.to_string());
            return Err(bad(format!("rope scaling ({kind}, factor {factor}) is not implemented in the engine")));
        }
    }
    let (n_layer, n_ctx) = (u("block_count")?, u("context_length")?);
    let gemma = match arch.gemma {
        true => Some(gemma_params(g, arch, n_layer, n_embd, n_head, head_dim, n_ctx)?),
        false => None,
    };
    Ok(HParams {
        n_layer,
        n_embd,
        n_ff: u("feed_forward_length")?,
        n_head,
        n_head_kv,
        head_dim,
        eps: g.get_f32(&key("attention.layer_norm_rms_epsilon"))?,
        rope_theta: g.get_f32_opt(&key("rope.freq_base"))?.unwrap_or(10_000.0),
        n_ctx,
        gemma,
    })
}

fn gemma_params(
    g: &GgufFile,
    arch: &Arch,
    n_layer: usize,
    n_embd: usize,
    n_head: usize,
    head_dim: usize,
    n_ctx: usize,
) -> Result<GemmaParams, GgufError> {
    let key = |k: &str| format!("{}.{k}", arch.name);
    // As llama.cpp's gemma3 loader: a cap of 0 (its default) means none.
    let softcap = |k: &str| g.get_f32_opt(&key(k)).map(|v| v.filter(|&c| c != 0.0).map(pretty_f64));
    // Likewise a missing or zero window: every layer attends globally.
    let window = g.get_u32_opt(&key("attention.sliding_window"))?.filter(|&w| w > 0).map(|w| w as usize);
    Ok(GemmaParams {
        sliding_window: window.unwrap_or(n_ctx),
        sliding: (0..n_layer).map(|i| window.is_some() && (i + 1) % GEMMA3_SWA_PATTERN != 0).collect(),
        rope_local_theta: g.get_f32_opt(&key("rope.freq_base_swa"))?.unwrap_or(GEMMA3_LOCAL_ROPE_THETA),
        // As llama.cpp's gemma3 (`f_attention_scale`): the 27B model (62 layers) scales by
        // hidden / heads, every other size by the head size.
        query_pre_attn_scalar: if n_layer == 62 { n_embd / n_head } else { head_dim },
        final_logit_softcapping: softcap("final_logit_softcapping")?,
        attn_logit_softcapping: softcap("attn_logit_softcapping")?,
    })
}

/// The f64 whose shortest decimal form is that of `x` (1e-5f32 -> 1e-5, not 9.99999974e-6).
fn pretty_f64(x: f32) -> f64 {
    x.to_string().parse().unwrap_or(x as f64)
}

/// One output tensor: where it comes from and what it must look like.
#[derive(Debug, Clone, PartialEq)]
struct Plan {
    gguf_name: String,
    hf_name: String,
    /// Expected row-major shape.
    shape: Vec<usize>,
    /// `Some(n_head)`: undo the rotary row permutation with that many heads.
    unpermute: Option<usize>,
    /// Gemma norm stored as `1 + w`: subtract 1.
    minus_one: bool,
}

/// Map every GGUF tensor to its Hugging Face name and expected shape; error on any tensor that
/// has no equivalent and on missing required ones.
fn plan(g: &GgufFile, arch: &Arch, hp: &HParams) -> Result<Vec<Plan>, GgufError> {
    let bad = |msg: String| GgufError::Import { path: g.path().to_path_buf(), msg };
    let embd = g
        .tensor_info("token_embd.weight")
        .ok_or_else(|| GgufError::MissingTensor { path: g.path().to_path_buf(), name: "token_embd.weight".into() })?;
    let vocab = embd.shape().first().copied().unwrap_or(0);
    let (e, q, kv, ff) = (hp.n_embd, hp.n_head * hp.head_dim, hp.n_head_kv * hp.head_dim, hp.n_ff);
    let hd = hp.head_dim;
    let perm = |n: usize| arch.permute_qk.then_some(n);
    let mut plans = Vec::with_capacity(g.tensors().len());
    for t in g.tensors() {
        let (hf, shape, unpermute): (String, Vec<usize>, Option<usize>) = match t.name.as_str() {
            "token_embd.weight" => ("model.embed_tokens.weight".into(), vec![vocab, e], None),
            "output.weight" => ("lm_head.weight".into(), vec![vocab, e], None),
            "output_norm.weight" => ("model.norm.weight".into(), vec![e], None),
            name if arch.gemma => {
                let Some((layer, part)) = split_block(name) else {
                    return Err(unknown(g, arch, name));
                };
                if layer >= hp.n_layer {
                    return Err(bad(format!("tensor {name:?}: layer {layer} >= block_count {}", hp.n_layer)));
                }
                let (sub, shape) = match part {
                    "attn_norm.weight" => ("input_layernorm.weight", vec![e]),
                    "post_attention_norm.weight" => ("post_attention_layernorm.weight", vec![e]),
                    "ffn_norm.weight" => ("pre_feedforward_layernorm.weight", vec![e]),
                    "post_ffw_norm.weight" => ("post_feedforward_layernorm.weight", vec![e]),
                    "attn_q_norm.weight" => ("self_attn.q_norm.weight", vec![hd]),
                    "attn_k_norm.weight" => ("self_attn.k_norm.weight", vec![hd]),
                    "attn_q.weight" => ("self_attn.q_proj.weight", vec![q, e]),
                    "attn_k.weight" => ("self_attn.k_proj.weight", vec![kv, e]),
                    "attn_v.weight" => ("self_attn.v_proj.weight", vec![kv, e]),
                    "attn_output.weight" => ("self_attn.o_proj.weight", vec![e, q]),
                    "ffn_gate.weight" => ("mlp.gate_proj.weight", vec![ff, e]),
                    "ffn_up.weight" => ("mlp.up_proj.weight", vec![ff, e]),
                    "ffn_down.weight" => ("mlp.down_proj.weight", vec![e, ff]),
                    _ => return Err(unknown(g, arch, name)),
                };
                (format!("model.layers.{layer}.{sub}"), shape, None)
            }
            name => {
                let Some((layer, part)) = split_block(name) else {
                    return Err(unknown(g, arch, name));
                };
                if layer >= hp.n_layer {
                    return Err(bad(format!("tensor {name:?}: layer {layer} >= block_count {}", hp.n_layer)));
                }
                let (sub, shape, unpermute) = match part {
                    "attn_norm.weight" => ("input_layernorm.weight", vec![e], None),
                    "ffn_norm.weight" => ("post_attention_layernorm.weight", vec![e], None),
                    "attn_q.weight" => ("self_attn.q_proj.weight", vec![q, e], perm(hp.n_head)),
                    "attn_k.weight" => ("self_attn.k_proj.weight", vec![kv, e], perm(hp.n_head_kv)),
                    "attn_v.weight" => ("self_attn.v_proj.weight", vec![kv, e], None),
                    "attn_output.weight" => ("self_attn.o_proj.weight", vec![e, q], None),
                    "attn_q.bias" => ("self_attn.q_proj.bias", vec![q], perm(hp.n_head)),
                    "attn_k.bias" => ("self_attn.k_proj.bias", vec![kv], perm(hp.n_head_kv)),
                    "attn_v.bias" => ("self_attn.v_proj.bias", vec![kv], None),
                    "ffn_gate.weight" => ("mlp.gate_proj.weight", vec![ff, e], None),
                    "ffn_up.weight" => ("mlp.up_proj.weight", vec![ff, e], None),
                    "ffn_down.weight" => ("mlp.down_proj.weight", vec![e, ff], None),
                    _ => return Err(unknown(g, arch, name)),
                };
                (format!("model.layers.{layer}.{sub}"), shape, unpermute)
            }
        };
        if t.shape() != shape {
            return Err(bad(format!(
                "tensor {:?} has shape {:?}, expected {shape:?} from the {} hyperparameters",
                t.name,
                t.shape(),
                arch.name
            )));
        }
        let minus_one = arch.gemma && t.name.ends_with("norm.weight");
        plans.push(Plan { gguf_name: t.name.clone(), hf_name: hf, shape, unpermute, minus_one });
    }
    check_complete(g, arch, hp, &plans)?;
    Ok(plans)
}

fn unknown(g: &GgufFile, arch: &Arch, name: &str) -> GgufError {
    let hint =
        if name == "rope_freqs.weight" { " (Llama 3.1-style rope frequency scaling is not supported)" } else { "" };
    GgufError::Import {
        path: g.path().to_path_buf(),
        msg: format!("tensor {name:?} has no Hugging Face {} equivalent{hint}", arch.name),
    }
}

/// `"blk.12.attn_q.weight"` -> `(12, "attn_q.weight")`.
fn split_block(name: &str) -> Option<(usize, &str)> {
    let rest = name.strip_prefix("blk.")?;
    let (layer, part) = rest.split_once('.')?;
    Some((layer.parse().ok()?, part))
}

/// The tensors of one Gemma 3 block.
const GEMMA3_BLOCK: [&str; 13] = [
    "attn_norm.weight",
    "attn_q.weight",
    "attn_k.weight",
    "attn_v.weight",
    "attn_output.weight",
    "attn_q_norm.weight",
    "attn_k_norm.weight",
    "post_attention_norm.weight",
    "ffn_norm.weight",
    "ffn_gate.weight",
    "ffn_up.weight",
    "ffn_down.weight",
    "post_ffw_norm.weight",
];

fn check_complete(g: &GgufFile, arch: &Arch, hp: &HParams, plans: &[Plan]) -> Result<(), GgufError> {
    // Each block has at least 9 tensors; a block_count the file cannot hold is refused before
    // the list of required names is built (block_count = 2^32 - 1 would be 38 billion names).
    if hp.n_layer > g.tensors().len() / 9 {
        return Err(GgufError::Import {
            path: g.path().to_path_buf(),
            msg: format!(
                "block_count = {} needs at least {} tensors, the file has {}",
                hp.n_layer,
                hp.n_layer.saturating_mul(9),
                g.tensors().len()
            ),
        });
    }
    let have = |n: &str| g.tensor_info(n).is_some();
    let mut required = vec!["token_embd.weight".to_string(), "output_norm.weight".to_string()];
    let has_bias = arch.qkv_bias || have("blk.0.attn_q.bias");
    for i in 0..hp.n_layer {
        if arch.gemma {
            required.extend(GEMMA3_BLOCK.iter().map(|p| format!("blk.{i}.{p}")));
            continue;
        }
        let mut parts = vec![
            "attn_norm.weight",
            "ffn_norm.weight",
            "attn_q.weight",
            "attn_k.weight",
            "attn_v.weight",
            "attn_output.weight",
            "ffn_gate.weight",
            "ffn_up.weight",
            "ffn_down.weight",
        ];
        if has_bias {
            parts.extend(["attn_q.bias", "attn_k.bias", "attn_v.bias"]);
        }
        required.extend(parts.iter().map(|p| format!("blk.{i}.{p}")));
    }
    if let Some(name) = required.iter().find(|n| !have(n)) {
        return Err(GgufError::MissingTensor { path: g.path().to_path_buf(), name: name.clone() });
    }
    let expected = required.len() + usize::from(have("output.weight"));
    if plans.len() != expected {
        return Err(GgufError::Import {
            path: g.path().to_path_buf(),
            msg: format!("{} tensors, expected {expected} (some layers have biases, some not)", plans.len()),
        });
    }
    Ok(())
}

/// Undo llama.cpp's rotary row permutation of a q or k projection (`LlamaModel.permute` in
/// `convert_hf_to_gguf.py`): `w` is `rows x cols` row-major with `rows = n_head * head_dim`;
/// within each head, Hugging Face row `s * head_dim / 2 + j` is GGUF row `2 * j + s`
/// (`w.reshape(n_head, head_dim / 2, 2, cols).swapaxes(1, 2).reshape(rows, cols)`).
/// Biases are the `cols = 1` case.
///
/// # Panics
/// If `w.len() != rows * cols` or `rows` is not a multiple of `2 * n_head` (the importer checks
/// shapes against the hyperparameters first).
pub fn unpermute_qk(w: &[f32], rows: usize, cols: usize, n_head: usize) -> Vec<f32> {
    assert_eq!(w.len(), rows * cols, "unpermute_qk: size");
    assert!(n_head > 0 && rows.is_multiple_of(2 * n_head), "unpermute_qk: rows {rows}, heads {n_head}");
    let half = rows / n_head / 2;
    let mut out = Vec::with_capacity(w.len());
    for h in 0..n_head {
        for s in 0..2 {
            for j in 0..half {
                let src = h * 2 * half + 2 * j + s;
                out.extend_from_slice(&w[src * cols..(src + 1) * cols]);
            }
        }
    }
    out
}

/// Dequantize every planned tensor into one safetensors image (f32, `{"format": "pt"}`
/// metadata), built in a single buffer so peak memory is about one copy of the model.
fn safetensors_image(g: &GgufFile, plans: &[Plan]) -> Result<(Vec<u8>, u64), GgufError> {
    let mut header = serde_json::Map::new();
    header.insert("__metadata__".into(), json!({ "format": "pt" }));
    let mut offset = 0usize;
    for p in plans {
        let n: usize = p.shape.iter().product();
        header.insert(
            p.hf_name.clone(),
            json!({ "dtype": "F32", "shape": p.shape, "data_offsets": [offset, offset + 4 * n] }),
        );
        offset += 4 * n;
    }
    let mut head = serde_json::to_vec(&Value::Object(header))
        .map_err(|e| GgufError::Import { path: g.path().to_path_buf(), msg: format!("safetensors header: {e}") })?;
    head.resize(head.len().div_ceil(8) * 8, b' ');
    let mut out = Vec::with_capacity(8 + head.len() + offset);
    out.extend((head.len() as u64).to_le_bytes());
    out.extend(&head);
    let mut n_params = 0u64;
    for p in plans {
        let (shape, mut data) = g.tensor_f32(&p.gguf_name)?;
        debug_assert_eq!(shape, p.shape);
        if let Some(n_head) = p.unpermute {
            let cols = shape.get(1).copied().unwrap_or(1);
            data = unpermute_qk(&data, shape[0], cols, n_head);
        }
        if p.minus_one {
            data.iter_mut().for_each(|x| *x -= 1.0);
        }
        n_params += data.len() as u64;
        for x in &data {
            out.extend_from_slice(&x.to_le_bytes());
        }
    }
    Ok((out, n_params))
}

/// An import computed in memory: the files of the Hugging Face directory, in writing order
/// (`config.json` last), and the summary.
pub struct Converted {
    pub files: Vec<(&'static str, Vec<u8>)>,
    pub summary: ImportSummary,
}

/// Convert a parsed GGUF model to the files of a Hugging Face directory, without writing
/// anything: every check and every dequantization runs before [`import_gguf`] writes, so a
/// file that fails half-way leaves no partial directory. (Also the fuzz harness's view of the
/// import, see [`crate::fuzz`].)
pub fn convert_gguf(g: &GgufFile) -> Result<Converted, GgufError> {
    let gguf = g.path();
    let arch_name = g.get_str("general.architecture")?;
    let arch = ARCHES.iter().find(|a| a.name == arch_name).ok_or_else(|| GgufError::Import {
        path: gguf.to_path_buf(),
        msg: format!(
            "general.architecture = {arch_name:?} is not supported (supported: {})",
            ARCHES.map(|a| a.name).join(", ")
        ),
    })?;
    let hp = hparams(g, arch)?;
    let plans = plan(g, arch, &hp)?;
    let tok = tokenizer_from_gguf(g)?;
    let vocab = plans.iter().find(|p| p.gguf_name == "token_embd.weight").map_or(0, |p| p.shape[0]);
    if tok.vocab_size > vocab {
        return Err(GgufError::Import {
            path: gguf.to_path_buf(),
            msg: format!("{} tokens but only {vocab} embedding rows", tok.vocab_size),
        });
    }
    let tied = g.tensor_info("output.weight").is_none();
    let has_bias = g.tensor_info("blk.0.attn_q.bias").is_some();
    let json_bytes = |v: &Value| serde_json::to_vec_pretty(v).unwrap_or_default();
    let tok_json = tok.tokenizer.to_string(true).map_err(|e| GgufError::Tokenizer {
        path: gguf.to_path_buf(),
        msg: format!("serializing tokenizer.json: {e}"),
    })?;
    let (image, n_params) = safetensors_image(g, &plans)?;
    let config = match &hp.gemma {
        Some(gp) => gemma3_config(arch, &hp, gp, &tok, vocab, tied),
        None => model_config(arch, &hp, &tok, vocab, tied, has_bias),
    };
    let files = vec![
        ("tokenizer.json", tok_json.into_bytes()),
        ("tokenizer_config.json", json_bytes(&tokenizer_config(&tok, hp.n_ctx))),
        ("generation_config.json", json_bytes(&generation_config(&tok, arch))),
        ("model.safetensors", image),
        ("config.json", json_bytes(&config)),
    ];
    let mut by_type = BTreeMap::new();
    for t in g.tensors() {
        *by_type.entry(t.ggml_type.name().to_string()).or_insert(0) += 1;
    }
    let summary = ImportSummary {
        out_dir: PathBuf::new(),
        architecture: arch.name.to_string(),
        n_tensors: plans.len(),
        n_params,
        by_type,
        tied_embeddings: tied,
        n_layers: hp.n_layer,
        vocab_size: vocab,
        tokenizer_pre: tok.pre.clone(),
        tokenizer_model: tok.model.clone(),
        chat_template: tok.chat_template_source,
    };
    Ok(Converted { files, summary })
}

/// Import the GGUF model `gguf` into the Hugging Face directory `out_dir` (created if needed;
/// existing files of the same names are replaced atomically). Nothing is written unless the
/// whole conversion succeeds.
pub fn import_gguf(gguf: &Path, out_dir: &Path) -> Result<ImportSummary, GgufError> {
    let g = GgufFile::open(gguf)?;
    let Converted { files, mut summary } = convert_gguf(&g)?;
    // config.json marks a complete import: drop a previous one before rewriting the rest.
    match std::fs::remove_file(out_dir.join("config.json")) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            let path = out_dir.join("config.json");
            return Err(GgufError::Write { path, source: e });
        }
        _ => {}
    }
    for (name, data) in files {
        debug_assert!(IMPORTED_FILES.contains(&name));
        let path = out_dir.join(name);
        write_atomic(&path, &data).map_err(|source| GgufError::Write { path, source })?;
    }
    summary.out_dir = out_dir.to_path_buf();
    Ok(summary)
}

fn id_of(t: &Option<TokenRef>) -> Value {
    t.as_ref().map_or(Value::Null, |t| json!(t.id))
}

fn text_of(t: &Option<TokenRef>) -> Value {
    t.as_ref().map_or(Value::Null, |t| json!(t.text))
}

fn model_config(arch: &Arch, hp: &HParams, tok: &GgufTokenizer, vocab: usize, tied: bool, bias: bool) -> Value {
    let theta = pretty_f64(hp.rope_theta);
    let mut c = json!({
        "architectures": [arch.hf_class],
        "model_type": arch.name,
        "hidden_size": hp.n_embd,
        "intermediate_size": hp.n_ff,
        "num_hidden_layers": hp.n_layer,
        "num_attention_heads": hp.n_head,
        "num_key_value_heads": hp.n_head_kv,
        "head_dim": hp.head_dim,
        "rms_norm_eps": pretty_f64(hp.eps),
        "rope_theta": theta,
        "rope_scaling": Value::Null,
        // transformers >= 5 reads this; older versions read rope_theta / rope_scaling.
        "rope_parameters": { "rope_type": "default", "rope_theta": theta },
        "max_position_embeddings": hp.n_ctx,
        "vocab_size": vocab,
        "tie_word_embeddings": tied,
        "bos_token_id": id_of(&tok.bos),
        "eos_token_id": id_of(&tok.eos),
        "pad_token_id": id_of(&tok.pad),
        "hidden_act": "silu",
        "attention_dropout": 0.0,
        "initializer_range": 0.02,
        "use_cache": true,
        "torch_dtype": "float32",
        "dtype": "float32",
    });
    let extra = match arch.name {
        "qwen2" => json!({
            "use_sliding_window": false,
            "sliding_window": hp.n_ctx,
            "max_window_layers": hp.n_layer,
        }),
        _ => json!({ "attention_bias": bias, "mlp_bias": false, "pretraining_tp": 1 }),
    };
    if let (Value::Object(c), Value::Object(extra)) = (&mut c, extra) {
        c.extend(extra);
    }
    c
}

/// Gemma 3's `config.json` as transformers writes a `Gemma3TextConfig`, plus the hub-style
/// top-level `rope_theta` / `rope_local_base_freq` / `rope_scaling` that older versions read.
fn gemma3_config(arch: &Arch, hp: &HParams, gp: &GemmaParams, tok: &GgufTokenizer, vocab: usize, tied: bool) -> Value {
    let (global, local) = (pretty_f64(hp.rope_theta), pretty_f64(gp.rope_local_theta));
    let layer_types: Vec<&str> =
        gp.sliding.iter().map(|&s| if s { "sliding_attention" } else { "full_attention" }).collect();
    json!({
        "architectures": [arch.hf_class],
        "model_type": "gemma3_text",
        "vocab_size": vocab,
        "hidden_size": hp.n_embd,
        "intermediate_size": hp.n_ff,
        "num_hidden_layers": hp.n_layer,
        "num_attention_heads": hp.n_head,
        "num_key_value_heads": hp.n_head_kv,
        "head_dim": hp.head_dim,
        "hidden_activation": "gelu_pytorch_tanh",
        "max_position_embeddings": hp.n_ctx,
        "rms_norm_eps": pretty_f64(hp.eps),
        "rope_parameters": {
            "sliding_attention": { "rope_type": "default", "rope_theta": local },
            "full_attention": { "rope_type": "default", "rope_theta": global },
        },
        "rope_theta": global,
        "rope_local_base_freq": local,
        "rope_scaling": Value::Null,
        "query_pre_attn_scalar": gp.query_pre_attn_scalar,
        "sliding_window": gp.sliding_window,
        "layer_types": layer_types,
        "_sliding_window_pattern": GEMMA3_SWA_PATTERN,
        "final_logit_softcapping": gp.final_logit_softcapping,
        "attn_logit_softcapping": gp.attn_logit_softcapping,
        "attention_bias": false,
        "attention_dropout": 0.0,
        "use_bidirectional_attention": false,
        "initializer_range": 0.02,
        "use_cache": true,
        "tie_word_embeddings": tied,
        "bos_token_id": id_of(&tok.bos),
        "eos_token_id": id_of(&tok.eos),
        "pad_token_id": id_of(&tok.pad),
        "torch_dtype": "float32",
        "dtype": "float32",
    })
}

/// `generation_config.json`. For Gemma, generation also stops at `<end_of_turn>`, which ends
/// every turn of its chat format.
fn generation_config(tok: &GgufTokenizer, arch: &Arch) -> Value {
    let end_of_turn = tok.token_id("<end_of_turn>").filter(|_| arch.gemma);
    let eos = match (&tok.eos, end_of_turn) {
        (Some(e), Some(t)) if e.id != t => json!([e.id, t]),
        _ => id_of(&tok.eos),
    };
    json!({
        "bos_token_id": id_of(&tok.bos),
        "eos_token_id": eos,
        "pad_token_id": id_of(&tok.pad),
    })
}

fn tokenizer_config(tok: &GgufTokenizer, n_ctx: usize) -> Value {
    let mut c = json!({
        "tokenizer_class": "PreTrainedTokenizerFast",
        "add_bos_token": tok.add_bos,
        "add_eos_token": tok.add_eos,
        "bos_token": text_of(&tok.bos),
        "eos_token": text_of(&tok.eos),
        "pad_token": text_of(&tok.pad),
        "unk_token": text_of(&tok.unk),
        "clean_up_tokenization_spaces": false,
        "model_max_length": n_ctx,
    });
    if let (Some(t), Value::Object(c)) = (&tok.chat_template, &mut c) {
        c.insert("chat_template".into(), json!(t));
    }
    c
}

#[cfg(test)]
mod tests;
