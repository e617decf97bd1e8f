//! Errors of serving a lookup, each naming the bad value; mapped to gRPC statuses in exactly one
//! place (`crate::status`).

/// Why a lookup (or prefetch) failed. Nothing is served from a failed request.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum LookupError {
    /// No table of that name is served.
    #[error("unknown table {name:?}; served tables: {known}")]
    UnknownTable {
        /// Name asked for.
        name: String,
        /// Comma-separated names served.
        known: String,
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
    /// More ids than one request may carry.
    #[error("{count} ids in one request; the limit is {max}")]
    TooManyIds {
        /// Ids sent.
        count: usize,
        /// Configured limit.
        max: usize,
    },
    /// A block whose bytes do not match its checksum.
    #[error(
        "checksum mismatch in table {table:?} (version {version}), data file {file}, block {block}: the block is corrupt and is not served"
    )]
    DataLoss {
        /// Table.
        table: String,
        /// Version.
        version: u64,
        /// Data file index.
        file: u32,
        /// Block index within the data file (0 = first data block).
        block: u64,
    },
    /// Reading the disk failed.
    #[error("read of table {table:?}, data file {file}, block {block} failed: {message}")]
    Io {
        /// Table.
        table: String,
        /// Data file index.
        file: u32,
        /// First block of the read.
        block: u64,
        /// The OS error.
        message: String,
        /// True when retrying may help (engine stopped, interrupted, would block).
        transient: bool,
    },
    /// A bad argument other than the above (empty table name, bad token...).
    #[error("{0}")]
    InvalidArgument(String),
    /// A named thing (group, layer) that does not exist.
    #[error("{0}")]
    NotFound(String),
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
    /// A token the group cannot hash.
    #[error(transparent)]
    BadToken(#[from] BadToken),
}

/// A token id of an n-gram request that the group cannot hash: a raw id outside its compression
/// map, or (for already compressed requests) an id not below its compressed vocabulary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadToken {
    /// Group.
    pub group: String,
    /// Index of the sequence in the request.
    pub sequence: usize,
    /// Index in the sequence's tokens (or in its context, if `in_context`).
    pub position: usize,
    /// True when the token is in the sequence's context.
    pub in_context: bool,
    /// The token id.
    pub id: u32,
    /// True when the request said its ids are compressed.
    pub compressed: bool,
    /// Ids must be below this: the map's length, or the compressed vocabulary size.
    pub limit: u64,
}

impl std::fmt::Display for BadToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = if self.compressed {
            "compressed token id"
        } else {
            "token id"
        };
        let slot = if self.in_context {
            "context index"
        } else {
            "position"
        };
        write!(
            f,
            "{kind} {} at sequence {}, {slot} {} ",
            self.id, self.sequence, self.position
        )?;
        if self.compressed {
            write!(
                f,
                "is not below the compressed vocabulary size {}",
                self.limit
            )?;
        } else {
            write!(
                f,
                "is outside the compression map (it covers raw ids 0..{})",
                self.limit
            )?;
        }
        write!(f, " of Engram group {:?}", self.group)
    }
}

impl std::error::Error for BadToken {}
