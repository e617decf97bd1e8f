//! Prefetches run in the background, bounded: the rows of prefetches queued or running are
//! capped (beyond the cap a prefetch is dropped and counted, since a prefetch is only a hint),
//! and only a few run at once, so a flood of prefetches cannot grow the server's memory or
//! starve lookups.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::Semaphore;

/// The queue.
#[derive(Debug)]
pub(crate) struct PrefetchQueue {
    rows: Arc<Semaphore>,
    running: Arc<Semaphore>,
    max_rows: usize,
    dropped_rows: AtomicU64,
    dropped_requests: AtomicU64,
}

impl PrefetchQueue {
    pub(crate) fn new(max_rows: usize, tasks: usize) -> Self {
        let max_rows = max_rows.clamp(1, Semaphore::MAX_PERMITS);
        Self {
            rows: Arc::new(Semaphore::new(max_rows)),
            running: Arc::new(Semaphore::new(tasks.max(1))),
            max_rows,
            dropped_rows: AtomicU64::new(0),
            dropped_requests: AtomicU64::new(0),
        }
    }

    /// Runs `work` (a prefetch of `rows` rows) in the background if the queue has room; returns
    /// false, counting the drop, if it has not.
    pub(crate) fn submit(
        &self,
        rows: usize,
        work: impl Future<Output = ()> + Send + 'static,
    ) -> bool {
        let Ok(n) = u32::try_from(rows.clamp(1, self.max_rows)) else {
            return false;
        };
        let Ok(queued) = self.rows.clone().try_acquire_many_owned(n) else {
            self.dropped_rows.fetch_add(rows as u64, Ordering::Relaxed);
            self.dropped_requests.fetch_add(1, Ordering::Relaxed);
            return false;
        };
        let running = self.running.clone();
        tokio::spawn(async move {
            let Ok(_slot) = running.acquire_owned().await else {
                return;
            };
            work.await;
            drop(queued);
        });
        true
    }

    /// (rows, requests) dropped so far.
    pub(crate) fn dropped(&self) -> (u64, u64) {
        (
            self.dropped_rows.load(Ordering::Relaxed),
            self.dropped_requests.load(Ordering::Relaxed),
        )
    }

    /// Rows queued or running now.
    pub(crate) fn queued_rows(&self) -> usize {
        self.max_rows - self.rows.available_permits()
    }
}
