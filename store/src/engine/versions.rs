//! New table versions while serving. A reload ([`Engine::reload`]; every few seconds from
//! [`Engine::spawn_version_watcher`], at once from the Reload RPC) looks at the data directory,
//! and for each table with a complete version newer than the one served:
//!
//! 1. opens it (manifest, data file headers and lengths, checksum lists: a half-written or
//!    damaged version fails here), checks that it still fits every Engram group reading it, and
//!    builds its tiers with the table's shares of the RAM and VRAM budgets;
//! 2. reads a sample of its rows spread over every file, each block checked against its
//!    checksum (a corrupt version fails here);
//! 3. warms its RAM tier (and VRAM tier) with the ids the served version's traffic has been
//!    reading ([`super::recent_ids`]);
//! 4. swaps it in: a new [`Catalog`] with the version served, the version before it kept (from
//!    its files, no cache memory) for clients that pin it, and the groups relinked to it.
//!
//! A version that fails is refused with a log line and remembered (with the sizes and times of
//! its files, so a copy that is still arriving is tried again once it changes); the version
//! served goes on serving. Requests in flight keep the catalog they started with, so they finish
//! on the old version; a version dropped from the catalog has its directory removed once the
//! last request reading it is gone (only the last `keep_versions` stay on disk).
//!
//! Looking is polling, not inotify: it works the same on every filesystem the data directory
//! may live on (hostPath and network volumes, overlay filesystems, where inotify misses changes
//! made by other hosts or is not delivered at all), needs no watch per table directory (nor
//! handling of the watch limit, or of a directory that is replaced), and costs a directory
//! listing per table every interval, nothing next to serving.

use std::collections::{BTreeMap, HashMap};
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Weak};
use std::time::Instant;

use parking_lot::Mutex;
use tokio::sync::watch;

use super::build::{BudgetSplit, Built};
use super::catalog::{Catalog, TableVersions, Unavailable};
use super::served_table::{ServedTable, VersionDir};
use super::serving::{Engine, EngineError, open_group};
use crate::group::list_group_names;
use crate::table::{
    HeldRows, Manifest, OpenTable, TableError, complete_versions, list_table_names,
    version_dir_name,
};

/// Rows read and checked from a new version before it is served, at most.
const CHECK_ROWS: u64 = 4096;

/// What a reload did with one table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableReload {
    /// The table.
    pub table: String,
    /// Version served before (`None`: not served).
    pub previous: Option<u64>,
    /// Version served now (`None`: not served).
    pub version: Option<u64>,
    /// What happened.
    pub outcome: ReloadOutcome,
    /// Why a version was refused, or what was done.
    pub message: String,
}

impl TableReload {
    /// Adds what happened to one version to the message (newest version first).
    fn note(&mut self, why: String) {
        if !self.message.is_empty() {
            self.message.push_str("; ");
        }
        self.message.push_str(&why);
    }
}

/// What happened to one table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReloadOutcome {
    /// No newer complete version.
    Unchanged,
    /// A newer version is served now.
    Swapped,
    /// A table new to the data directory is served now.
    Added,
    /// The newer version was refused; the version served (if any) goes on.
    Refused,
}

/// The reload's own state.
#[derive(Debug)]
pub(crate) struct Versions {
    /// One reload at a time.
    running: tokio::sync::Mutex<()>,
    /// Versions refused, by (table, version): the fingerprint of their files then, and why.
    refused: Mutex<HashMap<(String, u64), (u64, String)>>,
    /// Versions no longer served whose directories go once nothing reads them.
    retired: Mutex<Vec<Retired>>,
    /// Bumped whenever what is served changes.
    generation: watch::Sender<u64>,
}

/// A version out of the catalog, waiting to drain.
#[derive(Debug)]
struct Retired {
    table: String,
    version: u64,
    path: PathBuf,
    /// Alive while anything serves from its files.
    held: Weak<VersionDir>,
}

impl Versions {
    pub(crate) fn new() -> Self {
        Self {
            running: tokio::sync::Mutex::new(()),
            refused: Mutex::new(HashMap::new()),
            retired: Mutex::new(Vec::new()),
            generation: watch::channel(0).0,
        }
    }

    /// Remembers that version `version` of `table` (in `table_dir`) was refused, and why.
    pub(crate) fn refuse(&self, table_dir: &Path, table: &str, version: u64, why: &str) {
        let fp = fingerprint(&table_dir.join(version_dir_name(version)));
        self.refused
            .lock()
            .insert((table.to_owned(), version), (fp, why.to_owned()));
    }

    /// Why the version was refused, if it was and its files have not changed since.
    fn refused_before(&self, table: &str, version: u64, fp: u64) -> Option<String> {
        self.refused
            .lock()
            .get(&(table.to_owned(), version))
            .filter(|(seen, _)| *seen == fp)
            .map(|(_, why)| why.clone())
    }

    /// Forgets the refusals of `tables` (all when empty).
    fn forget_refusals(&self, tables: &[String]) {
        self.refused
            .lock()
            .retain(|(t, _), _| !(tables.is_empty() || tables.contains(t)));
    }

    /// Tells watchers that what is served changed.
    pub(crate) fn changed(&self) {
        self.generation.send_modify(|g| *g += 1);
    }
}

/// A table directory as a reload finds it.
#[derive(Debug)]
struct OnDisk {
    name: String,
    /// Complete versions, newest first.
    versions: Vec<u64>,
    /// Fingerprints of the versions newer than the one served.
    fingerprints: HashMap<u64, u64>,
}

/// The tables under `data_dir` (those in `only`, if any) and their complete versions.
fn scan(
    data_dir: &Path,
    served: &HashMap<String, u64>,
    only: &[String],
) -> Result<Vec<OnDisk>, TableError> {
    let mut found = Vec::new();
    for name in list_table_names(data_dir)? {
        if !only.is_empty() && !only.contains(&name) {
            continue;
        }
        let dir = data_dir.join(&name);
        let versions = complete_versions(&dir);
        let served = served.get(&name).copied().unwrap_or(0);
        let fingerprints = versions
            .iter()
            .filter(|&&v| v > served)
            .map(|&v| (v, fingerprint(&dir.join(version_dir_name(v)))))
            .collect();
        found.push(OnDisk {
            name,
            versions,
            fingerprints,
        });
    }
    Ok(found)
}

/// Names, sizes and modification times of a version directory's files, hashed: changes while
/// a copy of the version is still arriving.
fn fingerprint(dir: &Path) -> u64 {
    let mut entries: Vec<(String, u64, i128)> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .filter_map(|e| {
            let m = e.metadata().ok()?;
            let modified = m
                .modified()
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_nanos() as i128);
            Some((
                e.file_name().to_string_lossy().into_owned(),
                m.len(),
                modified,
            ))
        })
        .collect();
    entries.sort();
    let mut h = std::hash::DefaultHasher::new();
    entries.hash(&mut h);
    h.finish()
}

/// Rows to check of a table of `rows` rows: up to [`CHECK_ROWS`], evenly spaced, and the last.
fn check_sample(rows: u64) -> Vec<u64> {
    if rows == 0 {
        return Vec::new();
    }
    let n = rows.min(CHECK_ROWS);
    let step = rows / n;
    let mut ids: Vec<u64> = (0..n).map(|i| i * step).collect();
    ids.push(rows - 1);
    ids.dedup();
    ids
}

/// [`check_sample`] of the rows a version holds: the whole table, or each range of a partial
/// copy.
fn check_sample_held(rows: u64, held: Option<&HeldRows>) -> Vec<u64> {
    match held {
        None => check_sample(rows),
        Some(h) => h
            .ranges()
            .flat_map(|r| {
                check_sample(r.end - r.start)
                    .into_iter()
                    .map(move |i| r.start + i)
            })
            .collect(),
    }
}

/// Why `m` (a new version of table `name`) cannot be read by the Engram groups of `catalog`
/// that read that table, if it cannot.
fn misfit(catalog: &Catalog, name: &str, m: &Manifest) -> Option<String> {
    for group in catalog.groups() {
        let layout = group.layout();
        for layer in group.layers() {
            if layer.table().manifest().name != name {
                continue;
            }
            let rows = layout.layer(layer.layer_id()).map_or(0, |l| l.row_count());
            if m.rows != rows || m.row_dim as usize != layout.row_dim() {
                return Some(format!(
                    "it has {} rows x {}, and Engram group {:?} reads it as layer {} of {} rows \
                     x {}",
                    m.rows,
                    m.row_dim,
                    group.name(),
                    layer.layer_id(),
                    rows,
                    layout.row_dim()
                ));
            }
        }
    }
    None
}

/// Runs blocking file work off the runtime's workers.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, EngineError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| EngineError::Reload(format!("a file task failed: {e}")))
}

impl Engine {
    /// Looks at the data directory now and serves every new complete version of the tables
    /// named in `only` (every table, and tables and groups new to the directory, when empty);
    /// see the module doc. With `retry_refused`, versions refused before are tried again.
    /// Returns what happened to each table looked at.
    pub async fn reload(
        &self,
        only: &[String],
        retry_refused: bool,
    ) -> Result<Vec<TableReload>, EngineError> {
        let _one_at_a_time = self.versions.running.lock().await;
        if retry_refused {
            self.versions.forget_refusals(only);
        }
        let before = self.catalog();
        let served: HashMap<String, u64> = before
            .table_versions()
            .map(|(name, v)| (name.clone(), v.current.version()))
            .collect();
        let data_dir = self.config().data_dir.clone();
        let found = {
            let (data_dir, only) = (data_dir.clone(), only.to_vec());
            blocking(move || scan(&data_dir, &served, &only))
                .await?
                .map_err(EngineError::DataDir)?
        };
        let mut next = Catalog::clone(&before);
        let mut report = Vec::new();
        let mut swapped = Vec::new();
        let mut refused_unserved = Vec::new();
        for disk in &found {
            let current = next.tables.get(&disk.name).map(|v| v.current.clone());
            let previous = current.as_ref().map(|t| t.version());
            let mut line = TableReload {
                table: disk.name.clone(),
                previous,
                version: previous,
                outcome: ReloadOutcome::Unchanged,
                message: String::new(),
            };
            let newer = disk.versions.iter().filter(|&&v| Some(v) > previous);
            for &v in newer {
                let fp = disk.fingerprints.get(&v).copied().unwrap_or(0);
                if let Some(why) = self.versions.refused_before(&disk.name, v, fp) {
                    line.outcome = ReloadOutcome::Refused;
                    line.note(format!("version {v} was refused: {why}"));
                    continue;
                }
                let started = Instant::now();
                match self
                    .load_version(&next, &disk.name, v, current.as_ref())
                    .await
                {
                    Ok((built, warmed)) => {
                        let older = match current {
                            Some(_) => Vec::new(),
                            None => self.open_older(&disk.name, v, &disk.versions).await,
                        };
                        let took = started.elapsed();
                        self.install(&mut next, &disk.name, built, older, &disk.versions);
                        tracing::info!(table = %disk.name, from = ?previous, to = v, warmed_rows = warmed,
                            took_ms = took.as_millis() as u64, "serving a new table version");
                        line.version = Some(v);
                        line.outcome = if previous.is_some() {
                            ReloadOutcome::Swapped
                        } else {
                            ReloadOutcome::Added
                        };
                        line.note(format!(
                            "version {v} opened, checked, warmed with {warmed} rows and swapped \
                             in ({} ms)",
                            took.as_millis()
                        ));
                        swapped.push(disk.name.clone());
                        break;
                    }
                    Err(why) => {
                        tracing::error!(table = %disk.name, version = v, serving = ?previous, error = %why,
                            "new table version refused; the version served goes on serving");
                        self.versions
                            .refused
                            .lock()
                            .insert((disk.name.clone(), v), (fp, why.clone()));
                        line.outcome = ReloadOutcome::Refused;
                        line.note(format!("version {v} refused: {why}"));
                    }
                }
            }
            if line.outcome == ReloadOutcome::Refused && previous.is_none() {
                refused_unserved.push((disk.name.clone(), line.message.clone()));
            }
            report.push(line);
        }
        for name in only {
            if !found.iter().any(|d| &d.name == name) {
                report.push(TableReload {
                    table: name.clone(),
                    previous: served_version(&next, name),
                    version: served_version(&next, name),
                    outcome: ReloadOutcome::Refused,
                    message: format!(
                        "no complete version of table {name:?} under {}",
                        data_dir.display()
                    ),
                });
            }
        }

        let mut changed = !swapped.is_empty();
        if changed {
            self.relink_groups(&mut next, &swapped);
            next.unavailable
                .retain(|u| !(u.kind == "table" && swapped.contains(&u.name)));
        }
        for (name, why) in refused_unserved {
            next.unavailable
                .retain(|u| !(u.kind == "table" && u.name == name));
            next.unavailable.push(Unavailable {
                name: name.clone(),
                kind: "table",
                error: Arc::new(EngineError::Reload(why)),
            });
            changed = true;
        }
        if only.is_empty() {
            changed |= self
                .reload_groups(&mut next, changed || retry_refused)
                .await?;
        }
        if changed {
            self.publish(next);
        }
        self.collect_drained().await;
        Ok(report)
    }

    /// Opens, checks and warms version `version` of table `name`; returns it built, and the
    /// rows it was warmed with, or why it is refused.
    async fn load_version(
        &self,
        next: &Catalog,
        name: &str,
        version: u64,
        current: Option<&Arc<ServedTable>>,
    ) -> Result<(Built, usize), String> {
        let dir = self
            .config()
            .data_dir
            .join(name)
            .join(version_dir_name(version));
        let direct = self.config().direct_io;
        let table = blocking(move || OpenTable::open_dir(&dir, direct))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
        let m = &table.manifest;
        if m.name != name || m.version != version {
            return Err(format!(
                "its manifest says table {:?} version {}",
                m.name, m.version
            ));
        }
        if let Some(why) = misfit(next, name, m) {
            return Err(why);
        }
        let (ram_share, gpu_share) = match next.tables.get(name) {
            Some(v) => (v.ram_share, v.gpu_share),
            None => self.new_table_shares(next, name, m.data_bytes()),
        };
        let built = self
            .builder()
            .build(table, ram_share, gpu_share)
            .map_err(|e| e.to_string())?;
        built
            .table
            .check_rows(&check_sample_held(
                built.table.manifest().rows,
                built.table.held_rows().as_ref(),
            ))
            .await
            .map_err(|e| format!("checking a sample of its rows: {e}"))?;
        let warmed = match current {
            Some(old) => self.warm(&built, old).await?,
            None => 0,
        };
        Ok((built, warmed))
    }

    /// Opens, from their files, the versions of a table new to the catalog that come before
    /// `current`, as many as are kept (`keep_versions - 1`), for clients that pin them; a
    /// version that does not open is left out.
    async fn open_older(&self, name: &str, current: u64, on_disk: &[u64]) -> Vec<Arc<ServedTable>> {
        let keep = self.config().keep_versions.max(1) - 1;
        let mut older = Vec::new();
        for &v in on_disk.iter().filter(|&&v| v < current).take(keep) {
            let dir = self.config().data_dir.join(name).join(version_dir_name(v));
            let direct = self.config().direct_io;
            match blocking(move || OpenTable::open_dir(&dir, direct)).await {
                Ok(Ok(t)) => older.push(self.builder().files_only(t)),
                Ok(Err(e)) => tracing::warn!(table = %name, version = v, error = %e,
                    "an older version does not open: it cannot be pinned"),
                Err(e) => tracing::warn!(table = %name, version = v, error = %e,
                    "an older version was not opened"),
            }
        }
        older
    }

    /// Warms `built`'s cache tiers with the ids `old`'s traffic has been reading, as many as
    /// they hold: the ids of host requests through the host requests' cascade, the ids asked
    /// for on each device through that device's (so each VRAM tier is warmed with its own hot
    /// rows); returns the rows read.
    async fn warm(&self, built: &Built, old: &ServedTable) -> Result<usize, String> {
        let table = &built.table;
        let rows = table.manifest().rows;
        #[cfg(feature = "cuda")]
        let gpu_rows = built
            .gpus
            .iter()
            .map(|g| g.capacity_rows() as u64)
            .max()
            .unwrap_or(0);
        #[cfg(not(feature = "cuda"))]
        let gpu_rows = 0u64;
        let room = table.ram_capacity_rows().max(gpu_rows);
        if room == 0 {
            return Ok(0);
        }
        let mut warmed = 0;
        // `None`: the host requests' cascade; then each device's.
        let cascades: Vec<Option<usize>> = std::iter::once(None)
            .chain(table.gpu_devices().map(Some))
            .collect();
        for device in cascades {
            let mut ids = old.recent_ids(device);
            ids.retain(|&id| id < rows && table.holds(&(id..id + 1)));
            if ids.len() as u64 > room {
                // Spread over the sample rather than its lowest ids.
                let keep = room as usize;
                let total = ids.len();
                ids = (0..keep).map(|k| ids[k * total / keep]).collect();
            }
            if ids.is_empty() {
                continue;
            }
            table.prefetch_for(device, &ids).await.map_err(|e| {
                let on = device.map_or_else(String::new, |d| format!(" for GPU {d}"));
                format!("warming its cache{on} with {} rows: {e}", ids.len())
            })?;
            warmed += ids.len();
        }
        #[cfg(feature = "cuda")]
        if let Err(e) = super::build::refresh_gpu_now(built).await {
            tracing::warn!(table = %table.manifest().name, error = %e,
                "VRAM of the new version not warmed; its background refresh fills it");
        }
        Ok(warmed)
    }

    /// Shares of the RAM and VRAM budgets (the VRAM share on each device) for `table`, new to
    /// the catalog, of `bytes` data bytes: what it would get among the tables served (VRAM by
    /// weight, as at start), out of what no table holds yet.
    fn new_table_shares(&self, catalog: &Catalog, table: &str, bytes: u64) -> (u64, u64) {
        let c = self.config();
        let split = BudgetSplit::among(
            c,
            catalog
                .table_versions()
                .map(|(name, v)| (name.as_str(), v.current.manifest().data_bytes()))
                .chain([(table, bytes)]),
        );
        let (ram, gpu) = split.shares(table, bytes);
        let held_ram: u64 = catalog.tables.values().map(|v| v.ram_share).sum();
        let held_gpu: u64 = catalog.tables.values().map(|v| v.gpu_share).sum();
        (
            ram.min(c.ram_cache_bytes.saturating_sub(held_ram)),
            gpu.min(c.gpu_budget_bytes.saturating_sub(held_gpu)),
        )
    }

    /// Puts `built` in `next` as the version served of `name`; the version it replaces stays
    /// (from its files) for clients that pin it, as do the ones before it up to
    /// `keep_versions`; older versions are retired. `on_disk` lists the complete versions on
    /// disk, newest first.
    fn install(
        &self,
        next: &mut Catalog,
        name: &str,
        built: Built,
        older: Vec<Arc<ServedTable>>,
        on_disk: &[u64],
    ) {
        let keep = self.config().keep_versions.max(1);
        let Built {
            table,
            ram_share,
            gpu_share,
            ..
        } = built;
        let entry = match next.tables.get_mut(name) {
            Some(entry) => {
                let old = std::mem::replace(&mut entry.current, table);
                entry.older.insert(0, Arc::new(old.files_only()));
                entry
            }
            None => next.tables.entry(name.to_owned()).or_insert(TableVersions {
                current: table,
                older,
                ram_share,
                gpu_share,
            }),
        };
        let dropped = entry.older.split_off((keep - 1).min(entry.older.len()));
        // Nothing kept open goes, nor any of the `keep` newest versions on disk up to the one
        // served (open or not).
        let current = entry.current.version();
        let window = on_disk
            .iter()
            .copied()
            .filter(|&v| v <= current)
            .nth(keep - 1)
            .unwrap_or(0);
        let oldest_kept = entry
            .all()
            .map(|t| t.version())
            .chain([window])
            .min()
            .unwrap_or(0);
        let table_dir = self.config().data_dir.join(name);
        let mut retired = self.versions.retired.lock();
        let dropped_dirs = dropped.iter().map(|t| {
            (
                t.version(),
                t.version_dir().path().to_path_buf(),
                Arc::downgrade(t.version_dir()),
            )
        });
        // Versions on disk older than those kept and never opened here are held by nothing:
        // they go at once.
        let never_opened = on_disk
            .iter()
            .filter(|&&v| v < oldest_kept && !dropped.iter().any(|t| t.version() == v))
            .map(|&v| (v, table_dir.join(version_dir_name(v)), Weak::new()));
        for (version, path, held) in dropped_dirs.chain(never_opened) {
            if !retired.iter().any(|r| r.path == path) {
                retired.push(Retired {
                    table: name.to_owned(),
                    version,
                    path,
                    held,
                });
            }
        }
    }

    /// Relinks the groups that read any of `tables` to the versions `next` serves.
    fn relink_groups(&self, next: &mut Catalog, tables: &[String]) {
        let current = next.current_tables();
        let mut relinked = BTreeMap::new();
        for (name, group) in &next.groups {
            if !group
                .layers()
                .any(|l| tables.contains(&l.table().manifest().name))
            {
                continue;
            }
            match group.relink(&current) {
                Ok(g) => {
                    relinked.insert(name.clone(), Arc::new(g));
                }
                // Checked before the versions were loaded; if it fails anyway, the group goes
                // on reading the versions it was linked to.
                Err(e) => tracing::error!(group = %name, error = %e,
                    "Engram group not relinked to its tables' new versions"),
            }
        }
        next.groups.extend(relinked);
    }

    /// Opens the Engram groups of the data directory that `next` does not serve: new ones,
    /// and, with `retry`, those found before but not served. Returns whether `next` changed.
    async fn reload_groups(&self, next: &mut Catalog, retry: bool) -> Result<bool, EngineError> {
        let data_dir = self.config().data_dir.clone();
        let names = {
            let d = data_dir.clone();
            blocking(move || list_group_names(&d))
                .await?
                .map_err(EngineError::GroupDir)?
        };
        let mut changed = false;
        for name in names {
            if next.groups.contains_key(&name) {
                continue;
            }
            let known = next
                .unavailable
                .iter()
                .any(|u| u.kind == "Engram group" && u.name == name);
            if known && !retry {
                continue;
            }
            let (d, n, tables) = (data_dir.clone(), name.clone(), next.current_tables());
            let opened = blocking(move || open_group(&d, &n, &tables)).await?;
            next.unavailable
                .retain(|u| !(u.kind == "Engram group" && u.name == name));
            match opened {
                Ok(group) => {
                    tracing::info!(group = %name, "serving a new Engram group");
                    next.groups.insert(name, Arc::new(group));
                }
                Err(error) => {
                    if !known {
                        tracing::error!(group = %name, error = %error, "Engram group not served");
                    }
                    next.unavailable.push(Unavailable {
                        name,
                        kind: "Engram group",
                        error: Arc::new(error),
                    });
                }
            }
            changed = true;
        }
        Ok(changed)
    }

    /// Removes the directories of retired versions nothing reads any more.
    pub(crate) async fn collect_drained(&self) {
        let drained: Vec<Retired> = {
            let mut retired = self.versions.retired.lock();
            let (gone, waiting): (Vec<Retired>, Vec<Retired>) =
                retired.drain(..).partition(|r| r.held.strong_count() == 0);
            *retired = waiting;
            gone
        };
        if drained.is_empty() {
            return;
        }
        {
            let mut refused = self.versions.refused.lock();
            for r in &drained {
                refused.remove(&(r.table.clone(), r.version));
            }
        }
        let removed = blocking(move || {
            for r in drained {
                match std::fs::remove_dir_all(&r.path) {
                    Ok(()) => tracing::info!(table = %r.table, version = r.version,
                        "removed a table version no request reads any more"),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => tracing::warn!(table = %r.table, version = r.version,
                        path = %r.path.display(), error = %e, "could not remove an old table version"),
                }
            }
        })
        .await;
        if let Err(e) = removed {
            tracing::warn!(error = %e, "removing old table versions failed");
        }
    }

    /// A receiver told whenever what is served changes (a version swapped in, a table or group
    /// added or found unservable).
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.versions.generation.subscribe()
    }

    /// Runs [`Engine::reload`] every `version_watch` (none when zero), and removes drained
    /// versions, until the engine is dropped or the task aborted.
    pub fn spawn_version_watcher(self: &Arc<Self>) -> Option<tokio::task::JoinHandle<()>> {
        let every = self.config().version_watch;
        if every.is_zero() {
            return None;
        }
        let engine = Arc::downgrade(self);
        Some(tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                let Some(engine) = engine.upgrade() else {
                    return;
                };
                if let Err(e) = engine.reload(&[], false).await {
                    tracing::warn!(error = %e, "looking for new table versions failed");
                }
            }
        }))
    }
}

/// The version of `name` that `catalog` serves.
fn served_version(catalog: &Catalog, name: &str) -> Option<u64> {
    catalog.tables.get(name).map(|v| v.current.version())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_samples_cover_the_table_evenly_and_its_last_row() {
        assert!(check_sample(0).is_empty());
        assert_eq!(check_sample(1), vec![0]);
        assert_eq!(check_sample(5), vec![0, 1, 2, 3, 4]);
        let s = check_sample(1_000_000);
        assert_eq!(s.len() as u64, CHECK_ROWS + 1);
        assert_eq!((s[0], s[1], *s.last().expect("rows")), (0, 244, 999_999));
    }

    #[test]
    fn fingerprints_change_with_the_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let a = fingerprint(dir.path());
        std::fs::write(dir.path().join("data-00000.bin"), b"abc").expect("write");
        let b = fingerprint(dir.path());
        assert_ne!(a, b);
        assert_eq!(b, fingerprint(dir.path()));
        std::fs::write(dir.path().join("data-00000.bin"), b"abcd").expect("grow");
        assert_ne!(b, fingerprint(dir.path()));
    }
}
