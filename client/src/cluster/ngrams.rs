//! LookupNgrams in the cluster client: the client hashes token sequences into the rows they
//! resolve to (with the group's layout and compression map, read from etcd, through
//! `engram-store-hashing`, bit for bit as the server would), and routes those rows like any
//! lookup. The rows come back `[sequence][position][column]`, as the server lays them out.

use std::collections::HashMap;
use std::ops::Range;

use engram_store_hashing::{CompressionMap, HashInput, LayerHasher, Layout};

use super::map::GroupRecord;
use crate::error::ClientError;
use crate::proto as pb;

/// What a client needs to hash one Engram group's n-grams.
#[derive(Debug)]
pub struct GroupHashing {
    record: GroupRecord,
    layout: Layout,
    map: CompressionMap,
    hashers: HashMap<u32, LayerHasher>,
}

impl GroupHashing {
    /// Parses the three values a node publishes for a group: the record (JSON), the layout
    /// (JSON) and the compression map (npy).
    pub fn parse(meta: &[u8], layout: &[u8], compress: &[u8]) -> Result<Self, String> {
        let record: GroupRecord =
            serde_json::from_slice(meta).map_err(|e| format!("group record: {e}"))?;
        let layout = Layout::from_json_str(
            std::str::from_utf8(layout).map_err(|e| format!("layout is not UTF-8: {e}"))?,
        )
        .map_err(|e| format!("layout: {e}"))?;
        let map = CompressionMap::from_npy_bytes(compress)
            .map_err(|e| format!("compression map: {e}"))?;
        let hashers = record
            .layers
            .keys()
            .map(|&id| {
                LayerHasher::new(&layout, id)
                    .map(|h| (id, h))
                    .map_err(|e| format!("layer {id}: {e}"))
            })
            .collect::<Result<_, _>>()?;
        Ok(Self {
            record,
            layout,
            map,
            hashers,
        })
    }

    /// The group's layout.
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// The table serving `layer_id` and the row ids `sequences` read in it, `[sequence]
    /// [position][column in columns]`. Raw ids are compressed unless `compressed`.
    pub fn rows(
        &self,
        layer_id: u32,
        sequences: &[pb::TokenSequence],
        compressed: bool,
        columns: Option<Range<usize>>,
    ) -> Result<(&str, Vec<u64>), ClientError> {
        let group = &self.record.name;
        let (Some(table), Some(hasher)) = (
            self.record.layers.get(&layer_id),
            self.hashers.get(&layer_id),
        ) else {
            return Err(ClientError::NotFound(format!(
                "group {group:?} has no layer {layer_id}"
            )));
        };
        let columns = columns.unwrap_or(0..hasher.heads_total());
        let vocab = self.layout.compressed_vocab_size();
        let mut out = Vec::new();
        let mut part = Vec::new();
        let (mut tokens, mut context) = (Vec::new(), Vec::new());
        for (i, s) in sequences.iter().enumerate() {
            let bad = |e: &dyn std::fmt::Display| {
                ClientError::InvalidArgument(format!("group {group:?}, sequence {i}: {e}"))
            };
            if compressed {
                CompressionMap::copy_compressed_into(&s.tokens, vocab, &mut tokens)
                    .map_err(|e| bad(&e))?;
                CompressionMap::copy_compressed_into(&s.context, vocab, &mut context)
                    .map_err(|e| bad(&e))?;
            } else {
                self.map
                    .compress_into(&s.tokens, &mut tokens)
                    .map_err(|e| bad(&e))?;
                self.map
                    .compress_into(&s.context, &mut context)
                    .map_err(|e| bad(&e))?;
            }
            let input = HashInput::new(&tokens)
                .dead(&s.dead)
                .context(&context, &s.context_dead);
            hasher
                .rows_into(&input, columns.clone(), &mut part)
                .map_err(|e| bad(&e))?;
            out.extend_from_slice(&part);
        }
        Ok((table.as_str(), out))
    }
}
