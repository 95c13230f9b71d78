//! `patcher bench eval`: the throughput of a model's evaluation (issue 12, item 3).
//!
//! Runs the whole evaluation of [`crate::eval::suite::evaluate`] (keyword judge) and prints each
//! phase's seconds and items per second. With `reference_items > 0` it also times, in the same
//! run and on the same first items, the one-at-a-time paths that the batched ones replaced:
//! multiple choice scored item by item ([`crate::eval::mc::item_scores`], one context pass and
//! one continuation pass per option) and generation one prompt at a time with the KV cache,
//! and prints the batched path's speed-up over each.

use std::path::PathBuf;
use std::time::Instant;

use serde::Serialize;

use crate::eval::generate_answers;
use crate::eval::keyword::KeywordJudge;
use crate::eval::mc::{McFormat, item_scores, mc_accuracy_in};
use crate::eval::suite::{EvalConfig, SuiteData, evaluate};
use crate::model::generate::SamplingConfig;
use crate::tokenizer::ChatTokenizer;

/// What `patcher bench eval` measures.
#[derive(Debug, Clone)]
pub struct EvalBenchRequest {
    pub model: PathBuf,
    /// `real[:limit]` or `synth:<dir>`.
    pub suite: String,
    pub max_new_tokens: usize,
    /// Items per batch for multiple choice and losses.
    pub batch_size: usize,
    /// Prompts per batch for generation.
    pub generation_batch_size: usize,
    /// Items per MC set and format (and prompts) for the one-at-a-time comparison; 0 skips it.
    pub reference_items: usize,
}

/// One phase's timing.
#[derive(Debug, Clone, Serialize)]
pub struct PhaseTime {
    pub phase: String,
    pub seconds: f64,
}

/// A batched path against the one-at-a-time path it replaced, on the same items.
#[derive(Debug, Clone, Serialize)]
pub struct Comparison {
    pub what: String,
    pub items: usize,
    pub one_at_a_time_s: f64,
    pub batched_s: f64,
    pub speedup: f64,
}

/// The report: the whole evaluation's phases and the comparisons.
#[derive(Debug, Clone, Serialize)]
pub struct EvalBench {
    pub suite: String,
    pub max_new_tokens: usize,
    pub batch_size: usize,
    pub generation_batch_size: usize,
    pub phases: Vec<PhaseTime>,
    pub total_s: f64,
    pub comparisons: Vec<Comparison>,
}

/// Run the evaluation benchmark of `req`, handing each report line to `out`.
pub fn run(req: &EvalBenchRequest, device: &burn::prelude::Device, out: &mut dyn FnMut(String)) -> crate::Result<()> {
    let tok = ChatTokenizer::from_dir(&req.model)?;
    let model = crate::io::hf::load_model(&req.model, device)?;
    let data = SuiteData::from_spec(&req.suite)?;
    let cfg = EvalConfig {
        max_new_tokens: req.max_new_tokens,
        batch_size: req.batch_size,
        generation_batch_size: req.generation_batch_size,
        mc_formats: vec![McFormat::Options, McFormat::Cloze],
        ..Default::default()
    };
    out(format!(
        "evaluation of {} on {} ({} new tokens, batches of {} prompts for generation and {} items otherwise, keyword judge)",
        req.model.display(),
        req.suite,
        req.max_new_tokens,
        req.generation_batch_size,
        req.batch_size
    ));
    let (report, _) =
        crate::train::progress::labelled("bench eval", || evaluate(&model, &tok, &data, &KeywordJudge, &cfg))?;
    let phases: Vec<PhaseTime> =
        report.phase_seconds.iter().map(|(p, s)| PhaseTime { phase: p.clone(), seconds: *s }).collect();
    for p in &phases {
        out(format!("  {:<22} {:>8.1} s", p.phase, p.seconds));
    }
    out(format!("  {:<22} {:>8.1} s", "total", report.seconds));
    let mut comparisons = vec![];
    let n = req.reference_items;
    if n > 0 {
        for (name, items) in &data.mc {
            let items: Vec<_> = items.iter().take(n).cloned().collect();
            for format in [McFormat::Options, McFormat::Cloze] {
                let t0 = Instant::now();
                for item in &items {
                    item_scores(&model, &tok, item, format)?;
                }
                let one = t0.elapsed().as_secs_f64();
                let t0 = Instant::now();
                mc_accuracy_in(&model, &tok, &items, format, req.batch_size)?;
                let batched = t0.elapsed().as_secs_f64();
                comparisons.push(compare(
                    format!("multiple choice {name} {}", format.name()),
                    items.len(),
                    one,
                    batched,
                ));
            }
        }
        let prompts: Vec<_> = data.harmful_prompts.iter().take(n).map(|c| c.messages.clone()).collect();
        let sampling = SamplingConfig { max_new_tokens: req.max_new_tokens, ..Default::default() };
        let t0 = Instant::now();
        let one_by_one = generate_answers(&model, &tok, &prompts, 1, &sampling)?.0;
        let one = t0.elapsed().as_secs_f64();
        let t0 = Instant::now();
        let batched_answers = generate_answers(&model, &tok, &prompts, req.generation_batch_size, &sampling)?.0;
        let batched = t0.elapsed().as_secs_f64();
        let same = one_by_one.iter().zip(&batched_answers).filter(|(a, b)| a == b).count();
        out(format!("  greedy answers identical one at a time and batched: {same}/{}", prompts.len()));
        comparisons.push(compare("generation (harmful prompts)".into(), prompts.len(), one, batched));
        for c in &comparisons {
            out(format!(
                "  {:<34} {:>4} items: one at a time {:>7.1} s, batched {:>6.1} s -> {:.2}x",
                c.what, c.items, c.one_at_a_time_s, c.batched_s, c.speedup
            ));
        }
    }
    let bench = EvalBench {
        suite: req.suite.clone(),
        max_new_tokens: req.max_new_tokens,
        batch_size: req.batch_size,
        generation_batch_size: req.generation_batch_size,
        phases,
        total_s: report.seconds,
        comparisons,
    };
    out(serde_json::to_string(&bench).expect("json"));
    Ok(())
}

fn compare(what: String, items: usize, one: f64, batched: f64) -> Comparison {
    Comparison { what, items, one_at_a_time_s: one, batched_s: batched, speedup: one / batched.max(1e-9) }
}
