//! Errors of the table format: parsing headers and manifests, writing and opening tables.

use std::path::PathBuf;

/// A table file or manifest that cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FormatError {
    /// Fewer bytes than a header needs.
    #[error("truncated header: needed {needed} bytes, found {found}")]
    Truncated {
        /// Bytes needed.
        needed: usize,
        /// Bytes present.
        found: usize,
    },
    /// Not a file of the expected kind.
    #[error("bad magic: expected {expected:?}, found {found:?}")]
    BadMagic {
        /// Magic expected.
        expected: [u8; 8],
        /// Magic found.
        found: [u8; 8],
    },
    /// Written by a newer or older engram-store.
    #[error("unsupported format version {found} (this build reads version {supported})")]
    UnsupportedVersion {
        /// Version found.
        found: u32,
        /// Version supported.
        supported: u32,
    },
    /// The header's own checksum does not match.
    #[error("header checksum mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    HeaderChecksum {
        /// Stored value.
        stored: u32,
        /// Computed value.
        computed: u32,
    },
    /// A field holds an impossible value.
    #[error("invalid: {0}")]
    Invalid(String),
}

/// Failure to write, find or open a table.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TableError {
    /// An I/O failure, with what was being done.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A file or manifest of the table is malformed.
    #[error("{path}: {source}")]
    Format {
        /// The offending file.
        path: PathBuf,
        /// What is wrong.
        #[source]
        source: FormatError,
    },
    /// The table has no complete version in the data directory.
    #[error("no complete version of table {name:?} under {dir}")]
    NoVersion {
        /// Table name.
        name: String,
        /// Where it was looked for.
        dir: PathBuf,
    },
    /// Arguments that cannot make a table.
    #[error("{0}")]
    InvalidSpec(String),
}

impl TableError {
    /// An I/O error with its context.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        TableError::Io {
            context: context.into(),
            source,
        }
    }
}
