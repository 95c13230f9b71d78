//! Finite-difference gradient check of the masked cross-entropy on a tiny random model, in
//! f64, for every kind of parameter (embedding, norms, q/k/v/o with biases, gate/up/down,
//! untied head; Gemma 3's four norms per block, q/k norms, GELU MLP and sliding layers). Central differences with h = 1e-6 have O(h²) truncation error, far below the
//! 1e-4 relative tolerance; the max relative difference is printed.

use burn::prelude::*;
use burn::tensor::DType;
use patcher::model::LlamaConfig;
use patcher::model::gemma3::Gemma3Config;
use patcher::model::llama::Llama;
use patcher::rng::Rng;
use patcher::train::step::{Batch, Example, loss_and_grads};

fn tiny_cfg(tied: bool, bias: bool) -> LlamaConfig {
    LlamaConfig {
        model_type: if bias { "qwen2".into() } else { "llama".into() },
        vocab_size: 11,
        hidden_size: 8,
        intermediate_size: 12,
        num_layers: 2,
        num_heads: 4,
        num_kv_heads: 2,
        head_dim: 2,
        rms_norm_eps: 1e-6,
        rope_theta: 10_000.0,
        max_position_embeddings: 64,
        tie_word_embeddings: tied,
        qkv_bias: bias,
        bos_token_id: None,
        eos_token_ids: vec![],
        pad_token_id: None,
        gemma: None,
    }
}

/// A micro Gemma 3: multi-query attention, one sliding layer (window 3, shorter than the
/// 7-token examples) and one global layer, attention scale != head_dim.
fn gemma_cfg() -> LlamaConfig {
    let gemma = Gemma3Config {
        query_pre_attn_scalar: 3,
        sliding_window: 3,
        sliding: vec![true, false],
        rope_local_theta: 10.0,
    };
    LlamaConfig {
        model_type: "gemma3_text".into(),
        num_kv_heads: 1,
        head_dim: 4,
        rope_theta: 1_000.0,
        gemma: Some(gemma),
        ..tiny_cfg(true, false)
    }
}

fn to_f64(model: &Llama, device: &Device, rng: &mut Rng) -> Llama {
    // Random non-trivial values everywhere (norms and biases too), in f64.
    let params = model
        .params
        .iter()
        .map(|p| {
            let [r, c] = p.dims();
            let v: Vec<f64> = (0..r * c).map(|_| rng.normal() * 0.5).collect();
            Tensor::<2>::from_data(TensorData::new(v, [r, c]), (device, DType::F64))
        })
        .collect();
    Llama { cfg: model.cfg.clone(), params }
}

fn check(cfg: LlamaConfig) {
    let device = Device::flex();
    let mut rng = Rng::new(42);
    let label = format!("{}, tied={}, bias={}", cfg.model_type, cfg.tie_word_embeddings, cfg.qkv_bias);
    let base = Llama::init(cfg, 0.5, 1, &device);
    let model = to_f64(&base, &device, &mut rng);
    let examples: Vec<Example> = (0..2)
        .map(|_| {
            let n = 7;
            Example {
                ids: (0..n).map(|_| rng.below(11) as u32).collect(),
                mask: (0..n).map(|i| u8::from(i >= 2)).collect(),
            }
        })
        .collect();
    let refs: Vec<&Example> = examples.iter().collect();
    let batch = Batch::new(&refs, 0, 64, &model);
    let (_, grads) = loss_and_grads(&model, &batch);
    let specs = model.specs();
    let h = 1e-6;
    let mut worst = 0.0f64;
    for (i, spec) in specs.iter().enumerate() {
        let g64: Vec<f64> = grads[i].clone().unwrap().into_data().convert::<f64>().try_into_vec::<f64>().unwrap();
        let vals: Vec<f64> = model.params[i].clone().into_data().convert::<f64>().try_into_vec::<f64>().unwrap();
        let dims = model.params[i].dims();
        // Three coordinates per parameter tensor.
        for _ in 0..3 {
            let j = rng.below(vals.len());
            let fd = {
                let mut lp = model.clone();
                let mut lm = model.clone();
                let mut vp = vals.clone();
                let mut vm = vals.clone();
                vp[j] += h;
                vm[j] -= h;
                lp.params[i] = Tensor::<2>::from_data(TensorData::new(vp, dims), (&device, DType::F64));
                lm.params[i] = Tensor::<2>::from_data(TensorData::new(vm, dims), (&device, DType::F64));
                (loss_f64(&lp, &batch) - loss_f64(&lm, &batch)) / (2.0 * h)
            };
            let an = g64[j];
            let rel = (an - fd).abs() / (an.abs().max(fd.abs()).max(1e-3));
            worst = worst.max(rel);
            assert!(rel < 1e-4, "{}[{j}]: analytic {an:.8e} vs finite difference {fd:.8e} (rel {rel:.2e})", spec.name);
        }
    }
    println!("gradient check ({label}): {} tensors, max relative difference {worst:.3e}", specs.len());
}

fn loss_f64(model: &Llama, batch: &Batch) -> f64 {
    use patcher::model::llama::masked_cross_entropy;
    let logits = model.forward(batch.inputs.clone());
    let l = masked_cross_entropy(logits, batch.targets.clone(), batch.weights.clone());
    l.into_data().convert::<f64>().try_into_vec::<f64>().unwrap()[0]
}

#[test]
fn gradients_match_finite_differences_untied_with_bias() {
    check(tiny_cfg(false, true));
}

#[test]
fn gradients_match_finite_differences_tied_no_bias() {
    check(tiny_cfg(true, false));
}

#[test]
fn gemma3_gradients_match_finite_differences() {
    check(gemma_cfg());
}
