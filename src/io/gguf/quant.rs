//! ggml tensor element types and their dequantization to `f32`.
//!
//! Type ids, block sizes and byte sizes follow `enum ggml_type` and the block structs of
//! ggml's `ggml-common.h` (llama.cpp; mirrored by `GGML_QUANT_SIZES` in gguf-py's
//! `constants.py`). The dequantizers follow the reference `dequantize_row_*` functions of
//! `ggml-quants.c`, computed in `f32` in the same order, so results match llama.cpp and
//! gguf-py (`gguf.quants.dequantize`) to the last bit for F32/F16/BF16/Q8_0/Q4_0/Q4_1/Q5_0/Q5_1
//! and to float rounding for the K-quants.
//!
//! Supported for dequantization: F32, F16, BF16, F64, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q4_K,
//! Q5_K, Q6_K. Every other known type can be read (its byte layout is validated) but not
//! converted; [`dequantize`] then returns [`DequantError::Unsupported`].

use std::fmt;

/// A ggml tensor element type (`enum ggml_type`), with the numeric id stored in GGUF files.
#[allow(non_camel_case_types, clippy::upper_case_acronyms)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum GgmlType {
    F32,
    F16,
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q8_0,
    Q8_1,
    Q2_K,
    Q3_K,
    Q4_K,
    Q5_K,
    Q6_K,
    Q8_K,
    IQ2_XXS,
    IQ2_XS,
    IQ3_XXS,
    IQ1_S,
    IQ4_NL,
    IQ3_S,
    IQ2_S,
    IQ4_XS,
    I8,
    I16,
    I32,
    I64,
    F64,
    IQ1_M,
    BF16,
    TQ1_0,
    TQ2_0,
    MXFP4,
}

/// `(type, id, name, elements per block, bytes per block)`, from `ggml-common.h`.
const TYPES: [(GgmlType, u32, &str, usize, usize); 32] = {
    use GgmlType::*;
    [
        (F32, 0, "F32", 1, 4),
        (F16, 1, "F16", 1, 2),
        (Q4_0, 2, "Q4_0", 32, 18),
        (Q4_1, 3, "Q4_1", 32, 20),
        (Q5_0, 6, "Q5_0", 32, 22),
        (Q5_1, 7, "Q5_1", 32, 24),
        (Q8_0, 8, "Q8_0", 32, 34),
        (Q8_1, 9, "Q8_1", 32, 36),
        (Q2_K, 10, "Q2_K", 256, 84),
        (Q3_K, 11, "Q3_K", 256, 110),
        (Q4_K, 12, "Q4_K", 256, 144),
        (Q5_K, 13, "Q5_K", 256, 176),
        (Q6_K, 14, "Q6_K", 256, 210),
        (Q8_K, 15, "Q8_K", 256, 292),
        (IQ2_XXS, 16, "IQ2_XXS", 256, 66),
        (IQ2_XS, 17, "IQ2_XS", 256, 74),
        (IQ3_XXS, 18, "IQ3_XXS", 256, 98),
        (IQ1_S, 19, "IQ1_S", 256, 50),
        (IQ4_NL, 20, "IQ4_NL", 32, 18),
        (IQ3_S, 21, "IQ3_S", 256, 110),
        (IQ2_S, 22, "IQ2_S", 256, 82),
        (IQ4_XS, 23, "IQ4_XS", 256, 136),
        (I8, 24, "I8", 1, 1),
        (I16, 25, "I16", 1, 2),
        (I32, 26, "I32", 1, 4),
        (I64, 27, "I64", 1, 8),
        (F64, 28, "F64", 1, 8),
        (IQ1_M, 29, "IQ1_M", 256, 56),
        (BF16, 30, "BF16", 1, 2),
        (TQ1_0, 34, "TQ1_0", 256, 54),
        (TQ2_0, 35, "TQ2_0", 256, 66),
        (MXFP4, 39, "MXFP4", 32, 17),
    ]
};

impl GgmlType {
    /// The type with GGUF id `id`, or `None` for an unknown or removed id.
    pub fn from_id(id: u32) -> Option<Self> {
        TYPES.iter().find(|t| t.1 == id).map(|t| t.0)
    }

    fn row(self) -> &'static (GgmlType, u32, &'static str, usize, usize) {
        // Every variant has exactly one row in TYPES (checked by a unit test).
        TYPES.iter().find(|t| t.0 == self).unwrap_or(&TYPES[0])
    }

    /// The numeric id stored in GGUF tensor infos.
    pub fn id(self) -> u32 {
        self.row().1
    }

    /// The ggml name, e.g. `"Q4_1"`.
    pub fn name(self) -> &'static str {
        self.row().2
    }

    /// Elements per block (1 for plain types, 32 or 256 for quantized ones).
    pub fn block_size(self) -> usize {
        self.row().3
    }

    /// Bytes per block.
    pub fn type_size(self) -> usize {
        self.row().4
    }

    /// Whether [`dequantize`] can convert this type.
    pub fn can_dequantize(self) -> bool {
        use GgmlType::*;
        matches!(self, F32 | F16 | BF16 | F64 | Q8_0 | Q4_0 | Q4_1 | Q5_0 | Q5_1 | Q4_K | Q5_K | Q6_K)
    }

    /// Bytes needed for `n_elements` elements, or `None` when `n_elements` is not a whole
    /// number of blocks or the size overflows.
    pub fn bytes_for(self, n_elements: u64) -> Option<u64> {
        let bs = self.block_size() as u64;
        if !n_elements.is_multiple_of(bs) {
            return None;
        }
        (n_elements / bs).checked_mul(self.type_size() as u64)
    }
}

impl fmt::Display for GgmlType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why a byte buffer could not be dequantized.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DequantError {
    #[error("dequantization of {0} is not implemented")]
    Unsupported(GgmlType),
    #[error("{ty}: {n_elements} elements need {expected:?} bytes, got {actual}")]
    SizeMismatch { ty: GgmlType, n_elements: usize, expected: Option<u64>, actual: usize },
}

/// Dequantize `n_elements` values of type `ty` stored in `data` (exactly
/// `ty.bytes_for(n_elements)` bytes, little-endian as in GGUF files).
pub fn dequantize(ty: GgmlType, data: &[u8], n_elements: usize) -> Result<Vec<f32>, DequantError> {
    let expected = ty.bytes_for(n_elements as u64);
    if expected != Some(data.len() as u64) {
        return Err(DequantError::SizeMismatch { ty, n_elements, expected, actual: data.len() });
    }
    if !ty.can_dequantize() {
        return Err(DequantError::Unsupported(ty));
    }
    let mut out = Vec::with_capacity(n_elements);
    let blocks = data.chunks_exact(ty.type_size());
    use GgmlType::*;
    match ty {
        F32 => out.extend(blocks.map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))),
        F16 => out.extend(blocks.map(|b| f16(b, 0))),
        BF16 => out.extend(blocks.map(|b| f32::from_bits((u16_at(b, 0) as u32) << 16))),
        F64 => out.extend(blocks.map(|b| {
            let mut a = [0u8; 8];
            a.copy_from_slice(b);
            f64::from_le_bytes(a) as f32
        })),
        Q8_0 => blocks.for_each(|b| block_q8_0(b, &mut out)),
        Q4_0 => blocks.for_each(|b| block_q4_0(b, &mut out)),
        Q4_1 => blocks.for_each(|b| block_q4_1(b, &mut out)),
        Q5_0 => blocks.for_each(|b| block_q5_0(b, &mut out)),
        Q5_1 => blocks.for_each(|b| block_q5_1(b, &mut out)),
        Q4_K => blocks.for_each(|b| block_q4_k(b, &mut out)),
        Q5_K => blocks.for_each(|b| block_q5_k(b, &mut out)),
        Q6_K => blocks.for_each(|b| block_q6_k(b, &mut out)),
        _ => return Err(DequantError::Unsupported(ty)),
    }
    Ok(out)
}

fn u16_at(b: &[u8], i: usize) -> u16 {
    u16::from_le_bytes([b[i], b[i + 1]])
}

/// The IEEE half-precision value stored at byte `i` of `b`.
fn f16(b: &[u8], i: usize) -> f32 {
    half::f16::from_bits(u16_at(b, i)).to_f32()
}

/// `block_q8_0 { f16 d; int8 qs[32]; }`: `y = d * q`.
fn block_q8_0(b: &[u8], out: &mut Vec<f32>) {
    let d = f16(b, 0);
    out.extend(b[2..34].iter().map(|&q| (q as i8) as f32 * d));
}

/// `block_q4_0 { f16 d; u8 qs[16]; }`: low nibbles are elements 0..16, high nibbles 16..32;
/// `y = (q - 8) * d`.
fn block_q4_0(b: &[u8], out: &mut Vec<f32>) {
    let d = f16(b, 0);
    let qs = &b[2..18];
    out.extend(qs.iter().map(|&q| ((q & 0x0F) as i32 - 8) as f32 * d));
    out.extend(qs.iter().map(|&q| ((q >> 4) as i32 - 8) as f32 * d));
}

/// `block_q4_1 { f16 d; f16 m; u8 qs[16]; }`: same nibble order as Q4_0; `y = q * d + m`.
fn block_q4_1(b: &[u8], out: &mut Vec<f32>) {
    let (d, m) = (f16(b, 0), f16(b, 2));
    let qs = &b[4..20];
    out.extend(qs.iter().map(|&q| (q & 0x0F) as f32 * d + m));
    out.extend(qs.iter().map(|&q| (q >> 4) as f32 * d + m));
}

/// The 5-bit quants of a Q5_0/Q5_1 block: nibbles from `qs[16]` plus fifth bits from the
/// little-endian `qh` word (bit `j` for element `j`, bit `j + 16` for element `j + 16`).
fn q5_quants(qh: &[u8], qs: &[u8]) -> [u8; 32] {
    let qh = u32::from_le_bytes([qh[0], qh[1], qh[2], qh[3]]);
    let mut q = [0u8; 32];
    for (j, &byte) in qs.iter().enumerate() {
        let h0 = (((qh >> j) << 4) & 0x10) as u8;
        let h1 = ((qh >> (j + 12)) & 0x10) as u8;
        q[j] = (byte & 0x0F) | h0;
        q[j + 16] = (byte >> 4) | h1;
    }
    q
}

/// `block_q5_0 { f16 d; u8 qh[4]; u8 qs[16]; }`: `y = (q - 16) * d`.
fn block_q5_0(b: &[u8], out: &mut Vec<f32>) {
    let d = f16(b, 0);
    let q = q5_quants(&b[2..6], &b[6..22]);
    out.extend(q.iter().map(|&q| (q as i32 - 16) as f32 * d));
}

/// `block_q5_1 { f16 d; f16 m; u8 qh[4]; u8 qs[16]; }`: `y = q * d + m`.
fn block_q5_1(b: &[u8], out: &mut Vec<f32>) {
    let (d, m) = (f16(b, 0), f16(b, 2));
    let q = q5_quants(&b[4..8], &b[8..24]);
    out.extend(q.iter().map(|&q| q as f32 * d + m));
}

/// `get_scale_min_k4` of ggml-quants.c: the 6-bit scale and min of sub-block `j` (0..8).
fn scale_min_k4(j: usize, s: &[u8]) -> (u8, u8) {
    if j < 4 {
        (s[j] & 63, s[j + 4] & 63)
    } else {
        ((s[j + 4] & 0x0F) | ((s[j - 4] >> 6) << 4), (s[j + 4] >> 4) | ((s[j] >> 6) << 4))
    }
}

/// `block_q4_K { f16 d; f16 dmin; u8 scales[12]; u8 qs[128]; }`: 8 sub-blocks of 32;
/// `y = d * sc * q - dmin * m`.
fn block_q4_k(b: &[u8], out: &mut Vec<f32>) {
    let (d, dmin) = (f16(b, 0), f16(b, 2));
    let scales = &b[4..16];
    for (chunk, qs) in b[16..144].chunks_exact(32).enumerate() {
        let (sc1, m1) = scale_min_k4(2 * chunk, scales);
        let (sc2, m2) = scale_min_k4(2 * chunk + 1, scales);
        let (d1, m1) = (d * sc1 as f32, dmin * m1 as f32);
        let (d2, m2) = (d * sc2 as f32, dmin * m2 as f32);
        out.extend(qs.iter().map(|&q| d1 * (q & 0x0F) as f32 - m1));
        out.extend(qs.iter().map(|&q| d2 * (q >> 4) as f32 - m2));
    }
}

/// `block_q5_K { f16 d; f16 dmin; u8 scales[12]; u8 qh[32]; u8 qs[128]; }`: like Q4_K with a
/// fifth bit per element from `qh` (bit `2 * chunk` for low nibbles, `2 * chunk + 1` for high).
fn block_q5_k(b: &[u8], out: &mut Vec<f32>) {
    let (d, dmin) = (f16(b, 0), f16(b, 2));
    let scales = &b[4..16];
    let qh = &b[16..48];
    for (chunk, qs) in b[48..176].chunks_exact(32).enumerate() {
        let (sc1, m1) = scale_min_k4(2 * chunk, scales);
        let (sc2, m2) = scale_min_k4(2 * chunk + 1, scales);
        let (d1, m1) = (d * sc1 as f32, dmin * m1 as f32);
        let (d2, m2) = (d * sc2 as f32, dmin * m2 as f32);
        let (u1, u2) = (1u8 << (2 * chunk), 1u8 << (2 * chunk + 1));
        out.extend(qs.iter().zip(qh).map(|(&q, &h)| {
            let hi = if h & u1 != 0 { 16 } else { 0 };
            d1 * ((q & 0x0F) + hi) as f32 - m1
        }));
        out.extend(qs.iter().zip(qh).map(|(&q, &h)| {
            let hi = if h & u2 != 0 { 16 } else { 0 };
            d2 * ((q >> 4) + hi) as f32 - m2
        }));
    }
}

/// `block_q6_K { u8 ql[128]; u8 qh[64]; int8 scales[16]; f16 d; }`: two halves of 128
/// elements; `y = d * scale * (q - 32)` with 16 sub-blocks of 16 elements.
fn block_q6_k(b: &[u8], out: &mut Vec<f32>) {
    let d = f16(b, 208);
    let mut y = [0f32; 256];
    for half in 0..2 {
        let ql = &b[64 * half..64 * half + 64];
        let qh = &b[128 + 32 * half..128 + 32 * half + 32];
        let sc = &b[192 + 8 * half..192 + 8 * half + 8];
        let y = &mut y[128 * half..128 * half + 128];
        for l in 0..32 {
            let is = l / 16;
            let q1 = ((ql[l] & 0x0F) | ((qh[l] & 3) << 4)) as i32 - 32;
            let q2 = ((ql[l + 32] & 0x0F) | (((qh[l] >> 2) & 3) << 4)) as i32 - 32;
            let q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) as i32 - 32;
            let q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) as i32 - 32;
            let s = |k: usize| d * (sc[is + k] as i8) as f32;
            y[l] = s(0) * q1 as f32;
            y[l + 32] = s(2) * q2 as f32;
            y[l + 64] = s(4) * q3 as f32;
            y[l + 96] = s(6) * q4 as f32;
        }
    }
    out.extend_from_slice(&y);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(x: f32) -> [u8; 2] {
        half::f16::from_f32(x).to_bits().to_le_bytes()
    }

    #[test]
    fn type_table_is_consistent() {
        for (ty, id, name, bs, ts) in TYPES {
            assert_eq!(GgmlType::from_id(id), Some(ty));
            assert_eq!((ty.id(), ty.name(), ty.block_size(), ty.type_size()), (id, name, bs, ts));
        }
        assert_eq!(GgmlType::from_id(4), None);
        assert_eq!(GgmlType::from_id(31), None);
        assert_eq!(GgmlType::Q4_1.bytes_for(64), Some(40));
        assert_eq!(GgmlType::Q4_1.bytes_for(33), None);
        assert_eq!(GgmlType::Q8_0.bytes_for(u64::MAX - 31), None);
    }

    #[test]
    fn f32_f16_bf16() {
        let mut b = Vec::new();
        for x in [1.5f32, -2.25, 0.0, 65504.0] {
            b.extend_from_slice(&x.to_le_bytes());
        }
        assert_eq!(dequantize(GgmlType::F32, &b, 4).unwrap(), [1.5, -2.25, 0.0, 65504.0]);
        // f16: 0x3C00 = 1.0, 0xC000 = -2.0, 0x3555 = 0.333251953125, 0x0001 = 2^-24.
        let b = [0x00, 0x3C, 0x00, 0xC0, 0x55, 0x35, 0x01, 0x00];
        let want = [1.0, -2.0, 0.333_251_95, 5.960_464_5e-8];
        assert_eq!(dequantize(GgmlType::F16, &b, 4).unwrap(), want);
        // bf16 is the top half of an f32: 0x3FC0 = 1.5, 0xC2F7 = -123.5, 0x7F80 = +inf.
        let b = [0xC0, 0x3F, 0xF7, 0xC2, 0x80, 0x7F];
        let got = dequantize(GgmlType::BF16, &b, 3).unwrap();
        assert_eq!(got, [1.5, -123.5, f32::INFINITY]);
    }

    #[test]
    fn q8_0_block() {
        let mut b = h(0.5).to_vec();
        b.extend((0..32).map(|i| (i as i8 - 16) as u8)); // q = -16..16
        b[2 + 31] = (-128i8) as u8;
        let y = dequantize(GgmlType::Q8_0, &b, 32).unwrap();
        for (i, &v) in y.iter().enumerate().take(31) {
            assert_eq!(v, (i as f32 - 16.0) * 0.5);
        }
        assert_eq!(y[31], -64.0);
    }

    #[test]
    fn q4_0_block() {
        let mut b = h(0.25).to_vec();
        // qs[j] = low nibble j % 16, high nibble 15 - j % 16.
        b.extend((0..16u8).map(|j| j | ((15 - j) << 4)));
        let y = dequantize(GgmlType::Q4_0, &b, 32).unwrap();
        for j in 0..16 {
            assert_eq!(y[j], (j as f32 - 8.0) * 0.25, "low {j}");
            assert_eq!(y[16 + j], ((15 - j) as f32 - 8.0) * 0.25, "high {j}");
        }
    }

    #[test]
    fn q4_1_block() {
        // d = 0.5, m = -1.0, nibbles: low = j, high = 15 - j.
        let mut b = h(0.5).to_vec();
        b.extend(h(-1.0));
        b.extend((0..16u8).map(|j| j | ((15 - j) << 4)));
        let y = dequantize(GgmlType::Q4_1, &b, 32).unwrap();
        assert_eq!(y[0], -1.0);
        assert_eq!(y[3], 0.5);
        assert_eq!(y[15], 6.5);
        assert_eq!(y[16], 6.5);
        assert_eq!(y[31], -1.0);
        // two blocks: the second one follows with its own d and m.
        let mut b2 = b.clone();
        b2.extend(h(2.0));
        b2.extend(h(0.125));
        b2.extend([0x21u8; 16]);
        let y = dequantize(GgmlType::Q4_1, &b2, 64).unwrap();
        assert_eq!(y[32], 2.125);
        assert_eq!(y[48], 4.125);
    }

    #[test]
    fn q5_0_and_q5_1_blocks() {
        // qh: bit j set for even j (elements 0..16) and for element 16 + 1 (bit 17).
        let qh: u32 = 0x5555 | (1 << 17);
        let mut b = h(1.0).to_vec();
        b.extend(qh.to_le_bytes());
        b.extend((0..16u8).map(|j| j | (3 << 4)));
        let y = dequantize(GgmlType::Q5_0, &b, 32).unwrap();
        assert_eq!(y[0], 0.0 + 16.0 - 16.0);
        assert_eq!(y[1], 1.0 - 16.0);
        assert_eq!(y[2], 2.0 + 16.0 - 16.0);
        assert_eq!(y[16], 3.0 - 16.0);
        assert_eq!(y[17], 3.0 + 16.0 - 16.0);
        let mut b = h(0.5).to_vec();
        b.extend(h(10.0));
        b.extend(qh.to_le_bytes());
        b.extend((0..16u8).map(|j| j | (3 << 4)));
        let y = dequantize(GgmlType::Q5_1, &b, 32).unwrap();
        assert_eq!(y[2], 18.0 * 0.5 + 10.0);
        assert_eq!(y[3], 3.0 * 0.5 + 10.0);
        assert_eq!(y[17], 19.0 * 0.5 + 10.0);
    }

    #[test]
    fn q4_k_block() {
        let mut b = h(0.5).to_vec();
        b.extend(h(0.25));
        // scales[0..4] = sc 0..4 (low 6 bits) and high bits of sc/m 4..8; scales[4..8] = m 0..4;
        // scales[8..12] = low nibbles sc 4..8, high nibbles m 4..8.
        let mut s = [0u8; 12];
        s[0] = 2; // sub-block 0: sc 2
        s[4] = 3; // sub-block 0: m 3
        s[1] = 1 | (1 << 6); // sub-block 1: sc 1; high bits of sc 5 = 1
        s[5] = 4 | (2 << 6); // sub-block 1: m 4; high bits of m 5 = 2
        s[9] = 0x21; // sub-block 5: sc low 1 -> 1 | 1 << 4 = 17, m low 2 -> 2 | 2 << 4 = 34
        b.extend(s);
        b.extend([0x7Au8; 128]); // low nibble 10, high nibble 7
        let y = dequantize(GgmlType::Q4_K, &b, 256).unwrap();
        assert_eq!(y[0], 0.5 * 2.0 * 10.0 - 0.25 * 3.0);
        assert_eq!(y[32], 0.5 * 1.0 * 7.0 - 0.25 * 4.0);
        assert_eq!(y[64], 0.0); // sub-block 2: sc 0, m 0
        assert_eq!(y[5 * 32], 0.5 * 17.0 * 7.0 - 0.25 * 34.0); // sub-block 5: high nibbles
    }

    #[test]
    fn q5_k_block() {
        let mut b = h(1.0).to_vec();
        b.extend(h(1.0));
        let mut s = [0u8; 12];
        s[2] = 1; // sub-block 2: sc 1, m 0
        s[3] = 2; // sub-block 3: sc 2
        s[7] = 5; // sub-block 3: m 5
        b.extend(s);
        let mut qh = [0u8; 32];
        qh[0] = 1 << 2; // element 0 of sub-block 2 gets +16
        qh[1] = 1 << 3; // element 1 of sub-block 3 gets +16
        b.extend(qh);
        b.extend([0x43u8; 128]);
        let y = dequantize(GgmlType::Q5_K, &b, 256).unwrap();
        assert_eq!(y[64], 3.0 + 16.0);
        assert_eq!(y[65], 3.0);
        assert_eq!(y[96], 2.0 * 4.0 - 5.0);
        assert_eq!(y[97], 2.0 * (4.0 + 16.0) - 5.0);
    }

    #[test]
    fn q6_k_block() {
        let mut b = vec![0u8; 210];
        b[0] = 0x21; // ql[0]: element 0 low nibble 1, element 64 high nibble 2
        b[128] = 0b1110_0100; // qh[0]: el 0 +0<<4, el 32 +1<<4, el 64 +2<<4, el 96 +3<<4
        b[192] = 3; // scale of elements 0..16
        b[194] = (-2i8) as u8; // scale of elements 32..48
        b[196] = 1; // scale of elements 64..80
        b[198] = 1; // scale of elements 96..112
        b[208..210].copy_from_slice(&h(0.5));
        let y = dequantize(GgmlType::Q6_K, &b, 256).unwrap();
        assert_eq!(y[0], 0.5 * 3.0 * (1.0 - 32.0));
        assert_eq!(y[32], 0.5 * -2.0 * (16.0 - 32.0));
        assert_eq!(y[64], 0.5 * (2.0 + 32.0 - 32.0));
        assert_eq!(y[96], 0.5 * (48.0 - 32.0));
        assert_eq!(y[128], 0.0); // second half: scales 0
    }

    /// Two pseudo-random blocks (SplitMix64 bytes seeded with the type id, scales forced to
    /// d = 0.01, dmin = 0.02) against values printed by gguf-py's `gguf.quants.dequantize`.
    #[test]
    fn k_quants_match_gguf_py_golden_values() {
        type Golden = (GgmlType, &'static [usize], [(usize, f32); 8], f64);
        let cases: [Golden; 3] = [
            (
                GgmlType::Q4_K,
                &[0, 2],
                [
                    (0, 2.860611),
                    (1, 2.4005127),
                    (17, 0.10002136),
                    (37, 2.280487),
                    (100, 1.6203461),
                    (255, 0.32006836),
                    (256, 6.1213074),
                    (511, 5.3811493),
                ],
                1090.3928833007812,
            ),
            (
                GgmlType::Q5_K,
                &[0, 2],
                [
                    (0, 4.8810425),
                    (1, 3.4807434),
                    (17, 3.4807434),
                    (37, 5.1010895),
                    (100, 3.160675),
                    (255, 2.4605255),
                    (256, 5.861252),
                    (511, 6.621414),
                ],
                1953.2971801757812,
            ),
            (
                GgmlType::Q6_K,
                &[208],
                [
                    (0, -9.101944),
                    (1, -6.5013885),
                    (17, -7.8016663),
                    (37, -21.564606),
                    (100, 0.0),
                    (255, -10.44223),
                    (256, 0.16003418),
                    (511, 12.162598),
                ],
                -146.9413833618164,
            ),
        ];
        for (ty, scale_at, values, sum) in cases {
            let mut state = ty.id() as u64;
            let mut bytes: Vec<u8> = (0..2 * ty.type_size())
                .map(|_| {
                    state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
                    let mut z = state;
                    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
                    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
                    (z ^ (z >> 31)) as u8
                })
                .collect();
            for block in bytes.chunks_exact_mut(ty.type_size()) {
                for (k, &at) in scale_at.iter().enumerate() {
                    let v = if k == 0 { 0.01 } else { 0.02 };
                    block[at..at + 2].copy_from_slice(&h(v));
                }
            }
            let y = dequantize(ty, &bytes, 512).unwrap();
            for (i, v) in values {
                assert_eq!(y[i], v, "{ty} element {i}");
            }
            let total: f64 = y.iter().map(|&x| x as f64).sum();
            assert!((total - sum).abs() < 1e-9, "{ty} sum {total} vs {sum}");
        }
    }

    #[test]
    fn size_checks_and_unsupported() {
        assert!(matches!(dequantize(GgmlType::Q4_1, &[0; 19], 32), Err(DequantError::SizeMismatch { .. })));
        assert!(matches!(dequantize(GgmlType::Q8_0, &[0; 34], 31), Err(DequantError::SizeMismatch { .. })));
        assert_eq!(dequantize(GgmlType::Q2_K, &[0; 84], 256), Err(DequantError::Unsupported(GgmlType::Q2_K)));
        assert_eq!(dequantize(GgmlType::Q4_0, &[], 0).unwrap(), Vec::<f32>::new());
    }
}
