//! Parallel Patcher (DESIGN section 5): the K dependent inner steps of sequential Patcher are
//! spread over P workers that each carry one attack trajectory, so an outer step costs two
//! dependent forward/backward passes per worker instead of `K + |S| + 1`.
//!
//! Worker j owns an offset Δⱼ (its attacked weights are θ + Δⱼ), the state of its inner
//! optimizer, its sampled attack and an age aⱼ; ages start staggered over 0..K−1. Every outer
//! step each worker, in its own thread: forms θ + Δⱼ from the *current* θ (the offset is
//! transplanted onto the moving θ, an approximation), takes one attack step (updating Δⱼ and
//! aⱼ), and if aⱼ ∈ S adds `β·(K/P)·w(aⱼ)·∇L_tr(θ + Δⱼ)`; worker 0 also adds
//! `∇[L_ret + α·L_ref (+ ω·L_look)](θ)`. The contributions are summed by an all-reduce ([`Collective`]) and
//! one outer step is taken. A trajectory that reaches age K restarts (Δ = 0, fresh optimizer,
//! a newly sampled attack). A trajectory whose attack has a benign phase (`attack.benign_first`)
//! takes its first steps on benign batches and resets its optimizer state when the phase ends;
//! with `prepend` the phase comes before its K harmful steps (it restarts at age b + K, and its
//! ages count for S from the end of the phase).
//! The `K/P` factor makes the expected tamper-resistance weight per
//! outer step equal the sequential algorithm's (Σ_S w = 1); with P = 1 and K = 1 the two
//! algorithms coincide exactly (a test).
//!
//! LoRA attacks in the train-time distribution (`attack.lora`): a trajectory whose sampled
//! attack is LoRA carries adapters instead of an offset, and its attacked weights are the
//! adapters merged onto the *current* θ, `θ + s·BA` (the same transplant as an offset's); the
//! attacker's optimizer state is over the adapters. A restart draws new adapters from the new
//! attack's seed, as the sequential algorithm does.

use std::time::Instant;

use burn::prelude::*;
use serde::{Deserialize, Serialize};

use crate::defense::collective::{Collective, InProcess};
use crate::defense::patcher::{
    HardenOptions, OuterStats, PatcherConfig, PatcherData, SampledAttack, Streams, apply_outer, attack_batch, drive,
    inner_step, retain_grads, sample_attack, tr_grads,
};
use crate::error::{Error, Result};
use crate::model::Llama;
use crate::rng::Rng;
use crate::train::batches::Mixture;
use crate::train::checkpoint::Extra;
use crate::train::engine::TrainState;
use crate::train::lora::Lora;
use crate::train::optim::{self, OptimState};

/// One worker's attack trajectory.
#[derive(Debug, Clone)]
pub struct Trajectory {
    /// Δ: attacked weights minus the current θ (empty for a LoRA trajectory).
    pub offset: Vec<Tensor<2>>,
    /// A LoRA trajectory's adapters (merged onto the current θ); `None`: full-parameter.
    pub lora: Option<Lora>,
    /// The attacker's optimizer state (over the adapters for a LoRA trajectory).
    pub opt: OptimState,
    pub age: usize,
    pub attack: SampledAttack,
    /// Outer step at which this trajectory (re)started (selects its attack sample).
    pub started: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct TrajectoryMeta {
    age: usize,
    started: usize,
    optim_step: u64,
}

fn zeros_like(params: &[Tensor<2>]) -> Vec<Tensor<2>> {
    params.iter().map(|p| p.clone().inner().zeros_like()).collect()
}

/// A fresh trajectory of worker `j` started at outer step `t` and age `age`: a zero offset, or
/// new adapters when the sampled attack is LoRA.
fn fresh(theta: &Llama, cfg: &PatcherConfig, t: usize, j: usize, age: usize) -> Result<Trajectory> {
    let attack = sample_attack(cfg, t, j);
    let lora = attack.lora.as_ref().map(|(l, seed)| Lora::new(theta, l.clone(), *seed)).transpose()?;
    let (offset, n) = match &lora {
        Some(l) => (vec![], l.params.len()),
        None => (zeros_like(&theta.params), theta.params.len()),
    };
    Ok(Trajectory { offset, lora, opt: OptimState::new(n), age, attack, started: t })
}

/// Fresh, staggered trajectories: worker j starts at age ⌊j·K/P⌋.
pub fn init_trajectories(model: &Llama, cfg: &PatcherConfig, p: usize) -> Result<Vec<Trajectory>> {
    let k = cfg.k.k_at(0, cfg.outer_steps);
    (0..p).map(|j| fresh(model, cfg, 0, j, (j * k) / p)).collect()
}

/// Worker j's streams: worker 0 uses the sequential algorithm's streams (so P = 1 reproduces
/// it), others get independently seeded harmful and TR streams.
pub fn worker_streams(base: &Streams, cfg: &PatcherConfig, j: usize) -> Streams {
    if j == 0 {
        return base.clone();
    }
    let re = |m: &Mixture, name: &str| Mixture {
        seed: Rng::derive(cfg.seed, &format!("{name}/worker{j}")).next_u64(),
        ..m.clone()
    };
    Streams {
        retain: base.retain.clone(),
        lookalike: base.lookalike.clone(),
        refusal: base.refusal.clone(),
        refusal_tr: re(&base.refusal_tr, "refusal_tr"),
        harmful: re(&base.harmful, "harmful"),
        harmful_tr: re(&base.harmful_tr, "harmful_tr"),
        benign_attack: base.benign_attack.as_ref().map(|m| re(m, "benign_attack")),
    }
}

/// What one worker did in one outer step.
struct WorkerOut {
    harm_loss: f64,
    tr_loss: Option<(f64, f64)>,
    passes: usize,
}

/// One worker's share of outer step `t`: attack step, optional TR gradient, optional retain
/// gradient, then the all-reduce. Returns the summed gradient (identical on every worker).
#[allow(clippy::too_many_arguments)]
fn worker_step(
    j: usize,
    t: usize,
    theta: &Llama,
    traj: &mut Trajectory,
    cfg: &PatcherConfig,
    data: &PatcherData,
    streams: &Streams,
    p: usize,
    comm: &dyn Collective,
) -> (Vec<Option<Tensor<2>>>, WorkerOut, f64) {
    let k_total = cfg.k.k_at(t, cfg.outer_steps);
    // Batch index: the sequential algorithm's `t*stride + k - 1` when P = 1 and K = 1.
    let idx = t * cfg.max_attack_len() + traj.age;
    let max_len = cfg.attack.batch.max_len;
    let (attacked, harm_loss) = match &mut traj.lora {
        // One step of the adapters on the current θ, then θ + s·BA.
        Some(lora) => {
            let b = attack_batch(theta, streams, data, max_len, idx, false);
            let (l, g) = lora.loss_and_grads(theta, &b);
            optim::step(&traj.attack.optimizer, &mut traj.opt, &mut lora.params, &g, traj.attack.lr);
            (lora.merge(theta), l)
        }
        None => {
            // θ + Δ from the current θ.
            let mut attacked = theta.clone();
            for (a, d) in attacked.params.iter_mut().zip(&traj.offset) {
                *a = a.clone() + d.clone();
            }
            let before: Vec<Tensor<2>> = attacked.params.clone();
            let benign = traj.attack.benign_at(traj.age);
            let l = inner_step(&mut attacked, &mut traj.opt, &traj.attack, streams, data, max_len, idx, benign);
            if traj.attack.fresh_optimizer_after(traj.age + 1) {
                traj.opt = OptimState::new(theta.params.len());
            }
            // Δ ← Δ + (θ' − (θ + Δ)).
            for ((d, a), b) in traj.offset.iter_mut().zip(&attacked.params).zip(&before) {
                *d = d.clone() + (a.clone() - b.clone());
            }
            (attacked, l)
        }
    };
    traj.age += 1;
    let mut passes = 1;
    let mut g: Vec<Option<Tensor<2>>> = vec![None; theta.params.len()];
    let mut tr_loss = None;
    let counted = traj.attack.counted_step(traj.age);
    if let Some((_, w)) = counted.and_then(|h| cfg.inner.steps(k_total).into_iter().find(|(k, _)| *k == h)) {
        let (l_ref, _, gt) = tr_grads(&attacked, cfg, streams, data, idx);
        let scale = cfg.beta * w * k_total as f64 / p as f64;
        crate::train::step::add_scaled(&mut g, &gt, scale);
        tr_loss = Some((l_ref, w));
        passes += cfg.tr_passes();
    }
    let mut retain_loss = f64::NAN;
    if j == 0 {
        let (l, gr) = retain_grads(theta, cfg, streams, data, t);
        crate::train::step::add_scaled(&mut g, &gr, 1.0);
        retain_loss = l;
        passes += 1;
    }
    if traj.age >= traj.attack.len(k_total) {
        // Restart: fresh trajectory with a new attack sample (LoRA configs were validated with
        // the config, so drawing adapters cannot fail here).
        *traj = fresh(theta, cfg, t + 1, j, 0).expect("LoRA settings validated with the config");
    }
    let summed = comm.all_reduce_sum(j, g);
    (summed, WorkerOut { harm_loss, tr_loss, passes }, retain_loss)
}

/// One parallel outer step over all trajectories (one thread each). Mutates `state` and
/// `trajs`.
pub fn outer_step(
    state: &mut TrainState,
    trajs: &mut [Trajectory],
    cfg: &PatcherConfig,
    data: &PatcherData,
    streams: &[Streams],
) -> Result<OuterStats> {
    let t0 = Instant::now();
    let t = state.step;
    let p = trajs.len();
    let comm = InProcess::new(p);
    let theta = state.model.untracked();
    let results: Vec<(Vec<Option<Tensor<2>>>, WorkerOut, f64)> = std::thread::scope(|s| {
        let handles: Vec<_> = trajs
            .iter_mut()
            .enumerate()
            .map(|(j, traj)| {
                let (theta, comm, st) = (&theta, &comm, &streams[j]);
                s.spawn(move || worker_step(j, t, theta, traj, cfg, data, st, p, comm))
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("worker thread panicked")).collect()
    });
    let retain_loss = results[0].2;
    let g = results[0].0.clone();
    let harm_end = results.iter().map(|r| r.1.harm_loss).sum::<f64>() / p as f64;
    let trs: Vec<(f64, f64)> = results.iter().filter_map(|r| r.1.tr_loss).collect();
    let tr_loss = if trs.is_empty() { f64::NAN } else { trs.iter().map(|x| x.0).sum::<f64>() / trs.len() as f64 };
    let passes = results.iter().map(|r| r.1.passes).max().unwrap_or(0);
    // A step where no worker was in S has no TR loss: that is not a divergence.
    let tr_check = if trs.is_empty() { 0.0 } else { tr_loss };
    let (grad_norm, lr) = apply_outer(state, cfg, g, [retain_loss, tr_check, harm_end])?;
    Ok(OuterStats {
        step: state.step,
        k: cfg.k.k_at(t, cfg.outer_steps),
        retain_loss,
        tr_loss,
        harmful_loss_end: harm_end,
        grad_norm,
        lr,
        attack_optimizer: trajs[0].attack.optimizer.kind.to_string(),
        attack_variant: trajs[0].attack.variant(),
        attack_lr: trajs[0].attack.lr,
        passes,
        seconds: t0.elapsed().as_secs_f64(),
    })
}

fn save_trajectories(trajs: &[Trajectory]) -> Extra {
    let mut tensors = vec![];
    let mut meta = vec![];
    for (j, tr) in trajs.iter().enumerate() {
        for (i, d) in tr.offset.iter().enumerate() {
            tensors.push((format!("w{j}/delta/{i}"), d.clone()));
        }
        for (i, a) in tr.lora.iter().flat_map(|l| &l.params).enumerate() {
            tensors.push((format!("w{j}/lora/{i}"), a.clone()));
        }
        for (i, m) in tr.opt.m.iter().enumerate() {
            if let Some(m) = m {
                tensors.push((format!("w{j}/m/{i}"), m.clone()));
            }
        }
        for (i, v) in tr.opt.v.iter().enumerate() {
            if let Some(v) = v {
                tensors.push((format!("w{j}/v/{i}"), v.clone()));
            }
        }
        meta.push(TrajectoryMeta { age: tr.age, started: tr.started, optim_step: tr.opt.step });
    }
    Extra { tensors, json: serde_json::to_value(meta).expect("json") }
}

/// The trajectories of a checkpoint. Each one's attack is re-drawn from its start step (a pure
/// function of the seed), which says whether it carries an offset or adapters (`theta` gives the
/// adapters' targets and shapes).
fn load_trajectories(extra: Extra, cfg: &PatcherConfig, theta: &Llama) -> Result<Vec<Trajectory>> {
    let meta: Vec<TrajectoryMeta> = serde_json::from_value(extra.json)
        .map_err(|e| Error::Invalid(format!("checkpoint: parallel trajectories: {e}")))?;
    let mut map: std::collections::HashMap<String, Tensor<2>> = extra.tensors.into_iter().collect();
    meta.iter()
        .enumerate()
        .map(|(j, m)| {
            let mut tr = fresh(theta, cfg, m.started, j, m.age)?;
            let mut take = |kind: &str, n: usize| {
                (0..n)
                    .map(|i| {
                        map.remove(&format!("w{j}/{kind}/{i}"))
                            .ok_or_else(|| Error::Invalid(format!("checkpoint: missing w{j}/{kind}/{i}")))
                    })
                    .collect::<Result<Vec<_>>>()
            };
            match &mut tr.lora {
                Some(l) => l.params = take("lora", l.params.len())?,
                None => tr.offset = take("delta", theta.params.len())?,
            }
            let n = tr.opt.m.len();
            tr.opt = OptimState {
                step: m.optim_step,
                m: (0..n).map(|i| map.remove(&format!("w{j}/m/{i}"))).collect(),
                v: (0..n).map(|i| map.remove(&format!("w{j}/v/{i}"))).collect(),
            };
            Ok(tr)
        })
        .collect()
}

struct Parallel<'a> {
    cfg: &'a PatcherConfig,
    data: &'a PatcherData,
    streams: Vec<Streams>,
    trajs: Vec<Trajectory>,
    /// The starting model (an O(1) clone): the adapters' shapes when a checkpoint is restored.
    start: Llama,
}

impl crate::train::driver::Method for Parallel<'_> {
    type Stats = OuterStats;

    fn step(&mut self, state: &mut TrainState) -> Result<OuterStats> {
        outer_step(state, &mut self.trajs, self.cfg, self.data, &self.streams)
    }
    fn save(&self) -> Extra {
        save_trajectories(&self.trajs)
    }
    fn restore(&mut self, extra: Extra) -> Result<()> {
        self.trajs = load_trajectories(extra, self.cfg, &self.start)?;
        Ok(())
    }

    fn describe(&self, st: &OuterStats) -> String {
        crate::defense::patcher::describe(st)
    }
}

/// Harden `model` with parallel Patcher over `p` workers.
pub fn harden(model: &Llama, cfg: &PatcherConfig, data: &PatcherData, p: usize, opts: HardenOptions) -> Result<Llama> {
    crate::defense::patcher::check_data(cfg, data)?;
    if p == 0 {
        return Err(Error::Invalid("--parallel must be >= 1".into()));
    }
    if let Some(what) = cfg.sequential_only() {
        return Err(Error::Invalid(format!("{what} is implemented for sequential Patcher only")));
    }
    let base = Streams::new(cfg, data);
    let mut method = Parallel {
        cfg,
        data,
        streams: (0..p).map(|j| worker_streams(&base, cfg, j)).collect(),
        trajs: init_trajectories(model, cfg, p)?,
        start: model.clone(),
    };
    drive(model, cfg, &(cfg, p), &format!("patcher x{p}"), &mut method, opts)
}
