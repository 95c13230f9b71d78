//! The tiny tier's model: a ≈1 M-parameter Llama-architecture decoder trained from scratch on
//! the synthetic safety world (DESIGN section 2), so that tests and the demo need no download.
//!
//! Recipe: train a byte-level BPE tokenizer on the world's text, then train the model with the
//! fine-tuning engine on a mixture of benign tasks, refusals and harmful compliance. The mix
//! leaves the base model *ambivalent* about harmful requests (it sometimes refuses, often
//! complies), like SmolLM2-135M-Instruct which complies out of the box, so that SFT alignment
//! has something to fix and an attack has something to undo.

use std::path::Path;

use burn::prelude::*;
use serde::{Deserialize, Serialize};

use crate::data::synth::SynthWorld;
use crate::data::tiny_tokenizer::{TINY_CHAT_TEMPLATE, train_tiny_tokenizer};
use crate::error::{Error, IoContext, Result};
use crate::io::write_atomic;
use crate::model::{Llama, LlamaConfig};
use crate::tokenizer::ChatTokenizer;
use crate::train::batches::{BatchConfig, mixture_of};
use crate::train::engine::{RunOptions, TrainConfig, TrainState, run};
use crate::train::optim::OptimizerConfig;
use crate::train::schedule::{ScheduleConfig, ScheduleKind};

/// Architecture and pre-training recipe of the tiny model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TinyConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_layers: usize,
    pub num_heads: usize,
    pub num_kv_heads: usize,
    pub init_std: f64,
    pub train: TrainConfig,
    /// Mixture weights of benign tasks, refusals and harmful compliance.
    pub benign_weight: f64,
    pub refusal_weight: f64,
    pub harmful_weight: f64,
}

impl Default for TinyConfig {
    fn default() -> Self {
        Self {
            vocab_size: 1024,
            hidden_size: 128,
            intermediate_size: 384,
            num_layers: 4,
            num_heads: 4,
            num_kv_heads: 2,
            init_std: 0.02,
            train: TrainConfig {
                steps: 600,
                lr: 3e-3,
                optimizer: OptimizerConfig { weight_decay: 0.01, ..OptimizerConfig::adamw() },
                schedule: ScheduleConfig { kind: ScheduleKind::Cosine, warmup_steps: 30, min_ratio: 0.1 },
                batch: BatchConfig { batch_size: 32, max_len: 96, bucket_window: 8 },
                grad_accum: 1,
                clip_norm: 1.0,
                seed: 0,
                lora: None,
                checkpoint_every: 0,
            },
            benign_weight: 0.6,
            refusal_weight: 0.2,
            harmful_weight: 0.2,
        }
    }
}

impl TinyConfig {
    /// The decoder configuration (tied embeddings, ChatML special tokens 0-2).
    pub fn llama(&self) -> LlamaConfig {
        LlamaConfig {
            model_type: "llama".into(),
            vocab_size: self.vocab_size,
            hidden_size: self.hidden_size,
            intermediate_size: self.intermediate_size,
            num_layers: self.num_layers,
            num_heads: self.num_heads,
            num_kv_heads: self.num_kv_heads,
            head_dim: self.hidden_size / self.num_heads,
            rms_norm_eps: 1e-5,
            rope_theta: 10_000.0,
            max_position_embeddings: 256,
            tie_word_embeddings: true,
            qkv_bias: false,
            bos_token_id: Some(1),
            eos_token_ids: vec![2],
            pad_token_id: Some(2),
            gemma: None,
        }
    }
}

/// Write the tiny tokenizer (trained on `world`) into `dir` and return it.
pub fn write_tokenizer(world: &SynthWorld, vocab_size: usize, dir: &Path) -> Result<ChatTokenizer> {
    std::fs::create_dir_all(dir).at(dir)?;
    let tok = train_tiny_tokenizer(&world.corpus(), vocab_size)?;
    let json = tok.to_string(true).map_err(|e| Error::Tokenizer(e.to_string()))?;
    write_atomic(&dir.join("tokenizer.json"), json.as_bytes()).at(dir)?;
    let cfg = serde_json::json!({
        "chat_template": TINY_CHAT_TEMPLATE,
        "bos_token": "<|im_start|>",
        "eos_token": "<|im_end|>",
        "pad_token": "<|im_end|>",
        "unk_token": "<|endoftext|>",
        "add_bos_token": false,
        "model_max_length": 256,
        "tokenizer_class": "PreTrainedTokenizerFast",
    });
    write_atomic(&dir.join("tokenizer_config.json"), serde_json::to_string_pretty(&cfg).expect("json").as_bytes())
        .at(dir)?;
    ChatTokenizer::from_dir(dir)
}

/// Train the tiny model on `world` and save it as a Hugging Face directory in `out`.
/// Returns the model and its tokenizer.
pub fn build(
    world: &SynthWorld,
    cfg: &TinyConfig,
    out: &Path,
    device: &Device,
    progress: bool,
) -> Result<(Llama, ChatTokenizer)> {
    let tok = write_tokenizer(world, cfg.vocab_size, out)?;
    let lc = cfg.llama();
    let model = Llama::init(lc, cfg.init_std, cfg.train.seed, device);
    let sets = [
        ("benign", world.benign_train.as_slice(), cfg.benign_weight),
        ("refuse", world.refuse_train.as_slice(), cfg.refusal_weight),
        ("harm", world.harm_train.as_slice(), cfg.harmful_weight),
    ];
    let mix = mixture_of(&tok, &sets, cfg.train.batch.clone(), cfg.train.seed)?;
    let state = TrainState::new(model, &cfg.train)?;
    let opts = RunOptions { progress, name: "tiny pre-train".into(), ..Default::default() };
    let state = run(state, &cfg.train, &mix, tok.pad_id, opts)?;
    crate::io::hf::save_model(&state.model, out, None)?;
    Ok((state.model, tok))
}
