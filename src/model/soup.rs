//! Weight averaging of fine-tuned models ("model soups": Wortsman et al., *Model soups:
//! averaging weights of multiple fine-tuned models improves accuracy without increasing
//! inference time*, ICML 2022, the uniform soup; Izmailov et al., *Averaging Weights Leads to
//! Wider Optima and Better Generalization*, UAI 2018, for checkpoints of one run).
//!
//! For models θ_1..θ_n fine-tuned from the same start, with weights w_i ≥ 0 (uniform by
//! default), the soup is
//!
//! ```text
//! θ_soup = Σ_i (w_i / Σ_j w_j) · θ_i        (every tensor, element by element, summed in f64)
//! ```
//!
//! It is only meaningful when the models share an architecture and a tokenizer, so both are
//! checked: the resolved configs must agree field by field (a difference is an error naming the
//! field and both directories) and the `tokenizer.json` files, where present, must be identical
//! (a kept training checkpoint without one takes the others').
//! Every tensor passes the loader's name, shape and finiteness checks ([`crate::io::hf`]).
//! `soup.json` beside the written model records the sources and their normalised weights.

use std::path::{Path, PathBuf};

use burn::prelude::*;
use serde::Serialize;

use crate::error::{Error, IoContext, Result};
use crate::io::hf::{load_config, model_from_tensors, params_to_vecs, read_model_tensors, save_model};
use crate::io::write_json;
use crate::model::{Llama, LlamaConfig};

/// Provenance of a soup, written as `soup.json` in its directory.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SoupRecord {
    /// The averaged model directories, in order.
    pub sources: Vec<String>,
    /// Their weights, normalised to sum to 1.
    pub weights: Vec<f64>,
}

/// The normalised weights: uniform when `weights` is empty; otherwise one per model, finite and
/// non-negative, with a positive sum.
pub fn normalised_weights(n: usize, weights: &[f64]) -> Result<Vec<f64>> {
    if n < 2 {
        return Err(Error::Invalid(format!("a soup averages at least 2 models, got {n}")));
    }
    if weights.is_empty() {
        return Ok(vec![1.0 / n as f64; n]);
    }
    if weights.len() != n {
        return Err(Error::Invalid(format!("{} weights for {n} models (give one per model, in order)", weights.len())));
    }
    if let Some((i, w)) = weights.iter().enumerate().find(|(_, w)| !w.is_finite() || **w < 0.0) {
        return Err(Error::Invalid(format!("weight {} (of model {}) must be finite and >= 0", w, i + 1)));
    }
    let sum: f64 = weights.iter().sum();
    if sum <= 0.0 {
        return Err(Error::Invalid("the weights sum to 0".into()));
    }
    Ok(weights.iter().map(|w| w / sum).collect())
}

/// The fields in which two resolved configs (as their Hugging Face JSON) differ.
fn config_differences(a: &serde_json::Value, b: &serde_json::Value) -> Vec<String> {
    let (Some(a), Some(b)) = (a.as_object(), b.as_object()) else {
        return if a == b { vec![] } else { vec!["(whole config)".into()] };
    };
    let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
    keys.sort();
    keys.dedup();
    keys.into_iter()
        .filter(|k| a.get(*k) != b.get(*k))
        .map(|k| format!("{k}: {:?} vs {:?}", a.get(k), b.get(k)))
        .collect()
}

/// The first config (index ≥ 1) that differs from the first one, and the differing fields.
fn first_mismatch<'a>(cfgs: impl IntoIterator<Item = &'a LlamaConfig>) -> Option<(usize, Vec<String>)> {
    let mut cfgs = cfgs.into_iter().map(LlamaConfig::to_hf_json);
    let first = cfgs.next()?;
    cfgs.enumerate().map(|(i, c)| (i + 1, config_differences(&first, &c))).find(|(_, diff)| !diff.is_empty())
}

/// Check that every model in `dirs` (with configs `cfgs`) has the first one's config, and that
/// the `tokenizer.json` files present are identical (a directory without one, such as a kept
/// training checkpoint, is averaged with the others' tokenizer). Returns the first directory
/// with a tokenizer.
fn check_compatible<'a>(dirs: &'a [PathBuf], cfgs: &[LlamaConfig]) -> Result<Option<&'a PathBuf>> {
    if let Some((i, diff)) = first_mismatch(cfgs) {
        return Err(Error::Format {
            file: dirs[i].join("config.json").display().to_string(),
            why: format!(
                "architecture differs from {}, so the weights cannot be averaged: {}",
                dirs[0].join("config.json").display(),
                diff.join("; ")
            ),
        });
    }
    let mut reference: Option<(&PathBuf, Vec<u8>)> = None;
    for d in dirs {
        let tok = d.join("tokenizer.json");
        if !tok.exists() {
            continue;
        }
        let bytes = std::fs::read(&tok).at(&tok)?;
        match &reference {
            None => reference = Some((d, bytes)),
            Some((r, b)) if *b != bytes => {
                return Err(Error::Format {
                    file: tok.display().to_string(),
                    why: format!(
                        "tokenizer differs from {} (a soup needs one tokenizer)",
                        r.join("tokenizer.json").display()
                    ),
                });
            }
            Some(_) => {}
        }
    }
    Ok(reference.map(|(d, _)| d))
}

/// The weighted average of `models` (weights as [`normalised_weights`]), which must share one
/// architecture (a difference is an error naming the fields), on `device`.
pub fn average_models(models: &[&Llama], weights: &[f64], device: &Device) -> Result<Llama> {
    let w = normalised_weights(models.len(), weights)?;
    if let Some((i, diff)) = first_mismatch(models.iter().map(|m| &*m.cfg)) {
        return Err(Error::Invalid(format!(
            "model {} of the soup differs from model 1 in: {}",
            i + 1,
            diff.join("; ")
        )));
    }
    let mut acc: Vec<Vec<f64>> = Vec::new();
    for (m, wi) in models.iter().zip(&w) {
        let vecs = params_to_vecs(&m.params);
        if acc.is_empty() {
            acc = vecs.iter().map(|v| vec![0.0; v.len()]).collect();
        }
        for (a, v) in acc.iter_mut().zip(&vecs) {
            for (x, y) in a.iter_mut().zip(v) {
                *x += wi * *y as f64;
            }
        }
    }
    let cfg = (*models[0].cfg).clone();
    let params = crate::model::param_specs(&cfg)
        .iter()
        .zip(acc)
        .map(|(s, a)| {
            let vals: Vec<f32> = a.into_iter().map(|x| x as f32).collect();
            Tensor::<2>::from_data(TensorData::new(vals, s.shape2()), device)
        })
        .collect();
    Ok(Llama::new(cfg, params))
}

/// The weighted average of the models in `dirs` (weights as [`normalised_weights`]), on
/// `device`, with its provenance. Configs and tokenizers are checked first, with the files
/// named; each model passes the loader's checks.
pub fn average(dirs: &[PathBuf], weights: &[f64], device: &Device) -> Result<(Llama, SoupRecord)> {
    average_dirs(dirs, weights, device).map(|(m, r, _)| (m, r))
}

/// [`average`], and the first directory with a tokenizer.
fn average_dirs(dirs: &[PathBuf], weights: &[f64], device: &Device) -> Result<(Llama, SoupRecord, Option<PathBuf>)> {
    let w = normalised_weights(dirs.len(), weights)?;
    let cfgs = dirs.iter().map(|d| load_config(d)).collect::<Result<Vec<_>>>()?;
    let tokenizer_from = check_compatible(dirs, &cfgs)?.cloned();
    let models = dirs
        .iter()
        .zip(cfgs)
        .map(|(d, cfg)| model_from_tensors(cfg, read_model_tensors(d)?, &d.display().to_string(), device))
        .collect::<Result<Vec<_>>>()?;
    let soup = average_models(&models.iter().collect::<Vec<_>>(), &w, device)?;
    let record = SoupRecord { sources: dirs.iter().map(|d| d.display().to_string()).collect(), weights: w };
    Ok((soup, record, tokenizer_from))
}

/// Average the models in `dirs` and write the soup to `out` as a Hugging Face directory (the
/// tokenizer files of the first model that has them copied, `soup.json` beside them; every file
/// atomically).
pub fn write_soup(dirs: &[PathBuf], weights: &[f64], out: &Path, device: &Device) -> Result<SoupRecord> {
    let (model, record, tokenizer_from) = average_dirs(dirs, weights, device)?;
    save_model(&model, out, tokenizer_from.as_deref())?;
    write_json(&out.join("soup.json"), &record)?;
    Ok(record)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_are_normalised_and_checked() {
        assert_eq!(normalised_weights(4, &[]).unwrap(), vec![0.25; 4]);
        let w = normalised_weights(2, &[1.0, 3.0]).unwrap();
        assert!((w[0] - 0.25).abs() < 1e-12 && (w[1] - 0.75).abs() < 1e-12);
        let err = |n, w: &[f64]| normalised_weights(n, w).unwrap_err().to_string();
        assert!(err(1, &[]).contains("at least 2"));
        assert!(err(3, &[1.0, 1.0]).contains("2 weights for 3 models"));
        assert!(err(2, &[1.0, -1.0]).contains("of model 2"));
        assert!(err(2, &[1.0, f64::NAN]).contains("of model 2"));
        assert!(err(2, &[0.0, 0.0]).contains("sum to 0"));
    }

    #[test]
    fn config_differences_name_the_field() {
        let a = serde_json::json!({"hidden_size": 16, "num_hidden_layers": 2});
        let b = serde_json::json!({"hidden_size": 16, "num_hidden_layers": 3});
        let d = config_differences(&a, &b);
        assert_eq!(d.len(), 1);
        assert!(d[0].starts_with("num_hidden_layers"), "{d:?}");
        assert!(config_differences(&a, &a).is_empty());
    }
}
