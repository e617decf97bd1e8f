//! A batch of row ids reduced to its distinct ids, remembering where every id goes: the row of
//! each distinct id is fetched once, written to its first output position, and copied from there
//! to the other positions that want it (one copy per output row).

use std::collections::HashMap;

use engram_store_cache::KeyHashBuilder;

/// Row ids of a request: each distinct id once, with its first position and, for every position,
/// which distinct id it wants.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DedupedIds {
    distinct: Vec<u64>,
    first: Vec<usize>,
    index: Vec<usize>,
}

impl DedupedIds {
    /// Dedupes `ids`, keeping first-seen order.
    pub fn new(ids: &[u64]) -> Self {
        let mut seen: HashMap<u64, usize, KeyHashBuilder> =
            HashMap::with_capacity_and_hasher(ids.len(), KeyHashBuilder);
        let mut distinct = Vec::new();
        let mut first = Vec::new();
        let index = ids
            .iter()
            .enumerate()
            .map(|(position, &id)| {
                *seen.entry(id).or_insert_with(|| {
                    distinct.push(id);
                    first.push(position);
                    distinct.len() - 1
                })
            })
            .collect();
        Self {
            distinct,
            first,
            index,
        }
    }

    /// The distinct ids, in order of first appearance.
    pub fn distinct(&self) -> &[u64] {
        &self.distinct
    }

    /// `first()[k]`: the first position wanting `distinct()[k]`.
    pub fn first(&self) -> &[usize] {
        &self.first
    }

    /// `index()[position]`: which distinct id the position wants.
    pub fn index(&self) -> &[usize] {
        &self.index
    }

    /// Positions (ids before deduping).
    pub fn len(&self) -> usize {
        self.index.len()
    }

    /// True when there are no positions.
    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// The id at `position`.
    pub fn id_at(&self, position: usize) -> Option<u64> {
        self.index.get(position).map(|&k| self.distinct[k])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_first_seen_order_and_positions() {
        let ids = [7, 3, 7, 9, 3, 3];
        let d = DedupedIds::new(&ids);
        assert_eq!(d.distinct(), &[7, 3, 9]);
        assert_eq!(d.first(), &[0, 1, 3]);
        assert_eq!(d.index(), &[0, 1, 0, 2, 1, 1]);
        let back: Vec<u64> = (0..d.len()).filter_map(|p| d.id_at(p)).collect();
        assert_eq!(back, ids);
        assert!(DedupedIds::new(&[]).is_empty());
    }
}
