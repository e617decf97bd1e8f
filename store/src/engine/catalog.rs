//! What the engine serves at one moment: every table (the version served, and the older
//! versions kept for clients that pin them), the Engram groups over the tables, and what was
//! found but is not served. A catalog never changes: a new table version makes a new catalog,
//! swapped in whole ([`CatalogCell`]), and a request takes one snapshot when it starts and reads
//! only from it, so it is answered wholly from one version, and requests in flight finish on the
//! version they started on.

use std::collections::BTreeMap;
use std::sync::Arc;

use parking_lot::RwLock;

use super::error::LookupError;
use super::group::ServedGroup;
use super::served_table::ServedTable;
use super::serving::EngineError;

/// A table or group found in the data directory that is not served, and why.
#[derive(Debug, Clone)]
pub struct Unavailable {
    /// Its name.
    pub name: String,
    /// "table" or "Engram group".
    pub kind: &'static str,
    /// Why it is not served.
    pub error: Arc<EngineError>,
}

/// The versions of one table being served.
#[derive(Debug, Clone)]
pub struct TableVersions {
    /// The version requests get unless they pin another.
    pub current: Arc<ServedTable>,
    /// Older versions kept for clients that pin them, newest first, served from their files.
    pub older: Vec<Arc<ServedTable>>,
    /// The current version's share of the RAM budget, bytes.
    pub(crate) ram_share: u64,
    /// The current version's share of the VRAM budget, bytes.
    pub(crate) gpu_share: u64,
}

impl TableVersions {
    /// Every version kept, newest first.
    pub fn all(&self) -> impl Iterator<Item = &Arc<ServedTable>> {
        std::iter::once(&self.current).chain(&self.older)
    }

    /// The version numbers kept, newest first, e.g. "3, 2".
    fn listed(&self) -> String {
        self.all()
            .map(|t| t.version().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Everything served at one moment.
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    pub(crate) tables: BTreeMap<String, TableVersions>,
    pub(crate) groups: BTreeMap<String, Arc<ServedGroup>>,
    pub(crate) unavailable: Vec<Unavailable>,
}

impl Catalog {
    /// The version served of table `name`.
    pub fn table(&self, name: &str) -> Result<&Arc<ServedTable>, LookupError> {
        self.table_at(name, None)
    }

    /// Version `version` of table `name` (`None`: the version served). A version not kept is
    /// an error naming it and the versions kept.
    pub fn table_at(
        &self,
        name: &str,
        version: Option<u64>,
    ) -> Result<&Arc<ServedTable>, LookupError> {
        let versions = self.versions(name)?;
        let Some(v) = version else {
            return Ok(&versions.current);
        };
        versions
            .all()
            .find(|t| t.version() == v)
            .ok_or_else(|| LookupError::VersionNotServed {
                table: name.to_owned(),
                version: v,
                kept: versions.listed(),
            })
    }

    /// Every version kept of table `name`.
    pub fn versions(&self, name: &str) -> Result<&TableVersions, LookupError> {
        self.tables
            .get(name)
            .ok_or_else(|| LookupError::UnknownTable {
                name: name.to_owned(),
                known: self.tables.keys().cloned().collect::<Vec<_>>().join(", "),
            })
    }

    /// The version served of every table, by name.
    pub fn tables(&self) -> impl Iterator<Item = &Arc<ServedTable>> {
        self.tables.values().map(|v| &v.current)
    }

    /// The version served of every table, by name, as a map (what groups are linked with).
    pub(crate) fn current_tables(&self) -> BTreeMap<String, Arc<ServedTable>> {
        self.tables
            .iter()
            .map(|(name, v)| (name.clone(), v.current.clone()))
            .collect()
    }

    /// Every table's versions, by name.
    pub fn table_versions(&self) -> impl Iterator<Item = (&String, &TableVersions)> {
        self.tables.iter()
    }

    /// The Engram group called `name`.
    pub fn group(&self, name: &str) -> Result<&Arc<ServedGroup>, LookupError> {
        self.groups
            .get(name)
            .ok_or_else(|| LookupError::UnknownGroup {
                name: name.to_owned(),
                known: self.groups.keys().cloned().collect::<Vec<_>>().join(", "),
            })
    }

    /// Every Engram group, by name.
    pub fn groups(&self) -> impl Iterator<Item = &Arc<ServedGroup>> {
        self.groups.values()
    }

    /// Tables and groups found but not served, and why.
    pub fn unavailable(&self) -> &[Unavailable] {
        &self.unavailable
    }
}

/// The catalog served now; replaced whole.
#[derive(Debug, Default)]
pub(crate) struct CatalogCell {
    now: RwLock<Arc<Catalog>>,
}

impl CatalogCell {
    pub(crate) fn new(catalog: Catalog) -> Self {
        Self {
            now: RwLock::new(Arc::new(catalog)),
        }
    }

    /// A snapshot.
    pub(crate) fn load(&self) -> Arc<Catalog> {
        self.now.read().clone()
    }

    /// Replaces the catalog; requests that took a snapshot before keep theirs.
    pub(crate) fn store(&self, catalog: Catalog) {
        *self.now.write() = Arc::new(catalog);
    }
}
