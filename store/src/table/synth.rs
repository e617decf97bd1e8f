//! Synthetic tables with documented, deterministic content, so any client can check a row from
//! its id alone.
//!
//! The content: for row `r`, column `c`, with `g = c / 8`,
//! `h = mix64(seed * 0x9E3779B97F4A7C15 ^ r * 0xC2B2AE3D27D4EB4F ^ (g + 1) * 0x165667B19E3779F9)`
//! (wrapping u64 arithmetic; `mix64` the splitmix64 finalizer), and the byte
//! `v = (h >> (8 * (c % 8))) & 0xFF`. The element is then:
//! - f32, f16, bf16: the integer `v as i8` (-128..=127, exact in all three);
//! - i8: `v as i8`; u8: `v`;
//! - fp8_e4m3: the integer `(v % 33) - 16` (-16..=16, exact in e4m3).

use engram_store_cache::mix64;
use half::{bf16, f16};

use super::dtype::DType;

/// The byte `v` that drives element (row, col).
fn byte_at(seed: u64, row: u64, col: usize) -> u8 {
    let g = (col / 8) as u64;
    let h = mix64(
        seed.wrapping_mul(0x9E37_79B9_7F4A_7C15)
            ^ row.wrapping_mul(0xC2B2_AE3D_27D4_EB4F)
            ^ (g + 1).wrapping_mul(0x1656_67B1_9E37_79F9),
    );
    (h >> (8 * (col % 8))) as u8
}

/// Encodes a small integer (|k| <= 16) as fp8 e4m3fn.
pub fn e4m3_from_small_int(k: i32) -> u8 {
    if k == 0 {
        return 0;
    }
    let sign = if k < 0 { 0x80u8 } else { 0 };
    let a = k.unsigned_abs();
    let e = 31 - a.leading_zeros(); // floor(log2 a)
    let mantissa = ((a << 3) >> e) & 0x7; // (a / 2^e - 1) * 8, exact for a <= 16
    sign | (((e + 7) as u8) << 3) | mantissa as u8
}

/// Decodes fp8 e4m3fn to f32 (NaN for the two NaN codes).
pub fn e4m3_to_f32(b: u8) -> f32 {
    let sign = if b & 0x80 != 0 { -1.0 } else { 1.0 };
    let e = i32::from((b >> 3) & 0xF);
    let m = f32::from(b & 0x7);
    if e == 0xF && b & 0x7 == 0x7 {
        return f32::NAN;
    }
    if e == 0 {
        sign * m / 8.0 * 2f32.powi(-6)
    } else {
        sign * (1.0 + m / 8.0) * 2f32.powi(e - 7)
    }
}

/// Writes row `row` of a synthetic table into `out` (`row_dim * dtype.size()` bytes).
pub fn fill_row(seed: u64, dtype: DType, row_dim: usize, row: u64, out: &mut [u8]) {
    debug_assert_eq!(out.len(), row_dim * dtype.size());
    for c in 0..row_dim {
        let v = byte_at(seed, row, c);
        match dtype {
            DType::F32 => out[c * 4..c * 4 + 4].copy_from_slice(&f32::from(v as i8).to_le_bytes()),
            DType::F16 => out[c * 2..c * 2 + 2]
                .copy_from_slice(&f16::from_f32(f32::from(v as i8)).to_le_bytes()),
            DType::Bf16 => out[c * 2..c * 2 + 2]
                .copy_from_slice(&bf16::from_f32(f32::from(v as i8)).to_le_bytes()),
            DType::I8 | DType::U8 => out[c] = v,
            DType::F8E4M3 => out[c] = e4m3_from_small_int(i32::from(v % 33) - 16),
        }
    }
}

/// Row `row` of a synthetic table, allocated.
pub fn synth_row(seed: u64, dtype: DType, row_dim: usize, row: u64) -> Vec<u8> {
    let mut out = vec![0u8; row_dim * dtype.size()];
    fill_row(seed, dtype, row_dim, row, &mut out);
    out
}

/// Writes the synthetic row `row` (of a table made with `seed`, `dtype`, `row_dim`) into a
/// buffer, resizing it to one row: what a row checker compares a served row with.
pub fn synth_row_filler(
    seed: u64,
    dtype: DType,
    row_dim: usize,
) -> impl Fn(u64, &mut Vec<u8>) + Send + Sync + 'static {
    move |row, out| {
        out.resize(row_dim * dtype.size(), 0);
        fill_row(seed, dtype, row_dim, row, out);
    }
}

/// The elements of a row of any dtype as f64, for printing.
pub fn row_as_f64(dtype: DType, bytes: &[u8]) -> Vec<f64> {
    match dtype {
        DType::F32 => bytes
            .chunks_exact(4)
            .map(|c| f64::from(f32::from_le_bytes([c[0], c[1], c[2], c[3]])))
            .collect(),
        DType::F16 => bytes
            .chunks_exact(2)
            .map(|c| f64::from(f16::from_le_bytes([c[0], c[1]]).to_f32()))
            .collect(),
        DType::Bf16 => bytes
            .chunks_exact(2)
            .map(|c| f64::from(bf16::from_le_bytes([c[0], c[1]]).to_f32()))
            .collect(),
        DType::I8 => bytes.iter().map(|&b| f64::from(b as i8)).collect(),
        DType::U8 => bytes.iter().map(|&b| f64::from(b)).collect(),
        DType::F8E4M3 => bytes.iter().map(|&b| f64::from(e4m3_to_f32(b))).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn e4m3_small_ints_round_trip() {
        for k in -16..=16 {
            assert_eq!(e4m3_to_f32(e4m3_from_small_int(k)), k as f32, "k={k}");
        }
    }

    #[test]
    fn every_dtype_decodes_to_the_documented_integers() {
        for dtype in DType::ALL {
            let row = synth_row(7, dtype, 19, 12345);
            let vals = row_as_f64(dtype, &row);
            for (c, x) in vals.iter().enumerate() {
                let v = byte_at(7, 12345, c);
                let want = match dtype {
                    DType::U8 => f64::from(v),
                    DType::F8E4M3 => f64::from(i32::from(v % 33) - 16),
                    _ => f64::from(v as i8),
                };
                assert_eq!(*x, want, "{dtype} col {c}");
            }
        }
        assert_ne!(
            synth_row(7, DType::Bf16, 80, 1),
            synth_row(7, DType::Bf16, 80, 2)
        );
        assert_ne!(
            synth_row(7, DType::Bf16, 80, 1),
            synth_row(8, DType::Bf16, 80, 1)
        );
    }
}
