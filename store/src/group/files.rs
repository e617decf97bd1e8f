//! The group directory `DATA/<name>.engram/`: `group.json` (what the group is and which table
//! serves each layer), `layout.json` (the validated layout, as `engram-store-hashing` reads it)
//! and `compress.npy` (the compression map, the bytes given at creation). The directory is
//! written under a temporary name, synced, and renamed into place, so a group directory that
//! exists is complete; its tables are written before it.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use engram_store_hashing::{CompressionMap, Layout};
use serde::{Deserialize, Serialize};

use super::error::GroupError;
use crate::table::valid_table_name;

/// Suffix of a group's directory name.
pub const GROUP_DIR_SUFFIX: &str = ".engram";
/// The group's description inside its directory.
pub const GROUP_META_FILE: &str = "group.json";
/// The layout inside a group directory.
pub const LAYOUT_FILE: &str = "layout.json";
/// The compression map inside a group directory.
pub const MAP_FILE: &str = "compress.npy";
/// Value of [`GroupMeta::format`].
pub const GROUP_FORMAT: &str = "engram-store-group";
/// Value of [`GroupMeta::format_version`].
const GROUP_FORMAT_VERSION: u32 = 1;
/// Longest group name (leaves room for `.layer<u32>` within a table name's 128 bytes).
const MAX_GROUP_NAME: usize = 100;

/// `group.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupMeta {
    /// Always [`GROUP_FORMAT`].
    pub format: String,
    /// Format version of the group directory.
    pub format_version: u32,
    /// Group name.
    pub name: String,
    /// The table serving each layer of the layout.
    pub layers: Vec<GroupLayerMeta>,
    /// Where the tables came from (free text).
    #[serde(default)]
    pub source: String,
    /// Creation time, seconds since the Unix epoch.
    #[serde(default)]
    pub created_unix: u64,
}

/// One layer of [`GroupMeta`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupLayerMeta {
    /// Layer id, as in the layout.
    pub layer_id: u32,
    /// Table holding its rows.
    pub table: String,
}

impl GroupMeta {
    /// The description of group `name` over `layout`, with the default table names.
    pub fn new(name: &str, layout: &Layout, source: String) -> Self {
        Self {
            format: GROUP_FORMAT.into(),
            format_version: GROUP_FORMAT_VERSION,
            name: name.into(),
            layers: layout
                .layers()
                .iter()
                .map(|l| GroupLayerMeta {
                    layer_id: l.layer_id(),
                    table: layer_table_name(name, l.layer_id()),
                })
                .collect(),
            source,
            created_unix: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
        }
    }

    /// The table of `layer_id`.
    pub fn table_of(&self, layer_id: u32) -> Option<&str> {
        self.layers
            .iter()
            .find(|l| l.layer_id == layer_id)
            .map(|l| l.table.as_str())
    }

    /// Checks the fields against each other and against `layout`.
    fn validate(&self, dir_name: &str, layout: &Layout) -> Result<(), String> {
        if self.format != GROUP_FORMAT || self.format_version != GROUP_FORMAT_VERSION {
            return Err(format!(
                "format {:?} version {}, expected {GROUP_FORMAT:?} version {GROUP_FORMAT_VERSION}",
                self.format, self.format_version
            ));
        }
        if format!("{}{GROUP_DIR_SUFFIX}", self.name) != dir_name {
            return Err(format!(
                "names group {:?} but lies in directory {dir_name:?}",
                self.name
            ));
        }
        for layer in layout.layers() {
            match self.table_of(layer.layer_id()) {
                Some(t) if valid_table_name(t) => {}
                Some(t) => return Err(format!("table name {t:?} is not a valid table name")),
                None => {
                    return Err(format!(
                        "names no table for layer {} of the layout",
                        layer.layer_id()
                    ));
                }
            }
        }
        if self.layers.len() != layout.layers().len() {
            return Err(format!(
                "lists {} layers, the layout has {}",
                self.layers.len(),
                layout.layers().len()
            ));
        }
        Ok(())
    }
}

/// A group as loaded from its directory.
#[derive(Debug, Clone)]
pub struct GroupFiles {
    /// `group.json`.
    pub meta: GroupMeta,
    /// `layout.json`, validated.
    pub layout: Layout,
    /// `compress.npy`, checked against the layout.
    pub map: CompressionMap,
}

/// Table name of layer `layer_id` of group `group`: `<group>.layer<layer_id>`.
pub fn layer_table_name(group: &str, layer_id: u32) -> String {
    format!("{group}.layer{layer_id}")
}

/// Directory of group `name` under `data_dir`.
pub fn group_dir(data_dir: &Path, name: &str) -> PathBuf {
    data_dir.join(format!("{name}{GROUP_DIR_SUFFIX}"))
}

/// Checks a group name.
pub(crate) fn check_group_name(name: &str) -> Result<(), GroupError> {
    if name.len() <= MAX_GROUP_NAME && valid_table_name(name) {
        Ok(())
    } else {
        Err(GroupError::InvalidName(name.into()))
    }
}

/// Names of the groups under `data_dir` (directories `<name>.engram` holding a `group.json`).
pub fn list_group_names(data_dir: &Path) -> Result<Vec<String>, GroupError> {
    let entries = std::fs::read_dir(data_dir)
        .map_err(|e| GroupError::io(format!("list data directory {}", data_dir.display()), e))?;
    let mut names: Vec<String> = entries
        .filter_map(Result::ok)
        .filter_map(|e| {
            let file_name = e.file_name();
            let name = file_name
                .to_str()?
                .strip_suffix(GROUP_DIR_SUFFIX)?
                .to_owned();
            (!name.is_empty()
                && valid_table_name(&name)
                && e.path().join(GROUP_META_FILE).is_file())
            .then_some(name)
        })
        .collect();
    names.sort();
    Ok(names)
}

impl GroupFiles {
    /// Loads and checks group `name` under `data_dir`.
    pub fn load(data_dir: &Path, name: &str) -> Result<Self, GroupError> {
        let dir = group_dir(data_dir, name);
        let layout = Layout::load(dir.join(LAYOUT_FILE)).map_err(|source| GroupError::Layout {
            group: name.into(),
            source,
        })?;
        let map_err = |source| GroupError::Map {
            group: name.into(),
            source,
        };
        let map = CompressionMap::load(dir.join(MAP_FILE)).map_err(map_err)?;
        map.check_layout(&layout).map_err(map_err)?;
        let meta_path = dir.join(GROUP_META_FILE);
        let bytes = std::fs::read(&meta_path)
            .map_err(|e| GroupError::io(format!("read {}", meta_path.display()), e))?;
        let meta: GroupMeta = serde_json::from_slice(&bytes).map_err(|e| GroupError::Meta {
            path: meta_path.clone(),
            message: format!("bad JSON: {e}"),
        })?;
        let dir_name = format!("{name}{GROUP_DIR_SUFFIX}");
        meta.validate(&dir_name, &layout)
            .map_err(|message| GroupError::Meta {
                path: meta_path,
                message,
            })?;
        Ok(Self { meta, layout, map })
    }

    /// Publishes a group directory: writes `group.json`, `layout.json` and the map bytes into a
    /// temporary directory, syncs them, and renames it to `<name>.engram`. Fails if the group
    /// exists.
    pub(crate) fn publish(
        data_dir: &Path,
        meta: &GroupMeta,
        layout: &Layout,
        map_npy: &[u8],
    ) -> Result<PathBuf, GroupError> {
        let final_dir = group_dir(data_dir, &meta.name);
        if final_dir.exists() {
            return Err(GroupError::Exists {
                name: meta.name.clone(),
                dir: final_dir,
            });
        }
        let tmp = data_dir.join(format!(
            ".tmp-{}{GROUP_DIR_SUFFIX}-{}",
            meta.name,
            std::process::id()
        ));
        if tmp.exists() {
            let _ = std::fs::remove_dir_all(&tmp);
        }
        std::fs::create_dir_all(&tmp)
            .map_err(|e| GroupError::io(format!("create {}", tmp.display()), e))?;
        let written = (|| {
            let layout_json = layout.to_json().map_err(|source| GroupError::Layout {
                group: meta.name.clone(),
                source,
            })?;
            let meta_json = serde_json::to_vec_pretty(meta).map_err(|e| GroupError::Meta {
                path: tmp.join(GROUP_META_FILE),
                message: e.to_string(),
            })?;
            write_synced(&tmp.join(LAYOUT_FILE), layout_json.as_bytes())?;
            write_synced(&tmp.join(MAP_FILE), map_npy)?;
            write_synced(&tmp.join(GROUP_META_FILE), &meta_json)?;
            sync_dir(&tmp)?;
            std::fs::rename(&tmp, &final_dir).map_err(|e| {
                GroupError::io(
                    format!("rename {} to {}", tmp.display(), final_dir.display()),
                    e,
                )
            })?;
            sync_dir(data_dir)
        })();
        if written.is_err() {
            let _ = std::fs::remove_dir_all(&tmp);
        }
        written.map(|()| final_dir)
    }
}

fn write_synced(path: &Path, bytes: &[u8]) -> Result<(), GroupError> {
    let mut f =
        File::create(path).map_err(|e| GroupError::io(format!("create {}", path.display()), e))?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .map_err(|e| GroupError::io(format!("write {}", path.display()), e))
}

fn sync_dir(dir: &Path) -> Result<(), GroupError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| GroupError::io(format!("fsync directory {}", dir.display()), e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_listing() {
        assert_eq!(layer_table_name("demo", 15), "demo.layer15");
        assert!(check_group_name("demo").is_ok());
        assert!(check_group_name(".hidden").is_err());
        assert!(check_group_name(&"x".repeat(101)).is_err());
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(dir.path().join("a.engram")).expect("mkdir");
        std::fs::create_dir(dir.path().join("b.engram")).expect("mkdir");
        std::fs::write(dir.path().join("b.engram").join(GROUP_META_FILE), b"{}").expect("write");
        // a.engram has no group.json: not a group (yet).
        assert_eq!(list_group_names(dir.path()).expect("list"), vec!["b"]);
    }

    #[test]
    fn publishes_once_and_loads_back() {
        let dir = tempfile::tempdir().expect("tempdir");
        let layout = Layout::demo();
        let meta = GroupMeta::new("d", &layout, "test".into());
        // A 1-D int64 .npy of raw -> compressed ids.
        let mut npy = b"\x93NUMPY\x01\x00".to_vec();
        let mut header = "{'descr': '<i8', 'fortran_order': False, 'shape': (3,), }".to_owned();
        while !(10 + header.len() + 1).is_multiple_of(64) {
            header.push(' ');
        }
        header.push('\n');
        npy.extend_from_slice(&(header.len() as u16).to_le_bytes());
        npy.extend_from_slice(header.as_bytes());
        for id in [0i64, 5, 2] {
            npy.extend_from_slice(&id.to_le_bytes());
        }
        let at = GroupFiles::publish(dir.path(), &meta, &layout, &npy).expect("publish");
        assert_eq!(at, group_dir(dir.path(), "d"));
        let loaded = GroupFiles::load(dir.path(), "d").expect("load");
        assert_eq!(loaded.meta, meta);
        assert_eq!(loaded.layout, layout);
        assert_eq!(loaded.map.as_slice(), &[0, 5, 2]);
        assert_eq!(loaded.meta.table_of(15), Some("d.layer15"));
        let again = GroupFiles::publish(dir.path(), &meta, &layout, &npy);
        assert!(matches!(again, Err(GroupError::Exists { .. })), "{again:?}");
    }
}
