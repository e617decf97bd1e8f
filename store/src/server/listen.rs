//! Where the server listens: a TCP address (`IP:PORT`, or `HOST:PORT` resolved), or a Unix
//! socket (`unix:/run/engram-store.sock`), whose peers are local processes known by their
//! credentials.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// An address to listen on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListenAddr {
    /// TCP.
    Tcp(SocketAddr),
    /// A Unix socket at this path.
    Unix(PathBuf),
}

impl std::fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ListenAddr::Tcp(a) => write!(f, "{a}"),
            ListenAddr::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

impl ListenAddr {
    /// Parses `unix:PATH`, `IP:PORT` or `HOST:PORT` (resolved; the first address).
    pub async fn resolve(text: &str) -> anyhow::Result<Self> {
        if let Some(path) = text.strip_prefix("unix:") {
            if path.is_empty() {
                anyhow::bail!(
                    "--listen {text:?}: give the socket's path, e.g. unix:/run/engram-store.sock"
                );
            }
            return Ok(ListenAddr::Unix(PathBuf::from(path)));
        }
        if let Ok(addr) = text.parse() {
            return Ok(ListenAddr::Tcp(addr));
        }
        let shape = || {
            anyhow::anyhow!(
                "--listen {text:?} is not an address like 127.0.0.1:50051, localhost:50051 or \
                 unix:/run/engram-store.sock"
            )
        };
        let (_, port) = text.rsplit_once(':').ok_or_else(shape)?;
        port.parse::<u16>().map_err(|_| shape())?;
        let mut addrs = tokio::net::lookup_host(text)
            .await
            .map_err(|e| anyhow::anyhow!("--listen {text:?}: cannot resolve the host: {e}"))?;
        let addr = addrs
            .next()
            .ok_or_else(|| anyhow::anyhow!("--listen {text:?}: the host has no address"))?;
        Ok(ListenAddr::Tcp(addr))
    }

    /// Binds it. A Unix socket's stale file (left by a server that is gone) is replaced; a
    /// socket another server answers on is not.
    pub fn bind(&self) -> anyhow::Result<Listener> {
        match self {
            ListenAddr::Tcp(addr) => {
                let std = std::net::TcpListener::bind(addr)
                    .map_err(|e| anyhow::anyhow!("listen on {addr}: {e}"))?;
                std.set_nonblocking(true)?;
                Ok(Listener::Tcp(tokio::net::TcpListener::from_std(std)?))
            }
            ListenAddr::Unix(path) => {
                let listener = bind_unix(path)?;
                Ok(Listener::Unix(listener, path.clone()))
            }
        }
    }
}

/// Binds a Unix socket at `path`, replacing a stale socket file but never a live one.
pub(crate) fn bind_unix(path: &Path) -> anyhow::Result<tokio::net::UnixListener> {
    use std::os::unix::fs::FileTypeExt;
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if !meta.file_type().is_socket() {
            anyhow::bail!(
                "{} exists and is not a socket: refusing to replace it",
                path.display()
            );
        }
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            anyhow::bail!("{} is in use by a running server", path.display());
        }
        std::fs::remove_file(path)
            .map_err(|e| anyhow::anyhow!("remove the stale socket {}: {e}", path.display()))?;
    }
    tokio::net::UnixListener::bind(path)
        .map_err(|e| anyhow::anyhow!("listen on unix:{}: {e}", path.display()))
}

/// A bound listener.
#[derive(Debug)]
pub enum Listener {
    /// TCP.
    Tcp(tokio::net::TcpListener),
    /// A Unix socket, and its path (removed when the server ends).
    Unix(tokio::net::UnixListener, PathBuf),
}

impl Listener {
    /// The TCP address bound, if TCP.
    pub fn tcp_addr(&self) -> Option<SocketAddr> {
        match self {
            Listener::Tcp(l) => l.local_addr().ok(),
            Listener::Unix(..) => None,
        }
    }

    /// What it listens on.
    pub fn addr(&self) -> ListenAddr {
        match self {
            Listener::Tcp(l) => ListenAddr::Tcp(
                l.local_addr()
                    .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0))),
            ),
            Listener::Unix(_, path) => ListenAddr::Unix(path.clone()),
        }
    }
}
