//! The table both systems serve: a synthetic engram-store table written with
//! [`synth_table`] into the given data directory (reusing a table there of the same name, shape
//! and seed) or into a temporary one. Redis gets the same rows from [`super::verify::RowCheck`].

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, ensure};
use engram_store::ingest::{SynthSpec, WriteOptions, synth_table};
use engram_store::table::{DType, Manifest, OpenTable, list_table_names};

/// A synthetic table on disk.
#[derive(Debug)]
pub struct Dataset {
    data_dir: PathBuf,
    version_dir: PathBuf,
    /// Its manifest.
    pub manifest: Manifest,
    /// Whether it was written by this run (rather than reused).
    pub written: bool,
    _temp: Option<tempfile::TempDir>,
}

/// The shape and content of the table.
#[derive(Debug, Clone)]
pub struct TableShape {
    /// Table name.
    pub name: String,
    /// Rows.
    pub rows: u64,
    /// Elements per row.
    pub dim: u32,
    /// Element type.
    pub dtype: DType,
    /// Content seed.
    pub seed: u64,
}

impl Dataset {
    /// Finds or writes the table in `data` (a temporary directory if `None`). The directory must
    /// hold no other table: the server splits its RAM budget over every table it serves.
    pub fn prepare(data: Option<&Path>, shape: &TableShape) -> Result<Self> {
        let (data_dir, temp) = match data {
            Some(d) => {
                std::fs::create_dir_all(d).with_context(|| format!("create {}", d.display()))?;
                (d.to_path_buf(), None)
            }
            None => {
                let t = tempfile::Builder::new()
                    .prefix("engram-peers-")
                    .tempdir()
                    .context("create a temporary data directory")?;
                (t.path().to_path_buf(), Some(t))
            }
        };
        let others: Vec<String> = list_table_names(&data_dir)
            .with_context(|| format!("list tables in {}", data_dir.display()))?
            .into_iter()
            .filter(|n| *n != shape.name)
            .collect();
        ensure!(
            others.is_empty(),
            "{} also holds tables {others:?}; give the benchmark a data directory of its own",
            data_dir.display()
        );
        let mut written = false;
        let table = match OpenTable::open_newest(&data_dir, &shape.name, false) {
            Ok(t) if matches(&t.manifest, shape) => t,
            _ => {
                let spec = SynthSpec {
                    name: shape.name.clone(),
                    rows: shape.rows,
                    row_dim: shape.dim,
                    dtype: shape.dtype,
                    seed: shape.seed,
                };
                synth_table(&data_dir, &spec, &WriteOptions::default(), None).with_context(
                    || format!("write table {} in {}", shape.name, data_dir.display()),
                )?;
                written = true;
                OpenTable::open_newest(&data_dir, &shape.name, false)
                    .with_context(|| format!("open table {} just written", shape.name))?
            }
        };
        Ok(Self {
            data_dir,
            version_dir: table.dir.clone(),
            manifest: table.manifest.clone(),
            written,
            _temp: temp,
        })
    }

    /// The data directory to serve.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The table's first data file (for the raw IOPS limit).
    pub fn first_data_file(&self) -> Option<PathBuf> {
        self.manifest
            .files
            .first()
            .map(|f| self.version_dir.join(&f.path))
    }
}

/// Whether `m` is the synthetic table `shape` (as `synth_table` records its parameters).
fn matches(m: &Manifest, shape: &TableShape) -> bool {
    m.rows == shape.rows
        && m.row_dim == shape.dim
        && m.dtype == shape.dtype
        && m.source
            == format!(
                "synth seed={} dtype={} dim={}",
                shape.seed, shape.dtype, shape.dim
            )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_once_then_reuses_and_refuses_shared_directories() -> Result<()> {
        let dir = tempfile::tempdir()?;
        let mut shape = TableShape {
            name: "t".into(),
            rows: 100,
            dim: 8,
            dtype: DType::Bf16,
            seed: 3,
        };
        let first = Dataset::prepare(Some(dir.path()), &shape)?;
        assert!(first.written);
        assert_eq!(first.manifest.rows, 100);
        assert!(first.first_data_file().is_some_and(|f| f.exists()));
        assert!(!Dataset::prepare(Some(dir.path()), &shape)?.written);
        shape.seed = 4;
        assert!(Dataset::prepare(Some(dir.path()), &shape)?.written);
        shape.name = "other".into();
        assert!(Dataset::prepare(Some(dir.path()), &shape).is_err());
        Ok(())
    }
}
