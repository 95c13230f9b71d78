//! Patcher's bi-level loop and the parallel algorithm, checked on a tiny random model against
//! direct computations:
//! - with β = 0 an outer step is a plain SFT step on `L_ret + α·L_ref`;
//! - the simulated attack leaves the outer weights untouched;
//! - the tamper-resistance gradient is taken at the attacked weights;
//! - the simulated attack, full-parameter or LoRA, with or without a schedule, is the
//!   fine-tuning engine's attack (without clipping), and an outer step with a LoRA attack takes
//!   its tamper-resistance gradients at the engine's LoRA-attacked weights;
//! - the KL retain term against a direct f64 computation and finite differences, and in an
//!   outer step;
//! - parallel Patcher with P = 1, K = 1 reproduces sequential K = 1, full-parameter or LoRA, and
//!   a LoRA trajectory equals a separately computed LoRA attack;
//! - for P = 2 and 3 each worker's trajectory equals a separately computed attack, and the
//!   all-reduced gradient equals the sum of the workers' separately computed contributions.

use burn::prelude::*;
use patcher::defense::parallel;
use patcher::defense::patcher::{
    BenignFirst, HardenOptions, HarmTerms, InnerAttack, InnerKind, InnerRecord, InnerSelection, InnerWeight, KSchedule,
    LoraAttacks, PatcherConfig, PatcherData, Streams, backprop_inner, harden, harmful_terms, outer_step, retain_grads,
    retain_kl_grads, sample_attack,
};
use patcher::model::LlamaConfig;
use patcher::model::llama::{Llama, to_vec_f32};
use patcher::rng::Rng;
use patcher::train::batches::BatchConfig;
use patcher::train::engine::{RunOptions, TrainConfig, TrainState, run};
use patcher::train::lora::Lora;
use patcher::train::optim::{self, OptimState, OptimizerConfig};
use patcher::train::schedule::{ScheduleConfig, ScheduleKind};
use patcher::train::step::{Batch, add_scaled, loss_and_grads};

fn cfg() -> LlamaConfig {
    patcher::testing::micro_config()
}

fn data() -> PatcherData {
    patcher::testing::micro_data()
}

fn base_cfg() -> PatcherConfig {
    let b = BatchConfig { batch_size: 4, max_len: 32, bucket_window: 1 };
    let mut c = PatcherConfig {
        outer_steps: 3,
        outer_lr: 1e-2,
        retain_batch: b.clone(),
        tr_batch: b.clone(),
        k: KSchedule::constant(3),
        inner: InnerSelection { kind: InnerKind::Last, n: 2, weight: InnerWeight::Linear },
        alpha: 0.7,
        beta: 1.3,
        // These tests check the refusal term's gradient alone unless they set γ themselves
        // (the default recipe's γ = 1 adds the capped harmful-loss term).
        gamma: 0.0,
        cap: 1.0,
        clip_norm: 0.0,
        seed: 5,
        // The core method; tests of the look-alike term and of benign phases set them.
        ..PatcherConfig::core()
    };
    c.attack.batch = b;
    c.attack.lrs = vec![3e-2];
    c
}

fn model() -> Llama {
    Llama::init(cfg(), 0.2, 7, &Device::flex())
}

fn state(m: &Llama) -> TrainState {
    TrainState { model: m.clone(), lora: None, opt: OptimState::new(m.params.len()), step: 0 }
}

fn max_diff(a: &[Tensor<2>], b: &[Tensor<2>]) -> f32 {
    a.iter()
        .zip(b)
        .flat_map(|(x, y)| to_vec_f32(x.clone()).into_iter().zip(to_vec_f32(y.clone())).map(|(p, q)| (p - q).abs()))
        .fold(0.0, f32::max)
}

fn neg_delta(before: &[Tensor<2>], after: &[Tensor<2>]) -> Vec<Tensor<2>> {
    before.iter().zip(after).map(|(b, a)| b.clone() - a.clone()).collect()
}

/// Outer optimizer "SGD, lr 1, no momentum": θ_new = θ − g exposes the outer gradient g.
fn exposing(mut c: PatcherConfig) -> PatcherConfig {
    c.outer_optimizer = OptimizerConfig::sgd(0.0);
    c.outer_lr = 1.0;
    c
}

#[test]
fn beta_zero_outer_step_is_an_sft_step_on_retain_plus_refusal() {
    let m = model();
    let d = data();
    let c = PatcherConfig { beta: 0.0, ..base_cfg() };
    let streams = Streams::new(&c, &d);
    let mut st = state(&m);
    outer_step(&mut st, &m, &c, &d, &streams).unwrap();
    // Direct: separate passes for L_ret and L_ref (mean losses), g = g_ret + α g_ref, AdamW.
    let ret = Batch::new(&streams.retain.batch(0), 0, 32, &m);
    let refu = Batch::new(&streams.refusal.batch(0), 0, 32, &m);
    let (_, mut g) = loss_and_grads(&m, &ret);
    add_scaled(&mut g, &loss_and_grads(&m, &refu).1, c.alpha);
    let mut p = m.params.clone();
    optim::step(&c.outer_optimizer, &mut OptimState::new(p.len()), &mut p, &g, c.outer_lr);
    let d = max_diff(&st.model.params, &p);
    println!("beta=0 outer step vs direct SFT step: max |difference| {d:e}");
    assert!(d < 1e-5, "{d}");
}

/// The harmful-answer terms of `L_tr` (cross-entropy, entropy, unlikelihood) against a direct
/// f64 computation from the model's full logits at the loss-carrying positions.
#[test]
fn harmful_answer_terms_match_a_direct_computation_from_the_logits() {
    let m = model();
    let d = data();
    let refs: Vec<_> = d.harmful.iter().take(4).collect();
    let b = Batch::new(&refs, d.pad_id, 32, &m);
    let rows = b.answer_rows(m.hidden(b.inputs.clone())).expect("answers");
    let t = HarmTerms::of(&m, &rows);
    let got = [&t.l_harm, &t.entropy, &t.unlikelihood].map(|x| x.clone().into_scalar::<f32>() as f64);

    let full = m.forward(b.inputs.clone()); // (B, T, V)
    let [bs, tl, v] = full.dims();
    let logits = to_vec_f32(full.reshape([bs * tl, v]));
    let targets: Vec<i32> = b.targets.clone().reshape([bs * tl]).into_data().try_to_vec().unwrap();
    let weights = to_vec_f32(b.weights.clone().reshape([1, bs * tl]));
    let (mut ce, mut ent, mut ul, mut z) = (0.0f64, 0.0f64, 0.0f64, 0.0f64);
    for i in 0..bs * tl {
        let w = weights[i] as f64;
        if w == 0.0 {
            continue;
        }
        let row: Vec<f64> = logits[i * v..(i + 1) * v].iter().map(|&x| x as f64).collect();
        let max = row.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let lse = max + row.iter().map(|x| (x - max).exp()).sum::<f64>().ln();
        let logp: Vec<f64> = row.iter().map(|x| x - lse).collect();
        let picked = logp[targets[i] as usize];
        ce -= w * picked;
        ent -= w * logp.iter().map(|l| l.exp() * l).sum::<f64>();
        ul -= w * (1.0 - picked.exp()).max(1e-6).ln();
        z += w;
    }
    let want = [ce / z, ent / z, ul / z];
    for (name, (g, w)) in ["cross-entropy", "entropy", "unlikelihood"].iter().zip(got.iter().zip(want)) {
        let rel = (g - w).abs() / w.abs().max(1e-9);
        println!("{name}: {g:.6} vs direct {w:.6} (relative difference {rel:.1e})");
        assert!(rel < 1e-4, "{name}: {g} vs {w}");
    }
}

/// The gradient of `γ·(c − L_harm) − ε·H + υ·UL` against central finite differences of the
/// objective along the gradient itself (the directional derivative is |g|²).
#[test]
fn harmful_answer_term_gradients_pass_a_finite_difference_check() {
    let m = model();
    let d = data();
    let c = PatcherConfig { gamma: 0.5, cap: 100.0, tr_entropy: 0.7, tr_unlikelihood: 1.3, ..base_cfg() };
    let refs: Vec<_> = d.harmful.iter().take(4).collect();
    let b = Batch::new(&refs, d.pad_id, 32, &m);
    let (_, g) = harmful_terms(&m, &c, &b);
    let g: Vec<Tensor<2>> = g.into_iter().map(|x| x.unwrap()).collect();
    let objective = |m: &Llama| -> f64 {
        let rows = b.answer_rows(m.hidden(b.inputs.clone())).unwrap();
        let t = HarmTerms::of(m, &rows);
        let v = |x: &Tensor<1>| x.clone().into_scalar::<f32>() as f64;
        c.gamma * (c.cap - v(&t.l_harm)) - c.tr_entropy * v(&t.entropy) + c.tr_unlikelihood * v(&t.unlikelihood)
    };
    let norm2: f64 = g.iter().map(|x| to_vec_f32(x.clone()).iter().map(|v| (*v as f64).powi(2)).sum::<f64>()).sum();
    let h = 1e-2 / norm2.sqrt();
    let shifted = |s: f64| {
        let mut m2 = m.clone();
        for (p, gi) in m2.params.iter_mut().zip(&g) {
            *p = p.clone() + gi.clone().mul_scalar(s);
        }
        objective(&m2)
    };
    let fd = (shifted(h) - shifted(-h)) / (2.0 * h);
    let rel = (fd - norm2).abs() / norm2;
    println!("directional derivative: finite difference {fd:.6} vs |g|² {norm2:.6} (relative difference {rel:.1e})");
    assert!(rel < 2e-2, "{fd} vs {norm2}");
}

/// `θ₀ + N(0, std²)` on every weight.
fn perturbed(m: &Llama, std: f64, seed: u64) -> Llama {
    let noise = Llama::init((*m.cfg).clone(), std, seed, &m.device());
    Llama {
        cfg: m.cfg.clone(),
        params: m.params.iter().zip(&noise.params).map(|(p, n)| p.clone() + n.clone()).collect(),
    }
}

/// The KL retain term `KL(p_θ₀ ‖ p_θ)` against a direct f64 computation from both models' full
/// logits at the loss-carrying positions; zero with a zero gradient at θ = θ₀; its gradient
/// against central finite differences along itself.
#[test]
fn the_kl_retain_term_matches_a_direct_computation_and_finite_differences() {
    let theta0 = model();
    let m = perturbed(&theta0, 0.05, 11);
    let d = data();
    let refs: Vec<_> = d.retain.iter().take(4).collect();
    let b = Batch::new(&refs, d.pad_id, 32, &m);
    let (kl, g) = retain_kl_grads(&m, &theta0, &b);

    let host = |model: &Llama| {
        let full = model.forward(b.inputs.clone()); // (B, T, V)
        let [bs, tl, v] = full.dims();
        (to_vec_f32(full.reshape([bs * tl, v])), v)
    };
    let ((lq, v), (lp, _)) = (host(&m), host(&theta0));
    let weights = to_vec_f32(b.weights.clone().reshape([1, lq.len() / v]));
    let log_softmax = |row: &[f32]| -> Vec<f64> {
        let max = row.iter().map(|&x| x as f64).fold(f64::NEG_INFINITY, f64::max);
        let lse = max + row.iter().map(|&x| (x as f64 - max).exp()).sum::<f64>().ln();
        row.iter().map(|&x| x as f64 - lse).collect()
    };
    let (mut num, mut z) = (0.0f64, 0.0f64);
    for (i, &w) in weights.iter().enumerate() {
        if w == 0.0 {
            continue;
        }
        let (p, q) = (log_softmax(&lp[i * v..(i + 1) * v]), log_softmax(&lq[i * v..(i + 1) * v]));
        num += w as f64 * p.iter().zip(&q).map(|(a, b)| a.exp() * (a - b)).sum::<f64>();
        z += w as f64;
    }
    let want = num / z;
    let rel = (kl - want).abs() / want;
    println!("KL(θ0 ‖ θ): {kl:.6e} vs direct {want:.6e} (relative difference {rel:.1e})");
    assert!(want > 1e-4 && rel < 1e-3, "{kl} vs {want}");

    let (kl0, g0) = retain_kl_grads(&theta0, &theta0, &b);
    let g0max = g0
        .iter()
        .flatten()
        .map(|x| to_vec_f32(x.clone()).iter().fold(0.0f32, |a, v| a.max(v.abs())))
        .fold(0.0, f32::max);
    println!("at θ = θ0: KL {kl0:e}, max |gradient| {g0max:e}");
    assert!(kl0.abs() < 1e-6 && g0max < 1e-5, "{kl0} {g0max}");

    let g: Vec<Tensor<2>> = g.into_iter().map(|x| x.unwrap()).collect();
    let norm2: f64 = g.iter().map(|x| to_vec_f32(x.clone()).iter().map(|v| (*v as f64).powi(2)).sum::<f64>()).sum();
    // A small step: at 1e-2 the curvature shows (0.77 of |g|²), at 3e-4 it is 0.9996.
    let h = 3e-4 / norm2.sqrt();
    let shifted = |s: f64| {
        let mut m2 = m.clone();
        for (p, gi) in m2.params.iter_mut().zip(&g) {
            *p = p.clone() + gi.clone().mul_scalar(s);
        }
        retain_kl_grads(&m2, &theta0, &b).0
    };
    let fd = (shifted(h) - shifted(-h)) / (2.0 * h);
    let rel = (fd - norm2).abs() / norm2;
    println!(
        "KL directional derivative: finite difference {fd:.6e} vs |g|² {norm2:.6e} (relative difference {rel:.1e})"
    );
    assert!(rel < 2e-2, "{fd} vs {norm2}");
}

/// An outer step with `retain_kl = λ` from a model away from θ₀ adds `λ·∇KL` on the step's
/// benign batch to the retain gradient (β = 0 exposes it), and costs one pass more.
#[test]
fn an_outer_step_with_the_kl_term_adds_its_gradient() {
    let theta0 = model();
    let m = perturbed(&theta0, 0.05, 11);
    let d = data();
    let c = PatcherConfig { beta: 0.0, retain_kl: 0.8, ..exposing(base_cfg()) };
    let streams = Streams::new(&c, &d);
    let mut st = state(&m);
    let stats = outer_step(&mut st, &theta0, &c, &d, &streams).unwrap();
    let plain =
        outer_step(&mut state(&m), &theta0, &PatcherConfig { retain_kl: 0.0, ..c.clone() }, &d, &streams).unwrap();
    assert_eq!(stats.passes, plain.passes + 1);
    let exposed = neg_delta(&m.params, &st.model.params);
    let (_, mut g) = retain_grads(&m, &c, &streams, &d, 0);
    let b = Batch::new(&streams.retain.batch(0), 0, 32, &m);
    let (kl, gk) = retain_kl_grads(&m, &theta0, &b);
    add_scaled(&mut g, &gk, c.retain_kl);
    let direct: Vec<Tensor<2>> = g.into_iter().map(|x| x.unwrap()).collect();
    let diff = max_diff(&exposed, &direct);
    println!("outer gradient with the KL term (KL {kl:.3e}) vs direct: {diff:e}");
    assert!(diff < 1e-5 && kl > 1e-4, "{diff} {kl}");
    assert!((stats.retain_loss - plain.retain_loss - c.retain_kl * kl).abs() < 1e-6);
}

/// With no refusal term, L_tr is the harmful-answer terms alone; an outer step still reports the
/// refusal loss at θ' (measured without a gradient) and costs one pass less per selected step.
#[test]
fn tamper_resistance_without_the_refusal_term_runs_and_counts_its_passes() {
    let m = model();
    let d = data();
    let c = PatcherConfig { tr_refusal: 0.0, tr_entropy: 1.0, ..base_cfg() };
    let streams = Streams::new(&c, &d);
    let mut st = state(&m);
    let stats = outer_step(&mut st, &m, &c, &d, &streams).unwrap();
    assert!(stats.tr_loss.is_finite() && stats.tr_loss > 0.0, "{stats:?}");
    assert_eq!(stats.passes, 3 + 2 + 1);
    assert!(max_diff(&st.model.params, &m.params) > 0.0);
    let full = PatcherConfig { tr_unlikelihood: 1.0, ..base_cfg() };
    assert_eq!(outer_step(&mut state(&m), &m, &full, &d, &Streams::new(&full, &d)).unwrap().passes, 3 + 2 * 2 + 1);
    // A config with no term at all is refused; defaults serialize as before (no new keys).
    let none = PatcherConfig { tr_refusal: 0.0, ..base_cfg() };
    assert!(none.validate().unwrap_err().to_string().contains("no term"));
    let json = serde_json::to_string(&base_cfg()).unwrap();
    assert!(!json.contains("tr_refusal") && !json.contains("tr_entropy") && !json.contains("tr_unlikelihood"));
}

/// The meta-gradient correction through one SGD step is the derivative of the composite
/// `F(θ) = L_tr(θ − η·∇L_harm(θ))`: its directional derivatives, by central differences of F,
/// match `Jᵀ·g` within 2% (0.7% here; the forward difference's bias grows with `meta_fd`: 6.5%
/// at 1e-3, 53% at 1e-2), while the first-order gradient `g` (taken at θ' and applied to θ)
/// misses them by 180%.
#[test]
fn the_meta_gradient_through_an_sgd_step_matches_finite_differences_of_the_composite() {
    let m = model();
    let d = data();
    let opt = OptimizerConfig::sgd(0.0);
    let lr = 0.5;
    let hb = Batch::new(&d.harmful.iter().take(4).collect::<Vec<_>>(), d.pad_id, 32, &m);
    let tb = Batch::new(&d.refusal.iter().take(4).collect::<Vec<_>>(), d.pad_id, 32, &m);
    let attacked = |theta: &Llama| -> Llama {
        let mut at = theta.clone();
        let (_, g) = loss_and_grads(&at, &hb);
        optim::step(&opt, &mut OptimState::new(at.params.len()), &mut at.params, &g, lr);
        at
    };
    let f = |theta: &Llama| patcher::train::step::loss(&attacked(theta), &tb) as f64;

    let mut at = m.clone();
    let mut st = OptimState::new(m.params.len());
    let (_, gh) = loss_and_grads(&at, &hb);
    optim::step(&opt, &mut st, &mut at.params, &gh, lr);
    let jac = optim::step_jacobian(&opt, &st, &gh, &m.params, lr);
    let rec = InnerRecord { before: m.clone(), batch: hb.clone(), grad: gh, jac };
    let (_, g) = loss_and_grads(&at, &tb);
    let corrected = backprop_inner(&rec, &g, PatcherConfig::default().meta_fd);

    let dot = |a: &[Option<Tensor<2>>], b: &[Tensor<2>]| -> f64 {
        a.iter()
            .zip(b)
            .map(|(x, y)| {
                let (x, y) = (to_vec_f32(x.clone().unwrap()), to_vec_f32(y.clone()));
                x.iter().zip(&y).map(|(p, q)| *p as f64 * *q as f64).sum::<f64>()
            })
            .sum()
    };
    let mut rng = patcher::rng::Rng::new(11);
    let (mut worst_fixed, mut worst_first) = (0.0f64, 0.0f64);
    for trial in 0..3 {
        let dir: Vec<Tensor<2>> = m
            .params
            .iter()
            .map(|p| {
                let [r, c] = p.dims();
                let v: Vec<f32> = (0..r * c).map(|_| rng.normal() as f32).collect();
                Tensor::<2>::from_data(TensorData::new(v, [r, c]), &p.device())
            })
            .collect();
        let norm = dot(&dir.iter().cloned().map(Some).collect::<Vec<_>>(), &dir).sqrt();
        let h = 1e-2 / norm;
        let moved = |s: f64| {
            let mut t = m.clone();
            for (p, u) in t.params.iter_mut().zip(&dir) {
                *p = p.clone() + u.clone().mul_scalar(s);
            }
            f(&t)
        };
        let fd = (moved(h) - moved(-h)) / (2.0 * h);
        let (fixed, first) = (dot(&corrected, &dir), dot(&g, &dir));
        let scale = fd.abs().max(1e-3);
        println!("direction {trial}: finite difference {fd:.5}, corrected {fixed:.5}, first-order {first:.5}");
        worst_fixed = worst_fixed.max((fixed - fd).abs() / scale);
        worst_first = worst_first.max((first - fd).abs() / scale);
    }
    println!("relative error: corrected {worst_fixed:.1e}, first-order {worst_first:.1e}");
    assert!(worst_fixed < 2e-2, "corrected meta-gradient off by {worst_fixed}");
    assert!(worst_first > 10.0 * worst_fixed, "the check cannot tell the correction from first order");
}

/// An outer step with `meta_steps` adds `β·w·Jᵀ·∇L_tr(θ')` to the retain gradient: with K = 1 and
/// S = {1} the exposed outer gradient is the retain gradient plus β times [`backprop_inner`] of
/// the step, and the step costs one pass more.
#[test]
fn an_outer_step_with_the_meta_correction_applies_the_back_propagated_gradient() {
    let m = model();
    let d = data();
    let mut c = exposing(base_cfg());
    c.k = KSchedule::constant(1);
    c.inner = InnerSelection { kind: InnerKind::Last, n: 1, weight: InnerWeight::Uniform };
    c.attack.optimizers = vec![OptimizerConfig::sgd(0.0)];
    c.meta_steps = 1;
    let streams = Streams::new(&c, &d);
    let mut st = state(&m);
    let stats = outer_step(&mut st, &m, &c, &d, &streams).unwrap();
    assert_eq!(stats.passes, 1 + 1 + 1 + 1, "attack, L_tr, the correction, retain");
    let exposed = neg_delta(&m.params, &st.model.params);

    let attack = sample_attack(&c, 0, 0);
    let hb = Batch::new(&streams.harmful.batch(0), 0, 32, &m);
    let mut at = m.clone();
    let mut inner = OptimState::new(m.params.len());
    let (_, gh) = loss_and_grads(&at, &hb);
    optim::step(&attack.optimizer, &mut inner, &mut at.params, &gh, attack.lr);
    let jac = optim::step_jacobian(&attack.optimizer, &inner, &gh, &m.params, attack.lr);
    let rec = InnerRecord { before: m.clone(), batch: hb, grad: gh, jac };
    let tb = Batch::new(&streams.refusal_tr.batch(0), 0, 32, &at);
    let corrected = backprop_inner(&rec, &loss_and_grads(&at, &tb).1, c.meta_fd);
    let (_, mut g) = retain_grads(&m, &c, &streams, &d, 0);
    add_scaled(&mut g, &corrected, c.beta);
    let direct: Vec<Tensor<2>> = g.into_iter().map(|x| x.unwrap()).collect();
    let diff = max_diff(&exposed, &direct);
    println!("outer gradient with the correction vs direct: {diff:e}");
    assert!(diff < 1e-5, "{diff}");
    // Patcher-parallel refuses the setting rather than ignoring it.
    let Err(e) = parallel::harden(&m, &c, &d, 2, HardenOptions::default()) else { panic!("meta_steps accepted") };
    let e = e.to_string();
    assert!(e.contains("meta_steps"), "{e}");
}

#[test]
fn the_simulated_attack_leaves_the_outer_weights_untouched() {
    let m = model();
    let d = data();
    let c = PatcherConfig { outer_lr: 0.0, ..base_cfg() };
    let streams = Streams::new(&c, &d);
    let mut st = state(&m);
    let stats = outer_step(&mut st, &m, &c, &d, &streams).unwrap();
    assert!(stats.harmful_loss_end.is_finite() && stats.tr_loss.is_finite());
    assert_eq!(max_diff(&st.model.params, &m.params), 0.0, "weights moved although only the inner loop ran");
}

#[test]
fn the_tamper_resistance_gradient_is_taken_at_the_attacked_weights() {
    let m = model();
    let d = data();
    let c = exposing(base_cfg());
    let streams = Streams::new(&c, &d);
    let mut st = state(&m);
    outer_step(&mut st, &m, &c, &d, &streams).unwrap();
    let g_patcher = neg_delta(&m.params, &st.model.params);

    // Direct: the attack with the engine-level pieces, step by step.
    let attack = sample_attack(&c, 0, 0);
    let mut at = m.clone();
    let mut inner = OptimState::new(m.params.len());
    let ret = Batch::new(&streams.retain.batch(0), 0, 32, &m);
    let refu = Batch::new(&streams.refusal.batch(0), 0, 32, &m);
    let (_, mut g) = loss_and_grads(&m, &ret);
    add_scaled(&mut g, &loss_and_grads(&m, &refu).1, c.alpha);
    let mut g_at_theta = g.clone();
    let weights = c.inner.steps(3);
    assert_eq!(weights.iter().map(|w| w.0).collect::<Vec<_>>(), vec![2, 3]);
    for k in 1..=3usize {
        let hb = Batch::new(&streams.harmful.batch(k - 1), 0, 32, &at);
        let (_, gh) = loss_and_grads(&at, &hb);
        optim::step(&attack.optimizer, &mut inner, &mut at.params, &gh, attack.lr);
        if let Some(&(_, w)) = weights.iter().find(|x| x.0 == k) {
            let tb = Batch::new(&streams.refusal_tr.batch(k - 1), 0, 32, &at);
            add_scaled(&mut g, &loss_and_grads(&at, &tb).1, c.beta * w);
            // The wrong version: the same term at θ instead of θ'.
            add_scaled(&mut g_at_theta, &loss_and_grads(&m, &tb).1, c.beta * w);
        }
    }
    let direct: Vec<Tensor<2>> = g.into_iter().map(|x| x.unwrap()).collect();
    let wrong: Vec<Tensor<2>> = g_at_theta.into_iter().map(|x| x.unwrap()).collect();
    let d_ok = max_diff(&g_patcher, &direct);
    let d_wrong = max_diff(&g_patcher, &wrong);
    println!("outer gradient vs direct (at θ'): {d_ok:e}; vs the same terms at θ: {d_wrong:e}");
    assert!(d_ok < 1e-5, "{d_ok}");
    assert!(d_wrong > 100.0 * d_ok.max(1e-7), "the check cannot tell θ' from θ");
}

/// A train-time distribution with LoRA attacks (share 1: always) and a warm-up + cosine schedule.
fn lora_cosine_cfg(share: f64) -> PatcherConfig {
    let mut c = exposing(base_cfg());
    c.attack.optimizers =
        vec![OptimizerConfig::adamw(), OptimizerConfig { kind: optim::OptimKind::Adam, ..OptimizerConfig::adamw() }];
    c.attack.schedules = vec![ScheduleConfig { kind: ScheduleKind::Cosine, warmup_steps: 1, min_ratio: 0.1 }];
    c.attack.lora = Some(LoraAttacks { share, ranks: vec![2, 4], lrs: vec![2e-2], ..Default::default() });
    c
}

/// The engine's attack from `m` for `steps` steps with the sampled attack's settings, on the
/// simulated attacker's batch stream, without clipping: the merged attacked weights.
fn engine_attack(m: &Llama, c: &PatcherConfig, streams: &Streams, t: usize, steps: usize, k_total: usize) -> Llama {
    let a = sample_attack(c, t, 0);
    let tc = TrainConfig {
        steps: k_total,
        lr: a.lr,
        optimizer: a.optimizer.clone(),
        schedule: a.schedule.clone(),
        batch: c.attack.batch.clone(),
        clip_norm: 0.0,
        seed: a.lora.as_ref().map_or(0, |l| l.1),
        lora: a.lora.as_ref().map(|l| l.0.clone()),
        ..Default::default()
    };
    let opts = RunOptions { stop_after: Some(steps), ..Default::default() };
    run(TrainState::new(m.clone(), &tc).unwrap(), &tc, &streams.harmful, 0, opts).unwrap().merged()
}

/// The simulated attack against the fine-tuning engine's attack (the real attacks' code) with
/// the same settings: full-parameter AdamW with warm-up and cosine decay, LoRA at constant
/// rate, LoRA with the schedule. The attacked weights agree after every step (max |Δ| below
/// 1e-6), and the schedule is not a no-op (its weights differ from the constant-rate run's).
#[test]
fn the_simulated_attack_is_the_engines_attack_full_parameter_or_lora_with_a_schedule() {
    let m = model();
    let d = data();
    let cosine = ScheduleConfig { kind: ScheduleKind::Cosine, warmup_steps: 1, min_ratio: 0.1 };
    let mut diffs = vec![];
    for (name, schedules, lora) in [
        ("full cosine", vec![cosine.clone()], None),
        ("lora constant", vec![], Some(1.0)),
        ("lora cosine", vec![cosine.clone()], Some(1.0)),
    ] {
        let mut c = base_cfg();
        c.attack.schedules = schedules;
        c.attack.lora = lora.map(|share| LoraAttacks { share, ranks: vec![4], lrs: vec![2e-2], ..Default::default() });
        let streams = Streams::new(&c, &d);
        let a = sample_attack(&c, 0, 0);
        assert_eq!(a.lora.is_some(), lora.is_some(), "{name}");
        let mut sim = InnerAttack::new(&m, a, 3).unwrap();
        for k in 1..=3 {
            sim.step(&Batch::new(&streams.harmful.batch(k - 1), 0, 32, &m));
            let engine = engine_attack(&m, &c, &streams, 0, k, 3);
            let diff = max_diff(&sim.attacked.params, &engine.params);
            assert!(diff < 1e-6, "{name}, step {k}: {diff}");
            diffs.push(diff);
        }
        let mut constant = c.clone();
        constant.attack.schedules = vec![];
        if name != "lora constant" {
            let plain = engine_attack(&m, &constant, &streams, 0, 3, 3);
            let moved = max_diff(&sim.attacked.params, &plain.params);
            assert!(moved > 1e-4, "{name}: the schedule changed nothing ({moved})");
        }
        let untouched = max_diff(&sim.attacked.params, &m.params);
        assert!(untouched > 1e-4, "{name}: the attack did not move the weights ({untouched})");
    }
    println!(
        "simulated vs engine attack, max |Δ| over steps and variants: {:e}",
        diffs.iter().fold(0.0f32, |a, &b| a.max(b))
    );
}

/// An outer step whose sampled attack is LoRA: the exposed outer gradient is the retain
/// gradient plus `β·w(k)·∇L_tr` at the engine's LoRA-attacked weights after steps 2 and 3.
#[test]
fn an_outer_step_with_a_lora_attack_takes_tamper_resistance_gradients_at_the_merged_weights() {
    let m = model();
    let d = data();
    let c = lora_cosine_cfg(1.0);
    let streams = Streams::new(&c, &d);
    let mut st = state(&m);
    let stats = outer_step(&mut st, &m, &c, &d, &streams).unwrap();
    let variant = stats.attack_variant.clone().unwrap_or_default();
    assert!(variant.starts_with("cosine lora-r"), "{variant}");
    let exposed = neg_delta(&m.params, &st.model.params);
    let (_, mut g) = retain_grads(&m, &c, &streams, &d, 0);
    for (k, w) in c.inner.steps(3) {
        let at = engine_attack(&m, &c, &streams, 0, k, 3);
        let tb = Batch::new(&streams.refusal_tr.batch(k - 1), 0, 32, &at);
        add_scaled(&mut g, &loss_and_grads(&at, &tb).1, c.beta * w);
    }
    let direct: Vec<Tensor<2>> = g.into_iter().map(|x| x.unwrap()).collect();
    let diff = max_diff(&exposed, &direct);
    println!("outer gradient with a LoRA attack ({variant}) vs direct: {diff:e}");
    assert!(diff < 1e-5, "{diff}");
    // Parallel Patcher refuses schedules instead of ignoring them (it has LoRA trajectories).
    let mut p = c.clone();
    p.attack.lora = None;
    let Err(e) = parallel::harden(&m, &p, &d, 2, HardenOptions::default()) else { panic!("schedules accepted") };
    assert!(e.to_string().contains("attack.schedules"), "{e}");
}

/// Sampling: a distribution without schedules or LoRA draws what it always drew (an optimizer,
/// then a learning rate, from the step's stream); with LoRA at share 0.5 about half the outer
/// steps get adapters, of the listed ranks, at LoRA's learning rates.
#[test]
fn train_time_attacks_sample_lora_at_its_share_and_plain_distributions_as_before() {
    let mut c = base_cfg();
    c.attack.optimizers = vec![OptimizerConfig::adamw(), OptimizerConfig::sgd(0.9)];
    c.attack.lrs = vec![1e-4, 2e-4, 3e-4];
    for t in 0..50 {
        let mut r = Rng::derive(c.seed, &format!("attack/{t}/0"));
        let (o, lr) = (r.choose(&c.attack.optimizers).clone(), *r.choose(&c.attack.lrs));
        let a = sample_attack(&c, t, 0);
        assert_eq!((a.optimizer, a.lr, a.schedule, a.lora.is_none()), (o, lr, ScheduleConfig::default(), true));
    }
    let c = lora_cosine_cfg(0.5);
    let sampled: Vec<_> = (0..400).map(|t| sample_attack(&c, t, 0)).collect();
    let lora: Vec<_> = sampled.iter().filter_map(|a| a.lora.as_ref().map(|l| (l.0.rank, a.lr))).collect();
    println!("LoRA attacks in 400 outer steps at share 0.5: {}", lora.len());
    assert!((160..=240).contains(&lora.len()), "{}", lora.len());
    assert!(lora.iter().all(|&(r, lr)| (r == 2 || r == 4) && lr == 2e-2));
    assert!(lora.iter().any(|l| l.0 == 2) && lora.iter().any(|l| l.0 == 4));
    assert!(
        sampled.iter().filter(|a| a.lora.is_none()).all(|a| a.lr == 3e-2 && a.schedule.kind == ScheduleKind::Cosine)
    );
    assert_eq!(
        sampled[7].lora.as_ref().map(|l| l.1),
        sample_attack(&c, 7, 0).lora.map(|l| l.1),
        "a pure function of (seed, t)"
    );
}

#[test]
fn parallel_with_one_worker_and_k1_equals_sequential_k1() {
    let m = model();
    let d = data();
    let c = PatcherConfig {
        k: KSchedule::constant(1),
        inner: InnerSelection { kind: InnerKind::All, ..Default::default() },
        outer_steps: 4,
        ..base_cfg()
    };
    let seq = harden(&m, &c, &d, HardenOptions::default()).unwrap();
    let par = parallel::harden(&m, &c, &d, 1, HardenOptions::default()).unwrap();
    let diff = max_diff(&seq.params, &par.params);
    println!("parallel P=1 K=1 vs sequential K=1 after 4 outer steps: max |weight difference| {diff:e}");
    assert!(diff < 1e-5, "{diff}");
    assert!(max_diff(&seq.params, &m.params) > 1e-4, "training moved the weights");
}

/// The same with LoRA attacks on every outer step (share 1, ranks 2 and 4 drawn per step): a
/// trajectory of one step is the sequential algorithm's one-step LoRA attack from θ.
#[test]
fn parallel_with_one_worker_and_k1_equals_sequential_k1_with_lora_attacks() {
    let m = model();
    let d = data();
    let mut c = PatcherConfig {
        k: KSchedule::constant(1),
        inner: InnerSelection { kind: InnerKind::All, ..Default::default() },
        outer_steps: 4,
        ..base_cfg()
    };
    c.attack.lora = Some(LoraAttacks { share: 1.0, ranks: vec![2, 4], lrs: vec![2e-2], ..Default::default() });
    let seq = harden(&m, &c, &d, HardenOptions::default()).unwrap();
    let par = parallel::harden(&m, &c, &d, 1, HardenOptions::default()).unwrap();
    let diff = max_diff(&seq.params, &par.params);
    println!("LoRA attacks: parallel P=1 K=1 vs sequential K=1 after 4 outer steps: max |weight difference| {diff:e}");
    assert!(diff < 1e-5, "{diff}");
    // The LoRA attacks reached the outer gradient: without them the result differs.
    c.attack.lora = None;
    let full = parallel::harden(&m, &c, &d, 1, HardenOptions::default()).unwrap();
    let moved = max_diff(&full.params, &par.params);
    assert!(moved > 1e-4, "LoRA attacks changed nothing: {moved}");
}

/// A LoRA trajectory with θ frozen (outer lr 0): after s outer steps its adapters equal s steps
/// of a separately computed LoRA attack from θ on the worker's batches (batch index
/// `t·K + age`, ages starting at ⌊jK/P⌋), whose adapters are drawn from the sampled attack's
/// seed; a share-0.5 distribution mixes LoRA and full-parameter trajectories.
#[test]
fn parallel_lora_trajectories_equal_separately_computed_lora_attacks() {
    let m = model();
    let d = data();
    let (k, p, steps) = (6usize, 2usize, 2usize);
    let mut c = PatcherConfig { outer_lr: 0.0, k: KSchedule::constant(k), ..base_cfg() };
    c.attack.lora = Some(LoraAttacks { share: 1.0, ranks: vec![4], lrs: vec![2e-2], ..Default::default() });
    let base = Streams::new(&c, &d);
    let streams: Vec<Streams> = (0..p).map(|j| parallel_streams(&base, &c, j)).collect();
    let mut st = state(&m);
    let mut trajs = parallel::init_trajectories(&m, &c, p).unwrap();
    let ages0: Vec<usize> = trajs.iter().map(|t| t.age).collect();
    for _ in 0..steps {
        parallel::outer_step(&mut st, &mut trajs, &c, &d, &streams).unwrap();
    }
    for j in 0..p {
        assert!(ages0[j] + steps < k, "the check needs unrestarted trajectories");
        let a = sample_attack(&c, 0, j);
        let (lc, seed) = a.lora.clone().unwrap();
        let mut lora = Lora::new(&m, lc, seed).unwrap();
        let mut opt = OptimState::new(lora.params.len());
        for s in 0..steps {
            let hb = Batch::new(&streams[j].harmful.batch(s * k + ages0[j] + s), 0, 32, &m);
            let (_, g) = lora.loss_and_grads(&m, &hb);
            optim::step(&a.optimizer, &mut opt, &mut lora.params, &g, a.lr);
        }
        let traj = trajs[j].lora.as_ref().expect("a LoRA trajectory");
        assert!(trajs[j].offset.is_empty());
        let diff = max_diff(&traj.merge(&m).params, &lora.merge(&m).params);
        println!("LoRA trajectory of worker {j} vs a separate LoRA attack: {diff:e}");
        assert!(diff < 1e-6, "worker {j}: {diff}");
        assert!(max_diff(&traj.merge(&m).params, &m.params) > 1e-4, "the attack moved nothing");
    }
    c.attack.lora.as_mut().unwrap().share = 0.5;
    let kinds: Vec<bool> = (0..40).map(|t| sample_attack(&c, t, 1).lora.is_some()).collect();
    assert!(kinds.iter().any(|&l| l) && kinds.iter().any(|&l| !l));
}

#[test]
fn parallel_trajectories_and_all_reduce_match_direct_computations() {
    let m = model();
    let d = data();
    let k = 3usize;
    for p in [2usize, 3] {
        // (a) With θ frozen (outer lr 0), worker j's θ + Δ after s outer steps equals s steps
        // of its attack from θ, started at age ⌊jK/P⌋, on its own batches.
        let c = PatcherConfig { outer_lr: 0.0, k: KSchedule::constant(k), ..base_cfg() };
        let base = Streams::new(&c, &d);
        let streams: Vec<Streams> = (0..p).map(|j| parallel_streams(&base, &c, j)).collect();
        let mut st = state(&m);
        let mut trajs = parallel::init_trajectories(&m, &c, p).unwrap();
        let ages0: Vec<usize> = trajs.iter().map(|t| t.age).collect();
        assert_eq!(ages0, (0..p).map(|j| j * k / p).collect::<Vec<_>>());
        let steps = 2usize;
        for _ in 0..steps {
            parallel::outer_step(&mut st, &mut trajs, &c, &d, &streams).unwrap();
        }
        for j in 0..p {
            let attack = sample_attack(&c, 0, j);
            let mut at = m.clone();
            let mut inner = OptimState::new(m.params.len());
            for s in 0..steps {
                let idx = s * k + ages0[j] + s;
                let hb = Batch::new(&streams[j].harmful.batch(idx), 0, 32, &at);
                let (_, g) = loss_and_grads(&at, &hb);
                optim::step(&attack.optimizer, &mut inner, &mut at.params, &g, attack.lr);
            }
            if ages0[j] + steps > k {
                continue; // restarted and continued: not a single trajectory from θ
            }
            if ages0[j] + steps < k {
                let formed: Vec<Tensor<2>> =
                    m.params.iter().zip(&trajs[j].offset).map(|(a, b)| a.clone() + b.clone()).collect();
                let diff = max_diff(&formed, &at.params);
                println!("P={p} worker {j}: trajectory vs separate attack: {diff:e}");
                assert!(diff < 1e-5, "P={p} worker {j}: {diff}");
            } else {
                assert_eq!(trajs[j].age, 0, "a trajectory reaching age K restarts");
                assert_eq!(max_diff(&trajs[j].offset, &zeros(&m)), 0.0);
            }
        }

        // (b) One outer step with an exposing optimizer: g = Σ_j contributions, each computed
        // separately (worker 0 adds the retain gradient).
        let c = exposing(PatcherConfig { k: KSchedule::constant(k), ..base_cfg() });
        let base = Streams::new(&c, &d);
        let streams: Vec<Streams> = (0..p).map(|j| parallel_streams(&base, &c, j)).collect();
        let mut st = state(&m);
        let mut trajs = parallel::init_trajectories(&m, &c, p).unwrap();
        let ages0: Vec<usize> = trajs.iter().map(|t| t.age).collect();
        parallel::outer_step(&mut st, &mut trajs, &c, &d, &streams).unwrap();
        let g_par = neg_delta(&m.params, &st.model.params);
        let ret = Batch::new(&base.retain.batch(0), 0, 32, &m);
        let refu = Batch::new(&base.refusal.batch(0), 0, 32, &m);
        let (_, mut g) = loss_and_grads(&m, &ret);
        add_scaled(&mut g, &loss_and_grads(&m, &refu).1, c.alpha);
        for j in 0..p {
            let attack = sample_attack(&c, 0, j);
            let mut at = m.clone();
            let idx = ages0[j];
            let hb = Batch::new(&streams[j].harmful.batch(idx), 0, 32, &at);
            let (_, gh) = loss_and_grads(&at, &hb);
            optim::step(&attack.optimizer, &mut OptimState::new(m.params.len()), &mut at.params, &gh, attack.lr);
            let age = ages0[j] + 1;
            if let Some(&(_, w)) = c.inner.steps(k).iter().find(|x| x.0 == age) {
                let tb = Batch::new(&streams[j].refusal_tr.batch(idx), 0, 32, &at);
                add_scaled(&mut g, &loss_and_grads(&at, &tb).1, c.beta * w * k as f64 / p as f64);
            }
        }
        let direct: Vec<Tensor<2>> = g.into_iter().map(|x| x.unwrap()).collect();
        let diff = max_diff(&g_par, &direct);
        println!("P={p}: all-reduced outer gradient vs sum of separate contributions: {diff:e}");
        assert!(diff < 1e-5, "P={p}: {diff}");
    }
}

fn zeros(m: &Llama) -> Vec<Tensor<2>> {
    m.params.iter().map(|p| p.zeros_like()).collect()
}

fn parallel_streams(base: &Streams, c: &PatcherConfig, j: usize) -> Streams {
    parallel::worker_streams(base, c, j)
}

#[test]
fn killed_and_resumed_hardening_equals_an_uninterrupted_run_sequential_and_parallel() {
    let m = model();
    let d = data();
    let c = PatcherConfig { outer_steps: 5, checkpoint_every: 2, ..base_cfg() };
    // Full-parameter attacks, LoRA attacks on every outer step, and a mix (the checkpoint at
    // step 2 then holds one trajectory of each kind: checked below).
    let lora = |share: f64| {
        let mut c = c.clone();
        c.attack.lora = Some(LoraAttacks { share, ranks: vec![2], lrs: vec![2e-2], ..Default::default() });
        c
    };
    let mixed = lora(0.5);
    // After 2 outer steps at K = 3, worker 0's trajectory started at step 0, worker 1's at 2.
    assert_ne!(sample_attack(&mixed, 0, 0).lora.is_some(), sample_attack(&mixed, 2, 1).lora.is_some());
    for (c, p) in [(&c, 0usize), (&c, 2), (&mixed, 0), (&mixed, 2), (&lora(1.0), 2)] {
        let run = |opts: HardenOptions| {
            if p == 0 { harden(&m, c, &d, opts) } else { parallel::harden(&m, c, &d, p, opts) }
        };
        let full = run(HardenOptions::default()).unwrap();
        let share = c.attack.lora.as_ref().map_or(0.0, |l| l.share);
        let dir = std::env::temp_dir().join(format!("patcher-harden-resume-{p}-{share}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        // Killed after outer step 3: the last checkpoint is step 2 (with the worker trajectories).
        run(HardenOptions { out_dir: Some(dir.clone()), stop_after: Some(3), ..Default::default() }).unwrap();
        let resumed = run(HardenOptions { out_dir: Some(dir.clone()), ..Default::default() }).unwrap();
        let diff = max_diff(&full.params, &resumed.params);
        println!(
            "P={p} (0 = sequential), LoRA share {share}: resumed vs uninterrupted hardening: max |weight difference| {diff:e}"
        );
        assert!(diff < 1e-6, "P={p}, share {share}: {diff}");
        let lines = std::fs::read_to_string(dir.join("metrics.jsonl")).unwrap();
        assert!(lines.lines().count() >= 5, "per-step metrics are logged");
        let _ = std::fs::remove_dir_all(&dir);
    }
}

/// `patcher bench harden` reports each algorithm's critical path as DESIGN section 5 counts it:
/// `K + |S|·(1 + [γ > 0]) + 1` dependent passes per outer step for sequential Patcher; for
/// parallel Patcher the longest worker's chain in the reported (last) step: its attack step, a
/// TR gradient (+1 for the γ term) if its trajectory's age is in S, and the retain gradient on
/// worker 0. K = 6, P = 2 and one timed step after one warm-up make that step one where worker
/// 0's age is outside S, so the count is 2, not the bound 3. Timings are not asserted: they
/// depend on the machine.
#[test]
fn harden_benchmark_reports_both_critical_paths() {
    let (cfg, _, _) = patcher::bench::shape("tiny").unwrap();
    let device = Device::flex();
    let (k, workers, warmup, steps) = (6, 2, 1, 1);
    let r = patcher::bench::harden_step("tiny", &cfg, 2, 16, k, workers, warmup, steps, &device).unwrap();
    println!("{r:?}");
    assert_eq!((r.shape.as_str(), r.batch, r.seq, r.k, r.workers), ("tiny", 2, 16, k, workers), "{r:?}");
    // The benchmark runs the default config with K and the batch shapes replaced.
    let pc = PatcherConfig::default();
    let s: Vec<usize> = pc.inner.steps(k).iter().map(|&(step, _)| step).collect();
    let tr = 1 + usize::from(pc.gamma > 0.0);
    assert_eq!(r.sequential_passes, k + s.len() * tr + 1, "S = {s:?}: {r:?}");
    // Worker j starts at age ⌊jK/P⌋ and ages by one per outer step (mod K); after outer step
    // t (0-based) its trajectory has taken ((⌊jK/P⌋ + t) mod K) + 1 attack steps.
    let t = warmup + steps - 1;
    let chain = |j: usize| {
        let age = (j * k / workers + t) % k + 1;
        1 + usize::from(s.contains(&age)) * tr + usize::from(j == 0)
    };
    let expected = (0..workers).map(chain).max().unwrap();
    // The default S is every inner step (the method study's recipe), so worker 0's chain is the
    // longest: its attack step, the tamper-resistance terms and the retain pass.
    assert_eq!((s.len(), expected), (k, 2 + tr), "S = {s:?}");
    assert_eq!(r.parallel_passes, expected, "S = {s:?}: {r:?}");
    assert_eq!(r.speedup.to_bits(), (r.sequential_s / r.parallel_s).to_bits(), "{r:?}");
    // Peak memory per algorithm, where the kernel lets the high-water mark be reset (the
    // benchmark prints `-` elsewhere): at least what was resident before the run.
    if let (Some(base), Some(seq), Some(par)) = (r.resident_mb, r.sequential_peak_mb, r.parallel_peak_mb) {
        assert!(seq >= base - 1.0 && par >= base - 1.0, "{r:?}");
    }
}

/// A distribution with a benign phase on every full-parameter attack: K = 4, the first 2 steps
/// on benign data.
fn benign_first_cfg(share: f64) -> PatcherConfig {
    let mut c = exposing(PatcherConfig { k: KSchedule::constant(4), ..base_cfg() });
    c.attack.benign_first = BenignFirst { share, steps: vec![2], prepend: false };
    c
}

/// `b` benign AdamW steps then harmful ones with a fresh optimizer state, computed directly on
/// the batches `batch(k)` picks for 1-based step k: the weights after each of `k_total` steps.
fn benign_then_harmful(m: &Llama, lr: f64, b: usize, k_total: usize, batch: impl Fn(usize) -> Batch) -> Vec<Llama> {
    let mut at = m.clone();
    let mut opt = OptimState::new(m.params.len());
    let mut out = vec![];
    for k in 1..=k_total {
        let (_, g) = loss_and_grads(&at, &batch(k));
        optim::step(&OptimizerConfig::adamw(), &mut opt, &mut at.params, &g, lr);
        if k == b {
            opt = OptimState::new(m.params.len());
        }
        out.push(at.clone());
    }
    out
}

/// The benign phase of the train-time distribution (`attack.benign_first`), sequential: the
/// simulated attack's first 2 of 4 steps train on the benign stream, the last 2 on the harmful
/// one with a fresh AdamW state, as computed directly (max |Δ| below 1e-6 after every step);
/// the optimizer's reset and the benign batches both matter (weights differ without them); an
/// outer step takes its tamper-resistance gradients (steps 3 and 4) at those weights.
#[test]
fn a_benign_first_attack_fine_tunes_on_benign_data_then_attacks_with_a_fresh_optimizer() {
    let m = model();
    let d = data();
    let c = benign_first_cfg(1.0);
    let streams = Streams::new(&c, &d);
    let benign = streams.benign_attack.clone().expect("a benign stream with benign_first");
    let a = sample_attack(&c, 0, 0);
    assert_eq!((a.benign_steps, a.variant().as_deref()), (2, Some("benign-2")));
    let pick = |k: usize| {
        let stream = if k <= 2 { &benign } else { &streams.harmful };
        Batch::new(&stream.batch(k - 1), 0, 32, &m)
    };
    let direct = benign_then_harmful(&m, a.lr, 2, 4, pick);
    let mut sim = InnerAttack::new(&m, a.clone(), 4).unwrap();
    let mut diffs = vec![];
    for k in 1..=4 {
        assert_eq!(sim.attack.benign_at(k - 1), k <= 2);
        sim.step(&pick(k));
        diffs.push(max_diff(&sim.attacked.params, &direct[k - 1].params));
    }
    let worst = diffs.iter().fold(0.0f32, |x, &y| x.max(y));
    println!("benign-first simulated attack vs direct computation, max |Δ| over 4 steps: {worst:e}");
    assert!(worst < 1e-6, "{diffs:?}");
    let no_reset = benign_then_harmful(&m, a.lr, 0, 4, pick);
    let harmful_only = benign_then_harmful(&m, a.lr, 2, 4, |k| Batch::new(&streams.harmful.batch(k - 1), 0, 32, &m));
    for (what, other) in [("the optimizer reset", &no_reset), ("the benign batches", &harmful_only)] {
        let moved = max_diff(&other[3].params, &direct[3].params);
        assert!(moved > 1e-4, "{what} changed nothing: {moved}");
    }
    // The outer step: retain gradient + β·w(k)·∇L_tr at the direct weights after steps 3 and 4.
    let mut st = state(&m);
    let stats = outer_step(&mut st, &m, &c, &d, &streams).unwrap();
    assert_eq!(stats.attack_variant.as_deref(), Some("benign-2"));
    let exposed = neg_delta(&m.params, &st.model.params);
    let (_, mut g) = retain_grads(&m, &c, &streams, &d, 0);
    for (k, w) in c.inner.steps(4) {
        let at = &direct[k - 1];
        let tb = Batch::new(&streams.refusal_tr.batch(k - 1), 0, 32, at);
        add_scaled(&mut g, &loss_and_grads(at, &tb).1, c.beta * w);
    }
    let want: Vec<Tensor<2>> = g.into_iter().map(|x| x.unwrap()).collect();
    let diff = max_diff(&exposed, &want);
    println!("outer gradient with a benign-first attack vs direct: {diff:e}");
    assert!(diff < 1e-5, "{diff}");
}

/// Parallel Patcher with a benign phase (P = 2, K = 4, θ frozen): worker 0, starting at age 0,
/// takes its first 2 steps on its own benign stream and the next on its harmful one with a
/// fresh optimizer; worker 1, starting at age 2, is past the phase and attacks on harmful data.
/// Both offsets match direct computations on the batches `t·K + age`.
#[test]
fn parallel_trajectories_take_the_benign_phase_on_their_own_streams() {
    let m = model();
    let d = data();
    let c = PatcherConfig { outer_lr: 0.0, ..benign_first_cfg(1.0) };
    let base = Streams::new(&c, &d);
    let streams: Vec<Streams> = (0..2).map(|j| parallel_streams(&base, &c, j)).collect();
    let mut st = state(&m);
    let mut trajs = parallel::init_trajectories(&m, &c, 2).unwrap();
    assert_eq!(trajs.iter().map(|t| t.age).collect::<Vec<_>>(), vec![0, 2]);
    let worker1 = trajs[1].clone();
    let steps = 3;
    let mut after_one = None;
    for s in 0..steps {
        parallel::outer_step(&mut st, &mut trajs, &c, &d, &streams).unwrap();
        if s == 0 {
            after_one = Some(trajs[1].clone());
        }
    }
    let formed = |t: &parallel::Trajectory| -> Vec<Tensor<2>> {
        m.params.iter().zip(&t.offset).map(|(a, b)| a.clone() + b.clone()).collect()
    };
    let s0 = &streams[0];
    let benign0 = s0.benign_attack.clone().unwrap();
    // Step s (1-based) of worker 0 is outer step s − 1 at age s − 1: batch (s − 1)·4 + (s − 1).
    let pick0 = |s: usize| {
        let idx = (s - 1) * 5;
        Batch::new(&if s <= 2 { &benign0 } else { &s0.harmful }.batch(idx), 0, 32, &m)
    };
    let direct0 = benign_then_harmful(&m, trajs[0].attack.lr, 2, steps, pick0);
    let diff0 = max_diff(&formed(&trajs[0]), &direct0[steps - 1].params);
    let pick1 = |_: usize| Batch::new(&streams[1].harmful.batch(2), 0, 32, &m);
    let direct1 = benign_then_harmful(&m, worker1.attack.lr, 0, 1, pick1);
    let diff1 = max_diff(&formed(after_one.as_ref().unwrap()), &direct1[0].params);
    println!("parallel benign-first trajectories vs direct: worker 0 {diff0:e}, worker 1 {diff1:e}");
    assert!(diff0 < 1e-5 && diff1 < 1e-5, "{diff0} {diff1}");
    assert_ne!(
        streams[0].benign_attack.as_ref().unwrap().seed,
        streams[1].benign_attack.as_ref().unwrap().seed,
        "each worker has its own benign stream"
    );
}

/// Sampling and validation: at share 0.5 about half the full-parameter attacks of 400 outer
/// steps get a benign phase of a listed length, LoRA attacks never do; a phase that leaves no
/// harmful step, a share outside [0, 1] and the meta-gradient correction are refused naming
/// the field.
#[test]
fn benign_phases_are_sampled_at_their_share_and_bad_settings_are_refused() {
    let mut c = benign_first_cfg(0.5);
    c.attack.benign_first = BenignFirst { share: 0.5, steps: vec![1, 3], prepend: false };
    c.attack.lora = Some(LoraAttacks { share: 0.25, ranks: vec![2], lrs: vec![2e-2], ..Default::default() });
    let sampled: Vec<_> = (0..400).map(|t| sample_attack(&c, t, 0)).collect();
    let full = sampled.iter().filter(|a| a.lora.is_none()).count();
    let with: Vec<usize> = sampled.iter().filter(|a| a.benign_steps > 0).map(|a| a.benign_steps).collect();
    println!("benign phases in {} full-parameter attacks of 400 at share 0.5: {}", full, with.len());
    assert!((full as f64 * 0.4..=full as f64 * 0.6).contains(&(with.len() as f64)), "{} of {full}", with.len());
    assert!(with.iter().all(|&b| b == 1 || b == 3) && with.contains(&1) && with.contains(&3));
    assert!(sampled.iter().filter(|a| a.lora.is_some()).all(|a| a.benign_steps == 0));
    c.validate().unwrap();
    for (bf, meta, field) in [
        (BenignFirst { steps: vec![4], prepend: false, ..Default::default() }, 0, "attack.benign_first.steps"),
        (BenignFirst { share: 1.5, steps: vec![1], ..Default::default() }, 0, "attack.benign_first.share"),
        (BenignFirst { steps: vec![1], ..Default::default() }, 1, "meta_steps"),
    ] {
        let mut bad = benign_first_cfg(0.5);
        bad.attack.benign_first = bf;
        bad.meta_steps = meta;
        let e = bad.validate().unwrap_err().to_string();
        assert!(e.contains(field), "{e}");
    }
    // `share = 0` turns the phases off: any steps, the meta-gradient allowed, no stream, no
    // phase drawn, attacks of K steps.
    let mut off = c.clone();
    off.attack.benign_first = BenignFirst { share: 0.0, steps: vec![], prepend: true };
    (off.meta_steps, off.attack.lora) = (1, None);
    off.validate().unwrap();
    assert!(off.attack.benign_phases().is_none() && Streams::new(&off, &data()).benign_attack.is_none());
    assert_eq!(off.max_attack_len(), off.k.max());
    assert!((0..200).all(|t| sample_attack(&off, t, 0).benign_steps == 0));
}

/// The default `[patcher]` is the tiny-tier study's recipe (docs/results.md sections 35-38):
/// the core method plus the look-alikes' term at ω = 4 and half the attacks prepending 16 or 32
/// benign steps; `PatcherConfig::core()` differs from it in those two settings only.
#[test]
fn the_default_is_the_core_method_plus_the_recipes_two_additions() {
    let d = PatcherConfig::default();
    assert_eq!(d.lookalike_weight, 4.0);
    assert_eq!(d.attack.benign_first, BenignFirst { share: 0.5, steps: vec![16, 32], prepend: true });
    assert_eq!((d.k.max(), d.inner.kind, d.beta, d.gamma, d.cap), (64, InnerKind::All, 2.0, 1.0, 4.0));
    d.validate().unwrap();
    assert_eq!(d.max_attack_len(), 64 + 32);
    let core = PatcherConfig::core();
    assert_eq!((core.lookalike_weight, core.attack.benign_phases()), (0.0, None));
    let mut back = core.clone();
    back.lookalike_weight = d.lookalike_weight;
    back.attack.benign_first = d.attack.benign_first.clone();
    assert_eq!(back, d);
}

/// A prepended benign phase (`prepend = true`, K = 2, b = 2): the attack is 2 benign steps then
/// K = 2 harmful ones with a fresh state (the same weights as the phase inside K = 4 above),
/// S and w(k) count the harmful steps only, and the sequential outer step's gradient is the
/// retain gradient plus `β·w(h)·∇L_tr` after harmful steps h = 1, 2 (inner steps 3, 4). Passes:
/// b + K + |S| + 1. A phase longer than K is accepted.
#[test]
fn a_prepended_benign_phase_keeps_k_harmful_steps_and_counts_s_over_them() {
    let m = model();
    let d = data();
    let mut c = benign_first_cfg(1.0);
    c.k = KSchedule::constant(2);
    c.attack.benign_first = BenignFirst { share: 1.0, steps: vec![2], prepend: true };
    c.validate().unwrap();
    assert_eq!(c.max_attack_len(), 4);
    let streams = Streams::new(&c, &d);
    let benign = streams.benign_attack.clone().unwrap();
    let a = sample_attack(&c, 0, 0);
    assert_eq!((a.benign_steps, a.prepend, a.len(2)), (2, true, 4));
    assert_eq!((1..=4).map(|k| a.counted_step(k)).collect::<Vec<_>>(), vec![None, None, Some(1), Some(2)]);
    let pick = |k: usize| {
        let stream = if k <= 2 { &benign } else { &streams.harmful };
        Batch::new(&stream.batch(k - 1), 0, 32, &m)
    };
    let direct = benign_then_harmful(&m, a.lr, 2, 4, pick);
    let mut st = state(&m);
    let stats = outer_step(&mut st, &m, &c, &d, &streams).unwrap();
    assert_eq!(stats.passes, 4 + 2 + 1);
    let exposed = neg_delta(&m.params, &st.model.params);
    let (_, mut g) = retain_grads(&m, &c, &streams, &d, 0);
    let selected = c.inner.steps(2);
    assert_eq!(selected.iter().map(|x| x.0).collect::<Vec<_>>(), vec![1, 2]);
    for (h, w) in selected {
        let at = &direct[2 + h - 1];
        let tb = Batch::new(&streams.refusal_tr.batch(2 + h - 1), 0, 32, at);
        add_scaled(&mut g, &loss_and_grads(at, &tb).1, c.beta * w);
    }
    let want: Vec<Tensor<2>> = g.into_iter().map(|x| x.unwrap()).collect();
    let diff = max_diff(&exposed, &want);
    println!("outer gradient with a prepended benign phase vs direct: {diff:e}");
    assert!(diff < 1e-5, "{diff}");
    c.attack.benign_first = BenignFirst { share: 1.0, steps: vec![5], prepend: true };
    c.validate().unwrap();
    assert_eq!(c.max_attack_len(), 7);
}

/// Parallel Patcher with a prepended phase (P = 1, K = 2, b = 2, θ frozen): no
/// tamper-resistance term during the phase (NaN TR loss at ages 1 and 2, finite at 3 and 4),
/// the offset after 3 outer steps equals the direct computation on the batches `t·(b + K) +
/// age`, and the trajectory restarts at age b + K.
#[test]
fn parallel_trajectories_with_a_prepended_phase_run_b_plus_k_steps() {
    let m = model();
    let d = data();
    let mut c = PatcherConfig { outer_lr: 0.0, ..benign_first_cfg(1.0) };
    c.k = KSchedule::constant(2);
    c.attack.benign_first = BenignFirst { share: 1.0, steps: vec![2], prepend: true };
    let base = Streams::new(&c, &d);
    let streams = vec![parallel_streams(&base, &c, 0)];
    let mut st = state(&m);
    let mut trajs = parallel::init_trajectories(&m, &c, 1).unwrap();
    let lr = trajs[0].attack.lr;
    let mut tr = vec![];
    let mut after_three = None;
    for s in 0..4 {
        tr.push(parallel::outer_step(&mut st, &mut trajs, &c, &d, &streams).unwrap().tr_loss);
        if s == 2 {
            after_three = Some(trajs[0].clone());
        }
    }
    assert!(tr[0].is_nan() && tr[1].is_nan() && tr[2].is_finite() && tr[3].is_finite(), "{tr:?}");
    assert_eq!(trajs[0].age, 0, "restarted at age b + K = 4");
    let benign = base.benign_attack.clone().unwrap();
    let pick = |s: usize| {
        let idx = (s - 1) * 4 + (s - 1);
        Batch::new(&if s <= 2 { &benign } else { &base.harmful }.batch(idx), 0, 32, &m)
    };
    let direct = benign_then_harmful(&m, lr, 2, 3, pick);
    let t = after_three.unwrap();
    let formed: Vec<Tensor<2>> = m.params.iter().zip(&t.offset).map(|(a, b)| a.clone() + b.clone()).collect();
    let diff = max_diff(&formed, &direct[2].params);
    println!("parallel trajectory with a prepended phase vs direct: {diff:e}");
    assert!(diff < 1e-5, "{diff}");
}
