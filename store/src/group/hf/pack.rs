//! Weight and scale tensors -> packed V4.1 rows, streamed with bounded memory.
//!
//! A reader thread reads a chunk of rows of the values (`rows x values` bytes) and of the scales
//! (`rows x scales` bytes), which may lie in different shards, and interleaves them into packed
//! rows (values, then scales); the caller's thread hands each chunk to the table writer. Three
//! chunk buffers of about 8 MiB circulate between the two, so reading the checkpoint overlaps
//! checksumming and writing the table, and memory stays at a few tens of MiB whatever the table.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::mpsc;

use super::checkpoint::TensorInfo;
use super::error::ImportError;

/// Packed bytes per chunk (rounded down to whole rows).
const CHUNK_BYTES: usize = 8 << 20;
/// Chunk buffers in circulation.
const BUFFERS: usize = 3;

/// One layer's tensors and row geometry.
#[derive(Debug)]
pub(super) struct PackedSource<'a> {
    /// The values tensor, `[rows, values]` bytes.
    pub(super) weight: &'a TensorInfo,
    /// The scales tensor, `[rows, scales]` bytes.
    pub(super) scale: &'a TensorInfo,
    /// Rows.
    pub(super) rows: u64,
    /// Value bytes per row.
    pub(super) values: usize,
    /// Scale bytes per row.
    pub(super) scales: usize,
}

/// A chunk of packed rows, or why reading failed.
type Chunk = Result<Vec<u8>, ImportError>;

/// Calls `sink` with consecutive chunks of packed rows, in row order, until all rows are given.
pub(super) fn stream_packed(
    source: &PackedSource<'_>,
    mut sink: impl FnMut(&[u8]) -> Result<(), ImportError>,
) -> Result<(), ImportError> {
    let row_bytes = source.values + source.scales;
    let chunk_rows = (CHUNK_BYTES / row_bytes).max(1);
    let weight = open(source.weight)?;
    let scale = open(source.scale)?;
    let (full_tx, full_rx) = mpsc::sync_channel::<Chunk>(BUFFERS);
    let (empty_tx, empty_rx) = mpsc::sync_channel::<Vec<u8>>(BUFFERS);
    for _ in 0..BUFFERS {
        // Cannot fail: the channel has room for every buffer and its receiver is alive.
        let _ = empty_tx.send(Vec::with_capacity(chunk_rows * row_bytes));
    }
    std::thread::scope(|scope| {
        scope.spawn(move || {
            let mut values = vec![0u8; chunk_rows * source.values];
            let mut scales = vec![0u8; chunk_rows * source.scales];
            let mut row = 0u64;
            while row < source.rows {
                let n = (source.rows - row).min(chunk_rows as u64) as usize;
                let Ok(mut packed) = empty_rx.recv() else {
                    return; // the consumer stopped
                };
                let chunk = read_chunk(
                    source,
                    (&weight, &scale),
                    row,
                    (
                        &mut values[..n * source.values],
                        &mut scales[..n * source.scales],
                    ),
                    &mut packed,
                )
                .map(|()| packed);
                let failed = chunk.is_err();
                if full_tx.send(chunk).is_err() || failed {
                    return;
                }
                row += n as u64;
            }
        });
        let mut result = Ok(());
        let mut received = 0u64;
        while received < source.rows {
            let Ok(chunk) = full_rx.recv() else {
                result = Err(ImportError::io(
                    "read the checkpoint",
                    std::io::Error::other("the reader thread stopped early"),
                ));
                break;
            };
            let packed = match chunk {
                Ok(packed) => packed,
                Err(e) => {
                    result = Err(e);
                    break;
                }
            };
            if let Err(e) = sink(&packed) {
                result = Err(e);
                break;
            }
            received += (packed.len() / row_bytes) as u64;
            // The reader may have finished and dropped its receiver: nothing more to fill.
            let _ = empty_tx.send(packed);
        }
        // Dropping the receivers here (end of scope) stops a reader that is still going.
        drop(full_rx);
        drop(empty_tx);
        result
    })
}

fn open(t: &TensorInfo) -> Result<File, ImportError> {
    File::open(&t.file).map_err(|e| ImportError::io(format!("open {}", t.file.display()), e))
}

/// Reads rows `row..row + n` of both tensors and packs them into `packed` (cleared first).
fn read_chunk(
    source: &PackedSource<'_>,
    (weight, scale): (&File, &File),
    row: u64,
    (values, scales): (&mut [u8], &mut [u8]),
    packed: &mut Vec<u8>,
) -> Result<(), ImportError> {
    let at = |t: &TensorInfo, per_row: usize| t.offset + row * per_row as u64;
    weight
        .read_exact_at(values, at(source.weight, source.values))
        .map_err(|e| ImportError::io(format!("read {} at row {row}", source.weight.name), e))?;
    scale
        .read_exact_at(scales, at(source.scale, source.scales))
        .map_err(|e| ImportError::io(format!("read {} at row {row}", source.scale.name), e))?;
    packed.clear();
    for (v, s) in values
        .chunks_exact(source.values)
        .zip(scales.chunks_exact(source.scales))
    {
        packed.extend_from_slice(v);
        packed.extend_from_slice(s);
    }
    Ok(())
}
