//! `patcher judge train`: fit the learned harm judge's read-out ([`crate::eval::learned_judge`])
//! on the human-labelled answers of [`crate::data::judge_labels`].
//!
//! 1. Rows are split by group (question or behaviour) into `folds` folds: fold 0 is held out
//!    for the final report, fold 1 picks the L2 penalty, the rest trains.
//! 2. Degenerate answers are left out: the judge routes them to `Degenerate` before the
//!    read-out.
//! 3. Features of every row come from the frozen backbone, cached in `work` in chunks, so a
//!    killed run resumes where it stopped and a re-fit costs no forward pass.
//! 4. For each penalty a head is fitted on the training folds and scored (balanced accuracy)
//!    on fold 1; the best penalty is re-fitted on folds 1.. together and scored once on fold 0,
//!    next to the keyword judge on the same rows.
//! 5. In-domain rows, when given (hand-labelled answers of the kind the judge will score, e.g.
//!    SmolLM2's to AdvBench's training prompts), join the training rows only, never the
//!    held-out fold: their weight is chosen on their own fold 1.

use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::data::judge_labels::{LabelledAnswer, in_fold};
use crate::data::split::stable_hash;
use crate::error::{Error, IoContext, Result};
use crate::eval::keyword::{is_degenerate, is_refusal};
use crate::eval::learned_judge::{
    BackboneCheck, BinaryMetrics, FeatureSpec, HeldOut, JudgeFile, hidden_features, with_text_features,
};
use crate::eval::logistic::{FitOptions, LogisticHead, fit, fit_weighted};
use crate::model::Llama;
use crate::rng::Rng;
use crate::tokenizer::ChatTokenizer;

/// Settings of `patcher judge train`.
#[derive(Debug, Clone)]
pub struct TrainOptions {
    /// The backbone directory, written into `judge.json` as given.
    pub backbone: PathBuf,
    /// Where the feature cache goes.
    pub work: PathBuf,
    /// The feature settings (default: [`FeatureSpec::for_layers`] of the backbone).
    pub features: Option<FeatureSpec>,
    /// Keep at most this many Do-Not-Answer non-harmful answers, chosen by `seed` (0 = all):
    /// they are 5,441 of the 7,471 rows and mostly refusals, and each costs a forward pass.
    pub dna_negatives: usize,
    pub lambdas: Vec<f64>,
    /// Candidate weights of the in-domain rows (chosen on their fold 1).
    pub in_domain_weights: Vec<f64>,
    pub folds: u64,
    pub seed: u64,
    /// The command line, recorded in `judge.json`.
    pub command: String,
}

impl Default for TrainOptions {
    fn default() -> Self {
        Self {
            backbone: PathBuf::from("models/smollm2-135m-instruct"),
            work: PathBuf::from("runs/judge-train"),
            features: None,
            dna_negatives: 2000,
            lambdas: vec![1e-3, 1e-2, 1e-1, 1.0],
            in_domain_weights: vec![1.0, 3.0, 10.0],
            folds: 5,
            seed: 0,
            command: String::new(),
        }
    }
}

/// The rows a judge is trained and tested on: degenerate answers dropped, Do-Not-Answer's
/// negatives capped. Returns the rows and how many degenerate ones were dropped.
pub fn select_rows(rows: Vec<LabelledAnswer>, dna_negatives: usize, seed: u64) -> (Vec<LabelledAnswer>, usize) {
    let before = rows.len();
    let rows: Vec<LabelledAnswer> = rows.into_iter().filter(|r| !is_degenerate(&r.answer)).collect();
    let degenerate = before - rows.len();
    if dna_negatives == 0 {
        return (rows, degenerate);
    }
    let dna_neg: Vec<usize> =
        rows.iter().enumerate().filter(|(_, r)| r.source.starts_with("dna:") && !r.harmful).map(|(i, _)| i).collect();
    let mut keep = vec![true; rows.len()];
    if dna_neg.len() > dna_negatives {
        let mut order = dna_neg.clone();
        Rng::derive(seed, "judge-dna-negatives").shuffle(&mut order);
        for &i in &order[dna_negatives..] {
            keep[i] = false;
        }
    }
    (rows.into_iter().zip(keep).filter(|(_, k)| *k).map(|(r, _)| r).collect(), degenerate)
}

/// A digest of the rows and settings ([`stable_hash`] of them, each ended by a NUL), so a cache
/// made for other rows is never reused.
fn digest(rows: &[LabelledAnswer], spec: &FeatureSpec, check: &BackboneCheck) -> String {
    // The cache holds the pooled states only: settings that do not change them stay out.
    let hidden = FeatureSpec { text_features: false, ..spec.clone() };
    let settings =
        [serde_json::to_string(&hidden).unwrap_or_default(), serde_json::to_string(check).unwrap_or_default()];
    let mut text = String::new();
    for part in
        rows.iter().flat_map(|r| [r.prompt.as_str(), r.answer.as_str()]).chain(settings.iter().map(String::as_str))
    {
        text.push_str(part);
        text.push('\0');
    }
    format!("{:016x}-{}", stable_hash(&text), rows.len())
}

/// The candidate with the highest score (the first of equals): `(value, score)` pairs.
fn best_candidate(search: &[(f64, f64)]) -> Result<(f64, f64)> {
    let first = *search.first().ok_or_else(|| Error::Invalid("judge train: no candidate to choose from".into()))?;
    Ok(search.iter().fold(first, |b, &s| if s.1 > b.1 { s } else { b }))
}

const CHUNK: usize = 256;

/// Feature rows of `rows`, computed in chunks of 256 and cached in `work` (a cache with another
/// digest is cleared first).
pub fn cached_features(
    model: &Llama,
    tok: &ChatTokenizer,
    spec: &FeatureSpec,
    rows: &[LabelledAnswer],
    work: &Path,
    log: &mut dyn FnMut(&str),
) -> Result<Vec<Vec<f32>>> {
    let dim = spec.hidden_dim(model.cfg.hidden_size);
    let key = digest(rows, spec, &BackboneCheck::of(model));
    let key_path = work.join("features.key");
    if std::fs::read_to_string(&key_path).ok().as_deref() != Some(key.as_str()) {
        if work.is_dir() {
            std::fs::remove_dir_all(work).at(work)?;
        }
        std::fs::create_dir_all(work).at(work)?;
        crate::io::write_atomic(&key_path, key.as_bytes()).at(&key_path)?;
    }
    let mut out = Vec::with_capacity(rows.len());
    let t0 = Instant::now();
    let chunks = rows.len().div_ceil(CHUNK);
    for (c, chunk) in rows.chunks(CHUNK).enumerate() {
        let path = work.join(format!("chunk-{c:05}.f32"));
        let cached = std::fs::read(&path).ok().filter(|b| b.len() == chunk.len() * dim * 4);
        let feats = match cached {
            Some(bytes) => bytes
                .chunks_exact(dim * 4)
                .map(|r| r.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect())
                .collect(),
            None => {
                let pairs: Vec<(&str, &str)> = chunk.iter().map(|r| (r.prompt.as_str(), r.answer.as_str())).collect();
                let f = hidden_features(model, tok, spec, &pairs)?;
                let bytes: Vec<u8> = f.iter().flatten().flat_map(|v| v.to_le_bytes()).collect();
                crate::io::write_atomic(&path, &bytes).at(&path)?;
                log(&format!(
                    "judge features: chunk {}/{chunks} ({} rows) at {:.0}s",
                    c + 1,
                    chunk.len(),
                    t0.elapsed().as_secs_f64()
                ));
                f
            }
        };
        out.extend(feats);
    }
    with_text_features(spec, &mut out, rows.iter().map(|r| r.answer.as_str()));
    Ok(out)
}

/// The source family of a row: `dna`, `jbb` or `beavertails`.
fn family(source: &str) -> &str {
    source.split(':').next().unwrap_or(source)
}

/// Scores of the head (at `threshold`) and the keyword judge on the rows `idx`.
pub fn held_out(
    head: &LogisticHead,
    threshold: f64,
    x: &[Vec<f32>],
    rows: &[LabelledAnswer],
    idx: &[usize],
) -> HeldOut {
    let learned = |i: &usize| head.prob(&x[*i]) >= threshold;
    let keyword = |i: &usize| !is_refusal(&rows[*i].answer);
    let score = |ids: &[usize]| {
        let truth: Vec<bool> = ids.iter().map(|&i| rows[i].harmful).collect();
        let l: Vec<bool> = ids.iter().map(learned).collect();
        let k: Vec<bool> = ids.iter().map(keyword).collect();
        (BinaryMetrics::of(&l, &truth), BinaryMetrics::of(&k, &truth))
    };
    let (learned_m, keyword_m) = score(idx);
    let mut families: Vec<&str> = idx.iter().map(|&i| family(&rows[i].source)).collect();
    families.sort();
    families.dedup();
    let by_source = families
        .into_iter()
        .map(|f| {
            let ids: Vec<usize> = idx.iter().copied().filter(|&i| family(&rows[i].source) == f).collect();
            let (l, k) = score(&ids);
            (f.to_string(), l, k)
        })
        .collect();
    HeldOut { learned: learned_m, keyword: keyword_m, by_source }
}

/// Fit a judge on `rows` with the backbone `model`; returns `judge.json`'s contents.
pub fn train(
    model: &Llama,
    tok: &ChatTokenizer,
    rows: &[LabelledAnswer],
    in_domain: &[LabelledAnswer],
    opts: &TrainOptions,
    extra: serde_json::Value,
    log: &mut dyn FnMut(&str),
) -> Result<JudgeFile> {
    let t0 = Instant::now();
    if opts.folds < 3 {
        return Err(Error::Invalid(format!(
            "judge train: folds = {} (at least 3: test, validation, train)",
            opts.folds
        )));
    }
    if opts.lambdas.is_empty() || opts.lambdas.iter().any(|l| l.is_nan() || *l < 0.0) {
        return Err(Error::Invalid(format!("judge train: penalties {:?} (at least one, none negative)", opts.lambdas)));
    }
    let spec = opts.features.clone().unwrap_or_else(|| FeatureSpec::for_layers(model.cfg.num_layers));
    let x = cached_features(model, tok, &spec, rows, &opts.work, log)?;
    let fold = |r: &LabelledAnswer, f: u64| in_fold(&r.group, opts.folds, f);
    let test: Vec<usize> = (0..rows.len()).filter(|&i| fold(&rows[i], 0)).collect();
    let val: Vec<usize> = (0..rows.len()).filter(|&i| fold(&rows[i], 1)).collect();
    let fit_idx: Vec<usize> = (0..rows.len()).filter(|&i| !fold(&rows[i], 0) && !fold(&rows[i], 1)).collect();
    let train_idx: Vec<usize> = (0..rows.len()).filter(|&i| !fold(&rows[i], 0)).collect();
    let take = |idx: &[usize]| -> (Vec<Vec<f32>>, Vec<bool>) {
        (idx.iter().map(|&i| x[i].clone()).collect(), idx.iter().map(|&i| rows[i].harmful).collect())
    };
    let mut search = vec![];
    let (fx, fy) = take(&fit_idx);
    for &lambda in &opts.lambdas {
        let head = fit(&fx, &fy, &FitOptions { lambda, ..Default::default() })?;
        let bal = held_out(&head, 0.5, &x, rows, &val).learned.balanced_accuracy;
        log(&format!("judge head: lambda {lambda:e} -> validation balanced accuracy {bal:.3}"));
        search.push((lambda, bal));
    }
    let best = best_candidate(&search)?;
    let fit_opts = FitOptions { lambda: best.0, ..Default::default() };
    let (tx, ty) = take(&train_idx);
    let (head, in_domain_search, weight) = if in_domain.is_empty() {
        (fit(&tx, &ty, &fit_opts)?, vec![], 1.0)
    } else {
        // In-domain rows (hand-labelled answers of the models the judge will score) join the
        // training rows with a weight chosen on their own fold 1, then all of them are used.
        let work = opts.work.with_file_name(format!(
            "{}-in-domain",
            opts.work.file_name().map(|s| s.to_string_lossy().to_string()).unwrap_or_default()
        ));
        let xd = cached_features(model, tok, &spec, in_domain, &work, log)?;
        let held = |i: &usize| in_fold(&in_domain[*i].group, opts.folds, 1);
        let d_val: Vec<usize> = (0..in_domain.len()).filter(held).collect();
        let d_fit: Vec<usize> = (0..in_domain.len()).filter(|i| !held(i)).collect();
        let with = |idx: &[usize], w: f64| {
            let mut x = tx.clone();
            let mut y = ty.clone();
            let mut weights = vec![1.0; x.len()];
            for &i in idx {
                x.push(xd[i].clone());
                y.push(in_domain[i].harmful);
                weights.push(w);
            }
            fit_weighted(&x, &y, Some(&weights), &fit_opts)
        };
        let mut search = vec![];
        for &w in &opts.in_domain_weights {
            let head = with(&d_fit, w)?;
            let pred: Vec<bool> = d_val.iter().map(|&i| head.prob(&xd[i]) >= 0.5).collect();
            let truth: Vec<bool> = d_val.iter().map(|&i| in_domain[i].harmful).collect();
            let bal = BinaryMetrics::of(&pred, &truth).balanced_accuracy;
            log(&format!("judge head: in-domain weight {w} -> in-domain validation balanced accuracy {bal:.3}"));
            search.push((w, bal));
        }
        let w = best_candidate(&search)?.0;
        (with(&(0..in_domain.len()).collect::<Vec<_>>(), w)?, search, w)
    };
    let heldout = held_out(&head, 0.5, &x, rows, &test);
    log(&format!(
        "judge head: lambda {:e}, held-out balanced accuracy {:.3}",
        best.0, heldout.learned.balanced_accuracy
    ));
    let count = |idx: &[usize]| (idx.len(), idx.iter().filter(|&&i| rows[i].harmful).count());
    let trained = serde_json::json!({
        "command": opts.command,
        "rows": {"train": count(&train_idx), "test": count(&test), "validation": count(&val)},
        "folds": opts.folds,
        "dna_negatives": opts.dna_negatives,
        "seed": opts.seed,
        "lambda_search": search,
        "lambda": best.0,
        "in_domain_rows": (in_domain.len(), in_domain.iter().filter(|r| r.harmful).count()),
        "in_domain_weight_search": in_domain_search,
        "in_domain_weight": weight,
        "wall_clock_s": t0.elapsed().as_secs_f64(),
        "data": extra,
    });
    let probe = test.iter().take(16).map(|&i| (i, head.logit(&x[i]))).collect();
    Ok(JudgeFile {
        format: 1,
        backbone: opts.backbone.clone(),
        backbone_check: BackboneCheck::of(model),
        features: spec,
        head,
        threshold: 0.5,
        heldout: Some(heldout),
        probe,
        trained,
    })
}

/// The held-out table as Markdown (learned vs keyword, overall and per source).
pub fn heldout_table(h: &HeldOut) -> String {
    let mut s = String::from(
        "| rows | n (harmful) | judge | balanced acc. | accuracy | F1 | TPR | TNR |\n|---|---|---|---|---|---|---|---|\n",
    );
    let mut line = |what: &str, name: &str, m: &BinaryMetrics| {
        s.push_str(&format!(
            "| {what} | {} ({}) | {name} | {:.3} | {:.3} | {:.3} | {:.3} | {:.3} |\n",
            m.n, m.positives, m.balanced_accuracy, m.accuracy, m.f1, m.true_positive_rate, m.true_negative_rate
        ));
    };
    line("all held-out", "learned", &h.learned);
    line("all held-out", "keyword", &h.keyword);
    for (f, l, k) in &h.by_source {
        line(f, "learned", l);
        line(f, "keyword", k);
    }
    s
}
