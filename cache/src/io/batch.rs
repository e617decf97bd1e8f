//! Completion of a batch of reads: each engine completes ops one by one, in any order, and the
//! last completion resolves the batch's future with the results in op order. Both engines hand
//! a batch to their threads the same way ([`submit`]).

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};

use parking_lot::Mutex;
use tokio::sync::oneshot;

use super::{AlignedBuf, ReadFailure, ReadOp};

/// One result per op of a batch, in op order.
pub type BatchResults = Vec<Result<AlignedBuf, ReadFailure>>;

/// Shared state of one submitted batch.
pub(crate) struct Batch {
    results: Mutex<Vec<Option<Result<AlignedBuf, ReadFailure>>>>,
    remaining: AtomicUsize,
    done: Mutex<Option<oneshot::Sender<BatchResults>>>,
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
    pub(crate) fn complete(&self, index: usize, result: Result<AlignedBuf, ReadFailure>) {
        self.results.lock()[index] = Some(result);
        if self.remaining.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.finish();
        }
    }

    fn finish(&self) {
        let results = std::mem::take(&mut *self.results.lock())
            .into_iter()
            .map(|r| r.unwrap_or(Err(ReadFailure::EngineStopped)))
            .collect();
        if let Some(tx) = self.done.lock().take() {
            // The receiver may be gone (request cancelled); then nobody wants the rows.
            let _ = tx.send(results);
        }
    }
}

impl Pending {
    /// Completes this op with `result`.
    pub(crate) fn complete(self, result: Result<AlignedBuf, ReadFailure>) {
        self.batch.complete(self.index, result);
    }
}

/// Hands every op of a new batch to an engine's threads through `tx`; ops the engine can no
/// longer take (its threads are gone) complete at once with [`ReadFailure::EngineStopped`].
pub(crate) fn submit(tx: &crossbeam_channel::Sender<Pending>, ops: Vec<ReadOp>) -> BatchFuture {
    let (pending, future) = Batch::start(ops);
    for p in pending {
        if let Err(crossbeam_channel::SendError(p)) = tx.send(p) {
            p.complete(Err(ReadFailure::EngineStopped));
        }
    }
    future
}

/// Resolves to one result per op, in op order (ops the engine dropped fail with
/// [`ReadFailure::EngineStopped`]).
#[derive(Debug)]
pub struct BatchFuture {
    rx: oneshot::Receiver<BatchResults>,
}

impl BatchFuture {
    /// Blocks the current (non-async) thread until the batch completes.
    pub fn wait(self) -> Result<BatchResults, ReadFailure> {
        self.rx
            .blocking_recv()
            .map_err(|_| ReadFailure::EngineStopped)
    }
}

impl Future for BatchFuture {
    type Output = Result<BatchResults, ReadFailure>;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.rx)
            .poll(cx)
            .map(|r| r.map_err(|_| ReadFailure::EngineStopped))
    }
}
