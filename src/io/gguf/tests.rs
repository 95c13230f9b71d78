//! Unit tests of the GGUF reader: round trips through the test writer, typed accessors,
//! specific corruptions, and truncation / byte-flip robustness.

use super::test_writer::Writer;
use super::*;

fn h(x: f32) -> [u8; 2] {
    half::f16::from_f32(x).to_bits().to_le_bytes()
}

/// A small file exercising every value type, nested arrays and several tensor types.
fn sample() -> Writer {
    let mut w = Writer::new();
    w.str("general.architecture", "llama")
        .u32("llama.block_count", 2)
        .f32("llama.attention.layer_norm_rms_epsilon", 1e-5)
        .every_scalar()
        .strs("tokens", &["a", "b c", "é"])
        .kv("types", GgufValue::Array(GgufArray::I32(vec![1, 3, 1])))
        .kv("scores", GgufValue::Array(GgufArray::F32(vec![0.0, -1.5])))
        .kv(
            "nested",
            GgufValue::Array(GgufArray::Array(vec![GgufArray::U8(vec![1, 2]), GgufArray::Bool(vec![false])])),
        );
    w.tensor_f32("f32", &[2, 3], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
    w.tensor("f16", &[2], GgmlType::F16, [h(0.5), h(-4.0)].concat());
    let mut q8 = h(0.25).to_vec();
    q8.extend((0..64).map(|i: i32| (i - 32) as i8 as u8).take(32));
    w.tensor("q8", &[32, 1], GgmlType::Q8_0, q8);
    let mut q41 = [h(1.0), h(-2.0)].concat();
    q41.extend([0x10u8; 16]); // low nibble 0, high nibble 1
    w.tensor("q41", &[32], GgmlType::Q4_1, q41);
    w
}

#[test]
fn round_trip_metadata_and_tensors() {
    let f = GgufFile::from_bytes("sample.gguf", sample().to_bytes()).unwrap();
    assert_eq!(f.version(), 3);
    assert_eq!(f.alignment(), 32);
    assert_eq!(f.data_offset() % 32, 0);
    assert_eq!(f.get_str("general.architecture").unwrap(), "llama");
    assert_eq!(f.get_u32("llama.block_count").unwrap(), 2);
    assert_eq!(f.get_f32("llama.attention.layer_norm_rms_epsilon").unwrap(), 1e-5);
    assert_eq!(f.get_u32("u8").unwrap(), 200);
    assert_eq!(f.get("i8"), Some(&GgufValue::I8(-3)));
    assert_eq!(f.get_u32("u16").unwrap(), 65000);
    assert_eq!(f.get("i16"), Some(&GgufValue::I16(-30000)));
    assert_eq!(f.get_u64("u64").unwrap(), 1 << 40);
    assert_eq!(f.get("i64"), Some(&GgufValue::I64(-(1 << 40))));
    assert_eq!(f.get_f32("f64").unwrap(), 0.1);
    assert!(f.get_bool("bool").unwrap());
    assert_eq!(f.get_str_array("tokens").unwrap(), ["a", "b c", "é"]);
    assert_eq!(f.get_int_array("types").unwrap(), [1, 3, 1]);
    assert_eq!(f.get_f32_array("scores").unwrap(), [0.0, -1.5]);
    match f.get("nested") {
        Some(GgufValue::Array(GgufArray::Array(v))) => {
            assert_eq!(v, &[GgufArray::U8(vec![1, 2]), GgufArray::Bool(vec![false])])
        }
        other => panic!("nested: {other:?}"),
    }
    assert_eq!(f.metadata().len(), 16);

    assert_eq!(f.tensors().len(), 4);
    let (shape, x) = f.tensor_f32("f32").unwrap();
    assert_eq!((shape, x), (vec![2, 3], vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]));
    assert_eq!(f.tensor_info("f32").unwrap().dims, [3, 2]);
    assert_eq!(f.tensor_f32("f16").unwrap(), (vec![2], vec![0.5, -4.0]));
    let (shape, x) = f.tensor_f32("q8").unwrap();
    assert_eq!(shape, [1, 32]);
    assert_eq!(x[0], -8.0);
    assert_eq!(x[31], -0.25);
    let (_, x) = f.tensor_f32("q41").unwrap();
    assert_eq!((x[0], x[16]), (-2.0, -1.0));
}

#[test]
fn custom_alignment_and_v2() {
    let mut w = sample();
    w.alignment = 64;
    w.version = 2;
    w.u32("general.alignment", 64);
    let f = GgufFile::from_bytes("a.gguf", w.to_bytes()).unwrap();
    assert_eq!((f.version(), f.alignment()), (2, 64));
    assert_eq!(f.data_offset() % 64, 0);
    assert_eq!(f.tensor_f32("f16").unwrap().1, [0.5, -4.0]);
}

#[test]
fn accessor_errors_name_the_key() {
    let f = GgufFile::from_bytes("x.gguf", sample().to_bytes()).unwrap();
    let e = f.get_u32("nope").unwrap_err().to_string();
    assert!(e.contains("x.gguf") && e.contains("\"nope\""), "{e}");
    let e = f.get_u32("general.architecture").unwrap_err().to_string();
    assert!(e.contains("general.architecture") && e.contains("string"), "{e}");
    let e = f.get_u32("i8").unwrap_err().to_string();
    assert!(e.contains("\"i8\"") && e.contains("-3"), "{e}");
    let e = f.get_str_array("types").unwrap_err().to_string();
    assert!(e.contains("array of 3 i32"), "{e}");
    assert_eq!(f.get_u32_opt("nope").unwrap(), None);
    assert!(f.get_u32_opt("tokens").is_err());
    let e = f.tensor_f32("missing").unwrap_err().to_string();
    assert!(e.contains("\"missing\""), "{e}");
}

#[test]
fn unsupported_tensor_type_is_named() {
    let mut w = Writer::new();
    w.tensor("blk.0.ffn_up.weight", &[256], GgmlType::IQ2_XXS, vec![0; 66]);
    let f = GgufFile::from_bytes("q.gguf", w.to_bytes()).unwrap();
    let e = f.tensor_f32("blk.0.ffn_up.weight").unwrap_err().to_string();
    assert!(e.contains("unsupported tensor type IQ2_XXS for tensor \"blk.0.ffn_up.weight\""), "{e}");
}

fn err_of(bytes: Vec<u8>) -> String {
    GgufFile::from_bytes("bad.gguf", bytes).unwrap_err().to_string()
}

#[test]
fn specific_corruptions_are_reported() {
    let good = sample().to_bytes();
    let mut b = good.clone();
    b[0] = b'X';
    assert!(err_of(b).contains("not a GGUF file"));
    let mut b = good.clone();
    b[4..8].copy_from_slice(&1u32.to_le_bytes());
    assert!(err_of(b).contains("version 1"));
    let mut b = good.clone();
    b[4..8].copy_from_slice(&3u32.to_be_bytes());
    assert!(err_of(b).contains("big-endian"));
    let mut b = good.clone();
    b[8..16].copy_from_slice(&u64::MAX.to_le_bytes());
    assert!(err_of(b).contains("tensor count"));
    let mut b = good.clone();
    b[16..24].copy_from_slice(&(1u64 << 60).to_le_bytes());
    assert!(err_of(b).contains("metadata count"));
    // First key length -> huge.
    let mut b = good.clone();
    b[24..32].copy_from_slice(&(u64::MAX / 2).to_le_bytes());
    assert!(err_of(b).contains("truncated"));
    let f = GgufFile::from_bytes("good.gguf", good.clone()).unwrap();
    let q = f.tensor_info("q41").unwrap();
    let end = (f.data_offset() + q.offset + q.n_bytes) as usize;
    assert!(err_of(good[..end - 1].to_vec()).contains("data of tensor \"q41\""));

    let mut w = Writer::new();
    w.u32("general.alignment", 24);
    assert!(err_of(w.to_bytes()).contains("power-of-two"));
    let mut w = Writer::new();
    w.u32("k", 1).u32("k", 2);
    assert!(err_of(w.to_bytes()).contains("duplicate metadata key \"k\""));
    let mut w = Writer::new();
    w.tensor("t", &[16], GgmlType::Q4_0, vec![0; 9]);
    assert!(err_of(w.to_bytes()).contains("\"t\""));
    let mut w = Writer::new();
    w.tensor("t", &[1, 1, 1, 1, 1], GgmlType::F32, vec![0; 4]);
    assert!(err_of(w.to_bytes()).contains("5 dims"));
    let mut w = Writer::new();
    w.tensor("t", &[1u64 << 62, 8], GgmlType::F32, vec![0; 4]);
    assert!(err_of(w.to_bytes()).contains("\"t\""));
    let mut w = Writer::new();
    w.tensor_f32("t", &[1], &[1.0]).tensor_f32("t", &[1], &[2.0]);
    assert!(err_of(w.to_bytes()).contains("duplicate tensor name"));
}

/// Checks that hold for anything the reader accepts: every tensor lies inside the file and
/// every array is no longer than the file; then reading every tensor must not panic.
fn exercise(f: &GgufFile, len: usize) {
    for t in f.tensors() {
        assert!(f.data_offset() + t.offset + t.n_bytes <= len as u64);
        let _ = f.tensor_f32(&t.name);
    }
    for (k, v) in f.metadata() {
        if let GgufValue::Array(a) = v {
            assert!(a.len() <= len);
        }
        let _ = (f.get_u32(k), f.get_f32(k), f.get_str(k), f.get_str_array(k));
        let _ = (f.get_int_array(k), f.get_bool(k), f.get_f32_array(k));
    }
}

#[test]
fn every_truncation_is_an_error_not_a_panic() {
    let good = sample().to_bytes();
    let full = GgufFile::from_bytes("t.gguf", good.clone()).unwrap();
    // The writer pads after the last tensor too; cutting only that padding is harmless.
    let needed = full.tensors().iter().map(|t| full.data_offset() + t.offset + t.n_bytes);
    let needed = needed.max().unwrap() as usize;
    assert!(needed < good.len());
    for n in 0..good.len() {
        match GgufFile::from_bytes("t.gguf", good[..n].to_vec()) {
            Ok(f) if n >= needed => exercise(&f, n),
            Ok(f) => panic!("truncated to {n} of {} bytes but parsed: {f:?}", good.len()),
            Err(e) => assert!(!e.to_string().is_empty()),
        }
    }
    exercise(&GgufFile::from_bytes("t.gguf", good.clone()).unwrap(), good.len());
}

#[test]
fn random_byte_flips_never_panic() {
    let good = sample().to_bytes();
    let mut state = 0x5eed_u64;
    let mut next = move || {
        // SplitMix64.
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    };
    let (mut ok, mut err) = (0, 0);
    for _ in 0..5000 {
        let mut b = good.clone();
        for _ in 0..1 + next() % 4 {
            let i = (next() % b.len() as u64) as usize;
            b[i] = match next() % 3 {
                0 => b[i] ^ (1 << (next() % 8)),
                1 => 0xFF,
                _ => next() as u8,
            };
        }
        match GgufFile::from_bytes("m.gguf", b) {
            Ok(f) => {
                exercise(&f, good.len());
                ok += 1;
            }
            Err(_) => err += 1,
        }
    }
    assert!(ok > 0 && err > 0, "ok {ok}, err {err}");
}
