//! Errors of creating, finding and loading Engram groups, each naming the group and the file.

use std::path::PathBuf;

use engram_store_hashing::{CompressionMapError, LayoutError};

/// Why a group could not be created or loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GroupError {
    /// A group name that cannot name its directory and tables.
    #[error(
        "group name {0:?}: use 1-100 of A-Z a-z 0-9 _ - . (not starting with '.'), so that \
         its tables \"<name>.layer<ID>\" are valid table names"
    )]
    InvalidName(String),
    /// A group of that name is already in the data directory.
    #[error("group {name:?} already exists at {}; remove that directory to create it again", dir.display())]
    Exists {
        /// Group.
        name: String,
        /// Its directory.
        dir: PathBuf,
    },
    /// The layout file is unusable.
    #[error("layout of group {group:?}: {source}")]
    Layout {
        /// Group.
        group: String,
        /// Why.
        #[source]
        source: LayoutError,
    },
    /// The compression map is unusable or does not fit the layout.
    #[error("compression map of group {group:?}: {source}")]
    Map {
        /// Group.
        group: String,
        /// Why.
        #[source]
        source: CompressionMapError,
    },
    /// `group.json` is malformed or disagrees with the layout.
    #[error("{}: {message}", path.display())]
    Meta {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A weights file that does not hold a layer's table in the layout's shape.
    #[error("weights {}: {message}", path.display())]
    Weights {
        /// The safetensors file.
        path: PathBuf,
        /// What is wrong (names the tensor, its shape and the shape wanted).
        message: String,
    },
    /// Writing a layer's table failed.
    #[error("write table {table:?}: {message}")]
    Table {
        /// Table.
        table: String,
        /// Why (with its causes).
        message: String,
    },
    /// An I/O failure, with what was being done.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

impl GroupError {
    /// An I/O error with its context.
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        GroupError::Io {
            context: context.into(),
            source,
        }
    }
}
