//! `engram-store engram create`: writes one table per layer of a layout (rows = the layer's
//! row count, row_dim from the layout), either synthetic (streamed, so the ~36M-row layers of
//! Engram-27B need only a few MiB of memory) or from a `.safetensors` file, and then publishes
//! the group directory with the layout and the compression map.
//!
//! Weight tensors are found by name: layer `ID` is the tensor `layers.ID.engram.embedding` or,
//! failing that, `layerID` (see [`weight_tensor_names`]); each must be 2-D of shape
//! `[row count of the layer, row_dim]` in a dtype a table can hold.

use std::path::{Path, PathBuf};

use engram_store_hashing::{CompressionMap, Layout};
use indicatif::ProgressBar;

use super::error::GroupError;
use super::files::{GroupFiles, GroupMeta, check_group_name, group_dir};
use crate::ingest::{SynthSpec, WriteOptions, ingest_file, safetensors_tensors, synth_table};
use crate::table::{DType, Manifest};

/// Where a group's rows come from.
#[derive(Debug, Clone)]
pub enum GroupSource {
    /// Synthetic content ([`crate::table::fill_row`]) of `dtype`, seeded with `seed`.
    Synth {
        /// Element type.
        dtype: DType,
        /// Content seed (each layer's table uses this seed).
        seed: u64,
    },
    /// Tensors of a `.safetensors` file, one per layer (named as [`weight_tensor_names`] says).
    Weights(PathBuf),
}

/// What [`create_group`] wrote.
#[derive(Debug, Clone)]
pub struct CreatedGroup {
    /// The group directory.
    pub dir: PathBuf,
    /// The layout.
    pub layout: Layout,
    /// Raw ids the compression map covers.
    pub map_len: usize,
    /// Manifest of each layer's table, in layout order.
    pub tables: Vec<Manifest>,
}

/// Tensor names that hold layer `layer_id`'s table in a weights file, in the order tried.
pub fn weight_tensor_names(layer_id: u32) -> [String; 2] {
    [
        format!("layers.{layer_id}.engram.embedding"),
        format!("layer{layer_id}"),
    ]
}

/// Creates group `name` under `data_dir` from a layout file and a compression map `.npy`.
pub fn create_group(
    data_dir: &Path,
    name: &str,
    layout_path: &Path,
    map_path: &Path,
    source: &GroupSource,
    opts: &WriteOptions,
    progress: Option<&ProgressBar>,
) -> Result<CreatedGroup, GroupError> {
    check_group_name(name)?;
    let dir = group_dir(data_dir, name);
    if dir.exists() {
        return Err(GroupError::Exists {
            name: name.into(),
            dir,
        });
    }
    let layout = Layout::load(layout_path).map_err(|source| GroupError::Layout {
        group: name.into(),
        source,
    })?;
    let map_npy = std::fs::read(map_path)
        .map_err(|e| GroupError::io(format!("read {}", map_path.display()), e))?;
    let map_err = |source| GroupError::Map {
        group: name.into(),
        source,
    };
    let map = CompressionMap::from_npy_bytes(&map_npy).map_err(|source| {
        map_err(engram_store_hashing::CompressionMapError::InFile {
            path: map_path.to_path_buf(),
            source: Box::new(source),
        })
    })?;
    map.check_layout(&layout).map_err(map_err)?;
    std::fs::create_dir_all(data_dir)
        .map_err(|e| GroupError::io(format!("create {}", data_dir.display()), e))?;

    let meta = GroupMeta::new(name, &layout, describe(source, layout_path, map_path));
    let weights = match source {
        GroupSource::Weights(path) => Some((path, check_weights(path, &layout, &meta)?)),
        GroupSource::Synth { .. } => None,
    };
    let row_dim = u32::try_from(layout.row_dim()).map_err(|_| GroupError::Layout {
        group: name.into(),
        source: engram_store_hashing::LayoutError::ZeroRowDim,
    })?;
    let mut tables = Vec::with_capacity(meta.layers.len());
    for (i, layer) in meta.layers.iter().enumerate() {
        if let Some(p) = progress {
            p.set_position(0);
            p.set_message(format!("{} ({}/{})", layer.table, i + 1, meta.layers.len()));
        }
        let rows = layout.layer(layer.layer_id).map_or(0, |l| l.row_count());
        let written = match (source, &weights) {
            (GroupSource::Synth { dtype, seed }, _) => synth_table(
                data_dir,
                &SynthSpec {
                    name: layer.table.clone(),
                    rows,
                    row_dim,
                    dtype: *dtype,
                    seed: *seed,
                },
                opts,
                progress,
            ),
            (GroupSource::Weights(_), Some((path, tensors))) => ingest_file(
                path,
                &layer.table,
                data_dir,
                Some(tensors[i].as_str()),
                opts,
                progress,
            ),
            (GroupSource::Weights(path), None) => Err(anyhow::anyhow!(
                "internal: weights {} were not checked",
                path.display()
            )),
        };
        let manifest = written.map_err(|e| GroupError::Table {
            table: layer.table.clone(),
            message: format!("{e:#}"),
        })?;
        tables.push(manifest);
    }
    let dir = GroupFiles::publish(data_dir, &meta, &layout, &map_npy)?;
    Ok(CreatedGroup {
        dir,
        map_len: map.len(),
        layout,
        tables,
    })
}

fn describe(source: &GroupSource, layout: &Path, map: &Path) -> String {
    let rows = match source {
        GroupSource::Synth { dtype, seed } => format!("synth dtype={dtype} seed={seed}"),
        GroupSource::Weights(p) => format!("weights {}", p.display()),
    };
    format!(
        "{rows}; layout {}; compression map {}",
        layout.display(),
        map.display()
    )
}

/// Finds every layer's tensor in `path` and checks its shape; returns the tensor names in layer
/// order.
fn check_weights(
    path: &Path,
    layout: &Layout,
    meta: &GroupMeta,
) -> Result<Vec<String>, GroupError> {
    let fail = |message: String| GroupError::Weights {
        path: path.to_path_buf(),
        message,
    };
    let (tensors, skipped) = safetensors_tensors(path).map_err(|e| fail(format!("{e:#}")))?;
    let mut names = Vec::with_capacity(meta.layers.len());
    for layer in &meta.layers {
        let rows = layout.layer(layer.layer_id).map_or(0, |l| l.row_count());
        let wanted = weight_tensor_names(layer.layer_id);
        let Some(t) = wanted
            .iter()
            .find_map(|w| tensors.iter().find(|t| &t.name == w))
        else {
            let usable: Vec<&str> = tensors.iter().map(|t| t.name.as_str()).collect();
            let mut message = format!(
                "no tensor for layer {} (looked for {}); usable 2-D tensors: [{}]",
                layer.layer_id,
                wanted.join(" or "),
                usable.join(", ")
            );
            if !skipped.is_empty() {
                message.push_str(&format!("; skipped: {}", skipped.join(", ")));
            }
            return Err(fail(message));
        };
        if t.rows != rows || t.cols != layout.row_dim() as u64 {
            return Err(fail(format!(
                "tensor {:?} of layer {} has shape [{}, {}] ({}), the layout needs \
                 [{rows}, {}] (rows = sum of the layer's primes, row_dim)",
                t.name,
                layer.layer_id,
                t.rows,
                t.cols,
                t.dtype,
                layout.row_dim()
            )));
        }
        names.push(t.name.clone());
    }
    Ok(names)
}
