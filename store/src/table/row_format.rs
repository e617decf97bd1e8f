//! How a row's bytes hold its `row_dim` elements, beside the element `dtype` in the manifest.
//!
//! - `plain` (the default, and what a manifest without `row_format` means): `row_dim` elements of
//!   `dtype`, `row_bytes = row_dim x size`.
//! - `fp8_block_scaled`: `row_dim` fp8 e4m3 values followed by one ue8m0 scale byte per `block`
//!   values (DeepSeek-V4.1 Engram rows: 256 values + 8 scales = 264 bytes). Value `i` stands for
//!   `e4m3(v[i]) x 2^(s[i / block] - 127)`; rows are stored and served packed, as the checkpoint's
//!   weight and scale tensors interleave into them.
//! - `fp8_table_scaled`: `row_dim` fp8 e4m3 values, each standing for `e4m3(v) x scale`, one f32
//!   scale for the whole table.
//!
//! The manifest spells it `"row_format": {"kind": "fp8_block_scaled", "block": 32,
//! "scale_dtype": "ue8m0"}` or `{"kind": "fp8_table_scaled", "scale": 0.5}`; plain rows leave the
//! key out, so their manifests read as before with older servers too.

use serde::{Deserialize, Serialize};

use super::dtype::DType;

/// The element type of block scales.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ScaleDType {
    /// Unsigned 8-bit exponent, bias 127: the byte `s` stands for `2^(s - 127)` (OCP MX E8M0).
    #[default]
    Ue8m0,
}

/// How a row's bytes hold its elements.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum RowFormat {
    /// `row_dim` elements of the table's dtype.
    #[default]
    Plain,
    /// fp8 e4m3 values, then one scale per `block` values.
    Fp8BlockScaled {
        /// Values per scale (32 for DeepSeek-V4.1).
        block: u32,
        /// Element type of the scales.
        #[serde(default)]
        scale_dtype: ScaleDType,
    },
    /// fp8 e4m3 values with one scale for the whole table.
    Fp8TableScaled {
        /// The scale every value is multiplied by.
        scale: f32,
    },
}

impl RowFormat {
    /// DeepSeek-V4.1's Engram rows: ue8m0 scales, one per 32 values, after the values.
    pub const V41_ENGRAM: RowFormat = RowFormat::Fp8BlockScaled {
        block: 32,
        scale_dtype: ScaleDType::Ue8m0,
    };

    /// True for [`RowFormat::Plain`] (left out of manifests).
    pub fn is_plain(&self) -> bool {
        matches!(self, RowFormat::Plain)
    }

    /// Name in manifests and messages.
    pub fn name(&self) -> &'static str {
        match self {
            RowFormat::Plain => "plain",
            RowFormat::Fp8BlockScaled { .. } => "fp8_block_scaled",
            RowFormat::Fp8TableScaled { .. } => "fp8_table_scaled",
        }
    }

    /// Bytes of a row of `row_dim` elements of `dtype` in this format, or why the combination
    /// is not a valid table.
    pub fn row_bytes(&self, dtype: DType, row_dim: u32) -> Result<u64, String> {
        let values = u64::from(row_dim) * dtype.size() as u64;
        match *self {
            RowFormat::Plain => Ok(values),
            RowFormat::Fp8BlockScaled { block, .. } => {
                if dtype != DType::F8E4M3 {
                    return Err(format!(
                        "row format fp8_block_scaled needs dtype fp8_e4m3, not {dtype}"
                    ));
                }
                if block == 0 || !row_dim.is_multiple_of(block) {
                    return Err(format!(
                        "row format fp8_block_scaled: block {block} does not divide row_dim \
                         {row_dim}"
                    ));
                }
                Ok(values + u64::from(row_dim / block))
            }
            RowFormat::Fp8TableScaled { scale } => {
                if dtype != DType::F8E4M3 {
                    return Err(format!(
                        "row format fp8_table_scaled needs dtype fp8_e4m3, not {dtype}"
                    ));
                }
                if !scale.is_finite() || scale == 0.0 {
                    return Err(format!(
                        "row format fp8_table_scaled: scale {scale} must be finite and non-zero"
                    ));
                }
                Ok(values)
            }
        }
    }

    /// The protobuf message.
    pub fn to_proto(&self) -> engram_store_proto::v1::RowFormat {
        use engram_store_proto::v1 as pb;
        match *self {
            RowFormat::Plain => pb::RowFormat {
                kind: pb::RowFormatKind::Plain as i32,
                ..Default::default()
            },
            RowFormat::Fp8BlockScaled { block, scale_dtype } => pb::RowFormat {
                kind: pb::RowFormatKind::Fp8BlockScaled as i32,
                scale_block: block,
                scale_dtype: match scale_dtype {
                    ScaleDType::Ue8m0 => pb::ScaleDType::ScaleDtypeUe8m0 as i32,
                },
                table_scale: 0.0,
            },
            RowFormat::Fp8TableScaled { scale } => pb::RowFormat {
                kind: pb::RowFormatKind::Fp8TableScaled as i32,
                table_scale: scale,
                ..Default::default()
            },
        }
    }
}

impl std::fmt::Display for RowFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RowFormat::Plain => f.write_str("plain"),
            RowFormat::Fp8BlockScaled { block, .. } => {
                write!(f, "fp8_block_scaled (ue8m0 scale per {block} values)")
            }
            RowFormat::Fp8TableScaled { scale } => write!(f, "fp8_table_scaled (scale {scale})"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v41_rows_are_264_bytes() {
        assert_eq!(RowFormat::V41_ENGRAM.row_bytes(DType::F8E4M3, 256), Ok(264));
        assert_eq!(RowFormat::Plain.row_bytes(DType::Bf16, 256), Ok(512));
        assert!(RowFormat::V41_ENGRAM.row_bytes(DType::Bf16, 256).is_err());
        assert!(RowFormat::V41_ENGRAM.row_bytes(DType::F8E4M3, 250).is_err());
        let table = RowFormat::Fp8TableScaled { scale: 0.25 };
        assert_eq!(table.row_bytes(DType::F8E4M3, 256), Ok(256));
        assert!(
            RowFormat::Fp8TableScaled { scale: f32::NAN }
                .row_bytes(DType::F8E4M3, 8)
                .is_err()
        );
    }

    #[test]
    fn json_spelling() {
        let json = serde_json::to_string(&RowFormat::V41_ENGRAM).expect("json");
        assert_eq!(
            json,
            r#"{"kind":"fp8_block_scaled","block":32,"scale_dtype":"ue8m0"}"#
        );
        let back: RowFormat =
            serde_json::from_str(r#"{"kind":"fp8_block_scaled","block":32}"#).expect("parse");
        assert_eq!(back, RowFormat::V41_ENGRAM);
        let table: RowFormat =
            serde_json::from_str(r#"{"kind":"fp8_table_scaled","scale":0.5}"#).expect("parse");
        assert_eq!(table, RowFormat::Fp8TableScaled { scale: 0.5 });
        assert!(serde_json::from_str::<RowFormat>(r#"{"kind":"int4"}"#).is_err());
        assert!(
            serde_json::from_str::<RowFormat>(r#"{"kind":"fp8_block_scaled","block":32,"x":1}"#)
                .is_err(),
            "unknown fields are refused"
        );
    }
}
