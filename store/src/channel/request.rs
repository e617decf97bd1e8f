//! A slot's request, validated: the bytes a client wrote become a [`RowSource`] for the
//! channel's target (rows of its table, or token sequences of its Engram layer), or an error
//! the slot's completion reports. Nothing is trusted: counts are checked against the bytes
//! claimed and the bytes against the slot.

use crate::engine::{NgramQuery, ProtocolError, RowSource, RowsQuery, TokenSequence};

use super::ring::{SlotRequest, kind};

/// What a channel serves: rows of a table, or an Engram layer's n-grams.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChannelTarget {
    /// A table's rows by id.
    Table(String),
    /// An Engram group's layer.
    Layer {
        /// Group.
        group: String,
        /// Layer id.
        layer_id: u32,
        /// True when tokens are already compressed ids.
        compressed: bool,
    },
}

fn bad(field: &'static str, value: impl ToString, problem: &'static str) -> ProtocolError {
    ProtocolError::new(field, value, problem)
}

fn u32_at(bytes: &[u8], at: usize) -> Option<u32> {
    bytes
        .get(at..at + 4)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

/// The query a slot's request makes of `target`, at most `capacity` rows (ids, or positions).
pub(super) fn decode(
    request: &SlotRequest,
    target: &ChannelTarget,
    slot_payload: usize,
    capacity: usize,
) -> Result<RowSource, ProtocolError> {
    if request.claimed > slot_payload {
        return Err(bad(
            "slot.payload_bytes",
            request.claimed,
            "claims more bytes than a slot holds",
        ));
    }
    let payload = &request.payload[..request.claimed];
    match (request.kind, target) {
        (kind::ROWS, ChannelTarget::Table(table)) => {
            let n = request.count as usize;
            if n > capacity {
                return Err(bad(
                    "slot.count",
                    n,
                    "more rows than the channel's capacity",
                ));
            }
            if payload.len() != n * 8 {
                return Err(bad(
                    "slot.payload_bytes",
                    payload.len(),
                    "is not 8 bytes per row id",
                ));
            }
            let ids = payload
                .chunks_exact(8)
                .map(|c| u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
                .collect();
            Ok(RowSource::Rows(RowsQuery {
                table: table.clone(),
                ids,
                version: None,
            }))
        }
        (
            kind::SEQUENCES,
            ChannelTarget::Layer {
                group,
                layer_id,
                compressed,
            },
        ) => {
            let mut sequences = Vec::new();
            let mut at = 0;
            let mut positions = 0usize;
            for i in 0..request.count {
                let (Some(t), Some(c)) = (u32_at(payload, at), u32_at(payload, at + 4)) else {
                    return Err(bad(
                        "slot.sequences",
                        i,
                        "the payload ends inside a sequence header",
                    ));
                };
                at += 8;
                let (t, c) = (t as usize, c as usize);
                positions = positions.saturating_add(t);
                if positions > capacity {
                    return Err(bad(
                        "slot.sequences",
                        positions,
                        "more positions than the channel's capacity",
                    ));
                }
                let end = at
                    .checked_add((t + c) * 4)
                    .filter(|&e| e <= payload.len())
                    .ok_or_else(|| {
                        bad("slot.sequences", i, "the payload ends inside a sequence")
                    })?;
                let words: Vec<u32> = payload[at..end]
                    .chunks_exact(4)
                    .map(|w| u32::from_le_bytes([w[0], w[1], w[2], w[3]]))
                    .collect();
                at = end;
                sequences.push(TokenSequence::with_context(
                    words[..t].to_vec(),
                    words[t..].to_vec(),
                ));
            }
            Ok(RowSource::Ngrams(NgramQuery {
                group: group.clone(),
                layer_id: *layer_id,
                sequences,
                compressed: *compressed,
                // The channel's slot format has no column range or dead masks (yet): every
                // column, nothing dead.
                columns: None,
                // A channel reads the version served now; its completions say which.
                version: None,
            }))
        }
        (k, ChannelTarget::Table(_)) => Err(bad(
            "slot.kind",
            k,
            "a table's channel takes rows by id (kind 1)",
        )),
        (k, ChannelTarget::Layer { .. }) => Err(bad(
            "slot.kind",
            k,
            "an Engram layer's channel takes token sequences (kind 2)",
        )),
    }
}
