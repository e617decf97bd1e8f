//! Getting tables in: streaming `.npy` and `.safetensors` ingestion, and synthetic tables.
//! Inputs are read in chunks of whole rows and streamed into a [`TableWriter`], so memory stays
//! at a few MiB whatever the input size.

mod npy;
mod safetensors;

use std::io::Read;
use std::path::Path;

use indicatif::ProgressBar;

pub use npy::{NpyHeader, parse_npy_header};
pub use safetensors::{SafetensorsTensor, parse_safetensors_header};

use crate::table::{DType, Manifest, TableSpec, TableWriter, fill_row};

/// Bytes read per chunk while streaming an input.
const CHUNK_BYTES: usize = 8 << 20;

/// Options shared by ingest and synth.
#[derive(Debug, Clone)]
pub struct WriteOptions {
    /// I/O block size of the table. Default 4096.
    pub block_size: u32,
    /// Checksum algorithm. Default crc32c.
    pub checksum: crate::table::ChecksumKind,
    /// Largest data file. Default 16 GiB.
    pub max_file_bytes: u64,
}

impl Default for WriteOptions {
    fn default() -> Self {
        Self {
            block_size: 4096,
            checksum: crate::table::ChecksumKind::Crc32c,
            max_file_bytes: 16 << 30,
        }
    }
}

fn spec(
    name: &str,
    dtype: DType,
    row_dim: u32,
    rows: u64,
    opts: &WriteOptions,
    source: String,
) -> TableSpec {
    let mut s = TableSpec::new(name, dtype, row_dim, rows);
    s.block_size = opts.block_size;
    s.checksum = opts.checksum;
    s.max_file_bytes = opts.max_file_bytes;
    s.source = source;
    s
}

/// Where the rows of an input file are.
#[derive(Debug, Clone)]
struct InputTensor {
    dtype: DType,
    rows: u64,
    row_dim: u64,
    data_offset: u64,
}

/// Ingests `input` (`.npy` or `.safetensors`, by extension or magic) as table `name`.
pub fn ingest_file(
    input: &Path,
    name: &str,
    data_dir: &Path,
    tensor: Option<&str>,
    opts: &WriteOptions,
    progress: Option<&ProgressBar>,
) -> anyhow::Result<Manifest> {
    let mut file = std::fs::File::open(input)
        .map_err(|e| anyhow::anyhow!("open input {}: {e}", input.display()))?;
    let file_len = file.metadata()?.len();
    let mut head = vec![0u8; 9];
    let neither = || {
        anyhow::anyhow!(
            "{} is neither a .npy file (it does not start with the \\x93NUMPY magic) nor a \
             .safetensors file (it does not start with a header length and a JSON header)",
            input.display()
        )
    };
    file.read_exact(&mut head).map_err(|_| neither())?;
    let is_npy = head.starts_with(b"\x93NUMPY");
    let header_len = u64::from_le_bytes([
        head[0], head[1], head[2], head[3], head[4], head[5], head[6], head[7],
    ]);
    if !is_npy && (head[8] != b'{' || header_len.saturating_add(8) > file_len) {
        return Err(neither());
    }
    let t = if is_npy {
        if tensor.is_some() {
            anyhow::bail!(
                "--tensor applies to .safetensors inputs; {} is a .npy file",
                input.display()
            );
        }
        let h = npy::read_npy_header(input)?;
        InputTensor {
            dtype: h.dtype,
            rows: h.rows,
            row_dim: h.cols,
            data_offset: h.data_offset,
        }
    } else {
        let (tensors, data_start) = safetensors::read_safetensors_header(input)?;
        let chosen = safetensors::choose(&tensors, tensor, input)?;
        InputTensor {
            dtype: chosen.dtype,
            rows: chosen.rows,
            row_dim: chosen.cols,
            data_offset: data_start + chosen.begin,
        }
    };
    let row_dim = u32::try_from(t.row_dim)
        .ok()
        .filter(|&d| d > 0)
        .ok_or_else(|| {
            anyhow::anyhow!(
                "{}: row dimension {} is not usable",
                input.display(),
                t.row_dim
            )
        })?;
    let row_bytes = u64::from(row_dim) * t.dtype.size() as u64;
    let data_len = t
        .rows
        .checked_mul(row_bytes)
        .ok_or_else(|| anyhow::anyhow!("shape overflows"))?;
    if t.data_offset + data_len > file_len {
        anyhow::bail!(
            "{}: the tensor needs {} bytes from offset {}, the file has {}",
            input.display(),
            data_len,
            t.data_offset,
            file_len
        );
    }
    let mut writer = TableWriter::create(
        data_dir,
        spec(
            name,
            t.dtype,
            row_dim,
            t.rows,
            opts,
            format!("ingest {}", input.display()),
        ),
    )?;
    if let Some(p) = progress {
        p.set_length(data_len);
    }
    use std::io::Seek;
    file.seek(std::io::SeekFrom::Start(t.data_offset))?;
    let chunk_rows = (CHUNK_BYTES as u64 / row_bytes).max(1);
    let mut buf = vec![0u8; (chunk_rows * row_bytes) as usize];
    let mut left = t.rows;
    while left > 0 {
        let n = left.min(chunk_rows);
        let bytes = &mut buf[..(n * row_bytes) as usize];
        file.read_exact(bytes)
            .map_err(|e| anyhow::anyhow!("read rows of {}: {e}", input.display()))?;
        writer.push_rows(bytes)?;
        left -= n;
        if let Some(p) = progress {
            p.inc(n * row_bytes);
        }
    }
    Ok(writer.finish()?)
}

/// The usable 2-D tensors of a `.safetensors` file, and the others with why they are not.
pub fn safetensors_tensors(path: &Path) -> anyhow::Result<(Vec<SafetensorsTensor>, Vec<String>)> {
    let (tensors, _) = safetensors::read_safetensors_header(path)?;
    let skipped = tensors.first().map(|(_, s)| s.clone()).unwrap_or_default();
    Ok((tensors.into_iter().map(|(t, _)| t).collect(), skipped))
}

/// What synthetic table to write.
#[derive(Debug, Clone)]
pub struct SynthSpec {
    /// Table name.
    pub name: String,
    /// Rows.
    pub rows: u64,
    /// Elements per row.
    pub row_dim: u32,
    /// Element type.
    pub dtype: DType,
    /// Content seed.
    pub seed: u64,
}

/// Writes a synthetic table (content documented in [`crate::table::fill_row`]).
pub fn synth_table(
    data_dir: &Path,
    spec_in: &SynthSpec,
    opts: &WriteOptions,
    progress: Option<&ProgressBar>,
) -> anyhow::Result<Manifest> {
    let SynthSpec {
        name,
        rows,
        row_dim,
        dtype,
        seed,
    } = spec_in.clone();
    let name = name.as_str();
    if row_dim == 0 {
        anyhow::bail!("--dim must be at least 1");
    }
    let mut writer = TableWriter::create(
        data_dir,
        spec(
            name,
            dtype,
            row_dim,
            rows,
            opts,
            format!("synth seed={seed} dtype={dtype} dim={row_dim}"),
        ),
    )?;
    let row_bytes = row_dim as usize * dtype.size();
    if let Some(p) = progress {
        p.set_length(rows * row_bytes as u64);
    }
    let chunk_rows = (CHUNK_BYTES / row_bytes).max(1) as u64;
    let mut buf = vec![0u8; chunk_rows as usize * row_bytes];
    let mut row = 0u64;
    while row < rows {
        let n = (rows - row).min(chunk_rows);
        let bytes = &mut buf[..n as usize * row_bytes];
        for (i, dst) in bytes.chunks_exact_mut(row_bytes).enumerate() {
            fill_row(seed, dtype, row_dim as usize, row + i as u64, dst);
        }
        writer.push_rows(bytes)?;
        row += n;
        if let Some(p) = progress {
            p.inc(n * row_bytes as u64);
        }
    }
    Ok(writer.finish()?)
}
