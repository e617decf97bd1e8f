//! Half-written versions of crashed ingests: a version is written into `.tmp-vNNNNNNNN-PID` and
//! renamed into place when complete, so a crash leaves such a directory behind. Readers ignore
//! them; [`remove_stale_leftovers`] (at `serve` start) and a new writer of the same table
//! remove those whose writer process is gone, never one another live process is still writing.

use std::path::{Path, PathBuf};

/// Prefix of the temporary directory of a version being written.
pub(crate) const TMP_PREFIX: &str = ".tmp-";

/// The writer's process id in a temporary directory's name (`.tmp-vNNNNNNNN-PID`).
fn writer_pid(name: &str) -> Option<i32> {
    name.strip_prefix(TMP_PREFIX)?
        .rsplit('-')
        .next()?
        .parse()
        .ok()
}

/// True if process `pid` exists (it may be another user's: EPERM means it exists).
fn process_alive(pid: i32) -> bool {
    if pid <= 0 {
        return false;
    }
    // SAFETY: signal 0 only checks that the process exists and may be signalled.
    let r = unsafe { libc::kill(pid, 0) };
    r == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// Removes the stale temporary directories of the table in `table_dir`: those whose writer is
/// not running (this process's own included only if `include_own`). Returns what it removed.
pub(crate) fn remove_stale_in(table_dir: &Path, include_own: bool) -> Vec<PathBuf> {
    let own = std::process::id() as i32;
    let Ok(entries) = std::fs::read_dir(table_dir) else {
        return Vec::new();
    };
    let mut removed = Vec::new();
    for e in entries.filter_map(Result::ok) {
        let name = e.file_name();
        let Some(name) = name.to_str() else { continue };
        if !name.starts_with(TMP_PREFIX) {
            continue;
        }
        let stale = match writer_pid(name) {
            Some(pid) if pid == own => include_own,
            Some(pid) => !process_alive(pid),
            None => true,
        };
        if stale && std::fs::remove_dir_all(e.path()).is_ok() {
            removed.push(e.path());
        }
    }
    removed
}

/// Removes the stale temporary directories of every table under `data_dir` (see the module
/// doc). Returns what it removed, for the caller to report.
pub fn remove_stale_leftovers(data_dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(data_dir) else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter(|e| e.path().is_dir())
        .flat_map(|e| remove_stale_in(&e.path(), false))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_dead_writers_leftovers_go() {
        let dir = tempfile::tempdir().expect("tempdir");
        let table = dir.path().join("t");
        let dead = table.join(".tmp-v00000002-999999999");
        let live = table.join(format!(".tmp-v00000003-{}", std::process::id()));
        let version = table.join("v00000001");
        for d in [&dead, &live, &version] {
            std::fs::create_dir_all(d).expect("mkdir");
        }
        let removed = remove_stale_leftovers(dir.path());
        assert_eq!(removed, vec![dead.clone()]);
        assert!(!dead.exists() && live.exists() && version.exists());
        assert_eq!(writer_pid(".tmp-v00000003-42"), Some(42));
    }
}
