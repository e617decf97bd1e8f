//! engram-store: the server library behind the `engram-store` binary.
//!
//! - [`table`]: the on-disk table format (manifest, data and checksum files), writer, reader.
//! - [`engine`]: serving tables from RAM and NVMe tiers, independent of gRPC.
//! - [`service`], [`server`]: the gRPC service and the server that runs it.

pub mod engine;
pub mod server;
pub mod service;
mod status;
pub mod table;
