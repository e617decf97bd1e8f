//! One table version being served: its manifest and the cascades of its tiers (GPU when it has
//! one, RAM when it has a budget, NVMe always). Checks a request's ids against the table, then
//! hands the rows to a cascade; errors of the tiers come back named with the table.
//!
//! With several GPUs (`--gpu-device 0,1`) a version has one VRAM tier per device and one cascade
//! per device, `[gpu_d, ram, nvme]`, sharing the RAM and NVMe tiers. Rows written into a buffer
//! on device `d` ([`ServedTable::lookup_into_device`]) go through device `d`'s cascade, so the
//! ids asked for there are counted by, and fill, device `d`'s tier: a tensor-parallel rank's
//! own head columns end up in its own GPU. Requests without a device (Lookup, LookupNgrams,
//! LookupInto into host memory, Prefetch) go through the first device's cascade, as with one
//! GPU: they feed and read the first device's tier.
//!
//! [`ServedTable::lookup_deduped`] serves a batch already reduced to distinct ids (the n-gram
//! path): each distinct row is served once, through every tier, into its first output position
//! and then copied to the other positions that want it.
//!
//! Each version samples the ids its traffic reads ([`RecentIds`]; host requests and each
//! device's apart), which warm the next version of the table, each cascade with its own, before
//! it is swapped in, and shares one [`VersionDir`] among every `ServedTable`
//! of its files: when the last is dropped, no request reads the version any more and its files
//! may go.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use engram_store_cache::tier::{NvmeFile, NvmeTier, RamTier, Tier, Want};
use engram_store_cache::{Cascade, RowCacheBuilder, TierError, TierKind, TierStats, io::IoEngine};
use parking_lot::RwLock;

use super::dedup::DedupedIds;
use super::error::LookupError;
use super::recent_ids::{RING_SLOTS, RecentIds};
use crate::table::{HeldRows, Manifest, OpenTable};

/// A table version opened for serving with its tiers.
#[derive(Debug)]
pub struct ServedTable {
    manifest: Manifest,
    /// Host requests: the first device's VRAM tier (if any), RAM, NVMe.
    cascade: Arc<Cascade>,
    /// One cascade per device with a VRAM tier, in `--gpu-device` order.
    devices: Vec<DeviceCascade>,
    /// Every tier once: the VRAM tiers by device, then RAM, then NVMe.
    tiers: Vec<Arc<dyn Tier>>,
    ram: Option<Arc<RamTier>>,
    nvme: NvmeTier,
    /// Ids of host requests.
    recent: RecentIds,
    dir: Arc<VersionDir>,
    /// Rows held, for a partial copy (`None`: every row, for good: a whole version never becomes
    /// partial, so serving it takes no lock); shared with the files-only copy of
    /// the version, grown as a cluster node copies more shards into it.
    held: Option<Arc<RwLock<HeldRows>>>,
}

/// The tiers serving buffers on one device: its VRAM tier over the shared host tiers.
#[derive(Debug)]
struct DeviceCascade {
    device: usize,
    cascade: Arc<Cascade>,
    /// Ids asked for into buffers on this device.
    recent: RecentIds,
}

/// A VRAM tier of a table version and the CUDA device it lives on.
#[derive(Debug, Clone)]
pub struct DeviceTierOn {
    /// The device ordinal.
    pub device: usize,
    /// The tier: a device tier (`Tier::as_device` is `Some`), such as the cache crate's `GpuTier`.
    pub tier: Arc<dyn Tier>,
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
    /// Serves `table`: for each of `gpus` a cascade with that VRAM tier on top (the first also
    /// serves host requests), a RAM tier built by `ram` if given, then its data files read
    /// through `io`.
    pub fn new(
        table: OpenTable,
        gpus: Vec<DeviceTierOn>,
        ram: Option<RowCacheBuilder>,
        io: Arc<dyn IoEngine>,
    ) -> Self {
        let OpenTable {
            manifest,
            files,
            dir,
            held,
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
        let mut host_tiers: Vec<Arc<dyn Tier>> = Vec::new();
        if let Some(ram) = &ram {
            host_tiers.push(ram.clone());
        }
        host_tiers.push(Arc::new(nvme.clone()));
        let row_bytes = manifest.row_bytes as usize;
        let over_host = |top: Option<&Arc<dyn Tier>>| {
            let tiers = top.into_iter().chain(&host_tiers).cloned().collect();
            Arc::new(Cascade::new(tiers, row_bytes))
        };
        let devices: Vec<DeviceCascade> = gpus
            .iter()
            .map(|g| DeviceCascade {
                device: g.device,
                cascade: over_host(Some(&g.tier)),
                recent: RecentIds::new(RING_SLOTS),
            })
            .collect();
        let cascade = match devices.first() {
            Some(d) => d.cascade.clone(),
            None => over_host(None),
        };
        let tiers = gpus.into_iter().map(|g| g.tier).chain(host_tiers).collect();
        Self {
            manifest,
            cascade,
            devices,
            tiers,
            ram,
            nvme,
            recent: RecentIds::new(RING_SLOTS),
            dir: Arc::new(VersionDir { path: dir }),
            held: held.map(|h| Arc::new(RwLock::new(h))),
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
            cascade: Arc::new(Cascade::new(tiers.clone(), self.row_bytes())),
            devices: Vec::new(),
            tiers,
            ram: None,
            nvme,
            recent: RecentIds::new(0),
            dir: self.dir.clone(),
            held: self.held.clone(),
        }
    }

    /// The rows held, for a partial copy (`None`: every row).
    pub fn held_rows(&self) -> Option<HeldRows> {
        self.held.as_ref().map(|h| h.read().clone())
    }

    /// True when every row of `range` is held.
    pub fn holds(&self, range: &std::ops::Range<u64>) -> bool {
        self.held.as_ref().is_none_or(|h| h.read().covers(range))
    }

    /// Stops serving the rows of `rows` (a partial copy only; a version holding every row is
    /// left as it is). Returns the rows held now, `None` for a whole version.
    pub fn release_held(&self, rows: &HeldRows) -> Option<HeldRows> {
        let mut h = self.held.as_ref()?.write();
        for r in rows.ranges() {
            h.remove(r);
        }
        Some(h.clone())
    }

    /// Serves `range` too, from now on: its blocks were written into the (partial) files and
    /// synced. A version holding every row is left as it is.
    pub fn extend_held(&self, range: std::ops::Range<u64>) {
        if let Some(h) = &self.held {
            h.write().add(range);
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

    /// Distinct ids recently read by host requests (`None`) or into buffers on `device`, sorted:
    /// what a new version's cascade for the same is warmed with.
    pub(crate) fn recent_ids(&self, device: Option<usize>) -> Vec<u64> {
        match device {
            None => self.recent.snapshot(),
            Some(d) => self
                .device(d)
                .map_or_else(Vec::new, |d| d.recent.snapshot()),
        }
    }

    /// The devices with a VRAM tier of this version, in `--gpu-device` order.
    pub fn gpu_devices(&self) -> impl Iterator<Item = usize> + '_ {
        self.devices.iter().map(|d| d.device)
    }

    fn device(&self, device: usize) -> Option<&DeviceCascade> {
        self.devices.iter().find(|d| d.device == device)
    }

    /// The VRAM tier on `device` (`None`: the first device's), if there is one.
    #[cfg_attr(not(feature = "cuda"), allow(dead_code))]
    pub(super) fn device_tier(&self, device: Option<usize>) -> Option<&Arc<dyn Tier>> {
        let on = match device {
            None => self.devices.first(),
            Some(d) => self.device(d),
        }?;
        on.cascade.tiers().first()
    }

    /// The files' tier, for reads that bypass the caches.
    pub(super) fn nvme(&self) -> &NvmeTier {
        &self.nvme
    }

    /// The cascade serving buffers on `device` (`None`: host requests), if there is one.
    pub fn cascade_for(&self, device: Option<usize>) -> Option<&Arc<Cascade>> {
        match device {
            None => Some(&self.cascade),
            Some(d) => self.device(d).map(|d| &d.cascade),
        }
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

    /// The cascade of host requests (the first device's VRAM tier on top, if any).
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

    /// Each tier's stats, fastest first (the VRAM tiers in `--gpu-device` order, each with its
    /// device).
    pub fn tier_stats(&self) -> Vec<(TierKind, TierStats)> {
        self.tiers.iter().map(|t| (t.kind(), t.stats())).collect()
    }

    /// Zeroes every tier's counters.
    pub fn reset_stats(&self) {
        for t in &self.tiers {
            t.reset_stats();
        }
    }

    /// First id out of range (or, in a partial copy, not held), as an error.
    pub fn check_ids(&self, ids: &[u64]) -> Result<(), LookupError> {
        let rows = self.manifest.rows;
        if let Some(position) = ids.iter().position(|&id| id >= rows) {
            return Err(self.out_of_range(ids[position], position));
        }
        self.check_held(ids.iter().copied().enumerate())
    }

    /// In a partial copy, the first of `(position, id)` whose row is not held, as an error.
    fn check_held(&self, ids: impl Iterator<Item = (usize, u64)>) -> Result<(), LookupError> {
        let Some(held) = &self.held else {
            return Ok(());
        };
        let h = held.read();
        for (position, id) in ids {
            if !h.contains(id) {
                return Err(LookupError::RowNotHeld {
                    table: self.manifest.name.clone(),
                    version: self.manifest.version,
                    id,
                    position,
                    held: h.describe(),
                });
            }
        }
        Ok(())
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

    pub(crate) fn row_bytes(&self) -> usize {
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
        self.check_held(
            ids.first()
                .iter()
                .copied()
                .zip(ids.distinct().iter().copied()),
        )?;
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

    /// Brings `ids` into the cache tiers (reading what none holds) and hints every tier of the
    /// host requests' cascade (the first device's VRAM tier, RAM); returns the rows read.
    pub async fn prefetch(&self, ids: &[u64]) -> Result<usize, LookupError> {
        self.prefetch_for(None, ids).await
    }

    /// [`ServedTable::prefetch`] through the cascade of `device` (`None`: of host requests):
    /// its VRAM tier is hinted. Without a tier on `device`, nothing is done.
    pub(crate) async fn prefetch_for(
        &self,
        device: Option<usize>,
        ids: &[u64],
    ) -> Result<usize, LookupError> {
        self.check_ids(ids)?;
        let Some(cascade) = self.cascade_for(device) else {
            return Ok(0);
        };
        match device.and_then(|d| self.device(d)) {
            Some(d) => d.recent.record(ids),
            None => self.recent.record(ids),
        }
        cascade.prefetch(ids).await.map_err(|e| self.tier_error(e))
    }

    /// Writes the rows of `ids` into device memory at `dst` (valid for `ids.len() * row_bytes`
    /// bytes on GPU `device`) through that device's cascade: hits by the gather kernel straight
    /// from its VRAM tier, misses from the host tiers; the ids count towards that tier's hot
    /// set. Returns the VRAM hits.
    pub async fn lookup_into_device(
        &self,
        device: usize,
        ids: &[u64],
        dst: u64,
    ) -> Result<u64, LookupError> {
        self.check_ids(ids)?;
        let no_tier = || LookupError::NoGpuTier {
            table: self.manifest.name.clone(),
            device,
        };
        let on = self.device(device).ok_or_else(no_tier)?;
        on.recent.record(ids);
        match on.cascade.serve_to_device(ids, dst).await {
            Some(result) => result.map_err(|e| self.tier_error(e)),
            None => Err(no_tier()),
        }
    }
}
