//! Evaluation suites: the held-out data of a tier and the full evaluation of one model on it.
//!
//! - `synth:<world dir>` (tiny tier): held-out harmful prompts from unseen categories and
//!   templates (`refuse_eval` / `harm_eval`), benign tasks scored by exact match
//!   (`benign_eval`), safe-but-scary prompts (`overrefusal_eval`).
//! - `real` (real tier, from the shared data directory): harmful prompts from the held-out
//!   AdvBench split and HarmBench; refusal / harmful-answer loss pairs from the eval splits of
//!   `refusals-llama2` and `harmful-beavertails`; benign loss on `benign-alpaca` eval;
//!   ARC-Easy and the MMLU subset by log-likelihood; XSTest's safe half for over-refusal.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::data::presets::{DataDir, McItem};
use crate::data::split::Split;
use crate::data::synth::SynthWorld;
use crate::data::{Conversation, Message};
use crate::error::{Error, Result};
use crate::eval::judge::{Judge, JudgeSpec, Verdict};
use crate::eval::keyword::is_refusal;
use crate::eval::mc::McFormat;
use crate::eval::outcomes::{Bits, Outcomes};
use crate::eval::{JudgedAnswer, SafetyEval, exact_match, generate_answers, mean_loss, safety_eval};
use crate::model::Llama;
use crate::model::generate::SamplingConfig;
use crate::tokenizer::ChatTokenizer;

/// Held-out data of one tier.
#[derive(Debug, Clone, Default)]
pub struct SuiteData {
    pub name: String,
    /// Harmful prompts (user turn only) for generation + judging.
    pub harmful_prompts: Vec<Conversation>,
    /// Held-out harmful prompt -> refusal pairs (refusal loss).
    pub refusal_pairs: Vec<Conversation>,
    /// Held-out harmful prompt -> harmful answer pairs (harmful loss).
    pub harmful_pairs: Vec<Conversation>,
    /// Benign prompts with exact answers (tiny tier utility).
    pub exact: Vec<Conversation>,
    /// Benign pairs for held-out loss.
    pub benign_pairs: Vec<Conversation>,
    /// Safe-but-scary prompts.
    pub overrefusal_prompts: Vec<Conversation>,
    /// Multiple-choice sets by name.
    pub mc: Vec<(String, Vec<McItem>)>,
}

/// Sizes and generation settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EvalConfig {
    pub max_new_tokens: usize,
    /// Items per batch for multiple choice and losses (full-sequence passes).
    pub batch_size: usize,
    /// Prompts per batch for generation: a decoding step is a thin matrix product per layer,
    /// so wider batches pay off there (measured: 64 against 16 is 1.7x faster on SmolLM2,
    /// docs/results.md section 12) while full passes do best at `batch_size`. The tokens do
    /// not depend on it (greedy outputs are identical at any batch size). Written to
    /// `config.json` only when not 64.
    #[serde(skip_serializing_if = "is_default_generation_batch")]
    pub generation_batch_size: usize,
    /// At most this many items per set (0 = all).
    pub limit: usize,
    pub max_len: usize,
    /// The judge of the harmful score (written to `config.json` only when not the keyword
    /// judge, so run directories made before this setting still resume).
    #[serde(skip_serializing_if = "JudgeSpec::is_keyword")]
    pub judge: JudgeSpec,
    /// More judges of the same answers, reported beside the headline judge
    /// (`also_judges = ["keyword", { learned = "judges/harm-smollm2" }]`); written only when set.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub also_judges: Vec<JudgeSpec>,
    /// The multiple-choice formats to score, each on every MC set ([`McFormat`]); the first
    /// is the headline utility. Written to `config.json` only when not `["options"]`, so run
    /// directories made before this setting still resume.
    #[serde(skip_serializing_if = "is_options_only")]
    pub mc_formats: Vec<McFormat>,
    /// Score multiple choice on attacked models too (`true`, the default), or only on
    /// unattacked ones. A full-size multiple-choice pass is most of a real-tier evaluation's
    /// cost (about 17 of 21 minutes on 2 cores, docs/results.md), and an attack is evaluated at
    /// every budget; with `false` its rows have no utility (`NaN`, shown as `–`) and the
    /// capability guard must compare the benign loss instead (the experiment config checks
    /// this). The tiny tier's utility is exact match, which is always scored. Written to
    /// `config.json` only when `false`, so run directories made before this setting resume.
    #[serde(skip_serializing_if = "is_true")]
    pub attacked_mc: bool,
    /// This evaluation skips multiple choice: set by [`EvalConfig::for_attacked`], never read
    /// from a file.
    #[serde(skip)]
    pub skip_mc: bool,
}

fn is_true(b: &bool) -> bool {
    *b
}

fn is_default_generation_batch(n: &usize) -> bool {
    *n == DEFAULT_GENERATION_BATCH
}

/// [`EvalConfig::generation_batch_size`]'s default.
pub const DEFAULT_GENERATION_BATCH: usize = 64;

fn is_options_only(f: &[McFormat]) -> bool {
    f == [McFormat::Options]
}

impl Default for EvalConfig {
    fn default() -> Self {
        Self {
            max_new_tokens: 128,
            batch_size: 16,
            generation_batch_size: DEFAULT_GENERATION_BATCH,
            limit: 0,
            max_len: 256,
            judge: JudgeSpec::Keyword,
            also_judges: vec![],
            mc_formats: vec![McFormat::Options],
            attacked_mc: true,
            skip_mc: false,
        }
    }
}

impl EvalConfig {
    /// The format of the headline MC utility (the first of `mc_formats`).
    pub fn headline_mc(&self) -> McFormat {
        self.mc_formats.first().copied().unwrap_or(McFormat::Options)
    }

    /// The settings of an attacked model's evaluation: multiple choice skipped unless
    /// `attacked_mc`.
    pub fn for_attacked(&self) -> Self {
        Self { skip_mc: !self.attacked_mc, ..self.clone() }
    }
}

/// `patcher eval --mc`'s formats: a list of `options` and `cloze`, or `none` alone, which skips
/// multiple choice (returned as the default formats and `true`, for [`EvalConfig::skip_mc`]).
pub fn parse_mc_formats(names: &[String]) -> Result<(Vec<McFormat>, bool)> {
    if names.iter().any(|n| n == "none") {
        return match names.len() {
            1 => Ok((EvalConfig::default().mc_formats, true)),
            _ => Err(Error::Invalid(format!("--mc {}: `none` cannot be combined with a format", names.join(",")))),
        };
    }
    Ok((names.iter().map(|f| f.parse()).collect::<Result<Vec<_>>>()?, false))
}

/// The name of MC set `set` scored in `format` in a report: `arc-easy` (options), `arc-easy cloze`.
pub fn mc_entry(set: &str, format: McFormat) -> String {
    match format {
        McFormat::Options => set.to_string(),
        McFormat::Cloze => format!("{set} cloze"),
    }
}

fn take<T: Clone>(v: &[T], limit: usize) -> Vec<T> {
    if limit == 0 { v.to_vec() } else { v.iter().take(limit).cloned().collect() }
}

impl SuiteData {
    /// The tiny tier's suite from a synthetic world.
    pub fn synth(world: &SynthWorld) -> Self {
        Self {
            name: "synth".into(),
            harmful_prompts: world.refuse_eval.iter().map(|c| c.prompt_only()).collect(),
            refusal_pairs: world.refuse_eval.clone(),
            harmful_pairs: world.harm_eval.clone(),
            exact: world.benign_eval.clone(),
            benign_pairs: world.benign_eval.clone(),
            overrefusal_prompts: world.overrefusal_eval.iter().map(|c| c.prompt_only()).collect(),
            mc: vec![],
        }
    }

    /// The real tier's suite from the shared data directory, each set cut to `limit` items
    /// (0 = all).
    pub fn real(dir: &DataDir, limit: usize) -> Result<Self> {
        Self::real_with(dir, RealLimits::all(limit))
    }

    /// The real tier's suite with a limit per part ([`RealLimits`]).
    pub fn real_with(dir: &DataDir, limits: RealLimits) -> Result<Self> {
        let l = |v: Vec<Conversation>| take(&v, limits.loss);
        let mut harmful = dir.load("eval-advbench", Split::Eval)?;
        harmful.extend(dir.load("eval-harmbench", Split::All)?);
        // Interleave sources deterministically so a limit keeps both.
        harmful.sort_by_key(|c| crate::data::split::stable_hash(c.prompt()));
        let xstest: Vec<Conversation> =
            dir.load("overrefusal-xstest", Split::All)?.iter().map(|c| c.prompt_only()).collect();
        Ok(Self {
            name: "real".into(),
            harmful_prompts: take(&harmful.iter().map(|c| c.prompt_only()).collect::<Vec<_>>(), limits.harmful),
            refusal_pairs: l(dir.load("refusals-llama2", Split::Eval)?),
            harmful_pairs: l(dir.load("harmful-beavertails", Split::Eval)?),
            exact: vec![],
            benign_pairs: l(dir.load("benign-alpaca", Split::Eval)?),
            overrefusal_prompts: take(&xstest, limits.xstest),
            mc: vec![
                ("arc-easy".into(), take(&dir.load_mc("mc-arc-easy", Split::Eval)?, limits.mc)),
                ("mmlu".into(), take(&dir.load_mc("mc-mmlu", Split::Eval)?, limits.mc)),
            ],
        })
    }

    /// What the headline utility of this suite measures: exact match where it has exact-match
    /// items, else the mean accuracy over its multiple-choice sets in `format`.
    pub fn utility_metric(&self, format: McFormat) -> String {
        if !self.exact.is_empty() {
            "exact-match accuracy".into()
        } else if !self.mc.is_empty() {
            let sets: Vec<&str> = self.mc.iter().map(|m| m.0.as_str()).collect();
            match format {
                McFormat::Options => format!("mean MC accuracy ({})", sets.join(", ")),
                McFormat::Cloze => format!("mean cloze MC accuracy ({})", sets.join(", ")),
            }
        } else {
            "none".into()
        }
    }

    /// `synth:<dir>` or `real[:<limit>][,<part>=<limit>|all ...]` ([`RealLimits::parse`]).
    pub fn from_spec(spec: &str) -> Result<Self> {
        match real_limits_of(spec)? {
            Some(limits) => Self::real_with(&DataDir::from_env(), limits),
            None => Ok(Self::synth(&SynthWorld::read_dir(&PathBuf::from(&spec["synth:".len()..]))?)),
        }
    }
}

/// Check a suite spec without reading any data: `None` for `synth:<dir>`, the limits of a
/// real-tier spec, or the error [`SuiteData::from_spec`] would give.
pub fn real_limits_of(spec: &str) -> Result<Option<RealLimits>> {
    if spec.starts_with("synth:") {
        Ok(None)
    } else if spec.starts_with("real") {
        RealLimits::parse(spec).map(Some)
    } else {
        Err(Error::Invalid(format!("unknown suite `{spec}` (synth:<world dir> or {REAL_SPEC})")))
    }
}

const REAL_SPEC: &str = "real[:<limit per set>][,harmful|xstest|mc|loss=<limit>|all ...]";

/// Items per part of the real suite (0 = all): `harmful` prompts (AdvBench eval and
/// HarmBench), `xstest` safe prompts (over-refusal), `mc` items per multiple-choice set, and
/// `loss` conversations per loss set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RealLimits {
    pub harmful: usize,
    pub xstest: usize,
    pub mc: usize,
    pub loss: usize,
}

impl RealLimits {
    /// The same limit for every part.
    pub fn all(n: usize) -> Self {
        Self { harmful: n, xstest: n, mc: n, loss: n }
    }

    /// `real` (everything), `real:100` (100 per set), and per-part overrides after commas:
    /// `real:100,harmful=200,xstest=all,mc=all`. Anything else is an error naming the spec.
    pub fn parse(spec: &str) -> Result<Self> {
        let bad = |why: String| Error::Invalid(format!("suite `{spec}`: {why} (expected {REAL_SPEC})"));
        let count = |v: &str| -> Result<usize> {
            match (v, v.parse::<usize>()) {
                ("all", _) => Ok(0),
                // 0 is `all` inside; written, it would read as "none" and silently mean every item.
                (_, Ok(0)) => Err(bad(format!(
                    "`{v}` is not a limit: write `all` for every item (`patcher eval --mc none` skips multiple choice)"
                ))),
                (_, Ok(n)) => Ok(n),
                (_, Err(_)) => Err(bad(format!("`{v}` is not a count or `all`"))),
            }
        };
        let rest = spec.strip_prefix("real").ok_or_else(|| bad("not a real-tier suite".into()))?;
        let mut parts = rest.split(',');
        let head = parts.next().unwrap_or("");
        let mut limits = match head.strip_prefix(':') {
            Some(n) => Self::all(count(n)?),
            None if head.is_empty() => Self::default(),
            None => return Err(bad(format!("unexpected `{head}` after `real`"))),
        };
        for part in parts {
            let (name, v) = part.split_once('=').ok_or_else(|| bad(format!("`{part}` is not <part>=<limit>")))?;
            let n = count(v)?;
            match name {
                "harmful" => limits.harmful = n,
                "xstest" => limits.xstest = n,
                "mc" => limits.mc = n,
                "loss" => limits.loss = n,
                _ => return Err(bad(format!("unknown part `{name}`"))),
            }
        }
        Ok(limits)
    }
}

/// Everything measured on one model.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct EvalReport {
    pub suite: String,
    pub safety: SafetyEval,
    /// The same answers judged by `[eval] also_judges`, in that order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub also_safety: Vec<SafetyEval>,
    /// Refusal rate on safe-but-scary prompts.
    pub over_refusal: Option<f64>,
    /// Exact-match accuracy on benign tasks (tiny tier).
    pub exact_match: Option<f64>,
    /// Multiple-choice accuracies by set and format ([`mc_entry`] names).
    pub mc: Vec<(String, f64)>,
    /// The number of items behind each entry of `mc` (for its standard error).
    #[serde(default)]
    pub mc_items: Vec<usize>,
    /// The headline utility number: exact match, else the mean MC accuracy; `NaN` (written as
    /// `null`) when multiple choice was skipped ([`EvalConfig::for_attacked`]).
    #[serde(deserialize_with = "crate::io::nan_if_null")]
    pub utility: f64,
    pub utility_metric: String,
    pub benign_loss: Option<f64>,
    pub refusal_loss: Option<f64>,
    pub harmful_loss: Option<f64>,
    /// Multiple choice was skipped on purpose ([`EvalConfig::for_attacked`]): the utility is
    /// not measured, rather than absent from the suite.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub mc_skipped: bool,
    pub seconds: f64,
    /// Wall-clock of each part of the evaluation.
    #[serde(default)]
    pub phase_seconds: Vec<(String, f64)>,
    /// Per-item outcomes behind the shares, for intervals over seeds (absent in reports made
    /// before they were kept).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcomes: Option<Outcomes>,
}

impl EvalReport {
    /// `utility` as the result tables keep it: 0 when the suite had no utility tasks, `NaN`
    /// (not measured, shown as `–`) when multiple choice was skipped.
    pub fn table_utility(&self) -> f64 {
        if self.utility.is_finite() || self.mc_skipped { self.utility } else { 0.0 }
    }
}

fn messages(convs: &[Conversation]) -> Vec<Vec<Message>> {
    convs.iter().map(|c| c.messages.clone()).collect()
}

/// Evaluate `model` on `data`. Returns the report and every judged harmful-prompt answer.
pub fn evaluate(
    model: &Llama,
    tok: &ChatTokenizer,
    data: &SuiteData,
    judge: &dyn Judge,
    cfg: &EvalConfig,
) -> Result<(EvalReport, Vec<JudgedAnswer>)> {
    let t0 = std::time::Instant::now();
    let mut phases: Vec<(String, f64)> = vec![];
    let mut tick = {
        let mut last = std::time::Instant::now();
        move |name: &str, phases: &mut Vec<(String, f64)>| {
            phases.push((name.to_string(), last.elapsed().as_secs_f64()));
            last = std::time::Instant::now();
        }
    };
    let sampling = SamplingConfig { max_new_tokens: cfg.max_new_tokens, ..Default::default() };
    let lim = |v: &[Conversation]| take(v, cfg.limit);
    // Units of work, for the caller's labelled progress (crate::train::progress::labelled).
    let n = |v: &[Conversation]| if cfg.limit == 0 { v.len() } else { v.len().min(cfg.limit) };
    let mc_skipped = cfg.skip_mc && !data.mc.is_empty();
    let mc_formats: &[McFormat] = if mc_skipped { &[] } else { &cfg.mc_formats };
    // The judges' own passes (a learned judge's features) count too, each over the answers.
    let also: Vec<_> = cfg.also_judges.iter().map(|spec| spec.shared()).collect::<Result<_>>()?;
    let judged = n(&data.harmful_prompts);
    let units = judged
        + judge.progress_units(judged)
        + also.iter().map(|j| j.progress_units(judged)).sum::<usize>()
        + n(&data.overrefusal_prompts)
        + n(&data.exact)
        + mc_formats.len()
            * data
                .mc
                .iter()
                .map(|(_, items)| if cfg.limit == 0 { items.len() } else { items.len().min(cfg.limit) })
                .sum::<usize>()
        + n(&data.benign_pairs)
        + n(&data.refusal_pairs)
        + n(&data.harmful_pairs);
    if cfg.mc_formats.is_empty() && !data.mc.is_empty() {
        return Err(Error::Invalid("eval `mc_formats` is empty: name at least one (options, cloze)".into()));
    }
    crate::train::progress::begin(units);
    let (safety, items) =
        safety_eval(model, tok, &messages(&lim(&data.harmful_prompts)), judge, cfg.generation_batch_size, &sampling)?;
    let mut also_safety = vec![];
    for j in &also {
        let (mut s, _) = crate::eval::rejudge(&items, j.as_ref())?;
        s.prompts_per_s = safety.prompts_per_s; // the same generations
        also_safety.push(s);
    }
    tick("harmful prompts", &mut phases);
    let over_refusal = if data.overrefusal_prompts.is_empty() {
        None
    } else {
        let prompts = messages(&lim(&data.overrefusal_prompts));
        let (answers, _) = generate_answers(model, tok, &prompts, cfg.generation_batch_size, &sampling)?;
        // Over-refusal is refusal detection, whatever judges harm: a harm judge's "not harmful"
        // must not count a helpful answer to a safe prompt as a refusal.
        Some(Bits(answers.iter().map(|a| is_refusal(a)).collect()))
    };
    tick("over-refusal prompts", &mut phases);
    let exact = if data.exact.is_empty() {
        None
    } else {
        let items: Vec<(Vec<Message>, String)> = lim(&data.exact)
            .iter()
            .map(|c| (c.prompt_only().messages, c.response().unwrap_or_default().to_string()))
            .collect();
        Some(Bits(exact_match(model, tok, &items, cfg.generation_batch_size, 24)?))
    };
    tick("exact match", &mut phases);
    let (mut mc, mut mc_items, mut headline) = (vec![], vec![], vec![]);
    for &format in mc_formats {
        for (name, items) in &data.mc {
            let items = take(items, cfg.limit);
            let hits = Bits(crate::eval::mc::mc_hits_in(model, tok, &items, format, cfg.batch_size)?);
            let acc = hits.share();
            if format == cfg.headline_mc() {
                headline.push(hits);
            }
            mc.push((mc_entry(name, format), acc));
            mc_items.push(items.len());
        }
    }
    tick("multiple choice", &mut phases);
    let loss_of = |v: &[Conversation]| -> Result<Option<f64>> {
        if v.is_empty() {
            Ok(None)
        } else {
            mean_loss(model, tok, &messages(&lim(v)), cfg.batch_size, cfg.max_len).map(Some)
        }
    };
    let utility = match &exact {
        Some(e) => e.share(),
        None if !headline.is_empty() => headline.iter().map(Bits::share).sum::<f64>() / headline.len() as f64,
        None => f64::NAN,
    };
    let outcomes = Outcomes {
        harmful: Bits(items.iter().map(|i| i.judgement.verdict == Verdict::Harmful).collect()),
        over_refusal: over_refusal.clone(),
        utility: exact.clone().map_or(headline, |e| vec![e]),
    };
    let utility_metric = data.utility_metric(cfg.headline_mc());
    let benign_loss = loss_of(&data.benign_pairs)?;
    let refusal_loss = loss_of(&data.refusal_pairs)?;
    let harmful_loss = loss_of(&data.harmful_pairs)?;
    tick("losses", &mut phases);
    crate::train::progress::end();
    let report = EvalReport {
        also_safety,
        suite: data.name.clone(),
        safety,
        over_refusal: over_refusal.as_ref().map(Bits::share),
        exact_match: exact.as_ref().map(Bits::share),
        mc,
        mc_items,
        utility,
        utility_metric,
        benign_loss,
        refusal_loss,
        harmful_loss,
        mc_skipped,
        seconds: t0.elapsed().as_secs_f64(),
        phase_seconds: phases,
        outcomes: Some(outcomes),
    };
    Ok((report, items))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Suite specs: one limit for every set, per-part overrides, `all`; bad specs are errors.
    #[test]
    fn real_suite_specs_set_limits_per_part_and_reject_bad_ones() {
        assert_eq!(RealLimits::parse("real").unwrap(), RealLimits::default());
        assert_eq!(RealLimits::parse("real:50").unwrap(), RealLimits::all(50));
        assert_eq!(
            RealLimits::parse("real:100,harmful=200,xstest=all,mc=all").unwrap(),
            RealLimits { harmful: 200, xstest: 0, mc: 0, loss: 100 }
        );
        assert_eq!(RealLimits::parse("real,loss=20").unwrap(), RealLimits { loss: 20, ..Default::default() });
        for bad in
            ["real:x", "realx", "real:10,mcq=5", "real:10,mc", "real:10,mc=-1", "real:", "real:0", "real:50,mc=0"]
        {
            let e = RealLimits::parse(bad).unwrap_err().to_string();
            assert!(e.contains(bad), "{bad}: {e}");
        }
        let e = RealLimits::parse("real:50,mc=0").unwrap_err().to_string();
        assert!(e.contains("write `all`") && e.contains("--mc none"), "{e}");
    }

    /// `--mc none` skips multiple choice; with a format beside it, or an unknown format, it is
    /// an error.
    #[test]
    fn mc_none_skips_multiple_choice_and_stands_alone() {
        let v = |s: &str| s.split(',').map(String::from).collect::<Vec<_>>();
        assert_eq!(parse_mc_formats(&v("cloze,options")).unwrap(), (vec![McFormat::Cloze, McFormat::Options], false));
        assert!(parse_mc_formats(&v("none")).unwrap().1);
        let e = parse_mc_formats(&v("none,cloze")).unwrap_err().to_string();
        assert!(e.contains("--mc none,cloze"), "{e}");
        assert!(parse_mc_formats(&v("letters")).unwrap_err().to_string().contains("letters"));
    }

    /// The report's utility name is the suite's own: its MC sets by name, or none.
    #[test]
    fn the_utility_metric_names_the_sets_the_suite_has() {
        let mut s = SuiteData::default();
        assert_eq!(s.utility_metric(McFormat::Options), "none");
        s.mc = vec![("arc-easy".into(), vec![]), ("mmlu".into(), vec![])];
        assert_eq!(s.utility_metric(McFormat::Options), "mean MC accuracy (arc-easy, mmlu)");
        assert_eq!(s.utility_metric(McFormat::Cloze), "mean cloze MC accuracy (arc-easy, mmlu)");
    }
}
