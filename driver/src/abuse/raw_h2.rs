//! A deliberately rude HTTP/2 client: it writes gRPC requests straight onto a TCP socket (the
//! connection preface, SETTINGS, HEADERS and DATA frames, split at the default 16 KiB frame size
//! and within the default windows) and then never reads a byte, as a client that sends work and
//! ignores the answers would.

use std::io::Write;
use std::net::{SocketAddr, TcpStream};

/// Largest DATA frame a client may send before it has read the server's SETTINGS.
const FRAME: usize = 16 * 1024;

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    f.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// An HPACK integer with a 7-bit prefix (no Huffman), as literal header lengths are.
fn hpack_len(out: &mut Vec<u8>, n: usize) {
    if n < 127 {
        out.push(n as u8);
        return;
    }
    out.push(127);
    let mut rest = n - 127;
    while rest >= 128 {
        out.push((rest % 128) as u8 | 0x80);
        rest /= 128;
    }
    out.push(rest as u8);
}

/// HEADERS of a gRPC call to `path`: every field a literal without indexing.
fn grpc_headers(path: &str) -> Vec<u8> {
    let mut block = Vec::new();
    for (name, value) in [
        (":method", "POST"),
        (":scheme", "http"),
        (":path", path),
        (":authority", "engram-store"),
        ("content-type", "application/grpc"),
        ("te", "trailers"),
    ] {
        block.push(0x00);
        hpack_len(&mut block, name.len());
        block.extend_from_slice(name.as_bytes());
        hpack_len(&mut block, value.len());
        block.extend_from_slice(value.as_bytes());
    }
    block
}

/// A connection that has sent its requests and reads nothing.
#[derive(Debug)]
pub(super) struct SilentConnection {
    _socket: TcpStream,
    /// Requests sent on it.
    pub(super) requests: usize,
}

/// Opens a connection to `addr` and sends as many copies of the gRPC call (`path`, protobuf
/// `message`) as fit the default HTTP/2 windows (64 KiB per stream, 64 KiB per connection, which
/// a server raises only through frames this client never reads) and `max_requests`.
pub(super) fn send_and_never_read(
    addr: SocketAddr,
    path: &str,
    message: &[u8],
    max_requests: usize,
) -> std::io::Result<SilentConnection> {
    let mut socket = TcpStream::connect(addr)?;
    socket.set_nodelay(true)?;
    let mut out = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    out.extend(frame(0x4, 0, 0, &[]));
    let mut body = Vec::with_capacity(message.len() + 5);
    body.push(0);
    body.extend_from_slice(&(message.len() as u32).to_be_bytes());
    body.extend_from_slice(message);
    // The default connection window is 65,535 bytes until the server's WINDOW_UPDATE, which this
    // client never reads: stay within it.
    let window = 65_535usize;
    let per_request = body.len().min(window);
    let requests = (window / per_request.max(1)).clamp(1, max_requests.max(1));
    let headers = grpc_headers(path);
    for k in 0..requests {
        let stream = 1 + 2 * k as u32;
        out.extend(frame(0x1, 0x4, stream, &headers));
        let chunks: Vec<&[u8]> = body.chunks(FRAME).collect();
        for (i, chunk) in chunks.iter().enumerate() {
            let last = i + 1 == chunks.len();
            out.extend(frame(0x0, if last { 0x1 } else { 0 }, stream, chunk));
        }
    }
    socket.write_all(&out)?;
    Ok(SilentConnection {
        _socket: socket,
        requests,
    })
}
