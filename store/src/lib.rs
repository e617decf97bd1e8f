//! engram-store: the server library behind the `engram-store` binary.
//!
//! - [`table`]: the on-disk table format (manifest, data and checksum files), writer, reader.
//! - [`engine`]: serving tables from RAM and NVMe tiers, and Engram groups over them,
//!   independent of gRPC.
//! - [`group`]: Engram groups on disk (layout, compression map, one table per layer).
//! - [`service`], [`server`]: the gRPC service and the server that runs it.
//! - [`ingest`]: `.npy`/`.safetensors` ingestion and synthetic tables.
//! - [`cli`], [`config`], [`demo`]: the command line, its TOML config and the demo.
//! - [`workload`], [`load`]: id distributions and the closed-loop load generator.

pub mod cli;
pub mod config;
pub mod demo;
pub mod engine;
pub mod group;
pub mod ingest;
pub mod load;
pub mod regions;
pub mod server;
pub mod service;
pub mod size;
mod status;
pub mod table;
pub mod workload;
