//! Handing file descriptors to a worker process on this host over a Unix socket: how a shared
//! VRAM tier's memory (`cuMemCreate` allocations exported as POSIX file descriptors) reaches the
//! worker that asked for it with ShareTable, which gRPC cannot carry.
//!
//! ShareTable [`FdHandoff::offer`]s the descriptors under a random 16-byte token, good once and
//! for [`OFFER_TTL`]; the answer names the socket and the token. The worker connects, sends the
//! token, and reads one byte: 1 with the descriptors attached (`SCM_RIGHTS`, in the order
//! offered), or 0 followed by an error text (an unknown, used or expired token). The socket is
//! bound on the first offer, in the shared-memory directory, named after the server's pid, and
//! removed when the handoff is dropped.
//!
//! A client is untrusted: it gets [`READ_TIMEOUT`] to send its token, at most
//! [`MAX_CONNECTIONS`] are served at once (others are closed unanswered), at most
//! [`MAX_OFFERS`] offers wait (the oldest goes first), and nothing it sends is read past the
//! token's 16 bytes.

use std::collections::{HashMap, VecDeque};
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use engram_store_client::fd_passing::{MAX_FDS, send_with_fds};
use parking_lot::Mutex;

/// How long an offer waits to be collected.
const OFFER_TTL: Duration = Duration::from_secs(60);
/// How long a connected client has to send its token.
const READ_TIMEOUT: Duration = Duration::from_secs(2);
/// Connections served at once.
const MAX_CONNECTIONS: usize = 16;
/// Offers waiting at once (each holds its descriptors open).
const MAX_OFFERS: usize = 64;
/// Bytes of a token.
const TOKEN_BYTES: usize = 16;

/// Where and how a worker collects an offer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Offered {
    /// The Unix socket to connect to.
    pub socket: PathBuf,
    /// What to send on it.
    pub token: [u8; TOKEN_BYTES],
}

/// Descriptors waiting for their worker, by token, oldest first.
#[derive(Default)]
struct Offers {
    by_token: HashMap<[u8; TOKEN_BYTES], (Instant, Vec<Arc<OwnedFd>>)>,
    order: VecDeque<[u8; TOKEN_BYTES]>,
}

impl Offers {
    fn put(&mut self, token: [u8; TOKEN_BYTES], fds: Vec<Arc<OwnedFd>>) {
        self.expire();
        while self.by_token.len() >= MAX_OFFERS {
            match self.order.pop_front() {
                Some(old) => {
                    self.by_token.remove(&old);
                }
                None => break,
            }
        }
        self.by_token.insert(token, (Instant::now(), fds));
        self.order.push_back(token);
    }

    fn take(&mut self, token: &[u8; TOKEN_BYTES]) -> Option<Vec<Arc<OwnedFd>>> {
        self.expire();
        let (_, fds) = self.by_token.remove(token)?;
        self.order.retain(|t| t != token);
        Some(fds)
    }

    fn expire(&mut self) {
        while let Some(oldest) = self.order.front() {
            match self.by_token.get(oldest) {
                Some((made, _)) if made.elapsed() < OFFER_TTL => break,
                _ => {
                    let old = *oldest;
                    self.order.pop_front();
                    self.by_token.remove(&old);
                }
            }
        }
    }
}

/// The bound socket and its accept thread.
struct Bound {
    path: PathBuf,
    stop: Arc<AtomicBool>,
}

/// The handoff of one server (see the module doc).
pub struct FdHandoff {
    dir: PathBuf,
    offers: Arc<Mutex<Offers>>,
    bound: Mutex<Option<Bound>>,
}

impl std::fmt::Debug for FdHandoff {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FdHandoff")
            .field("dir", &self.dir)
            .field("offers", &self.offers.lock().by_token.len())
            .finish()
    }
}

impl FdHandoff {
    /// A handoff whose socket (bound on the first offer) lives in `dir`.
    pub fn new(dir: PathBuf) -> Self {
        Self {
            dir,
            offers: Arc::new(Mutex::new(Offers::default())),
            bound: Mutex::new(None),
        }
    }

    /// Offers `fds` (at most [`MAX_FDS`]) to the one worker that presents the token returned.
    pub fn offer(&self, fds: Vec<Arc<OwnedFd>>) -> std::io::Result<Offered> {
        if fds.is_empty() || fds.len() > MAX_FDS {
            return Err(std::io::Error::other(format!(
                "an offer hands over 1 to {MAX_FDS} file descriptors, not {}",
                fds.len()
            )));
        }
        let socket = self.bind()?;
        let token: [u8; TOKEN_BYTES] = rand::random();
        self.offers.lock().put(token, fds);
        Ok(Offered { socket, token })
    }

    /// The socket's path, binding it and starting its accept thread the first time.
    fn bind(&self) -> std::io::Result<PathBuf> {
        let mut bound = self.bound.lock();
        if let Some(b) = bound.as_ref() {
            return Ok(b.path.clone());
        }
        let path = self
            .dir
            .join(format!("engram-store-{}.fds.sock", std::process::id()));
        // A file of that name is a leftover of an earlier process with this pid.
        let _ = std::fs::remove_file(&path);
        let listener = UnixListener::bind(&path)
            .map_err(|e| std::io::Error::new(e.kind(), format!("bind {}: {e}", path.display())))?;
        let stop = Arc::new(AtomicBool::new(false));
        let (offers, stopped) = (self.offers.clone(), stop.clone());
        std::thread::Builder::new()
            .name("fd-handoff".into())
            .spawn(move || accept_loop(listener, offers, stopped))?;
        *bound = Some(Bound {
            path: path.clone(),
            stop,
        });
        Ok(path)
    }
}

impl Drop for FdHandoff {
    fn drop(&mut self) {
        if let Some(b) = self.bound.lock().take() {
            b.stop.store(true, Ordering::Release);
            // Wakes the accept thread, which then sees the flag.
            let _ = UnixStream::connect(&b.path);
            let _ = std::fs::remove_file(&b.path);
        }
    }
}

fn accept_loop(listener: UnixListener, offers: Arc<Mutex<Offers>>, stop: Arc<AtomicBool>) {
    let serving = Arc::new(AtomicUsize::new(0));
    for stream in listener.incoming() {
        if stop.load(Ordering::Acquire) {
            return;
        }
        let Ok(stream) = stream else { continue };
        if serving.fetch_add(1, Ordering::AcqRel) >= MAX_CONNECTIONS {
            serving.fetch_sub(1, Ordering::AcqRel);
            continue; // closed unanswered
        }
        let (offers, count) = (offers.clone(), serving.clone());
        let spawned = std::thread::Builder::new()
            .name("fd-handoff-conn".into())
            .spawn(move || {
                serve(stream, &offers);
                count.fetch_sub(1, Ordering::AcqRel);
            });
        if spawned.is_err() {
            serving.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

/// One connection: a token in, the offer's descriptors (or an error text) out.
fn serve(mut stream: UnixStream, offers: &Mutex<Offers>) {
    let _ = stream.set_read_timeout(Some(READ_TIMEOUT));
    let _ = stream.set_write_timeout(Some(READ_TIMEOUT));
    let mut token = [0u8; TOKEN_BYTES];
    if let Err(e) = stream.read_exact(&mut token) {
        let _ = refuse(
            &mut stream,
            &format!("send the {TOKEN_BYTES}-byte token from ShareTable ({e})"),
        );
        return;
    }
    match offers.lock().take(&token) {
        Some(fds) => {
            let raw: Vec<RawFd> = fds.iter().map(|f| f.as_raw_fd()).collect();
            let _ = send_with_fds(stream.as_raw_fd(), &[1], &raw);
        }
        None => {
            let _ = refuse(
                &mut stream,
                "unknown, used or expired token: call ShareTable again",
            );
        }
    }
}

fn refuse(stream: &mut UnixStream, why: &str) -> std::io::Result<()> {
    stream.write_all(&[0])?;
    stream.write_all(why.as_bytes())
}

/// Collects an offer: connects to `socket`, sends `token`, and returns the descriptors, or the
/// server's refusal as an error.
#[cfg(test)]
fn collect(socket: &std::path::Path, token: &[u8]) -> std::io::Result<Vec<OwnedFd>> {
    let mut stream = UnixStream::connect(socket)?;
    stream.set_read_timeout(Some(READ_TIMEOUT))?;
    stream.write_all(token)?;
    let mut buf = [0u8; 512];
    let mut fds = Vec::new();
    let n = engram_store_client::fd_passing::recv_with_fds(stream.as_raw_fd(), &mut buf, &mut fds)?;
    match buf[..n].first() {
        Some(1) => Ok(fds),
        Some(_) => {
            let mut why = buf[1..n].to_vec();
            let _ = stream.read_to_end(&mut why);
            Err(std::io::Error::other(
                String::from_utf8_lossy(&why).into_owned(),
            ))
        }
        None => Err(std::io::Error::other(
            "the server closed the handoff unanswered",
        )),
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("fd-handoff-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        dir
    }

    /// A file holding `text`, opened: a descriptor whose identity a receiver can check.
    fn file_with(dir: &Path, name: &str, text: &str) -> Arc<OwnedFd> {
        let path = dir.join(name);
        std::fs::write(&path, text).expect("write");
        Arc::new(std::fs::File::open(&path).expect("open").into())
    }

    fn read_all(fd: OwnedFd) -> String {
        let mut f = std::fs::File::from(fd);
        let mut s = String::new();
        f.read_to_string(&mut s).expect("read");
        s
    }

    #[test]
    fn the_token_collects_its_descriptors_once_in_order() {
        let dir = temp_dir("once");
        let handoff = FdHandoff::new(dir.clone());
        let fds = vec![
            file_with(&dir, "a", "first"),
            file_with(&dir, "b", "second"),
        ];
        let offered = handoff.offer(fds).expect("offer");
        assert!(offered.socket.starts_with(&dir));
        let got = collect(&offered.socket, &offered.token).expect("collect");
        let texts: Vec<String> = got.into_iter().map(read_all).collect();
        assert_eq!(texts, ["first", "second"]);
        let again = collect(&offered.socket, &offered.token).expect_err("used");
        assert!(
            again.to_string().contains("unknown, used or expired"),
            "{again}"
        );
        let socket = offered.socket.clone();
        drop(handoff);
        assert!(!socket.exists(), "the socket is removed with the handoff");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_wrong_short_or_silent_client_gets_no_descriptor_and_hurts_no_other() {
        let dir = temp_dir("hostile");
        let handoff = FdHandoff::new(dir.clone());
        let offered = handoff
            .offer(vec![file_with(&dir, "a", "rows")])
            .expect("offer");
        let mut wrong = offered.token;
        wrong[0] ^= 1;
        let err = collect(&offered.socket, &wrong).expect_err("wrong token");
        assert!(err.to_string().contains("unknown"), "{err}");
        // A short token, then the end: refused at once, naming what was wanted.
        let mut short = UnixStream::connect(&offered.socket).expect("connect");
        short.write_all(&offered.token[..3]).expect("write");
        short.shutdown(std::net::Shutdown::Write).expect("shutdown");
        let mut answer = Vec::new();
        let _ = short.read_to_end(&mut answer);
        assert_eq!(answer.first(), Some(&0), "{answer:?}");
        assert!(String::from_utf8_lossy(&answer).contains("16-byte token"));
        // Silent clients hold connections; more than the cap are closed unanswered.
        let silent: Vec<UnixStream> = (0..MAX_CONNECTIONS + 4)
            .filter_map(|_| UnixStream::connect(&offered.socket).ok())
            .collect();
        drop(silent);
        // Once they are gone the right token still collects (their threads end on EOF).
        let started = Instant::now();
        let got = loop {
            match collect(&offered.socket, &offered.token) {
                Ok(got) => break got,
                // Closed unanswered (or reset mid-way) while the cap was still full.
                Err(_) if started.elapsed() < READ_TIMEOUT * 2 => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) => panic!("the token was not collected after the noise: {e}"),
            }
        };
        assert_eq!(got.into_iter().map(read_all).collect::<Vec<_>>(), ["rows"]);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn offers_are_bounded_and_the_oldest_go_first() {
        let mut offers = Offers::default();
        let dir = temp_dir("bounded");
        let fd = file_with(&dir, "a", "x");
        let tokens: Vec<[u8; TOKEN_BYTES]> = (0..MAX_OFFERS + 3).map(|_| rand::random()).collect();
        for t in &tokens {
            offers.put(*t, vec![fd.clone()]);
        }
        assert_eq!(offers.by_token.len(), MAX_OFFERS);
        assert!(offers.take(&tokens[0]).is_none(), "the oldest was dropped");
        assert!(offers.take(&tokens[MAX_OFFERS + 2]).is_some());
        assert_eq!(offers.order.len(), offers.by_token.len());
        let handoff = FdHandoff::new(dir.clone());
        assert!(
            handoff.offer(Vec::new()).is_err(),
            "an empty offer is refused"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
