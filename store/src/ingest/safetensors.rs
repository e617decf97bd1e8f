//! The `.safetensors` header: an 8-byte little-endian length, then JSON mapping tensor names to
//! dtype, shape and data offsets (relative to the end of the header).

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

use crate::table::DType;

/// Largest header accepted (the format's own limit is 100 MB).
const MAX_HEADER: u64 = 100 << 20;

/// One 2-D tensor of a safetensors file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SafetensorsTensor {
    /// Tensor name.
    pub name: String,
    /// Element type (None for types a table cannot hold).
    pub dtype: DType,
    /// First dimension.
    pub rows: u64,
    /// Second dimension.
    pub cols: u64,
    /// Data start, relative to the data section.
    pub begin: u64,
}

/// A usable tensor with the names of the tensors that were skipped (for error messages).
pub(super) type TensorWithSkipped = (SafetensorsTensor, Vec<String>);

#[derive(serde::Deserialize)]
struct RawTensor {
    dtype: String,
    shape: Vec<u64>,
    data_offsets: [u64; 2],
}

/// Parses the JSON header; returns the usable tensors and, for the others, why not.
pub fn parse_safetensors_header(
    json: &[u8],
) -> Result<(Vec<SafetensorsTensor>, Vec<String>), String> {
    let map: BTreeMap<String, serde_json::Value> =
        serde_json::from_slice(json).map_err(|e| format!("bad safetensors header JSON: {e}"))?;
    let mut ok = Vec::new();
    let mut skipped = Vec::new();
    for (name, value) in map {
        if name == "__metadata__" {
            continue;
        }
        let t: RawTensor =
            serde_json::from_value(value).map_err(|e| format!("tensor {name:?}: {e}"))?;
        let Some(dtype) = DType::from_safetensors(&t.dtype) else {
            skipped.push(format!("{name} ({} not supported)", t.dtype));
            continue;
        };
        if t.shape.len() != 2 {
            skipped.push(format!("{name} (shape {:?} is not 2-D)", t.shape));
            continue;
        }
        let bytes = t.shape[0]
            .checked_mul(t.shape[1])
            .and_then(|n| n.checked_mul(dtype.size() as u64))
            .ok_or_else(|| format!("tensor {name:?}: shape overflows"))?;
        let [begin, end] = t.data_offsets;
        if end < begin || end - begin != bytes {
            return Err(format!(
                "tensor {name:?}: data_offsets [{begin}, {end}] do not match shape {:?} of {}",
                t.shape, t.dtype
            ));
        }
        ok.push(SafetensorsTensor {
            name,
            dtype,
            rows: t.shape[0],
            cols: t.shape[1],
            begin,
        });
    }
    Ok((ok, skipped))
}

/// Reads the header of `path`; returns the tensors and the offset of the data section.
pub(super) fn read_safetensors_header(
    path: &Path,
) -> anyhow::Result<(Vec<TensorWithSkipped>, u64)> {
    let mut f = std::fs::File::open(path)?;
    let mut len = [0u8; 8];
    f.read_exact(&mut len).map_err(|e| {
        anyhow::anyhow!("{}: not a .npy or .safetensors file ({e})", path.display())
    })?;
    let n = u64::from_le_bytes(len);
    if n == 0 || n > MAX_HEADER {
        anyhow::bail!(
            "{}: not a .npy or .safetensors file (header length {n})",
            path.display()
        );
    }
    let mut json = vec![0u8; n as usize];
    f.read_exact(&mut json)
        .map_err(|e| anyhow::anyhow!("{}: truncated safetensors header ({e})", path.display()))?;
    let (tensors, skipped) =
        parse_safetensors_header(&json).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    Ok((
        tensors.into_iter().map(|t| (t, skipped.clone())).collect(),
        8 + n,
    ))
}

/// The tensor `wanted`, or the only one.
pub(super) fn choose(
    tensors: &[(SafetensorsTensor, Vec<String>)],
    wanted: Option<&str>,
    path: &Path,
) -> anyhow::Result<SafetensorsTensor> {
    let names: Vec<&str> = tensors.iter().map(|(t, _)| t.name.as_str()).collect();
    let skipped = tensors
        .first()
        .map(|(_, s)| s.join(", "))
        .unwrap_or_default();
    match wanted {
        Some(w) => tensors
            .iter()
            .find(|(t, _)| t.name == w)
            .map(|(t, _)| t.clone())
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "{}: no usable 2-D tensor {w:?}; usable: [{}]{}",
                    path.display(),
                    names.join(", "),
                    if skipped.is_empty() {
                        String::new()
                    } else {
                        format!("; skipped: {skipped}")
                    }
                )
            }),
        None if tensors.len() == 1 => Ok(tensors[0].0.clone()),
        None => anyhow::bail!(
            "{}: {} usable tensors ([{}]); pick one with --tensor",
            path.display(),
            tensors.len(),
            names.join(", ")
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_checks_offsets() {
        let json = br#"{"__metadata__":{"a":"b"},"w":{"dtype":"BF16","shape":[4,3],"data_offsets":[0,24]},"v":{"dtype":"F64","shape":[2],"data_offsets":[24,40]}}"#;
        let (ok, skipped) = parse_safetensors_header(json).expect("valid");
        assert_eq!(ok.len(), 1);
        assert_eq!((ok[0].dtype, ok[0].rows, ok[0].cols), (DType::Bf16, 4, 3));
        assert_eq!(skipped.len(), 1);
        let bad = br#"{"w":{"dtype":"F32","shape":[4,3],"data_offsets":[0,24]}}"#;
        assert!(parse_safetensors_header(bad).is_err());
    }
}
