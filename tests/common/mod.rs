//! Shared fixtures of the tiny-tier tests: the synthetic world and a tiny model pre-trained on
//! it, built once and cached under cargo's per-project temporary directory.

#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::OnceLock;

use burn::prelude::*;
use patcher::data::synth::{SynthConfig, SynthWorld, generate};
use patcher::tiny::TinyConfig;

pub fn world() -> SynthWorld {
    generate(&SynthConfig::default())
}

/// The pre-training recipe used by the tests: the demo's mix (mostly complying with harmful
/// requests), fewer steps (the robustness protocol's base model).
pub fn tiny_config() -> TinyConfig {
    patcher::experiment::robustness_study::base_config()
}

/// Directory of the cached pre-trained tiny model (built on first use, ~30 s on 2 cores).
pub fn tiny_model_dir() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| tiny_model_dir_for(&tiny_config())).clone()
}

/// Directory of a tiny model pre-trained with `cfg`, cached by the recipe's hash (built on
/// first use).
pub fn tiny_model_dir_for(cfg: &TinyConfig) -> PathBuf {
    let key = patcher::data::split::stable_hash(&format!(
        "{}{}{}",
        serde_json::to_string(cfg).unwrap(),
        env!("CARGO_PKG_VERSION"),
        // The base differs in its last bits with the reduction order (--deterministic).
        if patcher::model::fixed::fixed_order() { "fixed" } else { "" }
    ));
    let root = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let dir = root.join(format!("tiny-base-{key:016x}"));
    if !dir.join("config.json").exists() {
        let tmp = root.join(format!(".tiny-base-{key:016x}.{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&tmp);
        let t0 = std::time::Instant::now();
        patcher::tiny::build(&world(), cfg, &tmp, &Device::flex(), false).expect("tiny pre-training");
        eprintln!("built the cached tiny model in {:.1}s", t0.elapsed().as_secs_f64());
        if std::fs::rename(&tmp, &dir).is_err() {
            let _ = std::fs::remove_dir_all(&tmp); // another process won the race
        }
    }
    dir
}

pub fn tempdir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("patcher-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}
