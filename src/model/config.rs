//! Model configuration in two layers (as candle does): [`HfConfig`] mirrors a Hugging Face
//! `config.json` field for field (with the defaults transformers uses), and [`LlamaConfig`] is
//! the resolved runtime configuration with no `Option`s.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::model::gemma3::{Gemma3Config, is_gemma3};

/// The subset of a Hugging Face `config.json` that Llama-family decoders (Llama, SmolLM2,
/// Qwen2, Mistral) need. Unknown keys are ignored here on purpose: real config files carry
/// dozens of keys that do not change the architecture.
#[derive(Debug, Clone, Deserialize)]
pub struct HfConfig {
    #[serde(default)]
    pub model_type: Option<String>,
    #[serde(default)]
    pub architectures: Option<Vec<String>>,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    #[serde(default)]
    pub num_key_value_heads: Option<usize>,
    #[serde(default)]
    pub head_dim: Option<usize>,
    #[serde(default = "default_eps")]
    pub rms_norm_eps: f64,
    #[serde(default)]
    pub rope_theta: Option<f64>,
    #[serde(default)]
    pub rope_scaling: Option<serde_json::Value>,
    /// transformers >= 5 writes `{"rope_theta": .., "rope_type": ..}` here.
    #[serde(default)]
    pub rope_parameters: Option<serde_json::Value>,
    #[serde(default = "default_max_pos")]
    pub max_position_embeddings: usize,
    #[serde(default)]
    pub tie_word_embeddings: Option<bool>,
    #[serde(default)]
    pub attention_bias: Option<bool>,
    #[serde(default)]
    pub hidden_act: Option<String>,
    #[serde(default)]
    pub bos_token_id: Option<u32>,
    #[serde(default)]
    pub eos_token_id: Option<serde_json::Value>,
    #[serde(default)]
    pub pad_token_id: Option<u32>,
    // Gemma 3 (`model_type = "gemma3_text"`, see [`crate::model::gemma3`]).
    #[serde(default)]
    pub hidden_activation: Option<String>,
    #[serde(default)]
    pub query_pre_attn_scalar: Option<usize>,
    #[serde(default)]
    pub sliding_window: Option<usize>,
    #[serde(default, alias = "_sliding_window_pattern")]
    pub sliding_window_pattern: Option<usize>,
    #[serde(default)]
    pub layer_types: Option<Vec<String>>,
    #[serde(default)]
    pub rope_local_base_freq: Option<f64>,
    #[serde(default)]
    pub final_logit_softcapping: Option<serde_json::Value>,
    #[serde(default)]
    pub attn_logit_softcapping: Option<serde_json::Value>,
    #[serde(default)]
    pub use_bidirectional_attention: Option<bool>,
}

fn default_eps() -> f64 {
    1e-6
}
fn default_max_pos() -> usize {
    2048
}

/// Resolved Llama-family architecture.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LlamaConfig {
    /// `llama`, `qwen2`, `mistral`: written back to `config.json`.
    pub model_type: String,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_layers: usize,
    pub num_heads: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
    pub rms_norm_eps: f64,
    pub rope_theta: f64,
    pub max_position_embeddings: usize,
    pub tie_word_embeddings: bool,
    /// q/k/v projections carry a bias (Qwen2).
    pub qkv_bias: bool,
    pub bos_token_id: Option<u32>,
    pub eos_token_ids: Vec<u32>,
    pub pad_token_id: Option<u32>,
    /// Gemma 3's norms, local/global layers and attention scale ([`crate::model::gemma3`]);
    /// `None` for the Llama family.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gemma: Option<Gemma3Config>,
}

impl LlamaConfig {
    /// Resolve a Hugging Face config, rejecting what this decoder does not implement.
    pub fn from_hf(hf: &HfConfig, source: &str) -> Result<Self> {
        let model_type = hf.model_type.clone().unwrap_or_else(|| "llama".into());
        let bad = |field: &str, why: String| Error::Config { file: source.to_string(), field: field.to_string(), why };
        let gemma = is_gemma3(&model_type);
        if !gemma && !matches!(model_type.as_str(), "llama" | "qwen2" | "mistral") {
            return Err(bad(
                "model_type",
                format!("`{model_type}` is not a supported decoder (llama, qwen2, mistral, gemma3_text)"),
            ));
        }
        if let Some(act) = &hf.hidden_act
            && act != "silu"
            && !gemma
        {
            return Err(bad("hidden_act", format!("only silu is implemented, got `{act}`")));
        }
        if let Some(s) = &hf.rope_scaling
            && !s.is_null()
        {
            return Err(bad("rope_scaling", format!("rope scaling is not implemented: {s}")));
        }
        let params = hf.rope_parameters.as_ref().filter(|p| !p.is_null());
        if let Some(kind) = params.and_then(|p| p.get("rope_type")).and_then(|t| t.as_str())
            && kind != "default"
        {
            return Err(bad("rope_parameters.rope_type", format!("only default rope is implemented, got `{kind}`")));
        }
        let gemma = if gemma { Some(Gemma3Config::from_hf(hf, source)?) } else { None };
        let rope_theta = hf
            .rope_theta
            .or_else(|| params.and_then(|p| p.get("rope_theta")).and_then(|t| t.as_f64()))
            .unwrap_or(10_000.0);
        let num_kv_heads = hf.num_key_value_heads.unwrap_or(hf.num_attention_heads);
        if num_kv_heads == 0 || !hf.num_attention_heads.is_multiple_of(num_kv_heads) {
            return Err(bad(
                "num_key_value_heads",
                format!("{} attention heads are not a multiple of {} kv heads", hf.num_attention_heads, num_kv_heads),
            ));
        }
        let head_dim = hf.head_dim.unwrap_or(hf.hidden_size / hf.num_attention_heads.max(1));
        if head_dim == 0 || !head_dim.is_multiple_of(2) {
            return Err(bad("head_dim", format!("head_dim must be even and > 0, got {head_dim}")));
        }
        let eos_token_ids = match &hf.eos_token_id {
            None | Some(serde_json::Value::Null) => vec![],
            Some(serde_json::Value::Number(n)) => n.as_u64().map(|x| vec![x as u32]).unwrap_or_default(),
            Some(serde_json::Value::Array(a)) => a.iter().filter_map(|v| v.as_u64()).map(|x| x as u32).collect(),
            Some(other) => return Err(bad("eos_token_id", format!("expected an integer or a list, got {other}"))),
        };
        let default_tie = model_type != "mistral" && model_type != "llama";
        let (gemma, rope_theta) = match gemma {
            Some((g, global)) => (Some(g), global),
            None => (None, rope_theta),
        };
        Ok(Self {
            gemma,
            qkv_bias: hf.attention_bias.unwrap_or(model_type == "qwen2"),
            tie_word_embeddings: hf.tie_word_embeddings.unwrap_or(default_tie),
            model_type,
            vocab_size: hf.vocab_size,
            hidden_size: hf.hidden_size,
            intermediate_size: hf.intermediate_size,
            num_layers: hf.num_hidden_layers,
            num_heads: hf.num_attention_heads,
            num_kv_heads,
            head_dim,
            rms_norm_eps: hf.rms_norm_eps,
            rope_theta,
            max_position_embeddings: hf.max_position_embeddings,
            bos_token_id: hf.bos_token_id,
            eos_token_ids,
            pad_token_id: hf.pad_token_id,
        })
    }

    /// The `config.json` that transformers loads for this architecture.
    pub fn to_hf_json(&self) -> serde_json::Value {
        let arch = match self.model_type.as_str() {
            "qwen2" => "Qwen2ForCausalLM",
            "gemma3_text" => "Gemma3ForCausalLM",
            "mistral" => "MistralForCausalLM",
            _ => "LlamaForCausalLM",
        };
        let mut v = serde_json::json!({
            "architectures": [arch],
            "model_type": self.model_type,
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_hidden_layers": self.num_layers,
            "num_attention_heads": self.num_heads,
            "num_key_value_heads": self.num_kv_heads,
            "head_dim": self.head_dim,
            "rms_norm_eps": self.rms_norm_eps,
            "rope_theta": self.rope_theta,
            "max_position_embeddings": self.max_position_embeddings,
            "tie_word_embeddings": self.tie_word_embeddings,
            "hidden_act": "silu",
            "torch_dtype": "float32",
            "use_cache": true,
        });
        let o = v.as_object_mut().expect("object");
        if self.model_type == "llama" {
            o.insert("attention_bias".into(), self.qkv_bias.into());
            o.insert("mlp_bias".into(), false.into());
        }
        if let Some(g) = &self.gemma {
            g.hf_json_fields(self.rope_theta, o);
        }
        if let Some(b) = self.bos_token_id {
            o.insert("bos_token_id".into(), b.into());
        }
        match self.eos_token_ids.as_slice() {
            [] => {}
            [one] => {
                o.insert("eos_token_id".into(), (*one).into());
            }
            many => {
                o.insert("eos_token_id".into(), many.to_vec().into());
            }
        }
        if let Some(p) = self.pad_token_id {
            o.insert("pad_token_id".into(), p.into());
        }
        v
    }

    /// Number of parameters (the tied head counted once).
    pub fn num_params(&self) -> usize {
        crate::model::llama::param_specs(self).iter().map(|s| s.numel()).sum()
    }
}
