//! engram-store's storage tiers and cache policies. Knows nothing of gRPC.
//!
//! - [`policy`]: replacement/admission policies over slots, one file each.

mod key_hash;
pub mod policy;

pub use key_hash::{KeyHashBuilder, KeyHasher, mix64};
pub use policy::{Admitted, Policy};
