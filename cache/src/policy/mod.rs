//! Cache replacement policies behind one trait, one file per policy.
//!
//! A [`Policy`] manages a fixed number of *slots* keyed by `u64` (a row id). It decides which keys
//! are resident and which slot each occupies; it stores no row bytes. The RAM tier pairs a policy
//! with a slab arena (slot `i` holds the row bytes at `i * row_bytes`), and the policy simulator
//! drives policies with no arena at all.

mod clock;

pub use clock::Clock;

/// Names accepted by [`by_name`].
pub const POLICY_NAMES: &[&str] = &["clock"];

/// The policy the RAM tier runs unless told otherwise.
pub fn default_policy(capacity: usize) -> Box<dyn Policy> {
    Box::new(Clock::new(capacity))
}

/// The policy called `name` (see [`POLICY_NAMES`]), or `None` for an unknown name.
pub fn by_name(name: &str, capacity: usize) -> Option<Box<dyn Policy>> {
    match name {
        "clock" => Some(Box::new(Clock::new(capacity))),
        _ => None,
    }
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
    /// Offers `key` (just missed by `get`) for admission; `None` if declined or capacity is 0.
    /// Must not be called for a resident key.
    fn insert(&mut self, key: u64) -> Option<Admitted>;
    /// Exact bytes of heap and inline state the policy holds (index, metadata, sketches).
    fn metadata_bytes(&self) -> usize;
}
