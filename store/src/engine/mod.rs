//! The serving engine, independent of gRPC: every table of a data directory opened with its tiers
//! (a cascade of GPU, RAM and NVMe, from `engram-store-cache`), the Engram groups over those
//! tables, the registered regions, and one method per kind of request, taking validated queries
//! ([`query`]) and returning typed errors ([`LookupError`]). What is served is a [`Catalog`],
//! replaced whole when a new table version is swapped in ([`Engine::reload`]).

mod admission;
mod answer_budget;
mod build;
mod catalog;
mod config;
mod dedup;
mod error;
mod fd_handoff;
mod gpu_devices;
mod gpu_weights;
mod group;
mod peer_files;
mod prefetch_queue;
mod query;
mod recent_ids;
mod served_table;
mod serving;
mod share;
mod stats;
mod versions;

pub use admission::RowsPermit;
pub use answer_budget::{AnswerBudget, AnswerReservation, SMALL_ANSWER};
pub use catalog::{Catalog, TableVersions, Unavailable};
pub use config::EngineConfig;
pub use dedup::DedupedIds;
pub use error::{BadToken, LookupError};
pub use fd_handoff::{FdHandoff, Offered};
pub use gpu_devices::{GpuDevices, GpuDevicesError};
pub use gpu_weights::{GpuWeight, GpuWeightError, GpuWeights};
pub use group::{GroupOpenError, ServedGroup, ServedLayer};
pub use query::{
    DeadMaskLength, IntoQuery, NgramQuery, ProtocolError, RowSource, RowsQuery, TokenSequence,
};
pub use served_table::{DeviceTierOn, ServedTable, VersionDir};
pub use serving::{Answer, Engine, EngineError, IntoAnswer, RegisteredRegion, ResolvedNgrams};
pub use share::SharedTable;
pub use stats::{Delivered, EngineStats, process_rss_bytes};
pub use versions::{ReloadOutcome, TableReload};
