//! A Hugging Face checkpoint directory as `import-hf` reads it: `config.json`, the tensor index
//! `model.safetensors.index.json` (or a single `model.safetensors`), and the headers of the
//! shards that hold the tensors wanted. Tensor data is not read here; a [`TensorInfo`] says where
//! it lies.

use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::path::{Path, PathBuf};

use engram_store_hashing::EngramConfig;
use serde::Deserialize;

use super::error::ImportError;

/// The config inside a checkpoint directory.
pub const CONFIG_FILE: &str = "config.json";
/// The tensor index inside a checkpoint directory.
pub const INDEX_FILE: &str = "model.safetensors.index.json";
/// The single shard of an unsharded checkpoint.
pub const SINGLE_SHARD: &str = "model.safetensors";
/// The tokenizer inside a checkpoint directory.
pub const TOKENIZER_FILE: &str = "tokenizer.json";
/// Largest safetensors header read (the format's own limit is 100 MB).
const MAX_HEADER: u64 = 100 << 20;

/// Where one tensor's bytes lie.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TensorInfo {
    /// Its name.
    pub(crate) name: String,
    /// The shard file.
    pub(crate) file: PathBuf,
    /// The safetensors dtype (`F8_E4M3`, `F8_E8M0`, `BF16`, ...).
    pub(crate) dtype: String,
    /// Its shape.
    pub(crate) shape: Vec<u64>,
    /// Byte offset of its data in the file.
    pub(crate) offset: u64,
    /// Bytes of data.
    pub(crate) len: u64,
}

#[derive(Deserialize)]
struct Index {
    weight_map: BTreeMap<String, String>,
}

#[derive(Deserialize)]
struct RawTensor {
    dtype: String,
    shape: Vec<u64>,
    data_offsets: [u64; 2],
}

/// An opened checkpoint directory.
#[derive(Debug)]
pub(crate) struct Checkpoint {
    dir: PathBuf,
    /// Its Engram keys.
    pub(crate) config: EngramConfig,
    /// Tensor name -> shard file name.
    weight_map: BTreeMap<String, String>,
    /// Parsed shard headers, by shard file name.
    headers: HashMap<String, BTreeMap<String, TensorInfo>>,
}

/// Bytes per element of a safetensors dtype, where known.
fn element_size(dtype: &str) -> Option<u64> {
    Some(match dtype {
        "BOOL" | "U8" | "I8" | "F8_E4M3" | "F8_E5M2" | "F8_E8M0" => 1,
        "U16" | "I16" | "F16" | "BF16" => 2,
        "U32" | "I32" | "F32" => 4,
        "U64" | "I64" | "F64" => 8,
        _ => return None,
    })
}

impl Checkpoint {
    /// Reads `config.json` and the index (or lists the single shard).
    pub(crate) fn open(dir: &Path) -> Result<Self, ImportError> {
        let config_path = dir.join(CONFIG_FILE);
        if !config_path.is_file() {
            return Err(ImportError::MissingFile {
                what: "config",
                path: config_path,
            });
        }
        let config = EngramConfig::load(&config_path).map_err(ImportError::Config)?;
        let index_path = dir.join(INDEX_FILE);
        let weight_map = if index_path.is_file() {
            let bytes = std::fs::read(&index_path)
                .map_err(|e| ImportError::io(format!("read {}", index_path.display()), e))?;
            let index: Index =
                serde_json::from_slice(&bytes).map_err(|e| ImportError::Malformed {
                    path: index_path.clone(),
                    message: format!("not a safetensors index: {e}"),
                })?;
            if let Some(bad) = index
                .weight_map
                .values()
                .find(|f| f.contains('/') || f.contains('\\') || f.starts_with('.'))
            {
                return Err(ImportError::Malformed {
                    path: index_path,
                    message: format!("shard name {bad:?} is not a file name in the directory"),
                });
            }
            index.weight_map
        } else if dir.join(SINGLE_SHARD).is_file() {
            let mut checkpoint = Self {
                dir: dir.to_path_buf(),
                config,
                weight_map: BTreeMap::new(),
                headers: HashMap::new(),
            };
            let names: Vec<String> = checkpoint.header(SINGLE_SHARD)?.keys().cloned().collect();
            checkpoint.weight_map = names
                .into_iter()
                .map(|n| (n, SINGLE_SHARD.to_owned()))
                .collect();
            return Ok(checkpoint);
        } else {
            return Err(ImportError::MissingFile {
                what: "safetensors index (or model.safetensors)",
                path: index_path,
            });
        };
        Ok(Self {
            dir: dir.to_path_buf(),
            config,
            weight_map,
            headers: HashMap::new(),
        })
    }

    /// The checkpoint directory.
    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    /// The tensor `name`, or a unique tensor whose name ends in `.{name}` (a prefixed
    /// checkpoint such as `model.layers.1...`); `None` when there is neither.
    pub(crate) fn find(&mut self, name: &str) -> Result<Option<TensorInfo>, ImportError> {
        let suffix = format!(".{name}");
        let key = if self.weight_map.contains_key(name) {
            name.to_owned()
        } else {
            let mut matches = self.weight_map.keys().filter(|k| k.ends_with(&suffix));
            match (matches.next(), matches.next()) {
                (Some(only), None) => only.clone(),
                _ => return Ok(None),
            }
        };
        let shard = self.weight_map[&key].clone();
        let header = self.header(&shard)?;
        match header.get(&key) {
            Some(t) => Ok(Some(t.clone())),
            None => Err(ImportError::Malformed {
                path: self.dir.join(&shard),
                message: format!(
                    "the index puts tensor {key} here, but the shard has no such tensor"
                ),
            }),
        }
    }

    /// Names of the tensors whose name contains `part` (for error messages).
    pub(crate) fn names_containing(&self, part: &str) -> Vec<&str> {
        self.weight_map
            .keys()
            .filter(|k| k.contains(part))
            .map(String::as_str)
            .collect()
    }

    /// The shard file a tensor is indexed in.
    pub(crate) fn shard_of(&self, name: &str) -> Option<&str> {
        self.weight_map.get(name).map(String::as_str)
    }

    /// The parsed header of shard `file` (read once).
    fn header(&mut self, file: &str) -> Result<&BTreeMap<String, TensorInfo>, ImportError> {
        if !self.headers.contains_key(file) {
            let parsed = read_header(&self.dir.join(file))?;
            self.headers.insert(file.to_owned(), parsed);
        }
        Ok(&self.headers[file])
    }
}

/// Reads and checks a safetensors header: every tensor's data lies inside the file and matches
/// its shape and dtype.
fn read_header(path: &Path) -> Result<BTreeMap<String, TensorInfo>, ImportError> {
    let malformed = |message: String| ImportError::Malformed {
        path: path.to_path_buf(),
        message,
    };
    let mut file = std::fs::File::open(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            ImportError::MissingFile {
                what: "safetensors shard",
                path: path.to_path_buf(),
            }
        } else {
            ImportError::io(format!("open {}", path.display()), e)
        }
    })?;
    let file_len = file
        .metadata()
        .map_err(|e| ImportError::io(format!("stat {}", path.display()), e))?
        .len();
    let mut len = [0u8; 8];
    file.read_exact(&mut len)
        .map_err(|e| malformed(format!("not a safetensors file ({e})")))?;
    let header_len = u64::from_le_bytes(len);
    if header_len == 0 || header_len > MAX_HEADER || 8 + header_len > file_len {
        return Err(malformed(format!(
            "header length {header_len} does not fit a file of {file_len} bytes"
        )));
    }
    let mut json = vec![0u8; header_len as usize];
    file.read_exact(&mut json)
        .map_err(|e| ImportError::io(format!("read the header of {}", path.display()), e))?;
    let map: BTreeMap<String, serde_json::Value> =
        serde_json::from_slice(&json).map_err(|e| malformed(format!("header JSON: {e}")))?;
    let data_start = 8 + header_len;
    let mut tensors = BTreeMap::new();
    for (name, value) in map {
        if name == "__metadata__" {
            continue;
        }
        let raw: RawTensor =
            serde_json::from_value(value).map_err(|e| malformed(format!("tensor {name}: {e}")))?;
        let [begin, end] = raw.data_offsets;
        if end < begin || data_start + end > file_len {
            return Err(malformed(format!(
                "tensor {name}: data_offsets [{begin}, {end}] reach past the file's {} data bytes",
                file_len - data_start
            )));
        }
        if let Some(size) = element_size(&raw.dtype) {
            let want = raw
                .shape
                .iter()
                .try_fold(size, |acc, &d| acc.checked_mul(d))
                .ok_or_else(|| malformed(format!("tensor {name}: shape overflows")))?;
            if want != end - begin {
                return Err(malformed(format!(
                    "tensor {name}: {} bytes of data for shape {:?} of {} ({want} bytes)",
                    end - begin,
                    raw.shape,
                    raw.dtype
                )));
            }
        }
        tensors.insert(
            name.clone(),
            TensorInfo {
                name,
                file: path.to_path_buf(),
                dtype: raw.dtype,
                shape: raw.shape,
                offset: data_start + begin,
                len: end - begin,
            },
        );
    }
    Ok(tensors)
}
