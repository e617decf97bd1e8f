//! engram-store as a peer: the `engram-store serve` binary run as a child process over the
//! benchmark's data directory, so that the RSS its Stats report is the server's own (in-process,
//! it would include this benchmark's client, its buffers and its counting allocator), and one
//! client connection (one HTTP/2 connection) per client task, reading with Lookup.

use std::net::{SocketAddr, TcpListener};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use engram_store_client::Client;
use engram_store_client::proto::StatsResponse;

use super::peer::Connection;

/// The default server binary: `engram-store` in the directory of this executable.
pub fn default_bin() -> Result<PathBuf> {
    let exe = std::env::current_exe().context("find this executable")?;
    let dir = exe.parent().context("this executable has no directory")?;
    Ok(dir.join("engram-store"))
}

/// A running `engram-store serve`, killed when dropped.
#[derive(Debug)]
pub struct EngramServer {
    child: Child,
    addr: SocketAddr,
    log: PathBuf,
}

impl EngramServer {
    /// Starts `bin serve` over `data` with a RAM tier of `ram_cache` bytes, its output in
    /// `log`, and waits until it answers.
    pub async fn start(bin: &Path, data: &Path, ram_cache: u64, log: &Path) -> Result<Self> {
        if !bin.is_file() {
            bail!(
                "no engram-store binary at {}; build it (cargo build --release -p engram-store) \
                 or pass --engram-bin",
                bin.display()
            );
        }
        let addr = free_local_port()?;
        let out =
            std::fs::File::create(log).with_context(|| format!("create {}", log.display()))?;
        let mut command = Command::new(bin);
        command
            .arg("serve")
            .arg("--data")
            .arg(data)
            .arg("--listen")
            .arg(addr.to_string())
            .arg("--ram-cache")
            .arg(ram_cache.to_string())
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out);
        // SAFETY: the closure runs in the child between fork and exec and only makes the
        // prctl system call, which is async-signal-safe and touches no memory of the parent.
        unsafe {
            command.pre_exec(|| {
                // The server dies with the benchmark, even when the benchmark is killed.
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = command
            .spawn()
            .with_context(|| format!("start {}", bin.display()))?;
        let mut server = Self {
            child,
            addr,
            log: log.to_path_buf(),
        };
        server.wait_ready(Duration::from_secs(60)).await?;
        Ok(server)
    }

    async fn wait_ready(&mut self, limit: Duration) -> Result<()> {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!(
                    "engram-store exited ({status}) before serving:\n{}",
                    self.log_tail()
                );
            }
            let attempt = Client::builder(self.url())
                .connect_timeout(Duration::from_secs(1))
                .retries(0)
                .connect()
                .await;
            if let Ok(client) = attempt
                && client.stats(false).await.is_ok()
            {
                return Ok(());
            }
            if start.elapsed() > limit {
                bail!(
                    "engram-store did not answer on {} within {limit:?}:\n{}",
                    self.addr,
                    self.log_tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The server's URL.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The last lines the server wrote.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }
}

impl Drop for EngramServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An unused port on 127.0.0.1 (free when this returns; the server binds it right after).
fn free_local_port() -> Result<SocketAddr> {
    let l = TcpListener::bind("127.0.0.1:0").context("find a free local port")?;
    Ok(l.local_addr()?)
}

/// engram-store's side of the comparison: the server's URL and the table.
#[derive(Debug, Clone)]
pub struct EngramPeer {
    url: String,
    table: String,
}

impl EngramPeer {
    /// Lookups of `table` at `url`.
    pub fn new(url: String, table: String) -> Self {
        Self { url, table }
    }

    /// A connection for one client task.
    pub async fn connect(&self) -> Result<EngramConnection> {
        Ok(EngramConnection {
            client: Client::connect(self.url.clone())
                .await
                .with_context(|| format!("connect to engram-store at {}", self.url))?,
            table: self.table.clone(),
        })
    }

    /// The server's Stats; `reset` zeroes its counters after reading them.
    pub async fn stats(&self, reset: bool) -> Result<StatsResponse> {
        Client::connect(self.url.clone())
            .await?
            .stats(reset)
            .await
            .context("engram-store Stats")
    }
}

/// One client task's connection to engram-store.
#[derive(Debug)]
pub struct EngramConnection {
    client: Client,
    table: String,
}

impl Connection for EngramConnection {
    async fn fetch(&mut self, ids: &[u64]) -> Result<Bytes> {
        let rows = self
            .client
            .lookup(&self.table, ids)
            .await
            .with_context(|| format!("Lookup of {} ids", ids.len()))?;
        Ok(rows.bytes().clone())
    }
}

/// Of a Stats reply: the RAM tier's rows resident and hit rate.
pub fn ram_tier(s: &StatsResponse) -> (u64, f64) {
    s.tiers
        .iter()
        .find(|t| t.tier == "ram")
        .map_or((0, 0.0), |t| (t.resident_rows, t.hit_rate))
}
