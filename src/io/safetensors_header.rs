//! The safetensors reader: header checks and conversion of the tensors to f32.
//!
//! Layout (huggingface/safetensors, "Format"): a little-endian `u64` header length `N`, `N`
//! bytes of JSON `{name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__":
//! {string: string}}`, then the data section, which the tensors cover exactly, without gaps or
//! overlaps (offsets are relative to its start).
//!
//! Our own reader rather than `SafeTensors::deserialize`, for the messages: every length and
//! offset is checked against the bytes actually there before anything is sliced, and an error
//! names the file and, when it is about one tensor, the tensor and its offsets. A file cut short
//! says which tensor runs past its end and how long the file should be; the crate says
//! "incomplete metadata, file not fully covered". It accepts the files the crate accepts
//! (the same exact-coverage rule), restricted to the float dtypes a model can hold.

use std::path::Path;

use serde_json::Value;

use crate::error::{Error, Result};

/// One tensor's header entry, checked against the data section.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub name: String,
    pub dtype: Dtype,
    pub shape: Vec<usize>,
    /// Byte range in the data section.
    pub begin: usize,
    pub end: usize,
}

/// The float dtypes patcher reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dtype {
    F64,
    F32,
    F16,
    BF16,
}

impl Dtype {
    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "F64" => Dtype::F64,
            "F32" => Dtype::F32,
            "F16" => Dtype::F16,
            "BF16" => Dtype::BF16,
            _ => return None,
        })
    }

    pub fn size(self) -> usize {
        match self {
            Dtype::F64 => 8,
            Dtype::F32 => 4,
            Dtype::F16 | Dtype::BF16 => 2,
        }
    }
}

/// The checked header of a safetensors image: its entries sorted by offset, and where the data
/// section starts.
#[derive(Debug, Clone, PartialEq)]
pub struct Header {
    pub entries: Vec<Entry>,
    pub data_start: usize,
}

fn format(file: &Path, why: String) -> Error {
    Error::Format { file: file.display().to_string(), why }
}

fn tensor(file: &Path, name: &str, why: String) -> Error {
    Error::Tensor { file: file.display().to_string(), tensor: name.to_string(), why }
}

/// Parse and check the header of the safetensors image `bytes` (read from `file`).
pub fn parse_header(file: &Path, bytes: &[u8]) -> Result<Header> {
    let len = bytes.len();
    let Some(n) = bytes.get(..8) else {
        return Err(format(
            file,
            format!("truncated: {len} bytes, but a safetensors file starts with an 8-byte header length"),
        ));
    };
    let n = u64::from_le_bytes(n.try_into().expect("8 bytes"));
    if n > (len - 8) as u64 {
        return Err(format(
            file,
            format!(
                "truncated or corrupt: the header length field says {n} bytes, but only {} bytes follow it",
                len - 8
            ),
        ));
    }
    let data_start = 8 + n as usize;
    let data_len = len - data_start;
    let json: serde_json::Map<String, Value> = serde_json::from_slice(&bytes[8..data_start])
        .map_err(|e| format(file, format!("the {n}-byte header is not a JSON object: {e}")))?;
    let mut entries = Vec::with_capacity(json.len());
    for (name, v) in &json {
        if name == "__metadata__" {
            let strings = v.as_object().is_some_and(|m| m.values().all(Value::is_string));
            if !strings {
                return Err(format(file, "`__metadata__` must map strings to strings".into()));
            }
            continue;
        }
        entries.push(entry(file, name, v, data_len)?);
    }
    entries.sort_by_key(|e| (e.begin, e.end));
    // The tensors tile the data section: each starts where the previous one ended.
    let mut at = 0;
    for e in &entries {
        if e.begin < at {
            return Err(tensor(
                file,
                &e.name,
                format!("data_offsets [{}, {}] overlap another tensor's bytes", e.begin, e.end),
            ));
        }
        if e.begin > at {
            return Err(format(file, format!("bytes {at}..{} of the data section belong to no tensor", e.begin)));
        }
        at = e.end;
    }
    if at != data_len {
        return Err(format(
            file,
            format!("the tensors end at byte {at} of the data section, but it has {data_len} bytes (trailing bytes)"),
        ));
    }
    Ok(Header { entries, data_start })
}

/// One header entry, checked: a float dtype, a shape whose size matches its offsets, and
/// offsets inside the `data_len` bytes of the data section.
fn entry(file: &Path, name: &str, v: &Value, data_len: usize) -> Result<Entry> {
    let bad = |why: String| tensor(file, name, why);
    let field = |k: &str| v.get(k).ok_or_else(|| bad(format!("header entry has no `{k}`")));
    let dtype_s = field("dtype")?.as_str().ok_or_else(|| bad("`dtype` is not a string".into()))?;
    let dtype = Dtype::parse(dtype_s)
        .ok_or_else(|| bad(format!("unsupported dtype {dtype_s} (expected F32, F16, BF16 or F64)")))?;
    let usizes = |k: &str| -> Result<Vec<usize>> {
        let list = field(k)?.as_array().ok_or_else(|| bad(format!("`{k}` is not a list")))?;
        list.iter()
            .map(|x| x.as_u64().and_then(|x| usize::try_from(x).ok()))
            .collect::<Option<Vec<usize>>>()
            .ok_or_else(|| {
                bad(format!("`{k}` is not a list of non-negative integers: {}", field(k).unwrap_or(&Value::Null)))
            })
    };
    let shape = usizes("shape")?;
    let offsets = usizes("data_offsets")?;
    let [begin, end] = offsets[..] else {
        return Err(bad(format!("`data_offsets` has {} numbers, expected [begin, end]", offsets.len())));
    };
    let need = shape.iter().try_fold(dtype.size(), |acc, &d| acc.checked_mul(d));
    let Some(need) = need else {
        return Err(bad(format!("shape {shape:?} of {dtype_s} overflows the address space")));
    };
    if begin > end || end - begin != need {
        return Err(bad(format!(
            "data_offsets [{begin}, {end}] do not hold shape {shape:?} of {dtype_s} ({need} bytes)"
        )));
    }
    if end > data_len {
        return Err(bad(format!(
            "truncated: data_offsets [{begin}, {end}] run past the end of the data section, which has {data_len} bytes"
        )));
    }
    Ok(Entry { name: name.to_string(), dtype, shape, begin, end })
}

/// The values of `e` (from the data section `data`) as f32.
pub fn values_f32(e: &Entry, data: &[u8]) -> Vec<f32> {
    let bytes = &data[e.begin..e.end];
    match e.dtype {
        Dtype::F32 => bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect(),
        Dtype::F16 => bytes.chunks_exact(2).map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32()).collect(),
        Dtype::BF16 => bytes.chunks_exact(2).map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32()).collect(),
        Dtype::F64 => bytes
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]) as f32)
            .collect(),
    }
}

/// Tensors as (name, shape, f32 values), in the order of their offsets.
pub type Tensors = Vec<(String, Vec<usize>, Vec<f32>)>;

/// Every tensor of the safetensors image `bytes` (read from `file`).
pub fn parse(file: &Path, bytes: &[u8]) -> Result<Tensors> {
    let h = parse_header(file, bytes)?;
    let data = &bytes[h.data_start..];
    Ok(h.entries
        .into_iter()
        .map(|e| {
            let v = values_f32(&e, data);
            (e.name, e.shape, v)
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image() -> Vec<u8> {
        let named = vec![
            ("a".to_string(), vec![2, 3], vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]),
            ("b".to_string(), vec![2], vec![-1.0, 0.5]),
        ];
        crate::io::hf::safetensors_bytes(&named).unwrap()
    }

    fn err(bytes: &[u8]) -> String {
        parse(Path::new("m.safetensors"), bytes).unwrap_err().to_string()
    }

    #[test]
    fn reads_what_the_writer_wrote() {
        let t = parse(Path::new("m.safetensors"), &image()).unwrap();
        assert_eq!(t[0], ("a".to_string(), vec![2, 3], vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]));
        assert_eq!(t[1], ("b".to_string(), vec![2], vec![-1.0, 0.5]));
    }

    #[test]
    fn errors_name_the_file_and_the_tensor() {
        let img = image();
        // Cut inside the second tensor (tensors are laid out in name order: a then b).
        let e = err(&img[..img.len() - 3]);
        assert!(e.starts_with("m.safetensors: tensor `b`: truncated: data_offsets [24, 32] run past"), "{e}");
        let e = err(&img[..20]);
        assert!(e.starts_with("m.safetensors: truncated or corrupt: the header length field says"), "{e}");
        assert!(err(&img[..5]).contains("8-byte header length"));
        let mut huge = img.clone();
        huge[..8].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(err(&huge).contains(&format!("says {} bytes", u64::MAX)));
        let mut extra = img.clone();
        extra.extend([0; 4]);
        assert!(err(&extra).contains("(trailing bytes)"), "{}", err(&extra));
        let at = img.windows(5).position(|w| w == b"\"F32\"").unwrap();
        let mut int = img.clone();
        int[at..at + 5].copy_from_slice(b"\"I64\"");
        assert!(err(&int).contains("tensor `a`: unsupported dtype I64"), "{}", err(&int));
    }
}
