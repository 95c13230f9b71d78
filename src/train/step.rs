//! Batches and the basic training computation: loss and gradients of the masked
//! cross-entropy at given weights. Every trainer (SFT alignment, attacks, Patcher's inner and
//! outer loops) goes through [`loss_and_grads`], so there is one copy of the loss code.

use burn::prelude::*;

use crate::model::Llama;
use crate::model::llama::{float_like, int_tensor, masked_cross_entropy};
use crate::train::chunked_ce;

/// One tokenized training example: ids and a 0/1 loss mask (1 on assistant tokens).
#[derive(Debug, Clone, PartialEq)]
pub struct Example {
    pub ids: Vec<u32>,
    pub mask: Vec<u8>,
}

/// A padded batch for next-token prediction: `inputs[b, t]` predicts `targets[b, t]`, counted
/// in the loss when `weights[b, t] = 1`.
#[derive(Debug, Clone)]
pub struct Batch {
    pub inputs: Tensor<2, Int>,
    pub targets: Tensor<2, Int>,
    pub weights: Tensor<2>,
    /// Number of target tokens counted in the loss.
    pub n_tokens: usize,
    /// `true`: the loss is the weighted mean over tokens (`sum(w·nll) / sum(w)`); `false`:
    /// the plain weighted sum (weights already carry the normalisation, see [`Batch::weighted`]).
    pub mean: bool,
}

/// The loss-carrying positions of a batch, read from hidden states ([`Batch::answer_rows`]).
pub struct AnswerRows {
    /// Hidden rows `[N, d]`.
    pub rows: Tensor<2>,
    /// Next-token targets `[N]`.
    pub targets: Tensor<1, Int>,
    /// Loss weights `[N]`.
    pub weights: Tensor<1>,
    /// Sum of the weights.
    pub weight_sum: f64,
    /// The weights as read on the host when the rows were selected.
    weight_values: Vec<f32>,
}

impl AnswerRows {
    /// The next-token log-probabilities at every row `[N, V]`: the head applied to the rows.
    pub fn log_probs(&self, model: &Llama) -> Tensor<2> {
        let logits = self.rows.clone().matmul(model.head_weight().transpose()); // (N, V)
        crate::model::fixed::log_softmax(logits)
    }

    /// Each row's log-probability of its target `[N]`, from [`Self::log_probs`].
    pub fn picked(&self, logp: Tensor<2>) -> Tensor<1> {
        let n = self.targets.dims()[0];
        logp.gather(1, self.targets.clone().reshape([n, 1])).reshape([n])
    }
}

/// The positions of a batch that carry loss: flat indices into `B*T`, their targets and weights.
struct Selected {
    index: Tensor<1, Int>,
    targets: Tensor<1, Int>,
    weights: Tensor<1>,
    host_weights: Vec<f32>,
    sum: f64,
}

impl Batch {
    /// Right-pad (with `pad_id`, weight 0) and truncate to `max_len` tokens.
    pub fn new(examples: &[&Example], pad_id: u32, max_len: usize, model: &Llama) -> Self {
        assert!(!examples.is_empty(), "empty batch");
        let len = examples.iter().map(|e| e.ids.len().min(max_len)).max().unwrap_or(0);
        let t = len.saturating_sub(1).max(1);
        let b = examples.len();
        let mut inputs = Vec::with_capacity(b * t);
        let mut targets = Vec::with_capacity(b * t);
        let mut weights = Vec::with_capacity(b * t);
        let mut n_tokens = 0;
        for e in examples {
            let n = e.ids.len().min(max_len);
            for i in 0..t {
                let real = i + 1 < n;
                inputs.push(if i < n { e.ids[i] } else { pad_id } as i64);
                targets.push(if real { e.ids[i + 1] } else { pad_id } as i64);
                let w = real && e.mask[i + 1] > 0;
                n_tokens += usize::from(w);
                weights.push(if w { 1.0 } else { 0.0 });
            }
        }
        let device = model.device().without_autodiff();
        Self {
            inputs: int_tensor(inputs, [b, t], &device),
            targets: int_tensor(targets, [b, t], &device),
            weights: float_like(weights, [b, t], &model.params[0]),
            n_tokens,
            mean: true,
        }
    }

    /// One batch whose loss is `Σ_g scale_g · mean-NLL(group g)`: e.g. `L_ret + α·L_ref` in a
    /// single forward/backward pass. Each group's tokens get weight `scale_g / tokens_g`.
    pub fn weighted(groups: &[(&[&Example], f64)], pad_id: u32, max_len: usize, model: &Llama) -> Self {
        let all: Vec<&Example> = groups.iter().flat_map(|(g, _)| g.iter().copied()).collect();
        let mut b = Self::new(&all, pad_id, max_len, model);
        let t = b.inputs.dims()[1];
        let mut w = crate::model::llama::to_vec_f32(b.weights.clone());
        let mut row = 0;
        for (g, scale) in groups {
            let rows = row..row + g.len();
            let toks: f32 = w[rows.start * t..rows.end * t].iter().sum();
            for x in &mut w[rows.start * t..rows.end * t] {
                *x *= *scale as f32 / toks.max(1.0);
            }
            row += g.len();
        }
        b.weights = float_like(w, [all.len(), t], &model.params[0]);
        b.mean = false;
        b
    }

    fn selected(&self) -> Option<Selected> {
        let w = crate::model::llama::to_vec_f32(self.weights.clone());
        let idx: Vec<i64> = (0..w.len()).filter(|&i| w[i] != 0.0).map(|i| i as i64).collect();
        if idx.is_empty() {
            return None;
        }
        let t: Vec<i64> = self.targets.clone().into_data().convert::<i64>().try_into_vec::<i64>().expect("int targets");
        let device = self.targets.device();
        let n = idx.len();
        let sel_t: Vec<i64> = idx.iter().map(|&i| t[i as usize]).collect();
        let sel_w: Vec<f32> = idx.iter().map(|&i| w[i as usize]).collect();
        let sum = sel_w.iter().map(|&x| x as f64).sum();
        Some(Selected {
            index: int_tensor(idx, [n], &device),
            targets: int_tensor(sel_t, [n], &device),
            weights: Tensor::<1>::from_data(TensorData::new(sel_w.clone(), [n]), (&device, self.weights.dtype())),
            host_weights: sel_w,
            sum,
        })
    }

    /// The training loss of `model` on this batch: the head and log-softmax are applied only at
    /// the positions that carry loss (the same value as [`Batch::loss_of`] on full logits).
    pub fn loss_for(&self, model: &Llama) -> Tensor<1> {
        if self.selected().is_none() {
            return self.loss_of(model.forward(self.inputs.clone()));
        }
        self.loss_from_hidden(model, model.hidden(self.inputs.clone()))
    }

    /// The training loss from final hidden states `h` `[B, T, d]` of this batch's inputs (e.g.
    /// from [`Llama::hidden_probed`]). A batch without loss-carrying positions gives 0. The head
    /// and the cross-entropy run fused, in chunks of rows, with their backward pass written by
    /// hand ([`chunked_ce`]): no `[N, V]` tensor is kept for the backward pass.
    pub fn loss_from_hidden(&self, model: &Llama, h: Tensor<3>) -> Tensor<1> {
        let Some(a) = self.answer_rows(h) else {
            return model.params[0].clone().sum().mul_scalar(0.0);
        };
        let scale = self.row_scale(&a);
        let head = model.head_weight();
        let chunk = chunked_ce::chunk_rows(head.dims()[0]);
        chunked_ce::head_nll(a.rows, head, a.targets, &scale, chunk)
    }

    /// Each answer row's factor in this batch's loss: its weight, over the weight sum for a mean.
    pub fn row_scale(&self, a: &AnswerRows) -> Vec<f64> {
        let denom = if self.mean { a.weight_sum.max(1.0) } else { 1.0 };
        a.weight_values.iter().map(|&w| w as f64 / denom).collect()
    }

    /// [`Batch::loss_from_hidden`] through autodiff of the full `[N, V]` log-softmax: the
    /// reference the chunked loss is tested against.
    pub fn loss_from_hidden_unfused(&self, model: &Llama, h: Tensor<3>) -> Tensor<1> {
        let Some(a) = self.answer_rows(h) else {
            return model.params[0].clone().sum().mul_scalar(0.0);
        };
        let picked = a.picked(a.log_probs(model)); // (N,)
        let total = crate::model::fixed::sum(picked * a.weights).neg();
        if self.mean { total.div_scalar(a.weight_sum.max(1.0)) } else { total }
    }

    /// The rows of `h` `[B, T, d]` at the positions that carry loss, with their targets and
    /// weights; `None` when no position does.
    pub fn answer_rows(&self, h: Tensor<3>) -> Option<AnswerRows> {
        let sel = self.selected()?;
        let [b, t, d] = h.dims();
        let rows = h.reshape([b * t, d]).select(0, sel.index); // (N, d)
        Some(AnswerRows {
            rows,
            targets: sel.targets,
            weights: sel.weights,
            weight_sum: sel.sum,
            weight_values: sel.host_weights,
        })
    }

    /// The training loss of `logits` `[B, T, V]` on this batch (a one-element tensor).
    pub fn loss_of(&self, logits: Tensor<3>) -> Tensor<1> {
        if self.mean {
            masked_cross_entropy(logits, self.targets.clone(), self.weights.clone())
        } else {
            let [b, t, _] = logits.dims();
            let logp = crate::model::fixed::log_softmax(logits);
            let picked = logp.gather(2, self.targets.clone().reshape([b, t, 1])).reshape([b, t]);
            crate::model::fixed::sum(picked * self.weights.clone()).neg()
        }
    }
}

/// Mean masked cross-entropy of `model` on `batch`, no gradients.
pub fn loss(model: &Llama, batch: &Batch) -> f64 {
    batch.loss_for(&model.untracked()).into_scalar::<f32>() as f64
}

/// Loss and the gradient of every parameter at `model`'s weights. Gradients are plain
/// (untracked) tensors in parameter order; a parameter that did not influence the loss gets
/// a zero gradient.
pub fn loss_and_grads(model: &Llama, batch: &Batch) -> (f64, Vec<Option<Tensor<2>>>) {
    let tracked = model.tracked();
    let loss = batch.loss_for(&tracked);
    grads_of(&tracked, loss)
}

/// The value of `loss` (a one-element tensor computed from `tracked`, a [`Llama::tracked`]
/// model) and its gradient for every parameter, as [`loss_and_grads`] returns them: the
/// building block of losses other than the cross-entropy (entropy, MMD, representation terms).
pub fn grads_of(tracked: &Llama, loss: Tensor<1>) -> (f64, Vec<Option<Tensor<2>>>) {
    let grads = loss.backward();
    let value = loss.inner().into_scalar::<f32>() as f64;
    let g =
        tracked.params.iter().map(|p| Some(p.grad(&grads).unwrap_or_else(|| p.clone().inner().zeros_like()))).collect();
    (value, g)
}

/// Mean entropy (nats) of the next-token distribution at the loss-carrying positions of
/// `rows`, weighted by their loss weights: `Σ_i w_i·H(softmax(h_i·Wᵀ)) / Σ_i w_i`. TAR's
/// tamper-resistance loss is its negative on harmful answers.
pub fn answer_entropy(model: &Llama, rows: &AnswerRows) -> Tensor<1> {
    weighted_entropy(rows.log_probs(model), rows)
}

/// [`answer_entropy`] from the rows' next-token log-probabilities `logp` `[N, V]`
/// ([`AnswerRows::log_probs`]), for callers that need them for other terms too.
pub fn weighted_entropy(logp: Tensor<2>, rows: &AnswerRows) -> Tensor<1> {
    let ent = (logp.clone().exp() * logp).neg(); // (N, V)
    let per_row = crate::model::fixed::row_sums(ent); // (N,)
    crate::model::fixed::sum(per_row * rows.weights.clone()).div_scalar(rows.weight_sum.max(1.0))
}

/// Element-wise sum of two gradient lists scaled: `a + s * b` (None treated as zero).
pub fn add_scaled(a: &mut [Option<Tensor<2>>], b: &[Option<Tensor<2>>], s: f64) {
    for (x, y) in a.iter_mut().zip(b) {
        if let Some(y) = y {
            *x = Some(match x.take() {
                Some(x) => x + y.clone().mul_scalar(s),
                None => y.clone().mul_scalar(s),
            });
        }
    }
}

/// `true` when every gradient is finite.
pub fn all_finite(grads: &[Option<Tensor<2>>]) -> bool {
    grads.iter().flatten().all(|g| g.clone().is_finite().all().into_scalar::<bool>())
}
