//! The sidecar channel: a shared-memory request ring between one inference worker and the
//! server, so a decode step's rows cost no gRPC round trip. The worker opens it once on the
//! local socket (`open_channel`: the ring as a sealed memfd, an output region it registered,
//! a table or an Engram layer, a capacity in rows); from then on it writes a request into a
//! slot ([`ring`]) and rings the doorbell, and the server writes the rows straight into the
//! output region (VRAM hits by the gather kernel of the VRAM tier on the region's device, misses
//! from RAM and NVMe; the ids count towards that device's hot set) and completes the
//! slot by writing its sequence number into the ring, which a CUDA stream can wait on
//! (`cuStreamWaitValue32`) and a host thread can poll or sleep on (a futex).
//!
//! One thread per channel watches the ring: it spins briefly after each request (a busy
//! worker pays no syscall per request), then sleeps on the doorbell futex. Each taken slot is
//! served as a task on the runtime, so several slots are in flight at once. Everything in the
//! ring is the client's: requests are copied out and validated ([`request`]); a bad one gets an
//! error in its completion record. A channel belongs to the local-socket connection that opened
//! it and closes with it (its thread stops; its ring is unmapped once no slot is in flight).

mod futex;
mod request;
pub mod ring;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::engine::{Engine, LookupError};
use crate::regions::{Owner, Region};

pub use request::ChannelTarget;
pub use ring::{Completion, Ring, RingError};

/// How long the watcher spins after a request before it sleeps on the doorbell.
const SPIN: Duration = Duration::from_micros(50);
/// Longest single sleep on the doorbell (the watcher then checks it was not closed).
const NAP: Duration = Duration::from_millis(100);

/// Why a channel cannot be opened.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum ChannelError {
    /// The ring is unusable.
    #[error(transparent)]
    Ring(#[from] RingError),
    /// The target or region is unusable.
    #[error(transparent)]
    Lookup(#[from] LookupError),
    /// Too many channels.
    #[error("too many channels {scope}: the limit is {limit}")]
    TooMany {
        /// "on this connection" or "on the server".
        scope: &'static str,
        /// The limit.
        limit: usize,
    },
    /// A capacity of 0, or one past the server's batch limit.
    #[error("a channel's capacity of {capacity} rows is not between 1 and {max}")]
    Capacity {
        /// Asked.
        capacity: usize,
        /// The server's batch limit.
        max: usize,
    },
}

/// What a client asks a channel to be.
#[derive(Debug)]
pub struct ChannelSpec {
    /// The ring, mapped and validated.
    pub ring: Ring,
    /// Where its rows go.
    pub region: Arc<Region>,
    /// What it serves.
    pub target: ChannelTarget,
    /// Most rows (ids, or positions) per request.
    pub capacity: usize,
    /// The connection it belongs to.
    pub owner: Owner,
}

/// An open channel.
#[derive(Debug)]
pub struct Channel {
    id: u64,
    owner: Owner,
    closed: Arc<AtomicBool>,
    ring: Arc<Ring>,
    served: Arc<AtomicU64>,
}

impl Channel {
    /// Its id.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Slots served so far.
    pub fn served(&self) -> u64 {
        self.served.load(Ordering::Relaxed)
    }

    fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.ring.mark_closed();
        futex::wake_all(self.ring.doorbell());
    }
}

/// Every open channel, with the limits on how many.
#[derive(Debug)]
pub struct Channels {
    open: Mutex<HashMap<u64, Arc<Channel>>>,
    next_id: AtomicU64,
    per_owner: usize,
    total: usize,
}

impl Channels {
    /// At most `per_owner` channels per connection and `total` in all.
    pub fn new(per_owner: usize, total: usize) -> Self {
        Self {
            open: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            per_owner,
            total,
        }
    }

    /// Channels open now.
    pub fn len(&self) -> usize {
        self.open.lock().len()
    }

    /// True when none is open.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Opens the channel `spec` describes, serving on `engine` with tasks on `runtime`.
    pub fn open(
        &self,
        engine: Arc<Engine>,
        runtime: tokio::runtime::Handle,
        spec: ChannelSpec,
    ) -> Result<Arc<Channel>, ChannelError> {
        let ChannelSpec {
            ring,
            region,
            target,
            capacity,
            owner,
        } = spec;
        let max = engine.config().max_batch_ids;
        if capacity == 0 || capacity > max {
            return Err(ChannelError::Capacity { capacity, max });
        }
        // The target must exist now (its requests are checked per slot too).
        match &target {
            ChannelTarget::Table(t) => drop(engine.table(t)?),
            ChannelTarget::Layer {
                group, layer_id, ..
            } => drop(engine.group(group)?.layer(*layer_id)?),
        }
        let mut open = self.open.lock();
        if open.len() >= self.total {
            return Err(ChannelError::TooMany {
                scope: "on the server",
                limit: self.total,
            });
        }
        if open.values().filter(|c| c.owner == owner).count() >= self.per_owner {
            return Err(ChannelError::TooMany {
                scope: "on this connection",
                limit: self.per_owner,
            });
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let channel = Arc::new(Channel {
            id,
            owner,
            closed: Arc::new(AtomicBool::new(false)),
            ring: Arc::new(ring),
            served: Arc::new(AtomicU64::new(0)),
        });
        let watcher = Watcher {
            engine,
            runtime,
            ring: channel.ring.clone(),
            region,
            target: Arc::new(target),
            capacity,
            closed: channel.closed.clone(),
            served: channel.served.clone(),
        };
        std::thread::Builder::new()
            .name(format!("channel-{id}"))
            .spawn(move || watcher.run())
            .map_err(|_| ChannelError::TooMany {
                scope: "(no thread could be started)",
                limit: open.len(),
            })?;
        open.insert(id, channel.clone());
        Ok(channel)
    }

    /// Closes channel `id` of `owner`; false if it has no such channel.
    pub fn close(&self, id: u64, owner: Owner) -> bool {
        let mut open = self.open.lock();
        match open.get(&id) {
            Some(c) if c.owner == owner => {
                c.close();
                open.remove(&id);
                true
            }
            _ => false,
        }
    }

    /// Whether `owner` has a channel open.
    pub fn owns(&self, owner: Owner) -> bool {
        self.open.lock().values().any(|c| c.owner == owner)
    }

    /// Closes every channel of `owner` (its connection closed).
    pub fn release_owner(&self, owner: Owner) -> usize {
        let mut open = self.open.lock();
        let before = open.len();
        open.retain(|_, c| {
            if c.owner == owner {
                c.close();
                false
            } else {
                true
            }
        });
        before - open.len()
    }
}

/// The thread watching one channel's ring.
struct Watcher {
    engine: Arc<Engine>,
    runtime: tokio::runtime::Handle,
    ring: Arc<Ring>,
    region: Arc<Region>,
    target: Arc<ChannelTarget>,
    capacity: usize,
    closed: Arc<AtomicBool>,
    served: Arc<AtomicU64>,
}

impl Watcher {
    fn run(self) {
        let mut busy_until = Instant::now() + SPIN;
        while !self.closed.load(Ordering::Acquire) {
            if self.take_all() {
                busy_until = Instant::now() + SPIN;
                continue;
            }
            if Instant::now() < busy_until {
                std::hint::spin_loop();
                continue;
            }
            // Sleep on the doorbell; re-check after announcing the sleep, so a submit that
            // saw no sleeper is not missed.
            let bell = self.ring.doorbell().load(Ordering::SeqCst);
            self.ring.server_sleeping().store(1, Ordering::SeqCst);
            if !self.ring.any_submitted() && !self.closed.load(Ordering::Acquire) {
                futex::wait(self.ring.doorbell(), bell, NAP);
            }
            self.ring.server_sleeping().store(0, Ordering::SeqCst);
            busy_until = Instant::now() + SPIN;
        }
    }

    /// Takes every submitted slot and serves it: a lone request right here on the watcher
    /// thread (no hop to a runtime worker: the common decode step), several as tasks on the
    /// runtime, in parallel. True if any was taken.
    fn take_all(&self) -> bool {
        let taken: Vec<(u32, ring::SlotRequest)> = (0..self.ring.slots())
            .filter_map(|slot| self.ring.take_request(slot).map(|r| (slot, r)))
            .collect();
        if let [(slot, request)] = taken.as_slice() {
            let seq = request.seq;
            let completion = self.runtime.block_on(serve_slot(
                &self.engine,
                &self.ring,
                &self.region,
                &self.target,
                self.capacity,
                request.clone(),
            ));
            self.ring.complete(*slot, seq, &completion);
            self.served.fetch_add(1, Ordering::Relaxed);
            return true;
        }
        let took = !taken.is_empty();
        for (slot, request) in taken {
            let (engine, ring, region, target) = (
                self.engine.clone(),
                self.ring.clone(),
                self.region.clone(),
                self.target.clone(),
            );
            let (capacity, served) = (self.capacity, self.served.clone());
            self.runtime.spawn(async move {
                let seq = request.seq;
                let completion =
                    serve_slot(&engine, &ring, &region, &target, capacity, request).await;
                ring.complete(slot, seq, &completion);
                served.fetch_add(1, Ordering::Relaxed);
            });
        }
        took
    }
}

async fn serve_slot(
    engine: &Engine,
    ring: &Ring,
    region: &Arc<Region>,
    target: &ChannelTarget,
    capacity: usize,
    request: ring::SlotRequest,
) -> Completion {
    let start = Instant::now();
    let source = match request::decode(&request, target, ring.payload_bytes(), capacity) {
        Ok(s) => s,
        Err(e) => return failed(&LookupError::from(e)),
    };
    let decoded = start.elapsed();
    let result = engine
        .lookup_into_region(region, request.out_offset, &source)
        .await;
    tracing::debug!(
        target: "engram_store::gpu_stages",
        rows = result.as_ref().map_or(0, |a| a.row_count),
        hits = result.as_ref().map_or(0, |a| a.gpu_hits),
        decode_us = decoded.as_micros() as u64,
        total_us = start.elapsed().as_micros() as u64,
        "channel slot"
    );
    engine.record_request(
        start.elapsed(),
        result.as_ref().ok().map(|a| (a.row_count, a.bytes_written)),
    );
    match result {
        Ok(a) => Completion {
            status: 0,
            rows: a.row_count as u32,
            gpu_hits: a.gpu_hits as u32,
            version: a.version,
            message: String::new(),
        },
        Err(e) => failed(&e),
    }
}

fn failed(e: &LookupError) -> Completion {
    Completion {
        status: crate::edge::status_code_of(e) as u32,
        message: e.to_string(),
        ..Completion::default()
    }
}
