//! A reduced demo (seconds, on the cached tiny model): every stage of the experiment runner
//! end to end, results that match the config (defenses, attacks, budgets, Patcher curves, the
//! judge), SFT alignment moving the base model towards refusing, the report's contents, and
//! that a second run of the same directory recomputes no finished stage.

mod common;

use burn::prelude::*;
use patcher::eval::judge::Judge;
use patcher::eval::keyword::KeywordJudge;
use patcher::experiment::{ExperimentConfig, Runner};
use patcher::report::{Provenance, display_defense, summary_table, unattacked};

fn reduced() -> ExperimentConfig {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/demo.toml");
    let mut cfg = ExperimentConfig::from_toml(&std::fs::read_to_string(&path).unwrap(), "demo.toml").unwrap();
    cfg.name = "demo-reduced".into();
    cfg.base.path = common::tiny_model_dir().display().to_string();
    cfg.align.train.steps = 10;
    cfg.patcher.outer_steps = 3;
    cfg.patcher.k = patcher::defense::patcher::KSchedule::constant(2);
    cfg.defenses.push(patcher::experiment::config::DefenseSpec {
        name: "patcher-parallel-k2".into(),
        kind: patcher::experiment::DefenseKind::PatcherParallel,
        patcher: None,
        parallel: Some(2),
        settings: None,
        attacked: true,
    });
    // A baseline through the same runner: Booster for 3 steps.
    cfg.defenses.push(patcher::experiment::config::DefenseSpec {
        name: "booster".into(),
        kind: patcher::experiment::DefenseKind::Method(patcher::defense::MethodKind::Booster),
        patcher: None,
        parallel: None,
        settings: Some(toml::from_str("lambda = 2.0\n[train]\nsteps = 3\nlr = 2e-4\n").unwrap()),
        attacked: true,
    });
    cfg.attacks.truncate(2);
    for a in &mut cfg.attacks {
        a.budgets = Some(vec![0, 4]);
    }
    cfg.eval.limit = 12;
    cfg.eval.max_new_tokens = 16;
    cfg.samples = 1;
    cfg
}

#[test]
fn reduced_demo_runs_every_stage_and_writes_the_report() {
    let dir = common::tempdir("demo");
    let cfg = reduced();
    let t0 = std::time::Instant::now();
    let mut runner = Runner::new(&dir, cfg.clone(), Device::flex(), false).unwrap();
    let r = runner.run(Provenance::now(vec!["cargo test --test demo".into()])).unwrap();
    println!("reduced demo: {:.1}s\n{}", t0.elapsed().as_secs_f64(), summary_table(&r));
    let rows = || r.rows.iter().map(|x| (&x.defense, &x.attack, x.budget)).collect::<Vec<_>>();
    // Each attack's checkpoints and saved evaluations go once its stage's file is written.
    assert!(!dir.join("evals/.partial").exists(), "an attack's partial directory was left behind");
    // The invocation is the directory's first segment, with its command and wall-clock.
    let segments = patcher::experiment::segments::read(&dir).unwrap();
    assert_eq!(segments.len(), 1, "{segments:?}");
    assert_eq!((segments[0].command.as_str(), segments[0].outcome.as_str()), ("cargo test --test demo", "done"));
    let secs = t0.elapsed().as_secs_f64();
    assert!(segments[0].seconds > 0.5 * secs && segments[0].seconds <= secs, "{} of {secs} s", segments[0].seconds);

    // The summary's defenses and attacks are exactly the config's, in its order.
    let defenses: Vec<String> = cfg.defenses.iter().map(|d| d.name.clone()).collect();
    assert_eq!(patcher::report::defenses(&r.rows), defenses, "rows: {:#?}", rows());
    let attacks: Vec<(String, bool)> = cfg.attacks.iter().map(|a| (a.name.clone(), a.held_out)).collect();
    assert_eq!(patcher::report::attacks(&r.rows), attacks, "rows: {:#?}", rows());
    // Every defense once unattacked; every attacked one under every attack at every budget, in order.
    let budgets = [0, 4];
    for d in &cfg.defenses {
        let unattacked_rows = r.rows.iter().filter(|x| x.defense == d.name && x.attack == "none").count();
        assert_eq!(unattacked_rows, 1, "{}: rows: {:#?}", d.name, rows());
        for a in &cfg.attacks {
            let got: Vec<usize> =
                r.rows.iter().filter(|x| x.defense == d.name && x.attack == a.name).map(|x| x.budget).collect();
            let want: &[usize] = if d.attacked { &budgets } else { &[] };
            assert_eq!(got, want, "{} under {}", d.name, a.name);
        }
    }
    assert_eq!(r.rows.len(), 1 + 4 * (1 + 2 * budgets.len()), "rows: {:#?}", rows());

    // SFT alignment moves the base model (trained mostly to comply) towards refusing: on the
    // harmful prompts its refusal answers become likelier and harmful answers less likely.
    // (Measured by loss: at 10 alignment steps, 12 prompts and 16 new tokens the HS is too
    // coarse, 92% / 33% / 100% after 10 / 30 / 50 steps while the refusal loss falls steadily.)
    let loss = |d: &str, which: fn(&patcher::report::Row) -> Option<f64>| {
        let row = unattacked(&r.rows, d).unwrap_or_else(|| panic!("no unattacked row of {d}"));
        which(row).unwrap_or_else(|| panic!("{d}: loss not measured"))
    };
    let refusal = (loss("none", |x| x.refusal_loss), loss("sft", |x| x.refusal_loss));
    let harmful = (loss("none", |x| x.harmful_loss), loss("sft", |x| x.harmful_loss));
    println!(
        "base -> SFT: refusal loss {:.3} -> {:.3}, harmful loss {:.3} -> {:.3}",
        refusal.0, refusal.1, harmful.0, harmful.1
    );
    assert!(
        refusal.1 < refusal.0,
        "SFT's refusal loss {:.3} is not below the base model's {:.3}",
        refusal.1,
        refusal.0
    );
    assert!(
        harmful.1 > harmful.0,
        "SFT's harmful-answer loss {:.3} is not above the base model's {:.3}",
        harmful.1,
        harmful.0
    );

    // One curve per metric per Patcher defense, one point per outer step in order.
    let patchers: Vec<&str> = cfg.defenses.iter().filter(|d| d.kind.is_patcher()).map(|d| d.name.as_str()).collect();
    assert_eq!(patchers, ["patcher-k8", "patcher-parallel-k2"]);
    let steps: Vec<f64> = (1..=cfg.patcher.outer_steps).map(|s| s as f64).collect();
    for p in &patchers {
        let curves: Vec<_> = r.training_curves.iter().filter(|c| c.name == *p).collect();
        assert_eq!(curves.len(), 3, "{p}: training curves {:?}", curves.iter().map(|c| &c.metric).collect::<Vec<_>>());
        for c in curves {
            let xs: Vec<f64> = c.points.iter().map(|pt| pt.0).collect();
            assert_eq!(xs, steps, "{p}: {}", c.metric);
        }
    }
    // The baseline's curves: each loss its steps report, one point per step.
    let booster: Vec<&str> =
        r.training_curves.iter().filter(|c| c.name == "booster").map(|c| c.metric.as_str()).collect();
    assert_eq!(booster, ["align loss", "harmful loss", "harmful loss perturbed"]);
    assert!(r.training_curves.iter().filter(|c| c.name == "booster").all(|c| c.points.len() == 3));
    assert_eq!(r.training_curves.len(), 3 * patchers.len() + 3);
    for p in patchers.iter().chain(&["booster"]) {
        assert!(r.stages.iter().any(|s| s.name == format!("defense {p}")), "stage timing of {p}");
    }

    // The judge named is the judge used: its verdicts on the recorded answers are the recorded
    // ones (answers cut short by the excerpt are left out).
    assert_eq!(r.judge, KeywordJudge.name());
    let whole: Vec<_> = r.samples.iter().filter(|s| !s.answer.ends_with('…')).collect();
    println!("{} of {} samples re-judged", whole.len(), r.samples.len());
    assert!(!whole.is_empty(), "no sample answer is whole");
    for s in whole {
        let verdict = KeywordJudge.judge(&s.prompt, &s.answer).unwrap().verdict;
        assert_eq!(
            format!("{verdict:?}").to_lowercase(),
            s.verdict,
            "{} under {} at {}",
            s.defense,
            s.attack,
            s.budget
        );
    }

    // The report files exist and name every defense, every attack and the judge.
    let md = std::fs::read_to_string(dir.join("report.md")).unwrap();
    let html = std::fs::read_to_string(dir.join("report.html")).unwrap();
    for d in &defenses {
        let shown = display_defense(d);
        assert!(md.contains(&shown) && html.contains(&shown), "defense {d} (`{shown}`) in the report");
    }
    for (a, _) in &attacks {
        assert!(md.contains(a) && html.contains(a), "attack {a} in the report");
    }
    assert!(md.contains(&r.judge) && html.contains(&r.judge), "the judge is named");
    assert!(html.matches("<svg").count() >= attacks.len(), "a robustness curve per attack is drawn");
    // results.json holds the rows (HS to within a last-bit difference: serde_json's float
    // parsing is not exactly round-trip without its `float_roundtrip` feature).
    let saved = patcher::report::read_results(&dir.join("results.json")).unwrap();
    let key = |x: &patcher::report::Row| (x.defense.clone(), x.attack.clone(), x.budget, x.harmful_score);
    let (a, b): (Vec<_>, Vec<_>) = (saved.rows.iter().map(key).collect(), r.rows.iter().map(key).collect());
    assert_eq!(a.len(), b.len(), "results.json rows");
    for (x, y) in a.iter().zip(&b) {
        assert!(x.0 == y.0 && x.1 == y.1 && x.2 == y.2 && (x.3 - y.3).abs() < 1e-12, "results.json: {x:?} vs {y:?}");
    }

    // Every cell has its 95% interval over the prompts, around its value.
    for x in &r.rows {
        let ci = x.ci.unwrap_or_else(|| panic!("no interval: {:?}", key(x)));
        let hs = ci.harmful_score;
        assert!(hs.lo <= x.harmful_score + 1e-12 && x.harmful_score <= hs.hi + 1e-12, "{:?}: {hs:?}", key(x));
        assert!((hs.mean - x.harmful_score).abs() < 1e-12 && ci.utility.is_some(), "{:?}: {ci:?}", key(x));
    }

    // A second attack seed on the finished run: the config is the same run (attack seeds are not
    // part of its identity); only the new seed's attacks run, seed 0's results are reused, and
    // every attacked cell becomes the mean over the two seeds with its per-seed scores.
    let mut seeded = cfg.clone();
    seeded.attack_seeds = vec![0, 7];
    let mut runner = Runner::new(&dir, seeded.clone(), Device::flex(), false).unwrap();
    let rs = runner.run(Provenance::default()).unwrap();
    let ran: Vec<String> =
        serde_json::from_str::<Vec<patcher::report::Stage>>(&std::fs::read_to_string(dir.join("stages.json")).unwrap())
            .unwrap()
            .into_iter()
            .filter(|s| !r.stages.iter().any(|old| old.name == s.name))
            .map(|s| s.name)
            .collect();
    assert_eq!(ran.len(), 4 * attacks.len(), "new stages: {ran:?}");
    assert!(ran.iter().all(|s| s.ends_with("(seed 7)")), "new stages: {ran:?}");
    assert_eq!(rs.rows.len(), r.rows.len(), "one row per cell, seeds averaged");
    let mut moved = 0;
    for (x, old) in rs.rows.iter().zip(&r.rows) {
        assert_eq!((&x.defense, &x.attack, x.budget), (&old.defense, &old.attack, old.budget));
        if x.attack == "none" {
            assert_eq!(x.harmful_score, old.harmful_score);
            assert!(x.seeds.is_empty());
            continue;
        }
        if x.budget == 0 {
            // The unattacked model, whatever the seed: counted once.
            assert_eq!((x.seeds.as_slice(), x.harmful_score, x.ci), (&[0][..], old.harmful_score, old.ci));
            continue;
        }
        assert_eq!(x.seeds, [0, 7], "{:?}", key(x));
        assert_eq!(x.seed_hs.len(), 2, "{:?}", key(x));
        assert!((x.seed_hs[0] - old.harmful_score).abs() < 1e-12, "seed 0 is the first run: {:?}", key(x));
        assert!((x.harmful_score - (x.seed_hs[0] + x.seed_hs[1]) / 2.0).abs() < 1e-12);
        let ci = x.ci.expect("interval").harmful_score;
        assert!(ci.lo <= x.harmful_score + 1e-12 && x.harmful_score <= ci.hi + 1e-12, "{:?}: {ci:?}", key(x));
        moved += usize::from(x.budget > 0 && x.harmful_loss != old.harmful_loss);
    }
    assert!(moved > 0, "seed 7 attacked in the same order as seed 0: no loss moved");
    assert!(dir.join(format!("evals/sft__{}__s7.json", attacks[0].0)).exists());
    let recorded: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
    assert_eq!(recorded["attack_seeds"], serde_json::json!([0, 7]), "config.json records the seeds");
    let md = std::fs::read_to_string(dir.join("report.md")).unwrap();
    assert!(md.contains("(per seed: "), "per-seed steps-to-break in the report");
    let curve =
        std::fs::read_to_string(dir.join(format!("curve-{}.svg", patcher::report::slug(&attacks[0].0)))).unwrap();
    assert!(curve.contains("<polygon opacity=\"0.15\""), "the curve's band is drawn");
    // An attack's own `seeds` overrides `attack_seeds` and, like them, is not part of the run's
    // identity: with the first attack on seed 0 only, nothing runs and its rows are seed 0's.
    let mut own = seeded.clone();
    own.attacks[0].seeds = Some(vec![0]);
    let stages_before = std::fs::read_to_string(dir.join("stages.json")).unwrap();
    let ro = Runner::new(&dir, own, Device::flex(), false).unwrap().run(Provenance::default()).unwrap();
    assert_eq!(std::fs::read_to_string(dir.join("stages.json")).unwrap(), stages_before, "a stage ran");
    // The seed-7 run was a second segment; this one, with nothing to run, is none.
    let segments = patcher::experiment::segments::read(&dir).unwrap();
    assert_eq!(segments.iter().map(|s| s.outcome.as_str()).collect::<Vec<_>>(), ["done", "done"]);
    for (x, old) in ro.rows.iter().zip(&r.rows) {
        assert_eq!((&x.defense, &x.attack, x.budget), (&old.defense, &old.attack, old.budget));
        if x.attack == attacks[0].0 && x.budget > 0 {
            assert_eq!(x.seeds, [0], "{:?}", key(x));
            assert!((x.harmful_score - old.harmful_score).abs() < 1e-12, "{:?}", key(x));
        } else if x.attack != "none" && x.budget > 0 {
            assert_eq!(x.seeds, [0, 7], "{:?}", key(x));
        }
    }
    let (r, cfg) = (rs, seeded);
    check_export(&dir, &r);

    // Re-running the same directory recomputes no stage: a stage that runs records its time in
    // stages.json, which stays as it was. A done stage loads no model either: the run's model
    // weights are removed first.
    let stages_json = std::fs::read_to_string(dir.join("stages.json")).unwrap();
    for entry in std::fs::read_dir(dir.join("models")).unwrap() {
        std::fs::remove_file(entry.unwrap().path().join("model.safetensors")).unwrap();
    }
    let mut again = Runner::new(&dir, cfg.clone(), Device::flex(), false).unwrap();
    let r2 = again.run(Provenance::default()).unwrap();
    assert_eq!(r2.rows, r.rows);
    assert_eq!(std::fs::read_to_string(dir.join("stages.json")).unwrap(), stages_json, "a finished stage ran again");
    let names = |x: &patcher::report::Results| x.stages.iter().map(|s| s.name.clone()).collect::<Vec<_>>();
    assert_eq!(names(&r2), names(&r));
    // A different config in the same directory is refused; one with a defense more is not (each
    // defense's stages are cached under its name), but one whose defense changed under its name is.
    let mut more = cfg.clone();
    let mut extra = more.defenses.iter().find(|d| d.name == "sft").unwrap().clone();
    extra.name = "sft-again".into();
    more.defenses.push(extra);
    assert!(Runner::new(&dir, more.clone(), Device::flex(), false).is_ok());
    let changed = more.defenses.iter_mut().find(|d| d.name == "sft").unwrap();
    changed.attacked = !changed.attacked;
    let err = Runner::new(&dir, more, Device::flex(), false).err().expect("a changed defense is refused").to_string();
    assert!(err.contains("defense `sft` changed"), "{err}");
    let mut other = cfg;
    other.seed = 99;
    assert!(Runner::new(&dir, other, Device::flex(), false).is_err());
    let _ = std::fs::remove_dir_all(&dir);
}

/// `patcher export`'s library half on the finished run: the Booster defense as a model
/// directory with the run beside it, and the refusals.
fn check_export(run: &std::path::Path, r: &patcher::report::Results) {
    use patcher::experiment::export::export;
    let out = run.with_file_name(format!("{}-export", run.file_name().unwrap().to_string_lossy()));
    let _ = std::fs::remove_dir_all(&out);
    let e = export(run, "booster", &out).unwrap();
    println!("exported {:?} and {:?}", e.model_files, e.run_files);
    for f in ["config.json", "model.safetensors", "tokenizer.json", "README.md"] {
        assert!(out.join(f).is_file(), "{f} missing from the export");
    }
    assert!(!out.join("train").exists(), "the training checkpoints were exported");
    let bytes = |p: std::path::PathBuf| std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    assert!(bytes(out.join("model.safetensors")) == bytes(run.join("models/booster/model.safetensors")));
    assert!(bytes(out.join("patcher-run/results.json")) == bytes(run.join("results.json")));
    assert!(out.join("patcher-run/metrics.jsonl").is_file(), "the defense's training log");
    assert!(bytes(out.join("patcher-run/segments.json")) == bytes(run.join("segments.json")), "the segment log");
    // The report's figures travel with it.
    let md = std::fs::read_to_string(out.join("patcher-run/report.md")).unwrap();
    let svgs: Vec<&str> = md.split(['(', ')']).filter(|p| p.ends_with(".svg")).collect();
    assert!(!svgs.is_empty(), "report.md links no figure");
    for svg in svgs {
        assert!(out.join("patcher-run").join(svg).is_file(), "{svg} missing beside report.md");
    }
    // The exported directory is a model the engine loads and a chat tokenizer.
    let m = patcher::io::hf::load_model(&out, &Device::flex()).unwrap();
    assert_eq!(
        m.params.len(),
        patcher::io::hf::load_model(&run.join("models/booster"), &Device::flex()).unwrap().params.len()
    );
    patcher::tokenizer::ChatTokenizer::from_dir(&out).unwrap();
    // The card shows the defense's own figures, from the run's results.
    let card = std::fs::read_to_string(out.join("README.md")).unwrap();
    let base = unattacked(&r.rows, "booster").expect("booster's unattacked row");
    let line = format!("| none (unattacked) | 0 | {} [", patcher::report::pct(base.harmful_score));
    assert!(card.contains(&line), "{line} not in the card:\n{card}");
    assert!(card.contains("Steps-to-break") && card.contains("library_name: transformers"), "{card}");
    // The SFT baseline's HS under the same attack, beside the defense's.
    let attacked = r.rows.iter().find(|x| x.defense == "booster" && x.budget > 0).expect("an attacked row");
    let sft = r.rows.iter().find(|x| x.defense == "sft" && x.attack == attacked.attack && x.budget == attacked.budget);
    assert!(card.contains("HS of `sft`"), "{card}");
    let row = card.lines().find(|l| l.starts_with(&format!("| {} | {} |", attacked.attack, attacked.budget)));
    let row =
        row.unwrap_or_else(|| panic!("no row for {} at {} in the card:\n{card}", attacked.attack, attacked.budget));
    assert!(row.contains(&format!(" {} |", patcher::report::pct(sft.unwrap().harmful_score))), "{row}");
    // Refusals: a non-empty --out, an unknown defense (naming the run's), the base model.
    let again = export(run, "booster", &out).unwrap_err().to_string();
    assert!(again.contains("not empty"), "{again}");
    let other = run.with_file_name("export-refused");
    let unknown = export(run, "nope", &other).unwrap_err().to_string();
    assert!(unknown.contains("no defense `nope`") && unknown.contains("booster"), "{unknown}");
    let none = export(run, "none", &other).unwrap_err().to_string();
    assert!(none.contains("base model unchanged"), "{none}");
    assert!(!other.exists(), "a refused export wrote {}", other.display());
    let _ = std::fs::remove_dir_all(&out);
}
