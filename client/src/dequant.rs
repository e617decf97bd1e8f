//! Dequantizing fp8 rows to bf16 exactly as vLLM does for DeepSeek-V4.1 Engram tables.
//!
//! A block-scaled row is `row_dim` fp8 e4m3fn values followed by one ue8m0 byte per `block`
//! values. vLLM turns the scale byte into the f32 whose exponent field is that byte
//! (`(s << 23)` as bits: `2^(s - 127)` for bytes 1..=254, `0.0` for byte 0, `inf` for byte 255),
//! multiplies the value widened to f32 by it, and rounds the product to bf16 (round to nearest,
//! ties to even). For scale bytes 1..=254 the f32 product is exact (a 4-bit significand times a
//! power of two stays above 2^-149), so one rounding, to bf16, is all there is. A table-scaled
//! row multiplies every value by the one f32 scale of its table.

use crate::error::ClientError;
use crate::rows::Rows;
use engram_store_proto::v1 as pb;

/// An fp8 e4m3fn byte as f32 (NaN for the two NaN codes 0x7F and 0xFF; no infinities).
pub fn e4m3_to_f32(byte: u8) -> f32 {
    let sign = if byte & 0x80 != 0 { -1.0f32 } else { 1.0 };
    let exponent = i32::from((byte >> 3) & 0x0F);
    let mantissa = f32::from(byte & 0x07);
    if byte & 0x7F == 0x7F {
        return f32::NAN;
    }
    let magnitude = if exponent == 0 {
        mantissa * (1.0 / 512.0) // subnormal: m x 2^-9
    } else {
        (1.0 + mantissa / 8.0) * f32::from_bits(((exponent + 120) as u32) << 23)
    };
    sign * magnitude
}

/// A ue8m0 scale byte as vLLM reads it: the f32 whose exponent bits are the byte.
pub fn ue8m0_to_f32(byte: u8) -> f32 {
    f32::from_bits(u32::from(byte) << 23)
}

/// f32 -> bf16 bits, rounding to nearest, ties to even (as torch and ml_dtypes do); NaN stays
/// a (quiet) NaN.
pub fn f32_to_bf16_bits(x: f32) -> u16 {
    let bits = x.to_bits();
    if x.is_nan() {
        return ((bits >> 16) as u16) | 0x0040;
    }
    let bias = 0x7FFF + ((bits >> 16) & 1);
    (bits.wrapping_add(bias) >> 16) as u16
}

/// Dequantizes one block-scaled row (`row_dim` values then `row_dim / block` scales) into
/// `out` (`row_dim` bf16 values, as bits).
pub fn dequantize_block_scaled_row(row: &[u8], block: usize, out: &mut [u16]) {
    let row_dim = out.len();
    let (values, scales) = row.split_at(row_dim);
    for ((out, values), &scale) in out.chunks_mut(block).zip(values.chunks(block)).zip(scales) {
        let scale = ue8m0_to_f32(scale);
        for (o, &v) in out.iter_mut().zip(values) {
            *o = f32_to_bf16_bits(e4m3_to_f32(v) * scale);
        }
    }
}

impl Rows {
    /// The rows as bf16 (bits), `len() x row_dim` values, for fp8 rows in a scaled row format:
    /// ue8m0 block scales (DeepSeek-V4.1 Engram tables) or one table scale, dequantized as vLLM
    /// does (see the module doc). `format` is the table's (`TableInfo.row_format`, or the
    /// response's); a plain format or another dtype is an error.
    pub fn dequantize_bf16(&self, format: &pb::RowFormat) -> Result<Vec<u16>, ClientError> {
        let row_dim = self.row_dim() as usize;
        if self.dtype() != pb::DType::DtypeF8E4m3 {
            return Err(ClientError::Protocol(format!(
                "dequantize needs fp8 e4m3 rows, these are {:?}",
                self.dtype()
            )));
        }
        let mut out = vec![0u16; self.len() * row_dim];
        match pb::RowFormatKind::try_from(format.kind) {
            Ok(pb::RowFormatKind::Fp8BlockScaled) => {
                let block = format.scale_block as usize;
                if block == 0
                    || !row_dim.is_multiple_of(block)
                    || self.row_bytes() != row_dim + row_dim / block
                {
                    return Err(ClientError::Protocol(format!(
                        "rows of {} bytes do not hold {row_dim} values and their scales per {block}",
                        self.row_bytes()
                    )));
                }
                for (row, out) in self.iter().zip(out.chunks_exact_mut(row_dim.max(1))) {
                    dequantize_block_scaled_row(row, block, out);
                }
            }
            Ok(pb::RowFormatKind::Fp8TableScaled) => {
                let scale = format.table_scale;
                for (o, &v) in out.iter_mut().zip(self.bytes().iter()) {
                    *o = f32_to_bf16_bits(e4m3_to_f32(v) * scale);
                }
            }
            _ => {
                return Err(ClientError::Protocol(format!(
                    "rows of format {:?} carry no scales to dequantize",
                    format.kind
                )));
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `x` rounded to bf16 (to nearest, ties to even), computed in f64 from scratch: the
    /// reference the f32 path is held to. `x` is exact in f64.
    fn bf16_of_f64(x: f64) -> f64 {
        if x == 0.0 || x.is_nan() {
            return x;
        }
        let a = x.abs();
        // Spacing of bf16 values around a: 2^(e - 7) for normal values, 2^-133 below 2^-126.
        let e = a.log2().floor() as i32;
        let step = 2f64.powi(e.max(-126) - 7);
        let q = a / step;
        let mut r = q.floor();
        if q - r > 0.5 || (q - r == 0.5 && r % 2.0 == 1.0) {
            r += 1.0;
        }
        let rounded = r * step;
        // Past the largest bf16 (just under 2^128), round to infinity.
        let v = if rounded >= 2f64.powi(128) {
            f64::INFINITY
        } else {
            rounded
        };
        v.copysign(x)
    }

    fn bf16_bits_to_f64(bits: u16) -> f64 {
        f64::from(f32::from_bits(u32::from(bits) << 16))
    }

    /// The e4m3fn value of a byte, computed in f64 from the format's definition.
    fn e4m3_of(byte: u8) -> f64 {
        let e = i32::from((byte >> 3) & 0xF);
        let m = f64::from(byte & 7);
        let v = if e == 0 {
            m / 8.0 * 2f64.powi(-6)
        } else {
            (1.0 + m / 8.0) * 2f64.powi(e - 7)
        };
        if byte & 0x80 != 0 { -v } else { v }
    }

    #[test]
    fn every_finite_fp8_code_over_every_scale() {
        let mut checked = 0;
        for byte in 0..=255u8 {
            if byte & 0x7F == 0x7F {
                assert!(e4m3_to_f32(byte).is_nan());
                continue;
            }
            assert_eq!(
                f64::from(e4m3_to_f32(byte)),
                e4m3_of(byte),
                "code {byte:#04x}"
            );
            for scale in 1..=254u8 {
                let want = bf16_of_f64(e4m3_of(byte) * 2f64.powi(i32::from(scale) - 127));
                let mut out = [0u16; 1];
                dequantize_block_scaled_row(&[byte, scale], 1, &mut out);
                let got = bf16_bits_to_f64(out[0]);
                assert!(
                    got == want && got.is_sign_negative() == want.is_sign_negative(),
                    "code {byte:#04x} scale byte {scale}: got {got:e}, want {want:e}"
                );
                checked += 1;
            }
        }
        assert_eq!(checked, 254 * 254);
        // vLLM's bit trick at the two ends: byte 0 is a zero scale, byte 255 an infinite one.
        assert_eq!(ue8m0_to_f32(0), 0.0);
        assert_eq!(ue8m0_to_f32(255), f32::INFINITY);
        assert_eq!(ue8m0_to_f32(127), 1.0);
        // Ties go to even: 1 + 2^-8 is halfway between two bf16 values.
        assert_eq!(f32_to_bf16_bits(1.0 + 1.0 / 256.0), 0x3F80);
        assert_eq!(f32_to_bf16_bits(1.0 + 3.0 / 256.0), 0x3F82);
    }

    #[test]
    fn a_v41_row_uses_the_scale_of_its_block() {
        // 256 values of 1.0 (0x38), scales 2^0, 2^1, ..., 2^7 per block of 32.
        let mut row = vec![0x38u8; 256];
        row.extend((0..8).map(|i| 127 + i as u8));
        let mut out = vec![0u16; 256];
        dequantize_block_scaled_row(&row, 32, &mut out);
        for (i, &bits) in out.iter().enumerate() {
            assert_eq!(
                bf16_bits_to_f64(bits),
                f64::from(1u32 << (i / 32)),
                "value {i}"
            );
        }
    }
}
