//! Memory of a caller's that `LookupInto` writes rows into: host shared memory (a sealed memfd
//! the client handed over on the local socket) or, with a GPU tier, a CUDA IPC device buffer on
//! one of the devices served (opened in that device's context; it remembers its device, which
//! picks the VRAM tier its rows come through).
//! Each registered region has an id and a random token; every use must present both, every write
//! is bounds-checked against the registered size, and two writes in flight to overlapping ranges
//! are refused, so a write outside a registered region, or racing another of ours, cannot
//! happen. A region belongs to the connection that registered it: it goes when that connection
//! closes, and a connection (and the server) holds a bounded number of them.

mod error;
mod shared_memory;

use std::collections::HashMap;
use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;
use rand::Rng;

pub use error::{RegionError, ShmProblem};
pub use shared_memory::ShmRegion;

/// The connection a region belongs to (a server connection id).
pub type Owner = u64;

/// A region's id and the secret that proves the caller registered it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegionKey {
    /// The id RegisterRegion returned.
    pub id: u64,
    /// The token RegisterRegion returned.
    pub token: String,
}

/// What a client asks to register.
#[derive(Debug)]
pub enum RegionSpec {
    /// A file named by a path: always refused ([`RegionError::PathRefused`]).
    ShmPath,
    /// A sealed memfd handed over on the local socket, and the bytes of it to map (0: all).
    Memfd {
        /// The descriptor.
        fd: std::os::fd::OwnedFd,
        /// Bytes to map.
        size: u64,
    },
    /// A device buffer shared with cudaIpcGetMemHandle.
    CudaIpc {
        /// The 64-byte handle.
        handle: Vec<u8>,
        /// Offset of the buffer in the allocation.
        offset: u64,
        /// Bytes of the buffer.
        size: u64,
        /// Its device.
        device: u32,
    },
}

/// What a region is backed by.
#[derive(Debug)]
pub enum RegionMemory {
    /// A mapped /dev/shm file.
    Shm(ShmRegion),
    /// A device buffer of another process on one of the GPUs with a VRAM tier.
    #[cfg(feature = "cuda")]
    CudaIpc {
        /// The opened allocation.
        memory: engram_store_cache::gpu::IpcMemory,
        /// Its CUDA device: rows written into it come through that device's VRAM tier.
        device: usize,
        /// Offset of the buffer in the allocation.
        offset: u64,
        /// Bytes of the buffer.
        size: u64,
    },
}

impl RegionMemory {
    /// Size in bytes.
    pub fn size(&self) -> u64 {
        match self {
            RegionMemory::Shm(m) => m.size(),
            #[cfg(feature = "cuda")]
            RegionMemory::CudaIpc { size, .. } => *size,
        }
    }
}

/// A registered region.
#[derive(Debug)]
pub struct Region {
    /// Its id.
    pub id: u64,
    /// The connection it belongs to.
    pub owner: Owner,
    token: String,
    /// Its memory.
    pub memory: RegionMemory,
    /// Byte ranges being written now.
    writing: Mutex<Vec<Range<u64>>>,
}

impl Region {
    /// Size in bytes.
    pub fn size(&self) -> u64 {
        self.memory.size()
    }

    /// Reserves `range` for one write; refused when out of bounds or overlapping a write in flight.
    pub fn lease(self: &Arc<Self>, range: Range<u64>) -> Result<WriteLease, RegionError> {
        if range.end > self.size() || range.start > range.end {
            return Err(RegionError::OutOfBounds {
                id: self.id,
                start: range.start,
                end: range.end,
                size: self.size(),
            });
        }
        let mut w = self.writing.lock();
        if let Some(r) = w
            .iter()
            .find(|r| r.start < range.end && range.start < r.end)
        {
            return Err(RegionError::Busy {
                id: self.id,
                start: range.start,
                end: range.end,
                busy_start: r.start,
                busy_end: r.end,
            });
        }
        w.push(range.clone());
        Ok(WriteLease {
            region: self.clone(),
            range,
        })
    }
}

/// An exclusive right to write one byte range of a region; released on drop.
#[derive(Debug)]
pub struct WriteLease {
    region: Arc<Region>,
    range: Range<u64>,
}

impl WriteLease {
    /// The leased bytes of a shared-memory region.
    pub fn shm_bytes(&mut self) -> Option<&mut [u8]> {
        match &self.region.memory {
            // SAFETY: the range is within the live mapping (checked in `lease`; the lease holds
            // the region, so the mapping outlives the slice) and no other lease of ours overlaps
            // it while `self` lives, so this is the only Rust reference to these bytes.
            RegionMemory::Shm(m) => Some(unsafe {
                std::slice::from_raw_parts_mut(
                    m.as_ptr().add(self.range.start as usize),
                    (self.range.end - self.range.start) as usize,
                )
            }),
            #[cfg(feature = "cuda")]
            RegionMemory::CudaIpc { .. } => None,
        }
    }

    /// The CUDA device and device address of the leased bytes of a CUDA IPC region.
    pub fn device_ptr(&self) -> Option<(usize, u64)> {
        match &self.region.memory {
            RegionMemory::Shm(_) => None,
            #[cfg(feature = "cuda")]
            RegionMemory::CudaIpc {
                memory,
                device,
                offset,
                ..
            } => Some((*device, memory.base() + offset + self.range.start)),
        }
    }
}

impl Drop for WriteLease {
    fn drop(&mut self) {
        let mut w = self.region.writing.lock();
        if let Some(i) = w.iter().position(|r| *r == self.range) {
            w.swap_remove(i);
        }
    }
}

/// Every registered region, with the limits on how many.
#[derive(Debug)]
pub struct RegionRegistry {
    regions: Mutex<HashMap<u64, Arc<Region>>>,
    next_id: AtomicU64,
    per_owner: usize,
    total: usize,
}

impl RegionRegistry {
    /// A registry holding at most `per_owner` regions per connection and `total` in all.
    pub fn new(per_owner: usize, total: usize) -> Self {
        Self {
            regions: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(0),
            per_owner,
            total,
        }
    }

    /// Registers `memory` for `owner`; returns its id and token.
    pub fn register(
        &self,
        memory: RegionMemory,
        owner: Owner,
    ) -> Result<(u64, String), RegionError> {
        let mut regions = self.regions.lock();
        if regions.len() >= self.total {
            return Err(RegionError::TooMany {
                scope: "on the server",
                limit: self.total,
            });
        }
        if regions.values().filter(|r| r.owner == owner).count() >= self.per_owner {
            return Err(RegionError::TooMany {
                scope: "on this connection",
                limit: self.per_owner,
            });
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed) + 1;
        let mut rng = rand::rng();
        let token = format!("{:016x}{:016x}", rng.random::<u64>(), rng.random::<u64>());
        let region = Arc::new(Region {
            id,
            owner,
            token: token.clone(),
            memory,
            writing: Mutex::new(Vec::new()),
        });
        regions.insert(id, region);
        Ok((id, token))
    }

    /// The region `id`, if `token` is its token.
    pub fn get(&self, key: &RegionKey) -> Result<Arc<Region>, RegionError> {
        let regions = self.regions.lock();
        match regions.get(&key.id) {
            Some(r) if constant_time_eq(r.token.as_bytes(), key.token.as_bytes()) => Ok(r.clone()),
            Some(_) => Err(RegionError::WrongToken { id: key.id }),
            None => Err(RegionError::Unknown { id: key.id }),
        }
    }

    /// Forgets a region (its memory is unmapped once no write holds it).
    pub fn unregister(&self, key: &RegionKey) -> Result<(), RegionError> {
        self.get(key)?;
        self.regions.lock().remove(&key.id);
        Ok(())
    }

    /// Whether `owner` has a region registered.
    pub fn owns(&self, owner: Owner) -> bool {
        self.regions.lock().values().any(|r| r.owner == owner)
    }

    /// Forgets every region of `owner` (its connection closed); returns how many.
    pub fn release_owner(&self, owner: Owner) -> usize {
        let mut regions = self.regions.lock();
        let before = regions.len();
        regions.retain(|_, r| r.owner != owner);
        before - regions.len()
    }

    /// Regions registered now.
    pub fn len(&self) -> usize {
        self.regions.lock().len()
    }

    /// True when none is registered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
