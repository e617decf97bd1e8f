//! The NVMe tier: a table's data files, read with direct I/O. It holds every row and never
//! promotes (the cascade offers what it read to the tiers above).
//!
//! A batch of rows is grouped by read unit (rows of one block are read once; a row larger than
//! a block is one unit of several blocks); a unit already being read by another lookup is
//! joined, not read again ([`inflight`]); the units this lookup leads go to the I/O engine
//! together, in a task of their own so that lookups that joined them are answered even if the
//! leader is cancelled. Every block is verified against its checksum before any row of it is
//! served; a failed read is classified transient or not ([`TierError::is_transient`]).

mod inflight;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use futures::future::BoxFuture;

use self::inflight::{InflightUnits, Joined, UnitResult};
use super::{Offer, Tier, TierError, TierKind, TierStats, Want};
use crate::io::{AlignedBuf, DirectFile, IoEngine, ReadFailure, ReadOp};
use crate::{BlockSums, LatencyHistogram, RowLayout};

/// Bits of a unit key that hold the unit index within its file.
const UNIT_BITS: u32 = 44;

/// One data file of a table: block 0 is its header, rows are packed from block 1.
#[derive(Debug)]
pub struct NvmeFile {
    /// The file, opened for direct I/O where possible.
    pub file: Arc<DirectFile>,
    /// The checksum of every data block.
    pub sums: BlockSums,
    /// Rows it holds.
    pub rows: u64,
}

/// The NVMe tier of one table.
#[derive(Debug, Clone)]
pub struct NvmeTier {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    files: Vec<NvmeFile>,
    layout: RowLayout,
    rows_per_file: u64,
    rows: u64,
    io: Arc<dyn IoEngine>,
    inflight: InflightUnits,
    counters: Counters,
}

#[derive(Debug, Default)]
struct Counters {
    reads: AtomicU64,
    bytes_read: AtomicU64,
    rows: AtomicU64,
    row_bytes: AtomicU64,
    checksum_errors: AtomicU64,
    io_errors: AtomicU64,
    joined_reads: AtomicU64,
    latency: LatencyHistogram,
}

/// Where a lookup gets a unit's bytes from.
enum UnitSource {
    /// Its own batch of reads, at this index.
    Led(usize),
    /// The read another lookup leads.
    Joined(tokio::sync::oneshot::Receiver<UnitResult>),
}

/// A row to read: its unit, its offset in the unit, and where it goes.
#[derive(Clone, Copy)]
struct RowRead {
    unit: u64,
    offset: usize,
    place: usize,
}

fn add(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

impl NvmeTier {
    /// The tier over `files` (in row order; every file but the last holds the same row count)
    /// of rows packed by `layout`, read through `io`.
    pub fn new(files: Vec<NvmeFile>, layout: RowLayout, io: Arc<dyn IoEngine>) -> Self {
        let rows_per_file = files.first().map_or(1, |f| f.rows.max(1));
        let rows = files.iter().map(|f| f.rows).sum();
        Self {
            inner: Arc::new(Inner {
                files,
                layout,
                rows_per_file,
                rows,
                io,
                inflight: InflightUnits::default(),
                counters: Counters::default(),
            }),
        }
    }

    /// The I/O engine's name.
    pub fn io_engine_name(&self) -> &'static str {
        self.inner.io.name()
    }

    /// Reads in flight now.
    pub fn reads_in_flight(&self) -> usize {
        self.inner.inflight.len()
    }

    /// Bytes of checksums held in memory.
    pub fn checksum_memory_bytes(&self) -> usize {
        self.inner.files.iter().map(|f| f.sums.memory_bytes()).sum()
    }
}

impl Inner {
    /// Unit key of `row` and the row's byte offset in the unit.
    fn unit_of(&self, row: u64) -> (u64, usize) {
        let file = row / self.rows_per_file;
        let (unit, offset) = self.layout.locate(row - file * self.rows_per_file);
        ((file << UNIT_BITS) | unit, offset)
    }

    /// (data file, first block) of a unit.
    fn unit_position(&self, unit: u64) -> (u32, u64) {
        let file = (unit >> UNIT_BITS) as u32;
        let block = (unit & ((1 << UNIT_BITS) - 1)) * self.layout.unit_blocks();
        (file, block)
    }

    async fn serve(
        self: &Arc<Self>,
        want: Want<'_>,
        out: &mut [u8],
        missed: &mut Vec<usize>,
    ) -> Result<(), TierError> {
        let start = Instant::now();
        let rb = self.layout.row_bytes as usize;
        let mut reads: Vec<RowRead> = Vec::with_capacity(want.len());
        for (k, &row) in want.ids.iter().enumerate() {
            if row >= self.rows {
                missed.push(k);
                continue;
            }
            let (unit, offset) = self.unit_of(row);
            reads.push(RowRead {
                unit,
                offset,
                place: want.place(k),
            });
        }
        reads.sort_unstable_by_key(|r| (r.unit, r.offset));

        // Per distinct unit: join a read in flight, or lead it; the led ones go as one batch.
        let mut units: Vec<(u64, UnitSource)> = Vec::new();
        let mut led = Vec::new();
        for r in &reads {
            if units.last().is_some_and(|(u, _)| *u == r.unit) {
                continue;
            }
            match self.inflight.join_or_lead(r.unit) {
                Joined::Wait(rx) => {
                    add(&self.counters.joined_reads, 1);
                    units.push((r.unit, UnitSource::Joined(rx)));
                }
                Joined::Lead => {
                    units.push((r.unit, UnitSource::Led(led.len())));
                    led.push(r.unit);
                }
            }
        }
        let mut led_results = if led.is_empty() {
            Vec::new()
        } else {
            self.submit_reads(led).await.unwrap_or_default()
        };

        let mut failure = None;
        let mut i = 0;
        for (unit, source) in units {
            let result = match source {
                UnitSource::Led(k) => led_results.get_mut(k).and_then(Option::take),
                UnitSource::Joined(rx) => rx.await.ok(),
            };
            let result =
                result.unwrap_or_else(|| Err(self.read_error(unit, ReadFailure::EngineStopped)));
            let first = i;
            while i < reads.len() && reads[i].unit == unit {
                i += 1;
            }
            match result {
                Ok(buf) => {
                    for r in &reads[first..i] {
                        out[r.place * rb..(r.place + 1) * rb]
                            .copy_from_slice(&buf[r.offset..r.offset + rb]);
                    }
                }
                Err(e) => {
                    failure.get_or_insert(e);
                }
            }
        }
        let n = reads.len() as u64;
        self.counters.latency.record(start.elapsed());
        match failure {
            Some(e) => Err(e),
            None => {
                add(&self.counters.rows, n);
                add(&self.counters.row_bytes, n * rb as u64);
                Ok(())
            }
        }
    }

    /// Reads the units `led` (registered in flight by the caller) as one batch in a task of its
    /// own, so that lookups that joined them are answered even if the caller goes away; the
    /// caller gets every unit's verified result, in order.
    fn submit_reads(
        self: &Arc<Self>,
        led: Vec<u64>,
    ) -> tokio::sync::oneshot::Receiver<Vec<Option<UnitResult>>> {
        let unit_bytes = self.layout.unit_bytes();
        let block_size = u64::from(self.layout.block_size);
        let ops: Vec<ReadOp> = led
            .iter()
            .map(|&unit| {
                let file = &self.files[(unit >> UNIT_BITS) as usize];
                let unit_index = unit & ((1 << UNIT_BITS) - 1);
                ReadOp {
                    file: file.file.clone(),
                    // Block 0 is the file's header.
                    offset: block_size + unit_index * unit_bytes,
                    len: unit_bytes as usize,
                }
            })
            .collect();
        let batch = self.io.read_batch(ops);
        let this = Arc::clone(self);
        let (tx, rx) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            let results: Vec<Option<UnitResult>> = match batch.await {
                Ok(results) => led
                    .into_iter()
                    .zip(results)
                    .map(|(unit, result)| {
                        let verified = this.verify_unit(unit, result);
                        this.inflight.complete(unit, &verified);
                        Some(verified)
                    })
                    .collect(),
                Err(stopped) => led
                    .into_iter()
                    .map(|unit| {
                        let err = Err(this.read_error(unit, stopped));
                        this.inflight.complete(unit, &err);
                        Some(err)
                    })
                    .collect(),
            };
            // The caller may have gone away (its request was cancelled).
            let _ = tx.send(results);
        });
        rx
    }

    fn read_error(&self, unit: u64, cause: ReadFailure) -> TierError {
        add(&self.counters.io_errors, 1);
        let (file, block) = self.unit_position(unit);
        TierError::Read { file, block, cause }
    }

    /// The unit's bytes if every block matches its checksum.
    fn verify_unit(&self, unit: u64, result: Result<AlignedBuf, ReadFailure>) -> UnitResult {
        let buf = result.map_err(|cause| self.read_error(unit, cause))?;
        add(&self.counters.reads, 1);
        add(&self.counters.bytes_read, buf.len() as u64);
        let (file, first_block) = self.unit_position(unit);
        let sums = &self.files[file as usize].sums;
        let bs = self.layout.block_size as usize;
        for (k, block) in buf.chunks_exact(bs).enumerate() {
            let b = first_block + k as u64;
            let ok = usize::try_from(b).is_ok_and(|b| sums.verify(b, block));
            if !ok {
                add(&self.counters.checksum_errors, 1);
                return Err(TierError::Corrupt { file, block: b });
            }
        }
        Ok(Arc::new(buf))
    }
}

impl Tier for NvmeTier {
    fn kind(&self) -> TierKind {
        TierKind::Nvme
    }

    fn serve<'a>(
        &'a self,
        want: Want<'a>,
        out: &'a mut [u8],
        missed: &'a mut Vec<usize>,
    ) -> BoxFuture<'a, Result<(), TierError>> {
        Box::pin(self.inner.serve(want, out, missed))
    }

    /// Holds every row already: offers are ignored.
    fn offer(&self, _offer: Offer<'_>) {}

    fn contains(&self, row: u64) -> bool {
        row < self.inner.rows
    }

    fn stats(&self) -> TierStats {
        let c = &self.inner.counters;
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let failed = load(&c.io_errors) + load(&c.checksum_errors);
        TierStats {
            hits: load(&c.rows),
            misses: failed,
            bytes: load(&c.row_bytes),
            resident_bytes: load(&c.bytes_read),
            checksum_errors: load(&c.checksum_errors),
            io_errors: load(&c.io_errors),
            reads: load(&c.reads),
            joined_reads: load(&c.joined_reads),
            reads_in_flight: self.reads_in_flight() as u64,
            fixed_bytes: self.checksum_memory_bytes() as u64,
            ..Default::default()
        }
        .with_latency(&c.latency)
    }

    fn reset_stats(&self) {
        let c = &self.inner.counters;
        for a in [
            &c.reads,
            &c.bytes_read,
            &c.rows,
            &c.row_bytes,
            &c.checksum_errors,
            &c.io_errors,
            &c.joined_reads,
        ] {
            a.store(0, Ordering::Relaxed);
        }
        c.latency.reset();
    }
}
