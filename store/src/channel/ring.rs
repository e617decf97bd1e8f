//! The channel's ring: a sealed memfd the client creates and shares with the server, laid out as
//! a header page and `slots` fixed-size slots. Everything in it is written by a process the
//! server does not trust, at any time: the server touches it only through atomics and bounded
//! copies ([`Ring::take_request`] copies a slot's request into private memory before reading it),
//! so nothing a client writes can make the server read or write outside the mapping.
//!
//! Layout (little-endian; `Layout` in the Python and Rust clients mirrors it):
//!
//! | bytes | field |
//! |---|---|
//! | header 0..8 | magic `ENGRRING` |
//! | 8..12 | format version (1) |
//! | 12..16 | slots |
//! | 16..20 | slot stride, bytes |
//! | 20..24 | payload bytes per slot |
//! | 24..28 | doorbell: the client adds 1 after each submit (a futex word) |
//! | 28..32 | server sleeping: 1 while the server waits on the doorbell |
//! | 32..36 | client waiters: clients sleeping on a completion (the server wakes them) |
//! | 36..40 | closed: 1 once the server has closed the channel |
//! | slot + 0..4 | state: 0 free, 1 submitted (client), 2 taken, 3 done (server) |
//! | slot + 4..8 | seq: the client's sequence number of this submission |
//! | slot + 64..68 | done_seq: `seq`, written last when the slot completes (a CUDA stream waits on it) |
//! | slot + 68..72 | status: 0, or the gRPC code of the error |
//! | slot + 72..76 | rows written |
//! | slot + 76..80 | rows served from VRAM |
//! | slot + 80..88 | table version that served |
//! | slot + 88..92 | error message length |
//! | slot + 92..320 | error message (UTF-8, truncated) |
//! | slot + 320..324 | request kind: 1 rows by id, 2 token sequences |
//! | slot + 324..328 | count: ids, or sequences |
//! | slot + 328..336 | output byte offset in the channel's region |
//! | slot + 336..340 | payload bytes used |
//! | slot + 384.. | payload: u64 ids; or per sequence u32 tokens_len, u32 context_len, the tokens, the context (u32 each) |

use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

/// Magic at the start of a ring.
pub const MAGIC: &[u8; 8] = b"ENGRRING";
/// Format version.
pub const VERSION: u32 = 1;
/// Bytes of the header.
pub const HEADER_BYTES: usize = 4096;
/// Offset of the request header in a slot.
pub const REQUEST_OFFSET: usize = 320;
/// Offset of the payload in a slot.
pub const PAYLOAD_OFFSET: usize = 384;
/// Bytes of the error message field.
pub const MESSAGE_BYTES: usize = REQUEST_OFFSET - 92;
/// Most slots a ring may have.
pub const MAX_SLOTS: u32 = 64;

/// Slot states.
pub mod state {
    /// The client may write the slot.
    pub const FREE: u32 = 0;
    /// The client has written a request.
    pub const SUBMITTED: u32 = 1;
    /// The server is serving it.
    pub const TAKEN: u32 = 2;
    /// The server has written its completion.
    pub const DONE: u32 = 3;
}

/// Request kinds.
pub mod kind {
    /// Rows by id.
    pub const ROWS: u32 = 1;
    /// Token sequences of an Engram layer.
    pub const SEQUENCES: u32 = 2;
}

/// Why a ring cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RingError {
    /// The memfd is not sealed or cannot be examined or mapped.
    #[error("the ring's memfd {0}")]
    Memfd(#[from] crate::regions::ShmProblem),
    /// The header does not describe a ring this server reads.
    #[error("the ring's header {0}")]
    Header(String),
}

/// A request copied out of a slot, not yet validated against a table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotRequest {
    /// The client's sequence number.
    pub seq: u32,
    /// [`kind::ROWS`] or [`kind::SEQUENCES`].
    pub kind: u32,
    /// Ids, or sequences.
    pub count: u32,
    /// Output byte offset.
    pub out_offset: u64,
    /// Payload bytes the request header claims.
    pub claimed: usize,
    /// The payload, copied: the claimed bytes, or the slot's payload size if it claims more.
    pub payload: Vec<u8>,
}

/// A completion to write into a slot.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Completion {
    /// 0, or a gRPC code.
    pub status: u32,
    /// Rows written.
    pub rows: u32,
    /// Rows from VRAM.
    pub gpu_hits: u32,
    /// Table version that served.
    pub version: u64,
    /// Error message.
    pub message: String,
}

/// A mapped ring.
#[derive(Debug)]
pub struct Ring {
    base: *mut u8,
    len: usize,
    slots: u32,
    stride: usize,
    payload_bytes: usize,
}

// SAFETY: the mapping is owned by the Ring and unmapped once, on drop; every access goes through
// atomics or bounded copies within it.
unsafe impl Send for Ring {}
// SAFETY: as above.
unsafe impl Sync for Ring {}

impl Ring {
    /// Maps the ring in `fd`, which must be sealed against shrinking and growing and hold a
    /// valid header.
    pub fn map(fd: &OwnedFd) -> Result<Self, RingError> {
        let shm = crate::regions::ShmRegion::from_memfd(fd, 0).map_err(|e| match e {
            crate::regions::RegionError::Memfd { problem } => RingError::Memfd(problem),
            other => RingError::Header(other.to_string()),
        })?;
        let len = shm.size() as usize;
        if len < HEADER_BYTES {
            return Err(RingError::Header(format!(
                "needs {HEADER_BYTES} bytes, has {len}"
            )));
        }
        let base = shm.as_ptr();
        // The mapping now belongs to the ring: forget the region (it would unmap on drop).
        std::mem::forget(shm);
        let mut ring = Ring {
            base,
            len,
            slots: 0,
            stride: 0,
            payload_bytes: 0,
        };
        // SAFETY: the header lies within the mapping (len >= HEADER_BYTES).
        let magic = unsafe { std::slice::from_raw_parts(base, 8) }.to_vec();
        if magic != MAGIC {
            return Err(RingError::Header("does not start with ENGRRING".into()));
        }
        let version = ring.header_u32(8).load(Ordering::Acquire);
        if version != VERSION {
            return Err(RingError::Header(format!(
                "is format version {version}; this server reads {VERSION}"
            )));
        }
        let slots = ring.header_u32(12).load(Ordering::Acquire);
        let stride = ring.header_u32(16).load(Ordering::Acquire) as usize;
        let payload = ring.header_u32(20).load(Ordering::Acquire) as usize;
        if slots == 0 || slots > MAX_SLOTS {
            return Err(RingError::Header(format!(
                "has {slots} slots; 1 to {MAX_SLOTS} are allowed"
            )));
        }
        if !stride.is_multiple_of(64) || stride < PAYLOAD_OFFSET + payload {
            return Err(RingError::Header(format!(
                "has a slot stride of {stride} bytes for {payload} payload bytes"
            )));
        }
        let need = HEADER_BYTES + slots as usize * stride;
        if need > len {
            return Err(RingError::Header(format!(
                "describes {need} bytes; the memfd holds {len}"
            )));
        }
        ring.slots = slots;
        ring.stride = stride;
        ring.payload_bytes = payload;
        Ok(ring)
    }

    /// Slots.
    pub fn slots(&self) -> u32 {
        self.slots
    }

    /// Payload bytes of a slot.
    pub fn payload_bytes(&self) -> usize {
        self.payload_bytes
    }

    fn header_u32(&self, offset: usize) -> &AtomicU32 {
        debug_assert!(offset + 4 <= HEADER_BYTES && offset.is_multiple_of(4));
        // SAFETY: within the header (checked at map), 4-aligned (the mapping is page-aligned),
        // and shared memory is valid for atomic access for as long as the mapping lives.
        unsafe { &*self.base.add(offset).cast::<AtomicU32>() }
    }

    fn slot_u32(&self, slot: u32, offset: usize) -> &AtomicU32 {
        debug_assert!(slot < self.slots && offset + 4 <= self.stride && offset.is_multiple_of(4));
        let at = HEADER_BYTES + slot as usize * self.stride + offset;
        // SAFETY: slot < slots and offset within the stride keep it inside the mapping (checked
        // at map); 4-aligned as stride is a multiple of 64.
        unsafe { &*self.base.add(at).cast::<AtomicU32>() }
    }

    fn slot_u64(&self, slot: u32, offset: usize) -> &AtomicU64 {
        debug_assert!(slot < self.slots && offset + 8 <= self.stride && offset.is_multiple_of(8));
        let at = HEADER_BYTES + slot as usize * self.stride + offset;
        // SAFETY: as for `slot_u32`, 8-aligned.
        unsafe { &*self.base.add(at).cast::<AtomicU64>() }
    }

    /// The doorbell word (a futex the server sleeps on).
    pub fn doorbell(&self) -> &AtomicU32 {
        self.header_u32(24)
    }

    /// Set while the server sleeps on the doorbell.
    pub fn server_sleeping(&self) -> &AtomicU32 {
        self.header_u32(28)
    }

    /// Clients sleeping on a completion.
    pub fn client_waiters(&self) -> &AtomicU32 {
        self.header_u32(32)
    }

    /// Marks the ring closed (clients see it and stop waiting).
    pub fn mark_closed(&self) {
        self.header_u32(36).store(1, Ordering::Release);
    }

    /// Takes slot `slot` if the client submitted it: the request is copied out (so later
    /// writes by the client cannot change what the server serves) and the slot marked taken.
    pub fn take_request(&self, slot: u32) -> Option<SlotRequest> {
        let st = self.slot_u32(slot, 0);
        st.compare_exchange(
            state::SUBMITTED,
            state::TAKEN,
            Ordering::AcqRel,
            Ordering::Acquire,
        )
        .ok()?;
        let seq = self.slot_u32(slot, 4).load(Ordering::Acquire);
        let kind = self.slot_u32(slot, REQUEST_OFFSET).load(Ordering::Acquire);
        let count = self
            .slot_u32(slot, REQUEST_OFFSET + 4)
            .load(Ordering::Acquire);
        let out_offset = self
            .slot_u64(slot, REQUEST_OFFSET + 8)
            .load(Ordering::Acquire);
        let claimed = self
            .slot_u32(slot, REQUEST_OFFSET + 16)
            .load(Ordering::Acquire) as usize;
        let len = claimed.min(self.payload_bytes);
        let mut payload = vec![0u8; len];
        let at = HEADER_BYTES + slot as usize * self.stride + PAYLOAD_OFFSET;
        // SAFETY: `len` <= payload_bytes keeps the source within this slot of the mapping;
        // the destination is our own buffer of `len` bytes. The client may write the source
        // concurrently: we then copy garbage, which validation refuses, never outside memory.
        unsafe { std::ptr::copy_nonoverlapping(self.base.add(at), payload.as_mut_ptr(), len) };
        Some(SlotRequest {
            seq,
            kind,
            count,
            out_offset,
            claimed,
            payload,
        })
    }

    /// Writes `completion` into slot `slot` for submission `seq`: the record first, then
    /// `done_seq` (what a CUDA stream waits on), then the state; wakes sleeping clients.
    pub fn complete(&self, slot: u32, seq: u32, completion: &Completion) {
        self.slot_u32(slot, 68)
            .store(completion.status, Ordering::Relaxed);
        self.slot_u32(slot, 72)
            .store(completion.rows, Ordering::Relaxed);
        self.slot_u32(slot, 76)
            .store(completion.gpu_hits, Ordering::Relaxed);
        self.slot_u64(slot, 80)
            .store(completion.version, Ordering::Relaxed);
        let msg = completion.message.as_bytes();
        let n = msg.len().min(MESSAGE_BYTES);
        let at = HEADER_BYTES + slot as usize * self.stride + 92;
        // SAFETY: the message field lies inside the slot (92 + MESSAGE_BYTES = REQUEST_OFFSET).
        unsafe { std::ptr::copy_nonoverlapping(msg.as_ptr(), self.base.add(at), n) };
        self.slot_u32(slot, 88).store(n as u32, Ordering::Relaxed);
        self.slot_u32(slot, 64).store(seq, Ordering::Release);
        self.slot_u32(slot, 0).store(state::DONE, Ordering::Release);
        if self.client_waiters().load(Ordering::SeqCst) > 0 {
            super::futex::wake_all(self.slot_u32(slot, 64));
        }
    }

    /// True if any slot is submitted.
    pub fn any_submitted(&self) -> bool {
        (0..self.slots).any(|s| self.slot_u32(s, 0).load(Ordering::Acquire) == state::SUBMITTED)
    }
}

impl Drop for Ring {
    fn drop(&mut self) {
        // SAFETY: base/len are the mapping made in `map`, unmapped exactly once here.
        unsafe {
            libc::munmap(self.base.cast(), self.len);
        }
    }
}
