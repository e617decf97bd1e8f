//! The simulator's inputs, each turned into one stream of `u64` row ids:
//! - a real token trace (`NAME.tokens.u32` with `NAME.docs.u64` beside it) hashed into one
//!   layer's row ids with the Engram hashing, document by document so no n-gram crosses a
//!   document boundary;
//! - a raw row-id trace (little-endian `u64`s);
//! - synthetic Zipf requests over a number of rows.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail, ensure};
use engram_store_cache::mix64;
use engram_store_hashing::{CompressionMap, LayerHasher, Layout};
use rand::{SeedableRng, rngs::StdRng};
use rand_distr::{Distribution, Zipf};

/// A row-id stream ready to simulate.
#[derive(Debug)]
pub struct Trace {
    /// Name in the CSV's `trace` column.
    pub name: String,
    /// Row ids in access order.
    pub rows: Vec<u64>,
    /// Distinct row ids in `rows`.
    pub distinct: usize,
}

impl Trace {
    /// A trace named `name` over `rows`.
    pub fn new(name: String, rows: Vec<u64>) -> Self {
        let distinct = count_distinct(&rows);
        Self {
            name,
            rows,
            distinct,
        }
    }
}

fn count_distinct(rows: &[u64]) -> usize {
    let mut sorted = rows.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    sorted.len()
}

/// How to hash a token trace.
#[derive(Debug)]
pub struct Hashing<'a> {
    /// Table layout (JSON); the Engram-27B layout when `None`.
    pub layout: Option<&'a Path>,
    /// Raw -> compressed token map (`.npy`).
    pub compress: &'a Path,
    /// Layer whose rows are traced; the layout's first layer when `None`.
    pub layer: Option<u32>,
    /// Keep only the first this many heads of each n-gram order (all when `None`). The heads of
    /// one n-gram are always read together, so a policy sees nearly the same hit rate on a
    /// one-head trace at the same fraction of distinct rows, for a fraction of the work: a
    /// sampling option for quick tuning sweeps, not for reported results.
    pub heads_per_order: Option<usize>,
}

/// Reads `tokens` (and the `.docs.u64` beside it) and hashes it into one layer's row ids.
pub fn from_tokens(tokens: &Path, hashing: &Hashing<'_>) -> Result<Trace> {
    let layout = match hashing.layout {
        Some(path) => {
            Layout::load(path).with_context(|| format!("load layout {}", path.display()))?
        }
        None => Layout::engram27b(),
    };
    let layer = match hashing.layer {
        Some(id) => id,
        None => match layout.layers().first() {
            Some(l) => l.layer_id(),
            None => bail!("layout has no layers"),
        },
    };
    let hasher =
        LayerHasher::new(&layout, layer).with_context(|| format!("hasher of layer {layer}"))?;
    let map = CompressionMap::load(hashing.compress)
        .with_context(|| format!("load compression map {}", hashing.compress.display()))?;
    map.check_layout(&layout)
        .context("check the compression map against the layout")?;

    let (raw, docs) = read_token_trace(tokens)?;
    let mut compressed = Vec::with_capacity(raw.len());
    map.compress_into(&raw, &mut compressed)
        .with_context(|| format!("compress the tokens of {}", tokens.display()))?;

    let per_order = layout.n_head_per_ngram();
    let keep = hashing
        .heads_per_order
        .unwrap_or(per_order)
        .clamp(1, per_order);
    let heads_total = hasher.heads_total();
    let mut rows = Vec::with_capacity(raw.len() * heads_total * keep / per_order);
    let mut doc_rows = Vec::new();
    for (d, w) in docs.windows(2).enumerate() {
        let (start, end) = (w[0] as usize, w[1] as usize);
        hasher
            .row_ids_into(&compressed[start..end], &[], &mut doc_rows)
            .with_context(|| format!("hash document {d} of {}", tokens.display()))?;
        if keep == per_order {
            rows.extend_from_slice(&doc_rows);
        } else {
            let kept = doc_rows
                .iter()
                .enumerate()
                .filter(|(j, _)| (j % heads_total) % per_order < keep)
                .map(|(_, &r)| r);
            rows.extend(kept);
        }
    }
    let stem = file_stem(tokens).trim_end_matches(".tokens").to_owned();
    let heads = if keep == per_order {
        String::new()
    } else {
        format!("-heads{keep}")
    };
    Ok(Trace::new(format!("{stem}-layer{layer}{heads}"), rows))
}

/// Reads a token trace: the raw token ids of `NAME.tokens.u32` and the document offsets of the
/// `NAME.docs.u64` beside it (checked: from 0 to the token count, never decreasing).
pub fn read_token_trace(tokens: &Path) -> Result<(Vec<u32>, Vec<u64>)> {
    let raw = read_u32s(tokens)?;
    let docs_path = docs_path(tokens)?;
    let docs = read_u64s(&docs_path)?;
    check_docs(&docs, raw.len()).with_context(|| format!("check {}", docs_path.display()))?;
    Ok((raw, docs))
}

/// Reads a raw little-endian `u64` row-id trace; with `table_rows`, every id must be below it.
pub fn from_row_file(path: &Path, table_rows: Option<u64>) -> Result<Trace> {
    let rows = read_u64s(path)?;
    if let Some(n) = table_rows
        && let Some(pos) = rows.iter().position(|&r| r >= n)
    {
        bail!(
            "row id {} at access {pos} of {} is not below --rows {n}",
            rows[pos],
            path.display()
        );
    }
    Ok(Trace::new(file_stem(path).to_owned(), rows))
}

/// `requests` Zipf(`exponent`) draws over `rows` rows. Ranks are scattered over the id space
/// (hot rows are not the small ids), as hashing scatters real n-grams.
pub fn zipf(exponent: f64, rows: u64, requests: usize, seed: u64) -> Result<Trace> {
    ensure!(rows > 0, "--rows must be positive for --zipf");
    let dist = Zipf::new(rows as f64, exponent)
        .map_err(|e| anyhow::anyhow!("zipf({exponent}) over {rows} rows: {e}"))?;
    let mut rng = StdRng::seed_from_u64(seed);
    let trace = (0..requests)
        .map(|_| mix64(dist.sample(&mut rng) as u64))
        .collect();
    Ok(Trace::new(format!("zipf{exponent}-{rows}"), trace))
}

/// `NAME.docs.u64` beside `NAME.tokens.u32`.
fn docs_path(tokens: &Path) -> Result<PathBuf> {
    let name = tokens
        .file_name()
        .and_then(|n| n.to_str())
        .with_context(|| format!("token file name {}", tokens.display()))?;
    let Some(stem) = name.strip_suffix(".tokens.u32") else {
        bail!(
            "token file {} is not named NAME.tokens.u32",
            tokens.display()
        );
    };
    Ok(tokens.with_file_name(format!("{stem}.docs.u64")))
}

/// Document offsets must start at 0, never decrease, and end at the token count.
fn check_docs(docs: &[u64], tokens: usize) -> Result<()> {
    ensure!(
        docs.len() >= 2,
        "need at least one document, got {} offsets",
        docs.len()
    );
    ensure!(docs[0] == 0, "first document starts at {}, not 0", docs[0]);
    ensure!(
        docs.windows(2).all(|w| w[0] <= w[1]),
        "document offsets decrease"
    );
    let last = docs[docs.len() - 1];
    ensure!(
        last == tokens as u64,
        "offsets end at {last}, the token file has {tokens} tokens"
    );
    Ok(())
}

fn file_stem(path: &Path) -> &str {
    path.file_stem().and_then(|s| s.to_str()).unwrap_or("trace")
}

fn read_u32s(path: &Path) -> Result<Vec<u32>> {
    let bytes = std::fs::read(path).with_context(|| format!("read {}", path.display()))?;
    ensure!(
        bytes.len() % 4 == 0,
        "{} is not whole u32s ({} bytes)",
        path.display(),
        bytes.len()
    );
    Ok(bytes
        .chunks_exact(4)
        .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect())
}

fn read_u64s(path: &Path) -> Result<Vec<u64>> {
    let bytes = std::fs::read(path).with_context(|| format!("read {}", path.display()))?;
    ensure!(
        bytes.len() % 8 == 0,
        "{} is not whole u64s ({} bytes)",
        path.display(),
        bytes.len()
    );
    Ok(bytes
        .chunks_exact(8)
        .map(|c| u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn row_files_round_trip_and_are_checked() -> Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("t.u64");
        let ids = [5u64, 9, 5, 1];
        std::fs::write(
            &path,
            ids.iter().flat_map(|r| r.to_le_bytes()).collect::<Vec<_>>(),
        )?;
        let trace = from_row_file(&path, Some(10))?;
        assert_eq!(trace.rows, ids);
        assert_eq!(trace.distinct, 3);
        assert!(from_row_file(&path, Some(9)).is_err());
        std::fs::write(&path, [1u8, 2, 3])?;
        assert!(from_row_file(&path, None).is_err(), "torn u64");
        Ok(())
    }

    #[test]
    fn docs_must_cover_the_tokens() {
        assert!(check_docs(&[0, 3, 7], 7).is_ok());
        assert!(check_docs(&[0, 3, 7], 8).is_err());
        assert!(check_docs(&[1, 7], 7).is_err());
        assert!(check_docs(&[0, 5, 3, 7], 7).is_err());
        assert!(check_docs(&[0], 0).is_err());
    }

    #[test]
    fn zipf_is_skewed_and_seeded() -> Result<()> {
        let a = zipf(1.0, 1000, 10_000, 1)?;
        let b = zipf(1.0, 1000, 10_000, 1)?;
        assert_eq!(a.rows, b.rows);
        assert!(a.distinct < 1000);
        Ok(())
    }
}
