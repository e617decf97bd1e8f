//! Cache replacement policies behind one trait, one file per policy.
//!
//! A [`Policy`] manages a fixed number of *slots* keyed by `u64` (a row id). It decides which keys
//! are resident and which slot each occupies; it stores no row bytes. The RAM tier pairs a policy
//! with a slab arena (slot `i` holds the row bytes at `i * row_bytes`), and the policy simulator
//! drives policies with no arena at all, through [`SimPolicy`], which also covers the policies
//! that only a simulator can run: moka's W-TinyLFU ([`MokaTinyLfu`]) and Belady's [`Opt`].
//!
//! The slot policies: [`Lru`], [`Clock`], [`Sieve`], [`S3Fifo`], [`Lfu`] (count-min sketch with
//! aging), [`HotSet`] (pinned top-K by decayed counts), [`WTinyLfu`] (W-TinyLFU over CLOCK), and
//! [`S3Sketch`]: S3-FIFO with a TinyLFU sketch for a ghost and an adaptive window, in under 16
//! bytes per row, which runs as `s3sketch` (hill-climbed window), `s3arc` (ghost-driven window,
//! an experiment) and the default ([`DEFAULT_POLICY`]) `s3mini` (window and aging period chosen
//! by miniature simulations on a sample of the keys).

/// The [`Policy`] methods that every policy over a [`slot_index::SlotIndex`] field `index` and a
/// `capacity` field writes the same way: `name` (the given string), `capacity`, `len` and
/// `contains`. Invoked inside `impl Policy for ...`.
macro_rules! indexed_policy_basics {
    ($name:literal) => {
        fn name(&self) -> &'static str {
            $name
        }

        fn capacity(&self) -> usize {
            self.capacity
        }

        fn len(&self) -> usize {
            self.index.len()
        }

        fn contains(&self, key: u64) -> bool {
            self.index.get(key).is_some()
        }
    };
}

mod climber;
mod clock;
mod direct;
mod ghost;
mod hotset;
mod lfu;
mod lru;
mod mini;
mod moka_tinylfu;
mod opt;
mod regions;
mod s3fifo;
mod s3sketch;
mod sieve;
mod sim;
mod sketch;
mod slot_index;
mod slot_list;
mod wtinylfu;

pub use climber::ClimberConfig;
pub use clock::Clock;
pub use direct::Direct;
pub use ghost::GhostConfig;
pub use hotset::HotSet;
pub use lfu::Lfu;
pub use lru::Lru;
pub use moka_tinylfu::MokaTinyLfu;
pub use opt::{NEVER, Opt, next_uses};
pub use s3fifo::{S3Fifo, S3FifoConfig};
pub use s3sketch::{Candidate, MINI_CANDIDATES, MiniConfig, S3Sketch, S3SketchConfig};
pub use sieve::Sieve;
pub use sim::SimPolicy;
pub use sketch::SketchConfig;
pub use wtinylfu::{WTinyLfu, WTinyLfuConfig};

/// Names accepted by [`by_name`]: the slot policies the RAM tier can run.
pub const POLICY_NAMES: &[&str] = &[
    "s3mini", "s3arc", "s3sketch", "wtinylfu", "lru", "clock", "sieve", "s3fifo", "lfu", "hotset",
];

/// Name of the policy the RAM tier runs unless told otherwise.
pub const DEFAULT_POLICY: &str = "s3mini";

/// The policy the RAM tier runs unless told otherwise: [`S3Sketch`] tuned by miniature
/// simulations ([`S3SketchConfig::mini`]).
pub fn default_policy(capacity: usize) -> Box<dyn Policy> {
    Box::new(S3Sketch::with_config(capacity, S3SketchConfig::mini()))
}

/// The policy called `name` (see [`POLICY_NAMES`]), or `None` for an unknown name.
pub fn by_name(name: &str, capacity: usize) -> Option<Box<dyn Policy>> {
    struct Boxed;
    impl WithPolicy for Boxed {
        type Output = Box<dyn Policy>;
        fn with<P: Policy + 'static>(self, policy: P) -> Box<dyn Policy> {
            Box::new(policy)
        }
    }
    by_name_with(name, capacity, Boxed)
}

/// Receives a policy built by [`by_name_with`] as its concrete type, so that a caller can box it
/// as another trait object (the simulator boxes it as a [`SimPolicy`]) without a second box.
pub trait WithPolicy {
    /// What the receiver makes of the policy.
    type Output;
    /// Takes the policy.
    fn with<P: Policy + 'static>(self, policy: P) -> Self::Output;
}

/// Builds the policy called `name` (see [`POLICY_NAMES`]) and hands it to `f`; `None` for an
/// unknown name. The one list of names and constructors, shared by [`by_name`].
pub fn by_name_with<F: WithPolicy>(name: &str, capacity: usize, f: F) -> Option<F::Output> {
    Some(match name {
        "s3mini" => f.with(S3Sketch::with_config(capacity, S3SketchConfig::mini())),
        "s3arc" => f.with(S3Sketch::with_config(capacity, S3SketchConfig::arc())),
        "s3sketch" => f.with(S3Sketch::new(capacity)),
        "wtinylfu" => f.with(WTinyLfu::new(capacity)),
        "lru" => f.with(Lru::new(capacity)),
        "clock" => f.with(Clock::new(capacity)),
        "sieve" => f.with(Sieve::new(capacity)),
        "s3fifo" => f.with(S3Fifo::new(capacity)),
        "lfu" => f.with(Lfu::new(capacity)),
        "hotset" => f.with(HotSet::new(capacity)),
        _ => return None,
    })
}

/// Where an admitted key goes: the slot to fill, and the key that slot held before, if any.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Admitted {
    /// Slot index in `0..capacity`.
    pub slot: u32,
    /// Key evicted from that slot (no longer resident), if the slot was in use.
    pub evicted: Option<u64>,
}

/// A replacement (and admission) policy over `capacity` slots.
///
/// Protocol: every access calls [`Policy::get`] first (which also feeds any frequency sketch);
/// on `None` the caller fetches the value and offers it with [`Policy::insert`], which may
/// decline (admission control) or hand back a slot, evicting its previous key.
pub trait Policy: Send + std::fmt::Debug {
    /// Short name as used on the command line and in CSV output (e.g. `"s3fifo"`).
    fn name(&self) -> &'static str;
    /// Number of slots.
    fn capacity(&self) -> usize;
    /// Keys resident now.
    fn len(&self) -> usize;
    /// True when nothing is resident.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Records an access to `key`; returns its slot if resident.
    fn get(&mut self, key: u64) -> Option<u32>;
    /// True if `key` is resident, without recording an access.
    fn contains(&self, key: u64) -> bool;
    /// Hints the CPU to start loading the memory a coming [`Policy::get`] of `key` will touch
    /// (index bucket, frequency counters), so a batch of gets overlaps its cache misses. Changes
    /// no state; the default does nothing.
    fn prefetch(&self, key: u64) {
        let _ = key;
    }
    /// The second step of a prefetch, a few lookups after [`Policy::prefetch`] of the same key:
    /// follows what that step loaded (the index bucket) to the next memory the get will need
    /// (the slot's stored key). Changes no state; the default does nothing.
    fn prefetch_follow(&self, key: u64) {
        let _ = key;
    }
    /// Offers `key` (just missed by `get`) for admission; `None` if declined or capacity is 0.
    /// Must not be called for a resident key.
    fn insert(&mut self, key: u64) -> Option<Admitted>;
    /// Exact bytes of heap and inline state the policy holds (index, metadata, sketches).
    fn metadata_bytes(&self) -> usize;
    /// The policy's estimate of how often `key` was accessed recently (resident or not), for a
    /// faster tier that wants the hottest rows; 0 from policies that keep no frequencies.
    fn frequency(&self, key: u64) -> u32 {
        let _ = key;
        0
    }
}

impl<P: Policy + ?Sized> Policy for Box<P> {
    fn name(&self) -> &'static str {
        (**self).name()
    }
    fn capacity(&self) -> usize {
        (**self).capacity()
    }
    fn len(&self) -> usize {
        (**self).len()
    }
    fn get(&mut self, key: u64) -> Option<u32> {
        (**self).get(key)
    }
    fn contains(&self, key: u64) -> bool {
        (**self).contains(key)
    }
    fn prefetch(&self, key: u64) {
        (**self).prefetch(key)
    }
    fn prefetch_follow(&self, key: u64) {
        (**self).prefetch_follow(key)
    }
    fn insert(&mut self, key: u64) -> Option<Admitted> {
        (**self).insert(key)
    }
    fn metadata_bytes(&self) -> usize {
        (**self).metadata_bytes()
    }
    fn frequency(&self, key: u64) -> u32 {
        (**self).frequency(key)
    }
}
