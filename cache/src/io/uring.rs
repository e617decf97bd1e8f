//! The io_uring engine: one submission thread owns a ring, keeps up to `queue_depth` reads in
//! flight and completes each batch as its reads come back. The misses of a lookup reach the
//! kernel together, and concurrent lookups share the queue.

use std::collections::VecDeque;
use std::io;

use io_uring::{IoUring, opcode, types};

use super::batch::submit;
use super::completion::finish_read;
use super::{
    AlignedBuf, BUFFER_ALIGN, BatchFuture, BufferPool, DEFAULT_FREE_BUFFERS, IoEngine,
    IoEngineConfig, Pending, ReadFailure, ReadOp,
};

/// io_uring reads from one submission thread.
#[derive(Debug)]
pub struct UringEngine {
    tx: crossbeam_channel::Sender<Pending>,
    queue_depth: usize,
}

impl UringEngine {
    /// Creates the ring (failing where io_uring is unavailable) and starts its thread.
    pub fn start(config: IoEngineConfig) -> io::Result<Self> {
        let queue_depth = config.queue_depth.clamp(1, 4096);
        let ring = IoUring::new(queue_depth.next_power_of_two() as u32)?;
        // Probe with a no-op so a seccomp filter that allows setup but not enter is caught here.
        let mut probe_ring = ring;
        probe(&mut probe_ring)?;
        let (tx, rx) = crossbeam_channel::unbounded::<Pending>();
        std::thread::Builder::new()
            .name("io-uring".into())
            .spawn(move || {
                run(
                    probe_ring,
                    rx,
                    queue_depth,
                    BufferPool::new(DEFAULT_FREE_BUFFERS),
                )
            })?;
        Ok(Self { tx, queue_depth })
    }
}

fn probe(ring: &mut IoUring) -> io::Result<()> {
    let nop = opcode::Nop::new().build().user_data(u64::MAX);
    // SAFETY: a Nop references no memory.
    unsafe { ring.submission().push(&nop) }
        .map_err(|_| io::Error::other("io_uring submission queue full at start"))?;
    ring.submit_and_wait(1)?;
    ring.completion().for_each(drop);
    Ok(())
}

/// A read the kernel is working on: its buffer must stay alive until its completion arrives.
struct InFlight {
    pending: Pending,
    buf: AlignedBuf,
}

fn run(
    mut ring: IoUring,
    rx: crossbeam_channel::Receiver<Pending>,
    queue_depth: usize,
    buffers: std::sync::Arc<BufferPool>,
) {
    let mut slots: Vec<Option<InFlight>> = (0..queue_depth).map(|_| None).collect();
    let mut free: Vec<usize> = (0..queue_depth).rev().collect();
    let mut backlog: VecDeque<Pending> = VecDeque::new();
    let mut in_flight = 0usize;
    loop {
        if in_flight == 0 && backlog.is_empty() {
            match rx.recv() {
                Ok(p) => backlog.push_back(p),
                Err(_) => return, // engine dropped and nothing left to do
            }
        }
        backlog.extend(rx.try_iter());

        while let Some(slot) = free.last().copied() {
            let Some(pending) = backlog.pop_front() else {
                break;
            };
            let mut buf = buffers.take(pending.op.len, BUFFER_ALIGN);
            let Ok(len) = u32::try_from(pending.op.len) else {
                let len = pending.op.len;
                pending.complete(Err(ReadFailure::TooLarge(len)));
                continue;
            };
            let entry = opcode::Read::new(types::Fd(pending.op.file.fd()), buf.as_mut_ptr(), len)
                .offset(pending.op.offset)
                .build()
                .user_data(slot as u64);
            // SAFETY: the buffer and the file are owned by the InFlight stored in `slots[slot]`
            // below and are only released after this entry's completion has been reaped.
            let pushed = unsafe { ring.submission().push(&entry) };
            if pushed.is_err() {
                // Cannot happen (ring entries >= queue_depth), but never lose a read.
                backlog.push_front(pending);
                break;
            }
            free.pop();
            slots[slot] = Some(InFlight { pending, buf });
            in_flight += 1;
        }

        if in_flight == 0 {
            continue;
        }
        if let Err(e) = ring.submit_and_wait(1) {
            if e.kind() == io::ErrorKind::Interrupted || e.raw_os_error() == Some(libc::EBUSY) {
                continue;
            }
            // The ring is broken: fail everything in flight and queued rather than hang, and
            // stop: the engine answers later reads with an error. The kernel may still own the
            // buffers of reads in flight (and complete them late under their slot numbers), so
            // neither a buffer nor a slot is reused: the buffers are leaked on purpose, and the
            // ring is dropped (its teardown waits for or cancels what the kernel still holds).
            for slot in slots.iter_mut() {
                if let Some(InFlight { pending, buf }) = slot.take() {
                    std::mem::forget(buf);
                    pending.complete(Err(ReadFailure::EngineStopped));
                }
            }
            for p in backlog.drain(..) {
                p.complete(Err(ReadFailure::EngineStopped));
            }
            for p in rx.try_iter() {
                p.complete(Err(ReadFailure::EngineStopped));
            }
            return;
        }
        for cqe in ring.completion() {
            let slot = cqe.user_data() as usize;
            let Some(InFlight { pending, buf }) = slots.get_mut(slot).and_then(Option::take) else {
                continue;
            };
            free.push(slot);
            in_flight -= 1;
            let res = cqe.result();
            let outcome = if res < 0 {
                Err(ReadFailure::Os(-res))
            } else {
                Ok(res as usize)
            };
            let result = finish_read(&pending.op, outcome, buf);
            pending.complete(result);
        }
    }
}

impl IoEngine for UringEngine {
    fn name(&self) -> &'static str {
        "io_uring"
    }

    fn queue_depth(&self) -> usize {
        self.queue_depth
    }

    fn read_batch(&self, ops: Vec<ReadOp>) -> BatchFuture {
        submit(&self.tx, ops)
    }
}
