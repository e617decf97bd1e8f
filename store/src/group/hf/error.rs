//! Why a Hugging Face checkpoint could not be imported: every promise of the config that the
//! checkpoint breaks names the value promised and the value found. Nothing is left behind by a
//! failed import.

use std::path::PathBuf;

use engram_store_hashing::EngramConfigError;

use super::super::GroupError;
use crate::table::TableError;

/// Why `import-hf` failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ImportError {
    /// A file the checkpoint needs is not there.
    #[error("{what} {} is missing", path.display())]
    MissingFile {
        /// What the file is ("config", "tokenizer", "safetensors index or model.safetensors").
        what: &'static str,
        /// Where it was looked for.
        path: PathBuf,
    },
    /// The Engram keys of `config.json` are missing, malformed or inconsistent (a layer's
    /// `engram_num_embeddings` that is not the sum of its primes, a compressed vocabulary that
    /// is not the tokenizer's, ...).
    #[error("config: {0}")]
    Config(#[source] EngramConfigError),
    /// The tokenizer could not be read or mapped.
    #[error("tokenizer {}: {message}", path.display())]
    Tokenizer {
        /// The `tokenizer.json`.
        path: PathBuf,
        /// What failed.
        message: String,
    },
    /// `--layers` names a layer the config has no Engram table for.
    #[error("layer {layer_id} is not an Engram layer of the config (engram_layer_ids {known:?})")]
    UnknownLayer {
        /// The layer asked for.
        layer_id: u32,
        /// `engram_layer_ids`.
        known: Vec<u32>,
    },
    /// The index or a shard header is malformed.
    #[error("{}: {message}", path.display())]
    Malformed {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A tensor the import needs is not in the checkpoint.
    #[error("tensor {name} is not in the checkpoint ({looked})")]
    MissingTensor {
        /// The tensor name.
        name: String,
        /// Where it was looked for.
        looked: String,
    },
    /// A tensor of another element type than the config and format promise.
    #[error("tensor {tensor} has dtype {found}, expected {expected}")]
    Dtype {
        /// The tensor.
        tensor: String,
        /// Its dtype in the shard header.
        found: String,
        /// The dtype needed.
        expected: &'static str,
    },
    /// A tensor of another shape than the config promises.
    #[error("tensor {tensor} has shape {found:?}, expected {expected:?} ({why})")]
    Shape {
        /// The tensor.
        tensor: String,
        /// Its shape in the shard header.
        found: Vec<u64>,
        /// The shape the config promises.
        expected: Vec<u64>,
        /// Where the expected shape comes from.
        why: String,
    },
    /// The config's rows cannot be packed into the V4.1 row format.
    #[error("engram_head_dim {head_dim} is not a multiple of the scale block {block}")]
    HeadDim {
        /// `engram_head_dim`.
        head_dim: usize,
        /// Values per ue8m0 scale.
        block: u32,
    },
    /// Creating the group failed (it exists, a bad name, publishing it).
    #[error(transparent)]
    Group(#[from] GroupError),
    /// Writing a layer's table failed.
    #[error("write table {table}: {source}")]
    Table {
        /// The table.
        table: String,
        /// Why.
        #[source]
        source: TableError,
    },
    /// Reading the checkpoint failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

impl ImportError {
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        ImportError::Io {
            context: context.into(),
            source,
        }
    }
}
