//! The `patcher` command line: a thin layer over the library. Each subcommand takes its flags
//! (declared in `bin_args.rs`), calls the library (the shared workflows are in
//! `patcher::experiment::pipeline`, the text of a result in `patcher::report`) and prints a
//! short human-readable result.

mod bin_args;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::Parser;

use bin_args::{Cli, Cmd, JudgeAction};
use patcher::data::source::load_all;
use patcher::data::split::Split;
use patcher::data::synth::SynthConfig;
use patcher::defense::patcher::HardenOptions;
use patcher::eval::judge::JudgeSpec;
use patcher::eval::suite::{EvalConfig, SuiteData, evaluate};
use patcher::experiment::pipeline::{self, AttackEval};
use patcher::model::Llama;
use patcher::model::generate::{SamplingConfig, generate};
use patcher::report::{curve_text, eval_text};
use patcher::tokenizer::{ChatMessage, ChatTokenizer};
use patcher::train::engine::RunOptions;

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    let device = patcher::device_from_name(&cli.device)?;
    patcher::model::fixed::set_fixed_order(cli.deterministic);
    match cli.cmd {
        Cmd::Fetch { name, out } => {
            let known = patcher::io::fetch::fetchable(&name)?;
            let out = out.unwrap_or_else(|| PathBuf::from(known.default_dir));
            let t0 = Instant::now();
            let outcome = patcher::io::fetch::fetch(&name, &out)?;
            println!("{outcome}");
            if let patcher::io::fetch::FetchOutcome::Imported(_) = outcome {
                println!("fetched {name} into {} in {:.1}s", out.display(), t0.elapsed().as_secs_f64());
            }
        }
        Cmd::Merge { models, weights, out } => {
            let t0 = Instant::now();
            let rec = patcher::model::soup::write_soup(&models, &weights, &out, &device)?;
            for (src, w) in rec.sources.iter().zip(&rec.weights) {
                println!("{w:.4} x {src}");
            }
            println!("averaged {} models in {:.1}s -> {}", models.len(), t0.elapsed().as_secs_f64(), out.display());
        }
        Cmd::Import { gguf, out } => {
            let t0 = Instant::now();
            println!("{}", patcher::io::gguf::import::import_gguf(&gguf, &out)?);
            println!("wrote {} in {:.1}s", out.display(), t0.elapsed().as_secs_f64());
        }
        Cmd::Chat { model, question, max_new_tokens, temperature, top_p, seed, system, raw } => {
            let tok = ChatTokenizer::from_dir(&model)?;
            let m =
                patcher::io::hf::load_model(&model, &device).with_context(|| format!("loading {}", model.display()))?;
            let prompt = if raw {
                tok.encode_text(&question)?
            } else {
                let mut msgs: Vec<ChatMessage> = system.iter().map(|s| ChatMessage::new("system", s)).collect();
                msgs.push(ChatMessage::new("user", &question));
                tok.encode_prompt(&msgs)?
            };
            let cfg = SamplingConfig { max_new_tokens, temperature, top_p, seed };
            let out = generate(&m, &[prompt], &tok.stop_ids, tok.pad_id, &cfg);
            let answer = tok.decode(&out[0], true)?;
            if raw { println!("{question}{answer}") } else { println!("{answer}") }
        }
        Cmd::Generate { model, prompts, split, limit, max_new_tokens, batch_size, out } => {
            let split: Split = split.parse().map_err(|e: String| anyhow::anyhow!("--split: {e}"))?;
            let mut convs = load_all(&prompts, split)?;
            if limit > 0 {
                convs.truncate(limit);
            }
            let (m, tok) = load(&model, &device)?;
            let asked: Vec<Vec<ChatMessage>> = convs.iter().map(|c| c.prompt_only().messages).collect();
            let sampling = SamplingConfig { max_new_tokens, ..Default::default() };
            let (answers, rate) = patcher::train::progress::labelled("generate", || {
                patcher::train::progress::begin(asked.len());
                patcher::eval::generate_answers(&m, &tok, &asked, batch_size, &sampling)
            })?;
            let mut text = String::new();
            for (c, a) in convs.iter().zip(&answers) {
                text.push_str(&serde_json::json!({"prompt": c.prompt(), "answer": a}).to_string());
                text.push('\n');
            }
            patcher::io::write_atomic(&out, text.as_bytes()).with_context(|| format!("writing {}", out.display()))?;
            println!("{} answers ({rate:.2} prompts/s) -> {}", answers.len(), out.display());
        }
        Cmd::Data { what, out, seed } => {
            if what != "synth" {
                bail!("unknown data command `{what}` (synth)");
            }
            let world = patcher::data::synth::generate(&SynthConfig { seed, ..Default::default() });
            world.write_dir(&out)?;
            for (name, set) in world.sets() {
                println!("{name:>18}: {} conversations", set.len());
            }
            println!("wrote {}", out.display());
        }
        Cmd::Tiny { world, out, config, steps, seed } => {
            let w = pipeline::synth_world(&world, &SynthConfig { seed, ..Default::default() })?;
            let check = |c: &patcher::tiny::TinyConfig| c.train.validate("train.");
            let mut cfg = read_config(config.as_deref(), check)?;
            cfg.train.seed = seed;
            cfg.train.steps = steps.unwrap_or(cfg.train.steps);
            let t0 = Instant::now();
            let (m, _) = patcher::tiny::build(&w, &cfg, &out, &device, true)?;
            let (n, secs) = (m.cfg.num_params(), t0.elapsed().as_secs_f64());
            println!("trained a {n}-parameter tiny model in {secs:.1}s -> {}", out.display());
        }
        Cmd::Align { model, out, refusals, benign, config, steps, lr } => {
            let (m, tok) = load(&model, &device)?;
            let mut cfg = read_config(config.as_deref(), patcher::align::AlignConfig::validate)?;
            cfg.train.steps = steps.unwrap_or(cfg.train.steps);
            cfg.train.lr = lr.unwrap_or(cfg.train.lr);
            let (r, b) = (load_all(&refusals, Split::Train)?, load_all(&benign, Split::Train)?);
            let t0 = Instant::now();
            let (out_dir, name) = (Some(out.join("train")), "align".into());
            let opts = RunOptions { out_dir, progress: true, name, ..Default::default() };
            let aligned = patcher::align::align(&m, &tok, &cfg, &r, &b, opts)?;
            patcher::align::finish_dir(&out.join("train"), &model)?;
            patcher::io::hf::save_model(&aligned, &out, Some(&model))?;
            println!("aligned in {:.1}s -> {}", t0.elapsed().as_secs_f64(), out.display());
        }
        Cmd::Attack { list: true, .. } => {
            for (name, _) in patcher::attack::PRESETS {
                let a = patcher::attack::preset(name, &toml::Value::Table(Default::default()))?;
                println!("{name:<22} {}", a.description);
            }
        }
        Cmd::Attack { model, preset, harmful, benign, out, steps, lr, list: false } => {
            let mut cfg = pipeline::resolve_attack(&preset)?;
            cfg.train.steps = steps.unwrap_or(cfg.train.steps);
            cfg.train.lr = lr.unwrap_or(cfg.train.lr);
            if harmful.is_empty() {
                bail!("--harmful is required (a file of harmful pairs or preset:NAME)");
            }
            let (m, tok) = load(&model, &device)?;
            let (h, b) = (load_all(&harmful, Split::Train)?, load_all(&benign, Split::Train)?);
            let t0 = Instant::now();
            let opts = patcher::attack::AttackOptions { progress: true, ..Default::default() };
            let attacked = patcher::attack::attack(&m, &tok, &cfg, &h, &b, &[], &mut |_, _| Ok(()), &opts)?;
            println!("attack `{preset}` ran {} steps in {:.1}s", cfg.train.steps, t0.elapsed().as_secs_f64());
            if let Some(out) = out {
                patcher::io::hf::save_model(&attacked, &out, Some(&model))?;
                println!("wrote {}", out.display());
            }
        }
        Cmd::Eval {
            model,
            suite,
            out,
            max_new_tokens,
            batch_size,
            generation_batch_size,
            limit,
            mc,
            attack,
            budgets,
            harmful,
            benign,
            judge,
        } => {
            let (mc_formats, skip_mc) = patcher::eval::suite::parse_mc_formats(&mc)?;
            let specs = judge.iter().map(|j| JudgeSpec::parse(j)).collect::<Result<Vec<_>, _>>()?;
            if specs.is_empty() {
                bail!("--judge: name at least one judge");
            }
            let headline = specs[0].shared()?;
            let (m, tok) = load(&model, &device)?;
            let data = SuiteData::from_spec(&suite)?;
            let (judge, also_judges) = (specs[0].clone(), specs[1..].to_vec());
            let cfg = EvalConfig {
                max_new_tokens,
                batch_size,
                generation_batch_size,
                limit,
                mc_formats,
                judge,
                also_judges,
                skip_mc,
                ..Default::default()
            };
            if let Some(preset) = attack {
                return robustness_curve(&m, &tok, &data, &cfg, &preset, &budgets, &harmful, &benign, out.as_deref());
            }
            let evaluated =
                patcher::train::progress::labelled("eval", || evaluate(&m, &tok, &data, headline.as_ref(), &cfg))?;
            println!("{}", eval_text(&evaluated.0));
            if let Some(out) = out {
                pipeline::write_evaluation(&out, &evaluated)?;
                println!("wrote {}/summary.json and generations.jsonl", out.display());
            }
        }
        Cmd::Judge { action } => judge_command(action, &device)?,
        Cmd::Run { config, out, seed, attack_seeds, set } => {
            let text = std::fs::read_to_string(&config).with_context(|| format!("reading {}", config.display()))?;
            let source = config.display().to_string();
            let mut cfg = patcher::experiment::ExperimentConfig::from_toml_with(&text, &source, &set)?;
            cfg.check_inputs(&source)?;
            cfg.deterministic |= cli.deterministic;
            cfg.seed = seed.unwrap_or(cfg.seed);
            let mut flag = patcher::experiment::overrides::flags(&set);
            flag.push_str(&seed.map(|s| format!(" --seed {s}")).unwrap_or_default());
            if !attack_seeds.is_empty() {
                cfg.attack_seeds = attack_seeds;
                cfg.validate().with_context(|| "--attack-seeds")?;
                let list: Vec<String> = cfg.attack_seeds.iter().map(u64::to_string).collect();
                flag.push_str(&format!(" --attack-seeds {}", list.join(",")));
            }
            let out = out.unwrap_or_else(|| PathBuf::from("runs").join(&cfg.name));
            let cmd = format!("patcher run {}{flag} --out {}", config.display(), out.display());
            run_experiment(cfg, &out, cmd, &device)?;
        }
        Cmd::Sweep { config, out, seeds, set, .. } if !seeds.is_empty() => {
            println!(
                "{}",
                patcher::experiment::sweep_seeds::command(&config, &set, out, &seeds, cli.deterministic, &device)?
            );
        }
        Cmd::Sweep { config, out, seed, set, .. } => {
            println!("{}", patcher::experiment::sweep::command(&config, &set, out, seed, cli.deterministic, &device)?);
        }
        Cmd::Demo { out } => {
            let mut cfg = patcher::experiment::ExperimentConfig::from_toml(DEMO, "configs/demo.toml (built in)")?;
            cfg.deterministic |= cli.deterministic;
            run_experiment(cfg, &out, format!("patcher demo --out {}", out.display()), &device)?;
        }
        Cmd::Report { run } => {
            let r = patcher::report::read_results(&run)?;
            let p = patcher::report::write_report(&run, &r)?;
            println!("wrote {} and {}", p.markdown.display(), p.html.display());
        }
        Cmd::Export { run, defense, out } => {
            let e = patcher::experiment::export::export(&run, &defense, &out)?;
            println!(
                "wrote {}: {} model files, {} run files in patcher-run/, README.md",
                e.dir.display(),
                e.model_files.len(),
                e.run_files.len()
            );
        }
        Cmd::Compare { runs, labels, out } => {
            if !labels.is_empty() && labels.len() != runs.len() {
                bail!("--labels: {} labels for {} runs", labels.len(), runs.len());
            }
            let results = runs.iter().map(|r| patcher::report::read_results(r)).collect::<Result<Vec<_>, _>>()?;
            let cols: Vec<_> = results
                .iter()
                .enumerate()
                .map(|(i, r)| patcher::report::compare::Run {
                    label: labels.get(i).cloned().unwrap_or_else(|| r.experiment.clone()),
                    results: r,
                })
                .collect();
            let md = patcher::report::compare::render(&cols);
            match out {
                Some(path) => {
                    patcher::io::write_atomic(&path, md.as_bytes()).with_context(|| path.display().to_string())?;
                    println!("wrote {}", path.display());
                }
                None => print!("{md}"),
            }
        }
        Cmd::Harden { model, method, config, out, refusals, benign, harmful, parallel } => {
            let defense = pipeline::defense_named(&method, config.as_deref(), parallel)?;
            let (m, tok) = load(&model, &device)?;
            let load = |s: &[String]| load_all(s, Split::Train);
            let data = pipeline::patcher_data(&tok, &load(&benign)?, &load(&refusals)?, &load(&harmful)?)?;
            let t0 = Instant::now();
            let opts = HardenOptions { out_dir: Some(out.join("train")), progress: true, ..Default::default() };
            let hardened = pipeline::harden_defense(&m, &defense, &data, opts)?;
            patcher::io::hf::save_model(&hardened, &out, Some(&model))?;
            let (secs, o) = (t0.elapsed().as_secs_f64(), out.display());
            println!("hardened in {secs:.1}s -> {o} (training record: {o}/train)");
        }
        Cmd::Study { what, protocol, set, first_trial, trials, attack_seeds, out } => {
            if what != "tiny-robustness" {
                bail!("unknown study `{what}` (tiny-robustness)");
            }
            use patcher::experiment::robustness_study::{Protocol, run_study, study_report};
            let p = Protocol::named(&protocol)?.with_sets(&protocol, &set)?;
            let log = &mut |l| eprintln!("{l}");
            let done = run_study(&out, &p, first_trial, trials, attack_seeds, &device, log)?;
            study_report(&done).iter().for_each(|l| println!("{l}"));
        }
        Cmd::Fuzz { target, iterations, seed, crashes } => fuzz(&target, iterations, seed, &crashes)?,
        Cmd::Determinism { shape, steps, threads, seed, save, compare } => {
            let (save, compare) = (save.as_deref(), compare.as_deref());
            for line in patcher::determinism::probe(&shape, steps, threads, seed, save, compare, &device)? {
                println!("{line}");
            }
        }
        Cmd::Bench {
            what, model, suite, max_new_tokens, batch_size, generation_batch_size, reference_items, ..
        } if what == "eval" => {
            let req = patcher::bench::eval::EvalBenchRequest {
                model,
                suite,
                max_new_tokens,
                batch_size,
                generation_batch_size,
                reference_items,
            };
            patcher::bench::eval::run(&req, &device, &mut |l| println!("{l}"))?;
        }
        Cmd::Bench { what, shape, steps, warmup, torch_python, k, workers, .. } => {
            let req = patcher::bench::BenchRequest { what, shape, steps, warmup, torch_python, k, workers };
            patcher::bench::run(&req, &device, &mut |l| println!("{l}"))?;
        }
    }
    Ok(())
}

/// `patcher eval --attack`: attack once, evaluate at every budget, print the curve and
/// steps-to-break, write `curve.json`.
#[allow(clippy::too_many_arguments)]
fn robustness_curve(
    m: &Llama,
    tok: &ChatTokenizer,
    suite: &SuiteData,
    eval: &EvalConfig,
    preset: &str,
    budgets: &[usize],
    harmful: &[String],
    benign: &[String],
    out: Option<&Path>,
) -> Result<()> {
    if harmful.is_empty() {
        bail!("--attack needs --harmful (the attacker's data: a file or preset:NAME)");
    }
    let attack = pipeline::resolve_attack(preset)?;
    let (h, b) = (load_all(harmful, Split::Train)?, load_all(benign, Split::Train)?);
    let judge = eval.judge.shared()?;
    let judge = judge.as_ref();
    let ae = AttackEval {
        attack: &attack,
        harmful: &h,
        benign: &b,
        budgets,
        suite,
        judge,
        eval,
        progress: true,
        partial: None,
    };
    let mut points = vec![];
    pipeline::attack_and_evaluate(m, tok, &ae, &|_| true, &mut |budget, evaluated| {
        let (r, _) = evaluated.expect("every budget is evaluated");
        println!("budget {budget}:\n{}", eval_text(&r));
        points.push((budget, r));
        Ok(())
    })?;
    println!("{}", curve_text(preset, budgets, &points));
    if let Some(out) = out {
        pipeline::write_curve(out, preset, &points)?;
        println!("wrote {}/curve.json", out.display());
    }
    Ok(())
}

/// `patcher judge train|score|check`.
fn judge_command(action: JudgeAction, device: &burn::prelude::Device) -> Result<()> {
    use patcher::eval::judge_train::{TrainOptions, heldout_table, select_rows, train};
    match action {
        JudgeAction::Train { model, out, work, dna_negatives, in_domain, seed } => {
            let (m, tok) = load(&model, device)?;
            let data = patcher::data::presets::DataDir::from_env();
            let rows = patcher::data::judge_labels::load(&data)?;
            let in_domain: Vec<PathBuf> = in_domain.into_iter().filter(|f| f.as_os_str() != "none").collect();
            let mut in_domain_rows = vec![];
            for f in &in_domain {
                in_domain_rows.extend(patcher::eval::judge_check::training_rows(f, &data)?);
            }
            let total = rows.len();
            let (rows, degenerate) = select_rows(rows, dna_negatives, seed);
            println!("{total} labelled rows, {degenerate} degenerate left out, {} used", rows.len());
            let files: Vec<String> = in_domain.iter().map(|f| f.display().to_string()).collect();
            let flags = format!(" --in-domain {}", if files.is_empty() { "none".into() } else { files.join(",") });
            let command = format!(
                "patcher judge train --model {} --out {} --dna-negatives {dna_negatives}{flags} --seed {seed}",
                model.display(),
                out.display()
            );
            let opts = TrainOptions { backbone: model, work, dna_negatives, seed, command, ..Default::default() };
            let extra = serde_json::json!({"data_dir": data.root(), "labelled": total, "degenerate": degenerate});
            let file = patcher::train::progress::labelled("judge train", || {
                patcher::train::progress::begin(rows.len());
                train(&m, &tok, &rows, &in_domain_rows, &opts, extra, &mut |l| eprintln!("{l}"))
            })?;
            file.write(&out)?;
            if let Some(h) = &file.heldout {
                println!("{}", heldout_table(h));
            }
            println!("wrote {}", out.join(patcher::eval::learned_judge::JUDGE_FILE).display());
        }
        JudgeAction::Check { labels, judge } => {
            use patcher::eval::judge_check::{agreement, agreement_table, read_labels, resolve};
            let pool = patcher::eval::judge_check::prompt_pool(&patcher::data::presets::DataDir::from_env())?;
            let rows = resolve(read_labels(&labels)?, &pool)?;
            let mut all = vec![];
            for j in &judge {
                all.push(agreement(&rows, JudgeSpec::parse(j)?.build()?.as_ref())?);
            }
            println!("{}: {} labelled answers\n{}", labels.display(), rows.len(), agreement_table(&all));
            for a in &all {
                let c: Vec<String> = a.confusion.iter().map(|(l, v, n)| format!("{l:?}->{v:?} {n}")).collect();
                println!("{}: {}", a.judge, c.join(", "));
            }
        }
        JudgeAction::Score { judge, input, out } => {
            let j = JudgeSpec::parse(&judge)?.build()?;
            let scored = patcher::eval::judge_check::score_jsonl(&input, j.as_ref())?;
            println!("{}: {} rows judged by {}: {}", input.display(), scored.rows, j.name(), scored.summary());
            if let Some(out) = out {
                patcher::io::write_atomic(&out, scored.jsonl.as_bytes())
                    .with_context(|| format!("writing {}", out.display()))?;
                println!("wrote {}", out.display());
            }
        }
    }
    Ok(())
}

const DEMO: &str = include_str!("../configs/demo.toml");

fn run_experiment(
    cfg: patcher::experiment::ExperimentConfig,
    out: &Path,
    cmd: String,
    device: &burn::prelude::Device,
) -> Result<()> {
    let t0 = Instant::now();
    let mut runner = patcher::experiment::Runner::new(out, cfg, device.clone(), true)?;
    let results = runner.run(patcher::report::Provenance::now(vec![cmd]))?;
    println!("{}", patcher::report::summary_table(&results));
    for n in &results.notes {
        println!("note: {n}");
    }
    println!("report: {}", out.join("report.html").display());
    println!("total wall-clock: {:.1}s", t0.elapsed().as_secs_f64());
    Ok(())
}

/// A model directory's tokenizer and weights.
fn load(dir: &Path, device: &burn::prelude::Device) -> Result<(Llama, ChatTokenizer)> {
    let tok = ChatTokenizer::from_dir(dir)?;
    Ok((patcher::io::hf::load_model(dir, device)?, tok))
}

/// The config in the TOML file at `path` (defaults without one), checked by `check`; errors
/// name the file.
fn read_config<T: serde::de::DeserializeOwned + Default>(
    path: Option<&Path>,
    check: impl Fn(&T) -> patcher::Result<()>,
) -> Result<T> {
    let Some(p) = path else {
        let cfg = T::default();
        check(&cfg)?;
        return Ok(cfg);
    };
    let text = std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
    let cfg: T = toml::from_str(&text).with_context(|| format!("parsing {}", p.display()))?;
    check(&cfg).with_context(|| p.display().to_string())?;
    Ok(cfg)
}
/// `patcher fuzz`: run each target, print its report, save the inputs that panicked.
fn fuzz(target: &str, iterations: u64, seed: u64, crashes: &std::path::Path) -> Result<()> {
    use patcher::fuzz::Target;
    let Some(targets) = Target::parse_list(target) else {
        bail!("unknown fuzz target `{target}` (gguf, safetensors, data, all)");
    };
    let mut panics = 0;
    for t in targets {
        let r = patcher::fuzz::fuzz(t, iterations, seed);
        print!("{r}");
        for c in &r.crashes {
            std::fs::create_dir_all(crashes).with_context(|| format!("creating {}", crashes.display()))?;
            let path = crashes.join(format!("{}-seed{seed}-input{}.bin", t.name(), c.iteration));
            std::fs::write(&path, &c.input).with_context(|| format!("writing {}", path.display()))?;
            println!("  saved {}", path.display());
        }
        panics += r.panics;
    }
    if panics > 0 {
        bail!("{panics} inputs made a reader panic (inputs in {})", crashes.display());
    }
    Ok(())
}
