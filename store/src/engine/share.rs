//! Sharing a table version with a worker process on this host (the ShareTable RPC): the RAM
//! tier's shared-memory file, which holds every row in row order once loaded whole, and the VRAM
//! tier's device memory as file descriptors, offered over the engine's [`FdHandoff`] socket
//! (see `fd_handoff`). The worker maps both and reads rows with its own
//! kernel on its own stream (hot rows from VRAM, the rest from host memory over PCIe), so a
//! lookup costs no round trip to the server and no GPU time slice of another process.

use std::path::PathBuf;

use engram_store_cache::tier::{Tier, Want};

use super::error::LookupError;
#[cfg(feature = "cuda")]
use super::fd_handoff::Offered;
use super::served_table::ServedTable;
use super::serving::Engine;

/// Rows read per step while the RAM tier is loaded whole.
const LOAD_CHUNK_ROWS: u64 = 1 << 16;

/// What a worker needs to read a shared table version.
#[derive(Debug, Clone)]
pub struct SharedTable {
    /// Table name.
    pub table: String,
    /// Version shared.
    pub version: u64,
    /// Rows.
    pub rows: u64,
    /// Bytes per row.
    pub row_bytes: u64,
    /// The shared-memory file: row `r` at byte `r * row_bytes`.
    pub host_path: PathBuf,
    /// The file's length (at least `rows * row_bytes`).
    pub host_bytes: u64,
    /// The VRAM tier, if the version has one on the device asked for.
    #[cfg(feature = "cuda")]
    pub gpu: Option<engram_store_cache::gpu::SharedGpuTier>,
    /// Where the worker collects the VRAM tier's file descriptors (with `gpu`, once
    /// [`Engine::share_table`] offered them).
    #[cfg(feature = "cuda")]
    pub offered: Option<Offered>,
}

impl Engine {
    /// Shares the served version of table `name` ([`ServedTable::share`]) and offers its VRAM
    /// tier's file descriptors to the worker that presents the token returned.
    pub async fn share_table(
        &self,
        name: &str,
        device: Option<usize>,
    ) -> Result<SharedTable, LookupError> {
        #[allow(unused_mut)]
        let mut shared = self.table(name)?.share(device).await?;
        #[cfg(feature = "cuda")]
        if let Some(g) = &shared.gpu {
            let fds = g.parts.iter().map(|p| p.fd.clone()).collect();
            let offered = self
                .fd_handoff
                .offer(fds)
                .map_err(|e| LookupError::NotShared {
                    table: name.to_string(),
                    why: format!("its VRAM tier's memory cannot be handed over: {e}"),
                })?;
            shared.offered = Some(offered);
        }
        Ok(shared)
    }
}

impl ServedTable {
    /// Shares this version: loads every row the RAM tier lacks from the files (once), then
    /// returns the shared-memory file and, with `device` (or the first device when `None` and
    /// the version has VRAM tiers), that device's VRAM tier. FAILED_PRECONDITION unless the
    /// server shares memory (`--share-memory`) and holds this table whole in RAM.
    pub async fn share(&self, device: Option<usize>) -> Result<SharedTable, LookupError> {
        let m = self.manifest();
        let not_shared = |why: String| LookupError::NotShared {
            table: m.name.clone(),
            why,
        };
        if self.held_rows().is_some() {
            return Err(not_shared(
                "this node holds a partial copy of it (some shards only)".into(),
            ));
        }
        let ram = self.ram().ok_or_else(|| {
            not_shared("the server has no RAM tier for it (--ram-cache 0)".into())
        })?;
        let file = match ram.cache().shared_rows() {
            Some(Ok(file)) => file,
            Some(Err(why)) => return Err(not_shared(why.to_string())),
            None => {
                return Err(not_shared(format!(
                    "start the server with --share-memory and a RAM budget that holds the \
                     whole table ({} rows of {} B; RAM tier policy {:?})",
                    m.rows,
                    m.row_bytes,
                    ram.cache().policy_name()
                )));
            }
        };
        self.load_ram_whole().await?;
        #[cfg(feature = "cuda")]
        let gpu = match self.device_tier(device) {
            Some(tier) => match tier.as_device() {
                Some(d) => Some(d.share().map_err(|e| self.tier_error(e))?),
                None => None,
            },
            None if device.is_some() => {
                return Err(LookupError::NoGpuTier {
                    table: m.name.clone(),
                    device: device.unwrap_or_default(),
                });
            }
            None => None,
        };
        #[cfg(not(feature = "cuda"))]
        if let Some(device) = device {
            return Err(LookupError::NoGpuTier {
                table: m.name.clone(),
                device,
            });
        }
        Ok(SharedTable {
            table: m.name.clone(),
            version: m.version,
            rows: m.rows,
            row_bytes: u64::from(m.row_bytes),
            host_path: file.path().to_path_buf(),
            host_bytes: file.len() as u64,
            #[cfg(feature = "cuda")]
            gpu,
            #[cfg(feature = "cuda")]
            offered: None,
        })
    }

    /// Reads every row the RAM tier does not hold from the files into it, bypassing the other
    /// tiers (no VRAM tier counts these reads).
    async fn load_ram_whole(&self) -> Result<(), LookupError> {
        let Some(ram) = self.ram() else {
            return Ok(());
        };
        let cache = ram.cache();
        let rows = self.manifest().rows;
        if cache.stats().resident_rows >= rows {
            return Ok(());
        }
        let rb = self.row_bytes();
        let mut buf = vec![0u8; LOAD_CHUNK_ROWS as usize * rb];
        let mut missed = Vec::new();
        for first in (0..rows).step_by(LOAD_CHUNK_ROWS as usize) {
            let end = rows.min(first + LOAD_CHUNK_ROWS);
            let ids: Vec<u64> = (first..end).filter(|&id| !cache.contains(id)).collect();
            if ids.is_empty() {
                continue;
            }
            missed.clear();
            let out = &mut buf[..ids.len() * rb];
            self.nvme()
                .serve(Want::packed(&ids), out, &mut missed)
                .await
                .map_err(|e| self.tier_error(e))?;
            if let Some(&k) = missed.first() {
                return Err(self.tier_error(engram_store_cache::TierError::NotHeld { row: ids[k] }));
            }
            for (id, row) in ids.iter().zip(out.chunks_exact(rb)) {
                cache.insert(*id, row);
            }
        }
        Ok(())
    }
}
