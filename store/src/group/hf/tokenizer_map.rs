//! The Engram compression map of a Hugging Face `tokenizer.json`, built in Rust.
//!
//! Every raw id `0..vocab` (added tokens included) is decoded on its own, special tokens kept;
//! the text is normalized (NFKC, NFD, accents stripped, lowercased, runs of ` \t\r\n` collapsed to
//! one space, a text that is exactly one space kept as one space, stripped) and the distinct
//! results are numbered in first-seen order. A text that normalizes to nothing keeps its decoded
//! text, and one that decodes to a replacement character (a partial UTF-8 byte token) keys on its
//! vocabulary string, so byte tokens stay apart. This is vLLM's `build_compressed_token_map` for
//! DeepSeek-V4.1, and the `tokenizers` crate used here is the code its Python package wraps, so
//! decoding and normalization agree bit for bit (the Python tests compare the two maps).
//!
//! Why in Rust rather than a map file from Python: `import-hf` then needs nothing but the
//! checkpoint directory, and the check that the map has `engram_compressed_vocab_size` ids, on
//! which every hash multiplier depends, runs before a byte of the tables is written.

use std::collections::HashMap;
use std::path::Path;

use tokenizers::normalizers::replace::{Replace, ReplacePattern};
use tokenizers::normalizers::{Lowercase, NFD, NFKC, Sequence, Strip, StripAccents};
use tokenizers::{NormalizedString, Normalizer, NormalizerWrapper, Tokenizer};

use engram_store_hashing::CompressionMap;

/// Stands in for a whitespace-only token while the text is stripped (a private-use character).
const SPACE_SENTINEL: &str = "\u{e000}";

/// The normalization pipeline, as vLLM builds it from `tokenizers.normalizers`.
fn normalizer() -> Result<Sequence, String> {
    let replace = |pattern: ReplacePattern, content: &str| {
        Replace::new(pattern, content)
            .map(NormalizerWrapper::from)
            .map_err(|e| format!("build the normalizer: {e}"))
    };
    Ok(Sequence::new(vec![
        NFKC.into(),
        NFD.into(),
        StripAccents.into(),
        Lowercase.into(),
        replace(ReplacePattern::Regex("[ \t\r\n]+".into()), " ")?,
        replace(ReplacePattern::Regex("^ $".into()), SPACE_SENTINEL)?,
        Strip::new(true, true).into(),
        replace(ReplacePattern::String(SPACE_SENTINEL.into()), " ")?,
    ]))
}

/// Raw id -> compressed id for the tokenizer in `tokenizer_json`; the error says what failed.
pub fn build_compression_map(tokenizer_json: &Path) -> Result<CompressionMap, String> {
    let tokenizer = Tokenizer::from_file(tokenizer_json)
        .map_err(|e| format!("load {}: {e}", tokenizer_json.display()))?;
    compression_map_of(&tokenizer)
}

/// The map of a loaded tokenizer.
pub(crate) fn compression_map_of(tokenizer: &Tokenizer) -> Result<CompressionMap, String> {
    let normalizer = normalizer()?;
    let vocab = u32::try_from(tokenizer.get_vocab_size(true))
        .map_err(|_| "the tokenizer has more than 2^32 ids".to_string())?;
    let mut numbers: HashMap<String, u32> = HashMap::new();
    let mut ids = Vec::with_capacity(vocab as usize);
    for raw in 0..vocab {
        let text = tokenizer
            .decode(&[raw], false)
            .map_err(|e| format!("decode token {raw}: {e}"))?;
        let key = if text.contains('\u{fffd}') {
            tokenizer.id_to_token(raw).unwrap_or_default()
        } else {
            let mut normalized = NormalizedString::from(text.as_str());
            normalizer
                .normalize(&mut normalized)
                .map_err(|e| format!("normalize token {raw} ({text:?}): {e}"))?;
            let n = normalized.get();
            if n.is_empty() { text } else { n.to_owned() }
        };
        let next = numbers.len() as u32;
        ids.push(*numbers.entry(key).or_insert(next));
    }
    Ok(CompressionMap::from_ids(ids))
}

/// The map as a 1-D little-endian int64 `.npy` file (what `compress.npy` of a group holds).
pub fn map_npy_bytes(map: &CompressionMap) -> Vec<u8> {
    let dict = format!(
        "{{'descr': '<i8', 'fortran_order': False, 'shape': ({},), }}",
        map.len()
    );
    // magic (6) + version (2) + header length (2) + dict + padding + newline, to 64 bytes.
    let unpadded = 10 + dict.len() + 1;
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    let header_len = unpadded.next_multiple_of(64) - 10;
    out.extend_from_slice(&(header_len as u16).to_le_bytes());
    out.extend_from_slice(dict.as_bytes());
    out.resize(10 + header_len - 1, b' ');
    out.push(b'\n');
    out.reserve(map.len() * 8);
    for &id in map.as_slice() {
        out.extend_from_slice(&i64::from(id).to_le_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn npy_round_trips_through_the_hashing_reader() {
        let map = CompressionMap::from_ids(vec![0, 3, 1, 3, 2]);
        let bytes = map_npy_bytes(&map);
        assert_eq!((bytes.len() - 5 * 8) % 64, 0);
        let back = CompressionMap::from_npy_bytes(&bytes).expect("valid npy");
        assert_eq!(back, map);
    }
}
