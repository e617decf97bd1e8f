//! The serving engine, independent of gRPC: every table of a data directory opened with its RAM
//! tier over one I/O engine, and the lookup path of each.

mod error;
#[cfg(feature = "cuda")]
mod gpu_path;
mod inflight;
mod registry;
mod served_table;
mod tier_stats;

pub use error::LookupError;
pub use registry::{Engine, EngineConfig, EngineError};
pub use served_table::ServedTable;
pub use tier_stats::{DiskStats, RamStats};
