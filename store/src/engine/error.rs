//! Errors of serving a request, each naming the bad value; mapped to gRPC statuses in exactly one
//! place (`crate::status`). Per-operation errors (a tier's, a region's, a request's shape) are
//! joined here with `From`.

use engram_store_cache::TierError;
use engram_store_hashing::CompressError;

use super::query::ProtocolError;
use crate::regions::RegionError;

/// Why a request failed. Nothing is served from a failed request.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum LookupError {
    /// The request's fields do not make a request.
    #[error(transparent)]
    Protocol(#[from] ProtocolError),
    /// No table of that name is served.
    #[error("unknown table {name:?}; served tables: [{known}]")]
    UnknownTable {
        /// Name asked for.
        name: String,
        /// Comma-separated names served.
        known: String,
    },
    /// A pinned version of a table that is not served (gone, or not yet loaded).
    #[error(
        "version {version} of table {table:?} is not served; versions served: [{kept}] (a \
         server keeps the last few versions of a table; pin one of those, or none)"
    )]
    VersionNotServed {
        /// Table.
        table: String,
        /// Version asked for.
        version: u64,
        /// Comma-separated versions kept, newest first.
        kept: String,
    },
    /// A row id at or past the end of the table.
    #[error(
        "row id {id} (at position {position}) is out of range: table {table:?} has {rows} rows"
    )]
    OutOfRange {
        /// Table.
        table: String,
        /// First bad id.
        id: u64,
        /// Its position in the request.
        position: usize,
        /// Rows in the table.
        rows: u64,
    },
    /// A row this node's partial copy of the table does not hold (a cluster node given only
    /// some shards of a version).
    #[error(
        "row id {id} (at position {position}) is not held here: this node holds rows {held} of \
         table {table:?} version {version}"
    )]
    RowNotHeld {
        /// Table.
        table: String,
        /// Version.
        version: u64,
        /// First id not held.
        id: u64,
        /// Its position in the request.
        position: usize,
        /// The ranges held, as text.
        held: String,
    },
    /// A file a peer asked for that is not one of the files of what it names.
    #[error("{of} has no file {file:?}; its files: [{listed}]")]
    NoSuchFile {
        /// The table version or group.
        of: String,
        /// The name asked for.
        file: String,
        /// Comma-separated names it has.
        listed: String,
    },
    /// More rows than one request may ask for.
    #[error("{count} {unit} in one request; the limit is {max} rows")]
    TooManyRows {
        /// Rows (or ids) asked for.
        count: usize,
        /// What was counted: "ids", or "rows" for n-gram requests (positions x heads).
        unit: &'static str,
        /// Configured limit.
        max: usize,
    },
    /// A tier of a table could not serve its rows (a corrupt block, a failed read, the GPU).
    #[error("table {table:?} (version {version}): {source}")]
    Tier {
        /// Table.
        table: String,
        /// Version served.
        version: u64,
        /// What the tier said.
        #[source]
        source: TierError,
    },
    /// No Engram group of that name is served.
    #[error("unknown Engram group {name:?}; served groups: [{known}]")]
    UnknownGroup {
        /// Name asked for.
        name: String,
        /// Comma-separated names served.
        known: String,
    },
    /// The group has no such layer.
    #[error("Engram group {group:?} has no layer {layer_id}; its layers: [{known}]")]
    UnknownLayer {
        /// Group.
        group: String,
        /// Layer asked for.
        layer_id: u32,
        /// Comma-separated layer ids of the group.
        known: String,
    },
    /// A column range that reaches past the layer's hash columns (or is empty).
    #[error(
        "columns {start}..{end} of Engram group {group:?} layer {layer_id} are not a non-empty \
         range within its {heads_total} hash columns (0..{heads_total})"
    )]
    ColumnRange {
        /// Group.
        group: String,
        /// Layer.
        layer_id: u32,
        /// First column asked for.
        start: u32,
        /// One past the last column asked for.
        end: u32,
        /// Hash columns per position of the layer.
        heads_total: usize,
    },
    /// A token the group cannot hash.
    #[error(transparent)]
    BadToken(#[from] BadToken),
    /// A sequence the group's hasher refused.
    #[error("sequence {sequence} of Engram group {group:?}: {source}")]
    Hash {
        /// Group.
        group: String,
        /// Index of the sequence in the request.
        sequence: usize,
        /// Why.
        #[source]
        source: engram_store_hashing::HashError,
    },
    /// A shared-memory or CUDA IPC region could not be registered or used.
    #[error(transparent)]
    Region(#[from] RegionError),
    /// The server is at a limit (answer bytes in flight, prefetch queue, regions): retry later.
    #[error("the server is at its limit of {what} ({limit}); retry later")]
    Overloaded {
        /// Which limit.
        what: &'static str,
        /// Its value.
        limit: u64,
    },
    /// Device memory was asked for but the table has no GPU tier on its device.
    #[error(
        "table {table:?} has no GPU tier on GPU {device}, so it cannot write into device memory \
         there"
    )]
    NoGpuTier {
        /// Table.
        table: String,
        /// The device of the memory.
        device: usize,
    },
    /// ShareTable for a table whose rows are not in a shared-memory file.
    #[error("table {table:?} cannot be shared: {why}")]
    NotShared {
        /// Table.
        table: String,
        /// What is missing.
        why: String,
    },
}

/// A token id of an n-gram request that the group cannot hash: a raw id outside its compression
/// map, or (for already compressed requests) an id not below its compressed vocabulary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadToken {
    /// Group.
    pub group: String,
    /// Index of the sequence in the request.
    pub sequence: usize,
    /// True when the token is in the sequence's context (its position then counts within the
    /// context).
    pub in_context: bool,
    /// What the hashing crate found.
    pub cause: CompressError,
}

impl std::fmt::Display for BadToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let slot = if self.in_context {
            "context index"
        } else {
            "position"
        };
        let s = self.sequence;
        match &self.cause {
            CompressError::UnknownRawIdAt {
                position,
                raw_id,
                len,
            } => write!(
                f,
                "token id {raw_id} at sequence {s}, {slot} {position} is outside the compression \
                 map (it covers raw ids 0..{len})"
            )?,
            CompressError::NotCompressedAt {
                position,
                id,
                compressed_vocab_size,
            } => write!(
                f,
                "compressed token id {id} at sequence {s}, {slot} {position} is not below the \
                 compressed vocabulary size {compressed_vocab_size}"
            )?,
            other => write!(f, "sequence {s}: {other}")?,
        }
        write!(f, " of Engram group {:?}", self.group)
    }
}

impl std::error::Error for BadToken {}
