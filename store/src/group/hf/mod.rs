//! `engram-store import-hf`: a DeepSeek-V4.1 Hugging Face checkpoint's Engram tables as one
//! Engram group.
//!
//! The checkpoint directory holds `config.json` (the `engram_*` keys under `text_config`),
//! `tokenizer.json`, `model.safetensors.index.json` and the shards it names. For every Engram
//! layer `L` the tensors `layers.{L}.engram.embed.weight` (F8_E4M3, `[rows, head_dim]`) and
//! `layers.{L}.engram.embed.scale` (F8_E8M0, `[rows, head_dim / 32]`) become table `G.layer{L}`,
//! each row the 256 values followed by their 8 scale bytes (row format
//! [`RowFormat::V41_ENGRAM`], 264 bytes), beside the layout and compression map the config and
//! tokenizer give, published as group `G` exactly as `engram create` publishes one.
//!
//! Order of work: [`plan`] checks every promise of the config (the tokenizer's compressed
//! vocabulary, each layer's row count against the sum of its primes, every tensor's presence,
//! dtype and shape) before anything is written; then each layer streams through a reader thread
//! that packs bounded chunks into the table writer (block checksums, atomic version); the group
//! directory is published last. If anything fails after the first table is written, the table
//! versions this import wrote are removed again, so a failed import leaves no table.
//!
//! - [`checkpoint`]: the config, index and shard headers.
//! - [`tokenizer_map`]: the compression map from `tokenizer.json`, in Rust.
//! - [`pack`]: weight + scale tensors -> packed rows, streamed.
//! - [`synth`]: a synthetic V4.1-geometry checkpoint for tests and benchmarks.

mod checkpoint;
mod error;
mod pack;
mod synth;
mod tokenizer_map;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use engram_store_hashing::{CompressionMap, Layout, LayoutSpec};
use indicatif::ProgressBar;

pub use checkpoint::{CONFIG_FILE, INDEX_FILE, SINGLE_SHARD, TOKENIZER_FILE};
pub use error::ImportError;
pub use synth::{
    SynthCheckpoint, SynthFaults, WrittenCheckpoint, synth_scale_byte, synth_value_byte,
    write_synthetic_checkpoint,
};
pub use tokenizer_map::{build_compression_map, map_npy_bytes};

use self::checkpoint::{Checkpoint, TensorInfo};
use super::files::{GroupFiles, GroupMeta, check_group_name, group_dir, layer_table_name};
use crate::ingest::WriteOptions;
use crate::table::{DType, Manifest, RowFormat, TableSpec, version_dir_name};

/// Values per ue8m0 scale byte in DeepSeek-V4.1 Engram tables.
pub const SCALE_BLOCK: u32 = 32;
/// The safetensors dtype of the values.
const WEIGHT_DTYPE: &str = "F8_E4M3";
/// The safetensors dtype of the scales.
const SCALE_DTYPE: &str = "F8_E8M0";

/// The tensor holding layer `layer_id`'s values.
pub fn weight_tensor_name(layer_id: u32) -> String {
    format!("layers.{layer_id}.engram.embed.weight")
}

/// The tensor holding layer `layer_id`'s ue8m0 scales.
pub fn scale_tensor_name(layer_id: u32) -> String {
    format!("layers.{layer_id}.engram.embed.scale")
}

/// What to import besides the checkpoint directory, group name and data directory.
#[derive(Debug, Clone, Default)]
pub struct ImportOptions {
    /// The `tokenizer.json` to build the compression map from. Default: the checkpoint's.
    pub tokenizer: Option<PathBuf>,
    /// The Engram layers to import. Default: every layer of `engram_layer_ids`.
    pub layers: Option<Vec<u32>>,
    /// Table writing options (block size, checksum, file size).
    pub write: WriteOptions,
}

/// What [`import_hf`] wrote.
#[derive(Debug, Clone)]
pub struct ImportedGroup {
    /// The group directory.
    pub dir: PathBuf,
    /// The group's layout (the imported layers).
    pub layout: Layout,
    /// Raw ids of the compression map.
    pub map_len: usize,
    /// Each imported layer's table, in layout order.
    pub tables: Vec<Manifest>,
    /// Bytes of rows written (rows x 264 over the tables).
    pub row_bytes_written: u64,
    /// Wall time of the whole import, checks included.
    pub elapsed: Duration,
}

/// One layer to import: its table and its two tensors.
#[derive(Debug)]
struct LayerPlan {
    layer_id: u32,
    table: String,
    rows: u64,
    weight: TensorInfo,
    scale: TensorInfo,
}

/// Everything checked, nothing written yet.
#[derive(Debug)]
struct Plan {
    layout: Layout,
    map: CompressionMap,
    head_dim: u32,
    layers: Vec<LayerPlan>,
    source: String,
}

/// Imports the Engram tables of the checkpoint in `ckpt_dir` as group `name` under `data_dir`.
pub fn import_hf(
    ckpt_dir: &Path,
    name: &str,
    data_dir: &Path,
    options: &ImportOptions,
    progress: Option<&ProgressBar>,
) -> Result<ImportedGroup, ImportError> {
    let start = Instant::now();
    check_group_name(name)?;
    let dir = group_dir(data_dir, name);
    if dir.exists() {
        return Err(super::GroupError::Exists {
            name: name.into(),
            dir,
        }
        .into());
    }
    let plan = plan(ckpt_dir, name, options)?;
    std::fs::create_dir_all(data_dir)
        .map_err(|e| ImportError::io(format!("create {}", data_dir.display()), e))?;
    let total: u64 = plan
        .layers
        .iter()
        .map(|l| l.rows * u64::from(plan.row_bytes()))
        .sum();
    if let Some(p) = progress {
        p.set_length(total);
        p.set_position(0);
    }
    let mut written: Vec<(String, u64)> = Vec::new();
    let result = (|| {
        let mut tables = Vec::with_capacity(plan.layers.len());
        for (i, layer) in plan.layers.iter().enumerate() {
            if let Some(p) = progress {
                p.set_message(format!("{} ({}/{})", layer.table, i + 1, plan.layers.len()));
            }
            let manifest = write_layer(data_dir, &plan, layer, &options.write, progress)?;
            written.push((manifest.name.clone(), manifest.version));
            tables.push(manifest);
        }
        let meta = GroupMeta::new(name, &plan.layout, plan.source.clone());
        let dir = GroupFiles::publish(data_dir, &meta, &plan.layout, &map_npy_bytes(&plan.map))?;
        Ok((dir, tables))
    })();
    match result {
        Ok((dir, tables)) => Ok(ImportedGroup {
            dir,
            map_len: plan.map.len(),
            layout: plan.layout,
            tables,
            row_bytes_written: total,
            elapsed: start.elapsed(),
        }),
        Err(e) => {
            remove_versions(data_dir, &written);
            for layer in &plan.layers {
                // A table directory this import created and a failed writer left empty.
                let table_dir = data_dir.join(&layer.table);
                if std::fs::read_dir(&table_dir).is_ok_and(|mut d| d.next().is_none()) {
                    let _ = std::fs::remove_dir(&table_dir);
                }
            }
            Err(e)
        }
    }
}

impl Plan {
    fn row_bytes(&self) -> u32 {
        self.head_dim + self.head_dim / SCALE_BLOCK
    }
}

/// Checks every promise of the checkpoint and returns what to write.
fn plan(ckpt_dir: &Path, name: &str, options: &ImportOptions) -> Result<Plan, ImportError> {
    let mut ckpt = Checkpoint::open(ckpt_dir)?;
    let config = ckpt.config.clone();
    let head_dim = u32::try_from(config.head_dim)
        .ok()
        .filter(|d| d.is_multiple_of(SCALE_BLOCK))
        .ok_or(ImportError::HeadDim {
            head_dim: config.head_dim,
            block: SCALE_BLOCK,
        })?;
    let tokenizer = options
        .tokenizer
        .clone()
        .unwrap_or_else(|| ckpt.dir().join(TOKENIZER_FILE));
    if !tokenizer.is_file() {
        return Err(ImportError::MissingFile {
            what: "tokenizer",
            path: tokenizer,
        });
    }
    let map = build_compression_map(&tokenizer).map_err(|message| ImportError::Tokenizer {
        path: tokenizer.clone(),
        message,
    })?;
    // The compressed vocabulary, the pad token and every layer's row count against its primes.
    let full = config.layout(&map).map_err(ImportError::Config)?;
    let wanted = match &options.layers {
        Some(ids) => {
            for &layer_id in ids {
                if !config.layer_ids.contains(&layer_id) {
                    return Err(ImportError::UnknownLayer {
                        layer_id,
                        known: config.layer_ids.clone(),
                    });
                }
            }
            ids.clone()
        }
        None => config.layer_ids.clone(),
    };
    // The group's layout: the imported layers, in config order, with their primes as the
    // config's rule gave them.
    let mut spec: LayoutSpec = full.to_spec();
    spec.layers.retain(|l| wanted.contains(&l.layer_id));
    let layout = Layout::try_from(spec)
        .map_err(|e| ImportError::Config(engram_store_hashing::EngramConfigError::Layout(e)))?;

    let mut layers = Vec::with_capacity(layout.layers().len());
    for layer in layout.layers() {
        let layer_id = layer.layer_id();
        let rows = layer.row_count();
        let weight = find_tensor(&mut ckpt, &weight_tensor_name(layer_id), None)?;
        let scale = find_tensor(&mut ckpt, &scale_tensor_name(layer_id), Some(&weight))?;
        check_tensor(
            &weight,
            WEIGHT_DTYPE,
            &[rows, u64::from(head_dim)],
            layer_id,
        )?;
        check_tensor(
            &scale,
            SCALE_DTYPE,
            &[rows, u64::from(head_dim / SCALE_BLOCK)],
            layer_id,
        )?;
        layers.push(LayerPlan {
            layer_id,
            table: layer_table_name(name, layer_id),
            rows,
            weight,
            scale,
        });
    }
    let source = format!(
        "import-hf {} (layers {:?}, tokenizer {})",
        ckpt_dir.display(),
        wanted,
        tokenizer.display()
    );
    Ok(Plan {
        layout,
        map,
        head_dim,
        layers,
        source,
    })
}

/// The tensor `name`; a missing one is an error naming where it was looked for.
fn find_tensor(
    ckpt: &mut Checkpoint,
    name: &str,
    beside: Option<&TensorInfo>,
) -> Result<TensorInfo, ImportError> {
    if let Some(t) = ckpt.find(name)? {
        return Ok(t);
    }
    let engram: Vec<&str> = ckpt.names_containing(".engram.embed.");
    let mut looked = format!("looked for {name} in the index of {}", ckpt.dir().display());
    if let Some(w) = beside {
        let shard = ckpt.shard_of(&w.name).unwrap_or("?");
        looked.push_str(&format!("; its weight {} is in {shard}", w.name));
    }
    looked.push_str(&format!("; Engram embedding tensors present: {engram:?}"));
    Err(ImportError::MissingTensor {
        name: name.to_owned(),
        looked,
    })
}

/// Checks a tensor's dtype and shape against what the config promises.
fn check_tensor(
    t: &TensorInfo,
    dtype: &'static str,
    shape: &[u64],
    layer_id: u32,
) -> Result<(), ImportError> {
    if t.dtype != dtype {
        return Err(ImportError::Dtype {
            tensor: t.name.clone(),
            found: t.dtype.clone(),
            expected: dtype,
        });
    }
    if t.shape != shape {
        return Err(ImportError::Shape {
            tensor: t.name.clone(),
            found: t.shape.clone(),
            expected: shape.to_vec(),
            why: format!(
                "rows = engram_num_embeddings of layer {layer_id} = the sum of its primes; \
                 columns from engram_head_dim{}",
                if dtype == SCALE_DTYPE {
                    format!(" / {SCALE_BLOCK}")
                } else {
                    String::new()
                }
            ),
        });
    }
    Ok(())
}

/// Streams one layer's tensors into its table.
fn write_layer(
    data_dir: &Path,
    plan: &Plan,
    layer: &LayerPlan,
    opts: &WriteOptions,
    progress: Option<&ProgressBar>,
) -> Result<Manifest, ImportError> {
    let table_err = |source| ImportError::Table {
        table: layer.table.clone(),
        source,
    };
    let mut spec = TableSpec::new(&layer.table, DType::F8E4M3, plan.head_dim, layer.rows);
    spec.row_format = RowFormat::V41_ENGRAM;
    spec.block_size = opts.block_size;
    spec.checksum = opts.checksum;
    spec.max_file_bytes = opts.max_file_bytes;
    spec.source = format!(
        "import-hf layer {}: {} + {}",
        layer.layer_id, layer.weight.name, layer.scale.name
    );
    let mut writer = crate::table::TableWriter::create(data_dir, spec).map_err(table_err)?;
    pack::stream_packed(
        &pack::PackedSource {
            weight: &layer.weight,
            scale: &layer.scale,
            rows: layer.rows,
            values: plan.head_dim as usize,
            scales: (plan.head_dim / SCALE_BLOCK) as usize,
        },
        |rows| {
            writer.push_rows(rows).map_err(table_err)?;
            if let Some(p) = progress {
                p.inc(rows.len() as u64);
            }
            Ok(())
        },
    )?;
    writer.finish().map_err(table_err)
}

/// Removes the table versions an import wrote (and a table directory left empty).
fn remove_versions(data_dir: &Path, written: &[(String, u64)]) {
    for (table, version) in written {
        let table_dir = data_dir.join(table);
        let _ = std::fs::remove_dir_all(table_dir.join(version_dir_name(*version)));
        if std::fs::read_dir(&table_dir).is_ok_and(|mut d| d.next().is_none()) {
            let _ = std::fs::remove_dir(&table_dir);
        }
    }
}
