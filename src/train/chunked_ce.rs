//! The output head and the cross-entropy of the training loss, fused and taken in chunks of
//! rows, with a hand-written backward pass: the `[N, V]` logits and their softmax exist one
//! chunk at a time and are never kept for the backward pass. With Gemma 3's 262,144-token
//! vocabulary the head is the largest matrix product of a step, and autodiff through
//! `log_softmax` kept several `[N, V]` tensors alive (docs/results.md section 20).
//!
//! The idea is that of the fused linear cross-entropy of Liger Kernel (Hsu et al., 2024,
//! arXiv:2410.10989) and of Cut Cross-Entropy (Wijmans et al., 2024, arXiv:2411.09009): the
//! gradient of `L = Σᵢ wᵢ·(logsumexp(hᵢ·Wᵀ) − hᵢ·W_{yᵢ})` is known in closed form,
//! `∂L/∂logits = w ⊙ (softmax(logits) − onehot(y))`, so it is computed during the forward pass,
//! chunk by chunk, as `∂L/∂h = G·W` `[N, d]` and `∂L/∂W = Gᵀ·h` `[V, d]`.
//!
//! burn 0.22 has no custom backward operations for its dispatch tensors, so the gradients enter
//! the autodiff graph through a surrogate: with `Δh` and `ΔW` constants,
//! `S = Σ h ⊙ Δh + Σ W ⊙ ΔW` has exactly those gradients, and `S − detach(S) + L` has the value
//! `L` (the difference of equal floats is exactly 0) and the gradient of `L`. First-order only,
//! which is all the project differentiates.

use burn::prelude::*;
use burn::tensor::IndexingUpdateOp;

use crate::model::fixed;

/// Elements of one chunk's logits: 2^27 floats (512 MiB), so 512 rows of Gemma 3's vocabulary
/// and 2,730 of SmolLM2's. Measured on Gemma 3 at 512 rows (docs/results.md section 20): one
/// chunk of 512 rows took 0.73x the time of autodiff through the full softmax, two of 256
/// 0.98x (each chunk writes a `[V, d]` product for the head's gradient).
pub const CHUNK_ELEMENTS: usize = 1 << 27;

/// `Σᵢ scaleᵢ · (−log softmax(rowsᵢ · headᵀ)[targetsᵢ])` as a one-element tensor whose gradient
/// reaches `rows` `[N, d]` and `head` `[V, d]` when they are tracked; `scale` `[N]` holds each
/// row's weight (already divided by the batch's weight sum for a mean). The value is summed in
/// f64 in row order. `chunk` rows at a time ([`chunk_rows`] for the default).
pub fn head_nll(rows: Tensor<2>, head: Tensor<2>, targets: Tensor<1, Int>, scale: &[f64], chunk: usize) -> Tensor<1> {
    let [n, d] = rows.dims();
    let v = head.dims()[0];
    assert_eq!(scale.len(), n, "one weight per row");
    assert!(chunk > 0, "chunk must be positive");
    let (need_h, need_w) = (rows.is_tracked(), head.is_tracked());
    let h = rows.clone().inner(); // (N, d)
    let w = head.clone().inner(); // (V, d)
    let targets = targets.inner(); // (N,)
    let (device, dtype) = (h.device(), h.dtype());
    let mut value = 0.0f64;
    let mut dh_chunks = Vec::new();
    let mut dw: Option<Tensor<2>> = None;
    let mut start = 0;
    while start < n {
        let c = chunk.min(n - start);
        let hc = h.clone().narrow(0, start, c); // (C, d)
        let tc = targets.clone().narrow(0, start, c).reshape([c, 1]); // (C, 1)
        let sc = &scale[start..start + c];
        let logits = hc.clone().matmul(w.clone().transpose()); // (C, V)
        let picked = logits.clone().gather(1, tc.clone()); // (C, 1)
        let m = logits.clone().max_dim(1); // (C, 1), exact
        let e = (logits - m.clone()).exp(); // (C, V)
        let z = if fixed::fixed_order() { fixed::row_sum(e.clone()) } else { e.clone().sum_dim(1) }; // (C, 1)
        let nll = (m + z.clone().log() - picked).reshape([c]); // (C,)
        let nll = nll.into_data().convert::<f64>().try_into_vec::<f64>().expect("float losses");
        value += nll.iter().zip(sc).map(|(l, s)| l * s).sum::<f64>();
        if !(need_h || need_w) {
            start += c;
            continue;
        }
        // ∂L/∂logits = scale ⊙ (softmax − onehot(target))
        let factor = Tensor::<2>::from_data(TensorData::new(sc.to_vec(), [c, 1]), (&device, dtype)); // (C, 1)
        let g = e * (factor.clone() / z); // (C, V): scale ⊙ softmax
        let g = g.scatter(1, tc, factor.neg(), IndexingUpdateOp::Add); // (C, V)
        if need_h {
            dh_chunks.push(g.clone().matmul(w.clone())); // (C, d)
        }
        if need_w {
            let part = g.transpose().matmul(hc); // (V, d)
            dw = Some(match dw {
                None => part,
                Some(acc) => acc + part,
            });
        }
        start += c;
    }
    let loss = Tensor::<1>::from_data(TensorData::new(vec![value], [1]), (&device, dtype));
    if !(need_h || need_w) {
        return loss;
    }
    let mut s: Option<Tensor<1>> = None;
    let mut add = |t: Tensor<1>| s = Some(s.take().map_or(t.clone(), |a| a + t));
    if need_h && n > 0 {
        let dh = Tensor::cat(dh_chunks, 0); // (N, d)
        add((rows * dh).reshape([n * d]).sum());
    }
    if let (true, Some(dw)) = (need_w, dw) {
        add((head * dw).reshape([v * d]).sum());
    }
    let s = s.expect("a tracked input");
    s.clone() - s.detach() + loss
}

/// Rows per chunk for a vocabulary of `v` tokens: [`CHUNK_ELEMENTS`] logits, at least one row.
pub fn chunk_rows(v: usize) -> usize {
    (CHUNK_ELEMENTS / v.max(1)).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::llama::to_vec_f32;
    use crate::testing::{micro_config_sized, micro_examples};
    use crate::train::step::{Batch, grads_of};

    /// Largest absolute difference of two gradient lists over the largest reference entry.
    fn grads_diff(a: &[Option<Tensor<2>>], b: &[Option<Tensor<2>>]) -> f64 {
        let b: Vec<Tensor<2>> = b.iter().map(|g| g.clone().expect("every parameter has a gradient")).collect();
        let scale = b.iter().map(|g| g.clone().abs().max().into_scalar::<f32>() as f64).fold(0.0, f64::max);
        crate::testing::max_diff(a, &b) / scale
    }

    /// The chunked loss against autodiff through the full log-softmax: value and every
    /// parameter's gradient, for tied and untied heads, a mean and a weighted batch, and chunks
    /// of 1, 3 and all rows.
    #[test]
    fn chunked_loss_and_gradients_match_autodiff_of_the_full_softmax() {
        let device = crate::device_from_name("cpu").unwrap();
        let (mut worst_value, mut worst_grad) = (0.0f64, 0.0f64);
        for tied in [true, false] {
            let model = crate::model::Llama::init(micro_config_sized(32, 24, tied), 0.3, 7, &device);
            let ex = micro_examples(4, 3);
            let refs: Vec<_> = ex.iter().take(5).collect();
            let (a, b) = (&refs[..3], &refs[3..]);
            for batch in [Batch::new(&refs, 0, 32, &model), Batch::weighted(&[(a, 1.0), (b, 0.4)], 0, 32, &model)] {
                let tracked = model.tracked();
                let (want, want_g) =
                    grads_of(&tracked, batch.loss_from_hidden_unfused(&tracked, tracked.hidden(batch.inputs.clone())));
                let rows = batch.answer_rows(model.hidden(batch.inputs.clone())).unwrap();
                let n = rows.rows.dims()[0];
                assert!(n > 3, "several rows: {n}");
                for chunk in [1, 3, n] {
                    let tracked = model.tracked();
                    let h = tracked.hidden(batch.inputs.clone());
                    let a = batch.answer_rows(h).unwrap();
                    let scale = batch.row_scale(&a);
                    let loss = head_nll(a.rows, tracked.head_weight(), a.targets, &scale, chunk);
                    let (got, got_g) = grads_of(&tracked, loss);
                    worst_value = worst_value.max((got - want).abs() / want.abs());
                    worst_grad = worst_grad.max(grads_diff(&got_g, &want_g));
                    // Untracked: the same value, no graph.
                    let plain = model.untracked();
                    let a = batch.answer_rows(plain.hidden(batch.inputs.clone())).unwrap();
                    let v = head_nll(a.rows, plain.head_weight(), a.targets, &scale, chunk);
                    assert!(!v.is_tracked());
                    assert!((v.into_scalar::<f32>() as f64 - want).abs() < 1e-5 * want.abs());
                }
            }
        }
        println!("chunked cross-entropy vs autodiff: value rel {worst_value:.2e}, gradients max rel {worst_grad:.2e}");
        assert!(worst_value < 1e-6, "value rel diff {worst_value:.2e}");
        assert!(worst_grad < 1e-5, "gradient max diff {worst_grad:.2e} of the largest entry");
    }

    /// Only the tracked input gets a gradient: rows alone (a frozen head) and the head alone.
    #[test]
    fn gradient_reaches_only_tracked_inputs() {
        let device = crate::device_from_name("cpu").unwrap();
        let rows = Tensor::<2>::from_data(
            TensorData::new((0..12).map(|i| (i as f32 * 0.37).sin()).collect(), [3, 4]),
            &device,
        );
        let head = Tensor::<2>::from_data(
            TensorData::new((0..20).map(|i| (i as f32 * 0.11).cos()).collect(), [5, 4]),
            &device,
        );
        let targets = Tensor::<1, Int>::from_data(TensorData::new(vec![4i64, 0, 2], [3]), &device);
        let scale = [0.5, 1.0, 0.25];
        // Hand-computed: Σ scaleᵢ · (logsumexp(zᵢ) − zᵢ[yᵢ]).
        let (r, w) = (to_vec_f32(rows.clone()), to_vec_f32(head.clone()));
        let mut want = 0.0f64;
        for i in 0..3 {
            let z: Vec<f64> = (0..5).map(|j| (0..4).map(|k| r[i * 4 + k] as f64 * w[j * 4 + k] as f64).sum()).collect();
            let lse = z.iter().map(|x| x.exp()).sum::<f64>().ln();
            want += scale[i] * (lse - z[[4, 0, 2][i]]);
        }
        for (track_rows, track_head) in [(true, false), (false, true)] {
            let r = rows.clone().autodiff();
            let h = head.clone().autodiff();
            let r = if track_rows { r.require_grad() } else { r };
            let h = if track_head { h.require_grad() } else { h };
            let loss = head_nll(r.clone(), h.clone(), targets.clone(), &scale, 2);
            let got = loss.clone().inner().into_scalar::<f32>() as f64;
            assert!((got - want).abs() < 1e-6, "{got} vs hand-computed {want}");
            let g = loss.backward();
            assert_eq!(r.grad(&g).is_some(), track_rows);
            assert_eq!(h.grad(&g).is_some(), track_head);
        }
    }
}
