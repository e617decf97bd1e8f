//! The local socket: a Unix socket beside the gRPC listener where a client on the same host hands
//! the server a sealed memfd (`SCM_RIGHTS`) to use as a shared-memory region. The server maps the
//! descriptor it was given, never a path, so a client can only ever make it write into memory
//! the client itself holds; any local user may connect (the socket is mode 0666).
//!
//! Protocol: newline-terminated JSON messages, one reply line per message.
//! - `{"op": "register_memfd", "size": N}` with exactly one descriptor attached (`size` 0: the
//!   whole file) -> `{"ok": true, "region_id": ID, "token": "...", "size": N}`.
//! - `{"op": "unregister", "region_id": ID, "token": "..."}` -> `{"ok": true}`.
//! - `{"op": "open_channel", "table": T | "group": G, "layer": L, "compressed": bool,
//!   "capacity": ROWS, "region_id": ID, "region_token": "..."}` with the ring's sealed memfd
//!   attached (see `crate::channel::ring` for its layout) -> `{"ok": true, "channel_id": ID,
//!   "slots": N, "payload_bytes": B}`. The channel closes with this connection.
//! - `{"op": "close_channel", "channel_id": ID}` -> `{"ok": true}`.
//! - Errors: `{"ok": false, "code": "INVALID_ARGUMENT", "message": "..."}` (gRPC code names).
//!
//! Regions registered on a connection belong to it: they go when it closes. A line longer than
//! 64 KiB, or more than a few descriptors at once, closes the connection. When the server checks
//! tokens (`--auth-tokens`), `register_memfd` must carry an admin token (`"token": "..."`), as
//! RegisterRegion must.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncWriteExt, Interest};
use tokio::net::UnixStream;

use super::connections::{ConnTable, Peer};
use super::listen::bind_unix;
use crate::access::{Role, TokenSet};
use crate::channel::{ChannelError, ChannelTarget, Ring};
use crate::engine::{Engine, LookupError};
use crate::regions::{RegionKey, RegionSpec};
use engram_store_client::fd_passing::recv_with_fds;

/// Longest message line.
const MAX_LINE: usize = 64 << 10;
/// Most descriptors held waiting for their message.
const MAX_PENDING_FDS: usize = 4;

/// The local socket, served in the background until dropped (its file is removed then).
#[derive(Debug)]
pub struct LocalSocket {
    path: PathBuf,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for LocalSocket {
    fn drop(&mut self) {
        self.task.abort();
        let _ = std::fs::remove_file(&self.path);
    }
}

#[derive(Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
enum Message {
    RegisterMemfd {
        #[serde(default)]
        size: u64,
        #[serde(default)]
        token: Option<String>,
    },
    Unregister {
        region_id: u64,
        token: String,
    },
    OpenChannel {
        #[serde(default)]
        table: Option<String>,
        #[serde(default)]
        group: Option<String>,
        #[serde(default)]
        layer: Option<u32>,
        #[serde(default)]
        compressed: bool,
        capacity: usize,
        region_id: u64,
        region_token: String,
        #[serde(default)]
        token: Option<String>,
    },
    CloseChannel {
        channel_id: u64,
    },
}

#[derive(Serialize)]
#[serde(untagged)]
enum Reply {
    Registered {
        ok: bool,
        region_id: u64,
        token: String,
        size: u64,
    },
    Done {
        ok: bool,
    },
    Opened {
        ok: bool,
        channel_id: u64,
        slots: u32,
        payload_bytes: usize,
    },
    Failed {
        ok: bool,
        code: &'static str,
        message: String,
    },
}

impl Reply {
    fn failed(e: &LookupError) -> Self {
        Reply::Failed {
            ok: false,
            code: code_name(crate::edge::status_code_of(e)),
            message: e.to_string(),
        }
    }

    fn bad_message(message: String) -> Self {
        Reply::Failed {
            ok: false,
            code: "INVALID_ARGUMENT",
            message,
        }
    }
}

fn code_name(code: tonic::Code) -> &'static str {
    match code {
        tonic::Code::InvalidArgument => "INVALID_ARGUMENT",
        tonic::Code::NotFound => "NOT_FOUND",
        tonic::Code::FailedPrecondition => "FAILED_PRECONDITION",
        tonic::Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        tonic::Code::PermissionDenied => "PERMISSION_DENIED",
        tonic::Code::Unavailable => "UNAVAILABLE",
        _ => "INTERNAL",
    }
}

impl LocalSocket {
    /// Binds `path` (mode 0666) and serves it for `engine`, tracking connections in `table`.
    pub(crate) fn bind(
        path: &Path,
        engine: Arc<Engine>,
        table: Arc<ConnTable>,
        tokens: Option<Arc<TokenSet>>,
    ) -> anyhow::Result<Self> {
        let listener = bind_unix(path)?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666))
            .map_err(|e| anyhow::anyhow!("make {} connectable: {e}", path.display()))?;
        let task = tokio::spawn(async move {
            loop {
                let stream = match listener.accept().await {
                    Ok((stream, _)) => stream,
                    Err(e) => {
                        tracing::warn!(error = %e, "local socket: accept failed; backing off");
                        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let peer = match stream.peer_cred() {
                    Ok(c) => Peer::Unix {
                        uid: c.uid(),
                        gid: c.gid(),
                        pid: c.pid(),
                    },
                    Err(_) => continue,
                };
                let (engine, table, tokens) = (engine.clone(), table.clone(), tokens.clone());
                tokio::spawn(async move {
                    let conn = table.open_local(peer);
                    let tokens = tokens.as_deref();
                    if let Err(e) = serve_connection(stream, &engine, tokens, conn.id()).await {
                        tracing::debug!(error = %e, "local socket connection ended");
                    }
                });
            }
        });
        Ok(Self {
            path: path.to_path_buf(),
            task,
        })
    }
}

async fn serve_connection(
    mut stream: UnixStream,
    engine: &Arc<Engine>,
    tokens: Option<&TokenSet>,
    owner: u64,
) -> io::Result<()> {
    let mut line = Vec::new();
    let mut fds: Vec<OwnedFd> = Vec::new();
    let mut buf = vec![0u8; 4096];
    loop {
        let n = stream
            .async_io(Interest::READABLE, || {
                recv_with_fds(stream.as_raw_fd(), &mut buf, &mut fds)
            })
            .await?;
        if n == 0 {
            return Ok(());
        }
        if fds.len() > MAX_PENDING_FDS {
            return Err(io::Error::other("too many descriptors at once"));
        }
        line.extend_from_slice(&buf[..n]);
        while let Some(end) = line.iter().position(|&b| b == b'\n') {
            let message: Vec<u8> = line.drain(..=end).collect();
            let reply = answer(engine, tokens, owner, &message[..end], &mut fds);
            let mut text = serde_json::to_vec(&reply).map_err(io::Error::other)?;
            text.push(b'\n');
            stream.write_all(&text).await?;
        }
        if line.len() > MAX_LINE {
            return Err(io::Error::other("message line too long"));
        }
    }
}

fn answer(
    engine: &Arc<Engine>,
    tokens: Option<&TokenSet>,
    owner: u64,
    message: &[u8],
    fds: &mut Vec<OwnedFd>,
) -> Reply {
    let message: Message = match serde_json::from_slice(message) {
        Ok(m) => m,
        Err(e) => return Reply::bad_message(format!("not a local-socket message: {e}")),
    };
    match message {
        Message::RegisterMemfd { size, token } => {
            if let Some(refusal) = check_admin(tokens, token.as_deref(), "register_memfd") {
                fds.clear();
                return refusal;
            }
            let fd = match the_one_fd(fds, "register_memfd") {
                Ok(fd) => fd,
                Err(refusal) => return refusal,
            };
            match engine.register_region(RegionSpec::Memfd { fd, size }, owner) {
                Ok(r) => Reply::Registered {
                    ok: true,
                    region_id: r.id,
                    token: r.token,
                    size: r.size,
                },
                Err(e) => Reply::failed(&e),
            }
        }
        Message::OpenChannel {
            table,
            group,
            layer,
            compressed,
            capacity,
            region_id,
            region_token,
            token,
        } => {
            if let Some(refusal) = check_admin(tokens, token.as_deref(), "open_channel") {
                fds.clear();
                return refusal;
            }
            let fd = match the_one_fd(fds, "open_channel") {
                Ok(fd) => fd,
                Err(refusal) => return refusal,
            };
            let target = match (table, group, layer) {
                (Some(t), None, None) => ChannelTarget::Table(t),
                (None, Some(group), Some(layer_id)) => ChannelTarget::Layer {
                    group,
                    layer_id,
                    compressed,
                },
                _ => {
                    return Reply::bad_message(
                        "open_channel names a table, or a group and a layer".into(),
                    );
                }
            };
            let ring = match Ring::map(&fd) {
                Ok(r) => r,
                Err(e) => return Reply::bad_message(e.to_string()),
            };
            let (slots, payload_bytes) = (ring.slots(), ring.payload_bytes());
            let region = RegionKey {
                id: region_id,
                token: region_token,
            };
            match engine.open_channel(ring, &region, target, capacity, owner) {
                Ok(channel) => Reply::Opened {
                    ok: true,
                    channel_id: channel.id(),
                    slots,
                    payload_bytes,
                },
                Err(ChannelError::Lookup(e)) => Reply::failed(&e),
                Err(e @ ChannelError::TooMany { .. }) => Reply::Failed {
                    ok: false,
                    code: "RESOURCE_EXHAUSTED",
                    message: e.to_string(),
                },
                Err(e) => Reply::bad_message(e.to_string()),
            }
        }
        Message::CloseChannel { channel_id } => {
            fds.clear();
            if engine.close_channel(channel_id, owner) {
                Reply::Done { ok: true }
            } else {
                Reply::Failed {
                    ok: false,
                    code: "NOT_FOUND",
                    message: format!("this connection has no channel {channel_id}"),
                }
            }
        }
        Message::Unregister { region_id, token } => {
            fds.clear();
            match engine.unregister_region(&RegionKey {
                id: region_id,
                token,
            }) {
                Ok(()) => Reply::Done { ok: true },
                Err(e) => Reply::failed(&e),
            }
        }
    }
}

/// A refusal when the server checks tokens and `token` is not an admin one.
fn check_admin(tokens: Option<&TokenSet>, token: Option<&str>, op: &str) -> Option<Reply> {
    let tokens = tokens?;
    let (code, message) = match token.and_then(|t| tokens.role_of(t.as_bytes())) {
        Some(Role::Admin) => return None,
        Some(_) => ("PERMISSION_DENIED", format!("{op} needs an admin token")),
        None => (
            "UNAUTHENTICATED",
            format!("{op} needs a token (\"token\": \"...\"): the server checks tokens"),
        ),
    };
    Some(Reply::Failed {
        ok: false,
        code,
        message,
    })
}

/// The one descriptor `op` takes; any other number is refused (and what came is closed).
fn the_one_fd(fds: &mut Vec<OwnedFd>, op: &str) -> Result<OwnedFd, Reply> {
    match fds.len() {
        1 => fds
            .pop()
            .ok_or_else(|| Reply::bad_message(format!("no descriptor came with {op}"))),
        n => {
            fds.clear();
            Err(Reply::bad_message(format!(
                "{op} takes exactly one file descriptor, {n} came with it"
            )))
        }
    }
}
