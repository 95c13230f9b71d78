//! Hugging Face model directories in and out: `config.json`, `model.safetensors` (or a sharded
//! `model.safetensors.index.json`), and the tokenizer files copied alongside.
//!
//! Loading is strict, as a checkpoint loader must be: a missing, unexpected or misshapen tensor
//! is an error naming the tensor and the file (candle's `unwrap` inside a `map` turns the same
//! mistake into a panic). The one tolerated extra key is `lm_head.weight` in a tied model, which
//! transformers itself ignores.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use burn::prelude::*;
use safetensors::Dtype;

use crate::error::{Error, IoContext, Result};
use crate::io::write_atomic;
use crate::model::{HfConfig, Llama, LlamaConfig, param_specs};

/// Files that travel with a model directory (copied on save when present in the source).
pub const TOKENIZER_FILES: &[&str] =
    &["tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "generation_config.json"];

/// `dir` must be an existing directory; a missing one is named as such, not as the first file
/// looked for in it.
pub fn check_model_dir(dir: &Path) -> Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    let why = if dir.exists() {
        "not a directory (a model is a Hugging Face directory: config.json, model.safetensors, tokenizer.json)"
    } else {
        "no such model directory"
    };
    Err(Error::Format { file: dir.display().to_string(), why: why.into() })
}

/// Read and resolve `dir/config.json`.
pub fn load_config(dir: &Path) -> Result<LlamaConfig> {
    check_model_dir(dir)?;
    let path = dir.join("config.json");
    let text = std::fs::read_to_string(&path).at(&path)?;
    let hf: HfConfig = serde_json::from_str(&text)
        .map_err(|e| Error::Format { file: path.display().to_string(), why: e.to_string() })?;
    LlamaConfig::from_hf(&hf, &path.display().to_string())
}

/// Named f32 tensors read from safetensors files: name -> (shape, values, file).
pub type NamedTensors = BTreeMap<String, (Vec<usize>, Vec<f32>, PathBuf)>;

/// Every tensor of a single safetensors file, converted to f32 (F32, F16, BF16, F64 accepted);
/// see [`crate::io::safetensors_header`] for the checks and their messages.
pub fn read_safetensors(path: &Path) -> Result<NamedTensors> {
    let file = std::fs::File::open(path).at(path)?;
    // SAFETY: the file is opened read-only and not modified while mapped.
    let mmap = unsafe { memmap2::Mmap::map(&file) }.at(path)?;
    let tensors = crate::io::safetensors_header::parse(path, &mmap)?;
    Ok(tensors.into_iter().map(|(name, shape, vals)| (name, (shape, vals, path.to_path_buf()))).collect())
}

/// All tensors of a model directory: `model.safetensors`, or the shards listed in
/// `model.safetensors.index.json`.
pub fn read_model_tensors(dir: &Path) -> Result<NamedTensors> {
    let index = dir.join("model.safetensors.index.json");
    if index.exists() {
        let text = std::fs::read_to_string(&index).at(&index)?;
        let v: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| Error::Format { file: index.display().to_string(), why: e.to_string() })?;
        let map = v
            .get("weight_map")
            .and_then(|m| m.as_object())
            .ok_or_else(|| Error::Format { file: index.display().to_string(), why: "no `weight_map` object".into() })?;
        let mut shards: Vec<&str> = map.values().filter_map(|s| s.as_str()).collect();
        shards.sort();
        shards.dedup();
        let mut out = NamedTensors::new();
        for shard in shards {
            out.extend(read_safetensors(&dir.join(shard))?);
        }
        return Ok(out);
    }
    let single = dir.join("model.safetensors");
    if !single.exists() {
        return Err(Error::Format {
            file: dir.display().to_string(),
            why: "no model.safetensors or model.safetensors.index.json in this directory".into(),
        });
    }
    read_safetensors(&single)
}

/// Build a model from named tensors, checking every name and shape against the architecture.
pub fn model_from_tensors(cfg: LlamaConfig, mut tensors: NamedTensors, source: &str, device: &Device) -> Result<Llama> {
    let specs = param_specs(&cfg);
    if cfg.tie_word_embeddings {
        tensors.remove("lm_head.weight");
    }
    let mut params = Vec::with_capacity(specs.len());
    for spec in &specs {
        let (shape, vals, file) = tensors.remove(&spec.name).ok_or_else(|| Error::Tensor {
            file: source.to_string(),
            tensor: spec.name.clone(),
            why: format!("missing (expected shape {:?})", spec.shape),
        })?;
        if shape != spec.shape {
            return Err(Error::Tensor {
                file: file.display().to_string(),
                tensor: spec.name.clone(),
                why: format!("shape {:?}, expected {:?}", shape, spec.shape),
            });
        }
        if let Some(i) = vals.iter().position(|x| !x.is_finite()) {
            return Err(Error::Tensor {
                file: file.display().to_string(),
                tensor: spec.name.clone(),
                why: format!("non-finite value {} at flat index {i}", vals[i]),
            });
        }
        params.push(Tensor::<2>::from_data(TensorData::new(vals, spec.shape2()), device));
    }
    // Rotary inverse-frequency buffers are sometimes saved; they carry no parameters.
    tensors.retain(|k, _| !k.ends_with("rotary_emb.inv_freq"));
    if let Some((name, (_, _, file))) = tensors.iter().next() {
        return Err(Error::Tensor {
            file: file.display().to_string(),
            tensor: name.clone(),
            why: format!("unexpected tensor ({} unexpected in all) for a {} model", tensors.len(), cfg.model_type),
        });
    }
    Ok(Llama::new(cfg, params))
}

/// Load a Hugging Face model directory onto `device`.
pub fn load_model(dir: &Path, device: &Device) -> Result<Llama> {
    let cfg = load_config(dir)?;
    let tensors = read_model_tensors(dir)?;
    model_from_tensors(cfg, tensors, &dir.display().to_string(), device)
}

/// The model's parameters as f32 vectors in [`param_specs`] order.
pub fn params_to_vecs(params: &[Tensor<2>]) -> Vec<Vec<f32>> {
    params.iter().map(|p| crate::model::llama::to_vec_f32(p.clone())).collect()
}

/// Serialize named f32 tensors to safetensors bytes (with `{"format": "pt"}` metadata).
pub fn safetensors_bytes(named: &[(String, Vec<usize>, Vec<f32>)]) -> Result<Vec<u8>> {
    let bytes: Vec<Vec<u8>> = named.iter().map(|(_, _, v)| v.iter().flat_map(|x| x.to_le_bytes()).collect()).collect();
    let views: Vec<(String, safetensors::tensor::TensorView)> = named
        .iter()
        .zip(&bytes)
        .map(|((n, s, _), b)| {
            let view = safetensors::tensor::TensorView::new(Dtype::F32, s.clone(), b)
                .map_err(|e| Error::Invalid(format!("tensor {n}: {e}")))?;
            Ok((n.clone(), view))
        })
        .collect::<Result<_>>()?;
    let meta: HashMap<String, String> = [("format".to_string(), "pt".to_string())].into();
    safetensors::tensor::serialize(views, Some(meta)).map_err(|e| Error::Invalid(format!("safetensors: {e}")))
}

/// Write `model` as a Hugging Face directory (`config.json` + `model.safetensors`), copying the
/// tokenizer files from `tokenizer_from` when given. Every file is written atomically.
pub fn save_model(model: &Llama, dir: &Path, tokenizer_from: Option<&Path>) -> Result<()> {
    std::fs::create_dir_all(dir).at(dir)?;
    let specs = model.specs();
    let vecs = params_to_vecs(&model.params);
    let named: Vec<(String, Vec<usize>, Vec<f32>)> =
        specs.into_iter().zip(vecs).map(|(s, v)| (s.name, s.shape, v)).collect();
    let st = dir.join("model.safetensors");
    write_atomic(&st, &safetensors_bytes(&named)?).at(&st)?;
    crate::io::write_json(&dir.join("config.json"), &model.cfg.to_hf_json())?;
    match tokenizer_from {
        Some(src) => copy_tokenizer_files(src, dir),
        None => Ok(()),
    }
}

/// Copy the tokenizer files that `src` has into `dir` (atomically each; nothing when they are
/// the same directory).
pub fn copy_tokenizer_files(src: &Path, dir: &Path) -> Result<()> {
    if src == dir {
        return Ok(());
    }
    for f in TOKENIZER_FILES {
        let from = src.join(f);
        if from.exists() {
            let data = std::fs::read(&from).at(&from)?;
            write_atomic(&dir.join(f), &data).at(dir.join(f))?;
        }
    }
    Ok(())
}
