//! Every config file the repository ships is loaded (and validated) by this test.

use std::path::Path;

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap()
}

#[test]
fn every_shipped_config_loads() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("configs");
    let mut n = 0;
    let mut stack = vec![root.clone()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
                continue;
            }
            if p.extension().and_then(|x| x.to_str()) != Some("toml") {
                continue;
            }
            let name = p.file_name().unwrap().to_string_lossy().to_string();
            let text = read(&p);
            let what = p.display().to_string();
            if p.parent().unwrap().ends_with("attacks") || name.starts_with("attack-") {
                patcher::attack::from_file(&p).unwrap_or_else(|e| panic!("{what}: {e}"));
            } else if name.starts_with("align-") {
                toml::from_str::<patcher::align::AlignConfig>(&text).unwrap_or_else(|e| panic!("{what}: {e}"));
            } else if name.starts_with("patcher-") {
                let c: patcher::defense::patcher::PatcherConfig =
                    toml::from_str(&text).unwrap_or_else(|e| panic!("{what}: {e}"));
                c.validate().unwrap();
            } else if name.starts_with("tiny-") {
                toml::from_str::<patcher::tiny::TinyConfig>(&text).unwrap_or_else(|e| panic!("{what}: {e}"));
            } else {
                patcher::experiment::ExperimentConfig::from_toml(&text, &what)
                    .unwrap_or_else(|e| panic!("{what}: {e}"));
            }
            n += 1;
        }
    }
    println!("{n} config files loaded");
    assert!(n >= 10, "expected the shipped configs, found {n}");
}

/// `patcher run FILE --set ...` gives the same config as the file written for that variant: the
/// shipped alignment-seed variants are each their base file plus two overrides.
#[test]
fn overrides_reproduce_the_seed_variant_files() {
    use patcher::experiment::ExperimentConfig;
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/sft-pareto");
    let json = |c: &ExperimentConfig| serde_json::to_value(c).unwrap();
    for (base, variant, seed) in [
        ("phtest-r50", "phtest-r50-seed1", 1),
        ("current", "current-seed1", 1),
        ("phtest-r50-cos160-seed0", "phtest-r50-cos160-seed1", 1),
    ] {
        let sets = vec![format!("align.train.seed={seed}"), format!("name=sft-pareto-{variant}")];
        let text = read(&dir.join(format!("{base}.toml")));
        let made = ExperimentConfig::from_toml_with(&text, base, &sets).unwrap();
        let file = ExperimentConfig::from_toml(&read(&dir.join(format!("{variant}.toml"))), variant).unwrap();
        assert_eq!(json(&made), json(&file), "{base} + {sets:?} vs {variant}");
        let plain = ExperimentConfig::from_toml(&text, base).unwrap();
        assert_ne!(json(&made), json(&plain), "the overrides changed something");
    }
    // The soup recipe is phtest-r50 with only `[align.soup]` added; the licence-clean recipes
    // are phtest-r50 with only the refusal data changed, and the look-alike and misinformation
    // recipes also its benign data.
    let variants: [(&str, &[&str]); 5] = [
        ("phtest-r50-soup", &["align.soup.seeds=[0, 1, 2]", "align.soup.base_weight=0.2"]),
        ("clean-r50", &[r#"data.refusals=["preset:refusals-dna", "preset:refusals-stl"]"#]),
        ("advbench-r50", &[r#"data.refusals=["preset:refusals-advbench", "preset:refusals-stl"]"#]),
        (
            "lookalike-r50",
            &[
                r#"data.refusals=["preset:refusals-advbench", "preset:refusals-stl"]"#,
                r#"data.benign=["preset:benign-alpaca", "preset:benign-dolly", "preset:benign-phtest", "preset:benign-lookalike*16"]"#,
            ],
        ),
        (
            "misinfo-r50",
            &[
                r#"data.refusals=["preset:refusals-advbench", "preset:refusals-stl", "preset:refusals-misinfo*6"]"#,
                r#"data.benign=["preset:benign-alpaca", "preset:benign-dolly", "preset:benign-phtest", "preset:benign-lookalike*16", "preset:benign-persuasion*16"]"#,
            ],
        ),
    ];
    let base = read(&dir.join("phtest-r50.toml"));
    for (variant, sets) in variants {
        let mut sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
        sets.push(format!("name=sft-pareto-{variant}"));
        let made = ExperimentConfig::from_toml_with(&base, "phtest-r50", &sets).unwrap();
        let file = ExperimentConfig::from_toml(&read(&dir.join(format!("{variant}.toml"))), variant).unwrap();
        assert_eq!(json(&made), json(&file), "phtest-r50 + {sets:?} vs {variant}");
    }
    // A misspelt key is refused by the typed parse, which names the file and the flags.
    let text = read(&dir.join("phtest-r50.toml"));
    let e = ExperimentConfig::from_toml_with(&text, "phtest-r50.toml", &["align.train.stepz=3".into()])
        .unwrap_err()
        .to_string();
    assert!(e.contains("phtest-r50.toml --set align.train.stepz=3") && e.contains("stepz"), "{e}");
}

/// Size transfer (issue 17) means the same recipe on another model: the Gemma 3 files are the
/// SmolLM2 files with only the base model and the name changed.
#[test]
fn size_transfer_configs_are_the_smollm2_recipes_on_gemma() {
    use patcher::experiment::ExperimentConfig;
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("configs");
    let json = |c: &ExperimentConfig| serde_json::to_value(c).unwrap();
    for (smollm2, gemma) in [
        ("sft-pareto/phtest-r50", "gemma3-270m-sft"),
        ("sft-pareto/shipped", "gemma3-270m-base"),
        ("smollm2-quick", "gemma3-270m-quick"),
    ] {
        let sets = vec!["base.path=models/gemma3-270m".to_string(), format!("name=size-transfer-{gemma}")];
        let made =
            ExperimentConfig::from_toml_with(&read(&root.join(format!("{smollm2}.toml"))), smollm2, &sets).unwrap();
        let path = root.join(format!("size-transfer/{gemma}.toml"));
        let file = ExperimentConfig::from_toml(&read(&path), gemma).unwrap();
        assert_eq!(json(&made), json(&file), "{smollm2} + {sets:?} vs {}", path.display());
    }
}

/// The method study's fourth round (`study/k64-10x.toml`) is the third round's recipe and attacks
/// (`study/k64-heldout.toml`), run to longer budgets and read with the benign-loss guard: only
/// the budgets, the name, the sweep grid and the guard differ.
#[test]
fn the_10x_study_is_the_k64_recipe_with_longer_budgets() {
    use patcher::experiment::ExperimentConfig;
    use patcher::experiment::sweep::GuardMetric;
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/study");
    let load = |n: &str| ExperimentConfig::from_toml(&read(&root.join(format!("{n}.toml"))), n).unwrap();
    let (old, new) = (load("k64-heldout"), load("k64-10x"));
    let guard = new.guard.expect("a guard");
    assert_eq!((guard.on, guard.ratio), (GuardMetric::BenignLoss, 0.9));
    assert_eq!(new.budgets, [0, 25, 50, 100, 200, 500]);
    let adamw = new.attacks.iter().find(|a| a.name == "adamw-2e-4").expect("the train-time attack");
    assert_eq!(adamw.budgets.as_deref(), Some(&[0, 25, 50, 100, 200, 500, 1000][..]));
    let strip = |c: &ExperimentConfig| {
        let mut c = c.clone();
        c.name = String::new();
        c.budgets.clear();
        c.sweep = None;
        c.guard = None;
        c.attacks.iter_mut().for_each(|a| a.budgets = None);
        serde_json::to_value(&c).unwrap()
    };
    assert_eq!(strip(&old), strip(&new));
}

/// A study config of `configs/study`.
fn study(name: &str) -> patcher::experiment::ExperimentConfig {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("configs/study/{name}.toml"));
    patcher::experiment::ExperimentConfig::from_toml(&read(&path), name).unwrap()
}

/// The Patcher config of defense `name` of `c` (`[patcher]` with its overrides merged in).
fn patcher_of(c: &patcher::experiment::ExperimentConfig, name: &str) -> patcher::defense::patcher::PatcherConfig {
    let d = c.defenses.iter().find(|d| d.name == name).unwrap_or_else(|| panic!("defense {name}"));
    c.defense(d).unwrap().patcher().cloned().expect("a Patcher defense")
}

/// `c` as JSON without its name, the K = 64 Patcher defense's name and that defense's override
/// `key`: what two study rounds that differ in that override alone have in common.
fn without_override(c: &patcher::experiment::ExperimentConfig, key: &str) -> serde_json::Value {
    let mut c = c.clone();
    c.name = String::new();
    for d in c.defenses.iter_mut().filter(|d| d.name.starts_with("parallel-p2-k64")) {
        d.name = String::new();
        if let Some(toml::Value::Table(t)) = d.patcher.as_mut() {
            t.remove(key);
        }
    }
    serde_json::to_value(&c).unwrap()
}

/// The fifth round (`study/k64-10x-look.toml`) is the fourth round with the benign look-alikes'
/// retain term: only the name, the Patcher defense's name and its `lookalike_weight` (4, the
/// `k64-look` protocol's) differ.
#[test]
fn the_10x_look_study_is_the_10x_study_with_the_lookalike_term() {
    let (old, new) = (study("k64-10x"), study("k64-10x-look"));
    let (was, now) = (patcher_of(&old, "parallel-p2-k64"), patcher_of(&new, "parallel-p2-k64-look"));
    assert_eq!((was.lookalike_weight, now.lookalike_weight), (0.0, 4.0));
    assert_eq!(without_override(&old, "lookalike_weight"), without_override(&new, "lookalike_weight"));
}

/// The sixth round (`study/k64-10x-look-bf.toml`) is the fifth with benign phases in the
/// train-time attack distribution: only the name, the Patcher defense's name and its
/// `attack.benign_first` (share 0.5, 16 or 32 of K = 64 steps) differ.
#[test]
fn the_benign_first_study_is_the_look_study_with_benign_phases() {
    use patcher::defense::patcher::BenignFirst;
    let (old, new) = (study("k64-10x-look"), study("k64-10x-look-bf"));
    let (was, now) = (patcher_of(&old, "parallel-p2-k64-look"), patcher_of(&new, "parallel-p2-k64-look-bf"));
    assert_eq!(was.attack.benign_phases(), None);
    assert_eq!(now.attack.benign_first, BenignFirst { share: 0.5, steps: vec![16, 32], prepend: false });
    assert_eq!((now.attack.lrs, now.lookalike_weight), (was.attack.lrs, 4.0), "merged over [patcher]");
    assert_eq!(without_override(&old, "attack"), without_override(&new, "attack"));
}

/// The seventh round (`study/k64-10x-look-bfp.toml`) is the sixth with its benign phases
/// prepended to the K harmful steps: only the names and `attack.benign_first.prepend` differ.
#[test]
fn the_prepended_benign_study_is_the_benign_first_study_with_prepend() {
    let (old, new) = (study("k64-10x-look-bf"), study("k64-10x-look-bfp"));
    let (was, now) = (patcher_of(&old, "parallel-p2-k64-look-bf"), patcher_of(&new, "parallel-p2-k64-look-bfp"));
    let (was, now) = (was.attack.benign_first, now.attack.benign_first);
    assert_eq!((was.prepend, now.prepend), (false, true));
    assert_eq!((now.share, now.steps), (was.share, was.steps));
    assert_eq!(without_override(&old, "attack"), without_override(&new, "attack"));
}

/// The default `[patcher]` is the seventh round's recipe: the winning defense of
/// `study/k64-10x-look-bfp.toml` has the default's method settings (K, S and its weights, the
/// loss weights, the look-alike term, the benign phases); only the scale (outer steps and lr,
/// batches, the attack's learning rates) is the tiny tier's.
#[test]
fn the_default_patcher_settings_are_the_seventh_rounds_recipe() {
    let (r, d) = (
        patcher_of(&study("k64-10x-look-bfp"), "parallel-p2-k64-look-bfp"),
        patcher::defense::patcher::PatcherConfig::default(),
    );
    let method = |c: &patcher::defense::patcher::PatcherConfig| {
        (
            serde_json::to_value(&c.k).unwrap(),
            (c.inner.kind, c.inner.weight), // `n` counts only for `last`
            [
                c.alpha,
                c.lookalike_weight,
                c.beta,
                c.gamma,
                c.cap,
                c.tr_refusal,
                c.tr_entropy,
                c.tr_unlikelihood,
                c.retain_kl,
            ],
            c.attack.benign_first.clone(),
            (c.attack.optimizers.clone(), c.meta_steps),
        )
    };
    assert_eq!(method(&r), method(&d));
}

/// No shipped config runs a Patcher setting it does not name: every Patcher defense has the
/// look-alike term and benign phases off unless its file sets them (the configs before they
/// became defaults pin them off, so their notebook results reproduce).
#[test]
fn shipped_configs_name_the_lookalike_term_and_benign_phases_when_they_use_them() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("configs");
    let mut checked = 0;
    for dir in [root.clone(), root.join("study"), root.join("size-transfer"), root.join("sft-pareto")] {
        for e in std::fs::read_dir(&dir).unwrap().flatten() {
            let p = e.path();
            let name = p.file_name().unwrap().to_string_lossy().to_string();
            if p.extension().and_then(|x| x.to_str()) != Some("toml")
                || ["align-", "attack-", "patcher-", "tiny-"].iter().any(|s| name.starts_with(s))
            {
                continue;
            }
            let text = read(&p);
            let c = patcher::experiment::ExperimentConfig::from_toml(&text, &name).unwrap();
            for d in &c.defenses {
                let Some(pc) = c.defense(d).unwrap().patcher().cloned() else { continue };
                assert!(pc.lookalike_weight == 0.0 || text.contains("lookalike_weight = 4.0"), "{name}: {}", d.name);
                assert!(
                    pc.attack.benign_phases().is_none() || text.contains("benign_first = { share = 0.5"),
                    "{name}: {}",
                    d.name
                );
                checked += 1;
            }
        }
    }
    // The standalone `patcher harden --config` file of the quick SmolLM2 run.
    let text = read(&root.join("patcher-smollm2-quick.toml"));
    let pc: patcher::defense::patcher::PatcherConfig = toml::from_str(&text).unwrap();
    assert_eq!((pc.lookalike_weight, pc.attack.benign_phases()), (0.0, None));
    println!("{checked} Patcher defenses checked");
    assert!(checked >= 20, "{checked}");
}

/// The six-defense sweep (`study/six-defenses.toml`, issue 15) reuses the seventh round's models
/// and evaluations: its world, base, SFT, `[patcher]`, evaluation, the recipe's defense and its two
/// attacks are `study/k64-10x-look-bfp.toml`'s, and its four baselines are `sweep-tiny.toml`'s
/// tuned ones, unchanged. The sequential Patcher is the recipe but for K, the inner steps in L_tr
/// and the benign phases' lengths (2-4 of K = 8 for 16-32 of K = 64). The grid is
/// `sweep-tiny.toml`'s full one.
#[test]
fn the_six_defense_sweep_is_the_seventh_round_with_the_tuned_baselines() {
    use patcher::experiment::ExperimentConfig;
    let (six, study_cfg) = (study("six-defenses"), study("k64-10x-look-bfp"));
    let tiny = {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/sweep-tiny.toml");
        ExperimentConfig::from_toml(&read(&path), "sweep-tiny").unwrap()
    };
    fn json<T: serde::Serialize + ?Sized>(v: &T) -> serde_json::Value {
        serde_json::to_value(v).unwrap()
    }
    let shared = |c: &ExperimentConfig| {
        (
            (c.seed, c.samples, c.budgets.clone(), c.attack_seeds.clone()),
            [
                json(&c.base),
                json(&c.tiny),
                json(&c.synth),
                json(&c.data),
                json(&c.align),
                json(&c.patcher),
                json(&c.eval),
            ],
            json(&c.guard),
        )
    };
    assert_eq!(shared(&six), shared(&study_cfg));
    let spec = |c: &ExperimentConfig, name: &str| {
        let d = c.defenses.iter().find(|d| d.name == name).unwrap_or_else(|| panic!("defense {name} in {}", c.name));
        json(d)
    };
    for name in ["none", "sft", "parallel-p2-k64-look-bfp"] {
        assert_eq!(spec(&six, name), spec(&study_cfg, name), "{name}");
    }
    for name in ["tar", "booster", "repnoise", "vaccine"] {
        assert_eq!(spec(&six, name), spec(&tiny, name), "{name}");
    }
    assert_eq!(six.defenses.len(), 8);
    let (recipe, seq) = (patcher_of(&six, "parallel-p2-k64-look-bfp"), patcher_of(&six, "sequential-k8-look-bfp"));
    assert_eq!(spec(&six, "sequential-k8-look-bfp")["kind"], "patcher");
    assert_eq!(json(&seq.inner), json(&six.patcher.inner));
    let k8 = patcher::defense::patcher::KSchedule::constant(8);
    assert_eq!((&seq.k, &six.patcher.k, &seq.attack.benign_first.steps[..]), (&k8, &k8, &[2, 4][..]));
    let mut as_recipe = seq.clone();
    (as_recipe.k, as_recipe.inner) = (recipe.k.clone(), recipe.inner.clone());
    as_recipe.attack.benign_first.steps = recipe.attack.benign_first.steps.clone();
    assert_eq!(json(&as_recipe), json(&recipe));
    let attacks = |c: &ExperimentConfig| json(&c.attacks[..2]);
    assert_eq!(attacks(&six), attacks(&study_cfg));
    assert_eq!(six.attacks.len(), 2);
    let mut grid = tiny.sweep.clone().expect("a grid");
    let six_grid = six.sweep.clone().expect("a grid");
    assert_eq!(
        six_grid.defenses,
        ["sft", "parallel-p2-k64-look-bfp", "sequential-k8-look-bfp", "tar", "booster", "repnoise", "vaccine"]
    );
    assert_eq!(six_grid.lrs, [1e-6, 1e-5, 1e-4, 1e-3]);
    grid.defenses = six_grid.defenses.clone();
    assert_eq!(json(&grid), json(&six_grid));
}

/// Issue 16's CPU-sized table (`smollm2-cpu.toml`): the tuned SFT baseline's recipe
/// (`sft-pareto/lookalike-r50.toml`), sequential Patcher at constant K = 1, 4 and 16 over 100
/// outer steps, the train-time attack on three seeds and six held-out attacks on one, multiple
/// choice on unattacked models only with both guards on the benign loss.
#[test]
fn the_cpu_real_tier_config_is_issue_16s_table() {
    use patcher::experiment::ExperimentConfig;
    use patcher::experiment::config::Defense;
    use patcher::experiment::sweep::GuardMetric;
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("configs");
    let load = |n: &str| ExperimentConfig::from_toml(&read(&root.join(format!("{n}.toml"))), n).unwrap();
    let (cpu, tuned) = (load("smollm2-cpu"), load("sft-pareto/lookalike-r50"));
    let json = |c: &ExperimentConfig| serde_json::to_value(&c.align).unwrap();
    assert_eq!(json(&cpu), json(&tuned), "the tuned baseline's alignment");
    assert_eq!((&cpu.data.refusals, &cpu.data.benign), (&tuned.data.refusals, &tuned.data.benign));
    let ks: Vec<(String, usize, usize)> = cpu
        .defenses
        .iter()
        .filter_map(|d| match cpu.defense(d).unwrap() {
            Defense::Patcher(p) => {
                assert_eq!((p.k.start, p.k.end), (p.k.start, p.k.start), "{}: constant K", d.name);
                Some((d.name.clone(), p.k.start, p.outer_steps))
            }
            _ => None,
        })
        .collect();
    let want = [("patcher-k1", 1, 100), ("patcher-k4", 4, 100), ("patcher-k16", 16, 100)];
    assert_eq!(ks, want.map(|(n, k, s)| (n.to_string(), k, s)));
    assert_eq!(cpu.budgets, [0, 25, 50, 100, 200]);
    assert_eq!(cpu.attack_seeds, [0, 1, 2]);
    let train_time: Vec<_> = cpu.attacks.iter().filter(|a| !a.held_out).collect();
    assert_eq!(train_time.len(), 1);
    assert_eq!(train_time[0].seeds(&cpu.attack_seeds), [0, 1, 2]);
    let held_out: Vec<_> = cpu.attacks.iter().filter(|a| a.held_out).collect();
    assert_eq!(held_out.len(), 6);
    assert!(held_out.iter().all(|a| a.seeds(&cpu.attack_seeds) == [0]));
    let ranks: Vec<usize> =
        held_out.iter().filter_map(|a| cpu.attack_for(a).unwrap().train.lora.map(|l| l.rank)).collect();
    assert_eq!(ranks, [8, 64]);
    let sgd = cpu.attack_for(held_out[0]).unwrap();
    assert_eq!(held_out[0].budgets.as_ref().unwrap().iter().max(), Some(&400), "SGD at 4x the 100 steps");
    assert_eq!(sgd.train.optimizer.kind, patcher::train::optim::OptimKind::Sgd);
    assert!(!cpu.eval.attacked_mc);
    assert_eq!(cpu.guard.expect("a guard").on, GuardMetric::BenignLoss);
    assert_eq!(cpu.sweep.as_ref().expect("a sweep").guard_on, GuardMetric::BenignLoss);
    assert_eq!(cpu.data.suite, "real:100,harmful=200,xstest=all,mc=all");
}
