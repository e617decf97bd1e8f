//! One table version being served: its manifest and the cascade of its tiers (GPU when it has
//! one, RAM when it has a budget, NVMe always). Checks a request's ids against the table, then
//! hands the rows to the cascade; errors of the tiers come back named with the table.
//!
//! [`ServedTable::lookup_deduped`] serves a batch already reduced to distinct ids (the n-gram
//! path): each distinct row is served once, through every tier, into its first output position
//! and then copied to the other positions that want it.
//!
//! Each version samples the ids its traffic reads ([`RecentIds`]), which warm the next version of
//! the table before it is swapped in, and shares one [`VersionDir`] among every `ServedTable`
//! of its files: when the last is dropped, no request reads the version any more and its files
//! may go.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use engram_store_cache::tier::{NvmeFile, NvmeTier, RamTier, Tier, Want};
use engram_store_cache::{Cascade, RowCacheBuilder, TierError, TierKind, TierStats, io::IoEngine};

use super::dedup::DedupedIds;
use super::error::LookupError;
use super::recent_ids::{RING_SLOTS, RecentIds};
use crate::table::{Manifest, OpenTable};

/// A table version opened for serving with its tiers.
#[derive(Debug)]
pub struct ServedTable {
    manifest: Manifest,
    cascade: Arc<Cascade>,
    ram: Option<Arc<RamTier>>,
    nvme: NvmeTier,
    recent: RecentIds,
    dir: Arc<VersionDir>,
}

/// The directory of a table version, shared by everything serving from its files.
#[derive(Debug)]
pub struct VersionDir {
    path: PathBuf,
}

impl VersionDir {
    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl ServedTable {
    /// Serves `table`: a GPU tier on top if given, a RAM tier built by `ram` if given, then its
    /// data files read through `io`.
    pub fn new(
        table: OpenTable,
        gpu: Option<Arc<dyn Tier>>,
        ram: Option<RowCacheBuilder>,
        io: Arc<dyn IoEngine>,
    ) -> Self {
        let OpenTable {
            manifest,
            files,
            dir,
        } = table;
        let files = files
            .into_iter()
            .map(|f| NvmeFile {
                file: f.file,
                sums: f.sums,
                rows: f.rows,
            })
            .collect();
        let nvme = NvmeTier::new(files, manifest.layout(), io);
        let ram = ram.map(|b| Arc::new(RamTier::new(b.build())));
        let mut tiers: Vec<Arc<dyn Tier>> = Vec::new();
        tiers.extend(gpu);
        if let Some(ram) = &ram {
            tiers.push(ram.clone());
        }
        tiers.push(Arc::new(nvme.clone()));
        let cascade = Arc::new(Cascade::new(tiers, manifest.row_bytes as usize));
        Self {
            manifest,
            cascade,
            ram,
            nvme,
            recent: RecentIds::new(RING_SLOTS),
            dir: Arc::new(VersionDir { path: dir }),
        }
    }

    /// The same version served from its files alone (no cache tier, no sampling): how a version
    /// stays available to clients that pin it once a newer one is served, without holding cache
    /// memory.
    pub(crate) fn files_only(&self) -> Self {
        let nvme = self.nvme.clone();
        let tiers: Vec<Arc<dyn Tier>> = vec![Arc::new(nvme.clone())];
        Self {
            manifest: self.manifest.clone(),
            cascade: Arc::new(Cascade::new(tiers, self.row_bytes())),
            ram: None,
            nvme,
            recent: RecentIds::new(0),
            dir: self.dir.clone(),
        }
    }

    /// The version served.
    pub fn version(&self) -> u64 {
        self.manifest.version
    }

    /// Its directory, shared by everything serving from its files.
    pub fn version_dir(&self) -> &Arc<VersionDir> {
        &self.dir
    }

    /// Distinct ids recently read, sorted: what a new version is warmed with.
    pub(crate) fn recent_ids(&self) -> Vec<u64> {
        self.recent.snapshot()
    }

    /// Reads `ids` from the files, checking every block read against its checksum, without
    /// sampling them or offering them to the cache tiers: how a new version is checked before it
    /// is served.
    pub(crate) async fn check_rows(&self, ids: &[u64]) -> Result<(), LookupError> {
        self.check_ids(ids)?;
        let mut out = vec![0u8; ids.len() * self.row_bytes()];
        let mut missed = Vec::new();
        self.nvme
            .serve(Want::packed(ids), &mut out, &mut missed)
            .await
            .map_err(|e| self.tier_error(e))?;
        match missed.first() {
            None => Ok(()),
            Some(&k) => Err(self.tier_error(TierError::NotHeld { row: ids[k] })),
        }
    }

    /// Rows the RAM tier can hold (0 without one).
    pub fn ram_capacity_rows(&self) -> u64 {
        self.ram
            .as_ref()
            .map_or(0, |r| r.cache().stats().capacity_rows)
    }

    /// The manifest of the version served.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// The cascade of its tiers.
    pub fn cascade(&self) -> &Arc<Cascade> {
        &self.cascade
    }

    /// The RAM tier, if any.
    pub fn ram(&self) -> Option<&RamTier> {
        self.ram.as_deref()
    }

    /// The I/O engine's name.
    pub fn io_engine_name(&self) -> &'static str {
        self.nvme.io_engine_name()
    }

    /// Each tier's stats, fastest first.
    pub fn tier_stats(&self) -> Vec<(TierKind, TierStats)> {
        self.cascade
            .tiers()
            .iter()
            .map(|t| (t.kind(), t.stats()))
            .collect()
    }

    /// Zeroes every tier's counters.
    pub fn reset_stats(&self) {
        for t in self.cascade.tiers() {
            t.reset_stats();
        }
    }

    /// First id out of range, as an error.
    pub fn check_ids(&self, ids: &[u64]) -> Result<(), LookupError> {
        let rows = self.manifest.rows;
        match ids.iter().position(|&id| id >= rows) {
            None => Ok(()),
            Some(position) => Err(self.out_of_range(ids[position], position)),
        }
    }

    fn out_of_range(&self, id: u64, position: usize) -> LookupError {
        LookupError::OutOfRange {
            table: self.manifest.name.clone(),
            id,
            position,
            rows: self.manifest.rows,
        }
    }

    /// A tier's error, named with this table.
    pub(crate) fn tier_error(&self, source: TierError) -> LookupError {
        LookupError::Tier {
            table: self.manifest.name.clone(),
            version: self.manifest.version,
            source,
        }
    }

    fn row_bytes(&self) -> usize {
        self.manifest.row_bytes as usize
    }

    /// The rows of `ids`, packed in request order.
    pub async fn lookup(&self, ids: &[u64]) -> Result<Bytes, LookupError> {
        let mut out = vec![0u8; ids.len() * self.row_bytes()];
        self.lookup_into(ids, &mut out).await?;
        Ok(Bytes::from(out))
    }

    /// Writes the rows of `ids` into `out` (at least `ids.len() * row_bytes` bytes), packed in
    /// request order. On error `out` may hold some rows; callers must not use it.
    pub async fn lookup_into(&self, ids: &[u64], out: &mut [u8]) -> Result<(), LookupError> {
        self.check_ids(ids)?;
        self.recent.record(ids);
        let out = &mut out[..ids.len() * self.row_bytes()];
        self.cascade
            .serve(Want::packed(ids), out)
            .await
            .map_err(|e| self.tier_error(e))
    }

    /// The rows of every position of `ids`, packed in position order, serving each distinct row
    /// once into its first position and copying it from there to the later positions.
    pub async fn lookup_deduped(&self, ids: &DedupedIds) -> Result<Bytes, LookupError> {
        let mut out = vec![0u8; ids.len() * self.row_bytes()];
        self.lookup_deduped_into(ids, &mut out).await?;
        Ok(Bytes::from(out))
    }

    /// [`ServedTable::lookup_deduped`] into `out` (at least `ids.len() * row_bytes` bytes). On
    /// error `out` may hold some rows; callers must not use it.
    pub async fn lookup_deduped_into(
        &self,
        ids: &DedupedIds,
        out: &mut [u8],
    ) -> Result<(), LookupError> {
        let rows = self.manifest.rows;
        if let Some(k) = ids.distinct().iter().position(|&id| id >= rows) {
            return Err(self.out_of_range(ids.distinct()[k], ids.first()[k]));
        }
        self.recent.record(ids.distinct());
        let rb = self.row_bytes();
        let out = &mut out[..ids.len() * rb];
        let want = Want {
            ids: ids.distinct(),
            places: Some(ids.first()),
        };
        self.cascade
            .serve(want, out)
            .await
            .map_err(|e| self.tier_error(e))?;
        for (position, &k) in ids.index().iter().enumerate() {
            let from = ids.first()[k];
            if from != position {
                out.copy_within(from * rb..(from + 1) * rb, position * rb);
            }
        }
        Ok(())
    }

    /// Brings `ids` into the cache tiers (reading what none holds) and hints every tier; returns
    /// the rows read.
    pub async fn prefetch(&self, ids: &[u64]) -> Result<usize, LookupError> {
        self.check_ids(ids)?;
        self.recent.record(ids);
        self.cascade
            .prefetch(ids)
            .await
            .map_err(|e| self.tier_error(e))
    }

    /// Writes the rows of `ids` into device memory at `dst` (valid for `ids.len() * row_bytes`
    /// bytes on the GPU tier's device): hits by the gather kernel straight from VRAM, misses
    /// from the host tiers. Returns the VRAM hits.
    pub async fn lookup_into_device(&self, ids: &[u64], dst: u64) -> Result<u64, LookupError> {
        self.check_ids(ids)?;
        self.recent.record(ids);
        match self.cascade.serve_to_device(ids, dst).await {
            Some(result) => result.map_err(|e| self.tier_error(e)),
            None => Err(LookupError::NoGpuTier {
                table: self.manifest.name.clone(),
            }),
        }
    }
}
