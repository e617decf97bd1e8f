//! One table being served: its files, its RAM cache and the lookup path.
//!
//! A lookup checks ids, copies cache hits straight into the response buffer, groups the misses by
//! read unit (rows of one block are read once), joins reads already in flight or submits its own
//! together to the I/O engine, verifies each block's checksum, copies the missed rows into place
//! (duplicates repeated, request order kept) and offers them to the cache.
//!
//! [`ServedTable::lookup_deduped`] serves a batch already reduced to distinct ids (the n-gram
//! path): each distinct row is fetched once into its first output position and then copied to
//! the other positions that want it.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use engram_store_cache::io::{IoEngine, ReadOp};
use engram_store_cache::{RowCache, RowCacheBuilder};

use super::dedup::DedupedIds;
use super::error::LookupError;
use super::inflight::{InflightUnits, Joined, UnitResult};
use super::tier_stats::{DiskStats, RamStats, add};
use crate::table::{Manifest, OpenTable, RowLayout};

/// Bits of a unit key that hold the unit index within its file.
const UNIT_BITS: u32 = 44;

/// A table version opened for serving with its RAM tier.
pub struct ServedTable {
    table: OpenTable,
    layout: RowLayout,
    rows_per_file: u64,
    cache: Option<RowCache>,
    #[cfg(feature = "cuda")]
    gpu: Option<engram_store_cache::gpu::GpuTier>,
    io: Arc<dyn IoEngine>,
    inflight: InflightUnits,
    /// NVMe-tier counters.
    pub disk_stats: DiskStats,
    /// RAM-tier counters (besides the cache's own).
    pub ram_stats: RamStats,
}

impl std::fmt::Debug for ServedTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServedTable")
            .field("name", &self.table.manifest.name)
            .field("version", &self.table.manifest.version)
            .field("cache", &self.cache)
            .finish()
    }
}

/// Where a lookup gets a unit's bytes from.
enum UnitSource {
    /// Its own batch of reads, at this index.
    Led(usize),
    /// The read another lookup leads.
    Joined(tokio::sync::oneshot::Receiver<UnitResult>),
}

/// Where the rows of one unit go: (unit key, row id, output position).
#[derive(Clone, Copy)]
struct Miss {
    unit: u64,
    row: u64,
    position: usize,
}

impl ServedTable {
    /// Serves `table` with a RAM cache built by `cache` (None: no RAM tier) through `io`.
    pub fn new(table: OpenTable, cache: Option<RowCacheBuilder>, io: Arc<dyn IoEngine>) -> Self {
        let layout = table.manifest.layout();
        let rows_per_file = table.files.first().map_or(1, |f| f.rows.max(1));
        Self {
            layout,
            rows_per_file,
            cache: cache.map(RowCacheBuilder::build),
            #[cfg(feature = "cuda")]
            gpu: None,
            io,
            inflight: InflightUnits::default(),
            disk_stats: DiskStats::default(),
            ram_stats: RamStats::default(),
            table,
        }
    }

    /// Adds a VRAM tier in front of the RAM tier.
    #[cfg(feature = "cuda")]
    pub fn with_gpu(mut self, gpu: engram_store_cache::gpu::GpuTier) -> Self {
        self.gpu = Some(gpu);
        self
    }

    /// The VRAM tier, if any.
    #[cfg(feature = "cuda")]
    pub fn gpu(&self) -> Option<&engram_store_cache::gpu::GpuTier> {
        self.gpu.as_ref()
    }

    /// The manifest of the version served.
    pub fn manifest(&self) -> &Manifest {
        &self.table.manifest
    }

    /// The RAM tier, if any.
    pub fn cache(&self) -> Option<&RowCache> {
        self.cache.as_ref()
    }

    /// The I/O engine's name.
    pub fn io_engine_name(&self) -> &'static str {
        self.io.name()
    }

    /// Bytes of memory held for serving besides the cache (checksums).
    pub fn fixed_memory_bytes(&self) -> usize {
        self.table.checksum_memory_bytes()
    }

    /// Reads in flight now.
    pub fn reads_in_flight(&self) -> usize {
        self.inflight.len()
    }

    /// First id out of range, as an error.
    pub fn check_ids(&self, ids: &[u64]) -> Result<(), LookupError> {
        let rows = self.table.manifest.rows;
        match ids.iter().position(|&id| id >= rows) {
            None => Ok(()),
            Some(position) => Err(LookupError::OutOfRange {
                table: self.table.manifest.name.clone(),
                id: ids[position],
                position,
                rows,
            }),
        }
    }

    fn unit_of(&self, row: u64) -> (u64, usize) {
        let file = row / self.rows_per_file;
        let (unit, offset) = self.layout.locate(row - file * self.rows_per_file);
        ((file << UNIT_BITS) | unit, offset)
    }

    /// The rows of `ids`, packed in request order.
    pub async fn lookup(self: &Arc<Self>, ids: &[u64]) -> Result<Bytes, LookupError> {
        self.check_ids(ids)?;
        let mut out = vec![0u8; ids.len() * self.layout.row_bytes as usize];
        self.lookup_into(ids, &mut out).await?;
        Ok(Bytes::from(out))
    }

    /// Writes the rows of `ids` into `out` (exactly `ids.len() * row_bytes` bytes), packed in
    /// request order. On error `out` may hold some rows; callers must not use it.
    pub async fn lookup_into(
        self: &Arc<Self>,
        ids: &[u64],
        out: &mut [u8],
    ) -> Result<(), LookupError> {
        self.check_ids(ids)?;
        let rb = self.layout.row_bytes as usize;
        if out.len() != ids.len() * rb {
            return Err(LookupError::InvalidArgument(format!(
                "output of {} bytes for {} rows of {rb} bytes",
                out.len(),
                ids.len()
            )));
        }
        #[cfg(feature = "cuda")]
        if let Some(gpu) = &self.gpu {
            return self.lookup_into_via_gpu(gpu, ids, out).await;
        }
        self.fill_from_host(ids, out, None).await
    }

    /// Fills the positions of `out` not marked in `skip` from the RAM tier, then from disk.
    pub(crate) async fn fill_from_host(
        self: &Arc<Self>,
        ids: &[u64],
        out: &mut [u8],
        skip: Option<&[bool]>,
    ) -> Result<(), LookupError> {
        let rb = self.layout.row_bytes as usize;
        let ram_start = Instant::now();
        let mut misses = Vec::new();
        let wanted = |position: usize| skip.is_none_or(|s| !s[position]);
        match &self.cache {
            Some(cache) => {
                let mut missed = Vec::new();
                let hits = match skip {
                    None => cache.get_many_into(ids, None, out, &mut missed),
                    Some(_) => {
                        let places: Vec<usize> = (0..ids.len()).filter(|&p| wanted(p)).collect();
                        let rows: Vec<u64> = places.iter().map(|&p| ids[p]).collect();
                        let hits = cache.get_many_into(&rows, Some(&places), out, &mut missed);
                        for k in &mut missed {
                            *k = places[*k];
                        }
                        hits
                    }
                };
                misses.extend(missed.into_iter().map(|position| Miss {
                    unit: 0,
                    row: ids[position],
                    position,
                }));
                add(&self.ram_stats.row_bytes, hits * rb as u64);
                self.ram_stats.latency.record(ram_start.elapsed());
            }
            None => misses.extend(
                ids.iter()
                    .enumerate()
                    .filter(|(position, _)| wanted(*position))
                    .map(|(position, &row)| Miss {
                        unit: 0,
                        row,
                        position,
                    }),
            ),
        }
        if !misses.is_empty() {
            self.read_misses(&misses, Some(out), false).await?;
        }
        Ok(())
    }

    /// The rows of every position of `ids`, packed in position order, reading each distinct row
    /// once (from the RAM tier or one disk read) into its first position and copying it from
    /// there to the later positions that want it.
    pub async fn lookup_deduped(self: &Arc<Self>, ids: &DedupedIds) -> Result<Bytes, LookupError> {
        let mut out = vec![0u8; ids.len() * self.layout.row_bytes as usize];
        self.lookup_deduped_into(ids, &mut out).await?;
        Ok(Bytes::from(out))
    }

    /// [`ServedTable::lookup_deduped`] into `out` (exactly `ids.len() * row_bytes` bytes). On
    /// error `out` may hold some rows; callers must not use it.
    pub async fn lookup_deduped_into(
        self: &Arc<Self>,
        ids: &DedupedIds,
        out: &mut [u8],
    ) -> Result<(), LookupError> {
        let rows = self.table.manifest.rows;
        if let Some(k) = ids.distinct().iter().position(|&id| id >= rows) {
            return Err(LookupError::OutOfRange {
                table: self.table.manifest.name.clone(),
                id: ids.distinct()[k],
                position: ids.first()[k],
                rows,
            });
        }
        let rb = self.layout.row_bytes as usize;
        if out.len() != ids.len() * rb {
            return Err(LookupError::InvalidArgument(format!(
                "output of {} bytes for {} rows of {rb} bytes",
                out.len(),
                ids.len()
            )));
        }
        let firsts = ids.distinct().iter().zip(ids.first());
        let mut misses = Vec::new();
        match &self.cache {
            Some(cache) => {
                let ram_start = Instant::now();
                let mut missed = Vec::new();
                cache.get_many_into(ids.distinct(), Some(ids.first()), out, &mut missed);
                misses.extend(missed.into_iter().map(|k| Miss {
                    unit: 0,
                    row: ids.distinct()[k],
                    position: ids.first()[k],
                }));
                let hits = (ids.distinct().len() - misses.len()) as u64;
                add(&self.ram_stats.row_bytes, hits * rb as u64);
                self.ram_stats.latency.record(ram_start.elapsed());
            }
            None => misses.extend(firsts.map(|(&row, &position)| Miss {
                unit: 0,
                row,
                position,
            })),
        }
        if !misses.is_empty() {
            self.read_misses(&misses, Some(&mut *out), false).await?;
        }
        for (position, &k) in ids.index().iter().enumerate() {
            let from = ids.first()[k];
            if from != position {
                out.copy_within(from * rb..(from + 1) * rb, position * rb);
            }
        }
        Ok(())
    }

    /// Brings `ids` into the RAM tier (reading what is missing); returns the rows read. Rows it
    /// admits count a prefetch hit at their first lookup hit.
    pub async fn prefetch(self: &Arc<Self>, ids: &[u64]) -> Result<usize, LookupError> {
        self.check_ids(ids)?;
        let Some(cache) = &self.cache else {
            return Ok(0);
        };
        let misses: Vec<Miss> = ids
            .iter()
            .enumerate()
            .filter(|(_, id)| !cache.contains(**id))
            .map(|(position, &row)| Miss {
                unit: 0,
                row,
                position,
            })
            .collect();
        let n = misses.len();
        if n > 0 {
            self.read_misses(&misses, None, true).await?;
        }
        // Counted once the rows are in, so a caller that sees the count can rely on them.
        add(&self.ram_stats.prefetch_rows, n as u64);
        Ok(n)
    }

    /// Reads the units holding `misses`, copies rows into `out` (if given) and offers them to
    /// the cache (as prefetched rows if `prefetched`).
    async fn read_misses(
        self: &Arc<Self>,
        misses: &[Miss],
        mut out: Option<&mut [u8]>,
        prefetched: bool,
    ) -> Result<(), LookupError> {
        let start = Instant::now();
        let rb = self.layout.row_bytes as usize;
        let mut with_offset: Vec<(Miss, usize)> = misses
            .iter()
            .map(|m| {
                let (unit, offset) = self.unit_of(m.row);
                (Miss { unit, ..*m }, offset)
            })
            .collect();
        with_offset.sort_unstable_by_key(|(m, _)| (m.unit, m.row));

        // Per distinct unit: join a read in flight, or lead it; the led ones go as one batch.
        let mut units: Vec<(u64, UnitSource)> = Vec::new();
        let mut led = Vec::new();
        for (m, _) in &with_offset {
            if units.last().is_some_and(|(u, _)| *u == m.unit) {
                continue;
            }
            match self.inflight.join_or_lead(m.unit) {
                Joined::Wait(rx) => {
                    add(&self.disk_stats.joined_reads, 1);
                    units.push((m.unit, UnitSource::Joined(rx)));
                }
                Joined::Lead => {
                    units.push((m.unit, UnitSource::Led(led.len())));
                    led.push(m.unit);
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
            let result: UnitResult = result.unwrap_or_else(|| {
                Err(LookupError::Io {
                    table: self.table.manifest.name.clone(),
                    file: (unit >> UNIT_BITS) as u32,
                    block: (unit & ((1 << UNIT_BITS) - 1)) * self.layout.unit_blocks(),
                    message: "the read was abandoned".into(),
                    transient: true,
                })
            });
            let start_i = i;
            while i < with_offset.len() && with_offset[i].0.unit == unit {
                i += 1;
            }
            let buf = match result {
                Ok(buf) => buf,
                Err(e) => {
                    failure.get_or_insert(e);
                    continue;
                }
            };
            let mut last_row = u64::MAX;
            for (m, offset) in &with_offset[start_i..i] {
                let src = &buf[*offset..*offset + rb];
                if let Some(out) = out.as_deref_mut() {
                    out[m.position * rb..(m.position + 1) * rb].copy_from_slice(src);
                }
                if m.row != last_row {
                    if let Some(cache) = &self.cache {
                        if prefetched {
                            cache.insert_prefetched(m.row, src);
                        } else {
                            cache.insert(m.row, src);
                        }
                    }
                    last_row = m.row;
                }
            }
        }
        let n = with_offset.len() as u64;
        add(&self.disk_stats.rows, n);
        add(&self.disk_stats.row_bytes, n * rb as u64);
        self.disk_stats.latency.record(start.elapsed());
        match failure {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Submits the led units as one batch; a task verifies and publishes them, so the reads
    /// complete (and waiters are served) even if the leading lookup is cancelled.
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
            .map(|unit| {
                let file = &self.table.files[(unit >> UNIT_BITS) as usize];
                let unit_index = unit & ((1 << UNIT_BITS) - 1);
                ReadOp {
                    file: file.file.clone(),
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
                Err(e) => led
                    .into_iter()
                    .map(|unit| {
                        let err = Err(this.io_error(unit, &e, true));
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

    fn io_error(&self, unit: u64, e: &std::io::Error, transient: bool) -> LookupError {
        add(&self.disk_stats.io_errors, 1);
        LookupError::Io {
            table: self.table.manifest.name.clone(),
            file: (unit >> UNIT_BITS) as u32,
            block: (unit & ((1 << UNIT_BITS) - 1)) * self.layout.unit_blocks(),
            message: e.to_string(),
            transient,
        }
    }

    fn verify_unit(
        &self,
        unit: u64,
        result: std::io::Result<engram_store_cache::io::AlignedBuf>,
    ) -> UnitResult {
        let buf = match result {
            Ok(buf) => buf,
            Err(e) => {
                let transient = matches!(
                    e.kind(),
                    std::io::ErrorKind::Interrupted | std::io::ErrorKind::WouldBlock
                ) || e.raw_os_error() == Some(libc::EAGAIN);
                return Err(self.io_error(unit, &e, transient));
            }
        };
        add(&self.disk_stats.reads, 1);
        add(&self.disk_stats.bytes_read, buf.len() as u64);
        let file_index = (unit >> UNIT_BITS) as usize;
        let first_block = (unit & ((1 << UNIT_BITS) - 1)) * self.layout.unit_blocks();
        let sums = &self.table.files[file_index].sums;
        let bs = self.layout.block_size as usize;
        for (k, block) in buf.chunks_exact(bs).enumerate() {
            let b = first_block + k as u64;
            if !sums.verify(b as usize, block) {
                add(&self.disk_stats.checksum_errors, 1);
                tracing::error!(
                    table = %self.table.manifest.name,
                    file = file_index,
                    block = b,
                    "checksum mismatch: block not served"
                );
                return Err(LookupError::DataLoss {
                    table: self.table.manifest.name.clone(),
                    version: self.table.manifest.version,
                    file: file_index as u32,
                    block: b,
                });
            }
        }
        Ok(Arc::new(buf))
    }
}
