//! Requests as the engine takes them: validated domain types, built once from the protobuf
//! messages at the gRPC edge (`crate::edge`), and [`ProtocolError`], why a message does not make
//! a request (naming the field and the bad value).

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

/// One sequence of an n-gram request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TokenSequence {
    /// Token ids of the positions to look up.
    pub tokens: Vec<u32>,
    /// Tokens just before `tokens` (its last element comes right before `tokens[0]`); only the
    /// last `max_ngram_size - 1` are used, and positions before them are the layout's pad id.
    pub context: Vec<u32>,
}

impl TokenSequence {
    /// A sequence starting at `tokens` with no context.
    pub fn new(tokens: Vec<u32>) -> Self {
        Self {
            tokens,
            context: Vec::new(),
        }
    }

    /// A sequence continuing after `context`.
    pub fn with_context(tokens: Vec<u32>, context: Vec<u32>) -> Self {
        Self { tokens, context }
    }
}

/// The rows an Engram layer consumes for a batch of sequences.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NgramQuery {
    /// Group name.
    pub group: String,
    /// Layer of the group.
    pub layer_id: u32,
    /// Sequences; rows come back `[sequence][position][order, head]`.
    pub sequences: Vec<TokenSequence>,
    /// True when the ids are already compressed (else they are raw tokenizer ids).
    pub compressed: bool,
    /// The version of the layer's table to serve from (`None`: the version served now).
    pub version: Option<u64>,
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
