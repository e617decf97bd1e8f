//! Host shared memory the server writes rows into (`LookupInto`): a sealed memfd this process
//! creates and maps, handed to the server over its local Unix socket (`SCM_RIGHTS`), so the
//! server maps exactly this memory and nothing else. The memfd is sealed against shrinking and
//! growing, so neither side can lose its pages. The region lives as long as the local-socket
//! connection that registered it: dropping [`SharedMemoryRegion`] unregisters it.

use std::io::{BufRead, BufReader, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::Path;

use crate::error::ClientError;

/// A connection to the server's local socket. Regions registered on it live as long as it.
#[derive(Debug)]
pub struct LocalConnection {
    socket: UnixStream,
    token: Option<String>,
}

/// A region the local socket registered: its id, token and size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registered {
    /// The region's id.
    pub id: u64,
    /// Its token.
    pub token: String,
    /// Its size in bytes.
    pub size: u64,
}

impl LocalConnection {
    /// Connects to the local socket at `path`.
    pub fn connect(path: &Path) -> Result<Self, ClientError> {
        let socket = UnixStream::connect(path).map_err(|e| {
            ClientError::Local(format!(
                "connect to the server's local socket {}: {e}",
                path.display()
            ))
        })?;
        Ok(Self {
            socket,
            token: None,
        })
    }

    /// Presents `token` with every registration (a server that checks tokens wants an admin
    /// one). Default: none.
    pub fn with_token(mut self, token: Option<String>) -> Self {
        self.token = token;
        self
    }

    /// Sends `message` (a JSON object) with `fd` attached; returns the reply, or the server's
    /// error.
    pub fn request_with_fd(
        &self,
        message: &serde_json::Value,
        fd: &OwnedFd,
    ) -> Result<serde_json::Value, ClientError> {
        let line = message.to_string() + "\n";
        crate::fd_passing::send_with_fds(
            self.socket.as_raw_fd(),
            line.as_bytes(),
            &[fd.as_raw_fd()],
        )
        .map_err(|e| ClientError::Local(format!("send the memfd to the server: {e}")))?;
        self.read_reply()
    }

    /// Sends `message` (a JSON object); returns the reply, or the server's error.
    pub fn request(&self, message: &serde_json::Value) -> Result<serde_json::Value, ClientError> {
        self.send_raw((message.to_string() + "\n").as_bytes())
    }

    /// Registers `size` bytes of the sealed memfd `fd` (0: all of it) as a region.
    pub fn register_memfd(&self, fd: &OwnedFd, size: u64) -> Result<Registered, ClientError> {
        let message = serde_json::json!({
            "op": "register_memfd",
            "size": size,
            "token": self.token,
        });
        let reply = self.request_with_fd(&message, fd)?;
        Ok(Registered {
            id: reply["region_id"].as_u64().unwrap_or(0),
            token: reply["token"].as_str().unwrap_or_default().to_owned(),
            size: reply["size"].as_u64().unwrap_or(0),
        })
    }

    /// Unregisters a region registered on this connection.
    pub fn unregister(&self, id: u64, token: &str) -> Result<(), ClientError> {
        let message = serde_json::json!({"op": "unregister", "region_id": id, "token": token});
        self.request(&message).map(drop)
    }

    /// Sends raw bytes (for tests of what the server does with malformed messages).
    pub fn send_raw(&self, bytes: &[u8]) -> Result<serde_json::Value, ClientError> {
        (&self.socket)
            .write_all(bytes)
            .map_err(|e| ClientError::Local(format!("write the local socket: {e}")))?;
        self.read_reply()
    }

    fn read_reply(&self) -> Result<serde_json::Value, ClientError> {
        let mut line = String::new();
        BufReader::new(&self.socket)
            .read_line(&mut line)
            .map_err(|e| ClientError::Local(format!("read the local socket: {e}")))?;
        if line.is_empty() {
            return Err(ClientError::Local(
                "the server closed its local socket".into(),
            ));
        }
        let reply: serde_json::Value = serde_json::from_str(&line)
            .map_err(|e| ClientError::Local(format!("the local socket answered {line:?}: {e}")))?;
        if reply["ok"].as_bool() == Some(true) {
            return Ok(reply);
        }
        let code = reply["code"].as_str().unwrap_or("INTERNAL");
        let message = reply["message"].as_str().unwrap_or_default().to_owned();
        Err(ClientError::from_code_name(code, message))
    }
}

/// A sealed memfd of `size` bytes: its descriptor.
pub fn sealed_memfd(size: usize) -> Result<OwnedFd, ClientError> {
    // SAFETY: memfd_create with a valid C string; the descriptor is ours.
    let raw = unsafe {
        libc::memfd_create(
            c"engram-store-region".as_ptr(),
            libc::MFD_ALLOW_SEALING | libc::MFD_CLOEXEC,
        )
    };
    if raw < 0 {
        return Err(os_error("memfd_create"));
    }
    // SAFETY: a fresh descriptor owned by nobody else.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    let len = libc::off_t::try_from(size)
        .map_err(|_| ClientError::Local(format!("a region of {size} bytes is too large")))?;
    // SAFETY: plain syscalls on a descriptor we own.
    unsafe {
        if libc::ftruncate(fd.as_raw_fd(), len) != 0 {
            return Err(os_error("size the memfd"));
        }
        let seals = libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_SEAL;
        if libc::fcntl(fd.as_raw_fd(), libc::F_ADD_SEALS, seals) != 0 {
            return Err(os_error("seal the memfd"));
        }
    }
    Ok(fd)
}

/// A registered shared-memory region.
#[derive(Debug)]
pub struct SharedMemoryRegion {
    id: u64,
    token: String,
    ptr: *mut u8,
    size: usize,
    local: LocalConnection,
}

// SAFETY: the mapping is owned by this value and unmapped once on drop; slices of it are handed
// out only through &self / &mut self borrows.
unsafe impl Send for SharedMemoryRegion {}
// SAFETY: as above; &self only gives shared slices.
unsafe impl Sync for SharedMemoryRegion {}

fn os_error(what: &str) -> ClientError {
    ClientError::Local(format!("{what}: {}", std::io::Error::last_os_error()))
}

impl SharedMemoryRegion {
    /// Creates a sealed memfd of `size` bytes, maps it, and registers it with the server whose
    /// local socket is at `local_socket` (presenting `token`, if the server checks tokens).
    pub fn create(
        local_socket: &Path,
        size: usize,
        token: Option<String>,
    ) -> Result<Self, ClientError> {
        if size == 0 {
            return Err(ClientError::Local(
                "a region needs at least one byte".into(),
            ));
        }
        let fd = sealed_memfd(size)?;
        let local = LocalConnection::connect(local_socket)?.with_token(token);
        let registered = local.register_memfd(&fd, size as u64)?;
        let ptr = map_shared(&fd, size, "map the memfd")?;
        Ok(Self {
            id: registered.id,
            token: registered.token,
            ptr: ptr.cast(),
            size,
            local,
        })
    }

    /// The region's id, for LookupInto.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The region's token, for LookupInto.
    pub fn token(&self) -> &str {
        &self.token
    }

    /// Its size in bytes.
    pub fn len(&self) -> usize {
        self.size
    }

    /// True for an empty region (never: regions have at least one byte).
    pub fn is_empty(&self) -> bool {
        self.size == 0
    }

    /// Its bytes. The server may be writing into them while a LookupInto is in flight; read them
    /// after it answered.
    pub fn as_slice(&self) -> &[u8] {
        // SAFETY: the mapping is live for `size` bytes while self lives.
        unsafe { std::slice::from_raw_parts(self.ptr, self.size) }
    }

    /// Its bytes, writable.
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: as above, and &mut self is the only Rust reference to them.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.size) }
    }

    /// Unregisters the region now (dropping it does too, by closing the socket).
    pub fn unregister(self) -> Result<(), ClientError> {
        self.local.unregister(self.id, &self.token)
    }
}

impl Drop for SharedMemoryRegion {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `create`, unmapped exactly once here. The server's own
        // mapping stays valid (the memfd lives on with it) until it sees the socket close.
        unsafe { libc::munmap(self.ptr.cast(), self.size) };
    }
}

/// A shared read-write mapping of `len` bytes of the sealed memfd `fd` (which holds them for
/// good: it cannot shrink); `what` names it in the error.
pub(crate) fn map_shared(fd: &OwnedFd, len: usize, what: &str) -> Result<*mut u8, ClientError> {
    // SAFETY: a fresh shared mapping of a descriptor we own; the kernel picks the address.
    let ptr = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            fd.as_raw_fd(),
            0,
        )
    };
    if ptr == libc::MAP_FAILED {
        return Err(os_error(what));
    }
    Ok(ptr.cast())
}
