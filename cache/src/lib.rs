//! engram-store's storage tiers and cache policies. Knows nothing of gRPC.
//!
//! - [`policy`]: replacement/admission policies over slots, one file each.
//! - [`io`]: aligned block reads from files, through io_uring (O_DIRECT) or a pread thread pool.

pub mod io;
mod key_hash;
pub mod policy;

pub use key_hash::{KeyHashBuilder, KeyHasher, mix64};
pub use policy::{Admitted, Policy};
