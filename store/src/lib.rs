//! engram-store: the server library behind the `engram-store` binary.
//!
//! - [`table`]: the on-disk table format (manifest, data and checksum files), writer, reader.
//! - [`engine`]: serving tables from RAM and NVMe tiers, and Engram groups over them,
//!   independent of gRPC.
//! - [`group`]: Engram groups on disk (layout, compression map, one table per layer).
//! - [`edge`], [`server`]: the thin gRPC edge (messages into queries, errors into statuses) and
//!   the server that runs it.
//! - [`regions`]: memory of a client's that LookupInto writes rows into.
//! - [`channel`]: the sidecar channel, a shared-memory request ring per inference worker.
//! - [`ingest`]: `.npy`/`.safetensors` ingestion and synthetic tables.
//! - [`config`]: `serve`'s TOML configuration.
//! - [`access`]: TLS and bearer tokens at the gRPC edge (`--tls-*`, `--auth-tokens`).
//! - [`metrics`]: Prometheus metrics (`--metrics-listen`).
//! - [`cluster`]: membership, shard map and routing through etcd (`--etcd`, `cluster plan`).
//!
//! The command line (and the demo, which drives a server through the client) is the binary's,
//! in `src/cli/`; load generation lives in `engram-store-driver`.

pub mod access;
pub mod channel;
pub mod cluster;
pub mod config;
pub mod edge;
pub mod engine;
pub mod group;
pub mod ingest;
pub mod metrics;
pub mod regions;
pub mod server;
pub mod size;
pub mod table;
