//! ggml's tensor types and their dequantisation to f32, block by block as ggml defines them
//! (`ggml-common.h` layouts, `ggml-quants.c` `dequantize_row_*`).

/// A ggml tensor type tunelab reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GgmlType {
    F32,
    F16,
    BF16,
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q8_0,
    Q4K,
    Q5K,
    Q6K,
}

/// Elements per K-quant super-block.
const QK_K: usize = 256;

impl GgmlType {
    /// The type of ggml's id `id`, or its name when tunelab cannot read it.
    pub fn from_id(id: u32) -> Result<Self, String> {
        Ok(match id {
            0 => GgmlType::F32,
            1 => GgmlType::F16,
            2 => GgmlType::Q4_0,
            3 => GgmlType::Q4_1,
            6 => GgmlType::Q5_0,
            7 => GgmlType::Q5_1,
            8 => GgmlType::Q8_0,
            12 => GgmlType::Q4K,
            13 => GgmlType::Q5K,
            14 => GgmlType::Q6K,
            30 => GgmlType::BF16,
            other => {
                let name = match other {
                    9 => "Q8_1",
                    10 => "Q2_K",
                    11 => "Q3_K",
                    15 => "Q8_K",
                    16..=23 | 29 => "an IQ quantisation",
                    24 => "I8",
                    25 => "I16",
                    26 => "I32",
                    27 => "I64",
                    28 => "F64",
                    34 => "TQ1_0",
                    35 => "TQ2_0",
                    39 => "MXFP4",
                    _ => "unknown",
                };
                return Err(format!("ggml type {other} ({name})"));
            }
        })
    }

    /// ggml's name of the type.
    pub fn name(self) -> &'static str {
        match self {
            GgmlType::F32 => "F32",
            GgmlType::F16 => "F16",
            GgmlType::BF16 => "BF16",
            GgmlType::Q4_0 => "Q4_0",
            GgmlType::Q4_1 => "Q4_1",
            GgmlType::Q5_0 => "Q5_0",
            GgmlType::Q5_1 => "Q5_1",
            GgmlType::Q8_0 => "Q8_0",
            GgmlType::Q4K => "Q4_K",
            GgmlType::Q5K => "Q5_K",
            GgmlType::Q6K => "Q6_K",
        }
    }

    /// (elements, bytes) of one block.
    pub fn block(self) -> (usize, usize) {
        match self {
            GgmlType::F32 => (1, 4),
            GgmlType::F16 | GgmlType::BF16 => (1, 2),
            GgmlType::Q4_0 => (32, 18),
            GgmlType::Q4_1 => (32, 20),
            GgmlType::Q5_0 => (32, 22),
            GgmlType::Q5_1 => (32, 24),
            GgmlType::Q8_0 => (32, 34),
            GgmlType::Q4K => (QK_K, 144),
            GgmlType::Q5K => (QK_K, 176),
            GgmlType::Q6K => (QK_K, 210),
        }
    }

    /// Bytes of `elements` values, or None when they are not whole blocks.
    pub fn bytes_for(self, elements: u64) -> Option<u64> {
        let (n, b) = self.block();
        if !elements.is_multiple_of(n as u64) {
            return None;
        }
        (elements / n as u64).checked_mul(b as u64)
    }
}

fn f16(b: &[u8]) -> f32 {
    half::f16::from_le_bytes([b[0], b[1]]).to_f32()
}

/// The 6-bit scale and min of sub-block `j` of a Q4_K / Q5_K super-block (`get_scale_min_k4`).
fn scale_min_k4(j: usize, q: &[u8]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        (
            (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4),
            (q[j + 4] >> 4) | ((q[j] >> 6) << 4),
        )
    }
}

/// Append the f32 values of `bytes` (whole blocks of `kind`) to `out`.
pub fn dequantize(kind: GgmlType, bytes: &[u8], out: &mut Vec<f32>) {
    let (n, size) = kind.block();
    out.reserve(bytes.len() / size * n);
    for b in bytes.chunks_exact(size) {
        match kind {
            GgmlType::F32 => out.push(f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
            GgmlType::F16 => out.push(f16(b)),
            GgmlType::BF16 => out.push(half::bf16::from_le_bytes([b[0], b[1]]).to_f32()),
            GgmlType::Q8_0 => {
                let d = f16(b);
                out.extend(b[2..34].iter().map(|&q| d * (q as i8) as f32));
            }
            GgmlType::Q4_0 | GgmlType::Q4_1 => {
                let d = f16(b);
                let (m, qs) = match kind {
                    GgmlType::Q4_1 => (f16(&b[2..]), &b[4..20]),
                    _ => (0.0, &b[2..18]),
                };
                let offset = if kind == GgmlType::Q4_0 { 8 } else { 0 };
                let value = |q: u8| (q as i32 - offset) as f32 * d + m;
                out.extend(qs.iter().map(|&q| value(q & 0xF)));
                out.extend(qs.iter().map(|&q| value(q >> 4)));
            }
            GgmlType::Q5_0 | GgmlType::Q5_1 => {
                let d = f16(b);
                let (m, rest) = match kind {
                    GgmlType::Q5_1 => (f16(&b[2..]), &b[4..]),
                    _ => (0.0, &b[2..]),
                };
                let qh = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]);
                let qs = &rest[4..20];
                let offset = if kind == GgmlType::Q5_0 { 16 } else { 0 };
                let value = |q: u32| (q as i32 - offset) as f32 * d + m;
                out.extend(
                    (0..16).map(|j| value((qs[j] & 0xF) as u32 | (((qh >> j) << 4) & 0x10))),
                );
                out.extend((0..16).map(|j| value((qs[j] >> 4) as u32 | ((qh >> (j + 12)) & 0x10))));
            }
            GgmlType::Q4K | GgmlType::Q5K => {
                let (d, dmin) = (f16(b), f16(&b[2..]));
                let scales = &b[4..16];
                let (qh, mut ql): (&[u8], &[u8]) = match kind {
                    GgmlType::Q5K => (&b[16..48], &b[48..176]),
                    _ => (&[], &b[16..144]),
                };
                let (mut u1, mut u2) = (1u8, 2u8);
                for is in (0..8).step_by(2) {
                    let (sc, m) = scale_min_k4(is, scales);
                    let (d1, m1) = (d * sc as f32, dmin * m as f32);
                    let (sc, m) = scale_min_k4(is + 1, scales);
                    let (d2, m2) = (d * sc as f32, dmin * m as f32);
                    let high = |l: usize, u: u8| match qh.get(l) {
                        Some(&h) if h & u != 0 => 16.0,
                        _ => 0.0,
                    };
                    out.extend((0..32).map(|l| d1 * ((ql[l] & 0xF) as f32 + high(l, u1)) - m1));
                    out.extend((0..32).map(|l| d2 * ((ql[l] >> 4) as f32 + high(l, u2)) - m2));
                    ql = &ql[32..];
                    u1 <<= 2;
                    u2 <<= 2;
                }
            }
            GgmlType::Q6K => {
                let d = f16(&b[208..]);
                let (mut ql, mut qh, mut sc) = (&b[0..128], &b[128..192], &b[192..208]);
                for _ in 0..2 {
                    let mut y = [0f32; 128];
                    for l in 0..32 {
                        let is = l / 16;
                        let q1 = ((ql[l] & 0xF) | ((qh[l] & 3) << 4)) as i32 - 32;
                        let q2 = ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) as i32 - 32;
                        let q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) as i32 - 32;
                        let q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) as i32 - 32;
                        let s = |k: usize| d * (sc[k] as i8) as f32;
                        y[l] = s(is) * q1 as f32;
                        y[l + 32] = s(is + 2) * q2 as f32;
                        y[l + 64] = s(is + 4) * q3 as f32;
                        y[l + 96] = s(is + 6) * q4 as f32;
                    }
                    out.extend_from_slice(&y);
                    ql = &ql[64..];
                    qh = &qh[32..];
                    sc = &sc[8..];
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn q4_0_block_by_hand() {
        // d = 0.5 (f16 0x3800); nibbles 0..15 low, 15..0 high.
        let mut b = vec![0x00, 0x38];
        b.extend((0..16u8).map(|j| j | ((15 - j) << 4)));
        let mut out = Vec::new();
        dequantize(GgmlType::Q4_0, &b, &mut out);
        assert_eq!(out.len(), 32);
        assert_eq!(out[0], -4.0);
        assert_eq!(out[15], 3.5);
        assert_eq!(out[16], 3.5);
        assert_eq!(out[31], -4.0);
    }

    #[test]
    fn sizes_and_unsupported_types() {
        assert_eq!(GgmlType::Q6K.bytes_for(512), Some(420));
        assert_eq!(GgmlType::Q4_1.bytes_for(48), None);
        let e = GgmlType::from_id(11).unwrap_err();
        assert!(e.contains("Q3_K"), "{e}");
    }
}
