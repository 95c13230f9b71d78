//! Reliability of the pipeline, shown through the built binary (`CARGO_BIN_EXE_patcher`):
//!
//! 1. Malformed inputs (a bad TOML key or value in every config a command reads, a data row
//!    with a missing field, an empty data file, a truncated safetensors file, a corrupted GGUF
//!    header, a missing model directory) make each command exit with status 1 (an error, not a
//!    panic) and a message naming the file and the field or line, and write nothing.
//! 2. `kill -9` during `align`, `harden` (sequential and `--parallel 2`) and `run`, after a
//!    checkpoint and before the end, then the same command again: the weights equal an
//!    uninterrupted run's, bit for bit, and the metrics log shows that the rerun resumed from
//!    the checkpoint rather than starting over.
//! 3. `patcher fuzz` runs a short randomised-input campaign on every reader with no panic.
//!
//! The model is made by the binary too (`patcher data synth`, `patcher tiny`): a 93k-parameter
//! Llama trained for 2 steps, which is all a test of plumbing needs. NaN injection is tested
//! through the library (`src/train/engine.rs`, `src/defense/patcher.rs`): the binary refuses a
//! model with a non-finite weight at load, so it cannot be given one.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

fn patcher() -> Command {
    Command::new(env!("CARGO_BIN_EXE_patcher"))
}

/// A fresh directory under cargo's per-project temporary directory.
fn tempdir(tag: &str) -> PathBuf {
    let d = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("cli-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn s(p: &Path) -> String {
    p.display().to_string()
}

fn run(args: &[String]) -> Output {
    patcher().args(args).stdin(Stdio::null()).output().expect("spawn patcher")
}

/// Run `args`, which must succeed.
fn ok(args: &[String]) -> Output {
    let out = run(args);
    assert!(out.status.success(), "patcher {} failed:\n{}", args.join(" "), String::from_utf8_lossy(&out.stderr));
    out
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|a| a.to_string()).collect()
}

/// The world and the small model every test uses, made once by the binary.
struct Fixture {
    dir: PathBuf,
    world: PathBuf,
    model: PathBuf,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        // Fixtures of earlier runs (a static is never dropped): those over an hour old go.
        let root = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
        for e in std::fs::read_dir(&root).into_iter().flatten().flatten() {
            let old = e.metadata().and_then(|m| m.modified()).ok().and_then(|t| t.elapsed().ok());
            if e.file_name().to_string_lossy().starts_with("cli-fixture-") && old > Some(Duration::from_secs(3600)) {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
        let dir = tempdir("fixture");
        let (world, model) = (dir.join("world"), dir.join("model"));
        let cfg = dir.join("tiny.toml");
        std::fs::write(
            &cfg,
            "vocab_size = 300\nhidden_size = 64\nintermediate_size = 128\nnum_layers = 2\nnum_heads = 4\n\
             num_kv_heads = 2\n[train]\nsteps = 2\n[train.batch]\nbatch_size = 4\nmax_len = 48\n",
        )
        .unwrap();
        ok(&strings(&["data", "synth", "--out", &s(&world)]));
        ok(&strings(&["tiny", "--world", &s(&world), "--out", &s(&model), "--config", &s(&cfg)]));
        Fixture { dir, world, model }
    })
}

impl Fixture {
    fn set(&self, name: &str) -> String {
        s(&self.world.join(format!("{name}.jsonl")))
    }

    /// A copy of the model directory whose `model.safetensors` is cut to `keep` bytes.
    fn truncated_model(&self, keep: usize) -> PathBuf {
        let d = self.dir.join(format!("truncated-{keep}"));
        if !d.exists() {
            let tmp = self.dir.join(format!(".truncated-{keep}.{:?}", std::thread::current().id()));
            std::fs::create_dir_all(&tmp).unwrap();
            for e in std::fs::read_dir(&self.model).unwrap() {
                let p = e.unwrap().path();
                let mut bytes = std::fs::read(&p).unwrap();
                if p.file_name().unwrap() == "model.safetensors" {
                    bytes.truncate(keep);
                }
                std::fs::write(tmp.join(p.file_name().unwrap()), bytes).unwrap();
            }
            let _ = std::fs::rename(&tmp, &d);
        }
        d
    }
}

/// One malformed-input case: the command must exit with status 1, print `want` (each string),
/// and leave `out` absent.
struct Case {
    name: &'static str,
    args: Vec<String>,
    want: Vec<String>,
    out: PathBuf,
}

#[test]
fn malformed_inputs_fail_naming_the_file_and_field_and_write_nothing() {
    let f = fixture();
    let d = tempdir("malformed");
    let w = |name: &str, text: &str| {
        let p = d.join(name);
        std::fs::write(&p, text).unwrap();
        s(&p)
    };
    let model = s(&f.model);
    let out = d.join("out");
    let o = s(&out);
    // A data file whose third row lacks its response (the layout is fixed by the first row).
    let rows = w(
        "rows.jsonl",
        "{\"prompt\": \"How do I pick a lock?\", \"response\": \"I can't help with that.\"}\n\
         {\"prompt\": \"Make a weapon\", \"response\": \"No.\"}\n\
         {\"prompt\": \"Hotwire a car\"}\n",
    );
    let empty = w("empty.jsonl", "");
    let truncated = s(&f.truncated_model(40_000));
    let missing = s(&d.join("no-such-model"));
    let gguf = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/tiny-llama.gguf")).unwrap();
    let wb = |name: &str, bytes: &[u8]| {
        let p = d.join(name);
        std::fs::write(&p, bytes).unwrap();
        s(&p)
    };
    let mut bad_magic = gguf.clone();
    bad_magic[..4].copy_from_slice(b"GGUX");
    let bad_magic = wb("bad-magic.gguf", &bad_magic);
    let mut bad_count = gguf.clone();
    bad_count[8..16].copy_from_slice(&u64::MAX.to_le_bytes()); // the tensor count
    let bad_count = wb("bad-count.gguf", &bad_count);
    let cut_gguf = wb("cut.gguf", &gguf[..gguf.len() - 1000]);

    let align = |extra: &[&str]| {
        let mut a = strings(&["align", "--model", &model, "--out", &o, "--refusals", &f.set("refuse_train")]);
        a.extend(strings(&["--benign", &f.set("benign_train")]));
        a.extend(strings(extra));
        a
    };
    let harden = |m: &str, extra: &[&str]| {
        let mut a = strings(&["harden", "--model", m, "--out", &o, "--refusals", &f.set("refuse_train")]);
        a.extend(strings(&["--benign", &f.set("benign_train")]));
        a.extend(strings(extra));
        a
    };
    let run_cfg = |name: &str, text: &str| {
        let p = w(name, text);
        (strings(&["run", &p, "--out", &o]), p)
    };
    let cfg = |name: &str, text: &str| w(name, text);
    let ws = |v: &[&str]| strings(v);

    let mut cases = vec![];
    let mut case = |name: &'static str, args: Vec<String>, want: Vec<String>| {
        cases.push(Case { name, args, want, out: out.clone() })
    };

    // align: its TOML config, its data, its model.
    let p = cfg("align-key.toml", "[train]\nsteps = 3\nstepz = 3\n");
    case(
        "align: bad TOML key",
        align(&["--config", &p]),
        ws(&[&p, "line 3", "unknown field `stepz`", "expected one of `steps`"]),
    );
    let p = cfg("align-value.toml", "[train]\nlr = \"fast\"\n");
    case(
        "align: bad TOML value",
        align(&["--config", &p]),
        ws(&[&p, "line 2", "invalid type: string \"fast\", expected f64"]),
    );
    let p = cfg("align-batch.toml", "[train.batch]\nbatch_size = 0\n");
    case(
        "align: batch_size 0 (was a panic)",
        align(&["--config", &p]),
        ws(&[&format!("{p}: field `train.batch.batch_size`: is 0; it must be at least 1")]),
    );
    let mut a = strings(&["align", "--model", &model, "--out", &o, "--refusals", &rows]);
    a.extend(strings(&["--benign", &f.set("benign_train")]));
    case("align: data row with a missing field", a, ws(&[&format!("{rows}:3: missing field `response`")]));
    let a =
        strings(&["align", "--model", &model, "--out", &o, "--refusals", &empty, "--benign", &f.set("benign_train")]);
    case("align: empty data file (was a panic)", a, ws(&[&format!("{empty}: no conversations in this file")]));
    let a = strings(&["align", "--model", &model, "--out", &o, "--refusals", &f.set("refuse_train")]);
    case(
        "align: no benign data at a non-zero weight (was a panic)",
        a,
        ws(&["the `benign` data set is empty (weight 0.5)", "set its weight to 0"]),
    );
    let mut a = align(&[]);
    a[2].clone_from(&truncated);
    case(
        "align: truncated model.safetensors",
        a,
        ws(&[&format!("{truncated}/model.safetensors: tensor `"), "truncated: data_offsets"]),
    );
    let mut a = align(&[]);
    a[2].clone_from(&missing);
    case("align: missing model directory", a, ws(&[&format!("{missing}: no such model directory")]));

    // harden: its Patcher config, its data, its model (sequential and parallel).
    let harmful = f.set("harm_train");
    let p = cfg("patcher-key.toml", "outer_steps = 2\n[k]\nstrat = 2\n");
    case(
        "harden: bad TOML key",
        harden(&model, &["--harmful", &harmful, "--config", &p]),
        ws(&[&p, "line 3", "unknown field `strat`"]),
    );
    let p = cfg("patcher-batch.toml", "[tr_batch]\nbatch_size = 0\n");
    case(
        "harden: batch_size 0 (was a panic)",
        harden(&model, &["--harmful", &harmful, "--config", &p]),
        ws(&[&format!("{p}: field `tr_batch.batch_size`: is 0")]),
    );
    let p = cfg("patcher-value.toml", "[inner]\nkind = \"lats\"\n");
    case(
        "harden: bad TOML value",
        harden(&model, &["--harmful", &harmful, "--config", &p]),
        ws(&[&p, "line 2", "unknown variant `lats`", "`last`, `every`, `all`"]),
    );
    // A baseline's settings file: a misspelt key names the file, the line and the key; an
    // unknown method lists the known ones.
    let p = cfg("booster-key.toml", "lambda = 2.0\n[train]\nstepz = 3\n");
    case(
        "harden --method booster: bad TOML key",
        harden(&model, &["--harmful", &harmful, "--method", "booster", "--config", &p]),
        ws(&[&p, "line 3", "unknown field `stepz`"]),
    );
    case(
        "harden --method: unknown method",
        harden(&model, &["--harmful", &harmful, "--method", "tarr"]),
        ws(&["unknown method `tarr`", "tar, booster, repnoise, vaccine"]),
    );
    case(
        "harden: data row with a missing field",
        harden(&model, &["--harmful", &rows]),
        ws(&[&format!("{rows}:3: missing field `response`")]),
    );
    case(
        "harden --parallel 2: empty data file",
        harden(&model, &["--harmful", &empty, "--parallel", "2"]),
        ws(&[&format!("{empty}: no conversations in this file")]),
    );
    case(
        "harden: truncated model.safetensors",
        harden(&truncated, &["--harmful", &harmful]),
        ws(&[&format!("{truncated}/model.safetensors: tensor `"), "truncated"]),
    );
    case(
        "harden: missing model directory",
        harden(&missing, &["--harmful", &harmful]),
        ws(&[&format!("{missing}: no such model directory")]),
    );

    // run: the experiment file, its base model.
    let (a, p) = run_cfg("exp-key.toml", "name = \"x\"\n[base]\nkind = \"tiny\"\npaht = \"m\"\n");
    case("run: bad TOML key", a, ws(&[&p, "line 4", "unknown field `paht`", "expected `kind` or `path`"]));
    let (a, p) = run_cfg("exp-value.toml", "name = \"x\"\nbudgets = [0, \"ten\"]\n");
    case("run: bad TOML value", a, ws(&[&p, "line 2", "invalid type: string \"ten\", expected usize"]));
    let (a, p) = run_cfg("exp-lr.toml", "name = \"x\"\n[align.train]\nlr = nan\n");
    case(
        "run: unusable value",
        a,
        ws(&[&format!("{p}: field `align.train.lr`: is NaN; it must be a finite number >= 0")]),
    );
    let (a, p) = run_cfg("exp-kind.toml", "name = \"x\"\n[[defenses]]\nname = \"p\"\nkind = \"patchr\"\n");
    case("run: bad enum value", a, ws(&[&p, "line 4", "unknown variant `patchr`", "`patcher-parallel`"]));
    let (a, p) = run_cfg("exp-missing.toml", &format!("name = \"x\"\n[base]\nkind = \"hf\"\npath = \"{missing}\"\n"));
    case(
        "run: missing base model directory",
        a,
        ws(&[&p, "field `base.path`", &format!("{missing}: no such model directory")]),
    );
    let (a, p) = run_cfg("exp-gguf.toml", &format!("name = \"x\"\n[base]\nkind = \"gguf\"\npath = \"{bad_count}\"\n"));
    case(
        "run: corrupted GGUF base",
        a,
        ws(&[&p, "field `base.path`", &format!("{bad_count}: corrupt file: tensor count: count {}", u64::MAX)]),
    );
    let exp = format!(
        "name = \"x\"\n[base]\nkind = \"hf\"\npath = \"{truncated}\"\n[[defenses]]\nname = \"sft\"\nkind = \"sft\"\n\
         [data]\nrefusals = [\"{}\"]\nbenign = [\"{}\"]\ndefender_harmful = [\"{harmful}\"]\n\
         attacker_harmful = [\"{harmful}\"]\nsuite = \"synth:{}\"\n",
        f.set("refuse_train"),
        f.set("benign_train"),
        s(&f.world)
    );
    let (a, _) = run_cfg("exp-truncated.toml", &exp);
    case(
        "run: truncated base model.safetensors",
        a,
        ws(&[&format!("{truncated}/model.safetensors: tensor `"), "truncated"]),
    );
    let (a, _) = run_cfg("exp-rows.toml", &exp.replace(&truncated, &model).replace(&f.set("refuse_train"), &rows));
    case("run: data row with a missing field", a, ws(&[&format!("{rows}:3: missing field `response`")]));

    // import: a corrupted header, a cut file.
    case(
        "import: bad magic",
        ws(&["import", &bad_magic, &o]),
        ws(&[&format!("{bad_magic}: not a GGUF file (magic 0x58554747")]),
    );
    case(
        "import: corrupted tensor count",
        ws(&["import", &bad_count, &o]),
        ws(&[&format!("{bad_count}: corrupt file: tensor count: count {} cannot fit", u64::MAX)]),
    );
    case(
        "import: truncated file",
        ws(&["import", &cut_gguf, &o]),
        ws(&[&format!("{cut_gguf}: truncated: data of tensor \"")]),
    );

    // attack, eval, chat, tiny: their model or config.
    let p = cfg("attack-key.toml", "[train]\nstepz = 3\n");
    case(
        "attack: bad TOML key in a preset file",
        ws(&["attack", "--model", &model, "--preset", &p, "--harmful", &harmful, "--out", &o]),
        ws(&[&p, "unknown field `stepz`"]),
    );
    case(
        "attack: truncated model.safetensors",
        ws(&["attack", "--model", &truncated, "--harmful", &harmful, "--out", &o]),
        ws(&[&format!("{truncated}/model.safetensors: tensor `"), "truncated"]),
    );
    let suite = format!("synth:{}", s(&f.world));
    case(
        "eval: missing model directory",
        ws(&["eval", "--model", &missing, "--suite", &suite, "--out", &o]),
        ws(&[&format!("{missing}: no such model directory")]),
    );
    case(
        "eval: truncated model.safetensors",
        ws(&["eval", "--model", &truncated, "--suite", &suite, "--out", &o]),
        ws(&[&format!("{truncated}/model.safetensors: tensor `"), "truncated"]),
    );
    case(
        "chat: missing model directory",
        ws(&["chat", "--model", &missing, "hi"]),
        ws(&[&format!("{missing}: no such model directory")]),
    );
    case(
        "merge: missing model directory",
        ws(&["merge", &model, &missing, "--out", &o]),
        ws(&[&format!("{missing}: no such model directory")]),
    );
    case(
        "merge: truncated model.safetensors",
        ws(&["merge", &model, &truncated, "--out", &o]),
        ws(&[&format!("{truncated}/model.safetensors: tensor `"), "truncated"]),
    );
    case(
        "merge: weights for another count",
        ws(&["merge", &model, &model, "--weights", "1", "--out", &o]),
        ws(&["1 weights for 2 models"]),
    );
    let p = cfg("tiny-value.toml", "num_layers = 2\nhidden_size = -64\n");
    case(
        "tiny: bad TOML value",
        ws(&["tiny", "--world", &s(&f.world), "--out", &o, "--config", &p]),
        ws(&[&p, "line 2", "invalid value: integer `-64`, expected usize"]),
    );

    let mut failures = vec![];
    for c in &cases {
        let t0 = Instant::now();
        let r = run(&c.args);
        let stderr = String::from_utf8_lossy(&r.stderr).to_string();
        let first = stderr.lines().next().unwrap_or("");
        println!(
            "{:<56} exit {:?} ({:.2}s): {}",
            c.name,
            r.status.code(),
            t0.elapsed().as_secs_f64(),
            stderr.trim_end()
        );
        let mut bad = vec![];
        if r.status.code() != Some(1) {
            bad.push(format!("exit status {:?}, expected 1", r.status.code()));
        }
        if !first.starts_with("error: ") {
            bad.push(format!("first line `{first}` is not an error message"));
        }
        for want in &c.want {
            if !stderr.contains(want.as_str()) {
                bad.push(format!("does not say `{want}`"));
            }
        }
        if c.out.exists() {
            bad.push(format!("left output behind: {}", c.out.display()));
            let _ = std::fs::remove_dir_all(&c.out);
        }
        if !bad.is_empty() {
            failures.push(format!("{}: {}\n  stderr: {stderr}", c.name, bad.join("; ")));
        }
    }
    assert!(failures.is_empty(), "{} of {} cases failed:\n{}", failures.len(), cases.len(), failures.join("\n"));
    let _ = std::fs::remove_dir_all(&d);
}

/// Steps logged in a `metrics.jsonl`, in order.
fn logged_steps(path: &Path) -> Vec<u64> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v["step"].as_u64())
        .collect()
}

/// The step of the checkpoint `latest.json` in `dir` points at.
fn checkpoint_step(dir: &Path) -> Option<u64> {
    let text = std::fs::read_to_string(dir.join("latest.json")).ok()?;
    serde_json::from_str::<serde_json::Value>(&text).ok()?["step"].as_u64()
}

/// Start `args`, wait for its first checkpoint in `train_dir` and two more logged steps (so
/// that the kill lands between checkpoints and the rerun must redo steps), kill it with
/// SIGKILL. The run must still have been going (`done` absent). Returns the step of the
/// checkpoint left and the steps the killed run had logged.
fn kill_after_checkpoint(args: &[String], train_dir: &Path, done: &Path) -> (u64, Vec<u64>) {
    let mut child =
        patcher().args(args).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
    let t0 = Instant::now();
    let past_checkpoint = || {
        let step = checkpoint_step(train_dir)?;
        (logged_steps(&train_dir.join("metrics.jsonl")).len() as u64 >= step + 2).then_some(())
    };
    while past_checkpoint().is_none() {
        if let Some(status) = child.try_wait().unwrap() {
            let mut err = String::new();
            use std::io::Read;
            child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
            panic!("patcher {} ended ({status}) before its first checkpoint:\n{err}", args.join(" "));
        }
        assert!(t0.elapsed() < Duration::from_secs(120), "no checkpoint in {} after 120 s", train_dir.display());
        std::thread::sleep(Duration::from_millis(5));
    }
    let still_running = child.try_wait().unwrap().is_none();
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    assert!(still_running && !done.exists(), "the run finished before the kill; make it longer");
    let step = checkpoint_step(train_dir).expect("a checkpoint");
    (step, logged_steps(&train_dir.join("metrics.jsonl")))
}

/// Max |Δ| over every tensor of two safetensors files (which must hold the same names).
fn max_abs_diff(a: &Path, b: &Path) -> f32 {
    let ta = patcher::io::hf::read_safetensors(a).unwrap();
    let tb = patcher::io::hf::read_safetensors(b).unwrap();
    assert_eq!(ta.keys().collect::<Vec<_>>(), tb.keys().collect::<Vec<_>>(), "{} vs {}", a.display(), b.display());
    let mut max = 0.0f32;
    for (name, (shape, va, _)) in &ta {
        let (sb, vb, _) = &tb[name];
        assert_eq!(shape, sb, "{name}");
        for (x, y) in va.iter().zip(vb) {
            max = max.max((x - y).abs());
        }
    }
    max
}

/// `args` with `--out` set to `out` appended.
fn with_out(args: &[String], out: &Path) -> Vec<String> {
    let mut a = args.to_vec();
    a.extend(["--out".to_string(), s(out)]);
    a
}

/// The kill test of a training command: an uninterrupted run to `ref`, then a run to `killed`
/// killed after its first checkpoint and run again. Same weights; the log shows the resume.
fn kill_and_resume(tag: &str, args: &[String], total_steps: u64) {
    let d = tempdir(tag);
    let (reference, killed) = (d.join("reference"), d.join("killed"));
    let t0 = Instant::now();
    ok(&with_out(args, &reference));
    let t_ref = t0.elapsed().as_secs_f64();
    let train = killed.join("train");
    let (ckpt, before) = kill_after_checkpoint(&with_out(args, &killed), &train, &killed.join("model.safetensors"));
    ok(&with_out(args, &killed));
    let diff = max_abs_diff(&reference.join("model.safetensors"), &killed.join("model.safetensors"));
    let steps = logged_steps(&train.join("metrics.jsonl"));
    println!(
        "{tag}: uninterrupted {t_ref:.1}s; killed after step {} (checkpoint {ckpt}), resumed: max |Δ weight| = {diff:e}",
        before.len()
    );
    assert_eq!(diff, 0.0, "{tag}: resumed weights differ from the uninterrupted run's by up to {diff}");
    // Killed run: steps 1..=k; rerun: from the checkpoint on (not from the start).
    let want: Vec<u64> = (1..=before.len() as u64).chain(ckpt + 1..=total_steps).collect();
    assert_eq!(steps, want, "{tag}: logged steps (killed after {}, checkpoint {ckpt})", before.len());
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn align_killed_and_rerun_matches_an_uninterrupted_run() {
    let f = fixture();
    let cfg = f.dir.join("align-kill.toml");
    std::fs::write(
        &cfg,
        "[train]\nsteps = 100\nlr = 1e-3\ncheckpoint_every = 20\n[train.batch]\nbatch_size = 8\nmax_len = 64\n",
    )
    .unwrap();
    let args = strings(&[
        "align",
        "--model",
        &s(&f.model),
        "--refusals",
        &f.set("refuse_train"),
        "--benign",
        &f.set("benign_train"),
        "--config",
        &s(&cfg),
    ]);
    kill_and_resume("align", &args, 100);
}

const PATCHER_KILL: &str = "outer_steps = 16\nouter_lr = 1e-3\ncheckpoint_every = 4\n\
    [k]\nkind = \"constant\"\nstart = 2\nend = 2\n[inner]\nkind = \"last\"\nn = 1\n\
    [retain_batch]\nbatch_size = 4\nmax_len = 48\n[tr_batch]\nbatch_size = 4\nmax_len = 48\n\
    [attack]\nlrs = [1e-3]\nbatch = { batch_size = 4, max_len = 48 }\n\
    benign_first = { share = 0.5, steps = [2] }\n";

fn harden_args(f: &Fixture, parallel: &str) -> Vec<String> {
    let cfg = f.dir.join("patcher-kill.toml");
    std::fs::write(&cfg, PATCHER_KILL).unwrap();
    strings(&[
        "harden",
        "--model",
        &s(&f.model),
        "--config",
        &s(&cfg),
        "--refusals",
        &f.set("refuse_train"),
        "--benign",
        &f.set("benign_train"),
        "--harmful",
        &f.set("harm_train"),
        "--parallel",
        parallel,
    ])
}

#[test]
fn harden_killed_and_rerun_matches_an_uninterrupted_run() {
    kill_and_resume("harden", &harden_args(fixture(), "1"), 16);
}

#[test]
fn parallel_harden_killed_and_rerun_matches_an_uninterrupted_run() {
    kill_and_resume("harden-parallel", &harden_args(fixture(), "2"), 16);
}

/// Rows of an evaluation file without the timings.
fn eval_rows(path: &Path) -> serde_json::Value {
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    serde_json::json!({ "rows": v["rows"], "samples": v["samples"] })
}

#[test]
fn run_killed_and_rerun_matches_an_uninterrupted_run() {
    let f = fixture();
    let d = tempdir("run");
    let exp = d.join("exp.toml");
    std::fs::write(
        &exp,
        format!(
            "name = \"kill\"\nbudgets = [0, 3]\nsamples = 1\n[base]\nkind = \"tiny\"\npath = \"{}\"\n\
             [align.train]\nsteps = 30\nlr = 1e-3\ncheckpoint_every = 10\n[align.train.batch]\nbatch_size = 8\nmax_len = 48\n\
             [patcher]\n{}\n\
             [[defenses]]\nname = \"sft\"\nkind = \"sft\"\n[[defenses]]\nname = \"patcher\"\nkind = \"patcher\"\n\
             [[attacks]]\nname = \"adamw\"\npreset = \"full-adamw-5e-5\"\n\
             overrides = {{ train = {{ lr = 1e-3, batch = {{ batch_size = 4, max_len = 48 }} }} }}\n\
             [eval]\nmax_new_tokens = 6\nbatch_size = 8\nlimit = 6\nmax_len = 48\n",
            s(&f.model),
            // The Patcher table's keys, under [patcher] (its sub-tables become [patcher.x]).
            PATCHER_KILL.replace("\n[", "\n[patcher.")
        ),
    )
    .unwrap();
    let (reference, killed) = (d.join("reference"), d.join("killed"));
    let args = strings(&["run", &s(&exp)]);
    let t0 = Instant::now();
    ok(&with_out(&args, &reference));
    let t_ref = t0.elapsed().as_secs_f64();
    let train = killed.join("models/patcher/train");
    let (ckpt, before) =
        kill_after_checkpoint(&with_out(&args, &killed), &train, &killed.join("models/patcher/config.json"));
    ok(&with_out(&args, &killed));
    let mut worst = 0.0f32;
    for m in ["sft", "patcher"] {
        let diff = max_abs_diff(
            &reference.join(format!("models/{m}/model.safetensors")),
            &killed.join(format!("models/{m}/model.safetensors")),
        );
        println!("run: models/{m}: max |Δ weight| = {diff:e}");
        worst = worst.max(diff);
    }
    println!(
        "run: uninterrupted {t_ref:.1}s; killed in the patcher stage after outer step {} (checkpoint {ckpt})",
        before.len()
    );
    assert_eq!(worst, 0.0, "resumed weights differ from the uninterrupted run's by up to {worst}");
    let want: Vec<u64> = (1..=before.len() as u64).chain(ckpt + 1..=16).collect();
    assert_eq!(logged_steps(&train.join("metrics.jsonl")), want, "patcher's logged steps");
    for e in std::fs::read_dir(reference.join("evals")).unwrap() {
        let p = e.unwrap().path();
        let q = killed.join("evals").join(p.file_name().unwrap());
        assert_eq!(eval_rows(&p), eval_rows(&q), "{}", p.display());
    }
    // `patcher compare` on the two runs: equal results give equal columns on every line.
    let md_path = d.join("compare.md");
    ok(&strings(&["compare", &s(&reference), &s(&killed), "--labels", "reference,resumed", "--out", &s(&md_path)]));
    let md = std::fs::read_to_string(&md_path).unwrap();
    assert!(md.contains("| Defense, attack @ steps | reference | resumed |"), "{md}");
    let lines: Vec<&str> = md.lines().filter(|l| l.starts_with("| SFT") || l.starts_with("| Patcher")).collect();
    assert!(lines.len() >= 8, "{md}");
    for l in lines {
        let cells: Vec<&str> = l.split(" | ").skip(1).collect();
        assert_eq!(cells[0], cells[1].trim_end_matches(" |"), "{l}");
    }
    let bad = run(&strings(&["compare", &s(&reference), &s(&killed), "--labels", "one"]));
    assert!(!bad.status.success() && String::from_utf8_lossy(&bad.stderr).contains("1 labels for 2 runs"));
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn fuzz_command_finds_no_panic() {
    let d = tempdir("fuzz");
    let crashes = d.join("crashes");
    let out =
        ok(&strings(&["fuzz", "--target", "all", "--iterations", "20000", "--seed", "11", "--crashes", &s(&crashes)]));
    let text = String::from_utf8_lossy(&out.stdout);
    print!("{text}");
    for t in ["gguf", "safetensors", "data"] {
        let line = text
            .lines()
            .find(|l| l.starts_with(&format!("fuzz {t}: 20000 inputs")))
            .unwrap_or_else(|| panic!("no {t} line"));
        assert!(line.contains(" 0 panics"), "{line}");
    }
    assert!(!crashes.exists(), "crash inputs were saved");
    let _ = std::fs::remove_dir_all(&d);
}
