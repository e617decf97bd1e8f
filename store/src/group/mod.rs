//! Engram groups on disk. A group is one Engram model's set of per-layer embedding tables plus
//! what turns token ids into their row ids: the table layout and the token compression map.
//!
//! ```text
//! DATA/
//!   demo.engram/         the group: group.json, layout.json, compress.npy (published atomically)
//!   demo.layer1/         one ordinary table per layer, rows = sum of the layer's primes,
//!   demo.layer15/        row_dim from the layout
//! ```
//!
//! - [`files`](GroupFiles): the group directory's format, listing and loading it.
//! - [`create_group`]: `engram-store engram create`, from synthetic content or a safetensors file.
//! - [`hf`]: `engram-store import-hf`, a DeepSeek-V4.1 Hugging Face checkpoint's Engram tables
//!   (fp8 rows with ue8m0 block scales) as a group, and a synthetic checkpoint of that geometry.

mod create;
mod error;
mod files;
pub mod hf;

pub use create::{CreatedGroup, GroupSource, create_group, weight_tensor_names};
pub use error::GroupError;
pub use files::{
    GROUP_DIR_SUFFIX, GROUP_FORMAT, GROUP_META_FILE, GroupFiles, GroupLayerMeta, GroupMeta,
    LAYOUT_FILE, MAP_FILE, group_dir, layer_table_name, list_group_names,
};
