//! The fine-tuning engine on a tiny random model: loss goes down, a killed-and-resumed run
//! reaches the same weights as an uninterrupted one, LoRA trains only the adapters, and a
//! non-finite loss stops the run naming the step.

use std::path::PathBuf;

use burn::prelude::*;
use patcher::model::LlamaConfig;
use patcher::model::llama::{Llama, to_vec_f32};
use patcher::rng::Rng;
use patcher::train::batches::{BatchConfig, Mixture};
use patcher::train::engine::{RunOptions, TrainConfig, TrainState, run};
use patcher::train::lora::LoraConfig;
use patcher::train::step::Example;

fn cfg() -> LlamaConfig {
    patcher::testing::micro_config_sized(32, 32, false)
}

/// Sequences with learnable structure: a prompt then its reversal as the "answer".
fn data(seed: u64) -> Vec<Example> {
    let mut r = Rng::new(seed);
    (0..64)
        .map(|_| {
            let n = 3 + r.below(4);
            let p: Vec<u32> = (0..n).map(|_| 3 + r.below(29) as u32).collect();
            let mut ids = vec![1];
            ids.extend(&p);
            ids.push(2);
            ids.extend(p.iter().rev());
            let mask = ids.iter().enumerate().map(|(i, _)| u8::from(i > n + 1)).collect();
            Example { ids, mask }
        })
        .collect()
}

fn tmp(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("patcher-engine-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn train_cfg() -> TrainConfig {
    TrainConfig {
        steps: 12,
        lr: 3e-3,
        batch: BatchConfig { batch_size: 4, max_len: 32, bucket_window: 2 },
        grad_accum: 2,
        seed: 9,
        checkpoint_every: 5,
        ..Default::default()
    }
}

#[test]
fn resumed_run_equals_uninterrupted_run() {
    let device = Device::flex();
    let model = Llama::init(cfg(), 0.1, 3, &device);
    let tc = train_cfg();
    let mix = Mixture::single("rev", data(1), tc.batch.clone(), tc.seed);
    let mut full_losses = vec![];
    let mut record = |_: &TrainState, s: &patcher::train::engine::StepStats| {
        full_losses.push((s.step, s.loss));
        Ok(())
    };
    let opts = RunOptions { on_step: Some(&mut record), ..Default::default() };
    let full = run(TrainState::new(model.clone(), &tc).unwrap(), &tc, &mix, 0, opts).unwrap();
    assert_eq!(full_losses.iter().map(|s| s.0).collect::<Vec<_>>(), (1..=12).collect::<Vec<_>>());

    let dir = tmp("resume");
    // Killed after step 7: the last checkpoint is step 5 (checkpoint_every = 5), steps 6-7 are lost.
    let opts = RunOptions { out_dir: Some(dir.clone()), stop_after: Some(7), ..Default::default() };
    let partial = run(TrainState::new(model.clone(), &tc).unwrap(), &tc, &mix, 0, opts).unwrap();
    assert_eq!(partial.step, 7);
    let latest = std::fs::read_to_string(dir.join("latest.json")).unwrap();
    assert!(latest.contains("ckpt-000005"), "{latest}");
    let resumed = run(
        TrainState::new(model.clone(), &tc).unwrap(),
        &tc,
        &mix,
        0,
        RunOptions { out_dir: Some(dir.clone()), ..Default::default() },
    )
    .unwrap();
    assert_eq!(resumed.step, 12);
    let mut max = 0.0f32;
    for (a, b) in full.model.params.iter().zip(&resumed.model.params) {
        for (x, y) in to_vec_f32(a.clone()).iter().zip(to_vec_f32(b.clone())) {
            max = max.max((x - y).abs());
        }
    }
    println!("resume vs uninterrupted: max |weight difference| = {max:e}");
    assert!(max < 1e-6, "resumed weights differ by {max}");
    // The log of the killed run (steps 1-7) and of the resumed one (6-12: the steps lost with
    // the kill are redone) holds, at every step, the uninterrupted run's loss.
    let logged: Vec<(usize, f64)> = std::fs::read_to_string(dir.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            (v["step"].as_u64().unwrap() as usize, v["loss"].as_f64().unwrap())
        })
        .collect();
    let steps: Vec<usize> = logged.iter().map(|s| s.0).collect();
    assert_eq!(steps, [(1..=7).collect::<Vec<_>>(), (6..=12).collect()].concat(), "logged steps");
    let mut max_loss = 0.0f64;
    for &(step, loss) in &logged {
        max_loss = max_loss.max((loss - full_losses[step - 1].1).abs());
    }
    println!("resume vs uninterrupted: max |loss difference| over the logged steps = {max_loss:e}");
    assert!(max_loss < 1e-6, "logged losses differ from the uninterrupted run's by {max_loss}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn loss_decreases_and_lora_trains_only_adapters() {
    let device = Device::flex();
    let model = Llama::init(cfg(), 0.1, 3, &device);
    let mut tc = train_cfg();
    tc.steps = 60;
    tc.lr = 1e-2;
    tc.grad_accum = 1;
    let mix = Mixture::single("rev", data(2), tc.batch.clone(), tc.seed);
    let mut losses = vec![];
    let mut cb = |_: &TrainState, s: &patcher::train::engine::StepStats| {
        losses.push(s.loss);
        Ok(())
    };
    let opts = RunOptions { on_step: Some(&mut cb), ..Default::default() };
    run(TrainState::new(model.clone(), &tc).unwrap(), &tc, &mix, 0, opts).unwrap();
    let first: f64 = losses[..5].iter().sum::<f64>() / 5.0;
    let last: f64 = losses[55..].iter().sum::<f64>() / 5.0;
    assert!(last < first * 0.8, "loss {first:.3} -> {last:.3}");

    let lora_cfg = TrainConfig { lora: Some(LoraConfig { rank: 4, ..Default::default() }), steps: 10, ..tc.clone() };
    let st =
        run(TrainState::new(model.clone(), &lora_cfg).unwrap(), &lora_cfg, &mix, 0, RunOptions::default()).unwrap();
    // Base weights untouched.
    for (a, b) in model.params.iter().zip(&st.model.params) {
        assert_eq!(to_vec_f32(a.clone()), to_vec_f32(b.clone()));
    }
    let merged = st.merged();
    let specs = model.specs();
    for (i, s) in specs.iter().enumerate() {
        let changed = to_vec_f32(model.params[i].clone()) != to_vec_f32(merged.params[i].clone());
        let targeted = s.name.contains("q_proj") || s.name.contains("v_proj");
        assert_eq!(changed, targeted, "{}: changed={changed}", s.name);
    }
}

#[test]
fn non_finite_loss_stops_the_run_naming_the_step() {
    let device = Device::flex();
    let mut model = Llama::init(cfg(), 0.1, 3, &device);
    let [r, c] = model.params[0].dims();
    model.params[0] = Tensor::<2>::from_data(TensorData::new(vec![f32::NAN; r * c], [r, c]), &device);
    let tc = train_cfg();
    let mix = Mixture::single("rev", data(3), tc.batch.clone(), tc.seed);
    let dir = tmp("nan");
    let err = run(
        TrainState::new(model, &tc).unwrap(),
        &tc,
        &mix,
        0,
        RunOptions { out_dir: Some(dir.clone()), ..Default::default() },
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("step 1") && err.contains("not finite"), "{err}");
    assert!(!dir.join("latest.json").exists(), "no checkpoint may be written for a diverged run");
}
