//! Accepted connections, tracked: each gets an id and a [`ConnInfo`] (its peer: a TCP address,
//! or a Unix socket's uid/gid/pid from `SO_PEERCRED`) that requests see in their extensions;
//! closing it releases what the client registered through it (regions, channels). The accept
//! loop caps the connections open at once (beyond the cap a new connection is closed at once,
//! so a client fails fast instead of hanging in the backlog), and when the process runs out of
//! file descriptors it backs off instead of spinning. A reaper closes connections that have had
//! no request in flight for the idle timeout and hold nothing registered through them: a
//! connection that registered a region or opened a channel stays open until its client closes
//! it (a worker that registered its buffers and then reads rows only through a channel sends no
//! further request on it; reaping it would take its regions away mid-use). What such
//! connections hold is bounded by the per-connection and total caps on regions and channels.

use std::collections::HashMap;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures::task::AtomicWaker;
use parking_lot::Mutex;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::mpsc;
use tonic::transport::server::Connected;

/// Id of one accepted connection, unique for the life of the server.
pub type ConnId = u64;

/// Who is on the other end of a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Peer {
    /// A TCP peer.
    Tcp(std::net::SocketAddr),
    /// A local process on a Unix socket, by its credentials (`SO_PEERCRED`).
    Unix {
        /// Its user id.
        uid: u32,
        /// Its group id.
        gid: u32,
        /// Its process id, where the kernel says.
        pid: Option<i32>,
    },
}

/// What a request knows of its connection (a request extension).
#[derive(Debug, Clone)]
pub struct ConnInfo {
    /// The connection's id.
    pub id: ConnId,
    /// Its peer.
    pub peer: Peer,
    pub(crate) state: Arc<ConnState>,
}

/// Live state of one connection, shared by its IO, its requests and the reaper.
#[derive(Debug)]
pub(crate) struct ConnState {
    /// Requests in flight (their responses not yet fully sent).
    active: AtomicUsize,
    /// When the last request finished or started, in ms since the table's start.
    last_activity_ms: AtomicU64,
    /// Set to close the connection; its IO then fails its next poll.
    closing: AtomicBool,
    waker: AtomicWaker,
}

impl ConnState {
    fn new(now_ms: u64) -> Self {
        Self {
            active: AtomicUsize::new(0),
            last_activity_ms: AtomicU64::new(now_ms),
            closing: AtomicBool::new(false),
            waker: AtomicWaker::new(),
        }
    }

    fn close(&self) {
        self.closing.store(true, Ordering::Release);
        self.waker.wake();
    }
}

/// Called with a connection's id when it closes.
pub(crate) type OnClose = Arc<dyn Fn(ConnId) + Send + Sync>;

/// Whether a connection holds something registered through it (then it is never idle-reaped).
pub(crate) type Holds = Arc<dyn Fn(ConnId) -> bool + Send + Sync>;

/// Every open connection.
pub(crate) struct ConnTable {
    next_id: AtomicU64,
    open: Mutex<HashMap<ConnId, Arc<ConnState>>>,
    started: Instant,
    on_close: OnClose,
    holds: Holds,
}

impl std::fmt::Debug for ConnTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnTable")
            .field("open", &self.open.lock().len())
            .finish()
    }
}

impl ConnTable {
    pub(crate) fn new(on_close: OnClose, holds: Holds) -> Arc<Self> {
        Arc::new(Self {
            next_id: AtomicU64::new(1),
            open: Mutex::new(HashMap::new()),
            started: Instant::now(),
            on_close,
            holds,
        })
    }

    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// Connections open now.
    pub(crate) fn len(&self) -> usize {
        self.open.lock().len()
    }

    /// Requests in flight now on every connection (their responses not yet fully sent).
    pub(crate) fn requests_in_flight(&self) -> usize {
        self.open
            .lock()
            .values()
            .map(|s| s.active.load(Ordering::Acquire))
            .sum()
    }

    /// The connections with no request in flight for `idle`.
    fn idle_since(&self, idle: Duration) -> Vec<(ConnId, Arc<ConnState>)> {
        let now = self.now_ms();
        let idle_ms = idle.as_millis() as u64;
        self.open
            .lock()
            .iter()
            .filter(|(_, state)| {
                let quiet = now.saturating_sub(state.last_activity_ms.load(Ordering::Relaxed));
                state.active.load(Ordering::Acquire) == 0 && quiet >= idle_ms
            })
            .map(|(id, state)| (*id, state.clone()))
            .collect()
    }

    /// Registers a new connection.
    fn open(self: &Arc<Self>, peer: Peer) -> ConnInfo {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let state = Arc::new(ConnState::new(self.now_ms()));
        self.open.lock().insert(id, state.clone());
        ConnInfo { id, peer, state }
    }

    /// Registers a connection of the local socket; it closes when the guard drops.
    pub(crate) fn open_local(self: &Arc<Self>, peer: Peer) -> LocalConn {
        LocalConn {
            info: self.open(peer),
            table: self.clone(),
        }
    }

    fn closed(&self, id: ConnId) {
        self.open.lock().remove(&id);
        (self.on_close)(id);
    }

    /// A request of `info`'s connection starts; it ends when the guard drops.
    pub(crate) fn request_started(self: &Arc<Self>, info: &ConnInfo) -> ActiveRequest {
        info.state.active.fetch_add(1, Ordering::AcqRel);
        info.state
            .last_activity_ms
            .store(self.now_ms(), Ordering::Relaxed);
        ActiveRequest {
            table: self.clone(),
            state: info.state.clone(),
        }
    }

    /// Closes every connection with no request in flight for `idle` that holds nothing
    /// registered through it, every `every`, for as long as the table lives.
    pub(crate) fn spawn_idle_reaper(self: &Arc<Self>, idle: Duration, every: Duration) {
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                let Some(table) = weak.upgrade() else { return };
                for (id, state) in table.idle_since(idle) {
                    // (asked outside the table's lock: `holds` takes the registries' locks)
                    if !(table.holds)(id) {
                        state.close();
                    }
                }
            }
        });
    }
}

/// A local-socket connection, open while this lives.
#[derive(Debug)]
pub(crate) struct LocalConn {
    info: ConnInfo,
    table: Arc<ConnTable>,
}

impl LocalConn {
    pub(crate) fn id(&self) -> ConnId {
        self.info.id
    }
}

impl Drop for LocalConn {
    fn drop(&mut self) {
        self.table.closed(self.info.id);
    }
}

/// One request in flight on a connection; dropping it (when the response has been sent, or
/// abandoned) marks the connection active now.
#[derive(Debug)]
pub(crate) struct ActiveRequest {
    table: Arc<ConnTable>,
    state: Arc<ConnState>,
}

impl Drop for ActiveRequest {
    fn drop(&mut self) {
        self.state
            .last_activity_ms
            .store(self.table.now_ms(), Ordering::Relaxed);
        self.state.active.fetch_sub(1, Ordering::AcqRel);
    }
}

/// An accepted stream that knows its connection: closing it tells the table.
pub struct TrackedConn<IO> {
    io: IO,
    info: ConnInfo,
    table: Arc<ConnTable>,
}

impl<IO> std::fmt::Debug for TrackedConn<IO> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TrackedConn")
            .field("id", &self.info.id)
            .field("peer", &self.info.peer)
            .finish()
    }
}

impl<IO> Drop for TrackedConn<IO> {
    fn drop(&mut self) {
        self.table.closed(self.info.id);
    }
}

impl<IO> TrackedConn<IO> {
    fn closing(&self, cx: &Context<'_>) -> bool {
        self.info.state.waker.register(cx.waker());
        self.info.state.closing.load(Ordering::Acquire)
    }
}

fn closed_idle() -> io::Error {
    io::Error::new(io::ErrorKind::ConnectionAborted, "closed: idle")
}

impl<IO: AsyncRead + Unpin> AsyncRead for TrackedConn<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.closing(cx) {
            return Poll::Ready(Err(closed_idle()));
        }
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for TrackedConn<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.closing(cx) {
            return Poll::Ready(Err(closed_idle()));
        }
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        if self.closing(cx) {
            return Poll::Ready(Err(closed_idle()));
        }
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

impl<IO> Connected for TrackedConn<IO> {
    type ConnectInfo = ConnInfo;

    fn connect_info(&self) -> ConnInfo {
        self.info.clone()
    }
}

/// A listener the accept loop takes connections from.
pub(crate) trait Accept: Send + 'static {
    /// The stream of one connection.
    type Io: AsyncRead + AsyncWrite + Unpin + Send + 'static;
    /// Accepts one connection and names its peer.
    fn accept(&self) -> impl Future<Output = io::Result<(Self::Io, Peer)>> + Send;
}

impl Accept for tokio::net::TcpListener {
    type Io = tokio::net::TcpStream;
    async fn accept(&self) -> io::Result<(Self::Io, Peer)> {
        let (stream, addr) = tokio::net::TcpListener::accept(self).await?;
        // Small answers must not wait on Nagle's algorithm (tens of ms at batch 16).
        let _ = stream.set_nodelay(true);
        Ok((stream, Peer::Tcp(addr)))
    }
}

impl Accept for tokio::net::UnixListener {
    type Io = tokio::net::UnixStream;
    async fn accept(&self) -> io::Result<(Self::Io, Peer)> {
        let (stream, _) = tokio::net::UnixListener::accept(self).await?;
        let cred = stream.peer_cred()?;
        let peer = Peer::Unix {
            uid: cred.uid(),
            gid: cred.gid(),
            pid: cred.pid(),
        };
        Ok((stream, peer))
    }
}

/// True for accept errors that mean "out of file descriptors or memory": back off, the
/// listener is fine.
fn is_resource_exhaustion(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    )
}

/// Accepts from `listener` until the receiver goes away, handing each connection (tracked in
/// `table`) to the returned channel; at most `max_connections` open at once.
pub(crate) fn accept_loop<L: Accept>(
    listener: L,
    table: Arc<ConnTable>,
    max_connections: usize,
) -> mpsc::Receiver<io::Result<TrackedConn<L::Io>>> {
    let (tx, rx) = mpsc::channel(16);
    tokio::spawn(async move {
        let mut warned_full = false;
        loop {
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                () = tx.closed() => return,
            };
            match accepted {
                Ok((io, peer)) => {
                    if table.len() >= max_connections {
                        if !warned_full {
                            tracing::warn!(
                                max_connections,
                                "connection limit reached: new connections are closed at once"
                            );
                            warned_full = true;
                        }
                        drop(io);
                        continue;
                    }
                    warned_full = false;
                    let info = table.open(peer);
                    let conn = TrackedConn {
                        io,
                        info,
                        table: table.clone(),
                    };
                    if tx.send(Ok(conn)).await.is_err() {
                        return;
                    }
                }
                Err(e) if is_resource_exhaustion(&e) => {
                    tracing::warn!(error = %e, "accept: out of descriptors or memory; backing off");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) if e.kind() == io::ErrorKind::ConnectionAborted => {}
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed; backing off");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        }
    });
    rx
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer() -> Peer {
        Peer::Tcp(std::net::SocketAddr::from(([127, 0, 0, 1], 9)))
    }

    /// The reaper closes an idle connection that holds nothing, and leaves one that holds a
    /// region or channel open however long it is quiet; once it holds nothing, it goes too.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_idle_reaper_spares_a_connection_that_holds_something() {
        let holding = Arc::new(Mutex::new(std::collections::HashSet::<ConnId>::new()));
        let holds: Holds = {
            let holding = holding.clone();
            Arc::new(move |id| holding.lock().contains(&id))
        };
        let table = ConnTable::new(Arc::new(|_| {}), holds);
        let bare = table.open(peer());
        let keeper = table.open(peer());
        holding.lock().insert(keeper.id);
        table.spawn_idle_reaper(Duration::from_millis(50), Duration::from_millis(10));
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(
            bare.state.closing.load(Ordering::Acquire),
            "an idle connection holding nothing is closed"
        );
        assert!(
            !keeper.state.closing.load(Ordering::Acquire),
            "an idle connection holding a region was closed"
        );
        holding.lock().remove(&keeper.id);
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(
            keeper.state.closing.load(Ordering::Acquire),
            "once it holds nothing, the idle connection is closed"
        );
    }
}
