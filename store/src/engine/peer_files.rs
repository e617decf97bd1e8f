//! The files of what this server serves that a peer may read (`ReadTableFile`): the manifest,
//! data files and checksum files of a table version it serves or keeps, and the three files of
//! an Engram group's directory. A file is named as the version's manifest names it, never by a
//! path: a name the manifest does not list is refused, so no request reaches another file.

use std::path::PathBuf;

use super::error::LookupError;
use super::serving::Engine;
use crate::group::{GROUP_META_FILE, LAYOUT_FILE, MAP_FILE, group_dir};
use crate::table::{HELD_ROWS_FILE, MANIFEST_FILE};

impl Engine {
    /// The path of file `file` of version `version` of table `table` (a version served or
    /// kept): `manifest.json`, a data or checksum file its manifest lists, or `held_rows.json`
    /// of a partial copy.
    pub fn table_file(
        &self,
        table: &str,
        version: u64,
        file: &str,
    ) -> Result<PathBuf, LookupError> {
        let catalog = self.catalog();
        let served = catalog.table_at(table, Some(version))?;
        let m = served.manifest();
        let mut listed: Vec<&str> = vec![MANIFEST_FILE];
        if served.held_rows().is_some() {
            listed.push(HELD_ROWS_FILE);
        }
        for f in &m.files {
            listed.push(&f.path);
            listed.push(&f.sums);
        }
        if !listed.contains(&file) {
            return Err(LookupError::NoSuchFile {
                of: format!("table {table:?} version {version}"),
                file: file.to_owned(),
                listed: listed.join(", "),
            });
        }
        Ok(served.version_dir().path().join(file))
    }

    /// The path of file `file` of Engram group `group`'s directory (`group.json`,
    /// `layout.json`, `compress.npy`).
    pub fn group_file(&self, group: &str, file: &str) -> Result<PathBuf, LookupError> {
        self.group(group)?;
        let listed = [GROUP_META_FILE, LAYOUT_FILE, MAP_FILE];
        if !listed.contains(&file) {
            return Err(LookupError::NoSuchFile {
                of: format!("Engram group {group:?}"),
                file: file.to_owned(),
                listed: listed.join(", "),
            });
        }
        Ok(group_dir(&self.config().data_dir, group).join(file))
    }
}
