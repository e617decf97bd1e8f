//! The serving engine, independent of gRPC: every table of a data directory opened with its RAM
//! tier over one I/O engine, and the lookup path of each; and the Engram groups over those
//! tables, which turn token sequences into rows.

mod dedup;
mod error;
#[cfg(feature = "cuda")]
mod gpu_path;
mod group;
mod inflight;
mod ngram_query;
mod registry;
mod served_table;
mod tier_stats;

pub use dedup::DedupedIds;
pub use error::{BadToken, LookupError};
pub use group::{NgramRows, ServedGroup, ServedLayer};
pub use ngram_query::{NgramQuery, TokenSequence};
pub use registry::{Engine, EngineConfig, EngineError};
pub use served_table::ServedTable;
pub use tier_stats::{DiskStats, RamStats};
