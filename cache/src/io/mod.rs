//! Aligned block reads from table files, submitted in batches: the NVMe tier's I/O engines.
//!
//! An [`IoEngine`] takes a batch of [`ReadOp`]s (file, aligned offset, aligned length), hands
//! them to the kernel together and resolves once all have completed, with one result per op in
//! op order (a [`ReadFailure`] for each op that failed). Two engines, one file each: [`UringEngine`] (io_uring, queue depth configurable) and
//! [`PreadEngine`] (a thread pool of blocking `pread`s), picked by [`IoEngineKind`]; `Auto` takes
//! io_uring and falls back to pread where the kernel or a seccomp filter refuses io_uring.

mod aligned;
mod batch;
mod buffer_pool;
mod completion;
mod file;
mod psync;
mod read_failure;
mod uring;

use std::io;
use std::sync::Arc;

pub use aligned::AlignedBuf;
pub(crate) use batch::Pending;
pub use batch::{BatchFuture, BatchResults};
pub use buffer_pool::{BufferPool, DEFAULT_FREE_BUFFERS};
pub use file::DirectFile;
pub use psync::PreadEngine;
pub use read_failure::ReadFailure;
pub use uring::UringEngine;

/// Buffers handed to the kernel are aligned to this (a page; a multiple of every DIO memory
/// alignment seen in practice).
pub const BUFFER_ALIGN: usize = 4096;

/// One read: `len` bytes at `offset` of `file`, both multiples of the file's DIO alignment.
#[derive(Debug, Clone)]
pub struct ReadOp {
    /// File to read.
    pub file: Arc<DirectFile>,
    /// Byte offset.
    pub offset: u64,
    /// Bytes to read.
    pub len: usize,
}

/// Which engine serves reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IoEngineKind {
    /// io_uring when the kernel allows it, else pread.
    #[default]
    Auto,
    /// io_uring only; fails to start where it is unavailable.
    IoUring,
    /// A pread thread pool.
    Pread,
}

impl std::str::FromStr for IoEngineKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(Self::Auto),
            "io_uring" | "io-uring" | "uring" => Ok(Self::IoUring),
            "pread" => Ok(Self::Pread),
            other => Err(format!(
                "unknown io engine {other:?}: expected auto, io_uring or pread"
            )),
        }
    }
}

/// Settings shared by the engines.
#[derive(Debug, Clone, Copy)]
pub struct IoEngineConfig {
    /// Reads in flight at once per engine (io_uring queue depth, or pread threads). Default 128.
    pub queue_depth: usize,
}

impl Default for IoEngineConfig {
    fn default() -> Self {
        Self { queue_depth: 128 }
    }
}

/// Submits batches of aligned reads.
pub trait IoEngine: Send + Sync + std::fmt::Debug {
    /// `"io_uring"` or `"pread"`.
    fn name(&self) -> &'static str;
    /// Reads in flight at most.
    fn queue_depth(&self) -> usize;
    /// Submits every op together; the future yields one result per op, in op order.
    fn read_batch(&self, ops: Vec<ReadOp>) -> BatchFuture;
}

/// Starts the engine `kind` asks for.
pub fn start_engine(kind: IoEngineKind, config: IoEngineConfig) -> io::Result<Arc<dyn IoEngine>> {
    match kind {
        IoEngineKind::IoUring => Ok(Arc::new(UringEngine::start(config)?)),
        IoEngineKind::Pread => Ok(Arc::new(PreadEngine::start(config)?)),
        IoEngineKind::Auto => match UringEngine::start(config) {
            Ok(engine) => Ok(Arc::new(engine)),
            Err(_) => Ok(Arc::new(PreadEngine::start(config)?)),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample_file(dir: &std::path::Path) -> Arc<DirectFile> {
        let p = dir.join("data");
        let bytes: Vec<u8> = (0..64 * 4096u32)
            .map(|i| (i / 4096) as u8 ^ (i as u8))
            .collect();
        std::fs::write(&p, bytes).expect("write sample");
        Arc::new(DirectFile::open(&p, true).expect("open sample"))
    }

    fn check_engine(engine: &dyn IoEngine) {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = sample_file(dir.path());
        let blocks = [63u64, 0, 17, 17, 5, 40];
        let ops = blocks
            .iter()
            .map(|&b| ReadOp {
                file: file.clone(),
                offset: b * 4096,
                len: 4096,
            })
            .collect();
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        let results = rt.block_on(engine.read_batch(ops)).expect("engine alive");
        assert_eq!(results.len(), blocks.len());
        for (b, r) in blocks.iter().zip(results) {
            let buf = r.expect("read ok");
            for (i, &x) in buf.iter().enumerate().step_by(97) {
                let pos = *b as u32 * 4096 + i as u32;
                assert_eq!(x, (pos / 4096) as u8 ^ (pos as u8), "block {b} byte {i}");
            }
        }
        // A read past the end is an error for that op only.
        let ops = vec![
            ReadOp {
                file: file.clone(),
                offset: 64 * 4096,
                len: 4096,
            },
            ReadOp {
                file,
                offset: 4096,
                len: 4096,
            },
        ];
        let results = rt.block_on(engine.read_batch(ops)).expect("engine alive");
        assert!(results[0].is_err());
        assert!(results[1].is_ok());
    }

    #[test]
    fn pread_engine_reads_blocks() {
        let engine = PreadEngine::start(IoEngineConfig { queue_depth: 4 }).expect("start");
        check_engine(&engine);
    }

    #[test]
    fn uring_engine_reads_blocks() {
        match UringEngine::start(IoEngineConfig { queue_depth: 4 }) {
            Ok(engine) => check_engine(&engine),
            Err(e) => println!("SKIP: io_uring unavailable here ({e})"),
        }
    }
}
