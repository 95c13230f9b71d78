//! A reader for GGUF v2/v3 files (the llama.cpp model format).
//!
//! Layout, as specified in ggml's `docs/gguf.md` and implemented by `gguf.cpp` (llama.cpp)
//! and gguf-py's `GGUFReader`, all little-endian:
//!
//! ```text
//! u32 magic "GGUF" | u32 version | u64 tensor_count | u64 metadata_kv_count
//! metadata_kv_count x { string key | u32 value_type | value }
//! tensor_count x { string name | u32 n_dims | u64 dims[n_dims] | u32 ggml_type | u64 offset }
//! padding to `general.alignment` (default 32) | tensor data
//! ```
//!
//! Strings are `u64 length + UTF-8 bytes`; arrays are `u32 element_type + u64 count +
//! elements`. `dims[0]` is the fastest-varying dimension, so the Hugging Face / row-major shape
//! is the reversed dims. Tensor offsets are relative to the start of the (aligned) data section.
//!
//! Every count, length and offset read from the file is checked against the file size before
//! anything is allocated or sliced: a truncated or corrupt file yields a [`GgufError`], never a
//! panic or an allocation much larger than the file.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

pub mod import;
pub mod quant;
pub mod tokenizer;
pub mod value;

use quant::{DequantError, GgmlType, dequantize};
pub use value::{GgufArray, GgufValue, GgufValueType};

/// A small GGUF writer for tests and the fuzz harness's seed files.
pub(crate) mod test_writer;

/// `"GGUF"` read as a little-endian u32.
const MAGIC: u32 = 0x4655_4747;
/// Default data alignment when `general.alignment` is absent.
pub const DEFAULT_ALIGNMENT: u64 = 32;
/// ggml tensors have at most 4 dimensions (`GGML_MAX_DIMS`).
const MAX_DIMS: u32 = 4;
/// Arrays may nest; deeper than this is treated as corruption (and keeps recursion bounded).
const MAX_ARRAY_DEPTH: usize = 8;
/// Files smaller than this are read into memory instead of memory-mapped.
const MMAP_THRESHOLD: u64 = 1 << 20;

/// Errors from reading a GGUF file or importing it. Each names the file and, where relevant,
/// the metadata key or tensor involved.
#[derive(Debug, thiserror::Error)]
pub enum GgufError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: not a GGUF file (magic {found:#010x}, expected \"GGUF\")")]
    BadMagic { path: PathBuf, found: u32 },
    #[error("{path}: unsupported GGUF version {version} (supported: 2, 3{hint})")]
    UnsupportedVersion { path: PathBuf, version: u32, hint: &'static str },
    #[error("{path}: truncated: {what} at byte {offset} needs {need} bytes, file has {len}")]
    Truncated { path: PathBuf, what: String, offset: u64, need: u64, len: u64 },
    #[error("{path}: corrupt file: {msg}")]
    Corrupt { path: PathBuf, msg: String },
    #[error("{path}: missing metadata key {key:?}")]
    MissingKey { path: PathBuf, key: String },
    #[error("{path}: metadata key {key:?} is {found}, expected {expected}")]
    WrongType { path: PathBuf, key: String, expected: &'static str, found: String },
    #[error("{path}: no tensor named {name:?}")]
    MissingTensor { path: PathBuf, name: String },
    #[error("{path}: unsupported tensor type {ty} for tensor {tensor:?}")]
    UnsupportedTensorType { path: PathBuf, tensor: String, ty: GgmlType },
    #[error("{path}: tensor {tensor:?}: {source}")]
    Dequant {
        path: PathBuf,
        tensor: String,
        #[source]
        source: DequantError,
    },
    #[error("{path}: cannot import: {msg}")]
    Import { path: PathBuf, msg: String },
    #[error("{path}: cannot build the tokenizer: {msg}")]
    Tokenizer { path: PathBuf, msg: String },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// One tensor's header entry.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorInfo {
    pub name: String,
    /// Dimensions in GGUF order: `dims[0]` varies fastest (columns of a matrix).
    pub dims: Vec<u64>,
    pub ggml_type: GgmlType,
    /// Byte offset relative to the start of the data section.
    pub offset: u64,
    pub n_elements: u64,
    pub n_bytes: u64,
}

impl TensorInfo {
    /// The row-major (PyTorch / Hugging Face) shape: the reversed GGUF dims.
    pub fn shape(&self) -> Vec<usize> {
        // usize is 64 bits on every supported target, so no dim is truncated.
        self.dims.iter().rev().map(|&d| d as usize).collect()
    }
}

enum Bytes {
    Owned(Vec<u8>),
    Mapped(memmap2::Mmap),
}

impl Bytes {
    fn as_slice(&self) -> &[u8] {
        match self {
            Bytes::Owned(v) => v,
            Bytes::Mapped(m) => m,
        }
    }
}

/// An opened GGUF file: parsed header, metadata and tensor infos, plus the raw bytes.
pub struct GgufFile {
    path: PathBuf,
    bytes: Bytes,
    version: u32,
    alignment: u64,
    data_offset: u64,
    metadata: Vec<(String, GgufValue)>,
    meta_index: HashMap<String, usize>,
    tensors: Vec<TensorInfo>,
    tensor_index: HashMap<String, usize>,
}

impl fmt::Debug for GgufFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GgufFile")
            .field("path", &self.path)
            .field("version", &self.version)
            .field("metadata", &self.metadata.len())
            .field("tensors", &self.tensors.len())
            .finish()
    }
}

impl GgufFile {
    /// Open and parse `path` (memory-mapped when large).
    pub fn open(path: impl AsRef<Path>) -> Result<Self, GgufError> {
        let path = path.as_ref();
        let io = |source| GgufError::Io { path: path.to_path_buf(), source };
        let file = std::fs::File::open(path).map_err(io)?;
        let len = file.metadata().map_err(io)?.len();
        let bytes = if len < MMAP_THRESHOLD {
            Bytes::Owned(std::fs::read(path).map_err(io)?)
        } else {
            // SAFETY: the map is read-only and private to this value. As with every mmap, a
            // concurrent truncation of the file by another process could fault; model files
            // are not modified while being read.
            Bytes::Mapped(unsafe { memmap2::Mmap::map(&file) }.map_err(io)?)
        };
        Self::parse(path.to_path_buf(), bytes)
    }

    /// Parse a GGUF image held in memory; `name` is used in error messages.
    pub fn from_bytes(name: impl Into<PathBuf>, bytes: Vec<u8>) -> Result<Self, GgufError> {
        Self::parse(name.into(), Bytes::Owned(bytes))
    }

    fn parse(path: PathBuf, bytes: Bytes) -> Result<Self, GgufError> {
        let h = parse_header(&path, bytes.as_slice())?;
        Ok(Self {
            path,
            bytes,
            version: h.version,
            alignment: h.alignment,
            data_offset: h.data_offset,
            meta_index: index_of(&h.metadata, |kv| &kv.0),
            tensor_index: index_of(&h.tensors, |t| &t.name),
            metadata: h.metadata,
            tensors: h.tensors,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn version(&self) -> u32 {
        self.version
    }

    pub fn alignment(&self) -> u64 {
        self.alignment
    }

    /// Absolute byte offset of the data section.
    pub fn data_offset(&self) -> u64 {
        self.data_offset
    }

    /// All metadata, in file order.
    pub fn metadata(&self) -> &[(String, GgufValue)] {
        &self.metadata
    }

    /// All tensor infos, in file order.
    pub fn tensors(&self) -> &[TensorInfo] {
        &self.tensors
    }

    pub fn get(&self, key: &str) -> Option<&GgufValue> {
        self.meta_index.get(key).map(|&i| &self.metadata[i].1)
    }

    pub fn tensor_info(&self, name: &str) -> Option<&TensorInfo> {
        self.tensor_index.get(name).map(|&i| &self.tensors[i])
    }

    fn require(&self, key: &str) -> Result<&GgufValue, GgufError> {
        self.get(key).ok_or_else(|| GgufError::MissingKey { path: self.path.clone(), key: key.to_string() })
    }

    fn wrong(&self, key: &str, expected: &'static str, found: &GgufValue) -> GgufError {
        let found = match found.as_i128() {
            Some(v) => format!("{} {v}", found.describe()),
            None => found.describe(),
        };
        GgufError::WrongType { path: self.path.clone(), key: key.to_string(), expected, found }
    }

    /// An unsigned integer that fits in `u32`; any integer type is accepted (writers differ).
    pub fn get_u32(&self, key: &str) -> Result<u32, GgufError> {
        let v = self.require(key)?;
        v.as_i128().and_then(|x| u32::try_from(x).ok()).ok_or_else(|| self.wrong(key, "an integer in u32 range", v))
    }

    /// An unsigned integer that fits in `u64`; any integer type is accepted.
    pub fn get_u64(&self, key: &str) -> Result<u64, GgufError> {
        let v = self.require(key)?;
        v.as_i128().and_then(|x| u64::try_from(x).ok()).ok_or_else(|| self.wrong(key, "an integer in u64 range", v))
    }

    /// A float; `f32` and `f64` values are accepted.
    pub fn get_f32(&self, key: &str) -> Result<f32, GgufError> {
        match self.require(key)? {
            GgufValue::F32(x) => Ok(*x),
            GgufValue::F64(x) => Ok(*x as f32),
            v => Err(self.wrong(key, "f32", v)),
        }
    }

    pub fn get_bool(&self, key: &str) -> Result<bool, GgufError> {
        match self.require(key)? {
            GgufValue::Bool(b) => Ok(*b),
            v => Err(self.wrong(key, "bool", v)),
        }
    }

    pub fn get_str(&self, key: &str) -> Result<&str, GgufError> {
        match self.require(key)? {
            GgufValue::String(s) => Ok(s),
            v => Err(self.wrong(key, "string", v)),
        }
    }

    pub fn get_array(&self, key: &str) -> Result<&GgufArray, GgufError> {
        match self.require(key)? {
            GgufValue::Array(a) => Ok(a),
            v => Err(self.wrong(key, "array", v)),
        }
    }

    pub fn get_str_array(&self, key: &str) -> Result<&[String], GgufError> {
        match self.require(key)? {
            GgufValue::Array(GgufArray::String(s)) => Ok(s),
            v => Err(self.wrong(key, "array of string", v)),
        }
    }

    pub fn get_f32_array(&self, key: &str) -> Result<&[f32], GgufError> {
        match self.require(key)? {
            GgufValue::Array(GgufArray::F32(s)) => Ok(s),
            v => Err(self.wrong(key, "array of f32", v)),
        }
    }

    /// An array of any integer type, converted to `i64`.
    pub fn get_int_array(&self, key: &str) -> Result<Vec<i64>, GgufError> {
        let v = self.require(key)?;
        match v {
            GgufValue::Array(a) => a.to_i64s(),
            _ => None,
        }
        .ok_or_else(|| self.wrong(key, "array of integers", v))
    }

    /// `Ok(None)` when `key` is absent; otherwise like the getter `f`.
    pub fn optional<'a, T>(
        &'a self,
        key: &str,
        f: impl FnOnce(&'a Self, &str) -> Result<T, GgufError>,
    ) -> Result<Option<T>, GgufError> {
        if self.get(key).is_none() {
            return Ok(None);
        }
        f(self, key).map(Some)
    }

    pub fn get_u32_opt(&self, key: &str) -> Result<Option<u32>, GgufError> {
        self.optional(key, Self::get_u32)
    }

    pub fn get_f32_opt(&self, key: &str) -> Result<Option<f32>, GgufError> {
        self.optional(key, Self::get_f32)
    }

    pub fn get_bool_opt(&self, key: &str) -> Result<Option<bool>, GgufError> {
        self.optional(key, Self::get_bool)
    }

    pub fn get_str_opt(&self, key: &str) -> Result<Option<&str>, GgufError> {
        self.optional(key, Self::get_str)
    }

    fn info_or_err(&self, name: &str) -> Result<&TensorInfo, GgufError> {
        self.tensor_info(name)
            .ok_or_else(|| GgufError::MissingTensor { path: self.path.clone(), name: name.to_string() })
    }

    /// The raw stored bytes of tensor `name`.
    pub fn tensor_bytes(&self, name: &str) -> Result<&[u8], GgufError> {
        let info = self.info_or_err(name)?;
        // Bounds were checked at open: data_offset + offset + n_bytes <= file length.
        let start = (self.data_offset + info.offset) as usize;
        Ok(&self.bytes.as_slice()[start..start + info.n_bytes as usize])
    }

    /// Tensor `name` dequantized to `f32`, with its row-major shape (reversed GGUF dims, e.g.
    /// `[rows, cols]` for a matrix).
    pub fn tensor_f32(&self, name: &str) -> Result<(Vec<usize>, Vec<f32>), GgufError> {
        let info = self.info_or_err(name)?;
        if !info.ggml_type.can_dequantize() {
            return Err(GgufError::UnsupportedTensorType {
                path: self.path.clone(),
                tensor: name.to_string(),
                ty: info.ggml_type,
            });
        }
        let bytes = self.tensor_bytes(name)?;
        let data = dequantize(info.ggml_type, bytes, info.n_elements as usize)
            .map_err(|source| GgufError::Dequant { path: self.path.clone(), tensor: name.to_string(), source })?;
        Ok((info.shape(), data))
    }
}

fn index_of<T>(items: &[T], key: impl Fn(&T) -> &String) -> HashMap<String, usize> {
    items.iter().enumerate().map(|(i, t)| (key(t).clone(), i)).collect()
}

struct Header {
    version: u32,
    alignment: u64,
    data_offset: u64,
    metadata: Vec<(String, GgufValue)>,
    tensors: Vec<TensorInfo>,
}

/// A bounds-checked little-endian reader over the file bytes.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    path: &'a Path,
}

impl<'a> Reader<'a> {
    fn remaining(&self) -> u64 {
        (self.buf.len() - self.pos) as u64
    }

    fn truncated(&self, what: &str, need: u64) -> GgufError {
        GgufError::Truncated {
            path: self.path.to_path_buf(),
            what: what.to_string(),
            offset: self.pos as u64,
            need,
            len: self.buf.len() as u64,
        }
    }

    fn corrupt(&self, msg: String) -> GgufError {
        GgufError::Corrupt { path: self.path.to_path_buf(), msg }
    }

    fn take(&mut self, n: u64, what: &str) -> Result<&'a [u8], GgufError> {
        if n > self.remaining() {
            return Err(self.truncated(what, n));
        }
        let s = &self.buf[self.pos..self.pos + n as usize];
        self.pos += n as usize;
        Ok(s)
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N], GgufError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N as u64, what)?);
        Ok(a)
    }

    fn u32(&mut self, what: &str) -> Result<u32, GgufError> {
        self.array(what).map(u32::from_le_bytes)
    }

    fn u64(&mut self, what: &str) -> Result<u64, GgufError> {
        self.array(what).map(u64::from_le_bytes)
    }

    /// A count of items each at least `min_size` bytes long, checked against the bytes left.
    fn count(&mut self, min_size: u64, what: &str) -> Result<usize, GgufError> {
        let n = self.u64(what)?;
        match n.checked_mul(min_size) {
            Some(bytes) if bytes <= self.remaining() => Ok(n as usize),
            _ => Err(self.corrupt(format!("{what}: count {n} cannot fit in the {} bytes left", self.remaining()))),
        }
    }

    fn string(&mut self, what: &str) -> Result<String, GgufError> {
        let len = self.u64(what)?;
        let at = self.pos;
        let bytes = self.take(len, what)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| self.corrupt(format!("{what}: string at byte {at} is not UTF-8")))
    }

    fn value_type(&mut self, what: &str) -> Result<GgufValueType, GgufError> {
        let id = self.u32(what)?;
        GgufValueType::from_id(id).ok_or_else(|| self.corrupt(format!("{what}: bad value type {id}")))
    }

    fn value(&mut self, ty: GgufValueType, what: &str, depth: usize) -> Result<GgufValue, GgufError> {
        use GgufValueType as T;
        Ok(match ty {
            T::U8 => GgufValue::U8(self.array::<1>(what)?[0]),
            T::I8 => GgufValue::I8(self.array::<1>(what)?[0] as i8),
            T::U16 => GgufValue::U16(u16::from_le_bytes(self.array(what)?)),
            T::I16 => GgufValue::I16(i16::from_le_bytes(self.array(what)?)),
            T::U32 => GgufValue::U32(self.u32(what)?),
            T::I32 => GgufValue::I32(i32::from_le_bytes(self.array(what)?)),
            T::U64 => GgufValue::U64(self.u64(what)?),
            T::I64 => GgufValue::I64(i64::from_le_bytes(self.array(what)?)),
            T::F32 => GgufValue::F32(f32::from_le_bytes(self.array(what)?)),
            T::F64 => GgufValue::F64(f64::from_le_bytes(self.array(what)?)),
            T::Bool => GgufValue::Bool(self.bool(what)?),
            T::String => GgufValue::String(self.string(what)?),
            T::Array => GgufValue::Array(self.array_value(what, depth)?),
        })
    }

    fn bool(&mut self, what: &str) -> Result<bool, GgufError> {
        match self.array::<1>(what)?[0] {
            0 => Ok(false),
            1 => Ok(true),
            b => Err(self.corrupt(format!("{what}: bool byte {b} is neither 0 nor 1"))),
        }
    }

    fn array_value(&mut self, what: &str, depth: usize) -> Result<GgufArray, GgufError> {
        if depth >= MAX_ARRAY_DEPTH {
            return Err(self.corrupt(format!("{what}: arrays nested deeper than {MAX_ARRAY_DEPTH}")));
        }
        let ty = self.value_type(what)?;
        let n = self.count(ty.min_size(), what)?;
        fn many<T>(
            r: &mut Reader<'_>,
            n: usize,
            mut f: impl FnMut(&mut Reader<'_>) -> Result<T, GgufError>,
        ) -> Result<Vec<T>, GgufError> {
            let mut v = Vec::with_capacity(n);
            for _ in 0..n {
                v.push(f(r)?);
            }
            Ok(v)
        }
        use GgufValueType as T;
        Ok(match ty {
            T::U8 => GgufArray::U8(self.take(n as u64, what)?.to_vec()),
            T::I8 => GgufArray::I8(self.take(n as u64, what)?.iter().map(|&b| b as i8).collect()),
            T::U16 => GgufArray::U16(many(self, n, |r| r.array(what).map(u16::from_le_bytes))?),
            T::I16 => GgufArray::I16(many(self, n, |r| r.array(what).map(i16::from_le_bytes))?),
            T::U32 => GgufArray::U32(many(self, n, |r| r.u32(what))?),
            T::I32 => GgufArray::I32(many(self, n, |r| r.array(what).map(i32::from_le_bytes))?),
            T::U64 => GgufArray::U64(many(self, n, |r| r.u64(what))?),
            T::I64 => GgufArray::I64(many(self, n, |r| r.array(what).map(i64::from_le_bytes))?),
            T::F32 => GgufArray::F32(many(self, n, |r| r.array(what).map(f32::from_le_bytes))?),
            T::F64 => GgufArray::F64(many(self, n, |r| r.array(what).map(f64::from_le_bytes))?),
            T::Bool => GgufArray::Bool(many(self, n, |r| r.bool(what))?),
            T::String => GgufArray::String(many(self, n, |r| r.string(what))?),
            T::Array => GgufArray::Array(many(self, n, |r| r.array_value(what, depth + 1))?),
        })
    }
}

fn parse_header(path: &Path, buf: &[u8]) -> Result<Header, GgufError> {
    let mut r = Reader { buf, pos: 0, path };
    let magic = r.u32("magic")?;
    if magic != MAGIC {
        return Err(GgufError::BadMagic { path: path.to_path_buf(), found: magic });
    }
    let version = r.u32("version")?;
    if version != 2 && version != 3 {
        let hint = match version {
            1 => " (v1 files use 32-bit lengths; convert them with a recent llama.cpp)",
            v if v.swap_bytes() <= 3 => " (this looks like a big-endian GGUF file)",
            _ => "",
        };
        return Err(GgufError::UnsupportedVersion { path: path.to_path_buf(), version, hint });
    }
    // Smallest tensor info: empty name (8) + n_dims (4) + type (4) + offset (8).
    let n_tensors = r.count(24, "tensor count")?;
    // Smallest key/value: empty key (8) + type (4) + one byte of value.
    let n_kv = r.count(13, "metadata count")?;

    let mut metadata = Vec::with_capacity(n_kv);
    let mut seen = HashMap::with_capacity(n_kv);
    for i in 0..n_kv {
        let key = r.string(&format!("metadata key #{i}"))?;
        let ty = r.value_type(&key)?;
        let value = r.value(ty, &key, 0)?;
        if seen.insert(key.clone(), i).is_some() {
            return Err(r.corrupt(format!("duplicate metadata key {key:?}")));
        }
        metadata.push((key, value));
    }

    let alignment = match metadata.iter().find(|kv| kv.0 == "general.alignment") {
        None => DEFAULT_ALIGNMENT,
        Some((_, GgufValue::U32(a))) if a.is_power_of_two() => *a as u64,
        Some((_, v)) => {
            return Err(r.corrupt(format!("general.alignment must be a power-of-two u32, got {} {v}", v.describe())));
        }
    };

    let mut tensors = Vec::with_capacity(n_tensors);
    let mut names = HashMap::with_capacity(n_tensors);
    for i in 0..n_tensors {
        let t = read_tensor_info(&mut r, i)?;
        if names.insert(t.name.clone(), i).is_some() {
            return Err(r.corrupt(format!("duplicate tensor name {:?}", t.name)));
        }
        tensors.push(t);
    }

    // The data section starts at the next multiple of the alignment.
    let data_offset = (r.pos as u64).div_ceil(alignment) * alignment;
    let len = buf.len() as u64;
    for t in &tensors {
        if t.offset % alignment != 0 {
            return Err(r.corrupt(format!(
                "tensor {:?}: offset {} is not a multiple of the alignment {alignment}",
                t.name, t.offset
            )));
        }
        let end = data_offset.checked_add(t.offset).and_then(|s| s.checked_add(t.n_bytes));
        if end.is_none_or(|e| e > len) {
            return Err(GgufError::Truncated {
                path: path.to_path_buf(),
                what: format!("data of tensor {:?}", t.name),
                offset: data_offset.saturating_add(t.offset),
                need: t.n_bytes,
                len,
            });
        }
    }
    Ok(Header { version, alignment, data_offset, metadata, tensors })
}

fn read_tensor_info(r: &mut Reader<'_>, i: usize) -> Result<TensorInfo, GgufError> {
    let name = r.string(&format!("name of tensor #{i}"))?;
    let n_dims = r.u32(&name)?;
    if n_dims > MAX_DIMS {
        return Err(r.corrupt(format!("tensor {name:?}: {n_dims} dims (max {MAX_DIMS})")));
    }
    let mut dims = Vec::with_capacity(n_dims as usize);
    for _ in 0..n_dims {
        dims.push(r.u64(&name)?);
    }
    let type_id = r.u32(&name)?;
    let ggml_type = GgmlType::from_id(type_id)
        .ok_or_else(|| r.corrupt(format!("tensor {name:?}: unknown ggml type id {type_id}")))?;
    let offset = r.u64(&name)?;
    let n_elements = dims.iter().try_fold(1u64, |acc, &d| acc.checked_mul(d));
    let n_bytes = n_elements.and_then(|n| ggml_type.bytes_for(n));
    let (Some(n_elements), Some(n_bytes)) = (n_elements, n_bytes) else {
        return Err(r.corrupt(format!(
            "tensor {name:?}: dims {dims:?} are not a whole number of {ggml_type} blocks \
             (block size {})",
            ggml_type.block_size()
        )));
    };
    if dims.first().is_some_and(|&d| d % ggml_type.block_size() as u64 != 0) {
        return Err(r.corrupt(format!(
            "tensor {name:?}: row length {} is not a multiple of the {ggml_type} block size {}",
            dims[0],
            ggml_type.block_size()
        )));
    }
    Ok(TensorInfo { name, dims, ggml_type, offset, n_elements, n_bytes })
}

#[cfg(test)]
mod tests;
