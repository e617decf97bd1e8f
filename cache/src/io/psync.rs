//! The pread engine: a pool of threads each doing blocking `pread`s, as many as the queue depth.
//! The fallback where io_uring is unavailable (old kernels, container seccomp filters).

use std::io;
use std::os::unix::fs::FileExt;

use super::batch::submit;
use super::completion::{RawOutcome, finish_read};
use super::{
    AlignedBuf, BUFFER_ALIGN, BatchFuture, BufferPool, DEFAULT_FREE_BUFFERS, IoEngine,
    IoEngineConfig, Pending, ReadFailure, ReadOp,
};

/// Blocking reads on a thread pool.
#[derive(Debug)]
pub struct PreadEngine {
    tx: crossbeam_channel::Sender<Pending>,
    threads: usize,
}

impl PreadEngine {
    /// Starts `config.queue_depth` reader threads (at least one).
    pub fn start(config: IoEngineConfig) -> io::Result<Self> {
        let threads = config.queue_depth.max(1);
        let (tx, rx) = crossbeam_channel::unbounded::<Pending>();
        let buffers = BufferPool::new(DEFAULT_FREE_BUFFERS);
        for i in 0..threads {
            let rx = rx.clone();
            let buffers = buffers.clone();
            std::thread::Builder::new()
                .name(format!("pread-{i}"))
                .spawn(move || {
                    while let Ok(pending) = rx.recv() {
                        let result = read_exact_at(&pending.op, &buffers);
                        pending.complete(result);
                    }
                })?;
        }
        Ok(Self { tx, threads })
    }
}

fn read_exact_at(
    op: &ReadOp,
    buffers: &std::sync::Arc<BufferPool>,
) -> Result<AlignedBuf, ReadFailure> {
    let mut buf = buffers.take(op.len, BUFFER_ALIGN);
    let outcome = read_fully(op, &mut buf);
    finish_read(op, outcome, buf)
}

/// Reads until `op.len` bytes or the end of the file; the bytes read, or the errno.
fn read_fully(op: &ReadOp, buf: &mut [u8]) -> RawOutcome {
    let file = op.file.as_file();
    let mut done = 0;
    while done < op.len {
        match file.read_at(&mut buf[done..op.len], op.offset + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(ReadFailure::from(e)),
        }
    }
    Ok(done)
}

impl IoEngine for PreadEngine {
    fn name(&self) -> &'static str {
        "pread"
    }

    fn queue_depth(&self) -> usize {
        self.threads
    }

    fn read_batch(&self, ops: Vec<ReadOp>) -> BatchFuture {
        submit(&self.tx, ops)
    }
}
