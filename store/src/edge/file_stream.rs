//! `ReadTableFile`'s answer: a byte range of one file, read in chunks of at most [`CHUNK`] on
//! the blocking pool and sent as the client takes them (at most two chunks wait per stream, so
//! a peer that stops reading holds a few MiB, not the file). Those bytes are reserved in the
//! server's answer budget for the stream's life, like any other answer's.

use std::os::unix::fs::FileExt as _;
use std::path::PathBuf;
use std::pin::Pin;

use engram_store_proto::v1 as pb;
use futures::{Stream, StreamExt as _};
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;

use crate::engine::AnswerReservation;

/// Bytes per chunk.
pub(crate) const CHUNK: u64 = 1 << 20;
/// Answer bytes a stream reserves: the chunk being read and the two waiting to be sent.
pub(crate) const STREAM_RESERVATION: u64 = 3 * CHUNK;
/// Most bytes one request may read.
pub(crate) const MAX_READ: u64 = 64 << 20;

/// The chunks of one file read.
pub type FileStream = Pin<Box<dyn Stream<Item = Result<pb::FileChunk, Status>> + Send>>;

/// Streams bytes `offset..offset + length` of `path` (clipped to its end; `length` 0: to the
/// end), checking the offset against the file and the length against [`MAX_READ`] first.
pub(super) async fn read_file_range(
    path: PathBuf,
    offset: u64,
    length: u64,
    reservation: AnswerReservation,
) -> Result<FileStream, Status> {
    let file = tokio::task::spawn_blocking(move || std::fs::File::open(&path))
        .await
        .map_err(|e| Status::internal(format!("opening the file: {e}")))?
        .map_err(|e| Status::not_found(format!("the file cannot be opened: {e}")))?;
    let file_length = file
        .metadata()
        .map_err(|e| Status::internal(format!("the file's length: {e}")))?
        .len();
    if offset > file_length {
        return Err(Status::out_of_range(format!(
            "offset {offset} is past the end of the file ({file_length} bytes)"
        )));
    }
    // 0, or more than the file has: to its end.
    let length = if length == 0 {
        file_length - offset
    } else {
        length.min(file_length - offset)
    };
    if length > MAX_READ {
        return Err(Status::invalid_argument(format!(
            "length {length} is more than the {MAX_READ} bytes one request may read"
        )));
    }
    let (tx, rx) = tokio::sync::mpsc::channel(2);
    tokio::spawn(async move {
        let file = std::sync::Arc::new(file);
        let mut at = offset;
        let end = offset + length;
        while at < end {
            let n = (end - at).min(CHUNK) as usize;
            let f = file.clone();
            let read = tokio::task::spawn_blocking(move || {
                let mut buf = vec![0u8; n];
                f.read_exact_at(&mut buf, at).map(|()| buf)
            })
            .await;
            let chunk = match read {
                Ok(Ok(data)) => Ok(pb::FileChunk {
                    offset: at,
                    data: data.into(),
                    file_length,
                }),
                Ok(Err(e)) => Err(Status::unavailable(format!("reading at {at}: {e}"))),
                Err(e) => Err(Status::internal(format!("reading at {at}: {e}"))),
            };
            let failed = chunk.is_err();
            if tx.send(chunk).await.is_err() || failed {
                return;
            }
            at += n as u64;
        }
    });
    // The reservation lives as long as the stream: until its last chunk has been sent.
    Ok(Box::pin(ReceiverStream::new(rx).map(move |chunk| {
        let _held = &reservation;
        chunk
    })))
}
