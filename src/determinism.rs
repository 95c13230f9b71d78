//! Run-to-run, core-count and processor determinism of training (issue 18).
//!
//! A seeded run of this engine is a pure function of its config *on one processor*: data order,
//! initialisation and every sampled attack come from [`crate::rng`]. What changes between
//! processors is float rounding, and training amplifies a last-bit difference into a different
//! model within a few hundred steps. The sources, in burn 0.22's `flex` CPU backend:
//!
//! 1. **SIMD dispatch by CPU features.** Element-wise reductions (`sum`, `mean_dim` in RMSNorm,
//!    the softmax denominators) run through `macerator`, which picks AVX-512 (`V4`, or `V4FP16`
//!    where the CPU has AVX-512 FP16), AVX2 (`V3`) or SSE4 (`V2`) at run time. Each keeps as many
//!    partial sums as its vector has lanes, so the summation order (and the rounding) follows
//!    the vector width.
//!    The matrix products (`gemm`) have AVX2 kernels only, unless the binary is built with
//!    the `avx512` feature ([`matmul_kernels`]): then an AVX-512 CPU runs 16-lane kernels whose
//!    matrix-vector products keep 16 partial sums instead of 8 and whose inner-dimension blocks
//!    are sized for the wider panels, so `--deterministic` no longer gives an AVX2 machine's
//!    bits ([`fixed_order_caveat`]; measured 2.9e-5 on the tiny shape after 4 steps).
//! 2. **Matrix-product blocking by cache size.** `gemm` splits the inner dimension into blocks
//!    of `kc` elements, with `kc` derived from the L1 data cache's size and associativity read
//!    from `/sys` (at least 512). Products whose inner dimension exceeds `kc` add their blocks in
//!    an order that depends on the cache (tiny tier: inner dimensions ≤ 384, one block; SmolLM2:
//!    the MLP's 1,536 and the weight gradients' batch x sequence can be split).
//! 3. **Thread count.** `gemm` splits the *output* among threads, which leaves each element's
//!    sum unchanged, and row-wise reductions give one row to one thread. The exception is a
//!    whole-tensor `sum()` of at least 4 Mi elements, which `flex` splits into rayon tasks whose
//!    tree depends on the pool and on work stealing. The only such sum in training was the
//!    gradient norm of a large embedding; [`crate::train::optim::grad_norm`] now reduces row by
//!    row first, so no training path depends on the core count.
//!
//! [`fingerprint`] trains a model for a few seeded steps on random tokens and records every loss
//! and a hash of the weights; `patcher bench determinism` prints it with the machine's features
//! so two machines (or two thread counts) can be compared, and `--save`/`--compare` give the
//! largest weight difference. `tests/determinism.rs` asserts the core-count independence.

use std::path::Path;

use burn::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::{IoContext, Result};
use crate::model::{Llama, LlamaConfig};
use crate::rng::Rng;
use crate::train::optim::{self, OptimState, OptimizerConfig};
use crate::train::step::{Batch, Example, loss_and_grads};

/// What the kernels dispatch on, read on this machine.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MachineInfo {
    pub cpu: String,
    /// The widest x86 SIMD level the element-wise kernels will use.
    pub simd: String,
    pub fma: bool,
    /// Threads of the current rayon pool (what `flex` and `gemm` split work over).
    pub threads: usize,
    /// L1 data / L2 cache sizes as `gemm` reads them from `/sys` (bytes; 0 when unreadable).
    pub l1d_bytes: usize,
    pub l2_bytes: usize,
    /// The kernels the matrix products run ([`matmul_kernels`]; empty in records made before
    /// the field existed).
    #[serde(default)]
    pub matmul: String,
}

/// The kernels `gemm` runs the matrix products with on this machine: `avx512` (only in a build
/// with the `avx512` feature, on a CPU with AVX-512F), `avx2-fma`, or `scalar` (no FMA).
pub fn matmul_kernels() -> &'static str {
    #[cfg(target_arch = "x86_64")]
    {
        if cfg!(feature = "avx512") && std::arch::is_x86_feature_detected!("avx512f") {
            return "avx512";
        }
        if std::arch::is_x86_feature_detected!("fma") { "avx2-fma" } else { "scalar" }
    }
    #[cfg(not(target_arch = "x86_64"))]
    "native"
}

/// Why `--deterministic` cannot promise the same bits as an AVX2 machine here, if it cannot:
/// this build's AVX-512 matrix kernels split long inner dimensions into other blocks and keep
/// 16 partial sums where the AVX2 kernels keep 8 (docs/results.md section 19).
pub fn fixed_order_caveat() -> Option<String> {
    (matmul_kernels() == "avx512").then(|| {
        "this build runs the AVX-512 matrix kernels (feature `avx512`): --deterministic gives the same \
         bits only among AVX-512 processors with the same L1 cache; build without the feature for the \
         same bits on AVX2 and AVX-512 processors"
            .to_string()
    })
}

fn sys_cache_bytes(index: usize) -> usize {
    let p = format!("/sys/devices/system/cpu/cpu0/cache/index{index}/size");
    let s = std::fs::read_to_string(p).unwrap_or_default();
    let s = s.trim();
    let (num, mul) = match s.strip_suffix('K') {
        Some(n) => (n, 1024),
        None => match s.strip_suffix('M') {
            Some(n) => (n, 1024 * 1024),
            None => (s, 1),
        },
    };
    num.parse::<usize>().map(|n| n * mul).unwrap_or(0)
}

impl MachineInfo {
    pub fn detect() -> Self {
        let cpu = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("model name"))
                    .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
            })
            .unwrap_or_else(|| std::env::consts::ARCH.to_string());
        #[cfg(target_arch = "x86_64")]
        let (simd, fma) = {
            let simd = if std::arch::is_x86_feature_detected!("avx512fp16") {
                "avx512-fp16"
            } else if std::arch::is_x86_feature_detected!("avx512f") {
                "avx512"
            } else if std::arch::is_x86_feature_detected!("avx2") {
                "avx2"
            } else if std::arch::is_x86_feature_detected!("sse4.2") {
                "sse4"
            } else {
                "scalar"
            };
            (simd, std::arch::is_x86_feature_detected!("fma"))
        };
        #[cfg(not(target_arch = "x86_64"))]
        let (simd, fma) = ("native", true);
        // index0 is the L1 data cache and index2 the L2 on Linux x86 machines.
        Self {
            cpu,
            simd: simd.into(),
            fma,
            threads: rayon::current_num_threads(),
            l1d_bytes: sys_cache_bytes(0),
            l2_bytes: sys_cache_bytes(2),
            matmul: matmul_kernels().into(),
        }
    }
}

/// Seeded short training run: losses at every step and weight hashes.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Fingerprint {
    pub steps: usize,
    /// The loss before each optimizer step (f32 bits are what is compared).
    pub losses: Vec<f32>,
    /// FNV-1a over the f32 bits of every parameter after the first step and at the end.
    pub hash_step1: String,
    pub hash_final: String,
}

/// FNV-1a over the bits of every parameter, in order.
pub fn weights_hash(model: &Llama) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for p in &model.params {
        for x in crate::model::llama::to_vec_f32(p.clone()) {
            for b in x.to_bits().to_le_bytes() {
                h ^= b as u64;
                h = h.wrapping_mul(0x0100_0000_01b3);
            }
        }
    }
    format!("{h:016x}")
}

/// Largest absolute difference between two models' parameters.
pub fn max_abs_diff(a: &Llama, b: &Llama) -> f64 {
    a.params
        .iter()
        .zip(&b.params)
        .map(|(x, y)| (x.clone() - y.clone()).abs().max().into_scalar::<f32>() as f64)
        .fold(0.0, f64::max)
}

/// Train `cfg` (initialised from `seed`) for `steps` AdamW steps (lr 1e-3, clip 1) on seeded
/// random-token batches of `batch x seq`, as the fine-tuning engine does. Returns the final
/// model and the fingerprint.
pub fn fingerprint(
    cfg: &LlamaConfig,
    batch: usize,
    seq: usize,
    steps: usize,
    seed: u64,
    device: &Device,
) -> (Llama, Fingerprint) {
    let mut model = Llama::init(cfg.clone(), 0.02, seed, device);
    let mut rng = Rng::derive(seed, "determinism/data");
    let opt = OptimizerConfig::adamw();
    let mut state = OptimState::new(model.params.len());
    let (mut losses, mut hash_step1) = (vec![], String::new());
    for step in 0..steps {
        let ex: Vec<Example> = (0..batch)
            .map(|_| Example {
                ids: (0..=seq).map(|_| rng.below(cfg.vocab_size) as u32).collect(),
                mask: vec![1; seq + 1],
            })
            .collect();
        let refs: Vec<&Example> = ex.iter().collect();
        let b = Batch::new(&refs, 0, seq + 1, &model);
        let (loss, mut g) = loss_and_grads(&model, &b);
        losses.push(loss as f32);
        optim::clip_grad_norm(&mut g, 1.0);
        optim::step(&opt, &mut state, &mut model.params, &g, 1e-3);
        if step == 0 {
            hash_step1 = weights_hash(&model);
        }
    }
    let hash_final = weights_hash(&model);
    (model, Fingerprint { steps, losses, hash_step1, hash_final })
}

/// Hashes of single kernels on fixed seeded inputs, to tell which one differs between two
/// machines: matrix products with an inner dimension of 128 (one `gemm` block) and 1,536
/// (split into `kc` blocks on most caches), a whole-tensor sum, a row mean (RMSNorm), a row
/// softmax and `exp`.
pub fn kernel_hashes(device: &Device) -> Vec<(&'static str, String)> {
    let mut rng = Rng::derive(7, "determinism/kernels");
    let mut t = |r: usize, c: usize| {
        let v: Vec<f32> = (0..r * c).map(|_| rng.uniform() as f32 * 2.0 - 1.0).collect();
        Tensor::<2>::from_data(TensorData::new(v, [r, c]), device)
    };
    let h = |x: Tensor<2>| {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for v in x.into_data().convert::<f32>().try_into_vec::<f32>().expect("f32") {
            h = (h ^ v.to_bits() as u64).wrapping_mul(0x0100_0000_01b3);
        }
        format!("{h:016x}")
    };
    let (a, b) = (t(64, 128), t(128, 384));
    let (c, d) = (t(64, 1536), t(1536, 576));
    let x = t(512, 384);
    vec![
        ("matmul k=128", h(a.matmul(b))),
        ("matmul k=1536", h(c.matmul(d))),
        ("sum", h(x.clone().sum().reshape([1, 1]))),
        ("mean_dim", h(x.clone().square().mean_dim(1))),
        ("softmax", h(burn::tensor::activation::softmax(x.clone(), 1))),
        ("exp", h(x.clone().exp())),
        ("log", h(x.clone().abs().add_scalar(0.5).log())),
        ("matmul n=1", h(x.clone().matmul(Tensor::ones([384, 1], device)))),
        ("matmul m=1", h(Tensor::<2>::ones([1, 512], device).matmul(x.clone()))),
        (
            "fixed rms_norm",
            h(crate::model::fixed::rms_norm(x.clone().reshape([8, 64, 384]), Tensor::ones([1, 384], device), 1e-5)
                .reshape([512, 384])),
        ),
        ("fixed log_softmax", h(crate::model::fixed::log_softmax_rows(x))),
    ]
}

/// Run `f` on a rayon pool of exactly `threads` threads (0: the global pool).
pub fn with_threads<T: Send>(threads: usize, f: impl FnOnce() -> T + Send) -> Result<T> {
    if threads == 0 {
        return Ok(f());
    }
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .map_err(|e| crate::Error::Invalid(format!("--threads {threads}: {e}")))?;
    Ok(pool.install(f))
}

/// `patcher determinism`: print the machine, the fingerprint of a seeded run of `shape` (a
/// [`crate::bench::shape`] name) on a pool of `threads` threads (0: all cores), optionally save
/// the weights or compare them with a run saved on another machine. Returns the report lines.
pub fn probe(
    shape: &str,
    steps: usize,
    threads: usize,
    seed: u64,
    save: Option<&Path>,
    compare: Option<&Path>,
    device: &Device,
) -> Result<Vec<String>> {
    let (cfg, batch, seq) = crate::bench::shape(shape)
        .ok_or_else(|| crate::Error::Invalid(format!("unknown shape `{shape}` (tiny, smollm2-135m)")))?;
    let (info, model, fp, secs) = with_threads(threads, || {
        let t0 = std::time::Instant::now();
        let (m, fp) = fingerprint(&cfg, batch, seq, steps, seed, device);
        (MachineInfo::detect(), m, fp, t0.elapsed().as_secs_f64())
    })?;
    let mut out = vec![
        format!(
            "machine: {} | simd {} | fma {} | matmul {} | threads {} | L1d {} KiB | L2 {} KiB",
            info.cpu,
            info.simd,
            info.fma,
            info.matmul,
            info.threads,
            info.l1d_bytes / 1024,
            info.l2_bytes / 1024
        ),
        format!(
            "run: shape {shape}, batch {batch} x {seq}, {steps} AdamW steps, seed {seed}, reductions {}, {secs:.1} s",
            if crate::model::fixed::fixed_order() { "fixed-order (--deterministic)" } else { "backend" }
        ),
        format!("losses: {}", fp.losses.iter().map(|l| format!("{l:.9}")).collect::<Vec<_>>().join(" ")),
        format!("weights hash after step 1: {} | final: {}", fp.hash_step1, fp.hash_final),
        format!(
            "kernels: {}",
            kernel_hashes(device).iter().map(|(k, v)| format!("{k} {v}")).collect::<Vec<_>>().join(" | ")
        ),
    ];
    if let Some(dir) = save {
        crate::io::hf::save_model(&model, dir, None)?;
        let json = serde_json::to_string_pretty(&(&info, &fp)).expect("plain data serialises");
        let path = dir.join("fingerprint.json");
        crate::io::write_atomic(&path, json.as_bytes()).at(&path)?;
        out.push(format!("saved the weights and fingerprint to {}", dir.display()));
    }
    if let Some(dir) = compare {
        let other = crate::io::hf::load_model(dir, device)?;
        let theirs: Option<(MachineInfo, Fingerprint)> =
            std::fs::read_to_string(dir.join("fingerprint.json")).ok().and_then(|s| serde_json::from_str(&s).ok());
        let d = max_abs_diff(&model, &other);
        out.push(format!("max |Δ weight| against {}: {d:.3e}", dir.display()));
        if let Some((_, f)) = theirs {
            let first = fp.losses.iter().zip(&f.losses).position(|(a, b)| a.to_bits() != b.to_bits());
            let dl = fp.losses.iter().zip(&f.losses).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
            out.push(format!(
                "losses: first differing step {} | max |Δ loss| {dl:.3e} | step-1 weights {}",
                first.map(|s| (s + 1).to_string()).unwrap_or_else(|| "none".into()),
                if f.hash_step1 == fp.hash_step1 { "identical" } else { "differ" }
            ));
        }
    }
    Ok(out)
}
