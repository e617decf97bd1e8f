//! Engram groups being served: per layer, the [`LayerHasher`] and the table holding the layer's
//! rows. [`ServedLayer::row_ids`] compresses the raw token ids through the group's map (the
//! hashing crate's; dead tokens are not looked up), hashes every position of every sequence into
//! one row id per requested hash column (all `heads_total`, or a tensor-parallel rank's range),
//! dead tokens applied as the hashing crate applies them; the engine dedupes the batch and reads
//! each distinct row once.

use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::Arc;

use engram_store_hashing::{
    CompressError, CompressionMap, HashError, HashInput, LayerHasher, Layout,
};

use super::error::{BadToken, LookupError};
use super::query::TokenSequence;
use super::served_table::ServedTable;
use crate::group::GroupFiles;

/// Why a group on disk cannot be served over the tables opened.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GroupOpenError {
    /// group.json names no table for a layer of the layout.
    #[error("group.json names no table for layer {layer_id}")]
    NoTableNamed {
        /// The layer.
        layer_id: u32,
    },
    /// The table of a layer is not being served.
    #[error("table {table:?} of layer {layer_id} is not served (missing or failed to open)")]
    TableNotServed {
        /// The table.
        table: String,
        /// The layer.
        layer_id: u32,
    },
    /// The table of a layer does not have the layout's shape.
    #[error(
        "table {table:?} of layer {layer_id} has {rows} rows x {row_dim}, the layout needs {want_rows} x {want_row_dim}"
    )]
    Shape {
        /// The table.
        table: String,
        /// The layer.
        layer_id: u32,
        /// Its rows.
        rows: u64,
        /// Its row width.
        row_dim: u32,
        /// The layout's rows.
        want_rows: u64,
        /// The layout's row width.
        want_row_dim: usize,
    },
    /// The layout's layer cannot be hashed.
    #[error("layer {layer_id}: {source}")]
    Hasher {
        /// The layer.
        layer_id: u32,
        /// Why.
        #[source]
        source: HashError,
    },
}

/// One Engram group: its layout, its compression map and its layers.
#[derive(Debug)]
pub struct ServedGroup {
    name: String,
    layout: Layout,
    map: Arc<CompressionMap>,
    layers: BTreeMap<u32, Arc<ServedLayer>>,
}

/// One layer of a group: how token ids become row ids, and the table of those rows.
#[derive(Debug, Clone)]
pub struct ServedLayer {
    group: String,
    hasher: LayerHasher,
    map: Arc<CompressionMap>,
    compressed_vocab_size: u32,
    /// Context tokens that matter: `max_ngram_size - 1`.
    context_len: usize,
    table: Arc<ServedTable>,
}

impl ServedGroup {
    /// Links a loaded group to the served tables of its layers, checking their shapes.
    pub fn open(
        files: GroupFiles,
        tables: &BTreeMap<String, Arc<ServedTable>>,
    ) -> Result<Self, GroupOpenError> {
        let GroupFiles { meta, layout, map } = files;
        let map = Arc::new(map);
        let mut layers = BTreeMap::new();
        for layer in layout.layers() {
            let id = layer.layer_id();
            let name = meta
                .table_of(id)
                .ok_or(GroupOpenError::NoTableNamed { layer_id: id })?;
            let table = tables
                .get(name)
                .ok_or_else(|| GroupOpenError::TableNotServed {
                    table: name.to_owned(),
                    layer_id: id,
                })?;
            check_shape(&layout, id, table)?;
            let hasher =
                LayerHasher::new(&layout, id).map_err(|source| GroupOpenError::Hasher {
                    layer_id: id,
                    source,
                })?;
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

    /// The same group over other versions of its layers' tables (a new version swapped in):
    /// every layer keeps its hasher and map and reads the table of the same name in `tables`,
    /// which must have the layout's shape.
    pub fn relink(
        &self,
        tables: &BTreeMap<String, Arc<ServedTable>>,
    ) -> Result<Self, GroupOpenError> {
        let mut layers = BTreeMap::new();
        for (&id, layer) in &self.layers {
            let name = &layer.table.manifest().name;
            let table = tables
                .get(name)
                .ok_or_else(|| GroupOpenError::TableNotServed {
                    table: name.clone(),
                    layer_id: id,
                })?;
            check_shape(&self.layout, id, table)?;
            layers.insert(
                id,
                Arc::new(ServedLayer {
                    table: table.clone(),
                    ..ServedLayer::clone(layer)
                }),
            );
        }
        Ok(Self {
            name: self.name.clone(),
            layout: self.layout.clone(),
            map: self.map.clone(),
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

    /// The columns a request asks for, checked against the layer's `heads_total`: `None` is
    /// every column.
    pub fn columns(&self, requested: Option<&Range<u32>>) -> Result<Range<usize>, LookupError> {
        let heads_total = self.hasher.heads_total();
        let Some(r) = requested else {
            return Ok(0..heads_total);
        };
        let columns = r.start as usize..r.end as usize;
        if columns.is_empty() || columns.end > heads_total {
            return Err(LookupError::ColumnRange {
                group: self.group.clone(),
                layer_id: self.layer_id(),
                start: r.start,
                end: r.end,
                heads_total,
            });
        }
        Ok(columns)
    }

    /// Table rows a request for `sequences` returns: positions x columns (saturating, so that a
    /// batch limit check refuses an absurd request).
    pub fn output_rows(&self, sequences: &[TokenSequence], columns: &Range<usize>) -> usize {
        sequences
            .iter()
            .fold(0usize, |n, s| n.saturating_add(s.tokens().len()))
            .saturating_mul(columns.len())
    }

    /// The row id of every (sequence, position, column), in that order, for `columns` (from
    /// [`ServedLayer::columns`]), with each sequence's dead tokens applied. Raw ids are
    /// compressed through the group's map unless `compressed`, in which case they are checked
    /// against the compressed vocabulary; dead tokens' ids are neither. The caller has checked
    /// the row count ([`ServedLayer::output_rows`]) against its limit.
    pub fn row_ids(
        &self,
        sequences: &[TokenSequence],
        compressed: bool,
        columns: Range<usize>,
    ) -> Result<Vec<u64>, LookupError> {
        let width = columns.len();
        let mut out = vec![0u64; self.output_rows(sequences, &columns)];
        let (mut tokens, mut context) = (Vec::new(), Vec::new());
        let mut at = 0;
        for (i, s) in sequences.iter().enumerate() {
            // Only the last `context_len` tokens of the context are read.
            let skip = s.context().len().saturating_sub(self.context_len);
            let context_dead = s.context_dead().get(skip..).unwrap_or_default();
            let input = if compressed {
                let limit = self.compressed_vocab_size;
                check_compressed(s.tokens(), s.dead(), limit)
                    .map_err(|cause| self.bad_token(i, false, cause))?;
                check_compressed(&s.context()[skip..], context_dead, limit)
                    .map_err(|cause| self.bad_token(i, true, shift(cause, skip)))?;
                HashInput::new(s.tokens()).context(&s.context()[skip..], context_dead)
            } else {
                self.map
                    .compress_masked_into(s.tokens(), s.dead(), &mut tokens)
                    .map_err(|cause| self.bad_token(i, false, cause))?;
                self.map
                    .compress_masked_into(&s.context()[skip..], context_dead, &mut context)
                    .map_err(|cause| self.bad_token(i, true, shift(cause, skip)))?;
                HashInput::new(&tokens).context(&context, context_dead)
            };
            let len = s.tokens().len() * width;
            self.hasher
                .rows_to_slice(
                    &input.dead(s.dead()),
                    columns.clone(),
                    &mut out[at..at + len],
                )
                .map_err(|source| LookupError::Hash {
                    group: self.group.clone(),
                    sequence: i,
                    source,
                })?;
            at += len;
        }
        Ok(out)
    }

    fn bad_token(&self, sequence: usize, in_context: bool, cause: CompressError) -> LookupError {
        LookupError::BadToken(BadToken {
            group: self.group.clone(),
            sequence,
            in_context,
            cause,
        })
    }
}

/// Checks that `table` has the shape `layout` gives layer `layer_id`.
pub(crate) fn check_shape(
    layout: &Layout,
    layer_id: u32,
    table: &ServedTable,
) -> Result<(), GroupOpenError> {
    let m = table.manifest();
    let want_rows = layout.layer(layer_id).map_or(0, |l| l.row_count());
    if m.rows != want_rows || m.row_dim as usize != layout.row_dim() {
        return Err(GroupOpenError::Shape {
            table: m.name.clone(),
            layer_id,
            rows: m.rows,
            row_dim: m.row_dim,
            want_rows,
            want_row_dim: layout.row_dim(),
        });
    }
    Ok(())
}

/// Checks that every live id (not marked in `dead`, empty or one byte per id) is a compressed id
/// (below `compressed_vocab_size`); a dead token's id is never read.
fn check_compressed(
    ids: &[u32],
    dead: &[u8],
    compressed_vocab_size: u32,
) -> Result<(), CompressError> {
    let live = |p: usize| dead.get(p).is_none_or(|&d| d == 0);
    match (0..ids.len()).find(|&p| ids[p] >= compressed_vocab_size && live(p)) {
        None => Ok(()),
        Some(position) => Err(CompressError::NotCompressedAt {
            position,
            id: ids[position],
            compressed_vocab_size,
        }),
    }
}

/// `cause` with its position moved by `by` (the context tokens skipped before it).
fn shift(cause: CompressError, by: usize) -> CompressError {
    match cause {
        CompressError::UnknownRawIdAt {
            position,
            raw_id,
            len,
        } => CompressError::UnknownRawIdAt {
            position: position + by,
            raw_id,
            len,
        },
        CompressError::NotCompressedAt {
            position,
            id,
            compressed_vocab_size,
        } => CompressError::NotCompressedAt {
            position: position + by,
            id,
            compressed_vocab_size,
        },
        other => other,
    }
}

/// Comma-separated values.
fn join<T: std::fmt::Display>(items: impl Iterator<Item = T>) -> String {
    items.map(|v| v.to_string()).collect::<Vec<_>>().join(", ")
}
