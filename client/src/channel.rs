//! The client side of the sidecar channel: a ring of request slots in a sealed memfd shared
//! with the server (layout: the server's `channel::ring` module doc), opened once on the
//! server's local socket with an output region; then each request is written into a slot and
//! the server is woken only if it sleeps, and completion is polled (spinning briefly, then a
//! futex sleep) on the slot's sequence word, which a CUDA stream can also wait on.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::error::ClientError;
use crate::shared_memory::{LocalConnection, SharedMemoryRegion, map_shared};

const MAGIC: &[u8; 8] = b"ENGRRING";
const VERSION: u32 = 1;
const HEADER_BYTES: usize = 4096;
const REQUEST_OFFSET: usize = 320;
const PAYLOAD_OFFSET: usize = 384;
const FREE: u32 = 0;
const SUBMITTED: u32 = 1;
const DONE: u32 = 3;
const KIND_ROWS: u32 = 1;
const KIND_SEQUENCES: u32 = 2;
/// How long `wait` spins before it sleeps.
const SPIN: Duration = Duration::from_micros(50);

/// What a channel serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChannelTarget {
    /// Rows of a table by id.
    Table(String),
    /// Token sequences of an Engram group's layer.
    Layer {
        /// Group.
        group: String,
        /// Layer id.
        layer: u32,
    },
}

/// A slot's completion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotDone {
    /// Rows written.
    pub rows: u32,
    /// Rows served from VRAM.
    pub gpu_hits: u32,
    /// The table version that served them.
    pub version: u64,
}

/// An open channel. Dropping it closes it.
#[derive(Debug)]
pub struct Channel {
    local: LocalConnection,
    id: u64,
    base: *mut u8,
    len: usize,
    slots: u32,
    stride: usize,
    payload_bytes: usize,
    next_seq: u32,
    pending: Vec<Option<u32>>,
}

// SAFETY: the ring mapping is owned by the Channel and unmapped once, on drop; &mut self guards
// every write into it.
unsafe impl Send for Channel {}

fn os_error(what: &str) -> ClientError {
    ClientError::Local(format!("{what}: {}", std::io::Error::last_os_error()))
}

impl Channel {
    /// Opens a channel on the local socket at `local_socket`: `slots` slots of `payload_bytes`
    /// each, serving `target` into `region` (registered on this host), at most `capacity` rows
    /// per request; presenting `token` if the server checks tokens.
    pub fn open(
        local_socket: &std::path::Path,
        token: Option<String>,
        target: &ChannelTarget,
        region: &SharedMemoryRegion,
        capacity: usize,
        slots: u32,
        payload_bytes: usize,
    ) -> Result<Self, ClientError> {
        Self::open_for_region(
            local_socket,
            token,
            target,
            (region.id(), region.token()),
            capacity,
            slots,
            payload_bytes,
        )
    }

    /// [`Channel::open`] with the output region given by its id and token (e.g. a CUDA IPC
    /// region registered over gRPC).
    pub fn open_for_region(
        local_socket: &std::path::Path,
        token: Option<String>,
        target: &ChannelTarget,
        (region_id, region_token): (u64, &str),
        capacity: usize,
        slots: u32,
        payload_bytes: usize,
    ) -> Result<Self, ClientError> {
        let stride = (PAYLOAD_OFFSET + payload_bytes).div_ceil(64) * 64;
        let len = HEADER_BYTES + slots as usize * stride;
        let fd = ring_memfd(len, slots, stride, payload_bytes)?;
        let base = map_shared(&fd, len, "map the ring")?;
        let mut message = serde_json::json!({
            "op": "open_channel",
            "capacity": capacity,
            "region_id": region_id,
            "region_token": region_token,
            "token": token,
        });
        match target {
            ChannelTarget::Table(t) => message["table"] = t.clone().into(),
            ChannelTarget::Layer { group, layer } => {
                message["group"] = group.clone().into();
                message["layer"] = (*layer).into();
            }
        }
        let local = LocalConnection::connect(local_socket)?.with_token(token);
        let reply = match local.request_with_fd(&message, &fd) {
            Ok(r) => r,
            Err(e) => {
                // SAFETY: the mapping made above, unmapped once.
                unsafe { libc::munmap(base.cast(), len) };
                return Err(e);
            }
        };
        Ok(Self {
            local,
            id: reply["channel_id"].as_u64().unwrap_or(0),
            base,
            len,
            slots,
            stride,
            payload_bytes,
            next_seq: 1,
            pending: vec![None; slots as usize],
        })
    }

    /// The channel's id.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Slots.
    pub fn slots(&self) -> u32 {
        self.slots
    }

    fn word(&self, at: usize) -> &AtomicU32 {
        debug_assert!(at + 4 <= self.len && at.is_multiple_of(4));
        // SAFETY: within the mapping, 4-aligned; shared memory is fine for atomics.
        unsafe { &*self.base.add(at).cast::<AtomicU32>() }
    }

    fn slot_at(&self, slot: u32, offset: usize) -> usize {
        HEADER_BYTES + slot as usize * self.stride + offset
    }

    /// The sequence word of `slot` (the server writes the submission's sequence number there
    /// when it completes): its address in this process, for a CUDA stream to wait on once the
    /// ring is registered with CUDA.
    pub fn done_seq_ptr(&self, slot: u32) -> *const u32 {
        self.word(self.slot_at(slot, 64)).as_ptr()
    }

    /// The ring's mapping (base, bytes), e.g. to register it with CUDA.
    pub fn ring_memory(&self) -> (*mut u8, usize) {
        (self.base, self.len)
    }

    fn submit(
        &mut self,
        slot: u32,
        kind: u32,
        count: u32,
        offset: u64,
        payload: &[u8],
    ) -> Result<u32, ClientError> {
        if slot >= self.slots {
            return Err(ClientError::Local(format!(
                "slot {slot}: the channel has {} slots",
                self.slots
            )));
        }
        if payload.len() > self.payload_bytes {
            return Err(ClientError::Local(format!(
                "a request of {} bytes does not fit a slot of {}",
                payload.len(),
                self.payload_bytes
            )));
        }
        let st = self.word(self.slot_at(slot, 0)).load(Ordering::Acquire);
        if st != FREE && st != DONE {
            return Err(ClientError::Local(format!(
                "slot {slot} is still in flight"
            )));
        }
        let seq = self.next_seq;
        self.next_seq = self.next_seq.wrapping_add(1).max(1);
        let at = self.slot_at(slot, PAYLOAD_OFFSET);
        // SAFETY: the payload fits the slot (checked above); nothing else in this process
        // touches this slot while it is not in flight.
        unsafe {
            std::ptr::copy_nonoverlapping(payload.as_ptr(), self.base.add(at), payload.len())
        };
        self.word(self.slot_at(slot, 4))
            .store(seq, Ordering::Relaxed);
        self.word(self.slot_at(slot, REQUEST_OFFSET))
            .store(kind, Ordering::Relaxed);
        self.word(self.slot_at(slot, REQUEST_OFFSET + 4))
            .store(count, Ordering::Relaxed);
        let off = self.slot_at(slot, REQUEST_OFFSET + 8);
        // SAFETY: 8-aligned (strides are multiples of 64), within the slot.
        unsafe { &*self.base.add(off).cast::<AtomicU64>() }.store(offset, Ordering::Relaxed);
        self.word(self.slot_at(slot, REQUEST_OFFSET + 16))
            .store(payload.len() as u32, Ordering::Relaxed);
        self.word(self.slot_at(slot, 0))
            .store(SUBMITTED, Ordering::SeqCst);
        self.word(24).fetch_add(1, Ordering::SeqCst);
        if self.word(28).load(Ordering::SeqCst) != 0 {
            futex(self.word(24), libc::FUTEX_WAKE, i32::MAX as u32, None);
        }
        self.pending[slot as usize] = Some(seq);
        Ok(seq)
    }

    /// Asks for the rows of `ids` into the output region from byte `offset`, in `slot`;
    /// returns the submission's sequence number.
    pub fn submit_rows(&mut self, slot: u32, ids: &[u64], offset: u64) -> Result<u32, ClientError> {
        let payload: Vec<u8> = ids.iter().flat_map(|id| id.to_le_bytes()).collect();
        self.submit(slot, KIND_ROWS, ids.len() as u32, offset, &payload)
    }

    /// Asks for the rows of token sequences (tokens, context) into the output region from byte
    /// `offset`, in `slot`.
    pub fn submit_sequences(
        &mut self,
        slot: u32,
        sequences: &[(&[u32], &[u32])],
        offset: u64,
    ) -> Result<u32, ClientError> {
        let mut payload = Vec::new();
        for (tokens, context) in sequences {
            payload.extend((tokens.len() as u32).to_le_bytes());
            payload.extend((context.len() as u32).to_le_bytes());
            payload.extend(tokens.iter().flat_map(|t| t.to_le_bytes()));
            payload.extend(context.iter().flat_map(|t| t.to_le_bytes()));
        }
        self.submit(
            slot,
            KIND_SEQUENCES,
            sequences.len() as u32,
            offset,
            &payload,
        )
    }

    /// Waits for `slot`'s submission to complete (spinning briefly, then sleeping), at most
    /// `timeout`; its rows are then in the output region.
    pub fn wait(&mut self, slot: u32, timeout: Duration) -> Result<SlotDone, ClientError> {
        let Some(seq) = self.pending.get(slot as usize).copied().flatten() else {
            return Err(ClientError::Local(format!(
                "slot {slot} has nothing in flight"
            )));
        };
        let done = self.word(self.slot_at(slot, 64));
        let start = Instant::now();
        while done.load(Ordering::Acquire) != seq {
            if self.word(36).load(Ordering::Acquire) != 0 {
                return Err(ClientError::Local("the server closed the channel".into()));
            }
            let waited = start.elapsed();
            if waited > timeout {
                return Err(ClientError::Status {
                    code: tonic::Code::DeadlineExceeded,
                    message: format!("slot {slot} not done after {waited:?}"),
                });
            }
            if waited < SPIN {
                std::hint::spin_loop();
                continue;
            }
            let seen = done.load(Ordering::Acquire);
            if seen == seq {
                break;
            }
            self.word(32).fetch_add(1, Ordering::SeqCst);
            futex(
                done,
                libc::FUTEX_WAIT,
                seen,
                Some(Duration::from_millis(10)),
            );
            self.word(32).fetch_sub(1, Ordering::SeqCst);
        }
        self.pending[slot as usize] = None;
        let status = self.word(self.slot_at(slot, 68)).load(Ordering::Acquire);
        let rows = self.word(self.slot_at(slot, 72)).load(Ordering::Acquire);
        let gpu_hits = self.word(self.slot_at(slot, 76)).load(Ordering::Acquire);
        let v = self.slot_at(slot, 80);
        // SAFETY: 8-aligned, within the slot.
        let version = unsafe { &*self.base.add(v).cast::<AtomicU64>() }.load(Ordering::Acquire);
        if status != 0 {
            let len = (self.word(self.slot_at(slot, 88)).load(Ordering::Acquire) as usize)
                .min(REQUEST_OFFSET - 92);
            let at = self.slot_at(slot, 92);
            // SAFETY: the message field lies within the slot.
            let bytes = unsafe { std::slice::from_raw_parts(self.base.add(at), len) };
            let message = String::from_utf8_lossy(bytes).into_owned();
            return Err(ClientError::from_code(
                tonic::Code::from_i32(status as i32),
                message,
            ));
        }
        Ok(SlotDone {
            rows,
            gpu_hits,
            version,
        })
    }

    /// Closes the channel now (dropping it closes it too, with the local connection).
    pub fn close(self) -> Result<(), ClientError> {
        let message = serde_json::json!({"op": "close_channel", "channel_id": self.id});
        self.local.request(&message).map(drop)
    }
}

impl Drop for Channel {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `open`, unmapped exactly once here.
        unsafe { libc::munmap(self.base.cast(), self.len) };
    }
}

fn ring_memfd(
    len: usize,
    slots: u32,
    stride: usize,
    payload: usize,
) -> Result<OwnedFd, ClientError> {
    // SAFETY: memfd_create with a valid C string; we own the descriptor.
    let raw = unsafe {
        libc::memfd_create(
            c"engram-ring".as_ptr(),
            libc::MFD_ALLOW_SEALING | libc::MFD_CLOEXEC,
        )
    };
    if raw < 0 {
        return Err(os_error("memfd_create"));
    }
    // SAFETY: a fresh descriptor owned by nobody else.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    let mut header = Vec::with_capacity(24);
    header.extend_from_slice(MAGIC);
    header.extend(VERSION.to_le_bytes());
    header.extend(slots.to_le_bytes());
    header.extend((stride as u32).to_le_bytes());
    header.extend((payload as u32).to_le_bytes());
    // SAFETY: plain syscalls on our descriptor, from a live buffer.
    unsafe {
        if libc::ftruncate(fd.as_raw_fd(), len as libc::off_t) != 0 {
            return Err(os_error("size the ring"));
        }
        if libc::pwrite(fd.as_raw_fd(), header.as_ptr().cast(), header.len(), 0)
            != header.len() as isize
        {
            return Err(os_error("write the ring's header"));
        }
        let seals = libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_SEAL;
        if libc::fcntl(fd.as_raw_fd(), libc::F_ADD_SEALS, seals) != 0 {
            return Err(os_error("seal the ring"));
        }
    }
    Ok(fd)
}

fn futex(word: &AtomicU32, op: libc::c_int, val: u32, timeout: Option<Duration>) {
    let ts = timeout.map(|t| libc::timespec {
        tv_sec: t.as_secs() as libc::time_t,
        tv_nsec: t.subsec_nanos() as libc::c_long,
    });
    let ts_ptr = ts
        .as_ref()
        .map_or(std::ptr::null(), |t| t as *const libc::timespec);
    // SAFETY: a futex call on a live, aligned word of shared memory, with a valid (or null)
    // timeout.
    unsafe {
        libc::syscall(libc::SYS_futex, word.as_ptr(), op, val, ts_ptr);
    }
}
