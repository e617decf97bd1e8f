//! The abuse scenarios, each what a hostile or careless client on the same host could do to the
//! server (issue #11), each returning what happened: whether the server refused what it must,
//! and the facts the caller judges (peak RSS is measured around every scenario by the runner).

use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;
use engram_store_client::proto as pb;
use engram_store_client::{Client, ClientError, LocalConnection, sealed_memfd};
use prost::Message;
use tonic::Code;

use super::raw_h2::send_and_never_read;

/// What one scenario found.
#[derive(Debug, Clone, Default)]
pub struct Finding {
    /// The server did what it must (refused what it must refuse, and nothing else broke).
    pub held: bool,
    /// What was seen, in a line.
    pub detail: String,
}

fn finding(held: bool, detail: impl Into<String>) -> Finding {
    Finding {
        held,
        detail: detail.into(),
    }
}

/// Undecodable Lookup bodies: each must be INVALID_ARGUMENT (the client's fault), not
/// INTERNAL.
pub(super) async fn undecodable(addr: SocketAddr) -> anyhow::Result<Finding> {
    let mut codes = std::collections::BTreeMap::<String, usize>::new();
    for k in 0..40u8 {
        // Field 1 (table) claiming 200 bytes that are not there, then varied junk.
        let garbage = vec![0x0a, 0xc8, 0x01, k, 0xff, 0xff, 0xff];
        let code = match raw_unary(addr, garbage).await {
            Ok(()) => Code::Ok,
            Err(s) => s.code(),
        };
        *codes.entry(format!("{code:?}")).or_default() += 1;
    }
    let held = codes.len() == 1 && codes.contains_key("InvalidArgument");
    Ok(finding(held, format!("codes {codes:?}")))
}

/// One unary Lookup call to `addr` with `body` as its message bytes.
async fn raw_unary(addr: SocketAddr, body: Vec<u8>) -> Result<(), tonic::Status> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .map_err(|e| tonic::Status::internal(e.to_string()))?
        .connect()
        .await
        .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready()
        .await
        .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    let path = http::uri::PathAndQuery::from_static("/engram_store.v1.EmbeddingStore/Lookup");
    grpc.unary::<Vec<u8>, Vec<u8>, _>(tonic::Request::new(body), path, RawCodec)
        .await
        .map(drop)
}

/// A codec that sends bytes as they are (and reads the answer as bytes).
#[derive(Debug, Clone, Copy, Default)]
struct RawCodec;

impl tonic::codec::Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawCodec;
    type Decoder = RawCodec;
    fn encoder(&mut self) -> RawCodec {
        RawCodec
    }
    fn decoder(&mut self) -> RawCodec {
        RawCodec
    }
}

impl tonic::codec::Encoder for RawCodec {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn encode(
        &mut self,
        item: Vec<u8>,
        dst: &mut tonic::codec::EncodeBuf<'_>,
    ) -> Result<(), tonic::Status> {
        use bytes::BufMut;
        dst.put_slice(&item);
        Ok(())
    }
}

impl tonic::codec::Decoder for RawCodec {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn decode(
        &mut self,
        src: &mut tonic::codec::DecodeBuf<'_>,
    ) -> Result<Option<Vec<u8>>, tonic::Status> {
        use bytes::Buf;
        let mut out = vec![0u8; src.remaining()];
        src.copy_to_slice(&mut out);
        Ok(Some(out))
    }
}

/// Regions registered on one local-socket connection until the server refuses: it must refuse
/// with RESOURCE_EXHAUSTED at its cap, and release them all when the connection closes.
pub(super) async fn region_flood(client: &Client, local_socket: &Path) -> anyhow::Result<Finding> {
    let before = client.stats(false).await?.regions;
    let path = local_socket.to_path_buf();
    let (registered, refusal) = tokio::task::spawn_blocking(move || {
        let local = LocalConnection::connect(&path)?;
        let mut registered = 0u64;
        let refusal = loop {
            let fd = sealed_memfd(4096)?;
            match local.register_memfd(&fd, 0) {
                Ok(_) => registered += 1,
                Err(e) => break e,
            }
            if registered > 100_000 {
                break ClientError::Local("no cap after 100,000 regions".into());
            }
        };
        drop(local);
        Ok::<_, ClientError>((registered, refusal))
    })
    .await??;
    let mut after = u64::MAX;
    for _ in 0..100 {
        after = client.stats(false).await?.regions;
        if after == before {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let held = refusal.code() == Code::ResourceExhausted && after == before;
    Ok(finding(
        held,
        format!(
            "{registered} regions before the refusal ({:?}: {refusal}); {after} left after closing (was {before})",
            refusal.code()
        ),
    ))
}

/// A registered region's memfd cannot be truncated (it is sealed), so writing into it cannot
/// raise SIGBUS; rows still land in it afterwards.
pub(super) async fn truncate_region(
    client: &Client,
    local_socket: &Path,
    table: &str,
) -> anyhow::Result<Finding> {
    let fd = sealed_memfd(1 << 20)?;
    let path = local_socket.to_path_buf();
    let local = LocalConnection::connect(&path)?;
    let region = local.register_memfd(&fd, 0)?;
    // SAFETY: ftruncate on a descriptor we own; it must fail on a sealed memfd.
    let truncated = unsafe { libc::ftruncate(fd.as_raw_fd(), 0) } == 0;
    let written = client
        .lookup_into(region.id, &region.token, 0, table, &[0, 1, 2])
        .await;
    let held = !truncated && written.is_ok();
    Ok(finding(
        held,
        format!(
            "truncate {}; LookupInto after it: {}",
            if truncated { "SUCCEEDED" } else { "refused" },
            match &written {
                Ok(n) => format!("{n} bytes written"),
                Err(e) => e.to_string(),
            }
        ),
    ))
}

/// For `duration`, swap a /dev/shm name between a file and a symlink to a file the client must
/// not touch, registering it by path all the while: every registration must be refused and the
/// protected file must not change.
pub(super) async fn path_race(
    client: &Client,
    duration: Duration,
    protected: Option<&Path>,
) -> anyhow::Result<Finding> {
    // A protected file of its own only when none is given (the temporary directory is then
    // needed; with one given, nothing depends on TMPDIR being writable by this user).
    let mut own_dir = None;
    let protected = match protected {
        Some(p) => p.to_path_buf(),
        None => {
            let dir = own_dir.insert(
                tempfile::tempdir().context("a temporary directory for the protected file")?,
            );
            let p = dir.path().join("secret");
            std::fs::write(&p, b"do not touch")
                .with_context(|| format!("write the protected file {}", p.display()))?;
            p
        }
    };
    let original = std::fs::read(&protected).ok();
    let shm = Path::new("/dev/shm");
    if !shm.is_dir() {
        return Ok(finding(true, "no /dev/shm here: nothing to race"));
    }
    // Names unique to this run (process and clock), so a file another user left under the same
    // name in the sticky /dev/shm cannot stop the race.
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let name = format!("engram-abuse-{}-{nanos:09}", std::process::id());
    let link = shm.join(&name);
    let decoy = shm.join(format!("{name}-decoy"));
    std::fs::write(&decoy, vec![0u8; 4096])
        .with_context(|| format!("write the decoy {}", decoy.display()))?;
    if let Err(e) = std::os::unix::fs::symlink(&protected, &link) {
        let _ = std::fs::remove_file(&decoy);
        return Err(e)
            .with_context(|| format!("symlink {} -> {}", link.display(), protected.display()));
    }
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let swapper = {
        let (stop, link, decoy) = (stop.clone(), link.clone(), decoy.clone());
        std::thread::spawn(move || {
            let (a, b) = (
                std::ffi::CString::new(link.as_os_str().as_encoded_bytes()).unwrap_or_default(),
                std::ffi::CString::new(decoy.as_os_str().as_encoded_bytes()).unwrap_or_default(),
            );
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                // SAFETY: renameat2 with two valid C strings; RENAME_EXCHANGE swaps the names.
                unsafe {
                    libc::renameat2(
                        libc::AT_FDCWD,
                        a.as_ptr(),
                        libc::AT_FDCWD,
                        b.as_ptr(),
                        libc::RENAME_EXCHANGE,
                    );
                }
            }
        })
    };
    let mut raw = client.raw();
    let (mut refused, mut accepted, mut leaked) = (0u64, 0u64, 0u64);
    let start = Instant::now();
    while start.elapsed() < duration {
        for path in [&link, &decoy] {
            let req = pb::RegisterRegionRequest {
                kind: Some(pb::register_region_request::Kind::Shm(
                    pb::SharedMemoryRegion {
                        path: path.display().to_string(),
                        size: 4096,
                    },
                )),
            };
            match raw.register_region(req).await {
                Ok(_) => accepted += 1,
                Err(s) => {
                    refused += 1;
                    if s.message().contains("secret") || s.message().contains(&name) {
                        leaked += 1;
                    }
                }
            }
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let _ = swapper.join();
    let _ = std::fs::remove_file(&link);
    let _ = std::fs::remove_file(&decoy);
    // The attacker may not be able to read the file (that is the point): compare when it can.
    let untouched = std::fs::read(&protected).ok() == original;
    let held = accepted == 0 && untouched && leaked == 0;
    Ok(finding(
        held,
        format!(
            "{refused} path registrations refused, {accepted} accepted, {leaked} answers naming the path; protected file {}",
            if untouched { "untouched" } else { "CHANGED" }
        ),
    ))
}

/// `count` prefetches of `ids` rows each, as fast as they are answered: the queue must bound
/// them (dropping, and counting, what does not fit).
pub(super) async fn prefetch_flood(
    client: &Client,
    table: &str,
    rows: u64,
    ids: usize,
    count: usize,
) -> anyhow::Result<Finding> {
    let before = client.stats(false).await?;
    let batch: Vec<u64> = (0..ids as u64)
        .map(|i| (i * 2_654_435_761) % rows.max(1))
        .collect();
    let mut accepted = 0u64;
    for _ in 0..count {
        accepted += client.prefetch(table, &batch).await?;
    }
    let after = client.stats(false).await?;
    let dropped = after.prefetch_dropped_requests - before.prefetch_dropped_requests;
    Ok(finding(
        true,
        format!(
            "{count} prefetches of {ids} ids: {accepted} rows accepted, {dropped} prefetches dropped, {} rows queued now",
            after.prefetch_queued_rows
        ),
    ))
}

/// `connections` connections that each send Lookups of `ids` small row ids (a large answer from
/// a small request) and never read: the server must bound the answers it holds (the answer
/// budget), hold them only until keepalive gives up on the connection, and keep serving others.
pub(super) async fn non_reading(
    addr: SocketAddr,
    table: &str,
    ids: usize,
    connections: usize,
    hold: Duration,
) -> anyhow::Result<Finding> {
    let req = pb::LookupRequest {
        table: table.into(),
        ids: (0..ids as u64).map(|i| i % 100).collect(),
        ..Default::default()
    };
    let message = req.encode_to_vec();
    let path = "/engram_store.v1.EmbeddingStore/Lookup".to_owned();
    let opened = tokio::task::spawn_blocking(move || {
        (0..connections)
            .filter_map(|_| send_and_never_read(addr, &path, &message, 64).ok())
            .collect::<Vec<_>>()
    })
    .await?;
    let requests: usize = opened.iter().map(|c| c.requests).sum();
    tokio::time::sleep(hold).await;
    drop(opened);
    Ok(finding(
        true,
        format!(
            "{connections} connections sent {requests} requests of {ids} rows and read nothing for {hold:?}"
        ),
    ))
}

/// `count` TCP connections that connect and say nothing, beyond the server's connection cap:
/// the server must not spin, and must close them (the cap at once, the rest when idle).
pub(super) async fn idle_connections(
    addr: SocketAddr,
    count: usize,
    hold: Duration,
) -> anyhow::Result<Finding> {
    let sockets = tokio::task::spawn_blocking(move || {
        (0..count)
            .filter_map(|_| std::net::TcpStream::connect(addr).ok())
            .collect::<Vec<_>>()
    })
    .await?;
    let opened = sockets.len();
    tokio::time::sleep(hold).await;
    // How many the server has closed by now (a closed socket reads end of file).
    let closed = sockets
        .iter()
        .filter(|s| {
            let _ = s.set_nonblocking(true);
            let mut b = [0u8; 1];
            matches!(std::io::Read::read(&mut &**s, &mut b), Ok(0))
        })
        .count();
    drop(sockets);
    Ok(finding(
        true,
        format!("{opened} idle connections opened; {closed} closed by the server after {hold:?}"),
    ))
}
