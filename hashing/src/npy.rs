//! A reader for `.npy` files holding one 1-D array of integer ids (little-endian int64, int32 or
//! uint32), as numpy's `np.save` writes them in format versions 1.0, 2.0 and 3.0.
//!
//! Layout of the file: the magic `\x93NUMPY`, two version bytes, the header length (`u16` LE in
//! 1.0, `u32` LE in 2.0 and 3.0), then a Python dict literal such as
//! `{'descr': '<i8', 'fortran_order': False, 'shape': (128815,), }` padded with spaces and a
//! newline, then the raw data. The header parser accepts exactly that literal grammar (strings,
//! `True`/`False`, tuples of integers) and nothing that would need Python to evaluate.

use crate::error::CompressionMapError;

const MAGIC: &[u8] = b"\x93NUMPY";

/// The element types a compression map may be stored as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dtype {
    I64,
    I32,
    U32,
}

impl Dtype {
    fn parse(descr: &str) -> Result<Self, CompressionMapError> {
        match descr {
            "<i8" => Ok(Self::I64),
            "<i4" => Ok(Self::I32),
            "<u4" => Ok(Self::U32),
            other => Err(CompressionMapError::UnsupportedDtype(other.to_owned())),
        }
    }

    fn size(self) -> usize {
        match self {
            Self::I64 => 8,
            Self::I32 | Self::U32 => 4,
        }
    }
}

/// Reads a 1-D `.npy` array of non-negative ids that fit `u32`.
pub(crate) fn read_u32_ids(bytes: &[u8]) -> Result<Vec<u32>, CompressionMapError> {
    let (header, data) = split_header(bytes)?;
    let header = Header::parse(header)?;
    let dtype = Dtype::parse(&header.descr)?;
    if header.fortran_order {
        return Err(CompressionMapError::FortranOrder);
    }
    let [len] = header.shape[..] else {
        return Err(CompressionMapError::NotOneDimensional {
            shape: header.shape,
        });
    };
    let expected = u128::from(len) * dtype.size() as u128;
    if expected != data.len() as u128 {
        return Err(CompressionMapError::DataLength {
            expected: u64::try_from(expected).unwrap_or(u64::MAX),
            found: data.len() as u64,
        });
    }
    let mut ids = Vec::with_capacity(data.len() / dtype.size());
    for (raw_id, chunk) in data.chunks_exact(dtype.size()).enumerate() {
        let value: i64 = match dtype {
            Dtype::I64 => i64::from_le_bytes(le_array(chunk)),
            Dtype::I32 => i64::from(i32::from_le_bytes(le_array(chunk))),
            Dtype::U32 => i64::from(u32::from_le_bytes(le_array(chunk))),
        };
        if value < 0 {
            return Err(CompressionMapError::NegativeId { raw_id, value });
        }
        let id =
            u32::try_from(value).map_err(|_| CompressionMapError::IdTooLarge { raw_id, value })?;
        ids.push(id);
    }
    Ok(ids)
}

/// Copies a chunk of exactly `N` bytes (guaranteed by `chunks_exact`) into an array.
fn le_array<const N: usize>(chunk: &[u8]) -> [u8; N] {
    let mut out = [0; N];
    out.copy_from_slice(chunk);
    out
}

/// Splits the file into the header text and the data that follows it.
fn split_header(bytes: &[u8]) -> Result<(&str, &[u8]), CompressionMapError> {
    let truncated = |needed: usize| CompressionMapError::TruncatedHeader {
        len: bytes.len(),
        needed,
    };
    if bytes.len() < MAGIC.len() || &bytes[..MAGIC.len()] != MAGIC {
        return Err(CompressionMapError::BadMagic);
    }
    let (major, minor) = match bytes.get(6..8) {
        Some(&[major, minor]) => (major, minor),
        _ => return Err(truncated(8)),
    };
    let (len_size, utf8) = match (major, minor) {
        (1, 0) => (2, false),
        (2, 0) => (4, false),
        (3, 0) => (4, true),
        _ => return Err(CompressionMapError::UnsupportedVersion { major, minor }),
    };
    let start = 8 + len_size;
    let len_bytes = bytes.get(8..start).ok_or_else(|| truncated(start))?;
    let header_len = len_bytes
        .iter()
        .rev()
        .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
    let end = start
        .checked_add(header_len)
        .ok_or_else(|| truncated(usize::MAX))?;
    let header = bytes.get(start..end).ok_or_else(|| truncated(end))?;
    let text = if utf8 {
        std::str::from_utf8(header)
            .map_err(|e| CompressionMapError::BadHeader(format!("not UTF-8: {e}")))?
    } else {
        // Versions 1 and 2 are latin-1; the dict literal we accept is ASCII.
        if !header.is_ascii() {
            return Err(CompressionMapError::BadHeader(
                "non-ASCII bytes in a latin-1 header".to_owned(),
            ));
        }
        std::str::from_utf8(header)
            .map_err(|e| CompressionMapError::BadHeader(format!("not ASCII: {e}")))?
    };
    Ok((text, &bytes[end..]))
}

/// The three keys every `.npy` header has.
#[derive(Debug)]
struct Header {
    descr: String,
    fortran_order: bool,
    shape: Vec<u64>,
}

/// A value in the header dict.
#[derive(Debug)]
enum Value {
    Str(String),
    Bool(bool),
    Tuple(Vec<u64>),
}

impl Header {
    fn parse(text: &str) -> Result<Self, CompressionMapError> {
        let mut parser = Parser {
            text: text.as_bytes(),
            pos: 0,
        };
        let entries = parser.dict()?;
        parser.skip_ws();
        if parser.pos != parser.text.len() {
            return Err(parser.error("text after the closing '}'"));
        }
        let (mut descr, mut fortran_order, mut shape) = (None, None, None);
        for (key, value) in entries {
            let slot_taken = match (key.as_str(), value) {
                ("descr", Value::Str(s)) => descr.replace(s).is_some(),
                ("fortran_order", Value::Bool(b)) => fortran_order.replace(b).is_some(),
                ("shape", Value::Tuple(t)) => shape.replace(t).is_some(),
                (key @ ("descr" | "fortran_order" | "shape"), value) => {
                    return Err(CompressionMapError::BadHeader(format!(
                        "key '{key}' has the wrong kind of value: {value:?}"
                    )));
                }
                (key, _) => {
                    return Err(CompressionMapError::BadHeader(format!(
                        "unexpected key '{key}'"
                    )));
                }
            };
            if slot_taken {
                return Err(CompressionMapError::BadHeader(format!(
                    "key '{key}' appears twice"
                )));
            }
        }
        let missing = |key: &str| CompressionMapError::BadHeader(format!("missing key '{key}'"));
        Ok(Self {
            descr: descr.ok_or_else(|| missing("descr"))?,
            fortran_order: fortran_order.ok_or_else(|| missing("fortran_order"))?,
            shape: shape.ok_or_else(|| missing("shape"))?,
        })
    }
}

/// Recursive-descent parser over the header's dict literal.
struct Parser<'a> {
    text: &'a [u8],
    pos: usize,
}

impl Parser<'_> {
    fn error(&self, what: &str) -> CompressionMapError {
        CompressionMapError::BadHeader(format!("{what} at byte {}", self.pos))
    }

    fn skip_ws(&mut self) {
        while self.text.get(self.pos).is_some_and(u8::is_ascii_whitespace) {
            self.pos += 1;
        }
    }

    fn peek(&mut self) -> Option<u8> {
        self.skip_ws();
        self.text.get(self.pos).copied()
    }

    fn expect(&mut self, byte: u8) -> Result<(), CompressionMapError> {
        if self.peek() == Some(byte) {
            self.pos += 1;
            Ok(())
        } else {
            Err(self.error(&format!("expected '{}'", char::from(byte))))
        }
    }

    /// `{ key: value, ... }` with an optional trailing comma.
    fn dict(&mut self) -> Result<Vec<(String, Value)>, CompressionMapError> {
        self.expect(b'{')?;
        let mut entries = Vec::new();
        loop {
            if self.peek() == Some(b'}') {
                self.pos += 1;
                return Ok(entries);
            }
            let key = self.string()?;
            self.expect(b':')?;
            let value = self.value()?;
            entries.push((key, value));
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b'}') => {}
                _ => return Err(self.error("expected ',' or '}'")),
            }
        }
    }

    fn value(&mut self) -> Result<Value, CompressionMapError> {
        match self.peek() {
            Some(b'\'' | b'"') => self.string().map(Value::Str),
            Some(b'(') => self.tuple().map(Value::Tuple),
            Some(_) if self.keyword("True") => Ok(Value::Bool(true)),
            Some(_) if self.keyword("False") => Ok(Value::Bool(false)),
            _ => Err(self.error("expected a string, True, False or a tuple")),
        }
    }

    fn keyword(&mut self, word: &str) -> bool {
        if self.text[self.pos..].starts_with(word.as_bytes()) {
            self.pos += word.len();
            true
        } else {
            false
        }
    }

    /// A quoted string without escapes.
    fn string(&mut self) -> Result<String, CompressionMapError> {
        let quote = match self.peek() {
            Some(q @ (b'\'' | b'"')) => q,
            _ => return Err(self.error("expected a quoted string")),
        };
        let start = self.pos + 1;
        let len = self.text[start..]
            .iter()
            .position(|&b| b == quote)
            .ok_or_else(|| self.error("unterminated string"))?;
        let body = &self.text[start..start + len];
        if body.contains(&b'\\') {
            return Err(self.error("escape sequences in strings are not supported"));
        }
        self.pos = start + len + 1;
        String::from_utf8(body.to_vec()).map_err(|_| self.error("string is not UTF-8"))
    }

    /// `(n, m, ...)`, `(n,)` or `()`.
    fn tuple(&mut self) -> Result<Vec<u64>, CompressionMapError> {
        self.expect(b'(')?;
        let mut items = Vec::new();
        loop {
            if self.peek() == Some(b')') {
                self.pos += 1;
                return Ok(items);
            }
            items.push(self.integer()?);
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b')') => {}
                _ => return Err(self.error("expected ',' or ')'")),
            }
        }
    }

    /// A non-negative decimal integer, with Python 2's optional `L` suffix.
    fn integer(&mut self) -> Result<u64, CompressionMapError> {
        self.skip_ws();
        let start = self.pos;
        while self.text.get(self.pos).is_some_and(u8::is_ascii_digit) {
            self.pos += 1;
        }
        let digits = &self.text[start..self.pos];
        if digits.is_empty() {
            return Err(self.error("expected a non-negative integer"));
        }
        if self.text.get(self.pos) == Some(&b'L') {
            self.pos += 1;
        }
        std::str::from_utf8(digits)
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| self.error("integer does not fit u64"))
    }
}

#[cfg(test)]
mod tests {
    use super::Header;

    #[test]
    fn parses_numpy_headers() {
        let h =
            Header::parse("{'descr': '<i8', 'fortran_order': False, 'shape': (128815,), }   \n")
                .expect("numpy's own header parses");
        assert_eq!(h.descr, "<i8");
        assert!(!h.fortran_order);
        assert_eq!(h.shape, vec![128_815]);
        let h = Header::parse("{\"shape\":(2, 3L),\"descr\":\"<u4\",\"fortran_order\":True}")
            .expect("reordered, double-quoted header parses");
        assert_eq!(h.shape, vec![2, 3]);
        assert!(h.fortran_order);
        let h = Header::parse("{'descr': '<i4', 'fortran_order': False, 'shape': (), }")
            .expect("0-d header parses");
        assert!(h.shape.is_empty());
    }

    #[test]
    fn rejects_malformed_headers() {
        for bad in [
            "",
            "{",
            "{'descr': '<i8', 'fortran_order': False}",
            "{'descr': '<i8', 'fortran_order': False, 'shape': (3,), 'extra': True}",
            "{'descr': '<i8', 'descr': '<i8', 'fortran_order': False, 'shape': (3,)}",
            "{'descr': '<i8', 'fortran_order': 0, 'shape': (3,)}",
            "{'descr': '<i8', 'fortran_order': False, 'shape': (-3,)}",
            "{'descr': '<i8', 'fortran_order': False, 'shape': (3,)} x",
            "{'descr': '<i\\8', 'fortran_order': False, 'shape': (3,)}",
            "{'descr': '<i8', 'fortran_order': False, 'shape': (99999999999999999999999,)}",
        ] {
            assert!(Header::parse(bad).is_err(), "{bad:?} should not parse");
        }
    }
}
