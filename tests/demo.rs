//! A reduced demo (seconds, on the cached tiny model): every stage of the experiment runner
//! end to end, the report's contents, and that a second run of the same directory skips every
//! finished stage.

mod common;

use burn::prelude::*;
use patcher::experiment::{ExperimentConfig, Runner, summary_table};

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
    let r = runner.run(vec!["cargo test --test demo".into()]).unwrap();
    println!("reduced demo: {:.1}s\n{}", t0.elapsed().as_secs_f64(), summary_table(&r));
    // The base model unattacked; 3 defenses x (unattacked + 2 attacks x 2 budgets).
    assert_eq!(
        r.rows.len(),
        1 + 3 * (1 + 2 * 2),
        "rows: {:#?}",
        r.rows.iter().map(|x| (&x.defense, &x.attack, x.budget)).collect::<Vec<_>>()
    );
    for d in ["none", "sft", "patcher-k8", "patcher-parallel-k2"] {
        assert!(r.rows.iter().any(|x| x.defense == d), "{d} missing");
    }
    assert!(r.rows.iter().all(|x| (0.0..=1.0).contains(&x.harmful_score)));
    assert!(!r.training_curves.is_empty(), "Patcher training curves are reported");
    assert!(r.stages.iter().any(|s| s.name.starts_with("defense patcher")), "stage timings recorded");
    let md = std::fs::read_to_string(dir.join("report.md")).unwrap();
    let html = std::fs::read_to_string(dir.join("report.html")).unwrap();
    for a in &cfg.attacks {
        assert!(md.contains(&a.name) && html.contains(&a.name), "attack {} in the report", a.name);
    }
    assert!(html.matches("<svg").count() >= 2, "robustness curves are drawn");
    assert!(md.contains("refusal-keyword"), "the judge is named");
    assert!(std::fs::read_to_string(dir.join("results.json")).unwrap().contains("\"rows\""));

    // Re-running the same directory recomputes nothing.
    let t1 = std::time::Instant::now();
    let mut again = Runner::new(&dir, cfg.clone(), Device::flex(), false).unwrap();
    let r2 = again.run(vec![]).unwrap();
    assert_eq!(r2.rows, r.rows);
    assert!(t1.elapsed().as_secs_f64() < 5.0, "a finished run is not recomputed");
    // A different config in the same directory is refused.
    let mut other = cfg;
    other.seed = 99;
    assert!(Runner::new(&dir, other, Device::flex(), false).is_err());
    let _ = std::fs::remove_dir_all(&dir);
}
