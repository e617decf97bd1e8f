//! The error types of this crate: one enum per thing that can go wrong (loading a layout, loading a
//! compression map, compressing ids, hashing), each naming the offending value.

use std::path::PathBuf;

/// Why a [`Layout`](crate::Layout) could not be loaded or built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LayoutError {
    /// The layout file could not be read.
    #[error("read layout file {path}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// Loading a layout file failed; `source` says why.
    #[error("layout file {path}: {source}")]
    InFile {
        /// The file.
        path: PathBuf,
        /// The error in its contents.
        #[source]
        source: Box<LayoutError>,
    },
    /// The text is not JSON of the layout's shape (a missing, unknown or mistyped field).
    #[error("parse layout JSON: {0}")]
    Json(#[source] serde_json::Error),
    /// `max_ngram_size` is below 2: there would be no n-gram orders.
    #[error("max_ngram_size is {0}; it must be at least 2")]
    NgramTooSmall(usize),
    /// `n_head_per_ngram` is 0.
    #[error("n_head_per_ngram is 0; it must be at least 1")]
    NoHeads,
    /// `row_dim` is 0.
    #[error("row_dim is 0; it must be at least 1")]
    ZeroRowDim,
    /// `pad_id` is not a compressed id.
    #[error("pad_id {pad_id} is not below compressed_vocab_size {compressed_vocab_size}")]
    PadOutOfRange {
        /// The pad id.
        pad_id: u32,
        /// The number of compressed ids.
        compressed_vocab_size: u32,
    },
    /// `layers` is empty.
    #[error("the layout has no layers")]
    NoLayers,
    /// Two layers have the same id.
    #[error("layer {0} appears more than once")]
    DuplicateLayer(u32),
    /// A layer does not have `max_ngram_size` multipliers.
    #[error("layer {layer_id}: {found} multipliers, expected max_ngram_size = {expected}")]
    MultiplierCount {
        /// The layer.
        layer_id: u32,
        /// `max_ngram_size`.
        expected: usize,
        /// The number given.
        found: usize,
    },
    /// A multiplier is even.
    #[error("layer {layer_id}: multipliers[{index}] = {value} is even; multipliers must be odd")]
    EvenMultiplier {
        /// The layer.
        layer_id: u32,
        /// Its position in `multipliers`.
        index: usize,
        /// The multiplier.
        value: u64,
    },
    /// A multiplier times the largest compressed id exceeds `i64::MAX`: the int64 reference would
    /// overflow, so its hashes could not be reproduced.
    #[error(
        "layer {layer_id}: multipliers[{index}] = {value} times the largest compressed id \
         {max_id} exceeds i64::MAX; the int64 reference would overflow"
    )]
    MultiplierOverflow {
        /// The layer.
        layer_id: u32,
        /// Its position in `multipliers`.
        index: usize,
        /// The multiplier.
        value: u64,
        /// `compressed_vocab_size - 1`.
        max_id: u32,
    },
    /// `primes` does not have one row per n-gram order 2..=`max_ngram_size`.
    #[error("layer {layer_id}: primes has {found} rows, expected max_ngram_size - 1 = {expected}")]
    PrimeOrderCount {
        /// The layer.
        layer_id: u32,
        /// `max_ngram_size - 1`.
        expected: usize,
        /// The number given.
        found: usize,
    },
    /// One order's primes do not number `n_head_per_ngram`.
    #[error(
        "layer {layer_id}: primes[{}] (order {order}) has {found} heads, expected \
         n_head_per_ngram = {expected}",
        .order.saturating_sub(2)
    )]
    PrimeHeadCount {
        /// The layer.
        layer_id: u32,
        /// The n-gram order (2..=`max_ngram_size`).
        order: usize,
        /// `n_head_per_ngram`.
        expected: usize,
        /// The number given.
        found: usize,
    },
    /// A head's modulus is not prime.
    #[error(
        "layer {layer_id}: primes[{}][{head}] = {value} (order {order}, head {head}) is not prime",
        .order.saturating_sub(2)
    )]
    NotPrime {
        /// The layer.
        layer_id: u32,
        /// The n-gram order (2..=`max_ngram_size`).
        order: usize,
        /// The head.
        head: usize,
        /// The number that is not prime.
        value: u64,
    },
    /// The layer's table would have more than `u64::MAX` rows.
    #[error("layer {layer_id}: the sum of its primes (its row count) overflows u64")]
    RowCountOverflow {
        /// The layer.
        layer_id: u32,
    },
}

/// Why a [`CompressionMap`](crate::CompressionMap) could not be loaded or checked.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CompressionMapError {
    /// The file could not be read.
    #[error("read compression map {path}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// Loading a compression map file failed; `source` says why.
    #[error("compression map {path}: {source}")]
    InFile {
        /// The file.
        path: PathBuf,
        /// The error in its contents.
        #[source]
        source: Box<CompressionMapError>,
    },
    /// The bytes do not start with the `.npy` magic string.
    #[error("not a .npy file: missing the \\x93NUMPY magic")]
    BadMagic,
    /// A `.npy` format version other than 1.0, 2.0 or 3.0.
    #[error(".npy format version {major}.{minor} is not supported (1.0, 2.0, 3.0 are)")]
    UnsupportedVersion {
        /// Major version byte.
        major: u8,
        /// Minor version byte.
        minor: u8,
    },
    /// The file ends inside its preamble or header.
    #[error(".npy file is truncated: {len} bytes, the header needs {needed}")]
    TruncatedHeader {
        /// The file's length.
        len: usize,
        /// The length the preamble and header need.
        needed: usize,
    },
    /// The header is not the Python dict literal `.npy` files carry.
    #[error(".npy header is malformed: {0}")]
    BadHeader(String),
    /// The array's dtype is not one of little-endian int64, int32 or uint32.
    #[error(
        ".npy dtype {0:?} is not supported; use little-endian int64 '<i8', int32 '<i4' or uint32 '<u4'"
    )]
    UnsupportedDtype(String),
    /// The array is stored in Fortran order.
    #[error(".npy array is in Fortran order; a compression map must be a C-order 1-D array")]
    FortranOrder,
    /// The array is not one-dimensional.
    #[error(".npy array has shape {shape:?}; a compression map must be 1-D")]
    NotOneDimensional {
        /// The shape in the header.
        shape: Vec<u64>,
    },
    /// The data after the header is not exactly `shape[0] * item size` bytes.
    #[error(".npy data is {found} bytes, expected {expected} for the header's shape and dtype")]
    DataLength {
        /// Bytes the header promises.
        expected: u64,
        /// Bytes present.
        found: u64,
    },
    /// A raw id maps to a negative compressed id.
    #[error("raw id {raw_id} maps to {value}, a negative compressed id")]
    NegativeId {
        /// The raw id (array index).
        raw_id: usize,
        /// The value found.
        value: i64,
    },
    /// A raw id maps to a compressed id above `u32::MAX`.
    #[error("raw id {raw_id} maps to {value}, above the largest compressed id u32::MAX")]
    IdTooLarge {
        /// The raw id (array index).
        raw_id: usize,
        /// The value found.
        value: i64,
    },
    /// The map sends a raw id to a compressed id the layout has no rows for.
    #[error(
        "raw id {raw_id} maps to compressed id {compressed_id}, not below the layout's \
         compressed_vocab_size {compressed_vocab_size}"
    )]
    OutsideLayout {
        /// The raw id.
        raw_id: usize,
        /// Its compressed id.
        compressed_id: u32,
        /// The layout's `compressed_vocab_size`.
        compressed_vocab_size: u32,
    },
}

/// A raw token id that the [`CompressionMap`](crate::CompressionMap) does not cover.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CompressError {
    /// The raw id is not below the map's length.
    #[error("raw token id {raw_id} is outside the compression map (it covers ids 0..{len})")]
    UnknownRawId {
        /// The raw id.
        raw_id: u32,
        /// The number of raw ids the map covers.
        len: usize,
    },
    /// An id given as already compressed is not below the compressed vocabulary size.
    #[error(
        "compressed token id {id} at position {position} is not below the compressed \
         vocabulary size {compressed_vocab_size}"
    )]
    NotCompressedAt {
        /// The position in the sequence.
        position: usize,
        /// The id.
        id: u32,
        /// The layout's compressed vocabulary size.
        compressed_vocab_size: u32,
    },
    /// The raw id at `position` of a sequence is not below the map's length.
    #[error(
        "raw token id {raw_id} at position {position} is outside the compression map \
         (it covers ids 0..{len})"
    )]
    UnknownRawIdAt {
        /// The position in the sequence.
        position: usize,
        /// The raw id.
        raw_id: u32,
        /// The number of raw ids the map covers.
        len: usize,
    },
}

/// Why row ids could not be computed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HashError {
    /// The layout has no layer with this id.
    #[error("the layout has no layer {0}")]
    UnknownLayer(u32),
    /// A token is not a compressed id of the layout.
    #[error(
        "token {id} at position {position} is not below compressed_vocab_size \
         {compressed_vocab_size}"
    )]
    TokenOutOfRange {
        /// The position in `tokens`.
        position: usize,
        /// The token.
        id: u32,
        /// The layout's `compressed_vocab_size`.
        compressed_vocab_size: u32,
    },
    /// A context token is not a compressed id of the layout.
    #[error(
        "context token {id} at context index {index} is not below compressed_vocab_size \
         {compressed_vocab_size}"
    )]
    ContextOutOfRange {
        /// The index in `context`.
        index: usize,
        /// The token.
        id: u32,
        /// The layout's `compressed_vocab_size`.
        compressed_vocab_size: u32,
    },
    /// The output slice does not have one element per (position, head).
    #[error("output holds {found} ids, expected tokens x heads_total = {expected}")]
    OutputLength {
        /// `tokens.len() * heads_total`.
        expected: usize,
        /// `out.len()`.
        found: usize,
    },
    /// `tokens.len() * heads_total` overflows `usize`.
    #[error("{tokens} tokens x {heads_total} heads overflows usize")]
    OutputTooLarge {
        /// `tokens.len()`.
        tokens: usize,
        /// The heads per position.
        heads_total: usize,
    },
    /// A dead mask that is neither empty nor one byte per token.
    #[error("the dead mask of the {what} has {found} entries; it must be empty or have {expected}")]
    MaskLength {
        /// `"tokens"` or `"context"`.
        what: &'static str,
        /// The number of ids it masks.
        expected: usize,
        /// Its length.
        found: usize,
    },
    /// A column range that is empty or reaches past the layer's columns.
    #[error(
        "column range {start}..{end} is not a non-empty range within the layer's {heads_total} \
         columns"
    )]
    ColumnRange {
        /// First column asked for.
        start: usize,
        /// One past the last column asked for.
        end: usize,
        /// Columns per position of the layer.
        heads_total: usize,
    },
}

/// Why a tensor-parallel head shard could not be formed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ShardError {
    /// Zero ranks, or a rank not below the number of ranks.
    #[error("rank {rank} of {ranks} ranks: ranks must be at least 1 and the rank below them")]
    BadRank {
        /// The rank.
        rank: usize,
        /// The number of ranks.
        ranks: usize,
    },
    /// The layer has no columns.
    #[error("a layer with no hash columns cannot be sharded")]
    NoColumns,
    /// `ceil(columns / ranks)` columns per rank leave this rank none (vLLM refuses it too).
    #[error(
        "{columns} columns over {ranks} ranks is {per_rank} per rank, which leaves rank {rank} \
         without columns"
    )]
    EmptyRank {
        /// Columns of the layer.
        columns: usize,
        /// The number of ranks.
        ranks: usize,
        /// The rank.
        rank: usize,
        /// `ceil(columns / ranks)`.
        per_rank: usize,
    },
}

/// Why the Engram keys of a Hugging Face `config.json` do not give a layout.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EngramConfigError {
    /// The file could not be read.
    #[error("read {path}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// Loading a config file failed; `source` says why.
    #[error("{path}: {source}")]
    InFile {
        /// The file.
        path: PathBuf,
        /// The error in its contents.
        #[source]
        source: Box<EngramConfigError>,
    },
    /// Not JSON, or an `engram_*` key of the wrong type.
    #[error("parse config JSON: {0}")]
    Json(#[source] serde_json::Error),
    /// A required `engram_*` key is missing (from `text_config` and from the top level).
    #[error("the config has no {0} (looked in text_config and at the top level)")]
    MissingKey(&'static str),
    /// `engram_layer_ids` and `engram_num_embeddings` differ in length.
    #[error(
        "engram_layer_ids has {layers} entries but engram_num_embeddings has {num_embeddings}; \
         they must pair up"
    )]
    LayerCount {
        /// `engram_layer_ids.len()`.
        layers: usize,
        /// `engram_num_embeddings.len()`.
        num_embeddings: usize,
    },
    /// A key whose value cannot make a layout.
    #[error("{key} is {value}: {why}")]
    BadValue {
        /// The key.
        key: &'static str,
        /// Its value.
        value: String,
        /// What it must be.
        why: &'static str,
    },
    /// The primes of a layer do not sum to its `engram_num_embeddings`.
    #[error(
        "layer {layer_id}: engram_num_embeddings says {config} rows, but its primes (searched \
         upward from engram_vocab_size - 1 = {start}) sum to {primes_sum}"
    )]
    RowCount {
        /// The layer.
        layer_id: u32,
        /// Its `engram_num_embeddings` entry.
        config: u64,
        /// The sum of its primes.
        primes_sum: u64,
        /// `engram_vocab_size - 1`.
        start: u64,
    },
    /// The tokenizer's compressed vocabulary does not have `engram_compressed_vocab_size` ids.
    #[error(
        "engram_compressed_vocab_size is {config}, but the tokenizer's compression map has \
         {tokenizer} compressed ids; every hash multiplier derives from it"
    )]
    CompressedVocab {
        /// `engram_compressed_vocab_size`.
        config: u64,
        /// The map's compressed vocabulary size.
        tokenizer: u64,
    },
    /// `engram_pad_token_id` is not a raw id of the compression map.
    #[error(
        "engram_pad_token_id {pad_token_id} is outside the compression map (raw ids 0..{map_len})"
    )]
    PadOutsideMap {
        /// `engram_pad_token_id`.
        pad_token_id: u32,
        /// Raw ids the map covers.
        map_len: usize,
    },
    /// The layout built from the config failed validation.
    #[error("the layout built from the config is invalid: {0}")]
    Layout(#[source] LayoutError),
}
