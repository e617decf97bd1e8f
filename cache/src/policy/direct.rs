//! Direct mapping for a cache that holds every key there is: key `k` (below the capacity) lives
//! in slot `k`. No index, no eviction, no frequencies: one residency bit per slot. The RAM tier
//! runs it when a whole table fits its budget ([`crate::RowCacheBuilder::whole_table_when_it_fits`]),
//! where any replacement policy would only spend memory and time. Keys at or above the capacity
//! are never admitted, so it is correct (if useless) for any key stream.

use super::{Admitted, Policy};
use crate::prefetch::prefetch_read;

/// Direct-mapped residency over `capacity` slots.
#[derive(Debug)]
pub struct Direct {
    resident: Box<[u64]>,
    len: usize,
    capacity: usize,
}

impl Direct {
    /// Slots for the keys `0..capacity`.
    pub fn new(capacity: usize) -> Self {
        Self {
            resident: vec![0; capacity.div_ceil(64)].into_boxed_slice(),
            len: 0,
            capacity,
        }
    }

    /// Word index and bit of `key`, if it has a slot.
    #[inline]
    fn bit(&self, key: u64) -> Option<(usize, u64)> {
        (key < self.capacity as u64).then(|| ((key / 64) as usize, 1u64 << (key % 64)))
    }
}

impl Policy for Direct {
    fn name(&self) -> &'static str {
        "direct"
    }

    fn capacity(&self) -> usize {
        self.capacity
    }

    fn len(&self) -> usize {
        self.len
    }

    fn get(&mut self, key: u64) -> Option<u32> {
        self.contains(key).then_some(key as u32)
    }

    fn contains(&self, key: u64) -> bool {
        self.bit(key)
            .is_some_and(|(word, bit)| self.resident[word] & bit != 0)
    }

    fn prefetch(&self, key: u64) {
        if let Some((word, _)) = self.bit(key) {
            prefetch_read(self.resident.as_ptr().wrapping_add(word));
        }
    }

    fn insert(&mut self, key: u64) -> Option<Admitted> {
        let (word, bit) = self.bit(key)?;
        if self.resident[word] & bit != 0 {
            return None;
        }
        self.resident[word] |= bit;
        self.len += 1;
        Some(Admitted {
            slot: key as u32,
            evicted: None,
        })
    }

    fn metadata_bytes(&self) -> usize {
        std::mem::size_of::<Self>() + std::mem::size_of_val(&*self.resident)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_every_key_below_capacity_in_its_own_slot() {
        let mut p = Direct::new(130);
        for key in (0..130u64).rev() {
            assert_eq!(p.get(key), None);
            assert_eq!(
                p.insert(key),
                Some(Admitted {
                    slot: key as u32,
                    evicted: None
                })
            );
        }
        assert_eq!(p.len(), 130);
        assert!((0..130u64).all(|k| p.get(k) == Some(k as u32)));
        // Out of range: never resident, never admitted.
        assert_eq!(p.insert(130), None);
        assert!(!p.contains(u64::MAX));
        assert_eq!(p.metadata_bytes(), std::mem::size_of::<Direct>() + 3 * 8);
    }
}
