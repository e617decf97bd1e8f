//! Giving back the rows of copied shards that the map moved to other nodes: the engine stops
//! serving them at once, `held_rows.json` says so, and after [`RELEASE_GRACE`] the data blocks
//! holding none of the rows kept are punched out of the files (`fallocate(PUNCH_HOLE)`), so the
//! disk space comes back. A version the node holds whole (its own data) is never touched.

use std::path::Path;

use super::peer_copy::{open_for_write, shard_blocks};
use crate::table::{HeldRows, Manifest, TableError};

/// How long released rows' blocks stay on disk after the engine stops serving them: requests
/// that passed the held-rows check before the release finish reading in that time.
const RELEASE_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

/// Keeps only the rows of `keep` in `table`'s partial copy (the shards the map still gives this
/// node): the others stop being served at once, `held_rows.json` says so, and after
/// [`RELEASE_GRACE`] the data blocks holding none of the rows kept are punched out of the files
/// (`fallocate(PUNCH_HOLE)`), giving their disk space back. A version held whole (the node's own
/// data) is never touched. Returns the rows released.
pub(super) fn release_rows(
    table: &crate::engine::ServedTable,
    keep: &HeldRows,
) -> Result<u64, TableError> {
    let Some(held) = table.held_rows() else {
        return Ok(0);
    };
    let drop = held.minus(keep);
    if drop.rows() == 0 {
        return Ok(0);
    }
    let now = table.release_held(&drop).unwrap_or_default();
    let dir = table.version_dir().path().to_path_buf();
    now.save(&dir)?;
    let manifest = table.manifest().clone();
    let name = manifest.name.clone();
    let released = drop.rows();
    tokio::spawn(async move {
        tokio::time::sleep(RELEASE_GRACE).await;
        let punched =
            tokio::task::spawn_blocking(move || punch_released(&dir, &manifest, &drop, &now)).await;
        match punched {
            Ok(Ok(bytes)) => {
                tracing::info!(table = %name, bytes, "released blocks of shards moved away")
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "punching released blocks failed (they stay on disk)")
            }
            Err(e) => tracing::warn!(error = %e, "punching released blocks failed"),
        }
    });
    Ok(released)
}

/// Punches the blocks of `dropped` rows that hold no row of `kept` out of the data files in
/// `dir`; returns the bytes given back.
fn punch_released(
    dir: &Path,
    m: &Manifest,
    dropped: &HeldRows,
    kept: &HeldRows,
) -> Result<u64, TableError> {
    use std::os::fd::AsRawFd as _;
    let layout = m.layout();
    let block = u64::from(m.block_size);
    let mut bytes = 0;
    for f in &m.files {
        let blocks_of = |rows: &HeldRows| {
            HeldRows::new(rows.ranges().filter_map(|r| shard_blocks(&layout, f, &r)))
        };
        let punch = blocks_of(dropped).minus(&blocks_of(kept));
        if punch.rows() == 0 {
            continue;
        }
        let path = dir.join(&f.path);
        let file = open_for_write(&path)?;
        for r in punch.ranges() {
            let (offset, len) = ((1 + r.start) * block, (r.end - r.start) * block);
            // SAFETY: a plain syscall on a file descriptor `file` owns for the call's duration.
            let rc = unsafe {
                libc::fallocate(
                    file.as_raw_fd(),
                    libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
                    offset as libc::off_t,
                    len as libc::off_t,
                )
            };
            if rc != 0 {
                return Err(TableError::io(
                    format!("punch blocks {}..{} of {}", r.start, r.end, path.display()),
                    std::io::Error::last_os_error(),
                ));
            }
            bytes += len;
        }
    }
    Ok(bytes)
}
