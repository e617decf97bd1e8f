//! An n-gram lookup as the engine sees it: the group, the layer, and token sequences, each with
//! the tokens before it. Built once from the protobuf request at the service boundary.

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
}
