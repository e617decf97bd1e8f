//! Engram groups being served: per layer, the [`LayerHasher`] and the table holding the layer's
//! rows. An n-gram lookup compresses the raw token ids through the group's map, hashes every
//! position of every sequence into `heads_total` row ids, dedupes the whole batch and reads each
//! distinct row once ([`ServedTable::lookup_deduped`]).

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use engram_store_hashing::{CompressionMap, LayerHasher, Layout};

use super::dedup::DedupedIds;
use super::error::{BadToken, LookupError};
use super::ngram_query::TokenSequence;
use super::served_table::ServedTable;
use crate::group::GroupFiles;

/// One Engram group: its layout, its compression map and its layers.
#[derive(Debug)]
pub struct ServedGroup {
    name: String,
    layout: Layout,
    map: Arc<CompressionMap>,
    layers: BTreeMap<u32, Arc<ServedLayer>>,
}

/// One layer of a group: how token ids become row ids, and the table of those rows.
#[derive(Debug)]
pub struct ServedLayer {
    group: String,
    hasher: LayerHasher,
    map: Arc<CompressionMap>,
    compressed_vocab_size: u32,
    /// Context tokens that matter: `max_ngram_size - 1`.
    context_len: usize,
    table: Arc<ServedTable>,
}

/// Rows of an n-gram lookup: `row_count` table rows, `[sequence][position][order, head]`.
#[derive(Debug, Clone)]
pub struct NgramRows {
    /// The packed rows.
    pub rows: Bytes,
    /// Table rows in `rows` (positions x heads_total).
    pub row_count: usize,
}

impl ServedGroup {
    /// Links a loaded group to the served tables of its layers, checking their shapes.
    pub fn open(
        files: GroupFiles,
        tables: &BTreeMap<String, Arc<ServedTable>>,
    ) -> Result<Self, String> {
        let GroupFiles { meta, layout, map } = files;
        let map = Arc::new(map);
        let mut layers = BTreeMap::new();
        for layer in layout.layers() {
            let id = layer.layer_id();
            let name = meta
                .table_of(id)
                .ok_or_else(|| format!("group.json names no table for layer {id}"))?;
            let table = tables.get(name).ok_or_else(|| {
                format!("table {name:?} of layer {id} is not in the data directory")
            })?;
            let m = table.manifest();
            if m.rows != layer.row_count() || m.row_dim as usize != layout.row_dim() {
                return Err(format!(
                    "table {name:?} of layer {id} has {} rows x {}, the layout needs {} x {}",
                    m.rows,
                    m.row_dim,
                    layer.row_count(),
                    layout.row_dim()
                ));
            }
            let hasher = LayerHasher::new(&layout, id).map_err(|e| e.to_string())?;
            layers.insert(
                id,
                Arc::new(ServedLayer {
                    group: meta.name.clone(),
                    hasher,
                    map: map.clone(),
                    compressed_vocab_size: layout.compressed_vocab_size(),
                    context_len: layout.max_ngram_size() - 1,
                    table: table.clone(),
                }),
            );
        }
        Ok(Self {
            name: meta.name,
            layout,
            map,
            layers,
        })
    }

    /// Group name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The layout.
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// The compression map.
    pub fn compression_map(&self) -> &CompressionMap {
        &self.map
    }

    /// Layer `layer_id`.
    pub fn layer(&self, layer_id: u32) -> Result<&Arc<ServedLayer>, LookupError> {
        self.layers
            .get(&layer_id)
            .ok_or_else(|| LookupError::UnknownLayer {
                group: self.name.clone(),
                layer_id,
                known: join(self.layers.keys()),
            })
    }

    /// Every layer, by id.
    pub fn layers(&self) -> impl Iterator<Item = &Arc<ServedLayer>> {
        self.layers.values()
    }
}

impl ServedLayer {
    /// The layer id.
    pub fn layer_id(&self) -> u32 {
        self.hasher.layer_id()
    }

    /// The hasher.
    pub fn hasher(&self) -> &LayerHasher {
        &self.hasher
    }

    /// The table of this layer's rows.
    pub fn table(&self) -> &Arc<ServedTable> {
        &self.table
    }

    /// Table rows a request for `sequences` returns: positions x heads_total (saturating, so
    /// that a batch limit check refuses an absurd request).
    pub fn output_rows(&self, sequences: &[TokenSequence]) -> usize {
        sequences
            .iter()
            .fold(0usize, |n, s| n.saturating_add(s.tokens.len()))
            .saturating_mul(self.hasher.heads_total())
    }

    /// The row id of every (sequence, position, order, head), in that order. Raw ids are
    /// compressed through the group's map unless `compressed`, in which case they are checked
    /// against the compressed vocabulary.
    pub fn row_ids(
        &self,
        sequences: &[TokenSequence],
        compressed: bool,
    ) -> Result<Vec<u64>, LookupError> {
        let heads = self.hasher.heads_total();
        let n = self.output_rows(sequences);
        if n == usize::MAX {
            return Err(LookupError::InvalidArgument(format!(
                "{} sequences x {heads} heads overflow the row count",
                sequences.len()
            )));
        }
        let mut out = vec![0u64; n];
        let mut tokens = Vec::new();
        let mut context = Vec::new();
        let mut at = 0;
        for (i, s) in sequences.iter().enumerate() {
            let skip = s.context.len().saturating_sub(self.context_len);
            self.compress(i, &s.tokens, 0, false, compressed, &mut tokens)?;
            self.compress(i, &s.context[skip..], skip, true, compressed, &mut context)?;
            let len = s.tokens.len() * heads;
            self.hasher
                .row_ids_to_slice(&tokens, &context, &mut out[at..at + len])
                .map_err(|e| LookupError::InvalidArgument(format!("sequence {i}: {e}")))?;
            at += len;
        }
        Ok(out)
    }

    /// Compressed ids of `ids` (part of sequence `sequence`, starting at index `first`) into
    /// `out`.
    fn compress(
        &self,
        sequence: usize,
        ids: &[u32],
        first: usize,
        in_context: bool,
        compressed: bool,
        out: &mut Vec<u32>,
    ) -> Result<(), LookupError> {
        let bad = |position: usize, id: u32, limit: u64| {
            LookupError::BadToken(BadToken {
                group: self.group.clone(),
                sequence,
                position: first + position,
                in_context,
                id,
                compressed,
                limit,
            })
        };
        out.clear();
        if compressed {
            let limit = self.compressed_vocab_size;
            if let Some(p) = ids.iter().position(|&id| id >= limit) {
                return Err(bad(p, ids[p], u64::from(limit)));
            }
            out.extend_from_slice(ids);
            return Ok(());
        }
        let map = self.map.as_slice();
        out.reserve(ids.len());
        for (p, &id) in ids.iter().enumerate() {
            match map.get(id as usize) {
                Some(&c) => out.push(c),
                None => return Err(bad(p, id, map.len() as u64)),
            }
        }
        Ok(())
    }

    /// The row ids of `sequences` (see [`ServedLayer::row_ids`]), deduped for
    /// [`ServedTable::lookup_deduped`] / [`ServedTable::lookup_deduped_into`].
    pub fn deduped_row_ids(
        &self,
        sequences: &[TokenSequence],
        compressed: bool,
    ) -> Result<DedupedIds, LookupError> {
        Ok(DedupedIds::new(&self.row_ids(sequences, compressed)?))
    }

    /// The rows of `sequences`: per position, every head's row, concatenated; each distinct row
    /// is read once.
    pub async fn lookup(
        &self,
        sequences: &[TokenSequence],
        compressed: bool,
    ) -> Result<NgramRows, LookupError> {
        let ids = self.deduped_row_ids(sequences, compressed)?;
        let rows = self.table.lookup_deduped(&ids).await?;
        Ok(NgramRows {
            rows,
            row_count: ids.len(),
        })
    }

    /// The distinct row ids `sequences` read, for a prefetch.
    pub fn distinct_row_ids(
        &self,
        sequences: &[TokenSequence],
        compressed: bool,
    ) -> Result<Vec<u64>, LookupError> {
        let mut ids = self.row_ids(sequences, compressed)?;
        ids.sort_unstable();
        ids.dedup();
        Ok(ids)
    }
}

/// Comma-separated values.
fn join<T: std::fmt::Display>(items: impl Iterator<Item = T>) -> String {
    items.map(|v| v.to_string()).collect::<Vec<_>>().join(", ")
}
