//! Element types of table rows, their sizes and their names in the manifest, `.npy` and
//! `.safetensors` files.

use serde::{Deserialize, Serialize};

/// Element type of a table's rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DType {
    /// IEEE float32.
    F32,
    /// IEEE float16.
    F16,
    /// bfloat16.
    Bf16,
    /// Signed byte.
    I8,
    /// Unsigned byte.
    U8,
    /// fp8 e4m3 (the "fn" variant: no infinities), stored as bytes.
    #[serde(rename = "fp8_e4m3")]
    F8E4M3,
}

impl DType {
    /// Every dtype.
    pub const ALL: [DType; 6] = [
        DType::F32,
        DType::F16,
        DType::Bf16,
        DType::I8,
        DType::U8,
        DType::F8E4M3,
    ];

    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            DType::F32 => 4,
            DType::F16 | DType::Bf16 => 2,
            DType::I8 | DType::U8 | DType::F8E4M3 => 1,
        }
    }

    /// Name in manifests and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            DType::F32 => "f32",
            DType::F16 => "f16",
            DType::Bf16 => "bf16",
            DType::I8 => "i8",
            DType::U8 => "u8",
            DType::F8E4M3 => "fp8_e4m3",
        }
    }

    /// Parses a manifest/CLI name (also accepts `float32`, `e4m3` and similar spellings).
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s.to_ascii_lowercase().as_str() {
            "f32" | "float32" => DType::F32,
            "f16" | "float16" | "half" => DType::F16,
            "bf16" | "bfloat16" => DType::Bf16,
            "i8" | "int8" => DType::I8,
            "u8" | "uint8" => DType::U8,
            "fp8_e4m3" | "f8_e4m3" | "e4m3" | "fp8" | "float8_e4m3fn" => DType::F8E4M3,
            _ => return None,
        })
    }

    /// The dtype of a `.safetensors` tensor dtype name.
    pub fn from_safetensors(s: &str) -> Option<Self> {
        Some(match s {
            "F32" => DType::F32,
            "F16" => DType::F16,
            "BF16" => DType::Bf16,
            "I8" => DType::I8,
            "U8" => DType::U8,
            "F8_E4M3" => DType::F8E4M3,
            _ => return None,
        })
    }

    /// The dtype of a little-endian (or byte-sized) numpy `descr`.
    pub fn from_npy_descr(s: &str) -> Option<Self> {
        Some(match s {
            "<f4" => DType::F32,
            "<f2" => DType::F16,
            "|i1" | "<i1" | "i1" => DType::I8,
            "|u1" | "<u1" | "u1" => DType::U8,
            _ => return None,
        })
    }

    /// The protobuf enum value.
    pub fn to_proto(self) -> engram_store_proto::v1::DType {
        use engram_store_proto::v1::DType as P;
        match self {
            DType::F32 => P::DtypeF32,
            DType::F16 => P::DtypeF16,
            DType::Bf16 => P::DtypeBf16,
            DType::I8 => P::DtypeI8,
            DType::U8 => P::DtypeU8,
            DType::F8E4M3 => P::DtypeF8E4m3,
        }
    }
}

impl std::fmt::Display for DType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for DType {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        DType::parse(s).ok_or_else(|| {
            format!("unknown dtype {s:?}: expected one of f32, f16, bf16, i8, u8, fp8_e4m3")
        })
    }
}
