//! Model soups (`patcher::model::soup`, `patcher merge`): the written model is the weighted
//! element-wise average of its sources, recomputed here directly from their safetensors files;
//! it loads and runs; and models that cannot be averaged are refused with the field or file named.

use std::path::{Path, PathBuf};

use patcher::io::hf::{load_model, read_model_tensors, save_model};
use patcher::model::soup::{average, write_soup};
use patcher::model::{Llama, LlamaConfig};
use patcher::testing::{micro_config, micro_config_sized};

fn tempdir(tag: &str) -> PathBuf {
    let d = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("soup-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn cpu() -> burn::prelude::Device {
    patcher::device_from_name("cpu").unwrap()
}

/// A seeded random model saved under `dir/name`, with a tokenizer.json of the given text.
fn saved(dir: &Path, name: &str, cfg: LlamaConfig, seed: u64, tokenizer: &str) -> PathBuf {
    let d = dir.join(name);
    let m = Llama::init(cfg, 0.2, seed, &cpu());
    save_model(&m, &d, None).unwrap();
    std::fs::write(d.join("tokenizer.json"), tokenizer).unwrap();
    d
}

#[test]
fn the_soup_is_the_weighted_average_of_its_sources() {
    let dir = tempdir("average");
    let srcs: Vec<PathBuf> = (0..3).map(|i| saved(&dir, &format!("m{i}"), micro_config(), 10 + i, "{}")).collect();
    let weights = [1.0, 2.0, 5.0];
    let out = dir.join("soup");
    let rec = write_soup(&srcs, &weights, &out, &cpu()).unwrap();
    assert_eq!(rec.weights, vec![0.125, 0.25, 0.625]);

    // Direct computation from the files: Σ w_i θ_i / Σ w_i, tensor by tensor.
    let inputs: Vec<_> = srcs.iter().map(|d| read_model_tensors(d).unwrap()).collect();
    let soup = read_model_tensors(&out).unwrap();
    assert_eq!(soup.len(), inputs[0].len(), "same tensors");
    let (mut max_diff, mut moved) = (0f64, 0f64);
    for (name, (shape, vals, _)) in &soup {
        assert_eq!(shape, &inputs[0][name].0, "{name}");
        for (j, v) in vals.iter().enumerate() {
            let want: f64 = inputs.iter().zip(&weights).map(|(t, w)| w * t[name].1[j] as f64).sum::<f64>() / 8.0;
            max_diff = max_diff.max((*v as f64 - want).abs());
            moved = moved.max((*v as f64 - inputs[0][name].1[j] as f64).abs());
        }
    }
    println!("soup vs direct weighted average: max |diff| {max_diff:.2e}; vs source 1: {moved:.2e}");
    assert!(max_diff < 1e-6, "max |diff| {max_diff}");
    assert!(moved > 1e-2, "the soup should differ from its first source ({moved})");

    // It loads as a model, carries the tokenizer, and records its provenance.
    let m = load_model(&out, &cpu()).unwrap();
    let logits = m.forward(burn::prelude::Tensor::<2, burn::prelude::Int>::from_ints([[1, 2, 3, 4]], &cpu()));
    let v = patcher::model::llama::to_vec_f32(logits);
    assert!(v.iter().all(|x| x.is_finite()) && !v.is_empty());
    assert_eq!(std::fs::read_to_string(out.join("tokenizer.json")).unwrap(), "{}");
    let rec_file: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("soup.json")).unwrap()).unwrap();
    assert_eq!(rec_file["sources"].as_array().unwrap().len(), 3);
    assert_eq!(rec_file["weights"][2], 0.625);

    // Uniform weights by default; a model averaged with itself is itself.
    let (same, rec) = average(&[srcs[0].clone(), srcs[0].clone()], &[], &cpu()).unwrap();
    assert_eq!(rec.weights, vec![0.5, 0.5]);
    let orig = load_model(&srcs[0], &cpu()).unwrap();
    let d = patcher::determinism::max_abs_diff(&same, &orig);
    assert!(d < 1e-7, "self-soup differs by {d}");
}

#[test]
fn models_that_cannot_be_averaged_are_refused() {
    let dir = tempdir("refused");
    let a = saved(&dir, "a", micro_config(), 1, "{}");
    let wider = saved(&dir, "wider", micro_config_sized(24, 32, true), 2, "{}");
    let other_tok = saved(&dir, "tok", micro_config(), 3, "{\"other\": 1}");
    let err = |dirs: &[PathBuf], w: &[f64]| {
        let out = dir.join("out");
        let e = write_soup(dirs, w, &out, &cpu()).unwrap_err().to_string();
        assert!(!out.exists(), "nothing is written on error ({e})");
        e
    };
    let e = err(&[a.clone(), wider.clone()], &[]);
    assert!(e.contains("intermediate_size") && e.contains(&wider.join("config.json").display().to_string()), "{e}");
    let e = err(&[a.clone(), other_tok.clone()], &[]);
    assert!(e.contains("tokenizer differs") && e.contains("tok/tokenizer.json"), "{e}");
    // A directory without a tokenizer (a kept training checkpoint) takes the others'.
    let bare = saved(&dir, "bare", micro_config(), 4, "{}");
    std::fs::remove_file(bare.join("tokenizer.json")).unwrap();
    let out = dir.join("with-bare");
    write_soup(&[bare.clone(), other_tok.clone()], &[], &out, &cpu()).unwrap();
    assert_eq!(std::fs::read_to_string(out.join("tokenizer.json")).unwrap(), "{\"other\": 1}");
    let e = err(&[a.clone(), dir.join("missing")], &[]);
    assert!(e.contains("no such model directory"), "{e}");
    let e = err(&[a.clone(), a.clone()], &[1.0]);
    assert!(e.contains("1 weights for 2 models"), "{e}");
}
