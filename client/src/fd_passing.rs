//! File descriptors passed over a Unix socket (`SCM_RIGHTS`): the one place the crates build
//! and walk the control messages. The client sends its shared-memory region's memfd to the
//! server's local socket with it; the server receives those, and hands a shared VRAM tier's
//! allocations to a worker process with it.

use std::io;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};

/// Most descriptors one message carries here.
pub const MAX_FDS: usize = 8;

/// Sends `bytes` (at least one) with `fds` (at most [`MAX_FDS`]) attached, in one `sendmsg`
/// (no SIGPIPE). An error unless every byte went.
pub fn send_with_fds(socket: RawFd, bytes: &[u8], fds: &[RawFd]) -> io::Result<()> {
    if bytes.is_empty() || fds.len() > MAX_FDS {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "a message with descriptors carries at least one byte and at most {MAX_FDS} \
                 descriptors, not {} bytes and {}",
                bytes.len(),
                fds.len()
            ),
        ));
    }
    let fd_bytes = std::mem::size_of_val(fds);
    // Room for the most descriptors; u64 words keep it aligned for cmsghdr.
    let mut control = [0u64; 8];
    let mut iov = libc::iovec {
        iov_base: bytes.as_ptr() as *mut libc::c_void,
        iov_len: bytes.len(),
    };
    // SAFETY: msghdr is plain data; zeroed is a valid empty header.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    if !fds.is_empty() {
        msg.msg_control = control.as_mut_ptr().cast();
        // SAFETY: CMSG_SPACE is a pure size computation (at most 48 bytes for MAX_FDS ints,
        // within the 64 of `control`).
        msg.msg_controllen = unsafe { libc::CMSG_SPACE(fd_bytes as u32) } as _;
        // SAFETY: the control buffer holds one cmsghdr of CMSG_LEN(fd_bytes) (CMSG_SPACE above).
        unsafe {
            let cmsg = libc::CMSG_FIRSTHDR(&msg);
            (*cmsg).cmsg_level = libc::SOL_SOCKET;
            (*cmsg).cmsg_type = libc::SCM_RIGHTS;
            (*cmsg).cmsg_len = libc::CMSG_LEN(fd_bytes as u32) as _;
            std::ptr::copy_nonoverlapping(
                fds.as_ptr().cast::<u8>(),
                libc::CMSG_DATA(cmsg),
                fd_bytes,
            );
        }
    }
    // SAFETY: `msg` points at `iov` (over `bytes`) and `control`, both live for the call.
    let sent = unsafe { libc::sendmsg(socket, &msg, libc::MSG_NOSIGNAL) };
    if sent < 0 {
        return Err(io::Error::last_os_error());
    }
    if sent as usize != bytes.len() {
        return Err(io::Error::new(
            io::ErrorKind::WriteZero,
            format!("sent {sent} of {} bytes", bytes.len()),
        ));
    }
    Ok(())
}

/// One `recvmsg`: bytes into `buf`, descriptors passed with them appended to `fds` (close-on-
/// exec). Returns the bytes read (0 at end of stream).
pub fn recv_with_fds(socket: RawFd, buf: &mut [u8], fds: &mut Vec<OwnedFd>) -> io::Result<usize> {
    // Room for a few descriptors; aligned for cmsghdr.
    let mut control = [0u64; 16];
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: msghdr is plain data; zeroed is a valid empty header.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(&control) as _;
    // SAFETY: `msg` points at `iov` (over `buf`) and `control`, both live for the call.
    let n = unsafe { libc::recvmsg(socket, &mut msg, libc::MSG_CMSG_CLOEXEC) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: walking the control messages the kernel wrote into `control`, with the libc
    // macros, within msg_controllen; SCM_RIGHTS data is an array of ints, each a new descriptor
    // this process now owns.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_RIGHTS {
                let data = libc::CMSG_DATA(cmsg).cast::<libc::c_int>();
                let bytes = (*cmsg).cmsg_len as usize - libc::CMSG_LEN(0) as usize;
                for i in 0..bytes / std::mem::size_of::<libc::c_int>() {
                    let raw = std::ptr::read_unaligned(data.add(i));
                    fds.push(OwnedFd::from_raw_fd(raw));
                }
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
    }
    Ok(n as usize)
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Seek, Write};
    use std::os::fd::AsRawFd;
    use std::os::unix::net::UnixStream;

    use super::*;

    #[test]
    fn descriptors_arrive_in_order_naming_the_same_files() {
        let (a, b) = UnixStream::pair().expect("pair");
        let mut files: Vec<std::fs::File> = (0..3)
            .map(|i| {
                let mut f = tempfile_in_tmp(i);
                write!(f, "file {i}").expect("write");
                f
            })
            .collect();
        let raw: Vec<RawFd> = files.iter().map(|f| f.as_raw_fd()).collect();
        send_with_fds(a.as_raw_fd(), b"hi", &raw).expect("send");
        let (mut buf, mut fds) = ([0u8; 8], Vec::new());
        let n = recv_with_fds(b.as_raw_fd(), &mut buf, &mut fds).expect("recv");
        assert_eq!(&buf[..n], b"hi");
        assert_eq!(fds.len(), 3);
        for (i, fd) in fds.into_iter().enumerate() {
            let mut f = std::fs::File::from(fd);
            f.rewind().expect("rewind");
            let mut s = String::new();
            f.read_to_string(&mut s).expect("read");
            assert_eq!(s, format!("file {i}"));
        }
        files.clear();
        assert!(send_with_fds(a.as_raw_fd(), b"", &[]).is_err(), "no bytes");
        assert!(send_with_fds(a.as_raw_fd(), b"x", &[0; MAX_FDS + 1]).is_err());
    }

    fn tempfile_in_tmp(i: usize) -> std::fs::File {
        let path = std::env::temp_dir().join(format!("fd-passing-{}-{i}", std::process::id()));
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .expect("open");
        let _ = std::fs::remove_file(&path);
        f
    }
}
