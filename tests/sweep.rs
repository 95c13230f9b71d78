//! `patcher sweep` through the built binary (`CARGO_BIN_EXE_patcher`) on a micro experiment:
//! the tests' cached tiny base model (`tests/common`), SFT-aligned for 80 steps, attacked over 2
//! learning rates x 2 step budgets (one AdamW full-parameter run per learning rate), 8 prompts
//! per set, about 5 s per invocation on 2 cores (plus about 30 s for the base when not cached).
//! Plumbing, not robustness: the files are written and agree with each other, a second
//! invocation skips every cached run and reports the same, a grown grid reuses the old runs, and
//! `patcher run` shares the directory. The aggregation itself (means over seeds, the guard, the
//! worst case) is unit-tested on hand-made rows in `src/experiment/sweep.rs`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Instant, SystemTime};

use serde_json::Value;

mod common;

/// The micro experiment; `BASE` is replaced by the base model's directory, `LRS` by the grid's
/// learning rates.
const MICRO: &str = r#"
name = "micro-sweep"
samples = 1
budgets = [0, 4, 8]

[base]
kind = "tiny"
path = "BASE"

[align.train]
steps = 80
lr = 1e-3

[align.train.batch]
batch_size = 8
max_len = 64

[[defenses]]
name = "sft"
kind = "sft"

# Not swept (`sweep.defenses`): the sweep leaves its training to `patcher run`.
[[defenses]]
name = "vaccine"
kind = "vaccine"
settings = { rho = 1.0, train = { steps = 2, lr = 1e-3, batch = { batch_size = 4, max_len = 64 } } }

[[attacks]]
name = "adamw-1e-3"
preset = "full-adamw-5e-5"
overrides = { train = { lr = 1e-3, batch = { batch_size = 4, max_len = 64 } } }

[sweep]
overrides = { train = { batch = { max_len = 64 } } }
lrs = LRS
steps = [4, 16]
optimizers = [{ kind = "adamw" }]
modes = ["full"]
batch_sizes = [4]
seeds = [0]
defenses = ["sft"]

[eval]
max_new_tokens = 24
batch_size = 8
limit = 8
max_len = 64
"#;

fn s(p: &Path) -> String {
    p.display().to_string()
}

fn patcher(args: &[&str]) -> Output {
    let out = Command::new(env!("CARGO_BIN_EXE_patcher")).args(args).stdin(Stdio::null()).output().expect("spawn");
    assert!(out.status.success(), "patcher {} failed:\n{}", args.join(" "), String::from_utf8_lossy(&out.stderr));
    out
}

fn read_json(p: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))).unwrap()
}

/// Cached run files and their modification times.
fn cells(dir: &Path) -> Vec<(PathBuf, SystemTime)> {
    let mut v: Vec<(PathBuf, SystemTime)> = std::fs::read_dir(dir.join("sweep/cells"))
        .unwrap()
        .map(|e| {
            let p = e.unwrap().path();
            let t = std::fs::metadata(&p).unwrap().modified().unwrap();
            (p, t)
        })
        .collect();
    v.sort();
    v
}

/// How many of the log's per-run lines (`[name] cell i/n: ...`) end with `end`.
fn cell_lines(log: &str, end: &str) -> usize {
    log.lines().filter(|l| l.starts_with("[micro-sweep] cell ") && l.ends_with(end)).count()
}

/// The checks every sweep's files must pass: the worst case is the maximum HS over the
/// unguarded cells of `results.json`, the counts add up, the report and heatmap show it.
fn check_consistent(run: &Path, n_cells: usize) -> Value {
    let sweep = run.join("sweep");
    let r = read_json(&sweep.join("results.json"));
    let defenses = r["defenses"].as_array().unwrap();
    assert_eq!(defenses.len(), 1, "one swept defense");
    let d = &defenses[0];
    assert_eq!(d["defense"], "sft");
    let mine: Vec<&Value> = r["cells"].as_array().unwrap().iter().filter(|c| c["defense"] == "sft").collect();
    assert_eq!(mine.len(), n_cells);
    assert_eq!(d["cells"].as_u64().unwrap() as usize, n_cells);
    let guarded = mine.iter().filter(|c| c["guarded"].as_bool().unwrap()).count();
    assert_eq!(d["guarded"].as_u64().unwrap() as usize, guarded);
    let unattacked_utility = d["unattacked"]["utility"].as_f64().unwrap();
    let guard = r["grid"]["guard"].as_f64().unwrap();
    for c in &mine {
        let trips = c["utility"].as_f64().unwrap() < guard * unattacked_utility;
        assert_eq!(c["guarded"].as_bool().unwrap(), trips, "guard flag of {c}");
    }
    let max = mine
        .iter()
        .filter(|c| !c["guarded"].as_bool().unwrap())
        .map(|c| c["harmful_score"].as_f64().unwrap())
        .fold(None, |m: Option<f64>, v| Some(m.map_or(v, |m| m.max(v))));
    let worst = d["worst"]["harmful_score"].as_f64();
    assert_eq!(worst, max, "the worst case is the highest HS over unguarded cells");
    let md = std::fs::read_to_string(sweep.join("report.md")).unwrap();
    assert!(md.contains("## Worst case") && md.contains("worst-case HS"), "{md}");
    if let Some(w) = worst {
        let want = format!("| {} |", patcher::report::pct(w));
        assert!(md.contains(&want), "report.md lacks the worst case {want}:\n{md}");
    }
    assert!(md.contains("](heatmap-sft.svg)"), "report.md links the heatmap:\n{md}");
    let svg = std::fs::read_to_string(sweep.join("heatmap-sft.svg")).unwrap();
    assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
    for lr in r["grid"]["lrs"].as_array().unwrap() {
        let label = format!(">{:e}<", lr.as_f64().unwrap());
        assert!(svg.contains(&label), "the heatmap lacks the column {label}");
    }
    assert!(run.join("evals/sft__none.json").exists(), "the unattacked evaluation is the runner's");
    r
}

#[test]
fn sweep_writes_consistent_results_and_resumes_without_rerunning() {
    let run = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("sweep-micro-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&run);
    std::fs::create_dir_all(&run).unwrap();
    let exp = run.join("exp.toml");
    let micro = MICRO.replace("BASE", &s(&common::tiny_model_dir()));
    std::fs::write(&exp, micro.replace("LRS", "[1e-4, 3e-3]")).unwrap();
    let args = ["sweep", &s(&exp), "--out", &s(&run)].map(String::from);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();

    let t0 = Instant::now();
    let first = patcher(&args);
    let t_first = t0.elapsed().as_secs_f64();
    let stdout = String::from_utf8_lossy(&first.stdout);
    println!("{stdout}");
    assert!(stdout.contains("worst-case HS") && stdout.contains("SFT alignment"), "{stdout}");
    let log = String::from_utf8_lossy(&first.stderr);
    assert!(log.contains("cell 1/2: sft, adamw full bs4 lr 1e-4 seed 0 ..."), "{log}");
    let r1 = check_consistent(&run, 4);
    let before = cells(&run);
    assert_eq!(before.len(), 2, "one cached file per attack run (and no partial directory left)");
    assert!(!run.join("models/vaccine").exists() && !log.contains("vaccine"), "an unswept defense was trained:\n{log}");

    // Again: every run is skipped (files untouched) and the results are the same.
    let t0 = Instant::now();
    let second = patcher(&args);
    let t_second = t0.elapsed().as_secs_f64();
    let log = String::from_utf8_lossy(&second.stderr);
    assert_eq!(cell_lines(&log, "done already, skipped"), 2, "{log}");
    assert!(!log.contains(" ..."), "a stage or run was redone:\n{log}");
    assert_eq!(cells(&run), before, "cached runs were rewritten");
    // The first invocation is the directory's one segment, with the binary's command line; the
    // second ran nothing and added none.
    let segments = patcher::experiment::segments::read(&run).unwrap();
    assert_eq!(segments.len(), 1, "{segments:?}");
    assert!(segments[0].command.contains("sweep") && segments[0].outcome == "done", "{segments:?}");
    assert!(segments[0].seconds > 0.0 && segments[0].seconds <= t_first, "{segments:?}");
    let r2 = check_consistent(&run, 4);
    for key in ["defenses", "cells", "rows"] {
        assert_eq!(r1[key], r2[key], "{key} changed on resume");
    }

    // A grown grid on the same directory: the old runs are reused, only the new one runs.
    std::fs::write(&exp, micro.replace("LRS", "[1e-4, 3e-3, 1e-3]")).unwrap();
    let third = patcher(&args);
    let log = String::from_utf8_lossy(&third.stderr);
    assert_eq!(cell_lines(&log, "done already, skipped"), 2, "{log}");
    assert_eq!(cell_lines(&log, " ..."), 1, "{log}");
    assert!(log.contains("cell 3/3: sft, adamw full bs4 lr 1e-3 seed 0 ..."), "{log}");
    let after = cells(&run);
    assert_eq!(after.len(), 3);
    assert!(before.iter().all(|b| after.contains(b)), "an old run was rewritten");
    check_consistent(&run, 6);

    // `patcher run` shares the directory: its stages are done already.
    let out = patcher(&["run", &s(&exp), "--out", &s(&run)]);
    let log = String::from_utf8_lossy(&out.stderr);
    // Only its own stages run: the attacks of its `[[attacks]]`, which the sweep does not make,
    // and the unswept defense's training, evaluation and attack.
    let ran: Vec<&str> = log.lines().filter(|l| l.ends_with(" ...")).collect();
    let (sft, vaccine): (Vec<&str>, Vec<&str>) = ran.iter().partition(|l| !l.contains("vaccine"));
    assert_eq!(sft, ["[micro-sweep] attack adamw-1e-3 on sft ..."], "patcher run redid a stage of the sweep's:\n{log}");
    assert!(vaccine.iter().any(|l| l.contains("defense vaccine")), "{log}");
    assert!(run.join("models/vaccine/config.json").exists());
    assert!(run.join("report.md").exists());

    // With the run's evaluations in the directory, the sweep's side-by-side table gains the
    // steps-to-break under the experiment's attack, and the cost of each defense.
    let fourth = patcher(&args);
    assert!(fourth.status.success(), "{}", String::from_utf8_lossy(&fourth.stderr));
    let r4: Value = serde_json::from_str(&std::fs::read_to_string(run.join("sweep/results.json")).unwrap()).unwrap();
    let d = &r4["defenses"][0];
    assert_eq!(d["breaks"][0]["attack"], "adamw-1e-3", "{d}");
    assert_eq!(d["breaks"][0]["max_budget"], 8, "{d}");
    // The steps-to-break, guarded and not, are those of the run's evaluations under the sweep's
    // guard against the defense's unattacked figures.
    let pair: patcher::experiment::PairResult =
        serde_json::from_str(&std::fs::read_to_string(run.join("evals/sft__adamw-1e-3.json")).unwrap()).unwrap();
    let base: patcher::experiment::sweep::Baseline = serde_json::from_value(d["unattacked"].clone()).unwrap();
    let grid: patcher::experiment::sweep::SweepConfig = serde_json::from_value(r4["grid"].clone()).unwrap();
    let direct =
        patcher::experiment::sweep::attack_break("adamw-1e-3", false, &pair.rows, &base, (grid.guard, grid.guard_on));
    assert_eq!(d["breaks"][0], serde_json::to_value(&direct).unwrap(), "{d}");
    assert_eq!(d["cost"]["passes_per_step"], 1, "SFT: one pass a step: {d}");
    assert!(d["cost"]["training_seconds"].as_f64().is_some_and(|s| s > 0.0), "{d}");
    let md = std::fs::read_to_string(run.join("sweep/report.md")).unwrap();
    assert!(md.contains("## Side by side") && md.contains("breaks at: adamw-1e-3"), "{md}");
    let html = std::fs::read_to_string(run.join("sweep/report.html")).unwrap();
    assert!(html.contains("Side by side") && html.matches("<svg").count() == 1, "report.html: one heatmap");
    println!("micro sweep: first run {t_first:.1}s, resumed {t_second:.1}s");
    let _ = std::fs::remove_dir_all(&run);
}

#[test]
fn the_shipped_sweep_config_validates() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/configs/sweep-tiny.toml");
    let cfg = patcher::experiment::ExperimentConfig::from_toml(&std::fs::read_to_string(path).unwrap(), path).unwrap();
    let grid = cfg.sweep.clone().expect("a [sweep] table");
    grid.validate(&cfg).unwrap();
    let plan = grid.plan(cfg.seed).unwrap();
    assert_eq!(plan.len(), 4 * 2 * 2, "lrs x optimizers x modes");
    assert_eq!(grid.steps, [32, 128, 512]);
    assert!(grid.guard == 0.9);
}
