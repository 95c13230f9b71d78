//! A small GGUF writer: the inverse of the reader in `gguf.rs`, used by the tests and by the fuzz
//! harness (`crate::fuzz`) to build small files (same layout as gguf-py's `GGUFWriter`:
//! header, metadata, tensor infos, aligned data).

use super::quant::GgmlType;
use super::{GgufArray, GgufValue};

pub(crate) struct Writer {
    pub version: u32,
    pub alignment: u64,
    kv: Vec<(String, GgufValue)>,
    tensors: Vec<(String, Vec<u64>, GgmlType, Vec<u8>)>,
}

impl Writer {
    pub fn new() -> Self {
        Self { version: 3, alignment: 32, kv: Vec::new(), tensors: Vec::new() }
    }

    pub fn kv(&mut self, key: &str, value: GgufValue) -> &mut Self {
        self.kv.push((key.to_string(), value));
        self
    }

    /// Replace the value of an existing key (or add it).
    pub fn set(&mut self, key: &str, value: GgufValue) -> &mut Self {
        match self.kv.iter_mut().find(|kv| kv.0 == key) {
            Some(kv) => kv.1 = value,
            None => self.kv.push((key.to_string(), value)),
        }
        self
    }

    pub fn u32(&mut self, key: &str, v: u32) -> &mut Self {
        self.kv(key, GgufValue::U32(v))
    }

    pub fn f32(&mut self, key: &str, v: f32) -> &mut Self {
        self.kv(key, GgufValue::F32(v))
    }

    /// One key of every scalar metadata type (`u8` … `bool`), at the edges of their ranges.
    pub fn every_scalar(&mut self) -> &mut Self {
        self.kv("u8", GgufValue::U8(200))
            .kv("i8", GgufValue::I8(-3))
            .kv("u16", GgufValue::U16(65000))
            .kv("i16", GgufValue::I16(-30000))
            .kv("i32", GgufValue::I32(-7))
            .kv("u64", GgufValue::U64(1 << 40))
            .kv("i64", GgufValue::I64(-(1 << 40)))
            .kv("f64", GgufValue::F64(0.1))
            .kv("bool", GgufValue::Bool(true))
    }

    pub fn str(&mut self, key: &str, v: &str) -> &mut Self {
        self.kv(key, GgufValue::String(v.to_string()))
    }

    pub fn strs(&mut self, key: &str, v: &[&str]) -> &mut Self {
        let v = v.iter().map(|s| s.to_string()).collect();
        self.kv(key, GgufValue::Array(GgufArray::String(v)))
    }

    /// A tensor with GGUF-order `dims` (fastest first) and raw stored bytes.
    pub fn tensor(&mut self, name: &str, dims: &[u64], ty: GgmlType, data: Vec<u8>) -> &mut Self {
        self.tensors.push((name.to_string(), dims.to_vec(), ty, data));
        self
    }

    /// An F32 tensor with row-major `shape` (HF order).
    pub fn tensor_f32(&mut self, name: &str, shape: &[usize], data: &[f32]) -> &mut Self {
        assert_eq!(shape.iter().product::<usize>(), data.len());
        let dims: Vec<u64> = shape.iter().rev().map(|&d| d as u64).collect();
        let bytes = data.iter().flat_map(|x| x.to_le_bytes()).collect();
        self.tensor(name, &dims, GgmlType::F32, bytes)
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend(b"GGUF");
        out.extend(self.version.to_le_bytes());
        out.extend((self.tensors.len() as u64).to_le_bytes());
        out.extend((self.kv.len() as u64).to_le_bytes());
        for (k, v) in &self.kv {
            put_str(&mut out, k);
            out.extend(v.value_type().id().to_le_bytes());
            put_value(&mut out, v);
        }
        let mut offset = 0u64;
        let mut offsets = Vec::new();
        for (name, dims, ty, data) in &self.tensors {
            put_str(&mut out, name);
            out.extend((dims.len() as u32).to_le_bytes());
            for d in dims {
                out.extend(d.to_le_bytes());
            }
            out.extend(ty.id().to_le_bytes());
            out.extend(offset.to_le_bytes());
            offsets.push(offset);
            offset = (offset + data.len() as u64).div_ceil(self.alignment) * self.alignment;
        }
        let pad = |out: &mut Vec<u8>| {
            let n = (out.len() as u64).div_ceil(self.alignment) * self.alignment;
            out.resize(n as usize, 0);
        };
        pad(&mut out);
        for (_, _, _, data) in &self.tensors {
            out.extend(data);
            pad(&mut out);
        }
        out
    }
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend((s.len() as u64).to_le_bytes());
    out.extend(s.as_bytes());
}

fn put_value(out: &mut Vec<u8>, v: &GgufValue) {
    match v {
        GgufValue::U8(x) => out.push(*x),
        GgufValue::I8(x) => out.push(*x as u8),
        GgufValue::U16(x) => out.extend(x.to_le_bytes()),
        GgufValue::I16(x) => out.extend(x.to_le_bytes()),
        GgufValue::U32(x) => out.extend(x.to_le_bytes()),
        GgufValue::I32(x) => out.extend(x.to_le_bytes()),
        GgufValue::U64(x) => out.extend(x.to_le_bytes()),
        GgufValue::I64(x) => out.extend(x.to_le_bytes()),
        GgufValue::F32(x) => out.extend(x.to_le_bytes()),
        GgufValue::F64(x) => out.extend(x.to_le_bytes()),
        GgufValue::Bool(x) => out.push(*x as u8),
        GgufValue::String(s) => put_str(out, s),
        GgufValue::Array(a) => put_array(out, a),
    }
}

fn put_array(out: &mut Vec<u8>, a: &GgufArray) {
    out.extend(a.elem_type().id().to_le_bytes());
    out.extend((a.len() as u64).to_le_bytes());
    fn each<T>(out: &mut Vec<u8>, v: &[T], f: impl Fn(&T) -> GgufValue) {
        for x in v {
            put_value(out, &f(x));
        }
    }
    match a {
        GgufArray::U8(v) => each(out, v, |&x| GgufValue::U8(x)),
        GgufArray::I8(v) => each(out, v, |&x| GgufValue::I8(x)),
        GgufArray::U16(v) => each(out, v, |&x| GgufValue::U16(x)),
        GgufArray::I16(v) => each(out, v, |&x| GgufValue::I16(x)),
        GgufArray::U32(v) => each(out, v, |&x| GgufValue::U32(x)),
        GgufArray::I32(v) => each(out, v, |&x| GgufValue::I32(x)),
        GgufArray::U64(v) => each(out, v, |&x| GgufValue::U64(x)),
        GgufArray::I64(v) => each(out, v, |&x| GgufValue::I64(x)),
        GgufArray::F32(v) => each(out, v, |&x| GgufValue::F32(x)),
        GgufArray::F64(v) => each(out, v, |&x| GgufValue::F64(x)),
        GgufArray::Bool(v) => each(out, v, |&x| GgufValue::Bool(x)),
        GgufArray::String(v) => each(out, v, |x| GgufValue::String(x.clone())),
        GgufArray::Array(v) => {
            for x in v {
                put_array(out, x);
            }
        }
    }
}
