//! A randomised-input harness for the readers of untrusted files: `patcher fuzz`.
//!
//! Targets: `gguf` (header, metadata, tensor infos, dequantisation of every tensor, and the
//! whole import conversion: hyper-parameters, tensor plan, tokenizer, safetensors image),
//! `safetensors` (the header reader and the f32 conversion), and `data` (conversation files:
//! JSONL, JSON, CSV, TSV, with the detected and an explicit column layout, failing or skipping
//! bad rows). Each input is a valid seed file put through one to four mutations, a small
//! hand-written mutator in the spirit of AFL's havoc stage: bit flips, interesting bytes,
//! truncation, inserted and deleted ranges, duplicated chunks, dictionary tokens, numbers in
//! text replaced by extreme ones, and length fields overwritten with overflowing values (any
//! little-endian u64 of the seed small enough to be a length, count or offset is a candidate).
//! One input in 64 is plain random bytes.
//!
//! Errors are the expected outcome and are counted by kind; a panic is a bug in the reader,
//! counted and kept (message and input) so it can be reproduced. The inputs are a pure
//! function of the seed. The panic hook is replaced while a campaign runs (the default one
//! would print every caught panic) and restored afterwards.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::time::Instant;

use crate::data::readers::{FieldMap, ReadOptions, parse_conversations};
use crate::data::records::Format;
use crate::io::gguf::quant::GgmlType;
use crate::io::gguf::{GgufArray, GgufFile, GgufValue};
use crate::rng::Rng;

/// What to fuzz.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Gguf,
    Safetensors,
    Data,
}

impl Target {
    pub const ALL: [Target; 3] = [Target::Gguf, Target::Safetensors, Target::Data];

    pub fn name(self) -> &'static str {
        match self {
            Target::Gguf => "gguf",
            Target::Safetensors => "safetensors",
            Target::Data => "data",
        }
    }

    /// `gguf`, `safetensors`, `data`, or `all` (every target).
    pub fn parse_list(s: &str) -> Option<Vec<Target>> {
        match s {
            "all" => Some(Self::ALL.to_vec()),
            _ => Self::ALL.iter().find(|t| t.name() == s).map(|t| vec![*t]),
        }
    }
}

/// An input that made a reader panic.
#[derive(Debug, Clone)]
pub struct Crash {
    pub iteration: u64,
    pub message: String,
    pub input: Vec<u8>,
}

/// The outcome of a campaign on one target.
#[derive(Debug, Clone)]
pub struct Report {
    pub target: Target,
    pub seed: u64,
    pub inputs: u64,
    pub seconds: f64,
    /// Inputs the reader accepted.
    pub ok: u64,
    /// Inputs rejected with an error, by kind (`stage/Variant: message with numbers and
    /// quoted names elided`).
    pub errors: BTreeMap<String, u64>,
    pub panics: u64,
    /// The first few panics (at most [`KEPT_CRASHES`]).
    pub crashes: Vec<Crash>,
    /// The slowest single input, in seconds, and its index.
    pub slowest_s: f64,
    pub slowest_iteration: u64,
}

pub const KEPT_CRASHES: usize = 5;

impl Report {
    pub fn errors_total(&self) -> u64 {
        self.errors.values().sum()
    }

    pub fn inputs_per_s(&self) -> f64 {
        self.inputs as f64 / self.seconds.max(1e-9)
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "fuzz {}: {} inputs in {:.1}s ({:.0} inputs/s), seed {}: {} accepted, {} errors, {} panics; slowest input {:.2} ms (#{})",
            self.target.name(),
            self.inputs,
            self.seconds,
            self.inputs_per_s(),
            self.seed,
            self.ok,
            self.errors_total(),
            self.panics,
            1e3 * self.slowest_s,
            self.slowest_iteration
        )?;
        let mut kinds: Vec<(&String, &u64)> = self.errors.iter().collect();
        kinds.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
        const SHOWN: usize = 15;
        writeln!(f, "  errors by kind ({} kinds):", kinds.len())?;
        for (k, n) in kinds.iter().take(SHOWN) {
            writeln!(f, "  {n:>9}  {k}")?;
        }
        if kinds.len() > SHOWN {
            let rest: u64 = kinds[SHOWN..].iter().map(|k| *k.1).sum();
            writeln!(f, "  {rest:>9}  ({} more kinds)", kinds.len() - SHOWN)?;
        }
        for c in &self.crashes {
            writeln!(
                f,
                "  PANIC at input {} ({} bytes): {}",
                c.iteration,
                c.input.len(),
                c.message.replace('\n', " ")
            )?;
        }
        Ok(())
    }
}

/// One seed input: its bytes, how to read it, and the offsets of its plausible length fields.
struct Seed {
    bytes: Vec<u8>,
    /// For `data`: the file format.
    format: Option<Format>,
    lengths: Vec<usize>,
}

impl Seed {
    fn new(bytes: Vec<u8>, format: Option<Format>) -> Self {
        // Any u64 that could be a length, count or offset into the file (or just past it).
        let limit = 4 * bytes.len() as u64 + 64;
        let lengths = (0..bytes.len().saturating_sub(7))
            .filter(|&i| {
                let v = u64::from_le_bytes(bytes[i..i + 8].try_into().expect("8 bytes"));
                v > 0 && v <= limit
            })
            .collect();
        Self { bytes, format, lengths }
    }
}

const INTERESTING_U64: [u64; 12] =
    [0, 1, 7, 8, 255, 1 << 16, u32::MAX as u64, 1 << 32, (1 << 62) + 1, i64::MAX as u64, 1 << 63, u64::MAX];

const NUMBERS: [&str; 12] = [
    "0",
    "-1",
    "1e400",
    "-0",
    "4294967296",
    "18446744073709551615",
    "18446744073709551616",
    "9223372036854775807",
    "0.5",
    "99999999999999999999999999",
    "NaN",
    "",
];

const DATA_DICT: [&str; 34] = [
    "{",
    "}",
    "[",
    "]",
    "\"",
    ",",
    ":",
    "\n",
    "\r\n",
    "\\",
    "\\u0000",
    "\\ud800",
    "null",
    "true",
    "1e999",
    "\"messages\"",
    "\"role\"",
    "\"content\"",
    "\"user\"",
    "\"assistant\"",
    "\"system\"",
    "\"prompt\"",
    "\"response\"",
    "\"conversations\"",
    "\"from\"",
    "\"value\"",
    "\"gpt\"",
    "\"instruction\"",
    "\t",
    "\u{feff}",
    "é",
    "\"\"",
    "[]",
    "{}",
];

const ST_DICT: [&str; 16] = [
    "\"dtype\"",
    "\"F32\"",
    "\"F16\"",
    "\"BF16\"",
    "\"F64\"",
    "\"I64\"",
    "\"shape\"",
    "\"data_offsets\"",
    "[0,0]",
    "[]",
    "\"__metadata__\"",
    "{}",
    "null",
    ",",
    "}",
    "\"",
];

const GGUF_DICT: [&str; 10] = [
    "GGUF",
    "general.alignment",
    "general.architecture",
    "llama",
    "qwen2",
    "blk.0.attn_q.weight",
    "token_embd.weight",
    "tokenizer.ggml.tokens",
    "llama.block_count",
    "\u{0}",
];

struct Mutator {
    rng: Rng,
}

impl Mutator {
    fn below(&mut self, n: usize) -> usize {
        if n == 0 { 0 } else { self.rng.below(n) }
    }

    /// `seed` mutated into `out`.
    fn mutate(&mut self, seed: &Seed, dict: &[&str], out: &mut Vec<u8>) {
        out.clear();
        if self.below(64) == 0 {
            let n = self.below(512);
            out.extend((0..n).map(|_| self.rng.next_u64() as u8));
            return;
        }
        out.extend_from_slice(&seed.bytes);
        // Mostly one mutation (small steps away from valid), sometimes a pile-up.
        let n = [1, 1, 1, 2, 2, 3, 4][self.below(7)];
        for _ in 0..n {
            self.one(seed, dict, out);
        }
    }

    fn one(&mut self, seed: &Seed, dict: &[&str], out: &mut Vec<u8>) {
        let len = out.len();
        let pos = self.below(len);
        match self.below(11) {
            0 if len > 0 => out[pos] ^= 1 << self.below(8),
            1 if len > 0 => out[pos] = [0, 1, 0x7f, 0x80, 0xff, b'0', b'"', b'\n'][self.below(8)],
            2 if len > 0 => out[pos] = self.rng.next_u64() as u8,
            3 => out.truncate(pos),
            4 => {
                let n = 1 + self.below(16);
                let bytes: Vec<u8> = (0..n).map(|_| self.rng.next_u64() as u8).collect();
                out.splice(pos..pos, bytes);
            }
            5 if len > 0 => {
                let end = (pos + 1 + self.below(32)).min(len);
                out.drain(pos..end);
            }
            6 if len > 0 => {
                let from = self.below(len);
                let n = (1 + self.below(64)).min(len - from);
                let chunk = out[from..from + n].to_vec();
                out.splice(pos..pos, chunk);
            }
            7 => {
                let tok = dict[self.below(dict.len())].as_bytes().to_vec();
                out.splice(pos..pos, tok);
            }
            8 => self.length_field(seed, out),
            9 => self.number(out),
            _ if len >= 4 => {
                // A u32 anywhere: counts, types, versions, dims are u32 or start like one.
                let at = self.below(len - 3);
                let v = [0u32, 1, 2, 3, 4, 13, 0x7fff_ffff, 0x8000_0000, u32::MAX][self.below(9)];
                out[at..at + 4].copy_from_slice(&v.to_le_bytes());
            }
            _ => {}
        }
    }

    /// Overwrite a plausible length field of the seed (if it is still inside `out`) with an
    /// off-by-one, doubled or overflowing value.
    fn length_field(&mut self, seed: &Seed, out: &mut [u8]) {
        if seed.lengths.is_empty() {
            return;
        }
        let at = seed.lengths[self.below(seed.lengths.len())];
        if at + 8 > out.len() {
            return;
        }
        let v = u64::from_le_bytes(out[at..at + 8].try_into().expect("8 bytes"));
        let new = match self.below(6) {
            0 => v.wrapping_add(1),
            1 => v.wrapping_sub(1),
            2 => v.wrapping_mul(2),
            3 => v.wrapping_add(out.len() as u64),
            4 => v.wrapping_add(1 << 32),
            _ => INTERESTING_U64[self.below(INTERESTING_U64.len())],
        };
        out[at..at + 8].copy_from_slice(&new.to_le_bytes());
    }

    /// Replace a run of ASCII digits (the next one after a random position) by an extreme
    /// number: text offsets, shapes and counts.
    fn number(&mut self, out: &mut Vec<u8>) {
        let start = self.below(out.len());
        let Some(a) = (start..out.len()).find(|&i| out[i].is_ascii_digit()) else { return };
        let b = (a..out.len()).find(|&i| !out[i].is_ascii_digit()).unwrap_or(out.len());
        let n = NUMBERS[self.below(NUMBERS.len())].as_bytes().to_vec();
        out.splice(a..b, n);
    }
}

/// The kind of an error for the counts: `stage/Variant: reason`, the reason being the last
/// clause of the message with numbers and quoted names elided (metadata keys and tensor names
/// are whatever the mutation made them), so that errors of one kind count together.
fn kind(stage: &str, variant: &str, message: &str, file: &str) -> String {
    if ["Truncated", "BadMagic", "UnsupportedVersion", "MissingKey", "MissingTensor"].contains(&variant) {
        return format!("{stage}/{variant}");
    }
    let msg = message.strip_prefix(file).unwrap_or(message);
    let mut out = String::new();
    let (mut quote, mut last_digit, mut escaped) = (None::<char>, false, false);
    for c in msg.chars() {
        if let Some(q) = quote {
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == q {
                quote = None;
                out.push(c);
            }
            continue;
        }
        if c == '`' || c == '"' {
            quote = Some(c);
            out.push(c);
            out.push('…');
            continue;
        }
        if c.is_ascii_digit() {
            if !last_digit {
                out.push('N');
            }
            last_digit = true;
            continue;
        }
        last_digit = false;
        if !c.is_control() {
            out.push(c);
        }
    }
    let reason = out.rsplit(": ").next().unwrap_or("").trim();
    let reason: String =
        if reason.chars().count() > 64 { reason.chars().take(64).chain(['…']).collect() } else { reason.to_string() };
    format!("{stage}/{variant}: {reason}")
}

fn variant<E: fmt::Debug>(e: &E) -> String {
    let d = format!("{e:?}");
    d.split(|c: char| !c.is_alphanumeric() && c != '_').next().unwrap_or("").to_string()
}

/// One GGUF input: parse, dequantize every tensor, convert as `patcher import` would.
fn run_gguf(bytes: Vec<u8>) -> Result<(), String> {
    const FILE: &str = "fuzz.gguf";
    let err = |stage: &str, e: &crate::io::gguf::GgufError| kind(stage, &variant(e), &e.to_string(), FILE);
    let g = GgufFile::from_bytes(FILE, bytes).map_err(|e| err("parse", &e))?;
    for t in g.tensors() {
        if t.ggml_type.can_dequantize() {
            g.tensor_f32(&t.name).map_err(|e| err("dequantize", &e))?;
        }
    }
    crate::io::gguf::import::convert_gguf(&g).map_err(|e| err("import", &e))?;
    Ok(())
}

/// One safetensors input: the header reader and the f32 conversion.
fn run_safetensors(bytes: &[u8]) -> Result<(), String> {
    const FILE: &str = "fuzz.safetensors";
    crate::io::safetensors_header::parse(Path::new(FILE), bytes)
        .map(|_| ())
        .map_err(|e| kind("read", &variant(&e), &e.to_string(), FILE))
}

/// One data input, read with one of three option sets (chosen by `variant_ix`).
fn run_data(bytes: &[u8], format: Format, variant_ix: usize) -> Result<(), String> {
    let file = match format {
        Format::Jsonl => "fuzz.jsonl",
        Format::Json => "fuzz.json",
        Format::Csv => "fuzz.csv",
        Format::Tsv => "fuzz.tsv",
    };
    let fmt_name = &file[5..];
    // `read_to_string` refuses invalid UTF-8 before any parsing; the lossy text is an input
    // the parsers can meet, so that is what they get.
    let text = String::from_utf8_lossy(bytes);
    let opts = match variant_ix % 3 {
        0 => ReadOptions::default(),
        1 => ReadOptions { skip_bad_rows: true, limit: Some(50), ..Default::default() },
        _ => ReadOptions {
            fields: Some(FieldMap {
                prompt: "prompt".into(),
                response: Some("response".into()),
                system: Some("system".into()),
                category: Some("category".into()),
            }),
            ..Default::default()
        },
    };
    parse_conversations(Path::new(file), &text, format, &opts)
        .map(|_| ())
        .map_err(|e| kind(fmt_name, &variant(&e), &e.to_string(), file))
}

/// Run `iterations` inputs against `target`, from `seed`.
pub fn fuzz(target: Target, iterations: u64, seed: u64) -> Report {
    let seeds = match target {
        Target::Gguf => gguf_seeds(),
        Target::Safetensors => safetensors_seeds(),
        Target::Data => data_seeds(),
    };
    let dict: &[&str] = match target {
        Target::Gguf => &GGUF_DICT,
        Target::Safetensors => &ST_DICT,
        Target::Data => &DATA_DICT,
    };
    let mut m = Mutator { rng: Rng::derive(seed, target.name()) };
    let mut report = Report {
        target,
        seed,
        inputs: 0,
        seconds: 0.0,
        ok: 0,
        errors: BTreeMap::new(),
        panics: 0,
        crashes: vec![],
        slowest_s: 0.0,
        slowest_iteration: 0,
    };
    thread_local! {
        static LAST_PANIC: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) };
    }
    let previous_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|info| LAST_PANIC.with(|l| *l.borrow_mut() = info.to_string())));
    let mut input = Vec::new();
    let t0 = Instant::now();
    for i in 0..iterations {
        let s = &seeds[m.below(seeds.len())];
        m.mutate(s, dict, &mut input);
        let option_set = m.below(3);
        let t = Instant::now();
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| match target {
            Target::Gguf => run_gguf(input.clone()),
            Target::Safetensors => run_safetensors(&input),
            Target::Data => run_data(&input, s.format.unwrap_or(Format::Jsonl), option_set),
        }));
        let seconds = t.elapsed().as_secs_f64();
        if seconds > report.slowest_s {
            (report.slowest_s, report.slowest_iteration) = (seconds, i);
        }
        match outcome {
            Ok(Ok(())) => report.ok += 1,
            Ok(Err(k)) => *report.errors.entry(k).or_insert(0) += 1,
            Err(_) => {
                report.panics += 1;
                if report.crashes.len() < KEPT_CRASHES {
                    let message = LAST_PANIC.with(|l| l.borrow().clone());
                    report.crashes.push(Crash { iteration: i, message, input: input.clone() });
                }
            }
        }
        report.inputs += 1;
    }
    report.seconds = t0.elapsed().as_secs_f64();
    std::panic::set_hook(previous_hook);
    report
}

fn f16_bytes(x: f32) -> [u8; 2] {
    half::f16::from_f32(x).to_bits().to_le_bytes()
}

/// Bytes for `n` elements of `ty`: blocks whose f16 scales are small normal numbers and whose
/// quants are pseudo-random.
fn tensor_bytes(ty: GgmlType, n: u64, r: &mut Rng) -> Vec<u8> {
    let size = ty.bytes_for(n).expect("whole blocks") as usize;
    let mut out: Vec<u8> = (0..size).map(|_| r.next_u64() as u8).collect();
    match ty {
        GgmlType::F32 => {
            for c in out.chunks_exact_mut(4) {
                c.copy_from_slice(&((r.uniform() as f32) - 0.5).to_le_bytes());
            }
        }
        GgmlType::F16 => {
            for c in out.chunks_exact_mut(2) {
                c.copy_from_slice(&f16_bytes(r.uniform() as f32 - 0.5));
            }
        }
        // Block types start with an f16 scale: keep it finite.
        _ if ty.block_size() > 1 => {
            let bs = ty.type_size();
            for b in out.chunks_exact_mut(bs) {
                b[..2].copy_from_slice(&f16_bytes(0.01));
            }
        }
        _ => {}
    }
    out
}

/// The GGUF seeds: a tiny importable llama, a file with every metadata value type, and one
/// tensor of every type the reader dequantizes.
fn gguf_seeds() -> Vec<Seed> {
    use crate::io::gguf::test_writer::Writer;
    let mut r = Rng::new(7);
    let mut seeds = vec![];

    // A tiny llama: 1 block, hidden 32, 2 heads of 16, 1 kv head, ff 32, vocab 8.
    let mut w = Writer::new();
    let tokens = ["a", "b", "c", "ab", "Ġ", "<|im_start|>", "<|im_end|>", "abc"];
    w.str("general.architecture", "llama")
        .u32("llama.block_count", 1)
        .u32("llama.embedding_length", 32)
        .u32("llama.feed_forward_length", 32)
        .u32("llama.attention.head_count", 2)
        .u32("llama.attention.head_count_kv", 1)
        .u32("llama.context_length", 64)
        .f32("llama.attention.layer_norm_rms_epsilon", 1e-5)
        .f32("llama.rope.freq_base", 10000.0)
        .str("tokenizer.ggml.model", "gpt2")
        .str("tokenizer.ggml.pre", "default")
        .strs("tokenizer.ggml.tokens", &tokens)
        .kv("tokenizer.ggml.token_type", GgufValue::Array(GgufArray::I32(vec![1, 1, 1, 1, 1, 3, 3, 1])))
        .strs("tokenizer.ggml.merges", &["a b", "ab c"])
        .u32("tokenizer.ggml.bos_token_id", 5)
        .u32("tokenizer.ggml.eos_token_id", 6)
        .kv("tokenizer.ggml.add_bos_token", GgufValue::Bool(false))
        .str("tokenizer.chat_template", "{% for m in messages %}{{ m.content }}{% endfor %}");
    let (e, q, kv, ff, v) = (32u64, 32u64, 16u64, 32u64, 8u64);
    let mut t = |name: &str, dims: &[u64], ty: GgmlType| {
        let n = dims.iter().product();
        let bytes = tensor_bytes(ty, n, &mut r);
        w.tensor(name, dims, ty, bytes);
    };
    t("token_embd.weight", &[e, v], GgmlType::F32);
    t("output_norm.weight", &[e], GgmlType::F32);
    t("blk.0.attn_norm.weight", &[e], GgmlType::F32);
    t("blk.0.ffn_norm.weight", &[e], GgmlType::F32);
    t("blk.0.attn_q.weight", &[e, q], GgmlType::Q8_0);
    t("blk.0.attn_k.weight", &[e, kv], GgmlType::Q4_0);
    t("blk.0.attn_v.weight", &[e, kv], GgmlType::F16);
    t("blk.0.attn_output.weight", &[q, e], GgmlType::Q4_1);
    t("blk.0.ffn_gate.weight", &[e, ff], GgmlType::Q5_0);
    t("blk.0.ffn_up.weight", &[e, ff], GgmlType::Q5_1);
    t("blk.0.ffn_down.weight", &[ff, e], GgmlType::Q8_0);
    seeds.push(Seed::new(w.to_bytes(), None));

    // Every metadata value type, nested arrays, a 64-byte alignment.
    let mut w = Writer::new();
    w.alignment = 64;
    w.version = 2;
    w.kv("general.alignment", GgufValue::U32(64))
        .str("general.architecture", "qwen2")
        .every_scalar()
        .kv("types", GgufValue::Array(GgufArray::I32(vec![1, 3, 1])))
        .kv("scores", GgufValue::Array(GgufArray::F32(vec![0.0, -1.5])))
        .kv(
            "nested",
            GgufValue::Array(GgufArray::Array(vec![GgufArray::U8(vec![1, 2]), GgufArray::Bool(vec![false])])),
        );
    w.set("qwen2.block_count", GgufValue::U32(0));
    w.tensor_f32("f32", &[2, 3], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
    seeds.push(Seed::new(w.to_bytes(), None));

    // One block of every type the reader dequantizes.
    let mut w = Writer::new();
    for id in 0..64 {
        if let Some(ty) = GgmlType::from_id(id).filter(|t| t.can_dequantize()) {
            let n = ty.block_size() as u64 * if ty.block_size() == 1 { 4 } else { 1 };
            let bytes = tensor_bytes(ty, n, &mut r);
            w.tensor(ty.name(), &[n], ty, bytes);
        }
    }
    seeds.push(Seed::new(w.to_bytes(), None));
    seeds
}

/// The safetensors seeds: f32 tensors as patcher writes them, and a file of every float dtype.
fn safetensors_seeds() -> Vec<Seed> {
    use safetensors::Dtype;
    use safetensors::tensor::TensorView;
    let named = vec![
        ("model.embed_tokens.weight".to_string(), vec![4, 3], (0..12).map(|i| i as f32 * 0.1).collect()),
        ("model.norm.weight".to_string(), vec![3], vec![1.0, 1.0, 1.0]),
        ("lm_head.weight".to_string(), vec![4, 3], vec![0.5; 12]),
    ];
    let a = crate::io::hf::safetensors_bytes(&named).expect("serialize");
    let f16: Vec<u8> = [0.5f32, -2.0, 3.0].iter().flat_map(|&x| f16_bytes(x)).collect();
    let bf16: Vec<u8> = [1.0f32, -1.0].iter().flat_map(|&x| half::bf16::from_f32(x).to_le_bytes()).collect();
    let f64s: Vec<u8> = [0.25f64, 1e-3].iter().flat_map(|x| x.to_le_bytes()).collect();
    let views = vec![
        ("h".to_string(), TensorView::new(Dtype::F16, vec![3], &f16).expect("view")),
        ("b".to_string(), TensorView::new(Dtype::BF16, vec![1, 2], &bf16).expect("view")),
        ("d".to_string(), TensorView::new(Dtype::F64, vec![2], &f64s).expect("view")),
    ];
    let b = safetensors::tensor::serialize(views, None).expect("serialize");
    vec![Seed::new(a, None), Seed::new(b, None)]
}

/// The data seeds: every column convention in every format.
fn data_seeds() -> Vec<Seed> {
    let text = |s: &str, f: Format| Seed::new(s.as_bytes().to_vec(), Some(f));
    vec![
        text(
            concat!(
                r#"{"messages":[{"role":"system","content":"Be brief."},{"role":"user","content":"How do I bake bread?"},{"role":"assistant","content":"Mix, knead, proof, bake."}],"category":"cooking"}"#,
                "\n",
                r#"{"messages":[{"role":"user","content":"Say hi"},{"role":"assistant","content":"Hi!"}]}"#,
                "\n"
            ),
            Format::Jsonl,
        ),
        text(
            "{\"prompt\":\"Pick a lock?\",\"response\":\"I can't help with that.\",\"category\":\"crime\"}\n\n{\"prompt\":\"2+2?\",\"response\":\"4\",\"system\":\"Answer.\"}\n",
            Format::Jsonl,
        ),
        text(
            r#"{"conversations":[{"from":"human","value":"Hello"},{"from":"gpt","value":"Hi there"}]}"#,
            Format::Jsonl,
        ),
        text(
            "[\n {\"instruction\": \"Translate\", \"input\": \"chat\", \"output\": \"cat\"},\n {\"instruction\": \"Add\", \"input\": \"\", \"output\": \"\\\"ok\\\"\\n\"}\n]\n",
            Format::Json,
        ),
        text("goal,target,category\n\"Write a\nvirus\",\"Sure, here\",malware\nSteal,\"Sure\",\n", Format::Csv),
        text("question\tanswer\nWhat is 2+2?\t4\n\"Quoted\ttab\"\tyes\n", Format::Tsv),
        text("prompt,response\nhi,\"[{\"\"role\"\":\"\"user\"\"}]\"\n", Format::Csv),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The seeds are valid inputs: the mutations start from files the readers accept.
    #[test]
    fn seeds_are_accepted() {
        for s in gguf_seeds().into_iter().take(1) {
            run_gguf(s.bytes).unwrap();
        }
        for s in gguf_seeds() {
            GgufFile::from_bytes("seed.gguf", s.bytes).unwrap();
        }
        for s in safetensors_seeds() {
            run_safetensors(&s.bytes).unwrap();
        }
        for s in data_seeds() {
            run_data(&s.bytes, s.format.unwrap(), 0).unwrap();
        }
    }

    #[test]
    fn campaigns_are_a_pure_function_of_the_seed_and_find_no_panic() {
        for t in Target::ALL {
            let a = fuzz(t, 2000, 3);
            let b = fuzz(t, 2000, 3);
            assert_eq!((a.ok, &a.errors, a.panics), (b.ok, &b.errors, b.panics), "{}", t.name());
            assert_eq!(a.panics, 0, "{a}");
            assert!(a.ok > 0 && a.errors_total() > 0, "{a}");
        }
    }

    #[test]
    fn error_kinds_elide_numbers_and_names() {
        let k = kind("read", "Tensor", "f.st: tensor `x.0`: truncated: data_offsets [0, 12] run past", "f.st");
        assert_eq!(k, "read/Tensor: data_offsets [N, N] run past");
        let k = kind("parse", "Corrupt", "f.gguf: corrupt file: llama.k: string at byte 9 is not UTF-8", "f.gguf");
        assert_eq!(k, "parse/Corrupt: string at byte N is not UTF-N");
    }
}
