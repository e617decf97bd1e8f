//! Driving a running engram-store server through the real gRPC client (nothing of the server
//! itself): id distributions ([`workload`]), the closed-loop load generator ([`load`]) that
//! `engram-store demo` and `engram-bench lookup` run, and the hostile clients of
//! `engram-bench abuse` ([`abuse`]).

pub mod abuse;
pub mod load;
pub mod workload;

pub use load::{LoadReport, LoadSpec, RowCheck, run_load};
pub use workload::{IdDistribution, IdSampler};
