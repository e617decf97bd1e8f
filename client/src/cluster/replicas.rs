//! Choosing a replica: one connection per node (lazy, so a dead node costs nothing until asked),
//! its requests in flight (the load the "least loaded of two random choices" compares), a
//! suspect mark after it timed out or was unreachable (tried last until it expires), and the
//! recent part latencies whose p95 is the hedge delay.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use engram_store_proto::v1::embedding_store_client::EmbeddingStoreClient;
use parking_lot::Mutex;
use rand::Rng;

use crate::error::ClientError;
use crate::security::Security;

/// The stub of one node (its token attached to every call).
pub(crate) type NodeStub = crate::client::Stub;

/// A node as the router sees it.
#[derive(Debug)]
pub(crate) struct NodeConn {
    pub(crate) id: String,
    pub(crate) stub: NodeStub,
    in_flight: AtomicUsize,
    suspect_until: Mutex<Option<Instant>>,
}

impl NodeConn {
    fn new(id: &str, addr: &str, security: &Security) -> Result<Self, ClientError> {
        let channel = security
            .endpoint(addr)?
            .connect_timeout(Duration::from_secs(1))
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(1))
            .keep_alive_timeout(Duration::from_secs(1))
            .keep_alive_while_idle(true)
            .initial_stream_window_size(Some(8 << 20))
            .initial_connection_window_size(Some(32 << 20))
            .connect_lazy();
        Ok(Self {
            id: id.to_string(),
            stub: EmbeddingStoreClient::with_interceptor(channel, security.bearer(addr)?)
                .max_decoding_message_size(usize::MAX)
                .max_encoding_message_size(usize::MAX),
            in_flight: AtomicUsize::new(0),
            suspect_until: Mutex::new(None),
        })
    }

    /// Requests in flight to the node.
    pub(crate) fn load(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Counts a request in flight until the guard drops.
    pub(crate) fn start(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(self.clone())
    }

    /// Marks the node suspect for `d`.
    pub(crate) fn suspect(&self, d: Duration) {
        *self.suspect_until.lock() = Some(Instant::now() + d);
    }

    /// Clears the suspect mark (it answered).
    pub(crate) fn healthy(&self) {
        *self.suspect_until.lock() = None;
    }

    /// True while the node is suspect.
    pub(crate) fn is_suspect(&self) -> bool {
        self.suspect_until
            .lock()
            .is_some_and(|t| Instant::now() < t)
    }
}

/// A request in flight to a node.
#[derive(Debug)]
pub(crate) struct InFlight(Arc<NodeConn>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Connections by (node id, address), all made with the same TLS and token settings.
#[derive(Debug, Default)]
pub(crate) struct Pool {
    nodes: Mutex<HashMap<(String, String), Arc<NodeConn>>>,
    security: Security,
}

impl Pool {
    /// A pool connecting with `security`.
    pub(crate) fn new(security: Security) -> Self {
        Self {
            nodes: Mutex::default(),
            security,
        }
    }

    /// The connection to node `id` at `addr`, made on first use.
    pub(crate) fn get(&self, id: &str, addr: &str) -> Result<Arc<NodeConn>, ClientError> {
        let mut nodes = self.nodes.lock();
        let key = (id.to_string(), addr.to_string());
        if let Some(c) = nodes.get(&key) {
            return Ok(c.clone());
        }
        let c = Arc::new(NodeConn::new(id, addr, &self.security)?);
        nodes.insert(key, c.clone());
        Ok(c)
    }
}

/// `candidates` in the order to try them: first the less loaded of two random healthy ones,
/// then the other healthy ones, then the suspects.
pub(crate) fn order(mut candidates: Vec<Arc<NodeConn>>) -> Vec<Arc<NodeConn>> {
    let mut rng = rand::rng();
    // Shuffle, then stable-partition healthy before suspect.
    for i in (1..candidates.len()).rev() {
        let j = rng.random_range(0..=i);
        candidates.swap(i, j);
    }
    candidates.sort_by_key(|c| c.is_suspect());
    let healthy = candidates.iter().filter(|c| !c.is_suspect()).count();
    if healthy >= 2 && candidates[1].load() < candidates[0].load() {
        candidates.swap(0, 1);
    }
    candidates
}

/// Recent part latencies and their p95.
#[derive(Debug)]
pub(crate) struct Latencies {
    recent: Mutex<VecDeque<u32>>,
    p95_us: AtomicU64,
    seen: AtomicU64,
}

const WINDOW: usize = 512;

impl Latencies {
    pub(crate) fn new(initial: Duration) -> Self {
        Self {
            recent: Mutex::new(VecDeque::with_capacity(WINDOW)),
            p95_us: AtomicU64::new(initial.as_micros() as u64),
            seen: AtomicU64::new(0),
        }
    }

    pub(crate) fn record(&self, d: Duration) {
        let us = u32::try_from(d.as_micros()).unwrap_or(u32::MAX);
        let n = self.seen.fetch_add(1, Ordering::Relaxed) + 1;
        let mut recent = self.recent.lock();
        if recent.len() == WINDOW {
            recent.pop_front();
        }
        recent.push_back(us);
        if n >= 20 && n.is_multiple_of(16) {
            let mut v: Vec<u32> = recent.iter().copied().collect();
            let k = (v.len() * 95 / 100).min(v.len() - 1);
            let (_, p95, _) = v.select_nth_unstable(k);
            self.p95_us.store(u64::from(*p95), Ordering::Relaxed);
        }
    }

    pub(crate) fn p95(&self) -> Duration {
        Duration::from_micros(self.p95_us.load(Ordering::Relaxed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn p95_follows_the_samples() {
        let l = Latencies::new(Duration::from_millis(50));
        for i in 0..1000u64 {
            l.record(Duration::from_micros(100 + i % 100));
        }
        let p = l.p95().as_micros();
        assert!((190..=200).contains(&p), "{p}");
    }

    #[tokio::test]
    async fn suspects_go_last_and_load_picks_between_two() {
        let pool = Pool::default();
        let a = pool.get("a", "127.0.0.1:1").expect("a");
        let b = pool.get("b", "127.0.0.1:2").expect("b");
        let c = pool.get("c", "127.0.0.1:3").expect("c");
        c.suspect(Duration::from_secs(60));
        let _busy = a.start();
        for _ in 0..20 {
            let o = order(vec![a.clone(), b.clone(), c.clone()]);
            assert_eq!(o[2].id, "c");
            assert_eq!(o[0].id, "b", "the less loaded of the two healthy ones");
        }
    }
}
