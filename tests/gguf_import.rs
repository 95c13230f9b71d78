//! GGUF import against the Python references in `tests/fixtures` (made by
//! `scripts/make_fixtures.py` with the `gguf` and `tokenizers` packages): every tensor of
//! `tiny-llama.gguf` dequantized and un-permuted as gguf-py does, the model config, and the
//! token ids of tricky strings; and `tiny-gemma3.gguf` (a Gemma 3 with a truncated copy of the
//! real SentencePiece vocabulary) against transformers' own GGUF loader: every tensor (norms
//! shifted back by 1), the config, and the ids of its converted tokenizer. Also: the reader
//! survives truncated and mutated copies of the fixture without panicking or making an
//! allocation out of proportion to the file.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::path::{Path, PathBuf};

use patcher::io::gguf::GgufFile;
use patcher::io::gguf::import::import_gguf;
use serde_json::Value;

/// Records the largest single allocation made by the current thread.
struct MaxAlloc;

thread_local! {
    static LARGEST: Cell<usize> = const { Cell::new(0) };
}

fn note(size: usize) {
    let _ = LARGEST.try_with(|m| m.set(m.get().max(size)));
}

// SAFETY: forwards to the system allocator unchanged; only records sizes.
unsafe impl GlobalAlloc for MaxAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOC: MaxAlloc = MaxAlloc;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

fn json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

/// A temporary directory removed on drop.
struct TestDir(PathBuf);

impl Drop for TestDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Import the fixture GGUF into a private temporary directory.
fn imported(tag: &str) -> TestDir {
    let dir = imported_file("tiny-llama.gguf", tag);
    let summary = import_gguf(&fixture("tiny-llama.gguf"), &dir.0).unwrap();
    assert_eq!(summary.architecture, "llama");
    assert_eq!(summary.n_tensors, 21);
    assert!(!summary.tied_embeddings);
    dir
}

/// A fresh private directory for importing the fixture `file`.
fn imported_file(file: &str, tag: &str) -> TestDir {
    let out = std::env::temp_dir().join(format!("patcher-gguf-it-{file}-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    TestDir(out)
}

/// `tiny-gemma3.gguf` imported into a private temporary directory.
fn imported_gemma3(tag: &str) -> TestDir {
    let dir = imported_file("tiny-gemma3.gguf", tag);
    let summary = import_gguf(&fixture("tiny-gemma3.gguf"), &dir.0).unwrap();
    assert_eq!((summary.architecture.as_str(), summary.n_tensors, summary.n_layers), ("gemma3", 28, 2));
    assert!(summary.tied_embeddings);
    dir
}

fn f32s(bytes: &[u8]) -> Vec<f32> {
    bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect()
}

#[test]
fn fixture_tensors_match_gguf_py() {
    let dir = imported("tensors");
    let worst = max_tensor_diff(&dir.0.join("model.safetensors"), &fixture("tiny-llama.gguf.expected.safetensors"));
    assert!(worst <= 1e-6, "max abs difference {worst}");
}

#[test]
fn gemma3_fixture_tensors_match_transformers_gguf_load() {
    let dir = imported_gemma3("tensors");
    let worst = max_tensor_diff(&dir.0.join("model.safetensors"), &fixture("tiny-gemma3.gguf.expected.safetensors"));
    // The same dequantization and the same f32 subtraction: bit-identical.
    assert_eq!(worst, 0.0);
}

/// Largest absolute difference between two safetensors files, which must hold the same f32
/// tensors by name and shape; prints it with the tensor where it occurs.
fn max_tensor_diff(ours: &Path, reference: &Path) -> f32 {
    let ours = std::fs::read(ours).unwrap();
    let ours = safetensors::SafeTensors::deserialize(&ours).unwrap();
    let want = std::fs::read(reference).unwrap();
    let want = safetensors::SafeTensors::deserialize(&want).unwrap();
    let mut names: Vec<String> = want.names().into_iter().map(String::from).collect();
    names.sort();
    let mut ours_names: Vec<String> = ours.names().into_iter().map(String::from).collect();
    ours_names.sort();
    assert_eq!(ours_names, names);
    let mut worst = (0.0f32, String::new());
    for name in &names {
        let (a, b) = (ours.tensor(name).unwrap(), want.tensor(name).unwrap());
        assert_eq!(a.shape(), b.shape(), "{name}");
        assert_eq!(b.dtype(), safetensors::Dtype::F32, "{name}");
        let (x, y) = (f32s(a.data()), f32s(b.data()));
        let diff = x.iter().zip(&y).map(|(x, y)| (x - y).abs()).fold(0.0f32, f32::max);
        if diff >= worst.0 {
            worst = (diff, name.clone());
        }
    }
    eprintln!("{} tensors, max abs difference {:e} ({})", names.len(), worst.0, worst.1);
    worst.0
}

#[test]
fn gemma3_fixture_config_matches_transformers() {
    let dir = imported_gemma3("config");
    let ours = json(&dir.0.join("config.json"));
    let want = json(&fixture("tiny-gemma3.gguf.expected.json"));
    let want = &want["config"];
    for (key, value) in want.as_object().unwrap() {
        match key.as_str() {
            // transformers' GGUF loader leaves Gemma3TextConfig's default (256) here; the import
            // follows llama.cpp, which scales by the head size (16) for every size but 27B.
            "query_pre_attn_scalar" => {
                assert_eq!((value, &ours[key]), (&serde_json::json!(256), &serde_json::json!(16)));
            }
            "rms_norm_eps" => assert!((ours[key].as_f64().unwrap() - value.as_f64().unwrap()).abs() < 1e-12),
            _ => assert_eq!(&ours[key], value, "config.json {key}"),
        }
    }
    assert_eq!(ours["architectures"], serde_json::json!(["Gemma3ForCausalLM"]));
    let tc = json(&dir.0.join("tokenizer_config.json"));
    assert_eq!(tc["chat_template"], patcher::io::gguf::tokenizer::GEMMA_CHAT_TEMPLATE);
    assert_eq!((tc["bos_token"].as_str(), tc["eos_token"].as_str()), (Some("<bos>"), Some("<eos>")));
    assert_eq!((tc["pad_token"].as_str(), tc["add_bos_token"].as_bool()), (Some("<pad>"), Some(true)));
    let g = json(&dir.0.join("generation_config.json"));
    assert_eq!(g["eos_token_id"], serde_json::json!([1, 106]));
}

#[test]
fn gemma3_fixture_tokenizer_matches_transformers_conversion() {
    let dir = imported_gemma3("tokenizer");
    let ours = tokenizers::Tokenizer::from_file(dir.0.join("tokenizer.json")).unwrap();
    let want = json(&fixture("tiny-gemma3.gguf.expected.json"));
    let want = &want["tokenizer"];
    assert_eq!(ours.get_vocab_size(true) as u64, want["vocab_size"].as_u64().unwrap());
    let tj = json(&dir.0.join("tokenizer.json"));
    assert_eq!(tj["model"]["merges"].as_array().unwrap().len() as u64, want["n_merges"].as_u64().unwrap());
    let cases = want["cases"].as_array().unwrap();
    for case in cases {
        let text = case["text"].as_str().unwrap();
        let ids: Vec<u32> = serde_json::from_value(case["ids"].clone()).unwrap();
        assert_eq!(ours.encode(text, false).unwrap().get_ids(), ids, "ids of {text:?}");
        let with_bos: Vec<u32> = std::iter::once(2).chain(ids.iter().copied()).collect();
        assert_eq!(ours.encode(text, true).unwrap().get_ids(), with_bos, "ids of {text:?} with BOS");
        assert_eq!(ours.decode(&ids, false).unwrap(), case["decoded"].as_str().unwrap(), "decode of {text:?}");
    }
    eprintln!("{} Gemma tokenizer cases identical", cases.len());
}

#[test]
fn fixture_config_matches_transformers() {
    let dir = imported("config");
    let out = &dir.0;
    let ours = json(&out.join("config.json"));
    let want = json(&fixture("tiny-llama/config.json"));
    for key in [
        "architectures",
        "model_type",
        "hidden_size",
        "intermediate_size",
        "num_hidden_layers",
        "num_attention_heads",
        "num_key_value_heads",
        "head_dim",
        "rms_norm_eps",
        "rope_theta",
        "max_position_embeddings",
        "vocab_size",
        "tie_word_embeddings",
        "bos_token_id",
        "eos_token_id",
        "hidden_act",
        "attention_bias",
    ] {
        assert_eq!(ours[key], want[key], "config.json {key}");
    }
    assert_eq!(ours["pad_token_id"], 2); // the GGUF names a pad token; the HF original has none
    assert_eq!(ours["torch_dtype"], "float32");
    let gen_config = json(&out.join("generation_config.json"));
    assert_eq!((gen_config["bos_token_id"].as_u64(), gen_config["eos_token_id"].as_u64()), (Some(1), Some(2)));

    let tc = json(&out.join("tokenizer_config.json"));
    let want = json(&fixture("tokenizer/tokenizer_config.json"));
    for key in ["chat_template", "bos_token", "eos_token", "pad_token", "unk_token", "add_bos_token"] {
        assert_eq!(tc[key], want[key], "tokenizer_config.json {key}");
    }
    assert_eq!(tc["tokenizer_class"], "PreTrainedTokenizerFast");
    assert_eq!(tc["model_max_length"], 256);
}

#[test]
fn fixture_tokenizer_matches_python_tokenizers() {
    let dir = imported("tokenizer");
    let out = &dir.0;
    let ours = tokenizers::Tokenizer::from_file(out.join("tokenizer.json")).unwrap();
    let reference = tokenizers::Tokenizer::from_file(fixture("tokenizer/tokenizer.json")).unwrap();
    assert_eq!(ours.get_vocab_size(true), 512);
    let cases = json(&fixture("tokenizer/cases.json"));
    let cases = cases.as_array().unwrap();
    assert!(cases.len() >= 40);
    for case in cases {
        let text = case["text"].as_str().unwrap();
        let ids: Vec<u32> = serde_json::from_value(case["ids"].clone()).unwrap();
        let got = ours.encode(text, false).unwrap();
        assert_eq!(got.get_ids(), ids, "ids of {text:?}");
        assert_eq!(reference.encode(text, false).unwrap().get_ids(), ids, "reference {text:?}");
        let decoded = ours.decode(&ids, false).unwrap();
        assert_eq!(decoded, case["decoded"].as_str().unwrap(), "decode of {text:?}");
    }
    eprintln!("{} tokenizer cases identical", cases.len());
}

/// Truncations (every length through the metadata and tensor infos, every 7th byte of the
/// data) and seeded random byte mutations of the fixture: each parse is `Ok` or `Err`, never a
/// panic, and no single allocation exceeds 16x the file size.
#[test]
fn corrupt_fixture_copies_never_panic_or_overallocate() {
    let good = std::fs::read(fixture("tiny-llama.gguf")).unwrap();
    let full = GgufFile::from_bytes("fixture", good.clone()).unwrap();
    let data_offset = full.data_offset() as usize;
    // Bytes after the end of the last tensor (alignment padding) may be cut harmlessly.
    let needed = full.tensors().iter().map(|t| data_offset + (t.offset + t.n_bytes) as usize);
    let needed = needed.max().unwrap_or(data_offset);
    let limit = 16 * good.len();
    let check = |bytes: Vec<u8>| -> bool {
        let len = bytes.len();
        LARGEST.with(|m| m.set(0));
        let ok = match GgufFile::from_bytes("mutant.gguf", bytes) {
            Ok(f) => {
                for t in f.tensors() {
                    let _ = f.tensor_f32(&t.name);
                }
                true
            }
            Err(e) => {
                assert!(!e.to_string().is_empty());
                false
            }
        };
        let largest = LARGEST.with(|m| m.get());
        assert!(largest <= limit + len, "allocation of {largest} bytes for a {len}-byte file");
        ok
    };
    let lengths = (0..data_offset).chain((data_offset..needed).step_by(7));
    let mut parsed = 0;
    for n in lengths {
        parsed += check(good[..n].to_vec()) as usize;
    }
    assert_eq!(parsed, 0, "a truncated file parsed");

    let mut state = 0x00dd_ba11_u64;
    let mut next = move || {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    };
    let (mut ok, mut total) = (0, 3000);
    for i in 0..total {
        let mut b = good.clone();
        // Half the mutations hit the header region, where they matter most.
        let span = if i % 2 == 0 { data_offset } else { b.len() };
        for _ in 0..1 + next() % 3 {
            let at = (next() % span as u64) as usize;
            b[at] = match next() % 4 {
                0 => b[at] ^ (1 << (next() % 8)),
                1 => 0xFF,
                2 => 0,
                _ => next() as u8,
            };
        }
        ok += check(b) as usize;
    }
    total -= ok;
    eprintln!("mutations: {ok} parsed, {total} rejected");
}
