//! The Gemma 3 text decoder (Gemma Team, "Gemma 3 Technical Report", 2025), as in Hugging Face
//! transformers' `modeling_gemma3.py` (`Gemma3ForCausalLM`, `model_type = "gemma3_text"`).
//!
//! Gemma 3 runs on the same flat parameter list, optimizers, checkpoints and losses as the
//! Llama family ([`crate::model::llama`]); this file holds what differs:
//! - **Norms.** Every RMSNorm multiplies by `(1 + w)`, not `w` (checkpoints store `w` centred
//!   on zero), and each block has four of them: `input_layernorm` before attention,
//!   `post_attention_layernorm` on the attention's output *before* the residual add,
//!   `pre_feedforward_layernorm` and `post_feedforward_layernorm` around the MLP:
//!   `x = x + post_attn(attn(in(x)))`, `x = x + post_ffn(mlp(pre_ffn(x)))`.
//! - **q/k norms.** RMSNorms over the head dimension on each head's query and key, after the
//!   projections and before the rotary embedding.
//! - **Attention scale** `query_pre_attn_scalar^-1/2` (not `head_dim^-1/2`).
//! - **Local and global layers.** `layer_types` marks each layer `sliding_attention` (a query
//!   sees the `sliding_window` most recent positions, itself included: `q - k < window`) with
//!   rotary base `rope_local_base_freq` (10,000), or `full_attention` with `rope_theta`
//!   (1,000,000). Gemma 3 270M: 18 layers, every sixth global.
//! - **MLP** `down(gelu_tanh(gate(h)) * up(h))` (`hidden_activation = "gelu_pytorch_tanh"`).
//! - **Embedding scale**: token embeddings are multiplied by `sqrt(hidden_size)` (rounded to
//!   f32, as transformers does); the tied head uses the unscaled matrix.
//! - Multi-query attention (one key/value head at 270M) is the grouped-query path with
//!   `g = num_heads`.
//!
//! Not implemented (rejected by [`Gemma3Config::from_hf`], naming the field): logit
//! soft-capping (Gemma 2; `null` in every Gemma 3 config), rope scaling (the 4B+ models' global
//! layers), bidirectional attention (EmbeddingGemma).

use burn::prelude::*;
use burn::tensor::activation::gelu_approximate;
use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::model::config::HfConfig;
use crate::model::llama::rms_norm;

/// The Gemma 3 settings on top of the shared [`crate::model::LlamaConfig`] fields.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Gemma3Config {
    /// Attention scores are scaled by `query_pre_attn_scalar^-1/2`.
    pub query_pre_attn_scalar: usize,
    /// How many positions (the query's own included) a sliding layer's query sees.
    pub sliding_window: usize,
    /// Per layer: `true` for `sliding_attention`, `false` for `full_attention`.
    pub sliding: Vec<bool>,
    /// Rotary base of the sliding layers (`rope_local_base_freq`); global layers use
    /// `LlamaConfig::rope_theta`.
    pub rope_local_theta: f64,
}

/// Gemma 3 270M's `config.json` as published on the hub (transformers 4.55 style: top-level
/// rope bases, the layer pattern as `_sliding_window_pattern`): the unit tests' reference and
/// the benchmark's shape, which goes through [`crate::model::LlamaConfig::from_hf`] as the
/// checkpoint's would.
pub const HUB_270M_CONFIG: &str = r#"{"_sliding_window_pattern": 6, "architectures": ["Gemma3ForCausalLM"],
    "attention_bias": false, "attn_logit_softcapping": null, "bos_token_id": 2, "eos_token_id": 1,
    "final_logit_softcapping": null, "head_dim": 256, "hidden_activation": "gelu_pytorch_tanh",
    "hidden_size": 640, "intermediate_size": 2048, "max_position_embeddings": 32768,
    "model_type": "gemma3_text", "num_attention_heads": 4, "num_hidden_layers": 18,
    "num_key_value_heads": 1, "pad_token_id": 0, "query_pre_attn_scalar": 256, "rms_norm_eps": 1e-06,
    "rope_local_base_freq": 10000.0, "rope_scaling": null, "rope_theta": 1000000.0,
    "sliding_window": 512, "torch_dtype": "bfloat16", "use_bidirectional_attention": false,
    "vocab_size": 262144}"#;

/// The model types this file implements.
pub fn is_gemma3(model_type: &str) -> bool {
    model_type == "gemma3_text"
}

impl Gemma3Config {
    /// The Gemma 3 part of a Hugging Face `config.json` (transformers 5's nested
    /// `rope_parameters` or the hub's `rope_theta` / `rope_local_base_freq`; `layer_types` or
    /// the older `sliding_window_pattern`). Returns it with the global rotary base.
    pub fn from_hf(hf: &HfConfig, source: &str) -> crate::error::Result<(Self, f64)> {
        let bad = |field: &str, why: String| Error::Config { file: source.to_string(), field: field.to_string(), why };
        let act = hf.hidden_activation.as_deref().or(hf.hidden_act.as_deref()).unwrap_or("gelu_pytorch_tanh");
        if act != "gelu_pytorch_tanh" {
            return Err(bad("hidden_activation", format!("only gelu_pytorch_tanh is implemented, got `{act}`")));
        }
        for (field, v) in [
            ("final_logit_softcapping", &hf.final_logit_softcapping),
            ("attn_logit_softcapping", &hf.attn_logit_softcapping),
        ] {
            if let Some(v) = v
                && !v.is_null()
            {
                return Err(bad(field, format!("logit soft-capping is not implemented, got {v}")));
            }
        }
        if hf.use_bidirectional_attention == Some(true) {
            return Err(bad("use_bidirectional_attention", "only causal attention is implemented".into()));
        }
        if let Some(s) = &hf.rope_scaling
            && !s.is_null()
        {
            return Err(bad("rope_scaling", format!("rope scaling is not implemented: {s}")));
        }
        let n = hf.num_hidden_layers;
        let sliding = match (&hf.layer_types, hf.sliding_window_pattern) {
            (Some(types), _) => {
                if types.len() != n {
                    return Err(bad("layer_types", format!("{} entries for {n} layers", types.len())));
                }
                types
                    .iter()
                    .map(|t| match t.as_str() {
                        "sliding_attention" => Ok(true),
                        "full_attention" => Ok(false),
                        other => Err(bad("layer_types", format!("unknown layer type `{other}`"))),
                    })
                    .collect::<crate::error::Result<Vec<_>>>()?
            }
            (None, pattern) => {
                let p = pattern.unwrap_or(6).max(1);
                (0..n).map(|i| (i + 1) % p != 0).collect()
            }
        };
        // transformers 5: {"sliding_attention": {"rope_theta", "rope_type"}, "full_attention": {..}}.
        let nested = |kind: &str, key: &str| {
            hf.rope_parameters.as_ref().and_then(|p| p.get(kind)).and_then(|p| p.get(key)).cloned()
        };
        for kind in ["sliding_attention", "full_attention"] {
            if let Some(t) = nested(kind, "rope_type")
                && t.as_str() != Some("default")
            {
                return Err(bad(
                    &format!("rope_parameters.{kind}.rope_type"),
                    format!("only default rope is implemented, got {t}"),
                ));
            }
        }
        let global = nested("full_attention", "rope_theta").and_then(|v| v.as_f64()).or(hf.rope_theta).unwrap_or(1e6);
        let local = nested("sliding_attention", "rope_theta")
            .and_then(|v| v.as_f64())
            .or(hf.rope_local_base_freq)
            .unwrap_or(10_000.0);
        let head_dim = hf.head_dim.unwrap_or(256);
        let cfg = Self {
            query_pre_attn_scalar: hf.query_pre_attn_scalar.unwrap_or(head_dim),
            sliding_window: hf.sliding_window.unwrap_or(4096),
            sliding,
            rope_local_theta: local,
        };
        if cfg.sliding_window == 0 {
            return Err(bad("sliding_window", "must be > 0".into()));
        }
        if cfg.query_pre_attn_scalar == 0 {
            return Err(bad("query_pre_attn_scalar", "must be > 0".into()));
        }
        Ok((cfg, global))
    }

    /// The Gemma 3 keys of `config.json`, as transformers 5 writes them, plus the hub's
    /// top-level `rope_local_base_freq` so that older versions read the file too.
    pub fn hf_json_fields(&self, rope_theta: f64, o: &mut serde_json::Map<String, serde_json::Value>) {
        let types: Vec<&str> =
            self.sliding.iter().map(|s| if *s { "sliding_attention" } else { "full_attention" }).collect();
        let rope = serde_json::json!({
            "sliding_attention": {"rope_type": "default", "rope_theta": self.rope_local_theta},
            "full_attention": {"rope_type": "default", "rope_theta": rope_theta},
        });
        for (k, v) in [
            ("hidden_activation", "gelu_pytorch_tanh".into()),
            ("query_pre_attn_scalar", self.query_pre_attn_scalar.into()),
            ("sliding_window", self.sliding_window.into()),
            ("layer_types", types.into()),
            ("rope_parameters", rope),
            ("rope_local_base_freq", self.rope_local_theta.into()),
            ("final_logit_softcapping", serde_json::Value::Null),
            ("attn_logit_softcapping", serde_json::Value::Null),
            ("attention_bias", false.into()),
            ("use_bidirectional_attention", false.into()),
        ] {
            o.insert(k.into(), v);
        }
        o.remove("hidden_act");
    }
}

/// Gemma's RMSNorm: `x / sqrt(mean(x²) + eps) * (1 + w)`, `w` stored `[1, d]`.
pub fn norm(x: Tensor<3>, w: &Tensor<2>, eps: f64) -> Tensor<3> {
    rms_norm(x, w.clone().add_scalar(1.0), eps)
}

/// The q/k norm: [`norm`] over the head dimension of `x` `[B, T, heads * hd]`.
pub fn head_norm(x: Tensor<3>, w: &Tensor<2>, eps: f64) -> Tensor<3> {
    let [b, t, n] = x.dims();
    let hd = w.dims()[1];
    norm(x.reshape([b, t * (n / hd), hd]), w, eps).reshape([b, t, n]) // (B, T, heads*hd)
}

/// Gated MLP with the tanh-approximated GELU: `down(gelu_tanh(gate(h)) * up(h))`.
pub fn mlp(gate: &Tensor<2>, up: &Tensor<2>, down: &Tensor<2>, h: Tensor<3>) -> Tensor<3> {
    use crate::model::llama::linear;
    let g = linear(h.clone(), gate.clone()); // (B, T, f)
    let u = linear(h, up.clone()); // (B, T, f)
    linear(gelu_approximate(g) * u, down.clone()) // (B, T, d)
}

/// The additive mask of a sliding layer, `[B, 1, T, S]` flattened: as
/// [`crate::model::llama`]'s causal mask, and a query also sees only keys fewer than `window`
/// positions back. Positions count real keys (`key_valid`), so left padding does not shrink
/// the window (the same positions generation feeds the rotary embedding).
pub fn sliding_mask(key_valid: &[Vec<bool>], t: usize, past: usize, window: usize) -> Vec<f32> {
    let s = past + t;
    let mut m = Vec::with_capacity(key_valid.len() * t * s);
    for row in key_valid {
        assert_eq!(row.len(), s, "key_valid must cover cached + new keys: {} != {s}", row.len());
        // pos[j] = number of real keys before j: the position of key j when it is real.
        let pos: Vec<usize> = row
            .iter()
            .scan(0usize, |n, v| {
                let p = *n;
                *n += *v as usize;
                Some(p)
            })
            .collect();
        for q in 0..t {
            let qi = past + q;
            for (k, valid) in row.iter().enumerate() {
                let seen = k <= qi && *valid && pos[qi] - pos[k] < window;
                m.push(if seen { 0.0 } else { -1e9 });
            }
        }
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sliding_mask_counts_real_positions_only() {
        // Window 2, one left-padded row: the padded key is never seen and does not count.
        let m = sliding_mask(&[vec![false, true, true, true]], 4, 0, 2);
        let seen: Vec<Vec<bool>> = m.chunks(4).map(|r| r.iter().map(|x| *x == 0.0).collect()).collect();
        assert_eq!(seen[1], [false, true, false, false]);
        assert_eq!(seen[2], [false, true, true, false]);
        assert_eq!(seen[3], [false, false, true, true]);
        // With a cache: one new query at index 3 sees indices 2 and 3.
        let m = sliding_mask(&[vec![true; 4]], 1, 3, 2);
        assert_eq!(m, [-1e9, -1e9, 0.0, 0.0]);
    }

    fn parse(text: &str) -> crate::error::Result<crate::model::LlamaConfig> {
        crate::model::LlamaConfig::from_hf(&serde_json::from_str(text).unwrap(), "config.json")
    }

    #[test]
    fn the_hub_config_of_gemma3_270m_resolves_to_its_architecture() {
        let c = parse(HUB_270M_CONFIG).unwrap();
        let g = c.gemma.as_ref().unwrap();
        let global: Vec<usize> = (0..18).filter(|&i| !g.sliding[i]).collect();
        assert_eq!(global, [5, 11, 17]);
        assert_eq!((c.rope_theta, g.rope_local_theta, g.sliding_window, g.query_pre_attn_scalar), (1e6, 1e4, 512, 256));
        assert!(c.tie_word_embeddings);
        // The published parameter count of Gemma 3 270M.
        assert_eq!(c.num_params(), 268_098_176);
        // Written back as transformers 5 writes it, and read again to the same configuration.
        let back = parse(&c.to_hf_json().to_string()).unwrap();
        assert_eq!(back, c);
    }

    #[test]
    fn unimplemented_gemma_features_are_refused_naming_the_field() {
        for (key, value) in [
            ("final_logit_softcapping", serde_json::json!(30.0)),
            ("hidden_activation", serde_json::json!("silu")),
            ("rope_scaling", serde_json::json!({"factor": 8.0, "rope_type": "linear"})),
            ("layer_types", serde_json::json!(["sliding_attention"])),
        ] {
            let mut v: serde_json::Value = serde_json::from_str(HUB_270M_CONFIG).unwrap();
            v[key] = value;
            let err = parse(&v.to_string()).unwrap_err().to_string();
            assert!(err.contains(key), "{key}: {err}");
        }
    }

    #[test]
    fn gelu_tanh_matches_the_closed_form() {
        let device = Device::flex();
        let xs = [-3.0f32, -0.5, 0.0, 0.7, 2.5];
        let t = Tensor::<1>::from_floats(xs, &device);
        let got = crate::model::llama::to_vec_f32(gelu_approximate(t));
        for (x, g) in xs.iter().zip(got) {
            let x = *x as f64;
            let want = 0.5 * x * (1.0 + ((2.0 / std::f64::consts::PI).sqrt() * (x + 0.044715 * x.powi(3))).tanh());
            assert!((g as f64 - want).abs() < 1e-6, "gelu_tanh({x}) = {g}, want {want}");
        }
    }
}
