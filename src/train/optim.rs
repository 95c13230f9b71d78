//! Optimizers over a flat parameter vector: AdamW (Loshchilov and Hutter, 2019), Adam with L2
//! weight decay (Kingma and Ba, 2015) and SGD with momentum, each matching PyTorch's update
//! rule (`torch.optim.AdamW`, `Adam`, `SGD(momentum=..., dampening=0)`), plus global-norm
//! gradient clipping.
//!
//! State is explicit ([`OptimState`]): the step count and one or two moment tensors per
//! parameter, so it can be checkpointed, forked (Patcher's fresh inner attack optimizers) and
//! compared. Parameters whose gradient is `None` (frozen) are left untouched.

use burn::prelude::*;
use serde::{Deserialize, Serialize};

/// Which update rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OptimKind {
    AdamW,
    Adam,
    Sgd,
}

impl std::fmt::Display for OptimKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            OptimKind::AdamW => "adamw",
            OptimKind::Adam => "adam",
            OptimKind::Sgd => "sgd",
        })
    }
}

/// Optimizer hyper-parameters (the learning rate comes from the schedule).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OptimizerConfig {
    pub kind: OptimKind,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    /// Decoupled for AdamW, L2 (added to the gradient) for Adam and SGD.
    pub weight_decay: f64,
    /// SGD momentum (0 = plain SGD).
    pub momentum: f64,
}

impl Default for OptimizerConfig {
    fn default() -> Self {
        Self { kind: OptimKind::AdamW, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.0, momentum: 0.9 }
    }
}

impl OptimizerConfig {
    pub fn adamw() -> Self {
        Self::default()
    }
    pub fn sgd(momentum: f64) -> Self {
        Self { kind: OptimKind::Sgd, momentum, ..Self::default() }
    }
}

/// Step count and moments. `m` is Adam's first moment or SGD's momentum buffer; `v` is Adam's
/// second moment. Entries are created lazily on the first step that sees a gradient.
#[derive(Debug, Clone, Default)]
pub struct OptimState {
    pub step: u64,
    pub m: Vec<Option<Tensor<2>>>,
    pub v: Vec<Option<Tensor<2>>>,
}

impl OptimState {
    pub fn new(n_params: usize) -> Self {
        Self { step: 0, m: vec![None; n_params], v: vec![None; n_params] }
    }

    /// Start a step over `n_params` parameters with `n_grads` gradient slots (one each): the
    /// moment lists sized to the parameters, the count advanced. Returns the new step number.
    fn begin_step(&mut self, n_params: usize, n_grads: usize) -> i32 {
        assert_eq!(n_params, n_grads, "one gradient slot per parameter");
        if self.m.len() != n_params {
            *self = OptimState { step: self.step, m: vec![None; n_params], v: vec![None; n_params] };
        }
        self.step += 1;
        self.step as i32
    }
}

/// One optimizer step in place: `params[i] <- update(params[i], grads[i])` at learning rate `lr`.
///
/// Fused: each parameter's weights, gradient and moments are read once, updated element by
/// element in one pass (split over the machine's threads), and written once, instead of a chain
/// of a dozen whole-tensor operations. Every element goes through the same f32 operations, in
/// the same order, as the tensor-operation form ([`step_unfused`], kept as the reference):
/// the results are bit-identical (`tests` below), so fusing changes no figure.
pub fn step(
    cfg: &OptimizerConfig,
    state: &mut OptimState,
    params: &mut [Tensor<2>],
    grads: &[Option<Tensor<2>>],
    lr: f64,
) {
    // The fused update is written for f32 storage; another precision takes the chain.
    if params.iter().chain(grads.iter().flatten()).any(|t| t.dtype() != burn::tensor::DType::F32) {
        return step_unfused(cfg, state, params, grads, lr);
    }
    let rule = Rule::new(cfg, state.begin_step(params.len(), grads.len()), lr);
    let adam = cfg.kind != OptimKind::Sgd;
    let keep_m = adam || cfg.momentum != 0.0;
    for (i, g) in grads.iter().enumerate() {
        let Some(g) = g else { continue };
        let [rows, cols] = params[i].dims();
        let device = params[i].device().without_autodiff();
        let first = state.m[i].is_none();
        let fresh = || Tensor::<2>::zeros([rows, cols], &device);
        let mut p = storage::Owned::new(std::mem::replace(&mut params[i], fresh_empty(&device)));
        let mut m =
            storage::Owned::new(if keep_m { state.m[i].take().unwrap_or_else(fresh) } else { fresh_empty(&device) });
        let mut v =
            storage::Owned::new(if adam { state.v[i].take().unwrap_or_else(fresh) } else { fresh_empty(&device) });
        let g = storage::Shared::new(g);
        par_chunks(p.slice(), g.slice(), m.slice(), v.slice(), |p, g, m, v| rule.apply(p, g, m, v, first));
        params[i] = p.into_tensor();
        if keep_m {
            state.m[i] = Some(m.into_tensor());
        }
        if adam {
            state.v[i] = Some(v.into_tensor());
        }
    }
}

fn fresh_empty(device: &Device) -> Tensor<2> {
    Tensor::<2>::zeros([0, 0], device)
}

/// The scalars of one step, each rounded to f32 as the tensor-operation form rounds them.
struct Rule {
    kind: OptimKind,
    /// AdamW's `1 − lr·wd`; Adam's and SGD's L2 weight decay.
    decay: f32,
    l2: f32,
    b1: f32,
    one_minus_b1: f32,
    b2: f32,
    one_minus_b2: f32,
    sqrt_bc2: f32,
    eps: f32,
    /// Adam: `lr / bc1`; SGD: `lr`.
    step: f32,
    momentum: f32,
}

impl Rule {
    fn new(cfg: &OptimizerConfig, t: i32, lr: f64) -> Self {
        Self {
            kind: cfg.kind,
            decay: (1.0 - lr * cfg.weight_decay) as f32,
            l2: cfg.weight_decay as f32,
            b1: cfg.beta1 as f32,
            one_minus_b1: (1.0 - cfg.beta1) as f32,
            b2: cfg.beta2 as f32,
            one_minus_b2: (1.0 - cfg.beta2) as f32,
            sqrt_bc2: (1.0 - cfg.beta2.powi(t)).sqrt() as f32,
            eps: cfg.eps as f32,
            step: if cfg.kind == OptimKind::Sgd { lr as f32 } else { (lr / (1.0 - cfg.beta1.powi(t))) as f32 },
            momentum: cfg.momentum as f32,
        }
    }

    /// Update one chunk in place; `first`: the moments are new (their first step).
    fn apply(&self, p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32], first: bool) {
        let l2 = self.l2 != 0.0;
        match self.kind {
            OptimKind::AdamW | OptimKind::Adam => {
                for (((p, &g), m), v) in p.iter_mut().zip(g).zip(m.iter_mut()).zip(v.iter_mut()) {
                    let (x, g) = match self.kind {
                        OptimKind::AdamW => (*p * self.decay, g),
                        _ if l2 => (*p, g + *p * self.l2),
                        _ => (*p, g),
                    };
                    *m = if first { g * self.one_minus_b1 } else { *m * self.b1 + g * self.one_minus_b1 };
                    *v = if first { (g * g) * self.one_minus_b2 } else { *v * self.b2 + (g * g) * self.one_minus_b2 };
                    let denom = v.sqrt() / self.sqrt_bc2 + self.eps;
                    *p = x - (*m / denom) * self.step;
                }
            }
            OptimKind::Sgd => {
                if self.momentum == 0.0 {
                    for (p, &g) in p.iter_mut().zip(g) {
                        let g = if l2 { g + *p * self.l2 } else { g };
                        *p -= g * self.step;
                    }
                    return;
                }
                for ((p, &g), m) in p.iter_mut().zip(g).zip(m.iter_mut()) {
                    let g = if l2 { g + *p * self.l2 } else { g };
                    let d = if first { g } else { *m * self.momentum + g };
                    *m = d;
                    *p -= d * self.step;
                }
            }
        }
    }
}

/// Run `f` over matching chunks of the four slices on the machine's threads (one chunk each;
/// small tensors in one). `m` and `v` may be empty (SGD without momentum; SGD).
fn par_chunks<F>(p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32], f: F)
where
    F: Fn(&mut [f32], &[f32], &mut [f32], &mut [f32]) + Sync,
{
    const MIN_CHUNK: usize = 1 << 16;
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let n = p.len();
    if threads <= 1 || n < 2 * MIN_CHUNK {
        return f(p, g, m, v);
    }
    let chunk = n.div_ceil(threads).max(MIN_CHUNK);
    std::thread::scope(|s| {
        let mut ms: Vec<&mut [f32]> = m.chunks_mut(chunk).collect();
        let mut vs: Vec<&mut [f32]> = v.chunks_mut(chunk).collect();
        for (k, (p, g)) in p.chunks_mut(chunk).zip(g.chunks(chunk)).enumerate() {
            let m: &mut [f32] = ms.get_mut(k).map(std::mem::take).unwrap_or_default();
            let v: &mut [f32] = vs.get_mut(k).map(std::mem::take).unwrap_or_default();
            let f = &f;
            s.spawn(move || f(p, g, m, v));
        }
    });
}

/// [`step`] as a chain of whole-tensor operations: the reference the fused step is checked
/// against (bit for bit).
pub fn step_unfused(
    cfg: &OptimizerConfig,
    state: &mut OptimState,
    params: &mut [Tensor<2>],
    grads: &[Option<Tensor<2>>],
    lr: f64,
) {
    let t = state.begin_step(params.len(), grads.len());
    for (i, g) in grads.iter().enumerate() {
        let Some(g) = g else { continue };
        let p = params[i].clone().inner();
        let g = g.clone().inner();
        params[i] = match cfg.kind {
            OptimKind::AdamW | OptimKind::Adam => {
                let (p, g) = if cfg.kind == OptimKind::AdamW {
                    (p.mul_scalar(1.0 - lr * cfg.weight_decay), g)
                } else if cfg.weight_decay != 0.0 {
                    (p.clone(), g + p.mul_scalar(cfg.weight_decay))
                } else {
                    (p, g)
                };
                let m = match state.m[i].take() {
                    Some(m) => m.mul_scalar(cfg.beta1) + g.clone().mul_scalar(1.0 - cfg.beta1),
                    None => g.clone().mul_scalar(1.0 - cfg.beta1),
                };
                let v = match state.v[i].take() {
                    Some(v) => v.mul_scalar(cfg.beta2) + g.square().mul_scalar(1.0 - cfg.beta2),
                    None => g.square().mul_scalar(1.0 - cfg.beta2),
                };
                let bc1 = 1.0 - cfg.beta1.powi(t);
                let bc2 = 1.0 - cfg.beta2.powi(t);
                let denom = v.clone().sqrt().div_scalar(bc2.sqrt()).add_scalar(cfg.eps);
                let upd = m.clone().div(denom).mul_scalar(lr / bc1);
                state.m[i] = Some(m);
                state.v[i] = Some(v);
                p - upd
            }
            OptimKind::Sgd => {
                let g = if cfg.weight_decay != 0.0 { g + p.clone().mul_scalar(cfg.weight_decay) } else { g };
                let d = if cfg.momentum != 0.0 {
                    let buf = match state.m[i].take() {
                        Some(b) => b.mul_scalar(cfg.momentum) + g,
                        None => g,
                    };
                    state.m[i] = Some(buf.clone());
                    buf
                } else {
                    g
                };
                p - d.mul_scalar(lr)
            }
        };
    }
}

/// How one optimizer step's new weights depend on the old ones through the step's gradient,
/// with the optimizer's history (moments from earlier steps) held fixed: `θ_new = decay·θ −
/// u(g(θ) + l2·θ)`, so `∂θ_new/∂θ = decay·I − diag(P)·(H + l2·I)` with `P = ∂u/∂g` element-wise
/// and `H` the Hessian of the loss whose gradient the step took. Used to back-propagate a
/// gradient through simulated attack steps (Patcher's meta-gradient correction).
#[derive(Debug, Clone)]
pub struct StepJacobian {
    pub decay: f64,
    pub l2: f64,
    /// `∂u/∂g` per parameter (`None` for a frozen one).
    pub p: Vec<Option<Tensor<2>>>,
}

/// The [`StepJacobian`] of the step [`step`] just took with `grads` from `before` (the weights
/// before it) at learning rate `lr`; `state` is the optimizer state after the step. For Adam(W)
/// the current gradient moves both moments: `P = (lr/bc1)·[(1−β1)/D − m·(1−β2)·g/(√bc2·√v·D²)]`
/// with `D = √v/√bc2 + ε` (at the first step this is `≈ lr·(1−β1)·ε/(bc1·D²)`, nearly 0: sign
/// descent). For SGD (any momentum) `P = lr`.
pub fn step_jacobian(
    cfg: &OptimizerConfig,
    state: &OptimState,
    grads: &[Option<Tensor<2>>],
    before: &[Tensor<2>],
    lr: f64,
) -> StepJacobian {
    let (decay, l2) = match cfg.kind {
        OptimKind::AdamW => (1.0 - lr * cfg.weight_decay, 0.0),
        OptimKind::Adam | OptimKind::Sgd => (1.0, cfg.weight_decay),
    };
    let t = state.step as i32;
    let p = grads
        .iter()
        .enumerate()
        .map(|(i, g)| {
            let g = g.as_ref()?.clone().inner();
            Some(match cfg.kind {
                OptimKind::Sgd => g.ones_like().mul_scalar(lr),
                OptimKind::AdamW | OptimKind::Adam => {
                    let g = if l2 != 0.0 { g + before[i].clone().inner().mul_scalar(l2) } else { g };
                    let (m, v) = (state.m[i].clone().expect("stepped"), state.v[i].clone().expect("stepped"));
                    let (bc1, s2) = (1.0 - cfg.beta1.powi(t), (1.0 - cfg.beta2.powi(t)).sqrt());
                    let sqrt_v = v.sqrt(); // (R, C)
                    let d = sqrt_v.clone().div_scalar(s2).add_scalar(cfg.eps); // (R, C)
                    let first = d.clone().recip().mul_scalar(1.0 - cfg.beta1);
                    let second = (m * g).mul_scalar((1.0 - cfg.beta2) / s2) / (sqrt_v.clamp_min(1e-30) * d.square());
                    (first - second).mul_scalar(lr / bc1)
                }
            })
        })
        .collect();
    StepJacobian { decay, l2, p }
}

/// Global L2 norm of the gradients (frozen slots skipped).
///
/// Each tensor is reduced row by row first (`sum_dim`, one row per task) and the row sums are
/// added in f64 in a fixed order. A whole-tensor `sum()` of 4 Mi or more elements (SmolLM2's
/// embedding gradient has 28 M) is split by the backend into rayon tasks whose reduction tree
/// depends on the number of threads, which made the clip factor, and so the run, depend on
/// the core count (`crate::determinism`).
pub fn grad_norm(grads: &[Option<Tensor<2>>]) -> f64 {
    let sq: f64 = grads
        .iter()
        .flatten()
        .map(|g| {
            let sq = g.clone().inner().square(); // (R, C)
            let rows =
                if crate::model::fixed::fixed_order() { crate::model::fixed::row_sum(sq) } else { sq.sum_dim(1) }; // (R, 1)
            let rows = rows.into_data().convert::<f32>().try_into_vec::<f32>().expect("float gradient");
            rows.iter().map(|&x| x as f64).sum::<f64>()
        })
        .sum();
    sq.sqrt()
}

/// Scale gradients so their global norm is at most `max_norm` (as
/// `torch.nn.utils.clip_grad_norm_`). Returns the norm before clipping.
pub fn clip_grad_norm(grads: &mut [Option<Tensor<2>>], max_norm: f64) -> f64 {
    let norm = grad_norm(grads);
    if max_norm > 0.0 && norm > max_norm {
        let scale = max_norm / (norm + 1e-6);
        for g in grads.iter_mut().flatten() {
            *g = g.clone().mul_scalar(scale);
        }
    }
    norm
}

/// Host access to a tensor's f32 storage without copying where the backend allows it: a flex
/// tensor held once, contiguous from offset 0, is updated in place; anything else (a shared
/// buffer, a view, another backend) goes through a copy, with the same results.
mod storage {
    use burn::prelude::*;
    use burn_flex::{Flex, FlexTensor};

    /// A tensor taken over for writing.
    pub enum Owned {
        Flex(FlexTensor),
        Copy(Vec<f32>, [usize; 2], Device),
    }

    impl Owned {
        pub fn new(t: Tensor<2>) -> Self {
            let (shape, device) = (t.dims(), t.device().without_autodiff());
            let t = t.inner();
            match t.clone().try_into_primitive::<Flex>() {
                Ok(f) if f.layout().contiguous_offsets().is_some_and(|(start, _)| start == 0) => {
                    drop(t);
                    Self::Flex(f)
                }
                _ => Self::Copy(crate::model::llama::to_vec_f32(t), shape, device),
            }
        }

        /// The elements, row-major (a shared flex buffer is copied first: copy on write).
        pub fn slice(&mut self) -> &mut [f32] {
            match self {
                Self::Flex(f) => {
                    let end = f.layout().contiguous_offsets().map_or(0, |(_, end)| end);
                    &mut f.storage_mut::<f32>()[..end]
                }
                Self::Copy(v, _, _) => v,
            }
        }

        pub fn into_tensor(self) -> Tensor<2> {
            match self {
                Self::Flex(f) => Tensor::from_primitive::<Flex>(f),
                Self::Copy(v, shape, device) => Tensor::from_data(TensorData::new(v, shape), &device),
            }
        }
    }

    /// A tensor only read: its flex buffer borrowed, or a copy.
    pub enum Shared {
        Flex(FlexTensor),
        Copy(Vec<f32>),
    }

    impl Shared {
        pub fn new(t: &Tensor<2>) -> Self {
            let t = t.clone().inner();
            match t.clone().try_into_primitive::<Flex>() {
                Ok(f) if f.layout().contiguous_offsets().is_some() => Self::Flex(f),
                _ => Self::Copy(crate::model::llama::to_vec_f32(t)),
            }
        }

        pub fn slice(&self) -> &[f32] {
            match self {
                Self::Flex(f) => {
                    let (start, end) = f.layout().contiguous_offsets().unwrap_or((0, 0));
                    &f.storage::<f32>()[start..end]
                }
                Self::Copy(v) => v,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::llama::to_vec_f32;

    fn t(v: &[f32], device: &Device) -> Tensor<2> {
        Tensor::<2>::from_data(TensorData::new(v.to_vec(), [1, v.len()]), device)
    }

    /// Scalar re-statement of PyTorch's update rules, in f64, for one coordinate.
    fn reference(cfg: &OptimizerConfig, p0: f64, grads: &[f64], lrs: &[f64]) -> f64 {
        let (mut p, mut m, mut v) = (p0, 0.0, 0.0);
        for (k, (&g, &lr)) in grads.iter().zip(lrs).enumerate() {
            let t = (k + 1) as i32;
            match cfg.kind {
                OptimKind::AdamW | OptimKind::Adam => {
                    let g = if cfg.kind == OptimKind::Adam { g + cfg.weight_decay * p } else { g };
                    if cfg.kind == OptimKind::AdamW {
                        p *= 1.0 - lr * cfg.weight_decay;
                    }
                    m = cfg.beta1 * m + (1.0 - cfg.beta1) * g;
                    v = cfg.beta2 * v + (1.0 - cfg.beta2) * g * g;
                    let mh = m / (1.0 - cfg.beta1.powi(t));
                    let vh = (v / (1.0 - cfg.beta2.powi(t))).sqrt();
                    p -= lr * mh / (vh + cfg.eps);
                }
                OptimKind::Sgd => {
                    let g = g + cfg.weight_decay * p;
                    m = if k == 0 { g } else { cfg.momentum * m + g };
                    p -= lr * m;
                }
            }
        }
        p
    }

    /// `P = ∂u/∂g` of [`step_jacobian`] against central differences of the update in f64 (the
    /// [`reference`] rules), at the first step and after two earlier steps, for each optimizer.
    #[test]
    fn step_jacobians_match_finite_differences_of_the_update() {
        let device = Device::flex();
        let p0 = [0.5f32, -1.25, 2.0];
        let history = [[0.1f32, -0.3, 0.02], [0.4, 0.1, -0.05]];
        let g_last = [-0.2f32, 0.25, 0.3];
        let lr = 1e-2;
        let cfgs = [
            OptimizerConfig { weight_decay: 0.1, ..OptimizerConfig::adamw() },
            OptimizerConfig { kind: OptimKind::Adam, weight_decay: 0.05, beta2: 0.99, ..OptimizerConfig::adamw() },
            OptimizerConfig { weight_decay: 0.01, ..OptimizerConfig::sgd(0.9) },
        ];
        for cfg in &cfgs {
            for n_hist in [0, 2] {
                // Weights just before the last step, by the reference rules.
                let lrs = vec![lr; n_hist + 1];
                let mut params = vec![t(&p0, &device)];
                let mut state = OptimState::new(1);
                for g in &history[..n_hist] {
                    step(cfg, &mut state, &mut params, &[Some(t(g, &device))], lr);
                }
                let before = params.clone();
                step(cfg, &mut state, &mut params, &[Some(t(&g_last, &device))], lr);
                let jac = step_jacobian(cfg, &state, &[Some(t(&g_last, &device))], &before, lr);
                let p = to_vec_f32(jac.p[0].clone().unwrap());
                for j in 0..3 {
                    // θ_new(g) = decay·θ − u(g + l2·θ): the derivative in g is −P.
                    let new = |dg: f64| {
                        let mut gs: Vec<f64> = history[..n_hist].iter().map(|g| g[j] as f64).collect();
                        gs.push(g_last[j] as f64 + dg);
                        reference(cfg, p0[j] as f64, &gs, &lrs)
                    };
                    let h = 1e-6;
                    let fd = -(new(h) - new(-h)) / (2.0 * h);
                    let tol = 1e-3 * fd.abs().max(lr * 1e-3);
                    assert!(
                        (p[j] as f64 - fd).abs() <= tol,
                        "{:?} after {n_hist}, coordinate {j}: P {} vs {fd}",
                        cfg.kind,
                        p[j]
                    );
                }
                let want_decay = if cfg.kind == OptimKind::AdamW { 1.0 - lr * cfg.weight_decay } else { 1.0 };
                assert!((jac.decay - want_decay).abs() < 1e-15);
            }
        }
    }

    /// The fused step against the tensor-operation chain, bit for bit: every rule (AdamW with
    /// decoupled decay, Adam with L2, SGD with and without momentum), five steps with changing
    /// learning rates, a frozen parameter, a tensor large enough to be split over threads, and a
    /// transposed view (updated through a copy, not in place).
    #[test]
    fn the_fused_step_is_bit_identical_to_the_tensor_operation_chain() {
        let device = Device::flex();
        let mut r = crate::rng::Rng::new(3);
        let mut rand = |n: usize, scale: f64| -> Vec<f32> { (0..n).map(|_| (r.normal() * scale) as f32).collect() };
        let shapes = [[3, 5], [700, 500], [1, 7]];
        let configs = [
            OptimizerConfig { weight_decay: 0.1, ..OptimizerConfig::adamw() },
            OptimizerConfig::adamw(),
            OptimizerConfig { kind: OptimKind::Adam, weight_decay: 0.01, ..OptimizerConfig::adamw() },
            OptimizerConfig { weight_decay: 0.05, ..OptimizerConfig::sgd(0.9) },
            OptimizerConfig::sgd(0.0),
        ];
        let mut params: Vec<Tensor<2>> = shapes
            .iter()
            .map(|&[a, b]| Tensor::<2>::from_data(TensorData::new(rand(a * b, 1.0), [a, b]), &device))
            .collect();
        // A transposed view (not contiguous): the copying path.
        params[0] = Tensor::<2>::from_data(TensorData::new(rand(15, 1.0), [5, 3]), &device).transpose();
        let grads: Vec<Vec<Option<Tensor<2>>>> = (0..5)
            .map(|_| {
                shapes
                    .iter()
                    .enumerate()
                    .map(|(i, &[a, b])| {
                        (i != 2).then(|| Tensor::<2>::from_data(TensorData::new(rand(a * b, 0.01), [a, b]), &device))
                    })
                    .collect()
            })
            .collect();
        for cfg in &configs {
            let (mut fused, mut chain) = (params.clone(), params.clone());
            let (mut sf, mut sc) = (OptimState::new(3), OptimState::new(3));
            for (k, g) in grads.iter().enumerate() {
                let lr = 1e-3 * (k + 1) as f64;
                step(cfg, &mut sf, &mut fused, g, lr);
                step_unfused(cfg, &mut sc, &mut chain, g, lr);
            }
            let bits = |ts: &[Tensor<2>]| -> Vec<u32> {
                ts.iter().flat_map(|t| crate::model::llama::to_vec_f32(t.clone())).map(f32::to_bits).collect()
            };
            let opt = |ts: &[Option<Tensor<2>>]| -> Vec<u32> {
                let v: Vec<Tensor<2>> = ts.iter().flatten().cloned().collect();
                bits(&v)
            };
            assert_eq!(bits(&fused), bits(&chain), "{:?} weights", cfg.kind);
            assert_eq!((opt(&sf.m), opt(&sf.v)), (opt(&sc.m), opt(&sc.v)), "{:?} moments", cfg.kind);
            assert_eq!(bits(&fused[2..]), bits(&params[2..]), "frozen parameter moved");
            assert_ne!(bits(&fused[..1]), bits(&params[..1]), "{:?} did not step", cfg.kind);
        }
    }

    /// A tensor in another precision than f32 takes the tensor-operation chain, and keeps its
    /// precision.
    #[test]
    fn an_f64_parameter_takes_the_chain_and_stays_f64() {
        let device = Device::flex();
        let t =
            |v: Vec<f64>| Tensor::<2>::from_data(TensorData::new(v, [1, 3]), &device).cast(burn::tensor::DType::F64);
        let (p, g) = (t(vec![1.0, -2.0, 0.5]), Some(t(vec![0.1, 0.2, -0.3])));
        if p.dtype() != burn::tensor::DType::F64 {
            panic!("TensorData of f64 became {:?}: the test needs an f64 tensor", p.dtype());
        }
        let cfg = OptimizerConfig::adamw();
        let (mut a, mut b) = (vec![p.clone()], vec![p]);
        step(&cfg, &mut OptimState::new(1), &mut a, std::slice::from_ref(&g), 1e-2);
        step_unfused(&cfg, &mut OptimState::new(1), &mut b, &[g], 1e-2);
        assert_eq!(a[0].dtype(), burn::tensor::DType::F64);
        let v = |x: &Tensor<2>| x.clone().into_data().try_to_vec::<f64>().unwrap();
        assert_eq!(v(&a[0]), v(&b[0]));
    }

    #[test]
    fn steps_match_hand_computed_pytorch_rules() {
        let device = Device::flex();
        let p0 = [0.5f32, -1.25, 2.0];
        let grads = [[0.1f32, -0.3, 0.02], [0.4, 0.1, -0.05], [-0.2, 0.25, 0.3]];
        let lrs = [1e-2, 5e-3, 2e-2];
        let cfgs = [
            OptimizerConfig { weight_decay: 0.1, ..OptimizerConfig::adamw() },
            OptimizerConfig { kind: OptimKind::Adam, weight_decay: 0.05, beta2: 0.99, ..OptimizerConfig::adamw() },
            OptimizerConfig { weight_decay: 0.01, ..OptimizerConfig::sgd(0.9) },
        ];
        for cfg in &cfgs {
            let mut params = vec![t(&p0, &device)];
            let mut state = OptimState::new(1);
            for (g, lr) in grads.iter().zip(lrs) {
                step(cfg, &mut state, &mut params, &[Some(t(g, &device))], lr);
            }
            let got = to_vec_f32(params[0].clone());
            let mut worst = 0.0f64;
            for j in 0..3 {
                let gs: Vec<f64> = grads.iter().map(|g| g[j] as f64).collect();
                let want = reference(cfg, p0[j] as f64, &gs, &lrs);
                worst = worst.max((got[j] as f64 - want).abs());
            }
            assert!(worst < 1e-6, "{:?}: max |difference| {worst:e}", cfg.kind);
        }
    }

    #[test]
    fn frozen_parameters_are_untouched_and_clipping_bounds_the_norm() {
        let device = Device::flex();
        let mut params = vec![t(&[1.0, 2.0], &device), t(&[3.0], &device)];
        let mut state = OptimState::new(2);
        step(&OptimizerConfig::adamw(), &mut state, &mut params, &[None, Some(t(&[1.0], &device))], 0.1);
        assert_eq!(to_vec_f32(params[0].clone()), vec![1.0, 2.0]);
        assert!((to_vec_f32(params[1].clone())[0] - 2.9).abs() < 1e-6);
        let mut g = vec![Some(t(&[3.0, 4.0], &device)), None];
        let before = clip_grad_norm(&mut g, 1.0);
        assert!((before - 5.0).abs() < 1e-6);
        assert!((grad_norm(&g) - 1.0).abs() < 1e-5);
    }
}
