//! What the inactive device index of a [`GpuTier`](super::GpuTier) lacks of the host index,
//! and so what a publish uploads into it: the buckets the last publish and this one changed,
//! or the whole index when neither buffer is known to match (after a failed publish).

/// What the inactive device index lacks of the host index.
pub(super) enum Lag {
    /// The buckets the last publish wrote (the inactive buffer holds the index from before it).
    Buckets(Vec<usize>),
    /// The inactive buffer is unknown but the active one was uploaded whole: the next publish
    /// uploads the inactive one whole, and from then on each is one publish behind the other.
    Other,
    /// Neither buffer is known to match (after a failed publish): the next two publishes
    /// upload whole.
    Both,
}

/// What a publish writes into the inactive device index.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Upload {
    /// These buckets of the host index (sorted, distinct).
    Buckets(Vec<usize>),
    /// The whole host index.
    Whole,
}

impl Lag {
    /// For a publish whose edits wrote `changed` buckets of a `buckets`-bucket index: what to
    /// upload into the inactive buffer, and the lag once that publish has made it active. (A
    /// publish that fails leaves [`Lag::Both`].) Bucket positions go to the device as u32; a
    /// patch of more than a quarter of the index costs more than the whole.
    pub(super) fn publish(self, changed: &[usize], buckets: usize) -> (Upload, Lag) {
        let upload = match self {
            Lag::Buckets(mut patch)
                if buckets <= 1 << 32 && patch.len() + changed.len() <= buckets / 4 =>
            {
                patch.extend_from_slice(changed);
                patch.sort_unstable();
                patch.dedup();
                Upload::Buckets(patch)
            }
            Lag::Buckets(_) | Lag::Other => Upload::Whole,
            // The buffer made inactive by this publish stays as unknown as it was.
            Lag::Both => return (Upload::Whole, Lag::Other),
        };
        // The buffer made inactive holds the index before this publish's edits.
        (upload, Lag::Buckets(changed.to_vec()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gpu::HotIndex;
    use crate::key_hash::mix64;

    /// Two simulated device buffers driven by [`Lag::publish`] through random edits, with some
    /// publishes failing part-way (their target buffer left garbled): after every publish that
    /// succeeds, the buffer it made active equals the host index bucket for bucket.
    #[test]
    fn publishes_keep_the_active_buffer_equal_to_the_host_index_through_failures() {
        let buckets = 128;
        let mut index = HotIndex::empty(buckets);
        let mut device = [index.clone(), index.clone()];
        let (mut active, mut lag) = (0usize, Lag::Buckets(Vec::new()));
        let (mut whole, mut patched, mut failed) = (0, 0, 0);
        let mut x = 99u64;
        for step in 0..3000u64 {
            let mut changed = Vec::new();
            for _ in 0..(mix64(step) % 6) {
                x = mix64(x);
                let id = x % 150;
                if x >> 62 == 0 {
                    index.remove(id, &mut changed);
                } else {
                    index.insert(id, (x >> 8) as u32, &mut changed);
                }
            }
            if changed.is_empty() && matches!(lag, Lag::Buckets(_)) {
                continue; // nothing to publish (publish_edits returns early)
            }
            let (upload, after) = std::mem::replace(&mut lag, Lag::Both).publish(&changed, buckets);
            let next = &mut device[1 - active];
            match upload {
                Upload::Whole => {
                    *next = index.clone();
                    whole += 1;
                }
                Upload::Buckets(list) => {
                    for b in list {
                        next.keys[b] = index.keys[b];
                        next.slots[b] = index.slots[b];
                    }
                    patched += 1;
                }
            }
            x = mix64(x);
            if x.is_multiple_of(17) {
                // Failed part-way: the target holds garbage, the lag stays `Both`.
                next.keys[(x >> 7) as usize % buckets] = x;
                failed += 1;
                continue;
            }
            active = 1 - active;
            lag = after;
            assert_eq!(device[active].keys, index.keys, "step {step}");
            assert_eq!(device[active].slots, index.slots, "step {step}");
        }
        assert!(
            whole > 0 && patched > whole && failed > 0,
            "{whole} {patched} {failed}"
        );
    }
}
