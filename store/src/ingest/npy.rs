//! The `.npy` header: magic, version, and the Python-literal dict with `descr`, `fortran_order`
//! and `shape`. Only what a table needs is accepted: 2-D, C order, little-endian f4/f2/i1/u1.

use std::io::Read;
use std::path::Path;

use crate::table::DType;

/// What an `.npy` file holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NpyHeader {
    /// Element type.
    pub dtype: DType,
    /// First dimension.
    pub rows: u64,
    /// Second dimension.
    pub cols: u64,
    /// Byte offset of the data.
    pub data_offset: u64,
}

/// Parses the header at the start of `bytes` (which must hold the whole header).
pub fn parse_npy_header(bytes: &[u8]) -> Result<NpyHeader, String> {
    if bytes.len() < 10 || &bytes[..6] != b"\x93NUMPY" {
        return Err("not a .npy file (bad magic)".into());
    }
    let major = bytes[6];
    let (len, start) = match major {
        1 => (u64::from(u16::from_le_bytes([bytes[8], bytes[9]])), 10u64),
        2 | 3 => {
            if bytes.len() < 12 {
                return Err("truncated .npy header".into());
            }
            (
                u64::from(u32::from_le_bytes([
                    bytes[8], bytes[9], bytes[10], bytes[11],
                ])),
                12,
            )
        }
        v => return Err(format!(".npy format version {v} is not supported")),
    };
    let end = start + len;
    if (bytes.len() as u64) < end {
        return Err(format!(
            "truncated .npy header: needs {end} bytes, have {}",
            bytes.len()
        ));
    }
    let text = std::str::from_utf8(&bytes[start as usize..end as usize])
        .map_err(|_| "the .npy header is not text".to_string())?;
    let descr = dict_value(text, "descr").ok_or("the .npy header has no 'descr'")?;
    let descr = descr.trim().trim_matches(|c| c == '\'' || c == '"');
    let fortran =
        dict_value(text, "fortran_order").ok_or("the .npy header has no 'fortran_order'")?;
    if fortran.trim() != "False" {
        return Err(
            "Fortran-order arrays are not supported: save with np.ascontiguousarray".into(),
        );
    }
    let shape = dict_value(text, "shape").ok_or("the .npy header has no 'shape'")?;
    let dims: Vec<u64> = shape
        .trim()
        .trim_start_matches('(')
        .trim_end_matches(')')
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.trim_end_matches('L').parse::<u64>())
        .collect::<Result<_, _>>()
        .map_err(|_| format!("bad shape {shape:?} in the .npy header"))?;
    if dims.len() != 2 {
        return Err(format!(
            "a table needs a 2-D array, this one has shape {dims:?}"
        ));
    }
    let dtype = DType::from_npy_descr(descr).ok_or_else(|| {
        format!(
            "dtype {descr:?} is not supported (use little-endian float32, float16, int8 or uint8)"
        )
    })?;
    Ok(NpyHeader {
        dtype,
        rows: dims[0],
        cols: dims[1],
        data_offset: end,
    })
}

/// The text of `key`'s value in a Python dict literal (up to the next top-level comma).
fn dict_value<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    let at = text
        .find(&format!("'{key}'"))
        .or_else(|| text.find(&format!("\"{key}\"")))?;
    let rest = &text[at + key.len() + 2..];
    let rest = rest.trim_start().strip_prefix(':')?;
    let mut depth = 0i32;
    for (i, c) in rest.char_indices() {
        match c {
            '(' | '[' => depth += 1,
            ')' | ']' => depth -= 1,
            ',' | '}' if depth == 0 => return Some(&rest[..i]),
            _ => {}
        }
    }
    None
}

/// Reads and parses the header of the `.npy` file at `path`.
pub(super) fn read_npy_header(path: &Path) -> anyhow::Result<NpyHeader> {
    let mut f = std::fs::File::open(path)?;
    let mut buf = vec![0u8; 64 << 10];
    let mut got = 0;
    while got < buf.len() {
        let n = f.read(&mut buf[got..])?;
        if n == 0 {
            break;
        }
        got += n;
    }
    parse_npy_header(&buf[..got]).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(dict: &str) -> Vec<u8> {
        let mut d = dict.as_bytes().to_vec();
        while !(10 + d.len() + 1).is_multiple_of(64) {
            d.push(b' ');
        }
        d.push(b'\n');
        let mut b = b"\x93NUMPY\x01\x00".to_vec();
        b.extend_from_slice(&(d.len() as u16).to_le_bytes());
        b.extend_from_slice(&d);
        b
    }

    #[test]
    fn parses_numpy_headers() {
        let h = parse_npy_header(&header(
            "{'descr': '<f4', 'fortran_order': False, 'shape': (10, 3), }",
        ))
        .expect("valid");
        // 10 bytes of magic, version and length, then the 60-byte dict padded with its newline to
        // the next multiple of 64: the data starts at 128.
        assert_eq!(
            (h.dtype, h.rows, h.cols, h.data_offset),
            (DType::F32, 10, 3, 128)
        );
        let h = parse_npy_header(&header(
            "{'descr': '|u1', 'fortran_order': False, 'shape': (7, 160), }",
        ))
        .expect("valid");
        assert_eq!(h.dtype, DType::U8);
    }

    #[test]
    fn rejects_what_a_table_cannot_be() {
        for (dict, why) in [
            (
                "{'descr': '<f4', 'fortran_order': True, 'shape': (10, 3), }",
                "Fortran",
            ),
            (
                "{'descr': '<f4', 'fortran_order': False, 'shape': (10,), }",
                "2-D",
            ),
            (
                "{'descr': '>f4', 'fortran_order': False, 'shape': (10, 3), }",
                "not supported",
            ),
            ("{'descr': '<f4', 'shape': (10, 3), }", "fortran_order"),
        ] {
            let e = parse_npy_header(&header(dict)).expect_err(dict);
            assert!(e.contains(why), "{e}");
        }
        assert!(parse_npy_header(b"PK\x03\x04").is_err());
    }
}
