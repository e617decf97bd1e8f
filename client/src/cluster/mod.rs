//! The client side of a cluster of engram-store nodes coordinated through etcd: the records
//! kept there ([`map`]), the placement that `engram-store cluster plan` publishes
//! ([`placement`]), the watcher that follows them ([`watcher`]) and the routing client
//! ([`ClusterClient`]), which `Client::connect_cluster` returns.

mod client;
pub mod map;
mod ngrams;
pub mod placement;
mod replicas;
pub mod watcher;

pub use client::{ClusterClient, ClusterSettings, EPOCH_HEADER};
pub use ngrams::GroupHashing;
