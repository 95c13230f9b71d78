//! Reductions in a fixed order, for results that do not depend on the processor's SIMD width
//! (`--deterministic`, [`crate::determinism`]).
//!
//! burn-flex's reductions (`sum`, `mean_dim`, and the sums inside softmax and the backward of
//! broadcast operations) keep one partial sum per SIMD lane, so AVX-512, AVX2 and SSE machines
//! round differently. Its matrix product does not: `gemm` accumulates every output element in
//! the order of the inner dimension whatever the vector width (measured: identical bits under
//! AVX-512 and AVX2, `patcher determinism`). So in deterministic mode every reduction on the
//! training and evaluation path is written as a product with a vector of ones, and every
//! broadcast as a product with ones of inner dimension 1 (exact copies), whose backward passes
//! are again products:
//! - row sums `x·1` (`[N, D] x [D, 1]`), broadcasts `v·1ᵀ` (`[N, 1] x [1, D]`);
//! - RMSNorm, row softmax and row log-softmax built from those (the row maximum is an exact
//!   operation and is detached: softmax does not depend on the shift);
//! - whole-vector sums `1ᵀ·x`.
//!
//! What it does not remove: `gemm` still differs between CPUs with and without FMA, and for
//! inner dimensions above its cache-derived block `kc` (at least 512) the block order follows
//! the L1 cache size. All of this holds for `gemm`'s AVX2 kernels, the only ones in a default
//! build; a build with the `avx512` feature runs other kernels on AVX-512 CPUs
//! ([`crate::determinism::fixed_order_caveat`]).

use std::sync::atomic::{AtomicBool, Ordering};

use burn::prelude::*;

static FIXED_ORDER: AtomicBool = AtomicBool::new(false);

/// Turn deterministic (fixed-order) reductions on or off for the whole process. Turning them on
/// in a build whose matrix kernels break the promise prints why, once per process
/// ([`crate::determinism::fixed_order_caveat`]).
pub fn set_fixed_order(on: bool) {
    FIXED_ORDER.store(on, Ordering::SeqCst);
    static WARNED: std::sync::Once = std::sync::Once::new();
    if let (true, Some(why)) = (on, crate::determinism::fixed_order_caveat()) {
        WARNED.call_once(|| eprintln!("warning: {why}"));
    }
}

/// Whether deterministic reductions are on (`--deterministic`, or `PATCHER_DETERMINISTIC=1`).
/// Called in every norm and softmax: the environment is read once per process.
pub fn fixed_order() -> bool {
    static FROM_ENV: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    FIXED_ORDER.load(Ordering::Relaxed)
        || *FROM_ENV.get_or_init(|| std::env::var("PATCHER_DETERMINISTIC").is_ok_and(|v| v == "1"))
}

fn ones(like: &Tensor<2>, r: usize, c: usize) -> Tensor<2> {
    Tensor::<2>::ones([r, c], &like.device())
}

/// Row sums of `x` `[N, D]` as `x·1`: `[N, 1]`.
pub fn row_sum(x: Tensor<2>) -> Tensor<2> {
    let d = x.dims()[1];
    let o = ones(&x, d, 1);
    x.matmul(o) // (N, 1)
}

/// `v` `[N, 1]` repeated over `d` columns as `v·1ᵀ`: `[N, d]`.
pub fn broadcast_cols(v: Tensor<2>, d: usize) -> Tensor<2> {
    let o = ones(&v, 1, d);
    v.matmul(o) // (N, d)
}

/// `w` `[1, d]` repeated over `n` rows as `1·w`: `[n, d]`.
pub fn broadcast_rows(w: Tensor<2>, n: usize) -> Tensor<2> {
    let o = ones(&w, n, 1);
    o.matmul(w) // (n, d)
}

/// Sum of all elements of `x` `[N]` as `1ᵀ·x`: `[1]`.
pub fn sum_all(x: Tensor<1>) -> Tensor<1> {
    let n = x.dims()[0];
    let row = x.reshape([1, n]);
    row_sum(row).reshape([1])
}

/// RMSNorm over the last axis of `x` `[B, T, d]` with weight `w` `[1, d]`.
pub fn rms_norm(x: Tensor<3>, w: Tensor<2>, eps: f64) -> Tensor<3> {
    let [b, t, d] = x.dims();
    let x2 = x.reshape([b * t, d]); // (N, d)
    let ms = row_sum(x2.clone().square()).div_scalar(d as f64); // (N, 1)
    let inv = ms.add_scalar(eps).sqrt().recip(); // (N, 1)
    (x2 * broadcast_cols(inv, d) * broadcast_rows(w, b * t)).reshape([b, t, d])
}

/// Softmax over the last axis of `x` `[N, D]`.
pub fn softmax_rows(x: Tensor<2>) -> Tensor<2> {
    let d = x.dims()[1];
    let m = x.clone().detach().max_dim(1); // (N, 1), exact
    let e = (x - broadcast_cols(m, d)).exp(); // (N, D)
    let z = row_sum(e.clone()); // (N, 1)
    e / broadcast_cols(z, d)
}

/// Log-softmax over the last axis of `x` `[N, D]`.
pub fn log_softmax_rows(x: Tensor<2>) -> Tensor<2> {
    let d = x.dims()[1];
    let m = x.clone().detach().max_dim(1); // (N, 1), exact
    let shifted = x - broadcast_cols(m, d); // (N, D)
    let lse = row_sum(shifted.clone().exp()).log(); // (N, 1)
    shifted - broadcast_cols(lse, d)
}

/// `f` applied to `x` viewed as rows of its last axis `[N, last]`, reshaped back.
fn over_rows<const D: usize>(x: Tensor<D>, f: fn(Tensor<2>) -> Tensor<2>) -> Tensor<D> {
    let dims = x.dims();
    let last = dims[D - 1];
    let n = dims.iter().product::<usize>() / last;
    f(x.reshape([n, last])).reshape(dims)
}

/// Softmax over the last axis of a tensor of any rank, in fixed order when enabled.
pub fn softmax<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    if fixed_order() { over_rows(x, softmax_rows) } else { burn::tensor::activation::softmax(x, D - 1) }
}

/// Log-softmax over the last axis of a tensor of any rank, in fixed order when enabled.
pub fn log_softmax<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    if fixed_order() { over_rows(x, log_softmax_rows) } else { burn::tensor::activation::log_softmax(x, D - 1) }
}

/// Sum of all elements, in fixed order when enabled.
pub fn sum<const D: usize>(x: Tensor<D>) -> Tensor<1> {
    if !fixed_order() {
        return x.sum();
    }
    let n = x.dims().iter().product::<usize>();
    sum_all(x.reshape([n]))
}

/// Row sums of `x` `[N, D]` as `[N]`, in fixed order when enabled.
pub fn row_sums(x: Tensor<2>) -> Tensor<1> {
    let n = x.dims()[0];
    if fixed_order() { row_sum(x).reshape([n]) } else { x.sum_dim(1).reshape([n]) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t2(v: Vec<f32>, r: usize, c: usize) -> Tensor<2> {
        Tensor::<2>::from_data(TensorData::new(v, [r, c]), &Device::flex())
    }

    fn vals<const D: usize>(x: Tensor<D>) -> Vec<f32> {
        x.into_data().convert::<f32>().try_into_vec::<f32>().unwrap()
    }

    fn max_diff(a: &[f32], b: &[f32]) -> f32 {
        a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
    }

    #[test]
    fn fixed_order_ops_equal_the_backend_ops() {
        let mut r = crate::rng::Rng::new(3);
        let v: Vec<f32> = (0..6 * 70).map(|_| (r.uniform() as f32 - 0.5) * 8.0).collect();
        let x = t2(v, 6, 70);
        let sm = max_diff(&vals(softmax_rows(x.clone())), &vals(burn::tensor::activation::softmax(x.clone(), 1)));
        let lsm =
            max_diff(&vals(log_softmax_rows(x.clone())), &vals(burn::tensor::activation::log_softmax(x.clone(), 1)));
        let rs = max_diff(&vals(row_sum(x.clone())), &vals(x.clone().sum_dim(1)));
        let sa = max_diff(&vals(sum_all(x.clone().reshape([420]))), &vals(x.clone().sum()));
        let w = t2((0..70).map(|i| 0.5 + i as f32 / 70.0).collect(), 1, 70);
        let x3 = x.clone().reshape([2, 3, 70]);
        let inv = x3.clone().square().mean_dim(2).add_scalar(1e-5).sqrt().recip();
        let reference = x3.clone() * inv * w.clone().unsqueeze::<3>();
        let rn = max_diff(&vals(rms_norm(x3, w, 1e-5)), &vals(reference));
        println!("max |Δ|: softmax {sm:.2e}, log-softmax {lsm:.2e}, row sum {rs:.2e}, sum {sa:.2e}, rms_norm {rn:.2e}");
        assert!(sm < 1e-6 && lsm < 1e-5 && rs < 1e-4 && sa < 1e-3 && rn < 1e-5);
    }

    #[test]
    fn fixed_order_gradients_equal_the_backend_gradients() {
        // d/dx Σ w ⊙ log_softmax(x): the fixed-order graph against burn's.
        let dev = Device::flex().autodiff();
        let mut r = crate::rng::Rng::new(4);
        let v: Vec<f32> = (0..4 * 33).map(|_| (r.uniform() as f32 - 0.5) * 6.0).collect();
        let wv: Vec<f32> = (0..4 * 33).map(|_| r.uniform() as f32).collect();
        let grad = |fixed: bool| {
            let x = Tensor::<2>::from_data(TensorData::new(v.clone(), [4, 33]), &dev).require_grad();
            let w = Tensor::<2>::from_data(TensorData::new(wv.clone(), [4, 33]), &dev);
            let y =
                if fixed { log_softmax_rows(x.clone()) } else { burn::tensor::activation::log_softmax(x.clone(), 1) };
            let s = if fixed { sum_all((y * w).reshape([132])) } else { (y * w).sum() };
            let g = s.backward();
            vals(x.grad(&g).unwrap())
        };
        let d = max_diff(&grad(true), &grad(false));
        println!("log-softmax gradient max |Δ| {d:.2e}");
        assert!(d < 1e-5, "{d}");
    }
}
