//! The SFT recipe as a soup (`[align.soup]`) on the tiny tier: the released model is
//! b·θ_start + (1 − b)·mean(θ_seed), recomputed here from plain alignment runs of each seed, and
//! a run killed inside a member resumes to the same weights.

mod common;

use burn::prelude::*;
use patcher::align::soup::{SoupConfig, member_dir};
use patcher::align::{AlignConfig, align};
use patcher::determinism::max_abs_diff as max_diff;
use patcher::io::hf::{load_model, params_to_vecs};
use patcher::model::Llama;
use patcher::train::batches::BatchConfig;
use patcher::train::engine::{RunOptions, TrainConfig};

fn plain(seed: u64) -> AlignConfig {
    AlignConfig {
        train: TrainConfig {
            steps: 16,
            lr: 1e-3,
            seed,
            checkpoint_every: 5,
            batch: BatchConfig { batch_size: 16, max_len: 96, bucket_window: 1 },
            ..Default::default()
        },
        ..Default::default()
    }
}

#[test]
fn the_soup_is_the_interpolated_mean_of_its_seeds_and_resumes() {
    let device = Device::flex();
    let mdir = common::tiny_model_dir();
    let base = load_model(&mdir, &device).unwrap();
    let tok = patcher::tokenizer::ChatTokenizer::from_dir(&mdir).unwrap();
    let w = common::world();
    let root = common::tempdir("align-soup");
    let run =
        |cfg: &AlignConfig, opts: RunOptions| align(&base, &tok, cfg, &w.refuse_train, &w.benign_train, opts).unwrap();

    let soup_cfg = AlignConfig { soup: SoupConfig { seeds: vec![3, 7], base_weight: 0.25 }, ..plain(0) };
    let dir = root.join("soup");
    let soup = run(&soup_cfg, RunOptions { out_dir: Some(dir.clone()), ..Default::default() });

    // Direct computation: 0.25·θ_start + 0.375·θ_3 + 0.375·θ_7, from plain runs of each seed.
    let m3 = run(&plain(3), RunOptions::default());
    let m7 = run(&plain(7), RunOptions::default());
    let moved = max_diff(&m3, &m7);
    println!("max |θ_3 - θ_7| = {moved:.2e} (the seeds give different models)");
    assert!(moved > 1e-3, "the two seeds should train different models ({moved:.2e})");
    let (b, a, c) = (params_to_vecs(&base.params), params_to_vecs(&m3.params), params_to_vecs(&m7.params));
    let got = params_to_vecs(&soup.params);
    let mut worst = 0f64;
    for (i, g) in got.iter().enumerate() {
        for (j, x) in g.iter().enumerate() {
            let want = 0.25 * b[i][j] as f64 + 0.375 * a[i][j] as f64 + 0.375 * c[i][j] as f64;
            worst = worst.max((*x as f64 - want).abs());
        }
    }
    println!("max |soup - direct interpolated mean| = {worst:.2e}");
    assert!(worst <= 1e-6, "soup differs from the direct computation by {worst:.2e}");
    let rec: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("soup.json")).unwrap()).unwrap();
    assert_eq!(rec["seeds"], serde_json::json!([3, 7]));
    assert_eq!(rec["weights"], serde_json::json!([0.25, 0.375, 0.375]));
    for s in [3, 7] {
        assert!(member_dir(&dir, s).join("metrics.jsonl").exists(), "member {s} logs in its own directory");
    }

    // Killed inside the first member (step 12; its last checkpoint is at 10), then rerun: the same
    // soup, and the member's log shows it resumed rather than restarted.
    let kdir = root.join("killed");
    let killed: Llama =
        run(&soup_cfg, RunOptions { out_dir: Some(kdir.clone()), stop_after: Some(12), ..Default::default() });
    assert!(!kdir.join("soup.json").exists(), "no soup before its members are done");
    assert!(max_diff(&killed, &soup) > 1e-3, "the stopped run returns the member as it stands");
    let resumed = run(&soup_cfg, RunOptions { out_dir: Some(kdir.clone()), ..Default::default() });
    let d = max_diff(&resumed, &soup);
    println!("max |resumed soup - uninterrupted soup| = {d:.2e}");
    assert!(d <= 1e-6, "resumed soup differs by {d:.2e}");
    let log = std::fs::read_to_string(member_dir(&kdir, 3).join("metrics.jsonl")).unwrap();
    let steps: Vec<u64> = log
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v["step"].as_u64())
        .collect();
    // Steps 1-12 before the kill, then 11-16 from the checkpoint at 10 (a restart would log 1-16).
    let want: Vec<u64> = (1..=12).chain(11..=16).collect();
    assert_eq!(steps, want, "member 3 resumed from its checkpoint rather than restarting");
    std::fs::remove_dir_all(&root).ok();
}
