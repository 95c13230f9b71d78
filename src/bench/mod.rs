//! `patcher bench`: time one training step (forward + loss, backward, optimizer step, each
//! separately; median over steps after warm-up) and the machine's f32 matmul peak, and print
//! tokens/s and achieved GFLOP/s; time one Patcher outer step, sequential against parallel.
//! [`run`] is the whole command (its report, line by line); [`run_torch`] runs the PyTorch
//! reference script for the ratio. [`eval`] times a model's evaluation.
//!
//! The training step is what every trainer runs ([`crate::train::step::loss_and_grads`], then
//! the fused [`optim::step`]): the loss is [`Batch::loss_for`], which applies the head and the
//! log-softmax only to the rows that carry loss. The benchmark scores every position (as
//! PyTorch's `labels = input_ids` does), so all `batch x seq` rows go through the head; SFT
//! batches score only the answers, and their head costs that fraction of what is measured
//! here. Per shape it also reports the peak resident memory of the step ([`memory`]) and the
//! time of the head and the cross-entropy alone on the final hidden states, the part that
//! grows with the vocabulary (Gemma 3: 262,144 tokens).
//!
//! FLOPs per training step are counted as in Kaplan et al. (2020), "Scaling Laws for Neural
//! Language Models", section 2.1: `6 · N · tokens` for the weights plus `6 · L · T · d_attn`
//! per token for attention scores and values (forward `2·L·T·d_attn`, backward twice that).

pub mod eval;
pub mod memory;

use std::time::Instant;

use burn::prelude::*;
use serde::Serialize;

use crate::model::llama::Llama;
use crate::model::{HfConfig, LlamaConfig};
use crate::rng::Rng;
use crate::train::optim::{self, OptimState, OptimizerConfig};
use crate::train::step::{Batch, Example};

/// Every named benchmark shape.
pub const SHAPES: [&str; 3] = ["tiny", "smollm2-135m", "gemma3-270m"];

/// What `--shape all` runs: not `gemma3-270m`, whose benchmark alone (7 steps of 10 s, then
/// the head alone and the optimizer chain) takes about 2.5 minutes and peaks at 6.5 GiB on 2
/// cores, against about a minute for these two.
pub const ALL_SHAPES: [&str; 2] = ["tiny", "smollm2-135m"];

/// A named benchmark shape: the model configuration, batch size and sequence length.
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
        gemma: None,
    };
    match name {
        // SmolLM2-135M at batch 4 x 128.
        "smollm2-135m" => Some((base(49_152, 576, 1536, 30, 9, 3, true), 4, 128)),
        // The tiny tier's shape at batch 8 x 64.
        "tiny" => Some((base(1024, 128, 384, 4, 4, 2, true), 8, 64)),
        // Gemma 3 270M at SmolLM2's batch, 4 x 128 (inside the 512-token window: at this length
        // sliding and global layers compute the same thing).
        "gemma3-270m" => {
            let hf: HfConfig = serde_json::from_str(crate::model::gemma3::HUB_270M_CONFIG)
                .expect("the bench's Gemma 3 config is JSON");
            Some((LlamaConfig::from_hf(&hf, "bench gemma3-270m").expect("the bench's Gemma 3 config resolves"), 4, 128))
        }
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
    /// Rows that carry loss per step (every position: `batch x seq`).
    pub scored_rows: usize,
    /// Peak resident memory (MiB) from the model's initialisation through the timed steps
    /// (forward, backward, fused optimizer; the chain comparison and the head-alone timing come
    /// after it); `None` where it cannot be measured ([`memory`]).
    pub peak_rss_mb: Option<f64>,
    /// Resident memory (MiB) when this shape began (what the process and earlier shapes left).
    pub start_rss_mb: Option<f64>,
    /// The head and the cross-entropy alone ([`Batch::loss_from_hidden`]) on this batch's final
    /// hidden states: forward, and backward to the head weight and the hidden states.
    pub head_loss_forward_s: f64,
    pub head_loss_backward_s: f64,
    /// Peak resident memory (MiB) of those head-and-loss steps above what was resident when
    /// they began: a chunk's logits and softmax, and the gradients.
    pub head_loss_extra_mb: Option<f64>,
    /// The same through autodiff of the full `[N, V]` log-softmax
    /// ([`Batch::loss_from_hidden_unfused`], what training ran before the chunked loss),
    /// timed in the same run after it.
    pub head_loss_unfused_forward_s: f64,
    pub head_loss_unfused_backward_s: f64,
    pub head_loss_unfused_extra_mb: Option<f64>,
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

/// Time forward, backward and an AdamW step of `cfg` at `batch x seq` tokens, as training
/// runs them; then the head and loss alone, and the optimizer's tensor-operation chain.
pub fn train_step(
    name: &str,
    cfg: &LlamaConfig,
    batch: usize,
    seq: usize,
    warmup: usize,
    steps: usize,
    device: &Device,
) -> TrainStepBench {
    let watch = memory::PeakWatch::start();
    let mut model = Llama::init(cfg.clone(), 0.02, 0, device);
    let examples = random_examples(&mut Rng::new(1), batch, seq, cfg.vocab_size);
    let refs: Vec<&Example> = examples.iter().collect();
    let b = Batch::new(&refs, 0, seq + 1, &model);
    let opt_cfg = OptimizerConfig::adamw();
    let mut state = OptimState::new(model.params.len());
    let (mut f, mut bw, mut o) = (vec![], vec![], vec![]);
    let mut last_grads = vec![];
    for i in 0..warmup + steps {
        // crate::train::step::loss_and_grads, split at the backward pass.
        let t0 = Instant::now();
        let tracked = model.tracked();
        let loss = b.loss_for(&tracked);
        let _ = loss.clone().inner().into_scalar::<f32>();
        let t1 = Instant::now();
        let grads = loss.backward();
        let g: Vec<Option<Tensor<2>>> = tracked.params.iter().map(|p| p.grad(&grads)).collect();
        drop(grads);
        drop(tracked);
        let _ = device.sync();
        let t2 = Instant::now();
        optim::step(&opt_cfg, &mut state, &mut model.params, &g, 1e-4);
        // Force the updates to be computed.
        let _ = model.params.last().map(|p| p.clone().sum().into_scalar::<f32>());
        let _ = device.sync();
        let t3 = Instant::now();
        if i >= warmup {
            f.push((t1 - t0).as_secs_f64());
            bw.push((t2 - t1).as_secs_f64());
            o.push((t3 - t2).as_secs_f64());
        }
        last_grads = g;
    }
    let mem = watch.read();
    let (head_loss_forward_s, head_loss_backward_s, head_loss_extra_mb) = head_loss(&model, &b, warmup, steps, true);
    let (head_loss_unfused_forward_s, head_loss_unfused_backward_s, head_loss_unfused_extra_mb) =
        head_loss(&model, &b, warmup, steps, false);
    // The optimizer's tensor-operation chain on its own moments and a copy of the weights
    // (shared with the model until written, as training's are with the tracked model), on the
    // last step's gradients: its cost does not depend on their values.
    let mut chain_state = OptimState::new(model.params.len());
    let mut oc = vec![];
    for i in 0..warmup + steps {
        let mut params = model.params.clone();
        let t0 = Instant::now();
        optim::step_unfused(&opt_cfg, &mut chain_state, &mut params, &last_grads, 1e-4);
        let _ = params.last().map(|p| p.clone().sum().into_scalar::<f32>());
        let _ = device.sync();
        if i >= warmup {
            oc.push(t0.elapsed().as_secs_f64());
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
        scored_rows: b.n_tokens,
        peak_rss_mb: mem.peak_mb,
        start_rss_mb: mem.start_mb,
        head_loss_forward_s,
        head_loss_backward_s,
        head_loss_extra_mb,
        head_loss_unfused_forward_s,
        head_loss_unfused_backward_s,
        head_loss_unfused_extra_mb,
    }
}

/// Median seconds of the head and the loss alone (forward; backward to the head weight and
/// the hidden states) on `b`'s final hidden states, and their peak memory above the start:
/// the chunked loss training runs (`chunked`), or autodiff through the full log-softmax.
fn head_loss(model: &Llama, b: &Batch, warmup: usize, steps: usize, chunked: bool) -> (f64, f64, Option<f64>) {
    let device = model.device();
    let h = model.hidden(b.inputs.clone()); // (B, T, d), no graph
    let _ = device.sync();
    let watch = memory::PeakWatch::start();
    let (mut f, mut bw) = (vec![], vec![]);
    for i in 0..warmup + steps {
        let tracked = model.tracked();
        let hh = h.clone().autodiff().require_grad();
        let t0 = Instant::now();
        let loss = if chunked {
            b.loss_from_hidden(&tracked, hh.clone())
        } else {
            b.loss_from_hidden_unfused(&tracked, hh.clone())
        };
        let _ = loss.clone().inner().into_scalar::<f32>();
        let t1 = Instant::now();
        let grads = loss.backward();
        let (gw, gh) = (tracked.head_weight().grad(&grads), hh.grad(&grads));
        drop(grads);
        let _ = device.sync();
        let t2 = Instant::now();
        assert!(gw.is_some() && gh.is_some(), "the head's backward must reach its weight and the hidden states");
        if i >= warmup {
            f.push((t1 - t0).as_secs_f64());
            bw.push((t2 - t1).as_secs_f64());
        }
    }
    let mem = watch.read();
    (median(f), median(bw), mem.peak_mb.zip(mem.start_mb).map(|(p, s)| p - s))
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
    /// Peak resident memory during each run of outer steps (MiB; `None` where the high-water
    /// mark cannot be reset), and what was resident before it (the model and the data).
    pub sequential_peak_mb: Option<f64>,
    pub parallel_peak_mb: Option<f64>,
    pub resident_mb: Option<f64>,
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
    let data = PatcherData {
        retain: examples(64),
        lookalike: vec![],
        refusal: examples(64),
        harmful: examples(64),
        pad_id: 0,
    };
    let bc = BatchConfig { batch_size: batch, max_len: seq + 1, bucket_window: 1 };
    // The core method's step (no look-alike term, no benign phases): the passes the engine's
    // speed is measured on, comparable with the notebook's earlier benchmarks.
    let mut pc = PatcherConfig { outer_steps: warmup + steps, k: KSchedule::constant(k), ..PatcherConfig::core() };
    (pc.retain_batch, pc.tr_batch, pc.attack.batch) = (bc.clone(), bc.clone(), bc);
    let time = |p: Option<usize>| -> crate::Result<(f64, usize, memory::Peak)> {
        let watch = memory::PeakWatch::start();
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
        Ok((median(secs), passes, watch.read()))
    };
    let (sequential_s, sequential_passes, seq_mem) = time(None)?;
    let (parallel_s, parallel_passes, par_mem) = time(Some(workers))?;
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
        sequential_peak_mb: seq_mem.peak_mb,
        parallel_peak_mb: par_mem.peak_mb,
        resident_mb: seq_mem.start_mb,
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
    let shapes: Vec<&str> = if req.shape == "all" { ALL_SHAPES.to_vec() } else { vec![&req.shape] };
    let known = |name: &str| shape(name).ok_or_else(|| crate::Error::Invalid(format!("unknown shape `{name}`")));
    let (k, workers) = (req.k, req.workers);
    if req.what == "harden" {
        for name in shapes {
            let (cfg, b, t) = known(name)?;
            let r = harden_step(name, &cfg, b, t, k, workers, req.warmup, req.steps, device)?;
            let mb = |x: Option<f64>| x.map_or("-".to_string(), |v| format!("{v:.0} MiB"));
            out(format!(
                "{name}: Patcher outer step, K = {k}: sequential {:.3} s ({} dependent passes), parallel x{workers} {:.3} s ({} passes) -> {:.2}x",
                r.sequential_s, r.sequential_passes, r.parallel_s, r.parallel_passes, r.speedup
            ));
            out(format!(
                "{name}: peak resident memory: sequential {}, parallel x{workers} {} (resident before: {})",
                mb(r.sequential_peak_mb),
                mb(r.parallel_peak_mb),
                mb(r.resident_mb)
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
    for name in &shapes {
        known(name)?;
    }
    let torch_rows = match &req.torch_python {
        Some(py) => Some(run_torch(py, &shapes.join(","), req.steps, req.warmup)?),
        None => None,
    };
    let mb = |x: Option<f64>| x.map_or("-".to_string(), |v| format!("{v:.0}"));
    out(format!(
        "{:<14} {:>6} {:>10} {:>9} {:>9} {:>9} {:>9} {:>10} {:>8} {:>7} {:>9}",
        "shape", "tokens", "params", "fwd s", "bwd s", "optim s", "total s", "tokens/s", "GFLOP/s", "%peak", "peak MiB"
    ));
    for name in shapes {
        let (cfg, b, t) = known(name)?;
        let r = train_step(name, &cfg, b, t, req.warmup, req.steps, device);
        out(format!(
            "{:<14} {:>6} {:>10} {:>9.3} {:>9.3} {:>9.3} {:>9.3} {:>10.0} {:>8.1} {:>6.1}% {:>9}",
            r.shape,
            b * t,
            r.params,
            r.forward_s,
            r.backward_s,
            r.optimizer_s,
            r.total_s,
            r.tokens_per_s,
            r.gflops,
            100.0 * r.gflops / peak,
            mb(r.peak_rss_mb)
        ));
        let head = r.head_loss_forward_s + r.head_loss_backward_s;
        out(format!(
            "  head + cross-entropy alone ({} rows x {} vocab, on the final hidden states): fwd {:.3} s, bwd {:.3} s = {:.0}% of the step's fwd + bwd; its peak {} MiB above the resident",
            r.scored_rows,
            cfg.vocab_size,
            r.head_loss_forward_s,
            r.head_loss_backward_s,
            100.0 * head / (r.forward_s + r.backward_s),
            mb(r.head_loss_extra_mb)
        ));
        out(format!(
            "  the same through autodiff of the full log-softmax, in the same run: fwd {:.3} s, bwd {:.3} s, its peak {} MiB above the resident ({:.2}x the chunked loss's time)",
            r.head_loss_unfused_forward_s,
            r.head_loss_unfused_backward_s,
            mb(r.head_loss_unfused_extra_mb),
            (r.head_loss_unfused_forward_s + r.head_loss_unfused_backward_s) / head
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
            let num = |k: &str| tr[k].as_f64().unwrap_or(f64::NAN);
            let tt = num("total_s");
            out(format!(
                "  pytorch: fwd {:.3} s, bwd {:.3} s, optim {:.3} s, total {:.3} s, peak {} MiB; head + loss alone fwd {:.3} s, bwd {:.3} s -> patcher/pytorch time ratio {:.2}x",
                num("forward_s"),
                num("backward_s"),
                num("optimizer_s"),
                tt,
                mb(tr["peak_rss_mb"].as_f64()),
                num("head_loss_forward_s"),
                num("head_loss_backward_s"),
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

/// Run `scripts/bench_torch.py` on `shapes` (`all` or names joined by commas: the same shapes
/// in PyTorch) with `python`; returns its JSON lines.
pub fn run_torch(
    python: &std::path::Path,
    shapes: &str,
    steps: usize,
    warmup: usize,
) -> crate::Result<Vec<serde_json::Value>> {
    let script = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts/bench_torch.py");
    let out = std::process::Command::new(python)
        .arg(&script)
        .args(["--shape", shapes, "--steps", &steps.to_string(), "--warmup", &warmup.to_string()])
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_gemma3_270m_shape_is_the_published_model() {
        for name in SHAPES {
            assert!(shape(name).is_some(), "{name} does not resolve");
        }
        assert!(ALL_SHAPES.iter().all(|s| SHAPES.contains(s)), "{ALL_SHAPES:?} not among {SHAPES:?}");
        let (cfg, b, t) = shape("gemma3-270m").unwrap();
        assert_eq!(cfg.num_params(), 268_098_176);
        let dims = (cfg.vocab_size, cfg.hidden_size, cfg.intermediate_size, cfg.num_layers);
        assert_eq!(dims, (262_144, 640, 2048, 18));
        assert_eq!((cfg.num_heads, cfg.num_kv_heads, cfg.head_dim), (4, 1, 256));
        assert!(cfg.tie_word_embeddings);
        let g = cfg.gemma.as_ref().expect("read as Gemma 3");
        let global: Vec<usize> = (0..18).filter(|&i| !g.sliding[i]).collect();
        assert_eq!((g.sliding_window, global), (512, vec![5, 11, 17]));
        assert_eq!((b, t), (4, 128));
    }

    #[test]
    fn a_train_step_reports_its_memory_and_the_head_alone() {
        let (cfg, _, _) = shape("tiny").unwrap();
        let r = train_step("tiny", &cfg, 2, 16, 0, 1, &Device::flex());
        assert_eq!(r.scored_rows, 2 * 16);
        for (what, s) in [
            ("forward", r.forward_s),
            ("backward", r.backward_s),
            ("optimizer", r.optimizer_s),
            ("chain", r.optimizer_chain_s),
            ("head forward", r.head_loss_forward_s),
            ("head backward", r.head_loss_backward_s),
            ("unfused head forward", r.head_loss_unfused_forward_s),
            ("unfused head backward", r.head_loss_unfused_backward_s),
        ] {
            assert!(s > 0.0 && s.is_finite(), "{what}: {s} s");
        }
        // Other tests reset the same process-wide mark meanwhile: only the readings' presence
        // and sign are asserted here (src/bench/memory.rs tests the mark itself).
        match (r.start_rss_mb, r.peak_rss_mb) {
            (Some(start), Some(peak)) => assert!(start > 0.0 && peak > 0.0, "start {start} MiB, peak {peak} MiB"),
            (None, None) => {}
            other => panic!("half a memory reading: {other:?}"),
        }
        assert_eq!(r.head_loss_extra_mb.is_some(), r.peak_rss_mb.is_some());
        assert_eq!(r.head_loss_unfused_extra_mb.is_some(), r.peak_rss_mb.is_some());
    }
}
