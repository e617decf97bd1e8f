//! Requests as the engine takes them: validated domain types, built once from the protobuf
//! messages at the gRPC edge (`crate::edge`), and [`ProtocolError`], why a message does not make
//! a request (naming the field and the bad value).

use std::ops::Range;

use bytes::Bytes;

use crate::regions::RegionKey;

/// Rows of one table by id.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RowsQuery {
    /// Table name.
    pub table: String,
    /// Row ids, in the order the rows are wanted (duplicates allowed).
    pub ids: Vec<u64>,
    /// The table version to serve from (`None`: the version served now).
    pub version: Option<u64>,
}

/// One sequence of an n-gram request: its tokens, the tokens before it, and which of them are
/// **dead** (DeepSeek-V4.1: image spans), each mask empty or one byte per token (non-zero =
/// dead), which [`TokenSequence::with_dead`] checks.
///
/// A dead token takes no part in any n-gram: walking back from a position, the first dead token
/// (or the start of the sequence and its context) reads, with everything before it, as the pad
/// id. A dead position's rows are therefore those of an all-pad window, real table rows, as
/// vLLM's `_hash_ids_kernel` hashes a dead position and its lookup gathers those rows (its gate
/// then shuts the position); n-grams that reach through a dead token are padded from there on.
/// A dead token's id is never read: it need not be in the compression map.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TokenSequence {
    tokens: Vec<u32>,
    dead: Bytes,
    context: Vec<u32>,
    context_dead: Bytes,
}

/// A dead mask whose length is neither 0 nor that of the ids it masks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the dead mask of the {what} has {found} bytes; it must be empty or have {expected}")]
pub struct DeadMaskLength {
    /// `"tokens"` or `"context"`.
    pub what: &'static str,
    /// Ids masked.
    pub expected: usize,
    /// Bytes in the mask.
    pub found: usize,
}

impl TokenSequence {
    /// A sequence starting at `tokens` with no context, none dead.
    pub fn new(tokens: Vec<u32>) -> Self {
        Self::with_context(tokens, Vec::new())
    }

    /// A sequence continuing after `context` (its last element comes right before `tokens[0]`;
    /// only the last `max_ngram_size - 1` are used, and positions before them are the layout's
    /// pad id), none dead.
    pub fn with_context(tokens: Vec<u32>, context: Vec<u32>) -> Self {
        Self {
            tokens,
            context,
            ..Self::default()
        }
    }

    /// The same sequence with dead masks for its tokens and its context (each empty: none dead,
    /// or one byte per id).
    pub fn with_dead(
        mut self,
        dead: impl Into<Bytes>,
        context_dead: impl Into<Bytes>,
    ) -> Result<Self, DeadMaskLength> {
        let (dead, context_dead) = (dead.into(), context_dead.into());
        for (what, mask, ids) in [
            ("tokens", &dead, self.tokens.len()),
            ("context", &context_dead, self.context.len()),
        ] {
            if !mask.is_empty() && mask.len() != ids {
                return Err(DeadMaskLength {
                    what,
                    expected: ids,
                    found: mask.len(),
                });
            }
        }
        self.dead = dead;
        self.context_dead = context_dead;
        Ok(self)
    }

    /// Token ids of the positions to look up.
    pub fn tokens(&self) -> &[u32] {
        &self.tokens
    }

    /// Dead mask of [`TokenSequence::tokens`]: empty, or one byte per token.
    pub fn dead(&self) -> &[u8] {
        &self.dead
    }

    /// Tokens just before [`TokenSequence::tokens`].
    pub fn context(&self) -> &[u32] {
        &self.context
    }

    /// Dead mask of [`TokenSequence::context`]: empty, or one byte per token.
    pub fn context_dead(&self) -> &[u8] {
        &self.context_dead
    }
}

/// The rows an Engram layer consumes for a batch of sequences.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NgramQuery {
    /// Group name.
    pub group: String,
    /// Layer of the group.
    pub layer_id: u32,
    /// Sequences; rows come back `[sequence][position][column]`.
    pub sequences: Vec<TokenSequence>,
    /// True when the ids are already compressed (else they are raw tokenizer ids).
    pub compressed: bool,
    /// The version of the layer's table to serve from (`None`: the version served now).
    pub version: Option<u64>,
    /// The hash columns wanted (`j = (order - 2) * heads + head`), a non-empty `[start, end)`
    /// within the layer's `heads_total` (a tensor-parallel rank's); `None`: every column.
    pub columns: Option<Range<u32>>,
}

/// Which rows a prefetch or a LookupInto is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RowSource {
    /// Rows by id.
    Rows(RowsQuery),
    /// The rows of an Engram layer for token sequences.
    Ngrams(NgramQuery),
}

/// Rows written into a registered region.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IntoQuery {
    /// The region and the secret that proves the caller registered it.
    pub region: RegionKey,
    /// Byte offset in the region of the first row.
    pub offset: u64,
    /// The rows.
    pub source: RowSource,
}

/// Why a message does not make a request: the field, the value found, and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}{}: {problem}", shown(.value))]
pub struct ProtocolError {
    /// The field, as `Message.field`.
    pub field: &'static str,
    /// The bad value as sent (empty when the field is missing).
    pub value: String,
    /// What is wrong with it.
    pub problem: &'static str,
}

fn shown(value: &str) -> String {
    if value.is_empty() {
        String::new()
    } else {
        format!(" = {value}")
    }
}

impl ProtocolError {
    /// `field` is `value`, which is wrong because `problem`.
    pub fn new(field: &'static str, value: impl ToString, problem: &'static str) -> Self {
        Self {
            field,
            value: value.to_string(),
            problem,
        }
    }

    /// `field` is missing (or empty) and must be set.
    pub fn missing(field: &'static str, problem: &'static str) -> Self {
        Self::new(field, "", problem)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dead_masks_are_empty_or_one_byte_per_token() {
        let s = TokenSequence::with_context(vec![1, 2, 3], vec![7, 8]);
        let ok = s
            .clone()
            .with_dead(vec![0, 1, 0], Vec::new())
            .expect("one byte per token");
        assert_eq!((ok.dead(), ok.context_dead()), (&[0, 1, 0][..], &[][..]));
        let ok = s
            .clone()
            .with_dead(Vec::new(), vec![1, 0])
            .expect("one byte per context token");
        assert_eq!(ok.context_dead(), [1, 0]);
        assert_eq!(
            s.clone().with_dead(vec![0, 1], Vec::new()),
            Err(DeadMaskLength {
                what: "tokens",
                expected: 3,
                found: 2
            })
        );
        assert_eq!(
            s.with_dead(vec![0; 3], vec![0; 3]),
            Err(DeadMaskLength {
                what: "context",
                expected: 2,
                found: 3
            })
        );
        // No tokens: only an empty mask fits.
        assert!(
            TokenSequence::new(vec![])
                .with_dead(vec![1], vec![])
                .is_err()
        );
    }

    #[test]
    fn protocol_errors_name_field_and_value() {
        let e = ProtocolError::new(
            "LookupRequest.ids_le",
            "13 bytes",
            "not a whole number of 8-byte ids",
        );
        assert_eq!(
            e.to_string(),
            "LookupRequest.ids_le = 13 bytes: not a whole number of 8-byte ids"
        );
        let e = ProtocolError::missing("PrefetchRequest.target", "set rows or ngrams");
        assert_eq!(e.to_string(), "PrefetchRequest.target: set rows or ngrams");
    }
}
