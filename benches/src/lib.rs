//! engram-store's benchmark and simulation tools, driven by the `engram-bench` binary (one
//! subcommand per module; `main.rs` only parses the command line and dispatches).
//!
//! - [`policy_sim`]: `engram-bench policy`, the cache-policy simulator over real Engram traces.
//! - [`lookup`]: `engram-bench lookup`, Lookup load against a running server.
//! - [`overload`]: `engram-bench overload`, several times the sustainable load against a server
//!   with a bound on rows in flight.
//! - [`ngrams`]: `engram-bench ngrams`, LookupNgrams against Lookup of the same row ids.
//! - [`import_hf`]: `engram-bench import-hf`, checkpoint import against sequential disk writes.
//! - [`limits`]: `engram-bench limits`, the machine's raw IOPS and loopback TCP bandwidth.
//! - [`peers`]: `engram-bench peers`, engram-store side by side with Redis and the limits.
//! - [`cluster`]: `engram-bench cluster`, the cluster client over 1, 2, 4 nodes, and failover.
//! - [`abuse`]: `engram-bench abuse`, what hostile local clients could do, against a live server.
//! - [`channel`]: `engram-bench channel`, the sidecar channel against Lookup and LookupInto.
//! - [`alloc_meter`]: a counting global allocator, so memory overheads are measured, not guessed.

pub mod abuse;
pub mod alloc_meter;
pub mod channel;
pub mod cluster;
#[cfg(feature = "cuda")]
pub mod gpu;
pub mod import_hf;
pub mod limits;
pub mod lookup;
pub mod ngrams;
pub mod overload;
pub mod peers;
pub mod policy_sim;

#[cfg(test)]
#[global_allocator]
static TEST_ALLOCATOR: alloc_meter::CountingAlloc = alloc_meter::CountingAlloc;
