//! Completion of a batch of reads: each engine completes ops one by one, in any order, and the
//! last completion resolves the batch's future with the results in op order.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};

use parking_lot::Mutex;
use tokio::sync::oneshot;

use super::{AlignedBuf, ReadOp};

type Results = Vec<io::Result<AlignedBuf>>;

/// Shared state of one submitted batch.
pub(crate) struct Batch {
    results: Mutex<Vec<Option<io::Result<AlignedBuf>>>>,
    remaining: AtomicUsize,
    done: Mutex<Option<oneshot::Sender<Results>>>,
}

/// One op of a batch on its way to the kernel.
pub(crate) struct Pending {
    pub(crate) batch: std::sync::Arc<Batch>,
    pub(crate) index: usize,
    pub(crate) op: ReadOp,
}

impl Batch {
    /// A batch of `ops` and the future that resolves when all of them have completed.
    pub(crate) fn start(ops: Vec<ReadOp>) -> (Vec<Pending>, BatchFuture) {
        let (tx, rx) = oneshot::channel();
        let n = ops.len();
        let batch = std::sync::Arc::new(Batch {
            results: Mutex::new((0..n).map(|_| None).collect()),
            remaining: AtomicUsize::new(n),
            done: Mutex::new(Some(tx)),
        });
        if n == 0 {
            batch.finish();
        }
        let pending = ops
            .into_iter()
            .enumerate()
            .map(|(index, op)| Pending {
                batch: batch.clone(),
                index,
                op,
            })
            .collect();
        (pending, BatchFuture { rx })
    }

    /// Records the result of op `index`; the last one resolves the batch.
    pub(crate) fn complete(&self, index: usize, result: io::Result<AlignedBuf>) {
        self.results.lock()[index] = Some(result);
        if self.remaining.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.finish();
        }
    }

    fn finish(&self) {
        let results = std::mem::take(&mut *self.results.lock())
            .into_iter()
            .map(|r| r.unwrap_or_else(|| Err(io::Error::other("read was never completed"))))
            .collect();
        if let Some(tx) = self.done.lock().take() {
            // The receiver may be gone (request cancelled); then nobody wants the rows.
            let _ = tx.send(results);
        }
    }
}

impl Pending {
    /// Completes this op with `result`.
    pub(crate) fn complete(self, result: io::Result<AlignedBuf>) {
        self.batch.complete(self.index, result);
    }
}

/// Resolves to one result per op, in op order; `Err` only if the engine shut down mid-batch.
#[derive(Debug)]
pub struct BatchFuture {
    rx: oneshot::Receiver<Results>,
}

impl BatchFuture {
    /// Blocks the current (non-async) thread until the batch completes.
    pub fn wait(self) -> io::Result<Results> {
        self.rx
            .blocking_recv()
            .map_err(|_| io::Error::other("io engine stopped before the batch completed"))
    }
}

impl Future for BatchFuture {
    type Output = io::Result<Results>;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.rx).poll(cx).map(|r| {
            r.map_err(|_| io::Error::other("io engine stopped before the batch completed"))
        })
    }
}
