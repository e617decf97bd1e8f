//! A partial copy of a table version: the row ranges a node holds of it (`held_rows.json` in the
//! version directory). A cluster node given a shard of a version it does not have copies that
//! shard's blocks from a peer into data files of the full length, the rest left as holes, and
//! records here which rows it holds; a version directory without this file holds every row.
//! Rows outside the ranges are never served (the engine answers FAILED_PRECONDITION), so a hole
//! is never read as a row.

use std::io::Write as _;
use std::ops::Range;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::error::{FormatError, TableError};

/// File name of the held ranges inside a version directory.
pub const HELD_ROWS_FILE: &str = "held_rows.json";

/// Sorted, disjoint, non-empty row ranges of a table version.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeldRows {
    /// `[start, end)` pairs.
    ranges: Vec<(u64, u64)>,
}

impl HeldRows {
    /// The ranges `ranges`, merged (empty ones dropped).
    pub fn new(ranges: impl IntoIterator<Item = Range<u64>>) -> Self {
        let mut out = Self::default();
        for r in ranges {
            out.add(r);
        }
        out
    }

    /// Adds `range`, merging it with the ranges it touches.
    pub fn add(&mut self, range: Range<u64>) {
        if range.start >= range.end {
            return;
        }
        let mut merged = (range.start, range.end);
        let mut kept = Vec::with_capacity(self.ranges.len() + 1);
        for &(s, e) in &self.ranges {
            if e < merged.0 || s > merged.1 {
                kept.push((s, e));
            } else {
                merged = (merged.0.min(s), merged.1.max(e));
            }
        }
        kept.push(merged);
        kept.sort_unstable();
        self.ranges = kept;
    }

    /// Removes `range`, cutting the ranges it overlaps.
    pub fn remove(&mut self, range: Range<u64>) {
        if range.start >= range.end {
            return;
        }
        let mut kept = Vec::with_capacity(self.ranges.len() + 1);
        for &(s, e) in &self.ranges {
            if e <= range.start || s >= range.end {
                kept.push((s, e));
                continue;
            }
            if s < range.start {
                kept.push((s, range.start));
            }
            if range.end < e {
                kept.push((range.end, e));
            }
        }
        self.ranges = kept;
    }

    /// The rows held here and not in `other`.
    pub fn minus(&self, other: &HeldRows) -> HeldRows {
        let mut out = self.clone();
        for r in other.ranges() {
            out.remove(r);
        }
        out
    }

    /// True when `id` is held.
    pub fn contains(&self, id: u64) -> bool {
        let i = self.ranges.partition_point(|&(s, _)| s <= id);
        i > 0 && id < self.ranges[i - 1].1
    }

    /// True when every row of `range` is held.
    pub fn covers(&self, range: &Range<u64>) -> bool {
        range.start >= range.end
            || self
                .ranges
                .iter()
                .any(|&(s, e)| s <= range.start && range.end <= e)
    }

    /// The ranges.
    pub fn ranges(&self) -> impl Iterator<Item = Range<u64>> + '_ {
        self.ranges.iter().map(|&(s, e)| s..e)
    }

    /// Rows held.
    pub fn rows(&self) -> u64 {
        self.ranges.iter().map(|&(s, e)| e - s).sum()
    }

    /// The ranges as text, `a..b, c..d`.
    pub fn describe(&self) -> String {
        self.ranges
            .iter()
            .map(|(s, e)| format!("{s}..{e}"))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Reads `dir`'s held ranges: `None` when the directory holds every row (no file), an error
    /// when the file is unreadable, malformed, or names rows past `rows`.
    pub fn load(dir: &Path, rows: u64) -> Result<Option<Self>, TableError> {
        let path = dir.join(HELD_ROWS_FILE);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(TableError::io(format!("read {}", path.display()), e)),
        };
        let bad = |msg: String| TableError::Format {
            path: path.clone(),
            source: FormatError::Invalid(msg),
        };
        let parsed: HeldRows =
            serde_json::from_slice(&bytes).map_err(|e| bad(format!("held rows JSON: {e}")))?;
        if let Some(&(s, e)) = parsed.ranges.iter().find(|&&(s, e)| s >= e || e > rows) {
            return Err(bad(format!(
                "held range {s}..{e} is empty or past the table's {rows} rows"
            )));
        }
        Ok(Some(Self::new(parsed.ranges())))
    }

    /// Writes the ranges into `dir` (a temporary file renamed over the old one, synced).
    pub fn save(&self, dir: &Path) -> Result<(), TableError> {
        let path = dir.join(HELD_ROWS_FILE);
        let tmp = dir.join(format!(".{HELD_ROWS_FILE}.tmp"));
        let io = |what: &str, e| TableError::io(format!("{what} {}", tmp.display()), e);
        let bytes = serde_json::to_vec(self).map_err(|e| TableError::Format {
            path: path.clone(),
            source: FormatError::Invalid(format!("held rows JSON: {e}")),
        })?;
        let mut f = std::fs::File::create(&tmp).map_err(|e| io("create", e))?;
        f.write_all(&bytes).map_err(|e| io("write", e))?;
        f.sync_all().map_err(|e| io("sync", e))?;
        std::fs::rename(&tmp, &path)
            .map_err(|e| TableError::io(format!("rename to {}", path.display()), e))?;
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_merge_and_answer_membership() {
        let mut h = HeldRows::new([10..20, 30..40]);
        assert!(h.contains(10) && h.contains(19) && !h.contains(20) && !h.contains(9));
        assert!(h.covers(&(12..18)) && !h.covers(&(15..35)));
        h.add(20..30);
        assert_eq!(h.describe(), "10..40");
        h.add(50..50);
        assert_eq!(h.rows(), 30);
        h.add(0..5);
        assert_eq!(h.ranges().collect::<Vec<_>>(), vec![0..5, 10..40]);
        h.remove(12..15);
        h.remove(0..3);
        assert_eq!(h.describe(), "3..5, 10..12, 15..40");
        h.remove(0..100);
        assert_eq!(h.rows(), 0);
        let a = HeldRows::new(std::iter::once(0..100));
        assert_eq!(
            a.minus(&HeldRows::new([10..20, 90..200])).describe(),
            "0..10, 20..90"
        );
    }

    #[test]
    fn a_file_round_trips_and_bad_ranges_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert_eq!(HeldRows::load(dir.path(), 100).expect("absent"), None);
        let h = HeldRows::new([0..10, 60..100]);
        h.save(dir.path()).expect("save");
        assert_eq!(HeldRows::load(dir.path(), 100).expect("load"), Some(h));
        let err = HeldRows::load(dir.path(), 90).expect_err("past the end");
        assert!(err.to_string().contains("60..100"), "{err}");
        std::fs::write(dir.path().join(HELD_ROWS_FILE), b"{").expect("write");
        assert!(HeldRows::load(dir.path(), 100).is_err());
    }
}
