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
}
