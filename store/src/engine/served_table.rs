//! One table version being served: its manifest and the cascade of its tiers (GPU when it has
//! one, RAM when it has a budget, NVMe always). Checks a request's ids against the table, then
//! hands the rows to the cascade; errors of the tiers come back named with the table.
//!
//! [`ServedTable::lookup_deduped`] serves a batch already reduced to distinct ids (the n-gram
//! path): each distinct row is served once, through every tier, into its first output position
//! and then copied to the other positions that want it.

use std::sync::Arc;

use bytes::Bytes;
use engram_store_cache::tier::{NvmeFile, NvmeTier, RamTier, Tier, Want};
use engram_store_cache::{Cascade, RowCacheBuilder, TierError, TierKind, TierStats, io::IoEngine};

use super::dedup::DedupedIds;
use super::error::LookupError;
use crate::table::{Manifest, OpenTable};

/// A table version opened for serving with its tiers.
#[derive(Debug)]
pub struct ServedTable {
    manifest: Manifest,
    cascade: Arc<Cascade>,
    ram: Option<Arc<RamTier>>,
    nvme: NvmeTier,
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
            manifest, files, ..
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
        }
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
        match self.cascade.serve_to_device(ids, dst).await {
            Some(result) => result.map_err(|e| self.tier_error(e)),
            None => Err(LookupError::NoGpuTier {
                table: self.manifest.name.clone(),
            }),
        }
    }
}
