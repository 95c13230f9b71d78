//! Test support shared by the unit and integration tests: the rule for an input that a test
//! needs and a checkout may lack (Chromium, the shared datasets, qemu).
//!
//! CI (`CI` set, as `.ci/run` is run) provides every such input, so there a missing one is a
//! failure that names it and says how CI provides it; elsewhere the test skips itself with a
//! printed note. A test that skips silently under CI could never fail.

/// Whether the tests run under CI (the `CI` environment variable is set).
pub fn ci() -> bool {
    std::env::var_os("CI").is_some()
}

/// `input` if present. If absent: panics under CI saying that `what` is missing and how CI
/// provides it (`ci_provides`); otherwise prints a skip note and returns `None`, and the test
/// returns early:
///
/// `let Some(bin) = require(chromium(), "chromium", ".ci/run installs it") else { return };`
#[track_caller]
pub fn require<T>(input: Option<T>, what: &str, ci_provides: &str) -> Option<T> {
    if input.is_some() {
        return input;
    }
    match on_missing(ci(), what, ci_provides) {
        Ok(skip) => println!("{skip}"),
        Err(failure) => panic!("{failure}"),
    }
    None
}

/// The shared data directory ([`DataDir::from_env`](crate::data::presets::DataDir::from_env)),
/// through [`require`]: `None` (a skip) where this checkout has none, a failure under CI.
#[track_caller]
pub fn shared_data() -> Option<crate::data::presets::DataDir> {
    use crate::data::presets::{DATA_DIR_ENV, DEFAULT_DATA_DIR, DataDir};
    let dir = DataDir::from_env();
    let what = format!("the shared data directory {}", dir.root().display());
    let ci_provides = format!("CI has the public datasets at {DEFAULT_DATA_DIR}; elsewhere set {DATA_DIR_ENV}");
    require(Some(dir).filter(DataDir::exists), &what, &ci_provides)
}

/// The rule itself: `Err(failure message)` under CI, else `Ok(skip note)`.
fn on_missing(ci: bool, what: &str, ci_provides: &str) -> Result<String, String> {
    if ci {
        Err(format!("CI is set but {what} is missing: {ci_provides}"))
    } else {
        Ok(format!("skipped: {what} is missing ({ci_provides}; with CI set this test fails)"))
    }
}

/// The micro Llama (vocabulary 24, width 16, 2 layers, grouped-query attention 4/2) that the
/// defenses' unit tests compare direct computations on.
pub fn micro_config() -> crate::model::LlamaConfig {
    micro_config_sized(24, 24, true)
}

/// A micro Llama of width 16, 2 layers, 4 query and 2 key/value heads, with the given
/// vocabulary, MLP width and head tying (the engine tests use 32, 32, untied).
pub fn micro_config_sized(vocab_size: usize, intermediate_size: usize, tied: bool) -> crate::model::LlamaConfig {
    crate::model::LlamaConfig {
        model_type: "llama".into(),
        vocab_size,
        hidden_size: 16,
        intermediate_size,
        num_layers: 2,
        num_heads: 4,
        num_kv_heads: 2,
        head_dim: 4,
        rms_norm_eps: 1e-5,
        rope_theta: 10_000.0,
        max_position_embeddings: 64,
        tie_word_embeddings: tied,
        qkv_bias: false,
        bos_token_id: None,
        eos_token_ids: vec![],
        pad_token_id: None,
        gemma: None,
    }
}

/// A seeded random micro model on the CPU with autodiff.
pub fn micro_model(seed: u64) -> crate::model::Llama {
    crate::model::Llama::init(micro_config(), 0.2, seed, &crate::device_from_name("cpu").expect("cpu"))
}

/// Toy conversations for one "role": 24 examples whose answers are the prompt shifted by
/// `shift` (loss mask on the answer).
pub fn micro_examples(seed: u64, shift: u32) -> Vec<crate::train::step::Example> {
    let mut r = crate::rng::Rng::new(seed);
    (0..24)
        .map(|_| {
            let n = 3 + r.below(3);
            let p: Vec<u32> = (0..n).map(|_| 3 + r.below(18) as u32).collect();
            let mut ids = vec![1];
            ids.extend(&p);
            ids.push(2);
            ids.extend(p.iter().map(|x| 3 + (x - 3 + shift) % 21));
            let mask = (0..ids.len()).map(|i| u8::from(i > n + 1)).collect();
            crate::train::step::Example { ids, mask }
        })
        .collect()
}

/// The three data sets of a defense on the micro model (retain, refusal, harmful roles).
pub fn micro_data() -> crate::defense::DefenseData {
    crate::defense::DefenseData {
        retain: micro_examples(1, 0),
        lookalike: vec![],
        refusal: micro_examples(2, 5),
        harmful: micro_examples(3, 11),
        pad_id: 0,
    }
}

/// Largest absolute element difference between two parameter lists (`None` = zero).
pub fn max_diff(a: &[Option<burn::prelude::Tensor<2>>], b: &[burn::prelude::Tensor<2>]) -> f64 {
    assert_eq!(a.len(), b.len(), "parameter counts differ");
    a.iter()
        .zip(b)
        .map(|(x, y)| {
            let x = x.clone().unwrap_or_else(|| y.zeros_like());
            (x - y.clone()).abs().max().into_scalar::<f32>() as f64
        })
        .fold(0.0, f64::max)
}

/// The resume check shared by the defenses' unit tests. `harden` runs once uninterrupted, then
/// into a fresh directory stopped after `stop` steps (as a killed run would be; the settings
/// must checkpoint every step), then again from that directory. Asserts that the checkpoint
/// left was at step `stop`, that the resumed run ends at the uninterrupted run's weights (max
/// |diff| < 1e-6) which moved from θ0 by more than `min_moved`, and that the metrics log holds
/// one line per step (`steps`): the log is appended to, so a run that restarted from θ0 instead
/// of resuming would leave `stop` lines too many.
pub fn assert_resumes(
    name: &str,
    model: &crate::model::Llama,
    steps: usize,
    stop: usize,
    min_moved: f64,
    harden: impl Fn(crate::defense::HardenOptions<'static>) -> crate::model::Llama,
) {
    use crate::defense::HardenOptions;
    let full = harden(HardenOptions::default());
    let dir = std::env::temp_dir().join(format!("patcher-{name}-resume-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let out = || Some(dir.clone());
    harden(HardenOptions { out_dir: out(), stop_after: Some(stop), ..Default::default() });
    let latest = std::fs::read_to_string(dir.join("latest.json")).expect("latest.json after the stopped run");
    let resumed = harden(HardenOptions { out_dir: out(), ..Default::default() });
    let log = std::fs::read_to_string(dir.join("metrics.jsonl")).expect("metrics.jsonl");
    let _ = std::fs::remove_dir_all(&dir);
    let full: Vec<_> = full.params.into_iter().map(Some).collect();
    let (d, moved) = (max_diff(&full, &resumed.params), max_diff(&full, &model.params));
    println!(
        "{name}: stopped after step {stop} of {steps}, resumed: max |weight diff| to the uninterrupted run {d:.3e} (it moved {moved:.3e} from θ0)"
    );
    assert!(latest.contains(&format!("\"step\":{stop}")), "{name}: latest checkpoint {latest}");
    assert_eq!(log.lines().count(), steps, "{name}: one metrics line per step:\n{log}");
    assert!(moved > min_moved && d < 1e-6, "{name}: resumed differs by {d}, moved {moved}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_present_input_is_returned() {
        assert_eq!(require(Some(3), "x", "y"), Some(3));
    }

    #[test]
    fn a_missing_input_fails_under_ci_and_skips_elsewhere_naming_it_and_its_provider() {
        let (what, how) = ("chromium", "apt-get install chromium");
        assert_eq!(
            on_missing(true, what, how),
            Err("CI is set but chromium is missing: apt-get install chromium".into())
        );
        let skip = on_missing(false, what, how).expect("a skip outside CI");
        assert!(skip.starts_with("skipped: chromium is missing (apt-get install chromium"), "{skip}");
    }
}
