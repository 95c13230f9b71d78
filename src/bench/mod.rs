//! `patcher bench`: time one training step (forward + loss, backward, optimizer step, each
//! separately; median over steps after warm-up) and the machine's f32 matmul peak, and print
//! tokens/s and achieved GFLOP/s; time one Patcher outer step, sequential against parallel.
//! [`run`] is the whole command (its report, line by line); [`run_torch`] runs the PyTorch
//! reference script for the ratio. [`eval`] times a model's evaluation.
//!
//! FLOPs per training step are counted as in Kaplan et al. (2020), "Scaling Laws for Neural
//! Language Models", section 2.1: `6 · N · tokens` for the weights plus `6 · L · T · d_attn`
//! per token for attention scores and values (forward `2·L·T·d_attn`, backward twice that).

pub mod eval;

use std::time::Instant;

use burn::prelude::*;
use serde::Serialize;

use crate::model::LlamaConfig;
use crate::model::llama::{Llama, masked_cross_entropy};
use crate::rng::Rng;
use crate::train::optim::{self, OptimState, OptimizerConfig};
use crate::train::step::{Batch, Example};

/// A named benchmark shape.
pub fn shape(name: &str) -> Option<(LlamaConfig, usize, usize)> {
    let base = |vocab, d, f, l, h, kv, tied| LlamaConfig {
        model_type: "llama".into(),
        vocab_size: vocab,
        hidden_size: d,
        intermediate_size: f,
        num_layers: l,
        num_heads: h,
        num_kv_heads: kv,
        head_dim: d / h,
        rms_norm_eps: 1e-5,
        rope_theta: 100_000.0,
        max_position_embeddings: 2048,
        tie_word_embeddings: tied,
        qkv_bias: false,
        bos_token_id: Some(1),
        eos_token_ids: vec![2],
        pad_token_id: Some(2),
    };
    match name {
        // SmolLM2-135M at batch 4 x 128.
        "smollm2-135m" => Some((base(49_152, 576, 1536, 30, 9, 3, true), 4, 128)),
        // The tiny tier's shape at batch 8 x 64.
        "tiny" => Some((base(1024, 128, 384, 4, 4, 2, true), 8, 64)),
        _ => None,
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct TrainStepBench {
    pub what: &'static str,
    pub shape: String,
    pub batch: usize,
    pub seq: usize,
    pub params: usize,
    pub forward_s: f64,
    pub backward_s: f64,
    pub optimizer_s: f64,
    /// The same optimizer steps as the tensor-operation chain the fused step replaced
    /// ([`optim::step_unfused`]), timed in the same run on a copy of the weights with its own
    /// moments (not part of the total).
    pub optimizer_chain_s: f64,
    pub total_s: f64,
    pub tokens_per_s: f64,
    pub gflops: f64,
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

/// `n` examples of `seq + 1` uniformly random tokens, every position scored.
fn random_examples(rng: &mut Rng, n: usize, seq: usize, vocab: usize) -> Vec<Example> {
    (0..n)
        .map(|_| Example { ids: (0..=seq).map(|_| rng.below(vocab) as u32).collect(), mask: vec![1; seq + 1] })
        .collect()
}

/// Time forward, backward and an AdamW step of `cfg` at `batch x seq` tokens.
pub fn train_step(
    name: &str,
    cfg: &LlamaConfig,
    batch: usize,
    seq: usize,
    warmup: usize,
    steps: usize,
    device: &Device,
) -> TrainStepBench {
    let mut model = Llama::init(cfg.clone(), 0.02, 0, device);
    let examples = random_examples(&mut Rng::new(1), batch, seq, cfg.vocab_size);
    let refs: Vec<&Example> = examples.iter().collect();
    let b = Batch::new(&refs, 0, seq + 1, &model);
    let opt_cfg = OptimizerConfig::adamw();
    let mut state = OptimState::new(model.params.len());
    let mut chain_state = OptimState::new(model.params.len());
    let (mut f, mut bw, mut o, mut oc) = (vec![], vec![], vec![], vec![]);
    for i in 0..warmup + steps {
        let t0 = Instant::now();
        let tracked = model.tracked();
        let loss = masked_cross_entropy(tracked.forward(b.inputs.clone()), b.targets.clone(), b.weights.clone());
        let _ = loss.clone().inner().into_scalar::<f32>();
        let t1 = Instant::now();
        let grads = loss.backward();
        let g: Vec<Option<Tensor<2>>> = tracked.params.iter().map(|p| p.grad(&grads)).collect();
        drop(grads);
        let _ = device.sync();
        let t2 = Instant::now();
        optim::step(&opt_cfg, &mut state, &mut model.params, &g, 1e-4);
        // Force the updates to be computed.
        let _ = model.params.last().map(|p| p.clone().sum().into_scalar::<f32>());
        let _ = device.sync();
        let t3 = Instant::now();
        // The chain on its own optimizer state (moments held once, as in training) and a copy
        // of the weights (shared with the model until written, as training's are with the
        // tracked model).
        let mut params = model.params.clone();
        let t4 = Instant::now();
        optim::step_unfused(&opt_cfg, &mut chain_state, &mut params, &g, 1e-4);
        let _ = params.last().map(|p| p.clone().sum().into_scalar::<f32>());
        let _ = device.sync();
        let t5 = Instant::now();
        if i >= warmup {
            f.push((t1 - t0).as_secs_f64());
            bw.push((t2 - t1).as_secs_f64());
            o.push((t3 - t2).as_secs_f64());
            oc.push((t5 - t4).as_secs_f64());
        }
    }
    let (forward_s, backward_s, optimizer_s) = (median(f), median(bw), median(o));
    let total_s = forward_s + backward_s + optimizer_s;
    let tokens = (batch * seq) as f64;
    let n = cfg.num_params() as f64;
    let attn = 6.0 * cfg.num_layers as f64 * seq as f64 * (cfg.num_heads * cfg.head_dim) as f64;
    let flops = tokens * (6.0 * n + attn);
    TrainStepBench {
        what: "train_step",
        shape: name.into(),
        batch,
        seq,
        params: cfg.num_params(),
        forward_s,
        backward_s,
        optimizer_s,
        optimizer_chain_s: median(oc),
        total_s,
        tokens_per_s: tokens / total_s,
        gflops: flops / total_s / 1e9,
    }
}

/// GFLOP/s of an `n x n x n` f32 matmul (median of `reps`).
pub fn matmul_peak(n: usize, reps: usize, device: &Device) -> f64 {
    let a = Tensor::<2>::ones([n, n], device).mul_scalar(0.5);
    let b = Tensor::<2>::ones([n, n], device).mul_scalar(0.25);
    let _ = a.clone().matmul(b.clone()).sum().into_scalar::<f32>();
    let mut ts = vec![];
    for _ in 0..reps {
        let t0 = Instant::now();
        let c = a.clone().matmul(b.clone());
        let _ = device.sync();
        let _ = c.narrow(0, 0, 1).narrow(1, 0, 1).into_scalar::<f32>();
        ts.push(t0.elapsed().as_secs_f64());
    }
    2.0 * (n as f64).powi(3) / median(ts) / 1e9
}

/// Wall-clock of one Patcher outer step, sequential (K dependent inner steps) against parallel
/// (P workers, one attack step each), on a randomly initialised model of a benchmark shape
/// with random-token data. Weights and data do not change the cost of a step, only its shape.
#[derive(Debug, Clone, Serialize)]
pub struct HardenBench {
    pub what: &'static str,
    pub shape: String,
    pub device: String,
    pub batch: usize,
    pub seq: usize,
    pub k: usize,
    pub workers: usize,
    /// Median seconds per outer step after warm-up.
    pub sequential_s: f64,
    pub parallel_s: f64,
    /// Dependent forward/backward passes per outer step (critical path).
    pub sequential_passes: usize,
    pub parallel_passes: usize,
    pub speedup: f64,
}

/// Time `steps` outer steps (after `warmup`) of sequential Patcher with constant K and of
/// parallel Patcher with `workers` workers and the same K.
#[allow(clippy::too_many_arguments)]
pub fn harden_step(
    name: &str,
    cfg: &LlamaConfig,
    batch: usize,
    seq: usize,
    k: usize,
    workers: usize,
    warmup: usize,
    steps: usize,
    device: &Device,
) -> crate::Result<HardenBench> {
    use crate::defense::patcher::{HardenOptions, KSchedule, PatcherConfig, PatcherData};
    use crate::experiment::pipeline::HardenMethod;
    use crate::train::batches::BatchConfig;
    let model = Llama::init(cfg.clone(), 0.02, 0, device);
    let mut rng = Rng::new(2);
    let mut examples = |n: usize| random_examples(&mut rng, n, seq, cfg.vocab_size);
    let data = PatcherData { retain: examples(64), refusal: examples(64), harmful: examples(64), pad_id: 0 };
    let bc = BatchConfig { batch_size: batch, max_len: seq + 1, bucket_window: 1 };
    let mut pc = PatcherConfig { outer_steps: warmup + steps, k: KSchedule::constant(k), ..Default::default() };
    (pc.retain_batch, pc.tr_batch, pc.attack.batch) = (bc.clone(), bc.clone(), bc);
    let time = |p: Option<usize>| -> crate::Result<(f64, usize)> {
        let mut secs = vec![];
        let mut passes = 0;
        let mut cb = |st: &crate::defense::patcher::OuterStats| -> crate::Result<()> {
            if st.step > warmup {
                secs.push(st.seconds);
            }
            passes = st.passes;
            Ok(())
        };
        let opts = HardenOptions { on_step: Some(&mut cb), ..Default::default() };
        let method = p.map_or(HardenMethod::Sequential, HardenMethod::Parallel);
        let out = crate::experiment::pipeline::harden(&model, &pc, &data, method, opts)?;
        let _ = out.params[0].clone().sum().into_scalar::<f32>();
        Ok((median(secs), passes))
    };
    let (sequential_s, sequential_passes) = time(None)?;
    let (parallel_s, parallel_passes) = time(Some(workers))?;
    Ok(HardenBench {
        what: "harden_step",
        shape: name.into(),
        device: format!("{device:?}"),
        batch,
        seq,
        k,
        workers,
        sequential_s,
        parallel_s,
        sequential_passes,
        parallel_passes,
        speedup: sequential_s / parallel_s,
    })
}

/// What `patcher bench` runs: `what` is `train-step`, `harden` or `matmul`; `shape` is a
/// benchmark shape or `all`.
#[derive(Debug, Clone)]
pub struct BenchRequest {
    pub what: String,
    pub shape: String,
    pub steps: usize,
    pub warmup: usize,
    /// A Python with PyTorch: also run `scripts/bench_torch.py` and compare (`train-step`).
    pub torch_python: Option<std::path::PathBuf>,
    /// `harden`: inner attack steps K.
    pub k: usize,
    /// `harden`: parallel workers P.
    pub workers: usize,
}

/// Run the benchmarks of `req`, handing each line of the report to `out` as it is measured:
/// the matmul peak first, then a table row (and a JSON line) per shape.
pub fn run(req: &BenchRequest, device: &Device, out: &mut dyn FnMut(String)) -> crate::Result<()> {
    let peak = matmul_peak(2048, 5, device);
    let kernels = crate::determinism::matmul_kernels();
    out(format!("matmul 2048^3 f32 (burn, {device:?}, {kernels} kernels): {peak:.1} GFLOP/s"));
    if req.what == "matmul" {
        return Ok(());
    }
    let shapes: Vec<&str> = if req.shape == "all" { vec!["tiny", "smollm2-135m"] } else { vec![&req.shape] };
    let known = |name: &str| shape(name).ok_or_else(|| crate::Error::Invalid(format!("unknown shape `{name}`")));
    let (k, workers) = (req.k, req.workers);
    if req.what == "harden" {
        for name in shapes {
            let (cfg, b, t) = known(name)?;
            let r = harden_step(name, &cfg, b, t, k, workers, req.warmup, req.steps, device)?;
            out(format!(
                "{name}: Patcher outer step, K = {k}: sequential {:.3} s ({} dependent passes), parallel x{workers} {:.3} s ({} passes) -> {:.2}x",
                r.sequential_s, r.sequential_passes, r.parallel_s, r.parallel_passes, r.speedup
            ));
            out(serde_json::to_string(&r).expect("json"));
        }
        return Ok(());
    }
    if req.what != "train-step" {
        return Err(crate::Error::Invalid(format!(
            "unknown benchmark `{}` (train-step, harden, matmul, eval)",
            req.what
        )));
    }
    let torch_rows = match &req.torch_python {
        Some(py) => Some(run_torch(py, &req.shape, req.steps, req.warmup)?),
        None => None,
    };
    out(format!(
        "{:<14} {:>6} {:>10} {:>9} {:>9} {:>9} {:>9} {:>10} {:>8} {:>7}",
        "shape", "tokens", "params", "fwd s", "bwd s", "optim s", "total s", "tokens/s", "GFLOP/s", "%peak"
    ));
    for name in shapes {
        let (cfg, b, t) = known(name)?;
        let r = train_step(name, &cfg, b, t, req.warmup, req.steps, device);
        out(format!(
            "{:<14} {:>6} {:>10} {:>9.3} {:>9.3} {:>9.3} {:>9.3} {:>10.0} {:>8.1} {:>6.1}%",
            r.shape,
            b * t,
            r.params,
            r.forward_s,
            r.backward_s,
            r.optimizer_s,
            r.total_s,
            r.tokens_per_s,
            r.gflops,
            100.0 * r.gflops / peak
        ));
        out(format!(
            "  optimizer: fused {:.3} s against the tensor-operation chain {:.3} s in the same run ({:.2}x)",
            r.optimizer_s,
            r.optimizer_chain_s,
            r.optimizer_chain_s / r.optimizer_s
        ));
        out(serde_json::to_string(&r).expect("json"));
        if let Some(rows) = &torch_rows
            && let Some(tr) = rows.iter().find(|v| v["what"] == "train_step" && v["shape"] == name)
        {
            let tt = tr["total_s"].as_f64().unwrap_or(f64::NAN);
            out(format!(
                "  pytorch: fwd {:.3} s, bwd {:.3} s, optim {:.3} s, total {:.3} s -> patcher/pytorch time ratio {:.2}x",
                tr["forward_s"].as_f64().unwrap_or(f64::NAN),
                tr["backward_s"].as_f64().unwrap_or(f64::NAN),
                tr["optimizer_s"].as_f64().unwrap_or(f64::NAN),
                tt,
                r.total_s / tt
            ));
        }
    }
    if let Some(rows) = &torch_rows
        && let Some(m) = rows.iter().find(|v| v["what"] == "matmul")
    {
        out(format!("matmul 2048^3 f32 (pytorch): {:.1} GFLOP/s", m["gflops"].as_f64().unwrap_or(f64::NAN)));
    }
    Ok(())
}

/// Run `scripts/bench_torch.py` (the same shapes in PyTorch) with `python`; returns its JSON
/// lines.
pub fn run_torch(
    python: &std::path::Path,
    shape: &str,
    steps: usize,
    warmup: usize,
) -> crate::Result<Vec<serde_json::Value>> {
    let script = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts/bench_torch.py");
    let out = std::process::Command::new(python)
        .arg(&script)
        .args(["--shape", shape, "--steps", &steps.to_string(), "--warmup", &warmup.to_string()])
        .output()
        .map_err(|e| crate::Error::Invalid(format!("running {} {}: {e}", python.display(), script.display())))?;
    if !out.status.success() {
        return Err(crate::Error::Invalid(format!(
            "{} failed: {}",
            script.display(),
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).lines().filter_map(|l| serde_json::from_str(l).ok()).collect())
}
