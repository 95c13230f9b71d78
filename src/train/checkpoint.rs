//! Checkpoints: a directory `ckpt-NNNNNN/` holding `model.safetensors` (Hugging Face names),
//! `optim.safetensors` (moments `m/<name>`, `v/<name>`), `lora.safetensors` when training
//! adapters, and `state.json` (step, optimizer step, resolved config, code version).
//!
//! Atomicity: the directory is written under a temporary name, every file synced, then
//! renamed; `latest.json` (itself written atomically) then points at it and older checkpoints
//! are removed. A run killed at any moment leaves either the previous checkpoint or the new one
//! as `latest`, never a half-written one.

use std::path::Path;

use burn::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::{Error, IoContext, Result};
use crate::io::hf::{read_safetensors, safetensors_bytes};
use crate::io::write_atomic;
use crate::model::llama::to_vec_f32;
use crate::train::engine::TrainState;
use crate::train::optim::OptimState;

#[derive(Debug, Serialize, Deserialize)]
struct StateJson {
    step: usize,
    optim_step: u64,
    config: serde_json::Value,
    version: String,
    #[serde(default)]
    extra: serde_json::Value,
}

/// Method-specific state saved beside the model and optimizer (e.g. parallel Patcher's worker
/// trajectories): named tensors (`extra.safetensors`) and a JSON value.
#[derive(Debug, Clone, Default)]
pub struct Extra {
    pub tensors: Vec<(String, Tensor<2>)>,
    pub json: serde_json::Value,
}

fn named(names: &[String], tensors: &[Option<Tensor<2>>]) -> Vec<(String, Vec<usize>, Vec<f32>)> {
    names
        .iter()
        .zip(tensors)
        .filter_map(|(n, t)| t.as_ref().map(|t| (n.clone(), t.dims().to_vec(), to_vec_f32(t.clone()))))
        .collect()
}

/// Names of the optimizer's parameter slots: the model's, or `lora/<k>/{A,B}`.
fn slot_names(state: &TrainState) -> Vec<String> {
    match &state.lora {
        None => state.model.specs().into_iter().map(|s| s.name).collect(),
        Some(l) => {
            (0..l.params.len()).map(|i| format!("lora/{}/{}", i / 2, if i % 2 == 0 { "A" } else { "B" })).collect()
        }
    }
}

/// Write a checkpoint of `state` (run with config `cfg`) and method-specific `extra` state.
pub fn save<C: Serialize>(dir: &Path, state: &TrainState, cfg: &C, extra: &Extra) -> Result<()> {
    let name = format!("ckpt-{:06}", state.step);
    let tmp = dir.join(format!(".{name}.tmp"));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).at(&tmp)?;
    let specs = state.model.specs();
    let model: Vec<(String, Vec<usize>, Vec<f32>)> = specs
        .iter()
        .zip(&state.model.params)
        .map(|(s, p)| (s.name.clone(), s.shape.clone(), to_vec_f32(p.clone())))
        .collect();
    write_atomic(&tmp.join("model.safetensors"), &safetensors_bytes(&model)?).at(&tmp)?;
    let slots = slot_names(state);
    let mut opt = named(&slots.iter().map(|n| format!("m/{n}")).collect::<Vec<_>>(), &state.opt.m);
    opt.extend(named(&slots.iter().map(|n| format!("v/{n}")).collect::<Vec<_>>(), &state.opt.v));
    if opt.is_empty() {
        // safetensors needs at least a valid header; store a marker tensor.
        opt.push(("empty".into(), vec![1], vec![0.0]));
    }
    write_atomic(&tmp.join("optim.safetensors"), &safetensors_bytes(&opt)?).at(&tmp)?;
    if let Some(l) = &state.lora {
        let ad = named(&slots, &l.params.iter().cloned().map(Some).collect::<Vec<_>>());
        write_atomic(&tmp.join("lora.safetensors"), &safetensors_bytes(&ad)?).at(&tmp)?;
    }
    if !extra.tensors.is_empty() {
        let named: Vec<(String, Vec<usize>, Vec<f32>)> =
            extra.tensors.iter().map(|(n, t)| (n.clone(), t.dims().to_vec(), to_vec_f32(t.clone()))).collect();
        write_atomic(&tmp.join("extra.safetensors"), &safetensors_bytes(&named)?).at(&tmp)?;
    }
    let meta = StateJson {
        step: state.step,
        optim_step: state.opt.step,
        config: serde_json::to_value(cfg).expect("config serializes"),
        version: env!("CARGO_PKG_VERSION").to_string(),
        extra: extra.json.clone(),
    };
    write_atomic(&tmp.join("state.json"), serde_json::to_string_pretty(&meta).expect("json").as_bytes()).at(&tmp)?;
    let final_dir = dir.join(&name);
    let _ = std::fs::remove_dir_all(&final_dir);
    std::fs::rename(&tmp, &final_dir).at(&final_dir)?;
    let latest = serde_json::json!({ "checkpoint": name, "step": state.step });
    write_atomic(&dir.join("latest.json"), latest.to_string().as_bytes()).at(dir)?;
    // Older checkpoints are superseded.
    for e in std::fs::read_dir(dir).at(dir)?.flatten() {
        let n = e.file_name().to_string_lossy().into_owned();
        if n.starts_with("ckpt-") && n != name {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
    Ok(())
}

/// The saved tensor `name` of checkpoint `ck` as a `want`-shaped matrix; missing or misshapen
/// is an error naming it (a checkpoint from another model, or a corrupted one).
fn matrix(
    ck: &Path,
    name: &str,
    saved: Option<(Vec<usize>, Vec<f32>, std::path::PathBuf)>,
    want: [usize; 2],
    device: &Device,
) -> Result<Tensor<2>> {
    let bad = |file: &Path, why: String| Error::Tensor { file: file.display().to_string(), tensor: name.into(), why };
    let Some((shape, vals, file)) = saved else {
        return Err(bad(ck, "missing from the checkpoint".into()));
    };
    // 1-D parameters are stored as they are held, [1, n] (or as [n]).
    let fits = shape == want || (want[0] == 1 && shape == [want[1]]);
    if !fits {
        return Err(bad(&file, format!("shape {shape:?}, expected {want:?}")));
    }
    Ok(Tensor::<2>::from_data(TensorData::new(vals, want), device))
}

/// The state saved under `dir` (whose `latest.json` names a checkpoint), shaped like
/// `template`, and the method-specific state; `None` when `dir` holds no checkpoint.
pub fn load_latest<C: Serialize>(dir: &Path, template: &TrainState, cfg: &C) -> Result<Option<(TrainState, Extra)>> {
    let latest = dir.join("latest.json");
    if !latest.exists() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(&latest).at(&latest)?;
    let v: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| Error::Format { file: latest.display().to_string(), why: e.to_string() })?;
    let name = v["checkpoint"]
        .as_str()
        .ok_or_else(|| Error::Format { file: latest.display().to_string(), why: "no `checkpoint` field".into() })?;
    let ck = dir.join(name);
    let sj = ck.join("state.json");
    let meta: StateJson = serde_json::from_str(&std::fs::read_to_string(&sj).at(&sj)?)
        .map_err(|e| Error::Format { file: sj.display().to_string(), why: e.to_string() })?;
    if meta.config != serde_json::to_value(cfg).expect("config serializes") {
        return Err(Error::Invalid(format!(
            "{}: the checkpoint was written with a different training config; refusing to resume \
             (use a new output directory, or the same config)",
            ck.display()
        )));
    }
    let device = template.model.device();
    let mut tensors = read_safetensors(&ck.join("model.safetensors"))?;
    let mut state = template.clone();
    for (spec, p) in state.model.specs().iter().zip(state.model.params.iter_mut()) {
        let t = tensors.remove(&spec.name);
        *p = matrix(&ck, &spec.name, t, p.dims(), &device)?;
    }
    let slots = slot_names(&state);
    let mut opt = read_safetensors(&ck.join("optim.safetensors"))?;
    let shapes: Vec<[usize; 2]> = match &state.lora {
        None => state.model.params.iter().map(|p| p.dims()).collect(),
        Some(l) => l.params.iter().map(|p| p.dims()).collect(),
    };
    let mut moments = |prefix: &str| -> Result<Vec<Option<Tensor<2>>>> {
        slots
            .iter()
            .zip(&shapes)
            .map(|(s, &shape)| {
                let key = format!("{prefix}/{s}");
                // A slot the optimizer never touched has no moment (none saved).
                opt.remove(&key).map(|t| matrix(&ck, &key, Some(t), shape, &device)).transpose()
            })
            .collect()
    };
    state.opt = OptimState { step: meta.optim_step, m: moments("m")?, v: moments("v")? };
    if let Some(l) = state.lora.as_mut() {
        let mut ad = read_safetensors(&ck.join("lora.safetensors"))?;
        for (s, p) in slots.iter().zip(l.params.iter_mut()) {
            *p = matrix(&ck, s, ad.remove(s), p.dims(), &device)?;
        }
    }
    state.step = meta.step;
    let mut extra = Extra { tensors: vec![], json: meta.extra };
    let ep = ck.join("extra.safetensors");
    if ep.exists() {
        for (name, (shape, vals, _)) in read_safetensors(&ep)? {
            let [r, c] = shape[..] else {
                return Err(Error::Tensor {
                    file: ep.display().to_string(),
                    tensor: name,
                    why: format!("shape {shape:?}, expected a matrix"),
                });
            };
            extra.tensors.push((name, Tensor::<2>::from_data(TensorData::new(vals, [r, c]), &device)));
        }
    }
    Ok(Some((state, extra)))
}
